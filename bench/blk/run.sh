#!/usr/bin/env bash
# Block back-end benchmark: sequential and random 4 KiB reads and writes by Debian's Linux
# guest on a 64 MiB Xen disk (xvdb, O_DIRECT, so every request goes through blkfront and
# the block back end), against the same I/O done by the host on the image file (the back
# end's own path: buffered, fsync at the end). Times come from the guest's uptime markers
# (realtime clock) and the host's clock; prints MiB/s and guest/host ratios.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/bench/out/blk
mkdir -p "$out"
count=${BENCH_COUNT:-4096}
read -r kernel initrd < <("$root/roms/linux/build.sh" | tail -n1)
gcc -O2 -static -o "$out/rio" "$here/rio.c"
(cd "$root" && cargo build --release -q)
cp "$root/target/release/xenolith" "$out/xenolith"

# An initramfs with rio and the benchmark script appended (a second cpio member).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/bin" "$work/root/scripts"
cp "$out/rio" "$work/root/bin/rio"
cat > "$work/root/scripts/blk" <<SEOF
mark() { echo "XENOLITH-MARK \$1 \$(cut -d' ' -f1 /proc/uptime)"; }
insmod /lib/modules/xen-blkfront.ko
n=0; while [ ! -b /dev/xvdb ] && [ \$n -lt 100 ]; do sleep 0.1; n=\$((n+1)); done
for m in seqw seqr randw randr; do mark \$m-start; rio /dev/xvdb \$m $count || echo "XENOLITH-MARK failed"; mark \$m-end; done
SEOF
python3 - "$work/root" "$work/extra" <<'CPIO'
import os, stat, sys
src, dst = sys.argv[1], sys.argv[2]
out = open(dst, "wb"); ino = [1]
def entry(name, mode, data=b""):
    nb = name.encode() + b"\0"
    hdr = "070701" + "".join("%08X" % v for v in (ino[0], mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0))
    ino[0] += 1
    out.write(hdr.encode() + nb + b"\0" * ((4 - (110 + len(nb)) % 4) % 4) + data + b"\0" * ((4 - len(data) % 4) % 4))
for d, dirs, files in os.walk(src):
    dirs.sort(); rel = os.path.relpath(d, src)
    if rel != ".": entry(rel, stat.S_IFDIR | 0o755)
    for f in sorted(files):
        p = os.path.join(d, f); entry(os.path.normpath(os.path.join(rel, f)), stat.S_IFREG | (os.stat(p).st_mode & 0o777), open(p, "rb").read())
entry("TRAILER!!!", 0); out.close()
CPIO
gzip -9n < "$work/extra" > "$work/extra.gz"
cat "$initrd" "$work/extra.gz" > "$out/initrd-blk.gz"

python3 - "$out" "$kernel" "$count" <<'PYEOF'
import os, re, subprocess, sys, time
out, kernel, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
img = os.path.join(out, "data.img")
def fresh():
    with open(img, "wb") as f: f.truncate(64 << 20)
fresh()
p = subprocess.run([os.path.join(out, "xenolith"), "run", "--kernel", kernel, "--ramdisk", os.path.join(out, "initrd-blk.gz"),
    "--memory", "512", "--clock", "realtime", "--cmdline", "console=hvc0 xenolith.script=blk", "--disk", img + ",raw,xvdb,rw"],
    stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
text = p.stdout.decode(errors="replace")
marks = dict(re.findall(r"XENOLITH-MARK (\S+) ([0-9.]+)", text))
if "XENOLITH-MARK failed" in text or len(marks) < 8:
    sys.exit("bench/blk: the guest run failed:\n" + text[-3000:])
guest = {m: float(marks[m + "-end"]) - float(marks[m + "-start"]) for m in ["seqw", "seqr", "randw", "randr"]}
host = {}
fresh()
for m in ["seqw", "seqr", "randw", "randr"]:
    best = 1e9
    for _ in range(3):
        t = time.monotonic(); subprocess.run([os.path.join(out, "rio"), img, m, str(count)], check=True); best = min(best, time.monotonic() - t)
    host[m] = best
mib = count * 4096 / (1 << 20)
print("%d x 4 KiB per test, 64 MiB disk" % count)
print("%-6s %12s %12s %8s" % ("test", "guest MiB/s", "host MiB/s", "ratio"))
for m in ["seqr", "seqw", "randr", "randw"]:
    g, h = mib / guest[m], mib / host[m]
    print("%-6s %12.1f %12.1f %8.3f" % (m, g, h, g / h))
PYEOF
