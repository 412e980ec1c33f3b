//! Descriptor tables: set_gdt and update_descriptor, with Xen's check_descriptor rules.
//!
//! The guest's GDT frames are installed in the per-domain GDT area (the L1 the builder
//! made, [`crate::builder::PlatformLayout::gdt_l1_maddr`]), supervisor-only, ahead of Xen's
//! reserved page; a frame used as a GDT page becomes a descriptor page (tracked as level 0
//! in the MMU's table map), so it can no longer be mapped writable or used as a page table.

use frontend_x86::state::{X86State, G_GDTR_LIMIT};
use jit::Engine;

use super::PvDomain;
use crate::builder::pagetable::{A, D, NX, P, RW};
use crate::builder::GuestType;
use crate::core::errno::*;
use crate::core::GuestPhys;

/// Guest GDT entries: 14 frames of 512 (FIRST_RESERVED_GDT_ENTRY).
pub const MAX_GUEST_GDT_ENTRIES: u64 = 14 * 512;

impl PvDomain {
    /// Xen's check_descriptor: Ok(fixed-up descriptor) or Err for a descriptor a PV guest
    /// may not have. DPLs below the guest kernel's ring are raised to it.
    pub fn check_descriptor(&self, d: u64) -> Result<u64, ()> {
        let (a, mut b) = (d as u32, (d >> 32) as u32);
        // A not-present descriptor always faults: safe (keep it as it is).
        if b & (1 << 15) == 0 {
            return Ok(d);
        }
        let min_dpl = if self.guest() == GuestType::X86_64 {
            3
        } else {
            1
        };
        let s = b & (1 << 12) != 0;
        if !s {
            // System descriptors: only call gates (type 0xc) are allowed.
            if (b >> 8) & 0xf != 0xc {
                return Err(());
            }
            // The gate's target selector must not name ring 0.
            let sel = (a >> 16) as u16;
            if sel & 3 == 0 && sel & !3 != 0 {
                let fixed = (sel & !3) | min_dpl as u16;
                return Ok((b as u64) << 32 | ((fixed as u32) << 16 | (a & 0xffff)) as u64);
            }
            return Ok(d);
        }
        let dpl = (b >> 13) & 3;
        if dpl < min_dpl {
            b = (b & !(3 << 13)) | (min_dpl << 13);
        }
        Ok((b as u64) << 32 | a as u64)
    }

    /// The descriptor a selector names in the guest's own GDT (installed by set_gdt), read
    /// from its frame. None for LDT selectors, the null selector and entries beyond the
    /// guest's part of the GDT (Xen's reserved entries are `xen_desc`'s).
    pub fn guest_desc(&self, e: &mut Engine, sel: u16) -> Option<frontend_x86::desc::Desc> {
        let idx = (sel >> 3) as u64;
        if sel & 4 != 0 || idx == 0 || idx >= MAX_GUEST_GDT_ENTRIES {
            return None;
        }
        let l1e = GuestPhys::read_u64(e.ram(), self.gdt_l1() + (idx / 512) * 8)?;
        let mfn = (l1e & crate::builder::pagetable::ADDR_MASK) >> 12;
        if l1e & P == 0 || mfn == self.dom.layout.platform.zero_mfn {
            return None;
        }
        let v = GuestPhys::read_u64(e.ram(), (mfn << 12) + (idx % 512) * 8)?;
        Some(frontend_x86::desc::Desc {
            lo: v as u32,
            hi: (v >> 32) as u32,
        })
    }

    fn gdt_l1(&self) -> u64 {
        self.dom.layout.platform.gdt_l1_maddr
    }
}

pub(super) fn set_gdt(d: &mut PvDomain, e: &mut Engine, a: [u64; 6]) -> HcResult {
    let (list, entries) = (a[0], a[1] & 0xffff_ffff);
    if entries > MAX_GUEST_GDT_ENTRIES {
        return Err(EINVAL);
    }
    let nr = entries.div_ceil(512);
    let w = d.guest().word_size();
    let mut frames = Vec::with_capacity(nr as usize);
    for i in 0..nr {
        let mut b = [0u8; 8];
        d.read_guest(e, list + i * w, &mut b[..w as usize])
            .map_err(|_| EFAULT)?;
        frames.push(u64::from_le_bytes(b));
    }
    // Validate every frame (and fix up the descriptors in place) before changing anything.
    for &f in &frames {
        if !d.owns(f) {
            return Err(EINVAL);
        }
        match d.mmu.tables.get(&f) {
            Some(t) if t.level != 0 => return Err(EINVAL),
            _ => {}
        }
    }
    let mut fixed = Vec::new();
    for &f in &frames {
        let mut out = Vec::with_capacity(512);
        for i in 0..512u64 {
            let v = GuestPhys::read_u64(e.ram(), (f << 12) + i * 8).ok_or(EFAULT)?;
            out.push(d.check_descriptor(v).map_err(|_| EINVAL)?);
        }
        fixed.push((f, out));
    }
    // Release the old frames, install the new ones.
    let l1 = d.gdt_l1();
    for i in 0..14u64 {
        let old = GuestPhys::read_u64(e.ram(), l1 + i * 8).unwrap_or(0);
        let mfn = (old & crate::builder::pagetable::ADDR_MASK) >> 12;
        if d.mmu.tables.get(&mfn).is_some_and(|t| t.level == 0) {
            d.put_table(e, mfn);
        }
    }
    for (f, descs) in &fixed {
        for (i, v) in descs.iter().enumerate() {
            GuestPhys::write_u64(e.ram(), (f << 12) + i as u64 * 8, *v);
        }
        d.get_table(e, *f, 0)?;
    }
    let zero = d.dom.layout.platform.zero_mfn;
    for i in 0..14u64 {
        let v = match frames.get(i as usize) {
            Some(f) => (f << 12) | P | RW | A | D | NX,
            None => (zero << 12) | P | A | NX,
        };
        GuestPhys::write_u64(e.ram(), l1 + i * 8, v);
    }
    // Xen keeps the limit covering its reserved entries.
    X86State(&mut e.env).set_g(G_GDTR_LIMIT, d.dom.layout.platform.gdt_limit as u64);
    e.tlb_flush();
    Ok(0)
}

pub(super) fn update_descriptor(d: &mut PvDomain, e: &mut Engine, a: [u64; 6]) -> HcResult {
    let (pa, desc) = match d.guest() {
        GuestType::X86_64 => (a[0], a[1]),
        // 32-bit: (pa_lo, pa_hi, desc_lo, desc_hi)
        GuestType::X86_32Pae => (
            (a[0] & 0xffff_ffff) | (a[1] & 0xffff_ffff) << 32,
            (a[2] & 0xffff_ffff) | (a[3] & 0xffff_ffff) << 32,
        ),
    };
    let mfn = pa >> 12;
    if pa & 7 != 0 || !d.owns(mfn) {
        return Err(EINVAL);
    }
    let v = d.check_descriptor(desc).map_err(|_| EINVAL)?;
    // A page-table frame cannot hold descriptors.
    if d.mmu.tables.get(&mfn).is_some_and(|t| t.level != 0) {
        return Err(EINVAL);
    }
    GuestPhys::write_u64(e.ram(), pa, v);
    let core = &mut *e.core;
    core.notify_phys_write(&mut e.env, pa, 8);
    Ok(0)
}
