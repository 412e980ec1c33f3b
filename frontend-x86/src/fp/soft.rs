//! Soft-float with x86 semantics: SSE scalar single/double operations and the x87 80-bit
//! operations, bit-identical (results and exception flags) to the hardware with all
//! exceptions masked, on every host. Only integer arithmetic is used.
//!
//! # Representation
//!
//! Every operand is first unpacked into [`Un`]: a class, a sign, and for finite non-zero
//! values a significand normalised to bit 63 with an unbiased exponent
//! (`value = sig * 2^(exp - 63)`). Denormal operands are normalised on unpacking and
//! remember that they were denormal (for DE and DAZ). NaN payloads are kept left-aligned
//! in the same 64-bit layout as an x87 significand (integer bit at 63, quiet bit at 62),
//! so converting a NaN between formats is a shift of the payload.
//!
//! Operations compute an exact (or exact-plus-sticky-bit) intermediate in a `u128` and
//! hand it to one rounding routine, [`round_pack`], parameterised by the target format
//! ([`Fmt`]: significand bits, exponent range). x87 precision control is a format with
//! 24/53/64 significand bits and the 15-bit exponent range.
//!
//! # NaN rules
//!
//! * SSE two-operand operations: if the first operand is a NaN it is the result, else the
//!   second; the result is quieted; IE if either is a signalling NaN.
//! * x87: an unsupported encoding (pseudo-NaN, pseudo-infinity, unnormal) in any operand
//!   gives IE and the default NaN. Otherwise with two NaNs: a quiet one beats a
//!   signalling one; two of the same kind give the one with the larger significand, and
//!   on equal significands the positive one. The result is quieted; IE on any SNaN.
//! * Invalid operations give the default NaN (negative, quiet, zero payload) with IE.
//!
//! # Underflow and overflow
//!
//! x86 detects tininess *after* rounding (the result rounded to the destination precision
//! with an unbounded exponent is below the smallest normal), for SSE and for the x87
//! alike. With underflow masked, UE is raised only when the result is tiny and inexact;
//! with SSE FTZ a tiny result becomes a signed zero with UE and PE, exact or not.
//! Overflow gives OE and PE and an infinity or the largest finite value, by rounding
//! mode. x87 precision control rounds the significand to 24/53/64 bits and keeps the
//! 15-bit exponent range (denormals are rounded at the same fixed position as in a format
//! with that precision and the extended exponent range).
//!
//! # Denormal operands (DE, DAZ)
//!
//! DE is raised for a denormal (or x87 pseudo-denormal) operand of arithmetic,
//! comparisons, MIN/MAX, CVTSS2SD/CVTSD2SS and FLD m32/m64, except when the operation
//! has a NaN operand or raises IE or ZE itself (those take priority: `denormal / 0` is
//! ZE alone, `sqrt(-denormal)` IE alone). No DE from conversions to integers,
//! ROUNDSS/ROUNDSD, FST m32/m64, FIST/FISTTP. With DAZ, SSE denormal inputs are
//! zeros of the same sign everywhere (MIN/MAX then return that zero) and raise no DE.
//!
//! # Other behaviours matched to the hardware
//!
//! * FSCALE, FRNDINT, FPREM/FPREM1 and FXTRACT ignore precision control (64 bits); the
//!   reserved PC value 1 behaves as extended precision.
//! * FPREM/FPREM1 with an exponent difference `d >= 64` (exponents of the normalised
//!   operands) reduce partially: by a truncated multiple of `b * 2^k`,
//!   `k = 32 * floor((d - 32) / 32)`, so that `d - k` is between 32 and 63; C2 is set and
//!   the quotient bits read as zero. FPREM1 also truncates in that case.
//! * Integer conversions out of range raise IE alone (no PE) and give the integer
//!   indefinite.
//! * FXAM classes pseudo-denormals as denormals and unnormals, pseudo-NaNs and
//!   pseudo-infinities as unsupported.

/// Exception flag bits, in x86 MXCSR / x87 FSW order.
pub mod exc {
    /// Invalid operation.
    pub const IE: u8 = 1;
    /// Denormal operand.
    pub const DE: u8 = 2;
    /// Divide by zero.
    pub const ZE: u8 = 4;
    /// Overflow.
    pub const OE: u8 = 8;
    /// Underflow.
    pub const UE: u8 = 16;
    /// Precision (inexact).
    pub const PE: u8 = 32;
}
use exc::*;

pub mod trans;

/// Rounding control, in the x86 RC encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rc {
    Nearest = 0,
    Down = 1,
    Up = 2,
    Zero = 3,
}

impl Rc {
    /// From the low 2 bits of `b`.
    pub fn from_bits(b: u32) -> Rc {
        match b & 3 {
            0 => Rc::Nearest,
            1 => Rc::Down,
            2 => Rc::Up,
            _ => Rc::Zero,
        }
    }
}

/// x87 precision control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prec {
    Single,
    Double,
    Extended,
}

impl Prec {
    /// From the 2-bit PC field: 0 single, 2 double, 3 (and the reserved 1) extended.
    pub fn from_pc(pc: u32) -> Prec {
        match pc & 3 {
            0 => Prec::Single,
            2 => Prec::Double,
            _ => Prec::Extended,
        }
    }

    fn bits(self) -> u32 {
        match self {
            Prec::Single => 24,
            Prec::Double => 53,
            Prec::Extended => 64,
        }
    }
}

/// Per-operation context. `flags` accumulates (ORs) the exception flags raised.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    pub rc: Rc,
    pub prec: Prec,
    pub ftz: bool,
    pub daz: bool,
    /// Underflow unmasked: every tiny result raises UE, exact or not, and FTZ does not
    /// apply (SDM Vol. 1 §4.9.1.5, §11.5.2.5).
    pub tiny_ue: bool,
    /// Overflow unmasked: OE, and PE only if the result rounded to the precision (with an
    /// unbounded exponent) is inexact.
    pub oe_unmasked: bool,
    /// x87: with overflow or underflow unmasked, an extended-format result out of range
    /// is delivered with its exponent reduced (overflow) or increased (underflow) by
    /// 24576, rounded to the precision as a normal number (SDM Vol. 1 §8.5.4, §8.5.5).
    /// Without it (SSE, x87 stores to memory) nothing is delivered, but the flags are
    /// the same: an unmasked-underflow result is rounded as a normal number too, so PE
    /// says whether that rounding was exact.
    pub bias_adjust: bool,
    pub flags: u8,
    /// Set when a rounding increased the magnitude (the x87's C1).
    pub up: bool,
}

impl Ctx {
    /// From an MXCSR value: RC bits 13..14, FTZ bit 15, DAZ bit 6.
    pub fn sse(mxcsr: u32) -> Ctx {
        Ctx {
            rc: Rc::from_bits(mxcsr >> 13),
            prec: Prec::Extended,
            ftz: mxcsr & (1 << 15) != 0,
            daz: mxcsr & (1 << 6) != 0,
            tiny_ue: mxcsr & (1 << 11) == 0,
            oe_unmasked: mxcsr & (1 << 10) == 0,
            bias_adjust: false,
            flags: 0,
            up: false,
        }
    }

    /// From an x87 control word: RC bits 10..11, PC bits 8..9.
    pub fn x87(fcw: u16) -> Ctx {
        Ctx {
            rc: Rc::from_bits(fcw as u32 >> 10),
            prec: Prec::from_pc(fcw as u32 >> 8),
            ftz: false,
            daz: false,
            tiny_ue: fcw & 0x10 == 0,
            oe_unmasked: fcw & 0x08 == 0,
            bias_adjust: true,
            flags: 0,
            up: false,
        }
    }
}

/// An x87 register value: 64-bit significand with explicit integer bit, sign and 15-bit
/// biased exponent in `se`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct F80 {
    pub signif: u64,
    pub se: u16,
}

/// Result of a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Lt,
    Eq,
    Gt,
    Unordered,
}

/// The x87 default NaN (real indefinite).
pub const F80_DEFAULT_NAN: F80 = F80 {
    signif: 0xC000_0000_0000_0000,
    se: 0xFFFF,
};
/// The SSE single-precision default NaN.
pub const F32_DEFAULT_NAN: u32 = 0xFFC0_0000;
/// The SSE double-precision default NaN.
pub const F64_DEFAULT_NAN: u64 = 0xFFF8_0000_0000_0000;

// ---------------------------------------------------------------------------------------
// Formats and the unpacked representation.

/// Tininess is detected after rounding, by SSE and by the x87 (determined by testing
/// against the hardware: before-rounding detection gives mismatches in MULSS, CVTSD2SS,
/// FMUL, FST m32, ...).
const TINY_AFTER_ROUNDING: bool = true;

/// A rounding target: `p` significand bits (with the integer bit), normal exponents
/// `emin..=emax`, exponent field bias.
#[derive(Clone, Copy)]
struct Fmt {
    p: u32,
    emin: i32,
    emax: i32,
    bias: i32,
}

