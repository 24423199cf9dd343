#!/usr/bin/env bash
# Builds the ASan+UBSan variant of the native addon into build-asan/Release/capybara.node, next to (never
# in place of) the node-gyp build in build/. Incremental: only what changed is recompiled, so running it
# before every sanitizer test run is cheap. Load it with scripts/test-asan.sh (it sets LD_PRELOAD and
# CAPYBARA_ADDON; see there why both are needed).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=build-asan
mkdir -p "$OUT"

# binding.gyp's lists are partly shell commands (ls native/..., pkg-config), so a new engine file changes
# them without binding.gyp changing: re-evaluate every time, rewrite only when different so make does not
# rebuild for nothing. flags (everything but the source list) is what the objects depend on.
python3 test/asan/gyp_vars.py binding.gyp >"$OUT/gyp.mk.new"
grep -v '^GYP_SOURCES' "$OUT/gyp.mk.new" >"$OUT/flags.new"
for f in gyp.mk flags; do
  if cmp -s "$OUT/$f.new" "$OUT/$f"; then rm "$OUT/$f.new"; else mv "$OUT/$f.new" "$OUT/$f"; fi
done

# node's headers (node_api.h, and openssl/ for native/tls, whose symbols node exports): where node-gyp
# finds them too, i.e. next to this node (a distribution install), else node-gyp's download cache.
node_inc=$(node -p "require('node:path').resolve(process.execPath, '..', '..', 'include', 'node')")
if [ ! -f "$node_inc/node_api.h" ]; then
  node_inc="${npm_config_devdir:-$HOME/.cache/node-gyp}/$(node -p 'process.versions.node')/include/node"
fi
[ -f "$node_inc/node_api.h" ] || { echo "build-asan: node headers not found (run bootstrap / node-gyp install)" >&2; exit 1; }

make -s -j"$(nproc)" -f test/asan/addon.mk OUT="$OUT" NODE_INC="$node_inc"
