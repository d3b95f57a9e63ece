#!/usr/bin/env bats
# fine-patch --train: training batches from preprocessed cases (fine-reference A4, A8, B §3.1,
# §5.4, §5.5). Checked with the independent Python reader: reproducibility across --threads,
# --augment none crops equal to the input region at `origin`, pos from the box, labels only
# from the source's classes, foreground oversampling of sample 1, and the rotated/scaled crops
# against scipy's map_coordinates on nnU-Net's padded box (3-D and dummy-2D).
load common

# mk_cases OUT: a plan record, then 3 cases (image f32 + label u8) of different sizes with
# organs of labels 1..13, some small (so a random box often misses them); case c2 is smaller
# than the enlarged box of an 8,16,16 crop along z.
mk_cases() {
    "$FINE_PYTHON" - "$1" <<'PY'
import sys, numpy as np, fine_stream
rng = np.random.default_rng(0)
recs = [{"type": "plan", "crop": [8, 16, 16], "note": "passed through"}]
for i, s in enumerate([(30, 64, 72), (24, 72, 64), (12, 56, 56)]):
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in s], indexing="ij")
    img = (np.sin(3 * z + i) + np.cos(4 * y) * x + 0.1 * rng.standard_normal(s)).astype(np.float32)
    lab = np.zeros(s, np.uint8)
    for c in range(1, 14):
        if (c + i) % 3 == 0:
            continue                       # each case lacks some classes
        cz, cy, cx = rng.uniform(-0.7, 0.7, 3); r = rng.uniform(0.06, 0.14)
        lab[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 < r * r] = c
    recs += [{"type": "volume", "case": "c%d" % i, "name": "image", "array": img},
             {"type": "volume", "case": "c%d" % i, "name": "label", "array": lab}]
fine_stream.write(sys.argv[1], recs, tool="test")
PY
}

@test "--help, --version and usage errors" {
    run fine-patch --train --help
    [ "$status" -eq 0 ]
    [[ "$output" == *"--count N|endless"* ]]
    [[ "$output" == *"fine-patch --train"* ]]
    run fine-patch --train --version
    [ "$status" -eq 0 ]
    run fine-patch --train --crop 8,0,16 x.fst
    [ "$status" -eq 2 ]
    [[ "$output" == *"--crop"* ]]
    run fine-patch --train --augment heavy x.fst
    [ "$status" -eq 2 ]
    run fine-patch --train --count many x.fst
    [ "$status" -eq 2 ]
    run fine-patch --train
    [ "$status" -eq 2 ]
    [[ "$output" == *"expected one input"* ]]
}

@test "batches: records, keys, numbering, pass-through, same bytes for --threads 1 and 2" {
    mk_cases "$T/in.fst"
    fine-patch --train --crop 8,16,16 --batch 3 --count 7 --seed 5 --threads 1 "$T/in.fst" -o "$T/a.fst"
    fine-patch --train --crop 8,16,16 --batch 3 --count 7 --seed 5 --threads 2 - <"$T/in.fst" >"$T/b.fst"
    fine-patch --train --crop 8,16,16 --batch 3 --count 7 --seed 6 "$T/in.fst" -o "$T/c.fst"
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, numpy as np, fine_stream
t = sys.argv[1]
def recs(name): return list(fine_stream.read(t + "/" + name))
a, b, c = recs("a.fst"), recs("b.fst"), recs("c.fst")
assert a[0]["type"] == "plan" and a[0]["note"] == "passed through", a[0]
pa = [r for r in a if r["type"] == "patch"]
assert len(a) == 1 + 21 and len(pa) == 21, len(a)
for n, p in enumerate(pa):
    assert p["array"].shape == (1, 8, 16, 16) and p["array"].dtype == np.float32
    assert p["label"].shape == (8, 16, 16) and p["label"].dtype == np.uint8
    assert p["batch"] == n // 3 and p["index"] == n % 3, (n, p["batch"], p["index"])
    assert p["name"] == "image" and p["case"] in ("c0", "c1", "c2")
    for k in ("origin", "pos", "volume_size"):
        assert len(p[k]) == 3, k
    assert p["meta"]["box_size"] == [17, 25, 21], p["meta"]["box_size"]   # get_patch_size(8,16,16)
def same(x, y):
    if x.keys() != y.keys(): return False
    return all(np.array_equal(x[k], y[k]) if isinstance(x[k], np.ndarray) else x[k] == y[k] for k in x)
assert len(a) == len(b) and all(same(x, y) for x, y in zip(a, b)), "threads 1 and 2 differ"
assert any(not np.array_equal(x["array"], y["array"]) for x, y in zip(pa, c[1:])), "seed 6 = seed 5"
PY
}

