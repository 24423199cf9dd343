#!/usr/bin/env bash
# Fuzzing entry point (npm run fuzz -- ...).
#   scripts/fuzz.sh <target|all> [--seconds N]   fuzz for N seconds each (default 60); fails on any finding
#   scripts/fuzz.sh --replay                     run every seed and past finding once (no fuzzing)
#   scripts/fuzz.sh --make-corpus                capture frames on the testbed and regenerate the seeds
# Targets: frame, tcp_input, tcp_adopt, tls_record, lane (libFuzzer, clang -fsanitize=fuzzer,address,undefined;
# seeds in test/fuzz/corpus/<t>, findings to replay forever in test/fuzz/regressions/<t>) and channel
# (the migration channel's parser, a bounded mutation fuzzer in TypeScript: test/fuzz/channel-fuzz.ts).
# New corpus entries go to test/fuzz/bin/corpus/<t> (not checked in); a finding is written to
# test/fuzz/bin/artifacts/ and the run fails: copy it to test/fuzz/regressions/<t>/ when fixing it.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ=test/fuzz
C_TARGETS=(frame tcp_input tcp_adopt tls_record lane)
ALL=("${C_TARGETS[@]}" channel)

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }

declare -A MAXLEN=([frame]=8192 [tcp_input]=4096 [tcp_adopt]=16384 [tls_record]=20000 [lane]=4096)

fuzz_c() { # target seconds
  local t=$1 s=$2
  make -s -C "$FUZZ" "bin/fuzz_$t" >&2
  mkdir -p "$FUZZ/bin/corpus/$t" "$FUZZ/bin/artifacts"
  local log rc=0 dirs=("bin/corpus/$t")
  [ -d "$FUZZ/corpus/$t" ] && dirs+=("corpus/$t")
  [ -d "$FUZZ/regressions/$t" ] && dirs+=("regressions/$t")
  log=$(cd "$FUZZ" && "./bin/fuzz_$t" -max_total_time="$s" -max_len="${MAXLEN[$t]}" -print_final_stats=1 \
    -artifact_prefix="bin/artifacts/$t-" -close_fd_mask=1 "${dirs[@]}" 2>&1) || rc=$?
  local execs
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' <<<"$log" | tail -n1)
  if [ "$rc" -ne 0 ]; then
    grep -E 'ERROR|SUMMARY|Test unit written|==[0-9]+==' <<<"$log" | head -n 20 >&2
    echo "fuzz $t: FINDING after ${execs:-?} executions (exit $rc); reproduce: $FUZZ/bin/fuzz_$t $FUZZ/bin/artifacts/$t-*" >&2
    return 1
  fi
  echo "fuzz $t: ${execs:-0} executions in ${s} s, 0 findings"
}

fuzz_channel() { # seconds
  [ -f dist/test/fuzz/channel-fuzz.js ] || npx tsc -p . >/dev/null || true
  node dist/test/fuzz/channel-fuzz.js --seconds "$1"
}

make_corpus() {
  command -v tcpdump >/dev/null || { echo "tcpdump is needed" >&2; exit 1; }
  [ -f dist/test/fuzz/corpus-tool.js ] || npx tsc -p . >/dev/null || true
  local tmp pcap
  tmp=$(mktemp -d)
  pcap="$tmp/frames.pcap"
  flock /tmp/capybara-testbed.lock bash -c '
    set -u
    up=0; node bin/capybara.js testbed status --json | grep -q "\"up\":true" && up=1
    node bin/capybara.js testbed up >/dev/null
    node bin/capybara.js serve http --on hostA --port 80 --name fuzz-corpus --json >"$1/serve.log" 2>&1 & sp=$!
    for _ in $(seq 100); do grep -q listening "$1/serve.log" && break; sleep 0.2; done
    ip netns exec lb tcpdump -i lb-a -U -s 2048 -w "$2" "host 10.77.1.10 or arp" 2>/dev/null & tp=$!
    sleep 1
    ip -n lb neigh flush dev lb-a
    ip netns exec client ping -c 2 -s 100 10.77.1.10 >/dev/null || true
    ip netns exec client curl -s -o /dev/null http://10.77.1.10/health || true
    ip netns exec client curl -s -o /dev/null http://10.77.1.10/bytes/20000 || true
    ip netns exec client curl -s -o /dev/null http://10.77.1.10/bytes/3000 http://10.77.1.10/bytes/5 || true
    ip netns exec client curl -s -o /dev/null --max-time 2 http://10.77.1.10:81/ || true
    ip netns exec client hping3 -c 2 -S -p 80 10.77.1.10 >/dev/null 2>&1 || true
    ip netns exec client hping3 -c 2 -F -P -U -p 80 10.77.1.10 >/dev/null 2>&1 || true
    sleep 1
    kill $tp; wait $tp 2>/dev/null
    kill $sp; wait $sp 2>/dev/null
    [ $up = 1 ] || node bin/capybara.js testbed down >/dev/null
  ' _ "$tmp" "$pcap"
  rm -rf "$FUZZ/corpus/frame" "$FUZZ/corpus/tcp_input"
  node dist/test/fuzz/corpus-tool.js frame "$pcap" "$FUZZ/corpus/frame"
  node dist/test/fuzz/corpus-tool.js tcp-input "$FUZZ/corpus/tcp_input"
  rm -rf "$tmp"
}

target="" seconds=60
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
    --replay) make -s -C "$FUZZ" replay; exit ;;
    --make-corpus) make_corpus; exit ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "unknown option $1" >&2; usage >&2; exit 64 ;;
    *) target=$1; shift ;;
  esac
done
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "--seconds must be a whole number" >&2; exit 64; }
[ -n "$target" ] || { usage >&2; exit 64; }
if [ "$target" = all ]; then targets=("${ALL[@]}"); else targets=("$target"); fi
fail=0
for t in "${targets[@]}"; do
  case "$t" in
    channel) fuzz_channel "$seconds" || fail=1 ;;
    frame|tcp_input|tcp_adopt|tls_record|lane) fuzz_c "$t" "$seconds" || fail=1 ;;
    *) echo "unknown target $t (one of ${ALL[*]} or all)" >&2; exit 64 ;;
  esac
done
exit $fail
