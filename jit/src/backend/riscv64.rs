//! riscv64 (RV64GC) host backend (dynasmrt, `.arch riscv64`).
//!
//! Structure mirrors the x86_64 backend ([`super::x64`]): each block is assembled into a
//! `VecAssembler` whose base address is where the bytes will land in the [`ExecMem`] region,
//! then copied there (the copy flushes the instruction cache, see
//! [`crate::execmem::flush_icache`]); code never moves afterwards.
//!
//! # ISA
//! Only RV64GC is assumed (I, M; no Zba/Zbb/Zbs/Zicond, and no compressed instructions are
//! emitted). Consequences:
//! - `W32` ops: RV64's `*w` instructions sign-extend their 32-bit result; the IR wants it
//!   zero-extended, so such results get `slli 32; srli 32` (skipped where the result is
//!   known to be zero-extended already, e.g. `srliw` by a non-zero count, `andi` with a
//!   non-negative mask).
//! - Shift counts: `sll/srl/sra` use the low 6 bits of the count and `sllw/srlw/sraw` the
//!   low 5 bits, exactly the IR's "count modulo width". Rotates are `sll | srl` by `-count`.
//! - `Clz/Ctz/Popcnt/Bswap` are base-ISA sequences (SWAR popcount with a multiply; clz by
//!   smearing the highest bit right and counting the zeros; ctz as `popcnt((x - 1) & !x)`;
//!   bswap by swapping bytes, halfwords and words with masks).
//! - `MulHU/MulHS` are `mulhu/mulh`; their `W32` forms multiply the zero/sign-extended
//!   inputs in 64 bits and keep bits 32..63.
//! - `Select` computes the condition into a scratch register and moves one operand over a
//!   short branch (no conditional move without Zicond).
//! - Constants: `lui/addi(w)/slli` sequences of at most 3 instructions, otherwise an
//!   `auipc+ld` from a per-block literal pool placed after the block's code.
//!
//! # Frame and registers
//! [`execute`](Backend::execute) calls a trampoline generated once at the start of the
//! region (`extern "C" fn(env, code) -> u64`): it saves `ra` and `s0..s11`, reserves a fixed
//! frame of `FRAME_BYTES` (keeping `sp` 16-byte aligned), sets up the base registers and
//! jumps to the block. Every exit that returns to the run loop jumps to the shared epilogue
//! with the result in `a0`. Chained blocks run in the same frame:
//!
//! ```text
//! [sp + 0 .. 48)       save area for the caller-saved temp registers around calls
//! [sp + 48 .. )        spill slots of the block's temps
//! ```
//! A block with more spill slots than the fixed frame holds grows it by `extra` bytes on
//! entry and gives them back before every exit. Frame offsets past 2047 (the reach of a
//! 12-bit load/store offset) are addressed with `lui+add`.
//!
//! - `s0` = `Env*`; globals `g[i]` are at `8*i <= 2040`, inside the 12-bit reach.
//! - `s1` = `&env.tlb[0]`: `Env` fields past offset 2047 (`icount`, `icount_limit`, `fault`,
//!   `cur_tb`) are at small negative offsets from it, and the TLB probe indexes from it.
//! - `s2` = chain slot array + 2048 (the first 512 slots are one `ld` away).
//! - Temps live in `s3..s11` (callee-saved) and `a5..a7, t4..t6` (caller-saved; saved
//!   around helper calls and inside the out-of-line softmmu slow paths only when a temp in
//!   them is live across the call), or in spill slots. `t0..t3` and `a0..a4` are scratch
//!   within one op (`a0..a4` also carry call arguments, so argument set-up never has to
//!   untangle a parallel move). `t3` is reserved for far jumps and large frame offsets.
//!
//! # Register allocation
//! The host-independent linear-scan allocator in [`super::regalloc`], given `POOL`.
//!
//! # Branch ranges
//! Conditional branches reach ±4 KiB and `jal` ±1 MiB (dynasmrt 5.1 only accepts half of
//! that: ±2 KiB and ±512 KiB, see `B_REACH`). Branches whose target may be far
//! (IR labels, the out-of-line slow paths and fault exits at the end of the block, the
//! shared return code) are relaxed per branch: a block is first assembled with short
//! branches; each such branch's distance is then checked against the resolved labels, and
//! those out of range are re-emitted as an inverted short branch over a `jal`, or
//! over `auipc+jalr` (±2 GiB), and the block is assembled again until every branch fits.
//! Jumps to the shared epilogue and chain targets go through `auipc+jalr` or a register.
//!
//! # Exits and chaining
//! As on x86_64: every chainable exit (`Exit::Jump`, `Exit::Repeat`) loads its slot from an
//! RW, non-executable array (`ld t0, slot(s2); jr t0`); the slot initially holds the address
//! of the code right after (`return EXIT|index`). [`chain`](Backend::chain) stores the
//! target's entry address in the slot, [`unchain`](Backend::unchain) restores the default.
//! No code is ever patched, so chaining needs no icache maintenance. `Exit::Indirect`
//! probes `Env::jc` like the x86_64 backend.
//!
//! # Memory accesses
//! The inline TLB probe is the interpreter's `tlb_probe`: index from the first byte, tag
//! compared with the page of the last byte (so page-crossing accesses take the slow path),
//! the write tag for stores and `rmw` loads, table `env.tlb[block.mmu_idx]`. A hit accesses
//! host memory with a plain load/store, which may be misaligned when the guest access is:
//! RV64 Linux supports misaligned scalar accesses, but on hardware without native support
//! they trap and are emulated by the kernel (correct, slow). `AccessKind::System` always
//! calls the slow path.

// dynasm expands dynamic registers `X(r)` and immediates to conversions and casts clippy
// flags for u8/u32/i32 operands.
#![allow(clippy::useless_conversion, clippy::unnecessary_cast)]

use std::collections::HashMap;

use dynasmrt::riscv::RiscvRelocation;
use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi, VecAssembler};

use super::codecache::CodeCache;
use super::regalloc::{regalloc, Loc, RegPool};
use super::{Backend, CodeBufferFull, CodeHandle};
use crate::engine::{mem_info, ret, slow_load, slow_store, MEM_INFO_RMW};
use crate::env::{
    Env, JC_BITS, JC_ENTRIES, OFF_CUR_TB, OFF_FAULT, OFF_ICOUNT, OFF_ICOUNT_LIMIT, OFF_JC,
    OFF_JC_EPOCH, OFF_TLB, PAGE_BITS, TLB_BITS, TLB_FOLD, TLB_SIZE,
};
use crate::execmem::DEFAULT_CODE_SIZE;
use crate::ir::{
    AccessKind, BinOp, Block, Cond, Exit, Global, HelperInfo, MemOp, MemSize, Op, SyncList, Temp,
    UnOp, Val, Width,
};

type Asm = VecAssembler<RiscvRelocation>;

/// Assemble into an assembler expression.
macro_rules! rv {
    ($a:expr; $($t:tt)*) => {
        dynasm!($a ; .arch riscv64 ; .feature gc ; $($t)*)
    };
}

/// Assemble into `$g.a`.
macro_rules! asm {
    ($g:expr; $($t:tt)*) => {
        rv!($g.a; $($t)*)
    };
}

const ZERO: u8 = 0;
const RA: u8 = 1;
const SP: u8 = 2;
const T0: u8 = 5;
const T1: u8 = 6;
const T2: u8 = 7;
const S0: u8 = 8;
const S1: u8 = 9;
const A0: u8 = 10;
const A1: u8 = 11;
const A2: u8 = 12;
const A3: u8 = 13;
const A4: u8 = 14;
const A5: u8 = 15;
const A6: u8 = 16;
const A7: u8 = 17;
const S2: u8 = 18;
const S3: u8 = 19;
const S4: u8 = 20;
const S5: u8 = 21;
const S6: u8 = 22;
const S7: u8 = 23;
const S8: u8 = 24;
const S9: u8 = 25;
const S10: u8 = 26;
const S11: u8 = 27;
const T3: u8 = 28;
const T4: u8 = 29;
const T5: u8 = 30;
const T6: u8 = 31;

/// `Env*`.
const ENV: u8 = S0;
/// `&env.tlb[0]`, the base for Env fields past the 12-bit reach.
const TLBB: u8 = S1;
/// Chain slot array + `SLOT_BIAS`.
const SLOTB: u8 = S2;

/// Temp registers preserved by calls.
const CALLEE_POOL: [u8; 9] = [S3, S4, S5, S6, S7, S8, S9, S10, S11];
/// Temp registers clobbered by calls (saved around them when live). Bit k of a
/// [`caller_live`](super::regalloc::Alloc::caller_live) mask is `CALLER_POOL[k]`, saved at
/// `[sp + 8*k]`.
const CALLER_POOL: [u8; 6] = [A5, A6, A7, T4, T5, T6];
/// Frame slots at the bottom of the frame that save the caller-saved pool around calls.
const SAVE_SLOTS: usize = CALLER_POOL.len();

/// Registers the trampoline saves: `ra`, `s0..s11`.
const SAVED: [u8; 13] = [RA, S0, S1, S2, S3, S4, S5, S6, S7, S8, S9, S10, S11];
/// Bytes for them, rounded to 16.
const SAVED_BYTES: i32 = ((SAVED.len() as i32 * 8) + 15) & !15;
/// Fixed frame reserved by the trampoline (every offset inside it fits a 12-bit immediate).
const FRAME_BYTES: i32 = 2032;
const _: () = assert!(FRAME_BYTES % 16 == 0 && SAVED_BYTES % 16 == 0 && FRAME_BYTES <= 2048);

