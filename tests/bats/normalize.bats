#!/usr/bin/env bats
# fine-normalize: --fit against numpy (nnU-Net v1's _get_voxels_in_foreground on the arrays
# cropped to non-zero, _compute_stats: percentile 0.5 / 99.5, mean, std), the training-split
# selection (--cases, a plan record), data set folders; the apply step against numpy's f32
# clip and z-score, bit for bit; pass-through, meta, errors.
load common

# mk_cases FILE: cases A (int16 HU-like with a zero border, so cropping matters), B (f32,
# label written first) and C (int16), each an image and a u8 label volume; also FILE.plan.fst
# holding a plan record naming A and C.
mk_cases() {
    "$FINE_PYTHON" - "$1" <<'PY'
import sys, numpy as np, fine_stream
rng = np.random.default_rng(11)
g = lambda s: {"spacing": [3.0, 0.8, 0.8], "original_size": list(s), "original_spacing": [3.0, 0.8, 0.8],
               "crop_lo": [0, 0, 0], "crop_hi": list(s)}
recs = []
for name, shape, dt in [("A", (9, 30, 31), np.int16), ("B", (7, 25, 20), np.float32), ("C", (11, 21, 23), np.int16)]:
    img = rng.integers(-1000, 1500, shape).astype(dt) if dt == np.int16 else \
          (rng.standard_normal(shape) * 300).astype(dt)
    lab = (rng.random(shape) < 0.3).astype(np.uint8) * rng.integers(1, 14, shape).astype(np.uint8)
    if name == "A":
        img[:2] = 0; img[:, :, -3:] = 0; img[img == 0] = 0
        lab[0, :5] = 3  # foreground outside the non-zero box: nnU-Net's crop drops it
    vi = {"type": "volume", "case": name, "name": "image", "array": img, "geometry": g(shape), "meta": {"source": name}}
    vl = {"type": "volume", "case": name, "name": "label", "array": lab, "geometry": g(shape)}
    recs += [vl, vi] if name == "B" else [vi, vl]
fine_stream.write(sys.argv[1], recs, tool="mk_cases")
fine_stream.write(sys.argv[1] + ".plan.fst", [{"type": "plan", "cases": ["A", "C"], "target_spacing": [3.0, 0.8, 0.8]}])
PY
}

# check_stats INPUT STATS:CASE,CASE...: each stats record equals numpy's on those cases of INPUT.
check_stats() {
    "$FINE_PYTHON" - "$@" <<'PY'
import sys, numpy as np, fine_stream
src = sys.argv[1]
vols = {(r["case"], r["name"]): r["array"] for r in fine_stream.read(src) if r["type"] == "volume"}
for arg in sys.argv[2:]:
    stats_path, cases = arg.split(":")
    cases = cases.split(",")
    w = []
    for c in cases:
        img, lab = vols[(c, "image")].astype(np.float32), vols[(c, "label")]
        nz = np.argwhere(img != 0)
        box = tuple(slice(a, b + 1) for a, b in zip(nz.min(0), nz.max(0)))
        w += list(img[box][lab[box] > 0][::10])          # _get_voxels_in_foreground
    w = np.array(w, np.float64)
    (st,) = [r for r in fine_stream.read(stats_path) if r["type"] == "stats"]
    assert st["scheme"] == "ct" and st["cases"] == cases, st
    assert st["samples"] == len(w) and st["grid"] == "original", st
    assert st["lower"] == np.percentile(w, 0.5), (st["lower"], np.percentile(w, 0.5))
    assert st["upper"] == np.percentile(w, 99.5), (st["upper"], np.percentile(w, 99.5))
    assert abs(st["mean"] - np.mean(w)) <= 1e-12 * abs(np.mean(w)), (st["mean"], np.mean(w))
    assert abs(st["std"] - np.std(w)) <= 1e-12 * np.std(w), (st["std"], np.std(w))
    assert st["median"] == np.median(w) and st["min"] == w.min() and st["max"] == w.max()
PY
}

