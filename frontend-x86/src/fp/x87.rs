//! The x87 FPU: register stack, tags, status and control words, and every instruction's
//! semantics over [`soft`](super::soft) 80-bit arithmetic, as one helper (`x87`).
//!
//! Translated code loads a memory source into `G_FPTMP` before the call (so a fault
//! leaves the FPU untouched). A store is split in two: the helper computes the value to
//! store and the status word it would leave into `G_FPTMP..` without changing anything
//! ([`Op::StPrep`]), the generated code stores it, then [`Op::StCommit`] applies the status
//! word and the pop.
//!
//! Exceptions: flags accumulate in FSW; an unmasked one sets ES and B and is reported
//! (#MF) by the next waiting x87 instruction, which the translator checks inline.
//! Destination writes follow the masked responses.

use jit::Env;

use super::soft::{self, Cmp, Ctx, F80, F80_DEFAULT_NAN};
use crate::state::*;

/// FSW bits.
pub mod sw {
    pub const IE: u64 = 1;
    pub const SF: u64 = 1 << 6;
    pub const ES: u64 = 1 << 7;
    pub const C0: u64 = 1 << 8;
    pub const C1: u64 = 1 << 9;
    pub const C2: u64 = 1 << 10;
    pub const TOP: u64 = 7 << 11;
    pub const C3: u64 = 1 << 14;
    pub const B: u64 = 1 << 15;
    pub const CC: u64 = C0 | C1 | C2 | C3;
}

