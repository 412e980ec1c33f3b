//! Image parsing: synthetic ELF64/ELF32 kernels with Xen notes in PT_NOTE, in SHT_NOTE only,
//! and in `__xen_guest` only; every error; the load into guest memory.

mod common;

use common::*;
use std::borrow::Cow;
use xen_pv::image::*;

fn parse(bytes: &[u8]) -> Result<GuestImage<'static>, ImageError> {
    GuestImage::parse(bytes).map(GuestImage::into_owned)
}

fn err(bytes: &[u8]) -> ImageError {
    match parse(bytes) {
        Ok(img) => panic!("parsed, expected an error: {:?}", img.xen),
        Err(e) => {
            let s = e.to_string();
            assert!(
                !s.contains('\n') && !s.is_empty(),
                "one-line message: {s:?}"
            );
            e
        }
    }
}

/// Guest memory for tests: a Vec backing [base, base + len).
fn load_into(img: &GuestImage<'_>) -> (u64, Vec<u8>) {
    let base = img.layout.gpa_start(img.xen.virt_base);
    let len = img.layout.virt_kend - img.layout.virt_kstart;
    let mut mem = vec![0xccu8; len as usize];
    img.load(&mut SliceSink {
        base,
        mem: &mut mem,
    })
    .unwrap();
    (base, mem)
}

#[test]
fn elf64_notes_in_pt_note() {
    let b = linux64_elf(0x1800);
    let bytes = b.build();
    let img = GuestImage::parse(&bytes).unwrap();
    assert!(img.is_64bit());
    assert_eq!(img.guest_type(), "xen-3.0-x86_64");
    assert_eq!(
        img.container,
        Container {
            gzip: false,
            bzimage: None
        }
    );
    assert!(
        matches!(img.elf_bytes(), b if b.as_ptr() == bytes.as_ptr()),
        "borrowed"
    );
    let x = &img.xen;
    assert_eq!(x.source, NoteSource::ProgramHeaders);
    assert_eq!(x.guest_os, "linux");
    assert_eq!(x.guest_version, "2.6");
    assert_eq!(x.xen_version, "xen-3.0");
    assert_eq!(x.loader, "generic");
    assert_eq!(x.pae, PaeMode::ExtendedCr3);
    assert_eq!(x.virt_base, LINUX64_VIRT_BASE);
    assert_eq!(x.elf_paddr_offset, 0);
    assert_eq!(x.virt_entry, LINUX64_ENTRY);
    assert_eq!(x.virt_hypercall, Some(LINUX64_HYPERCALL));
    assert_eq!(x.p2m_base, Some(0x80_0000_0000));
    assert_eq!(x.virt_hv_start_low, Some(0xffff_8000_0000_0000));
    assert!(x.unmapped_initrd);
    assert_eq!(x.suspend_cancel, Some(1));
    assert_eq!(x.l1_mfn_valid, Some(vec![(1, 1)]));
    assert_eq!(x.phys_entry, Some(0x0100_0850));
    assert!(!x.bsd_symtab);
    assert!(x.features.requires(feat::WRITABLE_PAGE_TABLES));
    assert!(!x.features.requires(feat::PAE_PGDIR_ABOVE_4GB));
    assert!(x.features.supports(feat::PAE_PGDIR_ABOVE_4GB));
    // SUPPORTED_FEATURES 0x8801 ORs in bits 0, 11 (dom0) and 15.
    assert_eq!(
        x.features.supported,
        0x8801 | 1 << feat::PAE_PGDIR_ABOVE_4GB
    );
    assert_eq!(x.notes.len(), 17, "every note recorded once");
    assert_eq!(x.notes[0].name, "GUEST_OS");
    assert_eq!(x.notes[0].value, NoteValue::Str("linux".into()));
    let l1 = x
        .notes
        .iter()
        .find(|n| n.kind == note::L1_MFN_VALID)
        .unwrap();
    assert_eq!(
        l1.value,
        NoteValue::Num(0),
        "libelf reads a 16-byte desc as 0"
    );
    assert_eq!(l1.desc.len(), 16);

    let l = &img.layout;
    assert_eq!(l.pstart, 0x100_0000);
    assert_eq!(l.pend, 0x100_2000 + 0x3000);
    assert_eq!(l.virt_offset, LINUX64_VIRT_BASE);
    assert_eq!(l.virt_kstart, LINUX64_TEXT);
    assert_eq!(l.virt_kend, LINUX64_TEXT + 0x5000);
    assert_eq!(l.segments.len(), 2);
    assert_eq!(l.segments[0].gpa, 0x100_0000);
    assert_eq!(l.segments[0].vaddr, LINUX64_TEXT);
    assert_eq!(l.segments[1].gpa, 0x100_2000);
    assert_eq!(l.segments[1].filesz, 0x800);
    assert_eq!(l.segments[1].memsz, 0x3000);
    assert_eq!(l.gpa_start(x.virt_base), 0x100_0000);

    let (base, mem) = load_into(&img);
    assert_eq!(base, 0x100_0000);
    assert_eq!(&mem[..0x1800], &code_like(0x1800)[..]);
    assert!(
        mem[0x1800..0x2000].iter().all(|&c| c == 0),
        "text bss (memsz rounded up) zeroed"
    );
    assert_eq!(&mem[0x2000..0x2800], &prng_bytes(3, 0x800)[..]);
    assert!(mem[0x2800..0x5000].iter().all(|&c| c == 0), "bss zeroed");
}

