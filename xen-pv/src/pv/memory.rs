//! The domain's memory reservation: which machine frames it owns, and the memory_op calls
//! that change that (increase_reservation, decrease_reservation, populate_physmap,
//! exchange), with Xen's semantics (xen/common/memory.c) for a PV (non-translated) guest.
//!
//! - The domain starts owning frames `0..nr_pages` (tot_pages = max_pages = nr_pages).
//!   Frames it gives back go to a free pool (with the RAM the builder left unused) and are
//!   handed out again lowest first, zeroed, so runs stay deterministic.
//! - A PV guest names machine frames: decrease and exchange take mfns, and populate and
//!   exchange write the mfns they allocate back into the guest's extent list and set the
//!   M2P entries to the gpfns the guest asked for. The M2P is the platform's table the guest
//!   sees read-only; `MMU_MACHPHYS_UPDATE` writes it too.
//! - Ownership is what [`PvDomain::owns`] answers for the page-table checks: a frame given
//!   back can no longer be mapped or become a page table. A page table that is given back
//!   while pinned is unpinned, as Xen's guest_remove_page does.
//! - The reservation ops return the number of extents done (Xen returns the start extent
//!   for malformed requests, and stops at the first failure); exchange returns 0 or an
//!   error and writes `nr_exchanged`.

use std::collections::BTreeSet;

use jit::Engine;

use super::PvDomain;
use crate::builder::GuestType;
use crate::core::errno::*;
use crate::core::GuestPhys;

/// CONFIG_DOMU_MAX_ORDER on x86: the largest extent order a domU may ask for.
pub const DOMU_MAX_ORDER: u32 = 9;
/// MEMOP_EXTENT_SHIFT (public/memory.h): the start extent of a continued call.
pub const MEMOP_EXTENT_SHIFT: u32 = 6;
/// MEMOP_CMD_MASK.
pub const MEMOP_CMD_MASK: u64 = (1 << MEMOP_EXTENT_SHIFT) - 1;

/// struct xen_memory_reservation (public/memory.h), native layout.
#[repr(C)]
pub struct MemoryReservation {
    pub extent_start: u64,
    pub nr_extents: u64,
    pub extent_order: u32,
    pub mem_flags: u32,
    pub domid: u16,
}
/// The 32-bit (compat) layout.
#[repr(C)]
pub struct CompatMemoryReservation {
    pub extent_start: u32,
    pub nr_extents: u32,
    pub extent_order: u32,
    pub mem_flags: u32,
    pub domid: u16,
}
/// struct xen_memory_exchange, native and compat.
#[repr(C)]
pub struct MemoryExchange {
    pub r#in: MemoryReservation,
    pub out: MemoryReservation,
    pub nr_exchanged: u64,
}
#[repr(C)]
pub struct CompatMemoryExchange {
    pub r#in: CompatMemoryReservation,
    pub out: CompatMemoryReservation,
    pub nr_exchanged: u32,
}

const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<MemoryReservation>() == 32);
    assert!(offset_of!(MemoryReservation, nr_extents) == 8);
    assert!(offset_of!(MemoryReservation, extent_order) == 16);
    assert!(offset_of!(MemoryReservation, mem_flags) == 20);
    assert!(offset_of!(MemoryReservation, domid) == 24);
    assert!(size_of::<CompatMemoryReservation>() == 20);
    assert!(offset_of!(CompatMemoryReservation, nr_extents) == 4);
    assert!(offset_of!(CompatMemoryReservation, extent_order) == 8);
    assert!(offset_of!(CompatMemoryReservation, mem_flags) == 12);
    assert!(offset_of!(CompatMemoryReservation, domid) == 16);
    assert!(size_of::<MemoryExchange>() == 72);
    assert!(offset_of!(MemoryExchange, out) == 32);
    assert!(offset_of!(MemoryExchange, nr_exchanged) == 64);
    assert!(size_of::<CompatMemoryExchange>() == 44);
    assert!(offset_of!(CompatMemoryExchange, out) == 20);
    assert!(offset_of!(CompatMemoryExchange, nr_exchanged) == 40);
};

/// A reservation as read from the guest (either layout).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reservation {
    pub extent_start: u64,
    pub nr_extents: u64,
    pub extent_order: u32,
    pub mem_flags: u32,
    pub domid: u16,
}

