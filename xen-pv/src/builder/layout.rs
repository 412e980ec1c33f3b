//! Where everything goes: the pseudo-physical and virtual layout of a new PV domain, as
//! Xen's toolstack computes it (`xc_dom_build_image` in xg_dom_core.c with the x86 hooks of
//! xg_dom_x86.c), and the platform frames above the guest's pages. Pure arithmetic: nothing
//! here touches guest RAM.

use std::fmt;

use super::abi::va;
use super::error::{BuildError, Result};
use super::pagetable::{self, Mapping, PtParams, PAGE_SHIFT, PAGE_SIZE};
use crate::image::GuestImage;

/// The two PV guest types Xen still runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestType {
    /// "xen-3.0-x86_64": long mode, kernel in ring 3.
    X86_64,
    /// "xen-3.0-x86_32p": 32-bit PAE, kernel in ring 1 (compatibility mode under a
    /// 64-bit hypervisor).
    X86_32Pae,
}

impl GuestType {
    pub fn of(image: &GuestImage<'_>) -> GuestType {
        if image.is_64bit() {
            GuestType::X86_64
        } else {
            GuestType::X86_32Pae
        }
    }
    /// start_info's magic.
    pub fn magic(self) -> &'static str {
        match self {
            GuestType::X86_64 => "xen-3.0-x86_64",
            GuestType::X86_32Pae => "xen-3.0-x86_32p",
        }
    }
    pub fn is_64bit(self) -> bool {
        self == GuestType::X86_64
    }
    pub fn pt_params(self) -> &'static PtParams {
        match self {
            GuestType::X86_64 => &pagetable::X86_64,
            GuestType::X86_32Pae => &pagetable::X86_32_PAE,
        }
    }
    /// Bytes of a p2m or M2P entry (`unsigned long`).
    pub fn word_size(self) -> u64 {
        match self {
            GuestType::X86_64 => 8,
            GuestType::X86_32Pae => 4,
        }
    }
    /// Virtual address of the read-only M2P table.
    pub fn m2p_va(self) -> u64 {
        match self {
            GuestType::X86_64 => va::MACH2PHYS_VIRT_START_64,
            GuestType::X86_32Pae => va::MACH2PHYS_VIRT_START_PAE,
        }
    }
    /// Entries the M2P's virtual area can hold.
    pub fn m2p_max_entries(self) -> u64 {
        match self {
            GuestType::X86_64 => (va::MACH2PHYS_VIRT_END_64 - va::MACH2PHYS_VIRT_START_64) / 8,
            GuestType::X86_32Pae => (va::MACH2PHYS_VIRT_END_PAE - va::MACH2PHYS_VIRT_START_PAE) / 4,
        }
    }
    /// The most machine frames (guest RAM) a domain of this type can have here: what the
    /// M2P describes; for PAE also 4 GiB, because the platform frames sit at the top of RAM
    /// and start_info's `shared_info` is a 32-bit machine address (Xen allocates a 32-bit
    /// guest's shared_info below 4 GiB).
    pub fn max_ram_pages(self) -> u64 {
        match self {
            GuestType::X86_64 => self.m2p_max_entries(),
            GuestType::X86_32Pae => self.m2p_max_entries().min(1 << 20),
        }
    }
}

fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

/// Frames of the M2P table for `ram_pages` machine frames.
pub fn m2p_frames(guest: GuestType, ram_pages: u64) -> u64 {
    div_ceil(ram_pages.saturating_mul(guest.word_size()), PAGE_SIZE)
}

/// Grant table frames Xen can share with a domain: its default `gnttab_max_frames` (the
/// `max_nr_frames` GNTTABOP_query_size reports).
pub const GRANT_FRAMES: u64 = 64;
/// Grant status frames (v2) for [`GRANT_FRAMES`]: 256 v2 entries per frame, 2048 status
/// words (u16) per frame (Xen's `grant_to_status_frames`).
pub const GRANT_STATUS_FRAMES: u64 = (GRANT_FRAMES * 256).div_ceil(2048);
const _: () = assert!(GRANT_STATUS_FRAMES == 8);

