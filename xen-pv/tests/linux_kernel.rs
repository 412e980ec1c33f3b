//! Debian's stock amd64 kernel (a bzImage with an xz+BCJ payload), fetched and cached by
//! `roms/linux/fetch-kernel.sh`. Skipped, with a message, when the file is not there.
//!
//! Looked up in order: $XENOLITH_KERNEL (a vmlinuz path), $XENOLITH_CACHE/linux/vmlinuz,
//! /var/cache/xenolith/linux/vmlinuz, $HOME/.cache/xenolith/linux/vmlinuz.

use std::path::PathBuf;
use xen_pv::image::*;

fn kernel_path() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("XENOLITH_KERNEL") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(c) = std::env::var_os("XENOLITH_CACHE") {
        candidates.push(PathBuf::from(c).join("linux/vmlinuz"));
    }
    candidates.push(PathBuf::from("/var/cache/xenolith/linux/vmlinuz"));
    if let Some(h) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(h).join(".cache/xenolith/linux/vmlinuz"));
    }
    candidates.into_iter().find(|p| p.is_file())
}

#[test]
fn debian_linux_6_1_kernel() {
    let Some(path) = kernel_path() else {
        println!(
            "SKIP: no cached Debian kernel; run roms/linux/fetch-kernel.sh to enable this test"
        );
        return;
    };
    let bytes = std::fs::read(&path).unwrap();
    let img = GuestImage::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));

    let bz = img.container.bzimage.expect("a bzImage");
    assert!(bz.protocol >= 0x020f, "protocol {:#x}", bz.protocol);
    assert_eq!(
        bz.compression,
        Compression::Xz,
        "Debian compresses with xz (x86 BCJ)"
    );
    assert!(img.is_64bit());
    assert_eq!(img.guest_type(), "xen-3.0-x86_64");

    let x = &img.xen;
    assert_eq!(x.source, NoteSource::ProgramHeaders);
    assert_eq!(x.guest_os, "linux");
    assert_eq!(x.xen_version, "xen-3.0");
    assert_eq!(x.loader, "generic");
    assert_eq!(x.pae, PaeMode::ExtendedCr3);
    assert_eq!(x.virt_base, 0xffff_ffff_8000_0000);
    assert_eq!(x.elf_paddr_offset, 0);
    assert_eq!(x.p2m_base, Some(0x80_0000_0000));
    assert_eq!(x.virt_hv_start_low, Some(0xffff_8000_0000_0000));
    assert!(x.unmapped_initrd, "MOD_START_PFN");
    assert_eq!(x.suspend_cancel, Some(1));
    assert_eq!(x.l1_mfn_valid, Some(vec![(1, 1)]));
    assert!(x.phys_entry.is_some(), "PHYS32_ENTRY (PVH)");
    assert!(x.features.requires(feat::WRITABLE_PAGE_TABLES));
    assert!(x.features.supports(feat::PAE_PGDIR_ABOVE_4GB));
    assert!(x.notes.iter().any(|n| n.kind == note::ENTRY));
    assert!(x.notes.iter().any(|n| n.kind == note::SUPPORTED_FEATURES));

    let l = &img.layout;
    assert_eq!(l.virt_kstart, 0xffff_ffff_8100_0000);
    assert!(l.virt_kend > l.virt_kstart && l.virt_kend - l.virt_kstart < 256 << 20);
    assert!(x.virt_entry >= l.virt_kstart && x.virt_entry < l.virt_kend);
    // Linux dropped its HYPERCALL_PAGE note in late 2024 (also in 6.1 stable); when a kernel
    // has one it lies inside the image.
    if let Some(hc) = x.virt_hypercall {
        assert!(hc >= l.virt_kstart && hc < l.virt_kend && hc % 4096 == 0);
    } else {
        println!("note: this kernel has no HYPERCALL_PAGE note");
    }
    // The per-cpu segment has vaddr 0 but a paddr inside the image: placement uses paddr.
    assert!(l.segments.len() >= 3);
    for s in &l.segments {
        assert!(s.vaddr >= l.virt_kstart && s.vaddr + s.memsz <= l.virt_kend);
        assert_eq!(s.gpa, s.elf_paddr);
    }

    // Load it and compare every segment's bytes.
    let base = l.gpa_start(x.virt_base);
    let mut mem = vec![0xa5u8; (l.virt_kend - l.virt_kstart) as usize];
    img.load(&mut SliceSink {
        base,
        mem: &mut mem,
    })
    .unwrap();
    let elf = img.elf_bytes();
    for s in &l.segments {
        let at = (s.gpa - base) as usize;
        let file = &elf[s.file_offset as usize..(s.file_offset + s.filesz) as usize];
        assert!(
            &mem[at..at + s.filesz as usize] == file,
            "segment {}",
            s.index
        );
        assert!(mem[at + s.filesz as usize..at + s.memsz as usize]
            .iter()
            .all(|&b| b == 0));
    }
    println!(
        "{}: {} bytes ELF, kernel {:#x}..{:#x}, entry {:#x}, {} Xen notes",
        path.display(),
        elf.len(),
        l.virt_kstart,
        l.virt_kend,
        x.virt_entry,
        x.notes.len()
    );
}
