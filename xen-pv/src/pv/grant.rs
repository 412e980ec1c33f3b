//! HYPERVISOR_grant_table_op(cmd, uop, count): the guest side of the grant table in
//! `core/grant.rs`, with Xen's argument layouts (native and 32-bit compat), per-op status
//! write-back and error codes (do_grant_table_op and the compat wrappers).
//!
//! Domains, as Xen finds them: `rcu_lock_domain_by_any_id` (setup_table, query_size,
//! get_status_frames, get_version, copy) accepts DOMID_SELF and our id (1); domain 0 exists
//! but an unprivileged domU may not operate on it (XSM: GNTST_permission_denied / -EPERM);
//! any other id is unknown (GNTST_bad_domain / -ESRCH). map_grant_ref looks the granting
//! domain up by its real id (DOMID_SELF is GNTST_bad_domain there); domain 0's grants do not
//! exist in this emulator (its back ends grant nothing), so they are GNTST_bad_domain too.

use jit::Engine;

use super::PvDomain;
use crate::builder::pagetable::{A, ADDR_MASK, D, P, RW, US};
use crate::builder::GuestType;
use crate::core::errno::*;
use crate::core::evtchn::{DOMID_SELF, GUEST_DOMID};
use crate::core::grant::*;
use crate::core::GuestPhys;

/// Guest memory that records the ranges written, so the engine can drop translations of
/// code in them afterwards.
pub(super) struct Tracked<'a> {
    pub(super) ram: &'a mut jit::GuestRam,
    pub(super) writes: Vec<(u64, u64)>,
}

impl GuestPhys for Tracked<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        GuestPhys::read(&*self.ram, gpa, buf)
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> bool {
        self.writes.push((gpa, data.len() as u64));
        GuestPhys::write(self.ram, gpa, data)
    }
    fn size(&self) -> u64 {
        GuestPhys::size(&*self.ram)
    }
}

/// Run `f` on the grant table and guest memory, with `writable(frame)` telling whether a
/// frame can take the writable type (it is not a page or descriptor table); then tell the
/// engine about the memory written.
fn with_table<R>(
    d: &mut PvDomain,
    e: &mut Engine,
    f: impl FnOnce(&mut GrantTable, &mut dyn GuestPhys, &dyn Fn(u64) -> bool) -> R,
) -> R {
    let tables = &d.mmu.tables;
    let writable = |mfn: u64| !tables.contains_key(&mfn);
    let mut mem = Tracked {
        ram: e.ram(),
        writes: Vec::new(),
    };
    let r = f(&mut d.grant, &mut mem, &writable);
    let writes = std::mem::take(&mut mem.writes);
    let core = &mut *e.core;
    for (a, n) in writes {
        core.notify_phys_write(&mut e.env, a, n);
    }
    r
}

fn rd(d: &PvDomain, e: &mut Engine, va: u64, len: usize) -> Result<Vec<u8>, i64> {
    let mut b = vec![0u8; len];
    d.read_guest(e, va, &mut b).map_err(|_| EFAULT)?;
    Ok(b)
}
fn wr(d: &PvDomain, e: &mut Engine, va: u64, data: &[u8]) -> Result<(), i64> {
    d.write_guest(e, va, data).map_err(|_| EFAULT)
}
fn u16_of(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_of(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]))
}
fn u64_of(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]))
}

/// A domain as `rcu_lock_domain_by_any_id` + an XSM_TARGET check find it, for GNTST results.
fn any_dom_status(dom: u16) -> i16 {
    match dom {
        DOMID_SELF | GUEST_DOMID => GNTST_OKAY,
        0 => GNTST_PERMISSION_DENIED,
        _ => GNTST_BAD_DOMAIN,
    }
}

