#!/usr/bin/env bats
# fine-train: the loss falls, resume is exact, bad input is refused.

load common

# one synthetic case, preprocessed once for the whole file
setup_file() {
    export NORM="$BATS_FILE_TMPDIR/norm.fst"
    fine-synth --cases 1 --scale 0.3 --seed 5 "$BATS_FILE_TMPDIR/data" >/dev/null 2>&1
    fine-resample --spacing 6,2,2 "$BATS_FILE_TMPDIR/data" -o "$BATS_FILE_TMPDIR/pre.fst"
    fine-normalize --scheme zscore "$BATS_FILE_TMPDIR/pre.fst" "$NORM"
}

make_batches() { # make_batches DIR COUNT
    fine-patch --train --augment none --crop 32,64,64 --count "$2" --seed 1 "$NORM" -o "$1/batches.fst"
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
    [ -e "$T/a/latest.fst" ]
    [ -e "$T/a/final.fst" ]
    # latest.fst was written after epoch 1 (iteration 2): resume from it on the same input
    fine-train --resume "$T/a/latest.fst" --quiet -o "$T/b" "$T/batches.fst"
    params_equal "$T/a/final.fst" "$T/b/final.fst"
    # and a different seed gives different parameters (the comparison can fail)
    fine-train --preset tiny --seed 7 --epochs 2 --iters-per-epoch 2 --quiet -o "$T/c" "$T/batches.fst"
    ! params_equal "$T/a/final.fst" "$T/c/final.fst" || false
}

@test "--profile: the time per layer function on stderr (two shards' calls together); parameters as a plain run's" {
    make_batches "$T" 4
    fine-train --preset tiny --set drop_path=0.2 --threads 2 --epochs 1 --iters-per-epoch 2 --quiet -o "$T/a" \
        "$T/batches.fst"
    run fine-train --preset tiny --set drop_path=0.2 --threads 2 --epochs 1 --iters-per-epoch 2 --quiet --profile \
        -o "$T/b" "$T/batches.fst"
    [ "$status" -eq 0 ]
    echo "$output"
    [[ "$output" == *"# profile: fine-train on cpu (fp32): "* ]]
    # 2 iterations of 2 shards: one optimizer step each, and backward products with GFLOP/s
    echo "$output" | grep -E '^sgd_step +2 '
    echo "$output" | grep -E '^linear_backward +[1-9][0-9]* +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+$'
    params_equal "$T/a/final.fst" "$T/b/final.fst"
}

@test "--threads 2 runs the batch as two shards: resume is exact, parameters match --threads 1 (drop path on)" {
    make_batches "$T" 4
    fine-train --preset tiny --set drop_path=0.2 --threads 2 --epochs 2 --iters-per-epoch 2 --save-every 1 --quiet \
        -o "$T/a" "$T/batches.fst"
    fine-train --resume "$T/a/latest.fst" --threads 2 --quiet -o "$T/b" "$T/batches.fst"
    params_equal "$T/a/final.fst" "$T/b/final.fst"
    fine-train --preset tiny --set drop_path=0.2 --threads 1 --epochs 2 --iters-per-epoch 2 --quiet -o "$T/c" \
        "$T/batches.fst"
    # the order of the batch sums differs: equal within 1e-5 (SGD, 4 steps)
    "$FINE_PYTHON" - "$T/a/final.fst" "$T/c/final.fst" <<'PY'
import sys, numpy as np, fine_stream
def params(p):
    return {r["name"]: r["array"] for r in fine_stream.read(p) if r["type"] == "param"}
a, c = params(sys.argv[1]), params(sys.argv[2])
worst = max(float(np.max(np.abs(a[k] - c[k]))) for k in a)
moved = max(float(np.max(np.abs(a[k].astype(np.float64)))) for k in a)
print("# max |threads 2 - threads 1| =", worst)
assert worst < 1e-5 and moved > 0, worst
PY
}

