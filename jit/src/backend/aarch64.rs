//! aarch64 host backend (dynasmrt, `.arch aarch64`).
//!
//! Structure mirrors the x86_64 backend (`x64.rs`): each block is assembled into a
//! `VecAssembler` whose base address is where the bytes will land in the [`ExecMem`]
//! region, then copied there (the copy flushes the instruction cache for the written range,
//! see [`crate::execmem::flush_icache`]); code never moves afterwards.
//!
//! # Frame and registers
//! [`execute`](Backend::execute) calls a trampoline generated once at the start of the
//! region: it saves x29/x30 and the callee-saved x19..x28 (96 bytes), reserves a fixed
//! frame of `FRAME_BYTES` (sp stays 16-byte aligned), keeps `Env*` in x28 and `br`s to the
//! block. Every exit that returns to the run loop branches to the shared epilogue with the
//! result in x0. Chained blocks run in the same frame, so every block uses this layout:
//!
//! ```text
//! [sp + 0 .. 64)       save area for x8..x15 around calls (caller-saved temp registers)
//! [sp + 64 .. )        spill slots of the block's temps
//! ```
//! A block with more spill slots than the fixed frame holds grows it by `extra` bytes on
//! entry and gives them back before every exit.
//!
//! Temps live in x19..x27 (callee-saved) and x8..x15 (caller-saved; saved around helper
//! calls and inside the out-of-line softmmu slow paths only when a temp in them is live
//! across the call), or in spill slots. x0..x4, x16 and x17 are scratch within one op; x7
//! is reserved for addressing frame/env offsets that no immediate form reaches. x18 (the
//! platform register) is never touched. Globals are never cached: `GetG`/`SetG` access
//! `[x28 + 8*g]` (always within the scaled 12-bit offset range).
//!
//! # aarch64 specifics
//! - `W32` ops use the w-register forms, which zero-extend for free; shifts use
//!   `lslv/lsrv/asrv/rorv`, which already take the count modulo the register width (32 for
//!   w-forms), exactly the IR rule. `Rotl` is `ror` by the negated count.
//! - No host flags are exposed by the IR: conditions are `cmp`/`cmn`/`tst` followed by
//!   `b.cond`, `cset` or `csel` (and `cbz`/`cbnz` for compares with zero).
//! - `MulHU`/`MulHS` are `umulh`/`smulh`; their `W32` forms use `umull`/`smull` and a
//!   shift. `Clz` is `clz`, `Ctz` is `rbit`+`clz`, `Popcnt` uses NEON `cnt`+`addv` through
//!   v0 (there is no scalar popcount before FEAT_CSSC). `Bswap` is `rev`.
//! - Immediates: add/sub/cmp use the 12-bit immediate forms (or the negated form) when they
//!   fit, logical ops use bitmask immediates only when
//!   [`encode_logical_immediate_64bit`] accepts them; everything else is materialised with
//!   the shortest of `movz`/`movn`+`movk`/`orr` (bitmask). Absolute addresses (helpers,
//!   slow paths, chain slots) come from a per-block literal pool (`ldr x16, =lit`).
//! - Calls out of the region go through `blr x16`; sp is always 16-byte aligned.
//! - Branches to out-of-line code (`b.cond`, `cbnz`, `ldr` literal) reach ±1 MiB, which
//!   bounds the size of one block's code; direct `b` to the epilogue reaches ±128 MiB,
//!   more than the code region.
//!
//! # Register allocation
//! Done by the host-independent linear-scan allocator in [`super::regalloc`], given `POOL`.
//!
//! # Exits, chaining and the indirect-jump cache
//! Every chainable exit (`Exit::Jump`, `Exit::Repeat`) ends with
//! `ldr x16, =slot; ldr x16, [x16]; br x16`, where the slot lives in an RW, non-executable
//! array owned by the backend and initially holds the address of the code right after
//! (`return EXIT|index`). [`chain`](Backend::chain) stores the target's entry address in the
//! slot, [`unchain`](Backend::unchain) restores the default. No code is ever patched, so
//! chaining needs neither W^X toggles nor icache maintenance, and is safe even while the
//! block is running (aligned 8-byte loads and stores are single-copy atomic on aarch64).
//! `Exit::Indirect` stores the pc and icount like the run loop expects, then probes
//! `Env::jc` (index `env::jc_index(pc)`, hit when pc and the block's mode word match) and
//! `br`s to the cached entry, or returns `EXIT|index` on a miss ([`Backend::entry_addr`]
//! gives the engine the entry addresses to cache).
//!
//! # Softmmu fast path
//! `env::tlb_index` folded inline (`eor` with the address shifted by `TLB_FOLD`, `ubfx`),
//! the entry addressed as `x28 + 32*index` (plus the mode's table base with one or two
//! `add`s when it lies beyond the scaled 12-bit offset range), the tag compared with the
//! page of the access's last byte, then a register-offset access through the addend. Misses
//! call `slow_load`/`slow_store` out of line and branch back.

// dynasm expands dynamic registers `X(r)` to `r.into()`, which clippy flags for u8.
#![allow(clippy::useless_conversion)]

use dynasmrt::aarch64::{
    encode_logical_immediate_32bit, encode_logical_immediate_64bit, Aarch64Relocation,
};
use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi, VecAssembler};

use super::codecache::CodeCache;
use super::regalloc::{regalloc, Loc, RegPool};
use super::{Backend, CodeBufferFull, CodeHandle};
use crate::engine::{mem_info, ret, slow_load, slow_store};
use crate::env::{
    Env, JC_BITS, JC_ENTRIES, OFF_CUR_TB, OFF_FAULT, OFF_ICOUNT, OFF_ICOUNT_LIMIT, OFF_JC,
    OFF_JC_EPOCH, OFF_TLB, PAGE_BITS, PAGE_MASK, TLB_BITS, TLB_FOLD, TLB_SIZE,
};
use crate::execmem::DEFAULT_CODE_SIZE;
use crate::ir::{
    AccessKind, BinOp, Block, Cond, Exit, Global, HelperInfo, MemOp, MemSize, Op, SyncList, Temp,
    UnOp, Val, Width,
};

type Asm = VecAssembler<Aarch64Relocation>;

macro_rules! asm {
    ($g:expr; $($t:tt)*) => {
        dynasm!($g.a ; .arch aarch64 ; $($t)*)
    };
}

/// Scratch registers (never in the pool).
const T0: u8 = 0;
const T1: u8 = 1;
const T2: u8 = 2;
const T3: u8 = 3;
/// Reserved for far offsets (see [`Gen::mem`]).
const FAR: u8 = 7;
const IP0: u8 = 16;
const IP1: u8 = 17;
/// `Env*`, callee-saved.
const ENV: u8 = 28;
/// Register number 31: `sp` as a base register, `xzr` as a data operand.
const SP: u8 = 31;
const ZR: u8 = 31;

/// Temp registers preserved by calls.
const CALLEE_POOL: [u8; 9] = [19, 20, 21, 22, 23, 24, 25, 26, 27];
/// Temp registers clobbered by calls (saved around them when live). Bit k of a
/// [`caller_live`](super::regalloc::Alloc::caller_live) mask is `CALLER_POOL[k]`, saved at
/// `[sp + 8*k]`.
const CALLER_POOL: [u8; 8] = [8, 9, 10, 11, 12, 13, 14, 15];

