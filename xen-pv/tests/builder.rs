//! The domain builder: layouts against Xen's (the 32 MiB example of pv-abi-notes.md), the
//! guest-visible structures, page walks through the engine's x86 MMU on the state the
//! builder hands over, the platform mappings (M2P, GDT), errors, a 32-bit PAE guest, and
//! Debian's kernel when it is cached.

mod common;

use common::*;
use frontend_x86::state::Seg;
use frontend_x86::state::*;
use frontend_x86::X86Mmu;
use jit::engine::{Access, GuestFault, Mmu};
use jit::ir::AccessKind;
use jit::{Env, GuestRam};
use xen_pv::builder::abi::{sif, SharedInfo32, SharedInfo64, StartInfo32, StartInfo64};
use xen_pv::builder::*;
use xen_pv::image::*;

const PF_P: u32 = 1;
const PF_W: u32 = 2;
const PF_U: u32 = 4;

/// A 64-bit kernel at VIRT_BASE 0 loaded at 0x100000..0x111000, as in the observed example.
fn small64() -> Vec<u8> {
    let mut n = Vec::new();
    n.extend(xen_str(note::GUEST_OS, "linux"));
    n.extend(xen_str(note::XEN_VERSION, "xen-3.0"));
    n.extend(xen_str(note::LOADER, "generic"));
    n.extend(xen_num(note::VIRT_BASE, 0, true));
    n.extend(xen_num(note::ENTRY, 0x100040, true));
    n.extend(xen_num(note::HYPERCALL_PAGE, 0x101000, true));
    let text = code_like(0x3000);
    let mut b = ElfBuilder::new(true)
        .load(PF_R | PF_X, 0x100000, 0x100000, text, 0x3000)
        .load(
            PF_R | PF_W,
            0x103000,
            0x103000,
            prng_bytes(9, 0x500),
            0xe000,
        )
        .pt_note(n);
    b.entry = 0x100040;
    b.build()
}

fn ram_for(guest: GuestType, nr_pages: u64) -> GuestRam {
    GuestRam::new(ram_pages_for(guest, nr_pages) << 12).unwrap()
}

/// An Env with vCPU 0's state loaded.
fn env_for(d: &Domain) -> Box<Env> {
    let mut env = Env::new();
    d.vcpu.apply(&mut env);
    env
}

fn tr(env: &Env, ram: &mut GuestRam, va: u64, acc: Access) -> Result<u64, GuestFault> {
    X86Mmu.translate(env, ram, va, acc, AccessKind::Normal)
}

fn sys(env: &Env, ram: &mut GuestRam, va: u64, acc: Access) -> Result<u64, GuestFault> {
    X86Mmu.translate(env, ram, va, acc, AccessKind::System)
}

fn pf(code: u32, addr: u64) -> Result<u64, GuestFault> {
    Err(GuestFault {
        vector: 14,
        error_code: Some(code),
        addr,
    })
}

fn seg(start: u64, end: u64, pfn: u64, pages: u64) -> Segment {
    Segment {
        vstart: start,
        vend: end,
        pfn,
        pages,
    }
}

