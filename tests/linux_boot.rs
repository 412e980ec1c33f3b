//! Debian's stock Linux 6.1 as a 64-bit PV guest, with the busybox initramfs that
//! roms/linux/build.sh makes (both cached outside the repository; CI builds them first).
//! Skipped, with a message, when they are not there.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn cached(name: &str) -> Option<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = std::env::var_os("XENOLITH_CACHE") {
        c.push(PathBuf::from(p).join("linux").join(name));
    }
    c.push(PathBuf::from("/var/cache/xenolith/linux").join(name));
    if let Some(h) = std::env::var_os("HOME") {
        c.push(PathBuf::from(h).join(".cache/xenolith/linux").join(name));
    }
    c.into_iter().find(|p| p.is_file())
}

fn images() -> Option<(PathBuf, PathBuf)> {
    match (cached("vmlinuz"), cached("initrd.gz")) {
        (Some(k), Some(i)) => Some((k, i)),
        _ => {
            println!("SKIP: no cached Debian kernel/initramfs; run roms/linux/build.sh to enable this test");
            None
        }
    }
}

fn xenolith() -> Command {
    common::xenolith()
}

#[test]
fn boots_to_init_runs_a_script_and_powers_off() {
    let Some((k, i)) = images() else { return };
    let out = xenolith()
        .args([
            "run",
            "--kernel",
            k.to_str().unwrap(),
            "--ramdisk",
            i.to_str().unwrap(),
        ])
        .args([
            "--cmdline",
            "console=hvc0 xenolith.script=hello",
            "--memory",
            "512",
        ])
        .output()
        .unwrap();
    let so = String::from_utf8_lossy(&out.stdout);
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(so.contains("XENOLITH-LINUX: init"), "{so}\n{se}");
    assert!(so.contains("kernel: Linux 6.1"), "{so}");
    assert!(so.contains("hypervisor: xen"), "{so}");
    // /proc/cpuinfo shows the advertised CPUID policy.
    assert!(
        so.contains("model name\t: Xenolith x86-64 virtual CPU"),
        "{so}"
    );
    let flags = so
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    for f in [
        " sse2 ", " ssse3 ", " sse4_1 ", " sse4_2 ", " popcnt ", " xsave ", " cx16 ",
    ] {
        assert!(flags.contains(f), "flag{f}missing: {flags}");
    }
    assert!(!flags.contains(" avx "), "{flags}");
    assert!(so.contains("XENOLITH-LINUX: hello done"), "{so}");
    assert!(
        so.contains("XENOLITH-LINUX: script hello exited with status 0"),
        "{so}"
    );
    // Every MSR the kernel touches is emulated (Xen's PV MSR policy).
    assert!(!so.contains("unchecked MSR access"), "{so}");
    assert_eq!(out.status.code(), Some(0), "{se}");
}

