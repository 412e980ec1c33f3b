//! PV memory management hypercalls: mmu_update, update_va_mapping, mmuext_op, multicall,
//! and the memory_op / vcpu_op queries a guest makes at boot.
//!
//! Page-table frames are tracked with their level and pin state: the initial tables, every
//! table the guest pins or installs as a base pointer, and every frame an entry validated
//! at level N > 1 names (which becomes a level N-1 table, as Xen's get_page_type makes it).
//! Every entry written to a tracked table is validated as Xen does at its level: frames
//! inside the domain (or the shared_info frame), no superpages, no reserved bits, no
//! writable mapping of a page table; 64-bit guests get `_PAGE_USER` added (the kernel runs
//! in ring 3). Writes to untracked frames are plain writes (Xen's writable-page case).
//! Not yet Xen's full type and reference counts: a table is not devalidated when its last
//! reference goes, so a frame once used as a page table stays one until it is unpinned.

use std::collections::HashMap;

use frontend_x86::state::{X86State, G_CR3};
use jit::Engine;

use super::PvDomain;
use crate::builder::pagetable::{A, ADDR_MASK, D, P, RW, US};
use crate::builder::GuestType;
use crate::core::errno::*;
use crate::core::GuestPhys;

pub const DOMID_SELF: u64 = 0x7ff0;
const PSE: u64 = 1 << 7;

/// A frame in use as a page table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PtFrame {
    /// 1-4: a page table of that level; 0: a descriptor (GDT/LDT) page.
    pub level: u8,
    pub pinned: bool,
    /// Type references: entries of higher-level tables naming it, base pointers, the pin.
    pub refs: u32,
    /// PAE: the L2 under L3 slot 3 (Xen's PGT_pae_xen_l2), whose top slots are Xen's
    /// (the compat M2P); such an L2 may be named only from slot 3.
    pub xen_l2: bool,
}

#[derive(Clone, Debug, Default)]
pub struct PvMmu {
    /// Page-table frames by mfn.
    pub tables: HashMap<u64, PtFrame>,
    /// The guest's kernel and user base pointers (machine addresses; user 0 = none).
    pub kernel_base: u64,
    pub user_base: u64,
    /// The engine's TLB must be flushed before the guest runs again.
    pub tlb_dirty: bool,
    /// Only its lower half must be flushed (a new base pointer whose kernel half, L4 slots
    /// 256..511, is the one the TLB was filled from).
    pub tlb_dirty_lower: bool,
    /// The kernel base pointer the TLB's kernel-mode entries were filled from.
    pub active_kernel_base: u64,
    /// Present entries changed or removed since the last flush, which the TLB may still
    /// hold, where the guest named the virtual address they map (update_va_mapping); the
    /// others (mmu_update, a trapped write) are reported to the engine (`pt_changed`).
    pub stale_vas: Vec<u64>,
}

/// More named pages than this since the last flush: further changes are reported to the
/// engine as if they had named none.
const STALE_VAS_MAX: usize = 64;

impl PvDomain {
    fn top_level(&self) -> u8 {
        match self.guest() {
            GuestType::X86_64 => 4,
            GuestType::X86_32Pae => 3,
        }
    }

    /// Take the initial page tables as Xen's domain builder leaves them: validated,
    /// pinned, and the kernel base pointer.
    pub fn init_mmu(&mut self, e: &mut Engine) -> Result<(), String> {
        let top = self.dom.layout.pgtables.pfn;
        let lvl = self.top_level();
        self.get_table(e, top, lvl)
            .map_err(|x| format!("the initial page tables do not validate (error {x})"))?;
        self.get_table(e, top, lvl)
            .map_err(|x| format!("the initial page tables do not validate (error {x})"))?;
        if let Some(t) = self.mmu.tables.get_mut(&top) {
            t.pinned = true;
        }
        self.mmu.kernel_base = top << 12;
        Ok(())
    }

    /// Entries in a level-`level` table: a PAE guest's L3 has 4.
    fn table_entries(&self, level: u8) -> u64 {
        if level == 3 && self.guest() == GuestType::X86_32Pae {
            4
        } else {
            512
        }
    }