#[test]
fn layout_of_the_32mib_example() {
    let bytes = small64();
    let img = GuestImage::parse(&bytes).unwrap();
    let mut ram = ram_for(GuestType::X86_64, 8192);
    let cfg = DomainConfig {
        nr_pages: Some(8192),
        cmdline: b"console=hvc0 root=/dev/xvda1",
        ..DomainConfig::default()
    };
    let d = build(&mut ram, &img, &cfg).unwrap();
    let l = &d.layout;
    println!("{l}");

    // pv-abi-notes.md, "The builder's layout ... (observed, 64-bit guest, 32 MiB)".
    assert_eq!(l.nr_pages, 8192);
    assert_eq!(l.kernel, seg(0x100000, 0x111000, 0x100, 0x11));
    assert_eq!(l.p2m, seg(0x111000, 0x121000, 0x111, 16));
    assert!(!l.p2m_virtual);
    assert_eq!(l.start_info, seg(0x121000, 0x122000, 0x121, 1));
    assert_eq!(l.xenstore, seg(0x122000, 0x123000, 0x122, 1));
    assert_eq!(l.console, seg(0x123000, 0x124000, 0x123, 1));
    assert_eq!(l.pgtables, seg(0x124000, 0x129000, 0x124, 5));
    assert_eq!(l.boot_stack, seg(0x129000, 0x12a000, 0x129, 1));
    assert_eq!(l.virt_alloc_end, 0x12a000);
    assert_eq!(l.virt_pgtab_end, 0x400000);
    assert_eq!(l.pfn_alloc_end, 0x400);
    assert_eq!(
        (l.pt_base, l.nr_pt_frames, l.mfn_list),
        (0x124000, 5, 0x111000)
    );
    assert_eq!(l.flags, sif::VIRT_P2M_4TOOLS);
    assert_eq!(l.hypercall_page, Some(0x101000));
    assert!(l.module.is_none());
    // L4, L3, L2, two L1s, in that order.
    let m = &l.mappings[0];
    assert_eq!(
        [m.lvls[3].pfn, m.lvls[2].pfn, m.lvls[1].pfn, m.lvls[0].pfn],
        [0x124, 0x125, 0x126, 0x127]
    );
    assert_eq!(m.lvls[0].count, 2);

    // Platform frames at the top of RAM.
    let p = &l.platform;
    assert_eq!(p.first_mfn, 8192);
    assert_eq!(p.first_mfn + p.frames, l.ram_pages);
    assert_eq!(p.shared_info_mfn, 8192);
    assert_eq!(p.m2p_entries, l.ram_pages);
    assert_eq!(p.m2p_va, 0xffff_8000_0000_0000);

    // start_info.
    let si: StartInfo64 = read_struct(&ram, 0x121000).unwrap();
    assert_eq!(&si.magic[..15], b"xen-3.0-x86_64\0");
    assert_eq!(si.nr_pages, 8192);
    assert_eq!(si.shared_info, 8192 << 12);
    assert_eq!(si.flags, sif::VIRT_P2M_4TOOLS);
    assert_eq!(si.flags & sif::INITDOMAIN, 0);
    assert_eq!((si.store_mfn, si.store_evtchn), (0x122, 1));
    assert_eq!((si.console.mfn, si.console.evtchn), (0x123, 2));
    assert_eq!((si.pt_base, si.nr_pt_frames), (0x124000, 5));
    assert_eq!(si.mfn_list, 0x111000);
    assert_eq!((si.mod_start, si.mod_len), (0, 0));
    assert_eq!((si.first_p2m_pfn, si.nr_p2m_frames), (0, 0));
    assert_eq!(&si.cmd_line[..29], b"console=hvc0 root=/dev/xvda1\0");
    assert!(si.cmd_line[29..].iter().all(|&b| b == 0));

    // shared_info: every vcpu_info masked, everything else zero.
    let sh: SharedInfo64 = read_struct(&ram, 8192 << 12).unwrap();
    assert!(sh
        .vcpu_info
        .iter()
        .all(|v| v.evtchn_upcall_mask == 1 && v.evtchn_upcall_pending == 0));
    assert!(sh
        .evtchn_pending
        .iter()
        .chain(sh.evtchn_mask.iter())
        .all(|&w| w == 0));
    assert_eq!(sh.arch.max_pfn, 0);

    // p2m: identity, 8 bytes per entry.
    for pfn in [0u64, 1, 0x100, 0x1fff] {
        assert_eq!(ram.read_u64(0x111000 + pfn * 8), Some(pfn));
    }
    // The kernel's bytes are in place, the bss zero, the ring pages zero.
    let elf = img.elf_bytes();
    let s0 = &img.layout.segments[0];
    assert_eq!(
        ram.slice(0x100000, 0x3000).unwrap(),
        &elf[s0.file_offset as usize..][..0x3000]
    );
    assert!(ram
        .slice(0x103500, 0xe000 - 0x500)
        .unwrap()
        .iter()
        .all(|&b| b == 0));
    assert!(ram.slice(0x122000, 0x2000).unwrap().iter().all(|&b| b == 0));

    // Initial registers.
    let v = &d.vcpu;
    assert_eq!((v.rip, v.rsp, v.rsi), (0x100040, 0x12a000, 0x121000));
    assert_eq!(
        (v.cs, v.ss, v.ds, v.es, v.fs, v.gs),
        (0xe033, 0xe02b, 0, 0, 0, 0)
    );
    assert_eq!((v.kernel_ss, v.kernel_sp), (0xe02b, 0x12a000));
    assert_eq!((v.cr3, v.mmu_cr3), (0x124000, 0x124000));
    assert_eq!(v.rflags, 0x200);
    assert_eq!(v.cpl, 3);

    let mut env = env_for(&d);
    let s = X86State(&mut env);
    assert_eq!(s.rip(), 0x100040);
    assert_eq!(s.gpr(4), 0x12a000);
    assert_eq!(s.gpr(6), 0x121000);
    assert_eq!(s.rflags(), 0x202);
    assert_eq!(s.cpl(), 3);
    assert_eq!(s.seg_sel(Seg::Cs), 0xe033);
    assert_eq!(s.g(Seg::Cs.attr_g()), 0xafb, "64-bit ring-3 code");
    assert_eq!(s.seg_sel(Seg::Ss), 0xe02b);
    assert_eq!(s.g(Seg::Ss.attr_g()), 0xcf3);
    assert_eq!(s.g(Seg::Ss.limit_g()), 0xffff_ffff);
    assert_eq!(s.seg_sel(Seg::Ds), 0);
    assert_eq!(s.g(G_CR3), 0x124000);
    assert_eq!(s.g(G_EFER) & (efer::LMA | efer::LME), efer::LMA | efer::LME);
    assert_ne!(s.g(G_CR0) & cr0::PG, 0);
    assert_ne!(s.g(G_CR4) & cr4::PAE, 0);
    assert_eq!(s.g(G_GDTR_BASE), 0xffff_8200_0000_0000);
    assert_eq!(s.g(G_GDTR_LIMIT), 0xefff);
    let flags = frontend_x86::tb_flags(&env.g);
    assert_ne!(flags & tbf::CODE64, 0);
    assert_ne!(flags & tbf::MMU_USER, 0);
}

