//! MMX/SSE (and the FP state instructions) → IR.
//!
//! Availability first ([`gate`]): CR0.EM/TS and CR4.OSFXSR/OSXSAVE are translation-block
//! flags, so the #UD/#NM decisions are made at translation time. Moves, logic and
//! loads/stores are inline IR on the XMM/MMX globals; every other instruction calls the
//! `sse` helper with its op number from [`crate::fp::table`], after the generated code has
//! loaded a memory source into `G_FPTMP` (so a fault happens before anything changes).

use iced_x86::{Code, CpuidFeature, Instruction, Mnemonic as M, OpKind, Register};
use jit::ir::{
    BinOp, Cond, Exit, Inline, MemOp, MemSize, SseArith, SseForm, SseOp, Temp, Val, Width,
};

use super::{Flow, Handler, Tr};
use crate::fp::{self, arg, Shape};
use crate::helpers::H;
use crate::state::*;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    None,
    X87,
    Mmx,
    Sse,
    Fxsr,
    Xsave,
    XcrAccess,
    Wait,
}

fn class(insn: &Instruction) -> Class {
    match insn.mnemonic() {
        M::Wait => return Class::Wait,
        M::Fxsave | M::Fxsave64 | M::Fxrstor | M::Fxrstor64 => return Class::Fxsr,
        M::Xsave | M::Xsave64 | M::Xsaveopt | M::Xsaveopt64 | M::Xrstor | M::Xrstor64 => {
            return Class::Xsave
        }
        M::Xgetbv | M::Xsetbv => return Class::XcrAccess,
        M::Ldmxcsr | M::Stmxcsr => return Class::Sse,
        M::Emms => return Class::Mmx,
        _ => {}
    }
    let regs = (0..insn.op_count())
        .filter(|&i| insn.op_kind(i) == OpKind::Register)
        .map(|i| insn.op_register(i));
    let (mut xmm, mut mm) = (false, false);
    for r in regs {
        xmm |= r.is_xmm();
        mm |= r.is_mm();
    }
    if xmm {
        Class::Sse
    } else if mm {
        Class::Mmx
    } else if insn.cpuid_features().iter().any(|f| {
        matches!(
            f,
            CpuidFeature::FPU | CpuidFeature::FPU287 | CpuidFeature::FPU387
        )
    }) {
        Class::X87
    } else {
        Class::None
    }
}

fn has_mm_reg(insn: &Instruction) -> bool {
    (0..insn.op_count()).any(|i| insn.op_kind(i) == OpKind::Register && insn.op_register(i).is_mm())
}

/// The availability checks of FP/SIMD instructions: `Some(flow)` when the instruction
/// raises #UD or #NM instead of executing.
pub fn gate(tr: &mut Tr, insn: &Instruction) -> Option<Flow> {
    let f = tr.flags;
    let (ts, em, mp) = (f & tbf::TS != 0, f & tbf::EM != 0, f & tbf::MP != 0);
    let (osfxsr, osxsave) = (f & tbf::OSFXSR != 0, f & tbf::OSXSAVE != 0);
    let ud = |tr: &mut Tr| Some(tr.ud());
    let nm = |tr: &mut Tr| Some(tr.exception(7, None));
    match class(insn) {
        Class::None => None,
        Class::X87 | Class::Fxsr if em || ts => nm(tr),
        Class::Mmx if em => ud(tr),
        Class::Sse if em || !osfxsr => ud(tr),
        Class::Mmx | Class::Sse if ts => nm(tr),
        Class::Xsave | Class::XcrAccess if !osxsave => ud(tr),
        Class::Xsave if ts => nm(tr),
        Class::Wait if ts && mp => nm(tr),
        // MMX instructions (EMMS included, and the SSE ones with an MMX register operand:
        // MOVQ2DQ, MOVDQ2Q, CVTPI2PS...) check for a pending unmasked x87 exception
        // (SDM Vol. 1 §9.5.2 / Vol. 3A §22.25.3): #MF after #UD and #NM.
        Class::Mmx => {
            tr.pending_mf();
            None
        }
        Class::Sse if has_mm_reg(insn) => {
            tr.pending_mf();
            None
        }
        _ => None,
    }
}

