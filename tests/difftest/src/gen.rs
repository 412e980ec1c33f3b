//! Random test-case generation.
//!
//! Two families. The integer family ([`case`], [`codes`]): most cases come from a generic
//! generator over iced-x86's opcode tables: every 64-bit legacy/VEX-GPR encoding of the
//! mnemonics in its list, with random register, memory and immediate operands. Templates
//! add what needs set-up: string instructions, stack operations, conditional branches,
//! faulting accesses. No x87/MMX/SSE encoding is ever part of it (its cases and the
//! committed vectors stay as they are when the frontend gains those).
//!
//! The FP/SIMD family ([`fp_case`], [`fp_codes`]): x87, MMX and SSE..SSE4.2 (legacy
//! encodings of the mnemonics `frontend_x86::translate::is_implemented` reports), with
//! special floating-point values in registers and memory and varied control state; see the
//! "FP/SIMD family" section below.
//!
//! Register conventions: r15 points into the middle of the data area and is the base of
//! every memory operand; r14 holds a faulting address (guard page or non-canonical); rsp
//! points into the data area. None of the three is written by generated instructions
//! except the stack templates (rsp).

use iced_x86::{
    Code, CpuidFeature, Decoder, DecoderOptions, Encoder, EncodingKind, Instruction, MemoryOperand,
    Mnemonic, OpCodeOperandKind as K, Register,
};

use crate::native::{FpState, RegState, CODE_ADDR, DATA_ADDR, DATA_SIZE, F80};

/// Small deterministic PRNG (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// A generator in a given raw state (no seed mixing).
    pub fn from_state(state: u64) -> Rng {
        Rng(state | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// An "interesting" 64-bit value.
    pub fn value(&mut self) -> u64 {
        match self.below(8) {
            0 => 0,
            1 => u64::MAX,
            2 => 1u64 << self.below(64),
            3 => self.below(256),
            4 => (1u64 << 63) - self.below(4),
            5 => 0x8000_0000 - self.below(4),
            6 => self.next() & 0xffff_ffff,
            _ => self.next(),
        }
    }
}

/// One generated case.
pub struct Case {
    pub code: Vec<u8>,
    pub init: RegState,
    pub data: Vec<u8>,
    /// RFLAGS bits that the SDM leaves undefined at the end of the sequence.
    pub undef_flags: u64,
    pub insns: Vec<Instruction>,
    /// Byte ranges (offset, length) of the data area whose final contents are
    /// implementation-specific (FP environment pointers and MXCSR_MASK stored by FXSAVE,
    /// FNSTENV, FNSAVE): not compared. Empty for the integer family.
    pub data_ignore: Vec<(usize, usize)>,
}

const R15_BASE: u64 = DATA_ADDR + 0x1000;

/// Bytes of 64-bit prologue before compatibility-mode code.
pub const COMPAT_PROLOGUE: u64 = 32;

/// Wrap compatibility-mode code for the native runner (which enters and leaves in 64-bit
/// mode): load DS and ES with Linux's USER_DS (a 64-bit process runs with null DS/ES, which
/// would fault in compatibility mode), `jmp far` to 0x23:code, the code, then
/// `jmp far 0x33:next` back to the runner's 64-bit exit sequence appended right after.
/// No register is clobbered on the way in or out.
pub fn compat_blob(code32: &[u8]) -> Vec<u8> {
    let mut b = vec![
        0x8e, 0x1d, 18, 0, 0, 0, // mov ds, [rip+18] (the selector at 24)
        0x8e, 0x05, 12, 0, 0, 0, // mov es, [rip+12]
        0xff, 0x2d, 0, 0, 0, 0, // jmp far [rip+0] (the pointer at 18)
    ];
    b.extend_from_slice(&((CODE_ADDR + COMPAT_PROLOGUE) as u32).to_le_bytes());
    b.extend_from_slice(&0x23u16.to_le_bytes());
    b.extend_from_slice(&0x2bu16.to_le_bytes());
    b.resize(COMPAT_PROLOGUE as usize, 0xcc);
    b.extend_from_slice(code32);
    let next = CODE_ADDR + b.len() as u64 + 7;
    b.push(0xea);
    b.extend_from_slice(&(next as u32).to_le_bytes());
    b.extend_from_slice(&0x33u16.to_le_bytes());
    b
}

/// Which generator cases come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// General-purpose instructions ([`case`], [`codes`]).
    Int,
    /// x87, MMX and SSE..SSE4.2 ([`fp_case`], [`fp_codes`]).
    Fp,
}

/// The code size cases are generated for, with its register conventions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 64-bit mode: r15 = data base, r14 = faulting base.
    Long,
    /// 32-bit compatibility mode: ebx = data base, ebp = faulting base (or a frame pointer
    /// after ENTER); only the low 32 bits of the eight legacy registers are compared.
    Compat,
}

impl Mode {
    pub fn bitness(self) -> u32 {
        match self {
            Mode::Long => 64,
            Mode::Compat => 32,
        }
    }
    fn base(self) -> Register {
        match self {
            Mode::Long => Register::R15,
            Mode::Compat => Register::EBX,
        }
    }
    fn fault_base(self) -> Register {
        match self {
            Mode::Long => Register::R14,
            Mode::Compat => Register::EBP,
        }
    }
    /// GPR indices generated instructions may write.
    /// Where the generated code starts (compatibility-mode code follows a 64-bit prologue
    /// that far-jumps into it; see [`compat_blob`]).
    pub fn code_start(self) -> u64 {
        match self {
            Mode::Long => CODE_ADDR,
            Mode::Compat => CODE_ADDR + COMPAT_PROLOGUE,
        }
    }
    fn writable(self, i: u16) -> bool {
        match self {
            Mode::Long => !matches!(i, 4 | 14 | 15),
            Mode::Compat => i < 8 && !matches!(i, 3 | 4 | 5),
        }
    }
}
const RSP_BASE: u64 = DATA_ADDR + 0x1800;

/// Mnemonics covered by the generic generator.
const MNEMONICS: &[Mnemonic] = {
    use Mnemonic::*;
    &[
        Add, Or, Adc, Sbb, And, Sub, Xor, Cmp, Test, Inc, Dec, Neg, Not, Mov, Movzx, Movsx, Movsxd,
        Lea, Xchg, Xadd, Cmpxchg, Cmpxchg8b, Cmpxchg16b, Bswap, Movbe, Cbw, Cwde, Cdqe, Cwd, Cdq,
        Cqo, Lahf, Sahf, Clc, Stc, Cmc, Cld, Std, Seto, Setno, Setb, Setae, Sete, Setne, Setbe,
        Seta, Sets, Setns, Setp, Setnp, Setl, Setge, Setle, Setg, Cmovo, Cmovno, Cmovb, Cmovae,
        Cmove, Cmovne, Cmovbe, Cmova, Cmovs, Cmovns, Cmovp, Cmovnp, Cmovl, Cmovge, Cmovle, Cmovg,
        Shl, Sal, Shr, Sar, Rol, Ror, Rcl, Rcr, Shld, Shrd, Shlx, Shrx, Sarx, Rorx, Mul, Imul, Div,
        Idiv, Mulx, Bt, Bts, Btr, Btc, Bsf, Bsr, Tzcnt, Lzcnt, Popcnt, Andn, Bextr, Blsi, Blsmsk,
        Blsr, Bzhi, Pdep, Pext, Nop, Xlatb, Push, Pop, Pushf,
    ]
};

fn supported_kind(k: K) -> bool {
    matches!(
        k,
        K::r8_or_mem
            | K::r16_or_mem
            | K::r32_or_mem
            | K::r64_or_mem
            | K::r8_reg
            | K::r8_opcode
            | K::r16_reg
            | K::r16_rm
            | K::r16_opcode
            | K::r32_reg
            | K::r32_rm
            | K::r32_opcode
            | K::r32_vvvv
            | K::r64_reg
            | K::r64_rm
            | K::r64_opcode
            | K::r64_vvvv
            | K::mem
            | K::al
            | K::cl
            | K::ax
            | K::eax
            | K::rax
            | K::imm8
            | K::imm8_const_1
            | K::imm8sex16
            | K::imm8sex32
            | K::imm8sex64
            | K::imm16
            | K::imm32
            | K::imm32sex64
            | K::imm64
            | K::r16_reg_mem
            | K::r32_reg_mem
            | K::r64_reg_mem
    )
}

/// All encodings the generic generator may pick.
pub fn codes(mode: Mode) -> Vec<Code> {
    Code::values()
        .filter(|c| {
            let i = c.op_code();
            let in_mode = match mode {
                Mode::Long => i.mode64(),
                Mode::Compat => {
                    i.mode32() && !matches!(c.mnemonic(), Mnemonic::Popa | Mnemonic::Popad)
                }
            };
            let extra =
                mode == Mode::Compat && matches!(c.mnemonic(), Mnemonic::Pusha | Mnemonic::Pushad);
            if !in_mode || !(MNEMONICS.contains(&c.mnemonic()) || extra) {
                return false;
            }
            if !matches!(i.encoding(), EncodingKind::Legacy | EncodingKind::VEX) {
                return false;
            }
            // Segment-register moves, string forms etc. have other operand kinds.
            (0..i.op_count()).all(|k| supported_kind(i.op_kind(k)))
                // x87/MMX/SSE.. encodings belong to the FP family only.
                && !is_fp_simd_code(*c)
                && !matches!(c, Code::Xlat_m8)
                // popf could set AC; pushf/push/pop are covered (rsp is in the data area)
                && !format!("{c:?}").starts_with("Popf")
        })
        .collect()
}

