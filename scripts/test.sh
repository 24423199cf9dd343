#!/usr/bin/env bash
# The README's test command (npm test): bootstrap, then the C suites under ASan+UBSan, then the node:test
# suites (unit, interop against real kernel clients in network namespaces, mem: wire), then the mem:-wire
# suites again on the ASan+UBSan addon (scripts/test-asan.sh). Prints each runner's totals; exits
# non-zero when anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh || exit 1

if [ "$(id -u)" -eq 0 ] && ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
fi

status=0
echo "== C tests (ASan+UBSan)"
make -s -C test/c check || status=1

echo "== fuzz (seeds and past findings replayed, then each target fuzzed for a bounded time)"
make -s -C test/fuzz replay || status=1
bash scripts/fuzz.sh all --seconds "${FUZZ_SECONDS:-20}" || status=1

echo "== node tests"
files=$(find dist/test -name '*.test.js' | sort)
# shellcheck disable=SC2086
node --test --test-concurrency=1 --test-reporter=spec $files || status=1

echo "== mem:-wire node tests on the ASan+UBSan addon (build-asan/)"
bash scripts/test-asan.sh || status=1
exit $status
