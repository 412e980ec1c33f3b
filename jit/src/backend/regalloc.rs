//! Host-independent register allocation for the native backends.
//!
//! A backend describes its temp registers with a [`RegPool`] and calls [`regalloc`] once per
//! block; the result ([`Alloc`]) gives every temp one [`Loc`] for the whole block, the number
//! of spill slots used, and for every op the caller-saved pool registers that must be
//! preserved around a call made by that op (a helper call or a softmmu slow path).
//!
//! # Scheme
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
//! Registers are picked in the order they appear in [`RegPool::callee_saved`] and
//! [`RegPool::caller_saved`]. Scratch registers a backend needs within one op (and the
//! register holding `Env*`, the stack pointer, etc.) must not be in either pool.
//!
//! [`op_def`] and [`op_uses`] are the def/use view of an [`Op`] shared with the optimiser
//! ([`crate::opt`]).

use crate::ir::{Block, Exit, MemSize, Op, Temp, Val};

/// The host registers the allocator may hand to temps. Register numbers are the backend's
/// own encoding (e.g. x86 `rbx` = 3, aarch64 `x19` = 19) and must be below 64.
#[derive(Clone, Copy, Debug)]
pub struct RegPool {
    /// Registers preserved by calls, in order of preference.
    pub callee_saved: &'static [u8],
    /// Registers clobbered by calls, in order of preference (at most 32). A backend saves
    /// the live ones around every call (see [`Alloc::caller_live`]).
    pub caller_saved: &'static [u8],
    /// Byte offset (from the backend's frame base register, e.g. `rsp`/`sp`) of spill slot
    /// 0. Spill slot `k` is the 8 bytes at `spill_base + 8*k`.
    pub spill_base: i32,
}

/// Where a temp lives for the whole block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loc {
    /// A register from the pool.
    R(u8),
    /// Byte offset from the frame base register (`spill_base + 8*slot`).
    S(i32),
}

/// The result of [`regalloc`].
#[derive(Clone, Debug)]
pub struct Alloc {
    /// Indexed by [`Temp::idx`]; covers every temp the block mentions (temps that are never
    /// used or defined get a meaningless `Loc::S(0)`).
    pub loc: Vec<Loc>,
    /// Number of 8-byte spill slots used (slots `0..nspill`); the backend's frame must
    /// hold `spill_base + 8*nspill` bytes.
    pub nspill: usize,
    /// For each op: bit k set when `caller_saved[k]` holds a temp live across the op (used
    /// before and after it), i.e. must be saved around a call made by the op.
    pub caller_live: Vec<u32>,
}

