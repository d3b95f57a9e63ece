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
