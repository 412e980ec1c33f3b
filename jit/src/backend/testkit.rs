//! Backend-independent test kit: fixtures (guest RAM layout, MMU, frontend, helpers), a
//! random IR block generator and differential testing of a backend against the IR
//! interpreter, plus behaviour tests every native backend must pass. A backend's own test
//! module calls these with the backend under test, e.g.
//!
//! ```ignore
//! #[test]
//! fn differential_random_blocks() {
//!     testkit::differential(6000, 0x9e37_79b9_7f4a_7c15, &mut MyBackend::new());
//!     assert_eq!(testkit::misaligned_calls(), 0);
//! }
//! ```
//!
//! Nothing here mentions a host instruction; it compiles on every host.

// Which items are used depends on the backends that exist for the host.
#![allow(dead_code)]

use super::interp::Interp;
use super::{Backend, CodeHandle};
use crate::engine::{
    core_of, ret, Access, CodeFetcher, Core, Engine, Frontend, GuestFault, Mmu, StopReason, TbKey,
};
use crate::env::{fault, Env, TlbEntry, NB_MMU_MODES};
use crate::ir::{
    AccessKind, BinOp, Block, Builder, Cond, Exit, Global, GlobalSet, HelperId, HelperInfo, Label,
    MemOp, MemSize, Op, SyncList, Temp, UnOp, Val, Width,
};
use crate::mem::GuestRam;

pub const RAM_SIZE: u64 = 0x10000;
/// Guest pages 0..0xB000 map 1:1 (RW), 0xB000..0xC000 is read-only, 0xC000..0x10000 is
/// unmapped, 0x10000..0x14000 aliases 0..0x4000, 0x20000..0x21000 maps outside RAM.
pub const RO_PAGE: u64 = 0xB000;
pub const UNMAPPED: u64 = 0xC000;
pub const ALIAS: u64 = 0x10000;
pub const MMIO: u64 = 0x20000;
/// The pc global of every test block.
pub const PC: Global = 200;

pub struct TestMmu;

impl Mmu for TestMmu {
    fn translate(
        &mut self,
        _env: &Env,
        _ram: &mut GuestRam,
        vaddr: u64,
        access: Access,
        _who: AccessKind,
    ) -> Result<u64, GuestFault> {
        let pf = Err(GuestFault {
            vector: 14,
            error_code: Some(access as u32),
            addr: vaddr,
        });
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
pub struct TableFrontend {
    pub blocks: Vec<(u64, Block)>,
    pub helpers: Vec<HelperInfo>,
}

impl Frontend for TableFrontend {
    fn key(&self, env: &Env) -> TbKey {
        let pc = env.g[PC as usize];
        TbKey {
            pc,
            rip: pc,
            cs_base: 0,
            flags: 0,
        }
    }
    fn translate(
        &mut self,
        _env: &Env,
        key: &TbKey,
        fetch: &mut CodeFetcher,
        _max: u32,
    ) -> Result<Block, GuestFault> {
        let mut b = [0u8; 1];
        fetch.fetch(key.pc, &mut b)?;
        Ok(self
            .blocks
            .iter()
            .find(|b| b.0 == key.pc)
            .expect("no block at pc")
            .1
            .clone())
    }
    fn helpers(&self) -> &[HelperInfo] {
        &self.helpers
    }
    fn pc_global(&self) -> Global {
        PC
    }
}

static MISALIGNED_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many times the `mix` helper (helper 0) ran with a stack not 16-byte aligned, over
/// the whole test process.
pub fn misaligned_calls() -> u64 {
    MISALIGNED_CALLS.load(std::sync::atomic::Ordering::Relaxed)
}

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
    core.load(e, a0 & 0x7ff8, 8, AccessKind::Normal)
        .unwrap_or(0x1234)
}

/// Helper 0 `mix` (reads g1, writes g3), 1 `fault` (can fault; writes g4), 2 `peek` (loads
/// through the core).
pub fn helpers() -> Vec<HelperInfo> {
    vec![
        HelperInfo {
            name: "mix",
            func: h_mix,
            reads: GlobalSet::NONE.with(1),
            writes: GlobalSet::NONE.with(3),
            can_fault: false,
        },
        HelperInfo {
            name: "fault",
            func: h_fault,
            reads: GlobalSet::NONE,
            writes: GlobalSet::NONE.with(4),
            can_fault: true,
        },
        HelperInfo {
            name: "peek",
            func: h_peek,
            reads: GlobalSet::NONE,
            writes: GlobalSet::NONE,
            can_fault: false,
        },
    ]
}

/// An engine over the test RAM/MMU with an empty table frontend and the interpreter.
pub fn engine() -> Engine {
    let ram = GuestRam::new(RAM_SIZE).unwrap();
    let fe = TableFrontend {
        blocks: Vec::new(),
        helpers: helpers(),
    };
    Engine::new(
        ram,
        Box::new(TestMmu),
        Box::new(fe),
        Box::new(Interp::new()),
    )
}

/// Point env.rt at the engine's core (as Engine::run does) and return the env pointer.
pub fn bind(e: &mut Engine) -> *mut Env {
    let core: *mut Core = &mut *e.core;
    e.env.rt = core as *mut u8;
    &mut *e.env
}

/// xorshift64*; the seed must be non-zero.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    pub fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len() as u64) as usize]
    }
}