#[test]
fn page_walks_of_the_32mib_example() {
    let bytes = small64();
    let img = GuestImage::parse(&bytes).unwrap();
    let mut ram = ram_for(GuestType::X86_64, 8192);
    let cfg = DomainConfig {
        nr_pages: Some(8192),
        ..DomainConfig::default()
    };
    let d = build(&mut ram, &img, &cfg).unwrap();
    let l = d.layout.clone();
    let env = env_for(&d);
    let pt = l.pgtables.vstart..l.pgtables.vend;

    // Every VA of the boot area maps its pfn, from the guest kernel (CPL 3); page-table
    // pages are read-only, everything else writable.
    for va in (0..l.virt_pgtab_end).step_by(4096) {
        assert_eq!(
            tr(&env, &mut ram, va + 8, Access::Read),
            Ok(va + 8),
            "{va:#x}"
        );
        let w = tr(&env, &mut ram, va, Access::Write);
        if pt.contains(&va) {
            assert_eq!(
                w,
                pf(PF_P | PF_W | PF_U, va),
                "page table {va:#x} must be read-only"
            );
        } else {
            assert_eq!(w, Ok(va), "{va:#x} writable");
        }
    }
    // The kernel fetches its entry point.
    assert_eq!(tr(&env, &mut ram, 0x100040, Access::Exec), Ok(0x100040));
    // Past the boot area, and elsewhere: not present.
    for va in [
        l.virt_pgtab_end,
        0x40_0000_0000,
        0xffff_ffff_8000_0000,
        0x7fff_ffff_f000,
    ] {
        assert_eq!(
            tr(&env, &mut ram, va, Access::Read),
            pf(PF_U, va),
            "{va:#x}"
        );
    }
    // Non-canonical: #GP(0).
    assert_eq!(
        tr(&env, &mut ram, 0x0000_8000_0000_0000, Access::Read),
        Err(GuestFault {
            vector: 13,
            error_code: Some(0),
            addr: 0
        })
    );

    // The M2P: read-only at 0xFFFF800000000000, one unsigned long per machine frame.
    let p = &l.platform;
    for mfn in [
        0u64,
        1,
        0x100,
        0x124,
        8191,
        p.shared_info_mfn,
        l.ram_pages - 1,
    ] {
        let va = p.m2p_va + mfn * 8;
        let pa = tr(&env, &mut ram, va, Access::Read).unwrap();
        let want = if mfn < l.nr_pages { mfn } else { !0 };
        assert_eq!(ram.read_u64(pa), Some(want), "m2p[{mfn:#x}]");
        assert_eq!(
            tr(&env, &mut ram, va, Access::Write),
            pf(PF_P | PF_W | PF_U, va)
        );
        assert!(tr(&env, &mut ram, va, Access::Exec).is_err(), "M2P is NX");
    }
    // Past the table: not mapped.
    let end = p.m2p_va + (p.m2p_frames << 12);
    assert_eq!(tr(&env, &mut ram, end, Access::Read), pf(PF_U, end));

    // The GDT area: supervisor only. Selector 0xe033 through GDTR, as a descriptor load
    // (an implicit supervisor access) sees it.
    let gdt = env.g[G_GDTR_BASE as usize];
    let desc_va = gdt + 0xe030;
    let pa = sys(&env, &mut ram, desc_va, Access::Read).unwrap();
    assert_eq!(ram.read_u64(pa), Some(0x00af_fb00_0000_ffff));
    let pa = sys(&env, &mut ram, gdt + 0xe028, Access::Read).unwrap();
    assert_eq!(ram.read_u64(pa), Some(0x00cf_f300_0000_ffff));
    assert_eq!(
        tr(&env, &mut ram, desc_va, Access::Read),
        pf(PF_P | PF_U, desc_va)
    );
    // The guest's own GDT frames read as zeroes until set_gdt, and are read-only.
    let pa = sys(&env, &mut ram, gdt + 0x10, Access::Read).unwrap();
    assert_eq!(pa >> 12, p.zero_mfn);
    assert_eq!(ram.read_u64(pa), Some(0));
    assert!(sys(&env, &mut ram, gdt + 0x10, Access::Write).is_err());
    // The GDT L1 the hypercall layer will edit.
    assert_eq!(
        ram.read_u64(p.gdt_l1_maddr + 14 * 8)
            .map(|e| e >> 12 & 0xff_ffff_ffff),
        Some(p.gdt_mfn)
    );

    // The slots Xen owns in the L4.
    let slots: Vec<_> = l.xen_entries.iter().map(|e| (e.level, e.index)).collect();
    assert_eq!(slots, [(4, 256), (4, 260)]);
    for e in &l.xen_entries {
        assert_eq!(
            ram.read_u64(l.pgtables.gpa() + e.index as u64 * 8).unwrap() & !0x60,
            e.entry & !0x60
        );
    }
    // Nothing else in the L4 but slot 0 (the boot area) and Xen's.
    for i in 0..512u64 {
        let e = ram.read_u64(l.pgtables.gpa() + i * 8).unwrap();
        assert_eq!(e != 0, [0, 256, 260].contains(&i), "L4[{i}] = {e:#x}");
    }
    // Upper-level entries are Xen's P|RW|A|D|U; the L1s for the boot area P|RW|A|U.
    assert_eq!(ram.read_u64(0x124000).unwrap() & 0xfff, 0x67);
    assert_eq!(
        ram.read_u64(0x127000 + 0x200 * 8).unwrap() & 0xfff,
        0x67,
        "rw L1 entry, A and D set by the walks"
    );
    assert_eq!(
        ram.read_u64(0x127000 + 0x124 * 8).unwrap() & 0x7,
        0x5,
        "page-table page: P|U, not RW"
    );
}