const F32: Fmt = Fmt {
    p: 24,
    emin: -126,
    emax: 127,
    bias: 127,
};
const F64: Fmt = Fmt {
    p: 53,
    emin: -1022,
    emax: 1023,
    bias: 1023,
};

/// The x87 register format with `p` significand bits (precision control).
const fn fmt80(p: u32) -> Fmt {
    Fmt {
        p,
        emin: -16382,
        emax: 16383,
        bias: 16383,
    }
}

const QUIET: u64 = 1 << 62;
const INT_BIT: u64 = 1 << 63;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Zero,
    /// Finite non-zero (normal or denormal).
    Fin,
    Inf,
    QNan,
    SNan,
    /// x87 unsupported encoding (pseudo-NaN, pseudo-infinity, unnormal).
    Unsup,
}

/// An unpacked operand.
#[derive(Clone, Copy, Debug)]
struct Un {
    kind: Kind,
    sign: bool,
    /// Unbiased exponent of bit 63 of `sig` (finite values).
    exp: i32,
    /// Finite: significand normalised to bit 63. NaN: payload with the integer bit at 63
    /// and the quiet bit at 62.
    sig: u64,
    /// The operand was encoded as a denormal (or x87 pseudo-denormal).
    denorm: bool,
}

impl Un {
    const fn zero(sign: bool) -> Un {
        Un {
            kind: Kind::Zero,
            sign,
            exp: 0,
            sig: 0,
            denorm: false,
        }
    }

    fn is_nan(&self) -> bool {
        matches!(self.kind, Kind::QNan | Kind::SNan)
    }
}

/// Unpack an IEEE binary format with `fb` fraction bits and `eb` exponent bits.
#[inline]
fn unpack_ieee(bits: u64, eb: u32, fb: u32) -> Un {
    let sign = bits >> (eb + fb) & 1 != 0;
    let emax_field = (1u64 << eb) - 1;
    let bias = (emax_field >> 1) as i32;
    let e = (bits >> fb) & emax_field;
    let f = bits & ((1u64 << fb) - 1);
    if e == emax_field {
        if f == 0 {
            return Un {
                kind: Kind::Inf,
                sign,
                exp: 0,
                sig: INT_BIT,
                denorm: false,
            };
        }
        let sig = INT_BIT | f << (63 - fb);
        let kind = if sig & QUIET != 0 {
            Kind::QNan
        } else {
            Kind::SNan
        };
        return Un {
            kind,
            sign,
            exp: 0,
            sig,
            denorm: false,
        };
    }
    if e == 0 {
        if f == 0 {
            return Un::zero(sign);
        }
        let lz = f.leading_zeros();
        // value = f * 2^(1 - bias - fb) = (f << lz) * 2^(exp - 63)
        let exp = 1 - bias - fb as i32 + 63 - lz as i32;
        return Un {
            kind: Kind::Fin,
            sign,
            exp,
            sig: f << lz,
            denorm: true,
        };
    }
    Un {
        kind: Kind::Fin,
        sign,
        exp: e as i32 - bias,
        sig: INT_BIT | f << (63 - fb),
        denorm: false,
    }
}

#[inline]
fn unpack32(a: u32) -> Un {
    unpack_ieee(a as u64, 8, 23)
}

#[inline]
fn unpack64(a: u64) -> Un {
    unpack_ieee(a, 11, 52)
}

/// Unpack an x87 register value.
#[inline]
fn unpack80(a: F80) -> Un {
    let sign = a.se & 0x8000 != 0;
    let e = (a.se & 0x7fff) as i32;
    let m = a.signif;
    if e == 0x7fff {
        let kind = if m & INT_BIT == 0 {
            Kind::Unsup
        } else if m << 1 == 0 {
            Kind::Inf
        } else if m & QUIET != 0 {
            Kind::QNan
        } else {
            Kind::SNan
        };
        return Un {
            kind,
            sign,
            exp: 0,
            sig: m,
            denorm: false,
        };
    }
    if e == 0 {
        if m == 0 {
            return Un::zero(sign);
        }
        // Denormal or pseudo-denormal: value = m * 2^(-16382 - 63).
        let lz = m.leading_zeros();
        return Un {
            kind: Kind::Fin,
            sign,
            exp: -16382 - lz as i32,
            sig: m << lz,
            denorm: true,
        };
    }
    if m & INT_BIT == 0 {
        return Un {
            kind: Kind::Unsup,
            sign,
            exp: 0,
            sig: m,
            denorm: false,
        };
    }
    Un {
        kind: Kind::Fin,
        sign,
        exp: e - 16383,
        sig: m,
        denorm: false,
    }
}

/// A rounded result before packing into a format.
#[derive(Clone, Copy, Debug)]
enum Res {
    /// `field` is the biased exponent field (0 for zeros and denormals, all ones for
    /// infinities), `m` the significand with the integer bit at `p - 1` (set for normals
    /// and infinities).
    Num { sign: bool, field: u32, m: u64 },
    /// A NaN with its payload in the 64-bit x87 layout.
    Nan { sign: bool, sig: u64 },
}

const DEFAULT_NAN: Res = Res::Nan {
    sign: true,
    sig: 0xC000_0000_0000_0000,
};

#[inline]
fn zero(sign: bool) -> Res {
    Res::Num {
        sign,
        field: 0,
        m: 0,
    }
}

#[inline]
fn inf(f: Fmt, sign: bool) -> Res {
    Res::Num {
        sign,
        field: (f.emax + f.bias + 1) as u32,
        m: 1 << (f.p - 1),
    }
}

#[inline]
fn invalid(c: &mut Ctx) -> Res {
    c.flags |= IE;
    DEFAULT_NAN
}

/// The quieted NaN `u`.
#[inline]
fn qnan(u: Un) -> Res {
    Res::Nan {
        sign: u.sign,
        sig: u.sig | QUIET,
    }
}

#[inline]
fn pack_ieee(r: Res, eb: u32, fb: u32) -> u64 {
    match r {
        Res::Num { sign, field, m } => {
            (sign as u64) << (eb + fb) | (field as u64) << fb | (m & ((1u64 << fb) - 1))
        }
        Res::Nan { sign, sig } => {
            (sign as u64) << (eb + fb) | ((1u64 << eb) - 1) << fb | (sig << 1) >> (64 - fb)
        }
    }
}

#[inline]
fn pack32(r: Res) -> u32 {
    pack_ieee(r, 8, 23) as u32
}

#[inline]
fn pack64(r: Res) -> u64 {
    pack_ieee(r, 11, 52)
}

/// Pack into the x87 format; `p` is the significand width `r` was rounded to.
#[inline]
fn pack80(r: Res, p: u32) -> F80 {
    match r {
        Res::Num { sign, field, m } => F80 {
            signif: m << (64 - p),
            se: (sign as u16) << 15 | field as u16,
        },
        Res::Nan { sign, sig } => F80 {
            signif: sig,
            se: (sign as u16) << 15 | 0x7fff,
        },
    }
}

// ---------------------------------------------------------------------------------------
// Rounding.

/// Shift right, ORing the bits shifted out into bit 0 (sticky).
#[inline]
fn shr_jam(x: u128, d: u32) -> u128 {
    if d == 0 {
        x
    } else if d >= 128 {
        (x != 0) as u128
    } else {
        x >> d | (x << (128 - d) != 0) as u128
    }
}

/// Whether to round the magnitude up, given the non-zero discarded bits `rem`, the value
/// `half` of the first discarded bit and whether the kept part is odd.
#[inline]
fn round_up(rc: Rc, sign: bool, rem: u128, half: u128, odd: bool) -> bool {
    match rc {
        Rc::Nearest => rem > half || (rem == half && odd),
        Rc::Zero => false,
        Rc::Up => !sign,
        Rc::Down => sign,
    }
}