/// Fixed frame reserved by the trampoline (a multiple of 16, fits an add/sub immediate).
const FRAME_BYTES: i32 = 1024;
const _: () = assert!(FRAME_BYTES % 16 == 0 && FRAME_BYTES < 4096);
/// Frame slots at the bottom of the frame that save x8..x15 around calls.
const SAVE_SLOTS: usize = CALLER_POOL.len();

/// What the shared register allocator may use; spill slots follow the save area.
const POOL: RegPool = RegPool {
    callee_saved: &CALLEE_POOL,
    caller_saved: &CALLER_POOL,
    spill_base: 8 * SAVE_SLOTS as i32,
};

const TLB_ENTRY_BYTES: usize = std::mem::size_of::<crate::env::TlbEntry>();
const _: () = assert!(TLB_ENTRY_BYTES == 32);

pub struct A64Backend {
    /// Code region, chain slots and the TB table.
    cc: CodeCache,
    epilogue: usize,
}

impl A64Backend {
    pub fn new() -> A64Backend {
        Self::with_code_size(DEFAULT_CODE_SIZE)
    }

    fn with_code_size(size: usize) -> A64Backend {
        let mut b = A64Backend {
            cc: CodeCache::new(size, "aarch64"),
            epilogue: 0,
        };
        b.emit_trampoline();
        b
    }

