//! GNU Mach 1.8 from Debian (`gnumach-image-1.8-xen-486`, a 64-bit PV kernel; roms/mach/fetch.sh
//! puts it in the cache, CI runs it first). Skipped, with a message, when it is not there.
//!
//! Under Xen this image stops in pmap_remove_temporary_mapping: it writes its page directory
//! (`kernel_page_dir[0] = kernel_page_dir[512]`) after remapping that page read-only itself
//! and linking it into its page tables. Xen emulates such writes only for L1 tables
//! (ptwr) and forwards the #PF, and Mach's handler panics. The test pins that sequence: the
//! guest's own remap, then exactly that fault delivered to it, then its crash (exit 1).

mod common;

use std::path::PathBuf;

fn cached() -> Option<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = std::env::var_os("XENOLITH_CACHE") {
        c.push(PathBuf::from(p).join("mach/gnumach-xen.elf"));
    }
    c.push(PathBuf::from("/var/cache/xenolith/mach/gnumach-xen.elf"));
    let found = c.into_iter().find(|p| p.is_file());
    if found.is_none() {
        println!("SKIP: no cached GNU Mach image; run roms/mach/fetch.sh to enable this test");
    }
    found
}

#[test]
fn gnumach_faults_on_its_read_only_page_directory_as_under_xen() {
    let Some(img) = cached() else {
        return;
    };
    for log in ["hypercalls", "traps"] {
        let out = common::xenolith()
            .args(["run", "--kernel", img.to_str().unwrap(), "--memory", "256"])
            .args(["--log", log])
            .output()
            .expect("run xenolith");
        let se = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{se}");
        if log == "hypercalls" {
            // Mach maps its page directory read-only itself (RW bit clear) and pins it.
            assert!(
                se.contains("update_va_mapping(0x4012d000, 0x12d001, 0x0) = Ok(0)"),
                "{se}"
            );
        } else {
            // The first trap is the write to it (present + write; the U bit is the CPL 3
            // engine's, cleared for the kernel-mode frame), which Mach does not survive.
            let first = se.lines().find(|l| l.contains("(XEN) trap")).unwrap_or("");
            assert_eq!(
                first, "(XEN) trap 14 ec Some(7) addr 0x4012d000 at rip 0x4000524c",
                "{se}"
            );
        }
    }
}