/// Round `(-1)^sign * sig * 2^(e - 127)` (`sig` normalised: bit 127 set, so `e` is the
/// exponent of the leading bit) to the format `f` with the context's rounding mode,
/// raising PE, UE, OE (and flushing tiny results to zero when `ftz`). Sets `c.up` when
/// the rounding increased the magnitude.
///
/// Unmasked underflow (`c.tiny_ue`) and overflow (`c.oe_unmasked`): the flags are those
/// of the result rounded as a normal number (UE or OE, PE only if that is inexact). The
/// x87 (`c.bias_adjust`, extended format) delivers that result with its exponent moved
/// by 24576 into range (SDM Vol. 1 §8.5.4, §8.5.5); when even that is out of range it
/// delivers a zero (UE, PE) or an infinity (OE, PE). Elsewhere nothing is delivered (the
/// instruction faults); the value returned is then the masked response's, for callers
/// that use it as an intermediate (DPPS).
#[inline(always)]
fn round_pack(c: &mut Ctx, f: Fmt, ftz: bool, sign: bool, mut e: i32, mut sig: u128) -> Res {
    let p = f.p;
    let sh = 128 - p;
    let mask = (1u128 << sh) - 1;
    let half = 1u128 << (sh - 1);
    let mut tiny = false;
    // The x87's extended register format (the only one with this bias).
    let adjust = f.bias == 16383 && c.bias_adjust;
    if e < f.emin {
        tiny = true;
        if TINY_AFTER_ROUNDING && e == f.emin - 1 {
            // Rounded to p bits with an unbounded exponent, would the value reach 2^emin?
            let rem = sig & mask;
            if sig >> sh == (1u128 << p) - 1 && rem != 0 && round_up(c.rc, sign, rem, half, true) {
                tiny = false;
            }
        }
        if tiny && c.tiny_ue {
            let inexact = sig & mask != 0;
            if adjust && e + 24576 >= f.emin {
                // Delivered scaled by 2^24576, rounded below as a normal number.
                c.flags |= UE;
                e += 24576;
                tiny = false;
            } else if adjust {
                c.flags |= UE | PE;
                return zero(sign);
            } else {
                let mut m = *c;
                m.tiny_ue = false;
                m.flags = 0;
                let r = round_pack(&mut m, f, false, sign, e, sig);
                c.up |= m.up;
                c.flags |= UE | if inexact { PE } else { 0 };
                return r;
            }
        } else if tiny && ftz {
            c.flags |= UE | PE;
            return zero(sign);
        }
        if tiny {
            sig = shr_jam(sig, (f.emin - e) as u32);
            e = f.emin;
        }
    }
    let rem = sig & mask;
    let mut m = sig >> sh;
    if rem != 0 {
        c.flags |= PE;
        if tiny {
            c.flags |= UE;
        }
        if round_up(c.rc, sign, rem, half, m & 1 != 0) {
            c.up = true;
            m += 1;
            if m >> p != 0 {
                m >>= 1;
                e += 1;
            }
        }
    }
    if m >> (p - 1) == 0 {
        // Denormal (or zero after rounding).
        return Res::Num {
            sign,
            field: 0,
            m: m as u64,
        };
    }
    if e > f.emax && c.oe_unmasked {
        c.flags |= OE;
        if adjust && e - 24576 <= f.emax {
            return Res::Num {
                sign,
                field: (e - 24576 + f.bias) as u32,
                m: m as u64,
            };
        }
        if adjust {
            c.flags |= PE;
            c.up = true;
        }
        return inf(f, sign);
    }
    if e > f.emax {
        c.flags |= OE | PE;
        let to_inf = match c.rc {
            Rc::Nearest => true,
            Rc::Zero => false,
            Rc::Up => !sign,
            Rc::Down => sign,
        };
        c.up = to_inf;
        return if to_inf {
            inf(f, sign)
        } else {
            Res::Num {
                sign,
                field: (f.emax + f.bias) as u32,
                m: ((1u128 << p) - 1) as u64,
            }
        };
    }
    Res::Num {
        sign,
        field: (e + f.bias) as u32,
        m: m as u64,
    }
}

/// Round `(-1)^sign * sig * 2^e0` (`sig` non-zero, any position).
#[inline(always)]
fn norm_round(c: &mut Ctx, f: Fmt, ftz: bool, sign: bool, e0: i32, sig: u128) -> Res {
    let lz = sig.leading_zeros();
    round_pack(c, f, ftz, sign, e0 + 127 - lz as i32, sig << lz)
}

/// Round a zero, infinity or finite unpacked value to `f`.
#[inline]
fn round_un(c: &mut Ctx, f: Fmt, ftz: bool, u: Un) -> Res {
    match u.kind {
        Kind::Zero => zero(u.sign),
        Kind::Inf => inf(f, u.sign),
        _ => round_pack(c, f, ftz, u.sign, u.exp, (u.sig as u128) << 64),
    }
}

// ---------------------------------------------------------------------------------------
// Arithmetic on zero / finite / infinite operands.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

#[inline(always)]
fn arith(c: &mut Ctx, f: Fmt, ftz: bool, a: Un, b: Un, op: Op) -> Res {
    match op {
        Op::Add => add(c, f, ftz, a, b, b.sign),
        Op::Sub => add(c, f, ftz, a, b, !b.sign),
        Op::Mul => mul(c, f, ftz, a, b),
        Op::Div => div(c, f, ftz, a, b),
    }
}

/// `a + (-1)^bs * |b|`.
#[inline(always)]
fn add(c: &mut Ctx, f: Fmt, ftz: bool, a: Un, b: Un, bs: bool) -> Res {
    match (a.kind, b.kind) {
        (Kind::Fin, Kind::Fin) => {
            let (x, xs, y, ys) = if (a.exp, a.sig) >= (b.exp, b.sig) {
                (a, a.sign, b, bs)
            } else {
                (b, bs, a, a.sign)
            };
            // The larger at bits 126..63 (room for a carry), the smaller aligned to it with
            // a sticky bit: bit 0 has exponent x.exp - 126.
            let xv = (x.sig as u128) << 63;
            let yv = shr_jam((y.sig as u128) << 63, (x.exp - y.exp) as u32);
            if xs == ys {
                norm_round(c, f, ftz, xs, x.exp - 126, xv + yv)
            } else {
                let d = xv - yv;
                if d == 0 {
                    zero(c.rc == Rc::Down)
                } else {
                    norm_round(c, f, ftz, xs, x.exp - 126, d)
                }
            }
        }
        (Kind::Inf, Kind::Inf) => {
            if a.sign != bs {
                invalid(c)
            } else {
                inf(f, bs)
            }
        }
        (Kind::Inf, _) => inf(f, a.sign),
        (_, Kind::Inf) => inf(f, bs),
        (Kind::Zero, Kind::Zero) => zero(if a.sign == bs { bs } else { c.rc == Rc::Down }),
        (Kind::Zero, _) => round_un(c, f, ftz, Un { sign: bs, ..b }),
        _ => round_un(c, f, ftz, a),
    }
}

#[inline(always)]
fn mul(c: &mut Ctx, f: Fmt, ftz: bool, a: Un, b: Un) -> Res {
    let sign = a.sign ^ b.sign;
    match (a.kind, b.kind) {
        (Kind::Fin, Kind::Fin) => norm_round(
            c,
            f,
            ftz,
            sign,
            a.exp + b.exp - 126,
            a.sig as u128 * b.sig as u128,
        ),
        (Kind::Inf, Kind::Zero) | (Kind::Zero, Kind::Inf) => invalid(c),
        (Kind::Inf, _) | (_, Kind::Inf) => inf(f, sign),
        _ => zero(sign),
    }
}

#[inline(always)]
fn div(c: &mut Ctx, f: Fmt, ftz: bool, a: Un, b: Un) -> Res {
    let sign = a.sign ^ b.sign;
    match (a.kind, b.kind) {
        (Kind::Fin, Kind::Fin) => {
            // A 64-bit quotient (one 128-by-64 division), two more bits by restoring
            // division, then the sticky bit.
            let bs = b.sig as u128;
            let sh = if a.sig >= b.sig { 63 } else { 64 };
            let num = (a.sig as u128) << sh;
            let q = num / bs;
            let mut r = num - q * bs;
            let mut q = q << 2;
            for bit in [2, 1] {
                r <<= 1;
                if r >= bs {
                    r -= bs;
                    q |= bit;
                }
            }
            q |= (r != 0) as u128;
            norm_round(c, f, ftz, sign, a.exp - b.exp - sh - 2, q)
        }
        (Kind::Inf, Kind::Inf) | (Kind::Zero, Kind::Zero) => invalid(c),
        (Kind::Inf, _) => inf(f, sign),
        (_, Kind::Zero) => {
            c.flags |= ZE;
            inf(f, sign)
        }
        _ => zero(sign),
    }
}

/// `floor(sqrt((i + 1) * 2^56)) + 1` for `i` in 64..256 (the last one saturated): square
/// roots of a 64-bit value from its top 8 bits, to a relative error below 2^-8.
const SQRT_EST: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 64;
    while i < 256 {
        let v = ((i + 1) as u128) << 56;
        // Integer square root by bisection (compile time only).
        let (mut lo, mut hi) = (0u128, 1u128 << 33);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if mid * mid <= v {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        t[i] = if lo + 1 > u32::MAX as u128 {
            u32::MAX
        } else {
            (lo + 1) as u32
        };
        i += 1;
    }
    t
};

/// `sqrt(v)` for `v >= 2^62` to within a few units: two Newton steps from the table
/// (relative error 2^-8 -> 2^-17 -> 2^-35).
#[inline]
fn isqrt64_approx(v: u64) -> u64 {
    let mut x = SQRT_EST[(v >> 56) as usize] as u64;
    x = (x + v / x) >> 1;
    (x + v / x) >> 1
}

/// Integer square root: `(r, n - r*r)` with `r = floor(sqrt(n))`, for `n >= 2^126`.
fn isqrt(n: u128) -> (u64, u128) {
    // 32 bits from the high half, one Newton step in 128 bits, then an exact correction.
    let x0 = (isqrt64_approx((n >> 64) as u64) as u128) << 32;
    let mut x = ((x0 + n / x0) >> 1).min(u64::MAX as u128);
    while x * x > n {
        x -= 1;
    }
    while (x + 1).checked_mul(x + 1).is_some_and(|s| s <= n) {
        x += 1;
    }
    (x as u64, n - x * x)
}