pub fn register(r: &mut impl FnMut(M, Handler)) {
    for m in [
        M::Movaps,
        M::Movapd,
        M::Movdqa,
        M::Movntps,
        M::Movntpd,
        M::Movntdq,
        M::Movntdqa,
    ] {
        r(m, |t, i| mov128(t, i, true));
    }
    for m in [M::Movups, M::Movupd, M::Movdqu, M::Lddqu] {
        r(m, |t, i| mov128(t, i, false));
    }
    r(M::Movss, |t, i| mov_scalar(t, i, 4));
    r(M::Movq, movq_d);
    r(M::Movd, movq_d);
    r(M::Movnti, movq_d);
    r(M::Movntq, movq_d);
    for m in [M::Movhps, M::Movhpd] {
        r(m, |t, i| mov_half(t, i, 1));
    }
    for m in [M::Movlps, M::Movlpd] {
        r(m, |t, i| mov_half(t, i, 0));
    }
    r(M::Movhlps, |t, i| reg_half(t, i, 0, 1));
    r(M::Movlhps, |t, i| reg_half(t, i, 1, 0));
    r(M::Movq2dq, movq2dq);
    r(M::Movdq2q, movq2dq);
    for m in [
        M::Pand,
        M::Andps,
        M::Andpd,
        M::Pandn,
        M::Andnps,
        M::Andnpd,
        M::Por,
        M::Orps,
        M::Orpd,
        M::Pxor,
        M::Xorps,
        M::Xorpd,
    ] {
        r(m, logic);
    }
    r(M::Emms, |t, _| {
        // All tags empty and TOP = 0 (SDM Vol. 1 Table 9-2).
        let sw = t.b.get(G_FSW);
        let sw = t.b.and(sw, Val::C(!0x3800));
        t.b.set(G_FSW, sw);
        t.b.set(G_FTW, Val::C(0));
        Flow::Next
    });
    r(M::Ldmxcsr, ldmxcsr);
    r(M::Stmxcsr, |t, i| {
        let a = t.ea(i);
        let v = t.b.get(G_MXCSR);
        let m = t.mop(i, 4);
        t.store(a, v, m);
        Flow::Next
    });
    for m in [
        M::Fxsave,
        M::Fxsave64,
        M::Fxrstor,
        M::Fxrstor64,
        M::Xsave,
        M::Xsave64,
        M::Xsaveopt,
        M::Xsaveopt64,
        M::Xrstor,
        M::Xrstor64,
    ] {
        r(m, fxstate);
    }
    r(M::Maskmovq, maskmov);
    r(M::Maskmovdqu, maskmov);
    // The byte compare and mask extraction glibc's string functions loop on: inline for
    // XMM operands (MMX forms go to the helper).
    r(M::Pcmpeqb, pcmpeqb);
    r(M::Pmovmskb, pmovmskb);
    // Integer shuffles and adds of glibc's memset broadcast and the kernel's BLAKE2s/SHA
    // rounds, inline on XMM operands as quadword arithmetic.
    let lane_ops = [
        M::Pshufd,
        M::Paddd,
        M::Paddq,
        M::Punpcklbw,
        M::Punpcklwd,
        M::Punpckldq,
        M::Punpcklqdq,
        M::Psrld,
        M::Pslld,
    ];
    for m in lane_ops {
        r(m, xmm_lanes);
    }
    for e in fp::table() {
        // CMPSD is registered with the string instructions (it dispatches here).
        if !matches!(e.m, M::Cmpsd | M::Crc32 | M::Pcmpeqb | M::Pmovmskb)
            && !lane_ops.contains(&e.m)
        {
            r(e.m, generic);
        }
    }
    // The REX.W forms of PCMPESTRI/PCMPESTRM (64-bit lengths in RAX/RDX).
    r(M::Pcmpestri64, generic);
    r(M::Pcmpestrm64, generic);
    r(M::Crc32, crc32);
}

/// SSE forms of MOVSD and CMPSD (the mnemonics are shared with the string instructions).
pub fn movsd_cmpsd(tr: &mut Tr, insn: &Instruction) -> Flow {
    if insn.mnemonic() == M::Movsd {
        mov_scalar(tr, insn, 8)
    } else {
        generic(tr, insn)
    }
}

fn xmm_index(r: Register) -> u32 {
    r as u32 - Register::XMM0 as u32
}
fn mm_index(r: Register) -> u32 {
    r as u32 - Register::MM0 as u32
}

impl Tr {
    /// #GP(0) unless `addr` is 16-byte aligned.
    fn align16(&mut self, addr: Temp) {
        let ok = self.b.label();
        self.b.brcond(Cond::TstZ, addr, Val::C(15), ok);
        self.b.exit(Exit::Exception {
            vector: 13,
            error_code: Some(0),
        });
        self.b.place(ok);
    }

    fn addr_plus(&mut self, addr: Temp, n: u64) -> Temp {
        let a = self.b.add(addr, Val::C(n));
        if self.code64() {
            a
        } else {
            self.b.ext(a, MemSize::B4, false)
        }
    }

    /// Load 16 bytes (two quadwords).
    fn load128(&mut self, insn: &Instruction, addr: Temp, align: bool) -> (Temp, Temp) {
        if align {
            self.align16(addr);
        }
        let m = self.mop(insn, 8);
        let hi_a = self.addr_plus(addr, 8);
        let lo = self.load(addr, m);
        let hi = self.load(hi_a, m);
        (lo, hi)
    }

    /// Store 16 bytes. An unaligned store checks the write access of both halves (the
    /// first, then the second: a fault reports the lowest inaccessible address) before
    /// storing, so a fault leaves memory unchanged.
    fn store128(&mut self, insn: &Instruction, addr: Temp, lo: Temp, hi: Temp, align: bool) {
        let m = self.mop(insn, 8);
        let hi_a = self.addr_plus(addr, 8);
        if align {
            self.align16(addr);
        } else {
            let _ = self.load(addr, MemOp { rmw: true, ..m });
            let _ = self.load(hi_a, MemOp { rmw: true, ..m });
        }
        self.store(addr, lo, m);
        self.store(hi_a, hi, m);
    }