/// What the shared register allocator may use; spill slots follow the save area.
const POOL: RegPool = RegPool {
    callee_saved: &CALLEE_POOL,
    caller_saved: &CALLER_POOL,
    spill_base: 8 * SAVE_SLOTS as i32,
};

/// `s2` points this many bytes into the slot array, so that 512 slots are one `ld` away.
const SLOT_BIAS: i64 = 2048;

const TLB_ENTRY_BYTES: usize = std::mem::size_of::<crate::env::TlbEntry>();
const _: () = assert!(TLB_ENTRY_BYTES == 32);

/// Env fields relative to `TLBB`.
const ICOUNT_T: i32 = OFF_ICOUNT as i32 - OFF_TLB as i32;
/// The jump cache's epoch, just below the TLB.
const JC_EPOCH_T: i32 = OFF_JC_EPOCH as i32 - OFF_TLB as i32;
const ICOUNT_LIMIT_T: i32 = OFF_ICOUNT_LIMIT as i32 - OFF_TLB as i32;
const FAULT_T: i32 = OFF_FAULT as i32 - OFF_TLB as i32;
const CUR_TB_T: i32 = OFF_CUR_TB as i32 - OFF_TLB as i32;
const fn fits12(v: i64) -> bool {
    v >= -2048 && v <= 2047
}
const _: () = assert!(
    fits12(ICOUNT_T as i64)
        && fits12(ICOUNT_LIMIT_T as i64)
        && fits12(FAULT_T as i64)
        && fits12(CUR_TB_T as i64)
);
const _: () = assert!(std::mem::size_of::<crate::env::JcEntry>() == 32);
/// Guest globals must be within the 12-bit reach of `ENV`.
const _: () = assert!(crate::env::NGLOBALS * 8 <= 2048);

/// Conditional branch reach (bytes, either way) and `jal` reach, as dynasmrt 5.1 checks
/// them: its relocation range check treats the 13-bit (B) and 21-bit (J) byte offsets as
/// 12 and 20 bits, so only half the architectural reach (±2 KiB, ±512 KiB) is usable.
const B_REACH: i64 = 1 << 11;
const J_REACH: i64 = 1 << 19;

// ---------------------------------------------------------------------------------------
// Constants

#[derive(Clone, Copy, Debug)]
enum LiStep {
    /// `addi r, zero, imm`
    Addi0(i32),
    /// `lui r, imm` (imm has its low 12 bits clear)
    Lui(i32),
    /// `addiw r, r, imm`
    Addiw(i32),
    /// `slli r, r, sh`
    Slli(u32),
    /// `addi r, r, imm`
    Addi(i32),
}

/// A short instruction sequence building a 64-bit constant.
struct LiSeq {
    s: [LiStep; 12],
    n: usize,
}

impl LiSeq {
    fn of(v: u64) -> LiSeq {
        let mut q = LiSeq {
            s: [LiStep::Addi0(0); 12],
            n: 0,
        };
        q.build(v as i64);
        q
    }
    fn push(&mut self, s: LiStep) {
        self.s[self.n] = s;
        self.n += 1;
    }
    /// LLVM's `RISCVMatInt` base algorithm: 12-bit, 32-bit (`lui+addiw`), else the
    /// constant without its low 12 bits (and trailing zeros) recursively, a shift and an add.
    fn build(&mut self, v: i64) {
        if fits12(v) {
            self.push(LiStep::Addi0(v as i32));
            return;
        }
        if v == v as i32 as i64 {
            let hi20 = (v.wrapping_add(0x800) >> 12) & 0xfffff;
            let lo12 = (v << 52) >> 52;
            self.push(LiStep::Lui(((hi20 << 12) as u32) as i32));
            if lo12 != 0 {
                self.push(LiStep::Addiw(lo12 as i32));
            }
            return;
        }
        let lo12 = (v << 52) >> 52;
        let hi52 = (v as u64).wrapping_add(0x800) >> 12;
        let tz = hi52.trailing_zeros();
        let shift = 12 + tz;
        let bits = 64 - shift;
        let hi = (((hi52 >> tz) << (64 - bits)) as i64) >> (64 - bits);
        self.build(hi);
        self.push(LiStep::Slli(shift));
        if lo12 != 0 {
            self.push(LiStep::Addi(lo12 as i32));
        }
    }
    fn len(&self) -> usize {
        self.n
    }
    fn emit(&self, a: &mut Asm, r: u8) {
        for s in &self.s[..self.n] {
            match *s {
                LiStep::Addi0(i) => rv!(a; addi X(r), zero, i),
                LiStep::Lui(i) => rv!(a; lui X(r), i),
                LiStep::Addiw(i) => rv!(a; addiw X(r), X(r), i),
                LiStep::Slli(sh) => rv!(a; slli X(r), X(r), sh),
                LiStep::Addi(i) => rv!(a; addi X(r), X(r), i),
            }
        }
    }
}

/// `r = v` without a literal pool.
fn li_raw(a: &mut Asm, r: u8, v: u64) {
    LiSeq::of(v).emit(a, r);
}

/// `hi` and `lo` with `hi + lo == off`, `lo` a 12-bit immediate and `hi` a `lui` operand.
fn split_off(off: i64) -> (i32, i32) {
    let lo = (off << 52) >> 52;
    let hi = off - lo;
    assert!(hi == hi as i32 as i64, "offset out of range");
    (hi as i32, lo as i32)
}

// ---------------------------------------------------------------------------------------
// The backend

pub struct Rv64Backend {
    /// Code region, chain slots and the TB table.
    cc: CodeCache,
    epilogue: usize,
}

impl Rv64Backend {
    pub fn new() -> Rv64Backend {
        Self::with_code_size(DEFAULT_CODE_SIZE)
    }

    fn with_code_size(size: usize) -> Rv64Backend {
        let mut b = Rv64Backend {
            cc: CodeCache::new(size, "riscv64"),
            epilogue: 0,
        };
        b.emit_trampoline();
        b
    }

    /// The entry trampoline `extern "C" fn(env, code) -> u64` and the shared epilogue.
    fn emit_trampoline(&mut self) {
        let base = self.cc.mem.next_addr();
        let mut a = Asm::new(base);
        rv!(a; addi sp, sp, -SAVED_BYTES);
        for (k, &r) in SAVED.iter().enumerate() {
            let o = 8 * k as i32;
            rv!(a; sd X(r), [sp, o]);
        }
        rv!(a; addi sp, sp, -FRAME_BYTES ; mv X(ENV), a0);
        li_raw(&mut a, T0, OFF_TLB as u64);
        rv!(a; add X(TLBB), a0, t0);
        li_raw(&mut a, SLOTB, (self.cc.slots as i64 + SLOT_BIAS) as u64);
        rv!(a; jr a1);
        let epi = a.offset().0;
        rv!(a; addi sp, sp, FRAME_BYTES);
        for (k, &r) in SAVED.iter().enumerate() {
            let o = 8 * k as i32;
            rv!(a; ld X(r), [sp, o]);
        }
        rv!(a; addi sp, sp, SAVED_BYTES ; ret);
        let code = a.finalize().expect("trampoline");
        let p = self
            .cc
            .mem
            .write(&code)
            .expect("code region too small for the trampoline");
        self.cc.prologue = p as usize;
        self.epilogue = p as usize + epi;
    }
}

impl Default for Rv64Backend {
    fn default() -> Self {
        Self::new()
    }
}

