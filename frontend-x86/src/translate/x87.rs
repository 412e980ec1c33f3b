//! x87 instructions → calls of the `x87` helper (see [`crate::fp::x87`]).
//!
//! Memory sources are loaded into `G_FPTMP` first; stores are computed by the helper,
//! stored by the generated code, then committed (status word and pop), so a fault on
//! either side leaves the FPU and memory as they were. Waiting instructions first check
//! for a pending unmasked exception (FSW.ES) and raise #MF.

use iced_x86::{Instruction, MemorySize, Mnemonic as M, OpKind, Register};
use jit::ir::{Cond, Exit, Val};

use super::{Flow, Handler, Tr};
use crate::fp::x87::{Arith, Op, Src, Store, Unary};
use crate::helpers::H;
use crate::state::*;

pub fn register(r: &mut impl FnMut(M, Handler)) {
    r(M::Fld, load);
    r(M::Fild, load);
    r(M::Fbld, load);
    for m in [
        M::Fld1,
        M::Fldl2t,
        M::Fldl2e,
        M::Fldpi,
        M::Fldlg2,
        M::Fldln2,
        M::Fldz,
    ] {
        r(m, load);
    }
    for m in [M::Fst, M::Fstp, M::Fist, M::Fistp, M::Fisttp, M::Fbstp] {
        r(m, store);
    }
    for m in [
        M::Fadd,
        M::Faddp,
        M::Fiadd,
        M::Fmul,
        M::Fmulp,
        M::Fimul,
        M::Fsub,
        M::Fsubp,
        M::Fisub,
        M::Fsubr,
        M::Fsubrp,
        M::Fisubr,
        M::Fdiv,
        M::Fdivp,
        M::Fidiv,
        M::Fdivr,
        M::Fdivrp,
        M::Fidivr,
    ] {
        r(m, arith);
    }
    for m in [
        M::Fcom,
        M::Fcomp,
        M::Fcompp,
        M::Fucom,
        M::Fucomp,
        M::Fucompp,
        M::Ficom,
        M::Ficomp,
    ] {
        r(m, com);
    }
    for m in [M::Fcomi, M::Fcomip, M::Fucomi, M::Fucomip] {
        r(m, comi);
    }
    for m in [
        M::Fchs,
        M::Fabs,
        M::Ftst,
        M::Fxam,
        M::Fsqrt,
        M::Frndint,
        M::Fscale,
        M::Fxtract,
        M::Fprem,
        M::Fprem1,
    ] {
        r(m, unary);
    }
    for m in [
        M::F2xm1,
        M::Fsin,
        M::Fcos,
        M::Fptan,
        M::Fsincos,
        M::Fyl2x,
        M::Fyl2xp1,
        M::Fpatan,
    ] {
        r(m, unary);
    }
    r(M::Fxch, |t, i| simple(t, i, Op::Xch, true));
    r(M::Ffree, |t, i| simple(t, i, Op::Free, true));
    r(M::Ffreep, |t, i| simple(t, i, Op::FreeP, true));
    r(M::Fincstp, |t, i| simple(t, i, Op::Incstp, true));
    r(M::Fdecstp, |t, i| simple(t, i, Op::Decstp, true));
    r(M::Fninit, |t, i| simple(t, i, Op::Init, false));
    r(M::Fnclex, |t, i| simple(t, i, Op::Clex, false));
    for m in [M::Fnop, M::Wait] {
        r(m, |t, _| {
            t.pending_mf();
            Flow::Next
        });
    }
    // 287 mode controls: no-ops on a 387 and later.
    for m in [M::Fndisi, M::Fneni, M::Fnsetpm] {
        r(m, |_, _| Flow::Next);
    }
    for m in [
        M::Fcmovb,
        M::Fcmove,
        M::Fcmovbe,
        M::Fcmovu,
        M::Fcmovnb,
        M::Fcmovne,
        M::Fcmovnbe,
        M::Fcmovnu,
    ] {
        r(m, fcmov);
    }
    r(M::Fnstsw, fnstsw);
    r(M::Fnstcw, fnstcw);
    // The waiting forms iced decodes as one instruction (WAIT + the no-wait form): the
    // pending-#MF check of the WAIT, then the no-wait instruction.
    r(M::Fstsw, |t, i| {
        t.pending_mf();
        fnstsw(t, i)
    });
    r(M::Fstcw, |t, i| {
        t.pending_mf();
        fnstcw(t, i)
    });
    for m in [M::Fstenv, M::Fsave] {
        r(m, |t, i| {
            t.pending_mf();
            fenv(t, i)
        });
    }
    r(M::Finit, |t, i| simple(t, i, Op::Init, true));
    r(M::Fclex, |t, i| simple(t, i, Op::Clex, true));
    for m in [M::Fdisi, M::Feni, M::Fsetpm] {
        r(m, |t, _| {
            t.pending_mf();
            Flow::Next
        });
    }
    // FSTP ST(i)'s alternative encodings (D9 D8+i, DF D0+i, DF D8+i).
    r(M::Fstpnce, store);
    r(M::Fldcw, |t, i| {
        t.pending_mf();
        let a = t.ea(i);
        let m = t.mop(i, 2);
        let v = t.load(a, m);
        t.b.set(G_FPTMP, v);
        t.x87(Op::Ldcw as u64);
        Flow::Next
    });
    for m in [M::Fnstenv, M::Fldenv, M::Fnsave, M::Frstor] {
        r(m, fenv);
    }
}