pub(super) fn grant_table_op(d: &mut PvDomain, e: &mut Engine, a: [u64; 6]) -> HcResult {
    let compat = d.guest() == GuestType::X86_32Pae;
    let mask = if compat { 0xffff_ffff } else { u64::MAX };
    let (cmd, uop, count) = (
        (a[0] & 0xffff_ffff) as u32,
        a[1] & mask,
        (a[2] & 0xffff_ffff) as u32,
    );
    if (count as i32) < 0 {
        return Err(EINVAL);
    }
    // GNTTABOP_CMD_MASK: the upper bits carry a continuation argument, for cache_flush only.
    let op = cmd & 0xfff;
    if op != 12 && cmd >> 12 != 0 {
        return Err(EINVAL);
    }
    match op {
        0 => map_grant_ref(d, e, uop, count),
        1 => unmap_grant_ref(d, e, uop, count),
        2 => setup_table(d, e, uop, count, compat),
        // GNTTABOP_dump_table is gone from Xen: -ENOSYS like every unknown op.
        3 => Err(ENOSYS),
        4 => transfer(d, e, uop, count, compat),
        5 => copy(d, e, uop, count, compat),
        6 => query_size(d, e, uop, count),
        7 => unmap_and_replace(d, e, uop, count),
        8 => set_version(d, e, uop),
        9 => get_status_frames(d, e, uop, count),
        10 => get_version(d, e, uop),
        11 => swap_grant_ref(d, e, uop, count),
        12 => cache_flush(d, e, uop, count),
        _ => Err(ENOSYS),
    }
}

/// The L1 entry a host mapping goes in: the machine address of a PTE in one of the guest's
/// L1 tables (GNTMAP_contains_pte), or the entry mapping virtual address `addr`.
fn host_pte(d: &PvDomain, e: &mut Engine, addr: u64, flags: u32) -> Option<u64> {
    let ptr = if flags & GNTMAP_CONTAINS_PTE != 0 {
        (addr & 7 == 0).then_some(addr)?
    } else {
        let va = if d.guest() == GuestType::X86_32Pae {
            addr & 0xffff_ffff
        } else {
            addr
        };
        d.l1_entry_addr(e, va)?
    };
    d.mmu
        .tables
        .get(&(ptr >> 12))
        .is_some_and(|t| t.level == 1)
        .then_some(ptr)
}

fn write_pte(d: &mut PvDomain, e: &mut Engine, ptr: u64, v: u64) {
    GuestPhys::write_u64(e.ram(), ptr, v);
    let core = &mut *e.core;
    core.notify_phys_write(&mut e.env, ptr, 8);
    d.mmu.tlb_dirty = true;
}

/// Xen's create_grant_host_mapping for a PV guest: point the PTE at the frame.
fn create_host_mapping(
    d: &mut PvDomain,
    e: &mut Engine,
    addr: u64,
    frame: u64,
    flags: u32,
    cache: u16,
) -> Result<(), i16> {
    let ptr = host_pte(d, e, addr, flags).ok_or(GNTST_GENERAL_ERROR)?;
    let mut v = (frame << 12) | P | A | D | 1 << 63;
    if flags & GNTMAP_READONLY == 0 {
        v |= RW;
    }
    if flags & GNTMAP_APPLICATION_MAP != 0 || d.guest() == GuestType::X86_64 {
        v |= US;
    }
    // GTF_PWT/PCD/PAT (bits 5-7) are the PTE's PWT/PCD/PAT bits shifted by two.
    v |= ((cache & (GTF_PWT | GTF_PCD)) as u64) >> 2 | (((cache & GTF_PAT) != 0) as u64) << 7;
    if d.guest() == GuestType::X86_32Pae {
        v &= !(1 << 63);
    }
    write_pte(d, e, ptr, v);
    Ok(())
}

