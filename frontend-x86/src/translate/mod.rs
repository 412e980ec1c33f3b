//! x86 → IR translation.
//!
//! A block is decoded first (up to `max_insns`, a block-ending instruction, or the end of
//! the first page), then translated instruction by instruction through a table indexed by
//! iced-x86's `Mnemonic` (`TABLE`), filled by the family modules (`alu`, `shift`,
//! `muldiv`, `bits`, `string`, `stack`, `control`, `seg`, `system`).
//!
//! Precise state: a handler does every load, store and faulting helper call of its
//! instruction before it writes any register or flag global, so a fault leaves the guest
//! state exactly as before the instruction.
//!
//! Flags: lazy (see [`crate::flags`]). A liveness pass over the decoded block marks each
//! instruction whose flag results are overwritten before being read, with no instruction in
//! between that could fault or leave the block; such instructions skip their flag update.
//!
//! Adding an instruction: write `fn(&mut Tr, &Instruction) -> Flow` in the family module
//! and register it in that module's `register` function under its mnemonic(s).

use std::sync::OnceLock;

use iced_x86::{Decoder, DecoderError, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use jit::engine::{CodeFetcher, GuestFault, TbKey};
use jit::ir::{AccessKind, Block, Builder, Cond, Exit, MemOp, MemSize, Temp, Val, Width};

use crate::helpers::H;
use crate::state::*;

mod alu;
mod bits;
mod control;
mod fp;
mod muldiv;
mod seg;
mod shift;
mod stack;
mod string;
mod system;
mod x87;

/// What a handler tells the block loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Continue with the next instruction.
    Next,
    /// The handler emitted the block's exit(s).
    End,
}

pub type Handler = fn(&mut Tr, &Instruction) -> Flow;

fn table() -> &'static Vec<Option<Handler>> {
    static T: OnceLock<Vec<Option<Handler>>> = OnceLock::new();
    T.get_or_init(|| {
        let mut t: Vec<Option<Handler>> = vec![None; Mnemonic::values().count()];
        let mut reg = |m: Mnemonic, h: Handler| {
            assert!(t[m as usize].is_none(), "mnemonic {m:?} registered twice");
            t[m as usize] = Some(h);
        };
        alu::register(&mut reg);
        shift::register(&mut reg);
        muldiv::register(&mut reg);
        bits::register(&mut reg);
        string::register(&mut reg);
        stack::register(&mut reg);
        control::register(&mut reg);
        seg::register(&mut reg);
        system::register(&mut reg);
        fp::register(&mut reg);
        x87::register(&mut reg);
        t
    })
}

/// Is `m` translated (for tests and coverage reports)?
pub fn is_implemented(m: Mnemonic) -> bool {
    table()[m as usize].is_some()
}

/// Where an operand lives.
#[derive(Clone, Copy, Debug)]
pub enum Loc {
    Reg(Register),
    Mem(Temp, MemOp),
}

/// Translation state for one block.
pub struct Tr {
    pub b: Builder,
    pub flags: u32,
    /// rip of the current instruction and of the next one.
    pub pc: u64,
    pub next: u64,
    pub cs_base: u64,
    /// Statically known value of the CC_OP global, if any.
    pub cc_static: Option<u64>,
    /// The current instruction's flag results are needed.
    pub flags_live: bool,
    /// Index of the current instruction in the block.
    pub idx: usize,
    /// Linear address of the block's first instruction.
    pub start_pc: u64,
    /// RDTSC/RDTSCP read the platform's clock in generated code (`Env::inline_clock`).
    pub inline_clock: bool,
    /// RFLAGS.TF: the block is a single instruction that traps after it (or after each
    /// round of a REP), translated for that run only (never cached).
    pub single_step: bool,
}

impl Tr {
    pub fn code64(&self) -> bool {
        self.flags & tbf::CODE64 != 0
    }
    pub fn cpl(&self) -> u32 {
        (self.flags & tbf::CPL_MASK) >> tbf::CPL_SHIFT
    }
    /// Stack pointer width in bytes.
    pub fn stack_size(&self) -> u32 {
        if self.code64() {
            8
        } else if self.flags & tbf::SS32 != 0 {
            4
        } else {
            2
        }
    }

    // ---- registers ----

    /// Read a general register (any width) zero-extended to 64 bits.
    pub fn reg(&mut self, r: Register) -> Temp {
        let full = r.full_register();
        let gi = gpr_index(full);
        let v = self.b.get(G_GPR0 + gi);
        match r.size() {
            8 => v,
            4 => self.b.ext(v, MemSize::B4, false),
            2 => self.b.ext(v, MemSize::B2, false),
            _ => {
                if is_high8(r) {
                    let s = self.b.shr(v, Val::C(8));
                    self.b.ext(s, MemSize::B1, false)
                } else {
                    self.b.ext(v, MemSize::B1, false)
                }
            }
        }
    }

