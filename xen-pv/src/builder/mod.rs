//! The PV domain builder: from a parsed kernel image to guest RAM and vCPU 0 ready to run,
//! laid out as Xen's toolstack lays out a domU (tools/libs/guest/xg_dom_core.c,
//! xg_dom_x86.c) plus what the hypervisor itself provides at boot.
//!
//! ```text
//! pfn 0 ─ (padding) ─ kernel ─ [module] ─ [p2m] ─ start_info ─ xenstore ─ console ─
//!   page tables (L4, L3s, L2s, L1s) ─ boot stack ─ (padding up to virt_pgtab_end) ─
//!   [module, unmapped] ─ [p2m + its tables, INIT_P2M] ─ ... free ... ─ nr_pages
//!                                         ┆ unused ┆ platform frames (top of RAM)
//! ```
//!
//! Everything in `[virt_base, virt_pgtab_end)` maps pfn `(va - virt_base) >> 12`; the
//! page-table frames are mapped read-only. The p2m is the identity (mfn == pfn): guest
//! frame n is guest RAM at n << 12. A kernel with the INIT_P2M note (Linux) gets its p2m
//! list after the initial mapping, mapped at the note's address by tables of its own; a
//! kernel with MOD_START_PFN (Linux) gets its initrd unmapped, by pfn. gzip modules are
//! gunzipped, as libxc does.
//!
//! Platform frames. Xen owns some memory every PV guest sees: the shared_info frame, the
//! machine-to-phys table (read-only at 0xFFFF800000000000, L4 slot 256; 0xF5800000 for
//! PAE) and its GDT with the flat selectors. Here they are machine frames at the top of
//! guest RAM, outside the guest's `nr_pages` (start_info.nr_pages excludes them, the p2m
//! never names them, the M2P maps them to INVALID_M2P_ENTRY, ~0). The builder installs
//! their mappings in the guest's tables as Xen does when it pins them:
//! - 64-bit: L4 slot 256 → M2P (user-readable, read-only, NX); slot 260 → Xen's per-domain
//!   area with vCPU 0's GDT (supervisor-only: the guest kernel runs in ring 3, descriptor
//!   loads are supervisor accesses). [`DomainLayout::xen_entries`] lists these slots: the
//!   MMU layer must copy them into every L4 the guest pins later.
//! - PAE: the M2P goes into the guest's top L2 (the one under L3 slot 3, above
//!   0xF5800000, as Xen's compat M2P); the MMU walks a platform "compat L4" whose slot 0 is
//!   the guest's L3 and slot 260 the GDT area, as 64-bit Xen runs 32-bit guests.
//! The GDT area maps 14 guest GDT frames (initially Xen's zero page, read-only; set_gdt
//! replaces them through [`PlatformLayout::gdt_l1_maddr`]) and Xen's reserved page.
//!
//! shared_info starts zeroed with every vcpu_info's evtchn_upcall_mask = 1 (as the
//! toolstack leaves it); vcpu_time_info and the wallclock are the time layer's. The
//! hypercall page (HYPERCALL_PAGE note, [`DomainLayout::hypercall_page`]) is not written
//! here. Grant table entries 0 and 1, which the toolstack pre-fills to grant the console
//! and xenstore pages to the back-end domain, need a grant table this crate does not have
//! yet; the builder leaves grants alone.
//!
//! The builder expects fresh (zeroed) RAM: it zeroes every segment it allocates and the
//! platform frames, not the padding between them. All input is untrusted: errors are
//! [`BuildError`] values, never panics.

pub mod abi;
pub mod error;
pub mod layout;
pub mod pagetable;
pub mod vcpu;

use std::borrow::Cow;

use jit::GuestRam;

pub use abi::{read_struct, write_struct, Le};
pub use error::BuildError;
pub use layout::{
    platform_frames, ram_pages_for, DomainLayout, GuestType, ModuleLayout, PlatformLayout, Segment,
    XenEntry,
};
pub use vcpu::VcpuInit;