fn fnstcw(t: &mut Tr, i: &Instruction) -> Flow {
    let a = t.ea(i);
    let v = t.b.get(G_FCW);
    let m = t.mop(i, 2);
    t.store(a, v, m);
    Flow::Next
}

impl Tr {
    /// #MF if an unmasked x87 exception is pending.
    pub(super) fn pending_mf(&mut self) {
        let s = self.b.get(G_FSW);
        let ok = self.b.label();
        self.b
            .brcond(Cond::TstZ, s, Val::C(crate::fp::x87::sw::ES), ok);
        self.b.exit(Exit::Exception {
            vector: 16,
            error_code: None,
        });
        self.b.place(ok);
    }

    fn x87(&mut self, a0: u64) -> jit::ir::Temp {
        self.b.call(H.x87, &[Val::C(a0)])
    }
}

fn st_index(r: Register) -> u64 {
    (r as u32 - Register::ST0 as u32) as u64
}

/// The ST(i) operand that is not the implied ST0 (or ST0 itself when it is the only one).
fn sti_of(insn: &Instruction) -> u64 {
    let regs: Vec<Register> = (0..insn.op_count())
        .filter(|&i| insn.op_kind(i) == OpKind::Register)
        .map(|i| insn.op_register(i))
        .collect();
    match regs.as_slice() {
        [a] => st_index(*a),
        [a, b] => {
            if *a == Register::ST0 {
                st_index(*b)
            } else {
                st_index(*a)
            }
        }
        _ => 1,
    }
}

/// Load the instruction's memory operand into G_FPTMP and say what it is.
fn mem_src(tr: &mut Tr, insn: &Instruction) -> Src {
    let (src, bytes) = match insn.memory_size() {
        MemorySize::Float32 => (Src::M32, 4),
        MemorySize::Float64 => (Src::M64, 8),
        MemorySize::Float80 => (Src::M80, 10),
        MemorySize::Int16 => (Src::I16, 2),
        MemorySize::Int32 => (Src::I32, 4),
        MemorySize::Int64 => (Src::I64, 8),
        _ => (Src::Bcd, 10),
    };
    tr.mem_to_fptmp(insn, bytes, false);
    src
}

fn load(tr: &mut Tr, insn: &Instruction) -> Flow {
    tr.pending_mf();
    let (src, sti) = match insn.mnemonic() {
        M::Fld1 => (Src::C1, 0),
        M::Fldl2t => (Src::CL2T, 0),
        M::Fldl2e => (Src::CL2E, 0),
        M::Fldpi => (Src::CPi, 0),
        M::Fldlg2 => (Src::CLG2, 0),
        M::Fldln2 => (Src::CLN2, 0),
        M::Fldz => (Src::CZero, 0),
        _ if insn.op_kind(0) == OpKind::Register => (Src::St, st_index(insn.op_register(0))),
        _ => (mem_src(tr, insn), 0),
    };
    tr.x87(Op::Load as u64 | sti << 8 | (src as u64) << 16);
    Flow::Next
}