impl Backend for Rv64Backend {
    fn name(&self) -> &'static str {
        "riscv64"
    }

    fn compile(
        &mut self,
        block: &Block,
        tb: u32,
        helpers: &[HelperInfo],
        pc_global: Global,
    ) -> Result<CodeHandle, CodeBufferFull> {
        let njumps = block
            .ops
            .iter()
            .filter(|o| matches!(o, Op::Exit(Exit::Jump { .. } | Exit::Repeat { .. })))
            .count();
        let slot_base = self.cc.reserve_slots(njumps)?;
        let base = self.cc.mem.next_addr();
        let alloc = regalloc(block, &POOL);
        let ninsns = block
            .ops
            .iter()
            .filter(|o| matches!(o, Op::InsnStart { .. }))
            .count()
            .max(1);
        let need = ((SAVE_SLOTS + alloc.nspill) * 8) as i32;
        let extra = if need > FRAME_BYTES {
            (need - FRAME_BYTES + 15) & !15
        } else {
            0
        };
        // Branch relaxation: assemble, widen the branches that do not reach, repeat.
        let mut br_mode: Vec<u8> = Vec::new();
        let mut attempt = 0;
        let (code, defaults) = loop {
            attempt += 1;
            let mut g = Gen {
                a: Asm::new(base),
                tb,
                helpers,
                pc_global,
                mmu_idx: block.mmu_idx,
                mode: block.mode,
                loc: &alloc.loc,
                caller_live: &alloc.caller_live,
                extra,
                labels: Vec::new(),
                fault_labels: vec![None; ninsns],
                stubs: Vec::new(),
                epilogue: self.epilogue,
                next_slot: slot_base,
                exit_defaults: Vec::new(),
                pool: HashMap::new(),
                pool_order: Vec::new(),
                ret_tail: None,
                ret_noframe: None,
                br_mode: std::mem::take(&mut br_mode),
                br_seq: 0,
                br_checks: Vec::new(),
            };
            g.labels = (0..block.nlabels)
                .map(|_| g.a.new_dynamic_label())
                .collect();
            g.emit_block(block);
            let mut widened = false;
            for &(k, off, l, reach) in &g.br_checks {
                let target =
                    g.a.labels()
                        .resolve_dynamic(l)
                        .expect("riscv64 backend: unplaced label")
                        .0 as i64;
                let d = target - off as i64;
                if d < -reach || d >= reach {
                    g.br_mode[k] += 1;
                    widened = true;
                }
            }
            if widened {
                // Widening moves code, which may push other branches out of reach; a few
                // rounds settle it. Should it not, give up on short forms altogether (the
                // widest form reaches anywhere in the code region).
                br_mode = g.br_mode;
                if attempt >= 6 {
                    br_mode.iter_mut().for_each(|m| *m = 2);
                }
                continue;
            }
            g.a.commit().expect("riscv64 backend: bad labels in block");
            let defaults: Vec<Option<(usize, usize)>> = g
                .exit_defaults
                .iter()
                .map(|e| {
                    e.map(|(slot, l)| {
                        (
                            slot,
                            base + g.a.labels().resolve_dynamic(l).expect("exit label").0,
                        )
                    })
                })
                .collect();
            break (
                g.a.finalize().expect("riscv64 backend: assembly failed"),
                defaults,
            );
        };
        self.cc.install(
            tb,
            block.insn_pcs.first().copied().unwrap_or(0),
            &code,
            base,
            slot_base + njumps,
            defaults,
        )
    }

    unsafe fn execute(&mut self, env: *mut Env, code: CodeHandle) -> u64 {
        // SAFETY: `cc.prologue` is the trampoline written by `emit_trampoline`, which
        // follows the host C ABI; the env contract is the caller's (Backend::execute).
        unsafe { self.cc.execute(env, code) }
    }

    fn chain(&mut self, from: CodeHandle, exit: u32, to: CodeHandle) -> bool {
        self.cc.chain(from, exit, to)
    }

    fn unchain(&mut self, from: CodeHandle, exit: u32) {
        self.cc.unchain(from, exit)
    }

    fn entry_addr(&self, code: CodeHandle) -> Option<u64> {
        self.cc.entry_addr(code)
    }

    fn flush(&mut self) {
        self.cc.reset();
        self.emit_trampoline();
    }

    fn is_full(&self) -> bool {
        self.cc.is_full()
    }
}

// ---------------------------------------------------------------------------------------
// Code generation

/// RISC-V branch conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bc {
    Eq,
    Ne,
    Lt,
    Ge,
    Ltu,
    Geu,
}

impl Bc {
    fn inv(self) -> Bc {
        match self {
            Bc::Eq => Bc::Ne,
            Bc::Ne => Bc::Eq,
            Bc::Lt => Bc::Ge,
            Bc::Ge => Bc::Lt,
            Bc::Ltu => Bc::Geu,
            Bc::Geu => Bc::Ltu,
        }
    }
    /// The branch for an IR comparison (not `TstZ/TstNz`) and whether to swap the operands.
    fn of(c: Cond) -> (Bc, bool) {
        match c {
            Cond::Eq => (Bc::Eq, false),
            Cond::Ne => (Bc::Ne, false),
            Cond::LtU => (Bc::Ltu, false),
            Cond::GeU => (Bc::Geu, false),
            Cond::GtU => (Bc::Ltu, true),
            Cond::LeU => (Bc::Geu, true),
            Cond::LtS => (Bc::Lt, false),
            Cond::GeS => (Bc::Ge, false),
            Cond::GtS => (Bc::Lt, true),
            Cond::LeS => (Bc::Ge, true),
            Cond::TstZ | Cond::TstNz => unreachable!("test conditions have no direct branch"),
        }
    }
}

/// How a condition value computed into a register reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sense {
    /// 0/1, 1 when the condition holds.
    Bool,
    /// 0/1, 1 when the condition does not hold.
    BoolInv,
    /// Non-zero when the condition holds.
    Nz,
    /// Zero when the condition holds.
    Z,
}

impl Sense {
    /// Does a non-zero value mean the condition holds?
    fn true_if_nz(self) -> bool {
        matches!(self, Sense::Bool | Sense::Nz)
    }
}

/// Out-of-line softmmu slow path, emitted after the block's main path.
struct SlowStub {
    label: DynamicLabel,
    back: DynamicLabel,
    store: bool,
    addr: Loc,
    val: Option<Val>,
    dst: Option<Loc>,
    info: u64,
    save: u32,
    insn: u32,
}

struct Gen<'a> {
    a: Asm,
    tb: u32,
    helpers: &'a [HelperInfo],
    pc_global: Global,
    mmu_idx: u32,
    mode: u64,
    loc: &'a [Loc],
    caller_live: &'a [u32],
    extra: i32,
    labels: Vec<DynamicLabel>,
    fault_labels: Vec<Option<DynamicLabel>>,
    stubs: Vec<SlowStub>,
    epilogue: usize,
    next_slot: usize,
    /// Per static exit: (slot, label of the default return code) for jumps.
    exit_defaults: Vec<Option<(usize, DynamicLabel)>>,
    /// Literal pool: constant -> label.
    pool: HashMap<u64, DynamicLabel>,
    pool_order: Vec<(u64, DynamicLabel)>,
    /// `a0 = idx<<8|kind` here: leave the frame and return to the run loop.
    ret_tail: Option<DynamicLabel>,
    /// Same with the frame already left.
    ret_noframe: Option<DynamicLabel>,
    /// Per far-capable branch (in emission order): 0 short, 1 over a `jal`, 2 over
    /// `auipc+jalr` (for unconditional jumps: 0 `jal`, 1+ `auipc+jalr`).
    br_mode: Vec<u8>,
    br_seq: usize,
    /// (branch number, offset of the instruction, target, reach) for range checking.
    br_checks: Vec<(usize, usize, DynamicLabel, i64)>,
}

fn gofs(g: Global) -> i32 {
    8 * g as i32
}

/// The constant as the instruction sees it for a `w`-wide op, if it fits a 12-bit immediate.
fn imm_w(c: u64, w: Width) -> Option<i32> {
    let v = match w {
        Width::W64 => c as i64,
        Width::W32 => c as u32 as i32 as i64,
    };
    fits12(v).then_some(v as i32)
}

