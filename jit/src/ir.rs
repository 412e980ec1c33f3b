//! Xenolith's intermediate representation.
//!
//! A block of IR is a straight list of [`Op`]s over 64-bit *temporaries* (block-local values,
//! numbered densely from 0) and *globals* (u64 slots of guest state in [`crate::Env::g`], whose
//! meaning the frontend defines). Operations are deliberately few and host-neutral: every op
//! has an obvious translation on x86_64, aarch64 and riscv64 (no host flags are exposed; a
//! comparison produces a 0/1 value or drives a branch).
//!
//! Contracts the frontend must keep (the backends rely on them):
//! - Guest instructions are delimited by [`Op::InsnStart`]. The `n`-th marker (from 0) is
//!   instruction `n` of the block. Memory accesses and faulting helper calls may raise an
//!   exception; the engine then reports the guest state *before* the instruction, so a
//!   frontend writes globals of an instruction only after its last op that can fault.
//! - Branches only go forward or backward to labels of the same block; a block always ends
//!   with an [`Op::Exit`] (or a branch over which every path reaches one).
//! - 32-bit arithmetic ([`Width::W32`]) zero-extends its result to 64 bits.

use std::fmt;

/// A block-local temporary (a newtype, so an integer literal never silently becomes a temp
/// where a constant was meant).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Temp(pub u32);

impl Temp {
    /// Index into a per-block temp array.
    pub fn idx(self) -> usize {
        self.0 as usize
    }
}
/// A guest-state global: index into [`crate::Env::g`].
pub type Global = u16;
/// A label inside a block.
pub type Label = u32;

/// Operand width for arithmetic. Results of `W32` ops are zero-extended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Width {
    W32,
    W64,
}

/// Memory access size in bytes (1, 2, 4, 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemSize {
    B1 = 1,
    B2 = 2,
    B4 = 4,
    B8 = 8,
}

impl MemSize {
    pub fn bytes(self) -> u32 {
        self as u32
    }
    pub fn bits(self) -> u32 {
        self as u32 * 8
    }
    pub fn from_bytes(n: u32) -> MemSize {
        match n {
            1 => MemSize::B1,
            2 => MemSize::B2,
            4 => MemSize::B4,
            8 => MemSize::B8,
            _ => panic!("bad memory size {n}"),
        }
    }
    /// Mask of the value bits.
    pub fn mask(self) -> u64 {
        match self {
            MemSize::B8 => u64::MAX,
            s => (1u64 << s.bits()) - 1,
        }
    }
}

/// Global stores a memory access owes the guest state if it leaves generated code (its
/// slow path: a fault, a TLB miss, a write to translated code): `(g, v)` means global `g`
/// holds `v` at that point, though no `SetG` wrote it (the optimiser dropped a `SetG` that
/// a later `SetG` of `g` overwrites, with only memory accesses in between; see
/// `opt::dead_setg`). A backend stores them before anything that can observe `Env`; the
/// fast path of a TLB hit observes nothing, so a backend may leave them out there, and one
/// that does not distinguish simply stores them before the access. Temps in the list are
/// uses of the access (they stay live up to it and keep their value).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SyncList(pub Vec<(Global, Val)>);

/// Who performs a memory access, which decides the permission check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessKind {
    /// An access at the current privilege (the block's MMU mode).
    Normal,
    /// An implicit supervisor access (descriptor tables, TSS), whatever the CPL.
    System,
    /// An access through the stack segment (a non-canonical address raises #SS, not #GP).
    Stack,
}

/// Memory operation flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemOp {
    pub size: MemSize,
    /// Sign-extend a load to 64 bits (otherwise zero-extend).
    pub signed: bool,
    pub kind: AccessKind,
    /// A load that belongs to a read-modify-write: it needs write permission (and faults
    /// as a write), like the locked/RMW read of x86 `add [m], r`.
    pub rmw: bool,
}

impl MemOp {
    pub fn new(size: MemSize) -> MemOp {
        MemOp {
            size,
            signed: false,
            kind: AccessKind::Normal,
            rmw: false,
        }
    }
    pub fn signed(size: MemSize) -> MemOp {
        MemOp {
            size,
            signed: true,
            kind: AccessKind::Normal,
            rmw: false,
        }
    }
    pub fn stack(size: MemSize) -> MemOp {
        MemOp {
            size,
            signed: false,
            kind: AccessKind::Stack,
            rmw: false,
        }
    }
}

/// An operand: a temporary or a constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Val {
    T(Temp),
    C(u64),
}