pub const BINOPS: [BinOp; 13] = [
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
pub const UNOPS: [UnOp; 6] = [
    UnOp::Not,
    UnOp::Neg,
    UnOp::Bswap,
    UnOp::Clz,
    UnOp::Ctz,
    UnOp::Popcnt,
];
pub const CONDS: [Cond; 12] = [
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
pub const SIZES: [MemSize; 4] = [MemSize::B1, MemSize::B2, MemSize::B4, MemSize::B8];
pub const WIDTHS: [Width; 2] = [Width::W32, Width::W64];

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
    /// Every memory access carries a sync list (`ir::SyncList`) of all of SYNC_GLOBALS,
    /// and no helper faults (so a fault always leaves those globals as its access's list).
    sync_on: bool,
}

/// Globals the random blocks only write through sync lists (never read): what they hold
/// is defined only at a fault (`differential`).
pub const SYNC_GLOBALS: [Global; 3] = [20, 21, 22];

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
        let i = if self.rng.chance(60) {
            n - 1 - self.rng.below(n.min(6))
        } else {
            self.rng.below(n)
        };
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
        let max = if self.faulty {
            100
        } else if store {
            65
        } else {
            94
        };
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
        if self.rng.chance(30) {
            // As the x86 frontend computes base + index * scale + disp (a backend may fold
            // it into one instruction, as x86_64's `lea`).
            let disp = self.rng.pick(&[0, 8, 0x40]);
            let form = self.rng.below(3);
            let bt = self.b.konst(base - disp);
            let x = self.temp();
            let m = self.b.and(x, Val::C(7));
            let s = self.rng.below(4);
            let si = if s == 0 {
                m
            } else {
                self.b.shl(m, Val::C(s))
            };
            let a = match form {
                0 => self.b.add(bt, si),
                1 => self.b.add(si, bt),
                _ => self.b.add(si, Val::C(base - disp)),
            };
            let a = if disp != 0 {
                self.b.add(a, Val::C(disp))
            } else {
                a
            };
            if self.rng.chance(30) {
                // Read again later too (so that it may be spilled).
                self.avail.push(a);
            }
            return (a, false);
        }
        let bt = self.b.konst(base);
        if self.rng.chance(50) {
            let x = self.temp();
            let m = self.b.and(x, Val::C(0x3f));
            (self.b.add(bt, m), false)
        } else {
            (bt, false)
        }
    }
    fn sync_list(&mut self) -> SyncList {
        if !self.sync_on {
            return SyncList::default();
        }
        SyncList(SYNC_GLOBALS.iter().map(|&g| (g, self.val())).collect())
    }

    fn mop(&mut self, signed_ok: bool) -> MemOp {
        let size = self.rng.pick(&SIZES);
        let kind = match self.rng.below(10) {
            0 => AccessKind::System,
            1 => AccessKind::Stack,
            _ => AccessKind::Normal,
        };
        MemOp {
            size,
            signed: signed_ok && self.rng.chance(50),
            kind,
            rmw: signed_ok && self.rng.chance(15),
        }
    }
    fn exit(&mut self) -> Exit {
        match self.rng.below(7) {
            6 => Exit::Repeat {
                pc: self.rng.pick(&[0x1000, 0x2468]),
            },
            0 | 1 => {
                let r = self.rng.next();
                Exit::Jump {
                    pc: self.rng.pick(&[0x1000, 0x1234, 0xffff_ffff_8000_0000, r]),
                }
            }
            2 => Exit::Indirect { pc: self.temp() },
            3 => Exit::Exception {
                vector: 6,
                error_code: self.rng.chance(50).then_some(3),
            },
            4 => Exit::Platform {
                op: 7,
                arg: 9,
                len: 2,
            },
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
                    self.b.push(Op::Bin {
                        op,
                        w,
                        dst: d,
                        a,
                        b: bv,
                    });
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
                    self.b.push(Op::Ext {
                        dst: d,
                        a,
                        from,
                        signed,
                    });
                    self.def(d, fresh);
                }
                38..=41 => {
                    let cond = self.rng.pick(&CONDS);
                    let a = self.temp();
                    let bv = self.val();
                    let (d, fresh) = self.dst();
                    self.b.push(Op::SetCond {
                        cond,
                        dst: d,
                        a,
                        b: bv,
                    });
                    self.def(d, fresh);
                }
                42..=45 => {
                    let cond = self.rng.pick(&CONDS);
                    let a = self.temp();
                    let (bv, t, f) = (self.val(), self.val(), self.val());
                    let (d, fresh) = self.dst();
                    self.b.push(Op::Select {
                        cond,
                        dst: d,
                        a,
                        b: bv,
                        t,
                        f,
                    });
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
                60..=62 if self.rng.chance(40) => {
                    // A 16-byte operand as two 8-byte accesses (regalloc::access_pairs),
                    // the first result sometimes unused.
                    let (a, _) = self.addr(false);
                    let y = self.b.add(a, Val::C(8));
                    let mop = MemOp {
                        size: MemSize::B8,
                        ..self.mop(true)
                    };
                    let (d1, d2) = (self.b.temp(), self.b.temp());
                    for (d, at) in [(d1, a), (d2, y)] {
                        let sync = self.sync_list();
                        self.b.push(Op::Load {
                            dst: d,
                            addr: at,
                            mop,
                            sync,
                        });
                    }
                    if self.rng.chance(50) {
                        self.def(d1, true);
                    }
                    self.def(d2, true);
                }
                68..=70 if self.rng.chance(40) => {
                    let (a, _) = self.addr(true);
                    let y = self.b.add(a, Val::C(8));
                    let mop = MemOp {
                        size: MemSize::B8,
                        ..self.mop(false)
                    };
                    for at in [a, y] {
                        let v = self.val();
                        let sync = self.sync_list();
                        self.b.push(Op::Store {
                            addr: at,
                            val: v,
                            mop,
                            sync,
                        });
                    }
                }
                60..=67 => {
                    let (a, _) = self.addr(false);
                    let mop = self.mop(true);
                    let sync = self.sync_list();
                    let (d, fresh) = self.dst();
                    self.b.push(Op::Load {
                        dst: d,
                        addr: a,
                        mop,
                        sync,
                    });
                    self.def(d, fresh);
                }
                68..=74 => {
                    let (a, _) = self.addr(true);
                    let mop = self.mop(false);
                    let v = self.val();
                    let sync = self.sync_list();
                    self.b.push(Op::Store {
                        addr: a,
                        val: v,
                        mop,
                        sync,
                    });
                }
                75..=79 => {
                    let h = if self.faulty && !self.sync_on {
                        self.rng.below(3) as u16
                    } else {
                        self.rng.pick(&[0, 2])
                    };
                    let nargs = self.rng.below(5) as usize;
                    let args: Vec<Val> = (0..nargs).map(|_| self.val()).collect();
                    if self.rng.chance(20) {
                        self.b.call_void(HelperId(h), &args);
                    } else {
                        let (d, fresh) = self.dst();
                        self.b.push(Op::Call {
                            helper: HelperId(h),
                            args,
                            dst: Some(d),
                            inline: None,
                        });
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
                    self.b.push(Op::Bin {
                        op: BinOp::Sub,
                        w: Width::W64,
                        dst: c,
                        a: c,
                        b: Val::C(1),
                    });
                    self.b.brcond(Cond::Ne, c, Val::C(0), l);
                    self.protected.pop();
                }
                _ => {
                    let a = self.temp();
                    let bv = self.val();
                    let (d, fresh) = self.dst();
                    self.b.push(Op::Bin {
                        op: BinOp::Add,
                        w: Width::W64,
                        dst: d,
                        a,
                        b: bv,
                    });
                    self.def(d, fresh);
                }
            }
        }
    }
}

