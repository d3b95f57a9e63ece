# Loaded by every bats file: tools from the build under test, a private scratch folder.
# FINE_BIN, FINE_PYTHON, FINE_HELPERS and FINE_GPUTESTS come from `make test` (tests/run).
: "${FINE_BIN:=$BATS_TEST_DIRNAME/../../bin}"
: "${FINE_PYTHON:=/usr/bin/python3}"
: "${FINE_HELPERS:=$BATS_TEST_DIRNAME/../../build/release/tests/helpers}"
: "${FINE_GPUTESTS:=$BATS_TEST_DIRNAME/../../build/release/tests/gpu}"
: "${FINE_SANITIZE:=0}"
export PATH="$FINE_BIN:$PATH"
export PYTHONPATH="$BATS_TEST_DIRNAME/../../formats/python${PYTHONPATH:+:$PYTHONPATH}"
REPO="$(cd "$BATS_TEST_DIRNAME/../.." && pwd)"

setup() {
    T="$(mktemp -d "${BATS_TMPDIR:-/tmp}/fine.XXXXXX")"
}

teardown() {
    rm -rf "$T"
}

# mk_bad_case KIND OUT: a stream of one good case "OK" then one bad case "BAD" (image and label
# volumes), the bad one with KIND: nan, inf (an intensity), label14 (a label outside 0..13),
# shape (label shape differs), spacing (label spacing differs), empty (an image with no voxels).
mk_bad_case() {
    "$FINE_PYTHON" - "$1" "$2" <<'PY'
import sys, numpy as np, fine_stream
kind, out = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(5)
def geom(s, sp=(3.0, 0.8, 0.8)):
    return {"spacing": list(sp), "original_size": list(s), "original_spacing": list(sp),
            "crop_lo": [0, 0, 0], "crop_hi": list(s)}
recs = []
for case in ("OK", "BAD"):
    shape = (0, 16, 16) if case == "BAD" and kind == "empty" else (6, 16, 16)
    img = (rng.standard_normal(shape) * 100 + 50).astype(np.float32)
    lab = rng.integers(0, 14, shape).astype(np.uint8)
    lshape, lsp = shape, (3.0, 0.8, 0.8)
    if case == "BAD":
        if kind == "nan": img[2, 3, 4] = np.nan
        if kind == "inf": img[1, 0, 5] = -np.inf
        if kind == "label14": lab[4, 7, 7] = 14
        if kind == "shape": lab = lab[:, :15]; lshape = lab.shape
        if kind == "spacing": lsp = (3.0, 0.9, 0.8)
    recs.append({"type": "volume", "case": case, "name": "image", "array": img, "geometry": geom(shape)})
    recs.append({"type": "volume", "case": case, "name": "label", "array": lab, "geometry": geom(lshape, lsp)})
fine_stream.write(out, recs, tool="mk_bad_case")
PY
}

# bad_case_message KIND: what the error line must contain for that KIND
bad_case_message() {
    case "$1" in
    nan) echo "case BAD: the image has a NaN intensity at voxel (2, 3, 4)" ;;
    inf) echo "case BAD: the image has an infinite intensity at voxel (1, 0, 5)" ;;
    label14) echo "case BAD: label value 14 outside 0..13" ;;
    shape) echo "case BAD: label shape 6x15x16 differs from image shape 6x16x16" ;;
    spacing) echo "case BAD: label spacing 3x0.9x0.8 differs from image spacing 3x0.8x0.8" ;;
    empty) echo "BAD: " ;;
    esac
}