    /// Write a general register with x86 partial-register semantics.
    pub fn set_reg(&mut self, r: Register, v: Temp) {
        let gi = gpr_index(r.full_register());
        let g = G_GPR0 + gi;
        match r.size() {
            8 => self.b.set(g, v),
            4 => {
                let z = self.b.ext(v, MemSize::B4, false);
                self.b.set(g, z)
            }
            n => {
                let (mask, shift) = if n == 2 {
                    (0xffffu64, 0)
                } else if is_high8(r) {
                    (0xff00, 8)
                } else {
                    (0xff, 0)
                };
                let old = self.b.get(g);
                let kept = self.b.and(old, Val::C(!mask));
                let sv = if shift != 0 {
                    self.b.shl(v, Val::C(shift))
                } else {
                    v
                };
                let nv = self.b.and(sv, Val::C(mask));
                let r = self.b.or(kept, nv);
                self.b.set(g, r)
            }
        }
    }

    pub fn gpr(&mut self, i: u16) -> Temp {
        self.b.get(G_GPR0 + i)
    }

    pub fn set_gpr_sized(&mut self, i: u16, v: Temp, bytes: u32) {
        let r = sized_reg(i, bytes);
        self.set_reg(r, v);
    }

    // ---- memory ----

    /// The linear address of the memory operand, with segment base and address-size wrap.
    pub fn ea(&mut self, insn: &Instruction) -> Temp {
        let off = self.ea_off(insn);
        self.seg_add(insn.memory_segment(), off)
    }

    /// The effective address (offset within the segment) of the memory operand, wrapped to
    /// the address size.
    pub fn ea_off(&mut self, insn: &Instruction) -> Temp {
        let base = insn.memory_base();
        let index = insn.memory_index();
        let asize = self.addr_size(insn);
        let disp = insn.memory_displacement64();
        let mut a: Option<Temp> = None;
        if base != Register::None && base != Register::RIP && base != Register::EIP {
            a = Some(self.reg64(base));
        }
        if index != Register::None {
            let i = self.reg64(index);
            let scale = insn.memory_index_scale();
            let si = if scale > 1 {
                self.b.shl(i, Val::C(scale.trailing_zeros() as u64))
            } else {
                i
            };
            a = Some(match a {
                Some(x) => self.b.add(x, si),
                None => si,
            });
        }
        let mut t = match a {
            Some(x) if disp != 0 => self.b.add(x, Val::C(disp)),
            Some(x) => x,
            None => self.b.konst(disp),
        };
        if asize == 4 {
            t = self.b.ext(t, MemSize::B4, false);
        } else if asize == 2 {
            t = self.b.ext(t, MemSize::B2, false);
        }
        t
    }

    /// Address size in bytes of the instruction's memory operand.
    pub fn addr_size(&self, insn: &Instruction) -> u32 {
        let r = if insn.memory_base() != Register::None {
            insn.memory_base()
        } else {
            insn.memory_index()
        };
        match r {
            // Displacement-only: iced already gives the displacement at the address size
            // (zero-extended for 32-bit addressing in 64-bit mode).
            Register::None => {
                if self.code64() {
                    8
                } else {
                    4
                }
            }
            Register::RIP => 8,
            Register::EIP => 4,
            r => r.size() as u32,
        }
    }

    fn reg64(&mut self, r: Register) -> Temp {
        // Address registers: 64/32/16-bit forms read zero-extended (the caller wraps).
        self.reg(r)
    }

    /// Add the segment base for `seg` to an offset (and wrap to 32 bits outside long mode).
    pub fn seg_add(&mut self, seg: Register, off: Temp) -> Temp {
        let s = seg_of(seg);
        if self.code64() {
            return match s {
                Seg::Fs | Seg::Gs => {
                    let base = self.b.get(s.base_g());
                    self.b.add(off, base)
                }
                _ => off,
            };
        }
        let needs = matches!(s, Seg::Fs | Seg::Gs | Seg::Cs) || self.flags & tbf::ADDSEG != 0;
        if !needs {
            return off;
        }
        let base = self.b.get(s.base_g());
        let sum = self.b.add(off, base);
        self.b.ext(sum, MemSize::B4, false)
    }

    /// A memory op for the instruction's memory operand of `bytes` size.
    pub fn mop(&self, insn: &Instruction, bytes: u32) -> MemOp {
        let kind = if insn.memory_segment() == Register::SS {
            AccessKind::Stack
        } else {
            AccessKind::Normal
        };
        MemOp {
            size: MemSize::from_bytes(bytes),
            signed: false,
            kind,
            rmw: false,
        }
    }

    /// Location of a read-modify-write destination operand: its load needs write
    /// permission (and faults as a write), as on hardware.
    pub fn loc_rmw(&mut self, insn: &Instruction, i: u32, bytes: u32) -> Loc {
        match self.loc(insn, i, bytes) {
            Loc::Mem(a, m) => Loc::Mem(a, MemOp { rmw: true, ..m }),
            l => l,
        }
    }

