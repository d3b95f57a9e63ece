#!/usr/bin/env bats
# fine-report: the page from two fine-synth cases (one predicted perfectly, one perturbed), their
# fine-dice --json scores and a 3-epoch training log. Checked from Python: the Dice and HD95
# tables against the JSON (13 organs, both means), the 12 embedded PNGs (chunk CRCs, IHDR, zlib
# stream length, sizes), every pixel of every slice against an independent numpy rendering from
# the NIfTI files (orientation through nibabel, centroid, stretching of the 5-mm-ish slices,
# window, overlay colours) also for a copy of a case stored in RAS order; then in headless
# Chromium that all 12 images load and the table shows (skipped without chromium). Bad inputs:
# a one-line error, exit 1, no file; usage errors exit 2.
load common

setup_file() {
    D="$BATS_FILE_TMPDIR/data"
    export D
    mkdir -p "$D/pred" "$D/ras"
    fine-synth --cases 2 --scale 0.25 --quiet "$D/raw"
    # predictions: case 1 the reference itself; case 2 shifted, liver partly relabelled, label 13
    # dropped. A copy of case 2 (image, reference, prediction) stored in RAS order.
    "$FINE_PYTHON" - "$D" <<'PY'
import sys
import numpy as np, nibabel as nib
from nibabel.orientations import io_orientation, axcodes2ornt, ornt_transform
d = sys.argv[1]
rng = np.random.default_rng(0)
for s in (1, 2):
    lab = nib.load(f"{d}/raw/label/label{s:04d}.nii.gz")
    a = np.asarray(lab.dataobj).copy()
    if s == 2:
        a = np.roll(a, 2, axis=0)
        liver = a == 6
        a[liver & (rng.random(a.shape) < 0.3)] = 7
        a[a == 13] = 0
    nib.save(nib.Nifti1Image(a.astype(np.uint8), lab.affine, lab.header), f"{d}/pred/ABD_{s:03d}.nii.gz")
for src, dst in ((f"raw/img/img0002", "img"), (f"raw/label/label0002", "label"), (f"pred/ABD_002", "pred")):
    im = nib.load(f"{d}/{src}.nii.gz")
    t = ornt_transform(io_orientation(im.affine), axcodes2ornt(("R", "A", "S")))
    r = im.as_reoriented(t)
    assert nib.aff2axcodes(r.affine) == ("R", "A", "S")
    nib.save(r, f"{d}/ras/{dst}.nii.gz")
PY
    fine-dice -q --json "$D/dice.json" "$D/pred" "$D/raw/label" >/dev/null
    cat >"$D/log.jsonl" <<'EOF'
{"epoch": 1, "iteration": 50, "loss": 1.25, "train_dice": 0.12, "lr": 0.01, "grad_norm": 3.5, "val_dice": 0.2, "val_dice_ema": 0.02, "val_dice_per_class": [0.1, 0.3], "best": true, "seconds": 2.5}
{"epoch": 2, "iteration": 100, "loss": 0.8, "train_dice": 0.41, "lr": 0.0095, "grad_norm": 2.1, "val_dice": 0.5, "val_dice_ema": 0.068, "val_dice_per_class": [0.4, 0.6], "best": true, "seconds": 2.4}
{"epoch": 3, "iteration": 150, "loss": 0.55, "train_dice": 0.63, "lr": 0.009, "grad_norm": null, "val_dice": 0.7, "val_dice_ema": 0.1312, "val_dice_per_class": [0.6, 0.8], "best": true, "seconds": 2.4}
EOF
    C1="ABD_001=$D/raw/img/img0001.nii.gz,$D/raw/label/label0001.nii.gz,$D/pred/ABD_001.nii.gz"
    C2="ABD_002=$D/raw/img/img0002.nii.gz,$D/raw/label/label0002.nii.gz,$D/pred/ABD_002.nii.gz"
    export C1 C2
    fine-report -q -o "$D/report.html" --dice "$D/dice.json" --log "$D/log.jsonl" --title "BCV <test>" "$C1" "$C2"
    fine-report -q -o "$D/small.html" --dice "$D/dice.json" --size 96 "$C1" "$C2" \
        "ABD_002_RAS=$D/ras/img.nii.gz,$D/ras/label.nii.gz,$D/ras/pred.nii.gz"

    # png.py: a PNG decoder (chunks, CRCs, zlib, the five filters) and the slices as the report
    # should draw them, computed from the NIfTI files with numpy and nibabel.
    cat >"$D/png.py" <<'PY'
import base64, re, struct, zlib
import numpy as np, nibabel as nib
from nibabel.orientations import io_orientation, axcodes2ornt, ornt_transform, apply_orientation

def data_uris(html):
    return [base64.b64decode(m, validate=True)
            for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]*)"', html)]

