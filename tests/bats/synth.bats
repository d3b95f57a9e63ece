#!/usr/bin/env bats
# fine-synth: both layouts produce the expected files; nibabel reads them as int16 images and
# uint8 labels with equal shapes and affines (axis codes L P S); outputs are the same bytes
# across runs, thread counts and case selections; existing files are kept without --force;
# usage errors exit 2. Small scales and few cases keep it fast.
load common

# nib_check DIR IMG LABEL [ALL13]: nibabel's view of one image/label pair.
nib_check() {
    "$FINE_PYTHON" - "$@" <<'PY'
import sys
import numpy as np, nibabel as nib
img, lab = nib.load(sys.argv[1]), nib.load(sys.argv[2])
all13 = len(sys.argv) > 3
assert img.get_data_dtype() == np.int16, img.get_data_dtype()
assert lab.get_data_dtype() == np.uint8, lab.get_data_dtype()
assert img.shape == lab.shape and len(img.shape) == 3, (img.shape, lab.shape)
assert np.array_equal(img.affine, lab.affine), (img.affine, lab.affine)
assert np.allclose(img.get_qform(), img.get_sform(), atol=1e-4), (img.get_qform(), img.get_sform())
assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
assert nib.aff2axcodes(img.affine) == ("L", "P", "S"), nib.aff2axcodes(img.affine)
z = img.header.get_zooms()
assert abs(z[0] - z[1]) < 1e-6 and z[2] > z[0], z
i = np.asarray(img.dataobj)
l = np.asarray(lab.dataobj)
assert i.min() >= -1024 and i.max() <= 3071 and i.min() < -900 and i.max() > 300, (i.min(), i.max())
u = set(np.unique(l).tolist())
assert u <= set(range(14)), u
if all13:
    assert u == set(range(14)), sorted(u)
print("ok", img.shape, z)
PY
}

@test "synth: bcv layout, default serials, nothing else written" {
    run fine-synth --scale 0.05 --cases 12 --seed 1 "$T/bcv"
    echo "$output"
    [ "$status" -eq 0 ]
    [ -z "$output" ]   # no progress when stderr is not a terminal
    want=""
    for s in 0001 0002 0003 0004 0005 0006 0007 0008 0009 0010 0021 0022; do
        want="$want img$s.nii.gz"
    done
    [ "$(ls "$T/bcv/img" | tr '\n' ' ')" = "${want# } " ]
    [ "$(ls "$T/bcv/label" | tr '\n' ' ')" = "$(echo "${want# } " | sed 's/img/label/g')" ]
    [ "$(ls "$T/bcv")" = "$(printf 'img\nlabel')" ]
}

@test "synth: nnunet layout with --ids, dataset.json in nnU-Net v1 form" {
    run fine-synth --layout nnunet --ids 1,21..22 --scale 0.1 --quiet "$T/nn"
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$(ls "$T/nn/imagesTr" | tr '\n' ' ')" = "ABD_001_0000.nii.gz ABD_021_0000.nii.gz ABD_022_0000.nii.gz " ]
    [ "$(ls "$T/nn/labelsTr" | tr '\n' ' ')" = "ABD_001.nii.gz ABD_021.nii.gz ABD_022.nii.gz " ]
    "$FINE_PYTHON" - "$T/nn" <<'PY'
import json, os, sys
d = sys.argv[1]
j = json.load(open(os.path.join(d, "dataset.json")))
assert j["modality"] == {"0": "CT"}, j["modality"]
names = ["background", "spleen", "right kidney", "left kidney", "gallbladder", "esophagus",
         "liver", "stomach", "aorta", "inferior vena cava", "portal vein and splenic vein",
         "pancreas", "right adrenal gland", "left adrenal gland"]
assert {int(k): v for k, v in j["labels"].items()} == dict(enumerate(names)), j["labels"]
assert j["numTraining"] == 3 and len(j["training"]) == 3
assert [t["image"] for t in j["training"]] == ["./imagesTr/ABD_%03d.nii.gz" % s for s in (1, 21, 22)]
for t in j["training"]:
    assert os.path.exists(os.path.join(d, t["label"]))
    assert os.path.exists(os.path.join(d, t["image"].replace(".nii.gz", "_0000.nii.gz")))
assert isinstance(j["name"], str) and j["tensorImageSize"] == "3D"
PY
}

@test "synth: nibabel reads int16 images and uint8 labels with equal shapes and affines" {
    fine-synth --layout nnunet --ids 2 --scale 0.25 --seed 3 "$T/nn"
    run nib_check "$T/nn/imagesTr/ABD_002_0000.nii.gz" "$T/nn/labelsTr/ABD_002.nii.gz" all13
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "$output" == "ok (128, 128, "* ]]
    fine-synth --cases 2 --scale 0.1 --seed 3 "$T/bcv"
    for s in 0001 0002; do
        run nib_check "$T/bcv/img/img$s.nii.gz" "$T/bcv/label/label$s.nii.gz"
        echo "$output"
        [ "$status" -eq 0 ]
    done
}

