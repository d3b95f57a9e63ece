#!/usr/bin/env bats
# fine-convert: NIfTI -> stream -> NIfTI keeps data and geometry exactly, as nibabel and the
# independent Python stream reader (formats/python/fine_stream.py) see them; errors are one
# line and a non-zero exit; outputs are never partial, never overwritten without --force.
load common

# mk_nii KIND VERSION PATH: a 7x9x11 test image written byte by byte from a nibabel header
# (so the scaling stored is exactly the one asked for), with a rotated qform of negative qfac
# and a different sform. KIND: ct (int16, scl_slope 2, scl_inter -1024, qform 1 + sform 2),
# f32 (float32 with a NaN, qform 2 only), label (uint8 0..5, sform 1 only), label16 (int16
# 0..1000), label32 (int32 up to 70000), frac (float32 with fractions), scaled01 (int16,
# slope 0.1, inter 0.5), f64 (float64), u16, 4d (3 volumes), 4d1 (one volume).
mk_nii() {
    "$FINE_PYTHON" - "$@" <<'PY'
import gzip, sys
import numpy as np, nibabel as nib
kind, version, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(7)
shape = (7, 9, 11)
dtypes = {"ct": np.int16, "f32": np.float32, "label": np.uint8, "label16": np.int16,
          "label32": np.int32, "frac": np.float32, "scaled01": np.int16, "f64": np.float64,
          "u16": np.uint16, "4d": np.float32, "4d1": np.float32}
if kind == "ct" or kind == "scaled01":
    data = rng.integers(-1024, 3000, shape).astype(np.int16)
elif kind == "label":
    data = rng.integers(0, 6, shape).astype(np.uint8)
elif kind == "label16":
    data = rng.integers(0, 1001, shape).astype(np.int16)
elif kind == "label32":
    data = rng.integers(0, 70001, shape).astype(np.int32)
elif kind == "u16":
    data = rng.integers(0, 65536, shape).astype(np.uint16)
elif kind in ("4d", "4d1"):
    data = rng.standard_normal(shape + ((3,) if kind == "4d" else (1,))).astype(np.float32)
else:
    data = (rng.standard_normal(shape) * 100).astype(dtypes[kind])
if kind == "f32":
    data[1, 2, 3] = np.nan
H = nib.Nifti1Header if version == 1 else nib.Nifti2Header
h = H()
h.set_data_shape(data.shape)
h.set_data_dtype(data.dtype)
c, s = np.cos(0.5), np.sin(0.5)
rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, 0.96, -0.28], [0, 0.28, 0.96]])
q = np.eye(4)
q[:3, :3] = rot @ np.diag([0.8, 0.9, -2.5])         # negative determinant: qfac -1
q[:3, 3] = [-100.5, 80.25, 40.0]
sf = q.copy()
sf[0, 1] += 0.05                                     # a sheared sform, different from the qform
sf[:3, 3] += [1.5, -2.0, 0.5]
codes = {"ct": (1, 2), "f32": (2, 0), "label": (0, 1)}.get(kind, (1, 1))
h.set_qform(q, code=codes[0])
h.set_sform(sf, code=codes[1])
if codes[0] == 0:   # keep non-trivial stored quaternion fields even with code 0
    h["quatern_b"], h["quatern_c"], h["quatern_d"] = 0.1, 0.2, 0.3
h.set_xyzt_units("mm", "sec")
h["descrip"] = b"fine test " + kind.encode()
if kind == "ct":
    h["scl_slope"], h["scl_inter"] = 2.0, -1024.0
elif kind == "scaled01":
    h["scl_slope"], h["scl_inter"] = 0.1, 0.5
else:
    h["scl_slope"], h["scl_inter"] = np.nan, np.nan
opener = gzip.open if path.endswith(".gz") else open
with opener(path, "wb") as f:
    h.write_to(f)
    f.write(data.tobytes(order="F"))
img = nib.load(path)                                 # nibabel must read what we wrote
assert img.shape == data.shape
PY
}

