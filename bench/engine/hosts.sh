#!/usr/bin/env bash
# JIT vs IR interpreter on each host backend, under qemu-user on this x86_64 machine (the
# only fair ratio without real aarch64/riscv64 hardware). Runs the first N guest
# instructions of each kernel (default 30M) with --engine interp and --engine jit, and
# prints the ratio per host. Target (issue 7): JIT >= 5x faster than the interpreter.
#
# Environment: BENCH_HOST_INSNS=N, BENCH_KERNELS="sha256 memmix vm",
#              BENCH_HOSTS="x86_64 aarch64 riscv64".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/bench/out/engine
n=${BENCH_HOST_INSNS:-30000000}
kernels=${BENCH_KERNELS:-"sha256 memmix vm fpsimd"}
hosts=${BENCH_HOSTS:-"x86_64 aarch64 riscv64"}
"$here/build.sh" >/dev/null

declare -A bin
for h in $hosts; do
  case $h in
    x86_64) (cd "$root" && cargo build --release -q); bin[$h]="$root/target/release/xenolith" ;;
    aarch64) (cd "$root" && cargo build --release -q --target aarch64-unknown-linux-gnu)
      bin[$h]="qemu-aarch64-static -L /usr/aarch64-linux-gnu $root/target/aarch64-unknown-linux-gnu/release/xenolith" ;;
    riscv64) (cd "$root" && cargo build --release -q --target riscv64gc-unknown-linux-gnu)
      bin[$h]="qemu-riscv64-static -L /usr/riscv64-linux-gnu $root/target/riscv64gc-unknown-linux-gnu/release/xenolith" ;;
    *) echo "unknown host $h" >&2; exit 1 ;;
  esac
done

# time_run CMD...: seconds of wall clock; the run must stop at the budget (exit 2 with the
# budget message) or finish normally.
time_run() {
  local t0 t1 rc=0
  t0=$EPOCHREALTIME
  "$@" >/dev/null 2>"$out/hosts.stderr" || rc=$?
  t1=$EPOCHREALTIME
  if [ "$rc" -ne 0 ] && ! grep -q "budget of" "$out/hosts.stderr"; then
    cat "$out/hosts.stderr" >&2
    echo "hosts.sh: '$*' failed ($rc)" >&2
    exit 1
  fi
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

printf '%-8s %-8s %10s %10s %12s  %s\n' host kernel interp_s jit_s jit_speedup "jit>=5x interp"
for h in $hosts; do
  for k in $kernels; do
    # shellcheck disable=SC2086
    ti=$(time_run ${bin[$h]} flat "$out/$k.bin" --engine interp --max-insns "$n")
    # shellcheck disable=SC2086
    tj=$(time_run ${bin[$h]} flat "$out/$k.bin" --engine jit --max-insns "$n")
    sp=$(awk -v i="$ti" -v j="$tj" 'BEGIN { printf "%.1fx", i / j }')
    v=$(awk -v i="$ti" -v j="$tj" 'BEGIN { print (i >= 5 * j) ? "PASS" : "MISS" }')
    printf '%-8s %-8s %10s %10s %12s  %s\n' "$h" "$k" "$ti" "$tj" "$sp" "$v"
  done
done