use crate::image::{feat, Compression, GuestImage, ImageError, LoadSink};
use abi::*;
use error::Result;
use pagetable::{FrameAlloc, A, D, NX, P, PAGE_SHIFT, PAGE_SIZE, RW, US};

/// What the toolstack is told besides the kernel.
#[derive(Clone, Debug)]
pub struct DomainConfig<'a> {
    /// Guest pages (start_info.nr_pages). None: every RAM frame the platform does not need.
    pub nr_pages: Option<u64>,
    /// Kernel command line (up to 1023 bytes and the first NUL are kept).
    pub cmdline: &'a [u8],
    /// The initrd, if any.
    pub module: Option<&'a [u8]>,
    /// Event channel ports of the xenstore and console rings (libxl allocates the store's
    /// first: ports 1 and 2 in a fresh domain).
    pub store_evtchn: u32,
    pub console_evtchn: u32,
}

impl Default for DomainConfig<'_> {
    fn default() -> Self {
        DomainConfig {
            nr_pages: None,
            cmdline: b"",
            module: None,
            store_evtchn: 1,
            console_evtchn: 2,
        }
    }
}

/// A built domain: where everything is, and vCPU 0's state.
#[derive(Clone, Debug)]
pub struct Domain {
    pub layout: DomainLayout,
    pub vcpu: VcpuInit,
}

/// libxc's `XC_DOM_DECOMPRESS_MAX`: gzip modules claiming more are handed over as they are.
const DECOMPRESS_MAX: u64 = 1 << 30;

/// Bytes libxc reserves for a module (`modulelen`) and whether to try gunzip (its size
/// guess, ISIZE + 16, or 0).
fn module_len(blob: &[u8]) -> (u64, u64) {
    let mut unzip = 0;
    if blob.len() >= 6 && blob.starts_with(b"\x1f\x8b") {
        let t = &blob[blob.len() - 4..];
        let isize = u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as u64;
        if isize <= DECOMPRESS_MAX {
            unzip = isize + 16;
        }
    }
    (unzip.max(blob.len() as u64), unzip)
}

/// Build a domain for `image` in `ram`: load the kernel (and module), write the p2m list,
/// start_info, shared_info, the page tables, the M2P table and Xen's GDT, and compute vCPU
/// 0's state (apply it with [`VcpuInit::apply`]).
pub fn build(ram: &mut GuestRam, image: &GuestImage<'_>, cfg: &DomainConfig<'_>) -> Result<Domain> {
    let guest = GuestType::of(image);
    // xg_dom_x86.c's bootearly: auto-translated PV is gone from Xen.
    if image.xen.features.requires(feat::AUTO_TRANSLATED_PHYSMAP) {
        return Err(BuildError::Unsupported("requires auto_translated_physmap"));
    }
    // A kernel that must run in ring 0 cannot be a PV guest of a 64-bit hypervisor.
    if image.xen.features.requires(feat::SUPERVISOR_MODE_KERNEL) {
        return Err(BuildError::Unsupported("requires supervisor_mode_kernel"));
    }

    let ram_pages = ram.size() >> PAGE_SHIFT;
    let avail = ram_pages.saturating_sub(platform_frames(guest, ram_pages));
    let nr_pages = cfg.nr_pages.unwrap_or(avail);

    let (modulelen, unziplen) = match cfg.module {
        Some(m) => {
            let (len, unzip) = module_len(m);
            (Some(len), unzip)
        }
        None => (None, 0),
    };
    let mut layout = layout::compute(
        image,
        &layout::LayoutInput {
            nr_pages,
            ram_pages,
            module_len: modulelen,
        },
    )?;

    // Guest segments.
    let l = &layout;
    for seg in [
        l.kernel,
        l.p2m,
        l.start_info,
        l.xenstore,
        l.console,
        l.pgtables,
        l.boot_stack,
    ] {
        pagetable::zero_frames(ram, seg.pfn, seg.pages)?;
    }
    image.load(&mut RamSink {
        ram,
        lo: l.kernel.gpa(),
        hi: l.kernel.gpa() + l.kernel.bytes(),
    })?;
    if let (Some(m), Some(blob)) = (&l.module, cfg.module) {
        pagetable::zero_frames(ram, m.seg.pfn, m.seg.pages)?;
        let data: Cow<'_, [u8]> = if unziplen > 0 {
            // libxc: gunzip into the segment; on failure hand over the raw blob.
            match crate::image::decompress::decompress(Compression::Gzip, blob, unziplen as usize) {
                Ok(v) => Cow::Owned(v),
                Err(_) => Cow::Borrowed(blob),
            }
        } else {
            Cow::Borrowed(blob)
        };
        put(ram, m.seg.gpa(), &data)?;
    }
    write_p2m(ram, l)?;
    write_start_info(ram, l, cfg)?;
    pagetable::write_tables(ram, guest.pt_params(), &l.mappings)?;

    // Platform frames and the hypervisor's mappings.
    setup_platform(ram, &mut layout)?;
    write_shared_info(ram, &layout)?;

    let vcpu = VcpuInit::for_layout(&layout);
    Ok(Domain { layout, vcpu })
}

