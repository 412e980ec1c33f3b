//! Segment descriptors: loads with the protected-mode checks (SDM vol. 2, MOV/POP Sreg,
//! LAR, LSL, VERR, VERW, JMP/CALL/RET far), reading the guest's GDT/LDT through the MMU as
//! implicit supervisor accesses.

use jit::ir::AccessKind;
use jit::Env;

use crate::helpers::{env_mut, load, store};
use crate::state::*;

/// A decoded descriptor.
#[derive(Clone, Copy, Debug)]
pub struct Desc {
    pub lo: u32,
    pub hi: u32,
}

impl Desc {
    pub fn base(&self) -> u64 {
        ((self.lo >> 16) | ((self.hi & 0xff) << 16) | (self.hi & 0xff00_0000)) as u64
    }
    pub fn limit(&self) -> u32 {
        let l = (self.lo & 0xffff) | (self.hi & 0xf_0000);
        if self.hi & (1 << 23) != 0 {
            (l << 12) | 0xfff
        } else {
            l
        }
    }
    pub fn attr(&self) -> u64 {
        (((self.hi >> 8) & 0xff) | (((self.hi >> 20) & 0xf) << 8)) as u64
    }
    pub fn dpl(&self) -> u32 {
        (self.hi >> 13) & 3
    }
    pub fn present(&self) -> bool {
        self.hi & (1 << 15) != 0
    }
    /// S bit: code/data (not system).
    pub fn is_seg(&self) -> bool {
        self.hi & (1 << 12) != 0
    }
    pub fn typ(&self) -> u32 {
        (self.hi >> 8) & 0xf
    }
    pub fn is_code(&self) -> bool {
        self.is_seg() && self.typ() & 8 != 0
    }
    pub fn readable(&self) -> bool {
        !self.is_code() || self.typ() & 2 != 0
    }
    pub fn writable_data(&self) -> bool {
        self.is_seg() && !self.is_code() && self.typ() & 2 != 0
    }
    pub fn conforming(&self) -> bool {
        self.is_code() && self.typ() & 4 != 0
    }
}

/// Fetch the descriptor for `sel`; Err(()) with #GP(sel) raised when outside the table.
/// Ok(None) is never returned for a non-null selector.
///
/// # Safety
/// Helper context.
pub unsafe fn fetch(env: *mut Env, sel: u16) -> Result<(Desc, u64), ()> {
    // SAFETY: helper context.
    let e = unsafe { env_mut(env) };
    let (base, limit) = if sel & 4 != 0 {
        (e.g[G_LDTR_BASE as usize], e.g[G_LDTR_LIMIT as usize])
    } else {
        (e.g[G_GDTR_BASE as usize], e.g[G_GDTR_LIMIT as usize])
    };
    let off = (sel & !7) as u64;
    if off + 7 > limit || (sel & 4 != 0 && e.g[G_LDTR_SEL as usize] & !3 == 0) {
        e.raise(13, Some((sel & 0xfffc) as u32), 0);
        return Err(());
    }
    let addr = base.wrapping_add(off);
    // SAFETY: helper context.
    let v = unsafe { load(env, addr, 8, AccessKind::System)? };
    Ok((
        Desc {
            lo: v as u32,
            hi: (v >> 32) as u32,
        },
        addr,
    ))
}

fn set_seg(e: &mut Env, s: usize, sel: u16, d: Option<&Desc>) {
    let seg = Seg::ALL[s];
    e.g[seg.sel_g() as usize] = sel as u64;
    match d {
        Some(d) => {
            e.g[seg.base_g() as usize] = d.base();
            e.g[seg.limit_g() as usize] = d.limit() as u64;
            e.g[seg.attr_g() as usize] = d.attr() | 1; // accessed
        }
        None => {
            if matches!(seg, Seg::Fs | Seg::Gs) || e.g[G_EFER as usize] & efer::LMA == 0 {
                e.g[seg.base_g() as usize] = 0;
            }
            e.g[seg.limit_g() as usize] = 0;
            e.g[seg.attr_g() as usize] = 0;
        }
    }
}

/// Set the accessed bit of a descriptor in memory.
unsafe fn mark_accessed(env: *mut Env, d: &Desc, addr: u64) -> Result<(), ()> {
    if d.hi & (1 << 8) == 0 {
        // SAFETY: helper context.
        unsafe {
            store(
                env,
                addr + 4,
                4,
                (d.hi | (1 << 8)) as u64,
                AccessKind::System,
            )?
        };
    }
    Ok(())
}