/// The temp an op defines, if any.
pub(crate) fn op_def(op: &Op) -> Option<Temp> {
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

/// How many ops define each temp (saturating).
fn def_counts(block: &Block) -> Vec<u8> {
    let mut defs = vec![0u8; block.ntemps as usize];
    for op in &block.ops {
        if let Some(t) = op_def(op) {
            let d = &mut defs[t.idx()];
            *d = d.saturating_add(1);
        }
    }
    defs
}

/// How many times each temp is read (operands, sync lists, exits).
pub(crate) fn use_counts(block: &Block) -> Vec<u32> {
    let mut n = vec![0u32; block.ntemps as usize];
    for op in &block.ops {
        op_uses(op, |t| n[t.idx()] += 1);
    }
    n
}

/// The value of each temp that is defined exactly once, by a `Const` (it holds that value
/// wherever it is read).
fn single_consts(block: &Block) -> Vec<Option<u64>> {
    let defs = def_counts(block);
    let mut konst = vec![None; block.ntemps as usize];
    for op in &block.ops {
        if let Op::Const { dst, val } = *op {
            konst[dst.idx()] = Some(val);
        }
    }
    for (k, d) in konst.iter_mut().zip(&defs) {
        if *d != 1 {
            *k = None;
        }
    }
    konst
}

/// For each `Exit::Indirect` of `block` (in order), its target when the target temp is
/// defined exactly once, by a `Const`: a jump to a known pc on another page, which a
/// backend may chain with a jump-cache epoch check (`Backend::chain_far`).
pub fn far_targets(block: &Block) -> Vec<Option<u64>> {
    let konst = single_consts(block);
    block
        .ops
        .iter()
        .filter_map(|op| match *op {
            Op::Exit(Exit::Indirect { pc }) => Some(konst[pc.idx()]),
            _ => None,
        })
        .collect()
}

/// For each op of `block`: the address of a `Load`/`Store` whose address temp is defined
/// exactly once, by a `Const` (a guest global variable: a backend can select its TLB
/// entry when compiling instead of hashing the address at run time); None otherwise.
pub fn const_addrs(block: &Block) -> Vec<Option<u64>> {
    let konst = single_consts(block);
    block
        .ops
        .iter()
        .map(|op| match *op {
            Op::Load { addr, .. } | Op::Store { addr, .. } => konst[addr.idx()],
            _ => None,
        })
        .collect()
}

/// For each op of `block`: true when it and the next op are two 8-byte accesses of one
/// 16-byte operand (an SSE load or store): both `Load`s or both `Store`s with the same
/// `MemOp` (not a system access), the first at temp `x`, the second at `x + 8` (a
/// single-definition temp made by `Add x, 8`, possibly then zero-extended from 32 bits).
/// When both bytes ranges lie in one page the pair can be done with one TLB lookup; a
/// backend that does so must fall back to the two accesses, in order, otherwise.
pub fn access_pairs(block: &Block) -> Vec<bool> {
    let defs = def_counts(block);
    // plus8[t] = Some(x): t = x + 8 (or its zero-extension from 32 bits).
    let mut plus8: Vec<Option<Temp>> = vec![None; block.ntemps as usize];
    for op in &block.ops {
        match *op {
            Op::Bin {
                op: crate::ir::BinOp::Add,
                w: crate::ir::Width::W64,
                dst,
                a,
                b: Val::C(8),
            } => plus8[dst.idx()] = Some(a),
            Op::Ext {
                dst,
                a,
                from: MemSize::B4,
                signed: false,
            } => plus8[dst.idx()] = plus8[a.idx()].filter(|_| defs[a.idx()] == 1),
            _ => {}
        }
    }
    let single = |t: Temp| defs[t.idx()] == 1;
    let mut out = vec![false; block.ops.len()];
    for i in 0..block.ops.len().saturating_sub(1) {
        let (x, y, m1, m2) = match (&block.ops[i], &block.ops[i + 1]) {
            (
                Op::Load {
                    addr: x,
                    mop: m1,
                    dst: d1,
                    ..
                },
                Op::Load {
                    addr: y, mop: m2, ..
                },
            ) if *d1 != *x && *d1 != *y => (*x, *y, *m1, *m2),
            (
                Op::Store {
                    addr: x, mop: m1, ..
                },
                Op::Store {
                    addr: y, mop: m2, ..
                },
            ) => (*x, *y, *m1, *m2),
            _ => continue,
        };
        out[i] = m1 == m2
            && m1.size == MemSize::B8
            && m1.kind != crate::ir::AccessKind::System
            && !out.get(i.wrapping_sub(1)).copied().unwrap_or(false)
            && single(x)
            && single(y)
            && plus8[y.idx()] == Some(x);
    }
    out
}

/// A memory op's part in an access group (`access_groups`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupRole {
    None,
    /// The group's first access: the group's bytes are `[addr + lo, addr + hi]` (`addr`
    /// this op's address); `write` when any access of the group stores (or is a
    /// read-modify-write load).
    Leader {
        lo: i32,
        hi: i32,
        write: bool,
    },
    /// A later access of the group.
    Member,
}

/// The longest span of bytes a group may cover (so it usually fits one page).
const GROUP_SPAN: i64 = 256;