impl Gen<'_> {
    // ----- operands -------------------------------------------------------------------

    fn tloc(&self, t: Temp) -> Loc {
        self.loc[t.idx()]
    }

    /// The register holding temp `t`, loading a spilled one into `scratch`.
    fn rd_temp(&mut self, t: Temp, scratch: u8) -> u8 {
        match self.tloc(t) {
            Loc::R(r) => r,
            Loc::S(o) => {
                self.ld_sp(scratch, o);
                scratch
            }
        }
    }

    /// A register holding `v` (`zero` for 0, else `scratch` for constants and spills).
    fn rd_val(&mut self, v: Val, scratch: u8) -> u8 {
        match v {
            Val::T(t) => self.rd_temp(t, scratch),
            Val::C(0) => ZERO,
            Val::C(c) => {
                self.li(scratch, c);
                scratch
            }
        }
    }

    /// `r = v`.
    fn mov_val(&mut self, r: u8, v: Val) {
        match v {
            Val::T(t) => self.mov_loc(r, self.tloc(t)),
            Val::C(c) => self.li(r, c),
        }
    }

    /// `r = l`.
    fn mov_loc(&mut self, r: u8, l: Loc) {
        match l {
            Loc::R(s) => self.mv(r, s),
            Loc::S(o) => self.ld_sp(r, o),
        }
    }

    fn mv(&mut self, r: u8, s: u8) {
        if r != s {
            asm!(self; mv X(r), X(s));
        }
    }

    /// The register an op computes its result in: the destination's, or `t2`.
    fn work(&self, d: Loc) -> u8 {
        match d {
            Loc::R(r) => r,
            Loc::S(_) => T2,
        }
    }

    /// Move register `r` into `d`.
    fn put(&mut self, d: Loc, r: u8) {
        match d {
            Loc::R(x) => self.mv(x, r),
            Loc::S(o) => self.sd_sp(r, o),
        }
    }

    /// `r = [sp + off]`.
    fn ld_sp(&mut self, r: u8, off: i32) {
        if fits12(off as i64) {
            asm!(self; ld X(r), [sp, off]);
        } else {
            let (hi, lo) = split_off(off as i64);
            asm!(self; lui X(r), hi ; add X(r), X(r), sp ; ld X(r), [X(r), lo]);
        }
    }

    /// `[sp + off] = r` (uses `t3` for large offsets).
    fn sd_sp(&mut self, r: u8, off: i32) {
        if fits12(off as i64) {
            asm!(self; sd X(r), [sp, off]);
        } else {
            debug_assert_ne!(r, T3);
            let (hi, lo) = split_off(off as i64);
            asm!(self; lui t3, hi ; add t3, t3, sp ; sd X(r), [t3, lo]);
        }
    }

    /// `r = v`: a short sequence, or a load from the literal pool.
    fn li(&mut self, r: u8, v: u64) {
        let q = LiSeq::of(v);
        if q.len() <= 3 {
            q.emit(&mut self.a, r);
        } else {
            let l = match self.pool.get(&v) {
                Some(&l) => l,
                None => {
                    let l = self.a.new_dynamic_label();
                    self.pool.insert(v, l);
                    self.pool_order.push((v, l));
                    l
                }
            };
            asm!(self; ld X(r), =>l);
        }
    }

    /// `rd = rs + imm` for any imm (`tmp` is used when it does not fit 12 bits).
    fn add_imm(&mut self, rd: u8, rs: u8, imm: i64, tmp: u8) {
        if fits12(imm) {
            let i = imm as i32;
            asm!(self; addi X(rd), X(rs), i);
        } else {
            self.li(tmp, imm as u64);
            asm!(self; add X(rd), X(rs), X(tmp));
        }
    }

    /// `r = zext32(s)`.
    fn zext32(&mut self, r: u8, s: u8) {
        asm!(self; slli X(r), X(s), 32 ; srli X(r), X(r), 32);
    }

    // ----- branches -------------------------------------------------------------------

    fn new_label(&mut self) -> DynamicLabel {
        self.a.new_dynamic_label()
    }

    /// A short conditional branch (only for targets known to be close).
    fn bc_short(&mut self, bc: Bc, x: u8, y: u8, l: DynamicLabel) {
        match bc {
            Bc::Eq => asm!(self; beq X(x), X(y), =>l),
            Bc::Ne => asm!(self; bne X(x), X(y), =>l),
            Bc::Lt => asm!(self; blt X(x), X(y), =>l),
            Bc::Ge => asm!(self; bge X(x), X(y), =>l),
            Bc::Ltu => asm!(self; bltu X(x), X(y), =>l),
            Bc::Geu => asm!(self; bgeu X(x), X(y), =>l),
        }
    }

    fn next_branch(&mut self) -> (usize, u8) {
        let k = self.br_seq;
        self.br_seq += 1;
        if self.br_mode.len() <= k {
            self.br_mode.resize(k + 1, 0);
        }
        (k, self.br_mode[k])
    }

    /// A conditional branch to a label that may be far (relaxed, see the module doc).
    fn bc_far(&mut self, bc: Bc, x: u8, y: u8, l: DynamicLabel) {
        let (k, mode) = self.next_branch();
        match mode {
            0 => {
                let off = self.a.offset().0;
                self.br_checks.push((k, off, l, B_REACH));
                self.bc_short(bc, x, y, l);
            }
            1 => {
                let skip = self.new_label();
                self.bc_short(bc.inv(), x, y, skip);
                let off = self.a.offset().0;
                self.br_checks.push((k, off, l, J_REACH));
                asm!(self; j =>l ; =>skip);
            }
            _ => {
                let skip = self.new_label();
                self.bc_short(bc.inv(), x, y, skip);
                asm!(self; jump =>l, t3 ; =>skip);
            }
        }
    }

    /// An unconditional jump to a label that may be far.
    fn jmp_far(&mut self, l: DynamicLabel) {
        let (k, mode) = self.next_branch();
        if mode == 0 {
            let off = self.a.offset().0;
            self.br_checks.push((k, off, l, J_REACH));
            asm!(self; j =>l);
        } else {
            asm!(self; jump =>l, t3);
        }
    }

    fn fault_label(&mut self, insn: u32) -> DynamicLabel {
        if let Some(l) = self.fault_labels[insn as usize] {
            return l;
        }
        let l = self.new_label();
        self.fault_labels[insn as usize] = Some(l);
        l
    }

    fn ret_tail(&mut self) -> DynamicLabel {
        if self.ret_tail.is_none() {
            self.ret_tail = Some(self.new_label());
        }
        self.ret_tail.unwrap()
    }

    fn ret_noframe(&mut self) -> DynamicLabel {
        if self.ret_noframe.is_none() {
            self.ret_noframe = Some(self.new_label());
        }
        self.ret_noframe.unwrap()
    }

    /// Return `EXIT|FAULT` with `index` to the run loop (the tb id is added by the tail).
    fn ret_to_loop(&mut self, index: u32, kind: u64, frame: bool) {
        self.li(A0, ret::encode(0, index, kind));
        let l = if frame {
            self.ret_tail()
        } else {
            self.ret_noframe()
        };
        self.jmp_far(l);
    }

    // ----- block ----------------------------------------------------------------------

    fn emit_block(&mut self, block: &Block) {
        let budget = self.new_label();
        // Entry: budget check, then record the running TB.
        asm!(self;
            ld t0, [X(TLBB), ICOUNT_T]
            ; ld t1, [X(TLBB), ICOUNT_LIMIT_T]
        );
        self.bc_far(Bc::Geu, T0, T1, budget);
        self.li(T0, self.tb as u64);
        asm!(self; sw t0, [X(TLBB), CUR_TB_T]);
        self.grow_frame();
        let mut insn: u32 = 0;
        let mut seen_insn = false;
        for (i, op) in block.ops.iter().enumerate() {
            match *op {
                Op::InsnStart { .. } => {
                    if seen_insn {
                        insn += 1;
                    }
                    seen_insn = true;
                }
                Op::Const { dst, val } => {
                    let d = self.tloc(dst);
                    let r = self.work(d);
                    self.li(r, val);
                    self.put(d, r);
                }
                Op::Mov { dst, src } => {
                    let d = self.tloc(dst);
                    let r = self.work(d);
                    self.mov_loc(r, self.tloc(src));
                    self.put(d, r);
                }
                Op::GetG { dst, g } => {
                    let d = self.tloc(dst);
                    let r = self.work(d);
                    let o = gofs(g);
                    asm!(self; ld X(r), [X(ENV), o]);
                    self.put(d, r);
                }
                Op::SetG { g, src } => self.set_global(g, src),
                Op::Bin { op, w, dst, a, b } => self.bin(op, w, dst, a, b),
                Op::Un { op, w, dst, a } => self.un(op, w, dst, a),
                Op::Ext {
                    dst,
                    a,
                    from,
                    signed,
                } => self.ext(dst, a, from, signed),
                Op::SetCond { cond, dst, a, b } => {
                    let d = self.tloc(dst);
                    let r = self.work(d);
                    let (c, s) = self.cond_val(cond, a, b, r);
                    match s {
                        Sense::Bool => self.mv(r, c),
                        Sense::BoolInv => asm!(self; xori X(r), X(c), 1),
                        Sense::Nz => asm!(self; snez X(r), X(c)),
                        Sense::Z => asm!(self; seqz X(r), X(c)),
                    }
                    self.put(d, r);
                }
                Op::Select {
                    cond,
                    dst,
                    a,
                    b,
                    t,
                    f,
                } => self.select(cond, dst, a, b, t, f),
                // The global stores owed before the slow path (ir::SyncList) are made
                // before the access on this backend.
                Op::Load {
                    dst,
                    addr,
                    mop,
                    ref sync,
                } => {
                    self.sync_globals(sync);
                    self.mem_op(i, insn, Some(dst), addr, None, mop)
                }
                Op::Store {
                    addr,
                    val,
                    mop,
                    ref sync,
                } => {
                    self.sync_globals(sync);
                    self.mem_op(i, insn, None, addr, Some(val), mop)
                }
                Op::Call {
                    helper,
                    ref args,
                    dst,
                    inline: _,
                } => self.call(i, insn, helper.0 as usize, args, dst),
                Op::Label(l) => {
                    let l = self.labels[l as usize];
                    asm!(self; =>l);
                }
                Op::Br(l) => {
                    let l = self.labels[l as usize];
                    self.jmp_far(l);
                }
                Op::BrCond { cond, a, b, label } => {
                    let l = self.labels[label as usize];
                    self.brcond(cond, a, b, l);
                }
                Op::Exit(e) => self.exit(insn, e),
            }
        }
        // A well-formed block never falls off its end.
        asm!(self; unimp);

        // Out-of-line code.
        let stubs = std::mem::take(&mut self.stubs);
        for s in stubs {
            self.emit_stub(s);
        }
        for insn in 0..self.fault_labels.len() {
            if let Some(l) = self.fault_labels[insn] {
                asm!(self; =>l);
                self.ret_to_loop(insn as u32, ret::FAULT, true);
            }
        }
        asm!(self; =>budget);
        self.ret_to_loop(0, ret::BUDGET, false);
        // The shared return: a0 = index << 8 | kind; or in the TB id, go to the epilogue.
        let tail = self.ret_tail();
        asm!(self; =>tail);
        self.shrink_frame();
        let nf = self.ret_noframe();
        asm!(self; =>nf);
        self.li(T0, self.tb as u64);
        asm!(self;
            slli t0, t0, 32
            ; or a0, a0, t0
            ; jump extern self.epilogue, t0
        );
        // Literal pool.
        if !self.pool_order.is_empty() {
            self.a.align(8, 0);
            for (v, l) in std::mem::take(&mut self.pool_order) {
                asm!(self; =>l);
                self.a.extend(v.to_le_bytes());
            }
        }
    }

    fn grow_frame(&mut self) {
        if self.extra != 0 {
            self.add_imm(SP, SP, -(self.extra as i64), T0);
        }
    }

    fn shrink_frame(&mut self) {
        if self.extra != 0 {
            self.add_imm(SP, SP, self.extra as i64, T0);
        }
    }

    fn exit(&mut self, insn: u32, e: Exit) {
        let idx = self.exit_defaults.len() as u32;
        let n = insn as i64 + 1;
        let pcg = gofs(self.pc_global);
        match e {
            Exit::Jump { pc } | Exit::Repeat { pc } => {
                let r = self.rd_val(Val::C(pc), T0);
                asm!(self; sd X(r), [X(ENV), pcg]);
                // A repeating instruction does not retire.
                let n = if matches!(e, Exit::Repeat { .. }) {
                    n - 1
                } else {
                    n
                };
                self.add_icount(n);
                self.shrink_frame();
                let slot = self.next_slot;
                self.next_slot += 1;
                let off = 8 * slot as i64 - SLOT_BIAS;
                if fits12(off) {
                    let o = off as i32;
                    asm!(self; ld t0, [X(SLOTB), o]);
                } else {
                    let (hi, lo) = split_off(off);
                    asm!(self; lui t0, hi ; add t0, t0, X(SLOTB) ; ld t0, [t0, lo]);
                }
                asm!(self; jr t0);
                let l = self.new_label();
                asm!(self; =>l);
                self.ret_to_loop(idx, ret::EXIT, false);
                self.exit_defaults.push(Some((slot, l)));
            }
            Exit::Indirect { pc } => {
                let r = self.rd_temp(pc, A1);
                asm!(self; sd X(r), [X(ENV), pcg]);
                self.add_icount(n);
                self.shrink_frame();
                // Probe the indirect-jump cache: index (pc ^ pc >> JC_BITS) & (JC_ENTRIES-1),
                // hit when pc, the mode word and the epoch match; then enter the cached block.
                let miss = self.new_label();
                let jbits = JC_BITS;
                asm!(self;
                    srli t1, X(r), jbits
                    ; xor t1, t1, X(r)
                );
                if JC_ENTRIES - 1 <= 2047 {
                    let jmask = (JC_ENTRIES - 1) as i32;
                    asm!(self; andi t1, t1, jmask);
                } else {
                    let sh = 64 - JC_BITS;
                    asm!(self; slli t1, t1, sh ; srli t1, t1, sh);
                }
                let jc_rel = OFF_JC as i64 - OFF_TLB as i64;
                let fold = jc_rel % 32 == 0 && fits12(jc_rel / 32 + JC_ENTRIES as i64);
                if fold {
                    let e = (jc_rel / 32) as i32;
                    asm!(self; addi t1, t1, e);
                }
                asm!(self;
                    slli t1, t1, 5
                    ; add t1, t1, X(TLBB)
                );
                if !fold {
                    self.add_imm(T1, T1, jc_rel, T2);
                }
                asm!(self;
                    ld t2, [t1, 0]
                    ; bne t2, X(r), =>miss
                );
                self.li(T0, self.mode);
                asm!(self;
                    ld t2, [t1, 8]
                    ; bne t2, t0, =>miss
                );
                // The epoch of pc's half: env.jc_epoch[pc >> 63].
                asm!(self;
                    srli t0, X(r), 63
                    ; slli t0, t0, 3
                    ; add t0, t0, X(TLBB)
                    ; ld t0, [t0, JC_EPOCH_T]
                    ; ld t2, [t1, 24]
                    ; bne t2, t0, =>miss
                    ; ld t2, [t1, 16]
                    ; jr t2
                    ; =>miss
                );
                self.ret_to_loop(idx, ret::EXIT, false);
                self.exit_defaults.push(None);
            }
            Exit::Exception { .. } | Exit::Platform { .. } | Exit::Sync { .. } => {
                // The run loop does the bookkeeping.
                self.ret_to_loop(idx, ret::EXIT, true);
                self.exit_defaults.push(None);
            }
        }
    }

    fn add_icount(&mut self, n: i64) {
        if n != 0 {
            asm!(self; ld t1, [X(TLBB), ICOUNT_T]);
            self.add_imm(T1, T1, n, T2);
            asm!(self; sd t1, [X(TLBB), ICOUNT_T]);
        }
    }

    // ----- arithmetic -----------------------------------------------------------------

    fn bin(&mut self, op: BinOp, w: Width, dst: Temp, a: Temp, b: Val) {
        use BinOp::*;
        let dl = self.tloc(dst);
        let r = self.work(dl);
        let ra = self.rd_temp(a, T0);
        let w32 = w == Width::W32;
        match op {
            Add | Sub | And | Or | Xor | Mul => {
                let cimm = match b {
                    Val::C(c) => match op {
                        Sub => imm_w(c.wrapping_neg(), w),
                        Mul => None,
                        _ => imm_w(c, w),
                    },
                    Val::T(_) => None,
                };
                let mut zext = w32;
                if let Some(i) = cimm {
                    match op {
                        Add | Sub => asm!(self; addi X(r), X(ra), i),
                        And => {
                            asm!(self; andi X(r), X(ra), i);
                            zext &= i < 0;
                        }
                        Or => asm!(self; ori X(r), X(ra), i),
                        Xor => asm!(self; xori X(r), X(ra), i),
                        _ => unreachable!(),
                    }
                } else {
                    let rb = self.rd_val(b, T1);
                    match op {
                        Add => asm!(self; add X(r), X(ra), X(rb)),
                        Sub => asm!(self; sub X(r), X(ra), X(rb)),
                        And => asm!(self; and X(r), X(ra), X(rb)),
                        Or => asm!(self; or X(r), X(ra), X(rb)),
                        Xor => asm!(self; xor X(r), X(ra), X(rb)),
                        Mul => asm!(self; mul X(r), X(ra), X(rb)),
                        _ => unreachable!(),
                    }
                }
                if zext {
                    self.zext32(r, r);
                }
            }
            Shl | Shr | Sar => match b {
                Val::C(c) => match w {
                    Width::W64 => {
                        let n = (c & 63) as u32;
                        match op {
                            Shl => asm!(self; slli X(r), X(ra), n),
                            Shr => asm!(self; srli X(r), X(ra), n),
                            _ => asm!(self; srai X(r), X(ra), n),
                        }
                    }
                    Width::W32 => {
                        let n = (c & 31) as u32;
                        match op {
                            Shl => {
                                asm!(self; slliw X(r), X(ra), n);
                                self.zext32(r, r);
                            }
                            // A non-zero logical shift leaves bit 31 clear: already zero-extended.
                            Shr if n != 0 => asm!(self; srliw X(r), X(ra), n),
                            Shr => self.zext32(r, ra),
                            _ => {
                                asm!(self; sraiw X(r), X(ra), n);
                                self.zext32(r, r);
                            }
                        }
                    }
                },
                Val::T(_) => {
                    let rb = self.rd_val(b, T1);
                    match (op, w) {
                        (Shl, Width::W64) => asm!(self; sll X(r), X(ra), X(rb)),
                        (Shr, Width::W64) => asm!(self; srl X(r), X(ra), X(rb)),
                        (_, Width::W64) => asm!(self; sra X(r), X(ra), X(rb)),
                        (Shl, Width::W32) => asm!(self; sllw X(r), X(ra), X(rb)),
                        (Shr, Width::W32) => asm!(self; srlw X(r), X(ra), X(rb)),
                        (_, Width::W32) => asm!(self; sraw X(r), X(ra), X(rb)),
                    }
                    if w32 {
                        self.zext32(r, r);
                    }
                }
            },
            Rotl | Rotr => {
                let left = op == Rotl;
                match b {
                    Val::C(c) => {
                        let bits = if w32 { 32 } else { 64 };
                        let n = (c & (bits - 1)) as u32;
                        if n == 0 {
                            if w32 {
                                self.zext32(r, ra);
                            } else {
                                self.mv(r, ra);
                            }
                        } else {
                            let (ln, rn) = if left {
                                (n, bits as u32 - n)
                            } else {
                                (bits as u32 - n, n)
                            };
                            if w32 {
                                asm!(self; slliw a0, X(ra), ln ; srliw a1, X(ra), rn ; or X(r), a0, a1);
                                self.zext32(r, r);
                            } else {
                                asm!(self; slli a0, X(ra), ln ; srli a1, X(ra), rn ; or X(r), a0, a1);
                            }
                        }
                    }
                    Val::T(_) => {
                        let rb = self.rd_val(b, T1);
                        asm!(self; neg a1, X(rb));
                        // a0 = a << l, a1 = a >> r, with {l, r} = {count, -count}.
                        let (lc, rc) = if left { (rb, A1) } else { (A1, rb) };
                        if w32 {
                            asm!(self; sllw a0, X(ra), X(lc) ; srlw a1, X(ra), X(rc) ; or X(r), a0, a1);
                            self.zext32(r, r);
                        } else {
                            asm!(self; sll a0, X(ra), X(lc) ; srl a1, X(ra), X(rc) ; or X(r), a0, a1);
                        }
                    }
                }
            }
            MulHU | MulHS => {
                let rb = self.rd_val(b, T1);
                match (op, w) {
                    (MulHU, Width::W64) => asm!(self; mulhu X(r), X(ra), X(rb)),
                    (_, Width::W64) => asm!(self; mulh X(r), X(ra), X(rb)),
                    (MulHU, Width::W32) => {
                        self.zext32(A0, ra);
                        self.zext32(A1, rb);
                        asm!(self; mul a0, a0, a1 ; srli X(r), a0, 32);
                    }
                    (_, Width::W32) => {
                        asm!(self; sext.w a0, X(ra) ; sext.w a1, X(rb) ; mul a0, a0, a1 ; srli X(r), a0, 32);
                    }
                }
            }
        }
        self.put(dl, r);
    }

    /// `dst = popcount(src)`; `src` must not be a0..a2 (clobbered).
    fn popcnt64(&mut self, dst: u8, src: u8) {
        debug_assert!(![A0, A1, A2].contains(&src));
        self.li(A2, 0x5555_5555_5555_5555);
        asm!(self; srli a0, X(src), 1 ; and a0, a0, a2 ; sub a0, X(src), a0);
        self.li(A2, 0x3333_3333_3333_3333);
        asm!(self; srli a1, a0, 2 ; and a1, a1, a2 ; and a0, a0, a2 ; add a0, a0, a1 ; srli a1, a0, 4 ; add a0, a0, a1);
        self.li(A2, 0x0f0f_0f0f_0f0f_0f0f);
        asm!(self; and a0, a0, a2);
        self.li(A2, 0x0101_0101_0101_0101);
        asm!(self; mul a0, a0, a2 ; srli X(dst), a0, 56);
    }

    fn un(&mut self, op: UnOp, w: Width, dst: Temp, a: Temp) {
        let dl = self.tloc(dst);
        let r = self.work(dl);
        let ra = self.rd_temp(a, T0);
        let w32 = w == Width::W32;
        match op {
            UnOp::Not => {
                asm!(self; not X(r), X(ra));
                if w32 {
                    self.zext32(r, r);
                }
            }
            UnOp::Neg => {
                asm!(self; neg X(r), X(ra));
                if w32 {
                    self.zext32(r, r);
                }
            }
            UnOp::Bswap => {
                // bswap32(x) is the high half of bswap64(x << 32), which is zero-extended.
                let x = if w32 {
                    asm!(self; slli a3, X(ra), 32);
                    A3
                } else {
                    ra
                };
                self.li(A2, 0x00ff_00ff_00ff_00ff);
                asm!(self;
                    srli a0, X(x), 8
                    ; and a0, a0, a2
                    ; and a1, X(x), a2
                    ; slli a1, a1, 8
                    ; or a0, a0, a1
                );
                self.li(A2, 0x0000_ffff_0000_ffff);
                asm!(self;
                    srli a1, a0, 16
                    ; and a1, a1, a2
                    ; and a0, a0, a2
                    ; slli a0, a0, 16
                    ; or a0, a0, a1
                    ; srli a1, a0, 32
                    ; slli a0, a0, 32
                    ; or X(r), a0, a1
                );
            }
            UnOp::Popcnt => {
                let x = if w32 {
                    self.zext32(A3, ra);
                    A3
                } else {
                    ra
                };
                self.popcnt64(r, x);
            }
            UnOp::Clz => {
                // Smear the highest set bit right; the zeros left are the leading zeros.
                // W32: clz64(zext(x)) - 32 (32 for zero).
                let x = if w32 {
                    self.zext32(A4, ra);
                    A4
                } else {
                    ra
                };
                asm!(self;
                    srli a3, X(x), 1
                    ; or a3, X(x), a3
                    ; srli a4, a3, 2
                    ; or a3, a3, a4
                    ; srli a4, a3, 4
                    ; or a3, a3, a4
                    ; srli a4, a3, 8
                    ; or a3, a3, a4
                    ; srli a4, a3, 16
                    ; or a3, a3, a4
                    ; srli a4, a3, 32
                    ; or a3, a3, a4
                    ; not a3, a3
                );
                self.popcnt64(r, A3);
                if w32 {
                    asm!(self; addi X(r), X(r), -32);
                }
            }
            UnOp::Ctz => {
                // popcnt((x - 1) & !x): the mask of the trailing zeros (all ones for 0).
                // W32: bit 32 set stops the count at 32.
                let x = if w32 {
                    asm!(self; addi a4, zero, 1 ; slli a4, a4, 32 ; or a4, a4, X(ra));
                    A4
                } else {
                    ra
                };
                asm!(self;
                    addi a3, X(x), -1
                    ; not a4, X(x)
                    ; and a3, a3, a4
                );
                self.popcnt64(r, A3);
            }
        }
        self.put(dl, r);
    }

    fn ext(&mut self, dst: Temp, a: Temp, from: MemSize, signed: bool) {
        let dl = self.tloc(dst);
        let r = self.work(dl);
        let ra = self.rd_temp(a, T0);
        match (from, signed) {
            (MemSize::B1, false) => asm!(self; andi X(r), X(ra), 255),
            (MemSize::B1, true) => asm!(self; slli X(r), X(ra), 56 ; srai X(r), X(r), 56),
            (MemSize::B2, false) => asm!(self; slli X(r), X(ra), 48 ; srli X(r), X(r), 48),
            (MemSize::B2, true) => asm!(self; slli X(r), X(ra), 48 ; srai X(r), X(r), 48),
            (MemSize::B4, false) => self.zext32(r, ra),
            (MemSize::B4, true) => asm!(self; sext.w X(r), X(ra)),
            (MemSize::B8, _) => self.mv(r, ra),
        }
        self.put(dl, r);
    }

    // ----- conditions -----------------------------------------------------------------

    /// Evaluate `cond(a, b)` into a register (written with one instruction into `into`, or
    /// `a`'s own register for a comparison with 0). Loads operands into t0/t1.
    fn cond_val(&mut self, cond: Cond, a: Temp, b: Val, into: u8) -> (u8, Sense) {
        let ra = self.rd_temp(a, T0);
        let imm = |c: u64| fits12(c as i64).then_some(c as i64 as i32);
        match cond {
            Cond::Eq | Cond::Ne | Cond::TstZ | Cond::TstNz => {
                let s = if matches!(cond, Cond::Eq | Cond::TstZ) {
                    Sense::Z
                } else {
                    Sense::Nz
                };
                let test = matches!(cond, Cond::TstZ | Cond::TstNz);
                match b {
                    Val::C(0) if !test => return (ra, s),
                    Val::C(c) if imm(c).is_some() => {
                        let i = imm(c).unwrap();
                        if test {
                            asm!(self; andi X(into), X(ra), i);
                        } else {
                            asm!(self; xori X(into), X(ra), i);
                        }
                    }
                    _ => {
                        let rb = self.rd_val(b, T1);
                        if test {
                            asm!(self; and X(into), X(ra), X(rb));
                        } else {
                            asm!(self; xor X(into), X(ra), X(rb));
                        }
                    }
                }
                (into, s)
            }
            Cond::LtU | Cond::GeU | Cond::LtS | Cond::GeS => {
                let unsigned = matches!(cond, Cond::LtU | Cond::GeU);
                let s = if matches!(cond, Cond::LtU | Cond::LtS) {
                    Sense::Bool
                } else {
                    Sense::BoolInv
                };
                match b {
                    Val::C(c) if imm(c).is_some() => {
                        let i = imm(c).unwrap();
                        if unsigned {
                            asm!(self; sltiu X(into), X(ra), i);
                        } else {
                            asm!(self; slti X(into), X(ra), i);
                        }
                    }
                    _ => {
                        let rb = self.rd_val(b, T1);
                        if unsigned {
                            asm!(self; sltu X(into), X(ra), X(rb));
                        } else {
                            asm!(self; slt X(into), X(ra), X(rb));
                        }
                    }
                }
                (into, s)
            }
            Cond::GtU | Cond::LeU | Cond::GtS | Cond::LeS => {
                let unsigned = matches!(cond, Cond::GtU | Cond::LeU);
                let gt = matches!(cond, Cond::GtU | Cond::GtS);
                // a > c  <=>  !(a < c + 1), a <= c  <=>  a < c + 1 (c not the maximum).
                let max = if unsigned { u64::MAX } else { i64::MAX as u64 };
                match b {
                    Val::C(c) if c != max && imm(c.wrapping_add(1)).is_some() => {
                        let i = imm(c.wrapping_add(1)).unwrap();
                        if unsigned {
                            asm!(self; sltiu X(into), X(ra), i);
                        } else {
                            asm!(self; slti X(into), X(ra), i);
                        }
                        (into, if gt { Sense::BoolInv } else { Sense::Bool })
                    }
                    _ => {
                        let rb = self.rd_val(b, T1);
                        if unsigned {
                            asm!(self; sltu X(into), X(rb), X(ra));
                        } else {
                            asm!(self; slt X(into), X(rb), X(ra));
                        }
                        (into, if gt { Sense::Bool } else { Sense::BoolInv })
                    }
                }
            }
        }
    }

    fn brcond(&mut self, cond: Cond, a: Temp, b: Val, l: DynamicLabel) {
        match cond {
            Cond::TstZ | Cond::TstNz => {
                let (c, s) = self.cond_val(cond, a, b, T0);
                let bc = if s.true_if_nz() { Bc::Ne } else { Bc::Eq };
                self.bc_far(bc, c, ZERO, l);
            }
            _ => {
                let ra = self.rd_temp(a, T0);
                let rb = self.rd_val(b, T1);
                let (bc, swap) = Bc::of(cond);
                let (x, y) = if swap { (rb, ra) } else { (ra, rb) };
                self.bc_far(bc, x, y, l);
            }
        }
    }

    fn select(&mut self, cond: Cond, dst: Temp, a: Temp, b: Val, t: Val, f: Val) {
        let dl = self.tloc(dst);
        let r = self.work(dl);
        if t == f {
            self.mov_val(r, t);
            self.put(dl, r);
            return;
        }
        let (mut c, s) = self.cond_val(cond, a, b, T0);
        let reg_of = |v: Val, loc: &[Loc]| match v {
            Val::T(x) => match loc[x.idx()] {
                Loc::R(q) => Some(q),
                Loc::S(_) => None,
            },
            Val::C(_) => None,
        };
        let (treg, freg) = (reg_of(t, self.loc), reg_of(f, self.loc));
        let skip = self.new_label();
        // Branch to `skip` when the condition is `holds`.
        let branch = |g: &mut Self, c: u8, holds: bool| {
            let bc = if s.true_if_nz() == holds {
                Bc::Ne
            } else {
                Bc::Eq
            };
            g.bc_short(bc, c, ZERO, skip);
        };
        if freg == Some(r) {
            // r already holds f: if the condition holds, r = t.
            branch(self, c, false);
            self.mov_val(r, t);
        } else if treg == Some(r) {
            branch(self, c, true);
            self.mov_val(r, f);
        } else {
            if c == r {
                self.mv(T0, c);
                c = T0;
            }
            self.mov_val(r, f);
            branch(self, c, false);
            self.mov_val(r, t);
        }
        asm!(self; =>skip);
        self.put(dl, r);
    }

    // ----- calls and memory -----------------------------------------------------------

    /// Caller-saved pool registers live across op `i`: saved to the bottom of the frame.
    fn save(&mut self, mask: u32) {
        for (k, &r) in CALLER_POOL.iter().enumerate() {
            if mask & (1 << k) != 0 {
                let o = 8 * k as i32;
                asm!(self; sd X(r), [sp, o]);
            }
        }
    }

    fn restore(&mut self, mask: u32) {
        for (k, &r) in CALLER_POOL.iter().enumerate() {
            if mask & (1 << k) != 0 {
                let o = 8 * k as i32;
                asm!(self; ld X(r), [sp, o]);
            }
        }
    }

    /// Call `f` (absolute address, anywhere) with the arguments already in a0..a4.
    fn call_abs(&mut self, f: usize) {
        self.li(T0, f as u64);
        asm!(self; jalr ra, t0, 0);
    }

    fn check_fault(&mut self, insn: u32) {
        let l = self.fault_label(insn);
        asm!(self; lw t0, [X(TLBB), FAULT_T]);
        self.bc_far(Bc::Ne, T0, ZERO, l);
    }

    fn call(&mut self, i: usize, insn: u32, helper: usize, args: &[Val], dst: Option<Temp>) {
        let h = self.helpers[helper];
        let save = self.caller_live[i];
        self.save(save);
        // a0..a4 are not in the allocator's pool, so the arguments can be set up in order.
        const ARG_REGS: [u8; 4] = [A1, A2, A3, A4];
        for (k, &r) in ARG_REGS.iter().enumerate() {
            match args.get(k) {
                Some(&v) => self.mov_val(r, v),
                None => self.mv(r, ZERO),
            }
        }
        self.mv(A0, ENV);
        self.call_abs(h.func as usize);
        self.restore(save);
        if h.can_fault {
            self.check_fault(insn);
        }
        if let Some(d) = dst {
            let dl = self.tloc(d);
            self.put(dl, A0);
        }
    }

    /// Store `v` into global `g`.
    fn set_global(&mut self, g: Global, v: Val) {
        let r = self.rd_val(v, T0);
        let o = gofs(g);
        asm!(self; sd X(r), [X(ENV), o]);
    }

    /// Make a memory access's owed global stores (`ir::SyncList`).
    fn sync_globals(&mut self, sync: &SyncList) {
        for &(g, v) in &sync.0 {
            self.set_global(g, v);
        }
    }

    fn mem_op(
        &mut self,
        i: usize,
        insn: u32,
        dst: Option<Temp>,
        addr: Temp,
        val: Option<Val>,
        mop: MemOp,
    ) {
        let store = val.is_some();
        let size = mop.size;
        let info = if store {
            mem_info(size, false, mop.kind)
        } else {
            mem_info(size, mop.signed, mop.kind) | if mop.rmw { MEM_INFO_RMW } else { 0 }
        };
        // Only the low `size` bytes of a stored constant matter: use its sign-extended
        // truncation, the cheapest to materialise.
        let val = val.map(|v| match v {
            Val::C(c) if size != MemSize::B8 => {
                let sh = 64 - size.bits();
                Val::C((((c << sh) as i64) >> sh) as u64)
            }
            v => v,
        });
        let dl = dst.map(|d| self.tloc(d));
        let save = self.caller_live[i];
        let al = self.tloc(addr);
        if mop.kind == AccessKind::System {
            self.slow_call(store, al, val, info, save);
            self.check_fault(insn);
            if let Some(d) = dl {
                self.put(d, A0);
            }
            return;
        }
        let areg = self.rd_temp(addr, A1);
        let slow = self.new_label();
        let back = self.new_label();
        // TLB probe (see interp::tlb_probe): index from the first byte, tag from the last.
        // t0 = &env.tlb[mmu][tlb_index(addr)], t1 = page of the last byte, t2 = tag.
        let tag = if store || mop.rmw { 8 } else { 0 };
        let (pb, pb2) = (PAGE_BITS, PAGE_BITS + TLB_FOLD);
        asm!(self;
            srli t0, X(areg), pb
            ; srli t1, X(areg), pb2
            ; xor t0, t0, t1
        );
        if TLB_SIZE - 1 <= 2047 {
            let imask = (TLB_SIZE - 1) as i32;
            asm!(self; andi t0, t0, imask);
        } else {
            let sh = 64 - TLB_BITS;
            asm!(self; slli t0, t0, sh ; srli t0, t0, sh);
        }
        // This mode's table: folded into the index when small, else added after scaling.
        let mode_entries = (self.mmu_idx as usize * TLB_SIZE) as i64;
        let fold = fits12(mode_entries);
        if mode_entries != 0 && fold {
            let mo = mode_entries as i32;
            asm!(self; addi t0, t0, mo);
        }
        asm!(self;
            slli t0, t0, 5
            ; add t0, t0, X(TLBB)
        );
        if !fold {
            self.add_imm(T0, T0, mode_entries * TLB_ENTRY_BYTES as i64, T1);
        }
        if size == MemSize::B1 {
            asm!(self; srli t1, X(areg), pb);
        } else {
            let last = size.bytes() as i32 - 1;
            asm!(self; addi t1, X(areg), last ; srli t1, t1, pb);
        }
        asm!(self;
            slli t1, t1, pb
            ; ld t2, [t0, tag]
        );
        self.bc_far(Bc::Ne, T1, T2, slow);
        asm!(self;
            ld t0, [t0, 24]
            ; add t0, t0, X(areg)
        );
        if store {
            let v = self.rd_val(val.unwrap(), T1);
            match size {
                MemSize::B1 => asm!(self; sb X(v), [t0, 0]),
                MemSize::B2 => asm!(self; sh X(v), [t0, 0]),
                MemSize::B4 => asm!(self; sw X(v), [t0, 0]),
                MemSize::B8 => asm!(self; sd X(v), [t0, 0]),
            }
        } else {
            let d = dl.expect("load destination");
            let r = self.work(d);
            match (size, mop.signed) {
                (MemSize::B1, false) => asm!(self; lbu X(r), [t0, 0]),
                (MemSize::B1, true) => asm!(self; lb X(r), [t0, 0]),
                (MemSize::B2, false) => asm!(self; lhu X(r), [t0, 0]),
                (MemSize::B2, true) => asm!(self; lh X(r), [t0, 0]),
                (MemSize::B4, false) => asm!(self; lwu X(r), [t0, 0]),
                (MemSize::B4, true) => asm!(self; lw X(r), [t0, 0]),
                (MemSize::B8, _) => asm!(self; ld X(r), [t0, 0]),
            }
            self.put(d, r);
        }
        asm!(self; =>back);
        self.stubs.push(SlowStub {
            label: slow,
            back,
            store,
            addr: al,
            val,
            dst: dl,
            info,
            save,
            insn,
        });
    }

    /// Call the softmmu slow path (result in a0 for loads). Saves the live caller-saved
    /// pool registers.
    fn slow_call(&mut self, store: bool, addr: Loc, val: Option<Val>, info: u64, save: u32) {
        self.save(save);
        self.mov_loc(A1, addr);
        if store {
            self.mov_val(A2, val.expect("store value"));
            self.li(A3, info);
        } else {
            self.li(A2, info);
        }
        self.mv(A0, ENV);
        if store {
            self.call_abs(slow_store as *const () as usize);
        } else {
            self.call_abs(slow_load as *const () as usize);
        }
        self.restore(save);
    }

    fn emit_stub(&mut self, s: SlowStub) {
        asm!(self; =>s.label);
        self.slow_call(s.store, s.addr, s.val, s.info, s.save);
        self.check_fault(s.insn);
        if let Some(d) = s.dst {
            self.put(d, A0);
        }
        self.jmp_far(s.back);
    }
}

