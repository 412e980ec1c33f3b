//! PUSH/POP (registers, memory, immediates, segments), PUSHF/POPF, ENTER/LEAVE, PUSHA/POPA.

use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};
use jit::ir::{AccessKind, Exit, MemOp, MemSize, Temp, Val};

use super::{seg_of, sized_reg, Flow, Handler, Tr};
use crate::helpers::H;
use crate::state::*;

pub fn register(r: &mut impl FnMut(M, Handler)) {
    r(M::Push, push);
    r(M::Pop, pop);
    r(M::Pushf, pushf);
    r(M::Pushfd, pushf);
    r(M::Pushfq, pushf);
    r(M::Popf, popf);
    r(M::Popfd, popf);
    r(M::Popfq, popf);
    r(M::Enter, enter);
    r(M::Leave, leave);
    r(M::Pusha, |t, i| pusha(t, i, 2));
    r(M::Pushad, |t, i| pusha(t, i, 4));
    r(M::Popa, |t, i| popa(t, i, 2));
    r(M::Popad, |t, i| popa(t, i, 4));
}

impl Tr {
    /// Linear address of stack offset `sp` (already wrapped to the stack size).
    pub fn stack_addr(&mut self, sp: Temp) -> Temp {
        if self.code64() {
            return sp;
        }
        self.seg_add(Register::SS, sp)
    }

    pub fn stack_mop(&self, bytes: u32) -> MemOp {
        MemOp {
            size: MemSize::from_bytes(bytes),
            signed: false,
            kind: AccessKind::Stack,
            rmw: false,
        }
    }

    /// rsp - n, wrapped to the stack size (as an offset).
    pub fn sp_sub(&mut self, n: u64) -> Temp {
        let rsp = self.gpr(4);
        let s = self.b.sub(rsp, Val::C(n));
        self.wrap_sp(s)
    }

    pub fn sp_add(&mut self, n: u64) -> Temp {
        let rsp = self.gpr(4);
        let s = self.b.add(rsp, Val::C(n));
        self.wrap_sp(s)
    }

    pub fn wrap_sp(&mut self, s: Temp) -> Temp {
        match self.stack_size() {
            8 => s,
            4 => self.b.ext(s, MemSize::B4, false),
            _ => self.b.ext(s, MemSize::B2, false),
        }
    }

    /// Commit a new stack pointer offset (keeping the upper bits for a 16-bit stack).
    pub fn set_sp(&mut self, sp: Temp) {
        let ss = self.stack_size();
        self.set_gpr_sized(4, sp, ss);
    }

    /// Store `v` (`bytes` wide) at the new top of stack; returns the new sp (not committed).
    pub fn push_val(&mut self, v: impl Into<Val>, bytes: u32) -> Temp {
        let sp = self.sp_sub(bytes as u64);
        let a = self.stack_addr(sp);
        let m = self.stack_mop(bytes);
        self.store(a, v, m);
        sp
    }

    /// Load `bytes` from the top of stack at offset `off`; returns the value.
    pub fn stack_load(&mut self, off: u64, bytes: u32) -> Temp {
        let sp = self.sp_add(off);
        let a = self.stack_addr(sp);
        let m = self.stack_mop(bytes);
        self.load(a, m)
    }
}

fn op_bytes(insn: &Instruction) -> u32 {
    (-insn.stack_pointer_increment()) as u32
}

fn push(tr: &mut Tr, insn: &Instruction) -> Flow {
    let bytes = op_bytes(insn);
    if insn.op_kind(0) == OpKind::Register && insn.op_register(0).is_segment_register() {
        let sel = tr.b.get(seg_of(insn.op_register(0)).sel_g());
        // Recent Intel cores write only 16 bits for a wider push of a segment register.
        let sp = tr.sp_sub(bytes as u64);
        let a = tr.stack_addr(sp);
        let m = tr.stack_mop(2);
        tr.store(a, sel, m);
        tr.set_sp(sp);
        return Flow::Next;
    }
    let v = tr.read_op(insn, 0, bytes);
    let sp = tr.push_val(v, bytes);
    tr.set_sp(sp);
    Flow::Next
}

fn pop(tr: &mut Tr, insn: &Instruction) -> Flow {
    let bytes = (insn.stack_pointer_increment()) as u32;
    let v = tr.stack_load(0, bytes);
    match insn.op_kind(0) {
        OpKind::Register => {
            let r = insn.op_register(0);
            if r.is_segment_register() {
                let s = seg_of(r);
                tr.b.call_void(H.load_seg, &[Val::C(s as u64), Val::T(v)]);
                let sp = tr.sp_add(bytes as u64);
                tr.set_sp(sp);
                let next = tr.next;
                tr.b.exit(Exit::Sync { pc: next });
                return Flow::End;
            }
            let sp = tr.sp_add(bytes as u64);
            tr.set_sp(sp);
            // pop rsp: the loaded value wins.
            tr.set_reg(r, v);
        }
        _ => {
            // The address is computed with the incremented stack pointer.
            let mut a = tr.ea(insn);
            let base = insn.memory_base();
            if base == Register::RSP || base == Register::ESP || base == Register::SP {
                a = tr.b.add(a, Val::C(bytes as u64));
                if !tr.code64() {
                    a = tr.b.ext(a, MemSize::B4, false);
                }
            }
            let m = tr.mop(insn, bytes);
            tr.store(a, v, m);
            let sp = tr.sp_add(bytes as u64);
            tr.set_sp(sp);
        }
    }
    Flow::Next
}

