//! Control transfer: JMP, Jcc, CALL, RET (near and far), LOOP*, JCXZ*, INT n/INT3/INTO/INT1,
//! UD0/UD1/UD2.

use iced_x86::{Instruction, Mnemonic as M, OpKind};
use jit::ir::{Cond, Exit, MemSize, Temp, Val};

use super::{cc_of, Flow, Handler, Tr};
use crate::helpers::H;
use crate::PlatformOp;

pub fn register(r: &mut impl FnMut(M, Handler)) {
    r(M::Jmp, jmp);
    for m in [
        M::Jo,
        M::Jno,
        M::Jb,
        M::Jae,
        M::Je,
        M::Jne,
        M::Jbe,
        M::Ja,
        M::Js,
        M::Jns,
        M::Jp,
        M::Jnp,
        M::Jl,
        M::Jge,
        M::Jle,
        M::Jg,
    ] {
        r(m, jcc);
    }
    r(M::Call, call);
    r(M::Ret, ret);
    r(M::Retf, retf);
    r(M::Loop, |t, i| lp(t, i, None));
    r(M::Loope, |t, i| lp(t, i, Some(true)));
    r(M::Loopne, |t, i| lp(t, i, Some(false)));
    r(M::Jcxz, jcxz);
    r(M::Jecxz, jcxz);
    r(M::Jrcxz, jcxz);
    r(M::Int, |t, i| {
        t.platform(PlatformOp::SoftInt, i.immediate(0) & 0xff, i)
    });
    r(M::Int3, |t, i| {
        t.platform(PlatformOp::SoftInt, 3 | 1 << 8, i)
    });
    r(M::Int1, |t, i| {
        t.platform(PlatformOp::SoftInt, 1 | 3 << 8, i)
    });
    r(M::Into, into);
    r(M::Ud0, |t, _| t.ud());
    r(M::Ud1, |t, _| t.ud());
    r(M::Ud2, |t, _| t.ud());
}

impl Tr {
    /// Exit to a computed target; in 64-bit mode a non-canonical target raises #GP(0) at
    /// the branch instruction itself.
    pub fn exit_indirect(&mut self, target: Temp) {
        let t = if self.code64() {
            let ext = self.b.ext(target, MemSize::B8, false);
            let sh = self.b.shl(ext, Val::C(16));
            let sx = self.b.sar(sh, Val::C(16));
            let ok = self.b.label();
            self.b.brcond(Cond::Eq, sx, Val::T(target), ok);
            self.b.exit(Exit::Exception {
                vector: 13,
                error_code: Some(0),
            });
            self.b.place(ok);
            target
        } else if self.flags & crate::state::tbf::CODE32 != 0 {
            self.b.ext(target, MemSize::B4, false)
        } else {
            self.b.ext(target, MemSize::B2, false)
        };
        self.b.exit(Exit::Indirect { pc: t });
    }

    /// Jump to a constant target, checking canonicality in 64-bit mode.
    pub fn exit_direct(&mut self, target: u64) {
        if self.code64() && !crate::mmu::is_canonical(target) {
            self.b.exit(Exit::Exception {
                vector: 13,
                error_code: Some(0),
            });
            return;
        }
        self.exit_jump(target);
    }

    /// Operand size of near branches: 8 in 64-bit mode (16 with 66h), else 4 or 2.
    fn branch_bytes(&self, insn: &Instruction) -> u32 {
        let inc = insn.stack_pointer_increment();
        if inc != 0 {
            return inc.unsigned_abs();
        }
        match insn.op_kind(0) {
            OpKind::Register => insn.op_register(0).size() as u32,
            OpKind::Memory => insn.memory_size().size() as u32,
            _ => {
                if self.code64() {
                    8
                } else if self.flags & crate::state::tbf::CODE32 != 0 {
                    4
                } else {
                    2
                }
            }
        }
    }
}

