//! FP/SIMD state save and restore: FXSAVE/FXRSTOR (32- and 64-bit formats),
//! XSAVE/XSAVEOPT/XRSTOR for the x87 and SSE components, and the x87 tag word forms.
//!
//! Every save first checks that the whole area is writable (and every restore reads and
//! validates the whole area) before changing anything, so a fault leaves memory and state
//! as they were.

use jit::ir::AccessKind;
use jit::Env;

use crate::helpers::{load, store};
use crate::state::*;

/// MXCSR bits a guest may set (DAZ supported).
pub const MXCSR_MASK: u32 = 0xffff;
pub const MXCSR_DEFAULT: u64 = 0x1f80;
pub const FCW_DEFAULT: u64 = 0x037f;

/// FCW as the hardware keeps it: reserved bits 7 and 13..15 clear, bit 6 set (FLDCW,
/// FLDENV, FRSTOR, FXRSTOR and XRSTOR all store it so).
pub fn normalize_fcw(v: u64) -> u64 {
    v & 0x1f3f | 0x40
}

/// A loaded status word with ES and B set exactly when an exception flag is unmasked in
/// `fcw` (a pending x87 exception).
pub fn fsw_with_es(fsw: u64, fcw: u64) -> u64 {
    let fsw = fsw & 0xffff;
    if fsw & 0x3f & !fcw != 0 {
        fsw | 0x8080
    } else {
        fsw & !0x8080
    }
}

/// Reset x87 state as FNINIT does (the environment, not the register contents).
pub fn fninit(e: &mut Env) {
    e.g[G_FCW as usize] = FCW_DEFAULT;
    e.g[G_FSW as usize] = 0;
    e.g[G_FTW as usize] = 0;
    for g in [G_FOP, G_FIP, G_FCS, G_FDP, G_FDS] {
        e.g[g as usize] = 0;
    }
}

/// Power-on / INIT state of the FP and SIMD registers.
pub fn reset(e: &mut Env) {
    fninit(e);
    e.g[G_MXCSR as usize] = MXCSR_DEFAULT;
    for i in 0..32 {
        e.g[(G_XMM0 + i) as usize] = 0;
    }
    for i in 0..16 {
        e.g[(G_FPR0 + i) as usize] = 0;
    }
    e.g[G_XCR0 as usize] = 1;
}

fn top(e: &Env) -> usize {
    (e.g[G_FSW as usize] >> 11 & 7) as usize
}

/// The full 16-bit tag word (FSTENV/FSAVE form) from the abridged one and the contents.
pub fn full_tag_word(e: &Env) -> u16 {
    let mut tw = 0u16;
    for r in 0..8 {
        let tag = if e.g[G_FTW as usize] >> r & 1 == 0 {
            3
        } else {
            let sig = e.g[(G_FPR0 + 2 * r as u16) as usize];
            let exp = e.g[(G_FPR0 + 2 * r as u16 + 1) as usize] & 0x7fff;
            if exp == 0x7fff {
                2
            } else if exp == 0 {
                if sig == 0 {
                    1
                } else {
                    2
                }
            } else if sig >> 63 == 0 {
                2 // unnormal
            } else {
                0
            }
        };
        tw |= tag << (2 * r);
    }
    tw
}

/// The abridged tag byte from a full tag word.
pub fn abridge(tw: u16) -> u64 {
    (0..8)
        .filter(|r| tw >> (2 * r) & 3 != 3)
        .map(|r| 1u64 << r)
        .sum()
}

/// Check that `len` bytes (at most a page) at `addr` can be accessed: probe the first and
/// the last byte, which covers both pages an area can touch. The order decides which
/// address a fault reports: AMD processors check the last byte of an FXSAVE/FXRSTOR area
/// first (`last_first`) and the first byte of the x87 environment and state images first.
unsafe fn probe(
    env: *mut Env,
    addr: u64,
    len: u64,
    access: jit::engine::Access,
    last_first: bool,
) -> Result<(), ()> {
    // SAFETY: helper context, per the caller's contract.
    let (core, e) = unsafe { (jit::engine::core_of(env), &mut *env) };
    let (first, last) = (addr, addr.wrapping_add(len - 1));
    let order = if last_first {
        [last, first]
    } else {
        [first, last]
    };
    for a in order {
        core.load_for(e, a, 1, AccessKind::Normal, access)
            .map_err(|f| e.raise(f.vector, f.error_code, f.addr))?;
    }
    Ok(())
}

