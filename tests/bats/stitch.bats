#!/usr/bin/env bats
# fine-stitch: fine-patch --grid | identity model | fine-stitch gives the label volume back
# exactly (odd sizes, cases smaller than the patch, crop boxes, several cases, f16, logits),
# and in the original grid within a Dice tolerance after fine-resample; the Gaussian weighting
# of overlapping tiles against scipy's gaussian_filter (nnU-Net's _get_gaussian); --lcc against
# scipy.ndimage.label; errors and outputs as every tool.
load common

IDENTITY="$FINE_HELPERS/identity_model"

# The test cases, made once per file in $FX (one Python run): NAME.fst holds an `image` (f32)
# and a `label` (u8, classes 0..4, balls giving several components per class) volume;
# NAME_label.npy is the label on the original grid (0 outside the crop box). "box" is the
# box [3,5,0]..+size of an original 15x31x17 grid, the others are their own original grid.
setup_file() {
    export FX="$BATS_FILE_TMPDIR/fx"
    mkdir -p "$FX"
    "$FINE_PYTHON" - "$FX" <<'PY'
import sys, numpy as np, fine_stream
d = sys.argv[1]
def mk_case(name, z, y, x, lo=(0, 0, 0), orig=None):
    orig = list(orig or (z, y, x))
    rng = np.random.default_rng(z * 10000 + y * 100 + x)
    lab = np.zeros((z, y, x), np.uint8)
    zz, yy, xx = np.ogrid[:z, :y, :x]
    for c in range(1, 5):
        for _ in range(3):
            cz, cy, cx = rng.integers(0, [z, y, x])
            r = rng.uniform(1, max(2, min(z, y, x) / 3))
            lab[(zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = c
    img = (rng.standard_normal((z, y, x)) + lab).astype(np.float32)
    geo = {"spacing": [2.5, 0.8, 0.8], "original_size": orig, "original_spacing": [2.5, 0.8, 0.8],
           "crop_lo": list(lo), "crop_hi": [l + s for l, s in zip(lo, (z, y, x))]}
    recs = [{"type": "volume", "case": name, "name": "image", "array": img, "geometry": geo},
            {"type": "volume", "case": name, "name": "label", "array": lab, "geometry": geo}]
    fine_stream.write(f"{d}/{name}.fst", recs, tool="mk_case")
    full = np.zeros(orig, np.uint8)
    full[lo[0]:lo[0] + z, lo[1]:lo[1] + y, lo[2]:lo[2] + x] = lab
    np.save(f"{d}/{name}_label.npy", full)
mk_case("c1", 11, 37, 29)
mk_case("small", 5, 9, 7)
mk_case("box", 9, 20, 17, (3, 5, 0), (15, 31, 17))
mk_case("ca", 7, 21, 19)
mk_case("cb", 12, 16, 33)
mk_case("lcc", 10, 30, 30)
PY
}

# same_as_label NIFTI NAME...: each NIfTI's array (z, y, x) equals FX/NAME_label.npy exactly,
# u8; arguments in pairs.
same_as_label() {
    "$FINE_PYTHON" - "$FX" "$@" <<'PY'
import sys, numpy as np, nibabel as nib
fx, args = sys.argv[1], sys.argv[2:]
for path, name in zip(args[::2], args[1::2]):
    im = nib.load(path)
    a = np.asarray(im.dataobj).transpose(2, 1, 0)
    b = np.load(f"{fx}/{name}_label.npy")
    assert im.get_data_dtype() == np.uint8, (path, im.get_data_dtype())
    assert a.shape == b.shape, (path, a.shape, b.shape)
    assert (a == b).all(), f"{path}: {(a != b).sum()} voxels differ"
PY
}

@test "fine-stitch --help, --version, usage errors" {
    run fine-stitch --help
    [ "$status" -eq 0 ]
    [[ "$output" == *"Usage: fine-stitch"* ]]
    [[ "$output" == *"fine-patch --grid"*"| fine-stitch"* ]]
    run fine-stitch --version
    [ "$status" -eq 0 ]
    [[ "$output" == "fine-stitch "* ]]
    run fine-stitch --bogus
    [ "$status" -eq 2 ]
    run fine-stitch -o a.nii.gz --outdir d
    [ "$status" -eq 2 ]
    run fine-stitch --lcc-classes 0,300
    [ "$status" -eq 2 ]
    run fine-stitch --probabilities p.nii.gz
    [ "$status" -eq 2 ]
}

@test "identity: exact label back for odd sizes, small cases, crop boxes, f16, logits, threads" {
    # c1: 11x37x29, several tiles per axis; small: 5x9x7 < the patch on every axis; box: a
    # crop box pasted into its original grid
    fine-patch --grid --patch 8,16,16 "$FX/c1.fst" | "$IDENTITY" --classes 5 | fine-stitch -o "$T/c1.nii.gz"
    fine-patch --grid --patch 8,16,16 "$FX/small.fst" | "$IDENTITY" --classes 5 | fine-stitch - "$T/small.nii.gz"
    fine-patch --grid --patch 4,8,8 "$FX/box.fst" | "$IDENTITY" --classes 5 --f16 |
        fine-stitch --threads 2 -o "$T/f16.nii.gz"
    fine-patch --grid --patch 4,8,8 "$FX/box.fst" | "$IDENTITY" --classes 5 --logits | fine-stitch -o "$T/logits.nii.gz"
    same_as_label "$T/c1.nii.gz" c1 "$T/small.nii.gz" small "$T/f16.nii.gz" box "$T/logits.nii.gz" box
    run fine-info "$T/c1.nii.gz"
    [[ "$output" == *"0.8"* ]]
}

@test "identity: several cases into --outdir, and as a stream of seg records with pass-through" {
    cat "$FX/ca.fst" "$FX/cb.fst" | fine-patch --grid --patch 4,8,8 | "$IDENTITY" --classes 5 >"$T/pred.fst"
    fine-stitch --outdir "$T/out" "$T/pred.fst"
    # a stream: seg records, and an unknown record passed through
    "$FINE_PYTHON" -c 'import fine_stream; fine_stream.write("'"$T"'/note.fst", [{"type": "x-note", "n": 42}])'
    cat "$T/pred.fst" "$T/note.fst" | fine-stitch - - >"$T/seg.fst"
    "$FINE_PYTHON" - "$T" "$FX" <<'PY'
import sys, numpy as np, fine_stream, nibabel as nib
t, fx = sys.argv[1], sys.argv[2]
for name in ("ca", "cb"):
    a = np.asarray(nib.load(f"{t}/out/{name}.nii.gz").dataobj).transpose(2, 1, 0)
    assert (a == np.load(f"{fx}/{name}_label.npy")).all(), name
with fine_stream.Reader(f"{t}/seg.fst") as r:
    recs = list(r)
    tools = [p["tool"] for p in r.provenance]
assert tools[-1] == "fine-stitch" and "fine-patch" in tools, tools
assert [x["type"] for x in recs] == ["volume", "volume", "x-note"], [x["type"] for x in recs]
assert recs[2]["n"] == 42
for rec, name in zip(recs[:2], ["ca", "cb"]):
    assert rec["name"] == "seg" and rec["case"] == name and rec["array"].dtype == np.uint8
    assert (rec["array"] == np.load(f"{fx}/{name}_label.npy")).all(), name
    assert rec["geometry"]["crop_lo"] == [0, 0, 0]
PY
}

@test "one NIfTI output refuses a stream of several cases and writes nothing" {
    cat "$FX/small.fst" "$FX/box.fst" | fine-patch --grid --patch 4,8,8 | "$IDENTITY" --classes 5 >"$T/pred.fst"
    run fine-stitch "$T/pred.fst" "$T/seg.nii.gz"
    [ "$status" -eq 1 ]
    [[ "$output" == *"several cases"*"--outdir"* ]]
    [ ! -e "$T/seg.nii.gz" ]
}

@test "overlapping tiles are weighted by nnU-Net's Gaussian (scipy gaussian_filter)" {
    # one case 8x16x40 with two 8x16x32 tiles at x 0 and 8: tile A predicts class 1, tile B
    # class 2 everywhere; the stitched probability of class 1 is gA / (gA + gB)
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, numpy as np, fine_stream
t = sys.argv[1]
P, S = (8, 16, 32), (8, 16, 40)
geo = {"spacing": [1.0, 1.0, 1.0], "original_size": list(S), "original_spacing": [1.0, 1.0, 1.0],
       "crop_lo": [0, 0, 0], "crop_hi": list(S)}
recs = [{"type": "case_begin", "case": "g", "shape": list(S), "volume_size": list(S), "geometry": geo,
         "patches": 2}]
for i, (x, c) in enumerate([(0, 1), (8, 2)]):
    p = np.zeros((3,) + P, np.float32)
    p[c] = 1
    recs.append({"type": "pred", "case": "g", "name": "prob", "array": p, "origin": [0, 0, x],
                 "pos": [0, 0, 0], "volume_size": list(S), "index": i})
recs.append({"type": "case_end", "case": "g", "patches": 2})
fine_stream.write(f"{t}/pred.fst", recs)
PY
    fine-stitch --probabilities "$T/prob.fst" --prob-dtype f32 "$T/pred.fst" "$T/seg.nii.gz"
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, numpy as np, fine_stream, nibabel as nib
from scipy.ndimage import gaussian_filter
t = sys.argv[1]
def get_gaussian(patch_size, sigma_scale=1. / 8):  # nnU-Net v1 SegmentationNetwork._get_gaussian
    tmp = np.zeros(patch_size)
    tmp[tuple(i // 2 for i in patch_size)] = 1
    g = gaussian_filter(tmp, [i * sigma_scale for i in patch_size], 0, mode='constant', cval=0)
    g = (g / np.max(g) * 1).astype(np.float32)
    g[g == 0] = np.min(g[g != 0])
    return g
g = get_gaussian((8, 16, 32))
acc = np.zeros((3, 8, 16, 40), np.float32); w = np.zeros((8, 16, 40), np.float32)
acc[1, :, :, 0:32] += g; w[:, :, 0:32] += g
acc[2, :, :, 8:40] += g; w[:, :, 8:40] += g
want = acc / w
(rec,) = list(fine_stream.read(f"{t}/prob.fst"))
assert rec["name"] == "prob" and rec["array"].dtype == np.float32 and rec["array"].shape == (3, 8, 16, 40)
err = np.abs(rec["array"] - want).max()
assert err < 1e-6, err
seg = np.asarray(nib.load(f"{t}/seg.nii.gz").dataobj).transpose(2, 1, 0)
assert (seg == want.argmax(0)).all()
PY
}

@test "--lcc keeps the largest component of each class as nnU-Net (scipy.ndimage.label)" {
    fine-patch --grid --patch 8,16,16 "$FX/lcc.fst" | "$IDENTITY" --classes 5 >"$T/pred.fst"
    fine-stitch --lcc -o "$T/lcc.nii.gz" "$T/pred.fst"
    fine-stitch --lcc-classes 2,3 -o "$T/lcc23.nii.gz" "$T/pred.fst"
    fine-stitch --lcc-foreground -o "$T/fg.nii.gz" "$T/pred.fst"
    "$FINE_PYTHON" - "$T" "$FX" <<'PY'
import sys, numpy as np, nibabel as nib
from scipy.ndimage import label
t, fx = sys.argv[1], sys.argv[2]
def keep_largest(image, classes):  # nnU-Net v1 remove_all_but_the_largest_connected_component
    image = image.copy()
    for c in classes:
        mask = np.isin(image, c)
        lmap, num = label(mask.astype(int))
        if num > 0:
            sizes = {i: (lmap == i).sum() for i in range(1, num + 1)}
            mx = max(sizes.values())
            for i in range(1, num + 1):
                if sizes[i] != mx:
                    image[(lmap == i) & mask] = 0
    return image
lab = np.load(f"{fx}/lcc_label.npy")
get = lambda f: np.asarray(nib.load(f"{t}/{f}").dataobj).transpose(2, 1, 0)
want = keep_largest(lab, [1, 2, 3, 4])
assert (want != lab).sum() > 0, "the test case needs components to remove"
assert (get("lcc.nii.gz") == want).all()
assert (get("lcc23.nii.gz") == keep_largest(lab, [2, 3])).all()
assert (get("fg.nii.gz") == keep_largest(lab, [(1, 2, 3, 4)])).all()
PY
}

@test "resampled case: back on the original grid, Dice against the original label" {
    fine-synth --cases 1 --scale 0.12 --quiet "$T/d"
    fine-resample --spacing 12,4,4 "$T/d" -o "$T/res.fst"
    fine-patch --grid --patch 8,16,16 "$T/res.fst" | "$IDENTITY" --classes 14 |
        fine-stitch --probabilities "$T/prob.fst" -o "$T/seg.nii.gz"
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, numpy as np, nibabel as nib, fine_stream
t = sys.argv[1]
seg = nib.load(f"{t}/seg.nii.gz"); ref = nib.load(f"{t}/d/label/label0001.nii.gz")
assert seg.shape == ref.shape, (seg.shape, ref.shape)
assert np.allclose(seg.affine, ref.affine), (seg.affine, ref.affine)
a, b = np.asarray(seg.dataobj), np.asarray(ref.dataobj)
dice = [2 * ((a == c) & (b == c)).sum() / ((a == c).sum() + (b == c).sum()) for c in range(1, 14) if (b == c).any()]
print("dice", np.round(dice, 3), "mean", np.mean(dice))
assert np.mean(dice) > 0.95 and min(dice) > 0.7, dice
(p,) = list(fine_stream.read(f"{t}/prob.fst"))
assert p["array"].shape == (14,) + a.shape[::-1] and p["array"].dtype == np.float16
assert (p["array"].astype(np.float32).argmax(0) == a.transpose(2, 1, 0)).all()
PY
}

@test "a missing prediction, a stray prediction and a cut stream are errors naming the case" {
    fine-patch --grid --patch 4,8,8 "$FX/c1.fst" >"$T/p.fst"
    "$IDENTITY" --classes 5 --drop 3 "$T/p.fst" "$T/drop.fst"
    run fine-stitch "$T/drop.fst" "$T/seg.nii.gz"
    [ "$status" -eq 1 ]
    [[ "$output" == "fine-stitch: "*"case c1: "*"predictions, but case_end says"* ]]
    [ ! -e "$T/seg.nii.gz" ]
    # patches but no model in between
    run fine-stitch "$T/p.fst" "$T/seg.nii.gz"
    [ "$status" -eq 1 ]
    [[ "$output" == *"no predictions"*"run a model"* ]]
    # predictions without their case_begin
    "$IDENTITY" --classes 5 "$T/p.fst" "$T/pred.fst"
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, fine_stream
t = sys.argv[1]
fine_stream.write(f"{t}/nobegin.fst", [r for r in fine_stream.read(f"{t}/pred.fst") if r["type"] != "case_begin"])
fine_stream.write(f"{t}/noend.fst", [r for r in fine_stream.read(f"{t}/pred.fst") if r["type"] != "case_end"])
PY
    run fine-stitch "$T/nobegin.fst" "$T/seg.nii.gz"
    [ "$status" -eq 1 ]
    [[ "$output" == *"case c1: a pred record before the case's case_begin"* ]]
    run fine-stitch "$T/noend.fst" "$T/seg.nii.gz"
    [ "$status" -eq 1 ]
    [[ "$output" == *"case c1: the input ends before the case's case_end"* ]]
    # a truncated stream
    head -c 3000 "$T/pred.fst" >"$T/cut.fst"
    run fine-stitch "$T/cut.fst" "$T/seg.nii.gz"
    [ "$status" -eq 1 ]
    [[ "$output" == "fine-stitch: $T/cut.fst: "* ]]
    [ ! -e "$T/seg.nii.gz" ]
}

@test "outputs are not overwritten without --force" {
    fine-patch --grid --patch 4,8,8 "$FX/small.fst" | "$IDENTITY" --classes 5 >"$T/pred.fst"
    echo keep >"$T/seg.nii.gz"
    run fine-stitch "$T/pred.fst" "$T/seg.nii.gz"
    [ "$status" -eq 1 ]
    [[ "$output" == *"exists"* ]]
    [ "$(cat "$T/seg.nii.gz")" = keep ]
    fine-stitch --force "$T/pred.fst" "$T/seg.nii.gz"
    [ "$(head -c 4 "$T/seg.nii.gz" | od -An -tx1 | tr -d ' ')" = 1f8b0800 ]
    mkdir "$T/out" && echo keep >"$T/out/small.nii.gz"
    run fine-stitch --outdir "$T/out" "$T/pred.fst"
    [ "$status" -eq 1 ]
    [ "$(cat "$T/out/small.nii.gz")" = keep ]
}