fn gpr(rng: &mut Rng, mode: Mode, bytes: u32) -> Register {
    // Never the stack pointer or the two base registers (nor their sub-registers).
    loop {
        let i = rng.below(16) as u16;
        if !mode.writable(i) {
            continue;
        }
        if mode == Mode::Compat && bytes == 1 && i >= 4 {
            continue;
        }
        let r = match bytes {
            8 => reg_at(Register::RAX, i),
            4 => reg_at(Register::EAX, i),
            2 => reg_at(Register::AX, i),
            _ => {
                if i < 4 && rng.chance(30) {
                    [Register::AH, Register::CH, Register::DH, Register::BH][i as usize]
                } else if i < 4 {
                    [Register::AL, Register::CL, Register::DL, Register::BL][i as usize]
                } else if i < 8 {
                    [Register::SPL, Register::BPL, Register::SIL, Register::DIL][(i - 4) as usize]
                } else {
                    reg_at(Register::R8L, i - 8)
                }
            }
        };
        return r;
    }
}

fn reg_at(base: Register, i: u16) -> Register {
    Register::try_from(base as usize + i as usize).unwrap()
}

fn mem_operand(rng: &mut Rng, mode: Mode) -> MemoryOperand {
    if rng.chance(4) {
        // A faulting access through the fault base.
        return MemoryOperand::with_base_displ(mode.fault_base(), rng.below(8) as i64);
    }
    let disp = rng.below(0x1e00) as i64 - 0xf00;
    MemoryOperand::with_base_displ(mode.base(), disp)
}

#[derive(Clone, Copy)]
enum Opnd {
    R(Register),
    M(MemoryOperand),
    I(i64),
}

fn operand(rng: &mut Rng, mode: Mode, k: K) -> Opnd {
    match k {
        K::r8_or_mem | K::r16_or_mem | K::r32_or_mem | K::r64_or_mem => {
            if rng.chance(40) {
                Opnd::M(mem_operand(rng, mode))
            } else {
                Opnd::R(gpr(rng, mode, kind_bytes(k)))
            }
        }
        K::r16_reg_mem | K::r32_reg_mem | K::r64_reg_mem => Opnd::R(gpr(rng, mode, kind_bytes(k))),
        K::mem => Opnd::M(mem_operand(rng, mode)),
        K::al => Opnd::R(Register::AL),
        K::cl => Opnd::R(Register::CL),
        K::ax => Opnd::R(Register::AX),
        K::eax => Opnd::R(Register::EAX),
        K::rax => Opnd::R(Register::RAX),
        K::imm8_const_1 => Opnd::I(1),
        K::imm8 => Opnd::I(if rng.chance(50) {
            rng.below(70) as i64
        } else {
            (rng.below(256) as i64) - 128
        }),
        K::imm8sex16 | K::imm8sex32 | K::imm8sex64 => Opnd::I(rng.below(256) as i64 - 128),
        K::imm16 => Opnd::I(rng.below(0x10000) as i64),
        K::imm32 | K::imm32sex64 => Opnd::I(rng.value() as i32 as i64),
        K::imm64 => Opnd::I(rng.value() as i64),
        _ => Opnd::R(gpr(rng, mode, kind_bytes(k))),
    }
}

fn kind_bytes(k: K) -> u32 {
    match k {
        K::r8_or_mem | K::r8_reg | K::r8_opcode => 1,
        K::r16_or_mem | K::r16_reg | K::r16_rm | K::r16_opcode | K::r16_reg_mem => 2,
        K::r32_or_mem | K::r32_reg | K::r32_rm | K::r32_opcode | K::r32_vvvv | K::r32_reg_mem => 4,
        _ => 8,
    }
}

fn build(code: Code, ops: &[Opnd]) -> Option<Instruction> {
    use Opnd::*;
    let r = match *ops {
        [] => Ok(Instruction::with(code)),
        [R(a)] => Instruction::with1(code, a),
        [M(a)] => Instruction::with1(code, a),
        [I(a)] => Instruction::with1(code, a as i32),
        [R(a), R(b)] => Instruction::with2(code, a, b),
        [R(a), M(b)] => Instruction::with2(code, a, b),
        [M(a), R(b)] => Instruction::with2(code, a, b),
        [R(a), I(b)] => Instruction::with2(code, a, b),
        [M(a), I(b)] => Instruction::with2(code, a, b as i32),
        [R(a), R(b), R(c)] => Instruction::with3(code, a, b, c),
        [R(a), M(b), R(c)] => Instruction::with3(code, a, b, c),
        [R(a), R(b), M(c)] => Instruction::with3(code, a, b, c),
        [R(a), R(b), I(c)] => Instruction::with3(code, a, b, c as i32),
        [R(a), M(b), I(c)] => Instruction::with3(code, a, b, c as i32),
        [M(a), R(b), R(c)] => Instruction::with3(code, a, b, c),
        [M(a), R(b), I(c)] => Instruction::with3(code, a, b, c as i32),
        _ => return None,
    };
    r.ok()
}

fn encode(insn: &Instruction, ip: u64, mode: Mode) -> Option<Vec<u8>> {
    let mut e = Encoder::new(mode.bitness());
    e.encode(insn, ip).ok()?;
    Some(e.take_buffer())
}

/// Generate one random instruction from the opcode tables.
fn random_insn(
    rng: &mut Rng,
    mode: Mode,
    codes: &[Code],
    ip: u64,
) -> Option<(Vec<u8>, Instruction)> {
    let code = codes[rng.below(codes.len() as u64) as usize];
    let info = code.op_code();
    let mut ops: Vec<Opnd> = (0..info.op_count())
        .map(|k| operand(rng, mode, info.op_kind(k)))
        .collect();
    // BT* with a register bit offset reaches anywhere in memory: keep those in registers
    // (the host's address space has mappings the guest's does not).
    if matches!(
        code.mnemonic(),
        Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
    ) && matches!(ops.get(1), Some(Opnd::R(_)))
    {
        if let Some(Opnd::M(_)) = ops.first() {
            ops[0] = Opnd::R(gpr(rng, mode, kind_bytes(info.op_kind(0))));
        }
    }
    // 16-bit SHLD/SHRD with counts above 16 have an undefined result: keep them in range,
    // and never use CL for them.
    if matches!(code.mnemonic(), Mnemonic::Shld | Mnemonic::Shrd) {
        if let Some(Opnd::R(r)) = ops.first() {
            if r.size() == 2 && matches!(ops.get(2), Some(Opnd::R(_))) {
                return None;
            }
        }
        if let Some(Opnd::M(_)) = ops.first() {
            if info.op_kind(0) == K::r16_or_mem && matches!(ops.get(2), Some(Opnd::R(_))) {
                return None;
            }
        }
    }
    if matches!(code.mnemonic(), Mnemonic::Shld | Mnemonic::Shrd)
        && info.op_kind(0) == K::r16_or_mem
    {
        if let Some(Opnd::I(v)) = ops.get_mut(2) {
            *v &= 15;
        }
    }
    let insn = build(code, &ops)?;
    let bytes = encode(&insn, ip, mode)?;
    let mut d = Decoder::with_ip(mode.bitness(), &bytes, ip, DecoderOptions::NONE);
    let dec = d.decode();
    if dec.is_invalid() {
        return None;
    }
    Some((bytes, dec))
}