# check_rt IN STREAM OUT NAME DTYPE CASE: the stream holds IN as one volume record (array
# (z, y, x) = nibabel's (i, j, k) transposed, scaling applied, header fields kept) and OUT is
# IN again: same header fields, same values (scaled), OUT's datatype DTYPE (numpy name).
check_rt() {
    "$FINE_PYTHON" - "$@" <<'PY'
import sys
import numpy as np, nibabel as nib, fine_stream
src, stream, out, name, want_dtype, case = sys.argv[1:7]
A = nib.load(src)
ha = A.header
raw = np.asarray(A.dataobj.get_unscaled()).reshape(A.shape[:3])
slope, inter = float(A.dataobj.slope), float(A.dataobj.inter)   # nibabel moves them off the header
if np.isfinite(slope) and slope != 0 and not (slope == 1 and inter == 0):
    exp = (raw.astype(np.float64) * slope + (inter if np.isfinite(inter) else 0.0)).astype(np.float32)
else:
    exp = raw
if raw.dtype == np.float64:
    exp = exp.astype(np.float32)

recs = list(fine_stream.read(stream))
assert len(recs) == 1, f"{len(recs)} records"
r = recs[0]
assert r["type"] == "volume" and r["name"] == name and r["case"] == case, (r["type"], r["name"], r["case"])
arr = r["array"]
assert arr.shape == exp.shape[::-1], (arr.shape, exp.shape)
if name == "label":
    assert arr.dtype.kind in "iu", arr.dtype
    assert np.array_equal(arr, exp.transpose(2, 1, 0)), "label values"
else:
    assert arr.dtype == exp.dtype or (exp.dtype.kind in "iu" and arr.dtype == exp.dtype.newbyteorder("<")), (arr.dtype, exp.dtype)
    assert np.array_equal(arr, exp.transpose(2, 1, 0), equal_nan=True), "stream values"
g = r["geometry"]
n = g["nifti"]
ver = 1 if int(ha["sizeof_hdr"]) == 348 else 2
assert n["version"] == ver
assert n["qform_code"] == int(ha["qform_code"]) and n["sform_code"] == int(ha["sform_code"])
assert n["quatern"] == [float(ha["quatern_b"]), float(ha["quatern_c"]), float(ha["quatern_d"])]
assert n["qoffset"] == [float(ha["qoffset_x"]), float(ha["qoffset_y"]), float(ha["qoffset_z"])]
assert n["pixdim"] == [float(x) for x in ha["pixdim"]], (n["pixdim"], ha["pixdim"])
assert n["srow"] == [[float(x) for x in ha[k]] for k in ("srow_x", "srow_y", "srow_z")]
assert n["qfac"] == (-1.0 if ha["pixdim"][0] < 0 else 1.0)
assert n["descrip"] == ha["descrip"].item().decode()
zooms = [float(x) for x in ha["pixdim"][1:4]]
assert g["spacing"] == zooms[::-1] and g["original_spacing"] == zooms[::-1]
assert g["original_size"] == list(exp.shape[::-1]) and g["crop_lo"] == [0, 0, 0]
assert g["crop_hi"] == list(exp.shape[::-1])
# origin and direction against nibabel's affine (sform if coded, else qform)
aff = A.affine
assert np.allclose(g["origin"], aff[:3, 3], atol=1e-5), (g["origin"], aff[:3, 3])
dirs = aff[:3, :3] / np.linalg.norm(aff[:3, :3], axis=0)
assert np.allclose(np.array(g["direction"]), dirs, atol=1e-6), (g["direction"], dirs)
assert r["meta"]["source"] == src

B = nib.load(out)
hb = B.header
for f in ("sizeof_hdr", "dim", "pixdim", "qform_code", "sform_code", "quatern_b", "quatern_c",
          "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z",
          "xyzt_units", "descrip"):
    a, b = np.asarray(ha[f]), np.asarray(hb[f])
    if f == "dim" and a[0] == 4:          # a 4-D file with one volume comes back 3-D
        a = a.copy(); a[0] = 3
    assert np.array_equal(a, b), f"{f}: {a} != {b}"
assert np.allclose(A.affine, B.affine, atol=0, rtol=0), "affine"
assert B.get_data_dtype() == np.dtype(want_dtype).newbyteorder(B.get_data_dtype().byteorder), (B.get_data_dtype(), want_dtype)
back = np.asarray(B.dataobj)
assert B.dataobj.slope == 1 and B.dataobj.inter == 0, "output must not be scaled"
assert np.array_equal(back.astype(np.float64), np.asarray(arr).transpose(2, 1, 0).astype(np.float64), equal_nan=True), "output values"
PY
}

# roundtrip KIND VERSION EXT NAME DTYPE: IN -> stream file -> OUT, checked.
roundtrip() {
    local kind=$1 ver=$2 ext=$3 name=$4 dtype=$5
    local in="$T/${kind}_v${ver}.${ext}" out="$T/${kind}_v${ver}_back.${ext}"
    mk_nii "$kind" "$ver" "$in"
    local opt=()
    [ "$name" = label ] && opt=(--name label)
    run fine-convert "${opt[@]}" "$in" "$T/s.fst"
    [ "$status" -eq 0 ] || { echo "$output"; return 1; }
    run fine-convert "$T/s.fst" "$out"
    [ "$status" -eq 0 ] || { echo "$output"; return 1; }
    run check_rt "$in" "$T/s.fst" "$out" "$name" "$dtype" "${kind}_v${ver}"
    [ "$status" -eq 0 ] || { echo "$kind v$ver .$ext: $output"; return 1; }
    rm -f "$T/s.fst"
}