@test "depths above 2 and 2 memory tokens: training and resume are exact (the visitation counter travels in the checkpoint), fine-infer runs it" {
    # at depth 3 the logits depend on vt_check (the bank attention's key mask), so resuming
    # must restore the counter as well as the parameters and the optimizer state
    make_batches "$T" 4
    fine-train --preset tiny --set depths=3,2,3,2 --set gt_num=2 --set drop_path=0.2 --threads 2 --epochs 2 \
        --iters-per-epoch 2 --save-every 1 --quiet -o "$T/a" "$T/batches.fst"
    fine-train --resume "$T/a/latest.fst" --threads 2 --quiet -o "$T/b" "$T/batches.fst"
    params_equal "$T/a/final.fst" "$T/b/final.fst"
    "$FINE_PYTHON" - "$T/a/final.fst" "$T/b/final.fst" <<'PY'
import sys, numpy as np, fine_stream
def model(p):
    return next(r for r in fine_stream.read(p) if r["type"] == "model")
a, b = model(sys.argv[1]), model(sys.argv[2])
assert a["config"]["depths"] == [3, 2, 3, 2] and a["config"]["gt_num"] == 2, a["config"]
va, vb = np.asarray(a["vt_check"]), np.asarray(b["vt_check"])
assert va.sum() > 0 and np.array_equal(va, vb), (va.ravel(), vb.ravel())
PY
    fine-patch --grid --patch 32,64,64 "$NORM" > "$T/grid.fst"
    run fine-infer --model "$T/a/final.fst" --batch 2 --threads 2 "$T/grid.fst" "$T/pred.fst"
    echo "$output"
    [ "$status" -eq 0 ]
    [ -s "$T/pred.fst" ]
}

@test "--recompute all trains the parameters of --recompute none, bit for bit; bad --recompute and --precision are usage errors" {
    make_batches "$T" 4
    fine-train --preset tiny --epochs 2 --iters-per-epoch 2 --recompute none --quiet -o "$T/a" "$T/batches.fst"
    fine-train --preset tiny --epochs 2 --iters-per-epoch 2 --recompute all --quiet -o "$T/b" "$T/batches.fst"
    params_equal "$T/a/final.fst" "$T/b/final.fst"
    run fine-train --preset tiny --epochs 1 --iters-per-epoch 1 --recompute some -o "$T/c" "$T/batches.fst"
    [ "$status" -eq 2 ]
    [[ "$output" == *"--recompute must be auto, none, gelu, mlp or all, not 'some'"* ]] || false
    run fine-train --preset tiny --epochs 1 --iters-per-epoch 1 --precision bf8 -o "$T/c" "$T/batches.fst"
    [ "$status" -eq 2 ]
    [[ "$output" == *"--precision must be auto, fp32, tf32, bf16 or fp16, not 'bf8'"* ]] || false
    # on the CPU, a GPU precision is one line and no checkpoint; auto is fp32
    run fine-train --preset tiny --epochs 1 --iters-per-epoch 1 --precision bf16 -o "$T/c" "$T/batches.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"precision 'bf16' is not available on the CPU"* ]] || false
    [ ! -e "$T/c/final.fst" ]
    run fine-train --preset tiny --epochs 1 --iters-per-epoch 1 -o "$T/d" "$T/batches.fst"
    [ "$status" -eq 0 ]
    [[ "$output" == *"cpu, precision fp32, "*"(recompute none)"* ]] || false
}

@test "--optimizer adamw: the first step moves every trained parameter by lr (PyTorch's AdamW), resume is exact" {
    make_batches "$T" 4
    fine-model init --preset tiny --seed 12345 -o "$T/init.fst"
    fine-train --preset tiny --optimizer adamw --weight-decay 0 --epochs 1 --iters-per-epoch 1 --quiet \
        -o "$T/one" "$T/batches.fst"
    "$FINE_PYTHON" - "$T/init.fst" "$T/one/final.fst" <<'PY'
import sys, numpy as np, fine_stream
def params(p):
    return {r["name"]: r["array"].astype(np.float64) for r in fine_stream.read(p) if r["type"] == "param"}
a, b = params(sys.argv[1]), params(sys.argv[2])
d = np.abs(np.concatenate([(b[k] - a[k]).ravel() for k in a]))
moved = d[d > 0]
# bias-corrected first step: m / sqrt(v) = g / (|g| + eps), so |dp| = lr where |g| >> eps = 1e-8
# and less where |g| is tiny; SGD's first step would be lr * |g| * (1 + mu), spread over orders
# of magnitude. The float parameters (|p| up to ~4) round dp to ~1e-4 of lr.
q = np.quantile(moved, [0.1, 0.25, 0.5, 0.75, 0.9])
print("moved %d of %d, |dp| quantiles %s, max %.9f" % (moved.size, d.size, q, d.max()))
assert moved.size > d.size // 2
assert d.max() <= 1e-3 * (1 + 1e-3), d.max()
assert abs(q[4] - 1e-3) < 1e-6 and q[1] > 0.8e-3, q  # without bias correction: 3.16 lr
PY
    # the second moment and the step count travel in the checkpoint: 2 + 2 = 4, bit for bit
    fine-train --preset tiny --optimizer adamw --epochs 2 --iters-per-epoch 2 --save-every 1 --quiet \
        -o "$T/a" "$T/batches.fst"
    fine-train --resume "$T/a/latest.fst" --quiet -o "$T/b" "$T/batches.fst"
    params_equal "$T/a/final.fst" "$T/b/final.fst"
    fine-info "$T/a/final.fst" | grep -q 'optimizer *"adamw"'
    fine-info "$T/a/final.fst" | grep -q 'second_moment'
    # and it is not SGD under another name
    fine-train --preset tiny --epochs 2 --iters-per-epoch 2 --quiet -o "$T/s" "$T/batches.fst"
    ! params_equal "$T/a/final.fst" "$T/s/final.fst" || false
    run fine-train --preset tiny --optimizer adam -o "$T/x" "$T/batches.fst"
    [ "$status" -eq 2 ]
    [[ "$output" == *"--optimizer must be sgd or adamw"* ]] || false
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
    sleep 4   # past start-up (the handler is in place), well before 40 iterations end
    kill -TERM "$pid"
    wait "$pid" && st=0 || st=$?
    [ "$st" -eq 143 ]   # 128 + SIGTERM: stopped, not finished
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
    # a truncated checkpoint is named, and nothing is written
    fine-train --preset tiny --epochs 1 --iters-per-epoch 1 --quiet -o "$T/v" "$T/batches.fst"
    head -c 100000 "$T/v/final.fst" >"$T/cut.fst"
    run fine-train --resume "$T/cut.fst" -o "$T/w" "$T/batches.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"$T/cut.fst"*"truncated"* ]]
    [ ! -e "$T/w/final.fst" ]
    [ ! -e "$T/w/latest.fst" ]
    # labels of a class the model does not have
    run fine-train --preset tiny --set num_classes=3 --epochs 1 --iters-per-epoch 1 -o "$T/u" "$T/batches.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"classes below 3"* ]]
}