unsafe fn probe_write(env: *mut Env, addr: u64, len: u64, last_first: bool) -> Result<(), ()> {
    // SAFETY: per the caller's contract.
    unsafe { probe(env, addr, len, jit::engine::Access::Write, last_first) }
}

unsafe fn probe_read(env: *mut Env, addr: u64, len: u64, last_first: bool) -> Result<(), ()> {
    // SAFETY: per the caller's contract.
    unsafe { probe(env, addr, len, jit::engine::Access::Read, last_first) }
}

/// The legacy 512-byte region as FXSAVE writes it. `wide`: 64-bit FIP/FDP form (REX.W);
/// `nxmm`: XMM registers saved (16 in 64-bit mode, 8 otherwise).
pub fn fxsave_image(e: &Env, wide: bool, nxmm: usize, x87: bool, sse: bool) -> [u64; 64] {
    let mut m = [0u64; 64];
    let put16 = |m: &mut [u64; 64], off: usize, v: u64, bytes: usize| {
        for i in 0..bytes {
            let b = (v >> (8 * i)) & 0xff;
            let o = off + i;
            m[o / 8] = (m[o / 8] & !(0xff << (8 * (o % 8)))) | b << (8 * (o % 8));
        }
    };
    if x87 {
        put16(&mut m, 0, e.g[G_FCW as usize], 2);
        put16(&mut m, 2, e.g[G_FSW as usize], 2);
        put16(&mut m, 4, e.g[G_FTW as usize], 1);
        put16(&mut m, 6, e.g[G_FOP as usize], 2);
        if wide {
            put16(&mut m, 8, e.g[G_FIP as usize], 8);
            put16(&mut m, 16, e.g[G_FDP as usize], 8);
        } else {
            put16(&mut m, 8, e.g[G_FIP as usize], 4);
            put16(&mut m, 12, e.g[G_FCS as usize], 2);
            put16(&mut m, 16, e.g[G_FDP as usize], 4);
            put16(&mut m, 20, e.g[G_FDS as usize], 2);
        }
        let t = top(e);
        for i in 0..8 {
            let r = (t + i) & 7;
            m[4 + 2 * i] = e.g[(G_FPR0 as usize) + 2 * r];
            m[5 + 2 * i] = e.g[(G_FPR0 as usize) + 2 * r + 1] & 0xffff;
        }
    }
    if sse || x87 {
        // MXCSR and its mask are written when either component is (SDM: with SSE or AVX
        // for XSAVE; FXSAVE always writes them).
        put16(&mut m, 24, e.g[G_MXCSR as usize], 4);
        put16(&mut m, 28, MXCSR_MASK as u64, 4);
    }
    if sse {
        for i in 0..nxmm {
            m[20 + 2 * i] = e.g[xmm_g(i as u32) as usize];
            m[21 + 2 * i] = e.g[xmm_g(i as u32) as usize + 1];
        }
    }
    m
}

fn get(m: &[u64; 64], off: usize, bytes: usize) -> u64 {
    (0..bytes)
        .map(|i| ((m[(off + i) / 8] >> (8 * ((off + i) % 8))) & 0xff) << (8 * i))
        .sum()
}

/// Load the legacy region (already read from memory and validated).
pub fn fxrstor_image(
    e: &mut Env,
    m: &[u64; 64],
    wide: bool,
    nxmm: usize,
    x87: bool,
    sse: bool,
    mxcsr: bool,
) {
    if x87 {
        e.g[G_FCW as usize] = normalize_fcw(get(m, 0, 2));
        // ES and B summarise the unmasked exception flags of the loaded words (as FLDENV).
        e.g[G_FSW as usize] = fsw_with_es(get(m, 2, 2), e.g[G_FCW as usize]);
        e.g[G_FTW as usize] = get(m, 4, 1);
        e.g[G_FOP as usize] = get(m, 6, 2) & 0x7ff;
        if wide {
            e.g[G_FIP as usize] = get(m, 8, 8);
            e.g[G_FDP as usize] = get(m, 16, 8);
            e.g[G_FCS as usize] = 0;
            e.g[G_FDS as usize] = 0;
        } else {
            e.g[G_FIP as usize] = get(m, 8, 4);
            e.g[G_FCS as usize] = get(m, 12, 2);
            e.g[G_FDP as usize] = get(m, 16, 4);
            e.g[G_FDS as usize] = get(m, 20, 2);
        }
        let t = top(e);
        for i in 0..8 {
            let r = (t + i) & 7;
            e.g[G_FPR0 as usize + 2 * r] = m[4 + 2 * i];
            e.g[G_FPR0 as usize + 2 * r + 1] = m[5 + 2 * i] & 0xffff;
        }
    }
    if mxcsr {
        e.g[G_MXCSR as usize] = get(m, 24, 4);
    }
    if sse {
        for i in 0..nxmm {
            e.g[xmm_g(i as u32) as usize] = m[20 + 2 * i];
            e.g[xmm_g(i as u32) as usize + 1] = m[21 + 2 * i];
        }
    }
}