/// Xen's replace_grant_host_mapping: the PTE must map `frame`; it is cleared, or takes the
/// entry of `new_addr` (whose own entry is cleared).
fn replace_host_mapping(
    d: &mut PvDomain,
    e: &mut Engine,
    addr: u64,
    frame: u64,
    new_addr: u64,
    flags: u32,
) -> Result<(), i16> {
    if new_addr != 0 && flags & GNTMAP_CONTAINS_PTE != 0 {
        return Err(GNTST_GENERAL_ERROR);
    }
    let ptr = host_pte(d, e, addr, flags).ok_or(GNTST_GENERAL_ERROR)?;
    let old = GuestPhys::read_u64(e.ram(), ptr).ok_or(GNTST_GENERAL_ERROR)?;
    if old & P == 0 || (old & ADDR_MASK) >> 12 != frame {
        return Err(GNTST_GENERAL_ERROR);
    }
    let mut v = 0;
    if new_addr != 0 {
        let nptr = host_pte(d, e, new_addr, 0).ok_or(GNTST_GENERAL_ERROR)?;
        v = GuestPhys::read_u64(e.ram(), nptr).ok_or(GNTST_GENERAL_ERROR)?;
        write_pte(d, e, nptr, 0);
    }
    write_pte(d, e, ptr, v);
    Ok(())
}

fn map_one(d: &mut PvDomain, e: &mut Engine, op: &mut GnttabMapGrantRef) {
    if op.flags & (GNTMAP_DEVICE_MAP | GNTMAP_HOST_MAP) == 0 {
        op.status = GNTST_BAD_GNTREF;
        return;
    }
    if op.dom != GUEST_DOMID {
        op.status = GNTST_BAD_DOMAIN;
        return;
    }
    let (gref, flags) = (op.gref, op.flags);
    let r = with_table(d, e, |t, mem, w| {
        let cache = t.map_cache_flags(mem, gref);
        t.map(mem, GUEST_DOMID, gref, flags, w)
            .map(|(h, f)| (h, f, cache))
    });
    let (h, frame, cache) = match r {
        Ok(x) => x,
        Err(s) => {
            op.status = s;
            return;
        }
    };
    if flags & GNTMAP_HOST_MAP != 0 {
        if let Err(s) = create_host_mapping(d, e, op.host_addr, frame, flags, cache) {
            let dev = if flags & GNTMAP_DEVICE_MAP != 0 {
                frame << 12
            } else {
                0
            };
            with_table(d, e, |t, mem, _| {
                let _ = t.unmap(mem, GUEST_DOMID, h, true, dev);
            });
            op.status = s;
            return;
        }
    }
    op.dev_bus_addr = frame << 12;
    op.handle = h;
    op.status = GNTST_OKAY;
}

fn map_grant_ref(d: &mut PvDomain, e: &mut Engine, uop: u64, count: u32) -> HcResult {
    const SZ: u64 = std::mem::size_of::<GnttabMapGrantRef>() as u64;
    for i in 0..count as u64 {
        let b = rd(d, e, uop + i * SZ, SZ as usize)?;
        let mut op = GnttabMapGrantRef {
            host_addr: u64_of(&b, 0),
            flags: u32_of(&b, 8),
            gref: u32_of(&b, 12),
            dom: u16_of(&b, 16),
            status: 0,
            handle: u32_of(&b, 20),
            dev_bus_addr: u64_of(&b, 24),
        };
        map_one(d, e, &mut op);
        let mut out = b.clone();
        out[18..20].copy_from_slice(&op.status.to_le_bytes());
        out[20..24].copy_from_slice(&op.handle.to_le_bytes());
        out[24..32].copy_from_slice(&op.dev_bus_addr.to_le_bytes());
        wr(d, e, uop + i * SZ, &out)?;
    }
    d.flush_tlb_if_dirty(e);
    Ok(0)
}

/// unmap_common + unmap_common_complete for one op.
fn unmap_one(
    d: &mut PvDomain,
    e: &mut Engine,
    host_addr: u64,
    dev_bus_addr: u64,
    new_addr: u64,
    handle: u32,
) -> i16 {
    let m = match d.grant.check_unmap(GUEST_DOMID, handle, dev_bus_addr) {
        Ok(m) => m,
        Err(s) => return s,
    };
    let host = host_addr != 0 && m.flags & GNTMAP_HOST_MAP != 0;
    if host {
        if let Err(s) = replace_host_mapping(d, e, host_addr, m.frame, new_addr, m.flags) {
            return s;
        }
    }
    match with_table(d, e, |t, mem, _| {
        t.unmap(mem, GUEST_DOMID, handle, host, dev_bus_addr)
    }) {
        Ok(()) => GNTST_OKAY,
        Err(s) => s,
    }
}