#[cfg(test)]
mod tests {
    //! The backend-independent tests live in [`super::super::testkit`]; these run them on
    //! this backend (also with a small code buffer) and add riscv64-specific ones:
    //! constant materialisation and branch relaxation across huge blocks.

    use super::*;
    use crate::backend::interp::Interp;
    use crate::backend::testkit::{self, helpers, PC};
    use crate::ir::Builder;

    #[test]
    fn differential_random_blocks() {
        let mut be = Rv64Backend::new();
        testkit::differential(6000, 0x9e37_79b9_7f4a_7c15, &mut be);
        assert_eq!(
            testkit::misaligned_calls(),
            0,
            "helpers called with a misaligned stack"
        );
    }

    #[test]
    fn differential_second_seed() {
        testkit::differential(3000, 0x1234_5678_9abc_def1, &mut Rv64Backend::new());
    }

    #[test]
    fn differential_small_code_buffer_flushes() {
        // Many compiles into one backend, flushing whenever it reports full.
        let mut be = Rv64Backend::with_code_size(2 << 20);
        testkit::differential(3000, 0x5151_1234_0000_0001, &mut be);
    }

    /// Every op on edge values against `eval`.
    #[test]
    fn directed_ops_against_eval() {
        testkit::directed_ops_against_eval(&mut Rv64Backend::new(), "riscv64");
    }

