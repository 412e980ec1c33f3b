//! Random test-case generation.
//!
//! Most cases come from a generic generator over iced-x86's opcode tables: every 64-bit
//! legacy/VEX-GPR encoding of the mnemonics the frontend implements, with random register,
//! memory and immediate operands. Templates add what needs set-up: string instructions,
//! stack operations, conditional branches, faulting accesses.
//!
//! Register conventions: r15 points into the middle of the data area and is the base of
//! every memory operand; r14 holds a faulting address (guard page or non-canonical); rsp
//! points into the data area. None of the three is written by generated instructions
//! except the stack templates (rsp).

use iced_x86::{Code, Decoder, DecoderOptions, Encoder, EncodingKind, Instruction, MemoryOperand, Mnemonic, OpCodeOperandKind as K, Register};

use crate::native::{RegState, CODE_ADDR, DATA_ADDR, DATA_SIZE};

/// Small deterministic PRNG (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
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
        Add, Or, Adc, Sbb, And, Sub, Xor, Cmp, Test, Inc, Dec, Neg, Not, Mov, Movzx, Movsx, Movsxd, Lea, Xchg, Xadd, Cmpxchg,
        Cmpxchg8b, Cmpxchg16b, Bswap, Movbe, Cbw, Cwde, Cdqe, Cwd, Cdq, Cqo, Lahf, Sahf, Clc, Stc, Cmc, Cld, Std, Seto,
        Setno, Setb, Setae, Sete, Setne, Setbe, Seta, Sets, Setns, Setp, Setnp, Setl, Setge, Setle, Setg, Cmovo, Cmovno,
        Cmovb, Cmovae, Cmove, Cmovne, Cmovbe, Cmova, Cmovs, Cmovns, Cmovp, Cmovnp, Cmovl, Cmovge, Cmovle, Cmovg, Shl, Sal,
        Shr, Sar, Rol, Ror, Rcl, Rcr, Shld, Shrd, Shlx, Shrx, Sarx, Rorx, Mul, Imul, Div, Idiv, Mulx, Bt, Bts, Btr, Btc, Bsf,
        Bsr, Tzcnt, Lzcnt, Popcnt, Andn, Bextr, Blsi, Blsmsk, Blsr, Bzhi, Pdep, Pext, Nop, Xlatb, Push, Pop, Pushf,
    ]
};