    pub fn load(&mut self, addr: Temp, mop: MemOp) -> Temp {
        self.b.load(addr, mop)
    }

    pub fn store(&mut self, addr: Temp, v: impl Into<Val>, mop: MemOp) {
        self.b.store(addr, v, mop)
    }

    // ---- operands ----

    /// Size in bytes of operand `i`.
    pub fn op_size(&self, insn: &Instruction, i: u32) -> u32 {
        match insn.op_kind(i) {
            OpKind::Register => insn.op_register(i).size() as u32,
            OpKind::Memory => insn.memory_size().size() as u32,
            OpKind::Immediate8 => 1,
            OpKind::Immediate16 | OpKind::Immediate8to16 => 2,
            OpKind::Immediate32 | OpKind::Immediate8to32 => 4,
            _ => 8,
        }
    }

    /// Location of operand `i` (register or memory with its address computed).
    pub fn loc(&mut self, insn: &Instruction, i: u32, bytes: u32) -> Loc {
        match insn.op_kind(i) {
            OpKind::Register => Loc::Reg(insn.op_register(i)),
            OpKind::Memory => {
                let a = self.ea(insn);
                Loc::Mem(a, self.mop(insn, bytes))
            }
            k => panic!("operand {i} of {insn} is not a location ({k:?})"),
        }
    }

    pub fn read_loc(&mut self, l: Loc) -> Temp {
        match l {
            Loc::Reg(r) => self.reg(r),
            Loc::Mem(a, m) => self.load(a, m),
        }
    }

    pub fn write_loc(&mut self, l: Loc, v: Temp) {
        match l {
            Loc::Reg(r) => self.set_reg(r, v),
            Loc::Mem(a, m) => self.store(a, v, m),
        }
    }

    /// Value of operand `i` zero-extended (immediates are sign-extended to the operand size
    /// of operand 0 then masked to `bytes`).
    pub fn read_op(&mut self, insn: &Instruction, i: u32, bytes: u32) -> Val {
        match insn.op_kind(i) {
            OpKind::Register => Val::T(self.reg(insn.op_register(i))),
            OpKind::Memory => {
                let a = self.ea(insn);
                let m = self.mop(insn, bytes);
                Val::T(self.load(a, m))
            }
            _ => Val::C(insn.immediate(i) & size_mask(bytes)),
        }
    }

    pub fn read_op_t(&mut self, insn: &Instruction, i: u32, bytes: u32) -> Temp {
        let v = self.read_op(insn, i, bytes);
        self.b.val(v)
    }

    // ---- flags ----

    /// Record a flag-setting operation (if the flags are live).
    pub fn set_cc(&mut self, kind: CcKind, bytes: u32, dst: Temp, src: Val, src2: Option<Val>) {
        if !self.flags_live {
            return;
        }
        let op = cc_op(kind, bytes);
        self.b.set(G_CC_DST, dst);
        self.b.set(G_CC_SRC, src);
        if let Some(s2) = src2 {
            self.b.set(G_CC_SRC2, s2);
        }
        self.set_cc_op(op);
    }

    pub fn set_cc_op(&mut self, op: u64) {
        if self.cc_static != Some(op) {
            self.b.set(G_CC_OP, Val::C(op));
            self.cc_static = Some(op);
        }
    }

    /// The arithmetic flags as a value (CF PF AF ZF SF OF in their RFLAGS positions).
    pub fn arith_flags(&mut self) -> Temp {
        if self.cc_static == Some(CcKind::Eflags as u64 * 4) {
            let r = self.b.get(G_RFLAGS);
            return self.b.and(r, Val::C(fl::ARITH));
        }
        self.b.call(H.flags, &[])
    }

    /// Full RFLAGS value.
    pub fn rflags(&mut self) -> Temp {
        let a = self.arith_flags();
        let r = self.b.get(G_RFLAGS);
        let k = self.b.and(r, Val::C(!fl::ARITH));
        let v = self.b.or(k, a);
        self.b.or(v, Val::C(fl::FIXED1))
    }

    /// Make RFLAGS hold the arithmetic flags (CC_OP = Eflags) and return them.
    pub fn materialize_flags(&mut self) -> Temp {
        let f = self.rflags();
        self.b.set(G_RFLAGS, f);
        self.set_cc_op(CcKind::Eflags as u64 * 4);
        f
    }

    /// Set the arithmetic flags from a value (CC_OP = Eflags). `keep` flags keep their old
    /// values.
    pub fn write_arith_flags(&mut self, newf: Temp, keep: u64) {
        let old = if keep != 0 { Some(self.rflags()) } else { None };
        let r = self.b.get(G_RFLAGS);
        let r = self.b.and(r, Val::C(!fl::ARITH));
        let mut nf = self.b.and(newf, Val::C(fl::ARITH & !keep));
        if let Some(o) = old {
            let k = self.b.and(o, Val::C(keep));
            nf = self.b.or(nf, k);
        }
        let v = self.b.or(r, nf);
        self.b.set(G_RFLAGS, v);
        self.set_cc_op(CcKind::Eflags as u64 * 4);
    }

