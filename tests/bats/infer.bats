#!/usr/bin/env bats
# fine-infer: fine-patch --grid | fine-infer | fine-stitch end to end on a synthetic case; pred
# records (shape, softmax sums, keys copied, order with pass-through records); --batch 1 and 3
# alike; --tta against the mean of 8 mirrored passes computed in numpy from `fine-model run`
# logits; errors. The tiny preset's forward takes ~1 s per patch here, so patches are few.
load common

# A tiny model and the grid patches of one small synthetic case (4 patches of 32x64x64), once.
setup_file() {
    export FX="$BATS_FILE_TMPDIR/fx"
    mkdir -p "$FX"
    fine-model init --preset tiny --seed 1 -o "$FX/m.fst"
    fine-synth --cases 1 --scale 0.15 --quiet "$FX/d"
    fine-resample --spacing 12,4.4,4.4 "$FX/d" | fine-normalize --scheme zscore |
        fine-patch --grid --patch 32,64,64 >"$FX/p.fst"
}

@test "fine-infer --help, --version, usage errors, devices" {
    run fine-infer --help
    [ "$status" -eq 0 ]
    [[ "$output" == *"Usage: fine-infer"* ]]
    [[ "$output" == *"fine-patch --grid"*"| fine-infer"* ]]
    run fine-infer --version
    [ "$status" -eq 0 ]
    [[ "$output" == "fine-infer "* ]]
    run fine-infer --bogus
    [ "$status" -eq 2 ]
    run fine-infer "$FX/p.fst" "$T/o.fst"
    [ "$status" -eq 2 ]
    [[ "$output" == *"--model"* ]]
    run fine-infer --model "$FX/m.fst" --batch 0 "$FX/p.fst" "$T/o.fst"
    [ "$status" -eq 2 ]
    run fine-infer --model "$FX/m.fst" --dtype f64 "$FX/p.fst" "$T/o.fst"
    [ "$status" -eq 2 ]
    run fine-infer --model "$FX/m.fst" --device tpu "$FX/p.fst" "$T/o.fst"
    [ "$status" -eq 2 ]
    [[ "$output" == *"--device must be cpu or cuda"* ]]
    # no GPU here: a build without the CUDA backend says so, one with it finds no GPU
    if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
        run fine-infer --model "$FX/m.fst" --device cuda:0 "$FX/p.fst" "$T/o.fst"
        [ "$status" -eq 1 ]
        [ "${#lines[@]}" -eq 1 ]
        [[ "$output" == "fine-infer: "*"cuda:0"* ]]
        [[ "$output" == *"no CUDA backend"* || "$output" == *"no usable GPU"* || "$output" == *"no such GPU"* ]]
        [ ! -e "$T/o.fst" ]
    fi
    run fine-infer --model "$T/missing.fst" "$FX/p.fst" "$T/o.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == "fine-infer: "*"missing.fst"* ]]
}

@test "grid patches | fine-infer --batch 3 | fine-stitch: a NIfTI of the original shape; pred records" {
    fine-infer --model "$FX/m.fst" --batch 3 --dtype f32 --progress "$FX/p.fst" 2>"$T/err" |
        tee "$T/b3.fst" | fine-stitch -o "$T/seg.nii.gz"
    grep -q "patches/s" "$T/err"
    "$FINE_PYTHON" - "$T" "$FX" <<'PY'
import sys, numpy as np, nibabel as nib, fine_stream
t, fx = sys.argv[1:]
seg = nib.load(f"{t}/seg.nii.gz"); ref = nib.load(f"{fx}/d/label/label0001.nii.gz")
assert seg.shape == ref.shape, (seg.shape, ref.shape)
assert np.allclose(seg.affine, ref.affine)
a = np.asarray(seg.dataobj)
assert a.min() >= 0 and a.max() <= 13
inp = list(fine_stream.read(f"{fx}/p.fst")); out = list(fine_stream.read(f"{t}/b3.fst"))
assert [r["type"] for r in out] == [{"patch": "pred"}.get(r["type"], r["type"]) for r in inp]
assert out[0] == inp[0] and out[-1] == inp[-1], "case_begin and case_end pass through unchanged"
n = 0
for p, q in zip(inp, out):
    if p["type"] != "patch":
        continue
    n += 1
    assert q["name"] == "prob" and q["array"].dtype == np.float32 and q["array"].shape == (14, 32, 64, 64)
    for k in ("case", "origin", "pos", "volume_size", "index"):
        assert q[k] == p[k], (k, q[k], p[k])
    s = q["array"].sum(0)
    assert np.abs(s - 1).max() < 1e-5, np.abs(s - 1).max()
    assert q["array"].min() >= 0
assert n == 4
PY
}

