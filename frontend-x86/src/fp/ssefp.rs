//! SSE/SSE2/SSE3/SSE4.1 floating-point operations (packed and scalar single/double),
//! over [`soft`](super::soft): arithmetic, comparisons, conversions, rounding, horizontal
//! and dot-product forms. Same calling convention as [`super::simd`].

use super::simd::{dwords, from_dwords, Cx, V};
use super::soft::{self, Cmp, Ctx, Rc};

type F32Bin = fn(&mut Ctx, u32, u32) -> u32;
type F64Bin = fn(&mut Ctx, u64, u64) -> u64;

/// Operation kinds with a host fast path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fast {
    Add,
    Sub,
    Mul,
    Div,
    /// No fast path (min/max: x86's operand-selection rules are cheap in soft-float).
    None,
}

/// The host fast path for one lane, valid only when `Cx::fast` (round to nearest, no
/// FTZ/DAZ, every exception masked and PE already set, so no flag can change unless the
/// operation is special). Returns None for every case where a flag could be raised or
/// x86 and IEEE hosts may differ: NaN/infinite/denormal operands, division by zero,
/// overflow, results that are denormal or underflowed to zero. What remains is a finite
/// normal result, which IEEE 754 defines bit for bit on every host (x86-64, aarch64 and
/// riscv64 all round to nearest-even by default and have no flush-to-zero in Rust).
macro_rules! fast_lane {
    ($name:ident, $t:ty, $f:ty, $ebits:expr, $mbits:expr) => {
        #[inline]
        fn $name(op: Fast, a: $t, b: $t) -> Option<$t> {
            const EMAX: $t = (1 << $ebits) - 1;
            let (ea, eb) = (a >> $mbits & EMAX, b >> $mbits & EMAX);
            let (za, zb) = (a << 1 == 0, b << 1 == 0);
            if ea == EMAX || eb == EMAX || (ea == 0 && !za) || (eb == 0 && !zb) {
                return None;
            }
            let (x, y) = (<$f>::from_bits(a), <$f>::from_bits(b));
            let r = match op {
                Fast::Add => x + y,
                Fast::Sub => x - y,
                Fast::Mul => x * y,
                Fast::Div if !zb => x / y,
                _ => return None,
            };
            let rb = r.to_bits();
            let er = rb >> $mbits & EMAX;
            if er == EMAX {
                return None;
            }
            if er == 0 && (rb << 1 != 0 || (matches!(op, Fast::Mul | Fast::Div) && !za && !zb)) {
                return None;
            }
            Some(rb)
        }
    };
}
fast_lane!(fast32, u32, f32, 8, 23);
fast_lane!(fast64, u64, f64, 11, 52);

#[inline]
fn lane32(c: &mut Cx, op: Fast, f: F32Bin, a: u32, b: u32) -> u32 {
    if c.fast {
        if let Some(r) = fast32(op, a, b) {
            return r;
        }
    }
    f(&mut c.fp, a, b)
}
#[inline]
fn lane64(c: &mut Cx, op: Fast, f: F64Bin, a: u64, b: u64) -> u64 {
    if c.fast {
        if let Some(r) = fast64(op, a, b) {
            return r;
        }
    }
    f(&mut c.fp, a, b)
}

fn ps(c: &mut Cx, d: &mut V, s: V, op: Fast, f: F32Bin) {
    let (x, y) = (dwords(*d), dwords(s));
    *d = from_dwords(std::array::from_fn(|i| lane32(c, op, f, x[i], y[i])));
}
fn ss(c: &mut Cx, d: &mut V, s: V, op: Fast, f: F32Bin) {
    let r = lane32(c, op, f, d[0] as u32, s[0] as u32);
    d[0] = d[0] & !0xffff_ffff | r as u64;
}
fn pd(c: &mut Cx, d: &mut V, s: V, op: Fast, f: F64Bin) {
    *d = [lane64(c, op, f, d[0], s[0]), lane64(c, op, f, d[1], s[1])];
}
fn sd(c: &mut Cx, d: &mut V, s: V, op: Fast, f: F64Bin) {
    d[0] = lane64(c, op, f, d[0], s[0]);
}