#[test]
fn elf64_load_with_closure_sink() {
    let bytes = linux64_elf(0x1000).build();
    let img = parse(&bytes).unwrap();
    let mut writes = Vec::new();
    img.load(&mut |gpa: u64, d: &[u8]| -> Result<(), ImageError> {
        writes.push((gpa, d.len()));
        Ok(())
    })
    .unwrap();
    assert_eq!(writes[0], (0x100_0000, 0x1000));
    assert_eq!(writes[1], (0x100_1000, 0x800));
    let zeroed: usize = writes[2..].iter().map(|w| w.1).sum();
    assert_eq!(zeroed, 0x3000 - 0x800);
}

fn linux32_notes(pae: Option<&str>) -> Vec<u8> {
    let mut n = Vec::new();
    n.extend(xen_str(note::GUEST_OS, "linux"));
    n.extend(xen_str(note::GUEST_VERSION, "2.6"));
    n.extend(xen_str(note::XEN_VERSION, "xen-3.0"));
    n.extend(xen_num(note::VIRT_BASE, 0xC000_0000, false));
    n.extend(xen_num(note::PADDR_OFFSET, 0, false));
    n.extend(xen_num(note::ENTRY, 0xC100_0000, false));
    n.extend(xen_num(note::HYPERCALL_PAGE, 0xC100_2000, false));
    n.extend(xen_num(note::HV_START_LOW, 0xF580_0000, false));
    n.extend(xen_str(
        note::FEATURES,
        "!writable_page_tables|pae_pgdir_above_4gb",
    ));
    if let Some(p) = pae {
        n.extend(xen_str(note::PAE_MODE, p));
    }
    n.extend(xen_str(note::LOADER, "generic"));
    n
}

fn linux32_elf(pae: Option<&str>) -> ElfBuilder {
    let mut b = ElfBuilder::new(false)
        .load(
            PF_R | PF_X,
            0xC100_0000,
            0x100_0000,
            code_like(0x3000),
            0x3000,
        )
        .load(
            PF_R | PF_W,
            0xC100_3000,
            0x100_3000,
            prng_bytes(9, 0x100),
            0x1000,
        )
        .pt_note(linux32_notes(pae));
    b.entry = 0xC100_0000;
    b
}

#[test]
fn elf32_pae_notes() {
    let bytes = linux32_elf(Some("yes")).build();
    let img = parse(&bytes).unwrap();
    assert!(!img.is_64bit());
    assert_eq!(img.class(), ElfClass::Elf32);
    assert_eq!(img.guest_type(), "xen-3.0-x86_32p");
    let x = &img.xen;
    assert_eq!(x.pae, PaeMode::ExtendedCr3);
    assert_eq!(x.virt_base, 0xC000_0000);
    assert_eq!(x.virt_entry, 0xC100_0000);
    assert_eq!(x.virt_hypercall, Some(0xC100_2000));
    assert_eq!(x.virt_hv_start_low, Some(0xF580_0000));
    assert_eq!(x.p2m_base, None);
    assert_eq!(img.layout.virt_kstart, 0xC100_0000);
    assert_eq!(img.layout.virt_kend, 0xC100_4000);
    let (base, mem) = load_into(&img);
    assert_eq!(base, 0x100_0000);
    assert_eq!(&mem[..0x3000], &code_like(0x3000)[..]);
    assert_eq!(&mem[0x3000..0x3100], &prng_bytes(9, 0x100)[..]);
    assert!(mem[0x3100..].iter().all(|&c| c == 0));

    for (s, want) in [
        ("bimodal", PaeMode::Bimodal),
        ("yes,bimodal", PaeMode::Bimodal),
    ] {
        let bytes = linux32_elf(Some(s)).build();
        assert_eq!(parse(&bytes).unwrap().xen.pae, want, "{s}");
    }
    // libelf recognises only "yes" and "bimodal" in the note.
    let bytes = linux32_elf(Some("no")).build();
    assert_eq!(err(&bytes), ImageError::NoPae);
    let bytes = linux32_elf(None).build();
    assert_eq!(err(&bytes), ImageError::NoPae);
}