@test "--val: per-epoch validation Dice in the log, best.fst on its moving average (alpha 0.9)" {
    make_batches "$T" 8
    fine-patch --train --augment none --crop 32,64,64 --count 3 --seed 2 "$NORM" -o "$T/val.fst"
    fine-train --preset tiny --epochs 4 --iters-per-epoch 2 --val "$T/val.fst" --quiet --log "$T/log.jsonl" \
        -o "$T/r" "$T/batches.fst"
    [ -e "$T/r/best.fst" ]
    [ -e "$T/r/final.fst" ]
    "$FINE_PYTHON" - "$T/log.jsonl" "$T/r/best.fst" <<'PY'
import sys, json, math, fine_stream
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 4, rows
ema, best, best_epoch = None, None, None
for r in rows:
    d = r["val_dice"]
    pc = [v for v in r["val_dice_per_class"] if v is not None]
    assert len(r["val_dice_per_class"]) == 13 and abs(d - sum(pc) / len(pc)) < 1e-5, r
    ema = d if ema is None else 0.9 * ema + 0.1 * d
    assert abs(r["val_dice_ema"] - ema) < 1e-5, (r, ema)
    is_best = best is None or ema > best
    assert r["best"] == is_best, (r, best)
    if is_best:
        best, best_epoch = ema, r["epoch"]
st = [r for r in fine_stream.read(sys.argv[2]) if r["type"] == "train_state"][0]
assert st["epoch"] == best_epoch and abs(st["val_best"] - best) < 1e-5, (st, best_epoch, best)
PY
}

@test "the validation Dice is the Dice of fine-model run's argmax on the same patches (independent count)" {
    make_batches "$T" 2
    fine-patch --train --augment none --crop 32,64,64 --count 2 --seed 3 "$NORM" -o "$T/val.fst"
    fine-train --preset tiny --epochs 1 --iters-per-epoch 1 --val "$T/val.fst" --quiet --log "$T/log.jsonl" \
        -o "$T/r" "$T/batches.fst"
    # the model after the epoch is final.fst; the validation ran on it before it was saved
    fine-model run --model "$T/r/final.fst" --batch 2 "$T/val.fst" "$T/logits.fst"
    "$FINE_PYTHON" - "$T/log.jsonl" "$T/val.fst" "$T/logits.fst" <<'PY'
import sys, json, numpy as np, fine_stream
row = json.loads(open(sys.argv[1]).readline())
labels = [r["label"] for r in fine_stream.read(sys.argv[2]) if r["type"] == "patch"]
logits = [r["head0"] for r in fine_stream.read(sys.argv[3]) if r["type"] == "logits"]
tp, fp, fn = np.zeros(14), np.zeros(14), np.zeros(14)
for y, l in zip(labels, logits):
    a = np.asarray(l).argmax(0)
    for k in range(14):
        tp[k] += np.sum((a == k) & (y == k)); fp[k] += np.sum((a == k) & (y != k)); fn[k] += np.sum((a != k) & (y == k))
d = [2 * tp[k] / (2 * tp[k] + fp[k] + fn[k]) if 2 * tp[k] + fp[k] + fn[k] > 0 else None for k in range(1, 14)]
for a, b in zip(d, row["val_dice_per_class"]):
    assert (a is None) == (b is None) and (a is None or abs(a - b) < 1e-4), (d, row["val_dice_per_class"])
print("per-class validation Dice agrees with an independent count", d)
PY
}