    /// CF as 0/1. Computed inline when the last flag-setting operation of the block is
    /// known (INC/DEC/ADC/SBB after a compare, the common case), else by the helper.
    pub fn cf(&mut self) -> Temp {
        if let Some(op) = self.cc_static {
            let bytes = 1u32 << (op & 3);
            let size = MemSize::from_bytes(bytes);
            match cc_kind(op) {
                k if k == CcKind::Add as u64 => {
                    // result < second operand (mod 2^bits)
                    let d = self.b.get(G_CC_DST);
                    let s = self.b.get(G_CC_SRC);
                    let d = self.b.ext(d, size, false);
                    let s = self.b.ext(s, size, false);
                    return self.b.setcond(Cond::LtU, d, Val::T(s));
                }
                k if k == CcKind::Sub as u64 => {
                    let (c, a, b) = self.cond_base(2);
                    return self.b.setcond(c, a, b);
                }
                k if k == CcKind::Logic as u64 => return self.b.konst(0),
                k if k == CcKind::Inc as u64 || k == CcKind::Dec as u64 => {
                    let s = self.b.get(G_CC_SRC);
                    return self.b.and(s, Val::C(1));
                }
                k if k == CcKind::Rol as u64 => {
                    let d = self.b.get(G_CC_DST);
                    return self.b.and(d, Val::C(1));
                }
                k if k == CcKind::Ror as u64 => {
                    let d = self.b.get(G_CC_DST);
                    let t = self.b.shr(d, Val::C(bytes as u64 * 8 - 1));
                    return self.b.and(t, Val::C(1));
                }
                _ => {}
            }
        }
        let f = self.arith_flags();
        self.b.and(f, Val::C(1))
    }

    /// Evaluate an x86 condition code (0..15, as in Jcc's low nibble) to a (cond, a, b)
    /// comparison triple for IR branches and selects.
    pub fn cond(&mut self, cc: u8) -> (Cond, Temp, Val) {
        let inv = cc & 1 != 0;
        let base = cc & !1;
        let (c, a, b) = self.cond_base(base);
        (if inv { c.invert() } else { c }, a, b)
    }

    fn cond_base(&mut self, cc: u8) -> (Cond, Temp, Val) {
        // Fast paths for statically known operations.
        if let Some(op) = self.cc_static {
            let kind = cc_kind(op);
            let bytes = 1u32 << (op & 3);
            let bits = bytes * 8;
            if kind == CcKind::Sub as u64 {
                let dst = self.b.get(G_CC_DST);
                let src = self.b.get(G_CC_SRC);
                let a = self.b.add(dst, src);
                let (a, s, d) = (
                    self.b.ext(a, MemSize::from_bytes(bytes), false),
                    self.b.ext(src, MemSize::from_bytes(bytes), false),
                    dst,
                );
                match cc {
                    2 => return (Cond::LtU, a, Val::T(s)),
                    4 => {
                        let dm = self.b.ext(d, MemSize::from_bytes(bytes), false);
                        return (Cond::Eq, dm, Val::C(0));
                    }
                    6 => return (Cond::LeU, a, Val::T(s)),
                    8 => return (Cond::TstNz, d, Val::C(1u64 << (bits - 1))),
                    12 | 14 => {
                        let sa = self.b.ext(a, MemSize::from_bytes(bytes), true);
                        let ss = self.b.ext(s, MemSize::from_bytes(bytes), true);
                        return (if cc == 12 { Cond::LtS } else { Cond::LeS }, sa, Val::T(ss));
                    }
                    _ => {}
                }
            } else if kind == CcKind::Logic as u64 {
                let d = self.b.get(G_CC_DST);
                match cc {
                    2 => {
                        let z = self.b.konst(0);
                        return (Cond::Ne, z, Val::C(0));
                    }
                    4 => {
                        let dm = self.b.ext(d, MemSize::from_bytes(bytes), false);
                        return (Cond::Eq, dm, Val::C(0));
                    }
                    6 => {
                        let dm = self.b.ext(d, MemSize::from_bytes(bytes), false);
                        return (Cond::Eq, dm, Val::C(0));
                    }
                    0 => {
                        let z = self.b.konst(0);
                        return (Cond::Ne, z, Val::C(0));
                    }
                    8 => return (Cond::TstNz, d, Val::C(1u64 << (bits - 1))),
                    12 | 14 => {
                        let sd = self.b.ext(d, MemSize::from_bytes(bytes), true);
                        return (if cc == 12 { Cond::LtS } else { Cond::LeS }, sd, Val::C(0));
                    }
                    _ => {}
                }
            } else if (cc == 4 || cc == 8)
                && ![CcKind::Eflags, CcKind::Cnt, CcKind::Rol, CcKind::Ror]
                    .iter()
                    .any(|&k| kind == k as u64)
            {
                let d = self.b.get(G_CC_DST);
                if cc == 4 {
                    let dm = self.b.ext(d, MemSize::from_bytes(bytes), false);
                    return (Cond::Eq, dm, Val::C(0));
                }
                return (Cond::TstNz, d, Val::C(1u64 << (bits - 1)));
            }
        }
        let f = self.arith_flags();
        match cc {
            0 => (Cond::TstNz, f, Val::C(fl::OF)),
            2 => (Cond::TstNz, f, Val::C(fl::CF)),
            4 => (Cond::TstNz, f, Val::C(fl::ZF)),
            6 => (Cond::TstNz, f, Val::C(fl::CF | fl::ZF)),
            8 => (Cond::TstNz, f, Val::C(fl::SF)),
            10 => (Cond::TstNz, f, Val::C(fl::PF)),
            12 | 14 => {
                // SF != OF  (| ZF for LE)
                let s = self.b.shr(f, Val::C(7));
                let o = self.b.shr(f, Val::C(11));
                let x = self.b.xor(s, o);
                let x = self.b.and(x, Val::C(1));
                if cc == 12 {
                    (Cond::Ne, x, Val::C(0))
                } else {
                    let z = self.b.shr(f, Val::C(6));
                    let zx = self.b.or(x, z);
                    (Cond::TstNz, zx, Val::C(1))
                }
            }
            _ => unreachable!(),
        }
    }