fn unmap_grant_ref(d: &mut PvDomain, e: &mut Engine, uop: u64, count: u32) -> HcResult {
    const SZ: u64 = std::mem::size_of::<GnttabUnmapGrantRef>() as u64;
    let mut rc = Ok(0);
    for i in 0..count as u64 {
        let at = uop + i * SZ;
        let b = match rd(d, e, at, SZ as usize) {
            Ok(b) => b,
            Err(x) => {
                rc = Err(x);
                break;
            }
        };
        let s = unmap_one(d, e, u64_of(&b, 0), u64_of(&b, 8), 0, u32_of(&b, 16));
        if let Err(x) = wr(d, e, at + 20, &s.to_le_bytes()) {
            rc = Err(x);
            break;
        }
    }
    d.flush_tlb_if_dirty(e);
    rc
}

fn unmap_and_replace(d: &mut PvDomain, e: &mut Engine, uop: u64, count: u32) -> HcResult {
    const SZ: u64 = std::mem::size_of::<GnttabUnmapAndReplace>() as u64;
    let mut rc = Ok(0);
    for i in 0..count as u64 {
        let at = uop + i * SZ;
        let b = match rd(d, e, at, SZ as usize) {
            Ok(b) => b,
            Err(x) => {
                rc = Err(x);
                break;
            }
        };
        let s = unmap_one(d, e, u64_of(&b, 0), 0, u64_of(&b, 8), u32_of(&b, 16));
        if let Err(x) = wr(d, e, at + 20, &s.to_le_bytes()) {
            rc = Err(x);
            break;
        }
    }
    d.flush_tlb_if_dirty(e);
    rc
}

fn setup_table(d: &mut PvDomain, e: &mut Engine, uop: u64, count: u32, compat: bool) -> HcResult {
    if count != 1 {
        return Err(EINVAL);
    }
    // native: dom@0 nr_frames@4 status@8 frame_list@16 (u64 entries); compat: frame_list@12
    // (u32 entries).
    let (size, status_at, list_at, esize) = if compat {
        (16, 8, 12, 4)
    } else {
        (24, 8, 16, 8)
    };
    let b = rd(d, e, uop, size)?;
    let (dom, nr) = (u16_of(&b, 0), u32_of(&b, 4));
    let list = if compat {
        u32_of(&b, list_at) as u64
    } else {
        u64_of(&b, list_at)
    };
    let mut status = any_dom_status(dom);
    if status == GNTST_OKAY {
        match with_table(d, e, |t, mem, _| t.setup(mem, nr)) {
            Err(s) => status = s,
            Ok(frames) => {
                for (i, f) in frames.iter().enumerate() {
                    if wr(d, e, list + (i * esize) as u64, &f.to_le_bytes()[..esize]).is_err() {
                        status = GNTST_BAD_VIRT_ADDR;
                    }
                }
            }
        }
    }
    wr(d, e, uop + status_at, &status.to_le_bytes())?;
    Ok(0)
}

fn query_size(d: &mut PvDomain, e: &mut Engine, uop: u64, count: u32) -> HcResult {
    if count != 1 {
        return Err(EINVAL);
    }
    let mut b = rd(d, e, uop, 16)?;
    let status = any_dom_status(u16_of(&b, 0));
    if status == GNTST_OKAY {
        let (nr, max) = d.grant.query_size();
        b[4..8].copy_from_slice(&nr.to_le_bytes());
        b[8..12].copy_from_slice(&max.to_le_bytes());
    }
    b[12..14].copy_from_slice(&status.to_le_bytes());
    wr(d, e, uop, &b)?;
    Ok(0)
}

