//! PV-GRUB 2.06 from Debian (roms/grub/build.sh builds the images into the cache; CI runs
//! it first). Skipped, with a message, when the images are not there.

use std::path::PathBuf;
use std::process::Command;

fn cached(name: &str) -> Option<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = std::env::var_os("XENOLITH_CACHE") {
        c.push(PathBuf::from(p).join("grub").join(name));
    }
    c.push(PathBuf::from("/var/cache/xenolith/grub").join(name));
    let found = c.into_iter().find(|p| p.is_file());
    if found.is_none() {
        println!("SKIP: no cached PV-GRUB image {name}; run roms/grub/build.sh to enable this test");
    }
    found
}

fn run(args: &[&str]) -> (String, String, Option<i32>) {
    let out = Command::new(env!("CARGO_BIN_EXE_xenolith")).args(args).output().expect("run xenolith");
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned(), out.status.code())
}

/// GRUB's own functional tests (pbkdf2, setjmp, division, shifts, ...) in a 64-bit PV GRUB:
/// it uses the console ring, xenstore, grant tables and event channels to get that far.
#[test]
fn pv_grub_x86_64_functional_tests_pass() {
    let Some(img) = cached("ft64.xen") else { return };
    let (so, se, code) = run(&["run", "--kernel", img.to_str().unwrap()]);
    assert!(so.contains("Welcome to GRUB!"), "{so}\n{se}");
    for t in ["pbkdf2_test: PASS", "setjmp_test: PASS", "div_test: PASS", "exfctest: PASS"] {
        assert!(so.contains(t), "{t} missing:\n{so}");
    }
    assert!(so.contains("ALL TESTS PASSED"), "{so}\n{se}");
    assert!(!so.contains("FAIL"), "{so}");
    // `halt` powers the domain off.
    assert_eq!(code, Some(0), "{se}");
}

/// The same tests in a 32-bit PAE PV GRUB (ring 1, `int $0x82` hypercalls, compat
/// structures, the compat M2P in its top L2).
#[test]
fn pv_grub_i386_pae_functional_tests_pass() {
    let Some(img) = cached("ft32.xen") else { return };
    let (so, se, code) = run(&["run", "--kernel", img.to_str().unwrap()]);
    assert!(so.contains("Welcome to GRUB!"), "{so}\n{se}");
    for t in ["pbkdf2_test: PASS", "setjmp_test: PASS", "div_test: PASS", "exfctest: PASS"] {
        assert!(so.contains(t), "{t} missing:\n{so}");
    }
    assert!(so.contains("ALL TESTS PASSED"), "{so}\n{se}");
    assert!(!so.contains("FAIL"), "{so}");
    assert_eq!(code, Some(0), "{se}");
}