fn sqrt(c: &mut Ctx, f: Fmt, ftz: bool, a: Un) -> Res {
    match a.kind {
        Kind::Zero => zero(a.sign),
        _ if a.sign => invalid(c),
        Kind::Inf => inf(f, false),
        _ => {
            // value = n * 2^ee with ee even and n in [2^126, 2^128): a 64-bit root.
            let e2 = a.exp - 63;
            let (n, ee) = if (e2 - 64) & 1 == 0 {
                ((a.sig as u128) << 64, e2 - 64)
            } else {
                ((a.sig as u128) << 63, e2 - 63)
            };
            let (r, rem) = isqrt(n);
            // Next root bit: (2r+1)^2 <= 4n  <=>  rem > r. Then never exactly half.
            let s = if rem > r as u128 {
                (r as u128) << 2 | 3
            } else {
                (r as u128) << 2 | (rem != 0) as u128
            };
            norm_round(c, f, ftz, false, ee / 2 - 2, s)
        }
    }
}

/// Compare two non-NaN values.
fn cmp_un(a: Un, b: Un) -> Cmp {
    let key = |u: Un| -> (bool, u8, i32, u64) {
        match u.kind {
            Kind::Zero => (false, 0, 0, 0),
            Kind::Inf => (u.sign, 2, 0, 0),
            _ => (u.sign, 1, u.exp, u.sig),
        }
    };
    let (sa, ka, ea, ma) = key(a);
    let (sb, kb, eb, mb) = key(b);
    if sa != sb {
        return if sa { Cmp::Lt } else { Cmp::Gt };
    }
    let o = (ka, ea, ma).cmp(&(kb, eb, mb));
    let o = if sa { o.reverse() } else { o };
    match o {
        core::cmp::Ordering::Less => Cmp::Lt,
        core::cmp::Ordering::Equal => Cmp::Eq,
        core::cmp::Ordering::Greater => Cmp::Gt,
    }
}

/// Split a finite value into its integer part and the 64 fraction bits (sticky in bit 0),
/// for `exp <= 63`.
#[inline]
fn int_frac(u: Un) -> (u128, u64) {
    let x = if u.exp >= -1 {
        (u.sig as u128) << (u.exp + 1)
    } else {
        shr_jam(u.sig as u128, (-(u.exp + 1)) as u32)
    };
    (x >> 64, x as u64)
}

/// Round a finite value to an integer with `rc`: `(magnitude, inexact)`; `exp <= 63`.
#[inline]
fn round_to_int(u: Un, rc: Rc) -> (u128, bool) {
    let (mut i, frac) = int_frac(u);
    if frac != 0 && round_up(rc, u.sign, frac as u128, 1 << 63, i & 1 != 0) {
        i += 1;
    }
    (i, frac != 0)
}

/// Convert to a `bits`-wide signed integer; `None` when invalid (NaN, infinity, out of
/// range: the caller returns the integer indefinite with IE).
fn to_int(c: &mut Ctx, u: Un, bits: u32, rc: Rc) -> Option<u64> {
    match u.kind {
        Kind::Zero => Some(0),
        Kind::Fin if u.exp < 64 => {
            let (i, inexact) = round_to_int(u, rc);
            let limit = (1u128 << (bits - 1)) - (!u.sign) as u128;
            if i > limit {
                return None;
            }
            if inexact {
                c.flags |= PE;
            }
            let v = if u.sign {
                (i as u64).wrapping_neg()
            } else {
                i as u64
            };
            Some(if bits == 64 {
                v
            } else {
                v & ((1u64 << bits) - 1)
            })
        }
        _ => None,
    }
}

#[inline]
fn int_indefinite(bits: u32) -> u64 {
    1u64 << (bits - 1)
}

/// Exact value of a signed integer magnitude in format `f` (rounded if too wide).
#[inline]
fn from_int(c: &mut Ctx, f: Fmt, neg: bool, mag: u64) -> Res {
    if mag == 0 {
        zero(false)
    } else {
        norm_round(c, f, false, neg, 0, mag as u128)
    }
}

// ---------------------------------------------------------------------------------------
// SSE.

/// Run an operation, then raise DE if `denorm` (an operand was denormal) unless the
/// operation raised IE or ZE: invalid operations and division by zero take priority over
/// the denormal-operand exception (tested on the hardware, SSE and x87 alike).
#[inline]
fn with_de<R>(c: &mut Ctx, denorm: bool, f: impl FnOnce(&mut Ctx) -> R) -> R {
    if !denorm {
        return f(c);
    }
    let saved = c.flags;
    c.flags = 0;
    let r = f(c);
    if c.flags & (IE | ZE) == 0 {
        c.flags |= DE;
    }
    c.flags |= saved;
    r
}

/// Apply DAZ to an SSE operand: a denormal becomes a zero of the same sign.
#[inline]
fn daz(c: &Ctx, u: Un) -> Un {
    if u.denorm && c.daz {
        Un::zero(u.sign)
    } else {
        u
    }
}

/// Whether an SSE operand raises DE (a denormal without DAZ).
#[inline]
fn sse_de(c: &Ctx, u: Un) -> bool {
    u.denorm && !c.daz
}

/// SSE NaN propagation for two operands.
#[inline]
fn sse_nan2(c: &mut Ctx, a: Un, b: Un) -> Option<Res> {
    if !a.is_nan() && !b.is_nan() {
        return None;
    }
    if a.kind == Kind::SNan || b.kind == Kind::SNan {
        c.flags |= IE;
    }
    Some(qnan(if a.is_nan() { a } else { b }))
}

#[inline]
fn sse_nan1(c: &mut Ctx, a: Un) -> Option<Res> {
    if !a.is_nan() {
        return None;
    }
    if a.kind == Kind::SNan {
        c.flags |= IE;
    }
    Some(qnan(a))
}

#[inline(always)]
fn sse_bin(c: &mut Ctx, f: Fmt, a: Un, b: Un, op: Op) -> Res {
    if let Some(r) = sse_nan2(c, a, b) {
        return r;
    }
    let de = sse_de(c, a) || sse_de(c, b);
    let (a, b) = (daz(c, a), daz(c, b));
    let ftz = c.ftz;
    with_de(c, de, |c| arith(c, f, ftz, a, b, op))
}

fn sse_sqrt(c: &mut Ctx, f: Fmt, a: Un) -> Res {
    if let Some(r) = sse_nan1(c, a) {
        return r;
    }
    let de = sse_de(c, a);
    let a = daz(c, a);
    let ftz = c.ftz;
    with_de(c, de, |c| sqrt(c, f, ftz, a))
}

/// MINSS/MAXSS: whether the result is the first operand (else the second, unchanged).
fn sse_minmax(c: &mut Ctx, a: Un, b: Un, max: bool) -> bool {
    if a.is_nan() || b.is_nan() {
        c.flags |= IE;
        return false;
    }
    if sse_de(c, a) || sse_de(c, b) {
        c.flags |= DE;
    }
    match cmp_un(daz(c, a), daz(c, b)) {
        Cmp::Lt => !max,
        Cmp::Gt => max,
        _ => false,
    }
}

fn sse_cmp(c: &mut Ctx, a: Un, b: Un, signaling: bool) -> Cmp {
    if a.is_nan() || b.is_nan() {
        if signaling || a.kind == Kind::SNan || b.kind == Kind::SNan {
            c.flags |= IE;
        }
        return Cmp::Unordered;
    }
    if sse_de(c, a) || sse_de(c, b) {
        c.flags |= DE;
    }
    cmp_un(daz(c, a), daz(c, b))
}

fn sse_to_int(c: &mut Ctx, a: Un, bits: u32, trunc: bool) -> u64 {
    let a = daz(c, a);
    let rc = if trunc { Rc::Zero } else { c.rc };
    match to_int(c, a, bits, rc) {
        Some(v) => v,
        None => {
            c.flags |= IE;
            int_indefinite(bits)
        }
    }
}

/// ROUNDSS/ROUNDSD on an unpacked value; `None` means the operand is returned unchanged.
fn sse_round(c: &mut Ctx, f: Fmt, a: Un, rc: Rc, inexact: bool) -> Option<Res> {
    if let Some(r) = sse_nan1(c, a) {
        return Some(r);
    }
    let a = daz(c, a);
    match a.kind {
        Kind::Zero => Some(zero(a.sign)),
        Kind::Fin if a.exp < f.p as i32 - 1 => {
            let (i, ix) = round_to_int(a, rc);
            if ix && inexact {
                c.flags |= PE;
            }
            Some(if i == 0 {
                zero(a.sign)
            } else {
                norm_round(c, f, false, a.sign, 0, i)
            })
        }
        _ => None,
    }
}

