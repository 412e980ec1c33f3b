#!/usr/bin/env bash
# Fetch Debian's stock amd64 kernel (the one linux-image-amd64 depends on) and extract its
# bzImage into a cache directory outside the repository, for the xen-pv image tests.
#
#   roms/linux/fetch-kernel.sh            # prints the path of the cached vmlinuz
#
# Cache: $XENOLITH_CACHE (default /var/cache/xenolith, or ~/.cache/xenolith when that is not
# writable). The kernel lands at $CACHE/linux/vmlinuz-<version> with a stable symlink
# $CACHE/linux/vmlinuz. Beside it, $CACHE/linux/modules/ holds the modules a root disk
# needs (xen-blkfront, ext4 and its dependencies; Debian builds them as modules), which
# roms/linux/build.sh puts into the initramfs. A second run does nothing when both are there.
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

mods="crc16 crc32c_generic mbcache jbd2 ext4 xen-blkfront"
have_mods() { for m in $mods; do [ -s "$dir/modules/$m.ko" ] || return 1; done; }
if [ -s "$dir/vmlinuz" ] && have_mods; then
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
pats=(); for m in $mods; do pats+=("./lib/modules/*/$m.ko"); done
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" --wildcards './boot/vmlinuz-*' "${pats[@]}"
mkdir -p "$dir/modules"
for m in $mods; do
  f="$(find "$work/lib/modules" -name "$m.ko" | head -n1)"
  [ -n "$f" ] || { echo "fetch-kernel: $pkg has no $m.ko" >&2; exit 1; }
  cp "$f" "$dir/modules/$m.ko"
done
src="$(ls "$work"/boot/vmlinuz-* | head -n1)"
name="$(basename "$src")"
cp "$src" "$dir/$name.tmp"
mv "$dir/$name.tmp" "$dir/$name"
ln -sfn "$name" "$dir/vmlinuz"
readlink -f "$dir/vmlinuz"