fn jmp(tr: &mut Tr, insn: &Instruction) -> Flow {
    match insn.op_kind(0) {
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
            let t = insn.near_branch_target();
            tr.exit_direct(t);
        }
        OpKind::FarBranch16 | OpKind::FarBranch32 => {
            let sel = insn.far_branch_selector() as u64;
            let off = if insn.op_kind(0) == OpKind::FarBranch16 {
                insn.far_branch16() as u64
            } else {
                insn.far_branch32() as u64
            };
            tr.b.call_void(
                H.far_jump,
                &[Val::C(0), Val::C(sel), Val::C(off), Val::C(0)],
            );
            tr.b.exit(Exit::Sync { pc: u64::MAX });
            fix_sync(tr);
        }
        OpKind::Memory if insn.memory_size().is_packed() || is_far_mem(insn) => {
            let (sel, off) = far_ptr(tr, insn);
            tr.b.call_void(
                H.far_jump,
                &[Val::C(0), Val::T(sel), Val::T(off), Val::C(0)],
            );
            tr.b.exit(Exit::Sync { pc: u64::MAX });
            fix_sync(tr);
        }
        _ => {
            let bytes = tr.branch_bytes(insn);
            let t = tr.read_op_t(insn, 0, bytes);
            tr.exit_indirect(t);
        }
    }
    Flow::End
}

fn is_far_mem(insn: &Instruction) -> bool {
    use iced_x86::MemorySize as S;
    matches!(insn.memory_size(), S::SegPtr16 | S::SegPtr32 | S::SegPtr64)
}

/// Load a far pointer m16:16/32/64 (offset first, then selector).
fn far_ptr(tr: &mut Tr, insn: &Instruction) -> (Temp, Temp) {
    use iced_x86::MemorySize as S;
    let osz = match insn.memory_size() {
        S::SegPtr16 => 2,
        S::SegPtr64 => 8,
        _ => 4,
    };
    let a = tr.ea(insn);
    let m = tr.mop(insn, osz);
    let off = tr.load(a, m);
    let a2 = tr.b.add(a, Val::C(osz as u64));
    let m2 = tr.mop(insn, 2);
    let sel = tr.load(a2, m2);
    (sel, off)
}

/// A far transfer's helper has set CS and RIP: leave the block with a Sync that keeps the
/// pc the helper wrote, so the run loop recomputes the mode from the new CS.
fn fix_sync(tr: &mut Tr) {
    tr.b.block.ops.pop();
    tr.b.exit(Exit::Sync {
        pc: jit::ir::SYNC_KEEP_PC,
    });
}

/// Jcc: a side exit for the taken branch; the block goes on with the fall-through path
/// (the block loop ends it after the last instruction it decoded).
fn jcc(tr: &mut Tr, insn: &Instruction) -> Flow {
    let (c, a, b) = tr.cond(cc_of(insn));
    let fall = tr.b.label();
    tr.b.brcond(c.invert(), a, b, fall);
    tr.exit_direct(insn.near_branch_target());
    tr.b.place(fall);
    Flow::Next
}

fn call(tr: &mut Tr, insn: &Instruction) -> Flow {
    match insn.op_kind(0) {
        OpKind::FarBranch16 | OpKind::FarBranch32 => {
            let sel = insn.far_branch_selector() as u64;
            let (off, osz) = if insn.op_kind(0) == OpKind::FarBranch16 {
                (insn.far_branch16() as u64, 2)
            } else {
                (insn.far_branch32() as u64, 4)
            };
            let next = tr.next;
            tr.b.call_void(
                H.far_jump,
                &[Val::C(1), Val::C(sel), Val::C(off), Val::C(osz | next << 8)],
            );
            tr.b.exit(Exit::Sync { pc: u64::MAX });
            fix_sync(tr);
            return Flow::End;
        }
        OpKind::Memory if is_far_mem(insn) => {
            let (sel, off) = far_ptr(tr, insn);
            let osz = insn.memory_size().size() as u64 - 2;
            let next = tr.next;
            tr.b.call_void(
                H.far_jump,
                &[Val::C(1), Val::T(sel), Val::T(off), Val::C(osz | next << 8)],
            );
            tr.b.exit(Exit::Sync { pc: u64::MAX });
            fix_sync(tr);
            return Flow::End;
        }
        _ => {}
    }
    let bytes = tr.branch_bytes(insn);
    let target = match insn.op_kind(0) {
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => None,
        _ => Some(tr.read_op_t(insn, 0, bytes)),
    };
    let next = tr.next;
    let sp = tr.push_val(Val::C(next & super::size_mask(bytes)), bytes);
    tr.set_sp(sp);
    match target {
        None => tr.exit_direct(insn.near_branch_target()),
        Some(t) => tr.exit_indirect(t),
    }
    Flow::End
}