/// Access groups: runs of two or more guest memory accesses (not system accesses, nor ones
/// `skip` marks) at constant offsets from one temp, within `GROUP_SPAN` bytes, with no
/// label, branch, exit or helper call in between but side exits: a push/pop sequence, the
/// fields of one structure. When all of a group's bytes lie in the page of one TLB hit, a backend may
/// give every access of the group that page's translation after the leader's single
/// lookup; otherwise each access must take its own path as it would ungrouped. A
/// translation stays correct until the block ends: nothing inside a block changes a
/// mapping (page-table writes and flushes leave the block), and a page that takes direct
/// stores holds no translated code while any block runs.
pub fn access_groups(block: &Block, skip: &[bool]) -> Vec<GroupRole> {
    let defs = def_counts(block);
    let single = |t: Temp| defs[t.idx()] == 1;
    // base[t] = (root, offset): t = root + offset through adds and subtracts of constants
    // and moves, all of single-definition temps.
    let mut base: Vec<Option<(Temp, i64)>> = vec![None; block.ntemps as usize];
    let root = |base: &[Option<(Temp, i64)>], t: Temp| base[t.idx()].unwrap_or((t, 0));
    for op in &block.ops {
        match *op {
            Op::Bin {
                op: bop @ (crate::ir::BinOp::Add | crate::ir::BinOp::Sub),
                w: crate::ir::Width::W64,
                dst,
                a,
                b: Val::C(c),
            } if single(dst) && single(a) && (c as i64).unsigned_abs() < 1 << 20 => {
                let (r, o) = root(&base, a);
                let c = if bop == crate::ir::BinOp::Add {
                    c as i64
                } else {
                    -(c as i64)
                };
                base[dst.idx()] = Some((r, o + c)).filter(|&(_, o)| o.unsigned_abs() < 1 << 20);
            }
            Op::Mov { dst, src } if single(dst) && single(src) => {
                base[dst.idx()] = Some(root(&base, src));
            }
            _ => {}
        }
    }
    let mut out = vec![GroupRole::None; block.ops.len()];
    // The open group: root, members (op, offset), lowest offset, end of the highest
    // access, whether any writes.
    struct Open {
        root: Temp,
        members: Vec<(usize, i64)>,
        lo: i64,
        end: i64,
        write: bool,
    }
    let close = |open: &mut Option<Open>, out: &mut Vec<GroupRole>| {
        if let Some(g) = open.take() {
            if g.members.len() >= 2 {
                let (first, off) = g.members[0];
                out[first] = GroupRole::Leader {
                    lo: (g.lo - off) as i32,
                    hi: (g.end - 1 - off) as i32,
                    write: g.write,
                };
                for &(m, _) in &g.members[1..] {
                    out[m] = GroupRole::Member;
                }
            }
        }
    };
    // A side exit leaves the block or goes on along the one path: a group continues
    // across it.
    let refs = label_refs(block);
    let mut open: Option<Open> = None;
    let mut skip_to = 0;
    for (i, op) in block.ops.iter().enumerate() {
        if i < skip_to {
            continue;
        }
        let (addr, mop, store) = match *op {
            Op::Load { addr, mop, .. } => (addr, mop, false),
            Op::Store { addr, mop, .. } => (addr, mop, true),
            Op::BrCond { .. } if side_exit(block, i, &refs).is_some() => {
                skip_to = i + 3;
                continue;
            }
            Op::Label(_) | Op::Br(_) | Op::BrCond { .. } | Op::Exit(_) | Op::Call { .. } => {
                close(&mut open, &mut out);
                continue;
            }
            _ => continue,
        };
        if skip[i] || mop.kind == crate::ir::AccessKind::System || !single(addr) {
            close(&mut open, &mut out);
            continue;
        }
        let (r, off) = root(&base, addr);
        let end = off + mop.size.bytes() as i64;
        let write = store || mop.rmw;
        match open.as_mut() {
            Some(g) if g.root == r && end.max(g.end) - off.min(g.lo) <= GROUP_SPAN => {
                g.members.push((i, off));
                g.lo = g.lo.min(off);
                g.end = g.end.max(end);
                g.write |= write;
            }
            _ => {
                close(&mut open, &mut out);
                open = Some(Open {
                    root: r,
                    members: vec![(i, off)],
                    lo: off,
                    end,
                    write,
                });
            }
        }
    }
    close(&mut open, &mut out);
    out
}

/// How many branches go to each label.
pub fn label_refs(block: &Block) -> Vec<u32> {
    let mut n = vec![0u32; block.nlabels as usize];
    for op in &block.ops {
        if let Op::Br(l) | Op::BrCond { label: l, .. } = *op {
            n[l as usize] += 1;
        }
    }
    n
}

/// The exit of a side exit at `ops[i]`: a conditional branch over an exit to a label
/// nothing else branches to (`if !c goto l; exit; l:`, the shape of a Jcc's taken path
/// and of an exception check).
pub fn side_exit(block: &Block, i: usize, label_refs: &[u32]) -> Option<Exit> {
    match (&block.ops[i], block.ops.get(i + 1), block.ops.get(i + 2)) {
        (&Op::BrCond { label, .. }, Some(&Op::Exit(e)), Some(&Op::Label(l)))
            if l == label && label_refs[l as usize] == 1 =>
        {
            Some(e)
        }
        _ => None,
    }
}

