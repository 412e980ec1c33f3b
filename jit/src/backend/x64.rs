//! x86_64 host backend (dynasmrt).
//!
//! Each block is assembled into a `VecAssembler` whose base address is the place the bytes
//! will occupy in the [`ExecMem`] region, then copied there; code never moves afterwards.
//!
//! # Frame and registers
//! [`execute`](Backend::execute) calls a trampoline generated once at the start of the
//! region: it pushes the callee-saved registers, reserves a fixed frame of `FRAME_BYTES`
//! (leaving `rsp` 16-byte aligned), keeps `Env*` in `r15` and jumps to the block. Every
//! exit that returns to the run loop jumps to the shared epilogue with the result in `rax`.
//! Chained blocks run in the same frame, so every block uses the same layout:
//!
//! ```text
//! [rsp + 0 .. 32)      save area for r8..r11 around calls (caller-saved temp registers)
//! [rsp + 32 .. )       spill slots of the block's temps
//! ```
//! A block with more spill slots than the fixed frame holds grows it by `extra` bytes on
//! entry and gives them back before every exit.
//!
//! Temps live in rbx, rbp, r12, r13, r14 (callee-saved) and r8..r11 (caller-saved; saved
//! around helper calls and inside the out-of-line softmmu slow paths only when a temp in
//! them is live across the call), or in spill slots. rax, rcx, rdx, rsi, rdi are scratch
//! within one op. Globals are never cached: `GetG`/`SetG` access `[r15 + 8*g]`.
//!
//! # Register allocation
//! Liveness is computed by a backward dataflow over the basic blocks of the IR (so
//! non-SSA temps, loops and forward branches are all handled exactly). Each temp gets one
//! interval: the hull of its definitions, uses and the block boundaries where it is live.
//! Positions are `2*i` for the uses of op `i` and `2*i+1` for its definition, so a temp
//! that dies at an op can hand its register to the op's result. Intervals are assigned by
//! linear scan (Poletto & Sarkar): a temp whose interval spans a helper call prefers a
//! callee-saved register, others prefer a caller-saved one; when no register is free the
//! interval ending last is spilled. Spilled intervals then get frame slots by a second
//! linear scan that reuses slots once their interval has ended.
//!
//! # Exits and chaining
//! Every chainable exit (`Exit::Jump`, `Exit::Repeat`) ends with `mov rax, slot; jmp [rax]`,
//! where the slot lives in an RW, non-executable array owned by the backend and initially
//! holds the address of the code right after (`return EXIT|index`).
//! [`chain`](Backend::chain) stores the target's entry address in the slot,
//! [`unchain`](Backend::unchain) restores the default. No code is ever patched, so chaining
//! needs neither W^X toggles nor icache maintenance, and is safe even while the block is
//! running (e.g. an unchain from the SMC slow path).

// dynasm expands dynamic registers `Rq(r)` to `r.into()`, which clippy flags for u8.
#![allow(clippy::useless_conversion)]

use dynasmrt::x64::X64Relocation;
use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi, VecAssembler};
use memmap2::MmapMut;

use super::{Backend, CodeBufferFull, CodeHandle};
use crate::engine::{mem_info, ret, slow_load, slow_store};
use crate::env::{Env, OFF_CUR_TB, OFF_FAULT, OFF_ICOUNT, OFF_ICOUNT_LIMIT, OFF_TLB, PAGE_BITS, PAGE_MASK, TLB_SIZE};
use crate::execmem::{ExecMem, DEFAULT_CODE_SIZE};
use crate::ir::{AccessKind, BinOp, Block, Cond, Exit, Global, HelperInfo, MemOp, MemSize, Op, Temp, UnOp, Val, Width};

type Asm = VecAssembler<X64Relocation>;

macro_rules! asm {
    ($g:expr; $($t:tt)*) => {
        dynasm!($g.a ; .arch x64 ; $($t)*)
    };
}

const RAX: u8 = 0;
const RCX: u8 = 1;
const RDX: u8 = 2;
const RBX: u8 = 3;
const RBP: u8 = 5;
const RSI: u8 = 6;
const R8: u8 = 8;
const R9: u8 = 9;
const R10: u8 = 10;
const R11: u8 = 11;
const R12: u8 = 12;
const R13: u8 = 13;
const R14: u8 = 14;

/// Temp registers preserved by calls.
const CALLEE_POOL: [u8; 5] = [RBX, RBP, R12, R13, R14];
/// Temp registers clobbered by calls (saved around them when live).
const CALLER_POOL: [u8; 4] = [R8, R9, R10, R11];

/// Fixed frame reserved by the trampoline. 6 pushes + return address + this = 16-aligned.
const FRAME_BYTES: i32 = 1016;
/// Frame slots at the bottom of the frame that save r8..r11 around calls.
const SAVE_SLOTS: usize = 4;

/// Number of chain slots (8 bytes each, committed lazily).
const NSLOTS: usize = 1 << 21;
/// `is_full` when fewer slots than this remain.
const SLOT_MARGIN: usize = 1 << 16;

const OFF_TLB_I: i32 = OFF_TLB as i32;
const OFF_FAULT_I: i32 = OFF_FAULT as i32;
const OFF_ICOUNT_I: i32 = OFF_ICOUNT as i32;
const OFF_ICOUNT_LIMIT_I: i32 = OFF_ICOUNT_LIMIT as i32;
const OFF_CUR_TB_I: i32 = OFF_CUR_TB as i32;
const TLB_ENTRY_BYTES: usize = std::mem::size_of::<crate::env::TlbEntry>();
const _: () = assert!(TLB_ENTRY_BYTES == 32);

/// Host CPU features the code generator uses when present.
#[derive(Clone, Copy, Debug)]
struct Features {
    lzcnt: bool,
    bmi1: bool,
    popcnt: bool,
}

impl Features {
    fn detect() -> Features {
        Features {
            lzcnt: std::arch::is_x86_feature_detected!("lzcnt"),
            bmi1: std::arch::is_x86_feature_detected!("bmi1"),
            popcnt: std::arch::is_x86_feature_detected!("popcnt"),
        }
    }
}

struct TbInfo {
    entry: usize,
    /// Per static exit: (chain slot index, default target address) for chainable exits
    /// (`Exit::Jump`, `Exit::Repeat`).
    exits: Vec<Option<(usize, usize)>>,
}

pub struct X64Backend {
    mem: ExecMem,
    /// Chain slots: RW, never executable; addresses stay valid until `flush`.
    _slots_map: MmapMut,
    slots: *mut u64,
    slots_used: usize,
    tbs: Vec<TbInfo>,
    prologue: usize,
    epilogue: usize,
    feat: Features,
}

impl X64Backend {
    pub fn new() -> X64Backend {
        Self::with_features(Features::detect())
    }

    fn with_features(feat: Features) -> X64Backend {
        let mem = ExecMem::new(DEFAULT_CODE_SIZE).expect("x64 backend: cannot reserve code memory");
        let mut slots_map = MmapMut::map_anon(NSLOTS * 8).expect("x64 backend: cannot map chain slots");
        let slots = slots_map.as_mut_ptr() as *mut u64;
        let mut b = X64Backend { mem, _slots_map: slots_map, slots, slots_used: 0, tbs: Vec::new(), prologue: 0, epilogue: 0, feat };
        b.emit_trampoline();
        b
    }

    /// The entry trampoline `extern "C" fn(env, code) -> u64` and the shared epilogue.
    fn emit_trampoline(&mut self) {
        let base = self.mem.next_addr();
        let mut g = Tramp { a: Asm::new(base) };
        asm!(g;
            push rbp
            ; push rbx
            ; push r12
            ; push r13
            ; push r14
            ; push r15
            ; sub rsp, FRAME_BYTES
            ; mov r15, rdi
            ; jmp rsi
        );
        let epi = g.a.offset().0;
        asm!(g;
            add rsp, FRAME_BYTES
            ; pop r15
            ; pop r14
            ; pop r13
            ; pop r12
            ; pop rbx
            ; pop rbp
            ; ret
        );
        let code = g.a.finalize().expect("trampoline");
        let p = self.mem.write(&code).expect("code region too small for the trampoline");
        self.prologue = p as usize;
        self.epilogue = p as usize + epi;
    }

    fn slot_ptr(&self, idx: usize) -> *mut u64 {
        assert!(idx < NSLOTS);
        // SAFETY: idx < NSLOTS, inside the slot mapping.
        unsafe { self.slots.add(idx) }
    }

    fn set_slot(&mut self, idx: usize, target: usize) {
        let p = self.slot_ptr(idx);
        // SAFETY: p is a valid, aligned u64 in our RW slot mapping. Generated code only
        // reads slots (with plain aligned 8-byte loads, which are atomic on x86_64).
        unsafe { std::ptr::write_volatile(p, target as u64) };
    }
}

impl Default for X64Backend {
    fn default() -> Self {
        Self::new()
    }
}

struct Tramp {
    a: Asm,
}

impl Backend for X64Backend {
    fn name(&self) -> &'static str {
        "x64"
    }

    fn compile(&mut self, block: &Block, tb: u32, helpers: &[HelperInfo], pc_global: Global) -> Result<CodeHandle, CodeBufferFull> {
        let njumps = block.ops.iter().filter(|o| matches!(o, Op::Exit(Exit::Jump { .. } | Exit::Repeat { .. }))).count();
        if self.slots_used + njumps > NSLOTS {
            return Err(CodeBufferFull);
        }
        let slot_base = self.slots_used;
        let base = self.mem.next_addr();
        let alloc = regalloc(block);
        let mut g = Gen {
            a: Asm::new(base),
            tb,
            helpers,
            pc_global,
            mmu_idx: block.mmu_idx,
            loc: alloc.loc,
            caller_live: alloc.caller_live,
            extra: 0,
            labels: Vec::new(),
            fault_labels: vec![None; block.ops.iter().filter(|o| matches!(o, Op::InsnStart { .. })).count().max(1)],
            stubs: Vec::new(),
            epilogue: self.epilogue,
            slots: self.slots as usize,
            next_slot: slot_base,
            exit_defaults: Vec::new(),
            feat: self.feat,
        };
        let total_slots = SAVE_SLOTS + alloc.nspill;
        let need = (total_slots * 8) as i32;
        if need > FRAME_BYTES {
            g.extra = (need - FRAME_BYTES + 15) & !15;
        }
        g.labels = (0..block.nlabels).map(|_| g.a.new_dynamic_label()).collect();
        g.emit_block(block);
        g.a.commit().expect("x64 backend: bad labels in block");
        let defaults: Vec<Option<(usize, usize)>> = g
            .exit_defaults
            .iter()
            .map(|e| e.map(|(slot, l)| (slot, base + g.a.labels().resolve_dynamic(l).expect("exit label").0)))
            .collect();
        let code = g.a.finalize().expect("x64 backend: assembly failed");
        let p = self.mem.write(&code).ok_or(CodeBufferFull)?;
        assert_eq!(p as usize, base);
        self.slots_used = slot_base + njumps;
        for &(slot, addr) in defaults.iter().flatten() {
            self.set_slot(slot, addr);
        }
        self.tbs.push(TbInfo { entry: base, exits: defaults });
        Ok(CodeHandle(self.tbs.len() - 1))
    }

    unsafe fn execute(&mut self, env: *mut Env, code: CodeHandle) -> u64 {
        let entry = self.tbs[code.0].entry;
        // SAFETY: `prologue` is the trampoline written by `emit_trampoline`, which follows
        // the SysV ABI for `extern "C" fn(*mut Env, *const u8) -> u64`. `entry` is a block
        // compiled by this backend and not flushed. The generated code only touches `env`
        // (valid per this function's contract), guest RAM through TLB entries the engine
        // filled, our chain slots, and the engine's slow paths and helpers.
        unsafe {
            let f: unsafe extern "C" fn(*mut Env, *const u8) -> u64 = std::mem::transmute(self.prologue);
            f(env, entry as *const u8)
        }
    }

    fn chain(&mut self, from: CodeHandle, exit: u32, to: CodeHandle) -> bool {
        let target = self.tbs[to.0].entry;
        match self.tbs[from.0].exits.get(exit as usize).copied().flatten() {
            Some((slot, _)) => {
                self.set_slot(slot, target);
                true
            }
            None => false,
        }
    }

    fn unchain(&mut self, from: CodeHandle, exit: u32) {
        if let Some((slot, default)) = self.tbs[from.0].exits.get(exit as usize).copied().flatten() {
            self.set_slot(slot, default);
        }
    }

    fn flush(&mut self) {
        self.mem.flush();
        self.tbs.clear();
        self.slots_used = 0;
        self.emit_trampoline();
    }

    fn is_full(&self) -> bool {
        self.mem.is_full() || self.slots_used + SLOT_MARGIN > NSLOTS
    }
}

// ---------------------------------------------------------------------------------------
// Register allocation

/// Where a temp lives for the whole block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loc {
    R(u8),
    /// Byte offset from rsp.
    S(i32),
}

struct Alloc {
    loc: Vec<Loc>,
    nspill: usize,
    /// For each op: bit k set when r8+k holds a temp live across the op (used before and
    /// after it), i.e. must be saved around a call made by the op.
    caller_live: Vec<u8>,
}

