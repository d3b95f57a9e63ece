#!/usr/bin/env bats
# The backend table on a machine without a GPU: the parity harness against itself (CPU on both
# sides, so every check must report 0), and --device errors of the engine tools. The CUDA side
# runs on a GPU with tests/gpu/run.sh.

load common

no_gpu() {
    ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1
}

@test "parity --self: every backend slot checked, CPU against CPU, all exact" {
    run "$FINE_GPUTESTS/parity" --self
    [ "$status" -eq 0 ]
    [[ "$output" == *"parity: 154 passed, 0 failed"* ]]
    # the harness compares: every line reports a relative error of 0 or an exact match
    ! grep -E "^ok .* rel [1-9]" <<<"$output" || false
    [ "$(grep -c '^ok ' <<<"$output")" -eq 154 ]
}

@test "parity and model refuse a device they cannot open, exit 2" {
    run "$FINE_GPUTESTS/parity" tpu
    [ "$status" -eq 2 ]
    [[ "$output" == *"unknown device 'tpu'"* ]]
    if no_gpu; then
        run "$FINE_GPUTESTS/model" cuda
        [ "$status" -eq 2 ]
        [[ "$output" == "model: cannot open cuda"* ]]
    fi
}

@test "the model check passes with the CPU on both sides" {
    [ "$FINE_SANITIZE" = 1 ] && skip "about a minute under ASan"
    run "$FINE_GPUTESTS/model" cpu tiny
    [ "$status" -eq 0 ]
    [[ "$output" == *"model: 9 passed, 0 failed"* ]]
}

@test "the model check passes with the CPU on both sides for depths above 2 and 2 memory tokens" {
    [ "$FINE_SANITIZE" = 1 ] && skip "about a minute under ASan"
    run "$FINE_GPUTESTS/model" cpu tiny-deep
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "$output" == *"preset tiny-deep"* ]]
    [[ "$output" == *"model: 9 passed, 0 failed"* ]]
}

@test "fine-train --device: a bad name is a usage error; cuda without a GPU is one line, no checkpoint" {
    run fine-train --preset tiny --device tpu -o "$T/run" /dev/null
    [ "$status" -eq 2 ]
    [[ "$output" == *"--device must be cpu or cuda"* ]]
    fine-synth --cases 1 --scale 0.3 --seed 5 "$T/data" >/dev/null 2>&1
    fine-resample --spacing 6,2,2 "$T/data" -o "$T/pre.fst"
    fine-normalize --scheme zscore "$T/pre.fst" "$T/norm.fst"
    fine-patch --train --augment none --crop 32,64,64 --count 2 --seed 1 "$T/norm.fst" -o "$T/b.fst"
    if no_gpu; then
        run fine-train --preset tiny --device cuda:0 --epochs 1 --iters-per-epoch 1 -o "$T/run" "$T/b.fst"
        [ "$status" -eq 1 ]
        [ "${#lines[@]}" -eq 1 ]
        [[ "$output" == "fine-train: "*"cuda:0"* ]]
        [ ! -e "$T/run/final.fst" ]
    fi
    # the CUDA backend is a shared object loaded on demand; one that cannot be loaded is one line
    FINE_CUDA_LIB="$T/missing.so" run fine-train --preset tiny --device cuda --epochs 1 --iters-per-epoch 1 \
        -o "$T/run" "$T/b.fst"
    [ "$status" -eq 1 ]
    [ "${#lines[@]}" -eq 1 ]
    [[ "$output" == "fine-train: cuda: cannot load the CUDA backend from FINE_CUDA_LIB: $T/missing.so: "* ||
        "$output" == "fine-train: device 'cuda': this build has no CUDA backend"* ]]
    [ ! -e "$T/run/final.fst" ]
    run fine-train --preset tiny --device cpu --epochs 1 --iters-per-epoch 1 -q -o "$T/run" "$T/b.fst"
    [ "$status" -eq 0 ]
    [ -s "$T/run/final.fst" ]
}