#[test]
fn notes_only_in_sht_note() {
    let mut b = ElfBuilder::new(true)
        .load(
            PF_R | PF_X,
            LINUX64_TEXT,
            0x100_0000,
            code_like(0x2000),
            0x2000,
        )
        .section(".note.xen", SHT_NOTE, linux64_notes());
    b.entry = LINUX64_ENTRY;
    let img = parse(&b.build()).unwrap();
    assert_eq!(img.xen.source, NoteSource::Sections);
    assert_eq!(img.xen.virt_base, LINUX64_VIRT_BASE);
    assert_eq!(img.xen.virt_entry, LINUX64_ENTRY);

    // A PT_NOTE holding only non-Xen notes does not stop the fallback.
    let gnu = elf_note("GNU", 3, &[0xab; 20]);
    let b = b.pt_note(gnu);
    let img = parse(&b.build()).unwrap();
    assert_eq!(img.xen.source, NoteSource::Sections);

    // PT_NOTE with Xen notes wins: sections are not read (their bad XEN_VERSION is ignored).
    let mut other = linux64_notes();
    other.extend(xen_str(note::XEN_VERSION, "xen-4.0"));
    let mut b = linux64_elf(0x1000);
    b.secs[0].data = other;
    assert_eq!(
        parse(&b.build()).unwrap().xen.source,
        NoteSource::ProgramHeaders
    );

    // A PT_NOTE with p_offset 0 is skipped (binutils bug workaround).
    let mut b = ElfBuilder::new(true)
        .load(
            PF_R | PF_X,
            LINUX64_TEXT,
            0x100_0000,
            code_like(0x2000),
            0x2000,
        )
        .pt_note(linux64_notes())
        .section(".note.xen", SHT_NOTE, linux64_notes());
    b.segs[1].offset = Some(0);
    b.entry = LINUX64_ENTRY;
    assert_eq!(parse(&b.build()).unwrap().xen.source, NoteSource::Sections);
}

const LEGACY32: &str = "GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0xC0000000,\
ELF_PADDR_OFFSET=0xC0000000,HYPERCALL_PAGE=0x2,LOADER=generic,\
FEATURES=writable_page_tables|!writable_descriptor_tables,PAE=yes[extended-cr3]";

fn legacy32_elf(guest: &str) -> ElfBuilder {
    let mut g = guest.as_bytes().to_vec();
    g.push(0);
    let mut b = ElfBuilder::new(false)
        .load(
            PF_R | PF_W | PF_X,
            0xC010_0000,
            0xC010_0000,
            code_like(0x2400),
            0x3000,
        )
        .section("__xen_guest", SHT_PROGBITS, g);
    b.entry = 0xC010_0000;
    b
}