    /// Condition as a 0/1 temp.
    pub fn cond_value(&mut self, cc: u8) -> Temp {
        let (c, a, b) = self.cond(cc);
        self.b.setcond(c, a, b)
    }

    // ---- exits ----

    /// Leave the block for a known rip. A target on another page than the block's start
    /// cannot be chained (the engine chains only within a page, which a TLB flush keeps
    /// valid); it leaves as an indirect exit with a constant target instead, so the
    /// generated code's jump-cache probe reaches it without a return to the run loop.
    pub fn exit_jump(&mut self, rip: u64) {
        let rip = self.wrap_ip(rip);
        let linear = if self.code64() {
            rip
        } else {
            self.cs_base.wrapping_add(rip) & 0xffff_ffff
        };
        if linear & !0xfff != self.start_pc & !0xfff {
            let t = self.b.konst(rip);
            self.b.exit(Exit::Indirect { pc: t });
        } else {
            self.b.exit(Exit::Jump { pc: rip });
        }
    }

    pub fn wrap_ip(&self, rip: u64) -> u64 {
        if self.code64() {
            rip
        } else if self.flags & tbf::CODE32 != 0 {
            rip & 0xffff_ffff
        } else {
            rip & 0xffff
        }
    }

    pub fn exception(&mut self, vector: u8, code: Option<u32>) -> Flow {
        self.b.exit(Exit::Exception {
            vector,
            error_code: code,
        });
        Flow::End
    }

    pub fn ud(&mut self) -> Flow {
        self.exception(6, None)
    }

    pub fn gp0(&mut self) -> Flow {
        self.exception(13, Some(0))
    }

    pub fn platform(&mut self, op: crate::PlatformOp, arg: u64, insn: &Instruction) -> Flow {
        self.b.exit(Exit::Platform {
            op: op as u32,
            arg,
            len: insn.len() as u8,
        });
        Flow::End
    }
}

pub fn size_mask(bytes: u32) -> u64 {
    if bytes >= 8 {
        u64::MAX
    } else {
        (1u64 << (bytes * 8)) - 1
    }
}

pub fn gpr_index(full: Register) -> u16 {
    (full as u16) - (Register::RAX as u16)
}

pub fn is_high8(r: Register) -> bool {
    matches!(r, Register::AH | Register::CH | Register::DH | Register::BH)
}

/// The register for GPR `i` with `bytes` width (low byte for 1).
pub fn sized_reg(i: u16, bytes: u32) -> Register {
    let base = match bytes {
        8 => Register::RAX,
        4 => Register::EAX,
        2 => Register::AX,
        _ => {
            return if i < 4 {
                [Register::AL, Register::CL, Register::DL, Register::BL][i as usize]
            } else {
                [Register::SPL, Register::BPL, Register::SIL, Register::DIL][(i - 4) as usize]
                    .clone_if_low(i)
            }
        }
    };
    // SAFETY-free: Register discriminants for each width are contiguous in encoding order.
    iced_reg(base as u16 + i)
}

trait CloneIfLow {
    fn clone_if_low(self, i: u16) -> Register;
}
impl CloneIfLow for Register {
    fn clone_if_low(self, i: u16) -> Register {
        if i < 8 {
            self
        } else {
            iced_reg(Register::R8L as u16 + (i - 8))
        }
    }
}

fn iced_reg(v: u16) -> Register {
    Register::try_from(v as usize).expect("register index")
}

