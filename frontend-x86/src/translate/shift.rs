//! Shifts and rotates (SHL/SAL/SHR/SAR, ROL/ROR/RCL/RCR, SHLD/SHRD, BMI2 SHLX/SHRX/SARX/RORX).

use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};
use jit::ir::{BinOp, Cond, MemSize, Temp, Val, Width};

use super::{width, Flow, Handler, Tr};
use crate::helpers::H;
use crate::state::*;

pub fn register(r: &mut impl FnMut(M, Handler)) {
    r(M::Shl, |t, i| shift(t, i, Sh::Shl));
    r(M::Sal, |t, i| shift(t, i, Sh::Shl));
    r(M::Shr, |t, i| shift(t, i, Sh::Shr));
    r(M::Sar, |t, i| shift(t, i, Sh::Sar));
    r(M::Rol, |t, i| rotate(t, i, 0));
    r(M::Ror, |t, i| rotate(t, i, 1));
    r(M::Rcl, |t, i| rotate(t, i, 2));
    r(M::Rcr, |t, i| rotate(t, i, 3));
    r(M::Shld, |t, i| shiftd(t, i, false));
    r(M::Shrd, |t, i| shiftd(t, i, true));
    r(M::Shlx, |t, i| bmi_shift(t, i, BinOp::Shl));
    r(M::Shrx, |t, i| bmi_shift(t, i, BinOp::Shr));
    r(M::Sarx, |t, i| bmi_shift(t, i, BinOp::Sar));
    r(M::Rorx, |t, i| bmi_shift(t, i, BinOp::Rotr));
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sh {
    Shl,
    Shr,
    Sar,
}

/// The shift count operand: Some(constant) or a temp, already masked to 5/6 bits.
fn count(tr: &mut Tr, insn: &Instruction, i: u32, bytes: u32) -> Result<u64, Temp> {
    let mask = if bytes == 8 { 63 } else { 31 };
    match insn.op_kind(i) {
        OpKind::Register => {
            debug_assert_eq!(insn.op_register(i), Register::CL);
            let c = tr.reg(Register::CL);
            Err(tr.b.and(c, Val::C(mask)))
        }
        _ => Ok(insn.immediate(i) & mask),
    }
}

fn shift(tr: &mut Tr, insn: &Instruction, kind: Sh) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let w = width(bytes);
    let dst = tr.loc_rmw(insn, 0, bytes);
    let a = tr.read_loc(dst);
    let c = count(tr, insn, 1, bytes);
    let a_ext = match kind {
        Sh::Sar if bytes < 4 => tr.b.ext(a, MemSize::from_bytes(bytes), true),
        Sh::Shr if bytes < 4 => tr.b.ext(a, MemSize::from_bytes(bytes), false),
        _ => a,
    };
    // 8/16-bit values are shifted in 32 bits: counts up to 31 behave as on hardware.
    let op = match kind {
        Sh::Shl => BinOp::Shl,
        Sh::Shr => BinOp::Shr,
        Sh::Sar => BinOp::Sar,
    };
    let ccw = if bytes == 8 { Width::W64 } else { Width::W32 };
    let cck = match kind {
        Sh::Shl => CcKind::Shl,
        Sh::Shr => CcKind::Shr,
        Sh::Sar => CcKind::Sar,
    };
    match c {
        Ok(0) => {
            // Count 0: value and flags unchanged, but a 32-bit register is still written.
            tr.write_loc(dst, a);
            Flow::Next
        }
        Ok(n) => {
            let r = tr.b.bin(op, w, a_ext, Val::C(n));
            tr.write_loc(dst, r);
            if tr.flags_live {
                let s = tr.b.bin(op, ccw, a_ext, Val::C(n - 1));
                tr.set_cc(cck, bytes, r, Val::T(s), None);
            }
            Flow::Next
        }
        Err(ct) => {
            let r = tr.b.bin(op, w, a_ext, Val::T(ct));
            tr.write_loc(dst, r);
            if tr.flags_live {
                let cm1 = tr.b.sub(ct, Val::C(1));
                let s = tr.b.bin(op, ccw, a_ext, Val::T(cm1));
                let op_new = cc_op(cck, bytes);
                let old_op = tr.b.get(G_CC_OP);
                let old_dst = tr.b.get(G_CC_DST);
                let old_src = tr.b.get(G_CC_SRC);
                let nop_ =
                    tr.b.select(Cond::Eq, ct, Val::C(0), Val::T(old_op), Val::C(op_new));
                let ndst =
                    tr.b.select(Cond::Eq, ct, Val::C(0), Val::T(old_dst), Val::T(r));
                let nsrc =
                    tr.b.select(Cond::Eq, ct, Val::C(0), Val::T(old_src), Val::T(s));
                tr.b.set(G_CC_DST, ndst);
                tr.b.set(G_CC_SRC, nsrc);
                tr.b.set(G_CC_OP, nop_);
                tr.cc_static = None;
            }
            Flow::Next
        }
    }
}