/// The SSE scalar operations of one format (`$s`: the instruction suffix).
macro_rules! sse_ops {
    ($t:ty, $s:literal, $fmt:expr, $unpack:ident, $pack:ident,
     $add:ident, $sub:ident, $mul:ident, $div:ident, $sqrt:ident, $min:ident, $max:ident,
     $cmp:ident, $round:ident, $to_i32:ident, $to_i64:ident, $from_i32:ident, $from_i64:ident) => {
        #[doc = concat!("ADD", $s, ": `a + b`.")]
        pub fn $add(c: &mut Ctx, a: $t, b: $t) -> $t {
            $pack(sse_bin(c, $fmt, $unpack(a), $unpack(b), Op::Add))
        }
        #[doc = concat!("SUB", $s, ": `a - b`.")]
        pub fn $sub(c: &mut Ctx, a: $t, b: $t) -> $t {
            $pack(sse_bin(c, $fmt, $unpack(a), $unpack(b), Op::Sub))
        }
        #[doc = concat!("MUL", $s, ": `a * b`.")]
        pub fn $mul(c: &mut Ctx, a: $t, b: $t) -> $t {
            $pack(sse_bin(c, $fmt, $unpack(a), $unpack(b), Op::Mul))
        }
        #[doc = concat!("DIV", $s, ": `a / b`.")]
        pub fn $div(c: &mut Ctx, a: $t, b: $t) -> $t {
            $pack(sse_bin(c, $fmt, $unpack(a), $unpack(b), Op::Div))
        }
        #[doc = concat!("SQRT", $s, ".")]
        pub fn $sqrt(c: &mut Ctx, a: $t) -> $t {
            $pack(sse_sqrt(c, $fmt, $unpack(a)))
        }
        #[doc = concat!("MIN", $s, ": `a < b ? a : b`, so `b` (unchanged, even an SNaN) when either is a NaN \
            (IE) or both are zero. Under DAZ a denormal result operand is returned as a signed zero.")]
        pub fn $min(c: &mut Ctx, a: $t, b: $t) -> $t {
            let (ua, ub) = ($unpack(a), $unpack(b));
            if sse_minmax(c, ua, ub, false) {
                minmax_result(c, a, ua, |s| (s as $t) << (<$t>::BITS - 1))
            } else {
                minmax_result(c, b, ub, |s| (s as $t) << (<$t>::BITS - 1))
            }
        }
        #[doc = concat!("MAX", $s, ": `a > b ? a : b`, as MIN", $s, ".")]
        pub fn $max(c: &mut Ctx, a: $t, b: $t) -> $t {
            let (ua, ub) = ($unpack(a), $unpack(b));
            if sse_minmax(c, ua, ub, true) {
                minmax_result(c, a, ua, |s| (s as $t) << (<$t>::BITS - 1))
            } else {
                minmax_result(c, b, ub, |s| (s as $t) << (<$t>::BITS - 1))
            }
        }
        #[doc = concat!("COMI", $s, " (`signaling`: IE on any NaN) / UCOMI", $s, " (IE on SNaN only).")]
        pub fn $cmp(c: &mut Ctx, a: $t, b: $t, signaling: bool) -> Cmp {
            sse_cmp(c, $unpack(a), $unpack(b), signaling)
        }
        #[doc = concat!("ROUND", $s, " to an integral value with `rc`; PE only when `inexact` (imm8 bit 3 \
            clear). SNaN: IE and quieted.")]
        pub fn $round(c: &mut Ctx, a: $t, rc: Rc, inexact: bool) -> $t {
            match sse_round(c, $fmt, $unpack(a), rc, inexact) {
                Some(r) => $pack(r),
                None => a,
            }
        }
        #[doc = concat!("CVT", $s, "2SI (`trunc`: CVTT", $s, "2SI) to a 32-bit integer: NaN or out of range \
            give 0x8000_0000 with IE.")]
        pub fn $to_i32(c: &mut Ctx, a: $t, trunc: bool) -> u32 {
            sse_to_int(c, $unpack(a), 32, trunc) as u32
        }
        #[doc = concat!("CVT", $s, "2SI (`trunc`: CVTT", $s, "2SI) to a 64-bit integer.")]
        pub fn $to_i64(c: &mut Ctx, a: $t, trunc: bool) -> u64 {
            sse_to_int(c, $unpack(a), 64, trunc)
        }
        #[doc = concat!("CVTSI2", $s, " from a signed 32-bit integer.")]
        pub fn $from_i32(c: &mut Ctx, v: u32) -> $t {
            let v = v as i32;
            $pack(from_int(c, $fmt, v < 0, v.unsigned_abs() as u64))
        }
        #[doc = concat!("CVTSI2", $s, " from a signed 64-bit integer.")]
        pub fn $from_i64(c: &mut Ctx, v: u64) -> $t {
            let v = v as i64;
            $pack(from_int(c, $fmt, v < 0, v.unsigned_abs()))
        }
    };
}

/// The selected MIN/MAX operand: unchanged, or a signed zero when it is a denormal under
/// DAZ.
#[inline]
fn minmax_result<T: Copy>(c: &Ctx, bits: T, u: Un, zero: impl Fn(bool) -> T) -> T {
    if u.denorm && c.daz {
        zero(u.sign)
    } else {
        bits
    }
}

sse_ops!(
    u32, "SS", F32, unpack32, pack32, f32_add, f32_sub, f32_mul, f32_div, f32_sqrt, f32_min,
    f32_max, f32_cmp, f32_round, f32_to_i32, f32_to_i64, i32_to_f32, i64_to_f32
);
sse_ops!(
    u64, "SD", F64, unpack64, pack64, f64_add, f64_sub, f64_mul, f64_div, f64_sqrt, f64_min,
    f64_max, f64_cmp, f64_round, f64_to_i32, f64_to_i64, i32_to_f64, i64_to_f64
);

/// CVTSS2SD.
pub fn f32_to_f64(c: &mut Ctx, a: u32) -> u64 {
    let u = unpack32(a);
    if let Some(r) = sse_nan1(c, u) {
        return pack64(r);
    }
    let de = sse_de(c, u);
    let u = daz(c, u);
    with_de(c, de, |c| pack64(round_un(c, F64, false, u)))
}

/// CVTSD2SS.
pub fn f64_to_f32(c: &mut Ctx, a: u64) -> u32 {
    let u = unpack64(a);
    if let Some(r) = sse_nan1(c, u) {
        return pack32(r);
    }
    let de = sse_de(c, u);
    let u = daz(c, u);
    let ftz = c.ftz;
    with_de(c, de, |c| pack32(round_un(c, F32, ftz, u)))
}

// ---------------------------------------------------------------------------------------
// x87.

/// x87 handling of unsupported encodings and NaNs for two operands.
fn x87_nan2(c: &mut Ctx, a: Un, b: Un) -> Option<Res> {
    if a.kind == Kind::Unsup || b.kind == Kind::Unsup {
        return Some(invalid(c));
    }
    match (a.is_nan(), b.is_nan()) {
        (false, false) => None,
        (true, false) => Some(x87_nan1(c, a)),
        (false, true) => Some(x87_nan1(c, b)),
        (true, true) => {
            if a.kind == Kind::SNan || b.kind == Kind::SNan {
                c.flags |= IE;
            }
            let pick_a = if a.kind != b.kind {
                a.kind == Kind::QNan
            } else if a.sig != b.sig {
                a.sig > b.sig
            } else {
                !a.sign
            };
            Some(qnan(if pick_a { a } else { b }))
        }
    }
}

#[inline]
fn x87_nan1(c: &mut Ctx, a: Un) -> Res {
    match a.kind {
        Kind::Unsup => invalid(c),
        Kind::SNan => {
            c.flags |= IE;
            qnan(a)
        }
        _ => qnan(a),
    }
}

#[inline]
fn x87_special1(u: Un) -> bool {
    matches!(u.kind, Kind::Unsup | Kind::QNan | Kind::SNan)
}

#[inline]
fn x87_bin(c: &mut Ctx, a: F80, b: F80, op: Op) -> F80 {
    x87_bin_den(c, a, b, op, false)
}

/// `den`: an operand was a denormal m32/m64 (see [`f80_operand_f32`]).
#[inline]
fn x87_bin_den(c: &mut Ctx, a: F80, b: F80, op: Op, den: bool) -> F80 {
    let (ua, ub) = (unpack80(a), unpack80(b));
    let p = c.prec.bits();
    if let Some(r) = x87_nan2(c, ua, ub) {
        return pack80(r, p);
    }
    with_de(c, ua.denorm || ub.denorm || den, |c| {
        pack80(arith(c, fmt80(p), false, ua, ub, op), p)
    })
}

/// The four basic x87 operations, for [`f80_binop`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// FADD/FSUB/FMUL/FDIV `a op b` where one operand came from an m32/m64 operand that was a
/// denormal (`src_denormal`, from [`f80_operand_f32`]/[`f80_operand_f64`]): DE is then
/// raised by the operation's own rules (not with a NaN operand, IE or ZE).
pub fn f80_binop(c: &mut Ctx, op: BinOp, a: F80, b: F80, src_denormal: bool) -> F80 {
    let op = match op {
        BinOp::Add => Op::Add,
        BinOp::Sub => Op::Sub,
        BinOp::Mul => Op::Mul,
        BinOp::Div => Op::Div,
    };
    x87_bin_den(c, a, b, op, src_denormal)
}