/// A random block: see `BlockGen`. Sets `guest_len` and a random `mmu_idx`.
pub fn random_block(rng: &mut Rng) -> Block {
    let mut g = BlockGen {
        rng,
        b: Builder::new(),
        avail: Vec::new(),
        protected: Vec::new(),
        pc: 0x1000,
        ops_left: 0,
        faulty: false,
        sync_on: false,
    };
    g.faulty = g.rng.chance(35);
    g.sync_on = g.rng.chance(40);
    g.b.insn_start(0x1000);
    // Sometimes many long-lived temps, to force spills beyond the fixed frame.
    let many = if g.rng.chance(10) {
        20 + g.rng.below(300)
    } else {
        g.rng.below(6)
    };
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

/// Random globals, icount, RAM; unlimited budget; no fault; flushed TLB.
pub fn init_state(e: &mut Engine, seed: u64, mmu_idx: u32) {
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

/// TLB entries with addends made relative to the RAM base (comparable across engines).
pub fn tlb_snapshot(e: &mut Engine) -> Vec<(u64, u64, u64, u64)> {
    let base = e.ram().base() as u64;
    e.env
        .tlb
        .iter()
        .flatten()
        .map(|t: &TlbEntry| {
            (
                t.read,
                t.write,
                t.exec,
                if t.addend == 0 {
                    0
                } else {
                    t.addend.wrapping_sub(base)
                },
            )
        })
        .collect()
}

/// Panics, listing the differences and the block, unless return values, globals, the
/// icount/fault/exception fields of `Env`, RAM and TLB agree. `a` ran the interpreter,
/// `b` the backend called `name`.
pub fn compare(
    a: &mut Engine,
    b: &mut Engine,
    ra: u64,
    rb: u64,
    what: &str,
    name: &str,
    blk: &Block,
) {
    let mut diffs = Vec::new();
    if ra != rb {
        diffs.push(format!("return {ra:#x} vs {rb:#x}"));
    }
    for i in 0..a.env.g.len() {
        if a.env.g[i] != b.env.g[i] {
            diffs.push(format!("g[{i}] {:#x} vs {:#x}", a.env.g[i], b.env.g[i]));
        }
    }
    let fields = |e: &Engine| {
        (
            e.env.icount,
            e.env.fault,
            e.env.exc_vector,
            e.env.exc_has_code,
            e.env.exc_code,
            e.env.exc_addr,
        )
    };
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
        panic!(
            "{what}: interp vs {name} mismatch:\n{}\nblock (mmu {}):\n{s}",
            diffs.join("\n"),
            blk.mmu_idx
        );
    }
}

/// Runs `n` random blocks (from `seed`) on `be` and on the interpreter, each twice (the
/// second run finds the TLB the first filled) from the same random state, and [`compare`]s.
/// 3% of the blocks run with the budget exhausted and must return `BUDGET`. Flushes `be`
/// whenever it reports full.
pub fn differential(n: u32, seed: u64, be: &mut dyn Backend) {
    let name = be.name();
    let hs = helpers();
    let mut rng = Rng(seed);
    let mut interp = Interp::new();
    let (mut ea, mut eb) = (engine(), engine());
    let (pa, pb) = (bind(&mut ea), bind(&mut eb));
    for iter in 0..n {
        let blk = random_block(&mut rng);
        let tb = rng.below(1 << 20) as u32;
        if be.is_full() {
            be.flush();
        }
        let ca = interp.compile(&blk, tb, &hs, PC).unwrap();
        let cb = be.compile(&blk, tb, &hs, PC).unwrap();
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
            let (ra, rb) = unsafe { (interp.execute(pa, ca), be.execute(pb, cb)) };
            let (ra, rb) = (same_exit(ra), same_exit(rb));
            // Sync-list globals are defined at a fault only (a backend may store them on
            // any access or only on slow paths).
            if ra & 0xff != ret::FAULT {
                for g in SYNC_GLOBALS {
                    eb.env.g[g as usize] = ea.env.g[g as usize];
                }
            }
            if budget {
                assert_eq!(rb, ret::encode(tb, 0, ret::BUDGET));
                // The pc global is the block's start then (the run loop entered it at its
                // pc; a chained entry writes it), which this random state does not hold.
                eb.env.g[PC as usize] = ea.env.g[PC as usize];
            }
            compare(
                &mut ea,
                &mut eb,
                ra,
                rb,
                &format!("iteration {iter} run {run}"),
                name,
                &blk,
            );
        }
    }
}

