#!/usr/bin/env bash
# Build PV-GRUB test images from Debian's GRUB 2.06 packages, into the cache (never the repo):
#
#   roms/grub/build.sh         # prints the cache directory
#
#   $CACHE/grub/ft64.xen       grub-mkimage -O x86_64-xen with an embedded config that loads
#                              GRUB's functional test modules, runs `functional_test` (which
#                              prints "ALL TESTS PASSED" or the failures) and halts.
#   $CACHE/grub/ft32.xen       the same for i386-xen (a 32-bit PAE PV kernel).
#   $CACHE/grub/disk64.xen     x86_64-xen image whose config lists the Xen disks and prints a
#                              file from an ext2 disk (used with disk.img).
#   $CACHE/grub/disk.img       an ext2 image made with Debian's mke2fs -d: /hello.txt and
#                              /boot/grub/grub.cfg (for Debian's prebuilt pvgrub2).
#   $CACHE/grub/pvgrub64.bin   Debian's prebuilt pvgrub2 (grub-xen-host), which finds
#                              /boot/grub/grub.cfg on a Xen disk and runs it.
#
# Cache: $XENOLITH_CACHE (default /var/cache/xenolith). Needs apt-get, dpkg-deb, mke2fs.
# A second run reuses what is there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${XENOLITH_CACHE:-/var/cache/xenolith}/grub
mkdir -p "$cache"
stamp="$cache/.built"
if [ -f "$stamp" ] && [ "$stamp" -nt "$here/build.sh" ]; then
  echo "$cache"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pkgs="grub-xen-bin grub-common grub-xen-host"
(
  cd "$work"
  if ! apt-get download $pkgs >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] && apt-get update -qq >&2
    apt-get download $pkgs >/dev/null
  fi
  for d in *.deb; do dpkg-deb -x "$d" root; done
)
r="$work/root"
mkimage() { "$r/usr/bin/grub-mkimage" -d "$r/usr/lib/grub/$1" -O "$1" -p /boot/grub "${@:2}"; }

# GRUB's self-checking tests that need no video, fonts or files.
tests="exfctest setjmp_test div_test mul_test shift_test bswap_test ctz_test cmp_test strtoull_test xnu_uuid_test pbkdf2_test"
{
  echo "insmod functional_test"
  echo "insmod xnu_uuid"
  for t in $tests; do echo "insmod $t"; done
  echo "functional_test"
  echo "halt"
} > "$work/ft.cfg"
for arch in x86_64 i386; do
  out="$cache/ft$( [ $arch = x86_64 ] && echo 64 || echo 32 ).xen"
  mkimage "$arch-xen" -c "$work/ft.cfg" -o "$out" functional_test xnu_uuid $tests echo halt
done

cat > "$work/disk.cfg" <<'EOF'
echo XENOLITH-GRUB: disks
xen_ls
ls
ls (xen/xvda)/
cat (xen/xvda)/hello.txt
echo XENOLITH-GRUB: end
halt
EOF
mkimage x86_64-xen -c "$work/disk.cfg" -o "$cache/disk64.xen" ls cat echo halt ext2 lsxen part_msdos

mkdir -p "$work/fs/boot/grub"
echo "hello from an ext2 disk" > "$work/fs/hello.txt"
cat > "$work/fs/boot/grub/grub.cfg" <<'EOF'
echo XENOLITH-GRUB: grub.cfg from the disk
cat /hello.txt
halt
EOF
rm -f "$cache/disk.img"
PATH=$PATH:/sbin:/usr/sbin mke2fs -q -t ext2 -F -d "$work/fs" "$cache/disk.img" 4M
cp "$r/usr/lib/grub-xen/grub-x86_64-xen.bin" "$cache/pvgrub64.bin"
touch "$stamp"
echo "$cache"