pub fn seg_of(r: Register) -> Seg {
    match r {
        Register::ES => Seg::Es,
        Register::CS => Seg::Cs,
        Register::SS => Seg::Ss,
        Register::FS => Seg::Fs,
        Register::GS => Seg::Gs,
        _ => Seg::Ds,
    }
}

/// Instructions after which a block must end.
/// Conditional branches a block may leave through before it ends.
const MAX_SIDE_EXITS: u32 = 8;

/// Jcc (not LOOP/JCXZ, which also write or test rCX).
fn is_jcc(insn: &Instruction) -> bool {
    insn.flow_control() == iced_x86::FlowControl::ConditionalBranch && insn.is_jcc_short_or_near()
}

fn ends_block(insn: &Instruction) -> bool {
    use iced_x86::FlowControl as F;
    !matches!(insn.flow_control(), F::Next)
        || insn.is_string_instruction() && (insn.has_rep_prefix() || insn.has_repne_prefix())
}

/// Can this instruction fault or leave the block (a point where lazy flags must be exact)?
fn may_fault(insn: &Instruction) -> bool {
    if ends_block(insn) {
        return true;
    }
    if insn.op_kinds().any(|k| {
        matches!(
            k,
            OpKind::Memory
                | OpKind::MemorySegSI
                | OpKind::MemorySegESI
                | OpKind::MemorySegRSI
                | OpKind::MemoryESDI
                | OpKind::MemoryESEDI
                | OpKind::MemoryESRDI
                | OpKind::MemorySegDI
                | OpKind::MemorySegEDI
                | OpKind::MemorySegRDI
        )
    }) {
        return true;
    }
    if insn.is_stack_instruction() {
        return true;
    }
    // Segment, control and debug register moves check descriptors or exit to the platform.
    if (0..insn.op_count()).any(|i| {
        insn.op_kind(i) == OpKind::Register && {
            let r = insn.op_register(i);
            r.is_segment_register() || r.is_cr() || r.is_dr()
        }
    }) {
        return true;
    }
    if is_cc_insn(insn.mnemonic()) {
        return false;
    }
    !matches!(
        insn.mnemonic(),
        Mnemonic::Add
            | Mnemonic::Sub
            | Mnemonic::And
            | Mnemonic::Or
            | Mnemonic::Xor
            | Mnemonic::Cmp
            | Mnemonic::Test
            | Mnemonic::Adc
            | Mnemonic::Sbb
            | Mnemonic::Inc
            | Mnemonic::Dec
            | Mnemonic::Neg
            | Mnemonic::Not
            | Mnemonic::Mov
            | Mnemonic::Movzx
            | Mnemonic::Movsx
            | Mnemonic::Movsxd
            | Mnemonic::Lea
            | Mnemonic::Shl
            | Mnemonic::Shr
            | Mnemonic::Sar
            | Mnemonic::Rol
            | Mnemonic::Ror
            | Mnemonic::Imul
            | Mnemonic::Mul
            | Mnemonic::Xchg
            | Mnemonic::Bswap
            | Mnemonic::Nop
            | Mnemonic::Cdqe
            | Mnemonic::Cwde
            | Mnemonic::Cbw
            | Mnemonic::Cdq
            | Mnemonic::Cqo
            | Mnemonic::Cwd
            | Mnemonic::Rorx
            | Mnemonic::Shlx
            | Mnemonic::Shrx
            | Mnemonic::Sarx
            | Mnemonic::Andn
            | Mnemonic::Bt
            | Mnemonic::Bts
            | Mnemonic::Btr
            | Mnemonic::Btc
            | Mnemonic::Bsf
            | Mnemonic::Bsr
            | Mnemonic::Tzcnt
            | Mnemonic::Lzcnt
            | Mnemonic::Popcnt
            | Mnemonic::Clc
            | Mnemonic::Stc
            | Mnemonic::Cmc
            | Mnemonic::Cld
            | Mnemonic::Std
            | Mnemonic::Lahf
            | Mnemonic::Sahf
    )
}

fn is_cc_insn(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Seto
            | M::Setno
            | M::Setb
            | M::Setae
            | M::Sete
            | M::Setne
            | M::Setbe
            | M::Seta
            | M::Sets
            | M::Setns
            | M::Setp
            | M::Setnp
            | M::Setl
            | M::Setge
            | M::Setle
            | M::Setg
            | M::Cmovo
            | M::Cmovno
            | M::Cmovb
            | M::Cmovae
            | M::Cmove
            | M::Cmovne
            | M::Cmovbe
            | M::Cmova
            | M::Cmovs
            | M::Cmovns
            | M::Cmovp
            | M::Cmovnp
            | M::Cmovl
            | M::Cmovge
            | M::Cmovle
            | M::Cmovg
    )
}