def chunks(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "PNG signature"
    pos, out = 8, []
    while pos < len(data):
        n, = struct.unpack(">I", data[pos:pos + 4])
        typ, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        crc, = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(typ + body) & 0xFFFFFFFF, f"CRC of {typ}"
        out.append((typ, body))
        pos += 12 + n
    assert out[0][0] == b"IHDR" and out[-1][0] == b"IEND", [t for t, _ in out]
    return out

def header(data):
    """(width, height) after checking the structure and the zlib stream's length."""
    ch = chunks(data)
    w, h, depth, ctype, comp, filt, inter = struct.unpack(">IIBBBBB", ch[0][1])
    assert (depth, ctype, comp, filt, inter) == (8, 2, 0, 0, 0), (depth, ctype, comp, filt, inter)
    raw = zlib.decompress(b"".join(b for t, b in ch if t == b"IDAT"))
    assert len(raw) == h * (3 * w + 1), (len(raw), w, h)
    return w, h

def decode(data):
    w, h = header(data)
    raw = zlib.decompress(b"".join(b for t, b in chunks(data) if t == b"IDAT"))
    stride, prev, rows = 3 * w, bytearray(3 * w), []
    for r in range(h):
        f, cur = raw[r * (stride + 1)], bytearray(raw[r * (stride + 1) + 1:(r + 1) * (stride + 1)])
        for i in range(stride):
            a = cur[i - 3] if i >= 3 else 0
            b = prev[i]
            c = prev[i - 3] if i >= 3 else 0
            if f == 1:
                cur[i] = (cur[i] + a) & 255
            elif f == 2:
                cur[i] = (cur[i] + b) & 255
            elif f == 3:
                cur[i] = (cur[i] + ((a + b) >> 1)) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            else:
                assert f == 0, f"filter {f}"
        rows.append(bytes(cur))
        prev = cur
    return np.frombuffer(b"".join(rows), np.uint8).reshape(h, w, 3)

# the organ colours the report promises (one per BCV label 1..13)
COLORS = {1: (230, 25, 75), 2: (60, 180, 75), 3: (255, 225, 25), 4: (67, 99, 216), 5: (245, 130, 49),
          6: (154, 99, 36), 7: (70, 240, 240), 8: (240, 50, 230), 9: (188, 246, 12), 10: (250, 190, 190),
          11: (0, 128, 128), 12: (230, 190, 255), 13: (145, 30, 180)}

def expected(img_path, ref_path, lab_path, size, lo=-160.0, hi=240.0, alpha=0.45):
    """The axial, coronal and sagittal slices, radiological: the arrays turned to L, P, S with
    nibabel; axial rows P (anterior on top), columns L (patient's right on the left); coronal and
    sagittal superior on top; sagittal columns P."""
    ims = [nib.load(p) for p in (img_path, ref_path, lab_path)]
    ct, ref, lab = [np.asarray(i.dataobj) for i in ims]
    fg = np.argwhere(ref > 0)
    c = np.floor(fg.mean(axis=0) + 0.5).astype(int) if len(fg) else np.array(ref.shape) // 2
    t = ornt_transform(io_orientation(ims[1].affine), axcodes2ornt(("L", "P", "S")))
    mark = np.zeros(ref.shape, np.uint8)
    mark[tuple(c)] = 1
    ct, lab, mark = (apply_orientation(a, t) for a in (ct, lab, mark))
    x0, y0, z0 = np.argwhere(mark)[0]
    zooms = np.array(ims[1].header.get_zooms()[:3], float)
    sp = np.empty(3)
    for d in range(3):
        sp[int(t[d, 0])] = zooms[d]
    n = np.array(ct.shape)
    px = (n * sp).max() / size
    views = {"axial": (ct[:, :, z0].T, lab[:, :, z0].T, sp[0], sp[1]),
             "coronal": (ct[:, y0, :].T[::-1], lab[:, y0, :].T[::-1], sp[0], sp[2]),
             "sagittal": (ct[x0, :, :].T[::-1], lab[x0, :, :].T[::-1], sp[1], sp[2])}
    out = {}
    for name, (g, l, scol, srow) in views.items():
        nr, nc = g.shape
        W = int(min(max(np.floor(nc * scol / px + 0.5), 1), size))
        H = int(min(max(np.floor(nr * srow / px + 0.5), 1), size))
        ri = np.minimum([int((r + 0.5) * nr / H) for r in range(H)], nr - 1)
        ci = np.minimum([int((k + 0.5) * nc / W) for k in range(W)], nc - 1)
        gv = np.clip((g[np.ix_(ri, ci)].astype(float) - lo) * (255.0 / (hi - lo)), 0, 255)
        rgb = np.repeat(gv[:, :, None], 3, axis=2)
        ll = l[np.ix_(ri, ci)]
        for k, col in COLORS.items():
            m = ll == k
            rgb[m] = (1 - alpha) * gv[m][:, None] + alpha * np.array(col, float)
        out[name] = np.floor(rgb + 0.5).astype(np.uint8)
    return out
PY
}

