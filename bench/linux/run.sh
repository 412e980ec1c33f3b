#!/usr/bin/env bash
# Linux benchmark: the same Debian kernel and busybox initramfs (roms/linux/build.sh) under
# Xenolith (64-bit PV, JIT) and QEMU TCG (qemu-system-x86_64 -accel tcg, 1 vCPU, 512 MiB,
# direct kernel boot, console=ttyS0), and the workload natively on the host, all in one run.
#
#   bench/linux/run.sh            # prints a table and the ratios Xenolith/QEMU, Xenolith/native
#   BENCH_RUNS=5 bench/linux/run.sh   # each emulator 5 times, alternating (default 3); every
#                                     # figure is the best of its runs
#
# The initramfs's `workload` script (xenolith.script=workload) prints markers around:
#   W1  sha256sum of 64 MiB from /dev/zero
#   W2  gzip of a generated 16 MiB file (seq 1 2000000)
#   W3  1000 fork+exec of /bin/true
# Times are host wall-clock times of the markers as they reach the console (bench/linux/
# timing.py); "boot" is from the start of the process to the initramfs's first line.
# Needs: apt-get (installs qemu-system-x86 when missing, as root), python3, cargo.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
read -r kernel initrd < <("$root/roms/linux/build.sh")
if ! command -v qemu-system-x86_64 >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-system-x86 >&2 || { apt-get update -q >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-system-x86 >&2; }
  else
    echo "qemu-system-x86_64 missing: apt-get install qemu-system-x86" >&2; exit 1
  fi
fi
(cd "$root" && cargo build --release -q)
exec python3 "$here/timing.py" "$root/target/release/xenolith" "$kernel" "$initrd"