impl From<Temp> for Val {
    fn from(t: Temp) -> Val {
        Val::T(t)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    And,
    Or,
    Xor,
    /// Shift left; the count is taken modulo the width.
    Shl,
    /// Logical shift right; count modulo width.
    Shr,
    /// Arithmetic shift right; count modulo width.
    Sar,
    /// Rotate left; count modulo width.
    Rotl,
    /// Rotate right; count modulo width.
    Rotr,
    /// Low half of the product.
    Mul,
    /// High half of the unsigned product.
    MulHU,
    /// High half of the signed product.
    MulHS,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    Not,
    Neg,
    /// Byte swap of the whole width.
    Bswap,
    /// Count leading zeros (width when zero).
    Clz,
    /// Count trailing zeros (width when zero).
    Ctz,
    /// Population count.
    Popcnt,
}

/// Comparison of two 64-bit values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cond {
    Eq,
    Ne,
    LtU,
    LeU,
    GtU,
    GeU,
    LtS,
    LeS,
    GtS,
    GeS,
    /// `a & b == 0`
    TstZ,
    /// `a & b != 0`
    TstNz,
}

impl Cond {
    pub fn eval(self, a: u64, b: u64) -> bool {
        match self {
            Cond::Eq => a == b,
            Cond::Ne => a != b,
            Cond::LtU => a < b,
            Cond::LeU => a <= b,
            Cond::GtU => a > b,
            Cond::GeU => a >= b,
            Cond::LtS => (a as i64) < (b as i64),
            Cond::LeS => (a as i64) <= (b as i64),
            Cond::GtS => (a as i64) > (b as i64),
            Cond::GeS => (a as i64) >= (b as i64),
            Cond::TstZ => a & b == 0,
            Cond::TstNz => a & b != 0,
        }
    }
    pub fn invert(self) -> Cond {
        match self {
            Cond::Eq => Cond::Ne,
            Cond::Ne => Cond::Eq,
            Cond::LtU => Cond::GeU,
            Cond::LeU => Cond::GtU,
            Cond::GtU => Cond::LeU,
            Cond::GeU => Cond::LtU,
            Cond::LtS => Cond::GeS,
            Cond::LeS => Cond::GtS,
            Cond::GtS => Cond::LeS,
            Cond::GeS => Cond::LtS,
            Cond::TstZ => Cond::TstNz,
            Cond::TstNz => Cond::TstZ,
        }
    }
}

/// How a block hands control back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Continue at a known guest pc (the pc global's value). Chainable.
    Jump { pc: u64 },
    /// Continue at `pc` *without retiring* the current instruction: a REP string
    /// instruction with iterations left (it retires once, when it completes). Adds the
    /// index of the current instruction (not index + 1) to `Env::icount`. Chainable.
    Repeat { pc: u64 },
    /// Continue at a computed guest pc (looked up in the TB cache).
    Indirect { pc: Temp },
    /// Raise an exception *at* the current instruction (state as before it).
    Exception { vector: u8, error_code: Option<u32> },
    /// A privileged or platform-defined instruction: the platform decides. The instruction
    /// has not executed; `op`/`arg` are the frontend's encoding of it; `len` its length.
    Platform { op: u32, arg: u64, len: u8 },
    /// Stop the block here and give control back to the run loop at `pc` (after the
    /// instruction has completed), e.g. after a mode change that invalidates the block key.
    /// `pc == SYNC_KEEP_PC` means a helper already set the pc global (far transfers).
    Sync { pc: u64 },
}

/// `Exit::Sync` target meaning "the pc global is already set".
pub const SYNC_KEEP_PC: u64 = u64::MAX;