fn pushf(tr: &mut Tr, insn: &Instruction) -> Flow {
    let bytes = op_bytes(insn);
    let f = tr.rflags();
    let f = tr.b.and(f, Val::C(!(fl::VM | fl::RF)));
    let sp = tr.push_val(f, bytes);
    tr.set_sp(sp);
    Flow::Next
}

fn popf(tr: &mut Tr, insn: &Instruction) -> Flow {
    let bytes = insn.stack_pointer_increment() as u32;
    let v = tr.stack_load(0, bytes);
    tr.b.call_void(H.popf, &[Val::T(v), Val::C(bytes as u64)]);
    tr.cc_static = Some(CcKind::Eflags as u64 * 4);
    let sp = tr.sp_add(bytes as u64);
    tr.set_sp(sp);
    // IF/TF/AC may have changed: give the platform a look.
    let next = tr.next;
    tr.b.exit(Exit::Sync { pc: next });
    Flow::End
}

fn enter(tr: &mut Tr, insn: &Instruction) -> Flow {
    let bytes = op_bytes_enter(tr, insn);
    let alloc = insn.immediate(0) & 0xffff;
    let level = (insn.immediate(1) & 31) as u64;
    let rbp = tr.gpr(5);
    // push rbp
    let sp0 = tr.sp_sub(bytes as u64);
    let a0 = tr.stack_addr(sp0);
    let m = tr.stack_mop(bytes);
    tr.store(a0, rbp, m);
    let frame = sp0;
    let mut sp = sp0;
    if level > 0 {
        for i in 1..level {
            let off = tr.b.sub(rbp, Val::C(i * bytes as u64));
            let off = tr.wrap_sp(off);
            let la = tr.stack_addr(off);
            let v = tr.load(la, m);
            let nsp = tr.b.sub(sp, Val::C(bytes as u64));
            sp = tr.wrap_sp(nsp);
            let sa = tr.stack_addr(sp);
            tr.store(sa, v, m);
        }
        let nsp = tr.b.sub(sp, Val::C(bytes as u64));
        sp = tr.wrap_sp(nsp);
        let sa = tr.stack_addr(sp);
        tr.store(sa, frame, m);
    }
    let nsp = tr.b.sub(sp, Val::C(alloc));
    let nsp = tr.wrap_sp(nsp);
    // The final stack pointer must be writable: touch it like hardware does.
    if alloc > 0 {
        let ta = tr.stack_addr(nsp);
        let m1 = tr.stack_mop(1);
        let _ = tr.load(ta, m1);
    }
    tr.set_gpr_sized(5, frame, bytes);
    tr.set_sp(nsp);
    Flow::Next
}

fn op_bytes_enter(tr: &Tr, insn: &Instruction) -> u32 {
    // ENTER pushes at the operand size (64 or 16 in 64-bit mode, 32 or 16 otherwise).
    let m = insn.memory_size().size() as u32;
    if m != 0 {
        m
    } else if tr.code64() {
        8
    } else {
        4
    }
}

fn leave(tr: &mut Tr, insn: &Instruction) -> Flow {
    let bytes = leave_size(tr, insn).unwrap_or(if tr.code64() { 8 } else { 4 });
    let rbp = tr.gpr(5);
    let sp = tr.wrap_sp(rbp);
    let a = tr.stack_addr(sp);
    let m = tr.stack_mop(bytes);
    let v = tr.load(a, m);
    let nsp = tr.b.add(sp, Val::C(bytes as u64));
    let nsp = tr.wrap_sp(nsp);
    tr.set_sp(nsp);
    tr.set_reg(sized_reg(5, bytes), v);
    Flow::Next
}

fn leave_size(_tr: &Tr, insn: &Instruction) -> Option<u32> {
    let n = insn.stack_pointer_increment();
    // iced reports LEAVE's increment as 0 (rsp is reloaded); use the memory size.
    let m = insn.memory_size().size() as u32;
    if m != 0 {
        Some(m)
    } else if n > 0 {
        Some(n as u32)
    } else {
        None
    }
}

fn pusha(tr: &mut Tr, _insn: &Instruction, bytes: u32) -> Flow {
    let rsp = tr.gpr(4);
    let m = tr.stack_mop(bytes);
    let mut last = None;
    for (k, r) in [0u16, 1, 2, 3, 4, 5, 6, 7].iter().enumerate() {
        let v = if *r == 4 { rsp } else { tr.gpr(*r) };
        let sp = tr.sp_sub(bytes as u64 * (k as u64 + 1));
        let a = tr.stack_addr(sp);
        tr.store(a, v, m);
        last = Some(sp);
    }
    tr.set_sp(last.unwrap());
    Flow::Next
}

fn popa(tr: &mut Tr, _insn: &Instruction, bytes: u32) -> Flow {
    let mut vals = Vec::new();
    for k in 0..8u64 {
        vals.push(tr.stack_load(k * bytes as u64, bytes));
    }
    // Stored order: edi esi ebp (esp skipped) ebx edx ecx eax from the top.
    let regs = [7u16, 6, 5, 4, 3, 2, 1, 0];
    for (k, r) in regs.iter().enumerate() {
        if *r != 4 {
            tr.set_gpr_sized(*r, vals[k], bytes);
        }
    }
    let sp = tr.sp_add(8 * bytes as u64);
    tr.set_sp(sp);
    Flow::Next
}