    /// Constants of every shape (12-bit, 32-bit, shifted, pool) through `Const`, `SetG`
    /// and store values, against the interpreter.
    #[test]
    fn constants() {
        let mut vals: Vec<u64> = vec![
            0,
            1,
            2047,
            2048,
            0xfff,
            0x1000,
            0x7fff_f7ff,
            0x7fff_f800,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_0000_0800,
            0xffff_ffff_8000_0000,
            0xffff_ffff_7fff_ffff,
            0x7fff_ffff_ffff_ffff,
            0x8000_0000_0000_0000,
            0x8000_0000_0000_0800,
            u64::MAX,
            u64::MAX - 2048,
            0x0123_4567_89ab_cdef,
            0xfedc_ba98_7654_3210,
            0x00ff_00ff_00ff_00ff,
        ];
        let mut rng = testkit::Rng(0x77);
        for k in 0..64 {
            vals.push(1u64 << k);
            vals.push(!(1u64 << k));
            vals.push((1u64 << k).wrapping_sub(1));
            vals.push(rng.next() >> (k % 60));
            vals.push((rng.next() as i64 >> (k % 60)) as u64);
        }
        let hs = helpers();
        for (n, chunk) in vals.chunks(60).enumerate() {
            let mut b = Builder::new();
            b.insn_start(0);
            for (i, &v) in chunk.iter().enumerate() {
                let t = b.konst(v);
                b.set(i as Global, t);
                b.set(100 + i as Global, Val::C(v));
            }
            b.exit(Exit::Jump { pc: chunk[0] });
            let blk = b.finish();
            let mut e = testkit::engine();
            let mut be = Rv64Backend::new();
            let c = be.compile(&blk, 3, &hs, PC).unwrap();
            assert_eq!(
                testkit::exec(&mut be, &mut e, c),
                ret::encode(3, 0, ret::EXIT)
            );
            for (i, &v) in chunk.iter().enumerate() {
                assert_eq!(e.env.g[i], v, "chunk {n} const {v:#x}");
                assert_eq!(e.env.g[100 + i], v, "chunk {n} SetG {v:#x}");
            }
            assert_eq!(e.env.g[PC as usize], chunk[0]);
        }
    }

