#!/usr/bin/env bash
# Build the Linux guest images from Debian's packages, into the cache (never the repo):
#
#   roms/linux/build.sh        # prints: KERNEL INITRD
#
#   $CACHE/linux/vmlinuz       Debian's stock kernel (fetch-kernel.sh)
#   $CACHE/linux/initrd.gz     busybox-static initramfs: /init mounts proc, sys and devtmpfs,
#                              prints "XENOLITH-LINUX: init", then runs the script named by
#                              `xenolith.script=NAME` on the kernel command line (from
#                              /scripts in the initramfs), or else an interactive shell on
#                              hvc0; when the script or shell ends it powers off.
#                              With `root=/dev/xvda` it first loads xen-blkfront and ext4
#                              (Debian builds them as modules), mounts the disk and
#                              switch_roots to it, whose /init does the same from there.
#   $CACHE/linux/rootfs.img    an ext4 root disk (mke2fs -d) with the same busybox userland,
#                              scripts and /init: a pristine image to give guests copies of.
#
# Cache as fetch-kernel.sh ($XENOLITH_CACHE, default /var/cache/xenolith). Needs apt-get,
# dpkg-deb, python3 and gzip. A second run reuses what is there (delete initrd.gz to rebuild).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kernel=$("$here/fetch-kernel.sh")
dir=$(dirname "$kernel")
out="$dir/initrd.gz"
rootfs="$dir/rootfs.img"
if [ -s "$out" ] && [ "$out" -nt "$here/build.sh" ] && [ -s "$rootfs" ] && [ "$rootfs" -nt "$here/build.sh" ]; then
  echo "$kernel $out"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(
  cd "$work"
  if ! apt-get download busybox-static >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] && apt-get update -qq >&2
    apt-get download busybox-static >/dev/null
  fi
  dpkg-deb -x busybox-static_*.deb pkg
)
bb="$work/pkg/bin/busybox"
[ -x "$bb" ] || { echo "busybox-static has no bin/busybox" >&2; exit 1; }