fn store(tr: &mut Tr, insn: &Instruction) -> Flow {
    tr.pending_mf();
    let m = insn.mnemonic();
    let pop = matches!(m, M::Fstp | M::Fstpnce | M::Fistp | M::Fisttp | M::Fbstp) as u64;
    if insn.op_kind(0) == OpKind::Register {
        let sti = st_index(insn.op_register(0));
        let nce = (m == M::Fstpnce) as u64;
        tr.x87(Op::StPrep as u64 | sti << 8 | pop << 12 | (Store::St as u64) << 16 | nce << 24);
        return Flow::Next;
    }
    let (kind, bytes) = match (m, insn.memory_size()) {
        (M::Fisttp, MemorySize::Int16) => (Store::T16, 2),
        (M::Fisttp, MemorySize::Int32) => (Store::T32, 4),
        (M::Fisttp, _) => (Store::T64, 8),
        (_, MemorySize::Float32) => (Store::M32, 4),
        (_, MemorySize::Float64) => (Store::M64, 8),
        (_, MemorySize::Float80) => (Store::M80, 10),
        (_, MemorySize::Int16) => (Store::I16, 2),
        (_, MemorySize::Int32) => (Store::I32, 4),
        (_, MemorySize::Int64) => (Store::I64, 8),
        _ => (Store::Bcd, 10),
    };
    let a = tr.ea(insn);
    let stop = tr.x87(Op::StPrep as u64 | (kind as u64) << 16);
    let skip = tr.b.label();
    let done = tr.b.label();
    tr.b.brcond(Cond::Ne, stop, Val::C(0), skip);
    let lo = tr.b.get(G_FPTMP);
    if bytes == 10 {
        let hi = tr.b.get(G_FPTMP + 1);
        let (m8, m2) = (tr.mop(insn, 8), tr.mop(insn, 2));
        let a2 = tr.b.add(a, Val::C(8));
        // Check the write access of the head, then of the tail, before storing either
        // (a fault reports the lowest inaccessible address, as the hardware does).
        let _ = tr.load(a, jit::ir::MemOp { rmw: true, ..m8 });
        let _ = tr.load(a2, jit::ir::MemOp { rmw: true, ..m2 });
        tr.store(a, lo, m8);
        tr.store(a2, hi, m2);
    } else {
        let mo = tr.mop(insn, bytes);
        tr.store(a, lo, mo);
    }
    tr.x87(Op::StCommit as u64 | pop << 12);
    tr.b.br(done);
    tr.b.place(skip);
    // An unmasked exception stores nothing, but the access is still checked first (a
    // page fault takes precedence and leaves the status word alone).
    if bytes == 10 {
        let (m8, m2) = (tr.mop(insn, 8), tr.mop(insn, 2));
        let a2 = tr.b.add(a, Val::C(8));
        let _ = tr.load(a, jit::ir::MemOp { rmw: true, ..m8 });
        let _ = tr.load(a2, jit::ir::MemOp { rmw: true, ..m2 });
    } else {
        let mo = tr.mop(insn, bytes);
        let _ = tr.load(a, jit::ir::MemOp { rmw: true, ..mo });
    }
    tr.x87(Op::StCommit as u64);
    tr.b.place(done);
    Flow::Next
}

fn arith(tr: &mut Tr, insn: &Instruction) -> Flow {
    tr.pending_mf();
    use M::*;
    let m = insn.mnemonic();
    let kind = match m {
        Fadd | Faddp | Fiadd => Arith::Add,
        Fmul | Fmulp | Fimul => Arith::Mul,
        Fsub | Fsubp | Fisub => Arith::Sub,
        Fsubr | Fsubrp | Fisubr => Arith::SubR,
        Fdiv | Fdivp | Fidiv => Arith::Div,
        _ => Arith::DivR,
    };
    let pop = matches!(m, Faddp | Fmulp | Fsubp | Fsubrp | Fdivp | Fdivrp) as u64;
    let mut a0 = Op::Arith as u64 | (kind as u64) << 16 | pop << 12;
    if insn.op_count() == 1 && insn.op_kind(0) == OpKind::Memory {
        let src = mem_src(tr, insn);
        a0 |= (src as u64) << 20;
    } else {
        let sti = if insn.op_count() == 0 {
            1
        } else {
            sti_of(insn)
        };
        a0 |= (Src::St as u64) << 20 | sti << 8;
        // Destination ST(i) when the first operand is not ST0 (or for the popping forms).
        let to_sti = pop == 1 || (insn.op_count() == 2 && insn.op_register(0) != Register::ST0);
        if to_sti {
            a0 |= 1 << 28;
        }
    }
    tr.x87(a0);
    Flow::Next
}