    /// Load the instruction's memory operand (`bytes`: up to 8, 10 or 16) into `G_FPTMP`
    /// (low quadword) and `G_FPTMP + 1` (the rest; zero when there is none). A 16-byte
    /// operand checks alignment when `align`.
    pub(super) fn mem_to_fptmp(&mut self, insn: &Instruction, bytes: u32, align: bool) {
        let a = self.ea(insn);
        let (lo, hi) = match bytes {
            16 => {
                let (lo, hi) = self.load128(insn, a, align);
                (lo, Val::T(hi))
            }
            10 => {
                let (m8, m2) = (self.mop(insn, 8), self.mop(insn, 2));
                let a2 = self.addr_plus(a, 8);
                let lo = self.load(a, m8);
                (lo, Val::T(self.load(a2, m2)))
            }
            _ => {
                let m = self.mop(insn, bytes);
                (self.load(a, m), Val::C(0))
            }
        };
        self.b.set(G_FPTMP, lo);
        self.b.set(G_FPTMP + 1, hi);
    }

    /// MMX state transition (TOP = 0, all registers valid) that every MMX instruction
    /// but EMMS makes.
    fn mmx_transition(&mut self) {
        let sw = self.b.get(G_FSW);
        let sw = self.b.and(sw, Val::C(!0x3800));
        self.b.set(G_FSW, sw);
        self.b.set(G_FTW, Val::C(0xff));
    }

    fn set_mm(&mut self, i: u32, v: impl Into<Val>) {
        self.b.set(mmx_g(i), v);
        self.b.set(mmx_g(i) + 1, Val::C(0xffff));
    }
}

fn mov128(tr: &mut Tr, insn: &Instruction, align: bool) -> Flow {
    match (insn.op_kind(0), insn.op_kind(1)) {
        (OpKind::Register, OpKind::Register) => {
            let (d, s) = (
                xmm_index(insn.op_register(0)),
                xmm_index(insn.op_register(1)),
            );
            let lo = tr.b.get(xmm_g(s));
            let hi = tr.b.get(xmm_g(s) + 1);
            tr.b.set(xmm_g(d), lo);
            tr.b.set(xmm_g(d) + 1, hi);
        }
        (OpKind::Register, _) => {
            let d = xmm_index(insn.op_register(0));
            let a = tr.ea(insn);
            let (lo, hi) = tr.load128(insn, a, align);
            tr.b.set(xmm_g(d), lo);
            tr.b.set(xmm_g(d) + 1, hi);
        }
        _ => {
            let s = xmm_index(insn.op_register(1));
            let a = tr.ea(insn);
            let lo = tr.b.get(xmm_g(s));
            let hi = tr.b.get(xmm_g(s) + 1);
            tr.store128(insn, a, lo, hi, align);
        }
    }
    Flow::Next
}

/// MOVSS/MOVSD: register to register merges the low element; a load zeroes the rest.
fn mov_scalar(tr: &mut Tr, insn: &Instruction, bytes: u32) -> Flow {
    match (insn.op_kind(0), insn.op_kind(1)) {
        (OpKind::Register, OpKind::Register) => {
            let (d, s) = (
                xmm_index(insn.op_register(0)),
                xmm_index(insn.op_register(1)),
            );
            let sv = tr.b.get(xmm_g(s));
            if bytes == 8 {
                tr.b.set(xmm_g(d), sv);
            } else {
                let dv = tr.b.get(xmm_g(d));
                let dk = tr.b.and(dv, Val::C(!0xffff_ffff));
                let sk = tr.b.ext(sv, MemSize::B4, false);
                let v = tr.b.or(dk, sk);
                tr.b.set(xmm_g(d), v);
            }
        }
        (OpKind::Register, _) => {
            let d = xmm_index(insn.op_register(0));
            let a = tr.ea(insn);
            let m = tr.mop(insn, bytes);
            let v = tr.load(a, m);
            tr.b.set(xmm_g(d), v);
            tr.b.set(xmm_g(d) + 1, Val::C(0));
        }
        _ => {
            let s = xmm_index(insn.op_register(1));
            let a = tr.ea(insn);
            let m = tr.mop(insn, bytes);
            let v = tr.b.get(xmm_g(s));
            tr.store(a, v, m);
        }
    }
    Flow::Next
}

/// MOVD/MOVQ between XMM, MMX, general registers and memory; MOVNTI, MOVNTQ.
fn movq_d(tr: &mut Tr, insn: &Instruction) -> Flow {
    let bytes = if insn.mnemonic() == M::Movd
        || (insn.mnemonic() == M::Movnti && insn.op_register(1).size() == 4)
    {
        4
    } else {
        8
    };
    // Source value.
    let v = match insn.op_kind(1) {
        OpKind::Register => {
            let r = insn.op_register(1);
            if r.is_xmm() {
                let v = tr.b.get(xmm_g(xmm_index(r)));
                if bytes == 4 {
                    tr.b.ext(v, MemSize::B4, false)
                } else {
                    v
                }
            } else if r.is_mm() {
                let v = tr.b.get(mmx_g(mm_index(r)));
                if bytes == 4 {
                    tr.b.ext(v, MemSize::B4, false)
                } else {
                    v
                }
            } else {
                tr.reg(r)
            }
        }
        _ => {
            let a = tr.ea(insn);
            let m = tr.mop(insn, bytes);
            tr.load(a, m)
        }
    };
    let mmx = (0..2).any(|i| insn.op_kind(i) == OpKind::Register && insn.op_register(i).is_mm());
    match insn.op_kind(0) {
        OpKind::Register => {
            let r = insn.op_register(0);
            if r.is_xmm() {
                tr.b.set(xmm_g(xmm_index(r)), v);
                tr.b.set(xmm_g(xmm_index(r)) + 1, Val::C(0));
            } else if r.is_mm() {
                tr.set_mm(mm_index(r), v);
            } else {
                tr.set_reg(r, v);
            }
        }
        _ => {
            let a = tr.ea(insn);
            let m = tr.mop(insn, bytes);
            tr.store(a, v, m);
        }
    }
    if mmx {
        tr.mmx_transition();
    }
    Flow::Next
}

