#!/usr/bin/env bats
# Streams between tools: fine-info on streams and NIfTI, concatenation, truncation and
# corruption reported by a tool, closed pipes, terminals.

load common

make_nifti() { # make_nifti FILE Z Y X dtype
    "$FINE_PYTHON" - "$@" <<'PY'
import sys, numpy as np, nibabel as nib
path, z, y, x, dt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rng = np.random.default_rng(0)
a = (rng.standard_normal((x, y, z)) * 300).astype(dt)  # nibabel is (i, j, k)
aff = np.diag([0.8, 0.7, 3.0, 1.0]); aff[:3, 3] = [-200, -150, 40]
nib.save(nib.Nifti1Image(a, aff), path)
PY
}

@test "fine-info shows a stream's records, provenance and value range" {
    make_nifti "$T/a.nii.gz" 5 6 7 int16
    fine-convert "$T/a.nii.gz" "$T/a.fst"
    run fine-info "$T/a.fst"
    [ "$status" -eq 0 ]
    [[ "$output" == *"fine stream 1.0"* ]]
    [[ "$output" == *"fine-convert"* ]]
    [[ "$output" == *"record 1: volume"* ]]
    [[ "$output" == *'"i16"'* ]]
    [[ "$output" == *"[5, 6, 7]"* ]]
    [[ "$output" == *"range"* ]]
    [[ "$output" == *"1 record, stream complete"* ]]
}

@test "fine-info --json is valid JSON with the true shape, dtype and range" {
    make_nifti "$T/a.nii.gz" 5 6 7 int16
    fine-convert "$T/a.nii.gz" - | fine-info --json - >"$T/info.json"
    "$FINE_PYTHON" - "$T/info.json" "$T/a.nii.gz" <<'PY'
import sys, json, numpy as np, nibabel as nib
info = json.load(open(sys.argv[1]))
a = np.asarray(nib.load(sys.argv[2]).dataobj)
rec = info["records"][0]
assert info["kind"] == "stream" and info["version"] == [1, 0], info
assert rec["record"]["type"] == "volume"
assert rec["record"]["shape"] == list(a.shape[::-1]) == [5, 6, 7], rec["record"]["shape"]
assert rec["record"]["dtype"] == "i16"
assert rec["range"] == [float(a.min()), float(a.max())], (rec["range"], a.min(), a.max())
assert np.allclose(rec["record"]["geometry"]["spacing"], [3.0, 0.7, 0.8], atol=1e-6)
PY
}

@test "fine-info reads a NIfTI header and range (text and JSON)" {
    make_nifti "$T/a.nii.gz" 5 6 7 float32
    run fine-info "$T/a.nii.gz"
    [ "$status" -eq 0 ]
    [[ "$output" == *"NIfTI-1"* ]]
    [[ "$output" == *"[5, 6, 7] (z, y, x)"* ]]
    run fine-info --json "$T/a.nii.gz"
    [ "$status" -eq 0 ]
    echo "$output" | "$FINE_PYTHON" -c 'import json,sys; d=json.load(sys.stdin); assert d["shape"]==[5,6,7] and d["dtype"]=="f32", d'
}

@test "concatenated streams are one valid input" {
    make_nifti "$T/a.nii.gz" 5 6 7 int16
    make_nifti "$T/b.nii.gz" 3 4 5 float32
    fine-convert "$T/a.nii.gz" "$T/a.fst"
    fine-convert "$T/b.nii.gz" "$T/b.fst"
    run bash -c "cat '$T/a.fst' '$T/b.fst' | fine-info -"
    [ "$status" -eq 0 ]
    [[ "$output" == *"record 2: volume"* ]]
    [[ "$output" == *"2 records, stream complete"* ]]
}

@test "a tool reports a truncated stream at every cut point, naming the input" {
    make_nifti "$T/a.nii.gz" 4 5 6 int16
    fine-convert "$T/a.nii.gz" "$T/a.fst"
    # one Python process drives the cuts (a shell loop of `run` spends most of its time forking)
    "$FINE_PYTHON" - "$T/a.fst" "$T/cut.fst" <<'PY'
import subprocess, sys
data, cut = open(sys.argv[1], "rb").read(), sys.argv[2]
for k in range(len(data)):
    open(cut, "wb").write(data[:k])
    p = subprocess.run(["fine-info", cut], capture_output=True, text=True)
    lines = (p.stdout + p.stderr).splitlines()
    assert p.returncode == 1, f"cut at {k} not detected (exit {p.returncode})"
    assert lines and lines[-1].startswith(f"fine-info: {cut}: "), f"bad message at {k}: {lines[-1:]}"
print(f"{len(data)} cut points")
PY
}

