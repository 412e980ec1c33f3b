//! `xenolith run --xenstore-socket PATH`: Debian's own xenstore clients (xenstore-utils,
//! with XENSTORED_PATH naming the socket) against a running guest. The guest is
//! roms/pv/xswait.elf: it waits in sched_op poll on its store port, copies data/ping to
//! data/pong whenever its watch fires, and powers off when control/shutdown says so.
//! Skipped, with a message, when xenstore-ls is not installed (CI installs xenstore-utils).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn have_clients() -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("xenstore-ls").is_file()));
    if !found {
        println!(
            "SKIP: xenstore-ls not installed (apt-get install xenstore-utils) to enable this test"
        );
    }
    found
}

fn rom(name: &str) -> String {
    format!("{}/roms/pv/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A child process killed when the test ends, whatever happens.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait up to `t` for the child to exit.
fn wait_exit(c: &mut Child, t: Duration) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    while t0.elapsed() < t {
        if let Some(s) = c.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Run a command to its end (killed, failing the test, if it takes over 10 s; its output
/// must fit the pipes).
fn output(mut cmd: Command) -> Output {
    let mut c = Kill(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}")),
    );
    let status =
        wait_exit(&mut c.0, Duration::from_secs(10)).unwrap_or_else(|| panic!("{cmd:?} hangs"));
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    c.0.stdout.take().unwrap().read_to_end(&mut stdout).unwrap();
    c.0.stderr.take().unwrap().read_to_end(&mut stderr).unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

struct Xs<'a>(&'a Path);

impl Xs<'_> {
    fn cmd(&self, tool: &str, args: &[&str]) -> Command {
        let mut c = Command::new(tool);
        c.args(args)
            .env("XENSTORED_PATH", self.0)
            .stdin(Stdio::null());
        c
    }
    fn run(&self, tool: &str, args: &[&str]) -> Output {
        output(self.cmd(tool, args))
    }
    /// Run a tool that must succeed; its stdout.
    fn ok(&self, tool: &str, args: &[&str]) -> String {
        let o = self.run(tool, args);
        assert!(
            o.status.success(),
            "{tool} {args:?}: {:?}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

fn sock_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("xenolith-test-{}-{name}.sock", std::process::id()))
}

#[test]
fn debian_xenstore_clients_inspect_and_change_a_running_guest() {
    if !have_clients() {
        return;
    }
    let t0 = Instant::now();
    let path = sock_path("clients");
    let mut guest = Kill(
        Command::new(env!("CARGO_BIN_EXE_xenolith"))
            .args([
                "run",
                "--kernel",
                &rom("xswait.elf"),
                "--memory",
                "64",
                "--xenstore-socket",
            ])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let xs = Xs(&path);
    // The guest registered its watches when it wrote data/ready.
    let mut ready = false;
    while !ready && t0.elapsed() < Duration::from_secs(10) {
        if let Some(s) = guest.0.try_wait().unwrap() {
            panic!("xenolith exited early: {s:?}");
        }
        ready = path.exists()
            && xs
                .run("xenstore-read", &["/local/domain/1/data/ready"])
                .stdout
                == b"1\n";
        if !ready {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(ready, "the guest never wrote data/ready");

    // What the toolstack wrote, as xenstore-ls shows it.
    let ls = xs.ok("xenstore-ls", &["/local/domain/1"]);
    for want in [
        "name = \"xenolith\"",
        "domid = \"1\"",
        "console = \"\"",
        " ring-ref = ",
        " port = \"2\"",
        "store = \"\"",
        "ready = \"1\"",
    ] {
        assert!(ls.contains(want), "{want} missing:\n{ls}");
    }
    assert_eq!(
        xs.ok("xenstore-read", &["/local/domain/1/name"]),
        "xenolith\n"
    );
    assert!(xs
        .ok("xenstore-list", &["/local/domain/1/control"])
        .lines()
        .any(|l| l == "shutdown"));

    // Errors: the client's message and a failure status.
    let o = xs.run("xenstore-read", &["/local/domain/1/missing"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("couldn't read path /local/domain/1/missing"),
        "{o:?}"
    );

    // write, read back, permissions, rm.
    xs.ok("xenstore-write", &["/local/domain/1/data/x", "some value"]);
    assert_eq!(
        xs.ok("xenstore-read", &["/local/domain/1/data/x"]),
        "some value\n"
    );
    xs.ok("xenstore-exists", &["/local/domain/1/data/x"]);
    xs.ok("xenstore-chmod", &["/local/domain/1/data/x", "n0", "r1"]);
    let lsp = xs.ok("xenstore-ls", &["-p", "/local/domain/1/data"]);
    assert!(
        lsp.lines()
            .any(|l| l.starts_with("x = \"some value\"") && l.ends_with("(n0,r1)")),
        "{lsp}"
    );
    xs.ok("xenstore-rm", &["/local/domain/1/data/x"]);
    assert!(!xs
        .run("xenstore-exists", &["/local/domain/1/data/x"])
        .status
        .success());

    // Watches both ways: the client's write of data/ping fires the guest's watch (its ring,
    // its store port, while it waits in sched_op poll); the guest's write of data/pong fires
    // the client's watch. xenstore-watch prints the path once on registration, once for the
    // change.
    let mut watch = Kill(
        xs.cmd("xenstore-watch", &["-n", "2", "/local/domain/1/data/pong"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Its lines through a thread, so that a hang fails the test instead of blocking it.
    let (tx, lines) = std::sync::mpsc::channel();
    let out = watch.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let line = || {
        lines
            .recv_timeout(Duration::from_secs(5))
            .expect("a line from xenstore-watch")
    };
    assert_eq!(
        line(),
        "/local/domain/1/data/pong",
        "the registration event"
    );
    xs.ok("xenstore-write", &["/local/domain/1/data/ping", "hello"]);
    let status = wait_exit(&mut watch.0, Duration::from_secs(5))
        .expect("xenstore-watch saw the guest's write");
    assert!(status.success());
    assert_eq!(line(), "/local/domain/1/data/pong");
    assert_eq!(
        xs.ok("xenstore-read", &["/local/domain/1/data/pong"]),
        "hello\n"
    );

    // A second server on the same socket is refused.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xenolith"));
    cmd.args([
        "run",
        "--kernel",
        &rom("xswait.elf"),
        "--memory",
        "64",
        "--xenstore-socket",
    ])
    .arg(&path);
    let o = output(cmd);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already listening"),
        "{o:?}"
    );

    // The toolstack's shutdown request: the guest powers off, the socket goes away.
    xs.ok(
        "xenstore-write",
        &["/local/domain/1/control/shutdown", "poweroff"],
    );
    let status = wait_exit(&mut guest.0, Duration::from_secs(10)).expect("the guest powered off");
    let out = guest.0.stdout.take().map(|mut s| {
        let mut v = String::new();
        s.read_to_string(&mut v).unwrap();
        v
    });
    let out = out.unwrap_or_default();
    assert!(out.contains("XENOLITH-TEST xswait: PASS"), "{out}");
    assert_eq!(status.code(), Some(0));
    assert!(!path.exists(), "the socket file is removed at exit");
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
}

#[test]
fn a_path_that_is_not_a_socket_is_refused() {
    let path = sock_path("file");
    std::fs::write(&path, b"not a socket").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xenolith"));
    cmd.args([
        "run",
        "--kernel",
        &rom("xswait.elf"),
        "--memory",
        "64",
        "--xenstore-socket",
    ])
    .arg(&path);
    let o = output(cmd);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("exists and is not a socket"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket", "left alone");
    std::fs::remove_file(&path).unwrap();
}