/// Does this instruction leave some flags it nominally writes unchanged at run time
/// (count-dependent shifts)? Such an instruction also "reads" the flags it writes.
fn conditional_flag_writer(insn: &Instruction) -> bool {
    matches!(
        insn.mnemonic(),
        Mnemonic::Shl
            | Mnemonic::Sal
            | Mnemonic::Shr
            | Mnemonic::Sar
            | Mnemonic::Rol
            | Mnemonic::Ror
            | Mnemonic::Rcl
            | Mnemonic::Rcr
            | Mnemonic::Shld
            | Mnemonic::Shrd
    )
}

/// Translate one block.
pub fn translate(
    env: &jit::Env,
    key: &TbKey,
    fetch: &mut CodeFetcher,
    max_insns: u32,
) -> Result<Block, GuestFault> {
    let _ = env;
    let flags = key.flags;
    let bitness = if flags & tbf::CODE64 != 0 {
        64
    } else if flags & tbf::CODE32 != 0 {
        32
    } else {
        16
    };
    // Decode the block.
    let mut insns: Vec<Instruction> = Vec::new();
    let mut side_exits = 0;
    let mut rip = key.rip;
    let first_page = key.pc & !0xfff;
    let mut bytes_len = 0u64;
    // Followed jumps: the instruction index of each unconditional direct jump the block
    // continues through, and the linear start of the code after it (where a new run of
    // guest bytes begins).
    let mut follows: Vec<(usize, u64)> = Vec::new();
    let mut decode_fault: Option<GuestFault> = None;
    while (insns.len() as u32) < max_insns {
        let lin = key.cs_base.wrapping_add(rip);
        let lin = if bitness == 64 {
            lin
        } else {
            lin & 0xffff_ffff
        };
        if !insns.is_empty() && lin & !0xfff != first_page {
            break;
        }
        let to_page_end = 0x1000 - (lin & 0xfff);
        let mut buf = [0u8; 15];
        let n1 = to_page_end.min(15) as usize;
        if let Err(f) = fetch.fetch(lin, &mut buf[..n1]) {
            decode_fault = Some(f);
            break;
        }
        let mut insn = decode_one(bitness, &buf[..n1], rip);
        if insn.is_none() && n1 < 15 {
            if let Err(f) = fetch.fetch(lin, &mut buf) {
                decode_fault = Some(f);
                break;
            }
            insn = decode_one(bitness, &buf, rip);
        }
        let insn = match insn {
            Some(i) => i,
            None => {
                // Invalid encoding (or > 15 bytes): #UD at this instruction.
                let mut i = Instruction::default();
                i.set_code(iced_x86::Code::Ud2);
                i.set_ip(rip);
                i.set_len(1);
                i
            }
        };
        rip = rip.wrapping_add(insn.len() as u64);
        bytes_len += insn.len() as u64;
        // A conditional branch leaves through a side exit and translation continues on the
        // fall-through path (up to MAX_SIDE_EXITS per block).
        let side_exit = is_jcc(&insn) && side_exits < MAX_SIDE_EXITS;
        if side_exit {
            side_exits += 1;
        }
        if let Some(target) = followable_jump(&insn, &insns, follows.len()) {
            let t_lin = key.cs_base.wrapping_add(target);
            let t_lin = if bitness == 64 { t_lin } else { t_lin & 0xffff_ffff };
            if t_lin & !0xfff == first_page {
                follows.push((insns.len(), t_lin));
                insns.push(insn);
                rip = target;
                continue;
            }
        }
        let end = (ends_block(&insn) && !side_exit) || insn.code() == iced_x86::Code::Ud2;
        insns.push(insn);
        if end {
            break;
        }
    }
    if insns.is_empty() {
        return Err(decode_fault.expect("no instruction decoded"));
    }
    // Flag liveness, backwards. `live` is the set of flags needed after the instruction;
    // before any instruction that may fault or leave the block, all flags are needed.
    let n = insns.len();
    let mut live_flags = vec![true; n];
    {
        const ALL: u32 = 0x3f; // iced RflagsBits: OF SF ZF AF CF PF in bits 0..5
        let mut live: u32 = ALL;
        for i in (0..n).rev() {
            let ins = &insns[i];
            if follows.iter().any(|f| f.0 == i) {
                // A followed jump neither faults nor leaves the block nor touches flags.
                continue;
            }
            let written = ins.rflags_modified() & ALL;
            let read = ins.rflags_read() & ALL;
            // Partial or count-dependent writers merge with the old flags when they emit.
            let partial = written != 0 && (written != ALL || conditional_flag_writer(ins));
            let emit = written == 0 || written & live != 0;
            live_flags[i] = emit;
            live = if may_fault(ins) || (partial && emit) {
                ALL
            } else {
                (live & !written) | read
            };
        }
    }
    let mut b = Builder::new();
    b.block.ops.reserve(insns.len() * 12);
    b.block.insn_pcs.reserve(insns.len());
    let mut tr = Tr {
        b,
        flags,
        pc: key.rip,
        next: key.rip,
        cs_base: key.cs_base,
        cc_static: None,
        flags_live: true,
        idx: 0,
        start_pc: key.pc,
        inline_clock: env.inline_clock != 0,
        single_step: env.g[G_RFLAGS as usize] & crate::state::fl::TF != 0,
    };
    tr.b.block.mmu_idx = if flags & tbf::MMU_USER != 0 {
        1 + (flags & tbf::ASID != 0) as u32
    } else {
        0
    };
    let mut ended = false;
    for (i, insn) in insns.iter().enumerate() {
        tr.idx = i;
        tr.pc = insn.ip();
        tr.next = insn.next_ip();
        tr.flags_live = live_flags[i];
        tr.b.insn_start(tr.pc);
        if follows.iter().any(|f| f.0 == i) {
            // Continued through: the next instruction is the jump's target.
            tr.next = insn.near_branch_target();
            continue;
        }
        let h = table()[insn.mnemonic() as usize];
        let flow = match h {
            Some(h)
                if insn.code() != iced_x86::Code::INVALID && crate::cpuid::insn_allowed(insn) =>
            {
                match fp::gate(&mut tr, insn) {
                    Some(f) => f,
                    None => h(&mut tr, insn),
                }
            }
            _ => tr.ud(),
        };
        if flow == Flow::End {
            ended = true;
            break;
        }
    }
    if !ended {
        let next = tr.next;
        tr.exit_jump(next);
    }
    let mut block = tr.b.finish();
    // The guest bytes: one run from the block's start to the first followed jump's end,
    // then one from each jump's target to the next one's end (or the block's end).
    let mut runs = Vec::with_capacity(follows.len() + 1);
    let mut start = key.pc;
    let mut len = 0u64;
    let mut k = 0;
    for (i, insn) in insns.iter().enumerate() {
        len += insn.len() as u64;
        if follows.get(k).is_some_and(|f| f.0 == i) {
            runs.push((start, len as u32));
            start = follows[k].1;
            len = 0;
            k += 1;
        }
    }
    runs.push((start, len as u32));
    debug_assert_eq!(runs.iter().map(|r| r.1 as u64).sum::<u64>(), bytes_len);
    block.guest_len = runs[0].1;
    block.guest_more = runs.split_off(1);
    // MXCSR is where SSE arithmetic (`Inline::Sse`) keeps its exception flags.
    block.sse_csr = Some(G_MXCSR);
    Ok(block)
}