fn com(tr: &mut Tr, insn: &Instruction) -> Flow {
    tr.pending_mf();
    let m = insn.mnemonic();
    let quiet = matches!(m, M::Fucom | M::Fucomp | M::Fucompp) as u64;
    let pops = match m {
        M::Fcompp | M::Fucompp => 2,
        M::Fcomp | M::Fucomp | M::Ficomp => 1,
        _ => 0,
    };
    let mut a0 = Op::Com as u64 | quiet << 16 | pops << 12;
    if insn.op_count() >= 1 && insn.op_kind(0) == OpKind::Memory {
        let src = mem_src(tr, insn);
        a0 |= (src as u64) << 20;
    } else {
        let sti = if insn.op_count() == 0 {
            1
        } else {
            sti_of(insn)
        };
        a0 |= (Src::St as u64) << 20 | sti << 8;
    }
    tr.x87(a0);
    Flow::Next
}

fn comi(tr: &mut Tr, insn: &Instruction) -> Flow {
    tr.pending_mf();
    let m = insn.mnemonic();
    let quiet = matches!(m, M::Fucomi | M::Fucomip) as u64;
    let pop = matches!(m, M::Fcomip | M::Fucomip) as u64;
    let sti = sti_of(insn);
    let r = tr.x87(Op::Comi as u64 | quiet << 16 | pop << 12 | sti << 8);
    tr.write_arith_flags(r, 0);
    Flow::Next
}

fn unary(tr: &mut Tr, insn: &Instruction) -> Flow {
    tr.pending_mf();
    let u = match insn.mnemonic() {
        M::Fchs => Unary::Chs,
        M::Fabs => Unary::Abs,
        M::Ftst => Unary::Tst,
        M::Fxam => Unary::Xam,
        M::Fsqrt => Unary::Sqrt,
        M::Frndint => Unary::Rndint,
        M::Fscale => Unary::Scale,
        M::Fxtract => Unary::Xtract,
        M::Fprem => Unary::Prem,
        M::Fprem1 => Unary::Prem1,
        M::F2xm1 => Unary::F2xm1,
        M::Fsin => Unary::Sin,
        M::Fcos => Unary::Cos,
        M::Fptan => Unary::Ptan,
        M::Fsincos => Unary::Sincos,
        M::Fyl2x => Unary::Yl2x,
        M::Fyl2xp1 => Unary::Yl2xp1,
        _ => Unary::Patan,
    };
    tr.x87(Op::Unary as u64 | (u as u64) << 16);
    Flow::Next
}

fn simple(tr: &mut Tr, insn: &Instruction, op: Op, waits: bool) -> Flow {
    if waits {
        tr.pending_mf();
    }
    let sti = if insn.op_count() > 0 && insn.op_kind(0) == OpKind::Register {
        sti_of(insn)
    } else if op == Op::Xch {
        1
    } else {
        0
    };
    tr.x87(op as u64 | sti << 8);
    Flow::Next
}

fn fcmov(tr: &mut Tr, insn: &Instruction) -> Flow {
    tr.pending_mf();
    let cc = match insn.mnemonic() {
        M::Fcmovb => 2,
        M::Fcmovnb => 3,
        M::Fcmove => 4,
        M::Fcmovne => 5,
        M::Fcmovbe => 6,
        M::Fcmovnbe => 7,
        M::Fcmovu => 10,
        _ => 11,
    };
    let c = tr.cond_value(cc);
    let sti = sti_of(insn);
    let sh = tr.b.shl(c, Val::C(16));
    let a0 = tr.b.or(sh, Val::C(Op::Cmov as u64 | sti << 8));
    tr.b.call(H.x87, &[Val::T(a0)]);
    Flow::Next
}

fn fnstsw(tr: &mut Tr, insn: &Instruction) -> Flow {
    let v = tr.b.get(G_FSW);
    if insn.op_kind(0) == OpKind::Register {
        tr.set_reg(Register::AX, v);
    } else {
        let a = tr.ea(insn);
        let m = tr.mop(insn, 2);
        tr.store(a, v, m);
    }
    Flow::Next
}

fn fenv(tr: &mut Tr, insn: &Instruction) -> Flow {
    let m = insn.mnemonic();
    if matches!(m, M::Fldenv | M::Frstor) {
        // Waiting forms: a pending unmasked exception is reported first.
        tr.pending_mf();
    }
    let kind = match m {
        M::Fnstenv | M::Fstenv => 0,
        M::Fldenv => 1,
        M::Fnsave | M::Fsave => 2,
        _ => 3,
    };
    let op16 =
        insn.memory_size() == MemorySize::FpuEnv14 || insn.memory_size() == MemorySize::FpuState94;
    let a = tr.ea(insn);
    tr.b.call_void(H.fenv, &[Val::C(kind | (op16 as u64) << 8), Val::T(a)]);
    Flow::Next
}