#[test]
fn platform_frames_come_from_the_top_when_nr_pages_is_not_given() {
    let bytes = small64();
    let img = GuestImage::parse(&bytes).unwrap();
    let mut ram = GuestRam::new(32 << 20).unwrap();
    let d = build(&mut ram, &img, &DomainConfig::default()).unwrap();
    let l = &d.layout;
    assert_eq!(l.ram_pages, 8192);
    assert_eq!(l.nr_pages + l.platform.frames, 8192);
    assert_eq!(l.platform.frames, platform_frames(GuestType::X86_64, 8192));
    // 32 MiB of RAM: shared_info, zero page, GDT page, 3 GDT tables, 64 grant table frames
    // and 8 grant status frames, 16 M2P frames, M2P L3, L2 and L1.
    assert_eq!(l.platform.frames, 3 + 3 + 64 + 8 + 16 + 3);
    // The layout is the example's: the p2m still takes 16 pages.
    assert_eq!(l.p2m.pages, 16);
    assert_eq!(l.pgtables.vstart, 0x124000);
    let si: StartInfo64 = read_struct(&ram, l.start_info.gpa()).unwrap();
    assert_eq!(si.nr_pages, 8192 - 97);
}

/// A Linux-like kernel (INIT_P2M, MOD_START_PFN) with a gzip initrd, in 64 MiB.
#[test]
fn linux_like_kernel_with_init_p2m_and_unmapped_initrd() {
    use std::io::Write;
    let bytes = linux64_elf(0x5000).build();
    let img = GuestImage::parse(&bytes).unwrap();
    let cpio = code_like(100_000);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&cpio).unwrap();
    let initrd = gz.finish().unwrap();

    let nr = 64 << 8;
    let mut ram = ram_for(GuestType::X86_64, nr);
    let cfg = DomainConfig {
        nr_pages: Some(nr),
        cmdline: b"console=hvc0",
        module: Some(&initrd),
        store_evtchn: 5,
        console_evtchn: 6,
    };
    let d = build(&mut ram, &img, &cfg).unwrap();
    let l = &d.layout;
    println!("{l}");
    let vb = LINUX64_VIRT_BASE;
    assert_eq!(l.kernel.vstart, LINUX64_TEXT);
    assert_eq!(l.kernel.pfn, 0x1000);
    // No p2m after the kernel: start_info follows it directly.
    assert_eq!(l.start_info.vstart, l.kernel.vend);
    assert_eq!(l.start_info.vstart, vb + (l.start_info.pfn << 12));
    assert_eq!(l.pgtables.vstart, l.console.vend);
    // L4, L3, L2, L1s for virt_base .. 4 MiB boundary past the boot stack + 512 KiB.
    let m0 = &l.mappings[0];
    assert_eq!(m0.from, vb & ((1 << 48) - 1));
    assert_eq!(l.virt_pgtab_end & 0x3f_ffff, 0);
    assert!(l.virt_pgtab_end - l.virt_alloc_end >= 512 << 10);
    assert_eq!(m0.lvls[0].count, (l.virt_pgtab_end - vb) >> 21);
    assert_eq!(l.pgtables.pages, 3 + m0.lvls[0].count);

    // The initrd: gunzipped, unmapped, right after the boot area, by pfn.
    let m = l.module.unwrap();
    assert!(m.unmapped);
    assert_eq!(m.seg.pfn, (l.virt_pgtab_end - vb) >> 12);
    assert_eq!(m.mod_start, m.seg.pfn);
    let unzip = cpio.len() as u64 + 16;
    assert_eq!(m.seg.pages, unzip.div_ceil(4096));
    assert_eq!(m.mod_len, m.seg.pages * 4096);
    assert_eq!(ram.slice(m.seg.gpa(), cpio.len()).unwrap(), &cpio[..]);

    // The p2m list after it, mapped at INIT_P2M with its own L3, L2, L1.
    assert!(l.p2m_virtual);
    assert_eq!(l.p2m.pfn, m.seg.pfn + m.seg.pages);
    assert_eq!(l.mfn_list, 0x80_0000_0000);
    assert_eq!(l.p2m_pt_frames, 3);
    assert_eq!(l.p2m.pages, nr * 8 / 4096 + 3);
    assert_eq!(l.pfn_alloc_end, l.p2m.pfn + l.p2m.pages);

    let si: StartInfo64 = read_struct(&ram, l.start_info.gpa()).unwrap();
    assert_eq!(si.flags, sif::VIRT_P2M_4TOOLS | sif::MOD_START_PFN);
    assert_eq!((si.mod_start, si.mod_len), (m.seg.pfn, m.mod_len));
    assert_eq!(si.mfn_list, 0x80_0000_0000);
    assert_eq!(
        (si.first_p2m_pfn, si.nr_p2m_frames),
        (l.p2m.pfn, l.p2m.pages)
    );
    assert_eq!((si.store_evtchn, si.console.evtchn), (5, 6));
    assert_eq!(si.pt_base, l.pgtables.vstart);

    let env = env_for(&d);
    // The kernel and the boot area from virt_base, the p2m at INIT_P2M.
    for pfn in (0..(l.virt_pgtab_end - vb) >> 12).step_by(7) {
        assert_eq!(
            tr(&env, &mut ram, vb + (pfn << 12), Access::Read),
            Ok(pfn << 12)
        );
    }
    for i in (0..nr).step_by(97) {
        let pa = tr(&env, &mut ram, 0x80_0000_0000 + i * 8, Access::Read).unwrap();
        assert_eq!(ram.read_u64(pa), Some(i));
    }
    let p2m_end = 0x80_0000_0000 + nr * 8;
    assert_eq!(tr(&env, &mut ram, p2m_end, Access::Read), pf(PF_U, p2m_end));
    // The module and the p2m's own tables are not mapped anywhere in the boot area.
    assert_eq!(
        tr(&env, &mut ram, l.virt_pgtab_end, Access::Read),
        pf(PF_U, l.virt_pgtab_end)
    );
    // L4: slot 1 (p2m), 256 and 260 (Xen), 511 (kernel).
    for i in 0..512u64 {
        let e = ram.read_u64(l.pgtables.gpa() + i * 8).unwrap();
        assert_eq!(e != 0, [1, 256, 260, 511].contains(&i), "L4[{i}] = {e:#x}");
    }
    assert_eq!(d.vcpu.rip, LINUX64_ENTRY);
    assert_eq!(d.vcpu.rsi, l.start_info.vstart);
    assert_eq!(d.vcpu.rsp, l.boot_stack.vend);
}

