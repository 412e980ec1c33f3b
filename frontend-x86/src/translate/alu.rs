//! ALU, moves, exchanges, conditional moves/sets, flag instructions.

use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};
use jit::ir::{BinOp, Cond, MemOp, MemSize, UnOp, Val, Width};

use super::{cc_of, size_mask, width, Flow, Handler, Loc, Tr};
use crate::state::*;

pub fn register(r: &mut impl FnMut(M, Handler)) {
    r(M::Add, |t, i| alu(t, i, Alu::Add));
    r(M::Or, |t, i| alu(t, i, Alu::Or));
    r(M::Adc, |t, i| alu(t, i, Alu::Adc));
    r(M::Sbb, |t, i| alu(t, i, Alu::Sbb));
    r(M::And, |t, i| alu(t, i, Alu::And));
    r(M::Sub, |t, i| alu(t, i, Alu::Sub));
    r(M::Xor, |t, i| alu(t, i, Alu::Xor));
    r(M::Cmp, |t, i| alu(t, i, Alu::Cmp));
    r(M::Test, |t, i| alu(t, i, Alu::Test));
    r(M::Inc, |t, i| incdec(t, i, true));
    r(M::Dec, |t, i| incdec(t, i, false));
    r(M::Neg, neg);
    r(M::Not, not);
    r(M::Mov, mov);
    r(M::Movzx, |t, i| movx(t, i, false));
    r(M::Movsx, |t, i| movx(t, i, true));
    r(M::Movsxd, |t, i| movx(t, i, true));
    r(M::Lea, lea);
    r(M::Xchg, xchg);
    r(M::Xadd, xadd);
    r(M::Cmpxchg, cmpxchg);
    r(M::Cmpxchg8b, cmpxchg_wide);
    r(M::Cmpxchg16b, cmpxchg_wide);
    r(M::Bswap, bswap);
    r(M::Movbe, movbe);
    r(M::Cbw, |t, _| cbw(t, 1));
    r(M::Cwde, |t, _| cbw(t, 2));
    r(M::Cdqe, |t, _| cbw(t, 4));
    r(M::Cwd, |t, _| cwd(t, 2));
    r(M::Cdq, |t, _| cwd(t, 4));
    r(M::Cqo, |t, _| cwd(t, 8));
    r(M::Lahf, lahf);
    r(M::Sahf, sahf);
    r(M::Clc, |t, _| setflag(t, fl::CF, Some(false)));
    r(M::Stc, |t, _| setflag(t, fl::CF, Some(true)));
    r(M::Cmc, |t, _| setflag(t, fl::CF, None));
    r(M::Cld, |t, _| df(t, false));
    r(M::Std, |t, _| df(t, true));
    r(M::Xlatb, xlat);
    for m in [
        M::Seto,
        M::Setno,
        M::Setb,
        M::Setae,
        M::Sete,
        M::Setne,
        M::Setbe,
        M::Seta,
        M::Sets,
        M::Setns,
        M::Setp,
        M::Setnp,
        M::Setl,
        M::Setge,
        M::Setle,
        M::Setg,
    ] {
        r(m, setcc);
    }
    for m in [
        M::Cmovo,
        M::Cmovno,
        M::Cmovb,
        M::Cmovae,
        M::Cmove,
        M::Cmovne,
        M::Cmovbe,
        M::Cmova,
        M::Cmovs,
        M::Cmovns,
        M::Cmovp,
        M::Cmovnp,
        M::Cmovl,
        M::Cmovge,
        M::Cmovle,
        M::Cmovg,
    ] {
        r(m, cmovcc);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Alu {
    Add,
    Or,
    Adc,
    Sbb,
    And,
    Sub,
    Xor,
    Cmp,
    Test,
}

fn alu(tr: &mut Tr, insn: &Instruction, op: Alu) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let w = width(bytes);
    let dst = if matches!(op, Alu::Cmp | Alu::Test) {
        tr.loc(insn, 0, bytes)
    } else {
        tr.loc_rmw(insn, 0, bytes)
    };
    let a = tr.read_loc(dst);
    let b = tr.read_op(insn, 1, bytes);
    let cin = if matches!(op, Alu::Adc | Alu::Sbb) {
        Some(tr.cf())
    } else {
        None
    };
    let r = match op {
        Alu::Add => tr.b.bin(BinOp::Add, w, a, b),
        Alu::Adc => {
            let s = tr.b.bin(BinOp::Add, w, a, b);
            tr.b.bin(BinOp::Add, w, s, cin.unwrap())
        }
        Alu::Sub | Alu::Cmp => tr.b.bin(BinOp::Sub, w, a, b),
        Alu::Sbb => {
            let s = tr.b.bin(BinOp::Sub, w, a, b);
            tr.b.bin(BinOp::Sub, w, s, cin.unwrap())
        }
        Alu::And | Alu::Test => tr.b.bin(BinOp::And, w, a, b),
        Alu::Or => tr.b.bin(BinOp::Or, w, a, b),
        Alu::Xor => tr.b.bin(BinOp::Xor, w, a, b),
    };
    if !matches!(op, Alu::Cmp | Alu::Test) {
        tr.write_loc(dst, r);
    }
    match op {
        Alu::Add => tr.set_cc(CcKind::Add, bytes, r, b, None),
        Alu::Adc => tr.set_cc(CcKind::Adc, bytes, r, b, cin.map(Val::T)),
        Alu::Sub | Alu::Cmp => tr.set_cc(CcKind::Sub, bytes, r, b, None),
        Alu::Sbb => tr.set_cc(CcKind::Sbb, bytes, r, b, cin.map(Val::T)),
        _ => tr.set_cc(CcKind::Logic, bytes, r, Val::C(0), None),
    }
    Flow::Next
}

fn incdec(tr: &mut Tr, insn: &Instruction, inc: bool) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let w = width(bytes);
    let dst = tr.loc_rmw(insn, 0, bytes);
    let a = tr.read_loc(dst);
    let cf = if tr.flags_live { Some(tr.cf()) } else { None };
    let r =
        tr.b.bin(if inc { BinOp::Add } else { BinOp::Sub }, w, a, Val::C(1));
    tr.write_loc(dst, r);
    if let Some(cf) = cf {
        tr.set_cc(
            if inc { CcKind::Inc } else { CcKind::Dec },
            bytes,
            r,
            Val::T(cf),
            None,
        );
    }
    Flow::Next
}