/// Edge values for operands.
pub const EDGE: [u64; 14] = [
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
/// `what` names the configuration in failure messages.
pub fn directed_ops_against_eval(be: &mut dyn Backend, what: &str) {
    use crate::backend::eval;
    let hs = helpers();
    let mut e = engine();
    let mut run = |be: &mut dyn Backend, blk: &Block, a: u64, b: u64| -> [u64; 4] {
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
                b.push(Op::Bin {
                    op,
                    w,
                    dst: x2,
                    a: x2,
                    b: Val::T(y),
                });
                b.set(4, x2);
                let y2 = b.get(2);
                b.push(Op::Bin {
                    op,
                    w,
                    dst: y2,
                    a: x,
                    b: Val::T(y2),
                });
                b.set(5, y2);
                let r = b.bin(op, w, x, Val::C(bv));
                b.set(6, r);
                b.exit(Exit::Jump { pc: 0 });
                let blk = b.finish();
                for &av in &EDGE {
                    let want = eval::bin(op, w, av, bv);
                    let got = run(be, &blk, av, bv);
                    assert_eq!(got, [want; 4], "{op:?} {w:?} {av:#x} {bv:#x} ({what})");
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
            b.push(Op::Un {
                op,
                w,
                dst: x,
                a: x,
            });
            b.set(4, x);
            b.set(5, r);
            b.set(6, r);
            b.exit(Exit::Jump { pc: 0 });
            let blk = b.finish();
            for &av in EDGE.iter().chain(&[0x0000_0100_0000_0000, 0x10]) {
                let want = eval::un(op, w, av);
                assert_eq!(
                    run(be, &blk, av, 0),
                    [want; 4],
                    "{op:?} {w:?} {av:#x} ({what})"
                );
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
            let r = b.select(
                cond,
                x,
                Val::C(bv),
                Val::C(0x1111_2222_3333_4444),
                Val::C(7),
            );
            b.set(6, r);
            b.exit(Exit::Jump { pc: 0 });
            let blk = b.finish();
            for &av in &EDGE {
                let c = cond.eval(av, bv);
                let want = [
                    c as u64,
                    c as u64,
                    if c { av } else { bv },
                    if c { 0x1111_2222_3333_4444 } else { 7 },
                ];
                assert_eq!(run(be, &blk, av, bv), want, "{cond:?} {av:#x} {bv:#x}");
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
                let want = if signed {
                    (((av << sh) as i64) >> sh) as u64
                } else {
                    (av << sh) >> sh
                };
                assert_eq!(
                    run(be, &blk, av, 0),
                    [want; 4],
                    "ext {from:?} {signed} {av:#x}"
                );
            }
        }
    }
}

/// Rough speed check: a self-chained 4-instruction loop block
/// (`add rax,[rsi]; add rsi,8; dec rcx; jnz`), run through the engine on the interpreter and
/// on the backends `make` returns.
pub fn bench_loop(make: &mut dyn FnMut() -> Box<dyn Backend>) {
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
        b.exit(Exit::Platform {
            op: 0,
            arg: 0,
            len: 1,
        });
        let mut blk = b.finish();
        blk.guest_len = 12;
        vec![(0x1000, blk)]
    }
    for kind in [0, 1] {
        let ram = GuestRam::new(RAM_SIZE).unwrap();
        let fe = TableFrontend {
            blocks: blocks(),
            helpers: helpers(),
        };
        let be: Box<dyn Backend> = if kind == 0 {
            Box::new(Interp::new())
        } else {
            make()
        };
        let name = be.name();
        let mut e = Engine::new(ram, Box::new(TestMmu), Box::new(fe), be);
        e.env.g[PC as usize] = 0x1000;
        let n = 20_000_000u64;
        e.env.g[1] = n;
        let t = std::time::Instant::now();
        e.run();
        let dt = t.elapsed();
        eprintln!(
            "{}: {:.2} ns/iteration ({} insns)",
            name,
            dt.as_nanos() as f64 / n as f64,
            e.env.icount
        );
    }
}

/// Binds `e` and runs `c` on `be`.
pub fn exec(be: &mut dyn Backend, e: &mut Engine, c: CodeHandle) -> u64 {
    let p = bind(e);
    // SAFETY: env.rt points at the engine's core.
    same_exit(unsafe { be.execute(p, c) })
}

/// `INDIRECT|index` is `EXIT|index` that tells the run loop the exit is an unchained
/// indirect jump (a backend may return either): compare them as one.
pub fn same_exit(r: u64) -> u64 {
    if r & 0xff == ret::INDIRECT {
        r & !0xff | ret::EXIT
    } else {
        r
    }
}

/// A TLB miss takes the slow path and fills the entry; a hit reads through the entry's
/// addend; a System access never uses the TLB.
pub fn tlb_miss_slow_path_then_hit(be: &mut dyn Backend) {
    let hs = helpers();
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
    assert_eq!(exec(be, &mut e, c), ret::encode(5, 0, ret::EXIT));
    assert_eq!(e.env.g[1], 0x1122_3344_5566_7788);
    assert_eq!(e.env.tlb[0][3].read, 0x3000, "slow path filled the TLB");
    assert_eq!(e.env.g[PC as usize], 0x200);
    assert_eq!(e.env.icount, 1);
    // Redirect the entry to a host buffer: a hit must read through it.
    let buf: Box<[u64; 512]> = Box::new([0xdead_beef_0000_0001; 512]);
    e.env.tlb[0][3].addend = (buf.as_ptr() as u64).wrapping_sub(0x3000);
    assert_eq!(exec(be, &mut e, c), ret::encode(5, 0, ret::EXIT));
    assert_eq!(
        e.env.g[1], 0xdead_beef_0000_0001,
        "fast path used the TLB entry"
    );
    // A System access never uses the TLB.
    let mut b = Builder::new();
    b.insn_start(0x100);
    let a = b.konst(0x3008);
    let v = b.load(
        a,
        MemOp {
            size: MemSize::B8,
            signed: false,
            kind: AccessKind::System,
            rmw: false,
        },
    );
    b.set(2, v);
    b.exit(Exit::Jump { pc: 0x200 });
    let c2 = be.compile(&b.finish(), 6, &hs, PC).unwrap();
    exec(be, &mut e, c2);
    assert_eq!(e.env.g[2], 0x1122_3344_5566_7788);
    drop(buf);
}

/// A faulting load (and a faulting `can_fault` helper) returns `FAULT|insn` with the fault
/// fields set, the globals stored by earlier instructions and nothing of the faulting one retired.
pub fn load_fault_reports_instruction(be: &mut dyn Backend) {
    let hs = helpers();
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
    let r = exec(be, &mut e, c);
    assert_eq!(r, ret::encode(9, 2, ret::FAULT));
    assert_eq!(e.env.fault, fault::EXCEPTION);
    assert_eq!(e.env.exc_vector, 14);
    assert_eq!(e.env.exc_addr, UNMAPPED + 0x10);
    assert_eq!(e.env.g[2], 1);
    assert_eq!(e.env.g[3], 77);
    assert_eq!(e.env.icount, 0);
    // Faulting helper.
    let mut b = Builder::new();
    b.insn_start(0x100);
    b.insn_start(0x101);
    let r = b.call(HelperId(1), &[Val::C(32), Val::C(0x40)]);
    b.set(3, r);
    b.exit(Exit::Jump { pc: 0x200 });
    let c = be.compile(&b.finish(), 10, &hs, PC).unwrap();
    e.env.fault = 0;
    assert_eq!(exec(be, &mut e, c), ret::encode(10, 1, ret::FAULT));
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
    b.exit(Exit::Exception {
        vector: 3,
        error_code: None,
    });
    b.insn_start(0x181);
    b.exit(Exit::Jump { pc: 0x300 });
    (a, b.finish())
}

/// Chaining, unchaining, budget checks at block entry (also through a chain), self-loops
/// and flush. `be` must chain `Exit::Jump`.
pub fn chain_unchain_and_budget(be: &mut dyn Backend) {
    let hs = helpers();
    let mut e = engine();
    let (a, b) = two_blocks();
    let ca = be.compile(&a, 1, &hs, PC).unwrap();
    let cb = be.compile(&b, 2, &hs, PC).unwrap();
    // Unchained: A returns through its exit 0.
    assert_eq!(exec(be, &mut e, ca), ret::encode(1, 0, ret::EXIT));
    assert_eq!(
        (e.env.g[1], e.env.icount, e.env.g[PC as usize]),
        (1, 2, 0x180)
    );
    // Chained: A continues into B, which leaves through its exit 0 (the exception).
    assert!(be.chain(ca, 0, cb));
    assert!(!be.chain(cb, 0, ca), "non-jump exits do not chain");
    assert_eq!(exec(be, &mut e, ca), ret::encode(2, 0, ret::EXIT));
    assert_eq!((e.env.g[1], e.env.g[2], e.env.icount), (2, 20, 4));
    // Budget: A runs, B finds the budget exhausted at entry (and leaves the pc global at
    // its own start, whether or not the chained jump wrote it).
    e.env.icount_limit = e.env.icount + 1;
    e.env.g[PC as usize] = 0x100;
    assert_eq!(exec(be, &mut e, ca), ret::encode(2, 0, ret::BUDGET));
    assert_eq!(
        (e.env.g[1], e.env.g[2], e.env.icount, e.env.g[PC as usize]),
        (3, 20, 6, 0x180)
    );
    // Budget at the very first entry.
    assert_eq!(exec(be, &mut e, ca), ret::encode(1, 0, ret::BUDGET));
    assert_eq!(e.env.g[1], 3);
    e.env.icount_limit = u64::MAX;
    // Unchain restores the return path.
    be.unchain(ca, 0);
    assert_eq!(exec(be, &mut e, ca), ret::encode(1, 0, ret::EXIT));
    assert_eq!((e.env.g[1], e.env.g[2], e.env.icount), (4, 20, 8));
    // Self-loop through a chain, stopped by the budget.
    assert!(be.chain(ca, 0, ca));
    e.env.icount_limit = e.env.icount + 100;
    assert_eq!(exec(be, &mut e, ca), ret::encode(1, 0, ret::BUDGET));
    assert_eq!((e.env.g[1], e.env.icount), (54, 108));
    // Flush drops everything; new code works.
    be.flush();
    let ca = be.compile(&a, 1, &hs, PC).unwrap();
    e.env.icount_limit = u64::MAX;
    assert_eq!(exec(be, &mut e, ca), ret::encode(1, 0, ret::EXIT));
}

/// `Exit::Repeat` (a REP instruction with iterations left) chains like a jump but does
/// not retire the instruction.
/// Compared with the interpreter; the backend from `make` must chain.
pub fn engine_run_repeat(make: &mut dyn FnMut() -> Box<dyn Backend>) {
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
        b.exit(Exit::Platform {
            op: 5,
            arg: 0,
            len: 1,
        });
        let mut blk = b.finish();
        blk.guest_len = if first { 3 } else { 2 };
        blk
    }
    let mut results = Vec::new();
    for kind in [0, 1] {
        let ram = GuestRam::new(RAM_SIZE).unwrap();
        let fe = TableFrontend {
            blocks: vec![
                (0x1000, rep_block(0x1001, true)),
                (0x1001, rep_block(0x1001, false)),
            ],
            helpers: helpers(),
        };
        let be: Box<dyn Backend> = if kind == 0 {
            Box::new(Interp::new())
        } else {
            make()
        };
        let mut e = Engine::new(ram, Box::new(TestMmu), Box::new(fe), be);
        e.env.g[PC as usize] = 0x1000;
        e.env.g[2] = 100;
        assert_eq!(
            e.run(),
            StopReason::Platform {
                op: 5,
                arg: 0,
                len: 1
            }
        );
        if kind == 1 {
            assert!(e.stats().chains >= 1);
        }
        let mem: Vec<u64> = (0..100)
            .map(|i| e.ram().read_u64(0x3000 + 8 * i).unwrap())
            .collect();
        results.push((
            e.env.g[2],
            e.env.g[3],
            e.env.g[PC as usize],
            e.env.icount,
            mem,
        ));
    }
    assert_eq!(results[0], results[1]);
    // Only the first instruction retired: the REP never completed before the platform exit.
    assert_eq!(
        (results[1].0, results[1].1, results[1].2, results[1].3),
        (0, 1, 0x1001, 1)
    );
}

