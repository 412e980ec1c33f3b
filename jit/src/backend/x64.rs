//! x86_64 host backend (dynasmrt).
//!
//! Each block is assembled into a `VecAssembler` whose base address is the place the bytes
//! will occupy in the [`ExecMem`] region, then copied there; code never moves afterwards.
//!
//! # Frame and registers
//! [`execute`](Backend::execute) calls a trampoline generated once at the start of the
//! region: it pushes the callee-saved registers, reserves a fixed frame of `FRAME_BYTES`
//! (leaving `rsp` 16-byte aligned), keeps `Env*` (plus `ENV_BIAS`) in `r15` and jumps to the block. Every
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
//! them is live across the call), or in spill slots. rax, rcx, rdx, rsi are scratch
//! within one op; rdi holds an open access group's addend (0 after any call, see
//! `group_access`). Globals are never cached: `GetG`/`SetG` access `[r15 + 8*g - ENV_BIAS]`.
//!
//! # Register allocation
//! Done by the host-independent linear-scan allocator in [`super::regalloc`], given `POOL`:
//! callee-saved rbx, rbp, r12..r14, caller-saved r8..r11, spill slots from `[rsp + 32]`.
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

use super::codecache::CodeCache;
use super::regalloc::{
    access_groups, access_pairs, const_addrs, far_targets, label_refs, regalloc, side_exit, use_counts,
    GroupRole, Loc, RegPool,
};
use super::{Backend, CodeBufferFull, CodeHandle};
use crate::engine::{mem_info, mem_info_tb, ret, slow_load, slow_store};
use crate::env::{
    tlb_index, Env, JC_BITS, JC_ENTRIES, OFF_CUR_TB, OFF_FAULT, OFF_ICOUNT,
    OFF_ICOUNT_LIMIT, OFF_JC, OFF_JC_EPOCH, OFF_SCRATCH, OFF_TLB, PAGE_BITS, PAGE_MASK, TLB_FOLD,
    TLB_SIZE,
};
use crate::execmem::DEFAULT_CODE_SIZE;
use crate::ir::{
    AccessKind, BinOp, Block, Cond, Exit, Global, HelperInfo, Inline, MemOp, MemSize, Op, SseArith,
    SseForm, SseOp, SyncList, Temp, UnOp, Val, Width,
};

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
const RDI: u8 = 7;
const R8: u8 = 8;
const R9: u8 = 9;
const R10: u8 = 10;
const R11: u8 = 11;
const R12: u8 = 12;
const R13: u8 = 13;
const R14: u8 = 14;

/// Temp registers preserved by calls.
const CALLEE_POOL: [u8; 5] = [RBX, RBP, R12, R13, R14];
/// Temp registers clobbered by calls (saved around them when live). Bit k of a
/// [`caller_live`](super::regalloc::Alloc::caller_live) mask is `CALLER_POOL[k]`, saved at
/// `[rsp + 8*k]`.
const CALLER_POOL: [u8; 4] = [R8, R9, R10, R11];

/// Fixed frame reserved by the trampoline. 6 pushes + return address + this = 16-aligned.
const FRAME_BYTES: i32 = 1016;
/// Frame slots at the bottom of the frame that save r8..r11 around calls.
const SAVE_SLOTS: usize = CALLER_POOL.len();

/// What the shared register allocator may use; spill slots follow the save area.
const POOL: RegPool = RegPool {
    callee_saved: &CALLEE_POOL,
    caller_saved: &CALLER_POOL,
    spill_base: 8 * SAVE_SLOTS as i32,
};

/// `r15` points this far into `Env`, so that the signed 8-bit displacements reach the
/// first 32 globals (the general registers, rip, the lazy flags): `[r15 + disp8]` is three
/// bytes shorter than `[r15 + disp32]`, and generated code addresses them everywhere.
const ENV_BIAS: i32 = 0x80;
const _: () = assert!(
    ENV_BIAS == 0x80,
    "the literal 0x80 in `lea` instructions is ENV_BIAS"
);
const OFF_TLB_I: i32 = OFF_TLB as i32 - ENV_BIAS;
const OFF_JC_I: i32 = OFF_JC as i32 - ENV_BIAS;
const OFF_JC_EPOCH_I: i32 = OFF_JC_EPOCH as i32 - ENV_BIAS;
const OFF_FAULT_I: i32 = OFF_FAULT as i32 - ENV_BIAS;
const OFF_ICOUNT_I: i32 = OFF_ICOUNT as i32 - ENV_BIAS;
const OFF_ICOUNT_LIMIT_I: i32 = OFF_ICOUNT_LIMIT as i32 - ENV_BIAS;
const OFF_CUR_TB_I: i32 = OFF_CUR_TB as i32 - ENV_BIAS;
const OFF_SCRATCH_I: i32 = OFF_SCRATCH as i32 - ENV_BIAS;
const TLB_ENTRY_BYTES: usize = std::mem::size_of::<crate::env::TlbEntry>();
const _: () = assert!(TLB_ENTRY_BYTES == 32);

/// Host CPU features the code generator uses when present.
#[derive(Clone, Copy, Debug)]
struct Features {
    lzcnt: bool,
    bmi1: bool,
    popcnt: bool,
    /// RORX: the TLB index without register copies.
    bmi2: bool,
    /// PSHUFB for `Inline::Sse` (the helper call otherwise).
    ssse3: bool,
}

impl Features {
    fn detect() -> Features {
        Features {
            lzcnt: std::arch::is_x86_feature_detected!("lzcnt"),
            bmi1: std::arch::is_x86_feature_detected!("bmi1"),
            popcnt: std::arch::is_x86_feature_detected!("popcnt"),
            bmi2: std::arch::is_x86_feature_detected!("bmi2"),
            ssse3: std::arch::is_x86_feature_detected!("ssse3"),
        }
    }
}

pub struct X64Backend {
    /// Code region, chain slots and the TB table.
    cc: CodeCache,
    epilogue: usize,
    /// The epilogue of blocks with an SSE status global (`Block::sse_csr`): merges the
    /// host's MXCSR flags into that global, then the shared epilogue.
    csr_epilogue: Option<(Global, usize)>,
    feat: Features,
}

impl X64Backend {
    pub fn new() -> X64Backend {
        Self::with_features(Features::detect())
    }

    fn with_features(feat: Features) -> X64Backend {
        let mut b = X64Backend {
            cc: CodeCache::new(DEFAULT_CODE_SIZE, "x64"),
            epilogue: 0,
            csr_epilogue: None,
            feat,
        };
        b.emit_trampoline();
        b
    }