/// MOV/POP Sreg, LDS etc. a0 = segment index (Seg), a1 = selector. Returns 0.
pub unsafe extern "C" fn helper_load_seg(env: *mut Env, s: u64, sel: u64, _: u64, _: u64) -> u64 {
    let sel = sel as u16;
    let s = s as usize;
    // SAFETY: helper contract.
    let e = unsafe { env_mut(env) };
    let cpl = e.g[G_CPL as usize] as u32;
    let long = e.g[G_EFER as usize] & efer::LMA != 0;
    let code64 = e.g[Seg::Cs.attr_g() as usize] & attr::L != 0 && long;
    let err = (sel & 0xfffc) as u32;
    if e.g[G_CR0 as usize] & cr0::PE == 0 {
        // Real mode: base = sel << 4.
        let seg = Seg::ALL[s];
        e.g[seg.sel_g() as usize] = sel as u64;
        e.g[seg.base_g() as usize] = (sel as u64) << 4;
        return 0;
    }
    if sel & !3 == 0 {
        if s == Seg::Ss as usize && !(code64 && cpl != 3 && (sel & 3) as u32 == cpl) {
            e.raise(13, Some(0), 0);
            return 0;
        }
        set_seg(e, s, sel, None);
        return 0;
    }
    // SAFETY: helper context.
    let Ok((d, addr)) = (unsafe { fetch(env, sel) }) else {
        return 0;
    };
    let e = unsafe { env_mut(env) };
    let rpl = (sel & 3) as u32;
    if s == Seg::Ss as usize {
        if rpl != cpl || d.dpl() != cpl || !d.writable_data() {
            e.raise(13, Some(err), 0);
            return 0;
        }
        if !d.present() {
            e.raise(12, Some(err), 0);
            return 0;
        }
    } else {
        if !d.is_seg() || !d.readable() {
            e.raise(13, Some(err), 0);
            return 0;
        }
        if (!d.is_code() || !d.conforming()) && d.dpl() < cpl.max(rpl) {
            e.raise(13, Some(err), 0);
            return 0;
        }
        if !d.present() {
            e.raise(11, Some(err), 0);
            return 0;
        }
    }
    // SAFETY: helper context.
    if unsafe { mark_accessed(env, &d, addr) }.is_err() {
        return 0;
    }
    let e = unsafe { env_mut(env) };
    set_seg(e, s, sel, Some(&d));
    0
}

fn set_zf(e: &mut Env, z: bool) {
    let f = crate::flags::read_rflags(&e.g);
    let nf = if z { f | fl::ZF } else { f & !fl::ZF };
    e.g[G_RFLAGS as usize] = nf;
    e.g[G_CC_OP as usize] = CcKind::Eflags as u64 * 4;
}

/// LAR (a0 = 0) / LSL (a0 = 1) of selector a1. Returns the value with bit 63 set when
/// valid (ZF set); otherwise 0 and ZF clear.
pub unsafe extern "C" fn helper_lar_lsl(
    env: *mut Env,
    which: u64,
    sel: u64,
    _: u64,
    _: u64,
) -> u64 {
    let sel = sel as u16;
    // SAFETY: helper contract.
    let e = unsafe { env_mut(env) };
    let cpl = e.g[G_CPL as usize] as u32;
    let long = e.g[G_EFER as usize] & efer::LMA != 0;
    let fail = |e: &mut Env| {
        set_zf(e, false);
        0
    };
    if sel & !3 == 0 {
        return fail(e);
    }
    let (base, limit) = if sel & 4 != 0 {
        (e.g[G_LDTR_BASE as usize], e.g[G_LDTR_LIMIT as usize])
    } else {
        (e.g[G_GDTR_BASE as usize], e.g[G_GDTR_LIMIT as usize])
    };
    if (sel & !7) as u64 + 7 > limit {
        return fail(e);
    }
    // SAFETY: helper context.
    let Ok(v) = (unsafe { load(env, base + (sel & !7) as u64, 8, AccessKind::System) }) else {
        return 0;
    };
    let e = unsafe { env_mut(env) };
    let d = Desc {
        lo: v as u32,
        hi: (v >> 32) as u32,
    };
    let ok_type = if d.is_seg() {
        true
    } else {
        let t = d.typ();
        let ok_lar = if long {
            matches!(t, 2 | 9 | 11 | 12)
        } else {
            matches!(t, 1..=5 | 9 | 11 | 12)
        };
        let ok_lsl = if long {
            matches!(t, 2 | 9 | 11)
        } else {
            matches!(t, 1 | 2 | 3 | 9 | 11)
        };
        if which == 0 {
            ok_lar
        } else {
            ok_lsl
        }
    };
    let rpl = (sel & 3) as u32;
    let priv_ok = d.conforming() || d.dpl() >= cpl.max(rpl);
    if !ok_type || !priv_ok {
        return fail(e);
    }
    set_zf(e, true);
    let r = if which == 0 {
        (d.hi & 0x00ff_ff00) as u64
    } else {
        d.limit() as u64
    };
    r | 1 << 63
}