@test "a corrupted byte is reported by the tool" {
    make_nifti "$T/a.nii.gz" 4 5 6 int16
    fine-convert "$T/a.nii.gz" "$T/a.fst"
    "$FINE_PYTHON" -c "
import sys
b = bytearray(open('$T/a.fst','rb').read()); b[len(b)//2] ^= 0x5a
open('$T/bad.fst','wb').write(b)"
    run fine-info "$T/bad.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"fine-info: $T/bad.fst: corrupt stream"* ]]
}

@test "wrong input kinds give one clear line and exit 1" {
    echo "hello" >"$T/text.fst"
    run fine-info "$T/text.fst"
    [ "$status" -eq 1 ]
    [ "$output" = "fine-info: $T/text.fst: not a fine stream (no zstd frame at the start)" ]
    : >"$T/empty.fst"
    run fine-info "$T/empty.fst"
    [ "$status" -eq 1 ]
    [ "$output" = "fine-info: $T/empty.fst: empty input (not a fine stream)" ]
    run fine-info "$T/missing.fst"
    [ "$status" -eq 1 ]
    [ "$output" = "fine-info: $T/missing.fst: No such file or directory" ]
    run bash -c "fine-info - </dev/null"
    [ "$status" -eq 1 ]
    [[ "$output" == *"empty input"* ]]
    # a plain zstd file that is not a fine stream
    printf 'not msgpack at all' | zstd -q -c >"$T/plain.zst"
    run fine-info "$T/plain.zst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"$T/plain.zst"* ]]
}

@test "a stream of a newer major version is refused with a clear message" {
    "$FINE_PYTHON" - "$T/v2.fst" <<'PY'
import sys, msgpack, zstandard
c = zstandard.ZstdCompressor(write_checksum=True)
with open(sys.argv[1], "wb") as f:
    f.write(c.compress(msgpack.packb({"type": "header", "format": "fine-stream", "version": [2, 0], "provenance": []})))
    f.write(c.compress(msgpack.packb({"type": "end", "records": 0})))
PY
    run fine-info "$T/v2.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"newer fine (stream version 2.0)"* ]]
}

@test "usage errors exit 2, --help and --version exit 0" {
    run fine-info
    [ "$status" -eq 2 ]
    run fine-info --bogus x
    [ "$status" -eq 2 ]
    run fine-info --help
    [ "$status" -eq 0 ]
    [[ "$output" == *"Usage: fine-info"* ]]
    run fine-info --version
    [ "$status" -eq 0 ]
    [[ "$output" == "fine-info "* ]]
}

@test "a closed downstream pipe stops the writer quietly with a non-zero status" {
    make_nifti "$T/big.nii" 64 256 256 float32
    run bash -c "set -o pipefail; fine-convert '$T/big.nii' - 2>'$T/err' | head -c 100 >/dev/null; echo \"\${PIPESTATUS[0]}\""
    [ "$output" -ne 0 ]
    [ ! -s "$T/err" ] || { cat "$T/err"; false; }
}

@test "a stream is never written to a terminal" {
    make_nifti "$T/a.nii.gz" 4 5 6 int16
    run script -qec "fine-convert '$T/a.nii.gz' -" /dev/null
    [ "$status" -eq 1 ]
    [[ "$output" == *"refusing to write a binary stream to a terminal"* ]]
}

@test "a failed write leaves no output file behind" {
    make_nifti "$T/a.nii.gz" 4 5 6 int16
    fine-convert "$T/a.nii.gz" "$T/a.fst"
    head -c 40 "$T/a.fst" >"$T/cut.fst"
    run fine-convert "$T/cut.fst" "$T/out.nii.gz"
    [ "$status" -eq 1 ]
    [ ! -e "$T/out.nii.gz" ]
    [ -z "$(ls -A "$T" | grep -v -e '^a\.' -e '^cut\.fst$')" ]
}
