#!/usr/bin/env bats
# fine-dice: every per-case, per-label Dice / HD95 / ASSD against an independent scipy
# computation of medpy's definitions (binary_erosion with generate_binary_structure(3, 1),
# distance_transform_edt with the voxel spacing, numpy.percentile), under nnU-Net's NaN
# conventions; the table's and the JSON's means against numpy.nanmean; folder matching by BCV
# serial; streams, lists, single files; grids that differ are refused; usage errors.
load common

# The data, made once: random blobs for 13 labels at anisotropic spacing, with a prediction
# that is the reference shifted and salted, plus the conventions' corner cases:
#   case 1 (pred img0001, ref label0001): label 5 missing from the prediction, 9 missing from
#     the reference, 12 missing from both, 13 a single voxel in each (apart);
#   case 2 (pred ABD_002, ref label0002): another grid and spacing;
#   case 3 (pred img0003, ref ABD_003): label 6 fills the whole prediction;
#   ref/label0009 has no prediction (ignored).
setup_file() {
    D="$BATS_FILE_TMPDIR/data"
    export D
    mkdir -p "$D"
    cat >"$D/dice_ref.py" <<'PY'
import json, math, os, sys, csv
import numpy as np, nibabel as nib
from scipy.ndimage import distance_transform_edt, binary_erosion, generate_binary_structure

FP = generate_binary_structure(3, 1)
SYNAPSE = [1, 2, 3, 4, 6, 7, 8, 11]

def surface(a, b, sp):
    """medpy.metric.binary.__surface_distances(a, b, sp, connectivity=1), written from its docs."""
    ab = a ^ binary_erosion(a, structure=FP, iterations=1)
    bb = b ^ binary_erosion(b, structure=FP, iterations=1)
    return distance_transform_edt(~bb, sampling=sp)[ab]

def metrics(p, r, sp):
    """nnU-Net's dice / hausdorff_distance_95 / avg_surface_distance_symmetric with medpy, mm."""
    tp, fp, fn = int(np.sum(p & r)), int(np.sum(p & ~r)), int(np.sum(~p & r))
    pe, re = not p.any(), not r.any()
    dice = float("nan") if pe and re else 2.0 * tp / (2 * tp + fp + fn)
    if pe or re or p.all() or r.all():
        return dice, float("nan"), float("nan"), tp, fp, fn
    d1, d2 = surface(p, r, sp), surface(r, p, sp)
    return (dice, float(np.percentile(np.hstack((d1, d2)), 95)), float(np.mean((d1.mean(), d2.mean()))),
            tp, fp, fn)

def nanmean(v):
    v = [x for x in v if not math.isnan(x)]
    return sum(v) / len(v) if v else float("nan")

def blobs(rng, shape):
    a = np.zeros(shape, np.uint8)
    ii, jj, kk = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    for lab in range(1, 14):
        c = rng.uniform([4, 4, 2], [shape[0] - 4, shape[1] - 4, shape[2] - 2])
        r = rng.uniform([2, 2, 1], [9, 9, 4])
        a[((ii - c[0]) / r[0]) ** 2 + ((jj - c[1]) / r[1]) ** 2 + ((kk - c[2]) / r[2]) ** 2 <= 1] = lab
    return a

def perturb(rng, r):
    p = r.copy()
    noise = rng.random(r.shape) < 0.04
    p[noise] = rng.integers(0, 14, r.shape)[noise]
    return np.roll(p, 1, axis=int(rng.integers(0, 3)))

def save(a, zooms, path, origin=(10.0, -20.0, 30.0)):
    aff = np.diag([-zooms[0], -zooms[1], zooms[2], 1.0])
    aff[:3, 3] = origin
    img = nib.Nifti1Image(a.astype(np.uint8), aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    nib.save(img, path)

def gen(d):
    rng = np.random.default_rng(17)
    os.makedirs(f"{d}/pred", exist_ok=True)
    os.makedirs(f"{d}/ref", exist_ok=True)
    z1 = (0.8, 0.7, 2.5)
    r = blobs(rng, (36, 30, 14))
    p = perturb(rng, r)
    p[p == 5] = 0
    r[r == 9] = 0
    p[p == 12] = 0
    r[r == 12] = 0
    p[p == 13] = 0
    r[r == 13] = 0
    p[3, 4, 2] = 13
    r[20, 25, 10] = 13
    save(p, z1, f"{d}/pred/img0001.nii.gz")
    save(r, z1, f"{d}/ref/label0001.nii.gz")
    z2 = (0.75, 0.75, 3.0)
    r = blobs(rng, (32, 34, 12))
    save(perturb(rng, r), z2, f"{d}/pred/ABD_002.nii.gz")
    save(r, z2, f"{d}/ref/label0002.nii.gz")
    r = np.full((10, 12, 8), 6, np.uint8)
    r[5:] = 1
    save(np.full((10, 12, 8), 6, np.uint8), z1, f"{d}/pred/img0003.nii.gz")
    save(r, z1, f"{d}/ref/ABD_003.nii.gz")
    save(blobs(rng, (36, 30, 14)), z1, f"{d}/ref/label0009.nii.gz")

def load(path):
    img = nib.load(path)
    return np.asarray(img.dataobj), img.header.get_zooms()[:3]

def check(csv_path, json_path, table_path, labels):
    """Each CSV row against scipy; the JSON's and the table's means against nanmean."""
    labels = [int(x) for x in labels.split(",")]
    rows = list(csv.DictReader(open(csv_path)))
    cache, per = {}, {}
    seen = {"pred_empty": 0, "ref_empty": 0, "both_empty": 0, "full": 0, "finite": 0}
    for row in rows:
        for k in ("pred", "ref"):
            if row[k] not in cache:
                cache[row[k]] = load(row[k])
        p, sp = cache[row["pred"]]
        r, _ = cache[row["ref"]]
        L = int(row["label"])
        want = metrics(p == L, r == L, sp)
        got = (float(row["dice"]), float(row["hd95"]), float(row["assd"]))
        counts = (int(row["tp"]), int(row["fp"]), int(row["fn"]))
        assert counts == want[3:], (row["case"], L, counts, want[3:])
        assert int(row["pred_voxels"]) == int(np.sum(p == L)) and int(row["ref_voxels"]) == int(np.sum(r == L))
        assert got[0] == want[0] or (math.isnan(got[0]) and math.isnan(want[0])), (row["case"], L, got, want)
        for g, w in zip(got[1:], want[1:3]):
            assert (math.isnan(g) and math.isnan(w)) or abs(g - w) <= 1e-6 * abs(w), (row["case"], L, got, want)
        per.setdefault(L, []).append(want[:3])
        pe, re = not (p == L).any(), not (r == L).any()
        seen["both_empty"] += pe and re
        seen["pred_empty"] += pe and not re
        seen["ref_empty"] += re and not pe
        seen["full"] += (p == L).all() or (r == L).all()
        seen["finite"] += not math.isnan(want[1])
    assert sorted(per) == sorted(labels), (sorted(per), labels)
    means = {L: [nanmean([v[i] for v in per[L]]) for i in range(3)] for L in labels}
    rows_want = {}
    organs = [L for L in labels if L != 0]
    name = "mean (13 organs)" if organs == list(range(1, 14)) else f"mean ({len(organs)} label{'' if len(organs) == 1 else 's'})"
    rows_want[name] = [nanmean([means[L][i] for L in organs]) for i in range(3)]
    if all(L in labels for L in SYNAPSE):
        rows_want["mean (8 Synapse organs)"] = [nanmean([means[L][i] for L in SYNAPSE]) for i in range(3)]

    def bad_const(c):
        raise ValueError("non-standard JSON constant " + c)
    j = json.load(open(json_path), parse_constant=bad_const)
    res = j["results"]
    assert len(res["all"]) == len(rows) // len(labels)
    keys = ("Dice", "Hausdorff Distance 95", "Avg. Symmetric Surface Distance")
    def same(a, b, rel):
        if b is None or (isinstance(b, float) and math.isnan(b)):
            return a is None or (isinstance(a, float) and math.isnan(a))
        return a is not None and abs(a - b) <= rel * abs(b)
    for L in labels:
        for i, k in enumerate(keys):
            assert same(res["mean"][str(L)][k], means[L][i], 1e-9), (L, k, res["mean"][str(L)][k], means[L][i])
    for name, v in rows_want.items():
        for i, k in enumerate(keys):
            assert same(res[name][k], v[i], 1e-9), (name, k, res[name][k], v[i])
    for e in res["all"]:
        for L in labels:
            assert set(e[str(L)]) >= set(keys) | {"Total Positives Test", "Total Positives Reference"}

    # the markdown table: rounded means
    table = {}
    for line in open(table_path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[2] not in ("Dice", "---:"):
            table[cells[0] if cells[0] else cells[1]] = cells
    def near(cell, v, digits):
        if math.isnan(v):
            return cell == "NaN"
        return abs(float(cell) - v) <= 0.51 * 10 ** -digits
    for L in labels:
        c = table[str(L)]
        assert near(c[2], means[L][0], 4) and near(c[3], means[L][1], 2) and near(c[4], means[L][2], 2), (c, means[L])
    for name, v in rows_want.items():
        c = table[name]
        assert near(c[2], v[0], 4) and near(c[3], v[1], 2) and near(c[4], v[2], 2), (c, v)
    assert set(table) == {str(L) for L in labels} | set(rows_want), sorted(table)
    print(" ".join(f"{k}={v}" for k, v in seen.items()))

if __name__ == "__main__":
    if sys.argv[1] == "gen":
        gen(sys.argv[2])
    elif sys.argv[1] == "check":
        check(*sys.argv[2:6])
    elif sys.argv[1] == "rename":       # a stream's volume records get another name
        sys.path.insert(0, os.environ["PYTHONPATH"].split(":")[0])
        import fine_stream
        recs = list(fine_stream.read(sys.argv[2]))
        for rec in recs:
            if rec["type"] == "volume":
                rec["name"] = sys.argv[4]
        fine_stream.write(sys.argv[3], recs, tool="rename", args=sys.argv)
PY
    "$FINE_PYTHON" "$D/dice_ref.py" gen "$D"
}

ref_py() {
    "$FINE_PYTHON" "$D/dice_ref.py" "$@"
}

L13=1,2,3,4,5,6,7,8,9,10,11,12,13

@test "dice: folders matched by BCV serial; every value against scipy; means against nanmean" {
    run fine-dice --csv "$T/c.csv" --json "$T/s.json" "$D/pred" "$D/ref"
    echo "$output"
    [ "$status" -eq 0 ]
    echo "$output" >"$T/table.md"
    grep -q '^| 1 | spleen | ' "$T/table.md"
    grep -q '^| | mean (13 organs) | ' "$T/table.md"
    grep -q '^| | mean (8 Synapse organs) | ' "$T/table.md"
    # the pairs: img0001-label0001, ABD_002-label0002, img0003-ABD_003; label0009 unused
    [ "$(sed 1d "$T/c.csv" | cut -d, -f1,12,13 | sort -u | sed "s#$D/##g" | tr '\n' ' ')" = \
      "ABD_002,pred/ABD_002.nii.gz,ref/label0002.nii.gz img0001,pred/img0001.nii.gz,ref/label0001.nii.gz img0003,pred/img0003.nii.gz,ref/ABD_003.nii.gz " ]
    [ "$(wc -l <"$T/c.csv")" -eq $((3 * 13 + 1)) ]
    run ref_py check "$T/c.csv" "$T/s.json" "$T/table.md" "$L13"
    echo "$output"
    [ "$status" -eq 0 ]
    # every convention was exercised
    [[ "$output" == *"pred_empty="* && "$output" == *"full="* ]]
    [[ "$output" != *"pred_empty=0"* && "$output" != *"ref_empty=0"* && "$output" != *"both_empty=0"* ]]
    [[ "$output" != *"full=0"* && "$output" != *"finite=0"* ]]
}

@test "dice: labels 0-13 and a subset; threads do not change the numbers; --per-case" {
    run fine-dice --threads 1 --labels 0-13 --csv "$T/a.csv" --json "$T/a.json" "$D/pred" "$D/ref"
    [ "$status" -eq 0 ]
    echo "$output" >"$T/a.md"
    run ref_py check "$T/a.csv" "$T/a.json" "$T/a.md" "0,$L13"
    echo "$output"
    [ "$status" -eq 0 ]
    run fine-dice --threads 3 --labels 0-13 --csv "$T/b.csv" "$D/pred" "$D/ref"
    [ "$status" -eq 0 ]
    cmp "$T/a.csv" "$T/b.csv"
    run fine-dice --labels 6,1,11 --csv "$T/c.csv" --json "$T/c.json" --per-case "$D/pred" "$D/ref"
    echo "$output"
    [ "$status" -eq 0 ]
    echo "$output" | sed -n '/^| label /,$p' >"$T/c.md"
    grep -q '^| | mean (3 labels) | ' "$T/c.md"
    ! grep -q 'Synapse' "$T/c.md" || false
    run ref_py check "$T/c.csv" "$T/c.json" "$T/c.md" "6,1,11"
    echo "$output"
    [ "$status" -eq 0 ]
    # the per-case table: one row per case, the Dice of each label as in the CSV
    run fine-dice --labels 6,1,11 --per-case "$D/pred" "$D/ref"
    row="$(echo "$output" | grep '^| img0001 |')"
    d6="$(grep '^img0001,6,' "$T/c.csv" | cut -d, -f4)"
    [[ "$row" == "| img0001 | $(printf '%.4f' "$d6") | "* ]]
}

@test "dice: two NIfTI files are one case; a file against a folder; a list of pairs" {
    run fine-dice --csv "$T/one.csv" "$D/pred/img0001.nii.gz" "$D/ref/label0001.nii.gz"
    [ "$status" -eq 0 ]
    fine-dice --csv "$T/all.csv" "$D/pred" "$D/ref" >/dev/null
    diff <(grep '^img0001,' "$T/all.csv") <(sed 1d "$T/one.csv")
    # names need not match for two files
    cp "$D/ref/label0002.nii.gz" "$T/other.nii.gz"
    run fine-dice --csv "$T/two.csv" "$D/pred/ABD_002.nii.gz" "$T/other.nii.gz"
    [ "$status" -eq 0 ]
    diff <(grep '^ABD_002,' "$T/all.csv" | cut -d, -f1-12) <(sed 1d "$T/two.csv" | cut -d, -f1-12)
    # one file, its reference found in a folder
    run fine-dice --csv "$T/three.csv" "$D/pred/img0003.nii.gz" "$D/ref"
    [ "$status" -eq 0 ]
    diff <(grep '^img0003,' "$T/all.csv") <(sed 1d "$T/three.csv")
    # --list: the same three pairs in another order, with a comment and a blank line
    printf '# pairs\n%s %s\n\n%s\t%s\n%s %s\n' "$D/pred/img0003.nii.gz" "$D/ref/ABD_003.nii.gz" \
        "$D/pred/img0001.nii.gz" "$D/ref/label0001.nii.gz" "$D/pred/ABD_002.nii.gz" "$D/ref/label0002.nii.gz" >"$T/pairs"
    run fine-dice --list "$T/pairs" --csv "$T/list.csv"
    [ "$status" -eq 0 ]
    diff <(sort "$T/all.csv") <(sort "$T/list.csv")
}

@test "dice: streams of label/seg volume records, in any order, from a pipe" {
    for f in img0001 ABD_002 img0003; do
        fine-convert --name label "$D/pred/$f.nii.gz" "$T/p_$f.fst"
    done
    for f in label0002 ABD_003 label0001 label0009; do
        fine-convert --name label "$D/ref/$f.nii.gz" "$T/r_$f.fst"
    done
    # predictions named seg, references in another order
    cat "$T"/p_img0001.fst "$T"/p_ABD_002.fst "$T"/p_img0003.fst >"$T/p_label.fst"
    ref_py rename "$T/p_label.fst" "$T/preds.fst" seg
    cat "$T"/r_label0002.fst "$T"/r_ABD_003.fst "$T"/r_label0001.fst "$T"/r_label0009.fst >"$T/refs.fst"
    fine-dice --csv "$T/files.csv" "$D/pred" "$D/ref" >/dev/null
    run bash -c "cat '$T/preds.fst' | fine-dice --csv '$T/s.csv' - '$T/refs.fst'"
    echo "$output"
    [ "$status" -eq 0 ]
    diff <(cut -d, -f1-11 "$T/files.csv" | sort) <(cut -d, -f1-11 "$T/s.csv" | sort)
    grep -q ",stdin:img0001,$T/refs.fst:label0001\$" "$T/s.csv"
    # a stream against a folder
    run fine-dice --csv "$T/sd.csv" "$T/preds.fst" "$D/ref"
    [ "$status" -eq 0 ]
    diff <(cut -d, -f1-11 "$T/files.csv" | sort) <(cut -d, -f1-11 "$T/sd.csv" | sort)
    # a stream holding both the seg and the label of a case: refused unless a name is chosen
    cat "$T/preds.fst" "$T/p_img0001.fst" >"$T/both.fst"
    run fine-dice "$T/both.fst" "$D/ref"
    echo "$output"
    [ "$status" -eq 1 ]
    [[ "$output" == *"img0001"*"--pred-name"* ]]
    run fine-dice --pred-name seg --csv "$T/b.csv" "$T/both.fst" "$D/ref"
    [ "$status" -eq 0 ]
    diff <(cut -d, -f1-11 "$T/files.csv" | sort) <(cut -d, -f1-11 "$T/b.csv" | sort)
    # a truncated reference stream is an error, even after every case is found
    head -c -20 "$T/refs.fst" >"$T/cut.fst"
    run fine-dice "$T/preds.fst" "$T/cut.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"cut.fst"* ]]
}

@test "dice: grids that differ are refused with one line naming both files" {
    mkdir "$T/p"
    "$FINE_PYTHON" - "$D/pred/img0001.nii.gz" "$T" <<'PY'
import sys, numpy as np, nibabel as nib
img = nib.load(sys.argv[1]); a = np.asarray(img.dataobj); t = sys.argv[2]
nib.save(nib.Nifti1Image(a[:, :, :-1], img.affine), t + "/shape.nii.gz")
aff = img.affine.copy(); aff[2, 2] = 3.0
nib.save(nib.Nifti1Image(a, aff), t + "/spacing.nii.gz")
aff = img.affine.copy(); aff[0, 3] += 10
nib.save(nib.Nifti1Image(a, aff), t + "/origin.nii.gz")
nib.save(nib.Nifti1Image(a[:, :, :-1], img.affine), t + "/p/img0001.nii.gz")
PY
    for k in shape spacing origin; do
        run fine-dice --csv "$T/out.csv" "$T/$k.nii.gz" "$D/ref/label0001.nii.gz"
        echo "$output"
        [ "$status" -eq 1 ]
        [ "${#lines[@]}" -eq 1 ]
        [[ "$output" == "fine-dice: case $k: $T/$k.nii.gz ("*") and $D/ref/label0001.nii.gz (14x30x36 at 2.5x0.7x0.8 mm) are on different grids"* ]]
        [ ! -e "$T/out.csv" ]
    done
    [[ "$(fine-dice "$T/shape.nii.gz" "$D/ref/label0001.nii.gz" 2>&1)" == *"(13x30x36 at"*"shapes differ" ]]
    # in a folder run: nothing on stdout, no report files
    run fine-dice --json "$T/s.json" "$T/p" "$D/ref"
    [ "$status" -eq 1 ]
    [[ "$output" == *"img0001"*"different grids"* ]]
    [ ! -e "$T/s.json" ]
    # a tolerance wide enough accepts the shifted origin
    run fine-dice --tolerance 20 "$T/origin.nii.gz" "$D/ref/label0001.nii.gz"
    [ "$status" -eq 0 ]
}

@test "dice: missing references, empty folders and existing outputs are errors" {
    mkdir "$T/p" "$T/empty"
    cp "$D/pred/img0001.nii.gz" "$T/p/img0007.nii.gz"
    run fine-dice "$T/p" "$D/ref"
    echo "$output"
    [ "$status" -eq 1 ]
    [[ "$output" == "fine-dice: case img0007: no reference in $D/ref"* ]]
    run fine-dice "$T/empty" "$D/ref"
    [ "$status" -eq 1 ]
    [[ "$output" == *"no NIfTI files"* ]]
    run fine-dice "$D/pred" "$D/ref/label0001.nii.gz"
    [ "$status" -eq 2 ]
    run fine-dice "$D/pred/img0001.nii.gz" "$T/nonexistent.nii.gz"
    [ "$status" -eq 1 ]
    [[ "$output" == *"nonexistent.nii.gz"* ]]
    echo keep >"$T/c.csv"
    run fine-dice --csv "$T/c.csv" "$D/pred" "$D/ref"
    [ "$status" -eq 1 ]
    [[ "$output" == *"exists"* ]]
    [ "$(cat "$T/c.csv")" = keep ]
    run fine-dice --force --csv "$T/c.csv" "$D/pred" "$D/ref"
    [ "$status" -eq 0 ]
    [ "$(wc -l <"$T/c.csv")" -eq 40 ]
}

@test "dice: --json - is strict JSON on stdout; --help, --version, usage errors" {
    run bash -c "fine-dice --json - '$D/pred' '$D/ref' | '$FINE_PYTHON' -c 'import json,sys; j=json.load(sys.stdin, parse_constant=lambda c: 1/0); print(len(j[\"results\"][\"all\"]), j[\"results\"][\"mean\"][\"5\"][\"Dice\"] is not None, j[\"results\"][\"all\"][2][\"6\"][\"Hausdorff Distance 95\"])'"
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$output" = "3 True None" ]
    run fine-dice --help
    [ "$status" -eq 0 ]
    [[ "$output" == *"Usage: fine-dice"*"fine-dice --per-case - "* ]]
    run fine-dice --version
    [ "$status" -eq 0 ]
    [[ "$output" == "fine-dice "* ]]
    for args in "" "$D/pred" "--labels 3-1 $D/pred $D/ref" "--labels x $D/pred $D/ref" "--threads 0 $D/pred $D/ref" \
                "--bogus $D/pred $D/ref" "--list $T/x $D/pred" "--csv - --json - $D/pred $D/ref" "--tolerance -1 a b"; do
        run fine-dice $args
        [ "$status" -eq 2 ]
        [[ "$output" == *"Try 'fine-dice --help'."* ]]
    done
}