fn neg(tr: &mut Tr, insn: &Instruction) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let w = width(bytes);
    let dst = tr.loc_rmw(insn, 0, bytes);
    let a = tr.read_loc(dst);
    let r = tr.b.un(UnOp::Neg, w, a);
    tr.write_loc(dst, r);
    tr.set_cc(CcKind::Sub, bytes, r, Val::T(a), None);
    Flow::Next
}

fn not(tr: &mut Tr, insn: &Instruction) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let dst = tr.loc_rmw(insn, 0, bytes);
    let a = tr.read_loc(dst);
    let r = tr.b.un(UnOp::Not, width(bytes), a);
    tr.write_loc(dst, r);
    Flow::Next
}

fn mov(tr: &mut Tr, insn: &Instruction) -> Flow {
    if insn.op_kind(0) == OpKind::Register {
        let r0 = insn.op_register(0);
        if r0.is_segment_register() {
            return super::seg::mov_to_seg(tr, insn);
        }
        if r0.is_cr() {
            return tr.platform(crate::PlatformOp::MovCr, insn.code() as u64, insn);
        }
        if r0.is_dr() {
            return tr.platform(crate::PlatformOp::MovDr, insn.code() as u64, insn);
        }
    }
    if insn.op_kind(1) == OpKind::Register {
        let r1 = insn.op_register(1);
        if r1.is_segment_register() {
            return super::seg::mov_from_seg(tr, insn);
        }
        if r1.is_cr() {
            return tr.platform(crate::PlatformOp::MovCr, insn.code() as u64, insn);
        }
        if r1.is_dr() {
            return tr.platform(crate::PlatformOp::MovDr, insn.code() as u64, insn);
        }
    }
    let bytes = tr.op_size(insn, 0);
    let v = tr.read_op_t(insn, 1, bytes);
    let dst = tr.loc(insn, 0, bytes);
    tr.write_loc(dst, v);
    Flow::Next
}

fn movx(tr: &mut Tr, insn: &Instruction, signed: bool) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let sbytes = tr.op_size(insn, 1);
    let v = tr.read_op_t(insn, 1, sbytes);
    let e = tr.b.ext(v, MemSize::from_bytes(sbytes), signed);
    let dst = tr.loc(insn, 0, bytes);
    tr.write_loc(dst, e);
    Flow::Next
}

fn lea(tr: &mut Tr, insn: &Instruction) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let off = tr.ea_off(insn);
    tr.set_reg(insn.op_register(0), off);
    let _ = bytes;
    Flow::Next
}