fn rotate(tr: &mut Tr, insn: &Instruction, kind: u64) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let dst = tr.loc_rmw(insn, 0, bytes);
    let a = tr.read_loc(dst);
    let c = count(tr, insn, 1, bytes);
    if kind < 2 && tr.flags_live {
        if let Ok(n) = c {
            // A constant count: zero changes no flag; otherwise the flags become lazy
            // (`CcKind::Rol`/`Ror`) when the previous operation is known and keeps no
            // state in SRC2, with no call.
            let prev = tr.cc_static.filter(|&op| {
                ![CcKind::Adc, CcKind::Sbb, CcKind::Rol, CcKind::Ror]
                    .iter()
                    .any(|&k| cc_kind(op) == k as u64)
            });
            if n == 0 || prev.is_some() {
                let r = rotate_inline(tr, a, Val::C(n), bytes, kind);
                tr.write_loc(dst, r);
                if let (Some(prev), true) = (prev, n != 0) {
                    let old_dst = tr.b.get(G_CC_DST);
                    let old_src = tr.b.get(G_CC_SRC);
                    tr.b.set(G_CC_SRC2, old_src);
                    tr.b.set(G_CC_SRC, old_dst);
                    tr.b.set(G_CC_DST, r);
                    let k = if kind == 0 { CcKind::Rol } else { CcKind::Ror };
                    tr.set_cc_op(prev << 8 | cc_op(k, bytes));
                }
                return Flow::Next;
            }
        }
    }
    if kind >= 2 || tr.flags_live {
        let cv = match c {
            Ok(n) => Val::C(n),
            Err(t) => Val::T(t),
        };
        // The helper updates the flags: do the (possibly faulting) store first by
        // computing the result without flags, then call for flags... simpler: the helper is
        // pure apart from flags, so compute, store, then commit flags by calling it again
        // is wasteful; instead compute the result inline for the store and let the helper
        // run after the store.
        let r = rotate_inline(tr, a, cv, bytes, kind);
        tr.write_loc(dst, r);
        let _ =
            tr.b.call(H.rotate, &[Val::C(bytes as u64 | kind << 8), Val::T(a), cv]);
        tr.cc_static = None;
        return Flow::Next;
    }
    let cv = match c {
        Ok(n) => Val::C(n),
        Err(t) => Val::T(t),
    };
    let r = rotate_inline(tr, a, cv, bytes, kind);
    tr.write_loc(dst, r);
    Flow::Next
}