/// An m32 source operand of an x87 arithmetic or compare instruction in extended format,
/// without FLD's conversion effects: a signalling NaN stays signalling (the operation
/// raises IE and chooses between NaNs by the x87 rules) and a denormal is reported (the
/// operation decides about DE).
pub fn f80_operand_f32(a: u32) -> (F80, bool) {
    let u = unpack32(a);
    if u.is_nan() {
        return (
            F80 {
                signif: 1 << 63 | (a as u64 & 0x7f_ffff) << 40,
                se: ((a >> 31) as u16) << 15 | 0x7fff,
            },
            false,
        );
    }
    let mut c = Ctx::x87(0x37f);
    (pack80(round_un(&mut c, fmt80(64), false, u), 64), u.denorm)
}

/// As [`f80_operand_f32`] for an m64 operand.
pub fn f80_operand_f64(a: u64) -> (F80, bool) {
    let u = unpack64(a);
    if u.is_nan() {
        return (
            F80 {
                signif: 1 << 63 | (a & 0xf_ffff_ffff_ffff) << 11,
                se: ((a >> 63) as u16) << 15 | 0x7fff,
            },
            false,
        );
    }
    let mut c = Ctx::x87(0x37f);
    (pack80(round_un(&mut c, fmt80(64), false, u), 64), u.denorm)
}

/// FADD: `a + b`, rounded to the precision control.
pub fn f80_add(c: &mut Ctx, a: F80, b: F80) -> F80 {
    x87_bin(c, a, b, Op::Add)
}

/// FSUB: `a - b`.
pub fn f80_sub(c: &mut Ctx, a: F80, b: F80) -> F80 {
    x87_bin(c, a, b, Op::Sub)
}

/// FMUL.
pub fn f80_mul(c: &mut Ctx, a: F80, b: F80) -> F80 {
    x87_bin(c, a, b, Op::Mul)
}

/// FDIV: `a / b`.
pub fn f80_div(c: &mut Ctx, a: F80, b: F80) -> F80 {
    x87_bin(c, a, b, Op::Div)
}

/// FSQRT.
pub fn f80_sqrt(c: &mut Ctx, a: F80) -> F80 {
    let u = unpack80(a);
    let p = c.prec.bits();
    if x87_special1(u) {
        return pack80(x87_nan1(c, u), p);
    }
    with_de(c, u.denorm, |c| pack80(sqrt(c, fmt80(p), false, u), p))
}

/// FCOM (`signaling`: IE on any NaN) / FUCOM (IE on SNaN only); unsupported encodings
/// are unordered with IE.
pub fn f80_cmp(c: &mut Ctx, a: F80, b: F80, signaling: bool) -> Cmp {
    f80_cmp_den(c, a, b, signaling, false)
}

/// As [`f80_cmp`], with `b` from a denormal m32/m64 operand when `src_denormal`.
pub fn f80_cmp_den(c: &mut Ctx, a: F80, b: F80, signaling: bool, src_denormal: bool) -> Cmp {
    let (ua, ub) = (unpack80(a), unpack80(b));
    if x87_special1(ua) || x87_special1(ub) {
        if signaling
            || ua.kind == Kind::SNan
            || ub.kind == Kind::SNan
            || ua.kind == Kind::Unsup
            || ub.kind == Kind::Unsup
        {
            c.flags |= IE;
        }
        return Cmp::Unordered;
    }
    if ua.denorm || ub.denorm || src_denormal {
        c.flags |= DE;
    }
    cmp_un(ua, ub)
}

/// FLD m32.
pub fn f80_from_f32(c: &mut Ctx, a: u32) -> F80 {
    let u = unpack32(a);
    if u.is_nan() {
        return pack80(x87_nan1(c, u), 64);
    }
    if u.denorm {
        c.flags |= DE;
    }
    pack80(round_un(c, fmt80(64), false, u), 64)
}

/// FLD m64.
pub fn f80_from_f64(c: &mut Ctx, a: u64) -> F80 {
    let u = unpack64(a);
    if u.is_nan() {
        return pack80(x87_nan1(c, u), 64);
    }
    if u.denorm {
        c.flags |= DE;
    }
    pack80(round_un(c, fmt80(64), false, u), 64)
}

/// FST m32: round with the context's rounding mode (precision control does not apply).
pub fn f80_to_f32(c: &mut Ctx, a: F80) -> u32 {
    let u = unpack80(a);
    if x87_special1(u) {
        return pack32(x87_nan1(c, u));
    }
    pack32(round_un(c, F32, false, u))
}

/// FST m64.
pub fn f80_to_f64(c: &mut Ctx, a: F80) -> u64 {
    let u = unpack80(a);
    if x87_special1(u) {
        return pack64(x87_nan1(c, u));
    }
    pack64(round_un(c, F64, false, u))
}

/// FILD (exact).
pub fn f80_from_i64(v: i64) -> F80 {
    if v == 0 {
        return F80 { signif: 0, se: 0 };
    }
    let m = v.unsigned_abs();
    let lz = m.leading_zeros();
    F80 {
        signif: m << lz,
        se: ((v < 0) as u16) << 15 | (16383 + 63 - lz) as u16,
    }
}

/// FIST/FISTP (`trunc` false, rounding with the context) and FISTTP (`trunc`) to a
/// `bytes`-wide integer (2, 4 or 8): NaN, infinity and out of range give the integer
/// indefinite with IE. The result is in the low `bytes`.
pub fn f80_to_int(c: &mut Ctx, a: F80, bytes: u32, trunc: bool) -> u64 {
    let bits = bytes * 8;
    let u = unpack80(a);
    let rc = if trunc { Rc::Zero } else { c.rc };
    match to_int(c, u, bits, rc) {
        Some(v) => v,
        None => {
            c.flags |= IE;
            int_indefinite(bits)
        }
    }
}

/// FRNDINT with the context's rounding mode.
pub fn f80_round_int(c: &mut Ctx, a: F80) -> F80 {
    let u = unpack80(a);
    if x87_special1(u) {
        return pack80(x87_nan1(c, u), 64);
    }
    if u.denorm {
        c.flags |= DE;
    }
    match u.kind {
        Kind::Fin if u.exp < 63 => {
            let (i, ix) = round_to_int(u, c.rc);
            if ix {
                c.flags |= PE;
            }
            if i == 0 {
                pack80(zero(u.sign), 64)
            } else {
                pack80(norm_round(c, fmt80(64), false, u.sign, 0, i), 64)
            }
        }
        _ => pack80(round_un(c, fmt80(64), false, u), 64),
    }
}

/// FSCALE: `a * 2^trunc(b)`.
pub fn f80_scale(c: &mut Ctx, a: F80, b: F80) -> F80 {
    let (ua, ub) = (unpack80(a), unpack80(b));
    if let Some(r) = x87_nan2(c, ua, ub) {
        return pack80(r, 64);
    }
    let f = fmt80(64);
    let r = with_de(c, ua.denorm || ub.denorm, |c| match (ua.kind, ub.kind) {
        (Kind::Inf, Kind::Inf) if ub.sign => invalid(c),
        (Kind::Zero, Kind::Inf) if !ub.sign => invalid(c),
        (Kind::Fin, Kind::Inf) => {
            if ub.sign {
                zero(ua.sign)
            } else {
                inf(f, ua.sign)
            }
        }
        (Kind::Fin, _) => {
            // trunc(b), clamped far beyond the exponent range.
            let n: i32 = match ub.kind {
                Kind::Fin if ub.exp >= 0 => {
                    let m = if ub.exp >= 30 {
                        1 << 30
                    } else {
                        (ub.sig >> (63 - ub.exp)) as i32
                    };
                    if ub.sign {
                        -m
                    } else {
                        m
                    }
                }
                _ => 0,
            };
            round_pack(c, f, false, ua.sign, ua.exp + n, (ua.sig as u128) << 64)
        }
        _ => round_un(c, f, false, ua),
    });
    pack80(r, 64)
}

/// FXTRACT: `(exponent, significand)`; the significand has the sign of `a` and exponent
/// 0 (biased 0x3fff). A zero gives `(-inf, a)` with ZE.
pub fn f80_xtract(c: &mut Ctx, a: F80) -> (F80, F80) {
    let u = unpack80(a);
    if x87_special1(u) {
        let r = pack80(x87_nan1(c, u), 64);
        return (r, r);
    }
    if u.denorm {
        c.flags |= DE;
    }
    match u.kind {
        Kind::Zero => {
            c.flags |= ZE;
            (
                F80 {
                    signif: INT_BIT,
                    se: 0xffff,
                },
                pack80(zero(u.sign), 64),
            )
        }
        Kind::Inf => (
            F80 {
                signif: INT_BIT,
                se: 0x7fff,
            },
            pack80(inf(fmt80(64), u.sign), 64),
        ),
        _ => (
            f80_from_i64(u.exp as i64),
            F80 {
                signif: u.sig,
                se: (u.sign as u16) << 15 | 0x3fff,
            },
        ),
    }
}

