#!/usr/bin/env bash
# Builds hubmoe's N-API addon (runtime/native/addon) and copies it to runtime/native/build/hubmoe_native.node.
#
#   bash runtime/native/scripts/build-addon.sh      (or: npm run build:native)
#
# Needs g++, make, python3 and Node's headers (Debian's nodejs ships them in /usr/include/node; npm's
# `nodedir` config points node-gyp there, so nothing is downloaded). The ONNX Runtime headers come from
# fetch-ort-headers.sh (Debian's libonnxruntime-dev, fetched once into runtime/native/build/ort). ONNX
# Runtime itself is not linked: the addon loads onnxruntime-node's libonnxruntime.so.1 at run time.
# Env: HUBMOE_ORT_INCLUDE=<dir> to use other ORT headers (see fetch-ort-headers.sh).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
native="$(cd "$here/.." && pwd)"
root="$(cd "$native/../.." && pwd)"
addon="$native/addon"
out="$native/build/hubmoe_native.node"
start=$SECONDS

fail() {
  echo "build-addon: $*" >&2
  exit 1
}

for tool in node make g++ python3; do
  command -v "$tool" >/dev/null 2>&1 || fail "'$tool' not found; building the native addon needs node, make, g++ and python3"
done
[[ -f "$root/node_modules/node-addon-api/napi.h" ]] || fail "node-addon-api is not installed; run npm install first"

HUBMOE_ORT_INCLUDE_DIR="$(bash "$here/fetch-ort-headers.sh")" || fail "could not get ONNX Runtime's headers (see above)"
export HUBMOE_ORT_INCLUDE_DIR
[[ -f "$HUBMOE_ORT_INCLUDE_DIR/onnxruntime_cxx_api.h" ]] || fail "$HUBMOE_ORT_INCLUDE_DIR has no onnxruntime_cxx_api.h"

# node-gyp: npm's bundled copy. npm scripts put it on PATH; otherwise find it next to npm itself.
# (`npx node-gyp` would try to download another copy.)
gyp=()
if command -v node-gyp >/dev/null 2>&1; then
  gyp=(node-gyp)
else
  for cli in "${npm_execpath:-}" "$(readlink -f "$(command -v npm 2>/dev/null || echo /nonexistent)" 2>/dev/null || true)"; do
    [[ -n "$cli" ]] || continue
    js="$(dirname "$cli")/../node_modules/node-gyp/bin/node-gyp.js"
    if [[ -f "$js" ]]; then
      gyp=(node "$js")
      break
    fi
  done
fi
[[ ${#gyp[@]} -gt 0 ]] || fail "node-gyp not found (it comes with npm); run this through 'npm run build:native'"

# Node's own headers, so that node-gyp downloads nothing.
nodedir="${npm_config_nodedir:-}"
if [[ -z "$nodedir" ]]; then
  nodedir="$(npm config get nodedir 2>/dev/null || true)"
  [[ "$nodedir" == "undefined" || "$nodedir" == "null" ]] && nodedir=""
fi
if [[ -z "$nodedir" || ! -f "$nodedir/include/node/node_api.h" ]]; then
  prefix="$(cd "$(dirname "$(readlink -f "$(command -v node)")")/.." && pwd)"
  if [[ -f "$prefix/include/node/node_api.h" ]]; then nodedir="$prefix"; else nodedir=""; fi
fi
gyp_args=(rebuild -j max)
if [[ -n "$nodedir" ]]; then
  gyp_args+=("--nodedir=$nodedir")
else
  echo "build-addon: Node's headers were not found locally; node-gyp will try to download them" >&2
fi

echo "build-addon: ${gyp[*]} ${gyp_args[*]} (ORT headers: $HUBMOE_ORT_INCLUDE_DIR)" >&2
(cd "$addon" && "${gyp[@]}" "${gyp_args[@]}" --loglevel=warn) || fail "node-gyp failed (see above)"

built="$addon/build/Release/hubmoe_native.node"
[[ -f "$built" ]] || fail "node-gyp reported success but $built is missing"
# The addon must not import ONNX Runtime symbols: it dlopen()s the library (one copy per process).
if command -v nm >/dev/null 2>&1 && nm -D --undefined-only "$built" | grep -q 'OrtGetApiBase'; then
  fail "$built imports OrtGetApiBase; the addon must reach ONNX Runtime only through init()'s dlopen"
fi
mkdir -p "$(dirname "$out")"
cp "$built" "$out.tmp"
mv "$out.tmp" "$out"

# Load it once, against onnxruntime-node's libonnxruntime.so.1, as the runtime will.
(cd "$root" && node -e '
  const path = require("path");
  const ortMain = require.resolve("onnxruntime-node");
  require("onnxruntime-node");
  const lib = path.join(path.dirname(ortMain), "..", "bin", "napi-v6", process.platform, process.arch, "libonnxruntime.so.1");
  const addon = require(process.argv[1]);
  const v = addon.init(lib);
  console.error(`build-addon: loaded with ONNX Runtime ${v.ort} (API ${v.api}); providers: ${addon.providers().join(", ")}`);
' "$out") || fail "$out was built but does not load (see above)"
echo "build-addon: built $out in $((SECONDS - start)) s" >&2