fn xchg(tr: &mut Tr, insn: &Instruction) -> Flow {
    let bytes = tr.op_size(insn, 0);
    // xchg eax, eax (0x90 in 64-bit mode is NOP; iced decodes that as Nop).
    let l0 = tr.loc_rmw(insn, 0, bytes);
    let l1 = tr.loc_rmw(insn, 1, bytes);
    let a = tr.read_loc(l0);
    let b = tr.read_loc(l1);
    // Memory first (may fault), then the register.
    match (l0, l1) {
        (Loc::Mem(..), _) => {
            tr.write_loc(l0, b);
            tr.write_loc(l1, a);
        }
        _ => {
            tr.write_loc(l1, a);
            tr.write_loc(l0, b);
        }
    }
    Flow::Next
}

fn xadd(tr: &mut Tr, insn: &Instruction) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let l0 = tr.loc_rmw(insn, 0, bytes);
    let src = insn.op_register(1);
    let a = tr.read_loc(l0);
    let b = tr.reg(src);
    let r = tr.b.bin(BinOp::Add, width(bytes), a, b);
    match l0 {
        Loc::Mem(..) => {
            tr.write_loc(l0, r);
            tr.set_reg(src, a);
        }
        Loc::Reg(_) => {
            tr.set_reg(src, a);
            tr.write_loc(l0, r);
        }
    }
    tr.set_cc(CcKind::Add, bytes, r, Val::T(b), None);
    Flow::Next
}

fn cmpxchg(tr: &mut Tr, insn: &Instruction) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let l0 = tr.loc_rmw(insn, 0, bytes);
    let old = tr.read_loc(l0);
    let src = tr.reg(insn.op_register(1));
    let acc_reg = super::sized_reg(0, bytes);
    let acc = tr.reg(acc_reg);
    let eq = tr.b.setcond(Cond::Eq, acc, Val::T(old));
    if let Loc::Mem(a, m) = l0 {
        // The destination always receives a write cycle.
        let v =
            tr.b.select(Cond::Ne, eq, Val::C(0), Val::T(src), Val::T(old));
        tr.store(a, v, m);
    }
    let diff = tr.b.bin(BinOp::Sub, width(bytes), acc, old);
    tr.set_cc(CcKind::Sub, bytes, diff, Val::T(old), None);
    let not_eq = tr.b.label();
    let done = tr.b.label();
    tr.b.brcond(Cond::Eq, eq, Val::C(0), not_eq);
    if let Loc::Reg(r) = l0 {
        tr.set_reg(r, src);
    }
    tr.b.br(done);
    tr.b.place(not_eq);
    tr.set_reg(acc_reg, old);
    tr.b.place(done);
    Flow::Next
}

fn cmpxchg_wide(tr: &mut Tr, insn: &Instruction) -> Flow {
    let wide = insn.mnemonic() == M::Cmpxchg16b;
    let half = if wide { 8 } else { 4 };
    let addr = tr.ea(insn);
    if wide {
        // #GP(0) unless 16-byte aligned.
        let ok = tr.b.label();
        tr.b.brcond(Cond::TstZ, addr, Val::C(15), ok);
        tr.b.exit(jit::ir::Exit::Exception {
            vector: 13,
            error_code: Some(0),
        });
        tr.b.place(ok);
    }
    let m = MemOp {
        size: MemSize::from_bytes(half),
        rmw: true,
        ..tr.mop(insn, half)
    };
    let addr_hi = tr.b.add(addr, Val::C(half as u64));
    let lo = tr.load(addr, m);
    let hi = tr.load(addr_hi, m);
    let (rax, rdx, rbx, rcx) = (
        tr.reg(super::sized_reg(0, half)),
        tr.reg(super::sized_reg(2, half)),
        tr.reg(super::sized_reg(3, half)),
        tr.reg(super::sized_reg(1, half)),
    );
    let e1 = tr.b.xor(lo, rax);
    let e2 = tr.b.xor(hi, rdx);
    let ne = tr.b.or(e1, e2);
    let nlo =
        tr.b.select(Cond::Eq, ne, Val::C(0), Val::T(rbx), Val::T(lo));
    let nhi =
        tr.b.select(Cond::Eq, ne, Val::C(0), Val::T(rcx), Val::T(hi));
    tr.store(addr, nlo, m);
    tr.store(addr_hi, nhi, m);
    let f = tr.rflags();
    let z =
        tr.b.select(Cond::Eq, ne, Val::C(0), Val::C(fl::ZF), Val::C(0));
    let f = tr.b.and(f, Val::C(!fl::ZF));
    let f = tr.b.or(f, z);
    tr.write_arith_flags(f, 0);
    let done = tr.b.label();
    tr.b.brcond(Cond::Eq, ne, Val::C(0), done);
    tr.set_reg(super::sized_reg(0, half), lo);
    tr.set_reg(super::sized_reg(2, half), hi);
    tr.b.place(done);
    Flow::Next
}