#[test]
fn notes_only_in_xen_guest_section() {
    let img = parse(&legacy32_elf(LEGACY32).build()).unwrap();
    let x = &img.xen;
    assert_eq!(x.source, NoteSource::XenGuestSection);
    assert!(x.notes.is_empty());
    assert_eq!(x.virt_base, 0xC000_0000);
    assert_eq!(x.elf_paddr_offset, 0xC000_0000);
    assert_eq!(
        x.virt_hypercall,
        Some(0xC000_2000),
        "page index from VIRT_BASE"
    );
    assert_eq!(x.pae, PaeMode::ExtendedCr3);
    assert_eq!(x.virt_entry, 0xC010_0000, "e_entry");
    assert_eq!(x.features.supported, 0b11);
    assert_eq!(x.features.required, 0b10);
    assert_eq!(img.layout.virt_offset, 0);
    assert_eq!(img.layout.virt_kstart, 0xC010_0000);
    assert_eq!(img.layout.segments[0].gpa, 0x10_0000);
    let (base, mem) = load_into(&img);
    assert_eq!(base, 0x10_0000);
    assert_eq!(&mem[..0x2400], &code_like(0x2400)[..]);

    // ELF_PADDR_OFFSET defaults to VIRT_BASE with __xen_guest.
    let s = "GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0xC0000000,PAE=yes";
    let img = parse(&legacy32_elf(s).build()).unwrap();
    assert_eq!(img.xen.elf_paddr_offset, 0xC000_0000);
    assert_eq!(img.xen.pae, PaeMode::Yes);
    assert_eq!(img.xen.virt_hypercall, None);
    assert_eq!(img.layout.virt_kstart, 0xC010_0000);

    // VIRT_ENTRY overrides e_entry.
    let s = format!("{LEGACY32},VIRT_ENTRY=0xC0100010");
    assert_eq!(
        parse(&legacy32_elf(&s).build()).unwrap().xen.virt_entry,
        0xC010_0010
    );
}

#[test]
fn broken_note_owner_falls_back_to_xen_guest() {
    // Notes owned "XEN" / "Xen " are not Xen notes.
    let mut bad = Vec::new();
    bad.extend(elf_note("XEN", note::GUEST_OS, b"linux\0"));
    bad.extend(elf_note("Xen ", note::XEN_VERSION, b"xen-3.0\0"));
    let b = legacy32_elf(LEGACY32)
        .pt_note(bad.clone())
        .section(".note", SHT_NOTE, bad);
    let img = parse(&b.build()).unwrap();
    assert_eq!(img.xen.source, NoteSource::XenGuestSection);
    assert_eq!(img.xen.virt_hypercall, Some(0xC000_2000));
}

#[test]
fn elf_default_virt_base_and_entry() {
    // Only the mandatory notes: VIRT_BASE 0, PADDR_OFFSET 0, ENTRY = e_entry.
    let mut n = xen_str(note::GUEST_OS, "Mini-OS");
    n.extend(xen_str(note::LOADER, "generic"));
    n.extend(xen_str(note::XEN_VERSION, "xen-3.0"));
    let mut b = ElfBuilder::new(true)
        .load(PF_R | PF_X, 0, 0, code_like(0x1000), 0x1000)
        .pt_note(n);
    b.entry = 0x10;
    let img = parse(&b.build()).unwrap();
    assert_eq!(img.xen.virt_base, 0);
    assert_eq!(img.xen.elf_paddr_offset, 0);
    assert_eq!(img.xen.virt_entry, 0x10);
    assert_eq!(img.layout.virt_kstart, 0);
    assert_eq!(img.layout.segments[0].gpa, 0);
}

#[test]
fn zero_size_pt_load_tolerated() {
    let mut b = linux64_elf(0x1000);
    // p_offset far beyond the file, p_filesz = p_memsz = 0, inside the kernel range.
    b.segs.push(Seg {
        p_type: PT_LOAD,
        flags: PF_R,
        vaddr: LINUX64_TEXT + 0x1000,
        paddr: 0x100_1000,
        data: vec![],
        memsz: 0,
        offset: Some(0xdead_beef),
    });
    let img = parse(&b.build()).unwrap();
    assert_eq!(img.layout.segments.len(), 2);
    load_into(&img);
    // PT_LOADs without R/W/X are not loadable at all (libelf).
    let mut b = linux64_elf(0x1000);
    b.segs.push(Seg {
        p_type: PT_LOAD,
        flags: 0,
        vaddr: 0,
        paddr: 0,
        data: vec![1; 16],
        memsz: 0x1000_0000,
        offset: None,
    });
    let img = parse(&b.build()).unwrap();
    assert_eq!(img.layout.pstart, 0x100_0000);
}