@test "fine-normalize --help, --version, usage errors" {
    run fine-normalize --help
    [ "$status" -eq 0 ]
    [[ "$output" == *"Usage: fine-normalize --fit"* ]]
    [[ "$output" == *"| fine-normalize --stats"* ]]
    run fine-normalize --version
    [ "$status" -eq 0 ]
    [[ "$output" == "fine-normalize "* ]]
    run fine-normalize --scheme ct in.fst out.fst
    [ "$status" -eq 2 ]
    run fine-normalize --scheme bogus
    [ "$status" -eq 2 ]
    run fine-normalize --cases A in.fst
    [ "$status" -eq 2 ]
    run fine-normalize --fit --stats s.fst in.fst
    [ "$status" -eq 2 ]
    run fine-normalize --stats s.fst --scheme none
    [ "$status" -eq 2 ]
}

@test "--fit equals numpy on the pooled foreground sample; --cases and a plan select the training cases" {
    mk_cases "$T/in.fst"
    fine-normalize --fit "$T/in.fst" -o "$T/all.fst"
    fine-normalize --fit --cases C,A - <"$T/in.fst" >"$T/ca.fst"
    printf 'B  # one case\n\n' >"$T/train.txt"
    fine-normalize --fit --cases @"$T/train.txt" "$T/in.fst" -o "$T/b.fst"
    cat "$T/in.fst.plan.fst" "$T/in.fst" | fine-normalize --fit -o "$T/plan.fst"
    check_stats "$T/in.fst" "$T/all.fst:A,B,C" "$T/ca.fst:A,C" "$T/b.fst:B" "$T/plan.fst:A,C"
    run fine-normalize --fit --cases A,D "$T/in.fst" -o "$T/x.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"case D (of --cases) is not in the input"* ]]
    [ ! -e "$T/x.fst" ]
}

@test "--fit on a data set folder equals numpy on the NIfTI files" {
    fine-synth --cases 3 --scale 0.1 --quiet "$T/d"
    fine-normalize --fit --cases 1,3 "$T/d" -o "$T/st.fst"
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, numpy as np, nibabel as nib, fine_stream
t = sys.argv[1]
w = []
for s in (1, 3):
    img = np.asarray(nib.load(f"{t}/d/img/img{s:04d}.nii.gz").dataobj).transpose(2, 1, 0).astype(np.float32)
    lab = np.asarray(nib.load(f"{t}/d/label/label{s:04d}.nii.gz").dataobj).transpose(2, 1, 0)
    nz = np.argwhere(img != 0)
    box = tuple(slice(a, b + 1) for a, b in zip(nz.min(0), nz.max(0)))
    w += list(img[box][lab[box] > 0][::10])
w = np.array(w, np.float64)
(st,) = list(fine_stream.read(f"{t}/st.fst"))
assert st["cases"] == ["ABD_001", "ABD_003"], st["cases"]
assert st["lower"] == np.percentile(w, 0.5) and st["upper"] == np.percentile(w, 99.5)
assert abs(st["mean"] - w.mean()) < 1e-9 and abs(st["std"] - w.std()) < 1e-9
PY
}

@test "apply: clip and z-score equal numpy's f32 arithmetic bit for bit; labels and others pass through" {
    mk_cases "$T/in.fst"
    fine-normalize --fit --cases A,C "$T/in.fst" -o "$T/st.fst"
    "$FINE_PYTHON" -c 'import fine_stream; fine_stream.write("'"$T"'/note.fst", [{"type": "x-note", "n": 7}])'
    cat "$T/note.fst" "$T/in.fst" | fine-normalize --stats "$T/st.fst" | cat >"$T/out.fst"
    # the stats record inside the stream instead of --stats
    cat "$T/st.fst" "$T/in.fst" | fine-normalize - "$T/out2.fst"
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, numpy as np, fine_stream
t = sys.argv[1]
(st,) = list(fine_stream.read(f"{t}/st.fst"))
src = list(fine_stream.read(f"{t}/in.fst"))
with fine_stream.Reader(f"{t}/out.fst") as r:
    out = list(r)
    assert [p["tool"] for p in r.provenance] == ["python", "fine-normalize"], r.provenance
assert out[0] == {"type": "x-note", "n": 7}
out = out[1:]
assert len(out) == len(src)
for a, b in zip(src, out):
    assert a["case"] == b["case"] and a["name"] == b["name"]
    assert all(b["geometry"][k] == v for k, v in a["geometry"].items()), (a["geometry"], b["geometry"])
    if a["name"] == "label":
        assert b["array"].dtype == a["array"].dtype and (a["array"] == b["array"]).all()
        continue
    x = a["array"].astype(np.float32)
    want = np.clip(x, np.float32(st["lower"]), np.float32(st["upper"]))
    want = (want - np.float32(st["mean"])) / np.float32(st["std"])     # nnU-Net's numpy f32 arithmetic
    assert b["array"].dtype == np.float32 and np.array_equal(b["array"], want), np.abs(b["array"] - want).max()
    n = b["meta"]["normalization"]
    assert n["scheme"] == "ct" and n["lower"] == st["lower"] and n["std"] == st["std"], n
    assert b["meta"]["source"] == a["case"]
out2 = [r for r in fine_stream.read(f"{t}/out2.fst") if r["type"] == "volume"]
assert all(np.array_equal(p["array"], q["array"]) for p, q in zip(out, out2))
PY
}

