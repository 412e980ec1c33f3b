#!/usr/bin/env bash
# Fetch Debian's stock amd64 kernel (the one linux-image-amd64 depends on) and extract its
# bzImage into a cache directory outside the repository, for the xen-pv image tests.
#
#   roms/linux/fetch-kernel.sh            # prints the path of the cached vmlinuz
#
# Cache: $XENOLITH_CACHE (default /var/cache/xenolith, or ~/.cache/xenolith when that is not
# writable). The kernel lands at $CACHE/linux/vmlinuz-<version> with a stable symlink
# $CACHE/linux/vmlinuz. A second run does nothing when the file is there.
# Needs apt-get/apt-cache and dpkg-deb; as root it runs 'apt-get update' itself when the
# package lists are missing. $XENOLITH_KERNEL_PKG overrides the package name.
set -euo pipefail

cache="${XENOLITH_CACHE:-/var/cache/xenolith}"
if ! mkdir -p "$cache" 2>/dev/null || [ ! -w "$cache" ]; then
  cache="${HOME:-/tmp}/.cache/xenolith"
  mkdir -p "$cache"
fi
dir="$cache/linux"
mkdir -p "$dir"

if [ -s "$dir/vmlinuz" ]; then
  readlink -f "$dir/vmlinuz"
  exit 0
fi

# Which versioned package does the meta-package point at (e.g. linux-image-6.1.0-56-amd64)?
resolve() {
  apt-cache depends linux-image-amd64 2>/dev/null \
    | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1
}
pkg="${XENOLITH_KERNEL_PKG:-}"
if [ -z "$pkg" ]; then
  pkg="$(resolve)"
fi
if [ -z "$pkg" ] && [ "$(id -u)" = 0 ]; then
  # A fresh machine has no package lists yet.
  apt-get update -qq >&2 || true
  pkg="$(resolve)"
fi
if [ -z "$pkg" ]; then
  echo "fetch-kernel: cannot resolve linux-image-amd64 (run 'apt-get update' first)" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
chmod 0777 "$work" # lets apt's sandbox user write the download
(cd "$work" && apt-get download "$pkg" >&2)
deb="$(ls "$work"/*.deb | head -n1)"
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" --wildcards './boot/vmlinuz-*'
src="$(ls "$work"/boot/vmlinuz-* | head -n1)"
name="$(basename "$src")"
cp "$src" "$dir/$name.tmp"
mv "$dir/$name.tmp" "$dir/$name"
ln -sfn "$name" "$dir/vmlinuz"
readlink -f "$dir/vmlinuz"
