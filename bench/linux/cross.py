"""Run the Linux guest on each host's xenolith (native or under qemu-user); print a table.

Usage: cross.py KERNEL INITRD OUTDIR RUNS ENGINES HOST=COMMAND...

COMMAND is the xenolith binary, with its qemu-user prefix on the other hosts. The first
HOST's runs are the reference: with the deterministic clock (stdin is never a terminal
here) a script run's console output is a function of the guest alone, so every other
host's hello and workload output (stdout and stderr) must be byte-identical to it.
"""
import os, shlex, subprocess, sys, threading, time

kernel, initrd, outdir, runs, engines = sys.argv[1:6]
hosts = [a.split("=", 1) for a in sys.argv[6:]]
runs, engines = runs.split(), engines.split()
TIMEOUT = {r: int(os.environ.get(f"CROSS_TIMEOUT_{r.upper()}", d)) for r, d in
           (("hello", 1800), ("workload", 5400), ("shell", 1800))}
# The interactive session (as tests/linux_boot.rs interactive_shell_over_the_console).
STEPS = [("echo calc=$((6*7))", "calc=42"), ("cat /sys/hypervisor/type", "xen"),
         ("uname -m", "x86_64"), ("grep -c processor /proc/cpuinfo", "1"),
         ("echo sum-$(seq 1 1000 | busybox awk '{s+=$1} END {print s}')", "sum-500500")]
MARKS = ["start", "w1", "gen", "w2", "w3"]


class Run:
    """A guest run with its console timestamped on the host."""

    def __init__(self, cmd, engine, cmdline, stdin):
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(cmd + ["run", "--engine", engine, "--kernel", kernel, "--ramdisk", initrd,
                                         "--memory", "512", "--cmdline", cmdline],
                                  stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out = bytearray()
        self.err = bytearray()
        self.lock = threading.Lock()
        self.seen = {}
        self.eof = False
        self.cv = threading.Condition(self.lock)
        self.threads = [threading.Thread(target=self._read, daemon=True),
                        threading.Thread(target=lambda: self.err.extend(self.p.stderr.read()), daemon=True)]
        for th in self.threads:
            th.start()

    def _read(self):
        while True:
            b = self.p.stdout.read1(65536)
            if not b:
                break
            with self.cv:
                self.out.extend(b)
                t = time.monotonic() - self.t0
                text = self.out.decode(errors="replace")
                if "boot" not in self.seen and "XENOLITH-LINUX: init" in text:
                    self.seen["boot"] = t
                for line in text.splitlines():
                    if line.startswith("XENOLITH-MARK ") and len(line.split()) == 3:
                        self.seen.setdefault(line.split()[1], t)
                self.cv.notify_all()
        with self.cv:
            self.eof = True
            self.cv.notify_all()

    def wait_for(self, what, pos, deadline):
        """Position just after the first `what` at or after pos in the console; None on timeout."""
        with self.cv:
            while True:
                i = self.out.find(what.encode(), pos)
                if i >= 0:
                    return i + len(what)
                left = deadline - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and self.eof):
                    return None
                self.cv.wait(min(left, 1.0))

    def finish(self, deadline):
        try:
            rc = self.p.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            rc = "timeout"
        t = time.monotonic() - self.t0
        for th in self.threads:
            th.join(10)
        return rc, t


def run_script(cmd, engine, script):
    r = Run(cmd, engine, f"console=hvc0 xenolith.script={script}", subprocess.DEVNULL)
    rc, t = r.finish(r.t0 + TIMEOUT[script])
    out = bytes(r.out)
    text = out.decode(errors="replace")
    problems = []
    if rc != 0:
        problems.append(f"exit status {rc}")
    for m in ["XENOLITH-LINUX: init", f"XENOLITH-LINUX: script {script} exited with status 0"]:
        if m not in text:
            problems.append(f"no '{m}'")
    if script == "hello" and "XENOLITH-LINUX: hello done" not in text:
        problems.append("no 'hello done'")
    if script == "workload":
        problems += [f"no mark {m}" for m in MARKS if m not in r.seen]
    return rc, t, r.seen, out, bytes(r.err), problems


def run_shell(cmd, engine):
    r = Run(cmd, engine, "console=hvc0 quiet", subprocess.PIPE)
    deadline = r.t0 + TIMEOUT["shell"]
    problems = []
    pos = r.wait_for("xenolith# ", 0, deadline)
    if pos is None:
        problems.append("no prompt")
    else:
        for c, want in STEPS + [("poweroff -f", None)]:
            r.p.stdin.write((c + "\n").encode())
            r.p.stdin.flush()
            if want is None:
                break
            for w in (c, want, "xenolith# "):
                pos = r.wait_for(w, pos, deadline)
                if pos is None:
                    problems.append(f"'{c}': no '{w}'")
                    break
            if pos is None:
                break
    rc, t = r.finish(deadline)
    if rc != 0:
        problems.append(f"exit status {rc}")
    return rc, t, r.seen, bytes(r.out), bytes(r.err), problems


os.makedirs(outdir, exist_ok=True)
ref = {}
failed = 0
print(f"{'host':8} {'engine':6} {'run':8} {'boot_s':>8} {'W1_s':>8} {'W2_s':>8} {'W3_s':>8} {'total_s':>9}  result",
      flush=True)
for host, cmdstr in hosts:
    cmd = shlex.split(cmdstr)
    for engine in engines:
        for run in runs:
            if run == "shell":
                rc, t, seen, out, err, problems = run_shell(cmd, engine)
            else:
                rc, t, seen, out, err, problems = run_script(cmd, engine, run)
                # Deterministic clock: the same console, byte for byte, on every host and engine.
                if run not in ref and not problems:
                    ref[run] = (host, engine, out, err)
                elif run in ref:
                    if out != ref[run][2]:
                        problems.append(f"console differs from {ref[run][0]}/{ref[run][1]}'s")
                    if err != ref[run][3]:
                        problems.append(f"stderr differs from {ref[run][0]}/{ref[run][1]}'s")
            base = os.path.join(outdir, f"{host}-{engine}-{run}")
            open(base + ".out", "wb").write(out)
            open(base + ".err", "wb").write(err)
            boot = seen.get("boot")
            if run == "workload" and all(m in seen for m in MARKS):
                w = [seen["w1"] - seen["start"], seen["w2"] - seen["gen"], seen["w3"] - seen["w2"]]
            else:
                w = [None] * 3
            f = lambda v: f"{v:8.1f}" if v is not None else f"{'-':>8}"
            res = "ok" if not problems else "FAIL: " + "; ".join(problems) + f" (see {base}.out/.err)"
            failed += bool(problems)
            print(f"{host:8} {engine:6} {run:8} {f(boot)} {f(w[0])} {f(w[1])} {f(w[2])} {t:9.1f}  {res}", flush=True)
sys.exit(1 if failed else 0)