@test "--threads 2 --batch 2 (one network per thread) equals --threads 1, with --tta, full and short batches" {
    "$FINE_PYTHON" - "$T" "$FX" <<'PY'
import sys, fine_stream
t, fx = sys.argv[1:]
ps = [r for r in fine_stream.read(f"{fx}/p.fst") if r["type"] == "patch"][:3]
fine_stream.write(f"{t}/p3.fst", [{"type": "patch", "name": "image", "pos": p["pos"], "array": p["array"]}
                                  for p in ps], tool="test")
PY
    for tta in "" --tta; do
        fine-infer --model "$FX/m.fst" --threads 1 --batch 1 --dtype f32 $tta "$T/p3.fst" "$T/a$tta.fst"
        fine-infer --model "$FX/m.fst" --threads 2 --batch 2 --dtype f32 $tta "$T/p3.fst" "$T/b$tta.fst"
    done
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, numpy as np, fine_stream
t = sys.argv[1]
for tta in ["", "--tta"]:
    a = [r["array"] for r in fine_stream.read(f"{t}/a{tta}.fst") if r["type"] == "pred"]
    b = [r["array"] for r in fine_stream.read(f"{t}/b{tta}.fst") if r["type"] == "pred"]
    assert len(a) == len(b) == 3
    d = max(float(np.abs(x - y).max()) for x, y in zip(a, b))
    assert d < 1e-5, (tta, d)
PY
}

@test "--profile: the time per layer function on stderr; the predictions are those of a plain run, bit for bit" {
    fine-infer --model "$FX/m.fst" --threads 2 --batch 2 --dtype f32 "$FX/p.fst" "$T/plain.fst"
    run fine-infer --model "$FX/m.fst" --threads 2 --batch 2 --dtype f32 --profile "$FX/p.fst" "$T/prof.fst"
    [ "$status" -eq 0 ]
    echo "$output"
    [[ "$output" == *"# profile: fine-infer on cpu (fp32): "* ]]
    # every patch's forward ran through it: conv3d_forward, with calls and GFLOP/s
    echo "$output" | grep -E '^conv3d_forward +[1-9][0-9]* +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+$'
    ! echo "$output" | grep -q '_backward' || false
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, fine_stream
t = sys.argv[1]
a = [r["array"] for r in fine_stream.read(f"{t}/plain.fst") if r["type"] == "pred"]
b = [r["array"] for r in fine_stream.read(f"{t}/prof.fst") if r["type"] == "pred"]
assert len(a) == len(b) == 4 and all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
PY
}

@test "--batch 1 equals --batch 3; f16 output sums to 1; records around patches keep their order" {
    # the f32 batch-3 result of the grid patches, as the previous test makes it
    fine-infer --model "$FX/m.fst" --batch 3 --dtype f32 "$FX/p.fst" "$T/b3.fst"
    fine-infer --model "$FX/m.fst" --batch 1 --dtype f32 "$FX/p.fst" "$T/b1.fst"
    "$FINE_PYTHON" - "$T" "$FX" <<'PY'
import sys, numpy as np, fine_stream
t, fx = sys.argv[1:]
a = [r for r in fine_stream.read(f"{t}/b1.fst") if r["type"] == "pred"]
b = [r for r in fine_stream.read(f"{t}/b3.fst") if r["type"] == "pred"]
assert len(a) == len(b) == 4
for x, y in zip(a, b):
    assert x["index"] == y["index"]
    d = np.abs(x["array"] - y["array"]).max()
    assert d < 1e-5, d
# one patch between two other records, no case, as f16
p = next(r for r in fine_stream.read(f"{fx}/p.fst") if r["type"] == "patch")
recs = [{"type": "note", "n": 1}, {"type": "patch", "name": "image", "pos": p["pos"], "array": p["array"]},
        {"type": "note", "n": 2}]
fine_stream.write(f"{t}/one.fst", recs, tool="test")
np.save(f"{t}/ref.npy", a[0]["array"])
PY
    fine-infer --model "$FX/m.fst" --batch 2 <"$T/one.fst" >"$T/one_out.fst"
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, numpy as np, fine_stream
t = sys.argv[1]
out = list(fine_stream.read(f"{t}/one_out.fst"))
assert [r["type"] for r in out] == ["note", "pred", "note"], [r["type"] for r in out]
assert [out[0]["n"], out[2]["n"]] == [1, 2]
q = out[1]["array"]
assert q.dtype == np.float16 and q.shape == (14, 32, 64, 64) and "case" not in out[1]
s = q.astype(np.float32).sum(0)
assert np.abs(s - 1).max() < 1e-3, np.abs(s - 1).max()
d = np.abs(q.astype(np.float32) - np.load(f"{t}/ref.npy")).max()
assert d < 1e-3, d
PY
}