/// The whole engine with this backend: a counted loop over two blocks, chained.
/// Compared with the interpreter; the backend from `make` must chain.
pub fn engine_run_with_chaining(make: &mut dyn FnMut() -> Box<dyn Backend>) {
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
        b.exit(Exit::Platform {
            op: 1,
            arg: 2,
            len: 3,
        });
        let mut b_blk = b.finish();
        b_blk.guest_len = 4;
        vec![(0x1000, a_blk), (0x1010, b_blk)]
    }
    let mut results = Vec::new();
    for kind in [0, 1] {
        let ram = GuestRam::new(RAM_SIZE).unwrap();
        let fe = TableFrontend {
            blocks: blocks(),
            helpers: helpers(),
        };
        let be: Box<dyn Backend> = if kind == 0 {
            Box::new(Interp::new())
        } else {
            make()
        };
        let mut e = Engine::new(ram, Box::new(TestMmu), Box::new(fe), be);
        e.env.g[PC as usize] = 0x1000;
        e.env.g[1] = 1000;
        let r = e.run();
        assert_eq!(
            r,
            StopReason::Platform {
                op: 1,
                arg: 2,
                len: 3
            }
        );
        let st = e.stats();
        if kind == 1 {
            assert!(st.chains >= 2, "chained {}", st.chains);
            assert!(
                st.lookups < 20,
                "chained blocks bypass the run loop: {} lookups",
                st.lookups
            );
        }
        let mem: Vec<u64> = (0..8)
            .map(|i| e.ram().read_u64(0x2000 + 8 * i).unwrap())
            .collect();
        results.push((e.env.g[1], e.env.g[PC as usize], e.env.icount, mem));
    }
    assert_eq!(results[0], results[1]);
    assert_eq!(
        results[1].2,
        1000 * 3 - 1,
        "the platform instruction has not retired"
    );
}