@test "report: --help and --version" {
    run fine-report --help
    [ "$status" -eq 0 ]
    [[ "$output" == *"Usage: fine-report"* ]]
    [[ "$output" == *"ID=IMAGE,REF,PRED"* ]]
    [[ "$output" == *"Examples:"* ]]
    run fine-report --version
    [ "$status" -eq 0 ]
    [[ "$output" == "fine-report "* ]]
}

@test "report: Dice and HD95 tables with the 13 organs and both means, as fine-dice wrote them" {
    run "$FINE_PYTHON" - "$D/report.html" "$D/dice.json" <<'PY'
import json, sys
from html.parser import HTMLParser
html, js = open(sys.argv[1]).read(), json.load(open(sys.argv[2]))

class Tables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.cur, self.row, self.cell = {}, None, None, None
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.cur = self.tables.setdefault(a.get("id"), [])
        elif tag == "tr" and self.cur is not None:
            self.row = []
            self.cur.append(self.row)
        elif tag in ("td", "th") and self.row is not None:
            self.cell = ""
    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data
    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.row.append(self.cell.strip())
            self.cell = None
        elif tag == "table":
            self.cur = self.row = None

p = Tables()
p.feed(html)
assert "<title>BCV &lt;test&gt;</title>" in html, "title escaped"
res, names = js["results"], js["labels"]
cases = [c["case"] for c in res["all"]]
assert cases == ["ABD_001", "ABD_002"], cases
for tid, key, fmt in (("dice-table", "Dice", "%.4f"), ("hd95-table", "Hausdorff Distance 95", "%.2f")):
    rows = p.tables[tid]
    assert rows[0] == ["label", "organ"] + cases + ["mean"], rows[0]
    assert len(rows) == 1 + 13 + 2, len(rows)
    show = lambda v: "n/a" if v is None else fmt % v
    for k in range(1, 14):
        r = rows[k]
        assert r[0] == str(k) and r[1] == names[str(k)], r
        want = [show(c[str(k)][key]) for c in res["all"]] + [show(res["mean"][str(k)][key])]
        assert r[2:] == want, (tid, r, want)
    for r, name in zip(rows[14:], ("mean (13 organs)", "mean (8 Synapse organs)")):
        assert r[1] == name and r[2:] == ["", "", show(res[name][key])], (r, name)
organs = [names[str(k)] for k in range(1, 14)]
assert organs[0] == "spleen" and organs[12] == "left adrenal gland"
assert all(o in html for o in organs)
print("ok", res["mean (13 organs)"]["Dice"], res["mean (8 Synapse organs)"]["Dice"])
PY
    echo "$output"
    [ "$status" -eq 0 ]
}

@test "report: charts, training curves, legend, the load script" {
    h="$D/report.html"
    [ "$(grep -c '<svg' "$h")" -eq 4 ]          # bar chart + loss, Dice, learning rate
    grep -q 'Mean Dice over cases per organ' "$h"
    grep -q '3 epochs logged (1 to 3)' "$h"
    grep -q '>validation Dice, moving average<' "$h"
    grep -q '>learning rate<' "$h"
    [ "$(grep -o 'class="item"' "$h" | wc -l)" -eq 13 ]
    grep -q "data-images-loaded" "$h"
    ! grep -Eq '(src|href)="(https?:)?//' "$h" || false   # nothing from the network
    # no log: said so; no cases: said so, no images
    fine-report -q -o "$T/bare.html" --dice "$D/dice.json"
    grep -q 'No training log was given' "$T/bare.html"
    grep -q 'No cases were given' "$T/bare.html"
    ! grep -q '<img' "$T/bare.html" || false
    [ "$(grep -c '<svg' "$T/bare.html")" -eq 1 ]
}

