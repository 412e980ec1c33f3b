#!/usr/bin/env bash
# The Debian Linux guest (roms/linux/build.sh) on the other host backends: xenolith cross-
# built for aarch64 and riscv64 and run under qemu-user on this x86_64 machine, next to the
# native x86_64 build. A functional proof, not a benchmark of ARM or RISC-V speed: the
# guest's x86 code runs in xenolith's JIT output, which itself runs under qemu's TCG.
#
#   bench/linux/cross.sh            # prints a table of wall times per host, engine and run
#
# Runs, per host and engine:
#   hello     boot to the initramfs, run the `hello` script, power off (exit status 0)
#   workload  the benchmark workload (bench/linux/run.sh): W1 sha256sum of 64 MiB, W2 gzip
#             of 16 MiB, W3 1000 fork+exec of /bin/true
#   shell     an interactive session on hvc0 over piped stdin (the prompt `xenolith# `,
#             a few commands and their output, then `poweroff -f`, exit status 0)
# stdin is never a terminal, so the guest clock is deterministic and the hello and workload
# consoles (stdout and stderr) must be byte-identical to the first host's (x86_64); any
# difference is an engine or backend bug. Consoles are kept in bench/out/linux-cross/.
#
# Environment: CROSS_HOSTS="x86_64 aarch64 riscv64" (the first is the reference),
#              CROSS_ENGINES="jit" (add interp for the IR interpreter; slow under qemu),
#              CROSS_RUNS="hello workload shell",
#              CROSS_TIMEOUT_HELLO/_WORKLOAD/_SHELL=seconds (default 1800/5400/1800).
# Needs the cross toolchain of README.md "Other hosts" (clang, qemu-user-static, the
# aarch64/riscv64 libc packages) and python3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
hosts=${CROSS_HOSTS:-"x86_64 aarch64 riscv64"}
engines=${CROSS_ENGINES:-"jit"}
runs=${CROSS_RUNS:-"hello workload shell"}
read -r kernel initrd < <("$root/roms/linux/build.sh")

args=()
for h in $hosts; do
  case $h in
    x86_64) (cd "$root" && cargo build --release -q)
      args+=("x86_64=$root/target/release/xenolith") ;;
    aarch64) (cd "$root" && cargo build --release -q --target aarch64-unknown-linux-gnu)
      args+=("aarch64=qemu-aarch64-static -L /usr/aarch64-linux-gnu $root/target/aarch64-unknown-linux-gnu/release/xenolith") ;;
    riscv64) (cd "$root" && cargo build --release -q --target riscv64gc-unknown-linux-gnu)
      args+=("riscv64=qemu-riscv64-static -L /usr/riscv64-linux-gnu $root/target/riscv64gc-unknown-linux-gnu/release/xenolith") ;;
    *) echo "unknown host $h" >&2; exit 1 ;;
  esac
done
echo "qemu-user: $(qemu-aarch64-static --version | head -1)"
exec python3 "$here/cross.py" "$kernel" "$initrd" "$root/bench/out/linux-cross" "$runs" "$engines" "${args[@]}"