fn ret(tr: &mut Tr, insn: &Instruction) -> Flow {
    let imm = if insn.op_count() > 0 {
        insn.immediate(0) & 0xffff
    } else {
        0
    };
    let bytes = (insn.stack_pointer_increment() as u64 - imm) as u32;
    let t = tr.stack_load(0, bytes);
    let sp = tr.sp_add(bytes as u64 + imm);
    // A non-canonical return address faults before rsp changes.
    if tr.code64() {
        let sh = tr.b.shl(t, Val::C(16));
        let sx = tr.b.sar(sh, Val::C(16));
        let ok = tr.b.label();
        tr.b.brcond(Cond::Eq, sx, Val::T(t), ok);
        tr.b.exit(Exit::Exception {
            vector: 13,
            error_code: Some(0),
        });
        tr.b.place(ok);
    }
    tr.set_sp(sp);
    tr.b.exit(Exit::Indirect { pc: t });
    Flow::End
}

fn retf(tr: &mut Tr, insn: &Instruction) -> Flow {
    let imm = if insn.op_count() > 0 {
        insn.immediate(0) & 0xffff
    } else {
        0
    };
    let osz = ((insn.stack_pointer_increment() as u64 - imm) / 2).max(2);
    tr.b.call_void(
        H.far_jump,
        &[Val::C(2), Val::C(osz), Val::C(imm), Val::C(0)],
    );
    tr.b.exit(Exit::Sync { pc: u64::MAX });
    fix_sync(tr);
    Flow::End
}

fn lp(tr: &mut Tr, insn: &Instruction, z: Option<bool>) -> Flow {
    let asize = loop_addr_size(tr, insn);
    let zf = z.map(|_| tr.cond_value(4));
    let c = tr.gpr(1);
    let c1 = tr.b.sub(c, Val::C(1));
    tr.set_gpr_sized(1, c1, asize);
    let not_taken = tr.b.label();
    tr.b.brcond(Cond::TstZ, c1, Val::C(super::size_mask(asize)), not_taken);
    if let (Some(want), Some(zf)) = (z, zf) {
        tr.b.brcond(
            if want { Cond::Eq } else { Cond::Ne },
            zf,
            Val::C(0),
            not_taken,
        );
    }
    tr.exit_direct(insn.near_branch_target());
    tr.b.place(not_taken);
    let next = tr.next;
    tr.exit_jump(next);
    Flow::End
}

fn loop_addr_size(tr: &Tr, insn: &Instruction) -> u32 {
    match insn.mnemonic() {
        M::Jrcxz => 8,
        M::Jecxz => 4,
        M::Jcxz => 2,
        _ => {
            // LOOP uses rCX at the address size, which iced encodes in the Code.
            use iced_x86::Code as C;
            match insn.code() {
                C::Loop_rel8_64_RCX
                | C::Loope_rel8_64_RCX
                | C::Loopne_rel8_64_RCX
                | C::Loop_rel8_16_RCX
                | C::Loope_rel8_16_RCX
                | C::Loopne_rel8_16_RCX => 8,
                C::Loop_rel8_64_ECX
                | C::Loope_rel8_64_ECX
                | C::Loopne_rel8_64_ECX
                | C::Loop_rel8_16_ECX
                | C::Loope_rel8_16_ECX
                | C::Loopne_rel8_16_ECX
                | C::Loop_rel8_32_ECX
                | C::Loope_rel8_32_ECX
                | C::Loopne_rel8_32_ECX => 4,
                C::Loop_rel8_16_CX
                | C::Loope_rel8_16_CX
                | C::Loopne_rel8_16_CX
                | C::Loop_rel8_32_CX
                | C::Loope_rel8_32_CX
                | C::Loopne_rel8_32_CX => 2,
                _ if tr.code64() => 8,
                _ => 4,
            }
        }
    }
}

fn jcxz(tr: &mut Tr, insn: &Instruction) -> Flow {
    let asize = loop_addr_size(tr, insn);
    let c = tr.gpr(1);
    let taken = tr.b.label();
    tr.b.brcond(Cond::TstZ, c, Val::C(super::size_mask(asize)), taken);
    let next = tr.next;
    tr.exit_jump(next);
    tr.b.place(taken);
    tr.exit_direct(insn.near_branch_target());
    Flow::End
}

fn into(tr: &mut Tr, insn: &Instruction) -> Flow {
    let of = tr.cond_value(0);
    let skip = tr.b.label();
    tr.b.brcond(Cond::Eq, of, Val::C(0), skip);
    tr.b.exit(Exit::Platform {
        op: PlatformOp::SoftInt as u32,
        arg: 4 | 2 << 8,
        len: insn.len() as u8,
    });
    tr.b.place(skip);
    let next = tr.next;
    tr.exit_jump(next);
    Flow::End
}
