//! The IR interpreter: runs on every host, defines the IR's semantics, and is the oracle the
//! JIT backends are checked against (`--engine interp`).

use super::{eval, Backend, CodeBufferFull, CodeHandle};
use crate::engine::{mem_info, ret, slow_load, slow_store};
use crate::env::{tlb_index, Env, PAGE_MASK};
use crate::ir::{AccessKind, Block, Exit, Global, HelperInfo, Op, Val};

struct Prepared {
    ops: Vec<Op>,
    /// Op index of each label.
    labels: Vec<usize>,
    /// For each op: index of the instruction it belongs to.
    insn_of: Vec<u32>,
    /// For each op that is an exit: its static exit index.
    exit_of: Vec<u32>,
    ntemps: usize,
    tb: u32,
    pc_global: usize,
    helpers: Vec<HelperInfo>,
}

pub struct Interp {
    blocks: Vec<Prepared>,
    temps: Vec<u64>,
}

impl Interp {
    pub fn new() -> Interp {
        Interp {
            blocks: Vec::new(),
            temps: Vec::new(),
        }
    }
}

impl Default for Interp {
    fn default() -> Self {
        Self::new()
    }
}

#[inline]
fn val(t: &[u64], v: Val) -> u64 {
    match v {
        Val::T(x) => t[x.idx()],
        Val::C(c) => c,
    }
}

/// The global stores a memory access owes `Env` before its slow path (`ir::SyncList`).
fn sync_globals(env: &mut Env, t: &[u64], sync: &crate::ir::SyncList) {
    for &(g, v) in &sync.0 {
        env.g[g as usize] = val(t, v);
    }
}

/// The inline TLB probe shared by loads and stores: the host address, or None for the slow
/// path. The tag is compared against the page of the *last* byte while the index comes from
/// the first, so an access that crosses a page never hits.
#[inline]
fn tlb_probe(env: &Env, addr: u64, size: u64, write: bool) -> Option<*mut u8> {
    let e = &env.tlb[env.mmu_idx as usize][tlb_index(addr)];
    let tag = if write { e.write } else { e.read };
    (tag == addr.wrapping_add(size - 1) & PAGE_MASK).then(|| addr.wrapping_add(e.addend) as *mut u8)
}