/// Templates that need set-up instructions.
fn template(rng: &mut Rng, mode: Mode, ip: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let emit = |out: &mut Vec<u8>, i: Instruction| {
        let b = encode(&i, ip + out.len() as u64, mode).expect("template encodes");
        out.extend_from_slice(&b);
    };
    let (lea, si, di, bp) = match mode {
        Mode::Long => (Code::Lea_r64_m, Register::RSI, Register::RDI, Register::RBP),
        Mode::Compat => (Code::Lea_r32_m, Register::ESI, Register::EDI, Register::EBP),
    };
    let base = mode.base();
    // Template 5 (segment loads) is 64-bit only.
    let pick = match (mode, rng.below(if mode == Mode::Long { 8 } else { 7 })) {
        (Mode::Compat, p) if p >= 5 => p + 1,
        (_, p) => p,
    };
    match pick {
        6 => {
            // A forward jmp (rel8 or rel32) over 0..8 one-byte instructions that must not
            // run (they trap or change CF): the translator may continue a block at a
            // jump's target. (Whole instructions, so the case's listing and its flag
            // analysis, which skips them, stay aligned.)
            let junk = rng.below(9) as usize;
            if rng.chance(50) {
                out.extend_from_slice(&[0xeb, junk as u8]);
            } else {
                out.push(0xe9);
                out.extend_from_slice(&(junk as u32).to_le_bytes());
            }
            for _ in 0..junk {
                // int3, hlt, cmc, clc, stc
                out.push([0xcc, 0xf4, 0xf5, 0xf8, 0xf9][rng.below(5) as usize]);
            }
        }
        7 => divide_after_extend(rng, mode, &mut out),
        5 => {
            // Segment selectors against Linux's GDT (64-bit mode only: there data
            // segment attributes do not affect later accesses). Loads into DS/ES with
            // the descriptor checks, then LAR/LSL/VERR/VERW, with the results in GPRs.
            const SELS: [u16; 16] = [
                0, 1, 3, 0x8, 0x10, 0x13, 0x18, 0x1b, 0x20, 0x23, 0x2b, 0x2a, 0x33, 0x40, 0x80, 0x4,
            ];
            let sel = SELS[rng.below(SELS.len() as u64) as usize]
                | if rng.chance(20) {
                    rng.below(4) as u16
                } else {
                    0
                };
            out.push(0xb8); // mov eax, imm32
            out.extend_from_slice(&(sel as u32).to_le_bytes());
            match rng.below(4) {
                0 => out.extend_from_slice(&[0x8e, 0xd8, 0x8c, 0xd9]), // mov ds, ax; mov ecx, ds
                1 => out.extend_from_slice(&[0x8e, 0xc0, 0x8c, 0xc1]), // mov es, ax; mov ecx, es
                2 => out.extend_from_slice(&[0x0f, 0x02, 0xc8, 0x0f, 0x03, 0xd0]), // lar ecx, ax; lsl edx, ax
                _ => out.extend_from_slice(&[0x0f, 0x00, 0xe0, 0x0f, 0x94, 0xc1, 0x0f, 0x00, 0xe8]), // verr ax; sete cl; verw ax
            }
        }
        4 => {
            // Self-modifying code: store into the immediate of the next instruction
            // (`mov al, imm8`), which is in the block being executed.
            let imm = rng.below(256) as u8;
            let disp: u32 = match mode {
                Mode::Long => 1, // rip-relative: the byte after this 7-byte store + 1
                Mode::Compat => (ip + out.len() as u64 + 7 + 1) as u32, // absolute
            };
            out.extend_from_slice(&[0xc6, 0x05]);
            out.extend_from_slice(&disp.to_le_bytes());
            out.push(imm);
            out.extend_from_slice(&[0xb0, rng.below(256) as u8]);
        }
        0 => {
            // String instruction with set-up.
            let d1 = rng.below(0x400) as i64 - 0x200;
            let d2 = rng.below(0x400) as i64 - 0x200;
            emit(
                &mut out,
                Instruction::with2(lea, si, MemoryOperand::with_base_displ(base, d1)).unwrap(),
            );
            emit(
                &mut out,
                Instruction::with2(lea, di, MemoryOperand::with_base_displ(base, d2)).unwrap(),
            );
            emit(
                &mut out,
                Instruction::with2(Code::Mov_r32_imm32, Register::ECX, rng.below(20) as u32)
                    .unwrap(),
            );
            if rng.chance(50) {
                out.push(0xfd); // std
            } else {
                out.push(0xfc); // cld
            }
            let size_prefix: &[u8] = match rng.below(4) {
                1 => &[0x66],
                3 if mode == Mode::Long => &[0x48],
                _ => &[],
            };
            let byte_form = rng.chance(25);
            let op = [0xa4u8, 0xaa, 0xac, 0xa6, 0xae][rng.below(5) as usize]
                + if byte_form { 0 } else { 1 };
            let rep: &[u8] = match rng.below(3) {
                0 => &[],
                1 => &[0xf3],
                _ => &[0xf2],
            };
            out.extend_from_slice(rep);
            if !byte_form {
                out.extend_from_slice(size_prefix);
            }
            out.push(op);
            out.push(0xfc); // cld, so later code sees DF = 0
        }
        1 => {
            // call to the next instruction (pushes a return address), then pop it back
            out.extend_from_slice(&[0xe8, 0, 0, 0, 0]);
            if rng.chance(50) {
                let r = loop {
                    let r = rng.below(8) as u16;
                    if mode.writable(r) {
                        break r as u8;
                    }
                };
                out.push(0x58 + r);
            }
        }
        2 => {
            // enter/leave with rbp set up
            emit(
                &mut out,
                Instruction::with2(lea, bp, MemoryOperand::with_base_displ(base, 0x600)).unwrap(),
            );
            out.extend_from_slice(&[0xc8, rng.below(64) as u8, 0, rng.below(3) as u8]);
            if rng.chance(70) {
                out.push(0xc9);
            }
        }
        _ => {
            // lahf/sahf round trip and a rep stos with a large count clipped by the area
            emit(
                &mut out,
                Instruction::with2(lea, di, MemoryOperand::with_base_displ(base, -0x100)).unwrap(),
            );
            emit(
                &mut out,
                Instruction::with2(Code::Mov_r32_imm32, Register::ECX, rng.below(64) as u32)
                    .unwrap(),
            );
            if mode == Mode::Long {
                out.extend_from_slice(&[0xf3, 0x48, 0xab]); // rep stosq
            } else {
                out.extend_from_slice(&[0xf3, 0xab]); // rep stosd
            }
        }
    }
    out
}

/// div/idiv by a random register after cwd/cdq/cqo (or zeroing rDX): the dividends
/// programs divide, which fit the operand width (random rDX rarely does).
fn divide_after_extend(rng: &mut Rng, mode: Mode, out: &mut Vec<u8>) {
    let nregs = if mode == Mode::Long { 16 } else { 8 };
    let reg = match rng.below(nregs) {
        4 => 1, // not rSP
        r => r as u8,
    };
    let signed = rng.chance(50);
    let (prefix, rex_w): (&[u8], u8) = match rng.below(if mode == Mode::Long { 3 } else { 2 }) {
        0 => (&[0x66], 0),
        1 => (&[], 0),
        _ => (&[], 0x48),
    };
    let rex = rex_w | if reg >= 8 { 0x41 } else { 0 };
    out.extend_from_slice(prefix);
    if signed {
        if rex_w != 0 {
            out.push(0x48);
        }
        out.push(0x99); // cwd/cdq/cqo
    } else {
        out.extend_from_slice(&[0x31, 0xd2]); // xor edx, edx
    }
    out.extend_from_slice(prefix);
    if rex != 0 {
        out.push(rex);
    }
    out.push(0xf7);
    out.push(0xc0 | if signed { 7 << 3 } else { 6 << 3 } | (reg & 7));
}

/// Generate a case with 1..=max_len instructions.
pub fn case(rng: &mut Rng, mode: Mode, codes: &[Code], max_len: u64) -> Case {
    let mut code = Vec::new();
    let n = 1 + rng.below(max_len);
    let mut k = 0;
    while k < n {
        let ip = mode.code_start() + code.len() as u64;
        if rng.chance(8) {
            code.extend(template(rng, mode, ip));
            k += 1;
            continue;
        }
        if rng.chance(8) && k + 1 < n {
            // jcc forward over the following instruction
            let Some((b, _)) = random_insn(rng, mode, codes, ip + 2) else {
                continue;
            };
            code.push(0x70 + rng.below(16) as u8);
            code.push(b.len() as u8);
            code.extend(b);
            k += 2;
            continue;
        }
        if let Some((b, _)) = random_insn(rng, mode, codes, ip) {
            code.extend(b);
            k += 1;
        }
    }
    let mut init = RegState::default();
    for i in 0..16 {
        init.gpr[i] = if rng.chance(20) {
            DATA_ADDR + 0x800 + rng.below(0x800)
        } else {
            rng.value()
        };
    }
    // rcx small half the time so CL shifts hit small counts and loops end.
    if rng.chance(50) {
        init.gpr[1] = rng.below(70);
    }
    init.gpr[4] = RSP_BASE;
    let fault = match rng.below(3) {
        0 => DATA_ADDR + DATA_SIZE as u64,
        1 => DATA_ADDR - 8,
        _ if mode == Mode::Long => 0x8000_0000_0000_0000,
        _ => DATA_ADDR + DATA_SIZE as u64 + 0x10,
    };
    match mode {
        Mode::Long => {
            init.gpr[15] = R15_BASE;
            init.gpr[14] = fault;
        }
        Mode::Compat => {
            // Upper halves are not kept across mode switches: start them at zero.
            for g in init.gpr.iter_mut() {
                *g &= 0xffff_ffff;
            }
            init.gpr[3] = R15_BASE;
            init.gpr[5] = fault;
        }
    }
    init.rflags = rng.next() & 0x8d5 | 2;
    let mut data = vec![0u8; DATA_SIZE];
    for c in data.chunks_mut(8) {
        c.copy_from_slice(&rng.value().to_le_bytes());
    }
    // Decode back to learn the undefined flags.
    let mut insns = Vec::new();
    let mut d = Decoder::with_ip(
        mode.bitness(),
        &code,
        mode.code_start(),
        DecoderOptions::NONE,
    );
    while d.can_decode() {
        insns.push(d.decode());
    }
    Case {
        code,
        init,
        data,
        undef_flags: 0,
        insns,
        data_ignore: Vec::new(),
    }
}

/// iced RflagsBits -> RFLAGS bits.
pub fn iced_to_rflags(b: u32) -> u64 {
    use iced_x86::RflagsBits as R;
    let mut f = 0;
    for (i, r) in [
        (R::OF, 1u64 << 11),
        (R::SF, 1 << 7),
        (R::ZF, 1 << 6),
        (R::AF, 1 << 4),
        (R::CF, 1),
        (R::PF, 1 << 2),
        (R::DF, 1 << 10),
    ] {
        if b & i != 0 {
            f |= r;
        }
    }
    f
}

/// Walk the case's instructions: the flags left undefined at the end, or None when an
/// instruction reads a flag that an earlier one left undefined (the case is rejected).
pub fn undefined_flags(insns: &[Instruction]) -> Option<u64> {
    undefined_flags_before(insns, u64::MAX)
}