    /// A block whose code is far larger than the reach of conditional branches (±4 KiB) and
    /// of `jal` (±1 MiB): forward and backward branches, slow paths and fault exits at the
    /// end of the block, compared with the interpreter.
    #[test]
    fn far_branches_are_relaxed() {
        for filler in [300usize, 60_000] {
            let mut b = Builder::new();
            b.insn_start(0x100);
            let skip = b.label();
            let top = b.label();
            let x = b.get(1);
            let a = b.konst(0x2008);
            // TLB miss first: the slow path stub sits after all the filler.
            let m = b.load(a, MemOp::new(MemSize::B8));
            b.set(2, m);
            let cnt = b.konst(3);
            b.place(top);
            b.brcond(Cond::Eq, x, Val::C(12345), skip);
            let mut acc = b.get(3);
            for k in 0..filler {
                acc = b.bin(BinOp::Rotl, Width::W32, acc, Val::C(k as u64 % 31 + 1));
                acc = b.bin(
                    BinOp::Add,
                    Width::W64,
                    acc,
                    Val::C(0x1234_5678_9abc_def0 ^ k as u64),
                );
            }
            b.set(3, acc);
            b.place(skip);
            b.push(Op::Bin {
                op: BinOp::Sub,
                w: Width::W64,
                dst: cnt,
                a: cnt,
                b: Val::C(1),
            });
            b.brcond(Cond::Ne, cnt, Val::C(0), top);
            b.insn_start(0x104);
            // A faulting access: its fault exit is out of line too.
            let bad = b.konst(testkit::UNMAPPED);
            let v = b.load(bad, MemOp::new(MemSize::B4));
            b.set(4, v);
            b.exit(Exit::Jump { pc: 0x200 });
            let blk = b.finish();
            let hs = helpers();
            for g1 in [0u64, 12345] {
                let (mut ea, mut eb) = (testkit::engine(), testkit::engine());
                let mut interp = Interp::new();
                let mut be = Rv64Backend::new();
                let ca = interp.compile(&blk, 7, &hs, PC).unwrap();
                let cb = be.compile(&blk, 7, &hs, PC).unwrap();
                for e in [&mut ea, &mut eb] {
                    testkit::init_state(e, 99, 0);
                    e.env.g[1] = g1;
                }
                let ra = testkit::exec(&mut interp, &mut ea, ca);
                let rb = testkit::exec(&mut be, &mut eb, cb);
                assert_eq!(ra, ret::encode(7, 1, ret::FAULT));
                testkit::compare(
                    &mut ea,
                    &mut eb,
                    ra,
                    rb,
                    &format!("filler {filler} g1 {g1}"),
                    "riscv64",
                    &blk,
                );
            }
        }
    }

