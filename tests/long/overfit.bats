#!/usr/bin/env bats
# The issue-5 figure: the tiny model overfits one synthetic case, training Dice (13-organ mean)
# above 0.9, and how long it takes on this machine. Minutes of training: `make test-long`,
# not part of `make test` (tests/bats/train.bats has the short version).
load ../bats/common

@test "tiny overfits one synthetic case: training Dice above 0.9 (13 organs), time to reach it" {
    fine-synth --cases 1 --scale 0.3 --seed 5 "$T/data" >/dev/null 2>&1
    fine-resample --spacing 15,6.4,6.4 "$T/data" -o "$T/pre.fst"
    fine-normalize --fit "$T/data" -o "$T/stats.fst"
    fine-normalize --stats "$T/stats.fst" "$T/pre.fst" "$T/norm.fst"
    # AdamW lr 0.005 on an 80-epoch poly schedule, stopped 30 s after the limit (SIGTERM: a
    # checkpoint, exit 143): the time that counts is the process's, start-up included, at the
    # end of the first epoch above 0.9 (the log's `elapsed`)
    limit=${FINE_OVERFIT_LIMIT_S:-120}
    run bash -c "fine-patch --train --augment none --crop 32,64,64 --seed 1 '$T/norm.fst' |
        timeout --preserve-status -s TERM $((limit + 30)) fine-train --preset tiny --optimizer adamw \
            --lr 0.005 --epochs 80 --iters-per-epoch 25 --quiet --log '$T/log.jsonl' -o '$T/r'"
    [ "$status" -eq 0 ] || [ "$status" -eq 143 ]
    "$FINE_PYTHON" - "$T/log.jsonl" "$limit" >&3 <<'PY'
import sys, json
rows = [json.loads(l) for l in open(sys.argv[1])]
limit = float(sys.argv[2])
d = [round(r["train_dice"], 3) for r in rows]
print("# training Dice per epoch of 25 iterations:", d)
at = next((i for i, x in enumerate(d) if x > 0.9), None)
if at is None:
    print(f"# not above 0.9 in {len(d) * 25} iterations ({rows[-1]['elapsed']:.0f} s)")
    sys.exit(1)
t = rows[at]["elapsed"]
print(f"# above 0.9 after {(at + 1) * 25} iterations, {t:.0f} s (limit {limit:.0f} s)")
sys.exit(0 if t <= limit else 1)
PY
}