#[test]
fn mapped_module_follows_the_kernel() {
    // VIRT_BASE 0 kernel without MOD_START_PFN: the module is in the initial mapping.
    let bytes = small64();
    let img = GuestImage::parse(&bytes).unwrap();
    let module = prng_bytes(5, 10_000);
    let mut ram = ram_for(GuestType::X86_64, 8192);
    let cfg = DomainConfig {
        nr_pages: Some(8192),
        module: Some(&module),
        ..DomainConfig::default()
    };
    let d = build(&mut ram, &img, &cfg).unwrap();
    let l = &d.layout;
    let m = l.module.unwrap();
    assert!(!m.unmapped);
    assert_eq!(m.seg, seg(0x111000, 0x114000, 0x111, 3));
    assert_eq!((m.mod_start, m.mod_len), (0x111000, 0x3000));
    assert_eq!(l.p2m.vstart, 0x114000);
    assert_eq!(l.start_info.vstart, 0x124000);
    assert_eq!(ram.slice(0x111000, module.len()).unwrap(), &module[..]);
    let si: StartInfo64 = read_struct(&ram, l.start_info.gpa()).unwrap();
    assert_eq!(
        (si.mod_start, si.mod_len, si.flags),
        (0x111000, 0x3000, sif::VIRT_P2M_4TOOLS)
    );

    // A module that only looks like gzip is handed over as it is.
    let mut fake = b"\x1f\x8bnot really gzip".to_vec();
    fake.extend_from_slice(&100u32.to_le_bytes());
    let mut ram = ram_for(GuestType::X86_64, 8192);
    let cfg = DomainConfig {
        nr_pages: Some(8192),
        module: Some(&fake),
        ..DomainConfig::default()
    };
    let d = build(&mut ram, &img, &cfg).unwrap();
    let m = d.layout.module.unwrap();
    assert_eq!(m.seg.pages, 1);
    assert_eq!(ram.slice(m.seg.gpa(), fake.len()).unwrap(), &fake[..]);
}