/// A load sink over guest RAM, confined to `[lo, hi)` (the kernel segment).
struct RamSink<'a> {
    ram: &'a mut GuestRam,
    lo: u64,
    hi: u64,
}

impl RamSink<'_> {
    fn check(&self, gpa: u64, len: u64) -> std::result::Result<(), ImageError> {
        match gpa.checked_add(len) {
            Some(end) if gpa >= self.lo && end <= self.hi => Ok(()),
            _ => Err(ImageError::DoesNotFit { gpa, len }),
        }
    }
}

impl LoadSink for RamSink<'_> {
    fn write(&mut self, gpa: u64, data: &[u8]) -> std::result::Result<(), ImageError> {
        self.check(gpa, data.len() as u64)?;
        if self.ram.write(gpa, data) {
            Ok(())
        } else {
            Err(ImageError::DoesNotFit {
                gpa,
                len: data.len() as u64,
            })
        }
    }
    fn zero(&mut self, gpa: u64, len: u64) -> std::result::Result<(), ImageError> {
        self.check(gpa, len)?;
        let s = usize::try_from(len)
            .ok()
            .and_then(|n| self.ram.slice_mut(gpa, n))
            .ok_or(ImageError::DoesNotFit { gpa, len })?;
        s.fill(0);
        Ok(())
    }
}

fn put(ram: &mut GuestRam, addr: u64, data: &[u8]) -> Result<()> {
    if ram.write(addr, data) {
        Ok(())
    } else {
        Err(BuildError::OutsideRam {
            addr,
            len: data.len() as u64,
        })
    }
}

/// The identity p2m list: entry pfn = pfn, `unsigned long` wide.
fn write_p2m(ram: &mut GuestRam, l: &DomainLayout) -> Result<()> {
    let w = l.guest.word_size() as usize;
    let mut buf = vec![0u8; l.nr_pages as usize * w];
    for (pfn, e) in buf.chunks_exact_mut(w).enumerate() {
        e.copy_from_slice(&(pfn as u64).to_le_bytes()[..w]);
    }
    put(ram, l.p2m.gpa(), &buf)
}