/// MOVHPS/MOVHPD/MOVLPS/MOVLPD with memory: one quadword (`half`) of the register.
fn mov_half(tr: &mut Tr, insn: &Instruction, half: u16) -> Flow {
    let a = tr.ea(insn);
    let m = tr.mop(insn, 8);
    if insn.op_kind(0) == OpKind::Register {
        let d = xmm_index(insn.op_register(0));
        let v = tr.load(a, m);
        tr.b.set(xmm_g(d) + half, v);
    } else {
        let s = xmm_index(insn.op_register(1));
        let v = tr.b.get(xmm_g(s) + half);
        tr.store(a, v, m);
    }
    Flow::Next
}

/// MOVHLPS/MOVLHPS: destination quadword `dh` from source quadword `sh`.
fn reg_half(tr: &mut Tr, insn: &Instruction, dh: u16, sh: u16) -> Flow {
    let (d, s) = (
        xmm_index(insn.op_register(0)),
        xmm_index(insn.op_register(1)),
    );
    let v = tr.b.get(xmm_g(s) + sh);
    tr.b.set(xmm_g(d) + dh, v);
    Flow::Next
}

fn movq2dq(tr: &mut Tr, insn: &Instruction) -> Flow {
    let (d, s) = (insn.op_register(0), insn.op_register(1));
    if d.is_xmm() {
        let v = tr.b.get(mmx_g(mm_index(s)));
        tr.b.set(xmm_g(xmm_index(d)), v);
        tr.b.set(xmm_g(xmm_index(d)) + 1, Val::C(0));
    } else {
        let v = tr.b.get(xmm_g(xmm_index(s)));
        tr.set_mm(mm_index(d), v);
    }
    tr.mmx_transition();
    Flow::Next
}

fn logic(tr: &mut Tr, insn: &Instruction) -> Flow {
    let op = |tr: &mut Tr, a: Temp, b: Temp| -> Temp {
        match insn.mnemonic() {
            M::Pand | M::Andps | M::Andpd => tr.b.and(a, b),
            M::Pandn | M::Andnps | M::Andnpd => {
                let na = tr.b.xor(a, Val::C(u64::MAX));
                tr.b.and(na, b)
            }
            M::Por | M::Orps | M::Orpd => tr.b.or(a, b),
            _ => tr.b.xor(a, b),
        }
    };
    let d = insn.op_register(0);
    if d.is_mm() {
        let s = match insn.op_kind(1) {
            OpKind::Register => tr.b.get(mmx_g(mm_index(insn.op_register(1)))),
            _ => {
                let a = tr.ea(insn);
                let m = tr.mop(insn, 8);
                tr.load(a, m)
            }
        };
        let dv = tr.b.get(mmx_g(mm_index(d)));
        let r = op(tr, dv, s);
        tr.set_mm(mm_index(d), r);
        tr.mmx_transition();
        return Flow::Next;
    }
    let di = xmm_index(d);
    // XOR/ANDN/SUB of a register with itself: a constant result.
    if insn.op_kind(1) == OpKind::Register
        && insn.op_register(1) == d
        && matches!(
            insn.mnemonic(),
            M::Pxor | M::Xorps | M::Xorpd | M::Pandn | M::Andnps | M::Andnpd
        )
    {
        tr.b.set(xmm_g(di), Val::C(0));
        tr.b.set(xmm_g(di) + 1, Val::C(0));
        return Flow::Next;
    }
    let (slo, shi) = xmm_src(tr, insn, 1);
    let (dlo, dhi) = (tr.b.get(xmm_g(di)), tr.b.get(xmm_g(di) + 1));
    let lo = op(tr, dlo, slo);
    let hi = op(tr, dhi, shi);
    tr.b.set(xmm_g(di), lo);
    tr.b.set(xmm_g(di) + 1, hi);
    Flow::Next
}

fn ldmxcsr(tr: &mut Tr, insn: &Instruction) -> Flow {
    let a = tr.ea(insn);
    let m = tr.mop(insn, 4);
    let v = tr.load(a, m);
    let ok = tr.b.label();
    tr.b.brcond(
        Cond::TstZ,
        v,
        Val::C(!(crate::fp::state::MXCSR_MASK as u64) & 0xffff_ffff),
        ok,
    );
    tr.b.exit(Exit::Exception {
        vector: 13,
        error_code: Some(0),
    });
    tr.b.place(ok);
    tr.b.set(G_MXCSR, v);
    // The control bits are part of the block key (tbf::MXCSR_HOST).
    let next = tr.next;
    tr.b.exit(Exit::Sync { pc: next });
    Flow::End
}