macro_rules! arith4 {
    ($($ps:ident $ss:ident $pd:ident $sd:ident => $op:ident, $f32:path, $f64:path;)*) => {$(
        pub fn $ps(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 { ps(c, d, s, Fast::$op, $f32); 0 }
        pub fn $ss(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 { ss(c, d, s, Fast::$op, $f32); 0 }
        pub fn $pd(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 { pd(c, d, s, Fast::$op, $f64); 0 }
        pub fn $sd(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 { sd(c, d, s, Fast::$op, $f64); 0 }
    )*};
}
arith4! {
    addps addss addpd addsd => Add, soft::f32_add, soft::f64_add;
    subps subss subpd subsd => Sub, soft::f32_sub, soft::f64_sub;
    mulps mulss mulpd mulsd => Mul, soft::f32_mul, soft::f64_mul;
    divps divss divpd divsd => Div, soft::f32_div, soft::f64_div;
    minps minss minpd minsd => None, soft::f32_min, soft::f64_min;
    maxps maxss maxpd maxsd => None, soft::f32_max, soft::f64_max;
}

pub fn sqrtps(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    ps(c, d, s, Fast::None, |c, _, b| soft::f32_sqrt(c, b));
    0
}
pub fn sqrtss(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    ss(c, d, s, Fast::None, |c, _, b| soft::f32_sqrt(c, b));
    0
}
pub fn sqrtpd(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    pd(c, d, s, Fast::None, |c, _, b| soft::f64_sqrt(c, b));
    0
}
pub fn sqrtsd(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    sd(c, d, s, Fast::None, |c, _, b| soft::f64_sqrt(c, b));
    0
}

/// RCPPS/RSQRTPS approximations: computed exactly rounded (within the architectural
/// 1.5 * 2^-12 relative error bound, but not Intel's table values), denormal inputs
/// treated as zero and denormal results flushed; no exception flags.
fn approx(x: u32, rsqrt: bool) -> u32 {
    let mut c = Ctx::sse(0x1f80 | 1 << 15 | 1 << 6);
    let one = 0x3f80_0000;
    if rsqrt {
        let r = soft::f32_sqrt(&mut c, x);
        soft::f32_div(&mut c, one, r)
    } else {
        soft::f32_div(&mut c, one, x)
    }
}
pub fn rcpps(_: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let y = dwords(s);
    *d = from_dwords(std::array::from_fn(|i| approx(y[i], false)));
    0
}
pub fn rcpss(_: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    d[0] = d[0] & !0xffff_ffff | approx(s[0] as u32, false) as u64;
    0
}
pub fn rsqrtps(_: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let y = dwords(s);
    *d = from_dwords(std::array::from_fn(|i| approx(y[i], true)));
    0
}
pub fn rsqrtss(_: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    d[0] = d[0] & !0xffff_ffff | approx(s[0] as u32, true) as u64;
    0
}

// ---- comparisons ----

fn pred(r: Cmp, imm: u8) -> bool {
    match imm & 7 {
        0 => r == Cmp::Eq,
        1 => r == Cmp::Lt,
        2 => matches!(r, Cmp::Lt | Cmp::Eq),
        3 => r == Cmp::Unordered,
        4 => r != Cmp::Eq,
        5 => r != Cmp::Lt,
        6 => !matches!(r, Cmp::Lt | Cmp::Eq),
        _ => r != Cmp::Unordered,
    }
}
fn signaling(imm: u8) -> bool {
    matches!(imm & 7, 1 | 2 | 5 | 6)
}
fn cmp32(c: &mut Ctx, a: u32, b: u32, imm: u8) -> u32 {
    if pred(soft::f32_cmp(c, a, b, signaling(imm)), imm) {
        u32::MAX
    } else {
        0
    }
}
fn cmp64(c: &mut Ctx, a: u64, b: u64, imm: u8) -> u64 {
    if pred(soft::f64_cmp(c, a, b, signaling(imm)), imm) {
        u64::MAX
    } else {
        0
    }
}
pub fn cmpps(c: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let (x, y) = (dwords(*d), dwords(s));
    *d = from_dwords(std::array::from_fn(|i| cmp32(&mut c.fp, x[i], y[i], imm)));
    0
}
pub fn cmpss(c: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let r = cmp32(&mut c.fp, d[0] as u32, s[0] as u32, imm);
    d[0] = d[0] & !0xffff_ffff | r as u64;
    0
}
pub fn cmppd(c: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    *d = [
        cmp64(&mut c.fp, d[0], s[0], imm),
        cmp64(&mut c.fp, d[1], s[1], imm),
    ];
    0
}
pub fn cmpsd(c: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    d[0] = cmp64(&mut c.fp, d[0], s[0], imm);
    0
}

fn comi_flags(r: Cmp) -> u64 {
    use crate::state::fl;
    match r {
        Cmp::Gt => 0,
        Cmp::Lt => fl::CF,
        Cmp::Eq => fl::ZF,
        Cmp::Unordered => fl::ZF | fl::PF | fl::CF,
    }
}
pub fn comiss(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    c.out_flags = Some(comi_flags(soft::f32_cmp(
        &mut c.fp,
        d[0] as u32,
        s[0] as u32,
        true,
    )));
    0
}
pub fn ucomiss(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    c.out_flags = Some(comi_flags(soft::f32_cmp(
        &mut c.fp,
        d[0] as u32,
        s[0] as u32,
        false,
    )));
    0
}
pub fn comisd(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    c.out_flags = Some(comi_flags(soft::f64_cmp(&mut c.fp, d[0], s[0], true)));
    0
}
pub fn ucomisd(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    c.out_flags = Some(comi_flags(soft::f64_cmp(&mut c.fp, d[0], s[0], false)));
    0
}

// ---- conversions ----

pub fn cvtps2pd(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    *d = [
        soft::f32_to_f64(&mut c.fp, s[0] as u32),
        soft::f32_to_f64(&mut c.fp, (s[0] >> 32) as u32),
    ];
    0
}
pub fn cvtpd2ps(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let (a, b) = (
        soft::f64_to_f32(&mut c.fp, s[0]),
        soft::f64_to_f32(&mut c.fp, s[1]),
    );
    *d = [a as u64 | (b as u64) << 32, 0];
    0
}
pub fn cvtss2sd(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    d[0] = soft::f32_to_f64(&mut c.fp, s[0] as u32);
    0
}
pub fn cvtsd2ss(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let r = soft::f64_to_f32(&mut c.fp, s[0]);
    d[0] = d[0] & !0xffff_ffff | r as u64;
    0
}
pub fn cvtdq2ps(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let y = dwords(s);
    *d = from_dwords(std::array::from_fn(|i| soft::i32_to_f32(&mut c.fp, y[i])));
    0
}
fn ps2dq(c: &mut Cx, d: &mut V, s: V, trunc: bool, lanes: usize) {
    let y = dwords(s);
    let mut r = [0u32; 4];
    for i in 0..lanes {
        r[i] = soft::f32_to_i32(&mut c.fp, y[i], trunc);
    }
    *d = from_dwords(r);
}
pub fn cvtps2dq(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    ps2dq(c, d, s, false, 4);
    0
}
pub fn cvttps2dq(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    ps2dq(c, d, s, true, 4);
    0
}
pub fn cvtdq2pd(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    *d = [
        soft::i32_to_f64(&mut c.fp, s[0] as u32),
        soft::i32_to_f64(&mut c.fp, (s[0] >> 32) as u32),
    ];
    0
}
fn pd2dq(c: &mut Cx, s: V, trunc: bool) -> u64 {
    let a = soft::f64_to_i32(&mut c.fp, s[0], trunc);
    let b = soft::f64_to_i32(&mut c.fp, s[1], trunc);
    a as u64 | (b as u64) << 32
}
pub fn cvtpd2dq(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    *d = [pd2dq(c, s, false), 0];
    0
}
pub fn cvttpd2dq(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    *d = [pd2dq(c, s, true), 0];
    0
}
/// CVTPI2PS: two integers into the low lanes; the high quadword is kept.
pub fn cvtpi2ps(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let (a, b) = (
        soft::i32_to_f32(&mut c.fp, s[0] as u32),
        soft::i32_to_f32(&mut c.fp, (s[0] >> 32) as u32),
    );
    d[0] = a as u64 | (b as u64) << 32;
    0
}
pub fn cvtps2pi(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let mut t = [0, 0];
    ps2dq(c, &mut t, s, false, 2);
    d[0] = t[0];
    0
}
pub fn cvttps2pi(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let mut t = [0, 0];
    ps2dq(c, &mut t, s, true, 2);
    d[0] = t[0];
    0
}
pub fn cvtpd2pi(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    d[0] = pd2dq(c, s, false);
    0
}
pub fn cvttpd2pi(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    d[0] = pd2dq(c, s, true);
    0
}
/// CVTSI2SS/SD: the integer is in the source's low quadword; `imm` is its width (4 or 8).
pub fn cvtsi2ss(c: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let r = if imm == 8 {
        soft::i64_to_f32(&mut c.fp, s[0])
    } else {
        soft::i32_to_f32(&mut c.fp, s[0] as u32)
    };
    d[0] = d[0] & !0xffff_ffff | r as u64;
    0
}
pub fn cvtsi2sd(c: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    d[0] = if imm == 8 {
        soft::i64_to_f64(&mut c.fp, s[0])
    } else {
        soft::i32_to_f64(&mut c.fp, s[0] as u32)
    };
    0
}
/// CVT(T)SS2SI/SD2SI: `imm` is the destination width (4 or 8).
pub fn cvtss2si(c: &mut Cx, _: &mut V, s: V, imm: u8) -> u64 {
    if imm == 8 {
        soft::f32_to_i64(&mut c.fp, s[0] as u32, false)
    } else {
        soft::f32_to_i32(&mut c.fp, s[0] as u32, false) as u64
    }
}
pub fn cvttss2si(c: &mut Cx, _: &mut V, s: V, imm: u8) -> u64 {
    if imm == 8 {
        soft::f32_to_i64(&mut c.fp, s[0] as u32, true)
    } else {
        soft::f32_to_i32(&mut c.fp, s[0] as u32, true) as u64
    }
}
pub fn cvtsd2si(c: &mut Cx, _: &mut V, s: V, imm: u8) -> u64 {
    if imm == 8 {
        soft::f64_to_i64(&mut c.fp, s[0], false)
    } else {
        soft::f64_to_i32(&mut c.fp, s[0], false) as u64
    }
}
pub fn cvttsd2si(c: &mut Cx, _: &mut V, s: V, imm: u8) -> u64 {
    if imm == 8 {
        soft::f64_to_i64(&mut c.fp, s[0], true)
    } else {
        soft::f64_to_i32(&mut c.fp, s[0], true) as u64
    }
}

// ---- SSE3 horizontal and alternating ----

pub fn haddps(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let (x, y) = (dwords(*d), dwords(s));
    let f = &mut c.fp;
    *d = from_dwords([
        soft::f32_add(f, x[0], x[1]),
        soft::f32_add(f, x[2], x[3]),
        soft::f32_add(f, y[0], y[1]),
        soft::f32_add(f, y[2], y[3]),
    ]);
    0
}
pub fn hsubps(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let (x, y) = (dwords(*d), dwords(s));
    let f = &mut c.fp;
    *d = from_dwords([
        soft::f32_sub(f, x[0], x[1]),
        soft::f32_sub(f, x[2], x[3]),
        soft::f32_sub(f, y[0], y[1]),
        soft::f32_sub(f, y[2], y[3]),
    ]);
    0
}
pub fn haddpd(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    *d = [
        soft::f64_add(&mut c.fp, d[0], d[1]),
        soft::f64_add(&mut c.fp, s[0], s[1]),
    ];
    0
}
pub fn hsubpd(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    *d = [
        soft::f64_sub(&mut c.fp, d[0], d[1]),
        soft::f64_sub(&mut c.fp, s[0], s[1]),
    ];
    0
}
pub fn addsubps(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let (x, y) = (dwords(*d), dwords(s));
    let f = &mut c.fp;
    *d = from_dwords([
        soft::f32_sub(f, x[0], y[0]),
        soft::f32_add(f, x[1], y[1]),
        soft::f32_sub(f, x[2], y[2]),
        soft::f32_add(f, x[3], y[3]),
    ]);
    0
}
pub fn addsubpd(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    *d = [
        soft::f64_sub(&mut c.fp, d[0], s[0]),
        soft::f64_add(&mut c.fp, d[1], s[1]),
    ];
    0
}

// ---- SSE4.1 rounding and dot products ----

fn round_mode(c: &Cx, imm: u8) -> (Rc, bool) {
    let rc = if imm & 4 != 0 {
        c.fp.rc
    } else {
        Rc::from_bits(imm as u32)
    };
    (rc, imm & 8 == 0)
}
pub fn roundps(c: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let (rc, pe) = round_mode(c, imm);
    let y = dwords(s);
    *d = from_dwords(std::array::from_fn(|i| {
        soft::f32_round(&mut c.fp, y[i], rc, pe)
    }));
    0
}
pub fn roundss(c: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let (rc, pe) = round_mode(c, imm);
    let r = soft::f32_round(&mut c.fp, s[0] as u32, rc, pe);
    d[0] = d[0] & !0xffff_ffff | r as u64;
    0
}
pub fn roundpd(c: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let (rc, pe) = round_mode(c, imm);
    *d = [
        soft::f64_round(&mut c.fp, s[0], rc, pe),
        soft::f64_round(&mut c.fp, s[1], rc, pe),
    ];
    0
}
pub fn roundsd(c: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let (rc, pe) = round_mode(c, imm);
    d[0] = soft::f64_round(&mut c.fp, s[0], rc, pe);
    0
}
/// One stage of DPPS/DPPD (the products, then each level of sums): its exception flags
/// merged by the SDM's rule (an unmasked IE/DE/ZE suppresses the stage's OE/UE/PE) into
/// the instruction's. Returns the stage's value and whether an unmasked exception ends
/// the instruction there (the flags of the earlier stages stay: a masked underflow in a
/// product and the DE its denormal then raises in the sum both show).
fn stage<T>(c: &mut Cx, op: impl FnOnce(&mut Ctx) -> T) -> (T, bool) {
    let mut m = c.fp;
    m.flags = 0;
    let r = op(&mut m);
    let pre = m.flags & (soft::exc::IE | soft::exc::DE | soft::exc::ZE);
    let f = if pre & !c.masks != 0 { pre } else { m.flags };
    c.fp.flags |= f;
    c.staged = true;
    (r, f & !c.masks & 0x3f != 0)
}

pub fn dpps(c: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let (x, y) = (dwords(*d), dwords(s));
    let (t, stop) = stage(c, |f| -> [u32; 4] {
        std::array::from_fn(|i| {
            if imm >> (4 + i) & 1 != 0 {
                soft::f32_mul(f, x[i], y[i])
            } else {
                0
            }
        })
    });
    if stop {
        return 0;
    }
    let ((a, b), stop) = stage(c, |f| {
        (soft::f32_add(f, t[0], t[1]), soft::f32_add(f, t[2], t[3]))
    });
    if stop {
        return 0;
    }
    let (sum, _) = stage(c, |f| soft::f32_add(f, a, b));
    *d = from_dwords(std::array::from_fn(
        |i| if imm >> i & 1 != 0 { sum } else { 0 },
    ));
    0
}
pub fn dppd(c: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let (x, y) = (*d, s);
    let (t, stop) = stage(c, |f| -> [u64; 2] {
        std::array::from_fn(|i| {
            if imm >> (4 + i) & 1 != 0 {
                soft::f64_mul(f, x[i], y[i])
            } else {
                0
            }
        })
    });
    if stop {
        return 0;
    }
    let (sum, _) = stage(c, |f| soft::f64_add(f, t[0], t[1]));
    *d = std::array::from_fn(|i| if imm >> i & 1 != 0 { sum } else { 0 });
    0
}
