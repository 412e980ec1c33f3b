//! MUL, IMUL (1/2/3 operands), DIV, IDIV, MULX.

use iced_x86::{Instruction, Mnemonic as M, Register};
use jit::ir::{BinOp, Cond, MemSize, Temp, Val, Width};

use super::{sized_reg, Flow, Handler, Tr};
use crate::helpers::H;
use crate::state::*;

pub fn register(r: &mut impl FnMut(M, Handler)) {
    r(M::Mul, |t, i| mul1(t, i, false));
    r(M::Imul, imul);
    r(M::Div, |t, i| div(t, i, false));
    r(M::Idiv, |t, i| div(t, i, true));
    r(M::Mulx, mulx);
}

/// Full product of two `bytes`-sized values: (low, high), each zero-extended to `bytes`.
fn product(tr: &mut Tr, a: Temp, b: Temp, bytes: u32, signed: bool) -> (Temp, Temp) {
    if bytes == 8 {
        let lo = tr.b.bin(BinOp::Mul, Width::W64, a, b);
        let hi = tr.b.bin(
            if signed { BinOp::MulHS } else { BinOp::MulHU },
            Width::W64,
            a,
            b,
        );
        return (lo, hi);
    }
    let sz = MemSize::from_bytes(bytes);
    let (ea, eb) = (tr.b.ext(a, sz, signed), tr.b.ext(b, sz, signed));
    let p = tr.b.bin(BinOp::Mul, Width::W64, ea, eb);
    let lo = tr.b.ext(p, sz, false);
    let h = tr.b.shr(p, Val::C(bytes as u64 * 8));
    let hi = tr.b.ext(h, sz, false);
    (lo, hi)
}

/// Overflow indicator for CF/OF: non-zero when the high half is significant.
fn overflow(tr: &mut Tr, lo: Temp, hi: Temp, bytes: u32, signed: bool) -> Temp {
    if !signed {
        return hi;
    }
    let sz = MemSize::from_bytes(bytes);
    let s = tr.b.ext(lo, sz, true);
    let sign = tr.b.sar(s, Val::C(63));
    let signm = tr.b.ext(sign, sz, false);
    tr.b.xor(signm, hi)
}

fn mul1(tr: &mut Tr, insn: &Instruction, signed: bool) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let src = tr.read_op_t(insn, 0, bytes);
    let acc = tr.reg(sized_reg(0, bytes));
    let (lo, hi) = product(tr, acc, src, bytes, signed);
    let ov = overflow(tr, lo, hi, bytes, signed);
    if bytes == 1 {
        let h8 = tr.b.shl(hi, Val::C(8));
        let ax = tr.b.or(h8, lo);
        tr.set_reg(Register::AX, ax);
    } else {
        tr.set_reg(sized_reg(0, bytes), lo);
        tr.set_reg(sized_reg(2, bytes), hi);
    }
    tr.set_cc(CcKind::Mul, bytes, lo, Val::T(ov), None);
    Flow::Next
}

fn imul(tr: &mut Tr, insn: &Instruction) -> Flow {
    match insn.op_count() {
        1 => mul1(tr, insn, true),
        n => {
            let bytes = tr.op_size(insn, 0);
            let (a, b) = if n == 2 {
                let a = tr.reg(insn.op_register(0));
                let b = tr.read_op_t(insn, 1, bytes);
                (a, b)
            } else {
                let a = tr.read_op_t(insn, 1, bytes);
                let b = tr.b.konst(insn.immediate(2) & super::size_mask(bytes));
                (a, b)
            };
            let (lo, hi) = product(tr, a, b, bytes, true);
            let ov = overflow(tr, lo, hi, bytes, true);
            tr.set_reg(insn.op_register(0), lo);
            tr.set_cc(CcKind::Mul, bytes, lo, Val::T(ov), None);
            Flow::Next
        }
    }
}

fn div(tr: &mut Tr, insn: &Instruction, signed: bool) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let src = tr.read_op_t(insn, 0, bytes);
    let args = [Val::C(bytes as u64 | (signed as u64) << 8), Val::T(src)];
    if bytes >= 4 {
        let inline = jit::ir::Inline::Div {
            bytes: bytes as u8,
            signed,
            rax: crate::state::G_GPR0,
            rdx: crate::state::G_GPR0 + 2,
        };
        tr.b.call_inline_void(H.div, &args, inline);
    } else {
        tr.b.call_void(H.div, &args);
    }
    // Flags are undefined after DIV; Intel cores leave them unchanged... the lazy state is
    // kept as is.
    let _ = Cond::Eq;
    Flow::Next
}

fn mulx(tr: &mut Tr, insn: &Instruction) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let src = tr.read_op_t(insn, 2, bytes);
    let rdx = tr.reg(sized_reg(2, bytes));
    let (lo, hi) = product(tr, rdx, src, bytes, false);
    // When both destinations are the same register, the high half wins.
    tr.set_reg(insn.op_register(1), lo);
    tr.set_reg(insn.op_register(0), hi);
    Flow::Next
}
