#!/usr/bin/env bash
# Fetch Debian's GNU Mach Xen image (gnumach-image-1.8-xen-486, a 64-bit PV kernel) into the
# cache (never the repo):
#
#   roms/mach/fetch.sh         # prints the path of the kernel
#
# Cache: $XENOLITH_CACHE (default /var/cache/xenolith)/mach/gnumach-xen.elf. Needs apt-get,
# dpkg-deb. A second run reuses what is there.
set -euo pipefail
cache=${XENOLITH_CACHE:-/var/cache/xenolith}/mach
out="$cache/gnumach-xen.elf"
if [ -s "$out" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pkg=gnumach-image-1.8-xen-486
(
  cd "$work"
  if ! apt-get download "$pkg" >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] && apt-get update -qq >&2
    apt-get download "$pkg" >/dev/null
  fi
  dpkg-deb -x ./*.deb root
)
gz=$(find "$work/root/boot" -name 'gnumach-*-xen-*.gz' | head -1)
[ -n "$gz" ] || { echo "fetch.sh: no gnumach image in $pkg" >&2; exit 1; }
gzip -dc "$gz" > "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
