#!/usr/bin/env bats
# fine-patch --grid: the sliding-window tiles of each case against an independent Python
# re-implementation of nnU-Net v1's tiling (_compute_steps_for_sliding_window, pad_nd_image,
# the (z, y, x) loop order, pos of fine-reference B §3.2): origins, positions, image and label
# tiles, the case_begin / case_end framing; pass-through; errors.
load common

# mk_cases FILE: a stream with an unknown record, case "odd" (13x37x29 f32 image, u8 label
# written before the image), case "tiny" (5x9x40 i16 image smaller than the patch on two
# axes, u8 label) and case "nolab" (17x16x16 f32 image only).
mk_cases() {
    "$FINE_PYTHON" - "$1" <<'PY'
import sys, numpy as np, fine_stream
rng = np.random.default_rng(5)
def geo(shape):
    return {"spacing": [3.0, 0.75, 0.75], "original_size": list(shape), "original_spacing": [3.0, 0.75, 0.75],
            "crop_lo": [0, 0, 0], "crop_hi": list(shape)}
recs = [{"type": "x-note", "text": "pass me"}]
for name, shape, dt, lab_first in [("odd", (13, 37, 29), np.float32, True), ("tiny", (5, 9, 40), np.int16, False)]:
    img = (rng.standard_normal(shape) * 100).astype(dt)
    lab = rng.integers(0, 14, shape).astype(np.uint8)
    vi = {"type": "volume", "case": name, "name": "image", "array": img, "geometry": geo(shape)}
    vl = {"type": "volume", "case": name, "name": "label", "array": lab, "geometry": geo(shape)}
    recs += [vl, vi] if lab_first else [vi, vl]
recs.append({"type": "volume", "case": "nolab", "name": "image",
             "array": rng.standard_normal((17, 16, 16)).astype(np.float32), "geometry": geo((17, 16, 16))})
fine_stream.write(sys.argv[1], recs, tool="mk_cases")
PY
}

@test "fine-patch --help, --version, usage errors" {
    run fine-patch --help
    [ "$status" -eq 0 ]
    [[ "$output" == *"Usage: fine-patch --grid"* ]]
    [[ "$output" == *"| fine-stitch"* ]]
    run fine-patch --version
    [ "$status" -eq 0 ]
    [[ "$output" == "fine-patch "* ]]
    run fine-patch in.fst
    [ "$status" -eq 2 ]
    [[ "$output" == *"--grid"* ]]
    run fine-patch --grid --patch 8,0,8
    [ "$status" -eq 2 ]
    run fine-patch --grid --patch 8,8
    [ "$status" -eq 2 ]
    run fine-patch --grid --step 1.5
    [ "$status" -eq 2 ]
    run fine-patch --grid --bogus
    [ "$status" -eq 2 ]
}

