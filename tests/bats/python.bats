#!/usr/bin/env bats
# The C stream library and the independent Python one (formats/python/fine_stream.py) read
# each other's streams bit-exactly, every dtype included. The test stream and its data pattern
# are defined in tests/helpers/stream_rt.c; tests/helpers/stream_rt.py builds the same.

load common

rt() { "$FINE_HELPERS/stream_rt" "$@"; }
rtpy() { "$FINE_PYTHON" "$REPO/tests/helpers/stream_rt.py" "$@"; }

@test "python: C writes every dtype, Python reads it bit-exactly" {
    rt write "$T/c.fst"
    run rtpy check "$T/c.fst" stream_rt
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "$output" == *"14 records verified"* ]]
}

@test "python: Python writes every dtype, C reads it bit-exactly" {
    rtpy write "$T/p.fst"
    run rt check "$T/p.fst" stream_rt.py
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "$output" == *"14 records verified"* ]]
    # and Python reads its own stream back
    rtpy check "$T/p.fst" stream_rt.py
}

@test "python: both ways through pipes (- is stdin and stdout)" {
    run bash -o pipefail -c '"$1/stream_rt" write - | "$2" "$3" check - stream_rt' _ \
        "$FINE_HELPERS" "$FINE_PYTHON" "$REPO/tests/helpers/stream_rt.py"
    echo "$output"
    [ "$status" -eq 0 ]
    run bash -o pipefail -c '"$2" "$3" write - | "$1/stream_rt" check - stream_rt.py' _ \
        "$FINE_HELPERS" "$FINE_PYTHON" "$REPO/tests/helpers/stream_rt.py"
    echo "$output"
    [ "$status" -eq 0 ]
}

@test "python: a Python filter passes every record of a C stream through and extends the provenance" {
    rt write "$T/c.fst"
    rtpy filter "$T/c.fst" "$T/f.fst"
    run rt check "$T/f.fst" stream_rt rt-filter
    echo "$output"
    [ "$status" -eq 0 ]
}

@test "python: both writers put each record in a frame of its own, with content size and checksum" {
    rt write "$T/c.fst"
    rtpy write "$T/p.fst"
    rtpy frames "$T/c.fst"
    rtpy frames "$T/p.fst"
}

@test "python: Python reads a concatenation of two streams (cat c.fst p.fst)" {
    rt write "$T/c.fst"
    rtpy write "$T/p.fst"
    cat "$T/c.fst" "$T/p.fst" >"$T/cp.fst"
    # the provenance is that of the first header
    run rtpy check -n 2 "$T/cp.fst" stream_rt
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "$output" == *"28 records verified"* ]]
    run rt check -n 2 "$T/cp.fst" stream_rt
    echo "$output"
    [ "$status" -eq 0 ]
}

@test "python: Python detects a truncation at every byte of a C-written stream" {
    rt write "$T/c.fst"
    run rtpy truncations "$T/c.fst"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "$output" == *"truncations detected"* ]]
}

@test "python: Python detects every byte of a C-written stream corrupted, never returns a wrong record" {
    rt write "$T/c.fst"
    run rtpy corruptions "$T/c.fst"
    echo "$output"
    [ "$status" -eq 0 ]
}

@test "python: a truncated stream's error names the file" {
    rt write "$T/c.fst"
    head -c 1000 "$T/c.fst" >"$T/cut.fst"
    run "$FINE_PYTHON" -c 'import sys, fine_stream; list(fine_stream.read(sys.argv[1]))' "$T/cut.fst"
    echo "$output"
    [ "$status" -ne 0 ]
    [[ "$output" == *"StreamError: $T/cut.fst: truncated"* ]]
    run rtpy check "$T/cut.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"$T/cut.fst: truncated"* ]]
}

@test "python: C refuses a stream of version 2.0, naming the version" {
    rtpy write-raw "$T/v2.fst" 2.0 1
    run rt check "$T/v2.fst"
    echo "$output"
    [ "$status" -eq 1 ]
    [[ "$output" == *"$T/v2.fst"* ]]
    [[ "$output" == *"2.0"* ]]
    [[ "$output" == *newer* ]]
    # and so does Python
    run rtpy check "$T/v2.fst"
    echo "$output"
    [ "$status" -eq 1 ]
    [[ "$output" == *"$T/v2.fst: written by a newer fine, version 2.0"* ]]
}

@test "python: a newer minor version (1.7) is read by both" {
    rtpy write-raw "$T/v17.fst" 1.7 1
    run "$FINE_PYTHON" "$REPO/formats/python/fine_stream.py" "$T/v17.fst"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "$output" == *"fine-stream 1.7"* ]]
    # C reads it too: the check fails on the record itself, not on the header
    run rt check "$T/v17.fst"
    echo "$output"
    [[ "$output" == *"mismatch in record 1 (x-unknown)"* ]]
}