/// One IR operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Marks the start of a guest instruction at linear address `pc`.
    InsnStart {
        pc: u64,
    },
    Const {
        dst: Temp,
        val: u64,
    },
    Mov {
        dst: Temp,
        src: Temp,
    },
    /// dst = env.g[g]
    GetG {
        dst: Temp,
        g: Global,
    },
    /// env.g[g] = src
    SetG {
        g: Global,
        src: Val,
    },
    Bin {
        op: BinOp,
        w: Width,
        dst: Temp,
        a: Temp,
        b: Val,
    },
    Un {
        op: UnOp,
        w: Width,
        dst: Temp,
        a: Temp,
    },
    /// Zero- or sign-extend the low `from` bytes of `a` to 64 bits.
    Ext {
        dst: Temp,
        a: Temp,
        from: MemSize,
        signed: bool,
    },
    /// dst = cond(a, b) ? 1 : 0
    SetCond {
        cond: Cond,
        dst: Temp,
        a: Temp,
        b: Val,
    },
    /// dst = cond(a, b) ? t : f
    Select {
        cond: Cond,
        dst: Temp,
        a: Temp,
        b: Val,
        t: Val,
        f: Val,
    },
    /// Guest load from linear address `addr`.
    ///
    /// `sync`: global stores the optimiser sank into the access ([`SyncList`]).
    Load {
        dst: Temp,
        addr: Temp,
        mop: MemOp,
        sync: SyncList,
    },
    /// Guest store to linear address `addr` (`sync` as for `Load`).
    Store {
        addr: Temp,
        val: Val,
        mop: MemOp,
        sync: SyncList,
    },
    /// Call a helper from the engine's helper table.
    ///
    /// `inline`: an equivalent the backend may run instead of the call (see [`Inline`]);
    /// a backend that has none for it, or whose host cannot do it, makes the call.
    Call {
        helper: HelperId,
        args: Vec<Val>,
        dst: Option<Temp>,
        inline: Option<Inline>,
    },
    Label(Label),
    Br(Label),
    BrCond {
        cond: Cond,
        a: Temp,
        b: Val,
        label: Label,
    },
    Exit(Exit),
}

/// A helper call's guest semantics, stated so that a backend whose host has the same
/// instruction can run it inline. The call stays the definition: an inline form must
/// leave exactly what the call would (globals, return value, fault), and falls back to
/// the call wherever it cannot be sure of that.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Inline {
    /// An x86 SSE floating-point instruction `op dst, src` on 128-bit values held as two
    /// globals each (`dst`, `dst + 1` and `src`, `src + 1`, low quadword first), under the
    /// control and status register in global `csr` (MXCSR layout): the result replaces
    /// `dst` (the whole register for packed forms, the low element for scalar ones) and
    /// the exception flags raised are ORed into `csr`. The frontend emits it only where
    /// `csr`'s control bits are known to be 0x1F80 (round to nearest, every exception
    /// masked, no flush-to-zero or denormals-are-zero), so it cannot fault (shuffles,
    /// which neither read nor raise anything, anywhere).
    Sse {
        op: SseOp,
        dst: Global,
        src: Global,
        csr: Global,
    },
    /// An x86 DIV (`signed`: IDIV) of the dividend in globals `rdx:rax` (high and low
    /// halves, `bytes` = 4 or 8 wide) by the call's second argument (zero-extended): the
    /// quotient replaces `rax` and the remainder `rdx`, each zero-extended to 64 bits. The
    /// call is the definition (it raises #DE); a backend may divide inline where the
    /// division cannot fault and call otherwise.
    Div {
        bytes: u8,
        signed: bool,
        rax: Global,
        rdx: Global,
    },
}

/// Arithmetic of [`Inline::Sse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SseArith {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
    /// Square root of the source (the destination's other elements kept, scalar forms).
    Sqrt,
    /// CMPccPS/PD/SS/SD with the predicate (0..=7) as the immediate.
    Cmp(u8),
    /// SHUFPS (form `Ps`) / SHUFPD (`Pd`) with its immediate: a shuffle, exact everywhere
    /// and independent of `csr`.
    Shuf(u8),
    /// UNPCKLPS/UNPCKHPS (`Ps`), UNPCKLPD/UNPCKHPD (`Pd`): `false` for the low halves.
    Unpack(bool),
    /// PSHUFB (form `Ps`): a byte shuffle, independent of `csr`.
    Pshufb,
}

/// Element layout of [`Inline::Sse`]: packed or scalar, single or double precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SseForm {
    Ps,
    Ss,
    Pd,
    Sd,
}

/// One [`Inline::Sse`] operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SseOp {
    pub arith: SseArith,
    pub form: SseForm,
}

/// Index into the helper table handed to the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HelperId(pub u16);

/// A helper's signature. All helpers take the environment and up to four u64 arguments and
/// return a u64. A helper that can fault sets [`crate::Env::fault`] and the generated code
/// leaves the block with the exception.
pub type HelperFn =
    unsafe extern "C" fn(env: *mut crate::Env, a0: u64, a1: u64, a2: u64, a3: u64) -> u64;

/// A set of globals (bitmask over all global indices).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalSet(pub [u64; crate::env::NGLOBALS / 64]);