    fn is_guest_slot(&self, level: u8, index: u64, xen_l2: bool) -> bool {
        match (self.guest(), level) {
            // L4 slots 256..=271 are Xen's.
            (GuestType::X86_64, 4) => !(256..272).contains(&index),
            (GuestType::X86_32Pae, 3) => index < 4,
            // PAE: an L2 under L3 slot 3 has Xen's slots from the compat M2P up.
            (GuestType::X86_32Pae, 2) if xen_l2 => index < self.first_xen_l2_slot(),
            _ => true,
        }
    }

    /// COMPAT_L2_PAGETABLE_FIRST_XEN_SLOT: the first slot of a PAE L2 under L3 slot 3 that
    /// is Xen's (the compat M2P and above).
    fn first_xen_l2_slot(&self) -> u64 {
        (self.dom.layout.platform.m2p_va >> 21) & 511
    }

    /// Validate `val` as an entry of a level-`level` table; returns the value to store.
    fn check_entry(&mut self, e: &mut Engine, level: u8, index: u64, val: u64) -> Result<u64, i64> {
        if val & P == 0 {
            return Ok(val);
        }
        let mfn = (val & ADDR_MASK) >> 12;
        let shinfo = self.dom.layout.platform.shared_info_mfn;
        // Bits 52..62 are reserved in Xen's PV entries (NX, bit 63, is allowed).
        if val & 0x7ff0_0000_0000_0000 != 0 {
            return Err(EINVAL);
        }
        let mut v = val;
        if self.guest() == GuestType::X86_64 {
            v |= US;
        }
        if level == 1 {
            // The domain's frames, shared_info, and the grant table frames Xen shares with
            // it (read-write, SHARE_rw) while they are in use.
            if !self.owns(mfn) && mfn != shinfo && self.grant.table_frame(mfn).is_none() {
                return Err(EINVAL);
            }
            if v & RW != 0 && self.mmu.tables.contains_key(&mfn) {
                // A writable mapping of a page table: get_page_type(writable) fails.
                return Err(EINVAL);
            }
            return Ok(v);
        }
        if v & PSE != 0 || !self.owns(mfn) {
            return Err(EINVAL);
        }
        // The entry holds a type reference on the table below; for a PAE guest, the L2
        // under L3 slot 3 takes Xen's type for it.
        let xen_l2 = self.guest() == GuestType::X86_32Pae && level == 3 && index == 3;
        self.get_table_as(e, mfn, level - 1, xen_l2)?;
        Ok(v)
    }

    /// The table frame a present entry of a level-`level` (> 1) table names.
    fn child_of(level: u8, v: u64) -> Option<u64> {
        (level > 1 && v & P != 0).then_some((v & ADDR_MASK) >> 12)
    }

    /// Validate every guest entry of frame `mfn` as a level-`level` table, adjusting them
    /// as Xen does (`_PAGE_USER` for 64-bit guests) and installing Xen's own L4 slots.
    fn validate_table(
        &mut self,
        e: &mut Engine,
        mfn: u64,
        level: u8,
        xen_l2: bool,
    ) -> Result<(), i64> {
        if !self.owns(mfn) {
            return Err(EINVAL);
        }
        let base = mfn << 12;
        let n = self.table_entries(level);
        // The table in one read (entries one by one were a bounds-checked copy each).
        let page = read_table(e, base, n).ok_or(EFAULT)?;
        let mut out: Vec<(u64, u64)> = Vec::new();
        for i in 0..n {
            if !self.is_guest_slot(level, i, xen_l2) {
                continue;
            }
            let old = page[i as usize];
            match self.check_entry(e, level, i, old) {
                // Only the entries validation changed (_PAGE_USER) are written back; the
                // list also undoes the references on a failure.
                Ok(v) if v == old && Self::child_of(level, v).is_none() => {}
                Ok(v) => out.push((i, v)),
                Err(x) => {
                    // Drop the references the entries validated so far took.
                    for (_, v) in out {
                        if let Some(c) = Self::child_of(level, v) {
                            self.put_table(e, c);
                        }
                    }
                    return Err(x);
                }
            }
        }
        for (i, v) in out {
            if v != page[i as usize] {
                GuestPhys::write_u64(e.ram(), base + i * 8, v);
            }
        }
        let xen_level = match self.guest() {
            GuestType::X86_64 => 4,
            GuestType::X86_32Pae => 2,
        };
        if level == xen_level && (level == 4 || xen_l2) {
            for x in self.dom.layout.xen_entries.clone() {
                if x.level == level {
                    GuestPhys::write_u64(e.ram(), base + x.index as u64 * 8, x.entry);
                }
            }
        }
        Ok(())
    }