/// RCL/RCR: the SDM (Vol. 2B, RCL/RCR/ROL/ROR "Flags Affected") defines OF only for a
/// masked count of 1 ("the OF flag is undefined for multi-bit rotates"). iced-x86 treats
/// a masked count that is a multiple of the operand size plus one (e.g. `rcl al, 0x29`:
/// 9 % 9 = 0) as changing no flag, but AMD processors then still write OF. So OF is
/// undefined after any count but 0 and 1 (and after a count in CL, which may be either).
fn rcl_rcr_of_undefined(i: &Instruction) -> u32 {
    if !matches!(i.mnemonic(), Mnemonic::Rcl | Mnemonic::Rcr) {
        return 0;
    }
    let last = i.op_count() - 1;
    let count = match i.op_kind(last) {
        iced_x86::OpKind::Immediate8 => i.immediate8() as u32,
        iced_x86::OpKind::Register => return iced_x86::RflagsBits::OF,
        // The implicit count of 1 (D0/D1 forms).
        _ => 1,
    };
    let size = match i.op_kind(0) {
        iced_x86::OpKind::Register => i.op_register(0).size(),
        _ => i.memory_size().size(),
    };
    let masked = count & if size == 8 { 0x3f } else { 0x1f };
    if masked > 1 {
        iced_x86::RflagsBits::OF
    } else {
        0
    }
}

/// As [`undefined_flags`], over the instructions before the one at `rip`.
pub fn undefined_flags_before(insns: &[Instruction], rip: u64) -> Option<u64> {
    let mut undef: u32 = 0;
    let mut after_jcc = false;
    // The target of a direct jmp over the instructions up to it (which do not run).
    let mut skip_to: Option<u64> = None;
    for i in insns.iter().take_while(|i| i.ip() != rip) {
        if let Some(t) = skip_to {
            if i.ip() < t {
                continue;
            }
            skip_to = None;
        }
        if i.mnemonic() == Mnemonic::Jmp && i.is_jmp_short_or_near() {
            skip_to = Some(i.near_branch_target());
            after_jcc = false;
            continue;
        }
        if i.rflags_read() & undef != 0 {
            return None;
        }
        // A shift or rotate by CL may have a zero count and then changes nothing.
        let by_cl = (0..i.op_count()).any(|k| {
            i.op_kind(k) == iced_x86::OpKind::Register && i.op_register(k) == Register::CL
        }) && matches!(
            i.mnemonic(),
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
        );
        // An instruction right after a jcc may have been skipped: it defines nothing for
        // sure, and what it leaves undefined is possibly undefined.
        // A REP string instruction with a zero count changes nothing either.
        let maybe_nothing =
            by_cl || (i.is_string_instruction() && (i.has_rep_prefix() || i.has_repne_prefix()));
        let defined = if maybe_nothing || after_jcc {
            0
        } else {
            i.rflags_modified()
        };
        undef = (undef & !defined) | i.rflags_undefined() | rcl_rcr_of_undefined(i);
        after_jcc = i.is_jcc_short_or_near();
    }
    Some(iced_to_rflags(undef))
}

// ======================================================================================
// FP/SIMD family
// ======================================================================================
//
// Encodings: every legacy (non-VEX) encoding whose CPUID features are all x87 (FPU,
// FPU287 for FNSTSW AX, FPU387), MMX, SSE..SSE4.2, FXSR, CMOV (FCMOVcc/FCOMI, with FPU) or
// POPCNT, whose mnemonic the frontend implements, plus FWAIT. Operands: xmm0..15 (xmm0..7
// in compatibility mode), mm0..7, st(i), general registers as in the integer family, and
// memory through the data base (r15 / ebx), 16-byte aligned most of the time, sometimes
// misaligned, sometimes through the faulting base. Immediates are biased to meaningful
// values (comparison predicates, rounding controls, small shift counts).
//
// Initial state: XMM registers and the data area hold special values per f32/f64/f80/int
// lane; the x87 stack has a random TOP and a random subset of valid registers with special
// 80-bit values; FCW and MXCSR vary precision, rounding, FTZ/DAZ and (rarely) unmask
// exceptions. The control images that LDMXCSR, FLDCW, FXRSTOR, FLDENV and FRSTOR load are
// usually made valid in the data area.
//
// Sequences: 1..=max_len instructions, sometimes with an integer instruction from the
// integer family mixed in, sometimes an FXSAVE ... FXRSTOR round trip.

/// Whether an encoding is x87/MMX/SSE/AVX/AES/... (by its CPUID features or because it has
/// an ST/MM/XMM/YMM/ZMM operand): such encodings are kept out of the integer family.
pub fn is_fp_simd_code(c: Code) -> bool {
    use CpuidFeature as F;
    let simd_feature = c.cpuid_features().iter().any(|f| {
        matches!(
            f,
            F::FPU
                | F::FPU287
                | F::FPU287XL_ONLY
                | F::FPU387
                | F::FPU387SL_ONLY
                | F::MMX
                | F::SSE
                | F::SSE2
                | F::SSE3
                | F::SSSE3
                | F::SSE4_1
                | F::SSE4_2
                | F::SSE4A
                | F::AES
                | F::PCLMULQDQ
                | F::SHA
                | F::FXSR
                | F::D3NOW
                | F::D3NOWEXT
                | F::CYRIX_D3NOW
                | F::F16C
                | F::FMA
                | F::FMA4
                | F::XOP
                | F::AVX
                | F::AVX2
                | F::XSAVE
        )
    });
    let i = c.op_code();
    let simd_operand = (0..i.op_count()).any(|k| {
        matches!(
            i.op_kind(k),
            K::mm_or_mem
                | K::xmm_or_mem
                | K::ymm_or_mem
                | K::zmm_or_mem
                | K::mm_reg
                | K::mm_rm
                | K::xmm_reg
                | K::xmm_rm
                | K::xmm_vvvv
                | K::xmmp3_vvvv
                | K::xmm_is4
                | K::xmm_is5
                | K::ymm_reg
                | K::ymm_rm
                | K::ymm_vvvv
                | K::ymm_is4
                | K::ymm_is5
                | K::zmm_reg
                | K::zmm_rm
                | K::zmm_vvvv
                | K::zmmp3_vvvv
                | K::st0
                | K::sti_opcode
        )
    });
    simd_feature || simd_operand || c == Code::Wait
}

/// CPUID features the FP family draws from.
fn fp_family_features(c: Code) -> bool {
    use CpuidFeature as F;
    if c == Code::Wait {
        return true;
    }
    let f = c.cpuid_features();
    !f.is_empty()
        && f.iter().all(|x| {
            matches!(
                x,
                F::FPU | F::FPU287 | F::FPU387 | F::MMX | F::SSE | F::SSE2 | F::SSE3 | F::SSSE3 | F::SSE4_1 | F::SSE4_2
                    | F::FXSR | F::CMOV | F::POPCNT
            )
        })
        // CMOV alone is the integer CMOVcc (integer family); FCMOVcc/FCOMI are FPU+CMOV.
        && f != [F::CMOV]
}

/// Mnemonics whose results the SDM leaves implementation-specific within an error bound,
/// so a soft-float cannot be expected to match the host bit for bit. Generated only with
/// `DIFFTEST_FP_APPROX=1`.
/// - RCPPS/RCPSS/RSQRTPS/RSQRTSS: "relative error ... ≤ 1.5 ∗ 2^−12" (SDM Vol. 2B, RCPPS
///   and RSQRTPS: the exact result is implementation-specific; Intel and AMD differ).
/// - x87 transcendentals F2XM1, FYL2X, FYL2XP1, FPTAN, FPATAN, FSIN, FCOS, FSINCOS: SDM
///   Vol. 1 §8.3.10 "Transcendental Instruction Accuracy" gives an error bound (≤ 1 ulp),
///   not an exact result.
pub const FP_APPROXIMATE: &[Mnemonic] = {
    use Mnemonic::*;
    &[
        Rcpps, Rcpss, Rsqrtps, Rsqrtss, F2xm1, Fyl2x, Fyl2xp1, Fptan, Fpatan, Fsin, Fcos, Fsincos,
    ]
};

fn fp_supported_kind(k: K) -> bool {
    matches!(
        k,
        K::xmm_reg
            | K::xmm_rm
            | K::xmm_or_mem
            | K::mm_reg
            | K::mm_rm
            | K::mm_or_mem
            | K::st0
            | K::sti_opcode
            | K::mem
            | K::r8_or_mem
            | K::r16_or_mem
            | K::r32_or_mem
            | K::r64_or_mem
            | K::r16_reg
            | K::r32_reg
            | K::r64_reg
            | K::r16_rm
            | K::r32_rm
            | K::r64_rm
            | K::r32_reg_mem
            | K::r64_reg_mem
            | K::imm8
            | K::ax
            | K::seg_rDI
    )
}

/// Mnemonics named (comma-separated, any case) in environment variable `var`.
fn env_mnemonics(var: &str) -> Option<Vec<Mnemonic>> {
    let v = std::env::var(var).ok()?;
    let names: Vec<String> = v
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    Some(
        Mnemonic::values()
            .filter(|m| names.contains(&format!("{m:?}").to_ascii_lowercase()))
            .collect(),
    )
}

/// Every FP-family encoding for `mode`, whether implemented or not.
///
/// For debugging: `DIFFTEST_FP_ONLY=addps,fld` restricts the family to those mnemonics,
/// `DIFFTEST_FP_SKIP=maskmovq` leaves mnemonics out, `DIFFTEST_FP_APPROX=1` adds the
/// [`FP_APPROXIMATE`] ones.
pub fn fp_candidate_codes(mode: Mode) -> Vec<Code> {
    let approx = std::env::var_os("DIFFTEST_FP_APPROX").is_some();
    let only = env_mnemonics("DIFFTEST_FP_ONLY");
    let skip = env_mnemonics("DIFFTEST_FP_SKIP").unwrap_or_default();
    Code::values()
        .filter(|c| {
            let i = c.op_code();
            let in_mode = match mode {
                Mode::Long => i.mode64(),
                Mode::Compat => i.mode32(),
            };
            in_mode
                && i.encoding() == EncodingKind::Legacy
                && fp_family_features(*c)
                && (approx || !FP_APPROXIMATE.contains(&c.mnemonic()))
                && only.as_ref().is_none_or(|o| o.contains(&c.mnemonic()))
                && !skip.contains(&c.mnemonic())
                && (0..i.op_count()).all(|k| fp_supported_kind(i.op_kind(k)))
        })
        .collect()
}