    /// Blocks with more spill slots than the fixed frame, including frame offsets beyond
    /// the 12-bit reach (frame grown at entry, shrunk at every exit), live across a call.
    #[test]
    fn huge_frames() {
        let hs = helpers();
        let mut be = Rv64Backend::new();
        for n in [100u64, 300, 5000] {
            let mut b = Builder::new();
            b.insn_start(0x100);
            let x = b.get(1);
            let ts: Vec<Temp> = (0..n)
                .map(|i| b.bin(BinOp::Mul, Width::W64, x, Val::C(i + 3)))
                .collect();
            let h = b.call(
                crate::ir::HelperId(0),
                &[Val::T(ts[0]), Val::T(ts[ts.len() - 1]), Val::C(1)],
            );
            let mut acc = b.konst(0);
            for &t in &ts {
                acc = b.bin(BinOp::Add, Width::W64, acc, t);
                acc = b.bin(BinOp::Rotl, Width::W64, acc, Val::C(3));
            }
            let acc = b.add(acc, h);
            b.set(2, acc);
            let l = b.label();
            b.brcond(Cond::Eq, ts[1], Val::C(0), l);
            b.exit(Exit::Jump { pc: 0x200 });
            b.place(l);
            b.exit(Exit::Sync { pc: 0x300 });
            let blk = b.finish();
            let mut interp = Interp::new();
            let (mut e, mut ei) = (testkit::engine(), testkit::engine());
            let mut rets = Vec::new();
            for (be2, e2) in [
                (&mut be as &mut dyn Backend, &mut e),
                (&mut interp as &mut dyn Backend, &mut ei),
            ] {
                e2.env.g[1] = 0x1234_5678_9abc_def1;
                e2.env.g[3] = 5;
                let c = be2.compile(&blk, 4, &hs, PC).unwrap();
                rets.push(testkit::exec(be2, e2, c));
            }
            assert_eq!(rets[0], ret::encode(4, 0, ret::EXIT));
            testkit::compare(
                &mut ei,
                &mut e,
                rets[1],
                rets[0],
                &format!("n = {n}"),
                "riscv64",
                &blk,
            );
        }
        assert_eq!(testkit::misaligned_calls(), 0);
    }

    #[test]
    fn tlb_probe_index_and_mode() {
        testkit::tlb_probe_index_and_mode(&mut Rv64Backend::new());
    }

    #[test]
    fn indirect_jump_cache_probe() {
        testkit::indirect_jump_cache_probe(&mut Rv64Backend::new(), false);
    }

    /// Rough speed check against the interpreter (see [`testkit::bench_loop`]).
    #[test]
    #[ignore]
    fn bench_loop() {
        testkit::bench_loop(&mut || Box::new(Rv64Backend::new()));
    }

    #[test]
    fn tlb_miss_slow_path_then_hit() {
        testkit::tlb_miss_slow_path_then_hit(&mut Rv64Backend::new());
    }

    #[test]
    fn load_fault_reports_instruction() {
        testkit::load_fault_reports_instruction(&mut Rv64Backend::new());
    }

    #[test]
    fn chain_unchain_and_budget() {
        testkit::chain_unchain_and_budget(&mut Rv64Backend::new());
    }

    #[test]
    fn engine_run_repeat() {
        testkit::engine_run_repeat(&mut || Box::new(Rv64Backend::new()));
    }

    #[test]
    fn engine_run_with_chaining() {
        testkit::engine_run_with_chaining(&mut || Box::new(Rv64Backend::new()));
    }
}