    /// Take a type reference on frame `mfn` as a level-`level` table, validating it when
    /// it gains the type (Xen's get_page_type).
    pub(super) fn get_table(&mut self, e: &mut Engine, mfn: u64, level: u8) -> Result<(), i64> {
        self.get_table_as(e, mfn, level, false)
    }

    /// [`Self::get_table`], for a PAE L2 under L3 slot 3 when `xen_l2`.
    fn get_table_as(
        &mut self,
        e: &mut Engine,
        mfn: u64,
        level: u8,
        xen_l2: bool,
    ) -> Result<(), i64> {
        match self.mmu.tables.get_mut(&mfn) {
            Some(t) if t.level == level && t.xen_l2 == xen_l2 => {
                t.refs += 1;
                Ok(())
            }
            Some(_) => Err(EINVAL),
            None => {
                if !self.owns(mfn) {
                    return Err(EINVAL);
                }
                // Mark it first, so a table that names itself (a linear mapping) is seen.
                self.mmu.tables.insert(
                    mfn,
                    PtFrame {
                        level,
                        pinned: false,
                        refs: 1,
                        xen_l2,
                    },
                );
                if level > 0 {
                    if let Err(x) = self.validate_table(e, mfn, level, xen_l2) {
                        self.mmu.tables.remove(&mfn);
                        return Err(x);
                    }
                }
                // A writable mapping of the frame the TLB still holds must go (Xen flushes
                // on the type change): drop just those write permissions.
                e.tlb_drop_writes(mfn << 12);
                Ok(())
            }
        }
    }

    /// Drop a type reference; at zero the frame loses its type and its entries drop theirs
    /// (Xen's put_page_type and free_lN_table).
    pub(super) fn put_table(&mut self, e: &mut Engine, mfn: u64) {
        let Some(t) = self.mmu.tables.get_mut(&mfn) else {
            return;
        };
        t.refs = t.refs.saturating_sub(1);
        if t.refs > 0 {
            return;
        }
        let (level, xen_l2) = (t.level, t.xen_l2);
        self.mmu.tables.remove(&mfn);
        if level > 1 {
            let n = self.table_entries(level);
            let page = read_table(e, mfn << 12, n).unwrap_or([0; 512]);
            for i in 0..n {
                if !self.is_guest_slot(level, i, xen_l2) {
                    continue;
                }
                if let Some(c) = Self::child_of(level, page[i as usize]) {
                    self.put_table(e, c);
                }
            }
        }
    }

    /// Write entry `ptr` (machine address) with `val`, validated for the table it is in.
    /// `va`: the virtual address the entry maps, when the caller knows it (an L1 entry
    /// named by update_va_mapping).
    pub(super) fn update_entry(
        &mut self,
        e: &mut Engine,
        ptr: u64,
        val: u64,
        preserve_ad: bool,
        va: Option<u64>,
    ) -> Result<(), i64> {
        if ptr & 7 != 0 {
            return Err(EINVAL);
        }
        let mfn = ptr >> 12;
        if !self.owns(mfn) {
            return Err(EINVAL);
        }
        let v = match self.mmu.tables.get(&mfn).copied() {
            Some(t) => {
                let index = (ptr & 0xfff) / 8;
                if !self.is_guest_slot(t.level, index, t.xen_l2) {
                    return Err(EINVAL);
                }
                let old = GuestPhys::read_u64(e.ram(), ptr).ok_or(EFAULT)?;
                let mut v = self.check_entry(e, t.level, index, val)?;
                if preserve_ad {
                    v = (v & !(A | D)) | (old & (A | D));
                }
                // No flush: as with Xen, a changed entry may stay in the TLB until the guest
                // flushes (UVMF_* flags, MMUEXT_TLB_FLUSH/INVLPG); only type changes flush.
                GuestPhys::write_u64(e.ram(), ptr, v);
                // A present entry that changes may be in the TLB, unless the change only
                // sets accessed/dirty bits (clearing them must reach the TLB at the next
                // flush, so that the next access sets them again).
                let changed = (old ^ v) & !(A | D) != 0 || old & !v & (A | D) != 0;
                if old & P != 0 && changed {
                    match va {
                        Some(va) if self.mmu.stale_vas.len() < STALE_VAS_MAX => {
                            self.mmu.stale_vas.push(va)
                        }
                        _ => e.pt_changed(ptr),
                    }
                }
                // The old entry's reference goes after the new one is taken.
                if let Some(c) = Self::child_of(t.level, old) {
                    self.put_table(e, c);
                }
                v
            }
            // Not a page table: a plain write, as Xen's writable-page case.
            None => val,
        };
        GuestPhys::write_u64(e.ram(), ptr, v);
        let core = &mut *e.core;
        core.notify_phys_write(&mut e.env, ptr, 8);
        Ok(())
    }