impl Reservation {
    /// Bytes of the structure for a guest of word size `w` (8 or 4).
    pub fn size(w: usize) -> usize {
        if w == 8 {
            std::mem::size_of::<MemoryReservation>()
        } else {
            std::mem::size_of::<CompatMemoryReservation>()
        }
    }

    pub fn parse(b: &[u8], w: usize) -> Reservation {
        let word = |o: usize| {
            if w == 8 {
                u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
            } else {
                u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as u64
            }
        };
        let u32at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let o = if w == 8 { 16 } else { 8 };
        Reservation {
            extent_start: word(0),
            nr_extents: word(w),
            extent_order: u32at(o),
            mem_flags: u32at(o + 4),
            domid: u16::from_le_bytes([b[o + 8], b[o + 9]]),
        }
    }

    /// XENMEMF_get_address_bits: the allocation must lie below 2^bits (0: anywhere).
    pub fn address_bits(&self) -> u32 {
        self.mem_flags & 0xff
    }
}

/// The frames the domain owns and the pool it allocates from.
#[derive(Clone, Debug, Default)]
pub struct MemReservation {
    owned: Vec<u64>,
    free: BTreeSet<u64>,
    pub tot_pages: u64,
    pub max_pages: u64,
}

impl MemReservation {
    /// Frames `0..nr_pages` owned; `pool` (RAM the builder did not use) free.
    pub fn new(
        nr_pages: u64,
        ram_pages: u64,
        pool: impl IntoIterator<Item = u64>,
    ) -> MemReservation {
        let mut m = MemReservation {
            owned: vec![0; ram_pages.div_ceil(64) as usize],
            free: pool.into_iter().filter(|&f| f < ram_pages).collect(),
            tot_pages: 0,
            max_pages: nr_pages,
        };
        for f in 0..nr_pages.min(ram_pages) {
            m.set_owned(f, true);
        }
        m.tot_pages = nr_pages.min(ram_pages);
        m
    }

    pub fn owns(&self, mfn: u64) -> bool {
        usize::try_from(mfn / 64)
            .ok()
            .and_then(|i| self.owned.get(i))
            .is_some_and(|w| w >> (mfn % 64) & 1 != 0)
    }

    fn set_owned(&mut self, mfn: u64, on: bool) {
        if let Some(w) = self.owned.get_mut((mfn / 64) as usize) {
            if on {
                *w |= 1 << (mfn % 64);
            } else {
                *w &= !(1 << (mfn % 64));
            }
        }
    }

    /// Give frame `mfn` back to the pool (guest_remove_page). False if not owned.
    pub fn release(&mut self, mfn: u64) -> bool {
        if !self.owns(mfn) {
            return false;
        }
        self.set_owned(mfn, false);
        self.free.insert(mfn);
        self.tot_pages -= 1;
        true
    }

    /// Take free frame `mfn` back (undoing a release).
    pub fn take(&mut self, mfn: u64) -> bool {
        if !self.free.remove(&mfn) {
            return false;
        }
        self.set_owned(mfn, true);
        self.tot_pages += 1;
        true
    }

    /// Allocate an aligned run of 2^order free frames below 2^bits (0: no limit), lowest
    /// first; `count` decides whether tot_pages may exceed max_pages (increase and populate
    /// count, exchange's output replaces its input).
    pub fn alloc(&mut self, order: u32, bits: u32, count: bool) -> Option<u64> {
        let n = 1u64 << order;
        if count && self.tot_pages + n > self.max_pages {
            return None;
        }
        let limit = if bits == 0 || bits >= 64 {
            u64::MAX
        } else {
            1u64 << (bits - 12).min(63)
        };
        let start = self
            .free
            .iter()
            .copied()
            .take_while(|&f| f + n <= limit)
            .find(|&f| f % n == 0 && (f..f + n).all(|x| self.free.contains(&x)))?;
        for f in start..start + n {
            self.free.remove(&f);
            self.set_owned(f, true);
        }
        self.tot_pages += n;
        Some(start)
    }

    pub fn free_frames(&self) -> usize {
        self.free.len()
    }
}

impl PvDomain {
    /// Whether the domain owns machine frame `mfn` (may map it, make it a page table).
    pub fn owns(&self, mfn: u64) -> bool {
        self.mem.owns(mfn)
    }