fn fxstate(tr: &mut Tr, insn: &Instruction) -> Flow {
    let kind = match insn.mnemonic() {
        M::Fxsave | M::Fxsave64 => 0,
        M::Fxrstor | M::Fxrstor64 => 1,
        M::Xsave | M::Xsave64 | M::Xsaveopt | M::Xsaveopt64 => 2,
        _ => 3,
    };
    let wide = matches!(
        insn.mnemonic(),
        M::Fxsave64 | M::Fxrstor64 | M::Xsave64 | M::Xsaveopt64 | M::Xrstor64
    );
    let a0 = kind | (wide as u64) << 8 | (tr.code64() as u64) << 9;
    let a = tr.ea(insn);
    tr.b.call_void(H.fxstate, &[Val::C(a0), Val::T(a)]);
    if kind & 1 != 0 {
        // A restore loads MXCSR, whose control bits are part of the block key
        // (tbf::MXCSR_HOST).
        let next = tr.next;
        tr.b.exit(Exit::Sync { pc: next });
        return Flow::End;
    }
    Flow::Next
}

/// MASKMOVQ/MASKMOVDQU: byte-masked store to DS:rDI (through the helper, byte by byte).
fn maskmov(tr: &mut Tr, insn: &Instruction) -> Flow {
    // Operand 0 is the implicit [rDI] memory operand; 1 the data register, 2 the mask.
    let (d, s) = (insn.op_register(1), insn.op_register(2));
    // The address size (0x67 prefix) picks rDI.
    let di = match insn.op_kind(0) {
        OpKind::MemorySegRDI => tr.reg(Register::RDI),
        OpKind::MemorySegEDI => tr.reg(Register::EDI),
        _ => tr.reg(Register::DI),
    };
    let addr = tr.seg_add(insn.memory_segment(), di);
    let (dg, sg, n) = if d.is_mm() {
        (mmx_g(mm_index(d)), mmx_g(mm_index(s)), 8)
    } else {
        (xmm_g(xmm_index(d)), xmm_g(xmm_index(s)), 16)
    };
    tr.b.call_void(
        H.maskmov,
        &[
            Val::C(dg as u64),
            Val::C(sg as u64),
            Val::C(n),
            Val::T(addr),
        ],
    );
    if d.is_mm() {
        tr.mmx_transition();
    }
    Flow::Next
}

/// Global of an XMM/MMX register operand, and whether it is MMX.
/// The SSE arithmetic a backend may run as the host's own instruction ([`Inline::Sse`]).
fn sse_inline_op(m: M, imm: u64) -> Option<SseOp> {
    use SseArith as A;
    use SseForm as F;
    let (arith, form) = match m {
        M::Addps => (A::Add, F::Ps),
        M::Addss => (A::Add, F::Ss),
        M::Addpd => (A::Add, F::Pd),
        M::Addsd => (A::Add, F::Sd),
        M::Subps => (A::Sub, F::Ps),
        M::Subss => (A::Sub, F::Ss),
        M::Subpd => (A::Sub, F::Pd),
        M::Subsd => (A::Sub, F::Sd),
        M::Mulps => (A::Mul, F::Ps),
        M::Mulss => (A::Mul, F::Ss),
        M::Mulpd => (A::Mul, F::Pd),
        M::Mulsd => (A::Mul, F::Sd),
        M::Divps => (A::Div, F::Ps),
        M::Divss => (A::Div, F::Ss),
        M::Divpd => (A::Div, F::Pd),
        M::Divsd => (A::Div, F::Sd),
        M::Minps => (A::Min, F::Ps),
        M::Minss => (A::Min, F::Ss),
        M::Minpd => (A::Min, F::Pd),
        M::Minsd => (A::Min, F::Sd),
        M::Maxps => (A::Max, F::Ps),
        M::Maxss => (A::Max, F::Ss),
        M::Maxpd => (A::Max, F::Pd),
        M::Maxsd => (A::Max, F::Sd),
        M::Sqrtps => (A::Sqrt, F::Ps),
        M::Sqrtss => (A::Sqrt, F::Ss),
        M::Sqrtpd => (A::Sqrt, F::Pd),
        M::Sqrtsd => (A::Sqrt, F::Sd),
        M::Cmpps if imm < 8 => (A::Cmp(imm as u8), F::Ps),
        M::Cmpss if imm < 8 => (A::Cmp(imm as u8), F::Ss),
        M::Cmppd if imm < 8 => (A::Cmp(imm as u8), F::Pd),
        M::Cmpsd if imm < 8 => (A::Cmp(imm as u8), F::Sd),
        M::Shufps => (A::Shuf(imm as u8), F::Ps),
        M::Shufpd => (A::Shuf(imm as u8), F::Pd),
        M::Unpcklps => (A::Unpack(false), F::Ps),
        M::Unpckhps => (A::Unpack(true), F::Ps),
        M::Unpcklpd => (A::Unpack(false), F::Pd),
        M::Unpckhpd => (A::Unpack(true), F::Pd),
        M::Pshufb => (A::Pshufb, F::Ps),
        _ => return None,
    };
    Some(SseOp { arith, form })
}