fn set_version(d: &mut PvDomain, e: &mut Engine, uop: u64) -> HcResult {
    let v = u32_of(&rd(d, e, uop, 4)?, 0);
    let (now, r) = with_table(d, e, |t, mem, _| t.set_version(mem, v));
    wr(d, e, uop, &now.to_le_bytes())?;
    r.map(|_| 0)
}

fn get_status_frames(d: &mut PvDomain, e: &mut Engine, uop: u64, count: u32) -> HcResult {
    if count != 1 {
        return Err(EINVAL);
    }
    let compat = d.guest() == GuestType::X86_32Pae;
    // nr_frames@0 dom@4 status@6 frame_list@8 (a handle to uint64_t in both forms)
    let b = rd(d, e, uop, if compat { 12 } else { 16 })?;
    let (nr, dom) = (u32_of(&b, 0), u16_of(&b, 4));
    let list = if compat {
        u32_of(&b, 8) as u64
    } else {
        u64_of(&b, 8)
    };
    let mut status = any_dom_status(dom);
    if status == GNTST_OKAY {
        match d.grant.status_frames(nr) {
            Err(s) => status = s,
            Ok(frames) => {
                for (i, f) in frames.iter().enumerate() {
                    if wr(d, e, list + i as u64 * 8, &f.to_le_bytes()).is_err() {
                        status = GNTST_BAD_VIRT_ADDR;
                    }
                }
            }
        }
    }
    wr(d, e, uop + 6, &status.to_le_bytes())?;
    Ok(0)
}

fn get_version(d: &mut PvDomain, e: &mut Engine, uop: u64) -> HcResult {
    let b = rd(d, e, uop, 8)?;
    match u16_of(&b, 0) {
        DOMID_SELF | GUEST_DOMID => {}
        0 => return Err(EPERM),
        _ => return Err(ESRCH),
    }
    wr(d, e, uop + 4, &d.grant.version().to_le_bytes())?;
    Ok(0)
}

fn swap_grant_ref(d: &mut PvDomain, e: &mut Engine, uop: u64, count: u32) -> HcResult {
    for i in 0..count as u64 {
        let at = uop + i * 12;
        let b = rd(d, e, at, 12)?;
        let (ra, rb) = (u32_of(&b, 0), u32_of(&b, 4));
        let s = with_table(d, e, |t, mem, _| t.swap(mem, ra, rb));
        wr(d, e, at + 8, &s.to_le_bytes())?;
    }
    Ok(0)
}

fn copy(d: &mut PvDomain, e: &mut Engine, uop: u64, count: u32, compat: bool) -> HcResult {
    let size: u64 = if compat { 24 } else { 40 };
    for i in 0..count as u64 {
        let at = uop + i * size;
        let b = rd(d, e, at, size as usize)?;
        let op = if compat {
            let p = |o: usize| GnttabCopyPtr {
                u: u32_of(&b, o) as u64,
                domid: u16_of(&b, o + 4),
                offset: u16_of(&b, o + 6),
            };
            GnttabCopy {
                source: p(0),
                dest: p(8),
                len: u16_of(&b, 16),
                flags: u16_of(&b, 18),
                status: 0,
            }
        } else {
            let p = |o: usize| GnttabCopyPtr {
                u: u64_of(&b, o),
                domid: u16_of(&b, o + 8),
                offset: u16_of(&b, o + 10),
            };
            GnttabCopy {
                source: p(0),
                dest: p(16),
                len: u16_of(&b, 32),
                flags: u16_of(&b, 34),
                status: 0,
            }
        };
        let s = with_table(d, e, |t, mem, w| t.copy(mem, GUEST_DOMID, &op, w));
        let status_at = if compat { 20 } else { 36 };
        wr(d, e, at + status_at, &s.to_le_bytes())?;
    }
    Ok(0)
}