#[test]
fn errors_are_values() {
    let bytes = small64();
    let img = GuestImage::parse(&bytes).unwrap();
    let check = |e: BuildError| {
        let s = e.to_string();
        assert!(!s.is_empty() && !s.contains('\n'), "{s:?}");
        println!("{s}");
        e
    };

    // RAM that cannot even hold the platform frames, or fewer pages than asked.
    let mut ram = GuestRam::new(8 << 12).unwrap();
    let e = check(build(&mut ram, &img, &DomainConfig::default()).unwrap_err());
    assert!(matches!(e, BuildError::RamTooSmall { .. }));
    let mut ram = GuestRam::new(32 << 20).unwrap();
    let cfg = DomainConfig {
        nr_pages: Some(8192),
        ..DomainConfig::default()
    };
    let e = check(build(&mut ram, &img, &cfg).unwrap_err());
    assert_eq!(
        e,
        BuildError::RamTooSmall {
            need_pages: ram_pages_for(GuestType::X86_64, 8192),
            have_pages: 8192
        }
    );

    // A kernel bigger than the guest.
    let mut ram = ram_for(GuestType::X86_64, 0x108);
    let cfg = DomainConfig {
        nr_pages: Some(0x108),
        ..DomainConfig::default()
    };
    let e = check(build(&mut ram, &img, &cfg).unwrap_err());
    assert!(
        matches!(e, BuildError::OutOfMemory { what: "kernel", .. }),
        "{e:?}"
    );
    // Room for the kernel and the special pages, not for the 4 MiB initial mapping.
    let mut ram = ram_for(GuestType::X86_64, 0x200);
    let cfg = DomainConfig {
        nr_pages: Some(0x200),
        ..DomainConfig::default()
    };
    let e = check(build(&mut ram, &img, &cfg).unwrap_err());
    assert!(
        matches!(
            e,
            BuildError::OutOfMemory {
                what: "initial mapping",
                ..
            }
        ),
        "{e:?}"
    );
    // A module that does not fit.
    let big = vec![7u8; 40 << 20];
    let mut ram = GuestRam::new(32 << 20).unwrap();
    let cfg = DomainConfig {
        module: Some(&big),
        ..DomainConfig::default()
    };
    let e = check(build(&mut ram, &img, &cfg).unwrap_err());
    assert!(
        matches!(e, BuildError::OutOfMemory { what: "module", .. }),
        "{e:?}"
    );
    // A gzip trailer claiming 1 GiB: libxc reserves ISIZE + 16 and runs out of room.
    let mut liar = b"\x1f\x8b\x08\x00\x00\x00\x00\x00".to_vec();
    liar.extend_from_slice(&(1u32 << 30).to_le_bytes());
    let cfg = DomainConfig {
        module: Some(&liar),
        ..DomainConfig::default()
    };
    let e = check(build(&mut ram, &img, &cfg).unwrap_err());
    assert!(
        matches!(e, BuildError::OutOfMemory { what: "module", .. }),
        "{e:?}"
    );

    // A kernel in the hypervisor's area.
    let mut n = Vec::new();
    n.extend(xen_str(note::GUEST_OS, "linux"));
    n.extend(xen_str(note::XEN_VERSION, "xen-3.0"));
    n.extend(xen_num(note::VIRT_BASE, 0xffff_8000_0000_0000, true));
    let mut b = ElfBuilder::new(true)
        .load(
            PF_R | PF_X,
            0xffff_8000_0010_0000,
            0x100000,
            code_like(0x1000),
            0x1000,
        )
        .pt_note(n);
    b.entry = 0xffff_8000_0010_0000;
    let bytes = b.build();
    let img = GuestImage::parse(&bytes).unwrap();
    let e = check(build(&mut ram, &img, &DomainConfig::default()).unwrap_err());
    assert!(
        matches!(
            e,
            BuildError::Overlap {
                what: "hypervisor area",
                ..
            }
        ),
        "{e:?}"
    );
}

/// A 32-bit PAE kernel at 0xC0000000.
fn small_pae() -> Vec<u8> {
    let mut n = Vec::new();
    n.extend(xen_str(note::GUEST_OS, "linux"));
    n.extend(xen_str(note::XEN_VERSION, "xen-3.0"));
    n.extend(xen_str(note::LOADER, "generic"));
    n.extend(xen_str(note::PAE_MODE, "yes"));
    n.extend(xen_num(note::VIRT_BASE, 0xc000_0000, false));
    n.extend(xen_num(note::PADDR_OFFSET, 0, false));
    n.extend(xen_num(note::ENTRY, 0xc010_0000, false));
    // INIT_P2M is 64-bit only: ignored here.
    n.extend(xen_num(note::INIT_P2M, 0x1000_0000, false));
    let mut b = ElfBuilder::new(false)
        .load(
            PF_R | PF_X,
            0xc010_0000,
            0x100000,
            code_like(0x2000),
            0x2000,
        )
        .load(
            PF_R | PF_W,
            0xc010_2000,
            0x102000,
            prng_bytes(1, 0x100),
            0x3000,
        )
        .pt_note(n);
    b.entry = 0xc010_0000;
    b.build()
}