/// Rotate result without flags. For RCL/RCR the carry is read from the current flags.
fn rotate_inline(tr: &mut Tr, a: Temp, c: Val, bytes: u32, kind: u64) -> Temp {
    let bits = bytes as u64 * 8;
    if kind >= 2 {
        // RCL/RCR: rotate the (bits+1)-bit value CF:a.
        let cf = tr.cf();
        let am = tr.b.ext(a, MemSize::from_bytes(bytes), false);
        let ct = tr.b.val(c);
        let modn = if bytes < 4 { bits + 1 } else { u64::MAX };
        let cnt = if modn != u64::MAX {
            // c % (bits+1) for c in 0..=31: at most three subtractions (31 = 3*9 + 4).
            let mut c1 = ct;
            for _ in 0..3 {
                let q = tr.b.bin(BinOp::Sub, Width::W64, c1, Val::C(modn));
                c1 =
                    tr.b.select(Cond::GeU, c1, Val::C(modn), Val::T(q), Val::T(c1));
            }
            c1
        } else {
            ct
        };
        // Build the 65-bit rotation using two 64-bit halves via u128-free arithmetic:
        // for widths < 64 the value CF:a fits in 64 bits.
        if bytes < 8 {
            let wide = tr.b.shl(cf, Val::C(bits));
            let v = tr.b.or(wide, am); // bits+1 wide
            let n = bits + 1;
            let r = if kind == 2 {
                // rotate left by cnt within n bits
                let l = tr.b.shl(v, Val::T(cnt));
                let rs = {
                    let k = tr.b.konst(n);
                    tr.b.sub(k, cnt)
                };
                let rr = tr.b.shr(v, Val::T(rs));
                let rr = tr.b.select(Cond::Eq, cnt, Val::C(0), Val::C(0), Val::T(rr));
                tr.b.or(l, rr)
            } else {
                let rr = tr.b.shr(v, Val::T(cnt));
                let ls = {
                    let k = tr.b.konst(n);
                    tr.b.sub(k, cnt)
                };
                let l = tr.b.shl(v, Val::T(ls));
                let l = tr.b.select(Cond::Eq, cnt, Val::C(0), Val::C(0), Val::T(l));
                tr.b.or(l, rr)
            };
            return tr.b.ext(r, MemSize::from_bytes(bytes), false);
        }
        // 64-bit RCL/RCR: result = (a << c) | (cf << (c-1)) | (a >> (65-c)) for c in 1..63
        let r = if kind == 2 {
            let l = tr.b.shl(am, Val::T(cnt));
            let cm1 = tr.b.sub(cnt, Val::C(1));
            let cfp = tr.b.shl(cf, Val::T(cm1));
            let s = {
                let k = tr.b.konst(65);
                tr.b.sub(k, cnt)
            };
            let rr = tr.b.shr(am, Val::T(s));
            let rr = tr.b.select(Cond::Eq, cnt, Val::C(1), Val::C(0), Val::T(rr));
            let x = tr.b.or(l, cfp);
            tr.b.or(x, rr)
        } else {
            let rr = tr.b.shr(am, Val::T(cnt));
            let s = {
                let k = tr.b.konst(64);
                tr.b.sub(k, cnt)
            };
            let cfp = tr.b.shl(cf, Val::T(s));
            let s2 = {
                let k = tr.b.konst(65);
                tr.b.sub(k, cnt)
            };
            let l = tr.b.shl(am, Val::T(s2));
            let l = tr.b.select(Cond::Eq, cnt, Val::C(1), Val::C(0), Val::T(l));
            let x = tr.b.or(rr, cfp);
            tr.b.or(x, l)
        };
        return tr.b.select(Cond::Eq, cnt, Val::C(0), Val::T(am), Val::T(r));
    }
    match bytes {
        8 | 4 => tr.b.bin(
            if kind == 0 { BinOp::Rotl } else { BinOp::Rotr },
            width(bytes),
            a,
            c,
        ),
        _ => {
            let am = tr.b.ext(a, MemSize::from_bytes(bytes), false);
            let ct = tr.b.val(c);
            let cr = tr.b.and(ct, Val::C(bits - 1));
            let inv = {
                let k = tr.b.konst(bits);
                tr.b.sub(k, cr)
            };
            let (x, y) = if kind == 0 {
                (tr.b.shl(am, Val::T(cr)), tr.b.shr(am, Val::T(inv)))
            } else {
                (tr.b.shr(am, Val::T(cr)), tr.b.shl(am, Val::T(inv)))
            };
            let r = tr.b.or(x, y);
            tr.b.ext(r, MemSize::from_bytes(bytes), false)
        }
    }
}