@test "synth: same bytes across runs, thread counts and case selections; seeds differ" {
    fine-synth --cases 4 --scale 0.1 --seed 9 --threads 1 "$T/a"
    fine-synth --cases 4 --scale 0.1 --seed 9 --threads 2 "$T/b"
    fine-synth --cases 4 --scale 0.1 --seed 9 --threads 3 "$T/c"
    for f in img/img0001 img/img0004 label/label0002 label/label0003; do
        cmp "$T/a/$f.nii.gz" "$T/b/$f.nii.gz"
        cmp "$T/a/$f.nii.gz" "$T/c/$f.nii.gz"
    done
    diff -r "$T/a" "$T/b"
    # a case depends only on (seed, serial, scale): --ids 3 gives the third case of --cases 4
    fine-synth --ids 3 --scale 0.1 --seed 9 --layout nnunet "$T/n"
    cmp "$T/a/img/img0003.nii.gz" "$T/n/imagesTr/ABD_003_0000.nii.gz"
    cmp "$T/a/label/label0003.nii.gz" "$T/n/labelsTr/ABD_003.nii.gz"
    fine-synth --cases 1 --scale 0.1 --seed 10 "$T/d"
    ! cmp -s "$T/a/img/img0001.nii.gz" "$T/d/img/img0001.nii.gz" || false
}

@test "synth: an existing output is kept without --force, replaced with it" {
    fine-synth --cases 1 --scale 0.05 --seed 1 "$T/o"
    cp "$T/o/img/img0001.nii.gz" "$T/keep.nii.gz"
    run fine-synth --cases 1 --scale 0.05 --seed 2 "$T/o"
    echo "$output"
    [ "$status" -eq 1 ]
    [[ "$output" == *"img0001.nii.gz: exists (use --force to overwrite)"* ]]
    cmp "$T/o/img/img0001.nii.gz" "$T/keep.nii.gz"
    # a label alone in the way also stops it before anything is written
    rm "$T/o/img/img0001.nii.gz"
    run fine-synth --cases 1 --scale 0.05 --seed 2 "$T/o"
    [ "$status" -eq 1 ]
    [[ "$output" == *"label0001.nii.gz: exists"* ]]
    [ ! -e "$T/o/img/img0001.nii.gz" ]
    run fine-synth --cases 1 --scale 0.05 --seed 2 --force "$T/o"
    [ "$status" -eq 0 ]
    ! cmp -s "$T/o/label/label0001.nii.gz" "$T/keep.nii.gz" || false
    # dataset.json too
    fine-synth --layout nnunet --cases 1 --scale 0.05 "$T/n"
    rm "$T/n/imagesTr/"* "$T/n/labelsTr/"*
    run fine-synth --layout nnunet --cases 1 --scale 0.05 "$T/n"
    [ "$status" -eq 1 ]
    [[ "$output" == *"dataset.json: exists"* ]]
    run fine-synth --layout nnunet --cases 1 --scale 0.05 --force "$T/n"
    [ "$status" -eq 0 ]
    [ -z "$(find "$T" -name '*.tmp*')" ]   # no temporary files left behind
}

@test "synth: usage errors exit 2 with a hint; failures exit 1" {
    for args in "" "a b" "--layout foo x" "--cases 0 x" "--cases two x" "--ids 3,3 x" \
        "--ids 5..2 x" "--ids 0 x" "--ids 1000 x" "--ids 1,,2 x" "--ids 21.. x" "--scale 0 x" \
        "--scale 3 x" "--scale abc x" "--threads 0 x" "--seed -1 x" "--cases 2 --ids 1 x" \
        "--bogus x"; do
        run fine-synth $args
        echo "args: $args -> $status: $output"
        [ "$status" -eq 2 ]
        [[ "$output" == *"Try 'fine-synth --help'."* ]]
    done
    touch "$T/file"
    run fine-synth --cases 1 --scale 0.05 "$T/file"
    echo "$output"
    [ "$status" -eq 1 ]
    [[ "$output" == "fine-synth: "* ]]
}

@test "synth: --help, --version, --progress" {
    run fine-synth --help
    [ "$status" -eq 0 ]
    [[ "$output" == "Usage: fine-synth"* ]]
    run fine-synth --version
    [ "$status" -eq 0 ]
    [[ "$output" == "fine-synth "[0-9]* ]]
    run fine-synth --cases 2 --scale 0.05 --progress "$T/p"
    [ "$status" -eq 0 ]
    [[ "$output" == *"fine-synth: [100%] 2/2"* ]]
    run fine-synth --cases 2 --scale 0.05 --progress --quiet --force "$T/p"
    [ "$status" -eq 0 ]
    [ -z "$output" ]
}