@test "report: 12 embedded PNGs, valid, of plausible sizes" {
    run "$FINE_PYTHON" - "$D/report.html" "$D/png.py" <<'PY'
import re, sys
sys.path.insert(0, sys.argv[2].rsplit("/", 1)[0])
import png
html = open(sys.argv[1]).read()
imgs = png.data_uris(html)
assert len(imgs) == 12, len(imgs)
attrs = re.findall(r'<img width="(\d+)" height="(\d+)"', html)
assert len(attrs) == 12
sizes = []
for data, (aw, ah) in zip(imgs, attrs):
    w, h = png.header(data)
    assert (w, h) == (int(aw), int(ah)), ((w, h), (aw, ah))
    assert 16 <= w <= 512 and 16 <= h <= 512, (w, h)
    sizes.append((w, h))
# per case: the longest side of its views is --size (512); reference and prediction alike
for c in range(2):
    s = sizes[6 * c:6 * c + 6]
    assert max(max(p) for p in s) == 512, s
    assert s[0::2] == s[1::2], s
print("ok", sizes)
PY
    echo "$output"
    [ "$status" -eq 0 ]
}

@test "report: every pixel as an independent numpy rendering (LPS and RAS files)" {
    run "$FINE_PYTHON" - "$D/small.html" "$D/png.py" "$D" <<'PY'
import sys
import numpy as np
sys.path.insert(0, sys.argv[2].rsplit("/", 1)[0])
import png
html, d = open(sys.argv[1]).read(), sys.argv[3]
imgs = [png.decode(b) for b in png.data_uris(html)]
assert len(imgs) == 18, len(imgs)
cases = [(f"{d}/raw/img/img0001.nii.gz", f"{d}/raw/label/label0001.nii.gz", f"{d}/pred/ABD_001.nii.gz"),
         (f"{d}/raw/img/img0002.nii.gz", f"{d}/raw/label/label0002.nii.gz", f"{d}/pred/ABD_002.nii.gz"),
         (f"{d}/ras/img.nii.gz", f"{d}/ras/label.nii.gz", f"{d}/ras/pred.nii.gz")]
k = 0
for ci, (im, ref, pred) in enumerate(cases):
    er, ep = png.expected(im, ref, ref, 96), png.expected(im, ref, pred, 96)
    for view in ("axial", "coronal", "sagittal"):
        for which, exp in (("reference", er), ("prediction", ep)):
            got = imgs[k]
            k += 1
            e = exp[view]
            assert got.shape == e.shape, (ci, view, which, got.shape, e.shape)
            diff = np.abs(got.astype(int) - e.astype(int)).max()
            assert diff <= 1, (ci, view, which, diff)
    # the overlay is visible: organ-tinted pixels differ from grey
    assert (np.ptp(imgs[k - 6].astype(int), axis=2) > 20).mean() > 0.01, ci
# the perfect prediction of case 1 draws like its reference; case 2's does not
assert all(np.array_equal(imgs[i], imgs[i + 1]) for i in range(0, 6, 2))
assert not np.array_equal(imgs[6], imgs[7])
# the RAS copy of case 2 draws the same pictures
assert all(np.array_equal(imgs[6 + i], imgs[12 + i]) for i in range(6))
print("ok", [i.shape for i in imgs[:6]])
PY
    echo "$output"
    [ "$status" -eq 0 ]
}

@test "report: headless Chromium loads all 12 images and shows the table" {
    command -v chromium >/dev/null || skip "chromium is not installed (Debian package chromium; make deps)"
    dom() {
        HOME="$T" timeout 60 chromium --headless --no-sandbox --disable-gpu --user-data-dir="$T/profile" \
            --virtual-time-budget=5000 --dump-dom "file://$1" 2>/dev/null
    }
    dom "$D/report.html" >"$T/dom.html"
    grep -o '<body[^>]*>' "$T/dom.html"
    grep -q '<body[^>]*data-images-loaded="12"' "$T/dom.html"
    grep -q '<body[^>]*data-images-total="12"' "$T/dom.html"
    grep -q '<table class="scores" id="dice-table">' "$T/dom.html"
    grep -q 'left adrenal gland</th>' "$T/dom.html"
    grep -q 'mean (8 Synapse organs)</th>' "$T/dom.html"
    # the check can fail: a page whose first image is corrupt loads 11 of 12
    sed '0,/base64,iVBOR/s//base64,AAAAA/' "$D/report.html" >"$T/broken.html"
    dom "$T/broken.html" >"$T/dom2.html"
    grep -o '<body[^>]*>' "$T/dom2.html"
    grep -q '<body[^>]*data-images-loaded="11"' "$T/dom2.html"
    grep -q '<body[^>]*data-images-total="12"' "$T/dom2.html"
}

