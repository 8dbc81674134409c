#!/usr/bin/env bash
# Fetches ONNX Runtime's C/C++ API headers (Debian trixie's libonnxruntime-dev, ORT 1.21, ORT_API_VERSION 21)
# into runtime/native/build/ort/ without installing anything: `apt-get download` through a throwaway apt
# configuration, then `dpkg -x`. The headers are never vendored in the repo. ORT's C ABI is append-only, so
# these headers work against the 1.30 libonnxruntime.so.1 that onnxruntime-node ships.
#
# Usage: fetch-ort-headers.sh            (idempotent: does nothing when the headers are already there)
# Env:   HUBMOE_ORT_INCLUDE=<dir>        use headers from <dir> instead (must hold onnxruntime_c_api.h); nothing fetched
#        HUBMOE_DEBIAN_MIRROR=<url>      Debian mirror (default http://deb.debian.org/debian)
# Prints the include directory on stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
native="$(cd "$here/.." && pwd)"
dest="$native/build/ort"
include="$dest/usr/include/onnxruntime"

if [[ -n "${HUBMOE_ORT_INCLUDE:-}" ]]; then
  if [[ ! -f "$HUBMOE_ORT_INCLUDE/onnxruntime_c_api.h" ]]; then
    echo "fetch-ort-headers: HUBMOE_ORT_INCLUDE=$HUBMOE_ORT_INCLUDE has no onnxruntime_c_api.h" >&2
    exit 1
  fi
  echo "$HUBMOE_ORT_INCLUDE"
  exit 0
fi

if [[ -f "$include/onnxruntime_c_api.h" && -f "$include/onnxruntime_lite_custom_op.h" ]]; then
  echo "$include"
  exit 0
fi

for tool in apt-get dpkg; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "fetch-ort-headers: '$tool' not found. The ORT headers come from Debian's libonnxruntime-dev package;" >&2
    echo "  on a non-Debian machine unpack libonnxruntime-dev (1.21+) yourself and set HUBMOE_ORT_INCLUDE to its include/onnxruntime dir." >&2
    exit 1
  fi
done

keyring=/usr/share/keyrings/debian-archive-keyring.gpg
if [[ ! -f "$keyring" ]]; then
  echo "fetch-ort-headers: $keyring is missing (package debian-archive-keyring); cannot verify Debian's archive." >&2
  exit 1
fi

mirror="${HUBMOE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
work="$(mktemp -d "${TMPDIR:-/tmp}/hubmoe-ort-apt.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/deb"
echo "deb [signed-by=$keyring] $mirror trixie main" >"$work/sources.list"

apt_opts=(
  -o "Dir::Etc::SourceList=$work/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache=$work/cache"
  -o "Debug::NoLocking=1"
  -o "APT::Architecture=amd64"
  -o "APT::Architectures=amd64"
)

echo "fetch-ort-headers: apt-get update (trixie, throwaway config in $work)" >&2
if ! apt-get "${apt_opts[@]}" update >"$work/update.log" 2>&1; then
  cat "$work/update.log" >&2
  echo "fetch-ort-headers: 'apt-get update' against $mirror trixie failed (network? proxy?). See the log above." >&2
  exit 1
fi
# apt-get update exits 0 even when it could not reach the mirror: check that a package list arrived.
if ! ls "$work"/lists/*_Packages* >/dev/null 2>&1; then
  cat "$work/update.log" >&2
  echo "fetch-ort-headers: 'apt-get update' fetched no package list from $mirror trixie (network? proxy?)." >&2
  exit 1
fi
echo "fetch-ort-headers: apt-get download libonnxruntime-dev" >&2
if ! (cd "$work/deb" && apt-get "${apt_opts[@]}" download libonnxruntime-dev) >"$work/download.log" 2>&1; then
  cat "$work/download.log" >&2
  echo "fetch-ort-headers: 'apt-get download libonnxruntime-dev' failed. See the log above." >&2
  exit 1
fi
deb="$(ls "$work"/deb/libonnxruntime-dev_*.deb 2>/dev/null | head -n1)"
if [[ -z "$deb" ]]; then
  echo "fetch-ort-headers: apt-get reported success but no libonnxruntime-dev_*.deb was downloaded" >&2
  exit 1
fi

mkdir -p "$native/build"
unpack="$(mktemp -d "$native/build/.ort.XXXXXX")"  # unique: another build may be fetching at the same time
chmod 755 "$unpack"
dpkg -x "$deb" "$unpack"
if [[ ! -f "$unpack/usr/include/onnxruntime/onnxruntime_c_api.h" ]]; then
  rm -rf "$unpack"
  echo "fetch-ort-headers: $(basename "$deb") has no usr/include/onnxruntime/onnxruntime_c_api.h" >&2
  exit 1
fi
# Only the headers are wanted; the package's libonnxruntime.so symlink points at a runtime we do not install.
find "$unpack" -xtype l -delete
basename "$deb" >"$unpack/PACKAGE"
if [[ -f "$include/onnxruntime_c_api.h" ]]; then
  rm -rf "$unpack"  # a concurrent fetch finished first
else
  rm -rf "$dest"
  mv "$unpack" "$dest"
fi
echo "fetch-ort-headers: unpacked $(basename "$deb") into $dest" >&2
echo "$include"
