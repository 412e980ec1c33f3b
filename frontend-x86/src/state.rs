//! x86 CPU state as engine globals, and typed access to it.
//!
//! Every piece of architectural state the translator touches is a u64 slot in
//! [`jit::Env::g`]; this module fixes the slot map and gives the platform named accessors.

use jit::ir::Global;
use jit::Env;

/// General purpose registers 0..16 in encoding order (rax, rcx, rdx, rbx, rsp, rbp, rsi,
/// rdi, r8..r15).
pub const G_GPR0: Global = 0;
pub const G_RIP: Global = 16;
/// RFLAGS. The arithmetic bits (CF PF AF ZF SF OF) are only authoritative while
/// `CC_OP == CcOp::Eflags`; otherwise they are derived from the lazy-flags globals.
pub const G_RFLAGS: Global = 17;
pub const G_CC_OP: Global = 18;
pub const G_CC_DST: Global = 19;
pub const G_CC_SRC: Global = 20;
pub const G_CC_SRC2: Global = 21;
/// Segment registers, in the order ES CS SS DS FS GS (see [`Seg`]).
pub const G_SEG_SEL: Global = 22;
pub const G_SEG_BASE: Global = 28;
pub const G_SEG_LIMIT: Global = 34;
/// Descriptor attributes: bits 8..15 of the descriptor's high dword (type, S, DPL, P) in
/// bits 0..7 and bits 20..23 (AVL, L, D/B, G) in bits 8..11.
pub const G_SEG_ATTR: Global = 40;
pub const G_CR0: Global = 46;
pub const G_CR2: Global = 47;
pub const G_CR3: Global = 48;
pub const G_CR4: Global = 49;
pub const G_EFER: Global = 50;
pub const G_GDTR_BASE: Global = 51;
pub const G_GDTR_LIMIT: Global = 52;
pub const G_IDTR_BASE: Global = 53;
pub const G_IDTR_LIMIT: Global = 54;
pub const G_LDTR_SEL: Global = 55;
pub const G_LDTR_BASE: Global = 56;
pub const G_LDTR_LIMIT: Global = 57;
pub const G_LDTR_ATTR: Global = 58;
pub const G_TR_SEL: Global = 59;
pub const G_TR_BASE: Global = 60;
pub const G_TR_LIMIT: Global = 61;
pub const G_TR_ATTR: Global = 62;
/// Current privilege level (0..3).
pub const G_CPL: Global = 63;
/// IA32_KERNEL_GS_BASE (swapped by SWAPGS, which the platform implements).
pub const G_KERNEL_GS_BASE: Global = 64;
/// IA32_TSC_AUX (RDTSCP/RDPID).
pub const G_TSC_AUX: Global = 65;

// ---- floating point and SIMD state (see `crate::fp`) ----

/// XMM0..15: two slots each (low quadword first).
pub const G_XMM0: Global = 66;
pub const G_MXCSR: Global = 98;
/// x87 physical registers R0..R7: two slots each (significand, then sign|exponent in the
/// low 16 bits). ST(i) is R[(TOP + i) & 7]. MMi is the significand slot of Ri.
pub const G_FPR0: Global = 99;
/// x87 control word.
pub const G_FCW: Global = 115;
/// x87 status word, TOP included (bits 11..13).
pub const G_FSW: Global = 116;
/// Abridged tag word (FXSAVE form): bit i set = physical register i is not empty.
pub const G_FTW: Global = 117;
/// Last x87 opcode (11 bits), instruction pointer and operand pointer (with selectors).
pub const G_FOP: Global = 118;
pub const G_FIP: Global = 119;
pub const G_FCS: Global = 120;
pub const G_FDP: Global = 121;
pub const G_FDS: Global = 122;
/// XCR0 (XSETBV).
pub const G_XCR0: Global = 123;
/// Scratch for memory operands of FP/SIMD helpers (four slots).
pub const G_FPTMP: Global = 124;
/// Address-space id of CPL-3 code (0 or 1): selects one of two user TLBs, so a platform
/// that switches between two page-table bases for ring-3 code (a 64-bit PV guest's kernel
/// and user modes) keeps both translations cached instead of flushing on every switch.
pub const G_ASID: Global = 128;
/// First free global after the x86 state.
pub const G_X86_END: Global = 129;

