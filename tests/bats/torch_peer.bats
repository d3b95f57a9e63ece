#!/usr/bin/env bats
# bench/torch_fine.py, an independent PyTorch model of FINE written from the specification:
# (a) it reproduces the official code's outputs and gradients (parity fixture), (b) the C engine
# (fine-model run) agrees with it on a tiny model, logits and gradients. Skipped without
# python3-torch.

load common

TORCH_FINE="$BATS_TEST_DIRNAME/../../bench/torch_fine.py"
FIXTURE="${FINE_PARITY_FIXTURE:-${FINE_SHARED:-$REPO/../shared}/parity/fine-ref-small-b1.msgpack.zst}"

need_torch() {
    "$FINE_PYTHON" -c 'import torch' 2>/dev/null || skip "python3-torch not installed"
}

@test "torch_peer: the torch model matches the official code's fixture (outputs and gradients, 1e-4)" {
    need_torch
    [ -r "$FIXTURE" ] || skip "parity fixture $FIXTURE not present"
    run "$FINE_PYTHON" "$TORCH_FINE" parity "$FIXTURE"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "$output" == *"parity PASS"* ]]
}

@test "torch_peer: the torch model fails parity when one weight is perturbed (the check can fail)" {
    need_torch
    [ -r "$FIXTURE" ] || skip "parity fixture $FIXTURE not present"
    run "$FINE_PYTHON" "$TORCH_FINE" parity --perturb --no-grad "$FIXTURE"
    echo "$output"
    [ "$status" -eq 1 ]
    [[ "$output" == *"parity FAIL"* ]]
}

# peer_agrees MODEL PATCHES LOGITS [COMPARE OPTIONS]: the torch model's logits and gradients agree
# with those fine-model run --grad wrote (compare PASS)
peer_agrees() {
    run "$FINE_PYTHON" "$TORCH_FINE" compare --model "$1" --input "$2" --logits "$3" --grads "$3" "${@:4}"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "$output" == *"compare PASS"* ]]
}

# mk_patches PATH N: N random patches [1,32,64,64] (the tiny crop) with distinct positions
mk_patches() { # mk_patches OUT N [CROP]: N random patches, crop 32,64,64 by default
    "$FINE_PYTHON" - "$@" <<'PY'
import sys
import numpy as np
import fine_stream
path, n = sys.argv[1], int(sys.argv[2])
crop = tuple(int(v) for v in sys.argv[3].split(",")) if len(sys.argv) > 3 else (32, 64, 64)
rng = np.random.default_rng(11)
poss = [[0, -150, 100], [7, 240, -260], [-3, 0, 0]]
recs = [{"type": "patch", "case": "T%d" % i, "name": "image",
         "array": rng.standard_normal((1,) + crop).astype(np.float32),
         "origin": [0, 0, 0], "pos": poss[i % len(poss)], "volume_size": [64, 128, 128]}
        for i in range(n)]
fine_stream.write(path, recs, tool="mk_patches", args=sys.argv)
PY
}

@test "torch_peer: fine-model run (logits and gradients) agrees with the torch model on a tiny model" {
    need_torch
    fine-model init --preset tiny --seed 3 -o "$T/m.fst"
    mk_patches "$T/p.fst" 2
    run fine-model run --model "$T/m.fst" --grad --batch 2 "$T/p.fst" "$T/l.fst"
    echo "$output"
    [ "$status" -eq 0 ]
    peer_agrees "$T/m.fst" "$T/p.fst" "$T/l.fst"
    # and the comparison can fail: the same logits against another model's weights
    fine-model init --preset tiny --seed 4 -o "$T/m4.fst"
    run "$FINE_PYTHON" "$TORCH_FINE" compare --model "$T/m4.fst" --input "$T/p.fst" --logits "$T/l.fst"
    echo "$output"
    [ "$status" -eq 1 ]
    [[ "$output" == *"compare FAIL"* ]]
}