    /// Point the engine at the base pointer of the current mode, without a flush: the
    /// kernel and user page tables of a 64-bit guest each have their own TLB (address-space
    /// ids 0 and 1), which every change of either base pointer flushes (`load_cr3`).
    pub fn switch_space(&mut self, e: &mut Engine) {
        if self.guest() != GuestType::X86_64 {
            return self.load_cr3(e);
        }
        let user = !self.kernel_mode && self.mmu.user_base != 0;
        let b = if user {
            self.mmu.user_base
        } else {
            self.mmu.kernel_base
        };
        let mut s = X86State(&mut e.env);
        s.set_g(G_CR3, b);
        s.set_asid(user as u64);
        self.flush_if_dirty(e);
    }

    /// Point the engine at the base pointer of the current mode, flushing every TLB.
    pub fn load_cr3(&mut self, e: &mut Engine) {
        match self.guest() {
            GuestType::X86_64 => {
                let user = !self.kernel_mode && self.mmu.user_base != 0;
                let b = if user {
                    self.mmu.user_base
                } else {
                    self.mmu.kernel_base
                };
                let mut s = X86State(&mut e.env);
                s.set_g(G_CR3, b);
                s.set_asid(user as u64);
            }
            GuestType::X86_32Pae => {
                if let Some(c) = self.dom.layout.platform.compat_l4_mfn {
                    let v = self.mmu.kernel_base | P | RW | US | A | D;
                    GuestPhys::write_u64(e.ram(), c << 12, v);
                }
            }
        }
        // The flush happens once before the guest runs again (a context switch sets both
        // base pointers in one multicall). A 64-bit kernel's upper half is the same in
        // every process's tables: when the new kernel L4's slots 256..511 equal those the
        // TLB was filled from, its kernel-mode upper-half entries stay (as global pages
        // would on hardware); the guest flushes kernel mappings it changes explicitly.
        let same_upper = self.guest() == GuestType::X86_64
            && self.mmu.active_kernel_base != 0
            && self.same_upper_half(e, self.mmu.active_kernel_base, self.mmu.kernel_base);
        if same_upper {
            self.mmu.tlb_dirty_lower = true;
        } else {
            self.mmu.tlb_dirty = true;
        }
        self.mmu.active_kernel_base = self.mmu.kernel_base;
    }

    /// Whether two L4 tables map the upper half (slots 256..511) identically.
    fn same_upper_half(&self, e: &mut Engine, a: u64, b: u64) -> bool {
        if a == b {
            return true;
        }
        let (mut x, mut y) = ([0u8; 2048], [0u8; 2048]);
        let ram = e.ram();
        GuestPhys::read(ram, (a & ADDR_MASK) + 2048, &mut x)
            && GuestPhys::read(ram, (b & ADDR_MASK) + 2048, &mut y)
            && x == y
    }

    pub(super) fn flush_if_dirty(&mut self, e: &mut Engine) {
        let lower = std::mem::take(&mut self.mmu.tlb_dirty_lower);
        if !self.mmu.tlb_dirty && lower {
            // Kernel mode of a 64-bit guest: CPL 3 with address-space id 0 (MMU mode 1).
            e.tlb_flush_lower(1);
        }
        if std::mem::take(&mut self.mmu.tlb_dirty) {
            self.flush_tlb_all(e);
        }
    }

    /// Flush the whole TLB: nothing the guest changed stays stale.
    fn flush_tlb_all(&mut self, e: &mut Engine) {
        e.tlb_flush();
        self.mmu.stale_vas.clear();
    }