impl Backend for Interp {
    fn name(&self) -> &'static str {
        "interp"
    }

    fn compile(
        &mut self,
        block: &Block,
        tb: u32,
        helpers: &[HelperInfo],
        pc_global: Global,
    ) -> Result<CodeHandle, CodeBufferFull> {
        let mut labels = vec![usize::MAX; block.nlabels as usize];
        let mut insn_of = Vec::with_capacity(block.ops.len());
        let mut exit_of = Vec::with_capacity(block.ops.len());
        let mut insn: i64 = -1;
        let mut nexit = 0;
        for (i, op) in block.ops.iter().enumerate() {
            match op {
                Op::InsnStart { .. } => insn += 1,
                Op::Label(l) => labels[*l as usize] = i,
                _ => {}
            }
            insn_of.push(insn.max(0) as u32);
            exit_of.push(nexit);
            if let Op::Exit(_) = op {
                nexit += 1;
            }
        }
        self.blocks.push(Prepared {
            ops: block.ops.clone(),
            labels,
            insn_of,
            exit_of,
            ntemps: block.ntemps as usize,
            tb,
            pc_global: pc_global as usize,
            helpers: helpers.to_vec(),
        });
        Ok(CodeHandle(self.blocks.len() - 1))
    }

    unsafe fn execute(&mut self, envp: *mut Env, code: CodeHandle) -> u64 {
        let b = &self.blocks[code.0];
        // SAFETY: the engine passes a valid, exclusively owned Env (see Backend::execute).
        let env = unsafe { &mut *envp };
        if env.icount >= env.icount_limit {
            return ret::encode(b.tb, 0, ret::BUDGET);
        }
        env.cur_tb = b.tb;
        if self.temps.len() < b.ntemps {
            self.temps.resize(b.ntemps, 0);
        }
        let t = &mut self.temps[..];
        let mut ip = 0usize;
        loop {
            let op = &b.ops[ip];
            ip += 1;
            match *op {
                Op::InsnStart { .. } | Op::Label(_) => {}
                Op::Const { dst, val } => t[dst.idx()] = val,
                Op::Mov { dst, src } => t[dst.idx()] = t[src.idx()],
                Op::GetG { dst, g } => t[dst.idx()] = env.g[g as usize],
                Op::SetG { g, src } => env.g[g as usize] = val(t, src),
                Op::Bin {
                    op,
                    w,
                    dst,
                    a,
                    b: bv,
                } => t[dst.idx()] = eval::bin(op, w, t[a.idx()], val(t, bv)),
                Op::Un { op, w, dst, a } => t[dst.idx()] = eval::un(op, w, t[a.idx()]),
                Op::Ext {
                    dst,
                    a,
                    from,
                    signed,
                } => {
                    let v = t[a.idx()];
                    let sh = 64 - from.bits();
                    t[dst.idx()] = if signed {
                        (((v << sh) as i64) >> sh) as u64
                    } else {
                        (v << sh) >> sh
                    };
                }
                Op::SetCond {
                    cond,
                    dst,
                    a,
                    b: bv,
                } => t[dst.idx()] = cond.eval(t[a.idx()], val(t, bv)) as u64,
                Op::Select {
                    cond,
                    dst,
                    a,
                    b: bv,
                    t: tv,
                    f,
                } => {
                    t[dst.idx()] = if cond.eval(t[a.idx()], val(t, bv)) {
                        val(t, tv)
                    } else {
                        val(t, f)
                    }
                }
                Op::Load {
                    dst,
                    addr,
                    mop,
                    ref sync,
                } => {
                    let a = t[addr.idx()];
                    let size = mop.size.bytes() as u64;
                    let hit = if mop.kind == AccessKind::System {
                        None
                    } else {
                        tlb_probe(env, a, size, mop.rmw)
                    };
                    t[dst.idx()] = match hit {
                        Some(p) => {
                            // SAFETY: TLB entries only map pages wholly inside guest RAM and
                            // the probe guarantees the access does not cross the page.
                            let raw = unsafe {
                                match size {
                                    1 => *p as u64,
                                    2 => (p as *const u16).read_unaligned() as u64,
                                    4 => (p as *const u32).read_unaligned() as u64,
                                    _ => (p as *const u64).read_unaligned(),
                                }
                            };
                            if mop.signed {
                                let sh = 64 - 8 * size;
                                (((raw << sh) as i64) >> sh) as u64
                            } else {
                                raw
                            }
                        }
                        None => {
                            sync_globals(env, t, sync);
                            // SAFETY: env is valid and rt points at the core (execute contract).
                            let rmw = if mop.rmw {
                                crate::engine::MEM_INFO_RMW
                            } else {
                                0
                            };
                            let v = unsafe {
                                slow_load(envp, a, mem_info(mop.size, mop.signed, mop.kind) | rmw)
                            };
                            if env.fault != 0 {
                                return ret::encode(b.tb, b.insn_of[ip - 1], ret::FAULT);
                            }
                            v
                        }
                    };
                }
                Op::Store {
                    addr,
                    val: v,
                    mop,
                    ref sync,
                } => {
                    let a = t[addr.idx()];
                    let v = val(t, v);
                    let size = mop.size.bytes() as u64;
                    let hit = if mop.kind == AccessKind::System {
                        None
                    } else {
                        tlb_probe(env, a, size, true)
                    };
                    match hit {
                        // SAFETY: as for loads; write tags exist only for RAM pages without code.
                        Some(p) => unsafe {
                            match size {
                                1 => *p = v as u8,
                                2 => (p as *mut u16).write_unaligned(v as u16),
                                4 => (p as *mut u32).write_unaligned(v as u32),
                                _ => (p as *mut u64).write_unaligned(v),
                            }
                        },
                        None => {
                            sync_globals(env, t, sync);
                            // SAFETY: as for slow_load.
                            unsafe { slow_store(envp, a, v, mem_info(mop.size, false, mop.kind)) };
                            if env.fault != 0 {
                                return ret::encode(b.tb, b.insn_of[ip - 1], ret::FAULT);
                            }
                        }
                    }
                }
                Op::Call {
                    helper,
                    ref args,
                    dst,
                    inline: _,
                } => {
                    let h = &b.helpers[helper.0 as usize];
                    let mut a = [0u64; 4];
                    for (i, v) in args.iter().enumerate() {
                        a[i] = val(t, *v);
                    }
                    // SAFETY: helpers are `unsafe extern "C"` functions registered by the
                    // frontend for exactly this calling convention.
                    let r = unsafe { (h.func)(envp, a[0], a[1], a[2], a[3]) };
                    if let Some(d) = dst {
                        t[d.idx()] = r;
                    }
                    if h.can_fault && env.fault != 0 {
                        return ret::encode(b.tb, b.insn_of[ip - 1], ret::FAULT);
                    }
                }
                Op::Br(l) => ip = b.labels[l as usize],
                Op::BrCond {
                    cond,
                    a,
                    b: bv,
                    label,
                } => {
                    if cond.eval(t[a.idx()], val(t, bv)) {
                        ip = b.labels[label as usize];
                    }
                }
                Op::Exit(e) => {
                    let idx = b.exit_of[ip - 1];
                    let n = b.insn_of[ip - 1] as u64 + 1;
                    match e {
                        Exit::Jump { pc } => {
                            env.g[b.pc_global] = pc;
                            env.icount += n;
                        }
                        Exit::Repeat { pc } => {
                            env.g[b.pc_global] = pc;
                            env.icount += n - 1;
                        }
                        Exit::Indirect { pc } => {
                            env.g[b.pc_global] = t[pc.idx()];
                            env.icount += n;
                        }
                        _ => {}
                    }
                    return ret::encode(b.tb, idx, ret::EXIT);
                }
            }
        }
    }

    fn chain(&mut self, _from: CodeHandle, _exit: u32, _to: CodeHandle) -> bool {
        false
    }

    fn unchain(&mut self, _from: CodeHandle, _exit: u32) {}

    fn flush(&mut self) {
        self.blocks.clear();
    }

    fn is_full(&self) -> bool {
        self.blocks.len() >= 1 << 20
    }
}