/// Helper operations (a0 bits 0..7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Push a value: `Src` in a0 bits 16..23 says which (memory, ST(i) or a constant).
    Load = 0,
    /// Arithmetic: kind in bits 16..19 (`Arith`), source `Src` in bits 20..27;
    /// destination ST(i) (i in bits 8..11) when bit 28 is set, else ST0; pop (bit 12).
    Arith,
    /// Compare ST0 with a source: bit 16 quiet (FUCOM), `Src` in bits 20..27; pops in 12..13.
    Com,
    /// FCOMI/FUCOMI: returns RFLAGS bits; bit 16 quiet; pop in bit 12.
    Comi,
    /// Compute a store of ST0 (kind in bits 16..23: `Store`) into G_FPTMP (value),
    /// G_FPTMP+1 (high part for m80), G_FPTMP+2 (new FSW). For FST ST(i) the store is
    /// done directly (no memory); bit 24: FSTPNCE (no stack check).
    StPrep,
    /// Apply G_FPTMP+2 as FSW, then pop if bit 12.
    StCommit,
    /// One-operand operations on ST0 (kind in bits 16..23: `Unary`).
    Unary,
    Xch,
    Free,
    /// FFREEP
    FreeP,
    Incstp,
    Decstp,
    Init,
    Clex,
    /// FCMOVcc: bit 16 = condition true.
    Cmov,
    /// FLDCW: the value in G_FPTMP.
    Ldcw,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Src {
    M32 = 0,
    M64,
    M80,
    I16,
    I32,
    I64,
    /// ST(i), i in a0 bits 8..11.
    St,
    Bcd,
    /// Constants 1, log2(10), log2(e), pi, log10(2), ln(2), 0.
    C1,
    CL2T,
    CL2E,
    CPi,
    CLG2,
    CLN2,
    CZero,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Arith {
    Add = 0,
    Mul,
    Sub,
    SubR,
    Div,
    DivR,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Store {
    M32 = 0,
    M64,
    M80,
    I16,
    I32,
    I64,
    /// FISTTP (truncating)
    T16,
    T32,
    T64,
    Bcd,
    /// FST ST(i) (i in bits 8..11)
    St,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Unary {
    Chs = 0,
    Abs,
    Tst,
    Xam,
    Sqrt,
    Rndint,
    Scale,
    Xtract,
    Prem,
    Prem1,
    /// The transcendentals (see [`soft::trans`]).
    F2xm1,
    Sin,
    Cos,
    Ptan,
    Sincos,
    /// ST1 := f(ST0, ST1), pop.
    Yl2x,
    Yl2xp1,
    Patan,
}

struct Fpu<'a> {
    e: &'a mut Env,
}

impl Fpu<'_> {
    fn sw(&self) -> u64 {
        self.e.g[G_FSW as usize]
    }
    fn set_sw(&mut self, v: u64) {
        self.e.g[G_FSW as usize] = v;
    }
    fn top(&self) -> usize {
        (self.sw() >> 11 & 7) as usize
    }
    fn set_top(&mut self, t: usize) {
        let s = self.sw() & !sw::TOP | ((t as u64 & 7) << 11);
        self.set_sw(s);
    }
    fn phys(&self, i: usize) -> usize {
        (self.top() + i) & 7
    }
    fn empty(&self, i: usize) -> bool {
        self.e.g[G_FTW as usize] >> self.phys(i) & 1 == 0
    }
    fn get(&self, i: usize) -> F80 {
        let r = self.phys(i);
        F80 {
            signif: self.e.g[G_FPR0 as usize + 2 * r],
            se: self.e.g[G_FPR0 as usize + 2 * r + 1] as u16,
        }
    }
    fn set(&mut self, i: usize, v: F80) {
        let r = self.phys(i);
        self.e.g[G_FPR0 as usize + 2 * r] = v.signif;
        self.e.g[G_FPR0 as usize + 2 * r + 1] = v.se as u64;
        self.e.g[G_FTW as usize] |= 1 << r;
    }
    fn fcw(&self) -> u16 {
        self.e.g[G_FCW as usize] as u16
    }
    fn ctx(&self) -> Ctx {
        Ctx::x87(self.fcw())
    }
    /// A context with the precision control ignored (everything but the basic arithmetic).
    fn ctx_ext(&self) -> Ctx {
        let mut c = self.ctx();
        c.prec = soft::Prec::Extended;
        c
    }
    fn pop(&mut self) {
        let r = self.phys(0);
        self.e.g[G_FTW as usize] &= !(1 << r);
        let t = self.top();
        self.set_top(t + 1);
    }
    fn push(&mut self, v: F80) {
        let t = self.top();
        self.set_top(t + 7);
        self.set(0, v);
    }
    /// Merge exception flags into FSW (ES/B when one is unmasked). Returns true when an
    /// unmasked exception among `stop` occurred (the destination must not be written).
    ///
    /// As for SSE (SDM Vol. 1 §4.9.2, §8.5): an unmasked pre-computation exception (IE,
    /// DE, ZE) stops the instruction before the result is computed, so only those flags
    /// are set (no PE, UE, OE from the would-be result) and C1 is cleared.
    fn raise(&mut self, flags: u8, stop: u8) -> bool {
        let mut f = flags as u64 & 0x3f;
        let fcw = self.fcw() as u64;
        let pre = f & (soft::exc::IE | soft::exc::DE | soft::exc::ZE) as u64;
        let pre_unmasked = pre & !fcw != 0;
        if pre_unmasked {
            f = pre;
        }
        let mut s = self.sw() | f;
        let unmasked = f & !fcw & 0x3f;
        if unmasked != 0 {
            s |= sw::ES | sw::B;
        }
        if pre_unmasked && unmasked & stop as u64 != 0 {
            s &= !sw::C1;
        }
        self.set_sw(s);
        unmasked & stop as u64 != 0
    }
    /// Stack fault: IE|SF, C1 = overflow. Returns true if IE is unmasked.
    fn stack_fault(&mut self, overflow: bool) -> bool {
        let r = self.raise(soft::exc::IE, soft::exc::IE);
        let s = self.sw() & !sw::C1 | sw::SF | if overflow { sw::C1 } else { 0 };
        self.set_sw(s);
        r
    }
    fn set_cc(&mut self, c3: bool, c2: bool, c1: bool, c0: bool) {
        let s = self.sw() & !sw::CC
            | (c3 as u64) << 14
            | (c2 as u64) << 10
            | (c1 as u64) << 9
            | (c0 as u64) << 8;
        self.set_sw(s);
    }
    fn set_c1(&mut self, c1: bool) {
        let s = self.sw() & !sw::C1 | (c1 as u64) << 9;
        self.set_sw(s);
    }
}

fn tmp(e: &Env, k: usize) -> u64 {
    e.g[G_FPTMP as usize + k]
}

/// Value of a source operand (memory in G_FPTMP, a register, or a constant), or None on
/// stack underflow. Conversions raise into `c`.
fn source(f: &Fpu, c: &mut Ctx, src: u8, sti: usize) -> Option<F80> {
    let t0 = tmp(f.e, 0);
    Some(match src {
        x if x == Src::M32 as u8 => soft::f80_from_f32(c, t0 as u32),
        x if x == Src::M64 as u8 => soft::f80_from_f64(c, t0),
        x if x == Src::M80 as u8 => F80 {
            signif: t0,
            se: tmp(f.e, 1) as u16,
        },
        x if x == Src::I16 as u8 => soft::f80_from_i64(t0 as u16 as i16 as i64),
        x if x == Src::I32 as u8 => soft::f80_from_i64(t0 as u32 as i32 as i64),
        x if x == Src::I64 as u8 => soft::f80_from_i64(t0 as i64),
        x if x == Src::Bcd as u8 => from_bcd(t0, tmp(f.e, 1) as u16),
        x if x == Src::St as u8 => {
            if f.empty(sti) {
                return None;
            }
            f.get(sti)
        }
        x => constant(x, c.rc),
    })
}

/// An arithmetic or compare source operand, or None on stack underflow: m32/m64 values
/// unconverted (see [`soft::f80_operand_f32`]) with whether they were denormal.
fn operand(f: &Fpu, src: u8, sti: usize) -> Option<(F80, bool)> {
    let t0 = tmp(f.e, 0);
    match src {
        x if x == Src::M32 as u8 => Some(soft::f80_operand_f32(t0 as u32)),
        x if x == Src::M64 as u8 => Some(soft::f80_operand_f64(t0)),
        _ => {
            let mut c = f.ctx_ext();
            source(f, &mut c, src, sti).map(|v| (v, false))
        }
    }
}

/// FLD1, FLDL2T...: the constants rounded per RC as the hardware does (the 66-bit
/// internal constant rounded to 64 bits).
fn constant(k: u8, rc: soft::Rc) -> F80 {
    // (significand, exponent, round-down adjustment for RC down/zero, up adjustment)
    let (sig, se, dn, up): (u64, u16, i64, i64) = match k {
        x if x == Src::C1 as u8 => (0x8000_0000_0000_0000, 0x3fff, 0, 0),
        // log2(10) = 0xd49a784bcd1b8afe|49..: nearest rounds down; up adds one.
        x if x == Src::CL2T as u8 => (0xd49a_784b_cd1b_8afe, 0x4000, 0, 1),
        // log2(e) = 0xb8aa3b295c17f0bb|be..: nearest rounds up (0xbc); down/zero 0xbb.
        x if x == Src::CL2E as u8 => (0xb8aa_3b29_5c17_f0bc, 0x3fff, -1, 0),
        // pi = 0xc90fdaa22168c234|c4..: nearest 0x35; down/zero 0x34.
        x if x == Src::CPi as u8 => (0xc90f_daa2_2168_c235, 0x4000, -1, 0),
        // log10(2) = 0x9a209a84fbcff798|8f..: nearest 0x99; down/zero 0x98.
        x if x == Src::CLG2 as u8 => (0x9a20_9a84_fbcf_f799, 0x3ffd, -1, 0),
        // ln(2) = 0xb17217f7d1cf79ab|c9..: nearest 0xac; down/zero 0xab.
        x if x == Src::CLN2 as u8 => (0xb172_17f7_d1cf_79ac, 0x3ffe, -1, 0),
        _ => (0, 0, 0, 0),
    };
    let adj = match rc {
        soft::Rc::Down | soft::Rc::Zero => dn,
        soft::Rc::Up => up,
        soft::Rc::Nearest => 0,
    };
    F80 {
        signif: (sig as i64 + adj) as u64,
        se,
    }
}

fn from_bcd(lo: u64, hi: u16) -> F80 {
    let mut v: i64 = 0;
    let digits = |x: u64, n: usize| -> i64 {
        let mut r = 0i64;
        for i in (0..n).rev() {
            r = r * 10 + ((x >> (4 * i)) & 0xf) as i64;
        }
        r
    };
    v += digits((hi & 0xff) as u64, 2) * 10i64.pow(16) + digits(lo, 16);
    let r = soft::f80_from_i64(v);
    if hi & 0x8000 != 0 {
        F80 {
            se: r.se | 0x8000,
            ..r
        }
    } else {
        r
    }
}

/// FBSTP: the packed BCD of the rounded integer, or the indefinite with IE.
fn to_bcd(c: &mut Ctx, v: F80) -> (u64, u16) {
    let mut c2 = *c;
    let i = soft::f80_to_int(&mut c2, v, 8, false) as i64;
    let neg = v.se & 0x8000 != 0;
    let mag = i.unsigned_abs();
    if c2.flags & soft::exc::IE != 0 || mag >= 1_000_000_000_000_000_000 {
        c.flags |= soft::exc::IE;
        return (0xc000_0000_0000_0000, 0xffff);
    }
    c.flags |= c2.flags;
    let mut m = mag;
    let mut lo = 0u64;
    for k in 0..16 {
        lo |= (m % 10) << (4 * k);
        m /= 10;
    }
    let hi = ((m % 10) | (m / 10 % 10) << 4) as u16 | if neg { 0x8000 } else { 0 };
    (lo, hi)
}

/// Run an operation, setting C1 to "rounded up" (the magnitude was increased by rounding).
fn rounded<T: Copy + PartialEq>(
    c: &mut Ctx,
    op: impl Fn(&mut Ctx) -> T,
    mag: impl Fn(T) -> u128,
) -> (T, bool) {
    c.up = false;
    let r = op(c);
    if c.flags & soft::exc::PE == 0 {
        return (r, false);
    }
    if c.up {
        return (r, true);
    }
    // Operations that round outside the soft-float's common rounding step: compare with
    // the result truncated.
    let mut z = *c;
    z.rc = soft::Rc::Zero;
    z.flags = 0;
    let t = op(&mut z);
    (r, mag(r) > mag(t))
}

fn mag80(v: F80) -> u128 {
    ((v.se & 0x7fff) as u128) << 64 | v.signif as u128
}

fn arith(c: &mut Ctx, k: u8, a: F80, b: F80, den: bool) -> F80 {
    use soft::BinOp as B;
    match k {
        x if x == Arith::Add as u8 => soft::f80_binop(c, B::Add, a, b, den),
        x if x == Arith::Mul as u8 => soft::f80_binop(c, B::Mul, a, b, den),
        x if x == Arith::Sub as u8 => soft::f80_binop(c, B::Sub, a, b, den),
        x if x == Arith::SubR as u8 => soft::f80_binop(c, B::Sub, b, a, den),
        x if x == Arith::Div as u8 => soft::f80_binop(c, B::Div, a, b, den),
        _ => soft::f80_binop(c, B::Div, b, a, den),
    }
}

/// Flags that stop the destination write when unmasked.
const STOP: u8 = soft::exc::IE | soft::exc::DE | soft::exc::ZE;

fn cmp_cc(f: &mut Fpu, r: Cmp) {
    let (c3, c2, c0) = match r {
        Cmp::Gt => (false, false, false),
        Cmp::Lt => (false, false, true),
        Cmp::Eq => (true, false, false),
        Cmp::Unordered => (true, true, true),
    };
    f.set_cc(c3, c2, false, c0);
}

/// The `x87` helper. See [`Op`] for the a0 encoding; returns RFLAGS bits for FCOMI.
pub unsafe extern "C" fn helper_x87(env: *mut Env, a0: u64, _: u64, _: u64, _: u64) -> u64 {
    // SAFETY: helper contract.
    let e = unsafe { crate::helpers::env_mut(env) };
    let mut f = Fpu { e };
    let op = (a0 & 0xff) as u8;
    let sti = (a0 >> 8 & 7) as usize;
    let pops = (a0 >> 12 & 3) as usize;
    let sub = (a0 >> 16 & 0xff) as u8;
    match op {
        x if x == Op::Load as u8 => {
            let mut c = f.ctx_ext();
            let v = source(&f, &mut c, sub, sti);
            // An empty source register is a stack underflow (checked first: the
            // indefinite is pushed whatever ST7 holds); a push onto a non-empty register
            // is a stack overflow.
            match v {
                None => {
                    if !f.stack_fault(false) {
                        f.push(F80_DEFAULT_NAN);
                    }
                }
                Some(_) if !f.empty(7) => {
                    if !f.stack_fault(true) {
                        f.push(F80_DEFAULT_NAN);
                    }
                }
                Some(v) => {
                    // A denormal m32/m64 is loaded even when DE is unmasked (the
                    // exception is then pending); only IE stops the load.
                    if f.raise(c.flags, soft::exc::IE) {
                        return 0;
                    }
                    f.set_c1(false);
                    f.push(v);
                }
            }
        }
        x if x == Op::Arith as u8 => {
            let kind = sub & 0xf;
            let src = (a0 >> 20 & 0xff) as u8;
            let to_sti = a0 & (1 << 28) != 0;
            let dst = if to_sti { sti } else { 0 };
            let mut c = f.ctx();
            // Operands: ST0 op source (or ST(i) op ST0 for the reversed-destination forms).
            let a = if f.empty(0) { None } else { Some(f.get(0)) };
            let b = operand(&f, src, sti);
            let (Some(a), Some((b, den))) = (a, b) else {
                if !f.stack_fault(false) {
                    f.set(dst, F80_DEFAULT_NAN);
                    for _ in 0..pops {
                        f.pop();
                    }
                }
                return 0;
            };
            let (x, y) = if to_sti { (b, a) } else { (a, b) };
            let (r, up) = rounded(&mut c, |c| arith(c, kind, x, y, den), mag80);
            if f.raise(c.flags, STOP) {
                return 0;
            }
            f.set_c1(up);
            f.set(dst, r);
            for _ in 0..pops {
                f.pop();
            }
        }
        x if x == Op::Com as u8 || x == Op::Comi as u8 => {
            let quiet = sub & 1 != 0;
            let src = if op == Op::Comi as u8 {
                Src::St as u8
            } else {
                (a0 >> 20 & 0xff) as u8
            };
            let mut c = f.ctx_ext();
            let a = if f.empty(0) { None } else { Some(f.get(0)) };
            let b = operand(&f, src, sti);
            let (r, stopped) = match (a, b) {
                (Some(a), Some((b, den))) => {
                    let r = soft::f80_cmp_den(&mut c, a, b, !quiet, den);
                    // FCOMI keeps C1 even with an unmasked exception (see below).
                    let c1 = f.sw() & sw::C1;
                    let stopped = f.raise(c.flags, STOP);
                    if op == Op::Comi as u8 {
                        let s = f.sw() & !sw::C1 | c1;
                        f.set_sw(s);
                    }
                    (r, stopped)
                }
                _ => (Cmp::Unordered, f.stack_fault(false)),
            };
            // An unmasked exception (stack underflow included): the hardware still sets
            // the condition codes (FCOM) or EFLAGS (FCOMI) to the result, unordered for
            // NaNs and empty registers, but does not pop.
            let pops = if stopped { 0 } else { pops };
            let ret = if op == Op::Comi as u8 {
                // C1 is left as it was (0 after a stack underflow). The SDM's FCOMI page
                // says "C1: set to 0"; AMD processors leave it unchanged, and so do we
                // (the differential suite runs on AMD; C1 carries nothing here).
                match r {
                    Cmp::Gt => 0,
                    Cmp::Lt => fl::CF,
                    Cmp::Eq => fl::ZF,
                    Cmp::Unordered => fl::ZF | fl::PF | fl::CF,
                }
            } else {
                cmp_cc(&mut f, r);
                0
            };
            for _ in 0..pops {
                f.pop();
            }
            return ret;
        }
        x if x == Op::StPrep as u8 && sub == Store::St as u8 && a0 & 1 << 24 != 0 && f.empty(0) => {
            // FSTPNCE (D9 D8+i, "FSTP1"): with ST0 empty the processor only pops, with no
            // stack-underflow exception (observed on AMD; the SDM does not document the
            // encoding). C1 is cleared.
            f.set_c1(false);
            f.pop();
        }
        x if x == Op::StPrep as u8 => {
            let saved = f.sw();
            let mut c = f.ctx_ext();
            let v = if f.empty(0) { None } else { Some(f.get(0)) };
            let (lo, hi, up, stop) = match v {
                None => {
                    let stop = f.stack_fault(false);
                    let (lo, hi) = match sub {
                        s if s == Store::M32 as u8 => (soft::F32_DEFAULT_NAN as u64, 0),
                        s if s == Store::M64 as u8 => (soft::F64_DEFAULT_NAN, 0),
                        s if s == Store::M80 as u8 || s == Store::St as u8 => {
                            (F80_DEFAULT_NAN.signif, F80_DEFAULT_NAN.se as u64)
                        }
                        s if s == Store::I16 as u8 || s == Store::T16 as u8 => (0x8000, 0),
                        s if s == Store::I32 as u8 || s == Store::T32 as u8 => (0x8000_0000, 0),
                        s if s == Store::Bcd as u8 => (0xc000_0000_0000_0000, 0xffff),
                        _ => (0x8000_0000_0000_0000, 0),
                    };
                    (lo, hi, false, stop)
                }
                Some(v) => {
                    let (lo, hi, up) = match sub {
                        s if s == Store::M32 as u8 => {
                            let (r, up) = rounded(
                                &mut c,
                                |c| soft::f80_to_f32(c, v),
                                |r| (r & 0x7fff_ffff) as u128,
                            );
                            (r as u64, 0, up)
                        }
                        s if s == Store::M64 as u8 => {
                            let (r, up) = rounded(
                                &mut c,
                                |c| soft::f80_to_f64(c, v),
                                |r| (r & !(1 << 63)) as u128,
                            );
                            (r, 0, up)
                        }
                        s if s == Store::M80 as u8 || s == Store::St as u8 => {
                            (v.signif, v.se as u64, false)
                        }
                        s if s == Store::Bcd as u8 => {
                            let (lo, hi) = to_bcd(&mut c, v);
                            // C1: rounded up in magnitude (as for the integer stores).
                            let up =
                                c.flags & soft::exc::IE == 0 && c.flags & soft::exc::PE != 0 && {
                                    let (mut n, mut z) = (c, c);
                                    z.rc = soft::Rc::Zero;
                                    let r = soft::f80_to_int(&mut n, v, 8, false) as i64;
                                    let t = soft::f80_to_int(&mut z, v, 8, true) as i64;
                                    r.unsigned_abs() > t.unsigned_abs()
                                };
                            (lo, hi as u64, up)
                        }
                        s => {
                            let (bytes, trunc) = match s {
                                s if s == Store::I16 as u8 => (2, false),
                                s if s == Store::I32 as u8 => (4, false),
                                s if s == Store::I64 as u8 => (8, false),
                                s if s == Store::T16 as u8 => (2, true),
                                s if s == Store::T32 as u8 => (4, true),
                                _ => (8, true),
                            };
                            let r = soft::f80_to_int(&mut c, v, bytes, trunc);
                            // C1 for integer stores: rounded up in magnitude.
                            let up = c.flags & soft::exc::PE != 0 && {
                                let mut z = c;
                                z.rc = soft::Rc::Zero;
                                let t = soft::f80_to_int(&mut z, v, bytes, true);
                                let sx = |x: u64| -> i64 {
                                    (x << (64 - 8 * bytes)) as i64 >> (64 - 8 * bytes)
                                };
                                sx(r).unsigned_abs() > sx(t).unsigned_abs()
                            };
                            (r, 0, up)
                        }
                    };
                    // An unmasked overflow or underflow stores nothing, so there is no
                    // inexact result either: PE is not raised.
                    let post = (soft::exc::OE | soft::exc::UE) as u16;
                    if c.flags as u16 & post & !f.fcw() != 0 {
                        c.flags &= !soft::exc::PE;
                    }
                    let stop = f.raise(
                        c.flags,
                        soft::exc::IE | soft::exc::DE | soft::exc::OE | soft::exc::UE,
                    );
                    // With an unmasked exception nothing is stored and C1 is cleared.
                    f.set_c1(up && !stop);
                    (lo, hi, up, stop)
                }
            };
            let _ = up;
            let new_sw = f.sw();
            f.set_sw(saved);
            let e = &mut *f.e;
            e.g[G_FPTMP as usize] = lo;
            e.g[G_FPTMP as usize + 1] = hi;
            e.g[G_FPTMP as usize + 2] = new_sw;
            // Bit 0 of the return: the store must not happen (unmasked exception).
            if sub == Store::St as u8 {
                // FST ST(i): no memory side, the status word applies either way.
                f.set_sw(new_sw);
                if !stop {
                    f.set(
                        sti,
                        F80 {
                            signif: lo,
                            se: hi as u16,
                        },
                    );
                    for _ in 0..pops {
                        f.pop();
                    }
                }
            }
            return stop as u64;
        }
        x if x == Op::StCommit as u8 => {
            let s = tmp(f.e, 2);
            f.set_sw(s);
            for _ in 0..pops {
                f.pop();
            }
        }
        x if x == Op::Unary as u8 => unary(&mut f, sub),
        x if x == Op::Xch as u8 => {
            if f.empty(0) || f.empty(sti) {
                if f.stack_fault(false) {
                    return 0;
                }
                let (a, b) = (
                    if f.empty(0) {
                        F80_DEFAULT_NAN
                    } else {
                        f.get(0)
                    },
                    if f.empty(sti) {
                        F80_DEFAULT_NAN
                    } else {
                        f.get(sti)
                    },
                );
                f.set(0, b);
                f.set(sti, a);
                return 0;
            }
            let (a, b) = (f.get(0), f.get(sti));
            f.set(0, b);
            f.set(sti, a);
            f.set_c1(false);
        }
        x if x == Op::Free as u8 || x == Op::FreeP as u8 => {
            let r = f.phys(sti);
            f.e.g[G_FTW as usize] &= !(1 << r);
            // C0..C3 are undefined; AMD clears C1 (and so do we).
            f.set_c1(false);
            if op == Op::FreeP as u8 {
                f.pop();
            }
        }
        x if x == Op::Incstp as u8 => {
            let t = f.top();
            f.set_top(t + 1);
            f.set_c1(false);
        }
        x if x == Op::Decstp as u8 => {
            let t = f.top();
            f.set_top(t + 7);
            f.set_c1(false);
        }
        x if x == Op::Init as u8 => super::state::fninit(f.e),
        x if x == Op::Clex as u8 => {
            let s = f.sw() & !(0x3f | sw::SF | sw::ES | sw::B);
            f.set_sw(s);
        }
        x if x == Op::Cmov as u8 => {
            // Stack underflow (either register empty): the masked response writes the
            // indefinite to ST0 whether or not the condition holds. Otherwise C1 is left
            // alone (SDM: "C1: set to 0 if stack underflow occurred").
            if f.empty(sti) || f.empty(0) {
                if !f.stack_fault(false) {
                    f.set(0, F80_DEFAULT_NAN);
                }
                return 0;
            }
            if sub & 1 != 0 {
                let v = f.get(sti);
                f.set(0, v);
            }
        }
        x if x == Op::Ldcw as u8 => {
            f.e.g[G_FCW as usize] = super::state::normalize_fcw(tmp(f.e, 0));
            // Unmasking a pending exception makes it pending for the next instruction.
            let s = f.sw();
            let pending = s & 0x3f & !(tmp(f.e, 0)) != 0;
            f.set_sw(if pending {
                s | sw::ES | sw::B
            } else {
                s & !(sw::ES | sw::B)
            });
        }
        _ => {}
    }
    0
}

fn unary(f: &mut Fpu, k: u8) {
    use Unary as U;
    if k == U::Xam as u8 {
        let neg = f.get(0).se & 0x8000 != 0;
        if f.empty(0) {
            f.set_cc(true, false, neg, true);
        } else {
            let c = soft::f80_class(f.get(0));
            f.set_cc(c & 4 != 0, c & 2 != 0, neg, c & 1 != 0);
        }
        return;
    }
    let binary_pop = k == U::Yl2x as u8 || k == U::Yl2xp1 as u8 || k == U::Patan as u8;
    let needs_st1 = k == U::Scale as u8 || k == U::Prem as u8 || k == U::Prem1 as u8 || binary_pop;
    if f.empty(0) || (needs_st1 && f.empty(1)) {
        if binary_pop {
            // As the popping arithmetic: ST1 := indefinite, pop.
            if !f.stack_fault(false) {
                f.set(1, F80_DEFAULT_NAN);
                f.pop();
            }
            return;
        }
        if k == U::Sin as u8 || k == U::Cos as u8 || k == U::Ptan as u8 || k == U::Sincos as u8 {
            let s = f.sw() & !sw::C2;
            f.set_sw(s);
        }
        if k == U::Ptan as u8 || k == U::Sincos as u8 {
            // Two results: the indefinite in both (as FXTRACT).
            if !f.stack_fault(false) {
                f.set(0, F80_DEFAULT_NAN);
                f.push(F80_DEFAULT_NAN);
            }
            return;
        }
        if k == U::Prem as u8 || k == U::Prem1 as u8 {
            // No quotient: C2 = 0 (C1 = 0 from the stack fault); C0 and C3 are left
            // alone, whether IE is masked or not.
            let s = f.sw() & !sw::C2;
            f.set_sw(s);
        }
        let stopped = f.stack_fault(false);
        if k == U::Tst as u8 {
            // Unordered, even when the exception is unmasked (as FCOM).
            f.set_cc(true, true, false, true);
        }
        if stopped {
            return;
        }
        if k == U::Tst as u8 {
        } else if k == U::Prem as u8 || k == U::Prem1 as u8 {
            f.set(0, F80_DEFAULT_NAN);
        } else if k == U::Xtract as u8 {
            // Both results are the indefinite; the push does not check ST7.
            f.set(0, F80_DEFAULT_NAN);
            f.push(F80_DEFAULT_NAN);
        } else {
            f.set(0, F80_DEFAULT_NAN);
        }
        return;
    }
    let a = f.get(0);
    if k >= U::F2xm1 as u8 {
        return transcendental(f, k, a);
    }
    match k {
        x if x == U::Chs as u8 => {
            f.set(
                0,
                F80 {
                    se: a.se ^ 0x8000,
                    ..a
                },
            );
            f.set_c1(false);
        }
        x if x == U::Abs as u8 => {
            f.set(
                0,
                F80 {
                    se: a.se & 0x7fff,
                    ..a
                },
            );
            f.set_c1(false);
        }
        x if x == U::Tst as u8 => {
            let mut c = f.ctx_ext();
            let r = soft::f80_cmp(&mut c, a, F80 { signif: 0, se: 0 }, true);
            f.raise(c.flags, STOP);
            cmp_cc(f, r);
        }
        x if x == U::Sqrt as u8 || x == U::Rndint as u8 => {
            let mut c = if k == U::Sqrt as u8 {
                f.ctx()
            } else {
                f.ctx_ext()
            };
            let (r, up) = rounded(
                &mut c,
                |c| {
                    if k == U::Sqrt as u8 {
                        soft::f80_sqrt(c, a)
                    } else {
                        soft::f80_round_int(c, a)
                    }
                },
                mag80,
            );
            if f.raise(c.flags, STOP) {
                return;
            }
            f.set_c1(up);
            f.set(0, r);
        }
        x if x == U::Scale as u8 => {
            let b = f.get(1);
            let mut c = f.ctx_ext();
            let (r, up) = rounded(&mut c, |c| soft::f80_scale(c, a, b), mag80);
            if f.raise(c.flags, STOP) {
                return;
            }
            f.set_c1(up);
            f.set(0, r);
        }
        x if x == U::Xtract as u8 => {
            if !f.empty(7) {
                if !f.stack_fault(true) {
                    f.set(0, F80_DEFAULT_NAN);
                    f.push(F80_DEFAULT_NAN);
                }
                return;
            }
            let mut c = f.ctx_ext();
            let (ex, sig) = soft::f80_xtract(&mut c, a);
            if f.raise(c.flags, STOP) {
                return;
            }
            f.set_c1(false);
            f.set(0, ex);
            f.push(sig);
        }
        _ => {
            // FPREM / FPREM1
            let b = f.get(1);
            let mut c = f.ctx_ext();
            let (r, q, incomplete) = soft::f80_rem(&mut c, a, b, k == U::Prem1 as u8);
            // A NaN or unsupported operand, or an invalid operation: no quotient; the
            // hardware clears C1 and C2 and leaves C0 and C3 alone (as on stack underflow).
            let special =
                soft::f80_class(a) <= 1 || soft::f80_class(b) <= 1 || c.flags & soft::exc::IE != 0;
            // So does an unmasked exception (the destination is left alone).
            let unmasked = c.flags as u64 & !(f.fcw() as u64) & STOP as u64 != 0;
            if special || unmasked {
                let s = f.sw() & !(sw::C1 | sw::C2);
                f.set_sw(s);
            }
            if f.raise(c.flags, STOP) {
                return;
            }
            f.set(0, r);
            if special {
            } else if incomplete {
                let s = f.sw() & !sw::CC | sw::C2;
                f.set_sw(s);
            } else {
                // Q2 -> C0, Q1 -> C3, Q0 -> C1.
                f.set_cc(q & 2 != 0, false, q & 1 != 0, q & 4 != 0);
            }
        }
    }
}

/// F2XM1, FSIN, FCOS, FPTAN, FSINCOS, FYL2X, FYL2XP1, FPATAN with ST0 (and ST1 for the
/// binary ones) present. C1 is "rounded up"; FSIN/FCOS/FPTAN/FSINCOS set C2 when the
/// operand is outside ±2^63 (and then change nothing else).
fn transcendental(f: &mut Fpu, k: u8, a: F80) {
    use soft::trans::{self, Trig};
    use Unary as U;
    let mut c = f.ctx_ext();
    // C2 = 1 (out of range) also clears C1.
    let set_c2 = |f: &mut Fpu, v: bool| {
        let s = f.sw() & !sw::C2 | if v { sw::C2 } else { 0 };
        f.set_sw(if v { s & !sw::C1 } else { s });
    };
    match k {
        x if x == U::F2xm1 as u8 => {
            let r = trans::f2xm1(&mut c, a);
            if f.raise(c.flags, STOP) {
                return;
            }
            f.set_c1(c.up);
            f.set(0, r);
        }
        x if x == U::Sin as u8 || x == U::Cos as u8 => {
            let which = if k == U::Sin as u8 {
                Trig::Sin
            } else {
                Trig::Cos
            };
            let Some(r) = trans::ftrig(&mut c, a, which) else {
                set_c2(f, true);
                return;
            };
            set_c2(f, false);
            if f.raise(c.flags, STOP) {
                return;
            }
            f.set_c1(c.up);
            f.set(0, r);
        }
        x if x == U::Ptan as u8 || x == U::Sincos as u8 => {
            if !f.empty(7) {
                // The push would overflow: masked, both results are the indefinite.
                set_c2(f, false);
                if !f.stack_fault(true) {
                    f.set(0, F80_DEFAULT_NAN);
                    f.push(F80_DEFAULT_NAN);
                }
                return;
            }
            let r = if k == U::Ptan as u8 {
                // 1.0 is pushed after a number; a NaN result (NaN operand, invalid) is
                // pushed again instead.
                trans::ftrig(&mut c, a, Trig::Tan).map(|t| {
                    (
                        t,
                        if soft::f80_class(t) == 1 {
                            t
                        } else {
                            F80 {
                                signif: 1 << 63,
                                se: 0x3fff,
                            }
                        },
                    )
                })
            } else {
                trans::fsincos(&mut c, a)
            };
            let Some((r0, r1)) = r else {
                set_c2(f, true);
                return;
            };
            set_c2(f, false);
            if f.raise(c.flags, STOP) {
                return;
            }
            f.set_c1(c.up);
            f.set(0, r0);
            f.push(r1);
        }
        _ => {
            let y = f.get(1);
            let r = match k {
                x if x == U::Yl2x as u8 => trans::fyl2x(&mut c, a, y),
                x if x == U::Yl2xp1 as u8 => trans::fyl2xp1(&mut c, a, y),
                _ => trans::fpatan(&mut c, a, y),
            };
            if f.raise(c.flags, STOP) {
                return;
            }
            f.set_c1(c.up);
            f.set(1, r);
            f.pop();
        }
    }
}