#[test]
fn bsd_symtab_appended() {
    for is64 in [true, false] {
        let mut n = xen_str(note::GUEST_OS, "NetBSD");
        n.extend(xen_str(note::LOADER, "generic"));
        n.extend(xen_str(note::XEN_VERSION, "xen-3.0"));
        n.extend(xen_str(note::BSD_SYMTAB, "yes"));
        n.extend(xen_str(note::PAE_MODE, "yes"));
        n.extend(xen_num(note::VIRT_BASE, 0xC000_0000, is64));
        let sym_entry = if is64 { 24 } else { 16 };
        let symtab = prng_bytes(11, sym_entry * 5);
        let strtab = b"\0start\0end\0main\0".to_vec();
        let mut b = ElfBuilder::new(is64)
            .load(
                PF_R | PF_X,
                0xC010_0000,
                0x10_0000,
                code_like(0x1ffd),
                0x1ffd,
            )
            .pt_note(n)
            .section(".strtab", SHT_STRTAB, strtab.clone())
            .section(".symtab", SHT_SYMTAB, symtab.clone());
        b.secs[1].link = 1; // section index of .strtab
        b.secs[1].entsize = sym_entry as u64;
        b.entry = 0xC010_0000;
        let bytes = b.build();
        let img = parse(&bytes).unwrap();
        let sym = img.layout.bsd_symtab.clone().expect("symtab");
        let align = if is64 { 8 } else { 4 };
        assert_eq!(sym.vaddr, (0xC010_1FFD + align - 1) & !(align - 1));
        assert_eq!(sym.gpa, sym.vaddr - 0xC000_0000);
        assert_eq!(img.layout.virt_kend, sym.vaddr + sym.size);
        let (base, mem) = load_into(&img);
        let at = (sym.gpa - base) as usize;
        let area = &mem[at..];
        let rd32 = |o: usize| u32::from_le_bytes(area[o..o + 4].try_into().unwrap());
        let rd16 = |o: usize| u16::from_le_bytes(area[o..o + 2].try_into().unwrap());
        let rdw = |o: usize| {
            if is64 {
                u64::from_le_bytes(area[o..o + 8].try_into().unwrap())
            } else {
                rd32(o) as u64
            }
        };
        // Size, then an ELF header whose section headers sit 64 bytes after it.
        let ehdr = 4;
        assert_eq!(&area[ehdr..ehdr + 4], b"\x7fELF");
        let (shoff_at, shnum_at, shentsize_at) = if is64 { (40, 60, 58) } else { (32, 48, 46) };
        assert_eq!(rdw(ehdr + shoff_at), 64);
        assert_eq!(rd16(ehdr + shnum_at), 3);
        let shsz = if is64 { 64 } else { 40 };
        assert_eq!(rd16(ehdr + shentsize_at) as usize, shsz);
        let sh = |i: usize| ehdr + 64 + i * shsz;
        assert!(area[sh(0)..sh(1)].iter().all(|&c| c == 0), "null section");
        let off_at = if is64 { 24 } else { 16 };
        let size_at = if is64 { 32 } else { 20 };
        let link_at = if is64 { 40 } else { 24 };
        assert_eq!(rd32(sh(1) + 4), SHT_SYMTAB);
        assert_eq!(rd32(sh(1) + link_at), 2);
        assert_eq!(rd32(sh(2) + 4), SHT_STRTAB);
        let sym_off = rdw(sh(1) + off_at) as usize;
        let str_off = rdw(sh(2) + off_at) as usize;
        assert_eq!(rdw(sh(1) + size_at) as usize, symtab.len());
        assert_eq!(
            &area[ehdr + sym_off..ehdr + sym_off + symtab.len()],
            &symtab[..]
        );
        assert_eq!(
            &area[ehdr + str_off..ehdr + str_off + strtab.len()],
            &strtab[..]
        );
        assert_eq!(
            rd32(0) as usize,
            str_off + strtab.len(),
            "size from the ELF header"
        );
        assert!(ehdr + str_off + strtab.len() <= sym.size as usize);
    }
}

#[test]
fn gzip_compressed_elf_file() {
    use flate2::{write::GzEncoder, Compression as Level};
    use std::io::Write;
    let elf = linux64_elf(0x4000).build();
    let mut enc = GzEncoder::new(Vec::new(), Level::best());
    enc.write_all(&elf).unwrap();
    let gz = enc.finish().unwrap();
    let img = parse(&gz).unwrap();
    assert!(img.container.gzip);
    assert_eq!(img.elf_bytes(), &elf[..]);
}

#[test]
fn from_elf_directly() {
    let elf = linux64_elf(0x1000).build();
    let img = GuestImage::from_elf(
        Cow::Owned(elf),
        Container {
            gzip: false,
            bzimage: None,
        },
    )
    .unwrap();
    assert_eq!(img.xen.virt_base, LINUX64_VIRT_BASE);
}