    /// The entry trampoline `extern "C" fn(env, code) -> u64` and the shared epilogue.
    fn emit_trampoline(&mut self) {
        let base = self.cc.mem.next_addr();
        let mut g = Tramp { a: Asm::new(base) };
        asm!(g;
            stp x29, x30, [sp, #-96]!
            ; mov x29, sp
            ; stp x19, x20, [sp, #16]
            ; stp x21, x22, [sp, #32]
            ; stp x23, x24, [sp, #48]
            ; stp x25, x26, [sp, #64]
            ; stp x27, x28, [sp, #80]
            ; sub sp, sp, #FRAME_BYTES as u32
            ; mov x28, x0
            ; br x1
        );
        let epi = g.a.offset().0;
        asm!(g;
            add sp, sp, #FRAME_BYTES as u32
            ; ldp x19, x20, [sp, #16]
            ; ldp x21, x22, [sp, #32]
            ; ldp x23, x24, [sp, #48]
            ; ldp x25, x26, [sp, #64]
            ; ldp x27, x28, [sp, #80]
            ; ldp x29, x30, [sp], #96
            ; ret
        );
        let code = g.a.finalize().expect("trampoline");
        let p = self
            .cc
            .mem
            .write(&code)
            .expect("code region too small for the trampoline");
        self.cc.prologue = p as usize;
        self.epilogue = p as usize + epi;
    }
}

impl Default for A64Backend {
    fn default() -> Self {
        Self::new()
    }
}

struct Tramp {
    a: Asm,
}

impl Backend for A64Backend {
    fn name(&self) -> &'static str {
        "aarch64"
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
        let mut g = Gen {
            a: Asm::new(base),
            tb,
            helpers,
            pc_global,
            mmu_idx: block.mmu_idx,
            mode: block.mode,
            loc: alloc.loc,
            caller_live: alloc.caller_live,
            extra: 0,
            labels: Vec::new(),
            fault_labels: vec![
                None;
                block
                    .ops
                    .iter()
                    .filter(|o| matches!(o, Op::InsnStart { .. }))
                    .count()
                    .max(1)
            ],
            stubs: Vec::new(),
            lits: Vec::new(),
            epilogue: self.epilogue,
            slots: self.cc.slots as usize,
            next_slot: slot_base,
            exit_defaults: Vec::new(),
        };
        let total_slots = SAVE_SLOTS + alloc.nspill;
        let need = (total_slots * 8) as i32;
        if need > FRAME_BYTES {
            g.extra = (need - FRAME_BYTES + 15) & !15;
        }
        g.labels = (0..block.nlabels)
            .map(|_| g.a.new_dynamic_label())
            .collect();
        g.emit_block(block);
        g.a.commit().expect("aarch64 backend: bad labels in block");
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
        let code =
            g.a.finalize()
                .expect("aarch64 backend: assembly failed (block code over 1 MiB?)");
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

    fn entry_addr(&self, code: CodeHandle) -> Option<u64> {
        self.cc.entry_addr(code)
    }

    fn unchain(&mut self, from: CodeHandle, exit: u32) {
        self.cc.unchain(from, exit)
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
// Code generation (register allocation: see `super::regalloc`)

/// aarch64 condition codes used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cc {
    Eq,
    Ne,
    Lo,
    Ls,
    Hi,
    Hs,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cc {
    fn of(c: Cond) -> Cc {
        match c {
            Cond::Eq | Cond::TstZ => Cc::Eq,
            Cond::Ne | Cond::TstNz => Cc::Ne,
            Cond::LtU => Cc::Lo,
            Cond::LeU => Cc::Ls,
            Cond::GtU => Cc::Hi,
            Cond::GeU => Cc::Hs,
            Cond::LtS => Cc::Lt,
            Cond::LeS => Cc::Le,
            Cond::GtS => Cc::Gt,
            Cond::GeS => Cc::Ge,
        }
    }
}

/// Load/store forms used for env and frame accesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ls {
    LdX,
    LdW,
    StX,
    StW,
}

/// Out-of-line code emitted after the block's main path.
enum Stub {
    Slow {
        label: DynamicLabel,
        back: DynamicLabel,
        store: bool,
        addr: Loc,
        val: Option<Val>,
        dst: Option<Loc>,
        info: u64,
        save: u32,
        insn: u32,
    },
}

struct Gen<'a> {
    a: Asm,
    tb: u32,
    helpers: &'a [HelperInfo],
    pc_global: Global,
    mmu_idx: u32,
    /// The block's mode word (for the indirect-jump cache probe).
    mode: u64,
    loc: Vec<Loc>,
    caller_live: Vec<u32>,
    extra: i32,
    labels: Vec<DynamicLabel>,
    fault_labels: Vec<Option<DynamicLabel>>,
    stubs: Vec<Stub>,
    /// The literal pool: (label, value), emitted at the end of the block.
    lits: Vec<(DynamicLabel, u64)>,
    epilogue: usize,
    slots: usize,
    next_slot: usize,
    /// Per static exit: (slot, label of the default return code) for jumps.
    exit_defaults: Vec<Option<(usize, DynamicLabel)>>,
}

fn gofs(g: Global) -> i64 {
    8 * g as i64
}

fn logical64(v: u64) -> bool {
    encode_logical_immediate_64bit(v).is_some()
}

fn logical32(v: u32) -> bool {
    encode_logical_immediate_32bit(v).is_some()
}

impl Gen<'_> {
    fn dloc(&self, t: Temp) -> Loc {
        self.loc[t.idx()]
    }

    /// The register an op computes its result in: the destination's, or x0.
    fn work(&self, d: Loc) -> u8 {
        match d {
            Loc::R(r) => r,
            Loc::S(_) => T0,
        }
    }

    /// A register holding temp `t` (loaded into `scratch` when spilled).
    fn treg(&mut self, t: Temp, scratch: u8) -> u8 {
        match self.loc[t.idx()] {
            Loc::R(r) => r,
            Loc::S(o) => {
                self.mem(Ls::LdX, scratch, SP, o as i64);
                scratch
            }
        }
    }

    /// A register holding `v` (xzr for 0; only for operand fields where 31 means zr).
    fn vreg(&mut self, v: Val, scratch: u8) -> u8 {
        match v {
            Val::T(t) => self.treg(t, scratch),
            Val::C(0) => ZR,
            Val::C(c) => {
                self.load_imm(scratch, c);
                scratch
            }
        }
    }

    /// Register `r` = the value at `l`.
    fn mov_from_loc(&mut self, r: u8, l: Loc) {
        match l {
            Loc::R(s) => {
                if s != r {
                    asm!(self; mov X(r), X(s));
                }
            }
            Loc::S(o) => self.mem(Ls::LdX, r, SP, o as i64),
        }
    }

    /// Register `r` = `v`.
    fn mov_val(&mut self, r: u8, v: Val) {
        match v {
            Val::T(t) => {
                let l = self.loc[t.idx()];
                self.mov_from_loc(r, l);
            }
            Val::C(c) => self.load_imm(r, c),
        }
    }

    /// Move 64-bit register `r` (31 = xzr) into `d`.
    fn put(&mut self, d: Loc, r: u8) {
        match d {
            Loc::R(x) => {
                if x != r {
                    asm!(self; mov X(x), X(r));
                }
            }
            Loc::S(o) => self.mem(Ls::StX, r, SP, o as i64),
        }
    }

    /// A load or store of `rt` at `[base + off]` (base 31 = sp), with whichever encoding
    /// reaches `off`: scaled unsigned 12-bit, unscaled signed 9-bit, or a register offset
    /// materialised in x7.
    fn mem(&mut self, k: Ls, rt: u8, base: u8, off: i64) {
        let scale = match k {
            Ls::LdX | Ls::StX => 8,
            Ls::LdW | Ls::StW => 4,
        };
        if off >= 0 && off % scale == 0 && off / scale < 4096 {
            let o = off as u32;
            match k {
                Ls::LdX => asm!(self; ldr X(rt), [XSP(base), #o]),
                Ls::LdW => asm!(self; ldr W(rt), [XSP(base), #o]),
                Ls::StX => asm!(self; str X(rt), [XSP(base), #o]),
                Ls::StW => asm!(self; str W(rt), [XSP(base), #o]),
            }
        } else if (-256..256).contains(&off) {
            let o = off as i32;
            match k {
                Ls::LdX => asm!(self; ldur X(rt), [XSP(base), #o]),
                Ls::LdW => asm!(self; ldur W(rt), [XSP(base), #o]),
                Ls::StX => asm!(self; stur X(rt), [XSP(base), #o]),
                Ls::StW => asm!(self; stur W(rt), [XSP(base), #o]),
            }
        } else {
            assert!(rt != FAR && base != FAR);
            self.load_imm(FAR, off as u64);
            match k {
                Ls::LdX => asm!(self; ldr X(rt), [XSP(base), X(FAR)]),
                Ls::LdW => asm!(self; ldr W(rt), [XSP(base), X(FAR)]),
                Ls::StX => asm!(self; str X(rt), [XSP(base), X(FAR)]),
                Ls::StW => asm!(self; str W(rt), [XSP(base), X(FAR)]),
            }
        }
    }

    /// `movz`/`movn`/`movk` of one halfword at `sh` (0, 16, 32, 48).
    fn movz(&mut self, r: u8, h: u32, sh: u32) {
        asm!(self; movz X(r), #h, LSL #sh);
    }

    fn movn(&mut self, r: u8, h: u32, sh: u32) {
        asm!(self; movn X(r), #h, LSL #sh);
    }

    fn movk(&mut self, r: u8, h: u32, sh: u32) {
        asm!(self; movk X(r), #h, LSL #sh);
    }

    /// Register `r` = `v`, in the fewest instructions among movz/movn (+movk) and a bitmask
    /// `orr`.
    fn load_imm(&mut self, r: u8, v: u64) {
        debug_assert!(r != ZR);
        let hw = |i: u32| ((v >> (16 * i)) & 0xffff) as u32;
        let nz = (0..4).filter(|&i| hw(i) != 0).count();
        let nf = (0..4).filter(|&i| hw(i) != 0xffff).count();
        if nz <= 1 {
            let i = (0..4).find(|&i| hw(i) != 0).unwrap_or(0);
            self.movz(r, hw(i), 16 * i);
            return;
        }
        if nf <= 1 {
            let i = (0..4).find(|&i| hw(i) != 0xffff).unwrap_or(0);
            self.movn(r, !hw(i) & 0xffff, 16 * i);
            return;
        }
        if v >> 32 == 0 {
            // Two halfwords in the low word: a w-register movn of the high half when it
            // is all ones, otherwise movz+movk (or a 32-bit bitmask).
            let v32 = v as u32;
            if hw(1) == 0xffff {
                let n = !hw(0) & 0xffff;
                asm!(self; movn W(r), #n);
                return;
            }
            if logical32(v32) {
                asm!(self; orr WSP(r), wzr, #v32);
                return;
            }
            let (lo, hi) = (hw(0), hw(1));
            asm!(self; movz W(r), #lo ; movk W(r), #hi, LSL #16);
            return;
        }
        if logical64(v) {
            asm!(self; orr XSP(r), xzr, #v);
            return;
        }
        if nz <= nf {
            let mut first = true;
            for i in 0..4 {
                if hw(i) != 0 {
                    if first {
                        self.movz(r, hw(i), 16 * i);
                        first = false;
                    } else {
                        self.movk(r, hw(i), 16 * i);
                    }
                }
            }
        } else {
            let mut first = true;
            for i in 0..4 {
                if hw(i) != 0xffff {
                    if first {
                        self.movn(r, !hw(i) & 0xffff, 16 * i);
                        first = false;
                    } else {
                        self.movk(r, hw(i), 16 * i);
                    }
                }
            }
        }
    }

    /// `d = s + imm` (64-bit, 31 = sp) for any immediate: one or two add/sub immediates
    /// when the magnitude is below 2^24, otherwise through `tmp`.
    fn add_imm(&mut self, d: u8, s: u8, imm: u64, tmp: u8) {
        let (neg, m) = if imm >> 63 == 0 {
            (false, imm)
        } else {
            (true, imm.wrapping_neg())
        };
        if m < 1 << 24 {
            let (hi, lo) = ((m >> 12) as u32, (m & 0xfff) as u32);
            let mut src = s;
            if hi != 0 {
                if neg {
                    asm!(self; sub XSP(d), XSP(src), #hi, LSL #12);
                } else {
                    asm!(self; add XSP(d), XSP(src), #hi, LSL #12);
                }
                src = d;
            }
            if lo != 0 || hi == 0 {
                if neg {
                    asm!(self; sub XSP(d), XSP(src), #lo);
                } else {
                    asm!(self; add XSP(d), XSP(src), #lo);
                }
            }
        } else {
            self.load_imm(tmp, imm);
            asm!(self; add XSP(d), XSP(s), X(tmp));
        }
    }

    /// A literal-pool entry holding `v`.
    fn lit(&mut self, v: u64) -> DynamicLabel {
        if let Some(&(l, _)) = self.lits.iter().find(|x| x.1 == v) {
            return l;
        }
        let l = self.a.new_dynamic_label();
        self.lits.push((l, v));
        l
    }

    fn leave_frame(&mut self) {
        if self.extra != 0 {
            self.add_imm(SP, SP, self.extra as u64, IP1);
        }
    }

    fn enter_frame(&mut self) {
        if self.extra != 0 {
            self.add_imm(SP, SP, (self.extra as u64).wrapping_neg(), IP1);
        }
    }

    /// Return `v` to the run loop.
    fn ret_to_loop(&mut self, v: u64) {
        self.leave_frame();
        self.load_imm(T0, v);
        asm!(self; b extern self.epilogue);
    }

    fn fault_label(&mut self, insn: u32) -> DynamicLabel {
        if let Some(l) = self.fault_labels[insn as usize] {
            return l;
        }
        let l = self.a.new_dynamic_label();
        self.fault_labels[insn as usize] = Some(l);
        l
    }

    fn bcond(&mut self, cc: Cc, l: DynamicLabel) {
        match cc {
            Cc::Eq => asm!(self; b.eq =>l),
            Cc::Ne => asm!(self; b.ne =>l),
            Cc::Lo => asm!(self; b.lo =>l),
            Cc::Ls => asm!(self; b.ls =>l),
            Cc::Hi => asm!(self; b.hi =>l),
            Cc::Hs => asm!(self; b.hs =>l),
            Cc::Lt => asm!(self; b.lt =>l),
            Cc::Le => asm!(self; b.le =>l),
            Cc::Gt => asm!(self; b.gt =>l),
            Cc::Ge => asm!(self; b.ge =>l),
        }
    }

    fn cset(&mut self, cc: Cc, d: u8) {
        match cc {
            Cc::Eq => asm!(self; cset X(d), eq),
            Cc::Ne => asm!(self; cset X(d), ne),
            Cc::Lo => asm!(self; cset X(d), lo),
            Cc::Ls => asm!(self; cset X(d), ls),
            Cc::Hi => asm!(self; cset X(d), hi),
            Cc::Hs => asm!(self; cset X(d), hs),
            Cc::Lt => asm!(self; cset X(d), lt),
            Cc::Le => asm!(self; cset X(d), le),
            Cc::Gt => asm!(self; cset X(d), gt),
            Cc::Ge => asm!(self; cset X(d), ge),
        }
    }

    fn csel(&mut self, cc: Cc, d: u8, t: u8, f: u8) {
        match cc {
            Cc::Eq => asm!(self; csel X(d), X(t), X(f), eq),
            Cc::Ne => asm!(self; csel X(d), X(t), X(f), ne),
            Cc::Lo => asm!(self; csel X(d), X(t), X(f), lo),
            Cc::Ls => asm!(self; csel X(d), X(t), X(f), ls),
            Cc::Hi => asm!(self; csel X(d), X(t), X(f), hi),
            Cc::Hs => asm!(self; csel X(d), X(t), X(f), hs),
            Cc::Lt => asm!(self; csel X(d), X(t), X(f), lt),
            Cc::Le => asm!(self; csel X(d), X(t), X(f), le),
            Cc::Gt => asm!(self; csel X(d), X(t), X(f), gt),
            Cc::Ge => asm!(self; csel X(d), X(t), X(f), ge),
        }
    }

    /// Set the flags for `cond(a, b)`; returns the condition code that is true when the
    /// condition holds. Clobbers x16, x17.
    fn compare(&mut self, cond: Cond, a: Temp, b: Val) -> Cc {
        let cc = Cc::of(cond);
        let ra = self.treg(a, IP0);
        let test = matches!(cond, Cond::TstZ | Cond::TstNz);
        match b {
            Val::C(c) if test && logical64(c) => asm!(self; tst X(ra), #c),
            Val::C(c) if !test && c < 4096 => {
                let i = c as u32;
                asm!(self; cmp XSP(ra), #i);
            }
            Val::C(c) if !test && c.wrapping_neg() < 4096 => {
                // cmp a, #-k == cmn a, #k: same flags for every condition (k != 0).
                let i = c.wrapping_neg() as u32;
                asm!(self; cmn XSP(ra), #i);
            }
            _ => {
                let rb = self.vreg(b, IP1);
                if test {
                    asm!(self; tst X(ra), X(rb));
                } else {
                    asm!(self; cmp X(ra), X(rb));
                }
            }
        }
        cc
    }

    fn emit_block(&mut self, block: &Block) {
        let budget = self.a.new_dynamic_label();
        // Entry: budget check, then record the running TB.
        self.mem(Ls::LdX, IP0, ENV, OFF_ICOUNT as i64);
        self.mem(Ls::LdX, IP1, ENV, OFF_ICOUNT_LIMIT as i64);
        asm!(self; cmp x16, x17);
        self.bcond(Cc::Hs, budget);
        self.load_imm(IP0, self.tb as u64);
        self.mem(Ls::StW, IP0, ENV, OFF_CUR_TB as i64);
        self.enter_frame();
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
                    let d = self.dloc(dst);
                    match (d, val) {
                        (Loc::S(_), 0) => self.put(d, ZR),
                        _ => {
                            let r = self.work(d);
                            self.load_imm(r, val);
                            self.put(d, r);
                        }
                    }
                }
                Op::Mov { dst, src } => {
                    let d = self.dloc(dst);
                    if d != self.dloc(src) {
                        let r = self.treg(src, T0);
                        self.put(d, r);
                    }
                }
                Op::GetG { dst, g } => {
                    let d = self.dloc(dst);
                    let r = self.work(d);
                    self.mem(Ls::LdX, r, ENV, gofs(g));
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
                    let cc = self.compare(cond, a, b);
                    let d = self.dloc(dst);
                    let r = self.work(d);
                    self.cset(cc, r);
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
                    asm!(self; b =>l);
                }
                Op::BrCond { cond, a, b, label } => {
                    let l = self.labels[label as usize];
                    match (cond, b) {
                        (Cond::Eq, Val::C(0)) => {
                            let ra = self.treg(a, IP0);
                            asm!(self; cbz X(ra), =>l);
                        }
                        (Cond::Ne, Val::C(0)) => {
                            let ra = self.treg(a, IP0);
                            asm!(self; cbnz X(ra), =>l);
                        }
                        _ => {
                            let cc = self.compare(cond, a, b);
                            self.bcond(cc, l);
                        }
                    }
                }
                Op::Exit(e) => self.exit(insn, e),
            }
        }
        // A well-formed block never falls off its end.
        asm!(self; brk #0);

        // Out-of-line code.
        let stubs = std::mem::take(&mut self.stubs);
        for s in stubs {
            self.emit_stub(s);
        }
        for insn in 0..self.fault_labels.len() {
            if let Some(l) = self.fault_labels[insn] {
                asm!(self; =>l);
                self.ret_to_loop(ret::encode(self.tb, insn as u32, ret::FAULT));
            }
        }
        asm!(self; =>budget);
        // The frame has not been grown yet at this point.
        self.load_imm(T0, ret::encode(self.tb, 0, ret::BUDGET));
        asm!(self; b extern self.epilogue);
        // Literal pool.
        let lits = std::mem::take(&mut self.lits);
        if !lits.is_empty() {
            asm!(self; .align 8);
            for (l, v) in lits {
                asm!(self; =>l ; .u64 v);
            }
        }
    }

    fn exit(&mut self, insn: u32, e: Exit) {
        let idx = self.exit_defaults.len() as u32;
        let n = insn as u64 + 1;
        let pcg = gofs(self.pc_global);
        match e {
            Exit::Jump { pc } | Exit::Repeat { pc } => {
                let r = self.vreg(Val::C(pc), IP0);
                self.mem(Ls::StX, r, ENV, pcg);
                // A repeating instruction does not retire.
                let n = if matches!(e, Exit::Repeat { .. }) {
                    n - 1
                } else {
                    n
                };
                self.add_icount(n);
                self.leave_frame();
                let slot = self.next_slot;
                self.next_slot += 1;
                let slot_addr = (self.slots + 8 * slot) as u64;
                let lit = self.lit(slot_addr);
                let l = self.a.new_dynamic_label();
                asm!(self;
                    ldr x16, =>lit
                    ; ldr x16, [x16]
                    ; br x16
                    ; =>l
                );
                self.load_imm(T0, ret::encode(self.tb, idx, ret::EXIT));
                asm!(self; b extern self.epilogue);
                self.exit_defaults.push(Some((slot, l)));
            }
            Exit::Indirect { pc } => {
                let l = self.dloc(pc);
                self.mov_from_loc(T1, l);
                self.mem(Ls::StX, T1, ENV, pcg);
                self.add_icount(n);
                self.leave_frame();
                // Probe the indirect-jump cache: index (pc ^ pc >> JC_BITS) & (JC_ENTRIES-1),
                // hit when pc, the mode word and the epoch match; then enter the cached block.
                let miss = self.a.new_dynamic_label();
                let (jbits, jmask) = (JC_BITS, (JC_ENTRIES - 1) as u64);
                self.add_imm(IP0, ENV, OFF_JC as u64, IP1);
                asm!(self;
                    eor x17, x1, x1, LSR #jbits
                    ; and x17, x17, #jmask
                    ; add x16, x16, x17, LSL #5
                    ; ldp x17, x2, [x16]
                    ; cmp x17, x1
                    ; b.ne =>miss
                );
                self.load_imm(T3, self.mode);
                asm!(self;
                    cmp x2, x3
                    ; b.ne =>miss
                );
                // The epoch of pc's half: env.jc_epoch[pc >> 63].
                self.add_imm(T3, ENV, OFF_JC_EPOCH as u64, T2);
                asm!(self;
                    lsr x2, x1, #63
                    ; ldr x3, [x3, x2, lsl #3]
                    ; ldr x2, [x16, #24]
                    ; cmp x2, x3
                    ; b.ne =>miss
                    ; ldr x16, [x16, #16]
                    ; br x16
                    ; =>miss
                );
                self.load_imm(T0, ret::encode(self.tb, idx, ret::EXIT));
                asm!(self; b extern self.epilogue);
                self.exit_defaults.push(None);
            }
            Exit::Exception { .. } | Exit::Platform { .. } | Exit::Sync { .. } => {
                // The run loop does the bookkeeping.
                self.ret_to_loop(ret::encode(self.tb, idx, ret::EXIT));
                self.exit_defaults.push(None);
            }
        }
    }

    fn add_icount(&mut self, n: u64) {
        if n != 0 {
            self.mem(Ls::LdX, IP0, ENV, OFF_ICOUNT as i64);
            self.add_imm(IP0, IP0, n, IP1);
            self.mem(Ls::StX, IP0, ENV, OFF_ICOUNT as i64);
        }
    }

    /// `d = a +/- c` with an immediate form, if one encodes it.
    fn addsub_imm(&mut self, sub: bool, w: Width, d: u8, ra: u8, c: u64) -> bool {
        let (c, neg) = match w {
            Width::W64 => (c, c.wrapping_neg()),
            Width::W32 => (c as u32 as u64, (c as u32).wrapping_neg() as u64),
        };
        let (sub, i) = if c < 4096 {
            (sub, c as u32)
        } else if neg < 4096 {
            (!sub, neg as u32)
        } else {
            return false;
        };
        match (sub, w) {
            (false, Width::W64) => asm!(self; add XSP(d), XSP(ra), #i),
            (true, Width::W64) => asm!(self; sub XSP(d), XSP(ra), #i),
            (false, Width::W32) => asm!(self; add WSP(d), WSP(ra), #i),
            (true, Width::W32) => asm!(self; sub WSP(d), WSP(ra), #i),
        }
        true
    }

    fn bin(&mut self, op: BinOp, w: Width, dst: Temp, a: Temp, b: Val) {
        use BinOp::*;
        let dl = self.dloc(dst);
        let ra = self.treg(a, T1);
        let d = self.work(dl);
        let w64 = w == Width::W64;
        match op {
            Add | Sub => {
                let done = match b {
                    Val::C(c) => self.addsub_imm(op == Sub, w, d, ra, c),
                    Val::T(_) => false,
                };
                if !done {
                    let rb = self.vreg(b, T2);
                    match (op, w64) {
                        (Add, true) => asm!(self; add X(d), X(ra), X(rb)),
                        (Add, false) => asm!(self; add W(d), W(ra), W(rb)),
                        (_, true) => asm!(self; sub X(d), X(ra), X(rb)),
                        (_, false) => asm!(self; sub W(d), W(ra), W(rb)),
                    }
                }
            }
            And | Or | Xor => {
                let imm = match b {
                    Val::C(c) if w64 && logical64(c) => Some(c),
                    Val::C(c) if !w64 && logical32(c as u32) => Some(c as u32 as u64),
                    _ => None,
                };
                match imm {
                    Some(c) => {
                        let c32 = c as u32;
                        match (op, w64) {
                            (And, true) => asm!(self; and XSP(d), X(ra), #c),
                            (And, false) => asm!(self; and WSP(d), W(ra), #c32),
                            (Or, true) => asm!(self; orr XSP(d), X(ra), #c),
                            (Or, false) => asm!(self; orr WSP(d), W(ra), #c32),
                            (_, true) => asm!(self; eor XSP(d), X(ra), #c),
                            (_, false) => asm!(self; eor WSP(d), W(ra), #c32),
                        }
                    }
                    None => {
                        let rb = self.vreg(b, T2);
                        match (op, w64) {
                            (And, true) => asm!(self; and X(d), X(ra), X(rb)),
                            (And, false) => asm!(self; and W(d), W(ra), W(rb)),
                            (Or, true) => asm!(self; orr X(d), X(ra), X(rb)),
                            (Or, false) => asm!(self; orr W(d), W(ra), W(rb)),
                            (_, true) => asm!(self; eor X(d), X(ra), X(rb)),
                            (_, false) => asm!(self; eor W(d), W(ra), W(rb)),
                        }
                    }
                }
            }
            Mul => {
                let rb = self.vreg(b, T2);
                if w64 {
                    asm!(self; mul X(d), X(ra), X(rb));
                } else {
                    asm!(self; mul W(d), W(ra), W(rb));
                }
            }
            MulHU | MulHS => {
                let rb = self.vreg(b, T2);
                match (op, w64) {
                    (MulHU, true) => asm!(self; umulh X(d), X(ra), X(rb)),
                    (_, true) => asm!(self; smulh X(d), X(ra), X(rb)),
                    (MulHU, false) => asm!(self; umull X(d), W(ra), W(rb) ; lsr X(d), X(d), #32),
                    (_, false) => asm!(self; smull X(d), W(ra), W(rb) ; lsr X(d), X(d), #32),
                }
            }
            Shl | Shr | Sar | Rotl | Rotr => self.shift(op, w64, d, ra, b),
        }
        self.put(dl, d);
    }

    fn shift(&mut self, op: BinOp, w64: bool, d: u8, ra: u8, b: Val) {
        use BinOp::*;
        let bits: u32 = if w64 { 64 } else { 32 };
        match b {
            Val::C(c) => {
                let mut n = (c & (bits as u64 - 1)) as u32;
                if op == Rotl {
                    n = (bits - n) & (bits - 1);
                }
                if n == 0 {
                    // Identity (zero-extended for W32).
                    if !w64 {
                        asm!(self; mov W(d), W(ra));
                    } else if d != ra {
                        asm!(self; mov X(d), X(ra));
                    }
                    return;
                }
                match (op, w64) {
                    (Shl, true) => asm!(self; lsl X(d), X(ra), #n),
                    (Shl, false) => asm!(self; lsl W(d), W(ra), #n),
                    (Shr, true) => asm!(self; lsr X(d), X(ra), #n),
                    (Shr, false) => asm!(self; lsr W(d), W(ra), #n),
                    (Sar, true) => asm!(self; asr X(d), X(ra), #n),
                    (Sar, false) => asm!(self; asr W(d), W(ra), #n),
                    (_, true) => asm!(self; ror X(d), X(ra), #n),
                    (_, false) => asm!(self; ror W(d), W(ra), #n),
                }
            }
            Val::T(t) => {
                let mut rb = self.treg(t, T2);
                if op == Rotl {
                    // rotl(a, n) == rotr(a, -n); rorv takes the count modulo the width.
                    asm!(self; neg X(T2), X(rb));
                    rb = T2;
                }
                match (op, w64) {
                    (Shl, true) => asm!(self; lsl X(d), X(ra), X(rb)),
                    (Shl, false) => asm!(self; lsl W(d), W(ra), W(rb)),
                    (Shr, true) => asm!(self; lsr X(d), X(ra), X(rb)),
                    (Shr, false) => asm!(self; lsr W(d), W(ra), W(rb)),
                    (Sar, true) => asm!(self; asr X(d), X(ra), X(rb)),
                    (Sar, false) => asm!(self; asr W(d), W(ra), W(rb)),
                    (_, true) => asm!(self; ror X(d), X(ra), X(rb)),
                    (_, false) => asm!(self; ror W(d), W(ra), W(rb)),
                }
            }
        }
    }

    fn un(&mut self, op: UnOp, w: Width, dst: Temp, a: Temp) {
        let dl = self.dloc(dst);
        let ra = self.treg(a, T1);
        let d = self.work(dl);
        let w64 = w == Width::W64;
        match (op, w64) {
            (UnOp::Not, true) => asm!(self; mvn X(d), X(ra)),
            (UnOp::Not, false) => asm!(self; mvn W(d), W(ra)),
            (UnOp::Neg, true) => asm!(self; neg X(d), X(ra)),
            (UnOp::Neg, false) => asm!(self; neg W(d), W(ra)),
            (UnOp::Bswap, true) => asm!(self; rev X(d), X(ra)),
            (UnOp::Bswap, false) => asm!(self; rev W(d), W(ra)),
            (UnOp::Clz, true) => asm!(self; clz X(d), X(ra)),
            (UnOp::Clz, false) => asm!(self; clz W(d), W(ra)),
            (UnOp::Ctz, true) => asm!(self; rbit X(d), X(ra) ; clz X(d), X(d)),
            (UnOp::Ctz, false) => asm!(self; rbit W(d), W(ra) ; clz W(d), W(d)),
            (UnOp::Popcnt, _) => {
                // No scalar popcount before FEAT_CSSC: count bits per byte in v0 and sum.
                if w64 {
                    asm!(self; fmov d0, X(ra));
                } else {
                    asm!(self; fmov s0, W(ra));
                }
                asm!(self;
                    cnt v0.B8, v0.B8
                    ; addv b0, v0.B8
                    ; fmov W(d), s0
                );
            }
        }
        self.put(dl, d);
    }

    fn ext(&mut self, dst: Temp, a: Temp, from: MemSize, signed: bool) {
        let dl = self.dloc(dst);
        let ra = self.treg(a, T1);
        let d = self.work(dl);
        match (from, signed) {
            (MemSize::B1, false) => asm!(self; uxtb W(d), W(ra)),
            (MemSize::B2, false) => asm!(self; uxth W(d), W(ra)),
            (MemSize::B4, false) => asm!(self; mov W(d), W(ra)),
            (MemSize::B1, true) => asm!(self; sxtb X(d), W(ra)),
            (MemSize::B2, true) => asm!(self; sxth X(d), W(ra)),
            (MemSize::B4, true) => asm!(self; sxtw X(d), W(ra)),
            (MemSize::B8, _) => {
                if d != ra {
                    asm!(self; mov X(d), X(ra));
                }
            }
        }
        self.put(dl, d);
    }

    fn select(&mut self, cond: Cond, dst: Temp, a: Temp, b: Val, t: Val, f: Val) {
        let dl = self.dloc(dst);
        let cc = self.compare(cond, a, b);
        // Materialising operands does not touch the flags.
        let rt = self.vreg(t, T1);
        let rf = self.vreg(f, T2);
        let d = self.work(dl);
        self.csel(cc, d, rt, rf);
        self.put(dl, d);
    }

    /// Registers x8..x15 live across op `i`: saved to the bottom of the frame (in pairs
    /// where possible).
    fn save(&mut self, mask: u32) {
        let mut k = 0;
        while k < CALLER_POOL.len() {
            if mask & (1 << k) != 0 {
                let o = 8 * k as i32;
                let r = CALLER_POOL[k];
                if k + 1 < CALLER_POOL.len() && mask & (1 << (k + 1)) != 0 {
                    let r2 = CALLER_POOL[k + 1];
                    asm!(self; stp X(r), X(r2), [sp, #o]);
                    k += 2;
                    continue;
                }
                self.mem(Ls::StX, r, SP, o as i64);
            }
            k += 1;
        }
    }

    fn restore(&mut self, mask: u32) {
        let mut k = 0;
        while k < CALLER_POOL.len() {
            if mask & (1 << k) != 0 {
                let o = 8 * k as i32;
                let r = CALLER_POOL[k];
                if k + 1 < CALLER_POOL.len() && mask & (1 << (k + 1)) != 0 {
                    let r2 = CALLER_POOL[k + 1];
                    asm!(self; ldp X(r), X(r2), [sp, #o]);
                    k += 2;
                    continue;
                }
                self.mem(Ls::LdX, r, SP, o as i64);
            }
            k += 1;
        }
    }

    /// Call an absolute address through x16 (the literal pool holds it).
    fn call_abs(&mut self, f: usize) {
        let l = self.lit(f as u64);
        asm!(self; ldr x16, =>l ; blr x16);
    }

    fn check_fault(&mut self, insn: u32) {
        let l = self.fault_label(insn);
        self.mem(Ls::LdW, IP0, ENV, OFF_FAULT as i64);
        asm!(self; cbnz w16, =>l);
    }

    fn call(&mut self, i: usize, insn: u32, helper: usize, args: &[Val], dst: Option<Temp>) {
        let h = self.helpers[helper];
        let save = self.caller_live[i];
        self.save(save);
        // Arguments come from pool registers, spill slots or constants, never from x0..x4.
        for k in 0..4u8 {
            match args.get(k as usize) {
                Some(&v) => self.mov_val(1 + k, v),
                None => self.load_imm(1 + k, 0),
            }
        }
        asm!(self; mov x0, x28);
        self.call_abs(h.func as usize);
        self.restore(save);
        if h.can_fault {
            self.check_fault(insn);
        }
        if let Some(d) = dst {
            let dl = self.dloc(d);
            self.put(dl, T0);
        }
    }

    /// Store `v` into global `g`.
    fn set_global(&mut self, g: Global, v: Val) {
        let r = self.vreg(v, IP0);
        self.mem(Ls::StX, r, ENV, gofs(g));
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
        let info = mem_info(size, if store { false } else { mop.signed }, mop.kind)
            | if mop.rmw {
                crate::engine::MEM_INFO_RMW
            } else {
                0
            };
        // Store values are truncated to the access size.
        let val = match val {
            Some(Val::C(c)) => Some(Val::C(c & size.mask())),
            v => v,
        };
        let al = self.dloc(addr);
        let dl = dst.map(|d| self.dloc(d));
        let save = self.caller_live[i];
        if mop.kind == AccessKind::System {
            self.slow_call(store, al, val, info, save);
            self.check_fault(insn);
            if let Some(d) = dl {
                self.put(d, T0);
            }
            return;
        }
        let ra = self.treg(addr, T2);
        let slow = self.a.new_dynamic_label();
        let back = self.a.new_dynamic_label();
        // TLB probe (see interp::tlb_probe): index from the first byte, tag from the last.
        // x16 = env + 32*index (+ the mode's table base when it is far), x17 = tag, then
        // the addend.
        let mut tlb = OFF_TLB as i64 + (self.mmu_idx as usize * TLB_SIZE * TLB_ENTRY_BYTES) as i64;
        let (pb, tb, f) = (PAGE_BITS, TLB_BITS, TLB_FOLD);
        let pmask = PAGE_MASK;
        // index = ((a >> 12) ^ (a >> (12 + TLB_FOLD))) & (TLB_SIZE-1) (env::tlb_index)
        asm!(self;
            eor x16, X(ra), X(ra), LSR #f
            ; ubfx x16, x16, #pb, #tb
            ; add x16, x28, x16, LSL #5
        );
        if tlb + 24 > 32760 {
            // This mode's table is beyond the scaled 12-bit offsets: fold its base in.
            self.add_imm(IP0, IP0, tlb as u64, IP1);
            tlb = 0;
        }
        let tag = tlb + if store || mop.rmw { 8 } else { 0 };
        let addend = tlb + 24;
        self.mem(Ls::LdX, IP1, IP0, tag);
        if size == MemSize::B1 {
            asm!(self; and x3, X(ra), #pmask);
        } else {
            let last = size.bytes() - 1;
            asm!(self; add x3, XSP(ra), #last ; and x3, x3, #pmask);
        }
        asm!(self; cmp x17, x3);
        self.bcond(Cc::Ne, slow);
        self.mem(Ls::LdX, IP1, IP0, addend);
        if store {
            let rv = self.vreg(val.expect("store value"), T1);
            match size {
                MemSize::B1 => asm!(self; strb W(rv), [x17, X(ra)]),
                MemSize::B2 => asm!(self; strh W(rv), [x17, X(ra)]),
                MemSize::B4 => asm!(self; str W(rv), [x17, X(ra)]),
                MemSize::B8 => asm!(self; str X(rv), [x17, X(ra)]),
            }
        } else {
            let d = dl.expect("load destination");
            let r = self.work(d);
            match (size, mop.signed) {
                (MemSize::B1, false) => asm!(self; ldrb W(r), [x17, X(ra)]),
                (MemSize::B1, true) => asm!(self; ldrsb X(r), [x17, X(ra)]),
                (MemSize::B2, false) => asm!(self; ldrh W(r), [x17, X(ra)]),
                (MemSize::B2, true) => asm!(self; ldrsh X(r), [x17, X(ra)]),
                (MemSize::B4, false) => asm!(self; ldr W(r), [x17, X(ra)]),
                (MemSize::B4, true) => asm!(self; ldrsw X(r), [x17, X(ra)]),
                (MemSize::B8, _) => asm!(self; ldr X(r), [x17, X(ra)]),
            }
            self.put(d, r);
        }
        asm!(self; =>back);
        self.stubs.push(Stub::Slow {
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

    /// Call the softmmu slow path (result in x0 for loads). Saves live x8..x15.
    fn slow_call(&mut self, store: bool, addr: Loc, val: Option<Val>, info: u64, save: u32) {
        self.save(save);
        self.mov_from_loc(T1, addr);
        if store {
            self.mov_val(T2, val.expect("store value"));
            self.load_imm(T3, info);
        } else {
            self.load_imm(T2, info);
        }
        asm!(self; mov x0, x28);
        if store {
            self.call_abs(slow_store as *const () as usize);
        } else {
            self.call_abs(slow_load as *const () as usize);
        }
        self.restore(save);
    }

    fn emit_stub(&mut self, s: Stub) {
        match s {
            Stub::Slow {
                label,
                back,
                store,
                addr,
                val,
                dst,
                info,
                save,
                insn,
            } => {
                asm!(self; =>label);
                self.slow_call(store, addr, val, info, save);
                self.check_fault(insn);
                if let Some(d) = dst {
                    self.put(d, T0);
                }
                asm!(self; b =>back);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The backend-independent tests live in [`super::super::testkit`]; these run them on
    //! this backend (also with a small code buffer) and keep the aarch64-specific ones.

    use super::*;
    use crate::backend::testkit::{self, helpers, PC};
    use crate::ir::Builder;

    #[test]
    fn differential_random_blocks() {
        let mut be = A64Backend::new();
        testkit::differential(6000, 0x9e37_79b9_7f4a_7c15, &mut be);
        assert_eq!(
            testkit::misaligned_calls(),
            0,
            "helpers called with a misaligned stack"
        );
    }

    #[test]
    fn differential_second_seed() {
        testkit::differential(3000, 0x1234_5678_9abc_def1, &mut A64Backend::new());
    }

    /// A longer soak (`--ignored`); `XENOLITH_SEED` picks the seed.
    #[test]
    #[ignore]
    fn differential_long() {
        let seed = std::env::var("XENOLITH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0xdead_beef_1234_5679);
        testkit::differential(40000, seed | 1, &mut A64Backend::new());
        assert_eq!(testkit::misaligned_calls(), 0);
    }

    #[test]
    fn differential_small_code_buffer_flushes() {
        // Many compiles into one backend, flushing whenever it reports full.
        let mut be = A64Backend::with_code_size(2 << 20);
        testkit::differential(3000, 0x5151_1234_0000_0001, &mut be);
    }

    /// Every op on edge values against `eval`.
    #[test]
    fn directed_ops_against_eval() {
        testkit::directed_ops_against_eval(&mut A64Backend::new(), "aarch64");
    }

    /// Immediate materialisation on values that exercise every path of `load_imm`
    /// (movz, movn, w-forms, bitmask orr, movz/movn + movk).
    #[test]
    fn constants_materialise() {
        let hs = helpers();
        let mut be = A64Backend::new();
        let mut e = testkit::engine();
        let mut vals = vec![
            0u64,
            1,
            0xffff,
            0x1_0000,
            0xffff_0000,
            0xffff_ffff,
            0xffff_fffe,
            0x8000_0000,
            0x1234_5678,
            0x0000_ffff_0000_0000,
            0xffff_ffff_ffff_ffff,
            0xffff_ffff_ffff_1234,
            0xffff_1234_ffff_ffff,
            0x5555_5555_5555_5555,
            0x0f0f_0f0f_0f0f_0f0f,
            0x1234_5678_9abc_def0,
            0x1234_0000_0000_5678,
            0xffff_1234_5678_ffff,
            0x8000_0000_0000_0000,
            0xffff_ffff_0000_0000,
        ];
        let mut r = testkit::Rng(0x77);
        for _ in 0..200 {
            let x = r.next();
            vals.push(x);
            vals.push(x & 0xffff_0000_ffff);
            vals.push(x | 0xffff_0000_ffff_0000);
        }
        for chunk in vals.chunks(4) {
            let mut b = Builder::new();
            b.insn_start(0);
            for (k, &v) in chunk.iter().enumerate() {
                let t = b.konst(v);
                b.set(3 + k as u16, t);
                // Also as an operand of add/and/cmp/select with a constant.
                let x = b.get(1);
                let s = b.add(x, Val::C(v));
                b.set(10 + k as u16, s);
                let s = b.and(x, Val::C(v));
                b.set(20 + k as u16, s);
                let s = b.bin(BinOp::Xor, Width::W32, x, Val::C(v));
                b.set(30 + k as u16, s);
                let s = b.setcond(Cond::LtU, x, Val::C(v));
                b.set(40 + k as u16, s);
                let s = b.setcond(Cond::TstNz, x, Val::C(v));
                b.set(50 + k as u16, s);
            }
            b.exit(Exit::Jump { pc: 0 });
            let blk = b.finish();
            let c = be.compile(&blk, 1, &hs, PC).unwrap();
            e.env.g[1] = 0x0123_4567_89ab_cdef;
            assert_eq!(
                testkit::exec(&mut be, &mut e, c),
                ret::encode(1, 0, ret::EXIT)
            );
            let x = e.env.g[1];
            for (k, &v) in chunk.iter().enumerate() {
                assert_eq!(e.env.g[3 + k], v, "const {v:#x}");
                assert_eq!(e.env.g[10 + k], x.wrapping_add(v), "add {v:#x}");
                assert_eq!(e.env.g[20 + k], x & v, "and {v:#x}");
                assert_eq!(
                    e.env.g[30 + k],
                    (x as u32 ^ v as u32) as u64,
                    "xor32 {v:#x}"
                );
                assert_eq!(e.env.g[40 + k], (x < v) as u64, "ltu {v:#x}");
                assert_eq!(e.env.g[50 + k], (x & v != 0) as u64, "tstnz {v:#x}");
            }
        }
    }

    /// Blocks with more spill slots than the fixed frame, including offsets beyond the
    /// scaled 12-bit range (frame grown at entry, shrunk at every exit).
    #[test]
    fn huge_frames() {
        let hs = helpers();
        let mut be = A64Backend::new();
        for n in [100u64, 200, 5000] {
            let mut e = testkit::engine();
            let mut b = Builder::new();
            b.insn_start(0x100);
            let x = b.get(1);
            let ts: Vec<Temp> = (0..n)
                .map(|i| b.bin(BinOp::Mul, Width::W64, x, Val::C(i + 3)))
                .collect();
            // A helper call with everything live, then sum them all.
            let h = b.call(crate::ir::HelperId(0), &[Val::T(ts[0]), Val::C(1)]);
            let mut acc = b.konst(0);
            for &t in &ts {
                acc = b.bin(BinOp::Add, Width::W64, acc, t);
                acc = b.bin(BinOp::Rotl, Width::W64, acc, Val::C(3));
            }
            let acc = b.add(acc, h);
            b.set(2, acc);
            b.exit(Exit::Jump { pc: 0x200 });
            let blk = b.finish();
            let mut interp = crate::backend::interp::Interp::new();
            let mut ei = testkit::engine();
            for (be2, e2) in [
                (&mut be as &mut dyn Backend, &mut e),
                (&mut interp as &mut dyn Backend, &mut ei),
            ] {
                e2.env.g[1] = 0x1234_5678_9abc_def1;
                e2.env.g[3] = 5;
                let c = be2.compile(&blk, 4, &hs, PC).unwrap();
                assert_eq!(testkit::exec(be2, e2, c), ret::encode(4, 0, ret::EXIT));
            }
            assert_eq!(
                (e.env.g[2], e.env.g[3], e.env.icount),
                (ei.env.g[2], ei.env.g[3], ei.env.icount),
                "n = {n}"
            );
        }
        assert_eq!(testkit::misaligned_calls(), 0);
    }

    /// Rough speed check against the interpreter (see [`testkit::bench_loop`]).
    #[test]
    #[ignore]
    fn bench_loop() {
        testkit::bench_loop(&mut || Box::new(A64Backend::new()));
    }

    #[test]
    fn tlb_probe_index_and_mode() {
        testkit::tlb_probe_index_and_mode(&mut A64Backend::new());
    }

    #[test]
    fn indirect_jump_cache_probe() {
        testkit::indirect_jump_cache_probe(&mut A64Backend::new(), false);
    }

    #[test]
    fn tlb_miss_slow_path_then_hit() {
        testkit::tlb_miss_slow_path_then_hit(&mut A64Backend::new());
    }

    #[test]
    fn load_fault_reports_instruction() {
        testkit::load_fault_reports_instruction(&mut A64Backend::new());
    }

    #[test]
    fn chain_unchain_and_budget() {
        testkit::chain_unchain_and_budget(&mut A64Backend::new());
    }

    #[test]
    fn engine_run_repeat() {
        testkit::engine_run_repeat(&mut || Box::new(A64Backend::new()));
    }

    #[test]
    fn engine_run_with_chaining() {
        testkit::engine_run_with_chaining(&mut || Box::new(A64Backend::new()));
    }
}