impl GlobalSet {
    pub const ALL: GlobalSet = GlobalSet([u64::MAX; crate::env::NGLOBALS / 64]);
    pub const NONE: GlobalSet = GlobalSet([0; crate::env::NGLOBALS / 64]);
    pub const fn with(mut self, g: Global) -> GlobalSet {
        self.0[g as usize / 64] |= 1 << (g % 64);
        self
    }
    pub const fn without(mut self, g: Global) -> GlobalSet {
        self.0[g as usize / 64] &= !(1 << (g % 64));
        self
    }
    pub fn contains(&self, g: Global) -> bool {
        self.0[g as usize / 64] & (1 << (g % 64)) != 0
    }
}

/// What the engine needs to know about a helper.
#[derive(Clone, Copy)]
pub struct HelperInfo {
    pub name: &'static str,
    pub func: HelperFn,
    /// Globals the helper reads (they must be up to date in `Env` before the call).
    pub reads: GlobalSet,
    /// Globals the helper writes (cached copies must be reloaded after the call).
    pub writes: GlobalSet,
    /// The helper may raise a guest exception (set `Env::fault`).
    pub can_fault: bool,
}

impl fmt::Debug for HelperInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "helper {}", self.name)
    }
}

/// A translated block of IR plus what the engine needs to manage it.
#[derive(Clone, Debug, Default)]
pub struct Block {
    pub ops: Vec<Op>,
    pub ntemps: u32,
    pub nlabels: u32,
    /// Guest pc (linear) of each instruction, in order.
    pub insn_pcs: Vec<u64>,
    /// Number of guest bytes covered from the first instruction's pc (up to the end of the
    /// first followed jump, if the block continues through one).
    pub guest_len: u32,
    /// Further runs of guest bytes (linear start, length): a block that continues at a
    /// direct jump's target covers its bytes from there (see the frontend).
    pub guest_more: Vec<(u64, u32)>,
    /// The MMU mode (TLB) every access of this block uses; the frontend makes it part of
    /// the block's key, so it is constant for the block and equals `Env::mmu_idx` whenever
    /// the block runs.
    pub mmu_idx: u32,
    /// The block's mode word (set by the engine from its key: flags and code-segment base).
    /// An `Exit::Indirect` continues in the same mode, so a backend may look the target up
    /// in `Env::jc` with this mode.
    pub mode: u64,
    /// The global holding the guest's SSE control and status register (MXCSR layout),
    /// for blocks that may contain [`Inline::Sse`]. A backend that runs those inline may
    /// keep exception flags raised by them in the host's own status register while
    /// generated code runs, provided every reader of this global sees them: see the x64
    /// backend. The optimiser leaves this global's writes in place (no sinking).
    pub sse_csr: Option<Global>,
}