fn write_start_info(ram: &mut GuestRam, l: &DomainLayout, cfg: &DomainConfig<'_>) -> Result<()> {
    let (mod_start, mod_len) = l.module.map_or((0, 0), |m| (m.mod_start, m.mod_len));
    let (first_p2m_pfn, nr_p2m_frames) = if l.p2m_virtual {
        (l.p2m.pfn, l.p2m.pages)
    } else {
        (0, 0)
    };
    let shared_info = l.platform.shared_info_mfn << PAGE_SHIFT;
    let addr = l.start_info.gpa();
    match l.guest {
        GuestType::X86_64 => {
            let si = StartInfo64 {
                magic: c_string(l.guest.magic().as_bytes()),
                nr_pages: l.nr_pages,
                shared_info,
                flags: l.flags,
                _pad0: 0,
                store_mfn: l.xenstore.pfn,
                store_evtchn: cfg.store_evtchn,
                _pad1: 0,
                console: ConsoleDomU64 {
                    mfn: l.console.pfn,
                    evtchn: cfg.console_evtchn,
                    _pad: 0,
                },
                pt_base: l.pt_base,
                nr_pt_frames: l.nr_pt_frames,
                mfn_list: l.mfn_list,
                mod_start,
                mod_len,
                cmd_line: c_string(cfg.cmdline),
                first_p2m_pfn,
                nr_p2m_frames,
            };
            write_struct(ram, addr, &si)
        }
        GuestType::X86_32Pae => {
            // Every value fits: VAs are below 4 GiB and RAM is at most 16 GiB (M2P limit).
            let w = |v: u64| v as u32;
            let si = StartInfo32 {
                magic: c_string(l.guest.magic().as_bytes()),
                nr_pages: w(l.nr_pages),
                shared_info: w(shared_info),
                flags: l.flags,
                store_mfn: w(l.xenstore.pfn),
                store_evtchn: cfg.store_evtchn,
                console: ConsoleDomU32 {
                    mfn: w(l.console.pfn),
                    evtchn: cfg.console_evtchn,
                },
                pt_base: w(l.pt_base),
                nr_pt_frames: w(l.nr_pt_frames),
                mfn_list: w(l.mfn_list),
                mod_start: w(mod_start),
                mod_len: w(mod_len),
                cmd_line: c_string(cfg.cmdline),
                first_p2m_pfn: w(first_p2m_pfn),
                nr_p2m_frames: w(nr_p2m_frames),
            };
            write_struct(ram, addr, &si)
        }
    }
}

/// shared_info: zeroes, and every legacy vcpu_info's upcall mask set.
fn write_shared_info(ram: &mut GuestRam, l: &DomainLayout) -> Result<()> {
    let addr = l.platform.shared_info_mfn << PAGE_SHIFT;
    match l.guest {
        GuestType::X86_64 => {
            let mut sh = SharedInfo64::zeroed();
            for v in sh.vcpu_info.iter_mut() {
                v.evtchn_upcall_mask = 1;
            }
            write_struct(ram, addr, &sh)
        }
        GuestType::X86_32Pae => {
            let mut sh = SharedInfo32::zeroed();
            for v in sh.vcpu_info.iter_mut() {
                v.evtchn_upcall_mask = 1;
            }
            write_struct(ram, addr, &sh)
        }
    }
}