/// The inline probe uses exactly `env::tlb_index` and the block's MMU mode: a hand-made
/// entry at that index is hit for loads, RMW loads and stores, in every mode, at
/// addresses whose slow path would fault.
pub fn tlb_probe_index_and_mode(be: &mut dyn Backend) {
    use crate::env::{tlb_index, TlbEntry, NB_MMU_MODES, PAGE_MASK};
    let hs = helpers();
    let mut e = engine();
    let mut buf: Box<[u64; 512]> = Box::new([0; 512]);
    for (k, w) in buf.iter_mut().enumerate() {
        *w = 0x2222_0000_0000_0000 | k as u64;
    }
    let addrs = [
        0x40_3008u64,
        0x7fc0_5ff8,
        0xffff_8000_1234_5010,
        (5 << 22) | 0x3ff000 | 0x100,
        0x1_0000_0ff8,
    ];
    for mmu in 0..NB_MMU_MODES as u32 {
        for &a in &addrs {
            let page = a & PAGE_MASK;
            let off = (a & !PAGE_MASK) as usize / 8;
            e.env.tlb_flush();
            e.env.mmu_idx = mmu;
            e.env.tlb_set(
                mmu as usize,
                tlb_index(a),
                TlbEntry {
                    read: page,
                    write: page,
                    exec: crate::env::TLB_INVALID,
                    addend: (buf.as_mut_ptr() as u64).wrapping_sub(page),
                },
            );
            let mut b = Builder::new();
            b.insn_start(0x100);
            let at = b.konst(a);
            let v = b.load(at, MemOp::new(MemSize::B8));
            b.set(1, v);
            let v2 = b.load(
                at,
                MemOp {
                    size: MemSize::B4,
                    signed: true,
                    kind: AccessKind::Normal,
                    rmw: true,
                },
            );
            b.set(2, v2);
            let x = b.add(v, Val::C(1));
            b.store(at, x, MemOp::new(MemSize::B8));
            b.exit(Exit::Jump { pc: 0x200 });
            let mut blk = b.finish();
            blk.mmu_idx = mmu;
            let c = be.compile(&blk, 3, &hs, PC).unwrap();
            let before = buf[off];
            assert_eq!(
                exec(be, &mut e, c),
                ret::encode(3, 0, ret::EXIT),
                "{a:#x} mode {mmu}"
            );
            assert_eq!(e.env.g[1], before, "{a:#x} mode {mmu}");
            assert_eq!(e.env.g[2], before as u32 as i32 as i64 as u64);
            assert_eq!(buf[off], before + 1);
        }
    }
}

