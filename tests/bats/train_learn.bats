#!/usr/bin/env bats
# fine-train learns: a minute of training on one synthetic case (a file of its own so that
# make test runs it beside the other files).

load common

@test "tiny learns one synthetic case, 13 organs, AdamW: training Dice from under 0.1 to above 0.4 in 300 iterations" {
    [ "${FINE_SANITIZE:-0}" = 1 ] && skip "a minute of training under ASan; the release build runs it"
    fine-synth --cases 1 --scale 0.3 --seed 5 "$T/data" >/dev/null 2>&1
    # the whole case in one 32x64x64 crop (28x65x65 voxels at 15x6.4x6.4 mm): memorising one input.
    # The full overfit (Dice above 0.9) takes minutes: tests/long/overfit.sh (make test-long).
    fine-resample --spacing 15,6.4,6.4 "$T/data" -o "$T/pre.fst"
    fine-normalize --fit "$T/data" -o "$T/stats.fst"
    fine-normalize --stats "$T/stats.fst" "$T/pre.fst" "$T/norm.fst"
    start=$(date +%s)
    fine-patch --train --augment none --crop 32,64,64 --seed 1 "$T/norm.fst" |
        fine-train --preset tiny --optimizer adamw --lr 0.004 --epochs 12 --iters-per-epoch 25 --threads 1 \
            --quiet --log "$T/log.jsonl" -o "$T/r"
    echo "# 300 iterations in $(($(date +%s) - start)) s" >&3
    "$FINE_PYTHON" - "$T/log.jsonl" <<'PY'
import sys, json
rows = [json.loads(l) for l in open(sys.argv[1])]
d = [round(r["train_dice"], 3) for r in rows]
print("training Dice (13-organ mean) per epoch of 25 iterations:", d)
assert d[0] < 0.1, d                    # it starts at chance
assert max(d[-2:]) > 0.4, d             # measured 0.53 after 300
PY
}
