#!/usr/bin/env bash
# Hypercall benchmark (issue: bench/hypercall): builds hcbench.elf and xenolith, runs the
# guest on the JIT (best of BENCH_RUNS, default 5), timestamps its console lines on the host
# and prints, per operation, the cost of each phase minus the same loop without the call.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/bench/out/hypercall
mkdir -p "$out"
gcc -c -nostdlib -o "$out/hcbench.o" "$here/hcbench.S"
ld -nostdlib -static --no-warn-rwx-segments -T "$root/roms/pv/xen.ld" -o "$out/hcbench.elf" "$out/hcbench.o"
(cd "$root" && cargo build --release -q)
cp "$root/target/release/xenolith" "$out/xenolith"
python3 - "$out/xenolith" "$out/hcbench.elf" "${BENCH_RUNS:-5}" "${BENCH_ENGINE:-jit}" <<'PYEOF'
import subprocess, sys, time
xeno, elf, runs, engine = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
N = 200000
best = {}
for r in range(runs):
    p = subprocess.Popen([xeno, "run", "--engine", engine, "--kernel", elf], stdout=subprocess.PIPE)
    t0 = {}
    for line in p.stdout:
        now = time.monotonic()
        w = line.decode().split()
        if len(w) == 3 and w[0] == "HCBENCH":
            if w[1] == "start": t0[w[2]] = now
            elif w[1] == "end": best[w[2]] = min(best.get(w[2], 1e9), now - t0[w[2]])
        elif line.startswith(b"HCBENCH FAILED"):
            sys.exit("hcbench: the guest reported a failure")
    if p.wait() != 0:
        sys.exit("hcbench: xenolith exited with %d" % p.returncode)
base = best["loop"]
print("engine %s, %d iterations per phase, best of %d runs" % (engine, N, runs))
print("%-8s %12s %14s" % ("phase", "seconds", "ns/op (-loop)"))
for k in ["loop", "null", "evtchn", "mmu"]:
    extra = "" if k == "loop" else "%14.0f" % ((best[k] - base) / N * 1e9)
    print("%-8s %12.4f %s" % (k, best[k], extra))
PYEOF