#[test]
fn pae_guest() {
    let bytes = small_pae();
    let img = GuestImage::parse(&bytes).unwrap();
    assert!(!img.is_64bit());
    let nr = 8192;
    let mut ram = ram_for(GuestType::X86_32Pae, nr);
    let d = build(
        &mut ram,
        &img,
        &DomainConfig {
            nr_pages: Some(nr),
            ..DomainConfig::default()
        },
    )
    .unwrap();
    let l = &d.layout;
    println!("{l}");
    assert_eq!(l.guest, GuestType::X86_32Pae);
    assert_eq!(l.kernel, seg(0xc010_0000, 0xc010_5000, 0x100, 5));
    // 4-byte p2m entries: 8192 pages -> 8 frames, right after the kernel.
    assert!(!l.p2m_virtual);
    assert_eq!(l.p2m, seg(0xc010_5000, 0xc010_d000, 0x105, 8));
    assert_eq!(l.start_info.pfn, 0x10d);
    // L3 + one L2 (the kernel's is the top one) + two L1s.
    assert_eq!(l.pgtables, seg(0xc011_0000, 0xc011_4000, 0x110, 4));
    assert_eq!(l.virt_pgtab_end, 0xc040_0000);
    let si: StartInfo32 = read_struct(&ram, l.start_info.gpa()).unwrap();
    assert_eq!(&si.magic[..16], b"xen-3.0-x86_32p\0");
    assert_eq!(si.nr_pages, nr as u32);
    assert_eq!(si.pt_base, 0xc011_0000);
    assert_eq!(si.nr_pt_frames, 4);
    assert_eq!(si.mfn_list, 0xc010_5000);
    assert_eq!(si.shared_info as u64, l.platform.shared_info_mfn << 12);
    let sh: SharedInfo32 = read_struct(&ram, l.platform.shared_info_mfn << 12).unwrap();
    assert!(sh.vcpu_info.iter().all(|v| v.evtchn_upcall_mask == 1));
    for pfn in [0u64, 0x105, 8191] {
        assert_eq!(ram.read_u32(0x105000 + pfn * 4), Some(pfn as u32));
    }
    // L3 entries carry the full flag set (used as a 4-level L3 by 64-bit Xen).
    assert_eq!(ram.read_u64(0x110000 + 3 * 8), Some(0x111000 | 0x67));

    let v = &d.vcpu;
    assert_eq!((v.cs, v.ss, v.ds), (0xe019, 0xe021, 0xe021));
    assert_eq!(v.cpl, 1);
    assert_eq!(v.cr3, 0x110000, "xen_pfn_to_cr3(0x110)");
    assert_eq!(v.mmu_cr3, l.platform.compat_l4_mfn.unwrap() << 12);
    assert_eq!(
        (v.rip, v.rsi, v.rsp),
        (0xc010_0000, l.start_info.vstart, l.boot_stack.vend)
    );

    // Compatibility mode on the compat L4: the kernel in ring 1 (supervisor).
    let env = env_for(&d);
    let f = frontend_x86::tb_flags(&env.g);
    assert_eq!(
        f & (tbf::LMA | tbf::CODE64 | tbf::CODE32 | tbf::MMU_USER),
        tbf::LMA | tbf::CODE32
    );
    assert_eq!(env.g[Seg::Cs.attr_g() as usize], 0xcbb);
    for va in (0xc000_0000u64..0xc040_0000).step_by(4096) {
        assert_eq!(tr(&env, &mut ram, va, Access::Read), Ok(va - 0xc000_0000));
    }
    // Page tables read-only even for the ring-1 kernel (CR0.WP).
    assert_eq!(
        tr(&env, &mut ram, 0xc011_0000, Access::Write),
        pf(PF_P | PF_W, 0xc011_0000)
    );
    assert_eq!(
        tr(&env, &mut ram, 0xc040_0000, Access::Read),
        pf(0, 0xc040_0000)
    );
    // The M2P at 0xF5800000, u32 entries, read-only; Xen's slots in the top L2.
    for mfn in [0u64, 0x110, 8191, l.ram_pages - 1] {
        let va = 0xf580_0000 + mfn * 4;
        let pa = tr(&env, &mut ram, va, Access::Read).unwrap();
        let want = if mfn < nr { mfn as u32 } else { !0 };
        assert_eq!(ram.read_u32(pa), Some(want));
        assert_eq!(tr(&env, &mut ram, va, Access::Write), pf(PF_P | PF_W, va));
    }
    assert_eq!(l.xen_entries.len(), 1);
    assert_eq!((l.xen_entries[0].level, l.xen_entries[0].index), (2, 0x1ac));
    // Xen's compat GDT through GDTR.
    let gdt = env.g[G_GDTR_BASE as usize];
    let pa = sys(&env, &mut ram, gdt + 0xe018, Access::Read).unwrap();
    assert_eq!(ram.read_u64(pa), Some(0x00cf_bb00_0000_ffff));
}

// ---- Debian's kernel ----------------------------------------------------------------------