/// The MMU mode (TLB) for the current state: 0 for CPL 0-2, 1 + ASID for CPL 3.
pub fn mmu_index(g: &[u64]) -> u32 {
    if g[G_CPL as usize] & 3 == 3 {
        1 + (g[G_ASID as usize] & 1) as u32
    } else {
        0
    }
}

/// Global of XMM register `i`'s low quadword (high quadword is the next slot).
pub const fn xmm_g(i: u32) -> Global {
    G_XMM0 + 2 * i as Global
}

/// Global of MMX register `i` (the significand of x87 physical register `i`).
pub const fn mmx_g(i: u32) -> Global {
    G_FPR0 + 2 * i as Global
}

/// Segment register index as used by the state slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Seg {
    Es = 0,
    Cs = 1,
    Ss = 2,
    Ds = 3,
    Fs = 4,
    Gs = 5,
}

impl Seg {
    pub const ALL: [Seg; 6] = [Seg::Es, Seg::Cs, Seg::Ss, Seg::Ds, Seg::Fs, Seg::Gs];
    pub fn sel_g(self) -> Global {
        G_SEG_SEL + self as Global
    }
    pub fn base_g(self) -> Global {
        G_SEG_BASE + self as Global
    }
    pub fn limit_g(self) -> Global {
        G_SEG_LIMIT + self as Global
    }
    pub fn attr_g(self) -> Global {
        G_SEG_ATTR + self as Global
    }
}

/// RFLAGS bits.
pub mod fl {
    pub const CF: u64 = 1 << 0;
    pub const FIXED1: u64 = 1 << 1;
    pub const PF: u64 = 1 << 2;
    pub const AF: u64 = 1 << 4;
    pub const ZF: u64 = 1 << 6;
    pub const SF: u64 = 1 << 7;
    pub const TF: u64 = 1 << 8;
    pub const IF: u64 = 1 << 9;
    pub const DF: u64 = 1 << 10;
    pub const OF: u64 = 1 << 11;
    pub const IOPL: u64 = 3 << 12;
    pub const NT: u64 = 1 << 14;
    pub const RF: u64 = 1 << 16;
    pub const VM: u64 = 1 << 17;
    pub const AC: u64 = 1 << 18;
    pub const VIF: u64 = 1 << 19;
    pub const VIP: u64 = 1 << 20;
    pub const ID: u64 = 1 << 21;
    /// The six arithmetic flags kept lazily.
    pub const ARITH: u64 = CF | PF | AF | ZF | SF | OF;
}

/// Segment attribute bits (in the G_SEG_ATTR encoding).
pub mod attr {
    pub const TYPE_MASK: u64 = 0xf;
    pub const ACCESSED: u64 = 1;
    pub const S: u64 = 1 << 4;
    pub const DPL_SHIFT: u32 = 5;
    pub const P: u64 = 1 << 7;
    pub const AVL: u64 = 1 << 8;
    pub const L: u64 = 1 << 9;
    pub const DB: u64 = 1 << 10;
    pub const G: u64 = 1 << 11;
}

pub mod cr0 {
    pub const PE: u64 = 1 << 0;
    pub const MP: u64 = 1 << 1;
    pub const EM: u64 = 1 << 2;
    pub const TS: u64 = 1 << 3;
    pub const WP: u64 = 1 << 16;
    pub const AM: u64 = 1 << 18;
    pub const PG: u64 = 1 << 31;
}

pub mod cr4 {
    pub const OSXMMEXCPT: u64 = 1 << 10;
    pub const OSXSAVE: u64 = 1 << 18;
    pub const PSE: u64 = 1 << 4;
    pub const PAE: u64 = 1 << 5;
    pub const PGE: u64 = 1 << 7;
    pub const OSFXSR: u64 = 1 << 9;
    pub const UMIP: u64 = 1 << 11;
    pub const FSGSBASE: u64 = 1 << 16;
    pub const SMEP: u64 = 1 << 20;
    pub const SMAP: u64 = 1 << 21;
}

