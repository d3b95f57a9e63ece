#!/usr/bin/env bats
# pipelines/Makefile: the bcv pipeline itself (not a copy) on a tiny synthetic data set in the
# raw BCV layout, with a shortened training: it runs end to end, resumes after an interruption,
# and takes a swapped stage.

load common

PIPE="$BATS_TEST_DIRNAME/../../pipelines"

setup_data() {
    fine-synth --cases 3 --scale 0.2 --seed 4 "$T/synth" >/dev/null 2>&1
    mkdir -p "$T/bcv/RawData"
    mv "$T/synth" "$T/bcv/RawData/Training"
    printf '# tiny split\ntrain ABD_001\ntrain ABD_002\ntest ABD_003\n' >"$T/split.txt"
}

pipe() { # pipe [VAR=VALUE...]: the bcv target with a shortened training
    make --no-print-directory -C "$PIPE" bcv BIN="$FINE_BIN" BCV_DIR="$T/bcv" SPLIT="$T/split.txt" \
        OUT="$T/out" PRESET=tiny CROP=32,64,64 EPOCHS=2 ITERS=2 SAVE_EVERY=1 VAL_BATCHES=1 TTA= \
        THREADS=2 "$@"
}

@test "pipeline: bcv runs end to end; the prediction has the label's grid; missing cases are named" {
    [ "${FINE_SANITIZE:-0}" = 1 ] && skip "the release build runs the pipeline"
    setup_data
    run pipe
    echo "$output" | tail -30
    [ "$status" -eq 0 ]
    [[ "$output" == *"mean (13 organs)"* ]]
    [ -e "$T/out/model/final.fst" ]
    [ -e "$T/out/dice.json" ]
    # the report: the test case's slices (3 views x reference and prediction) and the table
    [ -s "$T/out/report.html" ]
    [ "$(grep -o 'data:image/png;base64,' "$T/out/report.html" | wc -l)" -eq 6 ]
    grep -q "ABD_003" "$T/out/report.html"
    grep -q "mean (13 organs)" "$T/out/report.html"
    "$FINE_PYTHON" - "$T/out/pred/ABD_003.nii.gz" "$T/bcv/RawData/Training/label/label0003.nii.gz" <<'PY'
import sys, numpy as np, nibabel as nib
p, r = nib.load(sys.argv[1]), nib.load(sys.argv[2])
assert p.shape == r.shape, (p.shape, r.shape)
assert np.allclose(p.affine, r.affine, atol=1e-3), (p.affine, r.affine)
v = np.asarray(p.dataobj)
assert v.min() >= 0 and v.max() <= 13
PY
    # a second run has nothing to do
    run pipe
    [ "$status" -eq 0 ]
    [[ "$output" != *"fine-train"* ]]
    # a missing case is named before any work
    rm "$T/bcv/RawData/Training/label/label0002.nii.gz"
    run pipe OUT="$T/out2"
    [ "$status" -ne 0 ]
    [[ "$output" == *"missing (image or label): ABD_002"* ]]
    [ ! -e "$T/out2/plan.fst" ]
}

@test "pipeline: an interrupted training resumes from latest.fst; a swapped stage is used" {
    [ "${FINE_SANITIZE:-0}" = 1 ] && skip "the release build runs the pipeline"
    setup_data
    # a STITCH stage of our own: a wrapper that logs its calls, then does the work
    printf '#!/bin/sh\necho "$@" >>"%s/stitch.calls"\nexec "%s/fine-stitch" "$@"\n' "$T" "$FINE_BIN" >"$T/mystitch"
    chmod +x "$T/mystitch"
    pipe EPOCHS=3 ITERS=4 STITCH="$T/mystitch" >"$T/log1" 2>&1 &
    # stop fine-train once the first epoch's latest.fst exists
    for _ in $(seq 600); do [ -e "$T/out/model/latest.fst" ] && break; sleep 0.2; done
    [ -e "$T/out/model/latest.fst" ]
    pkill -INT -f "fine-train .*$T/out/model" || true
    wait $! && status=0 || status=$?
    cat "$T/log1" | tail -5
    [ "$status" -ne 0 ]
    [ ! -e "$T/out/model/final.fst" ]
    [ ! -e "$T/stitch.calls" ]
    run pipe EPOCHS=3 ITERS=4 STITCH="$T/mystitch"
    echo "$output" | tail -20
    [ "$status" -eq 0 ]
    [[ "$output" == *"--resume $T/out/model/latest.fst"* ]]
    [ -e "$T/out/model/final.fst" ]
    # the log ends at epoch 3, and the final checkpoint has seen all 12 iterations
    "$FINE_PYTHON" - "$T/out/model/log.jsonl" "$T/out/model/final.fst" <<'PY'
import sys, json, fine_stream
rows = [json.loads(l) for l in open(sys.argv[1])]
assert rows[-1]["epoch"] == 3, rows
st = [r for r in fine_stream.read(sys.argv[2]) if r["type"] == "train_state"][0]
assert st["iteration"] == 12, st["iteration"]
PY
    grep -q "ABD_003.nii.gz" "$T/stitch.calls"
}