fn vreg(r: Register) -> (u64, bool) {
    if r.is_mm() {
        (mmx_g(mm_index(r)) as u64, true)
    } else {
        (xmm_g(xmm_index(r)) as u64, false)
    }
}

/// Put operand `i` (memory, GPR or immediate) in `G_FPTMP` and return that global.
fn src_to_tmp(tr: &mut Tr, insn: &Instruction, i: u32, align: bool) -> u64 {
    match insn.op_kind(i) {
        OpKind::Memory => {
            let bytes = insn.memory_size().size() as u32;
            tr.mem_to_fptmp(insn, bytes, align);
        }
        OpKind::Register => {
            let v = tr.reg(insn.op_register(i));
            tr.b.set(G_FPTMP, v);
            tr.b.set(G_FPTMP + 1, Val::C(0));
        }
        _ => {
            tr.b.set(G_FPTMP, Val::C(insn.immediate(i)));
            tr.b.set(G_FPTMP + 1, Val::C(0));
        }
    }
    G_FPTMP as u64
}

/// Does a legacy-SSE 16-byte memory operand of this instruction need alignment?
fn needs_align(m: M) -> bool {
    !matches!(
        m,
        M::Pcmpestri | M::Pcmpestrm | M::Pcmpistri | M::Pcmpistrm | M::Pcmpestri64 | M::Pcmpestrm64
    )
}

/// CRC32 r32/r64, r/m8/16/32/64 (a general-purpose instruction: no FP state gate) through
/// the `sse` helper: the data in `G_FPTMP`, the running CRC in `G_FPTMP + 1`.
fn crc32(tr: &mut Tr, insn: &Instruction) -> Flow {
    let op = fp::op_of(M::Crc32).expect("in the table");
    let bytes = tr.op_size(insn, 1) as u64;
    let src = match insn.op_kind(1) {
        OpKind::Register => tr.reg(insn.op_register(1)),
        _ => {
            let a = tr.ea(insn);
            let m = tr.mop(insn, bytes as u32);
            tr.load(a, m)
        }
    };
    let d = insn.op_register(0);
    let crc = tr.reg(d);
    tr.b.set(G_FPTMP, src);
    tr.b.set(G_FPTMP + 1, crc);
    let r = tr.b.call(
        H.sse,
        &[
            Val::C(op as u64),
            Val::C(0),
            Val::C(G_FPTMP as u64),
            Val::C(bytes),
        ],
    );
    // The result is 32 bits, zero-extended into r64 as well.
    let full = match d.size() {
        8 => d,
        _ => d.full_register32(),
    };
    tr.set_reg(full, r);
    Flow::Next
}

const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// One quadword of PCMPEQB: 0xff in the bytes where `a` and `b` are equal, else 0 (SWAR,
/// exact: the low-7-bit sum cannot carry across a byte).
fn eq_bytes(tr: &mut Tr, a: Temp, b: Temp) -> Temp {
    let x = tr.b.xor(a, b);
    let low = tr.b.and(x, Val::C(LOW7));
    let t = tr.b.add(low, Val::C(LOW7));
    let nz = tr.b.or(t, x);
    let z = tr.b.xor(nz, Val::C(u64::MAX));
    let z = tr.b.and(z, Val::C(HIGH));
    let ones = tr.b.shr(z, Val::C(7));
    tr.b.bin(BinOp::Mul, Width::W64, ones, Val::C(0xff))
}

/// PCMPEQB xmm, xmm/m128 inline; the MMX form through the helper.
fn pcmpeqb(tr: &mut Tr, insn: &Instruction) -> Flow {
    let d = insn.op_register(0);
    if !d.is_xmm() {
        return generic(tr, insn);
    }
    let di = xmm_index(d);
    let (slo, shi) = xmm_src(tr, insn, 1);
    let (dlo, dhi) = (tr.b.get(xmm_g(di)), tr.b.get(xmm_g(di) + 1));
    let lo = eq_bytes(tr, dlo, slo);
    let hi = eq_bytes(tr, dhi, shi);
    tr.b.set(xmm_g(di), lo);
    tr.b.set(xmm_g(di) + 1, hi);
    Flow::Next
}

/// The two quadwords of an XMM source operand (register, or aligned m128).
fn xmm_src(tr: &mut Tr, insn: &Instruction, i: u32) -> (Temp, Temp) {
    match insn.op_kind(i) {
        OpKind::Register => {
            let s = xmm_index(insn.op_register(i));
            (tr.b.get(xmm_g(s)), tr.b.get(xmm_g(s) + 1))
        }
        _ => {
            let a = tr.ea(insn);
            tr.load128(insn, a, true)
        }
    }
}

/// The low four bytes of `x` spread out: each `w`-byte unit (w = 1 or 2) moves to the low
/// half of a `2w`-byte unit, the high halves zero (an unpack's interleave, SWAR).
fn spread(tr: &mut Tr, x: Temp, w: u32) -> Temp {
    let x = tr.b.and(x, Val::C(0xffff_ffff));
    let t = tr.b.shl(x, Val::C(16));
    let x = tr.b.or(x, t);
    let x = tr.b.and(x, Val::C(0x0000_ffff_0000_ffff));
    if w == 2 {
        return x;
    }
    let t = tr.b.shl(x, Val::C(8));
    let x = tr.b.or(x, t);
    tr.b.and(x, Val::C(0x00ff_00ff_00ff_00ff))
}