/// `Exit::Indirect` probes `Env::jc`: a hit on pc and mode enters the cached block
/// (whose entry still checks the budget), a miss returns to the run loop.
/// `second_way`: the backend also probes the second entry of an index's pair.
pub fn indirect_jump_cache_probe(be: &mut dyn Backend, second_way: bool) {
    use crate::env::{jc_index, JcEntry, JC_BITS};
    let hs = helpers();
    let mut e = engine();
    let mut b = Builder::new();
    b.insn_start(0x100);
    let t = b.get(5);
    b.exit(Exit::Indirect { pc: t });
    let mut a = b.finish();
    a.mode = 0x1234_5678_0000_0003;
    let mut b = Builder::new();
    b.insn_start(0x180);
    b.set(6, Val::C(42));
    b.exit(Exit::Exception {
        vector: 3,
        error_code: None,
    });
    let bb = b.finish();
    let ca = be.compile(&a, 1, &hs, PC).unwrap();
    let cb = be.compile(&bb, 2, &hs, PC).unwrap();
    for pc in [0x180u64, 0xffff_ffff_8000_1234, 0x12_3456_7000] {
        e.env.jc.fill(JcEntry::EMPTY);
        e.env.g[5] = pc;
        e.env.g[6] = 0;
        e.env.icount = 10;
        e.env.icount_limit = u64::MAX;
        assert_eq!(exec(be, &mut e, ca), ret::encode(1, 0, ret::EXIT));
        assert_eq!(
            (e.env.g[PC as usize], e.env.icount, e.env.g[6]),
            (pc, 11, 0)
        );
        let entry = be.entry_addr(cb).unwrap();
        e.env.jc[jc_index(pc)] = JcEntry {
            pc,
            mode: a.mode,
            code: entry,
            epoch: e.env.jc_epoch_for(pc),
        };
        assert_eq!(exec(be, &mut e, ca), ret::encode(2, 0, ret::EXIT));
        assert_eq!(
            (e.env.g[PC as usize], e.env.icount, e.env.g[6]),
            (pc, 12, 42)
        );
        e.env.g[6] = 0;
        e.env.icount_limit = 13;
        assert_eq!(exec(be, &mut e, ca), ret::encode(2, 0, ret::BUDGET));
        assert_eq!((e.env.icount, e.env.g[6]), (13, 0));
        e.env.icount_limit = u64::MAX;
        e.env.jc[jc_index(pc)].mode ^= 1;
        assert_eq!(exec(be, &mut e, ca), ret::encode(1, 0, ret::EXIT));
        e.env.jc[jc_index(pc)] = JcEntry {
            pc: pc ^ 0x1000,
            mode: a.mode,
            code: entry,
            epoch: e.env.jc_epoch_for(pc),
        };
        assert_eq!(exec(be, &mut e, ca), ret::encode(1, 0, ret::EXIT));
        assert_eq!(e.env.g[6], 0);
        // An entry from before a TLB flush (an older epoch) misses; a flush of the other
        // half of the address space leaves it alone.
        e.env.jc[jc_index(pc)] = JcEntry {
            pc,
            mode: a.mode,
            code: entry,
            epoch: e.env.jc_epoch_for(pc),
        };
        e.env.jc_invalidate_half(1 - (pc >> 63) as usize);
        assert_eq!(exec(be, &mut e, ca), ret::encode(2, 0, ret::EXIT));
        assert_eq!(e.env.g[6], 42);
        e.env.g[6] = 0;
        e.env.jc_invalidate_half((pc >> 63) as usize);
        assert_eq!(exec(be, &mut e, ca), ret::encode(1, 0, ret::EXIT));
        assert_eq!(e.env.g[6], 0);
        e.env.jc[jc_index(pc)] = JcEntry {
            pc,
            mode: a.mode,
            code: entry,
            epoch: e.env.jc_epoch_for(pc),
        };
        e.env.jc_invalidate();
        assert_eq!(exec(be, &mut e, ca), ret::encode(1, 0, ret::EXIT));
        assert_eq!(e.env.g[6], 0);
        // Two targets with one index (`Env::jc_insert`): the older one moves to the other
        // entry of the pair, where a backend that probes it (`second_way`) still finds it;
        // every backend finds the newer one.
        let other = pc ^ (1 << (JC_BITS + 3)) ^ (1 << 3);
        assert_eq!(jc_index(other), jc_index(pc));
        e.env.jc.fill(JcEntry::EMPTY);
        for p in [pc, other] {
            e.env.jc_insert(JcEntry {
                pc: p,
                mode: a.mode,
                code: entry,
                epoch: e.env.jc_epoch_for(p),
            });
        }
        assert_eq!(e.env.jc[jc_index(pc) ^ 1].pc, pc);
        for (p, found) in [(other, true), (pc, second_way)] {
            e.env.g[5] = p;
            e.env.g[6] = 0;
            let want = if found { 2 } else { 1 };
            assert_eq!(
                exec(be, &mut e, ca),
                ret::encode(want, 0, ret::EXIT),
                "{p:#x}"
            );
            assert_eq!(e.env.g[6], if found { 42 } else { 0 });
        }
        // A stale entry in the second way (older epoch) misses there too.
        e.env.jc[jc_index(pc) ^ 1].epoch = e.env.jc_epoch_for(pc).wrapping_sub(1);
        e.env.g[5] = pc;
        e.env.g[6] = 0;
        assert_eq!(exec(be, &mut e, ca), ret::encode(1, 0, ret::EXIT));
        // Re-entering the older target takes its first way back; the newer one moves.
        e.env.jc_insert(JcEntry {
            pc,
            mode: a.mode,
            code: entry,
            epoch: e.env.jc_epoch_for(pc),
        });
        assert_eq!(
            (e.env.jc[jc_index(pc)].pc, e.env.jc[jc_index(pc) ^ 1].pc),
            (pc, other)
        );
    }
}