/// The encodings the FP family picks from: [`fp_candidate_codes`] whose mnemonic the
/// frontend implements. Empty until the frontend translates FP/SIMD instructions.
pub fn fp_codes(mode: Mode) -> Vec<Code> {
    fp_candidate_codes(mode)
        .into_iter()
        .filter(|c| frontend_x86::translate::is_implemented(c.mnemonic()))
        .collect()
}

// ---- special values ----

const F32_SPECIAL: &[u32] = &[
    0x0000_0000,
    0x8000_0000, // ±0
    0x0000_0001,
    0x8000_0001,
    0x007f_ffff,
    0x0040_0000, // denormals
    0x0080_0000,
    0x8080_0000, // smallest normal
    0x7f7f_ffff,
    0xff7f_ffff, // max finite
    0x7f80_0000,
    0xff80_0000, // ±inf
    0x7fc0_0000,
    0xffc0_0000,
    0x7fc0_1234,
    0xffff_ffff, // QNaN (0xffc00000: indefinite)
    0x7f80_0001,
    0xffa0_0000,
    0x7fbf_ffff, // SNaN
    0x3f80_0000,
    0xbf80_0000,
    0xbfc0_0000,
    0x3f00_0000,
    0x4020_0000,
    0x4060_0000,
    0x3fc0_0000, // ±1, -1.5, .5, 2.5, 3.5, 1.5
    0x4f00_0000,
    0xcf00_0000,
    0x4eff_ffff,
    0xcf00_0001, // 2^31 and neighbours
    0x5f00_0000,
    0xdf00_0000,
    0x5eff_ffff, // 2^63
    0x4700_0000,
    0x46ff_fe00,
    0xc700_0000,
    0xc700_0100, // 32768, 32767, -32768, -32769
    0x3f7f_ffff,
    0x3380_0000,
    0x4b00_0000,
    0x4b7f_ffff, // 1-ulp, 2^-24, 2^23, 2^24-1
];

const F64_SPECIAL: &[u64] = &[
    0,
    0x8000_0000_0000_0000, // ±0
    1,
    0x8000_0000_0000_0001,
    0x000f_ffff_ffff_ffff,
    0x0008_0000_0000_0000, // denormals
    0x0010_0000_0000_0000,
    0x8010_0000_0000_0000, // smallest normal
    0x7fef_ffff_ffff_ffff,
    0xffef_ffff_ffff_ffff, // max finite
    0x7ff0_0000_0000_0000,
    0xfff0_0000_0000_0000, // ±inf
    0x7ff8_0000_0000_0000,
    0xfff8_0000_0000_0000,
    0x7ff8_0000_dead_beef,
    u64::MAX, // QNaN
    0x7ff0_0000_0000_0001,
    0xfff4_0000_0000_0000,
    0x7ff7_ffff_ffff_ffff, // SNaN
    0x3ff0_0000_0000_0000,
    0xbff0_0000_0000_0000,
    0xbff8_0000_0000_0000,
    0x3fe0_0000_0000_0000,
    0x4004_0000_0000_0000,
    0x400c_0000_0000_0000, // 1, -1, -1.5, 0.5, 2.5, 3.5
    0x41e0_0000_0000_0000,
    0xc1e0_0000_0000_0000,
    0x41df_ffff_ffc0_0000,
    0x41df_ffff_ffe0_0000,
    0xc1e0_0000_0020_0000, // 2^31, -2^31, 2^31-1, 2^31-0.5, -2^31-1
    0x43e0_0000_0000_0000,
    0xc3e0_0000_0000_0000,
    0x43df_ffff_ffff_ffff, // 2^63
    0x3ca0_0000_0000_0000,
    0x4330_0000_0000_0000,
    0x47ef_ffff_e000_0000,
    0x47f0_0000_0000_0000, // 2^-53, 2^52, f32 max, above f32 max
    0x3690_0000_0000_0000,
    0x36a0_0000_0000_0000, // around the f32 denormal range
];

const INT32_SPECIAL: &[u32] = &[
    0,
    1,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x7fff,
    0x8000,
    0xffff,
    0x7f,
    0x80,
    0xff,
    0xff80,
    0x8000_7fff,
];

impl Rng {
    fn pick<T: Copy>(&mut self, s: &[T]) -> T {
        s[self.below(s.len() as u64) as usize]
    }
    fn f32_bits(&mut self) -> u32 {
        match self.below(10) {
            0..=5 => self.pick(F32_SPECIAL),
            6 => {
                (self.below(2) as u32) << 31
                    | ((0x7f + self.below(40) as u32 - 20) << 23)
                    | (self.next() as u32 & 0x7f_ffff)
            }
            7 => ((self.below(400) as i32 - 200) as f32 / 4.0).to_bits(),
            8 => self.pick(INT32_SPECIAL),
            _ => self.next() as u32,
        }
    }
    fn f64_bits(&mut self) -> u64 {
        match self.below(10) {
            0..=5 => self.pick(F64_SPECIAL),
            6 => {
                self.below(2) << 63
                    | ((0x3ff + self.below(80) - 40) << 52)
                    | (self.next() & 0xf_ffff_ffff_ffff)
            }
            7 => ((self.below(2000) as i64 - 1000) as f64 / 4.0).to_bits(),
            8 => self.value(),
            _ => self.next(),
        }
    }
    /// A special 80-bit value (pseudo-denormals, unnormals and other unsupported encodings
    /// now and then).
    fn f80(&mut self) -> F80 {
        let sign = if self.chance(30) { 0x8000 } else { 0 };
        let j = 1u64 << 63;
        let (sig, exp) = match self.below(24) {
            0 => (0, 0),
            1 => (j, 0x3fff),                                           // 1.0
            2 => (0xc000_0000_0000_0000, 0x3fff),                       // 1.5
            3 => (0xc90f_daa2_2168_c235, 0x4000),                       // pi
            4 => (self.next() >> 1 | 1, 0),                             // denormal
            5 => (j, 1),                                                // smallest normal
            6 => (u64::MAX, 0x7ffe),                                    // max finite
            7 => (j, 0x7fff),                                           // infinity
            8 => (0xc000_0000_0000_0000 | self.below(1 << 20), 0x7fff), // QNaN
            9 => (j | 1 + self.below(1 << 20), 0x7fff),                 // SNaN
            10 => (0xc000_0000_0000_0000, 0x7fff), // (indefinite when negative)
            11 => {
                // integers near 2^15, 2^31, 2^63 and small ones, exactly
                let k = self.pick(&[0u64, 1, 2, 14, 15, 16, 30, 31, 32, 62, 63]);
                let v = (1u64 << k) - self.below(3).min(1u64 << k);
                if v == 0 {
                    (0, 0)
                } else {
                    let lz = v.leading_zeros() as u64;
                    (v << lz, 0x3fff + 63 - lz)
                }
            }
            12 => (j | self.below(4) << 61, 0x3ffe), // 0.5 .. 0.875
            13 => (j | self.next() >> 1, 0x3fff + self.below(64)), // integer-ish range
            14 => (j | self.next() >> 1, 0x3fff - self.below(64)),
            15 => (j | self.next() >> 1, 0x43fe - self.below(3)), // around the f64 maximum
            16 => (j | self.next() >> 1, 0x407e - self.below(3)), // around the f32 maximum
            17 => (j | self.next() >> 1, 0x3c01 - self.below(60)), // f64 underflow range
            18 => (j | self.next() >> 1, 0x3f81 - self.below(30)), // f32 underflow range
            19 if self.chance(50) => (j | self.next() >> 1, 1 + self.below(0x7ffe)),
            19 => (j | self.next() >> 1, 0x3fff + self.below(80) - 40),
            20 => (j | self.below(1 << 20), 0), // pseudo-denormal
            21 => (self.next() >> 1, 1 + self.below(0x7ffe)), // unnormal
            22 => (self.next() >> 1, 0x7fff),   // pseudo-NaN / pseudo-infinity
            _ => (self.next(), self.next() as u16 as u64 & 0x7fff),
        };
        F80 {
            sig,
            se: sign | exp as u16,
        }
    }
    /// 16 bytes of register or memory content, in one lane view.
    fn lanes16(&mut self) -> [u64; 2] {
        let mut q = [0u64; 2];
        match self.below(10) {
            0..=3 => {
                for x in q.iter_mut() {
                    *x = self.f32_bits() as u64 | (self.f32_bits() as u64) << 32;
                }
            }
            4..=6 => {
                for x in q.iter_mut() {
                    *x = self.f64_bits();
                }
            }
            7 => {
                for x in q.iter_mut() {
                    *x = self.pick(INT32_SPECIAL) as u64 | (self.pick(INT32_SPECIAL) as u64) << 32;
                }
            }
            8 => {
                for x in q.iter_mut() {
                    *x = self.value();
                }
            }
            _ => {
                for x in q.iter_mut() {
                    *x = self.next();
                }
            }
        }
        q
    }
}

/// A random x87 control word (always as FLDCW would leave it: bit 6 set, bits 7 and
/// 13..15 clear).
fn gen_fcw(rng: &mut Rng) -> u16 {
    let pc = [0u16, 2, 3, 3, 3][rng.below(5) as usize];
    let rc = rng.below(4) as u16;
    let mut masks = 0x3f;
    if rng.chance(15) {
        for b in 0..6 {
            if rng.chance(30) {
                masks &= !(1 << b);
            }
        }
    }
    let x = if rng.chance(10) { 0x1000 } else { 0 };
    masks | 0x40 | pc << 8 | rc << 10 | x
}

