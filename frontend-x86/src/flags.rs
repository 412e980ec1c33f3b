//! Lazy flags: the last flag-setting operation's kind, size and operands are kept in
//! `CC_OP`/`CC_DST`/`CC_SRC`/`CC_SRC2`; the six arithmetic flags are computed only when read.
//! Exact for every flag the SDM defines; where the SDM leaves a flag undefined we produce
//! what current Intel cores produce where that is known (e.g. AF = 0 after logic ops).

use crate::state::*;

#[inline]
fn parity(v: u64) -> u64 {
    if (v as u8).count_ones() % 2 == 0 {
        fl::PF
    } else {
        0
    }
}

#[inline]
fn mask(bits: u32) -> u64 {
    if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Compute the arithmetic flags (CF PF AF ZF SF OF) from lazy state.
pub fn compute(cc_op: u64, dst: u64, src: u64, src2: u64, rflags: u64) -> u64 {
    let kind = cc_kind(cc_op);
    let bits = 8u32 << (cc_op & 3);
    let m = mask(bits);
    let sign = 1u64 << (bits - 1);
    let d = dst & m;
    let s = src & m;
    let zf_sf_pf = |d: u64| -> u64 {
        (if d == 0 { fl::ZF } else { 0 }) | (if d & sign != 0 { fl::SF } else { 0 }) | parity(d)
    };
    let of_if = |c: bool| if c { fl::OF } else { 0 };
    let cf_if = |c: bool| if c { fl::CF } else { 0 };
    match kind {
        0 => rflags & fl::ARITH,
        1 | 2 => {
            // ADD / ADC: a = d - s - cin
            let cin = if kind == 2 { src2 & 1 } else { 0 };
            let a = d.wrapping_sub(s).wrapping_sub(cin) & m;
            let cf = if cin != 0 { d <= s } else { d < s };
            cf_if(cf)
                | zf_sf_pf(d)
                | ((a ^ s ^ d) & fl::AF)
                | of_if(((a ^ d) & (s ^ d)) & sign != 0)
        }
        3 | 4 => {
            // SUB / SBB: a = d + s + bin
            let bin = if kind == 4 { src2 & 1 } else { 0 };
            let a = d.wrapping_add(s).wrapping_add(bin) & m;
            let cf = if bin != 0 { a <= s } else { a < s };
            cf_if(cf)
                | zf_sf_pf(d)
                | ((a ^ s ^ d) & fl::AF)
                | of_if(((a ^ s) & (a ^ d)) & sign != 0)
        }
        5 => zf_sf_pf(d),
        6 => {
            let a = d.wrapping_sub(1) & m;
            cf_if(src & 1 != 0) | zf_sf_pf(d) | ((a ^ 1 ^ d) & fl::AF) | of_if(d == sign)
        }
        7 => {
            let a = d.wrapping_add(1) & m;
            cf_if(src & 1 != 0) | zf_sf_pf(d) | ((a ^ 1 ^ d) & fl::AF) | of_if(d == sign - 1)
        }
        8 => {
            let cf = s & sign != 0;
            cf_if(cf) | zf_sf_pf(d) | of_if(cf ^ (d & sign != 0))
        }
        9 => cf_if(s & 1 != 0) | zf_sf_pf(d) | of_if(s & sign != 0),
        10 => cf_if(s & 1 != 0) | zf_sf_pf(d),
        11 => cf_if(s != 0) | of_if(s != 0) | zf_sf_pf(d),
        12 => cf_if(s != 0) | zf_sf_pf(d),
        13 => cf_if(s == 0) | zf_sf_pf(d),
        14 => cf_if(s == 0) | if d == 0 { fl::ZF } else { 0 },
        15 | 16 => {
            // The previous operation's SF ZF AF PF, this rotate's CF and OF.
            let before = compute(cc_op >> 8, src, src2, 0, rflags);
            let top = d & sign != 0;
            let (cf, of) = if kind == 15 {
                (d & 1 != 0, top ^ (d & 1 != 0))
            } else {
                (top, top ^ (d & (sign >> 1) != 0))
            };
            (before & (fl::SF | fl::ZF | fl::AF | fl::PF)) | cf_if(cf) | of_if(of)
        }
        _ => rflags & fl::ARITH,
    }
}

/// The full RFLAGS value from the globals.
pub fn read_rflags(g: &[u64]) -> u64 {
    let r = g[G_RFLAGS as usize];
    let a = compute(
        g[G_CC_OP as usize],
        g[G_CC_DST as usize],
        g[G_CC_SRC as usize],
        g[G_CC_SRC2 as usize],
        r,
    );
    (r & !fl::ARITH) | a | fl::FIXED1
}

/// Helper: returns the arithmetic flags.
///
/// # Safety
/// Called by generated code with a valid `env`.
pub unsafe extern "C" fn helper_flags(
    env: *mut jit::Env,
    _a: u64,
    _b: u64,
    _c: u64,
    _d: u64,
) -> u64 {
    // SAFETY: per the helper contract, env is valid for the call.
    let g = unsafe { &(*env).g };
    compute(
        g[G_CC_OP as usize],
        g[G_CC_DST as usize],
        g[G_CC_SRC as usize],
        g[G_CC_SRC2 as usize],
        g[G_RFLAGS as usize],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rotate's lazy state keeps the previous operation's SF ZF AF PF and adds its own
    /// CF and OF (after `xor eax, eax`: ZF PF; after `sub al, 1` from 0: CF SF AF PF).
    #[test]
    fn rotate_flags_over_the_previous_operation() {
        let logic = cc_op(CcKind::Logic, 4);
        let rol = |prev: u64, bytes| prev << 8 | cc_op(CcKind::Rol, bytes);
        let ror = |prev: u64, bytes| prev << 8 | cc_op(CcKind::Ror, bytes);
        let zp = fl::ZF | fl::PF;
        assert_eq!(compute(rol(logic, 4), 0x8000_0001, 0, 0, 0), zp | fl::CF);
        assert_eq!(compute(rol(logic, 4), 0x8000_0000, 0, 0, 0), zp | fl::OF);
        assert_eq!(compute(ror(logic, 4), 0xc000_0000, 0, 0, 0), zp | fl::CF);
        assert_eq!(compute(ror(logic, 4), 0x8000_0000, 0, 0, 0), zp | fl::CF | fl::OF);
        assert_eq!(compute(ror(logic, 4), 0x4000_0000, 0, 0, 0), zp | fl::OF);
        // The rotate's own size: an 8-bit ROL of 0x80 sets OF, not CF.
        let sub8 = cc_op(CcKind::Sub, 1);
        let before = fl::CF | fl::SF | fl::AF | fl::PF;
        assert_eq!(compute(sub8, 0xff, 1, 0, 0), before);
        assert_eq!(
            compute(rol(sub8, 1), 0x180, 0xff, 1, 0),
            fl::SF | fl::AF | fl::PF | fl::OF
        );
        // After flags held in RFLAGS.
        let ef = cc_op(CcKind::Eflags, 1);
        let r = fl::ZF | fl::OF | fl::CF;
        assert_eq!(compute(rol(ef, 8), 2, 0, 0, r), fl::ZF);
    }

    #[test]
    fn add_sub_flags() {
        // 0x7f + 1 (8-bit): OF, SF, AF
        let f = compute(cc_op(CcKind::Add, 1), 0x80, 1, 0, 0);
        assert_eq!(f, fl::OF | fl::SF | fl::AF);
        // 0 - 1 (32-bit): CF SF AF PF
        let f = compute(cc_op(CcKind::Sub, 4), 0xffff_ffff, 1, 0, 0);
        assert_eq!(f, fl::CF | fl::SF | fl::AF | fl::PF);
        // sbb 0 - 0 - 1 (64-bit) = -1 with borrow
        let f = compute(cc_op(CcKind::Sbb, 8), u64::MAX, 0, 1, 0);
        assert_eq!(f & fl::CF, fl::CF);
        // adc 0xff + 0 + 1 (8-bit) = 0 carry
        let f = compute(cc_op(CcKind::Adc, 1), 0, 0, 1, 0);
        assert_eq!(f & (fl::CF | fl::ZF), fl::CF | fl::ZF);
        // inc 0x7fffffff keeps CF
        let f = compute(cc_op(CcKind::Inc, 4), 0x8000_0000, 1, 0, 0);
        assert_eq!(f, fl::CF | fl::OF | fl::SF | fl::AF | fl::PF);
    }
}