@test "--tta is the mean of the 8 mirrored passes' softmax (numpy from fine-model run logits)" {
    # the second grid patch (origin 0,0,13: not symmetric), alone, and its 8 mirrors
    "$FINE_PYTHON" - "$T" "$FX" <<'PY'
import sys, itertools, numpy as np, fine_stream
t, fx = sys.argv[1:]
p = [r for r in fine_stream.read(f"{fx}/p.fst") if r["type"] == "patch"][1]
one = {k: p[k] for k in ("type", "case", "name", "origin", "pos", "volume_size", "index", "array")}
fine_stream.write(f"{t}/one.fst", [one], tool="test")
mir = []
for m in range(8):
    axes = tuple(1 + d for d in range(3) if m >> d & 1)
    a = np.ascontiguousarray(np.flip(p["array"], axes) if axes else p["array"])
    mir.append({"type": "patch", "case": "m%d" % m, "name": "image", "pos": p["pos"], "array": a})
fine_stream.write(f"{t}/mir.fst", mir, tool="test")
PY
    fine-model run --model "$FX/m.fst" "$T/mir.fst" "$T/logits.fst"
    fine-infer --model "$FX/m.fst" --tta --dtype f32 "$T/one.fst" "$T/tta.fst"
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, numpy as np, fine_stream
t = sys.argv[1]
lg = [r for r in fine_stream.read(f"{t}/logits.fst") if r["type"] == "logits"]
assert len(lg) == 8
acc = np.zeros((14, 32, 64, 64), np.float64)
for m, r in enumerate(lg):
    assert r["case"] == "m%d" % m
    z = r["head0"].astype(np.float64)
    e = np.exp(z - z.max(0, keepdims=True)); sm = e / e.sum(0, keepdims=True)
    axes = tuple(1 + d for d in range(3) if m >> d & 1)
    acc += (np.flip(sm, axes) if axes else sm) / 8
(q,) = [r for r in fine_stream.read(f"{t}/tta.fst") if r["type"] == "pred"]
assert q["pos"] == lg[0]["pos"] and q["index"] == 1
d = np.abs(q["array"] - acc).max()
print("max |tta - numpy|", d)
assert d < 1e-5, d
# and it is not the plain pass
z = lg[0]["head0"].astype(np.float64); e = np.exp(z - z.max(0)); sm = e / e.sum(0)
assert np.abs(q["array"] - sm).max() > 1e-4
PY
}

@test "a patch of another size or channel count is refused, naming the input; no output" {
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, numpy as np, fine_stream
t = sys.argv[1]
fine_stream.write(f"{t}/small.fst", [{"type": "patch", "case": "x", "pos": [0, 0, 0],
                  "array": np.zeros((1, 16, 64, 64), np.float32)}], tool="test")
fine_stream.write(f"{t}/chan.fst", [{"type": "note"}, {"type": "patch", "case": "y", "pos": [0, 0, 0],
                  "array": np.zeros((2, 32, 64, 64), np.float32)}], tool="test")
PY
    run fine-infer --model "$FX/m.fst" "$T/small.fst" "$T/o.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == "fine-infer: "*"small.fst: patch 0 of case x is f32 [1, 16, 64, 64], the model takes f32 [1, 32, 64, 64]"* ]]
    [ ! -e "$T/o.fst" ]
    run fine-infer --model "$FX/m.fst" "$T/chan.fst" "$T/o.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"chan.fst: patch 0 of case y is f32 [2, 32, 64, 64]"* ]]
    [ ! -e "$T/o.fst" ]
    # a cut input stream: an error, no output
    head -c 200000 "$FX/p.fst" >"$T/cut.fst"
    run fine-infer --model "$FX/m.fst" "$T/cut.fst" "$T/o.fst"
    [ "$status" -eq 1 ]
    [ ! -e "$T/o.fst" ]
}