    /// The entry trampoline `extern "C" fn(env, code) -> u64` and the shared epilogue.
    fn emit_trampoline(&mut self) {
        let base = self.cc.mem.next_addr();
        let mut g = Tramp { a: Asm::new(base) };
        asm!(g;
            push rbp
            ; push rbx
            ; push r12
            ; push r13
            ; push r14
            ; push r15
            ; sub rsp, FRAME_BYTES
            ; lea r15, [rdi + 0x80] // ENV_BIAS (a literal: disp8)
            // The host MXCSR generated code assumes (see `sse_inline`): Rust's own
            // default (round to nearest, all exceptions masked, no FTZ/DAZ), flags clear.
            ; mov DWORD [rsp], MXCSR_HOST as i32
            ; ldmxcsr [rsp]
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
        let p = self
            .cc
            .mem
            .write(&code)
            .expect("code region too small for the trampoline");
        self.cc.prologue = p as usize;
        self.epilogue = p as usize + epi;
        self.csr_epilogue = None;
    }

    /// The epilogue for blocks whose SSE status global is `csr` (see `sse_inline`).
    fn csr_epilogue(&mut self, csr: Global) -> Result<usize, CodeBufferFull> {
        if let Some((g, at)) = self.csr_epilogue {
            if g == csr {
                return Ok(at);
            }
        }
        let base = self.cc.mem.next_addr();
        let mut g = Tramp { a: Asm::new(base) };
        asm!(g;
            stmxcsr [r15 + OFF_SCRATCH_I]
            ; mov ecx, DWORD [r15 + OFF_SCRATCH_I]
            ; and ecx, MXCSR_FLAGS as i32
            ; or DWORD [r15 + gofs(csr)], ecx
            ; jmp extern self.epilogue
        );
        let code = g.a.finalize().expect("csr epilogue");
        let p = self.cc.mem.write(&code).ok_or(CodeBufferFull)? as usize;
        self.csr_epilogue = Some((csr, p));
        Ok(p)
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

/// The displacement bytes of a `jmp rel32` whose rel32 field is at `site`, to `target`.
fn rel32(site: usize, target: usize) -> [u8; 4] {
    let d = target as i64 - (site as i64 + 4);
    i32::try_from(d)
        .expect("code region within rel32 range")
        .to_le_bytes()
}

impl Backend for X64Backend {
    fn name(&self) -> &'static str {
        "x64"
    }

    fn compile(
        &mut self,
        block: &Block,
        tb: u32,
        helpers: &[HelperInfo],
        pc_global: Global,
    ) -> Result<CodeHandle, CodeBufferFull> {
        let far = far_targets(block);
        let njumps = block
            .ops
            .iter()
            .filter(|o| matches!(o, Op::Exit(Exit::Jump { .. } | Exit::Repeat { .. })))
            .count()
            + 2 * far.iter().flatten().count();
        let epilogue = match block.sse_csr {
            Some(g) => self.csr_epilogue(g)?,
            None => self.epilogue,
        };
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
            epilogue,
            csr: block.sse_csr,
            slots: self.cc.slots as usize,
            next_slot: slot_base,
            exit_defaults: Vec::new(),
            feat: self.feat,
            far,
            const_addr: const_addrs(block),
            indirects: 0,
            far_exits: Vec::new(),
            patch_jumps: self.cc.mem.cheap_patch(),
            patch_sites: Vec::new(),
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
        g.a.commit().expect("x64 backend: bad labels in block");
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
        let far_exits = std::mem::take(&mut g.far_exits);
        let mut sites = vec![None; g.exit_defaults.len()];
        for &(idx, l) in &g.patch_sites {
            // The label follows the jump's rel32.
            let end = g.a.labels().resolve_dynamic(l).expect("patch label").0;
            sites[idx as usize] = Some(base + end - 4);
        }
        let code = g.a.finalize().expect("x64 backend: assembly failed");
        let handle = self.cc.install(
            tb,
            block.insn_pcs.first().copied().unwrap_or(0),
            &code,
            base,
            slot_base + njumps,
            defaults,
        )?;
        for idx in far_exits {
            self.cc.set_far(handle, idx);
        }
        self.cc.set_patch_sites(handle, sites);
        Ok(handle)
    }

    fn chain_far(&mut self, from: CodeHandle, exit: u32, to: CodeHandle, epoch: u64) -> bool {
        self.cc.chain_far(from, exit, to, epoch)
    }

    unsafe fn execute(&mut self, env: *mut Env, code: CodeHandle) -> u64 {
        // SAFETY: `cc.prologue` is the trampoline written by `emit_trampoline`, which
        // follows the host C ABI; the env contract is the caller's (Backend::execute).
        unsafe { self.cc.execute(env, code) }
    }

    unsafe fn execute_entry(&mut self, env: *mut Env, code: CodeHandle, entry: Option<u64>) -> u64 {
        match entry {
            // SAFETY: as in `execute`; `entry` is `code`'s entry (the caller's contract).
            Some(e) => unsafe { self.cc.execute_at(env, e as usize) },
            // SAFETY: as in `execute`.
            None => unsafe { self.cc.execute(env, code) },
        }
    }

    /// A direct jump compiled as `jmp rel32` (when the code region has a writable view)
    /// is retargeted in place: a direct branch that the host predicts like any other,
    /// instead of a load and an indirect jump through the exit's slot. The run loop only
    /// chains while no generated code runs.
    fn chain(&mut self, from: CodeHandle, exit: u32, to: CodeHandle) -> bool {
        match self.cc.patch_site(from, exit) {
            Some((site, _)) => {
                let target = self.cc.entry(to);
                self.cc.mem.patch(site, &rel32(site, target));
                true
            }
            None => self.cc.chain(from, exit, to),
        }
    }

    fn entry_addr(&self, code: CodeHandle) -> Option<u64> {
        self.cc.entry_addr(code)
    }

    fn unchain(&mut self, from: CodeHandle, exit: u32) {
        match self.cc.patch_site(from, exit) {
            Some((site, default)) => self.cc.mem.patch(site, &rel32(site, default)),
            None => self.cc.unchain(from, exit),
        }
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

/// A static exit's number and chaining slots (`Gen::plan_exit`).
#[derive(Clone, Copy)]
struct ExitPlan {
    idx: u32,
    /// First chaining slot (direct jumps, far indirect ones).
    slot: usize,
    /// The constant target of a far indirect exit.
    far: Option<u64>,
}

/// Out-of-line code emitted after the block's main path.
enum Stub {
    /// The unchained path of a direct jump: write the pc global and return `ret`.
    ExitDefault {
        label: DynamicLabel,
        pc: u64,
        ret: u64,
    },
    Slow {
        label: DynamicLabel,
        back: DynamicLabel,
        store: bool,
        addr: Opnd,
        val: Opnd,
        dst: Option<Loc>,
        info: u64,
        save: u32,
        insn: u32,
        sync: Vec<(Global, Opnd)>,
    },
    /// An access of a group (`group_access`) that takes its own lookup, then back;
    /// `clear` first marks the group's translation unknown (the leader's miss).
    Access {
        label: DynamicLabel,
        back: DynamicLabel,
        i: usize,
        insn: u32,
        op: Box<Op>,
        clear: bool,
    },
    /// A side exit (`side_exit`): the exit's code, out of the main path.
    Exit {
        label: DynamicLabel,
        insn: u32,
        exit: Exit,
        plan: ExitPlan,
    },
    /// The two accesses of a pair (`mem_pair`) that did not fit one page: ops `i` and
    /// `i + 1`, then back.
    Pair {
        label: DynamicLabel,
        back: DynamicLabel,
        i: usize,
        insn: u32,
        ops: Box<[Op; 2]>,
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
    epilogue: usize,
    /// `Block::sse_csr` (see `sse_inline`).
    csr: Option<Global>,
    slots: usize,
    next_slot: usize,
    /// Compile direct jumps as patchable `jmp rel32` (`X64Backend::chain`).
    patch_jumps: bool,
    /// Per op: the constant address of a memory access (`regalloc::const_addrs`).
    const_addr: Vec<Option<u64>>,
    /// (exit, label right after its rel32) of each patchable jump.
    patch_sites: Vec<(u32, DynamicLabel)>,
    /// Per static exit: (slot, label of the default return code) for jumps.
    exit_defaults: Vec<Option<(usize, DynamicLabel)>>,
    feat: Features,
    /// Per `Exit::Indirect` in order: its constant target, if any (`far_targets`).
    far: Vec<Option<u64>>,
    indirects: usize,
    /// Static exits chained with `chain_far`.
    far_exits: Vec<u32>,
}

fn fits_i32(v: u64) -> bool {
    v as i64 == v as i32 as i64
}

/// The host MXCSR generated code runs with: round to nearest, every exception masked, no
/// FTZ or DAZ (the power-on value, and Rust's).
const MXCSR_HOST: u32 = 0x1f80;
/// MXCSR's exception flags.
const MXCSR_FLAGS: u32 = 0x3f;

/// Offset of global `g` from `r15` (see `ENV_BIAS`).
fn gofs(g: Global) -> i32 {
    8 * g as i32 - ENV_BIAS
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

    /// Write the pc global (clobbers rax when `pc` needs 64 bits).
    fn store_pc(&mut self, pc: u64) {
        let pcg = gofs(self.pc_global);
        if fits_i32(pc) {
            self.env_store_imm(pcg, pc as i32);
        } else {
            asm!(self; mov rax, QWORD pc as i64);
            self.env_store(pcg, RAX);
        }
    }

    /// Add `n` retired instructions to `Env::icount`.
    fn add_icount(&mut self, n: i32) {
        if n == 0 {
        } else if n < 128 {
            asm!(self; add QWORD [r15 + OFF_ICOUNT_I], BYTE n);
        } else {
            asm!(self; add QWORD [r15 + OFF_ICOUNT_I], DWORD n);
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
            (Opnd::R(x), Opnd::I(0)) if !test && matches!(cond, Cond::Eq | Cond::Ne) => {
                asm!(self; test Rq(x), Rq(x))
            }
            (Opnd::R(x), Opnd::R(y)) if test => asm!(self; test Rq(x), Rq(y)),
            (Opnd::R(x), Opnd::M(d)) | (Opnd::M(d), Opnd::R(x)) if test => {
                asm!(self; test QWORD [rsp + d], Rq(x))
            }
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
        // Entry: the budget check. `Env::cur_tb` (which block runs, for a store into its own
        // code) is written only where it is read: a store's slow path carries it in its
        // descriptor, and a helper that may fault gets it written before the call.
        asm!(self;
            mov rax, QWORD [r15 + OFF_ICOUNT_I]
            ; cmp rax, QWORD [r15 + OFF_ICOUNT_LIMIT_I]
            ;; self.jcc(Cc::Ae, budget)
        );
        if self.extra != 0 {
            asm!(self; sub rsp, self.extra);
        }
        let mut insn: u32 = 0;
        let mut seen_insn = false;
        let pairs = access_pairs(block);
        let groups = {
            let skip: Vec<bool> = (0..block.ops.len())
                .map(|i| pairs[i] || (i > 0 && pairs[i - 1]) || self.const_addr[i].is_some())
                .collect();
            access_groups(block, &skip)
        };
        let label_refs = label_refs(block);
        let uses = use_counts(block);
        // Ops already emitted with an earlier one (an access pair's second, a side exit's
        // exit and label) are skipped up to here.
        let mut skip_to = 0;
        for (i, op) in block.ops.iter().enumerate() {
            if i < skip_to {
                continue;
            }
            if pairs[i] && self.const_addr[i].is_none() {
                self.mem_pair(i, insn, &block.ops[i], &block.ops[i + 1]);
                skip_to = i + 2;
                continue;
            }
            if let Some((plan, n)) = lea_plan(&block.ops, i, &uses) {
                self.lea(plan);
                skip_to = i + n;
                continue;
            }
            // A global read only to be extended: one extending load.
            if let (&Op::GetG { dst: t, g }, Some(&Op::Ext { dst, a, from, signed })) =
                (op, block.ops.get(i + 1))
            {
                if a == t && uses[t.idx()] == 1 && self.csr != Some(g) && from != MemSize::B8 {
                    self.get_global_ext(dst, g, from, signed);
                    skip_to = i + 2;
                    continue;
                }
            }
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
                    if self.csr == Some(g) {
                        self.csr_sync();
                    }
                    let d = self.dloc(dst);
                    let r = self.work(d);
                    self.env_load(r, gofs(g));
                    self.put(d, r);
                }
                Op::SetG { g, src } => {
                    let o = self.opnd(src);
                    self.set_global(g, o);
                    if self.csr == Some(g) {
                        self.csr_clear();
                    }
                }
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
                    self.setcc_al(cc);
                    match self.dloc(dst) {
                        Loc::R(r) => asm!(self; movzx Rd(r), al),
                        Loc::S(o) => asm!(self; movzx eax, al ; mov QWORD [rsp + o], rax),
                    }
                }
                Op::Select {
                    cond,
                    dst,
                    a,
                    b,
                    t,
                    f,
                } => self.select(cond, dst, a, b, t, f),
                Op::Load { .. } | Op::Store { .. } => match groups[i] {
                    GroupRole::None => self.access(i, insn, op),
                    role => self.group_access(i, insn, op, role),
                },
                Op::Call {
                    helper,
                    ref args,
                    dst,
                    inline,
                } => match inline {
                    Some(Inline::Sse {
                        op,
                        dst: d,
                        src,
                        csr,
                    }) if op.arith != SseArith::Pshufb || self.feat.ssse3 => {
                        self.sse_inline(dst, op, [d, src, csr])
                    }
                    Some(Inline::Div {
                        bytes,
                        signed,
                        rax,
                        rdx,
                    }) => self.div_inline(i, insn, helper.0 as usize, args, bytes, signed, [rax, rdx]),
                    _ => self.call(i, insn, helper.0 as usize, args, dst),
                },
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
                    if let Some(exit) = side_exit(block, i, &label_refs) {
                        // `if !c goto l; exit; l:` — the exit goes out of line and the
                        // main path falls through.
                        let plan = self.plan_exit(exit);
                        let s = self.a.new_dynamic_label();
                        self.jcc(cc.inv(), s);
                        self.stubs.push(Stub::Exit {
                            label: s,
                            insn,
                            exit,
                            plan,
                        });
                        asm!(self; =>l);
                        skip_to = i + 3;
                    } else {
                        self.jcc(cc, l);
                    }
                }
                Op::Exit(e) => self.exit(insn, e),
            }
        }
        // A well-formed block never falls off its end.
        asm!(self; ud2);

        // Out-of-line code.
        // Stubs may add stubs (the fallback of an access pair has slow paths).
        while !self.stubs.is_empty() {
            let stubs = std::mem::take(&mut self.stubs);
            for s in stubs {
                self.emit_stub(s);
            }
        }
        for insn in 0..self.fault_labels.len() {
            if let Some(l) = self.fault_labels[insn] {
                asm!(self; =>l);
                self.ret_to_loop(ret::encode(self.tb, insn as u32, ret::FAULT));
            }
        }
        asm!(self; =>budget);
        // The frame has not been grown yet at this point. A chained jump does not write the
        // pc global (see `exit`), so write this block's own.
        if let Some(&pc) = block.insn_pcs.first() {
            self.store_pc(pc);
        }
        asm!(self; mov rax, QWORD ret::encode(self.tb, 0, ret::BUDGET) as i64 ; jmp extern self.epilogue);
    }

    fn exit(&mut self, insn: u32, e: Exit) {
        let plan = self.plan_exit(e);
        self.emit_exit(insn, e, plan);
    }

    /// Number a static exit (its index in the block's exits, its chaining slots, its
    /// constant target), in IR order whenever its code is emitted.
    fn plan_exit(&mut self, e: Exit) -> ExitPlan {
        let idx = self.exit_defaults.len() as u32;
        self.exit_defaults.push(None);
        let mut slot = self.next_slot;
        let mut far = None;
        match e {
            Exit::Jump { .. } | Exit::Repeat { .. } => self.next_slot += 1,
            Exit::Indirect { .. } => {
                far = self.far.get(self.indirects).copied().flatten();
                self.indirects += 1;
                if far.is_some() {
                    self.next_slot += 2;
                } else {
                    slot = usize::MAX;
                }
            }
            _ => slot = usize::MAX,
        }
        ExitPlan { idx, slot, far }
    }

    fn emit_exit(&mut self, insn: u32, e: Exit, plan: ExitPlan) {
        let ExitPlan { idx, slot, far } = plan;
        let n = insn as i32 + 1;
        let pcg = gofs(self.pc_global);
        match e {
            Exit::Jump { pc } | Exit::Repeat { pc } => {
                // A repeating instruction does not retire.
                let n = if matches!(e, Exit::Repeat { .. }) {
                    n - 1
                } else {
                    n
                };
                self.add_icount(n);
                self.leave_frame();
                let slot_addr = self.slots + 8 * slot;
                let l = self.a.new_dynamic_label();
                if self.patch_jumps {
                    // `jmp rel32`, retargeted in place by `chain` (see its comment).
                    let site = self.a.new_dynamic_label();
                    asm!(self; jmp =>l ; =>site);
                    self.patch_sites.push((idx, site));
                } else {
                    asm!(self; mov rax, QWORD slot_addr as i64 ; jmp QWORD [rax]);
                }
                // The pc global is written only on the way back to the run loop, out of
                // line: a chained block starts at `pc` by construction (and writes it itself
                // if it returns at its budget check).
                self.stubs.push(Stub::ExitDefault {
                    label: l,
                    pc,
                    ret: ret::encode(self.tb, idx, ret::EXIT),
                });
                self.exit_defaults[idx as usize] = Some((slot, l));
            }
            Exit::Indirect { pc } => {
                let o = self.topnd(pc);
                self.mov_r(RDX, o, false);
                // As for a direct jump, the pc global (rdx) is written only on the way back
                // to the run loop.
                self.add_icount(n);
                self.leave_frame();
                let probe = self.a.new_dynamic_label();
                if let Some(target) = far {
                    // A known target on another page: its slot holds the chained block
                    // (default: the probe below) and the next slot the jump-cache epoch
                    // of the target's half it was chained in.
                    let slot_addr = self.slots + 8 * slot;
                    let half = (target >> 63) as i32;
                    asm!(self;
                        mov rax, QWORD slot_addr as i64
                        ; mov rcx, QWORD [rax + 8]
                        ; cmp rcx, QWORD [r15 + OFF_JC_EPOCH_I + 8 * half]
                        ; jne =>probe
                        ; jmp QWORD [rax]
                    );
                    self.far_exits.push(idx);
                    self.exit_defaults[idx as usize] = Some((slot, probe));
                }
                asm!(self; =>probe);
                // Probe the indirect-jump cache: index (pc ^ pc >> JC_BITS) & (JC_ENTRIES-1),
                // then the other entry of its pair (`Env::jc_insert`); hit when pc, the
                // mode word and the epoch match; then enter the cached block.
                let miss = self.a.new_dynamic_label();
                let check = self.a.new_dynamic_label();
                if self.feat.bmi2 {
                    // The same index, scaled: (pc << 5 ^ pc >> (JC_BITS - 5)) masked.
                    asm!(self;
                        rorx rax, rdx, 59
                        ; rorx rcx, rdx, (JC_BITS - 5) as i8
                        ; xor eax, ecx
                        ; and eax, ((JC_ENTRIES - 1) << 5) as i32
                    );
                } else {
                    asm!(self;
                        mov rax, rdx
                        ; shr rax, JC_BITS as i8
                        ; xor rax, rdx
                        ; and eax, (JC_ENTRIES - 1) as i32
                        ; shl eax, 5
                    );
                }
                asm!(self;
                    cmp rdx, QWORD [r15 + rax + OFF_JC_I]
                    ; je =>check
                    ; xor eax, 32
                    ; cmp rdx, QWORD [r15 + rax + OFF_JC_I]
                    ; jne =>miss
                    ; =>check
                );
                if fits_i32(self.mode) {
                    asm!(self; cmp QWORD [r15 + rax + OFF_JC_I + 8], DWORD self.mode as i32);
                } else {
                    asm!(self;
                        mov rcx, QWORD self.mode as i64
                        ; cmp rcx, QWORD [r15 + rax + OFF_JC_I + 8]
                    );
                }
                asm!(self;
                    jne =>miss
                    ; mov rcx, rdx
                    ; shr rcx, 63
                    ; mov rcx, QWORD [r15 + rcx * 8 + OFF_JC_EPOCH_I]
                    ; cmp rcx, QWORD [r15 + rax + OFF_JC_I + 24]
                    ; jne =>miss
                    ; jmp QWORD [r15 + rax + OFF_JC_I + 16]
                    ; =>miss
                );
                self.env_store(pcg, RDX);
                // A far exit goes back through its exit (the run loop chains it again);
                // any other says only "indirect", so the run loop need not read the TB.
                let kind = if far.is_some() {
                    ret::EXIT
                } else {
                    ret::INDIRECT
                };
                asm!(self;
                    mov rax, QWORD ret::encode(self.tb, idx, kind) as i64
                    ; jmp extern self.epilogue
                );
            }
            Exit::Exception { .. } | Exit::Platform { .. } | Exit::Sync { .. } => {
                // The run loop does the bookkeeping.
                self.ret_to_loop(ret::encode(self.tb, idx, ret::EXIT));
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
                    (Add, Opnd::I(i), Width::W64) => return self.lea_disp(true, d, x, i),
                    (Add, Opnd::I(i), Width::W32) => return self.lea_disp(false, d, x, i),
                    (Sub, Opnd::I(i), Width::W64) if i != i32::MIN => {
                        return self.lea_disp(true, d, x, -i)
                    }
                    (Sub, Opnd::I(i), Width::W32) if i != i32::MIN => {
                        return self.lea_disp(false, d, x, -i)
                    }
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

    /// `dst = Ext(global g, from, signed)` with one load.
    fn get_global_ext(&mut self, dst: Temp, g: Global, from: MemSize, signed: bool) {
        let dl = self.dloc(dst);
        let r = self.work(dl);
        let d = gofs(g);
        match (from, signed) {
            (MemSize::B1, false) => asm!(self; movzx Rd(r), BYTE [r15 + d]),
            (MemSize::B1, true) => asm!(self; movsx Rq(r), BYTE [r15 + d]),
            (MemSize::B2, false) => asm!(self; movzx Rd(r), WORD [r15 + d]),
            (MemSize::B2, true) => asm!(self; movsx Rq(r), WORD [r15 + d]),
            (MemSize::B4, false) => asm!(self; mov Rd(r), DWORD [r15 + d]),
            _ => asm!(self; movsxd Rq(r), DWORD [r15 + d]),
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
    fn save(&mut self, mask: u32) {
        for (k, &r) in CALLER_POOL.iter().enumerate() {
            if mask & (1 << k) != 0 {
                let o = 8 * k as i32;
                asm!(self; mov QWORD [rsp + o], Rq(r));
            }
        }
    }

    fn restore(&mut self, mask: u32) {
        for (k, &r) in CALLER_POOL.iter().enumerate() {
            if mask & (1 << k) != 0 {
                let o = 8 * k as i32;
                asm!(self; mov Rq(r), QWORD [rsp + o]);
            }
        }
    }

    /// Every call from generated code. The callee clobbers rdi, the open access group's
    /// addend (`group_access`), which is cleared: a member after it takes its own lookup.
    fn call_abs(&mut self, f: usize) {
        asm!(self; mov rax, QWORD f as i64 ; call rax ; xor edi, edi);
    }

    fn check_fault(&mut self, insn: u32) {
        let l = self.fault_label(insn);
        asm!(self; cmp DWORD [r15 + OFF_FAULT_I], 0);
        self.jcc(Cc::Ne, l);
    }

    /// [`Inline::Div`]: the host's own DIV/IDIV where it cannot fault (a divisor that is
    /// not 0; unsigned, a high half below the divisor, so the quotient fits; signed, a
    /// dividend that fits one half, as after CDQ/CQO, and a divisor other than -1), the
    /// helper call otherwise. rax, rcx, rdx and rsi are scratch.
    #[allow(clippy::too_many_arguments)]
    fn div_inline(
        &mut self,
        i: usize,
        insn: u32,
        helper: usize,
        args: &[Val],
        bytes: u8,
        signed: bool,
        [ga, gd]: [Global; 2],
    ) {
        let (call, done) = (self.a.new_dynamic_label(), self.a.new_dynamic_label());
        let o = self.opnd(args[1]);
        self.mov_r(RCX, o, false);
        self.env_load(RAX, gofs(ga));
        self.env_load(RDX, gofs(gd));
        match (bytes, signed) {
            (8, false) => asm!(self;
                test rcx, rcx ;; self.jcc(Cc::E, call)
                ; cmp rdx, rcx ;; self.jcc(Cc::Ae, call)
                ; div rcx
            ),
            (8, true) => asm!(self;
                test rcx, rcx ;; self.jcc(Cc::E, call)
                ; cmp rcx, -1 ;; self.jcc(Cc::E, call)
                ; mov rsi, rax ; sar rsi, 63 ; cmp rsi, rdx ;; self.jcc(Cc::Ne, call)
                ; idiv rcx
            ),
            (4, false) => asm!(self;
                test ecx, ecx ;; self.jcc(Cc::E, call)
                ; cmp edx, ecx ;; self.jcc(Cc::Ae, call)
                ; div ecx
            ),
            (4, true) => asm!(self;
                test ecx, ecx ;; self.jcc(Cc::E, call)
                ; cmp ecx, -1 ;; self.jcc(Cc::E, call)
                ; mov esi, eax ; sar esi, 31 ; cmp esi, edx ;; self.jcc(Cc::Ne, call)
                ; idiv ecx
            ),
            _ => unreachable!("Inline::Div of {bytes} bytes"),
        }
        // A 32-bit divide zero-extends its results into rax and rdx, as the guest's does.
        self.env_store(gofs(ga), RAX);
        self.env_store(gofs(gd), RDX);
        asm!(self; jmp =>done ; =>call);
        self.call(i, insn, helper, args, None);
        asm!(self; =>done);
    }

    fn call(&mut self, i: usize, insn: u32, helper: usize, args: &[Val], dst: Option<Temp>) {
        let h = self.helpers[helper];
        let save = self.caller_live[i];
        let (sync, clear) = match self.csr {
            Some(g) => (h.reads.contains(g), h.writes.contains(g)),
            None => (false, false),
        };
        if sync {
            self.csr_sync();
        }
        if h.can_fault {
            asm!(self; mov DWORD [r15 + OFF_CUR_TB_I], self.tb as i32);
        }
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
        asm!(self; lea rdi, [r15 - 0x80]); // ENV_BIAS (a literal: disp8)
        self.call_abs(h.func as usize);
        if clear {
            self.csr_clear();
        }
        self.restore(save);
        if h.can_fault {
            self.check_fault(insn);
        }
        if let Some(d) = dst {
            let dl = self.dloc(d);
            self.put(dl, RAX);
        }
    }

    /// An SSE floating-point helper call run as the host's own SSE instruction
    /// ([`Inline::Sse`]), which on an x86_64 host is the guest instruction itself.
    ///
    /// The guest's MXCSR control bits are [`MXCSR_HOST`] wherever the frontend emits the
    /// op, and so are the host's (the trampoline sets them): the host computes the
    /// guest's result bit for bit, and no exception can be unmasked.
    ///
    /// The exception flags stay in the host's MXCSR: while generated code runs, the
    /// guest's flags are those of its status global (`Block::sse_csr`) ORed with the
    /// host's. The trampoline clears the host's flags on entry; every way back to the run
    /// loop merges them into the global (`csr_epilogue`); so does a read of the global
    /// (`GetG`, a helper that reads it: `csr_sync`), and a write of it (`SetG`, a helper
    /// that writes it) clears the host's again (`csr_clear`), so that flags the guest
    /// cleared do not come back. Helpers that do not declare the global do no host
    /// floating-point arithmetic (which would raise host flags); those that do declare it
    /// write it, and the host flags are cleared after them.
    fn sse_inline(&mut self, dst: Option<Temp>, op: SseOp, [d, s, csr]: [Global; 3]) {
        assert_eq!(
            self.csr,
            Some(csr),
            "Inline::Sse in a block without its sse_csr"
        );
        self.sse_op(op, d, s);
        // One 16-byte store: later 8-byte loads of either half forward from it (a MOVHPS
        // store of the high half did not forward to a general-register load).
        asm!(self; movups [r15 + gofs(d)], xmm0);
        if let Some(t) = dst {
            let dl = self.dloc(t);
            asm!(self; xor eax, eax);
            self.put(dl, RAX);
        }
    }

    /// Merge the host's MXCSR flags into the SSE status global (clobbers rcx).
    fn csr_sync(&mut self) {
        let g = self.csr.expect("csr");
        asm!(self;
            stmxcsr [r15 + OFF_SCRATCH_I]
            ; mov ecx, DWORD [r15 + OFF_SCRATCH_I]
            ; and ecx, MXCSR_FLAGS as i32
            ; or DWORD [r15 + gofs(g)], ecx
        );
    }

    /// Clear the host's MXCSR flags (the control bits are [`MXCSR_HOST`] throughout).
    fn csr_clear(&mut self) {
        asm!(self;
            mov DWORD [r15 + OFF_SCRATCH_I], MXCSR_HOST as i32
            ; ldmxcsr [r15 + OFF_SCRATCH_I]
        );
    }

    /// xmm0 = global pair `d` op global pair `s` (clobbers xmm1).
    fn sse_op(&mut self, op: SseOp, d: Global, s: Global) {
        // Each global is loaded at its own width: the IR wrote them with 8-byte stores
        // just before, and a 16-byte load of two such stores cannot be store-forwarded.
        asm!(self;
            movq xmm0, [r15 + gofs(d)]
            ; movhps xmm0, [r15 + gofs(d) + 8]
            ; movq xmm1, [r15 + gofs(s)]
            ; movhps xmm1, [r15 + gofs(s) + 8]
        );
        macro_rules! forms {
            ($ps:ident, $ss:ident, $pd:ident, $sd:ident) => {
                match op.form {
                    SseForm::Ps => asm!(self; $ps xmm0, xmm1),
                    SseForm::Ss => asm!(self; $ss xmm0, xmm1),
                    SseForm::Pd => asm!(self; $pd xmm0, xmm1),
                    SseForm::Sd => asm!(self; $sd xmm0, xmm1),
                }
            };
        }
        match op.arith {
            SseArith::Add => forms!(addps, addss, addpd, addsd),
            SseArith::Sub => forms!(subps, subss, subpd, subsd),
            SseArith::Mul => forms!(mulps, mulss, mulpd, mulsd),
            SseArith::Div => forms!(divps, divss, divpd, divsd),
            SseArith::Min => forms!(minps, minss, minpd, minsd),
            SseArith::Max => forms!(maxps, maxss, maxpd, maxsd),
            SseArith::Sqrt => forms!(sqrtps, sqrtss, sqrtpd, sqrtsd),
            SseArith::Shuf(imm) => match op.form {
                SseForm::Pd => asm!(self; shufpd xmm0, xmm1, imm as i8),
                _ => asm!(self; shufps xmm0, xmm1, imm as i8),
            },
            SseArith::Unpack(high) => match (op.form, high) {
                (SseForm::Pd, false) => asm!(self; unpcklpd xmm0, xmm1),
                (SseForm::Pd, true) => asm!(self; unpckhpd xmm0, xmm1),
                (_, false) => asm!(self; unpcklps xmm0, xmm1),
                (_, true) => asm!(self; unpckhps xmm0, xmm1),
            },
            SseArith::Pshufb => asm!(self; pshufb xmm0, xmm1),
            SseArith::Cmp(p) => {
                let p = (p & 7) as i8;
                match op.form {
                    SseForm::Ps => asm!(self; cmpps xmm0, xmm1, p),
                    SseForm::Ss => asm!(self; cmpss xmm0, xmm1, p),
                    SseForm::Pd => asm!(self; cmppd xmm0, xmm1, p),
                    SseForm::Sd => asm!(self; cmpsd xmm0, xmm1, p),
                }
            }
        }
    }

    /// Store `o` into global `g` (clobbers rax).
    fn set_global(&mut self, g: Global, o: Opnd) {
        match o {
            Opnd::R(s) => self.env_store(gofs(g), s),
            Opnd::I(v) => self.env_store_imm(gofs(g), v),
            o => {
                self.mov_r(RAX, o, false);
                self.env_store(gofs(g), RAX);
            }
        }
    }

    // dynasm encodes a displacement that is a runtime value in 32 bits; the global
    // accesses, the most frequent memory operands of generated code, take the 8-bit form
    // (three bytes shorter) by hand when their displacement fits.

    /// `mov r, QWORD [r15 + d]`.
    fn env_load(&mut self, r: u8, d: i32) {
        match i8::try_from(d) {
            Ok(d8) => self.emit_r15_disp8(0x8b, r, d8, &[]),
            Err(_) => asm!(self; mov Rq(r), QWORD [r15 + d]),
        }
    }

    /// `mov QWORD [r15 + d], r`.
    fn env_store(&mut self, d: i32, r: u8) {
        match i8::try_from(d) {
            Ok(d8) => self.emit_r15_disp8(0x89, r, d8, &[]),
            Err(_) => asm!(self; mov QWORD [r15 + d], Rq(r)),
        }
    }

    /// `mov QWORD [r15 + d], imm32` (sign-extended).
    fn env_store_imm(&mut self, d: i32, v: i32) {
        match i8::try_from(d) {
            Ok(d8) => self.emit_r15_disp8(0xc7, 0, d8, &v.to_le_bytes()),
            Err(_) => asm!(self; mov QWORD [r15 + d], DWORD v),
        }
    }

    /// One `lea` for an address computation (`lea_plan`).
    fn lea(&mut self, p: LeaPlan) {
        let dl = self.dloc(p.dst);
        let (x, s) = p.index;
        let xr = match self.topnd(x) {
            Opnd::R(r) => r,
            o => {
                self.mov_r(RAX, o, false);
                RAX
            }
        };
        let br = p.base.map(|b| match self.topnd(b) {
            Opnd::R(r) => r,
            o => {
                self.mov_r(RDX, o, false);
                RDX
            }
        });
        let d = self.work(dl);
        let disp = p.disp;
        match (br, s) {
            (Some(b), 0) => asm!(self; lea Rq(d), [Rq(b) + Rq(xr) + disp]),
            (Some(b), 1) => asm!(self; lea Rq(d), [Rq(b) + Rq(xr) * 2 + disp]),
            (Some(b), 2) => asm!(self; lea Rq(d), [Rq(b) + Rq(xr) * 4 + disp]),
            (Some(b), _) => asm!(self; lea Rq(d), [Rq(b) + Rq(xr) * 8 + disp]),
            (None, 1) => asm!(self; lea Rq(d), [Rq(xr) * 2 + disp]),
            (None, 2) => asm!(self; lea Rq(d), [Rq(xr) * 4 + disp]),
            (None, _) => asm!(self; lea Rq(d), [Rq(xr) * 8 + disp]),
        }
        self.put(dl, d);
    }

    /// `lea d, [b + disp]` (64-bit, or 32-bit when `!q`), with an 8-bit displacement
    /// when it fits (see `env_load`).
    fn lea_disp(&mut self, q: bool, d: u8, b: u8, disp: i32) {
        let Ok(d8) = i8::try_from(disp) else {
            return if q {
                asm!(self; lea Rq(d), [Rq(b) + disp])
            } else {
                asm!(self; lea Rd(d), [Rq(b) + disp])
            };
        };
        let rex = 0x40 | (q as u8) << 3 | (d >> 3 & 1) << 2 | (b >> 3 & 1);
        if rex != 0x40 {
            self.a.push(rex);
        }
        self.a.push(0x8d);
        self.a.push(0x40 | (d & 7) << 3 | (b & 7));
        if b & 7 == 4 {
            // rsp/r12 as a base need a SIB byte (no index).
            self.a.push(0x24);
        }
        self.a.push(d8 as u8);
    }

    /// REX.W `op` with ModRM `[r15 + disp8]` and `reg` (a register or an opcode extension),
    /// then `imm`.
    fn emit_r15_disp8(&mut self, op: u8, reg: u8, d: i8, imm: &[u8]) {
        let rex = 0x49 | (reg >> 3 & 1) << 2;
        let modrm = 0x40 | (reg & 7) << 3 | 7;
        for b in [rex, op, modrm, d as u8]
            .into_iter()
            .chain(imm.iter().copied())
        {
            self.a.push(b);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn mem_op(
        &mut self,
        i: usize,
        insn: u32,
        dst: Option<Temp>,
        addr: Temp,
        val: Option<Val>,
        mop: MemOp,
        sync: &SyncList,
    ) {
        let store = val.is_some();
        let size = mop.size;
        let info = mem_info(size, if store { false } else { mop.signed }, mop.kind)
            | if mop.rmw {
                crate::engine::MEM_INFO_RMW
            } else {
                0
            };
        let (ao, vo, dl) = self.access_operands(addr, val, size, dst);
        let save = self.caller_live[i];
        // The global stores owed before the slow path (ir::SyncList): the fast path of a
        // TLB hit observes nothing.
        let sync: Vec<(Global, Opnd)> = sync.0.iter().map(|&(g, v)| (g, self.opnd(v))).collect();
        if mop.kind == AccessKind::System {
            for &(g, o) in &sync {
                self.set_global(g, o);
            }
            self.slow_call(store, ao, vo, info, save);
            self.check_fault(insn);
            if let Some(d) = dl {
                self.put(d, RAX);
            }
            return;
        }
        let areg = self.addr_reg(ao);
        let slow = self.a.new_dynamic_label();
        let back = self.a.new_dynamic_label();
        // TLB probe (see interp::tlb_probe): index from the first byte, tag from the last.
        let (tag, addend) = self.tlb_offsets(store || mop.rmw);
        let known = self.const_addr[i].filter(|&c| (c & !PAGE_MASK) + size.bytes() as u64 <= 4096);
        if let Some(c) = known {
            // A constant address within one page: its TLB entry is known now.
            let ent = (tlb_index(c) * TLB_ENTRY_BYTES) as i32;
            let page = c & PAGE_MASK;
            if fits_i32(page) {
                asm!(self; mov rdx, DWORD page as i32);
            } else {
                asm!(self; mov rdx, QWORD page as i64);
            }
            asm!(self;
                cmp rdx, QWORD [r15 + tag + ent]
                ;; self.jcc(Cc::Ne, slow)
                ; mov rdx, QWORD [r15 + addend + ent]
            );
        } else {
            self.tlb_probe(areg, size, tag, addend, slow);
        }
        self.mem_access(store, size, mop.signed, RDX, areg, vo, dl);
        asm!(self; =>back);
        self.stubs.push(Stub::Slow {
            label: slow,
            back,
            store,
            addr: ao,
            val: vo,
            dst: dl,
            info,
            save,
            insn,
            sync,
        });
    }

    /// Access op `i` of an access group (`regalloc::access_groups`). The leader looks
    /// the group's whole span up once and leaves the page's addend in rdi (0 on a miss,
    /// after which it takes its own path; `call_abs` clears it too); a member uses that
    /// addend when it is set, else its own lookup, out of line. rdi is not otherwise
    /// used between a leader and its members: the group ends at main-path calls, and
    /// every call (an out-of-line slow path between them included) clears it.
    fn group_access(&mut self, i: usize, insn: u32, op: &Op, role: GroupRole) {
        let (dst, addr, val, mop) = match *op {
            Op::Load { dst, addr, mop, .. } => (Some(dst), addr, None, mop),
            Op::Store { addr, val, mop, .. } => (None, addr, Some(val), mop),
            _ => unreachable!("not an access: {op:?}"),
        };
        let size = mop.size;
        let (ao, vo, dl) = self.access_operands(addr, val, size, dst);
        let areg = self.addr_reg(ao);
        let own = self.a.new_dynamic_label();
        let back = self.a.new_dynamic_label();
        match role {
            GroupRole::Leader { lo, hi, write } => {
                let (tag, addend) = self.tlb_offsets(write);
                let first = if lo == 0 {
                    areg
                } else {
                    self.lea_disp(true, RCX, areg, lo);
                    RCX
                };
                self.tlb_probe_span(first, areg, hi, tag, addend, own);
                asm!(self; mov rdi, rdx);
            }
            _ => {
                asm!(self;
                    test rdi, rdi
                    ;; self.jcc(Cc::E, own)
                );
            }
        }
        // A member accesses through rdi directly (the leader has it in rdx too).
        let base = match role {
            GroupRole::Leader { .. } => RDX,
            _ => RDI,
        };
        self.mem_access(val.is_some(), size, mop.signed, base, areg, vo, dl);
        asm!(self; =>back);
        self.stubs.push(Stub::Access {
            label: own,
            back,
            i,
            insn,
            op: Box::new(op.clone()),
            clear: matches!(role, GroupRole::Leader { .. }),
        });
    }

    /// An access's address, stored value (truncated to the access size: a constant then
    /// fits an imm32) and load destination.
    fn access_operands(
        &mut self,
        addr: Temp,
        val: Option<Val>,
        size: MemSize,
        dst: Option<Temp>,
    ) -> (Opnd, Opnd, Option<Loc>) {
        let ao = self.topnd(addr);
        let vo = match val {
            Some(Val::C(c)) if size != MemSize::B8 => Opnd::I((c & size.mask()) as u32 as i32),
            Some(v) => self.opnd(v),
            None => Opnd::I(0),
        };
        (ao, vo, dst.map(|d| self.dloc(d)))
    }

    /// Guest load or store op `i` (of instruction `insn`).
    fn access(&mut self, i: usize, insn: u32, op: &Op) {
        match *op {
            Op::Load {
                dst,
                addr,
                mop,
                ref sync,
            } => self.mem_op(i, insn, Some(dst), addr, None, mop, sync),
            Op::Store {
                addr,
                val,
                mop,
                ref sync,
            } => self.mem_op(i, insn, None, addr, Some(val), mop, sync),
            _ => unreachable!("not an access: {op:?}"),
        }
    }

    /// The register holding address operand `ao` (rsi when it is not in one).
    fn addr_reg(&mut self, ao: Opnd) -> u8 {
        match ao {
            Opnd::R(x) => x,
            _ => {
                self.mov_r(RSI, ao, false);
                RSI
            }
        }
    }

    /// Offsets from r15 of this block's TLB tag for the access (the write tag for stores
    /// and read-modify-write loads) and of the entry's addend, for index 0.
    fn tlb_offsets(&self, write: bool) -> (i32, i32) {
        let tlb = OFF_TLB_I + (self.mmu_idx as usize * TLB_SIZE * TLB_ENTRY_BYTES) as i32;
        (tlb + if write { 8 } else { 0 }, tlb + 24)
    }

    /// Two 8-byte accesses of one 16-byte operand (`regalloc::access_pairs`): ops `i` and
    /// `i + 1`, the second at the first's address + 8. When all 16 bytes are in the page
    /// of a TLB hit, both are done after one lookup; otherwise (a miss, a page boundary
    /// in between, a page that stores must not take directly) the two accesses run as
    /// they would unpaired, each with its own lookup and slow path.
    fn mem_pair(&mut self, i: usize, insn: u32, first: &Op, second: &Op) {
        let (fallback, done) = (self.a.new_dynamic_label(), self.a.new_dynamic_label());
        let (addr, mop, store) = match *first {
            Op::Load { addr, mop, .. } => (addr, mop, false),
            Op::Store { addr, mop, .. } => (addr, mop, true),
            _ => unreachable!("access pair"),
        };
        let ao = self.topnd(addr);
        let areg = self.addr_reg(ao);
        let (tag, addend) = self.tlb_offsets(store || mop.rmw);
        self.tlb_probe_last(areg, 15, tag, addend, fallback);
        match (first, second) {
            (&Op::Load { dst: d1, .. }, &Op::Load { dst: d2, .. }) => {
                // The second quadword first, into rcx: either destination may be the
                // address register (its temp dies here), and an unused first one may
                // share the second's register (so the second is written last).
                // When the second's register is neither, it is loaded directly.
                let (l1, l2) = (self.dloc(d1), self.dloc(d2));
                let direct = matches!(l2, Loc::R(r) if r != areg && l1 != l2);
                let hi = match l2 {
                    Loc::R(r) if direct => r,
                    _ => RCX,
                };
                asm!(self; mov Rq(hi), QWORD [rdx + Rq(areg) + 8]);
                match l1 {
                    Loc::R(r) => asm!(self; mov Rq(r), QWORD [rdx + Rq(areg)]),
                    l @ Loc::S(_) => {
                        asm!(self; mov rax, QWORD [rdx + Rq(areg)]);
                        self.put(l, RAX);
                    }
                }
                if !direct {
                    self.put(l2, RCX);
                }
            }
            (&Op::Store { val: v1, .. }, &Op::Store { val: v2, .. }) => {
                // rdx = host address of the first quadword, then both stores.
                asm!(self; add rdx, Rq(areg));
                for (v, off) in [(v1, 0), (v2, 8)] {
                    match self.opnd(v) {
                        Opnd::R(r) => asm!(self; mov QWORD [rdx + off], Rq(r)),
                        Opnd::I(c) => asm!(self; mov QWORD [rdx + off], DWORD c),
                        o => {
                            self.mov_r(RAX, o, false);
                            asm!(self; mov QWORD [rdx + off], rax);
                        }
                    }
                }
            }
            _ => unreachable!("access pair"),
        }
        asm!(self; =>done);
        self.stubs.push(Stub::Pair {
            label: fallback,
            back: done,
            i,
            insn,
            ops: Box::new([first.clone(), second.clone()]),
        });
    }

    /// Look the address in `areg` up in this block's TLB: leaves the entry's addend in rdx,
    /// or jumps to `slow`. Clobbers rax.
    fn tlb_probe(&mut self, areg: u8, size: MemSize, tag: i32, addend: i32, slow: DynamicLabel) {
        self.tlb_probe_last(areg, size.bytes() as i32 - 1, tag, addend, slow)
    }

    /// `tlb_probe` for an access whose last byte is at `areg + last`.
    fn tlb_probe_last(&mut self, areg: u8, last: i32, tag: i32, addend: i32, slow: DynamicLabel) {
        self.tlb_probe_span(areg, areg, last, tag, addend, slow)
    }

    /// `tlb_probe` for bytes from `first` to `areg + last` (`first` may be rcx).
    fn tlb_probe_span(
        &mut self,
        first: u8,
        areg: u8,
        last: i32,
        tag: i32,
        addend: i32,
        slow: DynamicLabel,
    ) {
        // index = ((a >> 12) ^ (a >> (12 + TLB_FOLD))) & (TLB_SIZE-1) (env::tlb_index),
        // scaled by 32
        let sh = (PAGE_BITS - 5) as i8;
        let sh2 = (PAGE_BITS + TLB_FOLD - 5) as i8;
        let imask = ((TLB_SIZE - 1) * TLB_ENTRY_BYTES) as i32;
        let pmask = PAGE_MASK as i64 as i32;
        if self.feat.bmi2 {
            // Rotations: the bits that wrap around land above the mask.
            asm!(self;
                rorx rax, Rq(first), sh
                ; rorx rdx, Rq(first), sh2
                ; xor eax, edx
                ; and eax, DWORD imask
            );
        } else {
            asm!(self;
                mov rax, Rq(first)
                ; mov rdx, Rq(first)
                ; shr rax, BYTE sh
                ; shr rdx, BYTE sh2
                ; xor eax, edx
                ; and eax, DWORD imask
            );
        }
        if last == 0 {
            asm!(self; mov rdx, Rq(areg));
        } else {
            self.lea_disp(true, RDX, areg, last);
        }
        asm!(self;
            and rdx, DWORD pmask
            ; cmp rdx, QWORD [r15 + rax + tag]
            ;; self.jcc(Cc::Ne, slow)
            ; mov rdx, QWORD [r15 + rax + addend]
        );
    }

    /// The access itself, at host address base + areg (base: the addend, in rdx or rdi): a
    /// store of `vo` or a load into `dl`.
    fn mem_access(
        &mut self,
        store: bool,
        size: MemSize,
        signed: bool,
        base: u8,
        areg: u8,
        vo: Opnd,
        dl: Option<Loc>,
    ) {
        if store {
            match (size, vo) {
                (MemSize::B1, Opnd::R(v)) => asm!(self; mov BYTE [Rq(base) + Rq(areg)], Rb(v)),
                (MemSize::B2, Opnd::R(v)) => asm!(self; mov WORD [Rq(base) + Rq(areg)], Rw(v)),
                (MemSize::B4, Opnd::R(v)) => asm!(self; mov DWORD [Rq(base) + Rq(areg)], Rd(v)),
                (MemSize::B8, Opnd::R(v)) => asm!(self; mov QWORD [Rq(base) + Rq(areg)], Rq(v)),
                (MemSize::B1, Opnd::I(c)) => asm!(self; mov BYTE [Rq(base) + Rq(areg)], BYTE c as i8),
                (MemSize::B2, Opnd::I(c)) => asm!(self; mov WORD [Rq(base) + Rq(areg)], WORD c as i16),
                (MemSize::B4, Opnd::I(c)) => asm!(self; mov DWORD [Rq(base) + Rq(areg)], DWORD c),
                (MemSize::B8, Opnd::I(c)) => asm!(self; mov QWORD [Rq(base) + Rq(areg)], DWORD c),
                _ => {
                    self.mov_r(RAX, vo, false);
                    match size {
                        MemSize::B1 => asm!(self; mov BYTE [Rq(base) + Rq(areg)], al),
                        MemSize::B2 => asm!(self; mov WORD [Rq(base) + Rq(areg)], ax),
                        MemSize::B4 => asm!(self; mov DWORD [Rq(base) + Rq(areg)], eax),
                        MemSize::B8 => asm!(self; mov QWORD [Rq(base) + Rq(areg)], rax),
                    }
                }
            }
        } else {
            let d = dl.expect("load destination");
            let r = self.work(d);
            match (size, signed) {
                (MemSize::B1, false) => asm!(self; movzx Rd(r), BYTE [Rq(base) + Rq(areg)]),
                (MemSize::B1, true) => asm!(self; movsx Rq(r), BYTE [Rq(base) + Rq(areg)]),
                (MemSize::B2, false) => asm!(self; movzx Rd(r), WORD [Rq(base) + Rq(areg)]),
                (MemSize::B2, true) => asm!(self; movsx Rq(r), WORD [Rq(base) + Rq(areg)]),
                (MemSize::B4, false) => asm!(self; mov Rd(r), DWORD [Rq(base) + Rq(areg)]),
                (MemSize::B4, true) => asm!(self; movsxd Rq(r), DWORD [Rq(base) + Rq(areg)]),
                (MemSize::B8, _) => asm!(self; mov Rq(r), QWORD [Rq(base) + Rq(areg)]),
            }
            self.put(d, r);
        }
    }

    /// Call the softmmu slow path (result in rax for loads). Saves live r8..r11.
    fn slow_call(&mut self, store: bool, ao: Opnd, vo: Opnd, info: u64, save: u32) {
        self.save(save);
        self.mov_r(RSI, ao, false);
        if store {
            self.mov_r(RDX, vo, false);
            // The store may hit this block's own code: the slow path learns which block
            // runs from `info` (`Env::cur_tb` is not written at block entry).
            asm!(self; mov rcx, QWORD mem_info_tb(info, self.tb) as i64);
        } else {
            asm!(self; mov edx, DWORD info as i32);
        }
        asm!(self; lea rdi, [r15 - 0x80]); // ENV_BIAS (a literal: disp8)
        if store {
            self.call_abs(slow_store as *const () as usize);
        } else {
            self.call_abs(slow_load as *const () as usize);
        }
        self.restore(save);
    }

    fn emit_stub(&mut self, s: Stub) {
        match s {
            Stub::Pair {
                label,
                back,
                i,
                insn,
                ops,
            } => {
                asm!(self; =>label);
                self.access(i, insn, &ops[0]);
                self.access(i + 1, insn, &ops[1]);
                asm!(self; jmp =>back);
            }
            Stub::Access {
                label,
                back,
                i,
                insn,
                op,
                clear,
            } => {
                asm!(self; =>label);
                if clear {
                    asm!(self; xor edi, edi);
                }
                self.access(i, insn, &op);
                asm!(self; jmp =>back);
            }
            Stub::Exit {
                label,
                insn,
                exit,
                plan,
            } => {
                asm!(self; =>label);
                self.emit_exit(insn, exit, plan);
            }
            Stub::ExitDefault { label, pc, ret } => {
                asm!(self; =>label);
                self.store_pc(pc);
                asm!(self; mov rax, QWORD ret as i64 ; jmp extern self.epilogue);
            }
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
                sync,
            } => {
                asm!(self; =>label);
                for (g, o) in sync {
                    self.set_global(g, o);
                }
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
    //! The backend-independent tests live in [`super::super::testkit`]; these run them on
    //! this backend (also without the optional CPU features and with a small code buffer)
    //! and keep the x86-specific ones.

    use super::*;
    use crate::backend::testkit;

    #[test]
    fn differential_random_blocks() {
        let mut x64 = X64Backend::new();
        testkit::differential(6000, 0x9e37_79b9_7f4a_7c15, &mut x64);
        assert_eq!(
            testkit::misaligned_calls(),
            0,
            "helpers called with a misaligned stack"
        );
    }

    #[test]
    fn differential_without_lzcnt_tzcnt_popcnt() {
        let mut x64 = X64Backend::with_features(Features {
            lzcnt: false,
            bmi1: false,
            popcnt: false,
            bmi2: false,
            ssse3: false,
        });
        testkit::differential(1500, 0x1234_5678_9abc_def1, &mut x64);
    }

    #[test]
    fn differential_small_code_buffer_flushes() {
        // Many compiles into one backend, flushing whenever it reports full.
        let mut x64 = X64Backend::new();
        x64.cc = CodeCache::new(2 << 20, "x64");
        x64.emit_trampoline();
        testkit::differential(3000, 0x5151_1234_0000_0001, &mut x64);
    }

    /// Every op on edge values against `eval`, with and without lzcnt/tzcnt/popcnt.
    #[test]
    fn directed_ops_against_eval() {
        for feat in [
            Features::detect(),
            Features {
                lzcnt: false,
                bmi1: false,
                popcnt: false,
                bmi2: false,
                ssse3: false,
            },
        ] {
            testkit::directed_ops_against_eval(
                &mut X64Backend::with_features(feat),
                &format!("{feat:?}"),
            );
        }
    }

    /// Rough speed check against the interpreter (see [`testkit::bench_loop`]).
    #[test]
    #[ignore]
    fn bench_loop() {
        testkit::bench_loop(&mut || Box::new(X64Backend::new()));
    }

    #[test]
    fn tlb_miss_slow_path_then_hit() {
        testkit::tlb_miss_slow_path_then_hit(&mut X64Backend::new());
    }

    #[test]
    fn load_fault_reports_instruction() {
        testkit::load_fault_reports_instruction(&mut X64Backend::new());
    }

    #[test]
    fn chain_unchain_and_budget() {
        testkit::chain_unchain_and_budget(&mut X64Backend::new());
    }

    #[test]
    fn engine_run_repeat() {
        testkit::engine_run_repeat(&mut || Box::new(X64Backend::new()));
    }

    #[test]
    fn tlb_probe_index_and_mode() {
        testkit::tlb_probe_index_and_mode(&mut X64Backend::new());
    }

    #[test]
    fn indirect_jump_cache_probe() {
        testkit::indirect_jump_cache_probe(&mut X64Backend::new(), true);
    }

    #[test]
    fn engine_run_with_chaining() {
        testkit::engine_run_with_chaining(&mut || Box::new(X64Backend::new()));
    }
}

/// An address computation `dst = base + (index << scale) + disp` for one `lea`.
#[derive(Clone, Copy, Debug)]
struct LeaPlan {
    dst: Temp,
    base: Option<Temp>,
    index: (Temp, u8),
    disp: i32,
}

/// The ops from `i` that compute an address as the frontend builds one (a shift by 1-3,
/// an add of a base, an add of a displacement, each result read only by the next) and
/// one `lea` can replace, with how many there are: `shl; add base`, `shl; add disp`,
/// `shl; add base; add disp`, `add base; add disp`.
fn lea_plan(ops: &[Op], i: usize, uses: &[u32]) -> Option<(LeaPlan, usize)> {
    use crate::ir::BinOp::{Add, Shl};
    let add = |k: usize| match ops.get(k) {
        Some(&Op::Bin {
            op: Add,
            w: Width::W64,
            dst,
            a,
            b,
        }) => Some((dst, a, b)),
        _ => None,
    };
    let imm = |v: Val| match v {
        Val::C(c) if fits_i32(c) => Some(c as i64 as i32),
        _ => None,
    };
    // base + disp on the result `t` of op k - 1, read only by op k.
    let disp_after = |k: usize, t: Temp| match add(k) {
        Some((dst, a, b)) if a == t && uses[t.idx()] == 1 => imm(b).map(|c| (dst, c)),
        _ => None,
    };
    match ops[i] {
        Op::Bin {
            op: Shl,
            w: Width::W64,
            dst: t,
            a: x,
            b: Val::C(s @ 1..=3),
        } if uses[t.idx()] == 1 => {
            let (d2, a, b) = add(i + 1)?;
            let base = match (a, b) {
                (a, Val::T(y)) if a == t && y != t => y,
                (a, Val::T(y)) if y == t && a != t => a,
                (a, b) if a == t => {
                    let c = imm(b)?;
                    let p = LeaPlan {
                        dst: d2,
                        base: None,
                        index: (x, s as u8),
                        disp: c,
                    };
                    return Some((p, 2));
                }
                _ => return None,
            };
            let mut p = LeaPlan {
                dst: d2,
                base: Some(base),
                index: (x, s as u8),
                disp: 0,
            };
            let mut n = 2;
            if let Some((d3, c)) = disp_after(i + 2, d2) {
                (p.dst, p.disp, n) = (d3, c, 3);
            }
            Some((p, n))
        }
        Op::Bin {
            op: Add,
            w: Width::W64,
            dst: t,
            a,
            b: Val::T(y),
        } if a != t && y != t => {
            let (d2, c) = disp_after(i + 1, t)?;
            let p = LeaPlan {
                dst: d2,
                base: Some(a),
                index: (y, 0),
                disp: c,
            };
            Some((p, 2))
        }
        _ => None,
    }
}