fn shiftd(tr: &mut Tr, insn: &Instruction, right: bool) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let dst = tr.loc_rmw(insn, 0, bytes);
    let a = tr.read_loc(dst);
    let s = tr.reg(insn.op_register(1));
    let c = count(tr, insn, 2, bytes);
    let cv = match c {
        Ok(n) => Val::C(n),
        Err(t) => Val::T(t),
    };
    // Compute the result purely (flags helper after the store for precise faults).
    let r = shiftd_inline(tr, a, s, cv, bytes, right);
    tr.write_loc(dst, r);
    let _ = tr.b.call(
        H.shiftd,
        &[
            Val::C(bytes as u64 | (right as u64) << 8),
            Val::T(a),
            Val::T(s),
            cv,
        ],
    );
    tr.cc_static = None;
    Flow::Next
}

fn shiftd_inline(tr: &mut Tr, a: Temp, s: Temp, c: Val, bytes: u32, right: bool) -> Temp {
    // Use the helper's pure computation through a call that does not touch flags would be
    // simplest; the IR form below matches it for 32/64-bit and for 16-bit counts <= 16.
    let bits = bytes as u64 * 8;
    let am = tr.b.ext(a, MemSize::from_bytes(bytes), false);
    let sm = tr.b.ext(s, MemSize::from_bytes(bytes), false);
    let ct = tr.b.val(c);
    if bytes == 2 {
        // 48-bit window as the helper does: right: (d | s<<16 | d<<32) >> c; left: ((d<<32)|(s<<16)|d) << c >> 32
        let s16 = tr.b.shl(sm, Val::C(16));
        let d32 = tr.b.shl(am, Val::C(32));
        let w1 = tr.b.or(s16, am);
        let wide = tr.b.or(w1, d32);
        let r = if right {
            tr.b.shr(wide, Val::T(ct))
        } else {
            let l = tr.b.shl(wide, Val::T(ct));
            tr.b.shr(l, Val::C(32))
        };
        let r = tr.b.ext(r, MemSize::B2, false);
        return tr.b.select(Cond::Eq, ct, Val::C(0), Val::T(am), Val::T(r));
    }
    let inv = {
        let k = tr.b.konst(bits);
        tr.b.sub(k, ct)
    };
    let r = if right {
        let x = tr.b.bin(BinOp::Shr, width(bytes), am, Val::T(ct));
        let y = tr.b.bin(BinOp::Shl, width(bytes), sm, Val::T(inv));
        tr.b.or(x, y)
    } else {
        let x = tr.b.bin(BinOp::Shl, width(bytes), am, Val::T(ct));
        let y = tr.b.bin(BinOp::Shr, width(bytes), sm, Val::T(inv));
        tr.b.or(x, y)
    };
    tr.b.select(Cond::Eq, ct, Val::C(0), Val::T(am), Val::T(r))
}

fn bmi_shift(tr: &mut Tr, insn: &Instruction, op: BinOp) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let v = tr.read_op_t(insn, 1, bytes);
    let c = if op == BinOp::Rotr {
        Val::C(insn.immediate(2) & if bytes == 8 { 63 } else { 31 })
    } else {
        let ct = tr.reg(insn.op_register(2));
        Val::T(tr.b.and(ct, Val::C(if bytes == 8 { 63 } else { 31 })))
    };
    let r = tr.b.bin(op, width(bytes), v, c);
    tr.set_reg(insn.op_register(0), r);
    Flow::Next
}