    /// The guest asks for a full TLB flush (MMUEXT_TLB_FLUSH_*, UVMF_TLB_FLUSH). What it
    /// must drop are translations its own changes made stale, and every change of a
    /// present entry passes through `update_entry` (page tables are read-only to a PV
    /// guest). Changes that named their page (update_va_mapping of a singly linked L1:
    /// Linux pins and unpins each page table that way and ends the batch with
    /// UVMF_TLB_FLUSH) flush that page; the others (mmu_update, writable page tables) were
    /// reported to the engine, which drops each half of the address space whose
    /// translations were made from a changed entry. Either way the guest sees exactly what
    /// a full flush would give it, and the rest of the TLB (and the translated code's jump
    /// caches) stays warm.
    pub(super) fn flush_tlb(&mut self, e: &mut Engine) {
        e.tlb_flush_stale();
        for va in self.mmu.stale_vas.drain(..) {
            e.tlb_flush_page(va);
        }
    }

    /// Machine address of the L1 entry mapping `va` in the current tables.
    pub(super) fn l1_entry_addr(&self, e: &mut Engine, va: u64) -> Option<u64> {
        let top = X86State(&mut e.env).g(G_CR3);
        Self::l1_entry_addr_in(e, top, va)
    }

    /// Machine address of the L1 entry mapping `va` in the 4-level tables at `top`.
    pub(super) fn l1_entry_addr_in(e: &mut Engine, top: u64, va: u64) -> Option<u64> {
        let mut table = top & ADDR_MASK;
        for level in (2..=4u32).rev() {
            let idx = (va >> (12 + 9 * (level - 1))) & 511;
            let v = GuestPhys::read_u64(e.ram(), table + idx * 8)?;
            if v & P == 0 || (level == 2 && v & PSE != 0) {
                return None;
            }
            table = v & ADDR_MASK;
        }
        Some(table + ((va >> 12) & 511) * 8)
    }
}

pub(super) fn mmu_update(d: &mut PvDomain, e: &mut Engine, a: [u64; 6]) -> HcResult {
    check_self(a[3])?;
    let (reqs, count, pdone) = (a[0], a[1] & 0xffff_ffff, a[2]);
    let w = d.guest().word_size();
    let mut done = 0u64;
    let mut rc = Ok(0);
    while done < count {
        let mut b = [0u8; 16];
        if d.read_guest(e, reqs + done * 16, &mut b).is_err() {
            rc = Err(EFAULT);
            break;
        }
        let ptr = u64::from_le_bytes(b[..8].try_into().unwrap());
        let val = u64::from_le_bytes(b[8..].try_into().unwrap());
        let r = match ptr & 3 {
            // MMU_NORMAL_PT_UPDATE, MMU_PT_UPDATE_PRESERVE_AD
            0 => d.update_entry(e, ptr & !3, val, false, None),
            2 => d.update_entry(e, ptr & !3, val, true, None),
            // MMU_MACHPHYS_UPDATE: M2P[mfn] = val for a frame the domain owns.
            1 => {
                let mfn = ptr >> 12;
                if d.owns(mfn) {
                    d.set_m2p(e, mfn, val);
                    Ok(())
                } else {
                    Err(EINVAL)
                }
            }
            _ => Err(ENOSYS),
        };
        if let Err(x) = r {
            rc = Err(x);
            break;
        }
        done += 1;
    }
    if pdone != 0 {
        let _ = d.write_guest(e, pdone, &done.to_le_bytes()[..w.min(4) as usize]);
    }
    d.flush_if_dirty(e);
    rc
}

pub(super) fn update_va_mapping(d: &mut PvDomain, e: &mut Engine, a: [u64; 6]) -> HcResult {
    let (va, val, flags) = match d.guest() {
        GuestType::X86_64 => (a[0], a[1], a[2]),
        // 32-bit: (va, val_lo, val_hi, flags)
        GuestType::X86_32Pae => (
            a[0] & 0xffff_ffff,
            (a[1] & 0xffff_ffff) | (a[2] & 0xffff_ffff) << 32,
            a[3],
        ),
    };
    let Some(ptr) = d.l1_entry_addr(e, va) else {
        return Err(EINVAL);
    };
    let Some(t) = d.mmu.tables.get(&(ptr >> 12)).filter(|t| t.level == 1) else {
        return Err(EINVAL);
    };
    // The entry maps `va` alone unless its L1 is linked more than once (an alias at
    // another address would need a full flush).
    let only_va = t.refs.saturating_sub(t.pinned as u32) <= 1;
    d.update_entry(e, ptr, val, false, only_va.then_some(va))?;
    // UVMF_FLUSHTYPE: none, the whole TLB, or the page (one vCPU: local and all are alike).
    match flags & 3 {
        1 => d.flush_tlb(e),
        2 => e.tlb_flush_page(va),
        _ => {}
    }
    d.flush_if_dirty(e);
    Ok(0)
}