// ---------------------------------------------------------------- errors

fn with_notes(notes: Vec<u8>) -> Vec<u8> {
    let mut b = ElfBuilder::new(true)
        .load(
            PF_R | PF_X,
            LINUX64_TEXT,
            0x100_0000,
            code_like(0x2000),
            0x2000,
        )
        .pt_note(notes);
    b.entry = LINUX64_ENTRY;
    b.build()
}

fn notes_replacing(kind: u32, replacement: Option<Vec<u8>>) -> Vec<u8> {
    // Rebuild the Linux notes with one type replaced (or dropped).
    let mut n = Vec::new();
    let mut push = |k: u32, v: Vec<u8>| {
        if k == kind {
            if let Some(r) = &replacement {
                n.extend(r.clone());
            }
        } else {
            n.extend(v);
        }
    };
    push(note::GUEST_OS, xen_str(note::GUEST_OS, "linux"));
    push(note::XEN_VERSION, xen_str(note::XEN_VERSION, "xen-3.0"));
    push(
        note::VIRT_BASE,
        xen_num(note::VIRT_BASE, LINUX64_VIRT_BASE, true),
    );
    push(note::ENTRY, xen_num(note::ENTRY, LINUX64_ENTRY, true));
    push(note::LOADER, xen_str(note::LOADER, "generic"));
    push(
        note::FEATURES,
        xen_str(note::FEATURES, "!writable_page_tables"),
    );
    push(
        note::INIT_P2M,
        xen_num(note::INIT_P2M, 0x80_0000_0000, true),
    );
    n
}

#[test]
fn error_unknown_format() {
    assert_eq!(err(&[]), ImageError::UnknownFormat);
    assert_eq!(
        err(b"MZ\x90\x00 not a kernel at all"),
        ImageError::UnknownFormat
    );
    assert_eq!(err(&prng_bytes(1, 4096)), ImageError::UnknownFormat);
}

#[test]
fn error_truncated() {
    let full = linux64_elf(0x1000).build();
    assert!(matches!(
        err(&full[..40]),
        ImageError::Truncated {
            what: "ELF header",
            ..
        }
    ));
    assert!(matches!(
        err(&full[..100]),
        ImageError::Truncated {
            what: "program header table",
            ..
        }
    ));
    // Cut inside the section header table.
    assert!(matches!(
        err(&full[..full.len() - 10]),
        ImageError::Truncated {
            what: "section header table",
            ..
        }
    ));
    // A PT_LOAD whose file bytes are beyond the end.
    let mut b = linux64_elf(0x1000);
    b.segs[0].offset = Some(0x10_0000);
    assert!(matches!(
        err(&b.build()),
        ImageError::Truncated {
            what: "PT_LOAD segment",
            ..
        }
    ));
    // A PT_NOTE beyond the end.
    let mut b = linux64_elf(0x1000);
    b.segs[2].offset = Some(0x10_0000);
    assert!(matches!(
        err(&b.build()),
        ImageError::Truncated {
            what: "PT_NOTE segment",
            ..
        }
    ));
    // Every truncation of a valid image is an error, never a panic.
    for n in 0..full.len() {
        assert!(parse(&full[..n]).is_err(), "prefix {n}");
    }
}

#[test]
fn error_wrong_class_endian_machine() {
    let mut b = linux64_elf(0x1000);
    b.class = 3;
    assert_eq!(err(&b.build()), ImageError::WrongClass(3));
    let mut b = linux64_elf(0x1000);
    b.data_enc = 2;
    assert_eq!(err(&b.build()), ImageError::WrongEndian(2));
    let mut b = linux64_elf(0x1000);
    b.machine = 3;
    assert_eq!(
        err(&b.build()),
        ImageError::WrongMachine {
            class: 2,
            machine: 3
        }
    );
    let mut b = linux32_elf(Some("yes"));
    b.machine = 62;
    assert_eq!(
        err(&b.build()),
        ImageError::WrongMachine {
            class: 1,
            machine: 62
        }
    );
    let mut b = linux64_elf(0x1000);
    b.machine = 183; // aarch64
    assert!(matches!(
        err(&b.build()),
        ImageError::WrongMachine { machine: 183, .. }
    ));
}