/// Calls `f` for every temp an op reads, in operand order (a temp read twice is reported
/// twice).
pub(crate) fn op_uses(op: &Op, mut f: impl FnMut(Temp)) {
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
        Op::Load { addr, ref sync, .. } => {
            v(Val::T(addr));
            sync.0.iter().for_each(|&(_, x)| v(x));
        }
        Op::Store {
            addr,
            val,
            ref sync,
            ..
        } => {
            v(Val::T(addr));
            v(val);
            sync.0.iter().for_each(|&(_, x)| v(x));
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

/// Allocates every temp of `block` to a register of `pool` or a spill slot.
pub fn regalloc(block: &Block, pool: &RegPool) -> Alloc {
    assert!(
        pool.caller_saved.len() <= 32,
        "regalloc: at most 32 caller-saved registers"
    );
    assert!(
        pool.callee_saved
            .iter()
            .chain(pool.caller_saved)
            .all(|&r| r < 64),
        "regalloc: register numbers must be below 64"
    );
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
        let (u, d) = (
            &mut use_b[b * w..(b + 1) * w],
            &mut def_b[b * w..(b + 1) * w],
        );
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
    let mut free: u64 = 0;
    for r in pool.callee_saved.iter().chain(pool.caller_saved) {
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
        let pick = |regs: &[u8], free: u64| regs.iter().copied().find(|&r| free & (1 << r) != 0);
        let reg = if crosses_call {
            pick(pool.callee_saved, free).or_else(|| pick(pool.caller_saved, free))
        } else {
            pick(pool.caller_saved, free).or_else(|| pick(pool.callee_saved, free))
        };
        match reg {
            Some(r) => {
                free &= !(1 << r);
                loc[t] = Loc::R(r);
                active.push((end[t], t, r));
            }
            None => {
                let (k, &(e, victim, r)) = active
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, a)| a.0)
                    .expect("no active interval");
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
        loc[t] = Loc::S(pool.spill_base + 8 * sl as i32);
    }

    let mut caller_live = vec![0u32; nops];
    for &t in &order {
        if let Loc::R(r) = loc[t] {
            if let Some(k) = pool.caller_saved.iter().position(|&c| c == r) {
                if let Some((lo, hi)) = span(start[t], end[t]) {
                    for m in &mut caller_live[lo..=hi.min(nops.saturating_sub(1))] {
                        *m |= 1 << k;
                    }
                }
            }
        }
    }
    Alloc {
        loc,
        nspill,
        caller_live,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Builder, MemOp, MemSize};

    /// Accesses at constant offsets from one temp form a group across a side exit; a label,
    /// another base or a span over `GROUP_SPAN` bytes starts a new one, and a lone access
    /// is in none.
    #[test]
    fn access_groups_by_base_offset_and_span() {
        use crate::ir::{BinOp, Cond, Exit, Width};
        let mut b = Builder::new();
        b.insn_start(0x100);
        let sp = b.get(4);
        let m = MemOp::new(MemSize::B8);
        let a1 = b.bin(BinOp::Sub, Width::W64, sp, Val::C(8));
        b.store(a1, Val::C(1), m); // 0: leader, bytes -8..-1 from sp
        let a2 = b.bin(BinOp::Sub, Width::W64, a1, Val::C(8));
        b.store(a2, Val::C(2), m); // member
        let l = b.label();
        b.brcond(Cond::Eq, sp, Val::C(0), l);
        b.exit(Exit::Jump { pc: 0x200 });
        b.place(l);
        let x = b.load(sp, m); // member, across the side exit
        let other = b.get(5);
        let y = b.load(other, m); // another base: a lone access
        let a3 = b.bin(BinOp::Add, Width::W64, sp, Val::C(0x1000));
        let z = b.load(a3, m); // a new group (sp again, far away)...
        let a4 = b.bin(BinOp::Add, Width::W64, a3, Val::C(16));
        let w = b.load(a4, m); // ...with this one
        let l2 = b.label();
        b.place(l2);
        let v = b.load(a4, m); // after a label: alone
        for t in [x, y, z, w, v] {
            b.set(6, t);
        }
        b.exit(Exit::Jump { pc: 0x300 });
        let blk = b.finish();
        let roles: Vec<GroupRole> = access_groups(&blk, &vec![false; blk.ops.len()])
            .into_iter()
            .zip(&blk.ops)
            .filter(|(_, op)| matches!(op, Op::Load { .. } | Op::Store { .. }))
            .map(|(r, _)| r)
            .collect();
        use GroupRole::*;
        assert_eq!(
            roles,
            [
                Leader {
                    lo: -8,
                    hi: 15,
                    write: true
                },
                Member,
                Member,
                None,
                Leader {
                    lo: 0,
                    hi: 23,
                    write: false
                },
                Member,
                None
            ]
        );
    }

    #[test]
    fn const_addrs_only_for_single_const_definitions() {
        let mut b = Builder::new();
        b.insn_start(0x100);
        let k = b.konst(0x1234);
        let v = b.load(k, MemOp::new(MemSize::B8));
        let g = b.get(1);
        b.store(g, v, MemOp::new(MemSize::B4));
        // A temp defined twice (a Const, then a Mov into it) is not a constant.
        let t = b.konst(0x2000);
        b.block.ops.push(Op::Mov { dst: t, src: g });
        b.store(t, v, MemOp::new(MemSize::B1));
        b.store(k, v, MemOp::new(MemSize::B2));
        b.exit(Exit::Indirect { pc: k });
        let blk = b.finish();
        let mems: Vec<Option<u64>> = blk
            .ops
            .iter()
            .zip(const_addrs(&blk))
            .filter(|(op, _)| matches!(op, Op::Load { .. } | Op::Store { .. }))
            .map(|(_, c)| c)
            .collect();
        assert_eq!(mems, [Some(0x1234), None, None, Some(0x1234)]);
        assert_eq!(far_targets(&blk), [Some(0x1234)]);
    }
}
