#!/usr/bin/env bash
# `make test`'s two pytest runs, side by side: the engines' tests (tests/libchat and
# tests/protocol: fuzzers under branch coverage, one core busy) in the background, and
# everything else (mostly waiting on real processes) in the foreground. The engines'
# report is printed once both are done; the status fails if either run failed.
#
#   tests/suites.sh PYTHON [PYTEST_ARGS...]
set -uo pipefail
python=$1
shift

report=$(mktemp)
engines=
# shellcheck disable=SC2317  # run by the trap
finish() {
    [ -n "$engines" ] && kill "$engines" 2>/dev/null
    rm -f "$report"
}
trap finish EXIT
trap 'exit 130' INT TERM

LIBCHAT_FUZZ_SCALE=0.33 "$python" -m pytest tests/libchat tests/protocol \
    --cov=libchat --cov-branch --cov-report=term --cov-fail-under=95 "$@" \
    >"$report" 2>&1 </dev/null &
engines=$!

"$python" -m pytest tests --ignore=tests/libchat --ignore=tests/protocol \
    -m "not long_fault and not exe" "$@"
rest=$?

wait "$engines"
engines_status=$?
engines=
echo
echo "=== tests/libchat and tests/protocol (run beside the rest) ==="
cat "$report"

if [ "$engines_status" -ne 0 ] || [ "$rest" -ne 0 ]; then
    echo "make test: tests/libchat and tests/protocol exited $engines_status," \
        "the rest $rest" >&2
    exit 1
fi
