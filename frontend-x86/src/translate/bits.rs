//! Bit tests and scans, counts, BMI1/BMI2 bit manipulation.

use iced_x86::{Instruction, Mnemonic as M, OpKind};
use jit::ir::{BinOp, Cond, MemOp, MemSize, Temp, UnOp, Val, Width};

use super::{width, Flow, Handler, Loc, Tr};
use crate::helpers::H;
use crate::state::*;

pub fn register(r: &mut impl FnMut(M, Handler)) {
    r(M::Bt, |t, i| bt(t, i, 0));
    r(M::Bts, |t, i| bt(t, i, 1));
    r(M::Btr, |t, i| bt(t, i, 2));
    r(M::Btc, |t, i| bt(t, i, 3));
    r(M::Bsf, |t, i| bscan(t, i, false));
    r(M::Bsr, |t, i| bscan(t, i, true));
    r(M::Tzcnt, |t, i| cnt(t, i, false));
    r(M::Lzcnt, |t, i| cnt(t, i, true));
    r(M::Popcnt, popcnt);
    r(M::Andn, andn);
    r(M::Bextr, bextr);
    r(M::Blsi, |t, i| bls(t, i, 0));
    r(M::Blsmsk, |t, i| bls(t, i, 1));
    r(M::Blsr, |t, i| bls(t, i, 2));
    r(M::Bzhi, bzhi);
    r(M::Pdep, |t, i| pdep(t, i, 0));
    r(M::Pext, |t, i| pdep(t, i, 1));
}

fn bt(tr: &mut Tr, insn: &Instruction, op: u8) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let bits = bytes as u64 * 8;
    let (loc, bit) = if insn.op_kind(1) == OpKind::Register {
        let off = tr.reg(insn.op_register(1));
        match insn.op_kind(0) {
            OpKind::Memory => {
                // The bit offset is a signed value selecting any bit relative to the address.
                let so = tr.b.ext(off, MemSize::from_bytes(bytes), true);
                let words = tr.b.sar(so, Val::C(bits.trailing_zeros() as u64));
                let byteoff = tr.b.shl(words, Val::C(bytes.trailing_zeros() as u64));
                let base = tr.ea(insn);
                let mut a = tr.b.add(base, byteoff);
                if !tr.code64() {
                    a = tr.b.ext(a, MemSize::B4, false);
                }
                let m = MemOp {
                    rmw: op != 0,
                    ..tr.mop(insn, bytes)
                };
                let bit = tr.b.and(off, Val::C(bits - 1));
                (Loc::Mem(a, m), bit)
            }
            _ => {
                let bit = tr.b.and(off, Val::C(bits - 1));
                (Loc::Reg(insn.op_register(0)), bit)
            }
        }
    } else {
        let l = if op != 0 {
            tr.loc_rmw(insn, 0, bytes)
        } else {
            tr.loc(insn, 0, bytes)
        };
        (l, tr.b.konst(insn.immediate(1) & (bits - 1)))
    };
    let v = tr.read_loc(loc);
    let sh = tr.b.shr(v, Val::T(bit));
    let cf = tr.b.and(sh, Val::C(1));
    if op != 0 {
        let one = tr.b.konst(1);
        let m = tr.b.shl(one, Val::T(bit));
        let nv = match op {
            1 => tr.b.or(v, m),
            2 => {
                let nm = tr.b.un(UnOp::Not, Width::W64, m);
                tr.b.and(v, nm)
            }
            _ => tr.b.xor(v, m),
        };
        tr.write_loc(loc, nv);
    }
    // CF = the bit; ZF unchanged; OF SF AF PF undefined (kept).
    tr.write_arith_flags(cf, fl::ARITH & !fl::CF);
    Flow::Next
}

fn bscan(tr: &mut Tr, insn: &Instruction, rev: bool) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let src = tr.read_op_t(insn, 1, bytes);
    let r0 = insn.op_register(0);
    let old = tr.reg(r0);
    let srcm = tr.b.ext(src, MemSize::from_bytes(bytes), false);
    let idx = if rev {
        let lz = tr.b.un(UnOp::Clz, Width::W64, srcm);
        let k = tr.b.konst(63);
        tr.b.sub(k, lz)
    } else {
        tr.b.un(UnOp::Ctz, Width::W64, srcm)
    };
    // Source zero: destination not written at all (what Intel and AMD cores do, upper
    // half included), ZF = 1.
    let _ = old;
    tr.set_cc(CcKind::Logic, bytes, srcm, Val::C(0), None);
    let skip = tr.b.label();
    tr.b.brcond(Cond::Eq, srcm, Val::C(0), skip);
    tr.set_reg(r0, idx);
    tr.b.place(skip);
    Flow::Next
}