/// Platform frames the builder takes from the top of a RAM of `ram_pages` frames:
/// shared_info, the zero page, Xen's GDT page, (PAE: the compat L4), the grant table's
/// shared and status frames, the M2P table and the page tables mapping the M2P and the GDT.
pub fn platform_frames(guest: GuestType, ram_pages: u64) -> u64 {
    let m2p = m2p_frames(guest, ram_pages);
    let m2p_l1 = div_ceil(m2p, 512);
    // shared_info, zero page, GDT page; the GDT's L3, L2 and L1 (L4 slot 260); the grant
    // table frames.
    let fixed = 3 + 3 + GRANT_FRAMES + GRANT_STATUS_FRAMES;
    match guest {
        // M2P in L4 slot 256: one L3, L2s, L1s.
        GuestType::X86_64 => fixed + m2p + 1 + div_ceil(m2p_l1, 512) + m2p_l1,
        // The compat L4; M2P L1s hang off the guest's top L2.
        GuestType::X86_32Pae => fixed + 1 + m2p + m2p_l1,
    }
}

/// The smallest RAM (in frames) that holds `nr_pages` guest pages plus the platform frames.
pub fn ram_pages_for(guest: GuestType, nr_pages: u64) -> u64 {
    let mut r = nr_pages;
    loop {
        let need = nr_pages.saturating_add(platform_frames(guest, r));
        if need <= r {
            return r;
        }
        r = need;
    }
}

/// A run of frames the builder allocated, and where the guest sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Virtual start and end (end exclusive). For the p2m list with INIT_P2M, the mapped
    /// list only (its page tables follow it in pfn space but are not mapped).
    pub vstart: u64,
    pub vend: u64,
    pub pfn: u64,
    pub pages: u64,
}

impl Segment {
    /// Pseudo-physical (= machine) address of the first frame.
    pub fn gpa(&self) -> u64 {
        self.pfn << PAGE_SHIFT
    }
    pub fn bytes(&self) -> u64 {
        self.pages << PAGE_SHIFT
    }
}

/// The initial module (initrd).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleLayout {
    pub seg: Segment,
    /// Not in the initial mapping: start_info.mod_start is its pfn (SIF_MOD_START_PFN).
    pub unmapped: bool,
    /// start_info.mod_start and mod_len (libxc passes the whole segment: page rounded).
    pub mod_start: u64,
    pub mod_len: u64,
}

/// The frames the platform owns (machine frames above the guest's, which the guest reaches
/// only through the mappings below) and the hypervisor-area mappings made of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlatformLayout {
    /// Platform frames are `[first_mfn, first_mfn + frames)`, ending at the top of RAM.
    pub first_mfn: u64,
    pub frames: u64,
    /// start_info.shared_info is `shared_info_mfn << 12`.
    pub shared_info_mfn: u64,
    /// A frame of zeroes (Xen's zero_page): unused GDT frames map it read-only.
    pub zero_mfn: u64,
    /// Xen's reserved GDT entries (selectors 0xe000..0xefff).
    pub gdt_mfn: u64,
    /// PAE only: the 4-level table the MMU walks; slot 0 points at the guest's L3.
    pub compat_l4_mfn: Option<u64>,
    /// The grant table's shared frames `[grant_mfn, grant_mfn + grant_frames)` and v2 status
    /// frames `[grant_status_mfn, grant_status_mfn + grant_status_frames)`: Xen's heap pages
    /// shared with the guest (GNTTABOP_setup_table / get_status_frames hand them out).
    pub grant_mfn: u64,
    pub grant_frames: u64,
    pub grant_status_mfn: u64,
    pub grant_status_frames: u64,
    /// M2P table: `m2p_entries` words (8 or 4 bytes) in frames from `m2p_mfn`, mapped
    /// read-only at `m2p_va`.
    pub m2p_mfn: u64,
    pub m2p_frames: u64,
    pub m2p_entries: u64,
    pub m2p_va: u64,
    /// vCPU 0's GDT: GDTR base and limit. Frames 0..13 are the guest's (set_gdt), 14 is
    /// Xen's; the LDT area follows at +64 KiB.
    pub gdt_va: u64,
    pub gdt_limit: u16,
    /// Machine address of the L1 table mapping the GDT/LDT area (entry i maps gdt_va +
    /// i * 4096: 0..13 guest GDT frames, 14 Xen's page, 16..31 the LDT).
    pub gdt_l1_maddr: u64,
}

/// An entry the hypervisor owns in a guest-visible table and must keep in every table of
/// that kind the guest installs (Xen fills them when it validates a new top-level table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenEntry {
    /// 4: an L4 slot (64-bit guests); 2: a slot of the L2 under L3 slot 3 (PAE guests).
    pub level: u8,
    pub index: u16,
    pub entry: u64,
}