@test "--plan and a plan record in the input set max_imsize and vt_map (A2); --set wins; --config reads key=value" {
    make_batches "$T" 2
    fine-resample --plan-out "$T/plan.fst" "$BATS_FILE_TMPDIR/data"
    "$FINE_PYTHON" - "$T/plan.fst" <<'PY'
import sys, fine_stream
p = [r for r in fine_stream.read(sys.argv[1]) if r["type"] == "plan"][0]
print("plan max_imsize", p["max_imsize"])
PY
    fine-train --preset tiny --plan "$T/plan.fst" --epochs 1 --iters-per-epoch 1 --quiet -o "$T/a" "$T/batches.fst"
    run fine-model describe --model "$T/a/final.fst"
    "$FINE_PYTHON" - "$T/plan.fst" "$output" <<'PY'
import sys, fine_stream
p = [r for r in fine_stream.read(sys.argv[1]) if r["type"] == "plan"][0]
cfg = dict(l.split("=", 1) for l in sys.argv[2].splitlines() if "=" in l and not l.startswith("#"))
mi = [int(v) for v in cfg["max_imsize"].split(",")]
vt = [int(v) for v in cfg["vt_map"].split(",")]
assert mi == list(p["max_imsize"]), (mi, p["max_imsize"])
assert vt == [max(2, m // c) for m, c in zip(mi, (32, 64, 64))], vt
PY
    # the same plan as a record in the input stream, before the patches
    "$FINE_PYTHON" - "$T/plan.fst" "$T/batches.fst" "$T/withplan.fst" <<'PY'
import sys, fine_stream
plan = [r for r in fine_stream.read(sys.argv[1]) if r["type"] == "plan"]
fine_stream.write(sys.argv[3], plan + list(fine_stream.read(sys.argv[2])), tool="t", args=sys.argv)
PY
    fine-train --preset tiny --epochs 1 --iters-per-epoch 1 --quiet -o "$T/b" "$T/withplan.fst"
    run cmp <(fine-model describe --model "$T/a/final.fst") <(fine-model describe --model "$T/b/final.fst")
    [ "$status" -eq 0 ]
    fine-train --preset tiny --set vt_map=3,3,3 --epochs 1 --iters-per-epoch 1 --quiet -o "$T/c" "$T/withplan.fst"
    fine-model describe --model "$T/c/final.fst" | grep -qx "vt_map=3,3,3"
    fine-model describe --preset tiny | grep -v "^#" | sed 's/^embed_dim=.*/embed_dim=12/' >"$T/cfg.txt"
    fine-train --config "$T/cfg.txt" --epochs 1 --iters-per-epoch 1 --quiet -o "$T/d" "$T/batches.fst"
    fine-model describe --model "$T/d/final.fst" | grep -qx "embed_dim=12"
    echo "no_such_key=1" >"$T/bad.txt"
    run fine-train --config "$T/bad.txt" --epochs 1 --iters-per-epoch 1 -o "$T/e" "$T/batches.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"bad.txt:1"* ]]
}

@test "patch 4,4,4: fine-train trains it (head 1's target at half the crop), and a patch the reference never ran is refused" {
    fine-patch --train --augment none --crop 64,64,64 --count 4 --seed 1 "$NORM" -o "$T/b64.fst"
    fine-train --preset tiny --set patch=4,4,4 --set crop=64,64,64 --optimizer adamw --epochs 2 \
        --iters-per-epoch 2 --quiet --log "$T/log.jsonl" -o "$T/r" "$T/b64.fst"
    [ -s "$T/r/final.fst" ]
    "$FINE_PYTHON" - "$T/log.jsonl" <<'PY'
import sys, json, math
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows), rows
PY
    fine-model describe --model "$T/r/final.fst" | grep -q '^patch=4,4,4$'
    run fine-train --preset tiny --set patch=2,2,2 -o "$T/x" "$T/b64.fst"
    [ "$status" -ne 0 ]
    [[ "$output" == *"patch 2,2,2: 2,4,4 and 4,4,4 are supported"* ]] || false
    [ ! -e "$T/x/final.fst" ]
}