fn op_def(op: &Op) -> Option<Temp> {
    match *op {
        Op::Const { dst, .. }
        | Op::Mov { dst, .. }
        | Op::GetG { dst, .. }
        | Op::Bin { dst, .. }
        | Op::Un { dst, .. }
        | Op::Ext { dst, .. }
        | Op::SetCond { dst, .. }
        | Op::Select { dst, .. }
        | Op::Load { dst, .. } => Some(dst),
        Op::Call { dst, .. } => dst,
        _ => None,
    }
}

fn op_uses(op: &Op, mut f: impl FnMut(Temp)) {
    let mut v = |x: Val| {
        if let Val::T(t) = x {
            f(t)
        }
    };
    match *op {
        Op::Mov { src, .. } => v(Val::T(src)),
        Op::SetG { src, .. } => v(src),
        Op::Bin { a, b, .. } | Op::SetCond { a, b, .. } | Op::BrCond { a, b, .. } => {
            v(Val::T(a));
            v(b);
        }
        Op::Un { a, .. } | Op::Ext { a, .. } => v(Val::T(a)),
        Op::Select { a, b, t, f: ff, .. } => {
            v(Val::T(a));
            v(b);
            v(t);
            v(ff);
        }
        Op::Load { addr, .. } => v(Val::T(addr)),
        Op::Store { addr, val, .. } => {
            v(Val::T(addr));
            v(val);
        }
        Op::Call { ref args, .. } => {
            for &a in args {
                v(a);
            }
        }
        Op::Exit(Exit::Indirect { pc }) => v(Val::T(pc)),
        _ => {}
    }
}

fn regalloc(block: &Block) -> Alloc {
    let ops = &block.ops;
    let nops = ops.len();
    let mut nt = block.ntemps as usize;
    for op in ops {
        if let Some(d) = op_def(op) {
            nt = nt.max(d.idx() + 1);
        }
        op_uses(op, |t| nt = nt.max(t.idx() + 1));
    }

    // Basic blocks.
    let mut leader = vec![false; nops + 1];
    leader[0] = true;
    let mut label_op = vec![usize::MAX; block.nlabels as usize];
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Label(l) => {
                leader[i] = true;
                if (*l as usize) >= label_op.len() {
                    label_op.resize(*l as usize + 1, usize::MAX);
                }
                label_op[*l as usize] = i;
            }
            Op::Br(_) | Op::BrCond { .. } | Op::Exit(_) => leader[i + 1] = true,
            _ => {}
        }
    }
    let mut bbs: Vec<(usize, usize)> = Vec::new();
    let mut bb_of = vec![0usize; nops + 1];
    let mut s = 0;
    for (i, &lead) in leader.iter().enumerate().skip(1) {
        if lead || i == nops {
            if i > s {
                bbs.push((s, i - 1));
            }
            s = i;
        }
    }
    for (b, &(s, e)) in bbs.iter().enumerate() {
        for x in bb_of.iter_mut().take(e + 1).skip(s) {
            *x = b;
        }
    }
    let nbb = bbs.len();
    let bb_of_label = |l: u32| -> Option<usize> {
        let i = *label_op.get(l as usize)?;
        (i != usize::MAX).then(|| bb_of[i])
    };
    let succs: Vec<Vec<usize>> = bbs
        .iter()
        .enumerate()
        .map(|(b, &(_, e))| {
            let mut v = Vec::new();
            match ops[e] {
                Op::Br(l) => v.extend(bb_of_label(l)),
                Op::BrCond { label, .. } => {
                    v.extend(bb_of_label(label));
                    if b + 1 < nbb {
                        v.push(b + 1);
                    }
                }
                Op::Exit(_) => {}
                _ => {
                    if b + 1 < nbb {
                        v.push(b + 1);
                    }
                }
            }
            v
        })
        .collect();

    // Liveness (bitsets per basic block).
    let w = nt.div_ceil(64).max(1);
    let mut use_b = vec![0u64; nbb * w];
    let mut def_b = vec![0u64; nbb * w];
    for (b, &(s, e)) in bbs.iter().enumerate() {
        let (u, d) = (&mut use_b[b * w..(b + 1) * w], &mut def_b[b * w..(b + 1) * w]);
        for op in &ops[s..=e] {
            op_uses(op, |t| {
                let (k, m) = (t.idx() / 64, 1u64 << (t.0 % 64));
                if d[k] & m == 0 {
                    u[k] |= m;
                }
            });
            if let Some(t) = op_def(op) {
                d[t.idx() / 64] |= 1 << (t.0 % 64);
            }
        }
    }
    let mut live_in = vec![0u64; nbb * w];
    let mut live_out = vec![0u64; nbb * w];
    let mut changed = true;
    while changed {
        changed = false;
        for b in (0..nbb).rev() {
            for k in 0..w {
                let mut out = 0u64;
                for &sb in &succs[b] {
                    out |= live_in[sb * w + k];
                }
                let inn = use_b[b * w + k] | (out & !def_b[b * w + k]);
                if out != live_out[b * w + k] || inn != live_in[b * w + k] {
                    live_out[b * w + k] = out;
                    live_in[b * w + k] = inn;
                    changed = true;
                }
            }
        }
    }

    // Intervals.
    let mut start = vec![i64::MAX; nt];
    let mut end = vec![-1i64; nt];
    let mut touch = |t: usize, p: i64| {
        start[t] = start[t].min(p);
        end[t] = end[t].max(p);
    };
    for (i, op) in ops.iter().enumerate() {
        op_uses(op, |t| touch(t.idx(), 2 * i as i64));
        if let Some(t) = op_def(op) {
            touch(t.idx(), 2 * i as i64 + 1);
        }
    }
    for (b, &(s, e)) in bbs.iter().enumerate() {
        for k in 0..w {
            let mut li = live_in[b * w + k];
            while li != 0 {
                let t = k * 64 + li.trailing_zeros() as usize;
                li &= li - 1;
                touch(t, 2 * s as i64);
            }
            let mut lo = live_out[b * w + k];
            while lo != 0 {
                let t = k * 64 + lo.trailing_zeros() as usize;
                lo &= lo - 1;
                touch(t, 2 * e as i64 + 1);
            }
        }
    }

    // Ops across which an interval is live: ceil(s/2) ..= floor((e-1)/2).
    let span = |s: i64, e: i64| -> Option<(usize, usize)> {
        let lo = (s + 1) / 2;
        if e < 1 {
            return None;
        }
        let hi = (e - 1) / 2;
        (lo <= hi).then_some((lo as usize, hi as usize))
    };
    // Prefix count of helper calls.
    let mut calls = vec![0u32; nops + 1];
    for (i, op) in ops.iter().enumerate() {
        calls[i + 1] = calls[i] + matches!(op, Op::Call { .. }) as u32;
    }

    let mut order: Vec<usize> = (0..nt).filter(|&t| end[t] >= 0).collect();
    order.sort_by_key(|&t| (start[t], end[t]));
    let mut loc = vec![Loc::S(0); nt];
    let mut spilled: Vec<usize> = Vec::new();
    let mut active: Vec<(i64, usize, u8)> = Vec::new();
    let mut free: u16 = 0;
    for r in CALLEE_POOL.iter().chain(CALLER_POOL.iter()) {
        free |= 1 << r;
    }
    for &t in &order {
        let s = start[t];
        active.retain(|&(e, _, r)| {
            if e < s {
                free |= 1 << r;
                false
            } else {
                true
            }
        });
        let crosses_call = span(s, end[t]).is_some_and(|(lo, hi)| calls[hi + 1] > calls[lo]);
        let pick = |pool: &[u8], free: u16| pool.iter().copied().find(|&r| free & (1 << r) != 0);
        let reg = if crosses_call {
            pick(&CALLEE_POOL, free).or_else(|| pick(&CALLER_POOL, free))
        } else {
            pick(&CALLER_POOL, free).or_else(|| pick(&CALLEE_POOL, free))
        };
        match reg {
            Some(r) => {
                free &= !(1 << r);
                loc[t] = Loc::R(r);
                active.push((end[t], t, r));
            }
            None => {
                let (k, &(e, victim, r)) = active.iter().enumerate().max_by_key(|(_, a)| a.0).expect("no active interval");
                if e > end[t] {
                    active.swap_remove(k);
                    spilled.push(victim);
                    loc[t] = Loc::R(r);
                    active.push((end[t], t, r));
                } else {
                    spilled.push(t);
                }
            }
        }
    }

    // Stack slots for spilled intervals.
    spilled.sort_by_key(|&t| (start[t], end[t]));
    let mut slot_active: Vec<(i64, usize)> = Vec::new();
    let mut free_slots: Vec<usize> = Vec::new();
    let mut nspill = 0usize;
    for &t in &spilled {
        let s = start[t];
        slot_active.retain(|&(e, sl)| {
            if e < s {
                free_slots.push(sl);
                false
            } else {
                true
            }
        });
        free_slots.sort_unstable_by(|a, b| b.cmp(a));
        let sl = free_slots.pop().unwrap_or_else(|| {
            nspill += 1;
            nspill - 1
        });
        slot_active.push((end[t], sl));
        loc[t] = Loc::S(8 * (SAVE_SLOTS + sl) as i32);
    }

    let mut caller_live = vec![0u8; nops];
    for &t in &order {
        if let Loc::R(r) = loc[t] {
            if (R8..=R11).contains(&r) {
                if let Some((lo, hi)) = span(start[t], end[t]) {
                    for m in &mut caller_live[lo..=hi.min(nops.saturating_sub(1))] {
                        *m |= 1 << (r - R8);
                    }
                }
            }
        }
    }
    Alloc { loc, nspill, caller_live }
}

// ---------------------------------------------------------------------------------------
// Code generation

/// An operand of one instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opnd {
    R(u8),
    /// `[rsp + d]`
    M(i32),
    /// An immediate that fits a sign-extended imm32.
    I(i32),
    /// Any other 64-bit immediate.
    Q(u64),
}

/// x86 condition codes used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cc {
    E,
    Ne,
    B,
    Be,
    A,
    Ae,
    L,
    Le,
    G,
    Ge,
}

impl Cc {
    fn of(c: Cond) -> Cc {
        match c {
            Cond::Eq | Cond::TstZ => Cc::E,
            Cond::Ne | Cond::TstNz => Cc::Ne,
            Cond::LtU => Cc::B,
            Cond::LeU => Cc::Be,
            Cond::GtU => Cc::A,
            Cond::GeU => Cc::Ae,
            Cond::LtS => Cc::L,
            Cond::LeS => Cc::Le,
            Cond::GtS => Cc::G,
            Cond::GeS => Cc::Ge,
        }
    }
    fn inv(self) -> Cc {
        match self {
            Cc::E => Cc::Ne,
            Cc::Ne => Cc::E,
            Cc::B => Cc::Ae,
            Cc::Ae => Cc::B,
            Cc::Be => Cc::A,
            Cc::A => Cc::Be,
            Cc::L => Cc::Ge,
            Cc::Ge => Cc::L,
            Cc::Le => Cc::G,
            Cc::G => Cc::Le,
        }
    }
}

/// Out-of-line code emitted after the block's main path.
enum Stub {
    Slow {
        label: DynamicLabel,
        back: DynamicLabel,
        store: bool,
        addr: Opnd,
        val: Opnd,
        dst: Option<Loc>,
        info: u64,
        save: u8,
        insn: u32,
    },
}

struct Gen<'a> {
    a: Asm,
    tb: u32,
    helpers: &'a [HelperInfo],
    pc_global: Global,
    mmu_idx: u32,
    loc: Vec<Loc>,
    caller_live: Vec<u8>,
    extra: i32,
    labels: Vec<DynamicLabel>,
    fault_labels: Vec<Option<DynamicLabel>>,
    stubs: Vec<Stub>,
    epilogue: usize,
    slots: usize,
    next_slot: usize,
    /// Per static exit: (slot, label of the default return code) for jumps.
    exit_defaults: Vec<Option<(usize, DynamicLabel)>>,
    feat: Features,
}

fn fits_i32(v: u64) -> bool {
    v as i64 == v as i32 as i64
}

fn gofs(g: Global) -> i32 {
    8 * g as i32
}

macro_rules! alu {
    ($g:expr, $op:ident, $w:expr, $r:expr, $o:expr) => {{
        let r: u8 = $r;
        match ($w, $o) {
            (Width::W64, Opnd::R(s)) => asm!($g; $op Rq(r), Rq(s)),
            (Width::W64, Opnd::M(d)) => asm!($g; $op Rq(r), QWORD [rsp + d]),
            (Width::W64, Opnd::I(i)) => {
                if i as i8 as i32 == i {
                    asm!($g; $op Rq(r), BYTE i as i8)
                } else {
                    asm!($g; $op Rq(r), DWORD i)
                }
            }
            (Width::W64, Opnd::Q(v)) => asm!($g; mov rdx, QWORD v as i64 ; $op Rq(r), rdx),
            (Width::W32, Opnd::R(s)) => asm!($g; $op Rd(r), Rd(s)),
            (Width::W32, Opnd::M(d)) => asm!($g; $op Rd(r), DWORD [rsp + d]),
            (Width::W32, Opnd::I(i)) => {
                if i as i8 as i32 == i {
                    asm!($g; $op Rd(r), BYTE i as i8)
                } else {
                    asm!($g; $op Rd(r), DWORD i)
                }
            }
            (Width::W32, Opnd::Q(v)) => asm!($g; $op Rd(r), DWORD v as i32),
        }
    }};
}

