//! Debian's stock Linux 6.1 (fetched by roms/linux/fetch-kernel.sh) as a 64-bit PV guest
//! without an initramfs: start_kernel's early work (memory setup, page-table handover,
//! per-CPU areas, vcpu_info placement, event channels, earlyprintk through console_io),
//! then the kernel's own panic for want of a root file system (exit status 1).
//! tests/linux_boot.rs boots it to userspace. Skipped, with a message, when the kernel is
//! not cached.

mod common;

use std::path::PathBuf;

fn kernel() -> Option<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = std::env::var_os("XENOLITH_KERNEL") {
        c.push(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XENOLITH_CACHE") {
        c.push(PathBuf::from(p).join("linux/vmlinuz"));
    }
    c.push(PathBuf::from("/var/cache/xenolith/linux/vmlinuz"));
    if let Some(h) = std::env::var_os("HOME") {
        c.push(PathBuf::from(h).join(".cache/xenolith/linux/vmlinuz"));
    }
    c.into_iter().find(|p| p.is_file())
}

#[test]
fn debian_kernel_runs_start_kernel() {
    let Some(k) = kernel() else {
        println!(
            "SKIP: no cached Debian kernel; run roms/linux/fetch-kernel.sh to enable this test"
        );
        return;
    };
    let out = common::xenolith()
        .args([
            "run",
            "--kernel",
            k.to_str().unwrap(),
            "--cmdline",
            "console=hvc0 earlyprintk=xen",
            "--memory",
            "512",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("Linux version 6.1"), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Kernel command line: console=hvc0 earlyprintk=xen"),
        "{stdout}"
    );
    // The PV MMU handover worked: the kernel mapped itself and sized its memory.
    assert!(
        stdout.contains("mapping kernel into physical memory"),
        "{stdout}"
    );
    assert!(stdout.contains("Memory: "), "{stdout}");
    assert!(stdout.contains("nr_cpu_ids:1"), "{stdout}");
    // What stops it is the kernel's own report (a panic through SHUTDOWN_crash), never an
    // emulator failure.
    assert!(stdout.contains("VFS: Unable to mount root fs"), "{stdout}");
    assert!(!stderr.contains("not emulated yet"), "{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
}