/// VERR (a0 = 0) / VERW (a0 = 1): sets ZF.
pub unsafe extern "C" fn helper_verrw(env: *mut Env, which: u64, sel: u64, _: u64, _: u64) -> u64 {
    let sel = sel as u16;
    // SAFETY: helper contract.
    let e = unsafe { env_mut(env) };
    let cpl = e.g[G_CPL as usize] as u32;
    if sel & !3 == 0 {
        set_zf(e, false);
        return 0;
    }
    let (base, limit) = if sel & 4 != 0 {
        (e.g[G_LDTR_BASE as usize], e.g[G_LDTR_LIMIT as usize])
    } else {
        (e.g[G_GDTR_BASE as usize], e.g[G_GDTR_LIMIT as usize])
    };
    if (sel & !7) as u64 + 7 > limit {
        set_zf(e, false);
        return 0;
    }
    // SAFETY: helper context.
    let Ok(v) = (unsafe { load(env, base + (sel & !7) as u64, 8, AccessKind::System) }) else {
        return 0;
    };
    let e = unsafe { env_mut(env) };
    let d = Desc {
        lo: v as u32,
        hi: (v >> 32) as u32,
    };
    let rpl = (sel & 3) as u32;
    let ok = d.is_seg()
        && (d.conforming() || d.dpl() >= cpl.max(rpl))
        && if which == 0 {
            d.readable()
        } else {
            d.writable_data()
        };
    set_zf(e, ok);
    0
}

