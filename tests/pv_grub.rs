//! PV-GRUB 2.06 from Debian (roms/grub/build.sh builds the images into the cache; CI runs
//! it first). Skipped, with a message, when the images are not there.

mod common;

use std::path::PathBuf;

fn cached(name: &str) -> Option<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = std::env::var_os("XENOLITH_CACHE") {
        c.push(PathBuf::from(p).join("grub").join(name));
    }
    c.push(PathBuf::from("/var/cache/xenolith/grub").join(name));
    let found = c.into_iter().find(|p| p.is_file());
    if found.is_none() {
        println!(
            "SKIP: no cached PV-GRUB image {name}; run roms/grub/build.sh to enable this test"
        );
    }
    found
}

fn run(args: &[&str]) -> (String, String, Option<i32>) {
    let out = common::xenolith()
        .args(args)
        .output()
        .expect("run xenolith");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code(),
    )
}

/// GRUB's own functional tests (pbkdf2, setjmp, division, shifts, ...) in a 64-bit PV GRUB:
/// it uses the console ring, xenstore, grant tables and event channels to get that far.
#[test]
fn pv_grub_x86_64_functional_tests_pass() {
    let Some(img) = cached("ft64.xen") else {
        return;
    };
    let (so, se, code) = run(&["run", "--kernel", img.to_str().unwrap()]);
    assert!(so.contains("Welcome to GRUB!"), "{so}\n{se}");
    for t in [
        "pbkdf2_test: PASS",
        "setjmp_test: PASS",
        "div_test: PASS",
        "exfctest: PASS",
    ] {
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
    let Some(img) = cached("ft32.xen") else {
        return;
    };
    let (so, se, code) = run(&["run", "--kernel", img.to_str().unwrap()]);
    assert!(so.contains("Welcome to GRUB!"), "{so}\n{se}");
    for t in [
        "pbkdf2_test: PASS",
        "setjmp_test: PASS",
        "div_test: PASS",
        "exfctest: PASS",
    ] {
        assert!(so.contains(t), "{t} missing:\n{so}");
    }
    assert!(so.contains("ALL TESTS PASSED"), "{so}\n{se}");
    assert!(!so.contains("FAIL"), "{so}");
    assert_eq!(code, Some(0), "{se}");
}

/// PV-GRUB with a Xen disk: `xen_ls` reads the domain's xenstore directory, and GRUB's
/// Xen disk driver (blkfront) reads an ext2 filesystem made by Debian's mke2fs through the
/// block back end (xenstore handshake, grant-mapped ring, event channel).
#[test]
fn pv_grub_lists_xenstore_and_reads_an_ext2_disk() {
    let (Some(img), Some(disk)) = (cached("disk64.xen"), cached("disk.img")) else {
        return;
    };
    let spec = format!("{},raw,xvda,ro", disk.display());
    let (so, se, code) = run(&["run", "--kernel", img.to_str().unwrap(), "--disk", &spec]);
    let so = so.replace('\r', "");
    assert!(so.contains("XENOLITH-GRUB: disks"), "{so}\n{se}");
    // xen_ls: the children of /local/domain/1 as the toolstack made them.
    for n in ["\ndevice\n", "\nconsole\n", "\nmemory\n", "\ndomid\n"] {
        assert!(so.contains(n), "{n:?} missing:\n{so}");
    }
    assert!(so.contains("(xen/xvda)"), "{so}");
    assert!(so.contains("lost+found/ boot/ hello.txt"), "{so}");
    assert!(so.contains("hello from an ext2 disk"), "{so}\n{se}");
    assert!(so.contains("XENOLITH-GRUB: end"), "{so}");
    assert_eq!(code, Some(0), "{se}");
}

/// Debian's prebuilt pvgrub2 (grub-xen-host) finds /boot/grub/grub.cfg on the Xen disk
/// given in an xl config file and runs it.
#[test]
fn debian_pvgrub2_boots_grub_cfg_from_the_disk() {
    let (Some(img), Some(disk)) = (cached("pvgrub64.bin"), cached("disk.img")) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("xenolith-pvgrub-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("pvgrub.cfg");
    std::fs::write(&cfg, format!("name = 'pvgrub'\ntype = 'pv'\nkernel = '{}'\nmemory = 128\ndisk = [ '{},raw,xvda,ro' ]\n", img.display(), disk.display())).unwrap();
    let (so, se, code) = run(&["run", cfg.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        so.contains("Reading (xen/xvda)/boot/grub/grub.cfg"),
        "{so}\n{se}"
    );
    assert!(
        so.contains("XENOLITH-GRUB: grub.cfg from the disk"),
        "{so}\n{se}"
    );
    assert!(so.contains("hello from an ext2 disk"), "{so}");
    assert_eq!(code, Some(0), "{se}");
}