/// Platform frames: zero them, fill the M2P and Xen's GDT page, and map both.
fn setup_platform(ram: &mut GuestRam, layout: &mut DomainLayout) -> Result<()> {
    let guest = layout.guest;
    let p = layout.platform.clone();
    pagetable::zero_frames(ram, p.first_mfn, p.frames)?;

    // M2P: the identity for guest frames, INVALID_M2P_ENTRY for the rest.
    let w = guest.word_size() as usize;
    let mut m2p = vec![0u8; (p.m2p_frames << PAGE_SHIFT) as usize];
    for (mfn, e) in m2p
        .chunks_exact_mut(w)
        .take(p.m2p_entries as usize)
        .enumerate()
    {
        let v = if (mfn as u64) < layout.nr_pages {
            mfn as u64
        } else {
            INVALID_M2P_ENTRY
        };
        e.copy_from_slice(&v.to_le_bytes()[..w]);
    }
    // Past the last machine frame: invalid too.
    for e in m2p.chunks_exact_mut(w).skip(p.m2p_entries as usize) {
        e.fill(0xff);
    }
    put(ram, p.m2p_mfn << PAGE_SHIFT, &m2p)?;

    // Xen's reserved GDT entries.
    let mut gdt = Vec::with_capacity(64);
    for d in vcpu::xen_gdt_entries(guest) {
        gdt.extend_from_slice(&d.to_le_bytes());
    }
    put(ram, p.gdt_mfn << PAGE_SHIFT, &gdt)?;

    let table_start = p.m2p_mfn + p.m2p_frames;
    let mut alloc = FrameAlloc {
        next: table_start,
        end: p.first_mfn + p.frames,
    };
    let guest_top = layout.pgtables.pfn;
    let root = match p.compat_l4_mfn {
        Some(c) => {
            // The compat L4: slot 0 is the guest's L3 (which then acts as a 4-level L3).
            let e = (guest_top << PAGE_SHIFT) | P | RW | US | A | D;
            put(ram, c << PAGE_SHIFT, &e.to_le_bytes())?;
            c
        }
        None => guest_top,
    };

    // The M2P, read-only, readable from the guest kernel (ring 3 or 1) and user space.
    for i in 0..p.m2p_frames {
        pagetable::map_page(
            ram,
            root,
            p.m2p_va + (i << PAGE_SHIFT),
            p.m2p_mfn + i,
            P | US | A | NX,
            P | RW | US | A,
            &mut alloc,
        )?;
    }
    // vCPU 0's GDT: guest frames -> zero page (read-only), then Xen's page. Supervisor only.
    let reserved_page = sel::FIRST_RESERVED_GDT_BYTE / PAGE_SIZE;
    for i in 0..=reserved_page {
        let (mfn, flags) = if i < reserved_page {
            (p.zero_mfn, P | A | NX)
        } else {
            (p.gdt_mfn, P | RW | A | D | NX)
        };
        pagetable::map_page(
            ram,
            root,
            p.gdt_va + (i << PAGE_SHIFT),
            mfn,
            flags,
            P | RW | A,
            &mut alloc,
        )?;
    }
    layout.platform.gdt_l1_maddr = l1_table(ram, root, p.gdt_va)?;

    // The entries Xen owns in guest-visible tables.
    let mut xen = Vec::new();
    match guest {
        GuestType::X86_64 => {
            for va in [p.m2p_va, p.gdt_va] {
                let index = ((va >> 39) & 511) as u16;
                let addr = (guest_top << PAGE_SHIFT) + index as u64 * 8;
                let entry = ram
                    .read_u64(addr)
                    .ok_or(BuildError::OutsideRam { addr, len: 8 })?;
                xen.push(XenEntry {
                    level: 4,
                    index,
                    entry,
                });
            }
        }
        GuestType::X86_32Pae => {
            let l2 = l1_parent_l2(ram, root, p.m2p_va)?;
            let first = (p.m2p_va >> 21) & 511;
            let last = (p.m2p_va + (p.m2p_frames << PAGE_SHIFT) - 1) >> 21 & 511;
            for index in first..=last {
                let addr = l2 + index * 8;
                let entry = ram
                    .read_u64(addr)
                    .ok_or(BuildError::OutsideRam { addr, len: 8 })?;
                xen.push(XenEntry {
                    level: 2,
                    index: index as u16,
                    entry,
                });
            }
        }
    }
    layout.xen_entries = xen;
    Ok(())
}

/// Machine address of the table at `depth` levels below the root on the walk to `va`
/// (depth 3: the L1, depth 2: the L2).
fn table_on_walk(ram: &GuestRam, root: u64, va: u64, depth: u32) -> Result<u64> {
    let mut table = root << PAGE_SHIFT;
    for level in (4 - depth..4u32).rev() {
        let addr = table + ((va >> (PAGE_SHIFT + level * 9)) & 511) * 8;
        let e = ram
            .read_u64(addr)
            .ok_or(BuildError::OutsideRam { addr, len: 8 })?;
        if e & P == 0 {
            return Err(BuildError::Unsupported("platform mapping missing"));
        }
        table = e & pagetable::ADDR_MASK;
    }
    Ok(table)
}

fn l1_table(ram: &GuestRam, root: u64, va: u64) -> Result<u64> {
    table_on_walk(ram, root, va, 3)
}

fn l1_parent_l2(ram: &GuestRam, root: u64, va: u64) -> Result<u64> {
    table_on_walk(ram, root, va, 2)
}