/// A random MXCSR (no reserved bits).
fn gen_mxcsr(rng: &mut Rng) -> u32 {
    let mut masks = 0x1f80u32;
    if rng.chance(20) {
        for b in 7..13 {
            if rng.chance(30) {
                masks &= !(1 << b);
            }
        }
    }
    let flags = if rng.chance(50) {
        0
    } else {
        rng.below(64) as u32
    };
    let rc = (rng.below(4) as u32) << 13;
    let ftz = if rng.chance(25) { 0x8000 } else { 0 };
    let daz = if rng.chance(25) { 0x40 } else { 0 };
    masks | flags | rc | ftz | daz
}

/// A random x87/MMX/SSE state.
pub fn gen_fp_state(rng: &mut Rng) -> FpState {
    let fcw = gen_fcw(rng);
    let top = rng.below(8) as u16;
    let cc =
        [0x100u16, 0x200, 0x400, 0x4000]
            .iter()
            .fold(0, |a, b| if rng.chance(40) { a | b } else { a });
    let mut flags = if rng.chance(70) {
        0
    } else {
        rng.below(128) as u16
    };
    let unmasked = flags & !fcw & 0x3f;
    if unmasked != 0 && !rng.chance(20) {
        flags &= fcw | 0x40;
    }
    // ES and B summarise the unmasked exception flags (a pending x87 exception).
    let es = if flags & !fcw & 0x3f != 0 { 0x8080 } else { 0 };
    let fsw = top << 11 | cc | flags | es;
    let ftw = match rng.below(5) {
        0 => 0,
        1 => 0xff,
        _ => rng.below(256) as u8,
    };
    let mut fp = FpState {
        fcw,
        fsw,
        ftw,
        mxcsr: gen_mxcsr(rng),
        ..FpState::default()
    };
    for i in 0..8 {
        fp.st[i] = rng.f80();
    }
    for i in 0..16 {
        fp.xmm[i] = rng.lanes16();
    }
    fp
}

/// Fill the data area with special values in 16-byte chunks of one lane view each.
fn fp_data(rng: &mut Rng) -> Vec<u8> {
    let mut data = vec![0u8; DATA_SIZE];
    for c in data.chunks_mut(16) {
        if rng.chance(15) {
            let v = rng.f80();
            c[..8].copy_from_slice(&v.sig.to_le_bytes());
            c[8..10].copy_from_slice(&v.se.to_le_bytes());
            c[10..16].copy_from_slice(&rng.next().to_le_bytes()[..6]);
        } else {
            let q = rng.lanes16();
            c[..8].copy_from_slice(&q[0].to_le_bytes());
            c[8..].copy_from_slice(&q[1].to_le_bytes());
        }
    }
    data
}

fn fp_imm8(rng: &mut Rng, m: Mnemonic) -> i64 {
    use Mnemonic::*;
    let any = rng.below(256) as i64;
    match m {
        Cmpps | Cmppd | Cmpss | Cmpsd if rng.chance(85) => rng.below(8) as i64,
        Roundps | Roundpd | Roundss | Roundsd if rng.chance(85) => rng.below(16) as i64,
        Psrlw | Psrld | Psrlq | Psraw | Psrad | Psllw | Pslld | Psllq | Psrldq | Pslldq
            if rng.chance(75) =>
        {
            rng.pick(&[0i64, 1, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65])
        }
        Palignr if rng.chance(75) => rng.below(34) as i64,
        _ => any,
    }
}

/// A memory operand for the FP family: through the data base, 16-byte aligned most of the
/// time and with the whole operand (up to 512 bytes) inside the data area; sometimes through
/// the faulting base. Returns the operand and its offset in the data area when known.
fn fp_mem_operand(rng: &mut Rng, mode: Mode) -> (MemoryOperand, Option<usize>) {
    if rng.chance(3) {
        return (
            MemoryOperand::with_base_displ(mode.fault_base(), rng.below(8) as i64),
            None,
        );
    }
    // Offsets 0x100..=0x1d0f from DATA_ADDR: 512 more bytes still fit.
    let mut disp = (rng.below(0x1c00 / 16) as i64) * 16 - 0xf00;
    if rng.chance(12) {
        disp += rng.pick(&[1i64, 2, 4, 8, 12, 15]);
    }
    let off = (R15_BASE - DATA_ADDR) as i64 + disp;
    (
        MemoryOperand::with_base_displ(mode.base(), disp),
        Some(off as usize),
    )
}

fn xmm_reg(rng: &mut Rng, mode: Mode) -> Register {
    let n = if mode == Mode::Long { 16 } else { 8 };
    reg_at(Register::XMM0, rng.below(n) as u16)
}

fn mm_reg(rng: &mut Rng) -> Register {
    reg_at(Register::MM0, rng.below(8) as u16)
}

/// What a generated FP instruction needs beyond its bytes.
#[derive(Default)]
struct FpExtra {
    /// Data-area patches (offset, bytes) applied after the data is filled.
    patches: Vec<(usize, Vec<u8>)>,
    /// Data-area ranges not compared.
    ignore: Vec<(usize, usize)>,
    /// Offsets of MXCSR images that LDMXCSR/FXRSTOR load (see [`fp_case`]).
    mxcsr_at: Vec<usize>,
}

/// Valid control images for the loads of `m` at data offset `off` (applied most of the
/// time; random data would mostly make LDMXCSR/FXRSTOR #GP), and the implementation-specific
/// bytes of the stores of `m` (not compared).
fn fp_mem_extra(rng: &mut Rng, m: Mnemonic, code: Code, off: usize, ex: &mut FpExtra) {
    use Mnemonic::*;
    let small_env = matches!(
        code,
        Code::Fldenv_m14byte
            | Code::Fnstenv_m14byte
            | Code::Fstenv_m14byte
            | Code::Frstor_m94byte
            | Code::Fnsave_m94byte
            | Code::Fsave_m94byte
    );
    match m {
        Ldmxcsr | Fxrstor | Fxrstor64 => {
            ex.mxcsr_at.push(if m == Ldmxcsr { off } else { off + 24 })
        }
        _ => {}
    }
    match m {
        Ldmxcsr if rng.chance(80) => ex
            .patches
            .push((off, gen_mxcsr(rng).to_le_bytes().to_vec())),
        Fldcw if rng.chance(60) => ex.patches.push((off, gen_fcw(rng).to_le_bytes().to_vec())),
        Fxrstor | Fxrstor64 if rng.chance(80) => {
            let fp = gen_fp_state(rng);
            let mut img = fp.to_fxsave().to_vec();
            // Random FOP/FIP/FDP and the "available" tail, as memory would have them.
            for i in (6..24).chain(464..512) {
                img[i] = rng.next() as u8;
            }
            ex.patches.push((off, img));
        }
        Fldenv | Frstor if rng.chance(60) => {
            let fp = gen_fp_state(rng);
            // Full tag word: 11 (empty) or 00 (valid) per physical register.
            let tw = (0..8).fold(0u16, |t, r| {
                if fp.ftw >> r & 1 == 0 {
                    t | 3 << (2 * r)
                } else {
                    t
                }
            });
            let mut img = Vec::new();
            if small_env {
                for w in [fp.fcw, fp.fsw, tw, 0, 0, 0, 0] {
                    img.extend_from_slice(&w.to_le_bytes());
                }
            } else {
                for w in [
                    fp.fcw as u32 | 0xffff_0000,
                    fp.fsw as u32 | 0xffff_0000,
                    tw as u32 | 0xffff_0000,
                    0,
                    0,
                    0,
                    0xffff_0000,
                ] {
                    img.extend_from_slice(&w.to_le_bytes());
                }
            }
            if m == Frstor {
                for r in fp.st {
                    img.extend_from_slice(&r.sig.to_le_bytes());
                    img.extend_from_slice(&r.se.to_le_bytes());
                }
            }
            ex.patches.push((off, img));
        }
        // FXSAVE: FOP (6..8), FIP and FDP (8..24, or FIP/FCS/FDP/FDS in the 32-bit form)
        // are not state this harness models (AMD stores them only while an x87 exception is
        // pending; Intel has FCS/FDS deprecation); MXCSR_MASK (28..32) is processor-specific
        // (SDM Vol. 1 §11.6.6: e.g. 0xFFFF, or 0x2FFFF on AMD with misaligned-SSE mode).
        Fxsave | Fxsave64 => {
            ex.ignore.push((off + 6, 18));
            ex.ignore.push((off + 28, 4));
        }
        // FNSTENV/FNSAVE: the instruction and data pointers and FOP (SDM Vol. 1 Figures 8-9
        // to 8-12): 32-bit form bytes 12..26 (FIP, FCS|FOP, FDP, FDS), 16-bit form 6..14.
        Fnstenv | Fstenv | Fnsave | Fsave => {
            if small_env {
                ex.ignore.push((off + 6, 8));
            } else {
                ex.ignore.push((off + 12, 14));
            }
        }
        _ => {}
    }
}