/// FPREM (`ieee` false: truncated quotient) / FPREM1 (`ieee`: quotient rounded to
/// nearest). Returns the (partial) remainder, the low three quotient bits (Q2 Q1 Q0 as
/// bits 2..0) and whether the reduction is incomplete (C2).
///
/// When the exponent difference `d` is 64 or more, the hardware does a partial
/// reduction: the dividend is reduced by a truncated multiple of `b * 2^k` with
/// `k = 32 * floor((d - 32) / 32)` (so `d - k` is between 32 and 63), the quotient bits
/// read as zero and C2 is set. (Determined by testing.)
pub fn f80_rem(c: &mut Ctx, a: F80, b: F80, ieee: bool) -> (F80, u8, bool) {
    let (ua, ub) = (unpack80(a), unpack80(b));
    if let Some(r) = x87_nan2(c, ua, ub) {
        return (pack80(r, 64), 0, false);
    }
    with_de(c, ua.denorm || ub.denorm, |c| rem_core(c, ua, ub, ieee))
}

/// FPREM/FPREM1 on non-NaN operands.
fn rem_core(c: &mut Ctx, ua: Un, ub: Un, ieee: bool) -> (F80, u8, bool) {
    let f = fmt80(64);
    match (ua.kind, ub.kind) {
        (Kind::Inf, _) | (_, Kind::Zero) => return (pack80(invalid(c), 64), 0, false),
        (Kind::Fin, Kind::Fin) => {}
        _ => return (pack80(round_un(c, f, false, ua), 64), 0, false),
    }
    let d = ua.exp - ub.exp;
    let (bexp, ieee, partial) = if d >= 64 {
        let k = 32 * ((d - 32) / 32);
        (ub.exp + k, false, true)
    } else {
        (ub.exp, ieee, false)
    };
    let d = ua.exp - bexp;
    let (a_sig, b_sig) = (ua.sig as u128, ub.sig as u128);
    // Remainder magnitude `r * 2^(e0)` and the quotient.
    let (mut q, mut r, e0) = if d >= 0 {
        let n = a_sig << d;
        let q = n / b_sig;
        (q, n - q * b_sig, bexp - 63)
    } else {
        (0, a_sig, ua.exp - 63)
    };
    let mut sign = ua.sign;
    if ieee {
        if d >= 0 {
            // Round the quotient to nearest even.
            let r2 = r << 1;
            if r2 > b_sig || (r2 == b_sig && q & 1 != 0) {
                q += 1;
                r = b_sig - r;
                sign = !sign;
            }
        } else if d == -1 && a_sig > b_sig {
            // |a| > |b|/2: quotient 1, remainder |b| - |a| with the opposite sign.
            q = 1;
            r = (b_sig << 1) - a_sig;
            sign = !sign;
        }
    }
    let res = if r == 0 {
        zero(ua.sign)
    } else {
        norm_round(c, f, false, sign, e0, r)
    };
    let qbits = if partial { 0 } else { (q & 7) as u8 };
    (pack80(res, 64), qbits, partial)
}