macro_rules! shift {
    ($g:expr, $op:ident, $w:expr, $r:expr, $cnt:expr) => {{
        let r: u8 = $r;
        match ($w, $cnt) {
            (Width::W64, Some(c)) => asm!($g; $op Rq(r), BYTE c),
            (Width::W32, Some(c)) => asm!($g; $op Rd(r), BYTE c),
            (Width::W64, None) => asm!($g; $op Rq(r), cl),
            (Width::W32, None) => asm!($g; $op Rd(r), cl),
        }
    }};
}

/// One-operand forms (`not`, `neg`, `mul`, `imul`...) on a register or memory operand.
macro_rules! unary {
    ($g:expr, $op:ident, $w:expr, $o:expr) => {{
        match ($w, $o) {
            (Width::W64, Opnd::R(s)) => asm!($g; $op Rq(s)),
            (Width::W64, Opnd::M(d)) => asm!($g; $op QWORD [rsp + d]),
            (Width::W32, Opnd::R(s)) => asm!($g; $op Rd(s)),
            (Width::W32, Opnd::M(d)) => asm!($g; $op DWORD [rsp + d]),
            _ => unreachable!("immediate operand of a one-operand instruction"),
        }
    }};
}

/// `op r, r/m` forms with a destination register (lzcnt, tzcnt, popcnt, bsr, bsf).
macro_rules! rrm {
    ($g:expr, $op:ident, $w:expr, $r:expr, $o:expr) => {{
        let r: u8 = $r;
        match ($w, $o) {
            (Width::W64, Opnd::R(s)) => asm!($g; $op Rq(r), Rq(s)),
            (Width::W64, Opnd::M(d)) => asm!($g; $op Rq(r), QWORD [rsp + d]),
            (Width::W32, Opnd::R(s)) => asm!($g; $op Rd(r), Rd(s)),
            (Width::W32, Opnd::M(d)) => asm!($g; $op Rd(r), DWORD [rsp + d]),
            _ => unreachable!("immediate operand of an r, r/m instruction"),
        }
    }};
}