pub mod efer {
    pub const SCE: u64 = 1 << 0;
    pub const LME: u64 = 1 << 8;
    pub const LMA: u64 = 1 << 10;
    pub const NXE: u64 = 1 << 11;
}

/// Translation-block flags: everything besides the code bytes that changes how code is
/// translated. Part of every TB key.
pub mod tbf {
    /// 64-bit code segment (long mode, CS.L).
    pub const CODE64: u32 = 1 << 0;
    /// 32-bit default operand/address size (CS.D) outside 64-bit mode.
    pub const CODE32: u32 = 1 << 1;
    /// 32-bit stack (SS.B) outside 64-bit mode.
    pub const SS32: u32 = 1 << 2;
    pub const CPL_SHIFT: u32 = 3;
    pub const CPL_MASK: u32 = 3 << CPL_SHIFT;
    /// Outside 64-bit mode, some of DS/ES/SS has a non-zero base (addresses need it added).
    pub const ADDSEG: u32 = 1 << 5;
    /// Long mode is active (EFER.LMA): compatibility mode when CODE64 is clear.
    pub const LMA: u32 = 1 << 6;
    /// The MMU mode used by the block's accesses (1 = user, CPL 3).
    pub const MMU_USER: u32 = 1 << 7;
    /// RFLAGS.DF: string instructions step downwards. Instructions that change DF end the
    /// block, so string steps are translation-time constants.
    pub const DF: u32 = 1 << 8;
    /// CR0.TS: x87/MMX/SSE instructions raise #NM (WAIT/FWAIT too when CR0.MP).
    pub const TS: u32 = 1 << 9;
    /// CR0.EM: x87/MMX raise #NM, SSE raises #UD.
    pub const EM: u32 = 1 << 10;
    /// CR4.OSFXSR: SSE instructions are enabled (#UD otherwise).
    pub const OSFXSR: u32 = 1 << 11;
    /// CR0.MP (WAIT/FWAIT honours TS).
    pub const MP: u32 = 1 << 12;
    /// CR4.OSXSAVE: XGETBV/XSAVE* are enabled.
    pub const OSXSAVE: u32 = 1 << 13;
    /// G_ASID = 1 (the second user TLB).
    pub const ASID: u32 = 1 << 14;
    /// MXCSR's control bits are the power-on 0x1F80 (round to nearest, every exception
    /// masked, no FTZ/DAZ): SSE arithmetic may run as the host's instruction
    /// (`jit::ir::Inline::Sse`). LDMXCSR, FXRSTOR and XRSTOR end the block.
    pub const MXCSR_HOST: u32 = 1 << 15;
}

/// Lazy-flags operation kinds; `CC_OP = kind * 4 + size index` (0: 8, 1: 16, 2: 32, 3: 64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CcKind {
    /// Flags are in RFLAGS.
    Eflags = 0,
    /// DST = result, SRC = second operand.
    Add,
    /// DST = result, SRC = second operand, SRC2 = carry in.
    Adc,
    /// DST = result, SRC = second operand.
    Sub,
    /// DST = result, SRC = second operand, SRC2 = borrow in.
    Sbb,
    /// DST = result; CF = OF = 0.
    Logic,
    /// DST = result, SRC = preserved CF.
    Inc,
    /// DST = result, SRC = preserved CF.
    Dec,
    /// DST = result, SRC = operand shifted by count-1 (CF = its top bit).
    Shl,
    /// DST = result, SRC = operand shifted by count-1 (CF = its bit 0; OF = its top bit).
    Shr,
    /// DST = result, SRC = operand shifted by count-1 (CF = its bit 0; OF = 0).
    Sar,
    /// DST = low result, SRC = non-zero when the result overflowed (CF = OF).
    Mul,
    /// BLSI: DST = result, SRC = source (CF = source != 0).
    Blsi,
    /// BLSMSK/BLSR: DST = result, SRC = source (CF = source == 0).
    Blsr,
    /// TZCNT/LZCNT: DST = result, SRC = source (CF = source == 0, ZF = result == 0).
    Cnt,
    /// ROL by a non-zero count: DST = result (CF = its bit 0, OF = its top bit ^ CF), the
    /// other four flags those of the operation before, whose CC_OP is kept in bits 8.. of
    /// this CC_OP, its DST in SRC and its SRC in SRC2 (so that operation is never
    /// ADC/SBB, which read SRC2, nor another rotate).
    Rol,
    /// ROR by a non-zero count: as `Rol`, CF = the result's top bit, OF = its two top
    /// bits' XOR.
    Ror,
}