/// Reset the x87 component to its XSAVE init state.
fn x87_init(e: &mut Env) {
    fninit(e);
    for i in 0..16 {
        e.g[(G_FPR0 + i) as usize] = 0;
    }
}

fn x87_in_init(e: &Env) -> bool {
    e.g[G_FCW as usize] == FCW_DEFAULT
        && e.g[G_FSW as usize] == 0
        && e.g[G_FTW as usize] == 0
        && [G_FOP, G_FIP, G_FDP].iter().all(|g| e.g[*g as usize] == 0)
}

fn sse_in_init(e: &Env, nxmm: usize) -> bool {
    (0..nxmm).all(|i| e.g[xmm_g(i as u32) as usize] == 0 && e.g[xmm_g(i as u32) as usize + 1] == 0)
}

/// State save/restore helper. a0: kind (0 FXSAVE, 1 FXRSTOR, 2 XSAVE/XSAVEOPT,
/// 3 XRSTOR) | REX.W << 8 | 64-bit mode << 9; a1: the area's linear address.
pub unsafe extern "C" fn helper_fxstate(env: *mut Env, a0: u64, addr: u64, _: u64, _: u64) -> u64 {
    let kind = a0 & 0xff;
    let wide = a0 & 0x100 != 0;
    let nxmm = if a0 & 0x200 != 0 { 16 } else { 8 };
    // SAFETY: helper contract (all accesses below go through the MMU helpers).
    let e = unsafe { crate::helpers::env_mut(env) };
    let align = if kind >= 2 { 63 } else { 15 };
    if addr & align != 0 {
        e.raise(13, Some(0), 0);
        return 0;
    }
    let rfbm = if kind >= 2 {
        e.g[G_XCR0 as usize]
            & (e.g[2] << 32 | (e.g[0] & 0xffff_ffff))
            & crate::cpuid::XCR0_SUPPORTED
    } else {
        3
    };
    match kind {
        0 | 2 => {
            let len = if kind == 0 {
                512
            } else {
                crate::cpuid::XSAVE_SIZE as u64
            };
            // SAFETY: helper context.
            if unsafe { probe_write(env, addr, len, kind == 0) }.is_err() {
                return 0;
            }
            let e = unsafe { crate::helpers::env_mut(env) };
            let (x87, sse) = (rfbm & 1 != 0, rfbm & 2 != 0);
            let img = fxsave_image(e, wide, nxmm, x87, sse);
            // XSAVE leaves the parts of components outside RFBM untouched: write only the
            // ranges that belong to saved components.
            let ranges: Vec<(usize, usize)> = if kind == 0 {
                // FXSAVE writes the header, the ST registers and the XMM registers of the
                // mode (XMM8..15 only in 64-bit mode); bytes 416..511 (reserved and
                // software-available) are left as they were (SDM Vol. 2A FXSAVE, Table 3-53).
                vec![(0, 20 + 2 * nxmm)]
            } else {
                let mut v = Vec::new();
                if x87 {
                    v.push((0, 3)); // 0..24: FCW..FDP
                    v.push((4, 20)); // 32..160: ST0..7
                }
                if x87 || sse {
                    v.push((3, 4)); // MXCSR, MXCSR_MASK
                }
                if sse {
                    v.push((20, 20 + 2 * nxmm));
                }
                v
            };
            for (a, b) in ranges {
                for (i, &w) in img.iter().enumerate().take(b).skip(a) {
                    // SAFETY: helper context.
                    if unsafe { store(env, addr + 8 * i as u64, 8, w, AccessKind::Normal) }.is_err()
                    {
                        return 0;
                    }
                }
            }
            if kind == 2 {
                // XSTATE_BV: for saved components, whether they are in use.
                let e = unsafe { crate::helpers::env_mut(env) };
                let mut inuse = 0u64;
                if !x87_in_init(e) {
                    inuse |= 1;
                }
                if !sse_in_init(e, nxmm) || e.g[G_MXCSR as usize] != MXCSR_DEFAULT {
                    inuse |= 2;
                }
                // SAFETY: helper context.
                let old = match unsafe { load(env, addr + 512, 8, AccessKind::Normal) } {
                    Ok(v) => v,
                    Err(()) => return 0,
                };
                let bv = (old & !rfbm) | (inuse & rfbm);
                // SAFETY: helper context.
                if unsafe { store(env, addr + 512, 8, bv, AccessKind::Normal) }.is_err() {
                    return 0;
                }
            }
        }
        1 | 3 => {
            // SAFETY: helper context.
            if kind == 1 && unsafe { probe_read(env, addr, 512, true) }.is_err() {
                return 0;
            }
            let mut img = [0u64; 64];
            for (i, w) in img.iter_mut().enumerate() {
                // SAFETY: helper context.
                *w = match unsafe { load(env, addr + 8 * i as u64, 8, AccessKind::Normal) } {
                    Ok(v) => v,
                    Err(()) => return 0,
                };
            }
            let mut hdr = [0u64; 8];
            if kind == 3 {
                for (i, w) in hdr.iter_mut().enumerate() {
                    // SAFETY: helper context.
                    *w = match unsafe {
                        load(env, addr + 512 + 8 * i as u64, 8, AccessKind::Normal)
                    } {
                        Ok(v) => v,
                        Err(()) => return 0,
                    };
                }
            }
            let e = unsafe { crate::helpers::env_mut(env) };
            let mx = get(&img, 24, 4) as u32;
            let xstate_bv = hdr[0];
            if kind == 3 {
                // Standard form only; reserved header bytes zero; no unsupported components.
                if hdr[1] != 0
                    || hdr[2..].iter().any(|w| *w != 0)
                    || xstate_bv & !e.g[G_XCR0 as usize] != 0
                {
                    e.raise(13, Some(0), 0);
                    return 0;
                }
            }
            let load_mx = kind == 1 || rfbm & 2 != 0;
            if load_mx && mx & !MXCSR_MASK != 0 {
                e.raise(13, Some(0), 0);
                return 0;
            }
            if kind == 1 {
                fxrstor_image(e, &img, wide, nxmm, true, true, true);
            } else {
                let (x87, sse) = (rfbm & 1 != 0, rfbm & 2 != 0);
                let (x87_ld, sse_ld) = (x87 && xstate_bv & 1 != 0, sse && xstate_bv & 2 != 0);
                fxrstor_image(e, &img, wide, nxmm, x87_ld, sse_ld, load_mx);
                if x87 && !x87_ld {
                    x87_init(e);
                }
                if sse && !sse_ld {
                    for i in 0..nxmm {
                        e.g[xmm_g(i as u32) as usize] = 0;
                        e.g[xmm_g(i as u32) as usize + 1] = 0;
                    }
                }
            }
        }
        _ => {}
    }
    0
}