pub(super) fn mmuext_op(d: &mut PvDomain, e: &mut Engine, a: [u64; 6]) -> HcResult {
    check_self(a[3])?;
    let (ops, count, pdone) = (a[0], a[1] & 0xffff_ffff, a[2]);
    let sz: u64 = if d.guest() == GuestType::X86_64 {
        24
    } else {
        12
    };
    let mut done = 0u64;
    let mut rc = Ok(0);
    while done < count {
        let mut b = [0u8; 24];
        if d.read_guest(e, ops + done * sz, &mut b[..sz as usize])
            .is_err()
        {
            rc = Err(EFAULT);
            break;
        }
        let cmd = u32::from_le_bytes(b[..4].try_into().unwrap());
        let arg1 = if sz == 24 {
            u64::from_le_bytes(b[8..16].try_into().unwrap())
        } else {
            u32::from_le_bytes(b[4..8].try_into().unwrap()) as u64
        };
        let arg2 = if sz == 24 {
            u32::from_le_bytes(b[16..20].try_into().unwrap())
        } else {
            u32::from_le_bytes(b[8..12].try_into().unwrap())
        } as u64;
        if let Err(x) = mmuext_one(d, e, cmd, arg1, arg2) {
            rc = Err(x);
            break;
        }
        done += 1;
    }
    if pdone != 0 {
        let _ = d.write_guest(e, pdone, &(done as u32).to_le_bytes());
    }
    d.flush_if_dirty(e);
    rc
}

fn mmuext_one(d: &mut PvDomain, e: &mut Engine, cmd: u32, arg1: u64, arg2: u64) -> Result<(), i64> {
    let top = d.top_level();
    match cmd {
        // MMUEXT_PIN_L1_TABLE .. PIN_L4_TABLE
        0..=3 => {
            let level = cmd as u8 + 1;
            if level > top {
                return Err(EINVAL);
            }
            if d.mmu.tables.get(&arg1).is_some_and(|t| t.pinned) {
                return Err(EINVAL);
            }
            d.get_table(e, arg1, level)?;
            if let Some(t) = d.mmu.tables.get_mut(&arg1) {
                t.pinned = true;
            }
            Ok(())
        }
        // MMUEXT_UNPIN_TABLE
        4 => {
            let t = d.mmu.tables.get_mut(&arg1).ok_or(EINVAL)?;
            if !t.pinned || t.level == 0 {
                return Err(EINVAL);
            }
            t.pinned = false;
            d.put_table(e, arg1);
            Ok(())
        }
        // MMUEXT_NEW_BASEPTR
        5 => new_baseptr(d, e, arg1),
        // MMUEXT_NEW_USER_BASEPTR (64-bit only)
        15 => {
            if d.guest() != GuestType::X86_64 {
                return Err(EINVAL);
            }
            if arg1 != 0 {
                d.get_table(e, arg1, 4)?;
            }
            let old = d.mmu.user_base >> 12;
            d.mmu.user_base = arg1 << 12;
            if old != 0 {
                d.put_table(e, old);
            }
            // The user TLB (address-space id 1) caches the old user tables even while
            // the guest is in kernel mode: flush whenever the base changes.
            if old != arg1 {
                d.load_cr3(e);
            }
            Ok(())
        }
        // TLB_FLUSH_LOCAL, INVLPG_LOCAL, TLB_FLUSH_MULTI, INVLPG_MULTI, TLB_FLUSH_ALL,
        // INVLPG_ALL: one vCPU, one TLB.
        6 | 8 | 10 => {
            d.flush_tlb(e);
            Ok(())
        }
        7 | 9 | 11 => {
            e.tlb_flush_page(arg1);
            Ok(())
        }
        // FLUSH_CACHE, FLUSH_CACHE_GLOBAL: nothing to do (but privileged in Xen for a domU
        // without cache-flush rights: FLUSH_CACHE is allowed, GLOBAL needs it).
        12 => Ok(()),
        18 => Err(EPERM),
        // SET_LDT { linear_addr, nr_ents }
        13 => d.set_ldt(e, arg1, arg2),
        // CLEAR_PAGE / COPY_PAGE: the frame must be the domain's and writable.
        16 => {
            if !d.owns(arg1) || d.mmu.tables.contains_key(&arg1) {
                return Err(EINVAL);
            }
            GuestPhys::write(e.ram(), arg1 << 12, &[0u8; 4096]);
            let core = &mut *e.core;
            core.notify_phys_write(&mut e.env, arg1 << 12, 4096);
            Ok(())
        }
        // MARK_SUPER / UNMARK_SUPER: superpages are gone from Xen.
        19 | 20 => Err(EOPNOTSUPP),
        _ => Err(ENOSYS),
    }
}