/// Far JMP (a0 = 0), far CALL (a0 = 1, a3 = operand size) to a1:a2, or far RET (a0 = 2,
/// a1 = operand size, a2 = extra bytes to pop). Same-privilege transfers to code
/// segments, and far RET to an outer privilege level; gates raise #GP (PV guests enter
/// the kernel through the platform, never through gates).
pub unsafe extern "C" fn helper_far_jump(
    env: *mut Env,
    kind: u64,
    a1: u64,
    a2: u64,
    a3: u64,
) -> u64 {
    // SAFETY: helper contract.
    let e = unsafe { env_mut(env) };
    let cpl = e.g[G_CPL as usize] as u32;
    let long = e.g[G_EFER as usize] & efer::LMA != 0;
    let code64 = long && e.g[Seg::Cs.attr_g() as usize] & attr::L != 0;
    let ssize: u64 = if code64 {
        8
    } else if e.g[Seg::Ss.attr_g() as usize] & attr::DB != 0 {
        4
    } else {
        2
    };
    let ss_base = if code64 {
        0
    } else {
        e.g[Seg::Ss.base_g() as usize]
    };
    let sp_mask = if ssize == 8 {
        u64::MAX
    } else if ssize == 4 {
        0xffff_ffff
    } else {
        0xffff
    };
    let (sel, off, osz, extra) = if kind == 2 {
        let osz = a1;
        let rsp = e.g[4];
        // SAFETY: helper context.
        let Ok(ip) = (unsafe {
            load(
                env,
                ss_base.wrapping_add(rsp & sp_mask),
                osz as u32,
                AccessKind::Stack,
            )
        }) else {
            return 0;
        };
        let Ok(cs) = (unsafe {
            load(
                env,
                ss_base.wrapping_add(rsp.wrapping_add(osz) & sp_mask),
                osz.min(4) as u32,
                AccessKind::Stack,
            )
        }) else {
            return 0;
        };
        (cs as u16, ip, osz, a2)
    } else {
        (a1 as u16, a2, a3, 0)
    };
    let e = unsafe { env_mut(env) };
    let err = (sel & 0xfffc) as u32;
    if sel & !3 == 0 {
        e.raise(13, Some(0), 0);
        return 0;
    }
    // SAFETY: helper context.
    let Ok((d, addr)) = (unsafe { fetch(env, sel) }) else {
        return 0;
    };
    let e = unsafe { env_mut(env) };
    let rpl = (sel & 3) as u32;
    if !d.is_code() {
        e.raise(13, Some(err), 0);
        return 0;
    }
    let new_cpl = if kind == 2 { rpl } else { cpl };
    let priv_ok = if kind == 2 {
        rpl >= cpl
            && if d.conforming() {
                d.dpl() <= rpl
            } else {
                d.dpl() == rpl
            }
    } else if d.conforming() {
        d.dpl() <= cpl
    } else {
        rpl <= cpl && d.dpl() == cpl
    };
    if !priv_ok {
        e.raise(13, Some(err), 0);
        return 0;
    }
    if !d.present() {
        e.raise(11, Some(err), 0);
        return 0;
    }
    let new_l = long && d.hi & (1 << 21) != 0;
    let off = if new_l {
        off
    } else if d.hi & (1 << 22) != 0 {
        off & 0xffff_ffff
    } else {
        off & 0xffff
    };
    if !new_l && off > d.limit() as u64 {
        e.raise(13, Some(0), 0);
        return 0;
    }
    let mut rsp = e.g[4];
    if kind == 1 {
        // push CS then IP
        let cs_old = e.g[Seg::Cs.sel_g() as usize];
        let rip_ret = a3 >> 8;
        let osz = osz & 0xff;
        let sp1 = rsp.wrapping_sub(osz) & sp_mask;
        let sp2 = rsp.wrapping_sub(2 * osz) & sp_mask;
        // SAFETY: helper context.
        if unsafe {
            store(
                env,
                ss_base.wrapping_add(sp1),
                osz as u32,
                cs_old,
                AccessKind::Stack,
            )
        }
        .is_err()
        {
            return 0;
        }
        if unsafe {
            store(
                env,
                ss_base.wrapping_add(sp2),
                osz as u32,
                rip_ret,
                AccessKind::Stack,
            )
        }
        .is_err()
        {
            return 0;
        }
        rsp = (rsp & !sp_mask) | sp2;
    } else if kind == 2 {
        let mut sp = rsp.wrapping_add(2 * osz + extra);
        if new_cpl > cpl {
            // Return to an outer level: pop SS:SP too.
            // SAFETY: helper context.
            let Ok(nsp) = (unsafe {
                load(
                    env,
                    ss_base.wrapping_add(sp & sp_mask),
                    osz as u32,
                    AccessKind::Stack,
                )
            }) else {
                return 0;
            };
            let Ok(nss) = (unsafe {
                load(
                    env,
                    ss_base.wrapping_add(sp.wrapping_add(osz) & sp_mask),
                    2,
                    AccessKind::Stack,
                )
            }) else {
                return 0;
            };
            let e = unsafe { env_mut(env) };
            e.g[G_CPL as usize] = new_cpl as u64;
            let saved_ss = [e.g[22 + 2], e.g[28 + 2], e.g[34 + 2], e.g[40 + 2]];
            // SAFETY: helper context.
            unsafe { helper_load_seg(env, Seg::Ss as u64, nss, 0, 0) };
            let e = unsafe { env_mut(env) };
            if e.fault != 0 {
                e.g[G_CPL as usize] = cpl as u64;
                e.g[22 + 2] = saved_ss[0];
                e.g[28 + 2] = saved_ss[1];
                e.g[34 + 2] = saved_ss[2];
                e.g[40 + 2] = saved_ss[3];
                return 0;
            }
            sp = nsp.wrapping_add(extra);
            e.mmu_idx = crate::state::mmu_index(&e.g);
        }
        rsp = if new_cpl > cpl {
            sp
        } else {
            (rsp & !sp_mask) | (sp & sp_mask)
        };
    }
    // SAFETY: helper context.
    if unsafe { mark_accessed(env, &d, addr) }.is_err() {
        return 0;
    }
    let e = unsafe { env_mut(env) };
    e.g[4] = rsp;
    set_seg(e, Seg::Cs as usize, (sel & !3) | new_cpl as u16, Some(&d));
    e.g[G_RIP as usize] = off;
    0
}