/// Unconditional direct jumps a block may continue through, at most this many per block.
const MAX_FOLLOWS: usize = 1;

/// The target of `insn` if it is a direct near jump the block can continue through (on
/// the block's page, which the caller checks): not a 16-bit one (whose target wraps at
/// 64K), not to an instruction already in the block (a loop), and at most
/// [`MAX_FOLLOWS`] per block. Such a jump cannot fault: its target is on a page the
/// block already fetched from, so canonical, and PV code segments have no limit below
/// 4 GiB.
fn followable_jump(insn: &Instruction, decoded: &[Instruction], follows: usize) -> Option<u64> {
    use iced_x86::Code as C;
    if follows >= MAX_FOLLOWS
        || !matches!(
            insn.code(),
            C::Jmp_rel8_64 | C::Jmp_rel32_64 | C::Jmp_rel8_32 | C::Jmp_rel32_32
        )
    {
        return None;
    }
    let target = insn.near_branch_target();
    if target == insn.ip() || decoded.iter().any(|i| i.ip() == target) {
        return None;
    }
    Some(target)
}

fn decode_one(bitness: u32, bytes: &[u8], rip: u64) -> Option<Instruction> {
    let mut d = Decoder::with_ip(bitness, bytes, rip, DecoderOptions::NONE);
    let insn = d.decode();
    match d.last_error() {
        DecoderError::None => Some(insn),
        DecoderError::NoMoreBytes => None,
        _ => {
            // Invalid instruction: report as a 1..n-byte #UD.
            let mut i = Instruction::default();
            i.set_code(iced_x86::Code::Ud2);
            i.set_ip(rip);
            i.set_len(insn.len().max(1));
            Some(i)
        }
    }
}

/// Helper used by several families: conditional code from a Jcc/Setcc/Cmovcc mnemonic.
pub fn cc_of(insn: &Instruction) -> u8 {
    use iced_x86::ConditionCode as C;
    match insn.condition_code() {
        C::o => 0,
        C::no => 1,
        C::b => 2,
        C::ae => 3,
        C::e => 4,
        C::ne => 5,
        C::be => 6,
        C::a => 7,
        C::s => 8,
        C::ns => 9,
        C::p => 10,
        C::np => 11,
        C::l => 12,
        C::ge => 13,
        C::le => 14,
        C::g => 15,
        C::None => panic!("no condition code"),
    }
}

/// Width for IR arithmetic on `bytes`-sized values.
pub fn width(bytes: u32) -> Width {
    if bytes == 8 {
        Width::W64
    } else {
        Width::W32
    }
}