@test "report: bad inputs: one-line error naming the file, exit 1, no output" {
    bad() { # expected message part, then fine-report's arguments
        local want="$1"
        shift
        run fine-report -o "$T/r.html" "$@"
        echo "$output"
        [ "$status" -eq 1 ]
        [ "${#lines[@]}" -eq 1 ]
        [[ "$output" == "fine-report: "*"$want"* ]]
        [ -z "$(ls -A "$T" | grep -v '^in')" ]   # no report, no temporary file
    }
    mkdir -p "$T/in"
    bad "$T/in/none.json: No such file" --dice "$T/in/none.json"
    head -c 300 "$D/dice.json" >"$T/in/cut.json"
    bad "$T/in/cut.json: line " --dice "$T/in/cut.json"
    echo '{"results": 3}' >"$T/in/other.json"
    bad "$T/in/other.json: no \"results\" object" --dice "$T/in/other.json"
    { head -n 2 "$D/log.jsonl"; echo '{"epoch": 3, "loss": 0.5,'; } >"$T/in/log.jsonl"
    bad "$T/in/log.jsonl: line 3, column" --dice "$D/dice.json" --log "$T/in/log.jsonl"
    bad "case ABD_001" --dice "$D/dice.json" \
        "ABD_001=$D/raw/img/img0001.nii.gz,$D/raw/label/label0001.nii.gz,$D/pred/ABD_002.nii.gz"
    [[ "$output" == *"shapes differ"* ]]
    bad "case ABD_003" --dice "$D/dice.json" --threads 2 "$C1" "$C2" \
        "ABD_003=$D/raw/img/img0002.nii.gz,$D/raw/label/label0002.nii.gz,$D/pred/ABD_001.nii.gz"
    bad "$T/in/nope.nii.gz" --dice "$D/dice.json" \
        "ABD_001=$D/raw/img/img0001.nii.gz,$T/in/nope.nii.gz,$D/pred/ABD_001.nii.gz"
}

@test "report: usage errors exit 2" {
    for args in "--dice $D/dice.json" "-o $T/r.html" "-o $T/r.html --dice $D/dice.json ABD_001=a,b" \
        "-o $T/r.html --dice $D/dice.json =a,b,c" "-o $T/r.html --dice $D/dice.json --window 5,1" \
        "-o $T/r.html --dice $D/dice.json --alpha 2" "-o $T/r.html --dice $D/dice.json --size 8" \
        "-o $T/r.html --dice $D/dice.json --threads 0" "-o $T/r.html --dice $D/dice.json --bogus" \
        "-o $T/r.html --dice $D/dice.json $C1 $C1"; do
        run fine-report $args
        echo "$args: $output"
        [ "$status" -eq 2 ]
        [[ "$output" == *"Try 'fine-report --help'"* ]]
        [ ! -e "$T/r.html" ]
    done
}

@test "report: an existing file is kept without --force; -o - and --threads 1 write the same page" {
    echo keep >"$T/r.html"
    run fine-report -o "$T/r.html" --dice "$D/dice.json"
    [ "$status" -eq 1 ]
    [[ "$output" == *"exists (use --force to overwrite)"* ]]
    [ "$(cat "$T/r.html")" = keep ]
    fine-report -q -f --threads 3 -o "$T/r.html" --dice "$D/dice.json" --log "$D/log.jsonl" --title "BCV <test>" \
        "$C1" "$C2"
    cmp "$T/r.html" "$D/report.html"
    fine-report -q --threads 1 -o - --dice "$D/dice.json" --log "$D/log.jsonl" --title "BCV <test>" "$C1" "$C2" \
        >"$T/stdout.html"
    cmp "$T/r.html" "$T/stdout.html"
    [ "$(ls -A "$T" | wc -l)" -eq 2 ]   # no temporary files left
}