# one_line_error: the last `run` failed with exit 1 and one line "fine-convert: ...".
one_line_error() {
    [ "$status" -eq 1 ] || { echo "status $status: $output"; return 1; }
    [ "${#lines[@]}" -eq 1 ] || { echo "not one line: $output"; return 1; }
    [[ "${lines[0]}" == "fine-convert: "* ]] || { echo "no tool prefix: $output"; return 1; }
    if [ -n "${1:-}" ]; then [[ "$output" == *"$1"* ]] || { echo "no '$1' in: $output"; return 1; }; fi
}

# only_files DIR NAME...: DIR holds exactly these names (no temporary or partial files).
only_files() {
    local dir=$1; shift
    local have want
    have="$(cd "$dir" && ls -A | sort | tr '\n' ' ')"
    want=""
    [ $# -eq 0 ] || want="$(printf '%s\n' "$@" | sort | tr '\n' ' ')"
    [ "$have" = "$want" ] || { echo "files in $dir: '$have', expected '$want'"; return 1; }
}

@test "convert: --help shows usage with an example pipe, --version the version" {
    run fine-convert --help
    [ "$status" -eq 0 ]
    [[ "$output" == *"Usage: fine-convert"* ]]
    [[ "$output" == *"fine-convert ct.nii.gz - | fine-convert - "* ]]
    run fine-convert --version
    [ "$status" -eq 0 ]
    [[ "$output" == "fine-convert "[0-9]* ]]
}

@test "convert: usage errors exit 2" {
    mk_nii ct 1 "$T/a.nii"
    for args in "" "$T/a.nii" "--bogus $T/a.nii $T/o.fst" "--dtype q7 $T/a.nii $T/o.fst" \
        "--name mask $T/a.nii $T/o.fst" "$T/a.nii $T/b.nii" "$T/a.fst $T/b.fst" \
        "--name label --dtype f32 $T/a.nii $T/o.fst" "$T/a.nii $T/o.fst extra" "--case"; do
        run fine-convert $args
        [ "$status" -eq 2 ] || { echo "args '$args': status $status: $output"; return 1; }
        [[ "$output" == *"Try 'fine-convert --help'"* ]]
    done
    only_files "$T" a.nii
}

@test "convert: int16 CT with scl_slope, NIfTI-1 and -2, .nii and .nii.gz: exact round trip" {
    for ver in 1 2; do
        for ext in nii nii.gz; do
            roundtrip ct "$ver" "$ext" image float32
        done
    done
}

@test "convert: float32 with NaN, qform only: exact round trip" {
    for ver in 1 2; do
        for ext in nii nii.gz; do
            roundtrip f32 "$ver" "$ext" image float32
        done
    done
}

@test "convert: uint8 label, sform only: stays uint8 through the stream" {
    for ver in 1 2; do
        for ext in nii nii.gz; do
            roundtrip label "$ver" "$ext" label uint8
        done
    done
}

@test "convert: other datatypes: uint16, float64 (read as f32), scaling 0.1/0.5, 4-D with one volume" {
    roundtrip u16 1 nii image uint16
    roundtrip f64 2 nii.gz image float32
    roundtrip scaled01 1 nii.gz image float32
    roundtrip 4d1 1 nii image float32
}

@test "convert: a label is stored as the smallest integer dtype that holds it" {
    mk_nii label16 1 "$T/l16.nii.gz"
    mk_nii label32 2 "$T/l32.nii"
    mk_nii ct 1 "$T/ct.nii"          # integral after scaling: f32 in the file, integer as a label
    fine-convert --name label "$T/l16.nii.gz" "$T/l16.fst"
    fine-convert --name label "$T/l32.nii" "$T/l32.fst"
    fine-convert --name label "$T/ct.nii" "$T/ctl.fst"
    run "$FINE_PYTHON" -c '
import sys, fine_stream
for p, want in zip(sys.argv[1:4], ["i16", "i32", "i16"]):
    r = list(fine_stream.read(p))[0]
    assert r["name"] == "label" and r["array"].dtype.str[1:] == {"i16": "i2", "i32": "i4"}[want], (p, r["array"].dtype)
' "$T/l16.fst" "$T/l32.fst" "$T/ctl.fst"
    [ "$status" -eq 0 ] || { echo "$output"; return 1; }
    fine-convert "$T/l16.fst" "$T/l16_back.nii.gz"
    run "$FINE_PYTHON" -c '
import sys, numpy as np, nibabel as nib
a, b = nib.load(sys.argv[1]), nib.load(sys.argv[2])
assert b.get_data_dtype() == np.int16 and np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
' "$T/l16.nii.gz" "$T/l16_back.nii.gz"
    [ "$status" -eq 0 ] || { echo "$output"; return 1; }
}

@test "convert: a label with fractional values is refused" {
    mk_nii frac 1 "$T/frac.nii"
    run fine-convert --name label "$T/frac.nii" "$T/o.fst"
    one_line_error "not an integer"
    [[ "$output" == *frac.nii* ]]
    only_files "$T" frac.nii
}

@test "convert: through a pipe, with --case and --dtype" {
    mk_nii ct 2 "$T/img0001.nii.gz"
    fine-convert "$T/img0001.nii.gz" - | fine-convert - "$T/back.nii.gz"
    run check_rt "$T/img0001.nii.gz" <(fine-convert "$T/img0001.nii.gz" -) "$T/back.nii.gz" image float32 img0001
    [ "$status" -eq 0 ] || { echo "$output"; return 1; }
    fine-convert --case ABD_001 --dtype f16 "$T/img0001.nii.gz" "$T/h.fst"
    run "$FINE_PYTHON" -c '
import sys, fine_stream
r = list(fine_stream.read(sys.argv[1]))[0]
assert r["case"] == "ABD_001" and r["array"].dtype.str == "<f2", (r["case"], r["array"].dtype)
' "$T/h.fst"
    [ "$status" -eq 0 ] || { echo "$output"; return 1; }
    fine-convert "$T/h.fst" "$T/h.nii"
    run "$FINE_PYTHON" -c '
import sys, numpy as np, nibabel as nib
a, b = nib.load(sys.argv[1]), nib.load(sys.argv[2])
assert b.get_data_dtype() == np.float32
assert np.array_equal(a.get_fdata().astype(np.float16), np.asarray(b.dataobj).astype(np.float16))
' "$T/img0001.nii.gz" "$T/h.nii"
    [ "$status" -eq 0 ] || { echo "$output"; return 1; }
}

@test "convert: stream -> NIfTI picks the volume by --case and --name, and reads to the end" {
    mk_nii ct 1 "$T/ct.nii"
    mk_nii label 1 "$T/lab.nii"
    fine-convert --case A "$T/ct.nii" "$T/a.fst"
    fine-convert --case B --name label "$T/lab.nii" "$T/b.fst"
    cat "$T/a.fst" "$T/b.fst" >"$T/ab.fst"
    fine-convert --name label "$T/ab.fst" "$T/l.nii"
    fine-convert --case A "$T/ab.fst" "$T/i.nii"
    fine-convert "$T/ab.fst" "$T/first.nii"
    run "$FINE_PYTHON" -c '
import sys, numpy as np, nibabel as nib
l, i, f, lab, ct = (nib.load(p) for p in sys.argv[1:6])
assert l.get_data_dtype() == np.uint8 and np.array_equal(np.asarray(l.dataobj), np.asarray(lab.dataobj))
assert np.array_equal(np.asarray(i.dataobj), ct.get_fdata().astype(np.float32))
assert np.array_equal(np.asarray(f.dataobj), np.asarray(i.dataobj))
' "$T/l.nii" "$T/i.nii" "$T/first.nii" "$T/lab.nii" "$T/ct.nii"
    [ "$status" -eq 0 ] || { echo "$output"; return 1; }
    run fine-convert --case C "$T/ab.fst" "$T/c.nii"
    one_line_error "no volume record with case C"
    [ ! -e "$T/c.nii" ]
    # a stream cut after its volume record: the volume is there, the stream is not whole
    size=$(stat -c %s "$T/a.fst")
    head -c $((size - 5)) "$T/a.fst" >"$T/cut.fst"
    run fine-convert "$T/cut.fst" "$T/cut.nii"
    one_line_error
    [ ! -e "$T/cut.nii" ]
}

@test "convert: a missing file is one line and exit 1" {
    run fine-convert "$T/nope.nii.gz" "$T/o.fst"
    one_line_error "nope.nii.gz"
    [[ "$output" == *"No such file"* ]]
    run fine-convert "$T/nope.fst" "$T/o.nii"
    one_line_error "nope.fst"
    only_files "$T"
}

@test "convert: garbage, a wrong header, truncated data, several volumes are one line and exit 1" {
    head -c 2000 /dev/urandom >"$T/garbage.nii"
    run fine-convert "$T/garbage.nii" "$T/o.fst"
    one_line_error "not a NIfTI file"

    mk_nii ct 1 "$T/ct.nii"
    "$FINE_PYTHON" -c '
import sys, struct
b = bytearray(open(sys.argv[1], "rb").read())
open(sys.argv[2], "wb").write(struct.pack("<i", 350) + b[4:])          # sizeof_hdr
b2 = bytearray(b); b2[40:42] = struct.pack("<h", 0)                    # dim[0] = 0
open(sys.argv[3], "wb").write(b2)
open(sys.argv[4], "wb").write(b[:len(b) - 100])                        # truncated data
' "$T/ct.nii" "$T/sizeof.nii" "$T/dim0.nii" "$T/trunc.nii"
    run fine-convert "$T/sizeof.nii" "$T/o.fst"
    one_line_error "sizeof_hdr"
    run fine-convert "$T/dim0.nii" "$T/o.fst"
    one_line_error "dim[0]"
    run fine-convert "$T/trunc.nii" "$T/o.fst"
    one_line_error "truncated"
    gzip -c "$T/ct.nii" | head -c 1000 >"$T/trunc.nii.gz"
    run fine-convert "$T/trunc.nii.gz" "$T/o.fst"
    one_line_error "trunc.nii.gz"

    mk_nii 4d 1 "$T/4d.nii.gz"
    run fine-convert "$T/4d.nii.gz" "$T/o.fst"
    one_line_error "3 volumes"
    only_files "$T" garbage.nii ct.nii sizeof.nii dim0.nii trunc.nii trunc.nii.gz 4d.nii.gz
}

@test "convert: empty input is one line and exit 1" {
    : >"$T/empty.nii"
    run fine-convert "$T/empty.nii" "$T/o.fst"
    one_line_error "empty"
    run fine-convert - "$T/o.nii" </dev/null
    one_line_error
    : >"$T/empty.fst"
    run fine-convert "$T/empty.fst" "$T/o.nii"
    one_line_error "empty.fst"
    only_files "$T" empty.nii empty.fst
}

@test "convert: a stream is not written to a terminal" {
    command -v script >/dev/null || skip "no script(1)"
    script -qec true /dev/null >/dev/null 2>&1 || skip "script(1) cannot open a terminal here"
    mk_nii ct 1 "$T/ct.nii"
    run script -qec "$FINE_BIN/fine-convert $T/ct.nii -" /dev/null
    [ "$status" -eq 1 ] || { echo "status $status: $output"; return 1; }
    [[ "$output" == *"terminal"* ]]
    [ "${#output}" -lt 300 ]   # a message, not binary data
}

@test "convert: an existing output is kept without --force and replaced with it" {
    mk_nii ct 1 "$T/ct.nii"
    mk_nii label 1 "$T/lab.nii"
    echo keep >"$T/o.fst"
    run fine-convert "$T/ct.nii" "$T/o.fst"
    one_line_error "exists"
    [ "$(cat "$T/o.fst")" = keep ]
    fine-convert --force "$T/ct.nii" "$T/o.fst"
    [ "$(head -c 4 "$T/o.fst" | od -An -tx1 | tr -d ' ')" = 28b52ffd ]

    fine-convert --name label "$T/lab.nii" "$T/l.fst"
    echo keep >"$T/o.nii"
    run fine-convert "$T/l.fst" "$T/o.nii"
    one_line_error "exists"
    [ "$(cat "$T/o.nii")" = keep ]
    fine-convert -f "$T/l.fst" "$T/o.nii"
    cmp -s <(head -c 4 "$T/o.nii" | od -An -tx1 | tr -d ' ') <(echo 5c010000)
    only_files "$T" ct.nii lab.nii o.fst l.fst o.nii
}

@test "convert: no partial output is left on failure" {
    mk_nii ct 1 "$T/ct.nii"
    head -c 1000 "$T/ct.nii" >"$T/short.nii"
    run fine-convert "$T/short.nii" "$T/o.fst"
    one_line_error "truncated"
    fine-convert "$T/ct.nii" "$T/s.fst"
    size=$(stat -c %s "$T/s.fst")
    head -c $((size / 2)) "$T/s.fst" >"$T/half.fst"
    run fine-convert "$T/half.fst" "$T/o.nii.gz"
    one_line_error "half.fst"
    # the output directory does not exist
    run fine-convert "$T/s.fst" "$T/no/such/dir/o.nii"
    one_line_error "o.nii"
    only_files "$T" ct.nii short.nii s.fst half.fst
}
