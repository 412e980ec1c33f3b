//! The guest's LDT (MMUEXT_SET_LDT), as Xen keeps it for PV guests: the LDT lives in guest
//! memory at a page-aligned linear address; the CPU sees it through Xen's per-domain area
//! (64 KiB above the GDT, `gdt_va + 0x10000`, L1 slots 16..31 of the GDT/LDT table), where
//! each page is mapped lazily, read-only, the first time a descriptor in it is used (Xen's
//! pv_map_ldt_shadow_page). Mapping a page gives it the segment-descriptor type, after
//! every descriptor in it passed Xen's check_descriptor; a page that cannot be mapped turns
//! the access into a #PF for the guest at `ldt_base + offset`. A new LDT drops the old
//! mappings (and their type references).

use frontend_x86::state::{X86State, G_CR3, G_LDTR_ATTR, G_LDTR_BASE, G_LDTR_LIMIT, G_LDTR_SEL};
use jit::{Engine, GuestFault};

use super::PvDomain;
use crate::builder::pagetable::{A, ADDR_MASK, NX, P};
use crate::builder::GuestType;
use crate::core::errno::*;
use crate::core::GuestPhys;

/// LDT_ENTRIES: the most descriptors an LDT holds (64 KiB).
pub const LDT_ENTRIES: u64 = 8192;
/// The selector of Xen's LDT descriptor in its GDT (LDT_ENTRY << 3, 64-bit Xen).
const LDT_SELECTOR: u64 = 0xe050;
/// First GDT/LDT L1 slot of the LDT area.
const LDT_SLOT: u64 = 16;

/// The guest's current LDT: linear base, entries, and the frames mapped so far.
#[derive(Clone, Debug, Default)]
pub struct Ldt {
    pub base: u64,
    pub ents: u32,
    mapped: [Option<u64>; 16],
}

impl PvDomain {
    fn ldt_va(&self) -> u64 {
        self.dom.layout.platform.gdt_va + 0x10000
    }

    /// MMUEXT_SET_LDT: `ptr` page-aligned and outside Xen's range, at most 8192 entries.
    pub(super) fn set_ldt(&mut self, e: &mut Engine, ptr: u64, ents: u64) -> Result<(), i64> {
        let ptr = if ents == 0 { 0 } else { ptr };
        let addr_ok = match self.guest() {
            GuestType::X86_64 => {
                super::is_canonical(ptr)
                    && !(0xffff_8000_0000_0000..0xffff_8800_0000_0000).contains(&ptr)
            }
            GuestType::X86_32Pae => ptr < self.dom.layout.platform.m2p_va,
        };
        if ptr & 0xfff != 0 || !addr_ok || ents > LDT_ENTRIES {
            return Err(EINVAL);
        }
        if self.ldt.base != ptr || self.ldt.ents as u64 != ents {
            self.destroy_ldt(e);
            self.ldt.base = ptr;
            self.ldt.ents = ents as u32;
        }
        self.load_ldt(e);
        Ok(())
    }

    /// Point the engine's LDTR at the LDT area (a null LDT when there are no entries).
    pub(super) fn load_ldt(&mut self, e: &mut Engine) {
        let (va, ents) = (self.ldt_va(), self.ldt.ents as u64);
        let mut s = X86State(&mut e.env);
        if ents == 0 {
            s.set_g(G_LDTR_SEL, 0);
            s.set_g(G_LDTR_BASE, 0);
            s.set_g(G_LDTR_LIMIT, 0);
            s.set_g(G_LDTR_ATTR, 0);
        } else {
            s.set_g(G_LDTR_SEL, LDT_SELECTOR);
            s.set_g(G_LDTR_BASE, va);
            s.set_g(G_LDTR_LIMIT, ents * 8 - 1);
            // A present LDT system descriptor (type 2).
            s.set_g(G_LDTR_ATTR, 0x82);
        }
    }

    /// Drop the LDT's shadow mappings and their type references (pv_destroy_ldt).
    fn destroy_ldt(&mut self, e: &mut Engine) {
        let l1 = self.dom.layout.platform.gdt_l1_maddr;
        let mut any = false;
        for i in 0..16 {
            if let Some(f) = self.ldt.mapped[i].take() {
                GuestPhys::write_u64(e.ram(), l1 + (LDT_SLOT + i as u64) * 8, 0);
                self.put_table(e, f);
                any = true;
            }
        }
        if any {
            e.tlb_flush();
        }
    }

    /// A #PF at `f.addr` inside the LDT area: map the LDT page it needs and let the
    /// instruction restart (true), or turn it into the guest's #PF at the LDT's linear
    /// address (Xen's handle_gdt_ldt_mapping_fault). False when the fault is not the LDT's.
    pub(super) fn ldt_fault(&mut self, e: &mut Engine, f: GuestFault) -> bool {
        let va = self.ldt_va();
        if f.vector != 14 || f.addr < va || f.addr >= va + LDT_ENTRIES * 8 {
            return false;
        }
        let off = f.addr - va;
        let page = (off >> 12) as usize;
        if self.ldt.mapped[page].is_none() && self.map_ldt_page(e, page).is_ok() {
            return true;
        }
        // Propagate to the guest with cr2 at the LDT's own linear address.
        let g = GuestFault {
            vector: 14,
            error_code: f.error_code,
            addr: self.ldt.base.wrapping_add(off),
        };
        self.deliver_fault(e, g);
        true
    }

    fn map_ldt_page(&mut self, e: &mut Engine, page: usize) -> Result<(), i64> {
        let linear = self.ldt.base + ((page as u64) << 12);
        let mfn = self.kernel_frame_of(e, linear).ok_or(EFAULT)?;
        if !self.owns(mfn) {
            return Err(EINVAL);
        }
        match self.mmu.tables.get(&mfn) {
            Some(t) if t.level != 0 => return Err(EINVAL),
            Some(_) => {}
            None => {
                // Every descriptor must pass Xen's check before the page takes the type.
                let mut fixed = Vec::with_capacity(512);
                for i in 0..512u64 {
                    let v = GuestPhys::read_u64(e.ram(), (mfn << 12) + i * 8).ok_or(EFAULT)?;
                    fixed.push(self.check_descriptor(v).map_err(|_| EINVAL)?);
                }
                for (i, v) in fixed.into_iter().enumerate() {
                    GuestPhys::write_u64(e.ram(), (mfn << 12) + i as u64 * 8, v);
                }
            }
        }
        self.get_table(e, mfn, 0)?;
        let l1 = self.dom.layout.platform.gdt_l1_maddr;
        GuestPhys::write_u64(
            e.ram(),
            l1 + (LDT_SLOT + page as u64) * 8,
            (mfn << 12) | P | A | NX,
        );
        self.ldt.mapped[page] = Some(mfn);
        e.tlb_flush_page(self.ldt_va() + ((page as u64) << 12));
        Ok(())
    }

    /// The frame `linear` maps in the guest kernel's page tables (present entries only).
    fn kernel_frame_of(&self, e: &mut Engine, linear: u64) -> Option<u64> {
        let top = match self.guest() {
            GuestType::X86_64 => self.mmu.kernel_base,
            GuestType::X86_32Pae => X86State(&mut e.env).g(G_CR3),
        };
        let at = Self::l1_entry_addr_in(e, top, linear)?;
        let pte = GuestPhys::read_u64(e.ram(), at)?;
        (pte & P != 0).then_some((pte & ADDR_MASK) >> 12)
    }
}
