#!/usr/bin/env bats
# fine-resample against an independent re-implementation of nnU-Net v1's preprocessing in
# scipy (crop_to_nonzero with binary_fill_holes; resample_patient: skimage resize order 3 =
# ndimage.zoom(order=3, mode='nearest', grid_mode=True) per slice with the clip, map_coordinates
# order 0 along z; resize_segmentation order 1 for labels; get_target_spacing of
# ExperimentPlanner3D_v21), the inverse to the original grid, inputs, plans and bad inputs.
load common

# ref.py: the reference, written once per test into $T.
write_ref() {
    cat >"$T/ref.py" <<'PY'
import numpy as np, scipy.ndimage as ndi, nibabel as nib
THR = 3

def load(path):  # (z, y, x) array and (z, y, x) spacing as float64 of the header's float32
    img = nib.load(path)
    return np.asarray(img.dataobj).transpose(2, 1, 0), np.array(img.header.get_zooms()[:3][::-1], np.float64)

def crop_box(data):
    mask = ndi.binary_fill_holes(data != 0)
    idx = np.where(mask)
    return [(int(i.min()), int(i.max()) + 1) for i in idx]

def skresize(a, shape, order):  # skimage resize(order, mode='edge', anti_aliasing=False), clip=True
    a = a.astype(np.float64)
    out = ndi.zoom(a, [o / i for o, i in zip(shape, a.shape)], order=order, mode='nearest', grid_mode=True)
    assert out.shape == tuple(shape), (out.shape, shape)
    return np.clip(out, a.min(), a.max())

def resize_segmentation(s, shape):  # batchgenerators, order 1
    out = np.zeros(shape, s.dtype)
    for c in np.unique(s):
        out[skresize((s == c).astype(float), shape, 1) >= 0.5] = c
    return out

def lowres(sp):
    return np.where(max(sp) / np.array(sp) == 1)[0]

def new_shape(shape, sp, target):
    return np.round((np.array(sp) / np.array(target)).astype(float) * np.array(shape)).astype(int)

def resample(data, is_seg, sp, target, order=None):  # resample_patient / resample_data_or_seg
    shape = np.array(data.shape)
    new = new_shape(shape, sp, target)
    if max(sp) / min(sp) > THR: axis = lowres(sp)
    elif max(target) / min(target) > THR: axis = lowres(target)
    else: axis = None
    sep = axis is not None and len(axis) == 1
    if np.all(shape == new):
        return data
    order = order if order is not None else 3
    fn = (lambda a, s: resize_segmentation(a, s)) if is_seg else (lambda a, s: skresize(a, s, order))
    data = data.astype(float)
    if not sep:
        return fn(data, new)
    ax = axis[0]
    new2 = [new[d] for d in range(3) if d != ax]
    r = np.stack([fn(np.take(data, i, axis=ax), new2) for i in range(shape[ax])], ax)
    if shape[ax] != new[ax]:
        rows, cols, dim = new
        orows, ocols, odim = r.shape
        mr, mc, md = np.mgrid[:rows, :cols, :dim]
        mr = float(orows) / rows * (mr + 0.5) - 0.5
        mc = float(ocols) / cols * (mc + 0.5) - 0.5
        md = float(odim) / dim * (md + 0.5) - 0.5
        r = ndi.map_coordinates(r, np.array([mr, mc, md]), order=0, mode='nearest')
    return r

def target_spacing(spacings, sizes):  # ExperimentPlanner3D_v21.get_target_spacing
    target = np.percentile(np.vstack(spacings), 50, 0)
    target_size = np.percentile(np.vstack(sizes), 50, 0)
    worst = np.argmax(target)
    other = [i for i in range(3) if i != worst]
    other_sp = [target[i] for i in other]
    other_sz = [target_size[i] for i in other]
    if target[worst] > THR * max(other_sp) and target_size[worst] * THR < min(other_sz):
        t = np.percentile(np.vstack(spacings)[:, worst], 10)
        if t < max(other_sp):
            t = max(max(other_sp), t) + 1e-5
        target[worst] = t
    return target

def save(path, arr, spacing, dtype):  # arr (z, y, x), spacing (z, y, x)
    aff = np.diag([-spacing[2], -spacing[1], spacing[0], 1.0])
    aff[:3, 3] = [120.5, 80.25, -300.0]
    img = nib.Nifti1Image(np.ascontiguousarray(arr.transpose(2, 1, 0)).astype(dtype), aff)
    img.header.set_xyzt_units('mm', 'sec')
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    nib.save(img, path)

def phantom(shape, seed, hole=True):  # a body with a zero border and a zero hole, labels 0..13
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing='ij')
    body = (y / 0.8) ** 2 + (x / 0.75) ** 2 < 1
    body &= abs(z) < 0.85
    img = ndi.gaussian_filter(rng.standard_normal(shape), 1.5) * 400 + 40 * x + 100
    img = np.where(body, img, 0.0)
    if hole:
        img[(z ** 2 + y ** 2 + x ** 2) < 0.05] = 0.0
    lab = np.zeros(shape, np.uint8)
    for k in range(1, 14):
        c = rng.uniform(-0.5, 0.5, 3)
        r = rng.uniform(0.15, 0.35, 3)
        lab[((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 < 1] = k
    lab[~body] = 0
    return img.astype(np.float32), lab
PY
}

@test "--help, --version and usage errors" {
    run fine-resample --help
    [ "$status" -eq 0 ]
    [[ "$output" == *"Usage: fine-resample"* ]]
    [[ "$output" == *"--plan-out"* ]]
    [[ "$output" == *"| fine-"* ]]
    run fine-resample --version
    [ "$status" -eq 0 ]
    [[ "$output" == "fine-resample "* ]]
    run fine-resample "$T/x.nii.gz"
    [ "$status" -eq 2 ]
    [[ "$output" == *"--spacing"* ]]
    run fine-resample --spacing 3,1,1 --plan p.fst "$T/x.nii.gz"
    [ "$status" -eq 2 ]
    run fine-resample --spacing 3,0,1 "$T/x.nii.gz"
    [ "$status" -eq 2 ]
    run fine-resample --bogus
    [ "$status" -eq 2 ]
    run fine-resample --spacing 3,1,1
    [ "$status" -eq 2 ]
    run fine-resample --argmax --spacing 1,1,1 -
    [ "$status" -eq 2 ]
}

# Four cases, one per resampling path: separate z downsampling z (axis 0), separate z
# upsampling z, separate z along x (axis 2), and plain 3-D.
@test "images and labels match scipy's nnU-Net resampling on every path (image <= 1e-3 of range, labels exact)" {
    write_ref
    "$FINE_PYTHON" - "$T" <<'PY'
import sys; sys.path.insert(0, sys.argv[1])
from ref import *
T = sys.argv[1]
cases = [((14, 44, 50), (2.5, 0.7, 0.7)), ((9, 40, 36), (5.0, 0.7, 0.7)),
         ((30, 33, 12), (0.8, 0.8, 2.9)), ((22, 26, 30), (1.2, 1.0, 0.9))]
for i, (shape, sp) in enumerate(cases):
    img, lab = phantom(shape, i)
    save(f"{T}/img{i + 1:04d}.nii.gz", img, sp, np.float32)
    save(f"{T}/label{i + 1:04d}.nii.gz", lab, sp, np.uint8)
PY
    targets=("3,0.76,0.76" "3,0.76,0.76" "0.7,0.7,2.4" "1,1,1")
    for i in 1 2 3 4; do
        fine-resample --spacing "${targets[$((i - 1))]}" "$T/img000$i.nii.gz" "$T/label000$i.nii.gz" -o "$T/out$i.fst"
    done
    "$FINE_PYTHON" - "$T" "${targets[@]}" <<'PY'
import sys; sys.path.insert(0, sys.argv[1])
from ref import *
import fine_stream
T = sys.argv[1]
for i in range(4):
    target = [float(v) for v in sys.argv[2 + i].split(",")]
    img, sp = load(f"{T}/img{i + 1:04d}.nii.gz")
    lab, _ = load(f"{T}/label{i + 1:04d}.nii.gz")
    box = crop_box(img)
    sl = tuple(slice(a, b) for a, b in box)
    want_img = resample(img[sl].astype(np.float32), False, sp, target)
    want_lab = resample(lab[sl], True, sp, target)
    recs = list(fine_stream.read(f"{T}/out{i + 1}.fst"))
    assert [(r["case"], r["name"]) for r in recs] == [("ABD_%03d" % (i + 1), "image"), ("ABD_%03d" % (i + 1), "label")]
    got_img, got_lab = recs[0]["array"], recs[1]["array"]
    assert got_img.dtype == np.float32 and got_lab.dtype == np.uint8
    assert got_img.shape == want_img.shape == got_lab.shape, (got_img.shape, want_img.shape)
    err = np.abs(got_img - want_img).max() / (img.max() - img.min())
    assert err <= 1e-3, err
    bad = int((got_lab != want_lab).sum())
    assert bad == 0, bad
    g = recs[0]["geometry"]
    assert [list(x) for x in zip(g["crop_lo"], g["crop_hi"])] == [list(b) for b in box], (g["crop_lo"], box)
    assert box != [(0, n) for n in img.shape]           # the phantom has a zero border
    assert g["original_size"] == list(img.shape) and np.allclose(g["original_spacing"], sp, rtol=0, atol=1e-12)
    assert np.allclose(g["spacing"], target) and recs[1]["geometry"] == g
    print(f"case {i + 1}: {img.shape} -> {got_img.shape}, image error {err:.1e} of range, labels exact")
PY
}

@test "the plan's target spacing equals the planner rule (numpy percentiles) on synthetic spacings" {
    write_ref
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, os; sys.path.insert(0, sys.argv[1])
from ref import *
T = sys.argv[1]
rng = np.random.default_rng(3)
# set a: anisotropic spacing and few slices -> the 10th percentile rule; set b: many slices -> median
for name, nz in (("a", (6, 14)), ("b", (60, 90))):
    os.makedirs(f"{T}/{name}/img")
    for i in range(7):
        sp = (float(rng.choice([2.5, 3.0, 5.0, 1.5, 2.0])), float(rng.uniform(0.6, 0.9)), 0.0)
        sp = (sp[0], sp[1], sp[1])
        shape = (int(rng.integers(*nz)), 40, 40)
        save(f"{T}/{name}/img/img{i + 1:04d}.nii.gz", np.ones(shape, np.float32), sp, np.int16)
PY
    fine-resample --plan-out "$T/a.fst" --crop 8,16,16 "$T/a" -q
    fine-resample --plan-out "$T/b.fst" "$T/b" -q
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, glob; sys.path.insert(0, sys.argv[1])
from ref import *
import fine_stream
T = sys.argv[1]
for name, crop in (("a", [8, 16, 16]), ("b", [64, 128, 128])):
    files = sorted(glob.glob(f"{T}/{name}/img/*.nii.gz"))
    sps, szs = [], []
    for f in files:
        a, sp = load(f)
        sps.append(sp); szs.append(a.shape)
    want = target_spacing(sps, szs)
    (plan,) = list(fine_stream.read(f"{T}/{name}.fst"))
    assert plan["type"] == "plan"
    assert np.allclose(plan["target_spacing"], want, rtol=1e-13, atol=0), (plan["target_spacing"], want)
    new = np.array([new_shape(s, sp, want) for s, sp in zip(szs, sps)])
    assert plan["max_size"] == list(new.max(0)) == plan["max_imsize"]
    assert np.allclose(plan["median_size"], np.percentile(new, 50, 0))
    assert plan["crop"] == crop
    assert plan["vt_map"] == [max(2, int(m // c)) for m, c in zip(new.max(0), crop)]
    assert plan["cases"] == ["ABD_%03d" % (i + 1) for i in range(7)]
    assert plan["case_size"] == list(new.reshape(-1))
    print(name, "target", want, "median spacing", np.median(np.vstack(sps), 0))
a = list(fine_stream.read(f"{T}/a.fst"))[0]["target_spacing"][0]
b = list(fine_stream.read(f"{T}/b.fst"))[0]["target_spacing"][0]
sp_a = [load(f)[1][0] for f in sorted(glob.glob(f"{T}/a/img/*.nii.gz"))]
assert a == np.percentile(sp_a, 10) or a < np.median(sp_a), "set a must take the anisotropy branch"
PY
}

@test "data set folders: BCV (also under RawData/Training), nnU-Net, --cases with comments" {
    fine-synth --cases 3 --scale 0.12 --quiet "$T/bcv"
    fine-synth --layout nnunet --cases 2 --scale 0.12 --quiet "$T/nn"
    mkdir -p "$T/raw/RawData"
    cp -r "$T/bcv" "$T/raw/RawData/Training"
    printf '# training cases\nABD_003\n\n1   # the first\n' >"$T/train.txt"
    fine-resample --spacing 12,3,3 "$T/bcv" -o "$T/all.fst"
    fine-resample --spacing 12,3,3 --cases "$T/train.txt" "$T/raw" -o "$T/sel.fst"
    fine-resample --spacing 12,3,3 --split 2 "$T/nn" -o "$T/nn.fst"
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, fine_stream
T = sys.argv[1]
ids = lambda f: [(r["case"], r["name"]) for r in list(fine_stream.read(f))]
assert ids(f"{T}/all.fst") == [(c, n) for c in ("ABD_001", "ABD_002", "ABD_003") for n in ("image", "label")]
assert ids(f"{T}/sel.fst") == [("ABD_003", "image"), ("ABD_003", "label"), ("ABD_001", "image"), ("ABD_001", "label")]
assert ids(f"{T}/nn.fst") == [("ABD_002", "image"), ("ABD_002", "label")]
src = [r["meta"]["source"] for r in list(fine_stream.read(f"{T}/nn.fst"))]
assert src[0].endswith("imagesTr/ABD_002_0000.nii.gz") and src[1].endswith("labelsTr/ABD_002.nii.gz"), src
PY
    run fine-resample --spacing 12,3,3 --cases ABD_007 "$T/bcv" -o "$T/x.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"ABD_007"* ]]
    [ ! -e "$T/x.fst" ]
    run fine-resample --spacing 12,3,3 "$T"
    [ "$status" -eq 1 ]
    [[ "$output" == *"not a data set folder"* ]]
}

@test "a stream input gives the same volumes as the NIfTI files; other records pass through in order" {
    fine-synth --cases 2 --scale 0.12 --quiet "$T/d"
    for s in 0001 0002; do
        fine-convert --case "ABD_${s:1}" "$T/d/img/img$s.nii.gz" "$T/i$s.fst"
        fine-convert --case "ABD_${s:1}" --name label "$T/d/label/label$s.nii.gz" "$T/l$s.fst"
    done
    "$FINE_PYTHON" - "$T/extra.fst" <<'PY'
import sys, numpy as np, fine_stream
fine_stream.write(sys.argv[1], [{"type": "mystery", "n": 7}, {"type": "case_end", "case": "ABD_001"}], tool="t")
PY
    # case 1 label first, then image; an unknown record between the cases; case 2 image only
    cat "$T/l0001.fst" "$T/i0001.fst" "$T/extra.fst" "$T/i0002.fst" |
        fine-resample --spacing 12,3,3 --threads 2 - >"$T/s.fst"
    fine-resample --spacing 12,3,3 --threads 1 "$T/d/img/img0001.nii.gz" "$T/d/label/label0001.nii.gz" -o "$T/n1.fst"
    fine-resample --spacing 12,3,3 --threads 3 "$T/d/img/img0002.nii.gz" -o "$T/n2.fst"
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, numpy as np, fine_stream
T = sys.argv[1]
s = list(fine_stream.read(f"{T}/s.fst"))
assert [(r["type"], r.get("case"), r.get("name")) for r in s] == [
    ("volume", "ABD_001", "image"), ("volume", "ABD_001", "label"), ("mystery", None, None),
    ("case_end", "ABD_001", None), ("volume", "ABD_002", "image")], [(r["type"], r.get("name")) for r in s]
assert s[2]["n"] == 7
n = list(fine_stream.read(f"{T}/n1.fst")) + list(fine_stream.read(f"{T}/n2.fst"))
for a, b in zip([s[0], s[1], s[4]], n):
    assert np.array_equal(a["array"], b["array"]) and a["array"].dtype == b["array"].dtype
    assert a["geometry"] == b["geometry"]
hdr = fine_stream.read_header(f"{T}/s.fst")
assert [p["tool"] for p in hdr["provenance"]] == ["fine-convert", "fine-resample"], hdr["provenance"]
PY
}

@test "--to-original inverts shapes and geometry exactly and puts labels and probabilities back in the crop box" {
    write_ref
    "$FINE_PYTHON" - "$T" <<'PY'
import sys; sys.path.insert(0, sys.argv[1])
from ref import *
img, lab = phantom((20, 80, 90), 5)
save(f"{sys.argv[1]}/img0007.nii.gz", img, (2.5, 0.7, 0.7), np.float32)
save(f"{sys.argv[1]}/label0007.nii.gz", lab, (2.5, 0.7, 0.7), np.uint8)
PY
    fine-resample --spacing 3,0.9,0.9 "$T/img0007.nii.gz" "$T/label0007.nii.gz" -o "$T/pre.fst"
    # a prob volume on the preprocessed grid: one-hot of the resampled label, f16
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, numpy as np, fine_stream
T = sys.argv[1]
img, lab = list(fine_stream.read(f"{T}/pre.fst"))
l = lab["array"]
prob = np.stack([(l == c) for c in range(14)]).astype(np.float16)
fine_stream.write(f"{T}/prob.fst", [{"type": "volume", "case": lab["case"], "name": "prob", "array": prob,
                                     "geometry": lab["geometry"]}, lab], tool="t")
PY
    fine-resample --to-original "$T/prob.fst" -o "$T/back.fst"
    fine-resample --to-original --argmax <"$T/prob.fst" >"$T/seg.fst"
    fine-convert --name label "$T/back.fst" "$T/back.nii.gz"
    "$FINE_PYTHON" - "$T" <<'PY'
import sys; sys.path.insert(0, sys.argv[1])
from ref import *
import fine_stream
T = sys.argv[1]
a, b = nib.load(f"{T}/label0007.nii.gz"), nib.load(f"{T}/back.nii.gz")
assert a.shape == b.shape and np.array_equal(a.affine, b.affine), (a.shape, b.shape)
for k in ("qform_code", "sform_code", "pixdim", "srow_x", "srow_z", "quatern_b", "qoffset_x", "xyzt_units"):
    assert np.array_equal(a.header[k], b.header[k]), k
x, y = np.asarray(a.dataobj), np.asarray(b.dataobj)
img, sp = load(f"{T}/img0007.nii.gz")
box = crop_box(img)
outside = np.ones(img.shape, bool); outside[tuple(slice(p, q) for p, q in box)] = False
assert (y.transpose(2, 1, 0)[outside] == 0).all()
dice = [2 * ((x == l) & (y == l)).sum() / ((x == l).sum() + (y == l).sum()) for l in range(1, 14) if (x == l).sum() > 1000]
assert min(dice) > 0.85, dice
print("label there and back: Dice", np.round(dice, 3))

prob, lab = list(fine_stream.read(f"{T}/back.fst"))
p = prob["array"]
assert p.dtype == np.float16 and p.shape == (14,) + img.shape
g = prob["geometry"]
assert g["crop_lo"] == [0, 0, 0] and g["crop_hi"] == list(img.shape) and g["original_size"] == list(img.shape)
assert (p[0][outside] == 1).all() and (p[1:, outside] == 0).all()
# nnU-Net's export: order 1 per channel, separate z with order 0 along z, on the cropped grid
pre = list(fine_stream.read(f"{T}/prob.fst"))[0]
shape = [q - p0 for p0, q in box]
inner = tuple(slice(p0, q) for p0, q in box)
ref = []
for c in pre["array"].astype(np.float64):
    # resample_data_or_seg(order=1, separate z from the original spacing, order_z=0) to the crop's shape
    axis = lowres(sp)[0]
    new2 = [shape[d] for d in range(3) if d != axis]
    r = np.stack([skresize(np.take(c, i, axis=axis), new2, 1) for i in range(c.shape[axis])], axis)
    rows, cols, dim = shape
    mr, mc, md = np.mgrid[:rows, :cols, :dim]
    coords = [float(r.shape[0]) / rows * (mr + 0.5) - 0.5, float(r.shape[1]) / cols * (mc + 0.5) - 0.5,
              float(r.shape[2]) / dim * (md + 0.5) - 0.5]
    ref.append(ndi.map_coordinates(r, np.array(coords), order=0, mode='nearest'))
ref = np.stack(ref)
err = np.abs(p[(slice(None),) + inner].astype(np.float64) - ref).max()
assert err < 2e-3, err          # f16 output: half an ulp at 1 is 2.4e-4
seg = list(fine_stream.read(f"{T}/seg.fst"))
assert [(r["name"], r["array"].dtype.str) for r in seg] == [("seg", "|u1"), ("label", "|u1")]
s = seg[0]["array"]
agree = (s[inner] == ref.argmax(0)).mean()
assert agree > 0.999 and (s[outside] == 0).all(), agree
print(f"prob back: max error vs scipy {err:.1e}, argmax agrees at {100 * agree:.2f}%")
PY
}

@test "--crop-only crops to the non-zero box at the original spacing; threads do not change the output" {
    write_ref
    "$FINE_PYTHON" - "$T" <<'PY'
import sys; sys.path.insert(0, sys.argv[1])
from ref import *
img, lab = phantom((12, 40, 44), 9)
save(f"{sys.argv[1]}/img0003.nii.gz", img, (3.0, 0.8, 0.8), np.int16)
save(f"{sys.argv[1]}/label0003.nii.gz", lab, (3.0, 0.8, 0.8), np.uint8)
PY
    fine-resample --crop-only "$T/img0003.nii.gz" "$T/label0003.nii.gz" -o "$T/c.fst"
    fine-resample --spacing 2,0.5,0.6 --threads 1 "$T/img0003.nii.gz" "$T/label0003.nii.gz" -o "$T/t1.fst"
    fine-resample --spacing 2,0.5,0.6 --threads 2 "$T/img0003.nii.gz" "$T/label0003.nii.gz" -o "$T/t2.fst"
    "$FINE_PYTHON" - "$T" <<'PY'
import sys; sys.path.insert(0, sys.argv[1])
from ref import *
import fine_stream
T = sys.argv[1]
img, sp = load(f"{T}/img0003.nii.gz")
box = crop_box(img)
c = list(fine_stream.read(f"{T}/c.fst"))
inner = tuple(slice(p, q) for p, q in box)
assert np.array_equal(c[0]["array"], img[inner].astype(np.float32)) and c[0]["array"].dtype == np.float32
assert c[0]["geometry"]["spacing"] == list(sp) and c[0]["geometry"]["crop_lo"] == [p for p, q in box]
t1, t2 = list(fine_stream.read(f"{T}/t1.fst")), list(fine_stream.read(f"{T}/t2.fst"))
assert all(np.array_equal(a["array"], b["array"]) for a, b in zip(t1, t2))
PY
}

@test "bad inputs: one-line error naming the case, exit 1, no output file" {
    write_ref
    "$FINE_PYTHON" - "$T" <<'PY'
import sys; sys.path.insert(0, sys.argv[1])
from ref import *
T = sys.argv[1]
img, lab = phantom((8, 20, 22), 1)
save(f"{T}/img0004.nii.gz", img, (3.0, 0.8, 0.8), np.float32)
save(f"{T}/label0004.nii.gz", lab, (3.0, 0.8, 0.8), np.uint8)
save(f"{T}/short_label.nii.gz", lab[:7], (3.0, 0.8, 0.8), np.uint8)
save(f"{T}/spaced_label.nii.gz", lab, (2.0, 0.8, 0.8), np.uint8)
bad = lab.copy(); bad[4, 10, 10] = 14
save(f"{T}/label14.nii.gz", bad, (3.0, 0.8, 0.8), np.uint8)
nan = img.copy(); nan[3, 5, 6] = np.nan
save(f"{T}/img0005.nii.gz", nan, (3.0, 0.8, 0.8), np.float32)
inf = img.copy(); inf[2, 2, 2] = np.inf
save(f"{T}/img0006.nii.gz", inf, (3.0, 0.8, 0.8), np.float32)
save(f"{T}/img0008.nii.gz", np.zeros((8, 20, 22)), (3.0, 0.8, 0.8), np.int16)
PY
    check() { # check PATTERN ARGS...: exit 1, one line with PATTERN and the case, no output
        local pat="$1"; shift
        run fine-resample --spacing 3,1,1 "$@" -o "$T/out.fst"
        echo "$output"
        [ "$status" -eq 1 ]
        [ "${#lines[@]}" -eq 1 ]
        [[ "$output" == "fine-resample: "*"$pat"* ]]
        [ ! -e "$T/out.fst" ]
    }
    check "ABD_004: label shape 7x20x22 differs from image shape 8x20x22" "$T/img0004.nii.gz" "$T/short_label.nii.gz"
    check "ABD_004: label spacing 2x0.8" "$T/img0004.nii.gz" "$T/spaced_label.nii.gz"
    check "ABD_004: label value 14 outside 0..13" "$T/img0004.nii.gz" "$T/label14.nii.gz"
    check "ABD_005: non-finite intensity (NaN)" "$T/img0005.nii.gz"
    check "ABD_006: non-finite intensity (inf)" "$T/img0006.nii.gz"
    check "ABD_008: image is empty" "$T/img0008.nii.gz"
    # the error comes before any case is written, also when earlier cases were fine
    check "ABD_008: image is empty" "$T/img0004.nii.gz" "$T/label0004.nii.gz" "$T/img0008.nii.gz"
    run fine-resample --spacing 3,1,1 --max-label 20 "$T/img0004.nii.gz" "$T/label14.nii.gz" -o "$T/ok.fst"
    [ "$status" -eq 0 ]
    run fine-resample --plan-out "$T/p.fst" "$T/img0008.nii.gz"
    [ "$status" -eq 1 ]
    [[ "$output" == *"ABD_008"* ]]
    [ ! -e "$T/p.fst" ]
}