@test "python: a stream written without zstd frame checksums is refused by C and by Python" {
    rtpy write-raw "$T/nock.fst" 1.0 0
    run rt check "$T/nock.fst"
    echo "$output"
    [ "$status" -eq 1 ]
    [[ "$output" == *"$T/nock.fst"* ]]
    [[ "$output" == *checksum* ]]
    run rtpy check "$T/nock.fst"
    echo "$output"
    [ "$status" -eq 1 ]
    [[ "$output" == *"$T/nock.fst: the zstd frame at byte 0 has no content checksum"* ]]
}

@test "python: fine_stream.py lists the records of a stream" {
    rt write "$T/c.fst"
    run "$FINE_PYTHON" "$REPO/formats/python/fine_stream.py" "$T/c.fst"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "$output" == *"fine-stream 1.0"* ]]
    [[ "$output" == *"stream_rt 0.1.0"* ]]
    [[ "$output" == *$'volume\tf16\tf16 [3, 4, 5]'* ]]
    [[ "$output" == *$'param\tscalar\tf64 []'* ]]
    [[ "$output" == *$'patch\timage\tf32 [1, 2, 3, 4]\tlabel: i16 [2, 3, 4]'* ]]
    [[ "$output" == *$'x-unknown\t-\t-'* ]]
    run "$FINE_PYTHON" "$REPO/formats/python/fine_stream.py" "$T/missing.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"$T/missing.fst"* ]]
}

@test "python: the Python writer leaves no output and no temporary file when it fails" {
    run "$FINE_PYTHON" - "$T/out.fst" <<'EOF'
import sys, numpy as np, fine_stream
with fine_stream.Writer(sys.argv[1], tool="t") as w:
    w.put({"type": "volume", "name": "image", "array": np.zeros((2, 2), np.float32)})
    w.put({"type": "volume", "name": "bad", "array": np.zeros(2, np.uint32)})  # no u32 dtype
EOF
    echo "$output"
    [ "$status" -ne 0 ]
    [[ "$output" == *"uint32"* ]]
    [ -z "$(ls -A "$T")" ]
}

@test "python: C and Python read records that span frames and frames that hold several records" {
    rt write "$T/c.fst"
    for size in 1 100 100000; do
        rtpy reframe "$T/c.fst" "$T/r.fst" "$size"
        run rt check "$T/r.fst" stream_rt
        echo "frames of $size bytes: $output"
        [ "$status" -eq 0 ]
        run rtpy check "$T/r.fst" stream_rt
        echo "frames of $size bytes: $output"
        [ "$status" -eq 0 ]
    done
}

@test "python: C reports a stream cut at or just after any frame boundary as truncated" {
    rt write "$T/c.fst"
    rtpy reframe "$T/c.fst" "$T/r.fst" 100
    # one Python process drives the cuts (a shell loop of `run` spends most of its time forking)
    "$FINE_PYTHON" - "$FINE_HELPERS/stream_rt" "$T" "$(rtpy boundaries "$T/c.fst")" "$(rtpy boundaries "$T/r.fst")" <<'PY'
import subprocess, sys
rt, T = sys.argv[1], sys.argv[2]
cuts = 0
for f, bounds in (("c", sys.argv[3]), ("r", sys.argv[4])):
    data = open(f"{T}/{f}.fst", "rb").read()
    for at in map(int, bounds.split()):
        # at the boundary, and 1 to 5 bytes into the next frame's magic and header
        for n in range(6):
            cut = f"{T}/cut.fst"
            open(cut, "wb").write(data[:at + n])
            p = subprocess.run([rt, "check", cut, "stream_rt"], capture_output=True, text=True)
            out = p.stdout + p.stderr
            assert p.returncode == 1 and f"{cut}: truncated" in out, f"{f}.fst cut at byte {at + n}: {out}"
            cuts += 1
print(cuts, "cuts")
assert cuts > 200, cuts
PY
}

@test "python: C and Python both refuse malformed streams, naming the file" {
    mkdir "$T/bad"
    run rtpy write-bad "$T/bad"
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    n=0 bad=0
    for f in "$T"/bad/*.fst; do
        run rt read "$f"
        # only the failures are printed, so a short CI log still shows them whole
        if [ "$status" -ne 1 ] || [[ "$output" != *"$f"* ]]; then
            echo "C on $(basename "$f") (exit $status): $output"
            bad=$((bad + 1))
        fi
        n=$((n + 1))
    done
    [ "$bad" -eq 0 ]
    [ "$n" -ge 10 ]
}