/// Builds a block: allocates temps and labels and records instruction starts.
#[derive(Default)]
pub struct Builder {
    pub block: Block,
}

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }
    pub fn temp(&mut self) -> Temp {
        let t = self.block.ntemps;
        self.block.ntemps += 1;
        Temp(t)
    }
    pub fn label(&mut self) -> Label {
        let l = self.block.nlabels;
        self.block.nlabels += 1;
        l
    }
    pub fn push(&mut self, op: Op) {
        self.block.ops.push(op);
    }
    pub fn insn_start(&mut self, pc: u64) {
        self.block.insn_pcs.push(pc);
        self.push(Op::InsnStart { pc });
    }
    /// Number of instructions started so far.
    pub fn insn_count(&self) -> usize {
        self.block.insn_pcs.len()
    }
    pub fn konst(&mut self, val: u64) -> Temp {
        let dst = self.temp();
        self.push(Op::Const { dst, val });
        dst
    }
    pub fn mov(&mut self, src: Temp) -> Temp {
        let dst = self.temp();
        self.push(Op::Mov { dst, src });
        dst
    }
    /// Materialise a value into a temp.
    pub fn val(&mut self, v: Val) -> Temp {
        match v {
            Val::T(t) => t,
            Val::C(c) => self.konst(c),
        }
    }
    pub fn get(&mut self, g: Global) -> Temp {
        let dst = self.temp();
        self.push(Op::GetG { dst, g });
        dst
    }
    pub fn set(&mut self, g: Global, src: impl Into<Val>) {
        self.push(Op::SetG { g, src: src.into() });
    }
    pub fn bin(&mut self, op: BinOp, w: Width, a: Temp, b: impl Into<Val>) -> Temp {
        let dst = self.temp();
        self.push(Op::Bin {
            op,
            w,
            dst,
            a,
            b: b.into(),
        });
        dst
    }
    pub fn add(&mut self, a: Temp, b: impl Into<Val>) -> Temp {
        self.bin(BinOp::Add, Width::W64, a, b)
    }
    pub fn sub(&mut self, a: Temp, b: impl Into<Val>) -> Temp {
        self.bin(BinOp::Sub, Width::W64, a, b)
    }
    pub fn and(&mut self, a: Temp, b: impl Into<Val>) -> Temp {
        self.bin(BinOp::And, Width::W64, a, b)
    }
    pub fn or(&mut self, a: Temp, b: impl Into<Val>) -> Temp {
        self.bin(BinOp::Or, Width::W64, a, b)
    }
    pub fn xor(&mut self, a: Temp, b: impl Into<Val>) -> Temp {
        self.bin(BinOp::Xor, Width::W64, a, b)
    }
    pub fn shl(&mut self, a: Temp, b: impl Into<Val>) -> Temp {
        self.bin(BinOp::Shl, Width::W64, a, b)
    }
    pub fn shr(&mut self, a: Temp, b: impl Into<Val>) -> Temp {
        self.bin(BinOp::Shr, Width::W64, a, b)
    }
    pub fn sar(&mut self, a: Temp, b: impl Into<Val>) -> Temp {
        self.bin(BinOp::Sar, Width::W64, a, b)
    }
    pub fn un(&mut self, op: UnOp, w: Width, a: Temp) -> Temp {
        let dst = self.temp();
        self.push(Op::Un { op, w, dst, a });
        dst
    }
    pub fn ext(&mut self, a: Temp, from: MemSize, signed: bool) -> Temp {
        if from == MemSize::B8 {
            return a;
        }
        let dst = self.temp();
        self.push(Op::Ext {
            dst,
            a,
            from,
            signed,
        });
        dst
    }
    pub fn setcond(&mut self, cond: Cond, a: Temp, b: impl Into<Val>) -> Temp {
        let dst = self.temp();
        self.push(Op::SetCond {
            cond,
            dst,
            a,
            b: b.into(),
        });
        dst
    }
    pub fn select(
        &mut self,
        cond: Cond,
        a: Temp,
        b: impl Into<Val>,
        t: impl Into<Val>,
        f: impl Into<Val>,
    ) -> Temp {
        let dst = self.temp();
        self.push(Op::Select {
            cond,
            dst,
            a,
            b: b.into(),
            t: t.into(),
            f: f.into(),
        });
        dst
    }
    pub fn load(&mut self, addr: Temp, mop: MemOp) -> Temp {
        let dst = self.temp();
        self.push(Op::Load {
            dst,
            addr,
            mop,
            sync: SyncList::default(),
        });
        dst
    }
    pub fn store(&mut self, addr: Temp, val: impl Into<Val>, mop: MemOp) {
        self.push(Op::Store {
            addr,
            val: val.into(),
            mop,
            sync: SyncList::default(),
        });
    }
    pub fn call(&mut self, helper: HelperId, args: &[Val]) -> Temp {
        assert!(args.len() <= 4);
        let dst = self.temp();
        self.push(Op::Call {
            helper,
            args: args.to_vec(),
            dst: Some(dst),
            inline: None,
        });
        dst
    }
    /// A call whose result is not used, with an inline equivalent ([`Inline`]).
    pub fn call_inline_void(&mut self, helper: HelperId, args: &[Val], inline: Inline) {
        assert!(args.len() <= 4);
        self.push(Op::Call {
            helper,
            args: args.to_vec(),
            dst: None,
            inline: Some(inline),
        });
    }
    pub fn call_void(&mut self, helper: HelperId, args: &[Val]) {
        assert!(args.len() <= 4);
        self.push(Op::Call {
            helper,
            args: args.to_vec(),
            dst: None,
            inline: None,
        });
    }
    pub fn place(&mut self, l: Label) {
        self.push(Op::Label(l));
    }
    pub fn br(&mut self, l: Label) {
        self.push(Op::Br(l));
    }
    pub fn brcond(&mut self, cond: Cond, a: Temp, b: impl Into<Val>, label: Label) {
        self.push(Op::BrCond {
            cond,
            a,
            b: b.into(),
            label,
        });
    }
    pub fn exit(&mut self, e: Exit) {
        self.push(Op::Exit(e));
    }
    pub fn finish(self) -> Block {
        self.block
    }
}