@test "apply --scheme zscore and none work per case without statistics" {
    mk_cases "$T/in.fst"
    fine-normalize --scheme zscore "$T/in.fst" "$T/z.fst"
    fine-normalize --scheme none "$T/in.fst" "$T/n.fst"
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, numpy as np, fine_stream
t = sys.argv[1]
src = {(r["case"], r["name"]): r["array"] for r in fine_stream.read(f"{t}/in.fst")}
for r in fine_stream.read(f"{t}/z.fst"):
    if r["name"] != "image":
        continue
    x = src[(r["case"], "image")].astype(np.float64)
    want = (x - x.mean()) / (x.std() + 1e-8)
    assert np.abs(r["array"] - want).max() < 1e-5, np.abs(r["array"] - want).max()
    assert abs(r["meta"]["normalization"]["mean"] - x.mean()) < 1e-9
for r in fine_stream.read(f"{t}/n.fst"):
    if r["name"] == "image":
        assert r["array"].dtype == np.float32 and (r["array"] == src[(r["case"], "image")]).all()
PY
}

@test "errors: no statistics, a stats file without stats, a case without label, existing output" {
    mk_cases "$T/in.fst"
    run fine-normalize "$T/in.fst" "$T/o.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == "fine-normalize: $T/in.fst: an image volume before any statistics"* ]]
    [ ! -e "$T/o.fst" ]
    run fine-normalize --stats "$T/in.fst" "$T/in.fst" "$T/o.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"$T/in.fst: no stats record"* ]]
    fine-convert --case Q "$(fine-synth --cases 1 --scale 0.05 --quiet "$T/d" >/dev/null; echo "$T/d/img/img0001.nii.gz")" "$T/q.fst"
    run fine-normalize --fit "$T/q.fst" -o "$T/o.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"case Q: label volume missing"* ]]
    [ ! -e "$T/o.fst" ]
    fine-normalize --fit "$T/in.fst" -o "$T/st.fst"
    run fine-normalize --fit "$T/in.fst" -o "$T/st.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"exists"* ]]
    fine-normalize --fit --force "$T/in.fst" -o "$T/st.fst"
}

@test "bad input: NaN or infinite intensities, labels outside 0..13, label shape or spacing, an empty image" {
    for kind in nan inf label14 shape spacing empty; do
        mk_bad_case $kind "$T/$kind.fst"
        want="$(bad_case_message $kind)"
        run fine-normalize --scheme zscore "$T/$kind.fst" "$T/o_$kind.fst"
        echo "$kind (apply): $output"
        [ "$status" -eq 1 ]
        [[ "$output" == "fine-normalize: "*"$want"* ]] || false
        [ ! -e "$T/o_$kind.fst" ]
        [ "${#lines[@]}" -eq 1 ]
        run fine-normalize --fit "$T/$kind.fst" -o "$T/s_$kind.fst"
        echo "$kind (fit): $output"
        [ "$status" -eq 1 ]
        [[ "$output" == "fine-normalize: "*"$want"* ]] || false
        [ ! -e "$T/s_$kind.fst" ]
    done
    # the good case alone passes, and --max-label 14 accepts the label 14
    mk_bad_case label14 "$T/l.fst"
    fine-normalize --scheme zscore --max-label 14 "$T/l.fst" "$T/ok.fst"
    run fine-normalize --max-label 0 "$T/l.fst" "$T/x.fst"
    [ "$status" -eq 2 ]
}