fn cnt(tr: &mut Tr, insn: &Instruction, lead: bool) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let src = tr.read_op_t(insn, 1, bytes);
    let srcm = tr.b.ext(src, MemSize::from_bytes(bytes), false);
    let r = if lead {
        let lz = tr.b.un(UnOp::Clz, Width::W64, srcm);
        tr.b.sub(lz, Val::C(64 - bytes as u64 * 8))
    } else {
        let guard = tr.b.or(
            srcm,
            Val::C(if bytes == 8 { 0 } else { 1u64 << (bytes * 8) }),
        );
        if bytes == 8 {
            tr.b.un(UnOp::Ctz, Width::W64, srcm)
        } else {
            tr.b.un(UnOp::Ctz, Width::W64, guard)
        }
    };
    tr.set_reg(insn.op_register(0), r);
    tr.set_cc(CcKind::Cnt, bytes, r, Val::T(srcm), None);
    Flow::Next
}

fn popcnt(tr: &mut Tr, insn: &Instruction) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let src = tr.read_op_t(insn, 1, bytes);
    let srcm = tr.b.ext(src, MemSize::from_bytes(bytes), false);
    let r = tr.b.un(UnOp::Popcnt, Width::W64, srcm);
    tr.set_reg(insn.op_register(0), r);
    let z =
        tr.b.select(Cond::Eq, srcm, Val::C(0), Val::C(fl::ZF), Val::C(0));
    tr.write_arith_flags(z, 0);
    Flow::Next
}

fn vex_srcs(tr: &mut Tr, insn: &Instruction, bytes: u32) -> (Temp, Temp) {
    let a = tr.read_op_t(insn, 1, bytes);
    let b = tr.read_op_t(insn, 2, bytes);
    (a, b)
}

fn andn(tr: &mut Tr, insn: &Instruction) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let (a, b) = vex_srcs(tr, insn, bytes);
    let na = tr.b.un(UnOp::Not, width(bytes), a);
    let r = tr.b.bin(BinOp::And, width(bytes), na, b);
    tr.set_reg(insn.op_register(0), r);
    tr.set_cc(CcKind::Logic, bytes, r, Val::C(0), None);
    Flow::Next
}

fn bextr(tr: &mut Tr, insn: &Instruction) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let bits = bytes as u64 * 8;
    let (src, ctl) = vex_srcs(tr, insn, bytes);
    let start = tr.b.and(ctl, Val::C(0xff));
    let l = tr.b.shr(ctl, Val::C(8));
    let len = tr.b.and(l, Val::C(0xff));
    let srcm = tr.b.ext(src, MemSize::from_bytes(bytes), false);
    let sh = tr.b.shr(srcm, Val::T(start));
    let sh =
        tr.b.select(Cond::GeU, start, Val::C(bits), Val::C(0), Val::T(sh));
    let one = tr.b.konst(1);
    let m = tr.b.shl(one, Val::T(len));
    let m = tr.b.sub(m, Val::C(1));
    let m =
        tr.b.select(Cond::GeU, len, Val::C(64), Val::C(u64::MAX), Val::T(m));
    let r = tr.b.and(sh, m);
    tr.set_reg(insn.op_register(0), r);
    tr.set_cc(CcKind::Logic, bytes, r, Val::C(0), None);
    Flow::Next
}

fn bls(tr: &mut Tr, insn: &Instruction, op: u8) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let w = width(bytes);
    let src = tr.read_op_t(insn, 1, bytes);
    let r = match op {
        0 => {
            let n = tr.b.un(UnOp::Neg, w, src);
            tr.b.bin(BinOp::And, w, src, n)
        }
        1 => {
            let m = tr.b.bin(BinOp::Sub, w, src, Val::C(1));
            tr.b.bin(BinOp::Xor, w, src, m)
        }
        _ => {
            let m = tr.b.bin(BinOp::Sub, w, src, Val::C(1));
            tr.b.bin(BinOp::And, w, src, m)
        }
    };
    tr.set_reg(insn.op_register(0), r);
    tr.set_cc(
        if op == 0 { CcKind::Blsi } else { CcKind::Blsr },
        bytes,
        r,
        Val::T(src),
        None,
    );
    Flow::Next
}

fn bzhi(tr: &mut Tr, insn: &Instruction) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let bits = bytes as u64 * 8;
    let (src, idx) = vex_srcs(tr, insn, bytes);
    let n = tr.b.and(idx, Val::C(0xff));
    let one = tr.b.konst(1);
    let m = tr.b.shl(one, Val::T(n));
    let m = tr.b.sub(m, Val::C(1));
    let masked = tr.b.and(src, m);
    let srcm = tr.b.ext(src, MemSize::from_bytes(bytes), false);
    let r =
        tr.b.select(Cond::GeU, n, Val::C(bits), Val::T(srcm), Val::T(masked));
    let cf = tr.b.setcond(Cond::GeU, n, Val::C(bits));
    tr.set_reg(insn.op_register(0), r);
    tr.set_cc(CcKind::Blsi, bytes, r, Val::T(cf), None);
    Flow::Next
}

fn pdep(tr: &mut Tr, insn: &Instruction, which: u64) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let (src, mask) = vex_srcs(tr, insn, bytes);
    let r = tr.b.call(
        H.pdep_pext,
        &[
            Val::C(which),
            Val::T(src),
            Val::T(mask),
            Val::C(bytes as u64),
        ],
    );
    tr.set_reg(insn.op_register(0), r);
    Flow::Next
}