    /// M2P[mfn] = gpfn (set_gpfn_from_mfn).
    pub(super) fn set_m2p(&self, e: &mut Engine, mfn: u64, gpfn: u64) {
        let p = &self.dom.layout.platform;
        if mfn >= p.m2p_entries {
            return;
        }
        let w = self.guest().word_size();
        let at = (p.m2p_mfn << 12) + mfn * w;
        let v = gpfn.to_le_bytes();
        GuestPhys::write(e.ram(), at, &v[..w as usize]);
    }

    /// guest_remove_page for frame `mfn`: unpin it if pinned, give it back.
    fn remove_page(&mut self, e: &mut Engine, mfn: u64) -> Result<(), i64> {
        if !self.owns(mfn) {
            return Err(ENXIO);
        }
        if self.mmu.tables.get(&mfn).is_some_and(|t| t.pinned) {
            if let Some(t) = self.mmu.tables.get_mut(&mfn) {
                t.pinned = false;
            }
            self.put_table(e, mfn);
        }
        self.mem.release(mfn);
        self.set_m2p(e, mfn, invalid_m2p(self.guest()));
        Ok(())
    }

    /// Allocate 2^order zeroed frames for the guest.
    fn alloc_extent(&mut self, e: &mut Engine, order: u32, bits: u32, count: bool) -> Option<u64> {
        let mfn = self.mem.alloc(order, bits, count)?;
        let zero = [0u8; 4096];
        for f in mfn..mfn + (1 << order) {
            GuestPhys::write(e.ram(), f << 12, &zero);
        }
        // Fresh frames may have been cached by the TLB under their old owner.
        self.mmu.tlb_dirty = true;
        Some(mfn)
    }

    fn read_word(&self, e: &mut Engine, va: u64) -> Option<u64> {
        let w = self.guest().word_size() as usize;
        let mut b = [0u8; 8];
        self.read_guest(e, va, &mut b[..w]).ok()?;
        Some(u64::from_le_bytes(b))
    }

    fn write_word(&self, e: &mut Engine, va: u64, v: u64) -> bool {
        let w = self.guest().word_size() as usize;
        self.write_guest(e, va, &v.to_le_bytes()[..w]).is_ok()
    }

    fn read_reservation(&self, e: &mut Engine, va: u64) -> Option<Reservation> {
        let w = self.guest().word_size() as usize;
        let mut b = [0u8; 32];
        let n = Reservation::size(w);
        self.read_guest(e, va, &mut b[..n]).ok()?;
        Some(Reservation::parse(&b, w))
    }
}

/// INVALID_M2P_ENTRY in the guest's word size.
fn invalid_m2p(g: GuestType) -> u64 {
    match g {
        GuestType::X86_64 => u64::MAX,
        GuestType::X86_32Pae => u32::MAX as u64,
    }
}

fn is_self(domid: u16) -> bool {
    domid == super::mmu::DOMID_SELF as u16 || domid == crate::core::evtchn::GUEST_DOMID
}

/// XENMEM_increase_reservation (0), decrease_reservation (1), populate_physmap (6).
pub(super) fn reservation_op(d: &mut PvDomain, e: &mut Engine, cmd: u64, arg: u64) -> HcResult {
    let op = cmd & MEMOP_CMD_MASK;
    let start = cmd >> MEMOP_EXTENT_SHIFT;
    let Some(r) = d.read_reservation(e, arg) else {
        return Ok(start as i64);
    };
    if r.nr_extents > (u32::MAX >> MEMOP_EXTENT_SHIFT) as u64
        || start >= r.nr_extents
        || !is_self(r.domid)
    {
        return Ok(start as i64);
    }
    let bits = r.address_bits();
    if bits != 0 && bits <= 12 {
        return Ok(start as i64);
    }
    if r.extent_order > DOMU_MAX_ORDER {
        return Ok(start as i64);
    }
    let w = d.guest().word_size();
    let mut i = start;
    while i < r.nr_extents {
        let slot = r.extent_start.wrapping_add(i * w);
        let ok = match op {
            0 => match d.alloc_extent(e, r.extent_order, bits, true) {
                Some(mfn) => r.extent_start == 0 || d.write_word(e, slot, mfn),
                None => false,
            },
            1 => match d.read_word(e, slot) {
                Some(gmfn) => (0..1u64 << r.extent_order)
                    .all(|j| d.remove_page(e, gmfn.wrapping_add(j)).is_ok()),
                None => false,
            },
            _ => match d.read_word(e, slot) {
                Some(gpfn) => match d.alloc_extent(e, r.extent_order, bits, true) {
                    Some(mfn) => {
                        for j in 0..1u64 << r.extent_order {
                            d.set_m2p(e, mfn + j, gpfn.wrapping_add(j));
                        }
                        d.write_word(e, slot, mfn)
                    }
                    None => false,
                },
                None => false,
            },
        };
        if !ok {
            break;
        }
        i += 1;
    }
    Ok(i as i64)
}