/// FXAM classification of a non-empty register: C3, C2, C0 as bits 2, 1, 0.
pub fn f80_class(a: F80) -> u8 {
    let u = unpack80(a);
    match u.kind {
        Kind::Unsup => 0b000,
        Kind::QNan | Kind::SNan => 0b001,
        Kind::Inf => 0b011,
        Kind::Zero => 0b100,
        Kind::Fin if u.denorm => 0b110,
        Kind::Fin => 0b010,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32b(x: f32) -> u32 {
        x.to_bits()
    }
    fn f64b(x: f64) -> u64 {
        x.to_bits()
    }

    #[test]
    fn basic_sse() {
        let mut c = Ctx::sse(0x1f80);
        assert_eq!(f32_add(&mut c, f32b(1.0), f32b(1.0)), f32b(2.0));
        assert_eq!(c.flags, 0);
        assert_eq!(f64_add(&mut c, f64b(0.1), f64b(0.2)), 0x3FD3_3333_3333_3334);
        assert_eq!(c.flags, PE);
        let mut c = Ctx::sse(0x1f80);
        assert_eq!(f64_mul(&mut c, f64b(3.0), f64b(-0.5)), f64b(-1.5));
        assert_eq!(f64_div(&mut c, f64b(1.0), f64b(3.0)), f64b(1.0 / 3.0));
        assert_eq!(f64_sqrt(&mut c, f64b(2.0)), f64b(std::f64::consts::SQRT_2));
        assert_eq!(f32_sub(&mut c, f32b(1.5), f32b(1.5)), 0);
    }

    #[test]
    fn rounding_modes() {
        // 1 + 2^-24 in single: a tie.
        let a = f32b(1.0);
        let b = f32b(1.0 / 16777216.0);
        for (rc, want) in [
            (0x0000, 0x3f80_0000),
            (0x2000, 0x3f80_0000),
            (0x4000, 0x3f80_0001),
            (0x6000, 0x3f80_0000),
        ] {
            let mut c = Ctx::sse(0x1f80 | rc);
            assert_eq!(f32_add(&mut c, a, b), want, "rc {rc:#x}");
            assert_eq!(c.flags, PE);
        }
        // 1 + 3*2^-25: above the half, rounds up to nearest.
        let b = f32b(3.0 / 33554432.0);
        let mut c = Ctx::sse(0x1f80);
        assert_eq!(f32_add(&mut c, a, b), 0x3f80_0001);
        let mut c = Ctx::sse(0x1f80 | 0x2000);
        assert_eq!(f32_sub(&mut c, f32b(1.0), f32b(1.0)), 0x8000_0000);
    }

    #[test]
    fn nans_and_invalid() {
        let mut c = Ctx::sse(0x1f80);
        let inf = f32b(f32::INFINITY);
        assert_eq!(f32_sub(&mut c, inf, inf), F32_DEFAULT_NAN);
        assert_eq!(c.flags, IE);
        let mut c = Ctx::sse(0x1f80);
        assert_eq!(f64_mul(&mut c, 0, f64b(f64::INFINITY)), F64_DEFAULT_NAN);
        assert_eq!(f64_sqrt(&mut c, f64b(-1.0)), F64_DEFAULT_NAN);
        // First operand NaN wins; SNaN quieted with IE.
        let mut c = Ctx::sse(0x1f80);
        assert_eq!(f32_add(&mut c, 0x7f80_0001, 0xffc0_0002), 0x7fc0_0001);
        assert_eq!(c.flags, IE);
        let mut c = Ctx::sse(0x1f80);
        assert_eq!(f32_add(&mut c, f32b(1.0), 0xffc0_0002), 0xffc0_0002);
        assert_eq!(c.flags, 0);
        // Narrowing keeps the top payload bits.
        let mut c = Ctx::sse(0x1f80);
        assert_eq!(f64_to_f32(&mut c, 0x7ff4_0000_2000_0000), 0x7fe0_0001);
        assert_eq!(c.flags, IE);
        // x87 default NaN and the larger significand rule.
        let mut c = Ctx::x87(0x37f);
        let inf80 = F80 {
            signif: INT_BIT,
            se: 0x7fff,
        };
        assert_eq!(f80_sub(&mut c, inf80, inf80), F80_DEFAULT_NAN);
        let q1 = F80 {
            signif: 0xC000_0000_0000_0001,
            se: 0x7fff,
        };
        let q2 = F80 {
            signif: 0xC000_0000_0000_0002,
            se: 0xffff,
        };
        let mut c = Ctx::x87(0x37f);
        assert_eq!(f80_add(&mut c, q1, q2), q2);
        assert_eq!(c.flags, 0);
        // Unnormal: unsupported.
        let un = F80 {
            signif: 1,
            se: 0x3fff,
        };
        let mut c = Ctx::x87(0x37f);
        assert_eq!(f80_add(&mut c, un, q1), F80_DEFAULT_NAN);
        assert_eq!(c.flags, IE);
    }

    #[test]
    fn underflow_overflow_ftz() {
        // Smallest normal * 0.5 = denormal, exact: no UE.
        let mut c = Ctx::sse(0x1f80);
        assert_eq!(f32_mul(&mut c, 0x0080_0000, f32b(0.5)), 0x0040_0000);
        assert_eq!(c.flags, 0);
        // Same with FTZ: flushed, UE|PE.
        let mut c = Ctx::sse(0x1f80 | 0x8000);
        assert_eq!(f32_mul(&mut c, 0x8080_0000, f32b(0.5)), 0x8000_0000);
        assert_eq!(c.flags, UE | PE);
        // DAZ: denormal input is zero, no DE.
        let mut c = Ctx::sse(0x1f80 | 0x40);
        assert_eq!(f32_add(&mut c, 1, 0), 0);
        assert_eq!(c.flags, 0);
        let mut c = Ctx::sse(0x1f80);
        assert_eq!(f32_add(&mut c, 1, 0), 1);
        assert_eq!(c.flags, DE);
        // Overflow by rounding mode.
        let max = f32b(f32::MAX);
        for (rc, want) in [
            (0, 0x7f80_0000),
            (0x2000, 0x7f7f_ffff),
            (0x4000, 0x7f80_0000),
            (0x6000, 0x7f7f_ffff),
        ] {
            let mut c = Ctx::sse(0x1f80 | rc);
            assert_eq!(f32_mul(&mut c, max, f32b(2.0)), want);
            assert_eq!(c.flags, OE | PE);
        }
        // x87 precision control keeps the exponent range: no overflow at single.
        let mut c = Ctx::x87(0x007f);
        let big = pack80(
            Res::Num {
                sign: false,
                field: 16383 + 200,
                m: 0x8000_0000_0000_0001,
            },
            64,
        );
        let r = f80_mul(&mut c, big, big);
        assert_eq!(
            r,
            F80 {
                signif: INT_BIT,
                se: 16383 + 400
            }
        );
        assert_eq!(c.flags, PE);
    }

    #[test]
    fn conversions() {
        let mut c = Ctx::sse(0x1f80);
        assert_eq!(f64_to_i32(&mut c, f64b(2147483647.5), false), 0x8000_0000);
        assert_eq!(c.flags, IE);
        let mut c = Ctx::sse(0x1f80);
        assert_eq!(f64_to_i32(&mut c, f64b(-2147483648.75), true), 0x8000_0000);
        assert_eq!(c.flags, PE);
        let mut c = Ctx::sse(0x1f80);
        assert_eq!(f32_to_i64(&mut c, f32b(-2.5), false), (-2i64) as u64);
        assert_eq!(i64_to_f32(&mut c, u64::MAX), f32b(-1.0));
        assert_eq!(
            i64_to_f64(&mut c, (1u64 << 53) + 1),
            f64b(9007199254740992.0)
        );
        assert_eq!(c.flags, PE);
        let mut c = Ctx::sse(0x1f80);
        assert_eq!(
            f32_round(&mut c, f32b(-0.5), Rc::Nearest, true),
            0x8000_0000
        );
        assert_eq!(f64_round(&mut c, f64b(2.5), Rc::Up, false), f64b(3.0));
        assert_eq!(c.flags, PE);
        let mut c = Ctx::x87(0x37f);
        assert_eq!(f80_to_int(&mut c, f80_from_i64(-32768), 2, false), 0x8000);
        assert_eq!(f80_to_int(&mut c, f80_from_i64(40000), 2, false), 0x8000);
        assert_eq!(c.flags, IE);
        let one = f80_from_i64(1);
        assert_eq!(
            one,
            F80 {
                signif: INT_BIT,
                se: 0x3fff
            }
        );
        let mut c = Ctx::x87(0x37f);
        assert_eq!(
            f80_to_f64(&mut c, f80_from_f64(&mut Ctx::x87(0x37f), f64b(0.1))),
            f64b(0.1)
        );
        assert_eq!(c.flags, 0);
    }

    #[test]
    fn x87_misc() {
        let mut c = Ctx::x87(0x37f);
        let (e, s) = f80_xtract(&mut c, f80_from_i64(12));
        assert_eq!(e, f80_from_i64(3));
        assert_eq!(
            s,
            F80 {
                signif: 0xC000_0000_0000_0000,
                se: 0x3fff
            }
        );
        let (r, q, inc) = f80_rem(&mut c, f80_from_i64(17), f80_from_i64(5), false);
        assert_eq!((r, q, inc), (f80_from_i64(2), 3, false));
        let (r, q, _) = f80_rem(&mut c, f80_from_i64(18), f80_from_i64(5), true);
        assert_eq!((r, q), (f80_from_i64(-2), 4));
        assert_eq!(
            f80_scale(&mut c, f80_from_i64(3), f80_from_i64(-1)),
            F80 {
                signif: 0xC000_0000_0000_0000,
                se: 0x3fff
            }
        );
        assert_eq!(c.flags, 0);
        assert_eq!(f80_class(F80 { signif: 1, se: 0 }), 0b110);
        assert_eq!(f80_class(F80_DEFAULT_NAN), 0b001);
        assert_eq!(
            f80_cmp(&mut c, f80_from_i64(-1), f80_from_i64(0), false),
            Cmp::Lt
        );
        // 2^-16382 * 2^-1 rounds to a denormal with the integer bit clear.
        let r = f80_mul(
            &mut c,
            F80 {
                signif: INT_BIT,
                se: 1,
            },
            F80 {
                signif: INT_BIT,
                se: 0x3ffe,
            },
        );
        assert_eq!(
            r,
            F80 {
                signif: 1 << 62,
                se: 0
            }
        );
    }

    /// Behaviours determined against the hardware (see the module docs).
    #[test]
    fn hardware_rules() {
        // Tininess after rounding: (1 - 2^-23) * (1 + 2^-23) * 2^-126 = (1 - 2^-46) * 2^-126
        // rounds (unbounded exponent) to 2^-126 in nearest mode: not tiny, so no UE and
        // no FTZ flush. Towards zero it stays below: tiny, flushed with UE|PE.
        let (a, b) = (0x3f7f_fffe, 0x0080_0001);
        let mut c = Ctx::sse(0x1f80 | 0x8000);
        assert_eq!(f32_mul(&mut c, a, b), 0x0080_0000);
        assert_eq!(c.flags, PE);
        let mut c = Ctx::sse(0x1f80 | 0x8000 | 0x6000);
        assert_eq!(f32_mul(&mut c, a, b), 0);
        assert_eq!(c.flags, UE | PE);
        let mut c = Ctx::sse(0x1f80 | 0x6000);
        assert_eq!(f32_mul(&mut c, a, b), 0x007f_ffff);
        assert_eq!(c.flags, UE | PE);
        // Division by zero and invalid operations suppress DE.
        let mut c = Ctx::sse(0x1f80);
        assert_eq!(f32_div(&mut c, 1, 0), 0x7f80_0000);
        assert_eq!(c.flags, ZE);
        let mut c = Ctx::x87(0x37f);
        assert_eq!(
            f80_sqrt(
                &mut c,
                F80 {
                    signif: 1,
                    se: 0x8000
                }
            ),
            F80_DEFAULT_NAN
        );
        assert_eq!(c.flags, IE);
        // MINSS under DAZ returns the flushed operand.
        let mut c = Ctx::sse(0x1f80 | 0x40);
        assert_eq!(f32_min(&mut c, 0x8000_0001, f32b(1.0)), 0x8000_0000);
        assert_eq!(c.flags, 0);
        // FPREM partial remainder: d = 100 reduces by a multiple of b * 2^64.
        let mut c = Ctx::x87(0x37f);
        let a = F80 {
            signif: 0xC000_0000_0000_0000,
            se: 0x3fff + 100,
        };
        let (r, q, inc) = f80_rem(
            &mut c,
            a,
            F80 {
                signif: 0xE000_0000_0000_0000,
                se: 0x3fff,
            },
            false,
        );
        assert!(inc && q == 0);
        assert!((r.se & 0x7fff) <= 0x3fff + 64 && (r.se & 0x7fff) > 0x3fff + 32);
        // x87 precision control rounds denormals at the fixed position of the precision.
        let mut c = Ctx::x87(0x007f);
        let r = f80_mul(
            &mut c,
            F80 {
                signif: INT_BIT,
                se: 1,
            },
            F80 {
                signif: INT_BIT | 1 << 33,
                se: 0x3ffe,
            },
        );
        assert_eq!(
            r,
            F80 {
                signif: 1 << 62,
                se: 0
            }
        );
        assert_eq!(c.flags, UE | PE);
        // FXAM: pseudo-denormal is denormal, unnormal unsupported.
        assert_eq!(
            f80_class(F80 {
                signif: INT_BIT,
                se: 0
            }),
            0b110
        );
        assert_eq!(
            f80_class(F80 {
                signif: 1,
                se: 0x4000
            }),
            0b000
        );
        // Stores and integer conversions raise no DE.
        let mut c = Ctx::x87(0x37f);
        assert_eq!(f80_to_f32(&mut c, F80 { signif: 1, se: 0 }), 0);
        assert_eq!(c.flags, UE | PE);
    }

    #[test]
    fn isqrt_exact() {
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut cases = vec![
            u128::MAX,
            1 << 126,
            (1 << 127) + 12345,
            (1 << 126) - 1 + (1 << 126),
        ];
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let hi = x | 1 << 62;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push((hi as u128) << 64 | x as u128);
            let r = hi as u128;
            cases.push(r * r);
            cases.push(r * r - 1);
        }
        for n in cases {
            if n < 1 << 126 {
                continue;
            }
            let (r, rem) = isqrt(n);
            let r = r as u128;
            assert!(r * r <= n && n - r * r == rem);
            assert!((r + 1).checked_mul(r + 1).is_none_or(|s| s > n));
        }
    }
}
