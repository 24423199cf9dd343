#!/usr/bin/env bash
# Brings a fresh machine to the point where the demo and the tests run: Debian packages (when root and
# missing), npm dependencies, the native addon, the XDP program and the TypeScript build. Each step is
# skipped when its output is already up to date, so running it before every command is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(clang llvm libbpf-dev libxdp-dev xdp-tools iproute2 ethtool iputils-ping tcpdump tshark sockperf curl
      netcat-openbsd openssl libssl-dev make g++ pkg-config python3 libclang-rt-14-dev
      wrk hping3 iperf3 redis-server redis-tools dpdk dpdk-dev libdpdk-dev)

log() { printf '[bootstrap] %s\n' "$*" >&2; }

install_packages() {
  local missing=()
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    log "missing packages (${missing[*]}); run as root to install them, continuing without"
    return 0
  fi
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

newer_than() { # newer_than TARGET PATH... : true when any file under PATHs is newer than TARGET
  local target=$1; shift
  [ -e "$target" ] || return 0
  [ -n "$(find "$@" -newer "$target" -type f -print -quit 2>/dev/null)" ]
}

install_packages

if [ ! -d node_modules ] || newer_than node_modules/.package-lock.json package-lock.json; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

if newer_than build/Release/capybara.node native binding.gyp; then
  log "building the native engine (node-gyp)"
  npx --no-install node-gyp rebuild --loglevel=error >/dev/null
fi

if newer_than build/steer.bpf.o native/bpf; then
  log "building the XDP program"
  make -s -C native/bpf
fi

if newer_than build/tcp_repair perf/tcp_repair.c perf/Makefile native/dev/lbsteer.c native/bpf/lb_maps.h; then
  log "building the TCP_REPAIR baseline helper (bench migration)"
  make -s -C perf
fi

if newer_than dist/.built runtime dataplane stack perf test bin tsconfig.json package.json; then
  log "compiling TypeScript"
  npx --no-install tsc -p .
  touch dist/.built
fi