/// PSHUFD, PADDD, PADDQ, PUNPCKL{BW,WD,DQ,QDQ}, PSRLD/PSLLD by an immediate, on XMM
/// registers (and m128 sources), inline; MMX forms and shift counts in a register go to
/// the helper.
fn xmm_lanes(tr: &mut Tr, insn: &Instruction) -> Flow {
    let d = insn.op_register(0);
    let m = insn.mnemonic();
    let imm_shift = matches!(m, M::Psrld | M::Pslld);
    if !d.is_xmm() || (imm_shift && insn.op_kind(1) != OpKind::Immediate8) {
        return generic(tr, insn);
    }
    let di = xmm_index(d);
    const LANE_LOW: u64 = 0x0000_0000_ffff_ffff;
    let (lo, hi) = if imm_shift {
        let k = insn.immediate8() as u32;
        let (dlo, dhi) = (tr.b.get(xmm_g(di)), tr.b.get(xmm_g(di) + 1));
        if k > 31 {
            (tr.b.konst(0), tr.b.konst(0))
        } else {
            let (mask, right) = if m == M::Psrld {
                ((0xffff_ffffu64 >> k) * 0x1_0000_0001, true)
            } else {
                (((0xffff_ffffu64 << k) & 0xffff_ffff) * 0x1_0000_0001, false)
            };
            let sh = |tr: &mut Tr, v: Temp| {
                let s = if right {
                    tr.b.shr(v, Val::C(k as u64))
                } else {
                    tr.b.shl(v, Val::C(k as u64))
                };
                tr.b.and(s, Val::C(mask))
            };
            (sh(tr, dlo), sh(tr, dhi))
        }
    } else if m == M::Pshufd {
        let (slo, shi) = xmm_src(tr, insn, 1);
        let imm = insn.immediate8() as u64;
        let lanes = [
            tr.b.and(slo, Val::C(LANE_LOW)),
            tr.b.shr(slo, Val::C(32)),
            tr.b.and(shi, Val::C(LANE_LOW)),
            tr.b.shr(shi, Val::C(32)),
        ];
        let pick = |i: u64| lanes[((imm >> (2 * i)) & 3) as usize];
        let (l0, l1, l2, l3) = (pick(0), pick(1), pick(2), pick(3));
        let t = tr.b.shl(l1, Val::C(32));
        let lo = tr.b.or(l0, t);
        let t = tr.b.shl(l3, Val::C(32));
        let hi = tr.b.or(l2, t);
        (lo, hi)
    } else {
        let (slo, shi) = xmm_src(tr, insn, 1);
        let (dlo, dhi) = (tr.b.get(xmm_g(di)), tr.b.get(xmm_g(di) + 1));
        match m {
            M::Paddd => {
                // Two 32-bit adds per quadword: add the low 31 bits of each lane, then
                // put back each lane's top bit (no carry crosses a lane).
                const TOP: u64 = 0x8000_0000_8000_0000;
                let add = |tr: &mut Tr, a: Temp, b: Temp| {
                    let a7 = tr.b.and(a, Val::C(!TOP));
                    let b7 = tr.b.and(b, Val::C(!TOP));
                    let s = tr.b.add(a7, b7);
                    let x = tr.b.xor(a, b);
                    let x = tr.b.and(x, Val::C(TOP));
                    tr.b.xor(s, x)
                };
                (add(tr, dlo, slo), add(tr, dhi, shi))
            }
            M::Paddq => (tr.b.add(dlo, slo), tr.b.add(dhi, shi)),
            M::Punpcklqdq => (dlo, slo),
            M::Punpckldq => {
                let a = tr.b.and(dlo, Val::C(LANE_LOW));
                let b = tr.b.shl(slo, Val::C(32));
                let lo = tr.b.or(a, b);
                let a = tr.b.shr(dlo, Val::C(32));
                let b = tr.b.and(slo, Val::C(!LANE_LOW));
                (lo, tr.b.or(a, b))
            }
            M::Punpcklwd | M::Punpcklbw => {
                let (w, s) = if m == M::Punpcklwd { (2, 16) } else { (1, 8) };
                let a = spread(tr, dlo, w);
                let b = spread(tr, slo, w);
                let b = tr.b.shl(b, Val::C(s));
                let lo = tr.b.or(a, b);
                let dh = tr.b.shr(dlo, Val::C(32));
                let sh = tr.b.shr(slo, Val::C(32));
                let a = spread(tr, dh, w);
                let b = spread(tr, sh, w);
                let b = tr.b.shl(b, Val::C(s));
                (lo, tr.b.or(a, b))
            }
            _ => unreachable!("registered for the lane ops only"),
        }
    };
    tr.b.set(xmm_g(di), lo);
    tr.b.set(xmm_g(di) + 1, hi);
    Flow::Next
}