#[test]
fn error_bad_header_and_segments() {
    let mut b = linux64_elf(0x1000);
    b.phentsize = Some(32);
    assert!(matches!(err(&b.build()), ImageError::BadHeader(_)));

    let mut b = linux64_elf(0x1000);
    b.segs[0].memsz = 0x800; // filesz 0x1000
    assert!(matches!(
        err(&b.build()),
        ImageError::BadSegment { index: 0, .. }
    ));

    let mut b = linux64_elf(0x1000);
    b.segs[1].paddr = 0xffff_ffff_ffff_f000;
    assert!(matches!(
        err(&b.build()),
        ImageError::BadSegment { index: 1, .. }
    ));

    let mut b = linux64_elf(0x1000);
    b.segs[1].paddr = 0x100_0800; // inside the text segment
    assert_eq!(
        err(&b.build()),
        ImageError::OverlappingSegments {
            first: 0,
            second: 1,
            addr: 0x100_0800
        }
    );

    let b = ElfBuilder::new(true).pt_note(linux64_notes());
    assert_eq!(err(&b.build()), ImageError::NoLoadableSegments);
}

#[test]
fn error_missing_and_bad_notes() {
    let mut b = ElfBuilder::new(true).load(PF_R | PF_X, 0x1000, 0x1000, code_like(64), 64);
    b.entry = 0x1000;
    assert_eq!(err(&b.build()), ImageError::MissingXenNotes);
    // Only non-Xen notes and no __xen_guest.
    let b = b.pt_note(elf_note("GNU", 3, &[1; 20]));
    assert_eq!(err(&b.build()), ImageError::MissingXenNotes);

    // A numeric note whose desc runs past the end of the file (running past its segment
    // into the file is allowed, as libelf reads it).
    let mut n = linux64_notes();
    let mut bad = elf_note("Xen", note::ENTRY, &[0; 8]);
    bad[4..8].copy_from_slice(&0x100_0000u32.to_le_bytes());
    n.extend(bad);
    assert!(matches!(err(&with_notes(n)), ImageError::BadNote { .. }));
    // Name runs past the end of the file.
    let mut n = linux64_notes();
    n.extend_from_slice(&0x100_0000u32.to_le_bytes());
    n.extend_from_slice(&0u32.to_le_bytes());
    n.extend_from_slice(&1u32.to_le_bytes());
    n.extend_from_slice(b"Xen\0");
    assert!(matches!(err(&with_notes(n)), ImageError::BadNote { .. }));
}

#[test]
fn error_loader_version_features() {
    // Neither generic nor linux.
    let n = notes_replacing(note::LOADER, Some(xen_str(note::LOADER, "special")));
    let n2: Vec<u8> = {
        let mut v = Vec::new();
        v.extend(xen_str(note::GUEST_OS, "FreeBSD"));
        v.extend(xen_str(note::XEN_VERSION, "xen-3.0"));
        v.extend(xen_num(note::ENTRY, LINUX64_ENTRY, true));
        v.extend(xen_num(note::VIRT_BASE, LINUX64_VIRT_BASE, true));
        v.extend(xen_str(note::LOADER, "special"));
        v
    };
    assert!(parse(&with_notes(n)).is_ok(), "GUEST_OS linux is enough");
    assert_eq!(
        err(&with_notes(n2)),
        ImageError::UnsupportedLoader {
            loader: "special".into(),
            guest_os: "FreeBSD".into()
        }
    );
    // "generic" is enough even when GUEST_OS is something else; prefixes count.
    let mut v = xen_str(note::GUEST_OS, "FreeBSD");
    v.extend(xen_str(note::XEN_VERSION, "xen-3.0.4"));
    v.extend(xen_num(note::ENTRY, LINUX64_ENTRY, true));
    v.extend(xen_num(note::VIRT_BASE, LINUX64_VIRT_BASE, true));
    v.extend(xen_str(note::LOADER, "generic-ish"));
    assert!(parse(&with_notes(v)).is_ok());

    let n = notes_replacing(
        note::XEN_VERSION,
        Some(xen_str(note::XEN_VERSION, "xen-4.0")),
    );
    assert_eq!(
        err(&with_notes(n)),
        ImageError::UnsupportedXenVersion("xen-4.0".into())
    );
    let n = notes_replacing(note::XEN_VERSION, None);
    assert_eq!(
        err(&with_notes(n)),
        ImageError::UnsupportedXenVersion(String::new())
    );

    let n = notes_replacing(note::FEATURES, Some(xen_str(note::FEATURES, "!frobnicate")));
    assert_eq!(
        err(&with_notes(n)),
        ImageError::UnknownRequiredFeature("frobnicate".into())
    );
    let n = notes_replacing(
        note::FEATURES,
        Some(xen_str(note::FEATURES, "frobnicate|dom0")),
    );
    assert!(
        parse(&with_notes(n)).is_ok(),
        "unknown optional features are ignored"
    );
    let n = notes_replacing(note::FEATURES, Some(xen_str(note::FEATURES, "!dom0")));
    assert_eq!(err(&with_notes(n)), ImageError::Dom0Only);
}

