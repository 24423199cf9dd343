#!/usr/bin/env bash
# The mem:-wire node tests on the ASan+UBSan build of the addon (issue 8: the sanitizer build). The C
# suites already run sanitized (test/c); this covers the engine as node drives it: the N-API layer, the
# engine thread, the mem switch, faults, migration. Run by scripts/test.sh after the normal suites; it
# expects dist/ to be compiled (scripts/bootstrap.sh) and builds build-asan/ itself (incrementally).
#
# Which tests: the ones that open Stacks on the mem: wire only (no namespaces, no root, no external
# peers), listed in TESTS below; a new mem:-only test belongs there. Their long runs are shortened with
# CAPYBARA_TEST_SCALE (test/helpers/env.ts scaled()) and CAPYBARA_SOAK_SECONDS so this stays a few
# minutes; the code paths are the same, only less data moves.
#
# How an ASan'd addon runs inside an uninstrumented node: the ASan runtime has to own malloc/free from
# the very first allocation of the process, so it cannot arrive later with dlopen(capybara.node); it is
# preloaded (LD_PRELOAD) into every node process here (test runner, each test file's child, CLIs they
# spawn), and CAPYBARA_ADDON points runtime/native.ts at the sanitized addon instead of build/. clang's
# shared ASan runtime also contains the UBSan handlers, so the one preload serves -fsanitize=undefined.
# Leak checking stays on: node's own allocations at exit are suppressed by test/asan/lsan.supp.
set -uo pipefail
cd "$(dirname "$0")/.."

TESTS=(
  dist/test/unit/stack.test.js
  dist/test/interop/mem-faults.test.js
  dist/test/interop/migration-mem.test.js
  dist/test/interop/migration-lane.test.js
  dist/test/interop/migration-lane-js.test.js
  dist/test/interop/tls-mem.test.js
  dist/test/interop/soak.test.js
)

for t in "${TESTS[@]}"; do
  [ -f "$t" ] || { echo "test-asan: $t missing: compile the TypeScript first (scripts/bootstrap.sh)" >&2; exit 1; }
done
bash scripts/build-asan.sh || exit 1

asan_rt=$(clang -print-file-name=libclang_rt.asan-x86_64.so)
[ -f "$asan_rt" ] || { echo "test-asan: $asan_rt missing (package libclang-rt-14-dev)" >&2; exit 1; }

export CAPYBARA_ADDON="$PWD/build-asan/Release/capybara.node"
export CAPYBARA_TEST_SCALE="${CAPYBARA_TEST_SCALE:-0.2}"
export CAPYBARA_SOAK_SECONDS="${CAPYBARA_SOAK_SECONDS:-10}"
# halt on the first report: exit code 1 (not an abort's core dump) fails the test file, and the runner.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:abort_on_error=0:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$PWD/test/asan/lsan.supp:print_suppressions=0}"

start=$(date +%s)
LD_PRELOAD="$asan_rt" node --test --test-concurrency=1 --test-reporter=spec "${TESTS[@]}"
status=$?
echo "asan: ${#TESTS[@]} test files, scale $CAPYBARA_TEST_SCALE, soak ${CAPYBARA_SOAK_SECONDS} s, $(($(date +%s) - start)) s, exit $status"
exit $status