/// XENMEM_exchange (11): swap the guest's input extents for freshly allocated output
/// extents (for example below an address limit), chunk by chunk.
pub(super) fn exchange(d: &mut PvDomain, e: &mut Engine, cmd: u64, arg: u64) -> HcResult {
    if cmd >> MEMOP_EXTENT_SHIFT != 0 {
        return Err(EINVAL);
    }
    let w = d.guest().word_size() as usize;
    let rs = Reservation::size(w);
    let mut b = [0u8; 72];
    let total = if w == 8 { 72 } else { 44 };
    d.read_guest(e, arg, &mut b[..total]).map_err(|_| EFAULT)?;
    let inp = Reservation::parse(&b[..rs], w);
    let out = Reservation::parse(&b[rs..2 * rs], w);
    let nr_off = 2 * rs;
    let mut nr_exchanged = if w == 8 {
        u64::from_le_bytes(b[nr_off..nr_off + 8].try_into().unwrap())
    } else {
        u32::from_le_bytes(b[nr_off..nr_off + 4].try_into().unwrap()) as u64
    };
    let put_nr = |d: &PvDomain, e: &mut Engine, n: u64| {
        d.write_guest(e, arg + nr_off as u64, &n.to_le_bytes()[..w])
            .is_ok()
    };
    let fail_early = |d: &PvDomain, e: &mut Engine, n: u64, rc: i64| {
        if put_nr(d, e, n) {
            Err(rc)
        } else {
            Err(EFAULT)
        }
    };

    if inp.extent_order.max(out.extent_order) > DOMU_MAX_ORDER {
        return fail_early(d, e, nr_exchanged, EPERM);
    }
    let long_max = if w == 8 { u64::MAX } else { u32::MAX as u64 };
    if nr_exchanged > inp.nr_extents
        || inp.domid != out.domid
        || (long_max >> inp.extent_order) < inp.nr_extents
        || (long_max >> out.extent_order) < out.nr_extents
        || (inp.nr_extents << inp.extent_order) != (out.nr_extents << out.extent_order)
    {
        return fail_early(d, e, nr_exchanged, EINVAL);
    }
    if !is_self(inp.domid) {
        return fail_early(d, e, nr_exchanged, ESRCH);
    }
    let (in_chunk, out_chunk) = if inp.extent_order <= out.extent_order {
        (out.extent_order - inp.extent_order, 0)
    } else {
        (0, inp.extent_order - out.extent_order)
    };
    let bits = out.address_bits();
    let ww = w as u64;
    let mut i = nr_exchanged >> in_chunk;
    while i < inp.nr_extents >> in_chunk {
        // Steal the chunk's input frames: each must be owned and not in use as a table.
        let mut stolen = Vec::new();
        let mut rc = 0;
        'steal: for j in 0..1u64 << in_chunk {
            let Some(gmfn) =
                d.read_word(e, inp.extent_start.wrapping_add(((i << in_chunk) + j) * ww))
            else {
                rc = EFAULT;
                break;
            };
            for k in 0..1u64 << inp.extent_order {
                let mfn = gmfn.wrapping_add(k);
                if !d.owns(mfn) || d.mmu.tables.contains_key(&mfn) || stolen.contains(&mfn) {
                    rc = EINVAL;
                    break 'steal;
                }
                stolen.push(mfn);
            }
        }
        // Give the inputs back, then allocate the chunk's output extents (not counted
        // against max_pages: they replace the inputs). Xen allocates before it frees,
        // from a host heap we do not have; the guest cannot tell the difference except
        // that an output may reuse an input frame. A failure restores the inputs.
        if rc == 0 {
            for &mfn in &stolen {
                d.mem.release(mfn);
            }
        }
        let mut outs = Vec::new();
        if rc == 0 {
            for _ in 0..1u64 << out_chunk {
                match d.mem.alloc(out.extent_order, bits, false) {
                    Some(m) => outs.push(m),
                    None => {
                        rc = ENOMEM;
                        break;
                    }
                }
            }
            if rc != 0 {
                for &m in &outs {
                    for f in m..m + (1 << out.extent_order) {
                        d.mem.release(f);
                    }
                }
                for &mfn in &stolen {
                    d.mem.take(mfn);
                }
            }
        }
        if rc != 0 {
            nr_exchanged = i << in_chunk;
            return fail_early(d, e, nr_exchanged, rc);
        }
        for mfn in stolen {
            d.set_m2p(e, mfn, invalid_m2p(d.guest()));
        }
        let zero = [0u8; 4096];
        for (j, mfn) in outs.into_iter().enumerate() {
            for f in mfn..mfn + (1 << out.extent_order) {
                GuestPhys::write(e.ram(), f << 12, &zero);
            }
            let slot = out
                .extent_start
                .wrapping_add(((i << out_chunk) + j as u64) * ww);
            let Some(gpfn) = d.read_word(e, slot) else {
                rc = EFAULT;
                continue;
            };
            for k in 0..1u64 << out.extent_order {
                d.set_m2p(e, mfn + k, gpfn.wrapping_add(k));
            }
            if !d.write_word(e, slot, mfn) {
                rc = EFAULT;
            }
        }
        d.mmu.tlb_dirty = true;
        if rc != 0 {
            return fail_early(d, e, i << in_chunk, rc);
        }
        i += 1;
    }
    if put_nr(d, e, inp.nr_extents) {
        Ok(0)
    } else {
        Err(EFAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservation_parse_both_layouts() {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&0x1234_5678_9abcu64.to_le_bytes());
        b[8..16].copy_from_slice(&7u64.to_le_bytes());
        b[16..20].copy_from_slice(&2u32.to_le_bytes());
        b[20..24].copy_from_slice(&32u32.to_le_bytes());
        b[24..26].copy_from_slice(&0x7ff0u16.to_le_bytes());
        assert_eq!(
            Reservation::parse(&b, 8),
            Reservation {
                extent_start: 0x1234_5678_9abc,
                nr_extents: 7,
                extent_order: 2,
                mem_flags: 32,
                domid: 0x7ff0
            }
        );
        let mut c = [0u8; 20];
        c[..4].copy_from_slice(&0x8000u32.to_le_bytes());
        c[4..8].copy_from_slice(&3u32.to_le_bytes());
        c[8..12].copy_from_slice(&1u32.to_le_bytes());
        c[12..16].copy_from_slice(&20u32.to_le_bytes());
        c[16..18].copy_from_slice(&1u16.to_le_bytes());
        let r = Reservation::parse(&c, 4);
        assert_eq!(
            (
                r.extent_start,
                r.nr_extents,
                r.extent_order,
                r.address_bits(),
                r.domid
            ),
            (0x8000, 3, 1, 20, 1)
        );
    }

    #[test]
    fn release_and_alloc() {
        let mut m = MemReservation::new(16, 32, 20..24);
        assert_eq!((m.tot_pages, m.max_pages, m.free_frames()), (16, 16, 4));
        assert!(m.owns(15) && !m.owns(16) && !m.owns(20));
        // At the limit: nothing more may be counted.
        assert_eq!(m.alloc(0, 0, true), None);
        assert!(m.release(3) && !m.release(3) && !m.release(40));
        assert_eq!(m.tot_pages, 15);
        assert_eq!(m.alloc(0, 0, true), Some(3));
        assert!(m.owns(3));
        // An order-2 extent needs four aligned free frames: 20..24.
        assert!(m.release(5));
        assert_eq!(m.alloc(2, 0, false), Some(20));
        // Address bits: below 2^(12+3) = frame 8 only frame 5 is free.
        assert_eq!(m.alloc(0, 15, false), Some(5));
        assert_eq!(m.alloc(0, 15, false), None);
    }
}