root="$work/root"
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,root,scripts}
cp "$bb" "$root/bin/busybox"
mkdir -p "$root/lib/modules"
cp "$dir"/modules/*.ko "$root/lib/modules/"
cat > "$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
script=
rootdev=
for a in $(cat /proc/cmdline); do
  case "$a" in
    xenolith.script=*) script=${a#xenolith.script=} ;;
    root=/dev/*) rootdev=${a#root=} ;;
  esac
done
if [ -f /etc/xenolith-rootfs ]; then
  echo "XENOLITH-LINUX: init on $(grep ' / ' /proc/mounts | grep -v '^rootfs' | cut -d' ' -f1,3)"
else
  echo "XENOLITH-LINUX: init"
  if [ -n "$rootdev" ]; then
    for m in crc16 crc32c_generic mbcache jbd2 ext4 xen-blkfront; do insmod /lib/modules/$m.ko; done
    n=0
    while [ ! -b "$rootdev" ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
    mkdir -p /newroot
    if mount -t ext4 "$rootdev" /newroot; then
      umount /proc /sys /dev
      exec switch_root /newroot /init
    fi
    echo "XENOLITH-LINUX: cannot mount $rootdev"
  fi
fi
if [ -n "$script" ] && [ -f "/scripts/$script" ]; then
  sh "/scripts/$script"
  echo "XENOLITH-LINUX: script $script exited with status $?"
else
  setsid cttyhack sh -l
fi
poweroff -f
EOF
chmod 755 "$root/init"
cat > "$root/etc/profile" <<'EOF'
export PATH=/bin:/sbin
export PS1='xenolith# '
EOF
# Scripts for tests and benchmarks.
cat > "$root/scripts/hello" <<'EOF'
echo "kernel: $(uname -sr)"
echo "hypervisor: $(cat /sys/hypervisor/type 2>/dev/null)"
grep -m1 '^model name' /proc/cpuinfo
grep -m1 '^flags' /proc/cpuinfo
ls /sys/bus/xen/devices 2>/dev/null
echo "XENOLITH-LINUX: hello done"
EOF
# The benchmark workload (bench/linux): markers with the guest's uptime around each part.
cat > "$root/scripts/workload" <<'EOF'
mark() { echo "XENOLITH-MARK $1 $(cut -d' ' -f1 /proc/uptime)"; }
mark start
dd if=/dev/zero bs=1M count=64 2>/dev/null | sha256sum
mark w1
seq 1 2000000 > /tmp/f
mark gen
gzip -c /tmp/f | wc -c
mark w2
i=0; while [ $i -lt 1000 ]; do /bin/true; i=$((i+1)); done
mark w3
EOF

# The disk round trip: write a file on the root disk, flush it, show it; read it back.
cat > "$root/scripts/disk-write" <<'EOF'
echo "written by the guest at uptime $(cut -d' ' -f1 /proc/uptime)" > /root/written.txt
sync
mount -o remount,ro /
echo "XENOLITH-LINUX: wrote $(cat /root/written.txt)"
EOF
# Timekeeping: `sleep 5` between two readings of the uptime.
cat > "$root/scripts/sleep" <<'EOF'
a=$(cut -d' ' -f1 /proc/uptime)
sleep 5
b=$(cut -d' ' -f1 /proc/uptime)
echo "XENOLITH-LINUX: slept from $a to $b"
EOF
cat > "$root/scripts/disk-read" <<'EOF'
echo "XENOLITH-LINUX: read $(cat /root/written.txt 2>&1)"
EOF

# The workload's parts on their own (for profiling).
printf '%s\n' 'dd if=/dev/zero bs=1M count=64 2>/dev/null | sha256sum' > "$root/scripts/w1"
printf '%s\n' 'i=0; while [ $i -lt 1000 ]; do /bin/true; i=$((i+1)); done' > "$root/scripts/w3"
printf '%s\n' 'seq 1 2000000 > /tmp/f' 'gzip -c /tmp/f | wc -c' > "$root/scripts/w2"

python3 - "$root" "$work/initrd" <<'PYEOF'
# Write a newc cpio archive of a directory tree (sorted, uid/gid 0, mtime 0).
import os, stat, sys
src, dst = sys.argv[1], sys.argv[2]
out = open(dst, "wb")
ino = 1
def entry(name, st_mode, data=b"", nlink=1):
    global ino
    name_b = name.encode() + b"\0"
    hdr = "070701" + "".join("%08X" % v for v in (ino, st_mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name_b), 0))
    ino += 1
    out.write(hdr.encode() + name_b)
    out.write(b"\0" * ((4 - (110 + len(name_b)) % 4) % 4))
    out.write(data)
    out.write(b"\0" * ((4 - len(data) % 4) % 4))
for dirpath, dirnames, filenames in os.walk(src):
    dirnames.sort()
    rel = os.path.relpath(dirpath, src)
    if rel != ".":
        entry(rel, stat.S_IFDIR | 0o755, nlink=2)
    for f in sorted(filenames):
        p = os.path.join(dirpath, f)
        r = os.path.normpath(os.path.join(rel, f))
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            entry(r, stat.S_IFLNK | 0o777, os.readlink(p).encode())
        else:
            entry(r, stat.S_IFREG | (st.st_mode & 0o777), open(p, "rb").read())
entry("TRAILER!!!", 0)
out.close()
PYEOF
gzip -9n < "$work/initrd" > "$out.tmp"
mv "$out.tmp" "$out"

# The root disk: the same tree without the modules, marked as the disk's.
rm -rf "$root/lib/modules"
touch "$root/etc/xenolith-rootfs"
mkdir -p "$root/newroot"
PATH=$PATH:/sbin:/usr/sbin mke2fs -q -t ext4 -F -L xenolith-root -E root_owner=0:0 -d "$root" "$rootfs.tmp" 32M >/dev/null
mv "$rootfs.tmp" "$rootfs"
echo "$kernel $out"