fn kernel_path() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
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
fn debian_linux_6_1_domain() {
    let Some(path) = kernel_path() else {
        println!(
            "SKIP: no cached Debian kernel; run roms/linux/fetch-kernel.sh to enable this test"
        );
        return;
    };
    let bytes = std::fs::read(&path).unwrap();
    let img = GuestImage::parse(&bytes).unwrap();
    let nr = 256 << 8;
    let mut ram = ram_for(GuestType::X86_64, nr);
    let initrd = code_like(300_000);
    let cfg = DomainConfig {
        nr_pages: Some(nr),
        cmdline: b"console=hvc0 earlyprintk=xen",
        module: Some(&initrd),
        ..DomainConfig::default()
    };
    let d = build(&mut ram, &img, &cfg).unwrap();
    let l = &d.layout;
    println!("{}: {l}", path.display());

    let vb = 0xffff_ffff_8000_0000u64;
    assert_eq!(l.virt_base, vb);
    assert_eq!(l.kernel.vstart, 0xffff_ffff_8100_0000);
    assert_eq!(l.kernel.pfn, 0x1000);
    assert_eq!(l.start_info.vstart, l.kernel.vend);
    assert!(l.p2m_virtual);
    assert_eq!(l.mfn_list, 0x80_0000_0000);
    assert_eq!(l.p2m_pt_frames, 3);
    let m = l.module.unwrap();
    assert!(m.unmapped && m.seg.pfn == (l.virt_pgtab_end - vb) >> 12);
    assert_eq!(l.p2m.pfn, m.seg.pfn + m.seg.pages);
    assert_eq!(l.virt_pgtab_end % (4 << 20), 0);
    assert_eq!(l.hypercall_page, img.xen.virt_hypercall);

    let si: StartInfo64 = read_struct(&ram, l.start_info.gpa()).unwrap();
    assert_eq!(&si.magic[..15], b"xen-3.0-x86_64\0");
    assert_eq!(si.nr_pages, nr);
    assert_eq!(si.mfn_list, 0x80_0000_0000);
    assert_eq!(si.flags, sif::VIRT_P2M_4TOOLS | sif::MOD_START_PFN);
    assert_eq!(
        (si.first_p2m_pfn, si.nr_p2m_frames),
        (l.p2m.pfn, l.p2m.pages)
    );
    assert_eq!(si.pt_base, l.pgtables.vstart);
    assert_eq!(si.nr_pt_frames, l.pgtables.pages);
    assert_eq!(d.vcpu.rip, img.xen.virt_entry);
    assert_eq!(d.vcpu.rsi, l.start_info.vstart);

    // The entry point maps the loaded kernel's bytes; the p2m reads back at INIT_P2M.
    let env = env_for(&d);
    let entry_pa = tr(&env, &mut ram, d.vcpu.rip, Access::Exec).unwrap();
    let seg0 = img
        .layout
        .segments
        .iter()
        .find(|s| d.vcpu.rip >= s.vaddr && d.vcpu.rip < s.vaddr + s.filesz)
        .unwrap();
    assert_eq!(entry_pa, seg0.gpa + (d.vcpu.rip - seg0.vaddr));
    let off = (seg0.file_offset + d.vcpu.rip - seg0.vaddr) as usize;
    assert_eq!(
        ram.slice(entry_pa, 16).unwrap(),
        &img.elf_bytes()[off..off + 16]
    );
    for i in [0u64, 1, 0x1000, nr - 1] {
        let pa = tr(&env, &mut ram, 0x80_0000_0000 + i * 8, Access::Read).unwrap();
        assert_eq!(ram.read_u64(pa), Some(i));
    }
    // The whole boot area, page by page; page tables read-only.
    for va in (vb..l.virt_pgtab_end).step_by(4096) {
        let pa = va - vb;
        assert_eq!(tr(&env, &mut ram, va, Access::Read), Ok(pa));
        let ro = (l.pgtables.vstart..l.pgtables.vend).contains(&va);
        assert_eq!(
            tr(&env, &mut ram, va, Access::Write).is_err(),
            ro,
            "{va:#x}"
        );
    }
    // Linux finds its L3 through L4[511] and the M2P (m2v): the M2P maps it back.
    let l4e = ram.read_u64(l.pgtables.gpa() + 511 * 8).unwrap();
    let l3_mfn = (l4e & 0x000f_ffff_ffff_f000) >> 12;
    let pa = tr(
        &env,
        &mut ram,
        0xffff_8000_0000_0000 + l3_mfn * 8,
        Access::Read,
    )
    .unwrap();
    assert_eq!(ram.read_u64(pa), Some(l3_mfn));
    assert_eq!(l3_mfn, l.pgtables.pfn + 1);
}

#[test]
fn odd_sizes_give_errors_not_panics() {
    let images = [small64(), linux64_elf(0x3000).build(), small_pae()];
    let gz_stub: &[u8] = b"\x1f\x8b";
    let zeros = [0u8; 5000];
    for bytes in &images {
        let img = GuestImage::parse(bytes).unwrap();
        for ram_pages in [
            1u64, 2, 7, 11, 26, 0x100, 0x12a, 0x401, 0x41a, 0x1000, 0x1010, 0x2000,
        ] {
            for nr in [
                None,
                Some(0),
                Some(1),
                Some(ram_pages / 2),
                Some(ram_pages),
                Some(u64::MAX),
            ] {
                for module in [None, Some(gz_stub), Some(&zeros[..])] {
                    let mut ram = GuestRam::new(ram_pages << 12).unwrap();
                    let cfg = DomainConfig {
                        nr_pages: nr,
                        module,
                        ..DomainConfig::default()
                    };
                    match build(&mut ram, &img, &cfg) {
                        Ok(d) => {
                            let l = &d.layout;
                            assert!(l.pfn_alloc_end <= l.nr_pages);
                            assert!(l.nr_pages + l.platform.frames <= l.ram_pages);
                        }
                        Err(e) => {
                            let s = e.to_string();
                            assert!(!s.is_empty() && !s.contains('\n'));
                        }
                    }
                }
            }
        }
    }
}
