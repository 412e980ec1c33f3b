//! End to end: `xenolith run` on the PV test guests in roms/pv.

mod common;

use std::process::Output;

fn xenolith(args: &[&str]) -> Output {
    common::xenolith()
        .args(args)
        .output()
        .expect("run xenolith")
}

fn rom(name: &str) -> String {
    format!("{}/roms/pv/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn hello_guest_passes_on_both_engines() {
    for engine in ["interp", "jit"] {
        let out = xenolith(&[
            "run",
            "--kernel",
            &rom("hello.elf"),
            "--engine",
            engine,
            "--memory",
            "64",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // console_io output and the console ring both reach the terminal, once each.
        assert_eq!(
            stdout.matches("xenolith-hello: console_io works").count(),
            1,
            "{engine}: {stdout}"
        );
        assert_eq!(
            stdout.matches("XENOLITH-TEST hello: PASS").count(),
            1,
            "{engine}: {stdout}\n{stderr}"
        );
        // One sink, in the order the guest produced them: console_io first, then the ring.
        assert!(
            stdout.find("console_io works") < stdout.find("XENOLITH-TEST hello: PASS"),
            "{engine}: {stdout}"
        );
        assert_eq!(out.status.code(), Some(0), "{engine}: {stderr}");
        // The unimplemented hypercall it probes is logged.
        assert!(
            stderr.contains("hypercall 41 (dm_op) not implemented"),
            "{stderr}"
        );
    }
}

#[test]
fn default_guest_is_the_demo() {
    let out = common::xenolith()
        .arg("run")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("XENOLITH-TEST hello: PASS"));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn hypercall_log_shows_calls_and_results() {
    let out = xenolith(&[
        "run",
        "--kernel",
        &rom("hello.elf"),
        "--log",
        "hypercalls",
        "--memory",
        "64",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hypercall xen_version(0x0, "), "{stderr}");
    assert!(
        stderr.contains("hypercall dm_op(") && stderr.contains("Err(38)"),
        "{stderr}"
    );
    assert!(stderr.contains("hypercall sched_op(0x2, "), "{stderr}");
}

#[test]
fn guest_fault_without_handler_crashes_the_guest_not_the_emulator() {
    let out = xenolith(&["run", "--kernel", &rom("crash.elf"), "--memory", "64"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("guest crashed: unhandled #UD (vector 6"),
        "{stderr}"
    );
    // The register dump shows the guest's state at the fault.
    assert!(stderr.contains("r15: 00000000deadbeef"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("about to execute ud2"));
}

#[test]
fn instruction_budget_ends_the_run_with_status_1() {
    let out = xenolith(&[
        "run",
        "--kernel",
        &rom("hello.elf"),
        "--max-insns",
        "5",
        "--memory",
        "64",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("instruction budget exhausted"));
}

#[test]
fn bad_images_get_status_2_and_one_line() {
    let flat = format!("{}/roms/hello/hello.bin", env!("CARGO_MANIFEST_DIR"));
    let out = xenolith(&["run", "--kernel", &flat]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not an ELF image"), "{stderr}");
    let out = xenolith(&["run", "--kernel", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn info_prints_notes_and_layout() {
    let out = xenolith(&["info", &rom("hello.elf"), "--memory", "64"]);
    assert_eq!(out.status.code(), Some(0));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("xen-3.0-x86_64"), "{s}");
    assert!(s.contains("\"xenolith-hello\""), "{s}");
    assert!(s.contains("start info"), "{s}");
}

/// Run a self-checking guest from roms/pv on both engines: it must print its PASS line and
/// power off.
fn guest_passes(name: &str) {
    for engine in ["interp", "jit"] {
        let out = xenolith(&[
            "run",
            "--kernel",
            &rom(&format!("{name}.elf")),
            "--engine",
            engine,
            "--memory",
            "64",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = format!("XENOLITH-TEST {name}: PASS");
        assert!(
            stdout.contains(&line),
            "{engine}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0), "{engine}");
    }
}

#[test]
fn mm_guest_passes_on_both_engines() {
    guest_passes("mm");
}

#[test]
fn grant_guest_passes_on_both_engines() {
    guest_passes("grant");
}

/// A 32-bit PAE kernel in ring 1: compat bounce frames from ring 1 and ring 3 (on the
/// stack_switch stack), compat HYPERVISOR_iret to both rings, the int DPL rule, a user #PF.
#[test]
fn traps32_guest_passes_on_both_engines() {
    guest_passes("traps32");
}

#[test]
fn privop_guest_passes_on_both_engines() {
    guest_passes("privop");
}

#[test]
fn events_guest_passes_on_both_engines() {
    guest_passes("events");
}

#[test]
fn fifo_guest_passes_on_both_engines() {
    guest_passes("fifo");
}

/// MMUEXT_SET_LDT: argument checks, LDT segment loads (pages mapped on first use), #NP and
/// #GP with LDT selectors, a null LDT, update_descriptor into a mapped LDT page.
#[test]
fn ldt_guest_passes_on_both_engines() {
    guest_passes("ldt");
}

#[test]
fn traps_guest_passes_on_both_engines() {
    guest_passes("traps");
}

#[test]
fn events_guest_passes_in_realtime_mode() {
    let out = xenolith(&[
        "run",
        "--kernel",
        &rom("events.elf"),
        "--clock",
        "realtime",
        "--memory",
        "64",
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("XENOLITH-TEST events: PASS"));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn deterministic_runs_are_identical() {
    // Same guest, same clock: the hypercall log (arguments and results, timer deadlines
    // included) is the same on every run and on both engines.
    let log = |engine: &str| {
        let out = xenolith(&[
            "run",
            "--kernel",
            &rom("events.elf"),
            "--engine",
            engine,
            "--log",
            "hypercalls",
            "--memory",
            "64",
        ]);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let a = log("jit");
    assert!(a.contains("set_timer_op"), "{a}");
    assert_eq!(a, log("jit"));
    assert_eq!(a, log("interp"));
}

#[test]
fn xl_config_file_runs_the_guest() {
    let dir = std::env::temp_dir().join(format!("xenolith-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("hello.cfg");
    std::fs::write(&cfg, format!("name = 'hello'\ntype = 'pv'\nkernel = '{}'\nmemory = 32\nvcpus = 1\non_crash = 'destroy'\n", rom("hello.elf"))).unwrap();
    let out = xenolith(&["run", cfg.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("XENOLITH-TEST hello: PASS"));
    assert_eq!(out.status.code(), Some(0));
    std::fs::write(&cfg, "type = 'hvm'\n").unwrap();
    let out = xenolith(&["run", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PV guests only"));
    std::fs::remove_dir_all(&dir).unwrap();
}