/// Everything the builder placed, in the order Xen's toolstack allocates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainLayout {
    pub guest: GuestType,
    pub virt_base: u64,
    /// Entry point (rip).
    pub entry: u64,
    /// The HYPERCALL_PAGE note (virtual), when the kernel has one. Not written here.
    pub hypercall_page: Option<u64>,
    /// Guest frames: pfn (= mfn) `0..nr_pages`. start_info.nr_pages.
    pub nr_pages: u64,
    /// Machine frames: all of guest RAM (guest frames, unused frames, platform frames).
    pub ram_pages: u64,
    pub kernel: Segment,
    pub module: Option<ModuleLayout>,
    /// The p2m list (`mfn_list`). With INIT_P2M it is mapped at the note's address and its
    /// segment also holds `p2m_pt_frames` page-table frames for that mapping.
    pub p2m: Segment,
    pub p2m_virtual: bool,
    pub p2m_pt_frames: u64,
    pub start_info: Segment,
    pub xenstore: Segment,
    pub console: Segment,
    /// The initial page tables: `pt_base` = `pgtables.vstart`, `nr_pt_frames` = pages.
    pub pgtables: Segment,
    pub boot_stack: Segment,
    /// End of the builder's allocations in the initial mapping (after the boot stack).
    pub virt_alloc_end: u64,
    /// End of the initial mapping (exclusive): everything in `[virt_base, virt_pgtab_end)`
    /// maps pfn `(va - virt_base) >> 12`.
    pub virt_pgtab_end: u64,
    /// First pfn the builder did not allocate.
    pub pfn_alloc_end: u64,
    pub pt_base: u64,
    pub nr_pt_frames: u64,
    pub mfn_list: u64,
    /// start_info.flags.
    pub flags: u32,
    /// The page-table mappings: [0] the initial mapping, [1] the p2m (INIT_P2M).
    pub mappings: Vec<Mapping>,
    pub platform: PlatformLayout,
    /// Filled in by the builder once the platform mappings exist.
    pub xen_entries: Vec<XenEntry>,
}

impl DomainLayout {
    /// Virtual address of pfn `pfn` in the initial mapping.
    pub fn pfn_va(&self, pfn: u64) -> u64 {
        self.virt_base.wrapping_add(pfn << PAGE_SHIFT)
    }
    /// Machine address of the top-level page table.
    pub fn top_table_maddr(&self) -> u64 {
        self.pgtables.gpa()
    }
}

impl fmt::Display for DomainLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seg = |f: &mut fmt::Formatter<'_>, name: &str, s: &Segment| {
            writeln!(
                f,
                "  {name:<14} {:#018x} -> {:#018x}  pfn {:#x} + {:#x}",
                s.vstart, s.vend, s.pfn, s.pages
            )
        };
        writeln!(
            f,
            "{} domain: {:#x} pages ({} MiB), RAM {:#x} frames, virt_base {:#x}, entry {:#x}",
            self.guest.magic(),
            self.nr_pages,
            self.nr_pages >> 8,
            self.ram_pages,
            self.virt_base,
            self.entry
        )?;
        seg(f, "kernel", &self.kernel)?;
        if let Some(m) = &self.module {
            if !m.unmapped {
                seg(f, "module", &m.seg)?;
            }
        }
        if !self.p2m_virtual {
            seg(f, "phys2mach", &self.p2m)?;
        }
        seg(f, "start info", &self.start_info)?;
        seg(f, "xenstore", &self.xenstore)?;
        seg(f, "console", &self.console)?;
        seg(f, "page tables", &self.pgtables)?;
        seg(f, "boot stack", &self.boot_stack)?;
        writeln!(
            f,
            "  virt_alloc_end {:#x}, virt_pgtab_end {:#x}",
            self.virt_alloc_end, self.virt_pgtab_end
        )?;
        if let Some(m) = &self.module {
            if m.unmapped {
                seg(f, "module (pfn)", &m.seg)?;
            }
        }
        if self.p2m_virtual {
            seg(f, "phys2mach", &self.p2m)?;
            writeln!(
                f,
                "  (p2m segment includes {} page-table frames)",
                self.p2m_pt_frames
            )?;
        }
        writeln!(
            f,
            "  pt_base {:#x}, nr_pt_frames {}, mfn_list {:#x}, flags {:#x}",
            self.pt_base, self.nr_pt_frames, self.mfn_list, self.flags
        )?;
        let p = &self.platform;
        writeln!(
            f,
            "  platform mfns {:#x}..{:#x}: shared_info {:#x}, zero {:#x}, gdt {:#x}, grant {:#x} + {:#x}, grant status {:#x} + {:#x}, M2P {:#x} + {:#x} at {:#x}, GDTR {:#x}/{:#x}",
            p.first_mfn,
            p.first_mfn + p.frames,
            p.shared_info_mfn,
            p.zero_mfn,
            p.gdt_mfn,
            p.grant_mfn,
            p.grant_frames,
            p.grant_status_mfn,
            p.grant_status_frames,
            p.m2p_mfn,
            p.m2p_frames,
            p.m2p_va,
            p.gdt_va,
            p.gdt_limit
        )
    }
}