@test "--augment none: the crop is the input at origin; pos from the box; origin = box centre crop" {
    mk_cases "$T/in.fst"
    fine-patch --train --crop 8,16,16 --count 40 --augment none --seed 2 "$T/in.fst" -o "$T/p.fst"
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, numpy as np, fine_stream
t = sys.argv[1]
vol = {}
for r in fine_stream.read(t + "/in.fst"):
    if r["type"] == "volume":
        vol.setdefault(r["case"], {})[r["name"]] = r["array"]
F = np.array([8, 16, 16]); P = np.array([17, 25, 21])
overhang = 0
for p in fine_stream.read(t + "/p.fst"):
    if p["type"] != "patch": continue
    img, lab = vol[p["case"]]["image"], vol[p["case"]]["label"]
    S = np.array(img.shape); lo = np.array(p["meta"]["box_lo"]); o = np.array(p["origin"])
    assert p["volume_size"] == list(S)
    assert list(o) == list(lo + (P - F) // 2), (o, lo)
    # pos = centre of the box's in-image part minus the case centre (B 3.1)
    vlo = np.maximum(lo, 0); vhi = np.minimum(lo + P, S)
    assert list(p["pos"]) == list(vlo + (vhi - vlo) // 2 - S // 2), (p["pos"], lo, S)
    # the crop: input voxels at origin, zeros (label 0) outside the case
    ei = np.zeros(F, np.float32); el = np.zeros(F, np.uint8)
    a = np.maximum(o, 0); b = np.minimum(o + F, S)
    src = tuple(slice(x, y) for x, y in zip(a, b)); dst = tuple(slice(x - z, y - z) for x, y, z in zip(a, b, o))
    ei[dst] = img[src]; el[dst] = lab[src]
    assert np.array_equal(p["array"][0], ei), p["case"]
    assert np.array_equal(p["label"], el), p["case"]
    overhang += bool((lo < 0).any() or (lo + P > S).any())
    assert not p["meta"]["rotated"] and not p["meta"]["scaled"] and p["meta"]["mirror"] == [0, 0, 0]
assert overhang > 10, overhang     # the check covered boxes that overhang the case
PY
}

@test "labels hold only classes of their case (0..13); sample 1 of every batch holds foreground" {
    mk_cases "$T/in.fst"
    fine-patch --train --crop 8,16,16 --count 150 --seed 9 --threads 2 "$T/in.fst" -o "$T/p.fst"
    fine-patch --train --crop 8,16,16 --count 60 --seed 9 --augment none "$T/in.fst" -o "$T/n.fst"
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, numpy as np, fine_stream
t = sys.argv[1]
classes = {r["case"]: set(np.unique(r["array"]).tolist()) for r in fine_stream.read(t + "/in.fst")
           if r["type"] == "volume" and r["name"] == "label"}
def check(name, need):
    fg = [[0, 0], [0, 0]]
    for p in fine_stream.read(t + "/" + name):
        if p["type"] != "patch": continue
        got = set(np.unique(p["label"]).tolist())
        assert got <= classes[p["case"]] and max(got) <= 13, (p["case"], got - classes[p["case"]])
        k = p["index"]
        assert p["meta"]["forced_fg"] == (k == 1)
        fg[k][0] += bool((p["label"] > 0).any()); fg[k][1] += 1
    print(name, "samples with foreground: index 0 %d/%d, index 1 %d/%d" % (fg[0][0], fg[0][1], fg[1][0], fg[1][1]))
    assert fg[1][0] >= need * fg[1][1], fg
    assert fg[0][0] < 0.7 * fg[0][1], fg     # a random box often misses the small organs
check("p.fst", 0.95)     # augmented: rotation/scaling can move a thin organ out of the crop
check("n.fst", 1.0)      # centre crop: the chosen voxel is always inside
PY
}

@test "rotated and scaled crops equal scipy map_coordinates of nnU-Net's padded box (3-D, dummy-2D)" {
    mk_cases "$T/in.fst"
    fine-patch --train --crop 8,16,16 --count 25 --seed 4 --augment spatial "$T/in.fst" -o "$T/s3.fst"
    fine-patch --train --crop 8,16,16 --count 25 --seed 4 --augment spatial --dummy-2d "$T/in.fst" -o "$T/s2.fst"
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, numpy as np, fine_stream
from scipy.ndimage import map_coordinates
t = sys.argv[1]
vol = {}
for r in fine_stream.read(t + "/in.fst"):
    if r["type"] == "volume":
        vol.setdefault(r["case"], {})[r["name"]] = r["array"]
def rot3(a):
    def rx(u): c, s = np.cos(u), np.sin(u); return np.array([[1,0,0],[0,c,-s],[0,s,c]])
    def ry(u): c, s = np.cos(u), np.sin(u); return np.array([[c,0,s],[0,1,0],[-s,0,c]])
    def rz(u): c, s = np.cos(u), np.sin(u); return np.array([[c,-s,0],[s,c,0],[0,0,1]])
    return rx(a[0]) @ ry(a[1]) @ rz(a[2])
def seg_interp(seg, coords):   # batchgenerators interpolate_img(is_seg=True), then -1 -> 0
    out = np.zeros(coords.shape[1:], np.float32)
    for c in np.unique(seg):
        r = map_coordinates((seg == c).astype(float), coords, order=1, mode="constant", cval=-1)
        out[r >= 0.5] = c
    out[out == -1] = 0
    return out
def mesh(F):
    c = np.array(np.meshgrid(*[np.arange(i) for i in F], indexing="ij")).astype(float)
    for k in range(len(F)): c[k] -= (F[k] - 1) / 2.
    return c
for name, planar in (("s3.fst", False), ("s2.fst", True)):
    n = worst = bad = 0
    for p in fine_stream.read(t + "/" + name):
        if p["type"] != "patch" or not (p["meta"]["rotated"] or p["meta"]["scaled"]): continue
        m = p["meta"]; img, lab = vol[p["case"]]["image"], vol[p["case"]]["label"]
        lo = np.array(m["box_lo"]); P = np.array(m["box_size"]); F = np.array(p["label"].shape)
        box = np.zeros(P, np.float32); seg = -np.ones(P, np.float32)   # the loader's padding
        vlo = np.maximum(lo, 0); vhi = np.minimum(lo + P, img.shape)
        sc = tuple(slice(a, b) for a, b in zip(vlo, vhi)); sb = tuple(slice(a - l, b - l) for a, b, l in zip(vlo, vhi, lo))
        box[sb] = img[sc]; seg[sb] = lab[sc]
        if planar:
            assert P[0] == F[0] and m["dummy_2d"]
            c = mesh(F[1:]); u = m["angle"][0]
            c = np.dot(c.reshape(2, -1).T, np.array([[np.cos(u), -np.sin(u)], [np.sin(u), np.cos(u)]])).T.reshape(c.shape)
            c *= m["scale"]
            for k in range(2): c[k] += P[k + 1] / 2. - 0.5
            ei = np.stack([map_coordinates(box[z].astype(float), c, order=3, mode="constant", cval=0) for z in range(F[0])])
            el = np.stack([seg_interp(seg[z], c) for z in range(F[0])])
        else:
            c = mesh(F)
            c = np.dot(c.reshape(3, -1).T, rot3(m["angle"])).T.reshape(c.shape) * m["scale"]
            for k in range(3): c[k] += P[k] / 2. - 0.5
            ei = map_coordinates(box.astype(float), c, order=3, mode="constant", cval=0)
            el = seg_interp(seg, c)
        worst = max(worst, float(np.abs(p["array"][0] - ei).max()))
        bad += int((p["label"] != el).sum()); n += 1
    print(name, n, "resampled patches, max |image diff|", worst, "label voxels differing", bad)
    assert n >= 8 and worst < 2e-5 and bad == 0, (n, worst, bad)
PY
}

@test "--cases (file, @FILE, comma list) keeps the listed cases; missing or unpaired cases are errors" {
    mk_cases "$T/in.fst"
    printf '# training split\nc2\n\nc0\n' >"$T/cases.txt"
    fine-patch --train --crop 8,16,16 --count 20 --cases "$T/cases.txt" "$T/in.fst" -o "$T/p.fst"
    fine-patch --train --crop 8,16,16 --count 20 --cases "@$T/cases.txt" "$T/in.fst" -o "$T/p2.fst"
    fine-patch --train --crop 8,16,16 --count 20 --cases c1,c2 "$T/in.fst" -o "$T/p3.fst"
    "$FINE_PYTHON" -c "
import sys, fine_stream
for name, want in ((sys.argv[1], {'c0', 'c2'}), (sys.argv[2], {'c0', 'c2'}), (sys.argv[3], {'c1', 'c2'})):
    seen = {p['case'] for p in fine_stream.read(name) if p['type'] == 'patch'}
    assert seen == want, (name, seen)" "$T/p.fst" "$T/p2.fst" "$T/p3.fst"
    printf 'c0\nc9\n' >"$T/bad.txt"
    run fine-patch --train --crop 8,16,16 --count 2 --cases "$T/bad.txt" "$T/in.fst" -o "$T/q.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"c9"* ]]
    [ ! -e "$T/q.fst" ]
    "$FINE_PYTHON" - "$T/half.fst" <<'PY'
import sys, numpy as np, fine_stream
fine_stream.write(sys.argv[1], [{"type": "volume", "case": "lonely", "name": "image",
                                 "array": np.zeros((4, 5, 6), np.float32)}], tool="test")
PY
    run fine-patch --train --count 1 "$T/half.fst" -o "$T/q.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"lonely"*"label"* ]]
    [ ! -e "$T/q.fst" ]
    "$FINE_PYTHON" - "$T/big.fst" <<'PY'
import sys, numpy as np, fine_stream
fine_stream.write(sys.argv[1], [{"type": "volume", "case": "x", "name": "image", "array": np.zeros((4, 5, 6), np.float32)},
                                {"type": "volume", "case": "x", "name": "label", "array": np.full((4, 5, 6), 300, np.int16)}], tool="test")
PY
    run fine-patch --train --count 1 "$T/big.fst" -o "$T/q.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"0..255"* ]]
}

@test "output: refused without --force, endless stream stops when the reader closes" {
    mk_cases "$T/in.fst"
    fine-patch --train --crop 8,16,16 --count 1 "$T/in.fst" -o "$T/p.fst"
    run fine-patch --train --crop 8,16,16 --count 1 "$T/in.fst" -o "$T/p.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"exists"* ]]
    fine-patch --train --crop 8,16,16 --count 1 --force "$T/in.fst" -o "$T/p.fst"
    # endless (the default): head takes a few frames and closes the pipe
    run bash -c "fine-patch --train --crop 8,16,16 --threads 2 '$T/in.fst' | head -c 200000 >/dev/null; echo \${PIPESTATUS[0]}"
    [ "$status" -eq 0 ]
    [ "${lines[-1]}" = "1" ]
}

@test "bad input: NaN or infinite intensities, labels outside 0..13, label shape or spacing, an empty image" {
    for kind in nan inf label14 shape spacing empty; do
        mk_bad_case $kind "$T/$kind.fst"
        want="$(bad_case_message $kind)"
        [ $kind = shape ] && want="case BAD: label shape 6x15x16 differs"
        run fine-patch --train --crop 4,8,8 --count 1 "$T/$kind.fst" -o "$T/o_$kind.fst"
        echo "$kind: $output"
        [ "$status" -eq 1 ]
        [[ "$output" == "fine-patch: "*"$want"* ]] || false
        [ ! -e "$T/o_$kind.fst" ]
        [ "${#lines[@]}" -eq 1 ]
    done
    mk_bad_case label14 "$T/l.fst"
    fine-patch --train --crop 4,8,8 --count 1 --max-label 14 "$T/l.fst" -o "$T/ok.fst"
}