pub const CC_KINDS: usize = 17;

/// The kind of a CC_OP value (`Rol`/`Ror` keep the previous operation above bit 8).
pub fn cc_kind(op: u64) -> u64 {
    (op & 0xff) / 4
}

pub fn size_index(bytes: u32) -> u64 {
    match bytes {
        1 => 0,
        2 => 1,
        4 => 2,
        _ => 3,
    }
}

pub fn cc_op(kind: CcKind, bytes: u32) -> u64 {
    kind as u64 * 4 + size_index(bytes)
}

/// Named access to x86 state in an `Env`, for the platform and tests.
pub struct X86State<'a>(pub &'a mut Env);

impl X86State<'_> {
    pub fn gpr(&self, i: usize) -> u64 {
        self.0.g[G_GPR0 as usize + i]
    }
    pub fn set_gpr(&mut self, i: usize, v: u64) {
        self.0.g[G_GPR0 as usize + i] = v;
    }
    pub fn rip(&self) -> u64 {
        self.0.g[G_RIP as usize]
    }
    pub fn set_rip(&mut self, v: u64) {
        self.0.g[G_RIP as usize] = v;
    }
    /// The full RFLAGS value (arithmetic flags computed from the lazy state).
    pub fn rflags(&self) -> u64 {
        crate::flags::read_rflags(&self.0.g)
    }
    /// Set RFLAGS (the lazy state becomes "flags in RFLAGS").
    pub fn set_rflags(&mut self, v: u64) {
        self.0.g[G_RFLAGS as usize] = (v & !(fl::VM)) | fl::FIXED1;
        self.0.g[G_CC_OP as usize] = CcKind::Eflags as u64 * 4;
    }
    pub fn g(&self, g: Global) -> u64 {
        self.0.g[g as usize]
    }
    pub fn set_g(&mut self, g: Global, v: u64) {
        self.0.g[g as usize] = v;
    }
    /// Load a segment register's hidden state directly (no checks: the platform's job).
    pub fn set_seg(&mut self, s: Seg, sel: u16, base: u64, limit: u32, attr: u64) {
        self.0.g[s.sel_g() as usize] = sel as u64;
        self.0.g[s.base_g() as usize] = base;
        self.0.g[s.limit_g() as usize] = limit as u64;
        self.0.g[s.attr_g() as usize] = attr;
    }
    pub fn seg_sel(&self, s: Seg) -> u16 {
        self.0.g[s.sel_g() as usize] as u16
    }
    pub fn cpl(&self) -> u8 {
        self.0.g[G_CPL as usize] as u8
    }
    /// Set the CPL and the MMU mode that follows from it.
    pub fn set_cpl(&mut self, cpl: u8) {
        self.0.g[G_CPL as usize] = cpl as u64 & 3;
        self.0.mmu_idx = mmu_index(&self.0.g);
    }
    /// Select the address-space id of ring-3 code (see [`G_ASID`]); the caller keeps each
    /// id's TLB consistent with the page tables it stands for.
    pub fn set_asid(&mut self, asid: u64) {
        self.0.g[G_ASID as usize] = asid & 1;
        self.0.mmu_idx = mmu_index(&self.0.g);
    }
}