/// libxc's allocator state: `virt_alloc_end`, `pfn_alloc_end`, checked against the guest's
/// pages (`xc_dom_chk_alloc_pages`, `xc_dom_alloc_pad`, `xc_dom_alloc_segment`).
struct Alloc {
    virt_alloc_end: u64,
    pfn_alloc_end: u64,
    total: u64,
    vaddr_limit: u64,
}

impl Alloc {
    fn take(&mut self, what: &'static str, pages: u64) -> Result<()> {
        if pages == 0 {
            return Ok(());
        }
        if pages > self.total - self.pfn_alloc_end.min(self.total)
            || self.pfn_alloc_end > self.total
        {
            return Err(BuildError::OutOfMemory {
                what,
                pages,
                used: self.pfn_alloc_end,
                nr_pages: self.total,
            });
        }
        let end = pages
            .checked_mul(PAGE_SIZE)
            .and_then(|b| self.virt_alloc_end.checked_add(b))
            .filter(|&e| e - 1 <= self.vaddr_limit)
            .ok_or(BuildError::AddressOverflow(what))?;
        self.pfn_alloc_end += pages;
        self.virt_alloc_end = end;
        Ok(())
    }

    fn pad_to(&mut self, boundary: u64) -> Result<()> {
        if boundary % PAGE_SIZE != 0 || boundary < self.virt_alloc_end {
            return Err(BuildError::AddressOverflow("segment boundary"));
        }
        self.take("padding", (boundary - self.virt_alloc_end) / PAGE_SIZE)
    }

    fn segment(&mut self, what: &'static str, start: Option<u64>, size: u64) -> Result<Segment> {
        if let Some(s) = start {
            self.pad_to(s)?;
        }
        let pages = div_ceil(size, PAGE_SIZE);
        let vstart = self.virt_alloc_end;
        let pfn = self.pfn_alloc_end;
        self.take(what, pages)?;
        Ok(Segment {
            vstart,
            vend: self.virt_alloc_end,
            pfn,
            pages,
        })
    }

    fn page(&mut self, what: &'static str) -> Result<Segment> {
        self.segment(what, None, PAGE_SIZE)
    }
}

/// Inputs of the layout besides the image.
#[derive(Clone, Copy, Debug)]
pub struct LayoutInput {
    pub nr_pages: u64,
    pub ram_pages: u64,
    /// Bytes of the module segment (libxc's `modulelen`), if any.
    pub module_len: Option<u64>,
}

/// Extra pages `alloc_pgtables_pv` keeps in the initial mapping beyond the page tables:
/// the boot stack and 512 KiB of padding.
const PGTABLE_EXTRA_PAGES: u64 = 1 + (512 * 1024) / PAGE_SIZE;
/// The initial mapping ends on a 4 MiB boundary.
const MAPPING_ALIGN_MASK: u64 = (4 << 20) - 1;