/// Our domain is domain 1 (DOMID_SELF names it too); any other is not ours to touch.
pub fn check_self(domid: u64) -> Result<(), i64> {
    match domid & 0xffff {
        DOMID_SELF | 1 => Ok(()),
        _ => Err(ESRCH),
    }
}

/// MMUEXT_NEW_BASEPTR (and a guest write to cr3).
pub(super) fn new_baseptr(d: &mut PvDomain, e: &mut Engine, mfn: u64) -> Result<(), i64> {
    let top = d.top_level();
    d.get_table(e, mfn, top)?;
    let old = d.mmu.kernel_base >> 12;
    d.mmu.kernel_base = mfn << 12;
    d.put_table(e, old);
    if d.kernel_mode {
        d.load_cr3(e);
    }
    Ok(())
}

/// HYPERVISOR_multicall: run each entry through the table, storing its result.
pub(super) fn multicall(d: &mut PvDomain, e: &mut Engine, a: [u64; 6]) -> HcResult {
    let (list, n) = (a[0], a[1] & 0xffff_ffff);
    let w = d.guest().word_size();
    let sz = 8 * w;
    for i in 0..n {
        let at = list + i * sz;
        let mut b = vec![0u8; sz as usize];
        d.read_guest(e, at, &mut b).map_err(|_| EFAULT)?;
        let word = |k: usize| {
            let mut x = [0u8; 8];
            x[..w as usize].copy_from_slice(&b[k * w as usize..(k + 1) * w as usize]);
            u64::from_le_bytes(x)
        };
        let op = word(0);
        let args = [word(2), word(3), word(4), word(5), word(6), word(7)];
        // iret and multicall itself cannot be batched.
        let r = if op == 23 || op == 13 {
            Err(EINVAL)
        } else {
            match super::hypercall::TABLE
                .get(op as usize)
                .and_then(|h| h.handler)
            {
                Some(f) => f(d, e, args),
                None => Err(ENOSYS),
            }
        };
        let v = to_rax(r);
        d.write_guest(e, at + w, &v.to_le_bytes()[..w as usize])
            .map_err(|_| EFAULT)?;
        if d.shutdown.is_some() {
            break;
        }
    }
    Ok(0)
}

pub(super) fn memory_op(d: &mut PvDomain, e: &mut Engine, a: [u64; 6]) -> HcResult {
    let nr = d.dom.layout.nr_pages;
    let w = d.guest().word_size() as usize;
    let op = a[0] & super::memory::MEMOP_CMD_MASK;
    // Only the reservation ops continue from a start extent; the others refuse one.
    if a[0] >> super::memory::MEMOP_EXTENT_SHIFT != 0 && !matches!(op, 0 | 1 | 6 | 11) {
        return Err(EINVAL);
    }
    match op {
        // XENMEM_increase_reservation, decrease_reservation, populate_physmap
        0 | 1 | 6 => super::memory::reservation_op(d, e, a[0], a[1]),
        // XENMEM_exchange
        11 => super::memory::exchange(d, e, a[0], a[1]),
        // XENMEM_maximum_ram_page
        2 => Ok(d.dom.layout.ram_pages as i64 - 1),
        // current_reservation, maximum_reservation: domid argument
        3 | 4 => {
            let mut b = [0u8; 2];
            d.read_guest(e, a[1], &mut b).map_err(|_| EFAULT)?;
            check_self(u16::from_le_bytes(b) as u64)?;
            Ok(if op == 3 {
                d.mem.tot_pages
            } else {
                d.mem.max_pages
            } as i64)
        }
        // XENMEM_machphys_mapping { v_start, v_end, max_mfn }
        12 => {
            let (start, end) = match d.guest() {
                GuestType::X86_64 => (
                    crate::builder::abi::va::MACH2PHYS_VIRT_START_64,
                    crate::builder::abi::va::MACH2PHYS_VIRT_END_64,
                ),
                GuestType::X86_32Pae => (
                    d.dom.layout.platform.m2p_va,
                    d.dom.layout.platform.m2p_va + (d.dom.layout.platform.m2p_frames << 12),
                ),
            };
            let max = d.dom.layout.platform.m2p_entries - 1;
            let mut v = Vec::new();
            for x in [start, end, max] {
                v.extend_from_slice(&x.to_le_bytes()[..w]);
            }
            d.write_guest(e, a[1], &v).map_err(|_| EFAULT)?;
            Ok(0)
        }
        // XENMEM_add_to_physmap
        7 => super::grant::add_to_physmap(d, e, a[1]),
        // XENMEM_maximum_gpfn: domid argument
        14 => {
            let mut b = [0u8; 2];
            d.read_guest(e, a[1], &mut b).map_err(|_| EFAULT)?;
            check_self(u16::from_le_bytes(b) as u64)?;
            Ok(nr as i64 - 1)
        }
        _ => Err(ENOSYS),
    }
}