/// The sign bits of a quadword's eight bytes as an 8-bit mask (one multiply: every byte's
/// bit 7 lands on its own bit of the top byte, no two partial products overlap).
fn byte_signs(tr: &mut Tr, v: Temp) -> Temp {
    let m = tr.b.and(v, Val::C(HIGH));
    let p =
        tr.b.bin(BinOp::Mul, Width::W64, m, Val::C(0x0002_0408_1020_4081));
    tr.b.shr(p, Val::C(56))
}

/// PMOVMSKB r32/r64, xmm inline; the MMX form through the helper.
fn pmovmskb(tr: &mut Tr, insn: &Instruction) -> Flow {
    if insn.op_kind(1) != OpKind::Register || !insn.op_register(1).is_xmm() {
        return generic(tr, insn);
    }
    let s = xmm_index(insn.op_register(1));
    let (lo, hi) = (tr.b.get(xmm_g(s)), tr.b.get(xmm_g(s) + 1));
    let l = byte_signs(tr, lo);
    let h = byte_signs(tr, hi);
    let h = tr.b.shl(h, Val::C(8));
    let r = tr.b.or(l, h);
    tr.set_reg(insn.op_register(0), r);
    Flow::Next
}

fn generic(tr: &mut Tr, insn: &Instruction) -> Flow {
    let m = match insn.mnemonic() {
        M::Pcmpestri64 => M::Pcmpestri,
        M::Pcmpestrm64 => M::Pcmpestrm,
        m => m,
    };
    let op = fp::op_of(m).expect("registered from the table");
    let shape = fp::table()[op].shape;
    let last = insn.op_count() - 1;
    let mut imm = if matches!(insn.op_kind(last), OpKind::Immediate8) && last >= 2 {
        insn.immediate8() as u64
    } else {
        0
    };
    let wide = matches!(
        insn.code(),
        Code::Pcmpestri64_xmm_xmmm128_imm8 | Code::Pcmpestrm64_xmm_xmmm128_imm8
    );
    let mut a0 = op as u64 | if wide { arg::WIDE } else { 0 };
    let call = |tr: &mut Tr, a0: u64, d: u64, s: u64, imm: u64| {
        tr.b.call(H.sse, &[Val::C(a0), Val::C(d), Val::C(s), Val::C(imm)])
    };
    match shape {
        Shape::Rm | Shape::Flags | Shape::StrI | Shape::StrM => {
            let (d, dm) = vreg(insn.op_register(0));
            let (s, sm) = match insn.op_kind(1) {
                OpKind::Register => vreg(insn.op_register(1)),
                _ => {
                    if m == M::Insertps {
                        imm &= 0x3f;
                    }
                    (src_to_tmp(tr, insn, 1, needs_align(m)), false)
                }
            };
            if dm {
                a0 |= arg::DST_MMX;
            }
            if sm {
                a0 |= arg::SRC_MMX;
            }
            match sse_inline_op(m, imm) {
                // The result of a register-to-register form is not used.
                Some(op)
                    if shape == Shape::Rm
                        && !dm
                        && !sm
                        && (tr.flags & tbf::MXCSR_HOST != 0
                            || matches!(
                                op.arith,
                                SseArith::Shuf(_) | SseArith::Unpack(_) | SseArith::Pshufb
                            )) =>
                {
                    tr.b.call_inline_void(
                        H.sse,
                        &[Val::C(a0), Val::C(d), Val::C(s), Val::C(imm)],
                        Inline::Sse {
                            op,
                            dst: d as u16,
                            src: s as u16,
                            csr: G_MXCSR,
                        },
                    )
                }
                _ => {
                    let r = call(tr, a0, d, s, imm);
                    if shape != Shape::Rm {
                        tr.write_arith_flags(r, 0);
                    }
                }
            }
        }
        Shape::ToGpr => {
            let (s, sm) = match insn.op_kind(1) {
                OpKind::Register => vreg(insn.op_register(1)),
                _ => (src_to_tmp(tr, insn, 1, true), false),
            };
            if sm {
                a0 |= arg::SRC_MMX;
            }
            // Without an immediate, the op gets the destination width (CVT*2SI).
            let width = if insn.op_count() == 2 {
                insn.op_register(0).size() as u64
            } else {
                imm
            };
            let r = call(tr, a0, 0, s, width);
            tr.set_reg(insn.op_register(0), r);
        }
        Shape::FromGpr => {
            let (d, dm) = vreg(insn.op_register(0));
            // Without an immediate, the op gets the source width (CVTSI2S*).
            let width = if insn.op_count() == 2 {
                tr.op_size(insn, 1) as u64
            } else {
                imm
            };
            let s = src_to_tmp(tr, insn, 1, true);
            if dm {
                a0 |= arg::DST_MMX;
            }
            call(tr, a0, d, s, width);
        }
        Shape::Extract => {
            let (s, sm) = vreg(insn.op_register(1));
            if sm {
                a0 |= arg::SRC_MMX;
            }
            let r = call(tr, a0, 0, s, imm);
            match insn.op_kind(0) {
                OpKind::Register => tr.set_reg(insn.op_register(0), r),
                _ => {
                    let a = tr.ea(insn);
                    let m = tr.mop(insn, insn.memory_size().size() as u32);
                    tr.store(a, r, m);
                }
            }
        }
    }
    Flow::Next
}