/// Compute the layout of a domain for `image`.
pub fn compute(image: &GuestImage<'_>, input: &LayoutInput) -> Result<DomainLayout> {
    let guest = GuestType::of(image);
    let params = guest.pt_params();
    let x = &image.xen;
    let kl = &image.layout;
    let nr_pages = input.nr_pages;
    if input.ram_pages > guest.max_ram_pages() {
        return Err(BuildError::TooManyFrames {
            frames: input.ram_pages,
            max: guest.max_ram_pages(),
        });
    }
    let platform = platform_frames(guest, input.ram_pages);
    if nr_pages == 0 || nr_pages > input.ram_pages.saturating_sub(platform) {
        return Err(BuildError::RamTooSmall {
            need_pages: ram_pages_for(guest, nr_pages.max(1)),
            have_pages: input.ram_pages,
        });
    }
    let vaddr_limit = match guest {
        GuestType::X86_64 => u64::MAX,
        GuestType::X86_32Pae => 0xffff_ffff,
    };
    if kl.virt_kend > vaddr_limit {
        return Err(BuildError::AddressOverflow("kernel beyond 4 GiB"));
    }

    let mut a = Alloc {
        virt_alloc_end: x.virt_base,
        pfn_alloc_end: 0,
        total: nr_pages,
        vaddr_limit,
    };

    // The kernel, at its own address (the pages below it, from virt_base, are padding).
    let kernel = a.segment(
        "kernel",
        Some(kl.virt_kstart),
        kl.virt_kend - kl.virt_kstart,
    )?;

    // A module the kernel wants mapped goes right after it.
    let mut module = None;
    let module_unmapped = x.unmapped_initrd;
    if let (Some(len), false) = (input.module_len, module_unmapped) {
        let seg = a.segment("module", None, len)?;
        module = Some(ModuleLayout {
            seg,
            unmapped: false,
            mod_start: seg.vstart,
            mod_len: seg.vend - seg.vstart,
        });
    }

    // INIT_P2M is honoured for 64-bit guests when it lies below the kernel, page aligned.
    let p2m_base = x
        .p2m_base
        .filter(|&b| guest.is_64bit() && b < x.virt_base && b % PAGE_SIZE == 0);
    let p2m_bytes = nr_pages
        .checked_mul(guest.word_size())
        .map(|b| div_ceil(b, PAGE_SIZE) * PAGE_SIZE)
        .ok_or(BuildError::AddressOverflow("p2m size"))?;
    let mut p2m = if p2m_base.is_none() {
        Some(a.segment("phys2mach", None, p2m_bytes)?)
    } else {
        None
    };

    let start_info = a.page("start info")?;
    let xenstore = a.page("xenstore")?;
    let console = a.page("console")?;

    // Page tables: enough to map virt_base up to the 4 MiB boundary past everything
    // allocated so far, the tables themselves, the boot stack and 512 KiB.
    let mut pages = PGTABLE_EXTRA_PAGES;
    let mut rounds = 0;
    let (map0, try_end) = loop {
        let try_end = pages
            .checked_mul(PAGE_SIZE)
            .and_then(|b| a.virt_alloc_end.checked_add(b))
            .map(|e| e | MAPPING_ALIGN_MASK)
            .filter(|&e| e < vaddr_limit)
            .ok_or(BuildError::AddressOverflow("initial mapping"))?;
        let m = pagetable::plan(
            params,
            &[],
            x.virt_base,
            try_end,
            0,
            a.pfn_alloc_end,
            nr_pages,
        )?;
        pages = m.tables + PGTABLE_EXTRA_PAGES;
        let need_end = a
            .virt_alloc_end
            .checked_add(pages * PAGE_SIZE)
            .ok_or(BuildError::AddressOverflow("initial mapping"))?;
        if need_end - 1 <= try_end {
            break (m, try_end);
        }
        rounds += 1;
        if rounds > 64 {
            return Err(BuildError::AddressOverflow(
                "initial mapping does not converge",
            ));
        }
    };
    // try_end < vaddr_limit, so this does not wrap.
    let virt_pgtab_end = try_end + 1;
    check_hypervisor_hole(guest, x.virt_base, try_end)?;
    let pgtables = a.segment("page tables", None, map0.tables * PAGE_SIZE)?;
    let boot_stack = a.page("boot stack")?;
    let virt_alloc_end = a.virt_alloc_end;

    // Everything the initial tables map is guest memory.
    a.pad_to(virt_pgtab_end)?;

    let mut flags = super::abi::sif::VIRT_P2M_4TOOLS;
    if let (Some(len), true) = (input.module_len, module_unmapped) {
        let seg = a.segment("module", None, len)?;
        flags |= super::abi::sif::MOD_START_PFN;
        module = Some(ModuleLayout {
            seg,
            unmapped: true,
            mod_start: seg.pfn,
            mod_len: seg.pages * PAGE_SIZE,
        });
    }

    let mut mappings = vec![map0];
    let mut p2m_pt_frames = 0;
    if let Some(base) = p2m_base {
        let to = base
            .checked_add(p2m_bytes - 1)
            .ok_or(BuildError::AddressOverflow("p2m mapping"))?;
        check_hypervisor_hole(guest, base, to)?;
        let p2m_pages = p2m_bytes / PAGE_SIZE;
        let m1 = pagetable::plan(
            params,
            &mappings,
            base,
            to,
            a.pfn_alloc_end,
            a.pfn_alloc_end + p2m_pages,
            nr_pages,
        )?;
        let mut seg = a.segment("phys2mach", None, p2m_bytes + m1.tables * PAGE_SIZE)?;
        seg.vstart = base;
        seg.vend = base + p2m_bytes;
        p2m_pt_frames = m1.tables;
        mappings.push(m1);
        p2m = Some(seg);
    }
    let p2m = p2m.ok_or(BuildError::Unsupported("no p2m list"))?;

    Ok(DomainLayout {
        guest,
        virt_base: x.virt_base,
        entry: x.virt_entry,
        hypercall_page: x.virt_hypercall,
        nr_pages,
        ram_pages: input.ram_pages,
        kernel,
        module,
        p2m,
        p2m_virtual: p2m_base.is_some(),
        p2m_pt_frames,
        start_info,
        xenstore,
        console,
        pgtables,
        boot_stack,
        virt_alloc_end,
        virt_pgtab_end,
        pfn_alloc_end: a.pfn_alloc_end,
        pt_base: pgtables.vstart,
        nr_pt_frames: pgtables.pages,
        mfn_list: p2m.vstart,
        flags,
        mappings,
        platform: platform_layout(guest, input.ram_pages),
        xen_entries: Vec::new(),
    })
}