/// Drive a console session: `child` is the running guest (its stdin and stdout piped);
/// each (command, expected output) is typed with `enter` after the prompt; then `poweroff
/// -f` must end the run with status 0.
fn console_session(mut child: std::process::Child, enter: &str, steps: &[(&str, &str)]) -> String {
    // Kill the guest if the test fails half way (a panic must not leave it running).
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
    let mut so = child.stdout.take().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut child = Kill(child);
    let b2 = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = so.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b2.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    let wait_for = |what: &str, after: usize| -> usize {
        let t = Instant::now();
        loop {
            {
                let b = buf.lock().unwrap();
                let s = String::from_utf8_lossy(&b[after.min(b.len())..]).to_string();
                if let Some(p) = s.find(what) {
                    return after + p + what.len();
                }
            }
            if t.elapsed() > Duration::from_secs(120) {
                let b = buf.lock().unwrap();
                panic!(
                    "timed out waiting for {what:?}; console so far:\n{}",
                    String::from_utf8_lossy(&b)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut pos = wait_for("xenolith# ", 0);
    for (cmd, want) in steps {
        stdin.write_all(format!("{cmd}{enter}").as_bytes()).unwrap();
        stdin.flush().unwrap();
        // The echo of the command line, then its output, then the next prompt.
        pos = wait_for(cmd, pos);
        pos = wait_for(want, pos);
        pos = wait_for("xenolith# ", pos);
    }
    stdin
        .write_all(format!("poweroff -f{enter}").as_bytes())
        .unwrap();
    stdin.flush().unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "no poweroff");
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
    assert_eq!(status.code(), Some(0), "{status:?}; console:\n{out}");
    out
}

/// A session over the console: commands typed into stdin reach the shell on hvc0, their
/// output comes back, and `poweroff -f` ends the run with status 0.
#[test]
fn interactive_shell_over_the_console() {
    let Some((k, i)) = images() else { return };
    let child = xenolith()
        .args([
            "run",
            "--kernel",
            k.to_str().unwrap(),
            "--ramdisk",
            i.to_str().unwrap(),
        ])
        .args(["--cmdline", "console=hvc0 quiet", "--memory", "512"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    console_session(
        child,
        "\n",
        &[
            ("echo calc=$((6*7))", "calc=42"),
            ("cat /sys/hypervisor/type", "xen"),
            ("uname -m", "x86_64"),
            ("grep -c processor /proc/cpuinfo", "1"),
        ],
    );
}

/// The same as a person at a terminal: xenolith runs on a pty (util-linux `script`), so it
/// puts the terminal in raw mode and takes the realtime clock; Enter sends a carriage
/// return. The commands of the Linux issue, with a disk attached so xenbus has a device.
#[test]
fn scripted_session_on_a_pty() {
    let Some((k, i)) = images() else { return };
    if Command::new("script").arg("--version").output().is_err() {
        println!("SKIP: util-linux `script` is not installed");
        return;
    }
    let Some((dir, img)) = rootfs_copy("pty") else {
        return;
    };
    let run = format!(
        "{} run --kernel {} --ramdisk {} --memory 512 --cmdline 'console=hvc0 quiet' --disk {},raw,xvdb,ro",
        env!("CARGO_BIN_EXE_xenolith"),
        k.display(),
        i.display(),
        img.display()
    );
    let child = Command::new("script")
        .args(["-qfec", &run, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = console_session(
        child,
        "\r",
        &[
            ("echo hello-$((2+3))", "hello-5"),
            ("uname -a", "Linux (none) 6.1"),
            ("cat /proc/cpuinfo", "Xenolith x86-64 virtual CPU"),
            ("ls /sys/bus/xen/devices", "vbd-51728"),
            ("dmesg | grep -c 'Xen version'", "1"),
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
    // /proc/cpuinfo came through in full: the policy's flags.
    assert!(out.contains(" sse4_2 ") && out.contains(" xsave "), "{out}");
}

/// A corrupt initramfs gets the kernel's own error (and then its panic, exit status 1),
/// not an emulator failure.
#[test]
fn corrupt_initramfs_is_the_kernels_error() {
    let Some((k, _)) = images() else { return };
    let dir = std::env::temp_dir().join(format!("xenolith-bad-initrd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("initrd.gz");
    // Garbage that is not an archive in any format the kernel knows.
    let bytes: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 1)
        .collect();
    std::fs::write(&bad, &bytes).unwrap();
    let out = xenolith()
        .args([
            "run",
            "--kernel",
            k.to_str().unwrap(),
            "--ramdisk",
            bad.to_str().unwrap(),
        ])
        .args(["--cmdline", "console=hvc0", "--memory", "512"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let so = String::from_utf8_lossy(&out.stdout);
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(so.contains("Initramfs unpacking failed"), "{so}");
    assert!(so.contains("Kernel panic"), "{so}");
    assert!(se.contains("guest crashed"), "{se}");
    assert!(!se.contains("not emulated yet"), "{se}");
    assert_eq!(out.status.code(), Some(1));
}

fn e2fs_tool(name: &str) -> Command {
    let mut c = Command::new(name);
    c.env(
        "PATH",
        format!(
            "{}:/sbin:/usr/sbin",
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    c
}

/// A copy of the pristine root disk in a fresh temporary directory.
fn rootfs_copy(tag: &str) -> Option<(PathBuf, PathBuf)> {
    let base = cached("rootfs.img").or_else(|| {
        println!("SKIP: no cached rootfs.img; run roms/linux/build.sh to enable this test");
        None
    })?;
    let dir = std::env::temp_dir().join(format!("xenolith-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("rootfs.img");
    std::fs::copy(&base, &img).unwrap();
    Some((dir, img))
}

fn boot_from_disk(
    k: &PathBuf,
    i: &PathBuf,
    disk: &str,
    script: &str,
) -> (String, String, Option<i32>) {
    let out = xenolith()
        .args([
            "run",
            "--kernel",
            k.to_str().unwrap(),
            "--ramdisk",
            i.to_str().unwrap(),
            "--memory",
            "512",
        ])
        .args([
            "--cmdline",
            &format!("console=hvc0 root=/dev/xvda xenolith.script={script}"),
            "--disk",
            disk,
        ])
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code(),
    )
}

/// Root on a Xen disk: the kernel's xen-blkfront finds xvda through xenstore, mounts the
/// ext4 image through the block back end, and a file the guest writes is in the image
/// afterwards (read back with Debian's debugfs; e2fsck finds the filesystem clean).
#[test]
fn root_on_disk_and_a_written_file_reaches_the_image() {
    let Some((k, i)) = images() else { return };
    let Some((dir, img)) = rootfs_copy("rootdisk") else {
        return;
    };
    let (so, se, code) = boot_from_disk(
        &k,
        &i,
        &format!("{},raw,xvda,rw", img.display()),
        "disk-write",
    );
    assert!(so.contains("blkfront: xvda:"), "{so}\n{se}");
    assert!(
        so.contains("XENOLITH-LINUX: init on /dev/xvda ext4"),
        "{so}\n{se}"
    );
    assert!(
        so.contains("XENOLITH-LINUX: wrote written by the guest"),
        "{so}"
    );
    assert_eq!(code, Some(0), "{se}");
    let cat = e2fs_tool("debugfs")
        .args(["-R", "cat /root/written.txt"])
        .arg(&img)
        .output()
        .expect("debugfs (e2fsprogs)");
    let text = String::from_utf8_lossy(&cat.stdout);
    assert!(
        text.starts_with("written by the guest at uptime "),
        "{text}"
    );
    assert!(
        so.contains(&format!("XENOLITH-LINUX: wrote {}", text.trim())),
        "{so}"
    );
    let fsck = e2fs_tool("e2fsck")
        .args(["-fn"])
        .arg(&img)
        .output()
        .expect("e2fsck (e2fsprogs)");
    assert_eq!(
        fsck.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A copy-on-write overlay keeps the base image unmodified; a second boot with the same
/// overlay sees the file the first one wrote.
#[test]
fn overlay_keeps_the_base_image_and_persists_writes() {
    let Some((k, i)) = images() else { return };
    let Some((dir, img)) = rootfs_copy("overlay") else {
        return;
    };
    let before = std::fs::read(&img).unwrap();
    let cow = dir.join("rootfs.cow");
    let spec = format!("{},raw,xvda,rw,overlay={}", img.display(), cow.display());
    let (so, se, code) = boot_from_disk(&k, &i, &spec, "disk-write");
    assert!(
        so.contains("XENOLITH-LINUX: wrote written by the guest"),
        "{so}\n{se}"
    );
    assert_eq!(code, Some(0), "{se}");
    assert!(
        std::fs::read(&img).unwrap() == before,
        "the base image changed"
    );
    assert!(std::fs::metadata(&cow).unwrap().len() > 0);
    let line = so
        .lines()
        .find(|l| l.starts_with("XENOLITH-LINUX: wrote "))
        .unwrap()
        .replace("XENOLITH-LINUX: wrote ", "");
    let (so2, se2, code2) = boot_from_disk(&k, &i, &spec, "disk-read");
    assert!(
        so2.contains(&format!("XENOLITH-LINUX: read {}", line.trim())),
        "{so2}\n{se2}"
    );
    assert_eq!(code2, Some(0), "{se2}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn slept(so: &str) -> f64 {
    let line = so
        .lines()
        .find(|l| l.starts_with("XENOLITH-LINUX: slept from "))
        .unwrap_or_else(|| panic!("no sleep line:\n{so}"));
    let w: Vec<f64> = line
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    w[1] - w[0]
}

/// `sleep 5` takes 5 s of guest time on the deterministic clock (which skips ahead while
/// the guest is idle, so it takes less wall time), and about 5 s of wall time too on the
/// realtime clock.
#[test]
fn sleep_takes_five_seconds_of_guest_time_on_both_clocks() {
    let Some((k, i)) = images() else { return };
    for clock in ["deterministic", "realtime"] {
        let t = Instant::now();
        let out = xenolith()
            .args([
                "run",
                "--clock",
                clock,
                "--kernel",
                k.to_str().unwrap(),
                "--ramdisk",
                i.to_str().unwrap(),
                "--memory",
                "512",
            ])
            .args(["--cmdline", "console=hvc0 xenolith.script=sleep"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let wall = t.elapsed().as_secs_f64();
        let so = String::from_utf8_lossy(&out.stdout);
        let d = slept(&so);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{clock}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if clock == "deterministic" {
            assert!(
                (5.0..5.1).contains(&d),
                "{clock}: slept {d} s of guest time"
            );
        } else {
            assert!(
                (5.0..6.0).contains(&d),
                "{clock}: slept {d} s of guest time"
            );
            assert!(
                wall >= 5.0,
                "{clock}: the whole run took {wall} s of wall time"
            );
        }
    }
}
