//! String instructions: MOVS, STOS, LODS, CMPS, SCAS, with REP/REPE/REPNE.
//!
//! One iteration per pass through the block; while iterations remain the block leaves with
//! `Exit::Repeat` to the same instruction, which does not retire it: a REP instruction
//! retires once, when it completes, and interrupts can be taken between iterations as on
//! hardware.

use iced_x86::{Instruction, Mnemonic as M, Register};
use jit::ir::{BinOp, Cond, Exit, MemOp, MemSize, Temp, Val, Width};

use super::{sized_reg, Flow, Handler, Tr};
use crate::state::*;

pub fn register(r: &mut impl FnMut(M, Handler)) {
    for m in [M::Movsb, M::Movsw, M::Movsq] {
        r(m, |t, i| string(t, i, Kind::Movs));
    }
    // MOVSD and CMPSD are also SSE2 mnemonics.
    r(M::Movsd, |t, i| {
        if i.is_string_instruction() {
            string(t, i, Kind::Movs)
        } else {
            super::fp::movsd_cmpsd(t, i)
        }
    });
    r(M::Cmpsd, |t, i| {
        if i.is_string_instruction() {
            string(t, i, Kind::Cmps)
        } else {
            super::fp::movsd_cmpsd(t, i)
        }
    });
    for m in [M::Stosb, M::Stosw, M::Stosd, M::Stosq] {
        r(m, |t, i| string(t, i, Kind::Stos));
    }
    for m in [M::Lodsb, M::Lodsw, M::Lodsd, M::Lodsq] {
        r(m, |t, i| string(t, i, Kind::Lods));
    }
    for m in [M::Cmpsb, M::Cmpsw, M::Cmpsq] {
        r(m, |t, i| string(t, i, Kind::Cmps));
    }
    for m in [M::Scasb, M::Scasw, M::Scasd, M::Scasq] {
        r(m, |t, i| string(t, i, Kind::Scas));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Movs,
    Stos,
    Lods,
    Cmps,
    Scas,
}

fn elem_size(insn: &Instruction) -> u32 {
    use iced_x86::MemorySize as S;
    match insn.memory_size() {
        S::UInt8 | S::Int8 => 1,
        S::UInt16 | S::Int16 | S::WordOffset => 2,
        S::UInt32 | S::Int32 | S::DwordOffset => 4,
        _ => 8,
    }
}

fn string(tr: &mut Tr, insn: &Instruction, kind: Kind) -> Flow {
    // MOVSD/CMPSD with SSE operands share mnemonics with the string forms.
    if insn.op_count() > 0
        && insn.op_kind(0) == iced_x86::OpKind::Register
        && insn.op_register(0).is_xmm()
    {
        return tr.ud();
    }
    let size = elem_size(insn);
    let asize = string_addr_size(tr, insn);
    let rep = insn.has_rep_prefix() || insn.has_repe_prefix() || insn.has_repne_prefix();
    let done = tr.b.label();
    let amask = super::size_mask(asize);
    if rep {
        let c = tr.gpr(1);
        tr.b.brcond(Cond::TstZ, c, Val::C(amask), done);
        if matches!(kind, Kind::Movs | Kind::Stos) && !tr.single_step {
            // Whole pages at a time when nothing can fault (see helper_rep_fast); under
            // TF, one element per round (each round traps).
            let zero = tr.b.konst(0);
            let sbase = tr.seg_add(insn.memory_segment(), zero);
            let ebase = tr.seg_add(Register::ES, zero);
            let a0 = (kind == Kind::Stos) as u64
                | (size as u64) << 4
                | (asize as u64) << 8
                | (tr.code64() as u64) << 12;
            let k = tr.b.call(
                crate::helpers::H.rep_fast,
                &[Val::C(a0), Val::T(sbase), Val::T(ebase)],
            );
            let slow = tr.b.label();
            tr.b.brcond(Cond::Eq, k, Val::C(0), slow);
            let c2 = tr.gpr(1);
            tr.b.brcond(Cond::TstZ, c2, Val::C(amask), done);
            let pc = tr.pc;
            tr.b.exit(Exit::Repeat { pc });
            tr.b.place(slow);
        }
    }
    // Direction: RFLAGS.DF is part of the block key.
    let step = if tr.flags & tbf::DF != 0 {
        (size as u64).wrapping_neg()
    } else {
        size as u64
    };
    let m = MemOp::new(MemSize::from_bytes(size));
    let src_seg = insn.memory_segment();
    let si = tr.gpr(6);
    let di = tr.gpr(7);
    let siw = tr.b.and(si, Val::C(amask));
    let diw = tr.b.and(di, Val::C(amask));
    let src_addr = |tr: &mut Tr| -> Temp { tr.seg_add(src_seg, siw) };
    let dst_addr = |tr: &mut Tr| -> Temp { tr.seg_add(Register::ES, diw) };
    let mut uses_si = false;
    let mut uses_di = false;
    let mut cmp: Option<(Temp, Temp)> = None;
    match kind {
        Kind::Movs => {
            let sa = src_addr(tr);
            let v = tr.load(sa, m);
            let da = dst_addr(tr);
            tr.store(da, v, m);
            uses_si = true;
            uses_di = true;
        }
        Kind::Stos => {
            let a = tr.reg(sized_reg(0, size));
            let da = dst_addr(tr);
            tr.store(da, a, m);
            uses_di = true;
        }
        Kind::Lods => {
            let sa = src_addr(tr);
            let v = tr.load(sa, m);
            tr.set_reg(sized_reg(0, size), v);
            uses_si = true;
        }
        Kind::Cmps => {
            let sa = src_addr(tr);
            let a = tr.load(sa, m);
            let da = dst_addr(tr);
            let b = tr.load(da, m);
            cmp = Some((a, b));
            uses_si = true;
            uses_di = true;
        }
        Kind::Scas => {
            let a = tr.reg(sized_reg(0, size));
            let da = dst_addr(tr);
            let b = tr.load(da, m);
            cmp = Some((a, b));
            uses_di = true;
        }
    }
    // Commit: index registers (at the address size), flags, count.
    if uses_si {
        let n = tr.b.add(si, Val::C(step));
        tr.set_gpr_sized(6, n, asize);
    }
    if uses_di {
        let n = tr.b.add(di, Val::C(step));
        tr.set_gpr_sized(7, n, asize);
    }
    let mut zf_exit: Option<(Cond, Temp)> = None;
    if let Some((a, b)) = cmp {
        let r = tr.b.bin(BinOp::Sub, Width::W64, a, b);
        let saved_live = tr.flags_live;
        tr.flags_live = true;
        tr.set_cc(CcKind::Sub, size, r, Val::T(b), None);
        tr.flags_live = saved_live;
        let rm = tr.b.ext(r, MemSize::from_bytes(size), false);
        if insn.has_repe_prefix() {
            zf_exit = Some((Cond::Ne, rm)); // stop when ZF = 0
        } else if insn.has_repne_prefix() {
            zf_exit = Some((Cond::Eq, rm)); // stop when ZF = 1
        }
    }
    if !rep {
        return Flow::Next;
    }
    let c = tr.gpr(1);
    let c1 = tr.b.sub(c, Val::C(1));
    tr.set_gpr_sized(1, c1, asize);
    if let Some((cond, rm)) = zf_exit {
        tr.b.brcond(cond, rm, Val::C(0), done);
    }
    tr.b.brcond(Cond::TstZ, c1, Val::C(amask), done);
    let pc = tr.pc;
    tr.b.exit(Exit::Repeat { pc });
    tr.b.place(done);
    let next = tr.next;
    tr.exit_jump(next);
    Flow::End
}

fn string_addr_size(tr: &Tr, insn: &Instruction) -> u32 {
    // iced reports the string operand kinds per address size.
    use iced_x86::OpKind as K;
    for i in 0..insn.op_count() {
        match insn.op_kind(i) {
            K::MemorySegRSI | K::MemoryESRDI => return 8,
            K::MemorySegESI | K::MemoryESEDI => return 4,
            K::MemorySegSI | K::MemoryESDI => return 2,
            _ => {}
        }
    }
    if tr.code64() {
        8
    } else {
        4
    }
}