fn bswap(tr: &mut Tr, insn: &Instruction) -> Flow {
    let r = insn.op_register(0);
    let bytes = r.size() as u32;
    let v = tr.reg(r);
    let s = if bytes == 2 {
        tr.b.konst(0)
    } else {
        tr.b.un(UnOp::Bswap, width(bytes), v)
    };
    tr.set_reg(r, s);
    Flow::Next
}

fn swap_sized(tr: &mut Tr, v: jit::ir::Temp, bytes: u32) -> jit::ir::Temp {
    if bytes == 2 {
        let s = tr.b.un(UnOp::Bswap, Width::W32, v);
        tr.b.shr(s, Val::C(16))
    } else {
        tr.b.un(UnOp::Bswap, width(bytes), v)
    }
}

fn movbe(tr: &mut Tr, insn: &Instruction) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let v = tr.read_op_t(insn, 1, bytes);
    let s = swap_sized(tr, v, bytes);
    let dst = tr.loc(insn, 0, bytes);
    tr.write_loc(dst, s);
    Flow::Next
}

fn cbw(tr: &mut Tr, from: u32) -> Flow {
    let v = tr.gpr(0);
    let e = tr.b.ext(v, MemSize::from_bytes(from), true);
    tr.set_gpr_sized(0, e, from * 2);
    Flow::Next
}

fn cwd(tr: &mut Tr, bytes: u32) -> Flow {
    let v = tr.gpr(0);
    let e = tr.b.ext(v, MemSize::from_bytes(bytes), true);
    let s = tr.b.sar(e, Val::C(63));
    tr.set_gpr_sized(2, s, bytes);
    Flow::Next
}

fn lahf(tr: &mut Tr, _: &Instruction) -> Flow {
    let f = tr.rflags();
    let v =
        tr.b.and(f, Val::C(fl::SF | fl::ZF | fl::AF | fl::PF | fl::CF));
    let v = tr.b.or(v, Val::C(fl::FIXED1));
    tr.set_reg(Register::AH, v);
    Flow::Next
}

fn sahf(tr: &mut Tr, _: &Instruction) -> Flow {
    let ah = tr.reg(Register::AH);
    tr.write_arith_flags(ah, fl::OF);
    Flow::Next
}

fn setflag(tr: &mut Tr, bit: u64, v: Option<bool>) -> Flow {
    let f = tr.arith_flags();
    let nf = match v {
        Some(true) => tr.b.or(f, Val::C(bit)),
        Some(false) => tr.b.and(f, Val::C(!bit)),
        None => tr.b.xor(f, Val::C(bit)),
    };
    tr.write_arith_flags(nf, 0);
    Flow::Next
}

/// CLD/STD. DF is part of the block key: a no-op when it already has that value, otherwise
/// the block ends so the next one is translated for the new direction.
fn df(tr: &mut Tr, set: bool) -> Flow {
    if (tr.flags & tbf::DF != 0) == set {
        return Flow::Next;
    }
    let r = tr.b.get(G_RFLAGS);
    let n = if set {
        tr.b.or(r, Val::C(fl::DF))
    } else {
        tr.b.and(r, Val::C(!fl::DF))
    };
    tr.b.set(G_RFLAGS, n);
    let next = tr.next;
    tr.b.exit(jit::ir::Exit::Sync { pc: next });
    Flow::End
}

fn xlat(tr: &mut Tr, insn: &Instruction) -> Flow {
    let asize = tr.addr_size(insn);
    let rbx = tr.gpr(3);
    let al = tr.reg(Register::AL);
    let off = tr.b.add(rbx, al);
    let off = if asize == 8 {
        off
    } else {
        tr.b.ext(off, MemSize::from_bytes(asize), false)
    };
    let a = tr.seg_add(insn.memory_segment(), off);
    let m = tr.mop(insn, 1);
    let v = tr.load(a, m);
    tr.set_reg(Register::AL, v);
    Flow::Next
}

fn setcc(tr: &mut Tr, insn: &Instruction) -> Flow {
    let v = tr.cond_value(cc_of(insn));
    let dst = tr.loc(insn, 0, 1);
    tr.write_loc(dst, v);
    Flow::Next
}

fn cmovcc(tr: &mut Tr, insn: &Instruction) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let src = tr.read_op_t(insn, 1, bytes);
    let r = insn.op_register(0);
    let old = tr.reg(r);
    let (c, a, b) = tr.cond(cc_of(insn));
    let v = tr.b.select(c, a, b, Val::T(src), Val::T(old));
    tr.set_reg(r, v);
    let _ = size_mask(bytes);
    Flow::Next
}