/// Guest mappings must stay out of the hypervisor's part of the address space: L4 slots
/// 256..=271 for 64-bit guests (and the non-canonical hole), everything from
/// HYPERVISOR_VIRT_START (0xF5800000) for PAE guests.
fn check_hypervisor_hole(guest: GuestType, from: u64, to: u64) -> Result<()> {
    match guest {
        GuestType::X86_64 => {
            let canonical = |v: u64| ((v as i64) << 16 >> 16) as u64 == v;
            if !canonical(from) || !canonical(to) || (from >> 63) != (to >> 63) {
                return Err(BuildError::AddressOverflow("mapping is not canonical"));
            }
            if from < va::HYPERVISOR_VIRT_END_64 && to >= va::HYPERVISOR_VIRT_START_64 {
                return Err(BuildError::Overlap {
                    what: "hypervisor area",
                    addr: from.max(va::HYPERVISOR_VIRT_START_64),
                });
            }
        }
        GuestType::X86_32Pae => {
            if to >= va::HYPERVISOR_VIRT_START_PAE {
                return Err(BuildError::Overlap {
                    what: "hypervisor area",
                    addr: from.max(va::HYPERVISOR_VIRT_START_PAE),
                });
            }
        }
    }
    Ok(())
}

/// The platform frames at the top of RAM, in allocation order; page-table frames for the
/// platform mappings come last and are handed out while mapping.
fn platform_layout(guest: GuestType, ram_pages: u64) -> PlatformLayout {
    let frames = platform_frames(guest, ram_pages);
    let first = ram_pages - frames;
    let mut next = first;
    let mut take = |n: u64| {
        next += n;
        next - n
    };
    let shared_info_mfn = take(1);
    let zero_mfn = take(1);
    let gdt_mfn = take(1);
    let compat_l4_mfn = (guest == GuestType::X86_32Pae).then(|| take(1));
    let grant_mfn = take(GRANT_FRAMES);
    let grant_status_mfn = take(GRANT_STATUS_FRAMES);
    let m2p_frames = m2p_frames(guest, ram_pages);
    let m2p_mfn = take(m2p_frames);
    PlatformLayout {
        first_mfn: first,
        frames,
        shared_info_mfn,
        zero_mfn,
        gdt_mfn,
        compat_l4_mfn,
        grant_mfn,
        grant_frames: GRANT_FRAMES,
        grant_status_mfn,
        grant_status_frames: GRANT_STATUS_FRAMES,
        m2p_mfn,
        m2p_frames,
        m2p_entries: ram_pages,
        m2p_va: guest.m2p_va(),
        gdt_va: va::PERDOMAIN_VIRT_START,
        gdt_limit: super::abi::sel::GDT_LIMIT,
        gdt_l1_maddr: 0,
    }
}
