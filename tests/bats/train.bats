#!/usr/bin/env bats
# fine-train: the loss falls, resume is exact, bad input is refused.

load common

make_batches() { # make_batches DIR COUNT
    fine-synth --cases 1 --scale 0.3 --seed 5 "$1/data" >/dev/null 2>&1
    fine-resample --spacing 6,2,2 "$1/data" -o "$1/pre.fst"
    fine-normalize --scheme zscore "$1/pre.fst" "$1/norm.fst"
    fine-patch --train --augment none --crop 32,64,64 --count "$2" --seed 1 "$1/norm.fst" -o "$1/batches.fst"
}

params_equal() { # params_equal A B: every param record bit-identical
    "$FINE_PYTHON" - "$1" "$2" <<'PY'
import sys, numpy as np, fine_stream
def params(p):
    return {r["name"]: r["array"] for r in fine_stream.read(p) if r["type"] == "param"}
a, b = params(sys.argv[1]), params(sys.argv[2])
assert a.keys() == b.keys() and len(a) > 100
diff = [k for k in a if a[k].tobytes() != b[k].tobytes()]
assert not diff, "differ: %s" % diff[:5]
PY
}

@test "resume is exact: 2 + 2 iterations give the same parameters as 4, bit for bit" {
    make_batches "$T" 4
    fine-train --preset tiny --epochs 2 --iters-per-epoch 2 --save-every 1 --quiet -o "$T/a" "$T/batches.fst"
    [ -e "$T/a/latest.fst" ] && [ -e "$T/a/final.fst" ]
    # latest.fst was written after epoch 1 (iteration 2): resume from it on the same input
    fine-train --resume "$T/a/latest.fst" --quiet -o "$T/b" "$T/batches.fst"
    params_equal "$T/a/final.fst" "$T/b/final.fst"
    # and a different seed gives different parameters (the comparison can fail)
    fine-train --preset tiny --seed 7 --epochs 2 --iters-per-epoch 2 --quiet -o "$T/c" "$T/batches.fst"
    ! params_equal "$T/a/final.fst" "$T/c/final.fst"
}

@test "the loss falls over a few epochs on one case, and the log has one JSON object per epoch" {
    make_batches "$T" 24
    fine-train --preset tiny --epochs 4 --iters-per-epoch 6 --quiet --log "$T/log.jsonl" -o "$T/r" "$T/batches.fst"
    "$FINE_PYTHON" - "$T/log.jsonl" <<'PY'
import sys, json
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["epoch"] for r in rows] == [1, 2, 3, 4], rows
assert rows[-1]["loss"] < 0.9 * rows[0]["loss"], [r["loss"] for r in rows]
lr = [r["lr"] for r in rows]
assert abs(lr[0] - 0.01) < 1e-12 and abs(lr[1] - 0.01 * 0.75 ** 0.9) < 1e-6, lr  # poly 0.9 per epoch
PY
}

@test "SIGTERM writes a resumable checkpoint" {
    make_batches "$T" 40
    fine-train --preset tiny --epochs 1 --iters-per-epoch 40 --quiet -o "$T/s" "$T/batches.fst" &
    pid=$!
    sleep 8
    kill -TERM "$pid"
    wait "$pid"
    [ -e "$T/s/latest.fst" ]
    [ ! -e "$T/s/final.fst" ]
    run fine-model describe --model "$T/s/latest.fst"
    [ "$status" -eq 0 ]
}

@test "bad input is refused with one line and no checkpoint" {
    make_batches "$T" 2
    run fine-train --preset tiny --set in_chans=2 --epochs 1 --iters-per-epoch 1 -o "$T/x" "$T/batches.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"another shape than the model's f32 [2, 32, 64, 64]"* ]]
    [ ! -e "$T/x/final.fst" ]
    run fine-train --preset tiny --epochs 1 --iters-per-epoch 5 -o "$T/y" "$T/batches.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"the input ended after 2 iterations (5 planned)"* ]]
    [ ! -e "$T/y/final.fst" ]
    fine-model init --preset tiny -o "$T/m.fst"
    run fine-train --resume "$T/m.fst" -o "$T/z" "$T/batches.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"no train_state record"* ]]
    run fine-train --preset tiny "$T/batches.fst"
    [ "$status" -eq 2 ]
}