impl Gen<'_> {
    fn topnd(&self, t: Temp) -> Opnd {
        match self.loc[t.idx()] {
            Loc::R(r) => Opnd::R(r),
            Loc::S(d) => Opnd::M(d),
        }
    }

    /// A 64-bit operand.
    fn opnd(&self, v: Val) -> Opnd {
        match v {
            Val::T(t) => self.topnd(t),
            Val::C(c) if fits_i32(c) => Opnd::I(c as i32),
            Val::C(c) => Opnd::Q(c),
        }
    }

    /// An operand of a `w`-wide operation (32-bit constants are truncated).
    fn opnd_w(&self, v: Val, w: Width) -> Opnd {
        match (v, w) {
            (Val::C(c), Width::W32) => Opnd::I(c as u32 as i32),
            _ => self.opnd(v),
        }
    }

    fn dloc(&self, t: Temp) -> Loc {
        self.loc[t.idx()]
    }

    /// The register an op computes its result in: the destination's, or rax.
    fn work(&self, d: Loc) -> u8 {
        match d {
            Loc::R(r) => r,
            Loc::S(_) => RAX,
        }
    }

    /// Move 64-bit register `r` into `d`.
    fn put(&mut self, d: Loc, r: u8) {
        match d {
            Loc::R(x) => {
                if x != r {
                    asm!(self; mov Rq(x), Rq(r))
                }
            }
            Loc::S(o) => asm!(self; mov QWORD [rsp + o], Rq(r)),
        }
    }

    fn load_imm(&mut self, r: u8, v: u64, keep_flags: bool) {
        if v == 0 && !keep_flags {
            asm!(self; xor Rd(r), Rd(r))
        } else if v <= u32::MAX as u64 {
            asm!(self; mov Rd(r), DWORD v as i32)
        } else if fits_i32(v) {
            asm!(self; mov Rq(r), DWORD v as i32)
        } else {
            asm!(self; mov Rq(r), QWORD v as i64)
        }
    }

    /// r = operand (64-bit).
    fn mov_r(&mut self, r: u8, o: Opnd, keep_flags: bool) {
        match o {
            Opnd::R(s) => {
                if s != r {
                    asm!(self; mov Rq(r), Rq(s))
                }
            }
            Opnd::M(d) => asm!(self; mov Rq(r), QWORD [rsp + d]),
            Opnd::I(i) => self.load_imm(r, i as i64 as u64, keep_flags),
            Opnd::Q(v) => self.load_imm(r, v, keep_flags),
        }
    }

    /// Destination = operand (64-bit).
    fn mov_loc(&mut self, d: Loc, o: Opnd) {
        match (d, o) {
            (Loc::R(r), _) => self.mov_r(r, o, false),
            (Loc::S(x), Opnd::M(y)) if x == y => {}
            (Loc::S(x), Opnd::I(i)) => asm!(self; mov QWORD [rsp + x], DWORD i),
            (Loc::S(x), Opnd::R(s)) => asm!(self; mov QWORD [rsp + x], Rq(s)),
            (Loc::S(_), _) => {
                self.mov_r(RAX, o, false);
                self.put(d, RAX);
            }
        }
    }

    fn leave_frame(&mut self) {
        if self.extra != 0 {
            asm!(self; add rsp, self.extra);
        }
    }

    /// Return `v` to the run loop.
    fn ret_to_loop(&mut self, v: u64) {
        self.leave_frame();
        asm!(self; mov rax, QWORD v as i64 ; jmp extern self.epilogue);
    }

    fn fault_label(&mut self, insn: u32) -> DynamicLabel {
        if let Some(l) = self.fault_labels[insn as usize] {
            return l;
        }
        let l = self.a.new_dynamic_label();
        self.fault_labels[insn as usize] = Some(l);
        l
    }

    fn jcc(&mut self, cc: Cc, l: DynamicLabel) {
        match cc {
            Cc::E => asm!(self; je =>l),
            Cc::Ne => asm!(self; jne =>l),
            Cc::B => asm!(self; jb =>l),
            Cc::Be => asm!(self; jbe =>l),
            Cc::A => asm!(self; ja =>l),
            Cc::Ae => asm!(self; jae =>l),
            Cc::L => asm!(self; jl =>l),
            Cc::Le => asm!(self; jle =>l),
            Cc::G => asm!(self; jg =>l),
            Cc::Ge => asm!(self; jge =>l),
        }
    }

    fn setcc_al(&mut self, cc: Cc) {
        match cc {
            Cc::E => asm!(self; sete al),
            Cc::Ne => asm!(self; setne al),
            Cc::B => asm!(self; setb al),
            Cc::Be => asm!(self; setbe al),
            Cc::A => asm!(self; seta al),
            Cc::Ae => asm!(self; setae al),
            Cc::L => asm!(self; setl al),
            Cc::Le => asm!(self; setle al),
            Cc::G => asm!(self; setg al),
            Cc::Ge => asm!(self; setge al),
        }
    }

    fn cmov(&mut self, cc: Cc, r: u8, s: u8) {
        match cc {
            Cc::E => asm!(self; cmove Rq(r), Rq(s)),
            Cc::Ne => asm!(self; cmovne Rq(r), Rq(s)),
            Cc::B => asm!(self; cmovb Rq(r), Rq(s)),
            Cc::Be => asm!(self; cmovbe Rq(r), Rq(s)),
            Cc::A => asm!(self; cmova Rq(r), Rq(s)),
            Cc::Ae => asm!(self; cmovae Rq(r), Rq(s)),
            Cc::L => asm!(self; cmovl Rq(r), Rq(s)),
            Cc::Le => asm!(self; cmovle Rq(r), Rq(s)),
            Cc::G => asm!(self; cmovg Rq(r), Rq(s)),
            Cc::Ge => asm!(self; cmovge Rq(r), Rq(s)),
        }
    }

    /// Set the flags for `cond(a, b)`; returns the condition code that is true when the
    /// condition holds. Clobbers rax, rdx.
    fn compare(&mut self, cond: Cond, a: Temp, b: Val) -> Cc {
        let cc = Cc::of(cond);
        let mut ao = self.topnd(a);
        let mut bo = self.opnd(b);
        if let Opnd::Q(v) = bo {
            asm!(self; mov rdx, QWORD v as i64);
            bo = Opnd::R(RDX);
        }
        if let (Opnd::M(d), Opnd::M(_)) = (ao, bo) {
            asm!(self; mov rax, QWORD [rsp + d]);
            ao = Opnd::R(RAX);
        }
        let test = matches!(cond, Cond::TstZ | Cond::TstNz);
        match (ao, bo) {
            (Opnd::R(x), Opnd::I(0)) if !test && matches!(cond, Cond::Eq | Cond::Ne) => asm!(self; test Rq(x), Rq(x)),
            (Opnd::R(x), Opnd::R(y)) if test => asm!(self; test Rq(x), Rq(y)),
            (Opnd::R(x), Opnd::M(d)) | (Opnd::M(d), Opnd::R(x)) if test => asm!(self; test QWORD [rsp + d], Rq(x)),
            (Opnd::R(x), Opnd::I(i)) if test => asm!(self; test Rq(x), DWORD i),
            (Opnd::M(d), Opnd::I(i)) if test => asm!(self; test QWORD [rsp + d], DWORD i),
            (Opnd::R(x), Opnd::R(y)) => asm!(self; cmp Rq(x), Rq(y)),
            (Opnd::R(x), Opnd::M(d)) => asm!(self; cmp Rq(x), QWORD [rsp + d]),
            (Opnd::M(d), Opnd::R(y)) => asm!(self; cmp QWORD [rsp + d], Rq(y)),
            (Opnd::R(x), Opnd::I(i)) => asm!(self; cmp Rq(x), DWORD i),
            (Opnd::M(d), Opnd::I(i)) => asm!(self; cmp QWORD [rsp + d], DWORD i),
            _ => unreachable!("compare operands {ao:?} {bo:?}"),
        }
        cc
    }

    fn emit_block(&mut self, block: &Block) {
        let budget = self.a.new_dynamic_label();
        // Entry: budget check, then record the running TB.
        asm!(self;
            mov rax, QWORD [r15 + OFF_ICOUNT_I]
            ; cmp rax, QWORD [r15 + OFF_ICOUNT_LIMIT_I]
            ;; self.jcc(Cc::Ae, budget)
            ; mov DWORD [r15 + OFF_CUR_TB_I], self.tb as i32
        );
        if self.extra != 0 {
            asm!(self; sub rsp, self.extra);
        }
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
                    match d {
                        Loc::R(r) => self.load_imm(r, val, false),
                        Loc::S(_) => self.mov_loc(d, self.opnd(Val::C(val))),
                    }
                }
                Op::Mov { dst, src } => {
                    let o = self.topnd(src);
                    self.mov_loc(self.dloc(dst), o);
                }
                Op::GetG { dst, g } => {
                    let d = self.dloc(dst);
                    let r = self.work(d);
                    asm!(self; mov Rq(r), QWORD [r15 + gofs(g)]);
                    self.put(d, r);
                }
                Op::SetG { g, src } => match self.opnd(src) {
                    Opnd::R(s) => asm!(self; mov QWORD [r15 + gofs(g)], Rq(s)),
                    Opnd::I(v) => asm!(self; mov QWORD [r15 + gofs(g)], DWORD v),
                    o => {
                        self.mov_r(RAX, o, false);
                        asm!(self; mov QWORD [r15 + gofs(g)], rax);
                    }
                },
                Op::Bin { op, w, dst, a, b } => self.bin(op, w, dst, a, b),
                Op::Un { op, w, dst, a } => self.un(op, w, dst, a),
                Op::Ext { dst, a, from, signed } => self.ext(dst, a, from, signed),
                Op::SetCond { cond, dst, a, b } => {
                    let cc = self.compare(cond, a, b);
                    self.setcc_al(cc);
                    match self.dloc(dst) {
                        Loc::R(r) => asm!(self; movzx Rd(r), al),
                        Loc::S(o) => asm!(self; movzx eax, al ; mov QWORD [rsp + o], rax),
                    }
                }
                Op::Select { cond, dst, a, b, t, f } => self.select(cond, dst, a, b, t, f),
                Op::Load { dst, addr, mop } => self.mem_op(i, insn, Some(dst), addr, None, mop),
                Op::Store { addr, val, mop } => self.mem_op(i, insn, None, addr, Some(val), mop),
                Op::Call { helper, ref args, dst } => self.call(i, insn, helper.0 as usize, args, dst),
                Op::Label(l) => {
                    let l = self.labels[l as usize];
                    asm!(self; =>l);
                }
                Op::Br(l) => {
                    let l = self.labels[l as usize];
                    asm!(self; jmp =>l);
                }
                Op::BrCond { cond, a, b, label } => {
                    let cc = self.compare(cond, a, b);
                    let l = self.labels[label as usize];
                    self.jcc(cc, l);
                }
                Op::Exit(e) => self.exit(insn, e),
            }
        }
        // A well-formed block never falls off its end.
        asm!(self; ud2);

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
        asm!(self; mov rax, QWORD ret::encode(self.tb, 0, ret::BUDGET) as i64 ; jmp extern self.epilogue);
    }

    fn exit(&mut self, insn: u32, e: Exit) {
        let idx = self.exit_defaults.len() as u32;
        let n = insn as i32 + 1;
        let pcg = gofs(self.pc_global);
        match e {
            Exit::Jump { pc } | Exit::Repeat { pc } => {
                if fits_i32(pc) {
                    asm!(self; mov QWORD [r15 + pcg], DWORD pc as i32);
                } else {
                    asm!(self; mov rax, QWORD pc as i64 ; mov QWORD [r15 + pcg], rax);
                }
                // A repeating instruction does not retire.
                let n = if matches!(e, Exit::Repeat { .. }) { n - 1 } else { n };
                if n != 0 {
                    asm!(self; add QWORD [r15 + OFF_ICOUNT_I], DWORD n);
                }
                self.leave_frame();
                let slot = self.next_slot;
                self.next_slot += 1;
                let slot_addr = self.slots + 8 * slot;
                let l = self.a.new_dynamic_label();
                asm!(self;
                    mov rax, QWORD slot_addr as i64
                    ; jmp QWORD [rax]
                    ; =>l
                    ; mov rax, QWORD ret::encode(self.tb, idx, ret::EXIT) as i64
                    ; jmp extern self.epilogue
                );
                self.exit_defaults.push(Some((slot, l)));
            }
            Exit::Indirect { pc } => {
                let o = self.topnd(pc);
                match o {
                    Opnd::R(r) => asm!(self; mov QWORD [r15 + pcg], Rq(r)),
                    _ => {
                        self.mov_r(RAX, o, false);
                        asm!(self; mov QWORD [r15 + pcg], rax);
                    }
                }
                asm!(self; add QWORD [r15 + OFF_ICOUNT_I], DWORD n);
                self.ret_to_loop(ret::encode(self.tb, idx, ret::EXIT));
                self.exit_defaults.push(None);
            }
            Exit::Exception { .. } | Exit::Platform { .. } | Exit::Sync { .. } => {
                // The run loop does the bookkeeping.
                self.ret_to_loop(ret::encode(self.tb, idx, ret::EXIT));
                self.exit_defaults.push(None);
            }
        }
    }

    fn bin(&mut self, op: BinOp, w: Width, dst: Temp, a: Temp, b: Val) {
        use BinOp::*;
        let dl = self.dloc(dst);
        let ao = self.topnd(a);
        match op {
            Shl | Shr | Sar | Rotl | Rotr => return self.shift(op, w, dl, ao, b),
            MulHU | MulHS => return self.mulh(op, w, dl, ao, b),
            _ => {}
        }
        let bo = self.opnd_w(b, w);
        // Three-operand forms that need no copy of `a`.
        if let (Loc::R(d), Opnd::R(x)) = (dl, ao) {
            if d != x {
                match (op, bo, w) {
                    (Add, Opnd::I(i), Width::W64) => return asm!(self; lea Rq(d), [Rq(x) + i]),
                    (Add, Opnd::I(i), Width::W32) => return asm!(self; lea Rd(d), [Rq(x) + i]),
                    (Sub, Opnd::I(i), Width::W64) if i != i32::MIN => return asm!(self; lea Rq(d), [Rq(x) - i]),
                    (Sub, Opnd::I(i), Width::W32) if i != i32::MIN => return asm!(self; lea Rd(d), [Rq(x) - i]),
                    (Add, Opnd::R(y), Width::W64) => return asm!(self; lea Rq(d), [Rq(x) + Rq(y)]),
                    (Add, Opnd::R(y), Width::W32) => return asm!(self; lea Rd(d), [Rq(x) + Rq(y)]),
                    _ => {}
                }
            }
        }
        if let (Mul, Opnd::I(i)) = (op, bo) {
            let r = self.work(dl);
            match (w, ao) {
                (Width::W64, Opnd::R(x)) => asm!(self; imul Rq(r), Rq(x), DWORD i),
                (Width::W64, Opnd::M(m)) => asm!(self; imul Rq(r), QWORD [rsp + m], DWORD i),
                (Width::W32, Opnd::R(x)) => asm!(self; imul Rd(r), Rd(x), DWORD i),
                (Width::W32, Opnd::M(m)) => asm!(self; imul Rd(r), DWORD [rsp + m], DWORD i),
                _ => unreachable!(),
            }
            self.put(dl, r);
            return;
        }
        let mut r = self.work(dl);
        let mut src = ao;
        let mut other = bo;
        if let Loc::R(d) = dl {
            if bo == Opnd::R(d) && ao != Opnd::R(d) {
                if matches!(op, Add | And | Or | Xor | Mul) {
                    // d already holds b: d = d op a.
                    src = Opnd::R(d);
                    other = ao;
                } else {
                    r = RAX;
                }
            }
        }
        self.mov_r(r, src, false);
        match op {
            Add => alu!(self, add, w, r, other),
            Sub => alu!(self, sub, w, r, other),
            And => alu!(self, and, w, r, other),
            Or => alu!(self, or, w, r, other),
            Xor => alu!(self, xor, w, r, other),
            Mul => match (w, other) {
                (Width::W64, Opnd::R(s)) => asm!(self; imul Rq(r), Rq(s)),
                (Width::W64, Opnd::M(m)) => asm!(self; imul Rq(r), QWORD [rsp + m]),
                (Width::W32, Opnd::R(s)) => asm!(self; imul Rd(r), Rd(s)),
                (Width::W32, Opnd::M(m)) => asm!(self; imul Rd(r), DWORD [rsp + m]),
                (_, Opnd::Q(v)) => asm!(self; mov rdx, QWORD v as i64 ; imul Rq(r), rdx),
                (_, Opnd::I(_)) => unreachable!(),
            },
            _ => unreachable!(),
        }
        self.put(dl, r);
    }

    fn shift(&mut self, op: BinOp, w: Width, dl: Loc, ao: Opnd, b: Val) {
        let bits = match w {
            Width::W32 => 32,
            Width::W64 => 64,
        };
        let cnt = match b {
            Val::C(c) => Some((c & (bits - 1)) as i8),
            Val::T(_) => None,
        };
        if cnt == Some(0) {
            // Identity (zero-extended for W32).
            let r = self.work(dl);
            match (w, ao) {
                (Width::W64, _) => self.mov_r(r, ao, false),
                (Width::W32, Opnd::R(x)) => asm!(self; mov Rd(r), Rd(x)),
                (Width::W32, Opnd::M(m)) => asm!(self; mov Rd(r), DWORD [rsp + m]),
                _ => unreachable!(),
            }
            self.put(dl, r);
            return;
        }
        if cnt.is_none() {
            // Count first: the destination may share b's register.
            let bo = self.opnd(b);
            self.mov_r(RCX, bo, false);
        }
        let r = self.work(dl);
        self.mov_r(r, ao, false);
        match op {
            BinOp::Shl => shift!(self, shl, w, r, cnt),
            BinOp::Shr => shift!(self, shr, w, r, cnt),
            BinOp::Sar => shift!(self, sar, w, r, cnt),
            BinOp::Rotl => shift!(self, rol, w, r, cnt),
            BinOp::Rotr => shift!(self, ror, w, r, cnt),
            _ => unreachable!(),
        }
        self.put(dl, r);
    }

    fn mulh(&mut self, op: BinOp, w: Width, dl: Loc, ao: Opnd, b: Val) {
        let mut bo = self.opnd_w(b, w);
        if matches!(bo, Opnd::I(_) | Opnd::Q(_)) {
            self.mov_r(RCX, bo, false);
            bo = Opnd::R(RCX);
        }
        self.mov_r(RAX, ao, false);
        if op == BinOp::MulHU {
            unary!(self, mul, w, bo);
        } else {
            unary!(self, imul, w, bo);
        }
        self.put(dl, RDX);
    }

    fn un(&mut self, op: UnOp, w: Width, dst: Temp, a: Temp) {
        let dl = self.dloc(dst);
        let ao = self.topnd(a);
        let r = self.work(dl);
        match op {
            UnOp::Not | UnOp::Neg | UnOp::Bswap => {
                self.mov_r(r, ao, false);
                let ro = Opnd::R(r);
                match op {
                    UnOp::Not => unary!(self, not, w, ro),
                    UnOp::Neg => unary!(self, neg, w, ro),
                    _ => match w {
                        Width::W64 => asm!(self; bswap Rq(r)),
                        Width::W32 => asm!(self; bswap Rd(r)),
                    },
                }
                self.put(dl, r);
            }
            UnOp::Clz => {
                if self.feat.lzcnt {
                    rrm!(self, lzcnt, w, r, ao);
                    self.put(dl, r);
                } else {
                    // 63 - bsr(a), or the width for 0.
                    match w {
                        Width::W64 => {
                            asm!(self; mov rcx, -1);
                            rrm!(self, bsr, w, RAX, ao);
                            asm!(self; cmovz rax, rcx ; neg rax ; add rax, 63);
                        }
                        Width::W32 => {
                            asm!(self; mov ecx, -1);
                            rrm!(self, bsr, w, RAX, ao);
                            asm!(self; cmovz eax, ecx ; neg eax ; add eax, 31);
                        }
                    }
                    self.put(dl, RAX);
                }
            }
            UnOp::Ctz => {
                if self.feat.bmi1 {
                    rrm!(self, tzcnt, w, r, ao);
                    self.put(dl, r);
                } else {
                    match w {
                        Width::W64 => {
                            asm!(self; mov ecx, 64);
                            rrm!(self, bsf, w, RAX, ao);
                            asm!(self; cmovz rax, rcx);
                        }
                        Width::W32 => {
                            asm!(self; mov ecx, 32);
                            rrm!(self, bsf, w, RAX, ao);
                            asm!(self; cmovz eax, ecx);
                        }
                    }
                    self.put(dl, RAX);
                }
            }
            UnOp::Popcnt => {
                if self.feat.popcnt {
                    rrm!(self, popcnt, w, r, ao);
                    self.put(dl, r);
                } else {
                    match (w, ao) {
                        (Width::W64, _) => self.mov_r(RAX, ao, false),
                        (Width::W32, Opnd::R(x)) => asm!(self; mov eax, Rd(x)),
                        (Width::W32, Opnd::M(m)) => asm!(self; mov eax, DWORD [rsp + m]),
                        _ => unreachable!(),
                    }
                    asm!(self;
                        mov rcx, rax
                        ; shr rcx, 1
                        ; mov rdx, QWORD 0x5555_5555_5555_5555
                        ; and rcx, rdx
                        ; sub rax, rcx
                        ; mov rdx, QWORD 0x3333_3333_3333_3333
                        ; mov rcx, rax
                        ; shr rcx, 2
                        ; and rax, rdx
                        ; and rcx, rdx
                        ; add rax, rcx
                        ; mov rcx, rax
                        ; shr rcx, 4
                        ; add rax, rcx
                        ; mov rdx, QWORD 0x0f0f_0f0f_0f0f_0f0f
                        ; and rax, rdx
                        ; mov rdx, QWORD 0x0101_0101_0101_0101
                        ; imul rax, rdx
                        ; shr rax, 56
                    );
                    self.put(dl, RAX);
                }
            }
        }
    }

    fn ext(&mut self, dst: Temp, a: Temp, from: MemSize, signed: bool) {
        let dl = self.dloc(dst);
        let ao = self.topnd(a);
        let r = self.work(dl);
        match (from, signed, ao) {
            (MemSize::B1, false, Opnd::R(x)) => asm!(self; movzx Rd(r), Rb(x)),
            (MemSize::B1, false, Opnd::M(m)) => asm!(self; movzx Rd(r), BYTE [rsp + m]),
            (MemSize::B1, true, Opnd::R(x)) => asm!(self; movsx Rq(r), Rb(x)),
            (MemSize::B1, true, Opnd::M(m)) => asm!(self; movsx Rq(r), BYTE [rsp + m]),
            (MemSize::B2, false, Opnd::R(x)) => asm!(self; movzx Rd(r), Rw(x)),
            (MemSize::B2, false, Opnd::M(m)) => asm!(self; movzx Rd(r), WORD [rsp + m]),
            (MemSize::B2, true, Opnd::R(x)) => asm!(self; movsx Rq(r), Rw(x)),
            (MemSize::B2, true, Opnd::M(m)) => asm!(self; movsx Rq(r), WORD [rsp + m]),
            (MemSize::B4, false, Opnd::R(x)) => asm!(self; mov Rd(r), Rd(x)),
            (MemSize::B4, false, Opnd::M(m)) => asm!(self; mov Rd(r), DWORD [rsp + m]),
            (MemSize::B4, true, Opnd::R(x)) => asm!(self; movsxd Rq(r), Rd(x)),
            (MemSize::B4, true, Opnd::M(m)) => asm!(self; movsxd Rq(r), DWORD [rsp + m]),
            (MemSize::B8, _, _) => self.mov_r(r, ao, false),
            _ => unreachable!(),
        }
        self.put(dl, r);
    }

    fn select(&mut self, cond: Cond, dst: Temp, a: Temp, b: Val, t: Val, f: Val) {
        let dl = self.dloc(dst);
        let (to, fo) = (self.opnd(t), self.opnd(f));
        let mut cc = self.compare(cond, a, b);
        if to == fo {
            self.mov_loc(dl, to);
            return;
        }
        // r = f; if cc { r = t }   (or, when r already holds t: if !cc { r = f })
        let r = self.work(dl);
        let (mut first, mut second) = (fo, to);
        if to == Opnd::R(r) {
            cc = cc.inv();
            first = to;
            second = fo;
        }
        self.mov_r(r, first, true);
        let s = match second {
            Opnd::R(x) => x,
            o => {
                self.mov_r(RCX, o, true);
                RCX
            }
        };
        self.cmov(cc, r, s);
        self.put(dl, r);
    }

    /// Registers r8..r11 live across op `i`: saved to the bottom of the frame.
    fn save(&mut self, mask: u8) {
        for k in 0..4u8 {
            if mask & (1 << k) != 0 {
                let o = 8 * k as i32;
                asm!(self; mov QWORD [rsp + o], Rq(R8 + k));
            }
        }
    }

    fn restore(&mut self, mask: u8) {
        for k in 0..4u8 {
            if mask & (1 << k) != 0 {
                let o = 8 * k as i32;
                asm!(self; mov Rq(R8 + k), QWORD [rsp + o]);
            }
        }
    }

    fn call_abs(&mut self, f: usize) {
        asm!(self; mov rax, QWORD f as i64 ; call rax);
    }

    fn check_fault(&mut self, insn: u32) {
        let l = self.fault_label(insn);
        asm!(self; cmp DWORD [r15 + OFF_FAULT_I], 0);
        self.jcc(Cc::Ne, l);
    }

    fn call(&mut self, i: usize, insn: u32, helper: usize, args: &[Val], dst: Option<Temp>) {
        let h = self.helpers[helper];
        let save = self.caller_live[i];
        self.save(save);
        const ARG_REGS: [u8; 4] = [RSI, RDX, RCX, R8];
        for (k, &r) in ARG_REGS.iter().enumerate() {
            match args.get(k) {
                Some(&v) => {
                    let o = self.opnd(v);
                    self.mov_r(r, o, false);
                }
                None => asm!(self; xor Rd(r), Rd(r)),
            }
        }
        asm!(self; mov rdi, r15);
        self.call_abs(h.func as usize);
        self.restore(save);
        if h.can_fault {
            self.check_fault(insn);
        }
        if let Some(d) = dst {
            let dl = self.dloc(d);
            self.put(dl, RAX);
        }
    }

    fn mem_op(&mut self, i: usize, insn: u32, dst: Option<Temp>, addr: Temp, val: Option<Val>, mop: MemOp) {
        let store = val.is_some();
        let size = mop.size;
        let info = mem_info(size, if store { false } else { mop.signed }, mop.kind) | if mop.rmw { crate::engine::MEM_INFO_RMW } else { 0 };
        let ao = self.topnd(addr);
        // Store values are truncated to the access size; constants fit an imm32 then.
        let vo = match val {
            Some(Val::C(c)) if size != MemSize::B8 => Opnd::I((c & size.mask()) as u32 as i32),
            Some(v) => self.opnd(v),
            None => Opnd::I(0),
        };
        let dl = dst.map(|d| self.dloc(d));
        let save = self.caller_live[i];
        if mop.kind == AccessKind::System {
            self.slow_call(store, ao, vo, info, save);
            self.check_fault(insn);
            if let Some(d) = dl {
                self.put(d, RAX);
            }
            return;
        }
        let areg = match ao {
            Opnd::R(x) => x,
            _ => {
                self.mov_r(RSI, ao, false);
                RSI
            }
        };
        let slow = self.a.new_dynamic_label();
        let back = self.a.new_dynamic_label();
        // TLB probe (see interp::tlb_probe): index from the first byte, tag from the last.
        let tlb = OFF_TLB_I + (self.mmu_idx as usize * TLB_SIZE * TLB_ENTRY_BYTES) as i32;
        let tag = tlb + if store || mop.rmw { 8 } else { 0 };
        let addend = tlb + 24;
        let sh = (PAGE_BITS - 5) as i8;
        let imask = ((TLB_SIZE - 1) * TLB_ENTRY_BYTES) as i32;
        let pmask = PAGE_MASK as i64 as i32;
        asm!(self;
            mov rax, Rq(areg)
            ; shr rax, BYTE sh
            ; and eax, DWORD imask
        );
        if size == MemSize::B1 {
            asm!(self; mov rdx, Rq(areg));
        } else {
            let last = size.bytes() as i32 - 1;
            asm!(self; lea rdx, [Rq(areg) + last]);
        }
        asm!(self;
            and rdx, DWORD pmask
            ; cmp rdx, QWORD [r15 + rax + tag]
            ;; self.jcc(Cc::Ne, slow)
            ; mov rdx, QWORD [r15 + rax + addend]
        );
        if store {
            match (size, vo) {
                (MemSize::B1, Opnd::R(v)) => asm!(self; mov BYTE [rdx + Rq(areg)], Rb(v)),
                (MemSize::B2, Opnd::R(v)) => asm!(self; mov WORD [rdx + Rq(areg)], Rw(v)),
                (MemSize::B4, Opnd::R(v)) => asm!(self; mov DWORD [rdx + Rq(areg)], Rd(v)),
                (MemSize::B8, Opnd::R(v)) => asm!(self; mov QWORD [rdx + Rq(areg)], Rq(v)),
                (MemSize::B1, Opnd::I(c)) => asm!(self; mov BYTE [rdx + Rq(areg)], BYTE c as i8),
                (MemSize::B2, Opnd::I(c)) => asm!(self; mov WORD [rdx + Rq(areg)], WORD c as i16),
                (MemSize::B4, Opnd::I(c)) => asm!(self; mov DWORD [rdx + Rq(areg)], DWORD c),
                (MemSize::B8, Opnd::I(c)) => asm!(self; mov QWORD [rdx + Rq(areg)], DWORD c),
                _ => {
                    self.mov_r(RAX, vo, false);
                    match size {
                        MemSize::B1 => asm!(self; mov BYTE [rdx + Rq(areg)], al),
                        MemSize::B2 => asm!(self; mov WORD [rdx + Rq(areg)], ax),
                        MemSize::B4 => asm!(self; mov DWORD [rdx + Rq(areg)], eax),
                        MemSize::B8 => asm!(self; mov QWORD [rdx + Rq(areg)], rax),
                    }
                }
            }
        } else {
            let d = dl.expect("load destination");
            let r = self.work(d);
            match (size, mop.signed) {
                (MemSize::B1, false) => asm!(self; movzx Rd(r), BYTE [rdx + Rq(areg)]),
                (MemSize::B1, true) => asm!(self; movsx Rq(r), BYTE [rdx + Rq(areg)]),
                (MemSize::B2, false) => asm!(self; movzx Rd(r), WORD [rdx + Rq(areg)]),
                (MemSize::B2, true) => asm!(self; movsx Rq(r), WORD [rdx + Rq(areg)]),
                (MemSize::B4, false) => asm!(self; mov Rd(r), DWORD [rdx + Rq(areg)]),
                (MemSize::B4, true) => asm!(self; movsxd Rq(r), DWORD [rdx + Rq(areg)]),
                (MemSize::B8, _) => asm!(self; mov Rq(r), QWORD [rdx + Rq(areg)]),
            }
            self.put(d, r);
        }
        asm!(self; =>back);
        self.stubs.push(Stub::Slow { label: slow, back, store, addr: ao, val: vo, dst: dl, info, save, insn });
    }

    /// Call the softmmu slow path (result in rax for loads). Saves live r8..r11.
    fn slow_call(&mut self, store: bool, ao: Opnd, vo: Opnd, info: u64, save: u8) {
        self.save(save);
        self.mov_r(RSI, ao, false);
        if store {
            self.mov_r(RDX, vo, false);
            asm!(self; mov ecx, DWORD info as i32);
        } else {
            asm!(self; mov edx, DWORD info as i32);
        }
        asm!(self; mov rdi, r15);
        if store {
            self.call_abs(slow_store as *const () as usize);
        } else {
            self.call_abs(slow_load as *const () as usize);
        }
        self.restore(save);
    }

    fn emit_stub(&mut self, s: Stub) {
        match s {
            Stub::Slow { label, back, store, addr, val, dst, info, save, insn } => {
                asm!(self; =>label);
                self.slow_call(store, addr, val, info, save);
                self.check_fault(insn);
                if let Some(d) = dst {
                    self.put(d, RAX);
                }
                asm!(self; jmp =>back);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::interp::Interp;
    use crate::engine::{core_of, Access, CodeFetcher, Core, Engine, Frontend, GuestFault, Mmu, StopReason, TbKey};
    use crate::env::{fault, TlbEntry, NB_MMU_MODES, PAGE_SIZE};
    use crate::ir::{Builder, GlobalSet, HelperId, Label};
    use crate::mem::GuestRam;

    const RAM_SIZE: u64 = 0x10000;
    /// Guest pages 0..0xB000 map 1:1 (RW), 0xB000..0xC000 is read-only, 0xC000..0x10000 is
    /// unmapped, 0x10000..0x14000 aliases 0..0x4000, 0x20000..0x21000 maps outside RAM.
    const RO_PAGE: u64 = 0xB000;
    const UNMAPPED: u64 = 0xC000;
    const ALIAS: u64 = 0x10000;
    const MMIO: u64 = 0x20000;
    const PC: Global = 200;

    struct TestMmu;

    impl Mmu for TestMmu {
        fn translate(&mut self, _env: &Env, _ram: &mut GuestRam, vaddr: u64, access: Access, _who: AccessKind) -> Result<u64, GuestFault> {
            let pf = Err(GuestFault { vector: 14, error_code: Some(access as u32), addr: vaddr });
            match vaddr {
                0..RO_PAGE => Ok(vaddr),
                RO_PAGE..UNMAPPED => {
                    if access == Access::Write {
                        pf
                    } else {
                        Ok(vaddr)
                    }
                }
                ALIAS..0x14000 => Ok(vaddr - ALIAS),
                MMIO..0x21000 => Ok(vaddr - MMIO + 0x100000),
                _ => pf,
            }
        }
    }

    /// A frontend that hands out prebuilt blocks by pc.
    struct TableFrontend {
        blocks: Vec<(u64, Block)>,
        helpers: Vec<HelperInfo>,
    }

    impl Frontend for TableFrontend {
        fn key(&self, env: &Env) -> TbKey {
            let pc = env.g[PC as usize];
            TbKey { pc, rip: pc, cs_base: 0, flags: 0 }
        }
        fn translate(&mut self, _env: &Env, key: &TbKey, fetch: &mut CodeFetcher, _max: u32) -> Result<Block, GuestFault> {
            let mut b = [0u8; 1];
            fetch.fetch(key.pc, &mut b)?;
            Ok(self.blocks.iter().find(|b| b.0 == key.pc).expect("no block at pc").1.clone())
        }
        fn helpers(&self) -> &[HelperInfo] {
            &self.helpers
        }
        fn pc_global(&self) -> Global {
            PC
        }
    }

    static MISALIGNED_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    #[repr(align(16))]
    struct Aligned16(#[allow(dead_code)] [u8; 16]);

    unsafe extern "C" fn h_mix(env: *mut Env, a0: u64, a1: u64, a2: u64, a3: u64) -> u64 {
        // The compiler relies on the ABI's 16-byte stack alignment at calls for this local.
        let local = Aligned16([0; 16]);
        if !std::hint::black_box(&local as *const Aligned16 as usize).is_multiple_of(16) {
            MISALIGNED_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        // SAFETY: called by generated code / the interpreter with a valid env.
        let env = unsafe { &mut *env };
        env.g[3] = env.g[3].wrapping_add(a0);
        (a0.rotate_left(7) ^ a1.wrapping_mul(3)).wrapping_add(a2) ^ a3.wrapping_sub(env.g[1])
    }

    unsafe extern "C" fn h_fault(env: *mut Env, a0: u64, a1: u64, _a2: u64, _a3: u64) -> u64 {
        // SAFETY: as above.
        let env = unsafe { &mut *env };
        if a0.is_multiple_of(16) {
            env.raise(13, Some(a1 as u32 & 0xfff8), 0);
        }
        env.g[4] ^= a1;
        a0 ^ a1
    }

    unsafe extern "C" fn h_peek(env: *mut Env, a0: u64, _a1: u64, _a2: u64, _a3: u64) -> u64 {
        // SAFETY: called from generated code with env.rt pointing at the core.
        let core = unsafe { core_of(env) };
        // SAFETY: as above; the core does not hold a reference to env.
        let e = unsafe { &mut *env };
        core.load(e, a0 & 0x7ff8, 8, AccessKind::Normal).unwrap_or(0x1234)
    }

    fn helpers() -> Vec<HelperInfo> {
        vec![
            HelperInfo { name: "mix", func: h_mix, reads: GlobalSet::NONE.with(1), writes: GlobalSet::NONE.with(3), can_fault: false },
            HelperInfo { name: "fault", func: h_fault, reads: GlobalSet::NONE, writes: GlobalSet::NONE.with(4), can_fault: true },
            HelperInfo { name: "peek", func: h_peek, reads: GlobalSet::NONE, writes: GlobalSet::NONE, can_fault: false },
        ]
    }

    fn engine() -> Engine {
        let ram = GuestRam::new(RAM_SIZE).unwrap();
        let fe = TableFrontend { blocks: Vec::new(), helpers: helpers() };
        Engine::new(ram, Box::new(TestMmu), Box::new(fe), Box::new(Interp::new()))
    }

    /// Point env.rt at the engine's core (as Engine::run does) and return the env pointer.
    fn bind(e: &mut Engine) -> *mut Env {
        let core: *mut Core = &mut *e.core;
        e.env.rt = core as *mut u8;
        &mut *e.env
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, pct: u64) -> bool {
            self.below(100) < pct
        }
        fn pick<T: Copy>(&mut self, v: &[T]) -> T {
            v[self.below(v.len() as u64) as usize]
        }
    }

    const BINOPS: [BinOp; 13] = [
        BinOp::Add,
        BinOp::Sub,
        BinOp::And,
        BinOp::Or,
        BinOp::Xor,
        BinOp::Shl,
        BinOp::Shr,
        BinOp::Sar,
        BinOp::Rotl,
        BinOp::Rotr,
        BinOp::Mul,
        BinOp::MulHU,
        BinOp::MulHS,
    ];
    const UNOPS: [UnOp; 6] = [UnOp::Not, UnOp::Neg, UnOp::Bswap, UnOp::Clz, UnOp::Ctz, UnOp::Popcnt];
    const CONDS: [Cond; 12] = [
        Cond::Eq,
        Cond::Ne,
        Cond::LtU,
        Cond::LeU,
        Cond::GtU,
        Cond::GeU,
        Cond::LtS,
        Cond::LeS,
        Cond::GtS,
        Cond::GeS,
        Cond::TstZ,
        Cond::TstNz,
    ];
    const SIZES: [MemSize; 4] = [MemSize::B1, MemSize::B2, MemSize::B4, MemSize::B8];
    const WIDTHS: [Width; 2] = [Width::W32, Width::W64];

    /// Random IR blocks. Temps defined inside a conditional region are only used inside it;
    /// loops are do-while loops on a protected counter, so every block terminates and never
    /// reads a temp that is undefined on the path taken.
    struct BlockGen<'r> {
        rng: &'r mut Rng,
        b: Builder,
        avail: Vec<Temp>,
        protected: Vec<Temp>,
        pc: u64,
        ops_left: i64,
        /// May contain accesses that fault and the faulting helper.
        faulty: bool,
    }

    impl BlockGen<'_> {
        fn konst(&mut self) -> u64 {
            let r = self.rng.next();
            match self.rng.below(12) {
                0 => 0,
                1 => 1,
                2 => self.rng.pick(&[31, 32, 33, 63, 64, 65, 7, 8, 16]),
                3 => u64::MAX,
                4 => 0x8000_0000,
                5 => 0xffff_ffff,
                6 => 0x7fff_ffff,
                7 => 0xffff_ffff_8000_0000,
                8 => 0x8000_0000_0000_0000,
                9 => r & 0xff,
                10 => r as i32 as i64 as u64,
                _ => r,
            }
        }
        fn temp(&mut self) -> Temp {
            if self.avail.is_empty() {
                let c = self.konst();
                let t = self.b.konst(c);
                self.avail.push(t);
            }
            let n = self.avail.len() as u64;
            // Favour recent temps.
            let i = if self.rng.chance(60) { n - 1 - self.rng.below(n.min(6)) } else { self.rng.below(n) };
            self.avail[i as usize]
        }
        fn val(&mut self) -> Val {
            if self.rng.chance(35) {
                Val::C(self.konst())
            } else {
                Val::T(self.temp())
            }
        }
        /// A destination: usually a fresh temp, sometimes an existing one (non-SSA).
        fn dst(&mut self) -> (Temp, bool) {
            if self.rng.chance(12) && !self.avail.is_empty() {
                let t = self.temp();
                if !self.protected.contains(&t) {
                    return (t, false);
                }
            }
            (self.b.temp(), true)
        }
        fn def(&mut self, t: Temp, fresh: bool) {
            if fresh {
                self.avail.push(t);
            }
        }
        fn addr(&mut self, store: bool) -> (Temp, bool) {
            // Blocks that are not meant to fault only touch pages they may access.
            let max = if self.faulty { 100 } else if store { 65 } else { 94 };
            let mut pick = self.rng.below(max);
            if !self.faulty && store && (55..65).contains(&pick) {
                pick = 75 + pick - 55; // alias window instead of the read-only page
            }
            let base = match pick {
                0..=54 => 0x1000 + self.rng.below(0x9000),
                55..=64 if !self.faulty => (0x1000 * (1 + self.rng.below(10))) - 1 - self.rng.below(8), // page crossing
                55..=64 => (0x1000 * (1 + self.rng.below(12))) - 1 - self.rng.below(8), // page crossing
                65..=74 => RO_PAGE + self.rng.below(0x1000),
                75..=84 => ALIAS + self.rng.below(0x4000),
                85..=90 => 0x2000 + self.rng.below(0x40),
                91..=93 => MMIO + self.rng.below(0x1000),
                94..=95 => UNMAPPED + self.rng.below(0x4000),
                _ => 0xffff_ffff_ffff_f000 + self.rng.below(0x1000),
            };
            let bt = self.b.konst(base);
            if self.rng.chance(50) {
                let x = self.temp();
                let m = self.b.and(x, Val::C(0x3f));
                (self.b.add(bt, m), false)
            } else {
                (bt, false)
            }
        }
        fn mop(&mut self, signed_ok: bool) -> MemOp {
            let size = self.rng.pick(&SIZES);
            let kind = match self.rng.below(10) {
                0 => AccessKind::System,
                1 => AccessKind::Stack,
                _ => AccessKind::Normal,
            };
            MemOp { size, signed: signed_ok && self.rng.chance(50), kind, rmw: signed_ok && self.rng.chance(15) }
        }
        fn exit(&mut self) -> Exit {
            match self.rng.below(7) {
                6 => Exit::Repeat { pc: self.rng.pick(&[0x1000, 0x2468]) },
                0 | 1 => {
                    let r = self.rng.next();
                    Exit::Jump { pc: self.rng.pick(&[0x1000, 0x1234, 0xffff_ffff_8000_0000, r]) }
                }
                2 => Exit::Indirect { pc: self.temp() },
                3 => Exit::Exception { vector: 6, error_code: self.rng.chance(50).then_some(3) },
                4 => Exit::Platform { op: 7, arg: 9, len: 2 },
                _ => Exit::Sync { pc: 0x4444 },
            }
        }

        fn seq(&mut self, n: u32, depth: u32) {
            for _ in 0..n {
                if self.ops_left <= 0 {
                    return;
                }
                self.ops_left -= 1;
                match self.rng.below(100) {
                    0..=7 => {
                        self.pc += 1 + self.rng.below(10);
                        self.b.insn_start(self.pc);
                    }
                    8..=27 => {
                        let (op, w) = (self.rng.pick(&BINOPS), self.rng.pick(&WIDTHS));
                        let a = self.temp();
                        let bv = self.val();
                        let (d, fresh) = self.dst();
                        self.b.push(Op::Bin { op, w, dst: d, a, b: bv });
                        self.def(d, fresh);
                    }
                    28..=33 => {
                        let (op, w) = (self.rng.pick(&UNOPS), self.rng.pick(&WIDTHS));
                        let a = self.temp();
                        let (d, fresh) = self.dst();
                        self.b.push(Op::Un { op, w, dst: d, a });
                        self.def(d, fresh);
                    }
                    34..=37 => {
                        let a = self.temp();
                        let from = self.rng.pick(&SIZES);
                        let signed = self.rng.chance(50);
                        let (d, fresh) = self.dst();
                        self.b.push(Op::Ext { dst: d, a, from, signed });
                        self.def(d, fresh);
                    }
                    38..=41 => {
                        let cond = self.rng.pick(&CONDS);
                        let a = self.temp();
                        let bv = self.val();
                        let (d, fresh) = self.dst();
                        self.b.push(Op::SetCond { cond, dst: d, a, b: bv });
                        self.def(d, fresh);
                    }
                    42..=45 => {
                        let cond = self.rng.pick(&CONDS);
                        let a = self.temp();
                        let (bv, t, f) = (self.val(), self.val(), self.val());
                        let (d, fresh) = self.dst();
                        self.b.push(Op::Select { cond, dst: d, a, b: bv, t, f });
                        self.def(d, fresh);
                    }
                    46..=49 => {
                        let g = self.rng.below(8) as Global;
                        let (d, fresh) = self.dst();
                        self.b.push(Op::GetG { dst: d, g });
                        self.def(d, fresh);
                    }
                    50..=53 => {
                        let g = self.rng.below(8) as Global;
                        let v = self.val();
                        self.b.set(g, v);
                    }
                    54..=56 => {
                        let c = self.konst();
                        let (d, fresh) = self.dst();
                        self.b.push(Op::Const { dst: d, val: c });
                        self.def(d, fresh);
                    }
                    57..=59 => {
                        let s = self.temp();
                        let (d, fresh) = self.dst();
                        self.b.push(Op::Mov { dst: d, src: s });
                        self.def(d, fresh);
                    }
                    60..=67 => {
                        let (a, _) = self.addr(false);
                        let mop = self.mop(true);
                        let (d, fresh) = self.dst();
                        self.b.push(Op::Load { dst: d, addr: a, mop });
                        self.def(d, fresh);
                    }
                    68..=74 => {
                        let (a, _) = self.addr(true);
                        let mop = self.mop(false);
                        let v = self.val();
                        self.b.store(a, v, mop);
                    }
                    75..=79 => {
                        let h = if self.faulty { self.rng.below(3) as u16 } else { self.rng.pick(&[0, 2]) };
                        let nargs = self.rng.below(5) as usize;
                        let args: Vec<Val> = (0..nargs).map(|_| self.val()).collect();
                        if self.rng.chance(20) {
                            self.b.call_void(HelperId(h), &args);
                        } else {
                            let (d, fresh) = self.dst();
                            self.b.push(Op::Call { helper: HelperId(h), args, dst: Some(d) });
                            self.def(d, fresh);
                        }
                    }
                    80..=86 if depth < 3 => {
                        // Forward conditional region, possibly with an exit inside.
                        let l: Label = self.b.label();
                        let cond = self.rng.pick(&CONDS);
                        let a = self.temp();
                        let bv = self.val();
                        self.b.brcond(cond, a, bv, l);
                        let keep = self.avail.len();
                        let n = 1 + self.rng.below(8) as u32;
                        self.seq(n, depth + 1);
                        if self.rng.chance(30) {
                            let e = self.exit();
                            self.b.exit(e);
                        } else if self.rng.chance(20) {
                            // if/else diamond
                            let l2 = self.b.label();
                            self.b.br(l2);
                            self.b.place(l);
                            self.avail.truncate(keep);
                            self.seq(n, depth + 1);
                            self.avail.truncate(keep);
                            self.b.place(l2);
                            continue;
                        }
                        self.avail.truncate(keep);
                        self.b.place(l);
                    }
                    87..=90 if depth < 2 => {
                        // Bounded do-while loop.
                        let k = 1 + self.rng.below(4);
                        let c = self.b.konst(k);
                        self.protected.push(c);
                        self.avail.push(c);
                        let l = self.b.label();
                        self.b.place(l);
                        let n = 1 + self.rng.below(10) as u32;
                        self.seq(n, depth + 1);
                        self.b.push(Op::Bin { op: BinOp::Sub, w: Width::W64, dst: c, a: c, b: Val::C(1) });
                        self.b.brcond(Cond::Ne, c, Val::C(0), l);
                        self.protected.pop();
                    }
                    _ => {
                        let a = self.temp();
                        let bv = self.val();
                        let (d, fresh) = self.dst();
                        self.b.push(Op::Bin { op: BinOp::Add, w: Width::W64, dst: d, a, b: bv });
                        self.def(d, fresh);
                    }
                }
            }
        }
    }

    fn random_block(rng: &mut Rng) -> Block {
        let mut g = BlockGen { rng, b: Builder::new(), avail: Vec::new(), protected: Vec::new(), pc: 0x1000, ops_left: 0, faulty: false };
        g.faulty = g.rng.chance(35);
        g.b.insn_start(0x1000);
        // Sometimes many long-lived temps, to force spills beyond the fixed frame.
        let many = if g.rng.chance(10) { 20 + g.rng.below(300) } else { g.rng.below(6) };
        let mut long_lived = Vec::new();
        for _ in 0..many {
            let t = if g.rng.chance(50) {
                let gg = g.rng.below(8) as Global;
                g.b.get(gg)
            } else {
                let c = g.konst();
                g.b.konst(c)
            };
            g.avail.push(t);
            long_lived.push(t);
        }
        g.ops_left = 10 + g.rng.below(150) as i64;
        let n = g.ops_left as u32;
        g.seq(n, 0);
        if !long_lived.is_empty() {
            let mut acc = g.b.konst(0);
            for &t in &long_lived {
                acc = g.b.bin(BinOp::Add, Width::W64, acc, t);
                acc = g.b.bin(BinOp::Rotl, Width::W64, acc, Val::C(3));
            }
            g.b.set(5, acc);
        }
        let e = g.exit();
        g.b.exit(e);
        let mut blk = g.b.finish();
        blk.guest_len = 16;
        blk.mmu_idx = g.rng.below(NB_MMU_MODES as u64) as u32;
        blk
    }

    fn init_state(e: &mut Engine, seed: u64, mmu_idx: u32) {
        let mut r = Rng(seed | 1);
        for g in e.env.g.iter_mut() {
            *g = r.next();
        }
        e.env.g[1] = r.below(100);
        e.env.icount = r.below(1000);
        e.env.icount_limit = u64::MAX;
        e.env.fault = 0;
        e.env.mmu_idx = mmu_idx;
        e.env.tlb_flush();
        let ram = e.ram().slice_mut(0, RAM_SIZE as usize).unwrap();
        for c in ram.chunks_mut(8) {
            c.copy_from_slice(&r.next().to_le_bytes());
        }
    }

    fn tlb_snapshot(e: &mut Engine) -> Vec<(u64, u64, u64, u64)> {
        let base = e.ram().base() as u64;
        e.env.tlb.iter().flatten().map(|t: &TlbEntry| (t.read, t.write, t.exec, if t.addend == 0 { 0 } else { t.addend.wrapping_sub(base) })).collect()
    }

    fn compare(a: &mut Engine, b: &mut Engine, ra: u64, rb: u64, what: &str, blk: &Block) {
        let mut diffs = Vec::new();
        if ra != rb {
            diffs.push(format!("return {ra:#x} vs {rb:#x}"));
        }
        for i in 0..a.env.g.len() {
            if a.env.g[i] != b.env.g[i] {
                diffs.push(format!("g[{i}] {:#x} vs {:#x}", a.env.g[i], b.env.g[i]));
            }
        }
        let fields = |e: &Engine| (e.env.icount, e.env.fault, e.env.cur_tb, e.env.exc_vector, e.env.exc_has_code, e.env.exc_code, e.env.exc_addr);
        if fields(a) != fields(b) {
            diffs.push(format!("env {:?} vs {:?}", fields(a), fields(b)));
        }
        if a.ram().slice(0, RAM_SIZE as usize) != b.ram().slice(0, RAM_SIZE as usize) {
            diffs.push("RAM differs".into());
        }
        if tlb_snapshot(a) != tlb_snapshot(b) {
            diffs.push("TLB differs".into());
        }
        if !diffs.is_empty() {
            let mut s = String::new();
            for (i, op) in blk.ops.iter().enumerate() {
                s += &format!("{i:4}: {op:?}\n");
            }
            panic!("{what}: interp vs x64 mismatch:\n{}\nblock (mmu {}):\n{s}", diffs.join("\n"), blk.mmu_idx);
        }
    }

    fn differential(n: u32, seed: u64, x64: &mut X64Backend) {
        let hs = helpers();
        let mut rng = Rng(seed);
        let mut interp = Interp::new();
        let (mut ea, mut eb) = (engine(), engine());
        let (pa, pb) = (bind(&mut ea), bind(&mut eb));
        for iter in 0..n {
            let blk = random_block(&mut rng);
            let tb = rng.below(1 << 20) as u32;
            if x64.is_full() {
                x64.flush();
            }
            let ca = interp.compile(&blk, tb, &hs, PC).unwrap();
            let cb = x64.compile(&blk, tb, &hs, PC).unwrap();
            let st = rng.next();
            init_state(&mut ea, st, blk.mmu_idx);
            init_state(&mut eb, st, blk.mmu_idx);
            let budget = rng.chance(3);
            if budget {
                ea.env.icount_limit = ea.env.icount;
                eb.env.icount_limit = eb.env.icount;
            }
            // Twice: the second run finds the TLB filled by the first.
            for run in 0..2 {
                ea.env.fault = 0;
                eb.env.fault = 0;
                // SAFETY: env.rt points at each engine's core (bind); the blocks only access
                // guest RAM through the engine.
                let (ra, rb) = unsafe { (interp.execute(pa, ca), x64.execute(pb, cb)) };
                if budget {
                    assert_eq!(rb, ret::encode(tb, 0, ret::BUDGET));
                }
                compare(&mut ea, &mut eb, ra, rb, &format!("iteration {iter} run {run}"), &blk);
            }
        }
    }

    #[test]
    fn differential_random_blocks() {
        let mut x64 = X64Backend::new();
        differential(6000, 0x9e37_79b9_7f4a_7c15, &mut x64);
        assert_eq!(MISALIGNED_CALLS.load(std::sync::atomic::Ordering::Relaxed), 0, "helpers called with a misaligned stack");
    }

    #[test]
    fn differential_without_lzcnt_tzcnt_popcnt() {
        let mut x64 = X64Backend::with_features(Features { lzcnt: false, bmi1: false, popcnt: false });
        differential(1500, 0x1234_5678_9abc_def1, &mut x64);
    }

    #[test]
    fn differential_small_code_buffer_flushes() {
        // Many compiles into one backend, flushing whenever it reports full.
        let mut x64 = X64Backend::new();
        x64.mem = ExecMem::new(2 << 20).unwrap();
        x64.emit_trampoline();
        differential(3000, 0x5151_1234_0000_0001, &mut x64);
    }

    const EDGE: [u64; 14] = [
        0,
        1,
        2,
        31,
        32,
        63,
        64,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        0x1_0000_0001,
        0x8000_0000_0000_0000,
        0xffff_ffff_ffff_fffe,
        0x1234_5678_9abc_def0,
    ];

    /// Every op on edge values, with the second operand as a temp and as a constant, and
    /// with the destination sharing a register with an operand, against `eval`.
    #[test]
    fn directed_ops_against_eval() {
        use crate::backend::eval;
        let hs = helpers();
        for feat in [Features::detect(), Features { lzcnt: false, bmi1: false, popcnt: false }] {
            let mut be = X64Backend::with_features(feat);
            let mut e = engine();
            let mut run = |be: &mut X64Backend, blk: &Block, a: u64, b: u64| -> [u64; 4] {
                e.env.g[1] = a;
                e.env.g[2] = b;
                let c = be.compile(blk, 1, &hs, PC).unwrap();
                assert_eq!(exec(be, &mut e, c), ret::encode(1, 0, ret::EXIT));
                [e.env.g[3], e.env.g[4], e.env.g[5], e.env.g[6]]
            };
            for op in BINOPS {
                for w in WIDTHS {
                    for &bv in &EDGE {
                        // b as temp: plain, dst == a, dst == b; b as constant; a == b.
                        let mut b = Builder::new();
                        b.insn_start(0);
                        let x = b.get(1);
                        let y = b.get(2);
                        let r = b.bin(op, w, x, y);
                        b.set(3, r);
                        let x2 = b.get(1);
                        b.push(Op::Bin { op, w, dst: x2, a: x2, b: Val::T(y) });
                        b.set(4, x2);
                        let y2 = b.get(2);
                        b.push(Op::Bin { op, w, dst: y2, a: x, b: Val::T(y2) });
                        b.set(5, y2);
                        let r = b.bin(op, w, x, Val::C(bv));
                        b.set(6, r);
                        b.exit(Exit::Jump { pc: 0 });
                        let blk = b.finish();
                        for &av in &EDGE {
                            let want = eval::bin(op, w, av, bv);
                            let got = run(&mut be, &blk, av, bv);
                            assert_eq!(got, [want; 4], "{op:?} {w:?} {av:#x} {bv:#x} ({feat:?})");
                        }
                    }
                }
            }
            for op in UNOPS {
                for w in WIDTHS {
                    let mut b = Builder::new();
                    b.insn_start(0);
                    let x = b.get(1);
                    let r = b.un(op, w, x);
                    b.set(3, r);
                    b.push(Op::Un { op, w, dst: x, a: x });
                    b.set(4, x);
                    b.set(5, r);
                    b.set(6, r);
                    b.exit(Exit::Jump { pc: 0 });
                    let blk = b.finish();
                    for &av in EDGE.iter().chain(&[0x0000_0100_0000_0000, 0x10]) {
                        let want = eval::un(op, w, av);
                        assert_eq!(run(&mut be, &blk, av, 0), [want; 4], "{op:?} {w:?} {av:#x} ({feat:?})");
                    }
                }
            }
            for cond in CONDS {
                for &bv in &EDGE {
                    let mut b = Builder::new();
                    b.insn_start(0);
                    let x = b.get(1);
                    let y = b.get(2);
                    let r = b.setcond(cond, x, y);
                    b.set(3, r);
                    let r = b.setcond(cond, x, Val::C(bv));
                    b.set(4, r);
                    let r = b.select(cond, x, y, x, y);
                    b.set(5, r);
                    let r = b.select(cond, x, Val::C(bv), Val::C(0x1111_2222_3333_4444), Val::C(7));
                    b.set(6, r);
                    b.exit(Exit::Jump { pc: 0 });
                    let blk = b.finish();
                    for &av in &EDGE {
                        let c = cond.eval(av, bv);
                        let want = [c as u64, c as u64, if c { av } else { bv }, if c { 0x1111_2222_3333_4444 } else { 7 }];
                        assert_eq!(run(&mut be, &blk, av, bv), want, "{cond:?} {av:#x} {bv:#x}");
                    }
                }
            }
            for from in SIZES {
                for signed in [false, true] {
                    let mut b = Builder::new();
                    b.insn_start(0);
                    let x = b.get(1);
                    let r = b.ext(x, from, signed);
                    b.set(3, r);
                    b.set(4, r);
                    b.set(5, r);
                    b.set(6, r);
                    b.exit(Exit::Jump { pc: 0 });
                    let blk = b.finish();
                    for &av in EDGE.iter().chain(&[0x80, 0xff, 0x8000, 0xffff, 0x7f]) {
                        let sh = 64 - from.bits();
                        let want = if signed { (((av << sh) as i64) >> sh) as u64 } else { (av << sh) >> sh };
                        assert_eq!(run(&mut be, &blk, av, 0), [want; 4], "ext {from:?} {signed} {av:#x}");
                    }
                }
            }
        }
    }

    /// Dump the code of a small typical block (for eyeballing with
    /// `objdump -D -b binary -mi386:x86-64 $TMPDIR/xenolith_block.bin`).
    #[test]
    #[ignore]
    fn dump_code() {
        let hs = helpers();
        let mut be = X64Backend::new();
        let mut b = Builder::new();
        // add dword [rbx+8], eax ; flags ; loop back while ecx != 0
        b.insn_start(0x1000);
        let rbx = b.get(3);
        let a = b.add(rbx, Val::C(8));
        let m = b.load(a, MemOp::new(MemSize::B4));
        let eax = b.get(0);
        let r = b.bin(BinOp::Add, Width::W32, m, eax);
        b.store(a, r, MemOp::new(MemSize::B4));
        let z = b.setcond(Cond::Eq, r, Val::C(0));
        b.set(20, z);
        b.set(21, r);
        b.insn_start(0x1003);
        let rcx = b.get(1);
        let rcx = b.sub(rcx, Val::C(1));
        b.set(1, rcx);
        let l = b.label();
        b.brcond(Cond::Eq, rcx, Val::C(0), l);
        b.exit(Exit::Jump { pc: 0x1000 });
        b.place(l);
        b.exit(Exit::Jump { pc: 0x1008 });
        let blk = b.finish();
        let c = be.compile(&blk, 1, &hs, PC).unwrap();
        let start = be.tbs[c.0].entry;
        let len = be.mem.next_addr() - start;
        // SAFETY: [start, start+len) is code this backend just wrote (readable, RX).
        let bytes = unsafe { std::slice::from_raw_parts(start as *const u8, len) };
        let path = std::env::temp_dir().join("xenolith_block.bin");
        std::fs::write(&path, bytes).unwrap();
        eprintln!("{len} bytes at {start:#x} written to {}", path.display());
    }

    /// Rough speed check: a self-chained 4-instruction loop block
    /// (`add rax,[rsi]; add rsi,8; dec rcx; jnz`), run through the engine.
    #[test]
    #[ignore]
    fn bench_loop() {
        fn blocks() -> Vec<(u64, Block)> {
            let mut b = Builder::new();
            b.insn_start(0x1000);
            let rsi = b.get(6);
            let m = b.load(rsi, MemOp::new(MemSize::B8));
            let rax = b.get(0);
            let rax = b.add(rax, m);
            b.set(0, rax);
            b.set(20, rax); // flags result
            b.insn_start(0x1003);
            let rsi = b.add(rsi, Val::C(8));
            let rsi = b.and(rsi, Val::C(0x7fff));
            b.set(6, rsi);
            b.insn_start(0x1007);
            let rcx = b.get(1);
            let rcx = b.sub(rcx, Val::C(1));
            b.set(1, rcx);
            b.set(20, rcx);
            b.insn_start(0x100a);
            let l = b.label();
            b.brcond(Cond::Eq, rcx, Val::C(0), l);
            b.exit(Exit::Jump { pc: 0x1000 });
            b.place(l);
            b.exit(Exit::Platform { op: 0, arg: 0, len: 1 });
            let mut blk = b.finish();
            blk.guest_len = 12;
            vec![(0x1000, blk)]
        }
        for kind in [0, 1] {
            let ram = GuestRam::new(RAM_SIZE).unwrap();
            let fe = TableFrontend { blocks: blocks(), helpers: helpers() };
            let be: Box<dyn Backend> = if kind == 0 { Box::new(Interp::new()) } else { Box::new(X64Backend::new()) };
            let mut e = Engine::new(ram, Box::new(TestMmu), Box::new(fe), be);
            e.env.g[PC as usize] = 0x1000;
            let n = 20_000_000u64;
            e.env.g[1] = n;
            let t = std::time::Instant::now();
            e.run();
            let dt = t.elapsed();
            eprintln!("{}: {:.2} ns/iteration ({} insns)", if kind == 0 { "interp" } else { "x64" }, dt.as_nanos() as f64 / n as f64, e.env.icount);
        }
    }

    fn exec(be: &mut dyn Backend, e: &mut Engine, c: CodeHandle) -> u64 {
        let p = bind(e);
        // SAFETY: env.rt points at the engine's core.
        unsafe { be.execute(p, c) }
    }

    #[test]
    fn tlb_miss_slow_path_then_hit() {
        let hs = helpers();
        let mut be = X64Backend::new();
        let mut e = engine();
        e.ram().write_u64(0x3008, 0x1122_3344_5566_7788);
        let mut b = Builder::new();
        b.insn_start(0x100);
        let a = b.konst(0x3008);
        let v = b.load(a, MemOp::new(MemSize::B8));
        b.set(1, v);
        b.exit(Exit::Jump { pc: 0x200 });
        let blk = b.finish();
        let c = be.compile(&blk, 5, &hs, PC).unwrap();
        assert_eq!(e.env.tlb[0][3].read, crate::env::TLB_INVALID);
        assert_eq!(exec(&mut be, &mut e, c), ret::encode(5, 0, ret::EXIT));
        assert_eq!(e.env.g[1], 0x1122_3344_5566_7788);
        assert_eq!(e.env.tlb[0][3].read, 0x3000, "slow path filled the TLB");
        assert_eq!(e.env.g[PC as usize], 0x200);
        assert_eq!(e.env.icount, 1);
        // Redirect the entry to a host buffer: a hit must read through it.
        let buf: Box<[u64; 512]> = Box::new([0xdead_beef_0000_0001; 512]);
        e.env.tlb[0][3].addend = (buf.as_ptr() as u64).wrapping_sub(0x3000);
        assert_eq!(exec(&mut be, &mut e, c), ret::encode(5, 0, ret::EXIT));
        assert_eq!(e.env.g[1], 0xdead_beef_0000_0001, "fast path used the TLB entry");
        // A System access never uses the TLB.
        let mut b = Builder::new();
        b.insn_start(0x100);
        let a = b.konst(0x3008);
        let v = b.load(a, MemOp { size: MemSize::B8, signed: false, kind: AccessKind::System, rmw: false });
        b.set(2, v);
        b.exit(Exit::Jump { pc: 0x200 });
        let c2 = be.compile(&b.finish(), 6, &hs, PC).unwrap();
        exec(&mut be, &mut e, c2);
        assert_eq!(e.env.g[2], 0x1122_3344_5566_7788);
        drop(buf);
    }

    #[test]
    fn load_fault_reports_instruction() {
        let hs = helpers();
        let mut be = X64Backend::new();
        let mut e = engine();
        let mut b = Builder::new();
        b.insn_start(0x100);
        b.set(2, Val::C(1));
        b.insn_start(0x101);
        let a = b.konst(0x1000);
        let _ = b.load(a, MemOp::new(MemSize::B4));
        b.insn_start(0x105);
        let a = b.konst(UNMAPPED + 0x10);
        let v = b.load(a, MemOp::new(MemSize::B4));
        b.set(3, v);
        b.exit(Exit::Jump { pc: 0x200 });
        let c = be.compile(&b.finish(), 9, &hs, PC).unwrap();
        e.env.g[3] = 77;
        let r = exec(&mut be, &mut e, c);
        assert_eq!(r, ret::encode(9, 2, ret::FAULT));
        assert_eq!(e.env.fault, fault::EXCEPTION);
        assert_eq!(e.env.exc_vector, 14);
        assert_eq!(e.env.exc_addr, UNMAPPED + 0x10);
        assert_eq!(e.env.g[2], 1);
        assert_eq!(e.env.g[3], 77);
        assert_eq!(e.env.icount, 0);
        assert_eq!(e.env.cur_tb, 9);
        // Faulting helper.
        let mut b = Builder::new();
        b.insn_start(0x100);
        b.insn_start(0x101);
        let r = b.call(HelperId(1), &[Val::C(32), Val::C(0x40)]);
        b.set(3, r);
        b.exit(Exit::Jump { pc: 0x200 });
        let c = be.compile(&b.finish(), 10, &hs, PC).unwrap();
        e.env.fault = 0;
        assert_eq!(exec(&mut be, &mut e, c), ret::encode(10, 1, ret::FAULT));
        assert_eq!((e.env.exc_vector, e.env.exc_code), (13, 0x40));
    }

    fn two_blocks() -> (Block, Block) {
        let mut b = Builder::new();
        b.insn_start(0x100);
        let x = b.get(1);
        let y = b.add(x, Val::C(1));
        b.set(1, y);
        b.insn_start(0x102);
        b.exit(Exit::Jump { pc: 0x180 });
        let a = b.finish();
        let mut b = Builder::new();
        b.insn_start(0x180);
        let x = b.get(1);
        let y = b.bin(BinOp::Mul, Width::W64, x, Val::C(10));
        b.set(2, y);
        b.exit(Exit::Exception { vector: 3, error_code: None });
        b.insn_start(0x181);
        b.exit(Exit::Jump { pc: 0x300 });
        (a, b.finish())
    }

    #[test]
    fn chain_unchain_and_budget() {
        let hs = helpers();
        let mut be = X64Backend::new();
        let mut e = engine();
        let (a, b) = two_blocks();
        let ca = be.compile(&a, 1, &hs, PC).unwrap();
        let cb = be.compile(&b, 2, &hs, PC).unwrap();
        // Unchained: A returns through its exit 0.
        assert_eq!(exec(&mut be, &mut e, ca), ret::encode(1, 0, ret::EXIT));
        assert_eq!((e.env.g[1], e.env.icount, e.env.g[PC as usize]), (1, 2, 0x180));
        // Chained: A continues into B, which leaves through its exit 0 (the exception).
        assert!(be.chain(ca, 0, cb));
        assert!(!be.chain(cb, 0, ca), "non-jump exits do not chain");
        assert_eq!(exec(&mut be, &mut e, ca), ret::encode(2, 0, ret::EXIT));
        assert_eq!((e.env.g[1], e.env.g[2], e.env.icount, e.env.cur_tb), (2, 20, 4, 2));
        // Budget: A runs, B finds the budget exhausted at entry.
        e.env.icount_limit = e.env.icount + 1;
        assert_eq!(exec(&mut be, &mut e, ca), ret::encode(2, 0, ret::BUDGET));
        assert_eq!((e.env.g[1], e.env.g[2], e.env.icount), (3, 20, 6));
        // Budget at the very first entry.
        assert_eq!(exec(&mut be, &mut e, ca), ret::encode(1, 0, ret::BUDGET));
        assert_eq!(e.env.g[1], 3);
        e.env.icount_limit = u64::MAX;
        // Unchain restores the return path.
        be.unchain(ca, 0);
        assert_eq!(exec(&mut be, &mut e, ca), ret::encode(1, 0, ret::EXIT));
        assert_eq!((e.env.g[1], e.env.g[2], e.env.icount), (4, 20, 8));
        // Self-loop through a chain, stopped by the budget.
        assert!(be.chain(ca, 0, ca));
        e.env.icount_limit = e.env.icount + 100;
        assert_eq!(exec(&mut be, &mut e, ca), ret::encode(1, 0, ret::BUDGET));
        assert_eq!((e.env.g[1], e.env.icount), (54, 108));
        // Flush drops everything; new code works.
        be.flush();
        let ca = be.compile(&a, 1, &hs, PC).unwrap();
        e.env.icount_limit = u64::MAX;
        assert_eq!(exec(&mut be, &mut e, ca), ret::encode(1, 0, ret::EXIT));
    }

    /// `Exit::Repeat` (a REP instruction with iterations left) chains like a jump but does
    /// not retire the instruction.
    #[test]
    fn engine_run_repeat() {
        fn rep_block(pc: u64, first: bool) -> Block {
            let mut b = Builder::new();
            if first {
                b.insn_start(pc - 1);
                let x = b.get(3);
                let x = b.add(x, Val::C(1));
                b.set(3, x);
            }
            b.insn_start(pc);
            let c = b.get(2);
            let done = b.label();
            b.brcond(Cond::Eq, c, Val::C(0), done);
            let c = b.sub(c, Val::C(1));
            b.set(2, c);
            let a = b.shl(c, Val::C(3));
            let a = b.add(a, Val::C(0x3000));
            b.store(a, c, MemOp::new(MemSize::B8));
            b.exit(Exit::Repeat { pc });
            b.place(done);
            b.exit(Exit::Platform { op: 5, arg: 0, len: 1 });
            let mut blk = b.finish();
            blk.guest_len = if first { 3 } else { 2 };
            blk
        }
        let mut results = Vec::new();
        for kind in [0, 1] {
            let ram = GuestRam::new(RAM_SIZE).unwrap();
            let fe = TableFrontend { blocks: vec![(0x1000, rep_block(0x1001, true)), (0x1001, rep_block(0x1001, false))], helpers: helpers() };
            let be: Box<dyn Backend> = if kind == 0 { Box::new(Interp::new()) } else { Box::new(X64Backend::new()) };
            let mut e = Engine::new(ram, Box::new(TestMmu), Box::new(fe), be);
            e.env.g[PC as usize] = 0x1000;
            e.env.g[2] = 100;
            assert_eq!(e.run(), StopReason::Platform { op: 5, arg: 0, len: 1 });
            if kind == 1 {
                assert!(e.stats().chains >= 1);
            }
            let mem: Vec<u64> = (0..100).map(|i| e.ram().read_u64(0x3000 + 8 * i).unwrap()).collect();
            results.push((e.env.g[2], e.env.g[3], e.env.g[PC as usize], e.env.icount, mem));
        }
        assert_eq!(results[0], results[1]);
        // Only the first instruction retired: the REP never completed before the platform exit.
        assert_eq!((results[1].0, results[1].1, results[1].2, results[1].3), (0, 1, 0x1001, 1));
    }

    /// The whole engine with this backend: a counted loop over two blocks, chained.
    #[test]
    fn engine_run_with_chaining() {
        fn blocks() -> Vec<(u64, Block)> {
            // 0x1000: g1 -= 1; store g1 to [0x2000 + 8*(g1 & 7)]; -> 0x1010
            let mut b = Builder::new();
            b.insn_start(0x1000);
            let x = b.get(1);
            let y = b.sub(x, Val::C(1));
            b.set(1, y);
            b.insn_start(0x1004);
            let o = b.and(y, Val::C(7));
            let o = b.shl(o, Val::C(3));
            let a = b.add(o, Val::C(0x2000));
            b.store(a, y, MemOp::new(MemSize::B8));
            b.exit(Exit::Jump { pc: 0x1010 });
            let mut a_blk = b.finish();
            a_blk.guest_len = 16;
            // 0x1010: if g1 != 0 -> 0x1000 else platform exit
            let mut b = Builder::new();
            b.insn_start(0x1010);
            let x = b.get(1);
            let l = b.label();
            b.brcond(Cond::Eq, x, Val::C(0), l);
            b.exit(Exit::Jump { pc: 0x1000 });
            b.place(l);
            b.exit(Exit::Platform { op: 1, arg: 2, len: 3 });
            let mut b_blk = b.finish();
            b_blk.guest_len = 4;
            vec![(0x1000, a_blk), (0x1010, b_blk)]
        }
        let mut results = Vec::new();
        for kind in [0, 1] {
            let ram = GuestRam::new(RAM_SIZE).unwrap();
            let fe = TableFrontend { blocks: blocks(), helpers: helpers() };
            let be: Box<dyn Backend> = if kind == 0 { Box::new(Interp::new()) } else { Box::new(X64Backend::new()) };
            let mut e = Engine::new(ram, Box::new(TestMmu), Box::new(fe), be);
            e.env.g[PC as usize] = 0x1000;
            e.env.g[1] = 1000;
            let r = e.run();
            assert_eq!(r, StopReason::Platform { op: 1, arg: 2, len: 3 });
            let st = e.stats();
            if kind == 1 {
                assert!(st.chains >= 2, "chained {}", st.chains);
                assert!(st.lookups < 20, "chained blocks bypass the run loop: {} lookups", st.lookups);
            }
            let mem: Vec<u64> = (0..8).map(|i| e.ram().read_u64(0x2000 + 8 * i).unwrap()).collect();
            results.push((e.env.g[1], e.env.g[PC as usize], e.env.icount, mem));
        }
        assert_eq!(results[0], results[1]);
        assert_eq!(results[1].2, 1000 * 3 - 1, "the platform instruction has not retired");
        let _ = PAGE_SIZE;
    }
}