fn supported_kind(k: K) -> bool {
    matches!(
        k,
        K::r8_or_mem | K::r16_or_mem | K::r32_or_mem | K::r64_or_mem | K::r8_reg | K::r8_opcode | K::r16_reg | K::r16_rm
            | K::r16_opcode | K::r32_reg | K::r32_rm | K::r32_opcode | K::r32_vvvv | K::r64_reg | K::r64_rm | K::r64_opcode
            | K::r64_vvvv | K::mem | K::al | K::cl | K::ax | K::eax | K::rax | K::imm8 | K::imm8_const_1 | K::imm8sex16
            | K::imm8sex32 | K::imm8sex64 | K::imm16 | K::imm32 | K::imm32sex64 | K::imm64 | K::r16_reg_mem | K::r32_reg_mem
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
                Mode::Compat => i.mode32() && !matches!(c.mnemonic(), Mnemonic::Popa | Mnemonic::Popad),
            };
            let extra = mode == Mode::Compat && matches!(c.mnemonic(), Mnemonic::Pusha | Mnemonic::Pushad);
            if !in_mode || !(MNEMONICS.contains(&c.mnemonic()) || extra) {
                return false;
            }
            if !matches!(i.encoding(), EncodingKind::Legacy | EncodingKind::VEX) {
                return false;
            }
            // Segment-register moves, string forms etc. have other operand kinds.
            (0..i.op_count()).all(|k| supported_kind(i.op_kind(k)))
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
        K::imm8 => Opnd::I(if rng.chance(50) { rng.below(70) as i64 } else { (rng.below(256) as i64) - 128 }),
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
fn random_insn(rng: &mut Rng, mode: Mode, codes: &[Code], ip: u64) -> Option<(Vec<u8>, Instruction)> {
    let code = codes[rng.below(codes.len() as u64) as usize];
    let info = code.op_code();
    let mut ops: Vec<Opnd> = (0..info.op_count()).map(|k| operand(rng, mode, info.op_kind(k))).collect();
    // BT* with a register bit offset reaches anywhere in memory: keep those in registers
    // (the host's address space has mappings the guest's does not).
    if matches!(code.mnemonic(), Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc) && matches!(ops.get(1), Some(Opnd::R(_))) {
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
    if matches!(code.mnemonic(), Mnemonic::Shld | Mnemonic::Shrd) && info.op_kind(0) == K::r16_or_mem {
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
    match rng.below(if mode == Mode::Long { 6 } else { 5 }) {
        5 => {
            // Segment selectors against Linux's GDT (64-bit mode only: there data
            // segment attributes do not affect later accesses). Loads into DS/ES with
            // the descriptor checks, then LAR/LSL/VERR/VERW, with the results in GPRs.
            const SELS: [u16; 16] = [0, 1, 3, 0x8, 0x10, 0x13, 0x18, 0x1b, 0x20, 0x23, 0x2b, 0x2a, 0x33, 0x40, 0x80, 0x4];
            let sel = SELS[rng.below(SELS.len() as u64) as usize] | if rng.chance(20) { rng.below(4) as u16 } else { 0 };
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
            emit(&mut out, Instruction::with2(lea, si, MemoryOperand::with_base_displ(base, d1)).unwrap());
            emit(&mut out, Instruction::with2(lea, di, MemoryOperand::with_base_displ(base, d2)).unwrap());
            emit(&mut out, Instruction::with2(Code::Mov_r32_imm32, Register::ECX, rng.below(20) as u32).unwrap());
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
            let op = [0xa4u8, 0xaa, 0xac, 0xa6, 0xae][rng.below(5) as usize] + if byte_form { 0 } else { 1 };
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
            emit(&mut out, Instruction::with2(lea, bp, MemoryOperand::with_base_displ(base, 0x600)).unwrap());
            out.extend_from_slice(&[0xc8, rng.below(64) as u8, 0, rng.below(3) as u8]);
            if rng.chance(70) {
                out.push(0xc9);
            }
        }
        _ => {
            // lahf/sahf round trip and a rep stos with a large count clipped by the area
            emit(&mut out, Instruction::with2(lea, di, MemoryOperand::with_base_displ(base, -0x100)).unwrap());
            emit(&mut out, Instruction::with2(Code::Mov_r32_imm32, Register::ECX, rng.below(64) as u32).unwrap());
            if mode == Mode::Long {
                out.extend_from_slice(&[0xf3, 0x48, 0xab]); // rep stosq
            } else {
                out.extend_from_slice(&[0xf3, 0xab]); // rep stosd
            }
        }
    }
    out
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
            let Some((b, _)) = random_insn(rng, mode, codes, ip + 2) else { continue };
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
        init.gpr[i] = if rng.chance(20) { DATA_ADDR + 0x800 + rng.below(0x800) } else { rng.value() };
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
    let mut d = Decoder::with_ip(mode.bitness(), &code, mode.code_start(), DecoderOptions::NONE);
    while d.can_decode() {
        insns.push(d.decode());
    }
    Case { code, init, data, undef_flags: 0, insns }
}

/// iced RflagsBits -> RFLAGS bits.
pub fn iced_to_rflags(b: u32) -> u64 {
    use iced_x86::RflagsBits as R;
    let mut f = 0;
    for (i, r) in [(R::OF, 1u64 << 11), (R::SF, 1 << 7), (R::ZF, 1 << 6), (R::AF, 1 << 4), (R::CF, 1), (R::PF, 1 << 2), (R::DF, 1 << 10)] {
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

/// As [`undefined_flags`], over the instructions before the one at `rip`.
pub fn undefined_flags_before(insns: &[Instruction], rip: u64) -> Option<u64> {
    let mut undef: u32 = 0;
    let mut after_jcc = false;
    for i in insns.iter().take_while(|i| i.ip() != rip) {
        if i.rflags_read() & undef != 0 {
            return None;
        }
        // A shift or rotate by CL may have a zero count and then changes nothing.
        let by_cl = (0..i.op_count()).any(|k| i.op_kind(k) == iced_x86::OpKind::Register && i.op_register(k) == Register::CL)
            && matches!(i.mnemonic(), Mnemonic::Shl | Mnemonic::Sal | Mnemonic::Shr | Mnemonic::Sar | Mnemonic::Rol | Mnemonic::Ror | Mnemonic::Rcl | Mnemonic::Rcr | Mnemonic::Shld | Mnemonic::Shrd);
        // An instruction right after a jcc may have been skipped: it defines nothing for
        // sure, and what it leaves undefined is possibly undefined.
        // A REP string instruction with a zero count changes nothing either.
        let maybe_nothing = by_cl || (i.is_string_instruction() && (i.has_rep_prefix() || i.has_repne_prefix()));
        let defined = if maybe_nothing || after_jcc { 0 } else { i.rflags_modified() };
        undef = (undef & !defined) | i.rflags_undefined();
        after_jcc = i.is_jcc_short_or_near();
    }
    Some(iced_to_rflags(undef))
}