@test "torch_peer: patch 4,4,4 (the reference's other patch size): fine-model run agrees with the torch model" {
    need_torch
    # the embedding's strides become (2,2,2) twice and final.1 stays 4,4,4 (fine_embed_strides)
    fine-model init --preset tiny --set patch=4,4,4 --set crop=64,64,64 --seed 3 -o "$T/m.fst"
    run fine-model describe --model "$T/m.fst"
    [[ "$output" == *"encoder stage 0: 16x16x16 tokens"* ]]
    mk_patches "$T/p.fst" 2 64,64,64
    run fine-model run --model "$T/m.fst" --grad --batch 2 "$T/p.fst" "$T/l.fst"
    echo "$output"
    [ "$status" -eq 0 ]
    # head 1 is at half the crop in every axis: 14 x 32x32x32 per patch
    "$FINE_PYTHON" - "$T/l.fst" <<'PY'
import sys, fine_stream
recs = [r for r in fine_stream.read(sys.argv[1]) if r.get("type") == "logits"]
assert len(recs) == 2, len(recs)
for r in recs:
    assert r["head0"].shape == (14, 64, 64, 64), r["head0"].shape
    assert r["head1"].shape == (14, 32, 32, 32), r["head1"].shape
PY
    peer_agrees "$T/m.fst" "$T/p.fst" "$T/l.fst"
}

@test "torch_peer: a bottleneck grid smaller than the window (tiny with window 4): its own relative-position index" {
    need_torch
    # stage 3 is 2x2x2 tokens, so its window edge is 2 (the reference's rule) and its bias table
    # (27 rows) must be indexed for edge 2, not 4: before the fix logits were off by 2e-4 and the
    # table's gradient by 150%
    fine-model init --preset tiny --set window=4 --seed 3 -o "$T/m.fst"
    run fine-model describe --model "$T/m.fst"
    [[ "$output" == *"encoder stage 3: 2x2x2 tokens, 192 channels, 8 heads, window 2, 1 windows"* ]]
    mk_patches "$T/p.fst" 2
    fine-model run --model "$T/m.fst" --grad --batch 2 "$T/p.fst" "$T/l.fst"
    peer_agrees "$T/m.fst" "$T/p.fst" "$T/l.fst"
}

@test "torch_peer: a window edge per stage (tiny with window 2,4,4,2): logits and gradients agree" {
    need_torch
    # stage 1 (8^3 tokens) in 8 shifted windows of 4, stage 2 (4^3) one window of 4, stages 0 and
    # 3 windows of 2: three edges, three relative-position index tables; the decoder stages take
    # their encoder stage's edge (the reference's window_size[::-1][1:])
    fine-model init --preset tiny --set window=2,4,4,2 --seed 4 -o "$T/m.fst"
    run fine-model describe --model "$T/m.fst"
    [[ "$output" == *"window=2,4,4,2"* ]]
    [[ "$output" == *"encoder stage 1: 8x8x8 tokens, 48 channels, 2 heads, window 4, 8 windows"* ]]
    mk_patches "$T/p.fst" 2
    fine-model run --model "$T/m.fst" --grad --batch 2 "$T/p.fst" "$T/l.fst"
    peer_agrees "$T/m.fst" "$T/p.fst" "$T/l.fst"
}

@test "torch_peer: depths above 2 and 2 memory tokens per window: logits and gradients agree, and float64 central differences" {
    need_torch
    # depths 3,3,4,3 / 3,2,4: blocks write their volume tokens back into per-sample banks and
    # run vt_attn (the key mask from vt_check: only the batch's tokens are visited), the next
    # block's gt_attn reads the banks; 2 memory tokens per window, pe with nW * 8 rows read in
    # its middle nW * 2. Two samples on different volume tokens.
    fine-model init --preset tiny --set depths=3,3,4,3 --set dec_depths=3,2,4 --set gt_num=2 --seed 3 -o "$T/m.fst"
    mk_patches "$T/p.fst" 2
    fine-model run --model "$T/m.fst" --grad --batch 2 "$T/p.fst" "$T/l.fst"
    peer_agrees "$T/m.fst" "$T/p.fst" "$T/l.fst" \
        --fd 'layers\.1\.blocks\.0\.vt_attn\.qkv\.weight$|encoder\.layers\.0\.blocks\.1\.vt_attn\.proj\.weight$|layers\.1\.(pe|volume_token)$'
    [[ "$output" == *"fd: 6 parameters"* ]]
}