/// Generate one random FP-family instruction.
fn random_fp_insn(
    rng: &mut Rng,
    mode: Mode,
    codes: &[Code],
    ip: u64,
    ex: &mut FpExtra,
) -> Option<(Vec<u8>, Instruction)> {
    let code = codes[rng.below(codes.len() as u64) as usize];
    let info = code.op_code();
    let m = code.mnemonic();
    if matches!(
        code,
        Code::Maskmovq_rDI_mm_mm | Code::Maskmovdqu_rDI_xmm_xmm
    ) {
        // Implicit destination [rdi]: point rdi into the data area first.
        let (lea, di) = match mode {
            Mode::Long => (Code::Lea_r64_m, Register::RDI),
            Mode::Compat => (Code::Lea_r32_m, Register::EDI),
        };
        let (mem, _) = loop {
            let (mo, off) = fp_mem_operand(rng, mode);
            if off.is_some() {
                break (mo, off);
            }
        };
        let mut bytes = encode(&Instruction::with2(lea, di, mem).ok()?, ip, mode)?;
        let (a, b) = if code == Code::Maskmovq_rDI_mm_mm {
            (mm_reg(rng), mm_reg(rng))
        } else {
            (xmm_reg(rng, mode), xmm_reg(rng, mode))
        };
        let insn = if code == Code::Maskmovq_rDI_mm_mm {
            Instruction::with_maskmovq(mode.bitness(), a, b, Register::None).ok()?
        } else {
            Instruction::with_maskmovdqu(mode.bitness(), a, b, Register::None).ok()?
        };
        let ip2 = ip + bytes.len() as u64;
        let b2 = encode(&insn, ip2, mode)?;
        let dec = Decoder::with_ip(mode.bitness(), &b2, ip2, DecoderOptions::NONE).decode();
        if dec.is_invalid() {
            return None;
        }
        bytes.extend(b2);
        return Some((bytes, dec));
    }
    let mut mem_off = None;
    let mut ops = Vec::new();
    for k in 0..info.op_count() {
        let kind = info.op_kind(k);
        let mut mem = |rng: &mut Rng| {
            let (mo, off) = fp_mem_operand(rng, mode);
            mem_off = off;
            Opnd::M(mo)
        };
        let o = match kind {
            K::xmm_reg | K::xmm_rm => Opnd::R(xmm_reg(rng, mode)),
            K::xmm_or_mem => {
                if rng.chance(35) {
                    mem(rng)
                } else {
                    Opnd::R(xmm_reg(rng, mode))
                }
            }
            K::mm_reg | K::mm_rm => Opnd::R(mm_reg(rng)),
            K::mm_or_mem => {
                if rng.chance(35) {
                    mem(rng)
                } else {
                    Opnd::R(mm_reg(rng))
                }
            }
            K::st0 => Opnd::R(Register::ST0),
            K::sti_opcode => Opnd::R(reg_at(Register::ST0, rng.below(8) as u16)),
            K::mem => mem(rng),
            K::r8_or_mem | K::r16_or_mem | K::r32_or_mem | K::r64_or_mem => {
                if rng.chance(35) {
                    mem(rng)
                } else {
                    Opnd::R(gpr(rng, mode, kind_bytes(kind)))
                }
            }
            K::r16_reg | K::r16_rm => Opnd::R(gpr(rng, mode, 2)),
            K::r32_reg | K::r32_rm | K::r32_reg_mem => Opnd::R(gpr(rng, mode, 4)),
            K::r64_reg | K::r64_rm | K::r64_reg_mem => Opnd::R(gpr(rng, mode, 8)),
            K::ax => Opnd::R(Register::AX),
            K::imm8 => Opnd::I(fp_imm8(rng, m)),
            _ => return None,
        };
        ops.push(o);
    }
    let insn = build(code, &ops)?;
    let bytes = encode(&insn, ip, mode)?;
    let dec = Decoder::with_ip(mode.bitness(), &bytes, ip, DecoderOptions::NONE).decode();
    if dec.is_invalid() {
        return None;
    }
    if let Some(off) = mem_off {
        // A read of bytes an earlier instruction stored with implementation-specific
        // contents (FIP/FDP, MXCSR_MASK...) would carry them into compared state.
        if reads_memory(&dec)
            && ex
                .ignore
                .iter()
                .any(|&(o, l)| off < o + l && o < off + dec.memory_size().size().max(1))
        {
            return None;
        }
        fp_mem_extra(rng, dec.mnemonic(), dec.code(), off, ex);
    }
    Some((bytes, dec))
}

/// Whether the instruction reads its memory operand.
fn reads_memory(i: &Instruction) -> bool {
    use iced_x86::OpAccess as A;
    let mut f = iced_x86::InstructionInfoFactory::new();
    f.info(i).used_memory().iter().any(|m| {
        matches!(
            m.access(),
            A::Read | A::CondRead | A::ReadWrite | A::ReadCondWrite
        )
    })
}

/// An FXSAVE to an aligned spot of the data area, one FP instruction, and an FXRSTOR from
/// the same spot (the state before the instruction comes back; the stored image stays).
fn fxsave_round_trip(
    rng: &mut Rng,
    mode: Mode,
    codes: &[Code],
    ip: u64,
    ex: &mut FpExtra,
) -> Option<Vec<u8>> {
    let (save, restore) = match mode {
        Mode::Long if rng.chance(50) => (Code::Fxsave64_m512byte, Code::Fxrstor64_m512byte),
        _ => (Code::Fxsave_m512byte, Code::Fxrstor_m512byte),
    };
    let disp = (rng.below(0x1c00 / 16) as i64) * 16 - 0xf00;
    let off = ((R15_BASE - DATA_ADDR) as i64 + disp) as usize;
    let mem = MemoryOperand::with_base_displ(mode.base(), disp);
    let mut out = encode(&Instruction::with1(save, mem).ok()?, ip, mode)?;
    let saved = Decoder::with_ip(mode.bitness(), &out, ip, DecoderOptions::NONE).decode();
    let (n_ignore, n_patches) = (ex.ignore.len(), ex.patches.len());
    let (b, _) = random_fp_insn(rng, mode, codes, ip + out.len() as u64, ex)?;
    // The FXRSTOR must not read back implementation-specific bytes the instruction
    // stored into the saved image.
    if ex.ignore[n_ignore..]
        .iter()
        .any(|&(o, l)| o < off + 512 && off < o + l)
    {
        ex.ignore.truncate(n_ignore);
        ex.patches.truncate(n_patches);
        return None;
    }
    out.extend(b);
    out.extend(encode(
        &Instruction::with1(restore, mem).ok()?,
        ip + out.len() as u64,
        mode,
    )?);
    fp_mem_extra(rng, saved.mnemonic(), saved.code(), off, ex);
    Some(out)
}

/// Generate an FP-family case with 1..=max_len instructions from `fp_codes` (which must not
/// be empty), sometimes mixed with one from `int_codes` (the integer family's encodings).
pub fn fp_case(
    rng: &mut Rng,
    mode: Mode,
    fp_codes: &[Code],
    int_codes: &[Code],
    max_len: u64,
) -> Case {
    assert!(
        !fp_codes.is_empty(),
        "no FP/SIMD encodings to generate from"
    );
    let mut code = Vec::new();
    let mut ex = FpExtra::default();
    let n = 1 + rng.below(max_len);
    let mut k = 0;
    let mut tries = 0;
    while k < n && tries < 1000 {
        tries += 1;
        let ip = mode.code_start() + code.len() as u64;
        if k > 0 && !int_codes.is_empty() && rng.chance(12) {
            if let Some((b, _)) = random_insn(rng, mode, int_codes, ip) {
                code.extend(b);
                k += 1;
            }
            continue;
        }
        if rng.chance(4) {
            if let Some(b) = fxsave_round_trip(rng, mode, fp_codes, ip, &mut ex) {
                code.extend(b);
                k += 1;
            }
            continue;
        }
        if let Some((b, _)) = random_fp_insn(rng, mode, fp_codes, ip, &mut ex) {
            code.extend(b);
            k += 1;
        }
    }
    let mut init = RegState::default();
    for i in 0..16 {
        init.gpr[i] = if rng.chance(20) {
            DATA_ADDR + 0x800 + rng.below(0x800)
        } else {
            rng.value()
        };
    }
    // Small lengths for PCMPESTRx now and then; small rcx for shifts by CL.
    for i in [0, 2, 1] {
        if rng.chance(40) {
            init.gpr[i] = rng.below(20).wrapping_sub(2);
        }
    }
    init.gpr[4] = RSP_BASE;
    let fault = match rng.below(3) {
        0 => DATA_ADDR + DATA_SIZE as u64,
        1 => DATA_ADDR - 8,
        _ if mode == Mode::Long => 0x8000_0000_0000_0000,
        _ => DATA_ADDR + DATA_SIZE as u64 + 0x10,
    };
    match mode {
        Mode::Long => {
            init.gpr[15] = R15_BASE;
            init.gpr[14] = fault;
        }
        Mode::Compat => {
            for g in init.gpr.iter_mut() {
                *g &= 0xffff_ffff;
            }
            init.gpr[3] = R15_BASE;
            init.gpr[5] = fault;
        }
    }
    init.rflags = rng.next() & 0x8d5 | 2;
    init.fp = gen_fp_state(rng);
    let mut data = fp_data(rng);
    for (off, bytes) in &ex.patches {
        let end = (off + bytes.len()).min(DATA_SIZE);
        data[*off..end].copy_from_slice(&bytes[..end - off]);
    }
    // MXCSR bit 17 is AMD's misaligned-SSE exception mask (MM), valid only on processors
    // with CPUID Fn8000_0001_ECX[MisAlignSse] (AMD APM Vol. 1 §4.2.2; the host's
    // MXCSR_MASK is 0x2FFFF) and reserved (#GP) elsewhere (SDM Vol. 1 §10.2.3, MXCSR_MASK
    // 0xFFFF; the engine does not advertise MisAlignSse): the images LDMXCSR and FXRSTOR
    // load keep it clear.
    for &o in &ex.mxcsr_at {
        if o + 2 < DATA_SIZE {
            data[o + 2] &= !0x02;
        }
    }
    let mut insns = Vec::new();
    let mut d = Decoder::with_ip(
        mode.bitness(),
        &code,
        mode.code_start(),
        DecoderOptions::NONE,
    );
    while d.can_decode() {
        insns.push(d.decode());
    }
    Case {
        code,
        init,
        data,
        undef_flags: 0,
        insns,
        data_ignore: ex.ignore,
    }
}