/// vcpu_op: one vCPU.
pub(super) fn vcpu_op(d: &mut PvDomain, e: &mut Engine, a: [u64; 6]) -> HcResult {
    let (cmd, vcpu) = (a[0], a[1] & 0xffff_ffff);
    if vcpu != 0 {
        // Xen: vcpu_op on a vCPU the domain does not have.
        return Err(ENOENT);
    }
    match cmd {
        // VCPUOP_is_up
        3 => Ok(1),
        // VCPUOP_up / down on the running vCPU
        1 | 2 => Err(EINVAL),
        6..=9 => super::events::vcpu_timer_op(d, e, cmd, a[2]),
        // VCPUOP_register_vcpu_info { uint64_t mfn; uint32_t offset; uint32_t rsvd; }:
        // move vcpu_info into a guest frame (its current contents copied over), once.
        10 => {
            let mut b = [0u8; 16];
            d.read_guest(e, a[2], &mut b).map_err(|_| EFAULT)?;
            let mfn = u64::from_le_bytes(b[..8].try_into().unwrap());
            let off = u32::from_le_bytes(b[8..12].try_into().unwrap()) as u64;
            let rsvd = u32::from_le_bytes(b[12..16].try_into().unwrap());
            if rsvd != 0 || off + 64 > 4096 || !d.owns(mfn) || d.mmu.tables.contains_key(&mfn) {
                return Err(EINVAL);
            }
            // Xen: a vCPU's vcpu_info can be registered once.
            if d.evtchn.vcpu_info_gpa() != d.evtchn.shared_info_gpa() {
                return Err(EINVAL);
            }
            let old = d.vcpu_info_addr();
            let new = (mfn << 12) + off;
            let mut v = [0u8; 64];
            GuestPhys::read(e.ram(), old, &mut v);
            GuestPhys::write(e.ram(), new, &v);
            // Xen marks every selector bit pending after the move, so nothing is lost.
            let sel_off = if d.guest() == GuestType::X86_64 { 8 } else { 4 };
            let w = d.guest().word_size() as usize;
            GuestPhys::write(e.ram(), new + sel_off, &u64::MAX.to_le_bytes()[..w]);
            GuestPhys::write_u8(e.ram(), new, 1);
            d.evtchn.set_vcpu_info_gpa(new);
            let core = &mut *e.core;
            core.notify_phys_write(&mut e.env, new, 64);
            d.publish_time(e);
            Ok(0)
        }
        // VCPUOP_register_runstate_memory_area { uint64_t addr; } (a guest virtual address)
        5 => {
            let mut b = [0u8; 8];
            d.read_guest(e, a[2], &mut b).map_err(|_| EFAULT)?;
            let va = u64::from_le_bytes(b);
            d.runstate_va = (va != 0).then_some(va);
            d.update_runstate(e, 0);
            Ok(0)
        }
        _ => Err(ENOSYS),
    }
}

/// The first `n` (at most 512) entries of the table at guest-physical `base`, or None
/// outside RAM.
fn read_table(e: &mut Engine, base: u64, n: u64) -> Option<[u64; 512]> {
    let mut bytes = [0u8; 4096];
    let len = 8 * n.min(512) as usize;
    if !GuestPhys::read(e.ram(), base, &mut bytes[..len]) {
        return None;
    }
    let mut t = [0u64; 512];
    for (v, b) in t.iter_mut().zip(bytes[..len].chunks_exact(8)) {
        *v = u64::from_le_bytes(b.try_into().unwrap());
    }
    Some(t)
}