@test "tiles, origins, pos and framing equal nnU-Net's tiling re-implemented in Python" {
    mk_cases "$T/in.fst"
    fine-patch --grid --patch 8,16,16 "$T/in.fst" "$T/p.fst"
    fine-patch --grid --patch 4,8,32 --step 1 "$T/in.fst" - >"$T/p1.fst"
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, numpy as np, fine_stream
t = sys.argv[1]

def steps(patch_size, image_size, step_size):  # nnU-Net v1 _compute_steps_for_sliding_window
    target = [i * step_size for i in patch_size]
    num = [int(np.ceil((i - k) / j)) + 1 for i, j, k in zip(image_size, target, patch_size)]
    out = []
    for d in range(len(patch_size)):
        mx = image_size[d] - patch_size[d]
        a = mx / (num[d] - 1) if num[d] > 1 else 99999999999
        out.append([int(np.round(a * i)) for i in range(num[d])])
    return out

def pad(a, P):  # batchgenerators pad_nd_image, constant 0
    diff = np.maximum(np.array(P) - a.shape, 0)
    below = diff // 2
    return np.pad(a, list(zip(below, diff - below))), below

cases = {r["case"]: r for r in fine_stream.read(f"{t}/in.fst") if r["type"] == "volume" and r["name"] == "image"}
labels = {r["case"]: r["array"] for r in fine_stream.read(f"{t}/in.fst") if r["type"] == "volume" and r["name"] == "label"}
for path, P, step in [(f"{t}/p.fst", (8, 16, 16), 0.5), (f"{t}/p1.fst", (4, 8, 32), 1.0)]:
    with fine_stream.Reader(path) as r:
        recs = list(r)
        assert [p["tool"] for p in r.provenance] == ["mk_cases", "fine-patch"]
    assert recs[0] == {"type": "x-note", "text": "pass me"}, recs[0]
    k = 1
    for name in ("odd", "tiny", "nolab"):
        img = cases[name]["array"].astype(np.float32)
        pimg, below = pad(img, P)
        plab = pad(labels[name], P)[0] if name in labels else None
        st = steps(P, pimg.shape, step)
        begin = recs[k]; k += 1
        assert begin["type"] == "case_begin" and begin["case"] == name, begin
        assert begin["shape"] == list(img.shape) == begin["volume_size"]
        assert begin["patch"] == list(P) and begin["pad_lo"] == list(below)
        assert begin["padded_size"] == list(pimg.shape)
        assert begin["grid"] == [len(s) for s in st]
        n = len(st[0]) * len(st[1]) * len(st[2])
        assert begin["patches"] == n and begin["geometry"]["spacing"] == [3.0, 0.75, 0.75]
        i = 0
        for x in st[0]:
            for y in st[1]:
                for z in st[2]:
                    p = recs[k]; k += 1
                    lb = np.array([x, y, z])
                    sl = tuple(slice(a, a + b) for a, b in zip(lb, P))
                    assert p["type"] == "patch" and p["case"] == name and p["name"] == "image"
                    assert p["index"] == i, (p["index"], i)
                    assert p["origin"] == list(lb - below), (p["origin"], lb - below)
                    assert p["pos"] == [int(v) for v in lb + np.array(P) // 2 - np.array(pimg.shape) // 2]
                    assert p["volume_size"] == list(img.shape)
                    assert p["array"].dtype == np.float32 and p["array"].shape == (1,) + P
                    assert (p["array"][0] == pimg[sl]).all()
                    if plab is None:
                        assert "label" not in p
                    else:
                        assert p["label"].dtype == np.uint8 and (p["label"] == plab[sl]).all()
                    i += 1
        end = recs[k]; k += 1
        assert end == {"type": "case_end", "case": name, "patches": n}, end
    assert k == len(recs), (k, len(recs))
PY
}

@test "--no-label leaves the label tiles out; --train goes to the training mode" {
    mk_cases "$T/in.fst"
    fine-patch --grid --no-label --patch 8,16,16 "$T/in.fst" "$T/p.fst"
    run fine-info --no-range "$T/p.fst"
    [ "$status" -eq 0 ]
    [[ "$output" == *"record 2: case_begin"* ]]
    if grep -q '^  label ' <<<"$output"; then false; fi
    fine-patch --grid --patch 8,16,16 "$T/in.fst" | fine-info --no-range - | grep -q '^  label .*tensor'
    run fine-patch --train --help
    [ "$status" -eq 0 ]
    [[ "$output" == *"--train"* ]]
    [[ "$output" != *"sliding-window tiles (this mode)"* ]]
}

@test "bad cases are errors naming the case; nothing is written" {
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, numpy as np, fine_stream
t = sys.argv[1]
g = lambda s: {"spacing": [1.0, 1.0, 1.0], "original_size": list(s), "original_spacing": [1.0, 1.0, 1.0],
               "crop_lo": [0, 0, 0], "crop_hi": list(s)}
im = lambda c, s: {"type": "volume", "case": c, "name": "image", "array": np.zeros(s, np.float32), "geometry": g(s)}
lb = lambda c, s: {"type": "volume", "case": c, "name": "label", "array": np.zeros(s, np.uint8), "geometry": g(s)}
fine_stream.write(f"{t}/shape.fst", [im("A", (4, 5, 6)), lb("A", (4, 5, 7))])
fine_stream.write(f"{t}/twice.fst", [im("B", (4, 5, 6)), im("B", (4, 5, 6))])
fine_stream.write(f"{t}/nolabimg.fst", [lb("C", (4, 5, 6))])
PY
    run fine-patch --grid "$T/shape.fst" "$T/o.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == "fine-patch: $T/shape.fst: case A: label shape 4x5x7 differs from image shape 4x5x6"* ]]
    [ ! -e "$T/o.fst" ]
    run fine-patch --grid "$T/twice.fst" "$T/o.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"case B: a second image volume"* ]]
    run fine-patch --grid "$T/nolabimg.fst" "$T/o.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"case C: a label volume but no image volume"* ]]
    [ ! -e "$T/o.fst" ]
    mk_cases "$T/in.fst"
    head -c 2000 "$T/in.fst" >"$T/cut.fst"
    run fine-patch --grid "$T/cut.fst" "$T/o.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == "fine-patch: $T/cut.fst: "* ]]
    [ ! -e "$T/o.fst" ]
    touch "$T/exists.fst"
    run fine-patch --grid "$T/in.fst" "$T/exists.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"exists"* ]]
}

@test "bad input: NaN or infinite intensities, labels outside 0..13, label shape or spacing, an empty image" {
    for kind in nan inf label14 shape spacing empty; do
        mk_bad_case $kind "$T/$kind.fst"
        want="$(bad_case_message $kind)"
        run fine-patch --grid --patch 4,8,8 "$T/$kind.fst" "$T/o_$kind.fst"
        echo "$kind: $output"
        [ "$status" -eq 1 ]
        [[ "$output" == "fine-patch: "*"$want"* ]] || false
        [ ! -e "$T/o_$kind.fst" ]
        [ "${#lines[@]}" -eq 1 ]
    done
    mk_bad_case label14 "$T/l.fst"
    fine-patch --grid --patch 4,8,8 --max-label 14 "$T/l.fst" "$T/ok.fst"
}