#[test]
fn error_addresses() {
    // Entry outside the kernel.
    let n = notes_replacing(
        note::ENTRY,
        Some(xen_num(note::ENTRY, LINUX64_TEXT + 0x10_0000, true)),
    );
    assert!(matches!(
        err(&with_notes(n)),
        ImageError::AddressOutOfBounds(_)
    ));
    // A numeric note of an odd size reads as 0 (libelf), which is out of bounds here.
    let n = notes_replacing(note::ENTRY, Some(elf_note("Xen", note::ENTRY, &[1, 2, 3])));
    assert!(matches!(
        err(&with_notes(n)),
        ImageError::AddressOutOfBounds(_)
    ));
    // PADDR_OFFSET without VIRT_BASE.
    let mut n = notes_replacing(note::VIRT_BASE, None);
    n.extend(xen_num(note::PADDR_OFFSET, 0, true));
    assert!(matches!(
        err(&with_notes(n)),
        ImageError::AddressOutOfBounds(_)
    ));
    // VIRT_BASE above the kernel.
    let n = notes_replacing(
        note::VIRT_BASE,
        Some(xen_num(note::VIRT_BASE, LINUX64_TEXT + 0x1000, true)),
    );
    assert!(matches!(
        err(&with_notes(n)),
        ImageError::AddressOutOfBounds(_)
    ));
    // P2M inside the kernel.
    let n = notes_replacing(
        note::INIT_P2M,
        Some(xen_num(note::INIT_P2M, LINUX64_TEXT + 0x1000, true)),
    );
    assert!(matches!(
        err(&with_notes(n)),
        ImageError::AddressOutOfBounds(_)
    ));
    // Kernel start not on a page.
    let mut b = ElfBuilder::new(true)
        .load(
            PF_R | PF_X,
            LINUX64_TEXT + 0x10,
            0x100_0010,
            code_like(0x1000),
            0x1000,
        )
        .pt_note(notes_replacing(
            note::ENTRY,
            Some(xen_num(note::ENTRY, LINUX64_TEXT + 0x10, true)),
        ));
    b.entry = LINUX64_TEXT + 0x10;
    assert_eq!(
        err(&b.build()),
        ImageError::UnalignedKernelStart(LINUX64_TEXT + 0x10)
    );
}

#[test]
fn error_does_not_fit() {
    let bytes = linux64_elf(0x1000).build();
    let img = parse(&bytes).unwrap();
    let mut mem = vec![0u8; 0x1800];
    let e = img
        .load(&mut SliceSink {
            base: 0x100_0000,
            mem: &mut mem,
        })
        .unwrap_err();
    assert!(matches!(e, ImageError::DoesNotFit { .. }), "{e}");
    assert!(!e.to_string().contains('\n'));
}

#[test]
fn random_corruption_never_panics() {
    let base = linux64_elf(0x800).build();
    let noise = prng_bytes(99, 40_000);
    let mut k = 0;
    for round in 0..4000 {
        let mut v = base.clone();
        let flips = 1 + round % 6;
        for _ in 0..flips {
            let pos =
                (noise[k] as usize | (noise[k + 1] as usize) << 8 | (noise[k + 2] as usize) << 16)
                    % v.len();
            v[pos] = noise[k + 3];
            k = (k + 4) % (noise.len() - 4);
        }
        if let Ok(img) = parse(&v) {
            // Whatever parses must load into a bounded sink without panicking.
            let mut mem = vec![0u8; 0x10000];
            let _ = img.load(&mut SliceSink {
                base: img.layout.gpa_start(img.xen.virt_base),
                mem: &mut mem,
            });
        }
    }
}