// ---- x87 condition codes the SDM leaves undefined ----

pub const FSW_C0: u16 = 0x100;
pub const FSW_C1: u16 = 0x200;
pub const FSW_C2: u16 = 0x400;
pub const FSW_C3: u16 = 0x4000;
const FSW_CC: u16 = FSW_C0 | FSW_C1 | FSW_C2 | FSW_C3;

/// (condition codes the instruction defines, condition codes it leaves undefined), from
/// the "FPU Flags Affected" section of each instruction's page in the SDM (Vol. 2A/2B).
/// Everything not listed (MMX, SSE, FXSAVE, integer instructions) leaves C0..C3 alone.
/// The comparison masks only what is undefined; all other FSW bits (exception flags, SF,
/// ES, B, TOP) are always compared.
pub fn fsw_effect(m: Mnemonic) -> (u16, u16) {
    use Mnemonic::*;
    match m {
        // Compare/classify/remainder: C0..C3 set by the result (FCOM, FUCOM, FICOM, FTST,
        // FXAM, FPREM, FPREM1 pages); FINIT/FNINIT/FSAVE clear them; FLDENV, FRSTOR and
        // FXRSTOR load them.
        Fcom | Fcomp | Fcompp | Fucom | Fucomp | Fucompp | Ficom | Ficomp | Ftst | Fxam | Fprem
        | Fprem1 | Fninit | Finit | Fnsave | Fsave | Frstor | Fldenv | Fxrstor | Fxrstor64 => {
            (FSW_CC, 0)
        }
        // "C1: set to 0 (if stack underflow) / round-up indicator / overflow indicator;
        // C0, C2, C3: Undefined." — arithmetic (FADD..FDIVR, FSQRT, FSCALE, FRNDINT,
        // FXTRACT, F2XM1, FYL2X, FYL2XP1, FPATAN), loads (FLD, FILD, FBLD, FLD1..FLDZ),
        // stores (FST, FIST, FISTTP, FBSTP), FXCH, FCHS, FABS, FCMOVcc, FINCSTP, FDECSTP.
        Fadd | Faddp | Fiadd | Fsub | Fsubp | Fsubr | Fsubrp | Fisub | Fisubr | Fmul | Fmulp
        | Fimul | Fdiv | Fdivp | Fdivr | Fdivrp | Fidiv | Fidivr | Fsqrt | Fscale | Frndint
        | Fxtract | F2xm1 | Fyl2x | Fyl2xp1 | Fpatan | Fld | Fild | Fbld | Fld1 | Fldl2t
        | Fldl2e | Fldpi | Fldlg2 | Fldln2 | Fldz | Fst | Fstp | Fstpnce | Fist | Fistp
        | Fisttp | Fbstp | Fxch | Fchs | Fabs | Fcmovb | Fcmove | Fcmovbe | Fcmovu | Fcmovnb
        | Fcmovne | Fcmovnbe | Fcmovnu | Fincstp | Fdecstp => (FSW_C1, FSW_C0 | FSW_C2 | FSW_C3),
        // FPTAN, FSIN, FCOS, FSINCOS: "C2: set to 1 if outside range; C0, C3: Undefined."
        Fptan | Fsin | Fcos | Fsincos => (FSW_C1 | FSW_C2, FSW_C0 | FSW_C3),
        // FCOMI/FCOMIP/FUCOMI/FUCOMIP: "C1: set to 0; C0, C2, C3: Not affected."
        Fcomi | Fcomip | Fucomi | Fucomip => (FSW_C1, 0),
        // "The C0, C1, C2, and C3 flags are undefined": FFREE, FNOP, FLDCW, FSTCW, FSTSW,
        // FSTENV, FCLEX, WAIT/FWAIT pages. FFREEP (undocumented) is FFREE + pop; the 8087's
        // FENI/FDISI and the 287's FSETPM execute as FNOP on the 387 and later (SDM Vol. 1,
        // compatibility with the 8087/287).
        Ffree | Ffreep | Fnop | Fldcw | Fnstcw | Fstcw | Fnstsw | Fstsw | Fnstenv | Fstenv
        | Fnclex | Fclex | Wait | Fneni | Feni | Fndisi | Fdisi | Fnsetpm | Fsetpm => (0, FSW_CC),
        _ => (0, 0),
    }
}

/// Instructions that expose the FSW (C0..C3 included) to registers or memory.
fn reads_fsw(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Fnstsw | Fstsw | Fnstenv | Fstenv | Fnsave | Fsave | Fxsave | Fxsave64
    )
}

/// The FSW condition codes undefined at the end of the sequence, or None when an
/// instruction stores the status word while some are undefined (the case is rejected).
pub fn fsw_undefined(insns: &[Instruction]) -> Option<u16> {
    fsw_undefined_before(insns, u64::MAX)
}

/// As [`fsw_undefined`], over the instructions before the one at `rip`.
pub fn fsw_undefined_before(insns: &[Instruction], rip: u64) -> Option<u16> {
    let mut undef = 0u16;
    for i in insns.iter().take_while(|i| i.ip() != rip) {
        if reads_fsw(i.mnemonic()) && undef != 0 {
            return None;
        }
        let (def, und) = fsw_effect(i.mnemonic());
        undef = (undef & !def) | und;
    }
    Some(undef)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The integer family's encodings are exactly what they were before the FP family
    /// existed: none of its mnemonics has an x87/MMX/SSE encoding for the filter to drop
    /// (so its cases and the committed long64/compat32 vectors do not change).
    #[test]
    fn integer_family_has_no_fp_simd_encodings() {
        for mode in [Mode::Long, Mode::Compat] {
            let dropped: Vec<Code> = Code::values()
                .filter(|c| MNEMONICS.contains(&c.mnemonic()) && is_fp_simd_code(*c))
                .filter(|c| {
                    if mode == Mode::Long {
                        c.op_code().mode64()
                    } else {
                        c.op_code().mode32()
                    }
                })
                .collect();
            assert!(dropped.is_empty(), "{mode:?}: {dropped:?}");
            assert!(codes(mode).iter().all(|c| !is_fp_simd_code(*c)));
        }
        // And the FP family has no integer-only encoding but POPCNT and CRC32.
        for c in fp_candidate_codes(Mode::Long) {
            assert!(
                is_fp_simd_code(c)
                    || matches!(
                        c.mnemonic(),
                        Mnemonic::Popcnt | Mnemonic::Crc32 | Mnemonic::Movnti
                    ),
                "{c:?}"
            );
        }
    }

    #[test]
    fn fsw_undefined_tracking() {
        let dec = |bytes: &[u8]| {
            let mut d = Decoder::with_ip(64, bytes, CODE_ADDR, DecoderOptions::NONE);
            let mut v = Vec::new();
            while d.can_decode() {
                v.push(d.decode());
            }
            v
        };
        // fadd st0, st1: C0 C2 C3 undefined.
        assert_eq!(
            fsw_undefined(&dec(&[0xd8, 0xc1])),
            Some(FSW_C0 | FSW_C2 | FSW_C3)
        );
        // ... then fcom st1 defines all.
        assert_eq!(fsw_undefined(&dec(&[0xd8, 0xc1, 0xd8, 0xd1])), Some(0));
        // ... then fnstsw ax would store undefined bits: rejected.
        assert_eq!(fsw_undefined(&dec(&[0xd8, 0xc1, 0xdf, 0xe0])), None);
        // fnstsw ax first is fine; FCOMI leaves C0 C2 C3 alone (still undefined after fadd).
        assert_eq!(
            fsw_undefined(&dec(&[0xdf, 0xe0, 0xd8, 0xc1, 0xdb, 0xf1])),
            Some(FSW_C0 | FSW_C2 | FSW_C3)
        );
        // SSE leaves the x87 condition codes alone.
        assert_eq!(fsw_undefined(&dec(&[0x0f, 0x58, 0xc1])), Some(0));
        // Before the instruction at +2 (a fault there): only the fadd counts.
        assert_eq!(
            fsw_undefined_before(&dec(&[0xd8, 0xc1, 0xdf, 0xe0]), CODE_ADDR + 2),
            Some(FSW_C0 | FSW_C2 | FSW_C3)
        );
    }

    #[test]
    fn fp_cases_are_deterministic_and_valid() {
        let fp = fp_candidate_codes(Mode::Long);
        let int = codes(Mode::Long);
        let (mut a, mut b) = (Rng::new(3), Rng::new(3));
        for _ in 0..500 {
            let (x, y) = (
                fp_case(&mut a, Mode::Long, &fp, &int, 4),
                fp_case(&mut b, Mode::Long, &fp, &int, 4),
            );
            assert_eq!((&x.code, &x.data, x.init), (&y.code, &y.data, y.init));
            assert!(!x.insns.iter().any(|i| i.is_invalid()));
            assert_eq!(x.init.fp.mxcsr & !0xffff, 0);
            assert_eq!(x.init.gpr[15], R15_BASE);
            for &(o, l) in &x.data_ignore {
                assert!(o + l <= DATA_SIZE);
            }
        }
    }
}