/// GNTTABOP_transfer: every page transfer needs a receiving domain that accepts it with a
/// GTF_accept_transfer grant; none here does. A frame that is not the guest's is
/// GNTST_bad_page (checked first, as Xen does); otherwise GNTST_bad_domain, and the page stays
/// the guest's (Xen would already have taken it at that point).
fn transfer(d: &mut PvDomain, e: &mut Engine, uop: u64, count: u32, compat: bool) -> HcResult {
    let (size, status_at): (u64, u64) = if compat { (16, 12) } else { (24, 16) };
    for i in 0..count as u64 {
        let at = uop + i * size;
        let b = rd(d, e, at, size as usize)?;
        let mfn = if compat {
            u32_of(&b, 0) as u64
        } else {
            u64_of(&b, 0)
        };
        let s = if mfn >= d.dom.layout.nr_pages || d.mmu.tables.contains_key(&mfn) {
            GNTST_BAD_PAGE
        } else {
            GNTST_BAD_DOMAIN
        };
        wr(d, e, at + status_at, &s.to_le_bytes())?;
    }
    Ok(0)
}

/// GNTTABOP_cache_flush on x86: clean (with or without invalidate) is a cache flush, which
/// the emulated memory does not need; invalidate alone is -EOPNOTSUPP. The frame must be one
/// the domain owns (its own frames and the frames Xen shares with it), else -EPERM.
fn cache_flush(d: &mut PvDomain, e: &mut Engine, uop: u64, count: u32) -> HcResult {
    for i in 0..count as u64 {
        let b = rd(d, e, uop + i * 16, 16)?;
        let (addr, off, len, op) = (
            u64_of(&b, 0),
            u16_of(&b, 8) as u32,
            u16_of(&b, 10) as u32,
            u32_of(&b, 12),
        );
        if off >= 4096
            || len > 4096
            || off + len > 4096
            || op & !(GNTTAB_CACHE_INVAL | GNTTAB_CACHE_CLEAN) != 0
        {
            return Err(EINVAL);
        }
        if len == 0 || op == 0 {
            continue;
        }
        let mfn = addr >> 12;
        if mfn >= d.dom.layout.ram_pages {
            return Err(EINVAL);
        }
        let owned = mfn < d.dom.layout.nr_pages
            || mfn == d.dom.layout.platform.shared_info_mfn
            || d.grant.table_frame(mfn).is_some();
        if !owned {
            return Err(EPERM);
        }
        if op == GNTTAB_CACHE_INVAL {
            return Err(EOPNOTSUPP);
        }
    }
    Ok(0)
}

/// XENMEM_add_to_physmap { domid u16, size u16, space u32, idx, gpfn }: Xen refuses it for a
/// domain that is not translated (xatp_permission_check: -EACCES), after the foreign-map
/// check (-ENOSYS) and the domain lookup (-ESRCH).
pub(super) fn add_to_physmap(d: &mut PvDomain, e: &mut Engine, arg: u64) -> HcResult {
    let size = if d.guest() == GuestType::X86_32Pae {
        16
    } else {
        24
    };
    let b = rd(d, e, arg, size)?;
    // XENMAPSPACE_gmfn_foreign
    if u32_of(&b, 4) == 4 {
        return Err(ENOSYS);
    }
    match u16_of(&b, 0) {
        DOMID_SELF | GUEST_DOMID | 0 => Err(EACCES),
        _ => Err(ESRCH),
    }
}

impl PvDomain {
    fn flush_tlb_if_dirty(&mut self, e: &mut Engine) {
        self.flush_if_dirty(e);
    }

    /// The toolstack's grant entries for the console and xenstore pages, granted to the back
    /// ends' domain 0 (xc_dom_gnttab_seed).
    pub(super) fn seed_grants(&mut self, e: &mut Engine) {
        let (con, store) = (
            self.dom.layout.console.pfn as u32,
            self.dom.layout.xenstore.pfn as u32,
        );
        with_table(self, e, |t, mem, _| {
            t.seed(mem, GNTTAB_RESERVED_CONSOLE, 0, con);
            t.seed(mem, GNTTAB_RESERVED_XENSTORE, 0, store);
        });
    }
}