/// FNSTENV/FLDENV/FNSAVE/FRSTOR (protected-mode formats). a0: kind (0 FNSTENV,
/// 1 FLDENV, 2 FNSAVE, 3 FRSTOR) | 16-bit operand size << 8; a1: linear address.
pub unsafe extern "C" fn helper_fenv(env: *mut Env, a0: u64, addr: u64, _: u64, _: u64) -> u64 {
    let kind = a0 & 0xff;
    let op16 = a0 & 0x100 != 0;
    let (unit, env_len) = if op16 { (2u64, 14u64) } else { (4, 28) };
    let total = if kind >= 2 { env_len + 80 } else { env_len };
    // SAFETY: helper contract (all accesses through the MMU helpers).
    let e = unsafe { crate::helpers::env_mut(env) };
    let t = top(e);
    if kind == 0 || kind == 2 {
        // SAFETY: helper context.
        if unsafe { probe_write(env, addr, total, false) }.is_err() {
            return 0;
        }
        let e = unsafe { crate::helpers::env_mut(env) };
        let hi = if op16 { 0 } else { 0xffff_0000u64 };
        let fields = [
            e.g[G_FCW as usize] | hi,
            e.g[G_FSW as usize] | hi,
            full_tag_word(e) as u64 | hi,
            e.g[G_FIP as usize] & 0xffff_ffff,
            e.g[G_FCS as usize] & 0xffff | (e.g[G_FOP as usize] & 0x7ff) << 16,
            e.g[G_FDP as usize] & 0xffff_ffff,
            e.g[G_FDS as usize] & 0xffff | hi,
        ];
        let mut regs = [0u64; 16];
        for i in 0..8 {
            let r = (t + i) & 7;
            regs[2 * i] = e.g[G_FPR0 as usize + 2 * r];
            regs[2 * i + 1] = e.g[G_FPR0 as usize + 2 * r + 1];
        }
        for (i, v) in fields.iter().enumerate() {
            // SAFETY: helper context.
            if unsafe {
                store(
                    env,
                    addr + unit * i as u64,
                    unit as u32,
                    *v,
                    AccessKind::Normal,
                )
            }
            .is_err()
            {
                return 0;
            }
        }
        if kind == 2 {
            for i in 0..8u64 {
                let base = addr + env_len + 10 * i;
                // SAFETY: helper context.
                let ok = unsafe { store(env, base, 8, regs[2 * i as usize], AccessKind::Normal) }
                    .is_ok()
                    && unsafe {
                        store(
                            env,
                            base + 8,
                            2,
                            regs[2 * i as usize + 1],
                            AccessKind::Normal,
                        )
                    }
                    .is_ok();
                if !ok {
                    return 0;
                }
            }
        }
        let e = unsafe { crate::helpers::env_mut(env) };
        if kind == 0 {
            // All exceptions masked: none is pending any more (ES and B clear).
            e.g[G_FCW as usize] |= 0x3f;
            e.g[G_FSW as usize] = fsw_with_es(e.g[G_FSW as usize], e.g[G_FCW as usize]);
        } else {
            fninit(e);
        }
    } else {
        // SAFETY: helper context.
        if unsafe { probe_read(env, addr, total, false) }.is_err() {
            return 0;
        }
        let mut f = [0u64; 7];
        for (i, v) in f.iter_mut().enumerate() {
            // SAFETY: helper context.
            *v = match unsafe { load(env, addr + unit * i as u64, unit as u32, AccessKind::Normal) }
            {
                Ok(v) => v,
                Err(()) => return 0,
            };
        }
        let mut regs = [0u64; 16];
        if kind == 3 {
            for i in 0..8u64 {
                let base = addr + env_len + 10 * i;
                // SAFETY: helper context.
                let (lo, hi) = match unsafe {
                    (
                        load(env, base, 8, AccessKind::Normal),
                        load(env, base + 8, 2, AccessKind::Normal),
                    )
                } {
                    (Ok(l), Ok(h)) => (l, h),
                    _ => return 0,
                };
                regs[2 * i as usize] = lo;
                regs[2 * i as usize + 1] = hi;
            }
        }
        let e = unsafe { crate::helpers::env_mut(env) };
        e.g[G_FCW as usize] = normalize_fcw(f[0]);
        e.g[G_FSW as usize] = fsw_with_es(f[1], f[0]);
        e.g[G_FTW as usize] = abridge(f[2] as u16);
        e.g[G_FIP as usize] = f[3] & 0xffff_ffff;
        e.g[G_FCS as usize] = f[4] & 0xffff;
        e.g[G_FOP as usize] = f[4] >> 16 & 0x7ff;
        e.g[G_FDP as usize] = f[5] & 0xffff_ffff;
        e.g[G_FDS as usize] = f[6] & 0xffff;
        if kind == 3 {
            let t = top(e);
            for i in 0..8 {
                let r = (t + i) & 7;
                e.g[G_FPR0 as usize + 2 * r] = regs[2 * i];
                e.g[G_FPR0 as usize + 2 * r + 1] = regs[2 * i + 1];
            }
        }
    }
    0
}
