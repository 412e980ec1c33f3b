//! Host-independent IR optimisation, run on every block before a backend sees it:
//!
//! 1. forwarding: a `GetG` of a global whose value is already in a temp (or a constant) on
//!    every path to it becomes that value, and so does a pure operation already computed on
//!    every path (what is known joins at labels: the intersection over the branches to it);
//!    moves and constants propagate into operands; operations on constants fold, and so do
//!    x ^ x and x - x;
//! 2. dead global stores: a `SetG` overwritten by a later `SetG` of the same global, with no
//!    read of it, no possible fault, no exit and no control flow in between, is dropped —
//!    this is what removes the lazy-flags stores of instructions whose flags die;
//! 3. dead code: pure ops whose result is never used are dropped (loads are kept: they can
//!    fault).
//!
//! Contracts kept: every `InsnStart` and `Exit` stays in place and in order; a global's value
//! in `Env` at any op that can fault or leave the block is what the unoptimised block would
//! have stored there.

use crate::backend::eval;
use crate::backend::regalloc::{op_def, op_uses, use_counts};
use crate::ir::{BinOp, Block, Global, GlobalSet, HelperInfo, Inline, Op, Temp, Val};

pub fn optimize(b: &mut Block, helpers: &[HelperInfo]) {
    forward(b, helpers);
    let extensions = narrow(b);
    if narrow_ops(b) || extensions {
        forward(b, helpers);
    }
    dead_setg(b, helpers);
    dce(b);
}

fn bitlen(v: u64) -> u8 {
    (64 - v.leading_zeros()) as u8
}

/// Drop zero/sign extensions that cannot change a value: extensions of values already known
/// to fit, and extensions feeding only the low bits they preserve (32-bit operations,
/// narrow stores, narrower extensions). Returns whether anything changed.
fn narrow(b: &mut Block) -> bool {
    use crate::ir::{BinOp, MemSize, UnOp, Width};
    let n = b.ntemps as usize;
    let mut defs = vec![0u32; n];
    for op in &b.ops {
        if let Some(d) = op_def(op) {
            defs[d.idx()] += 1;
        }
    }
    // An extension with a use that needs more than the bytes it extends (a global, an
    // address, a 64-bit operation, ...) stays live: the other uses keep reading it, and
    // 32-bit uses of its source after it read it instead, so that one of the two values
    // dies early (a `mov r32, r32` whose source and result are both read later would
    // otherwise hold two registers). Without such a use, its uses read the source and
    // the extension dies.
    let wide = wide_extensions(b, &defs);
    // Significant low bits of each single-definition temp (64 = unknown).
    let mut bits = vec![64u8; n];
    // temp = Ext(a, from) that can die: (a, from bytes)
    let mut ext_of: Vec<Option<(Temp, u32)>> = vec![None; n];
    // a -> (Ext(a, from) that stays live, from bytes), since the last label.
    let mut wide_of: Vec<Option<(Temp, u32)>> = vec![None; n];
    let mut wide_set: Vec<Temp> = Vec::new();
    let mut changed = false;
    let low = |ext_of: &[Option<(Temp, u32)>],
               wide_of: &[Option<(Temp, u32)>],
               t: Temp,
               need: u32|
     -> Temp {
        match (ext_of[t.idx()], wide_of.get(t.idx()).copied().flatten()) {
            (Some((a, from)), _) if from >= need => a,
            (_, Some((w, from))) if from >= need => w,
            _ => t,
        }
    };
    for op in b.ops.iter_mut() {
        let single = |d: Temp| defs[d.idx()] == 1;
        if let Op::Label(_) = op {
            for a in wide_set.drain(..) {
                wide_of[a.idx()] = None;
            }
        }
        match op {
            Op::Ext {
                dst,
                a,
                from,
                signed,
            } => {
                let a0 = low(&ext_of, &[], *a, from.bytes());
                if a0 != *a {
                    *a = a0;
                    changed = true;
                }
                let fb = from.bits() as u8;
                let ba = bits[a.idx()];
                if (!*signed && ba <= fb) || (*signed && ba < fb) {
                    let (d, src) = (*dst, *a);
                    *op = Op::Mov { dst: d, src };
                    if single(d) {
                        bits[d.idx()] = ba;
                    }
                    changed = true;
                    continue;
                }
                if single(*dst) {
                    if single(*a) && wide[dst.idx()] {
                        wide_of[a.idx()] = Some((*dst, from.bytes()));
                        wide_set.push(*a);
                    } else if single(*a) {
                        ext_of[dst.idx()] = Some((*a, from.bytes()));
                    }
                    bits[dst.idx()] = if *signed { 64 } else { fb.min(ba) };
                }
            }
            Op::Bin {
                op: bop,
                w,
                dst,
                a,
                b: bv,
            } => {
                if *w == Width::W32 {
                    let a0 = low(&ext_of, &wide_of, *a, 4);
                    if a0 != *a {
                        *a = a0;
                        changed = true;
                    }
                    if let Val::T(t) = bv {
                        let t0 = low(&ext_of, &wide_of, *t, 4);
                        if t0 != *t {
                            *t = t0;
                            changed = true;
                        }
                    }
                }
                if single(*dst) {
                    let bb = match bv {
                        Val::C(c) => bitlen(*c),
                        Val::T(t) => bits[t.idx()],
                    };
                    bits[dst.idx()] = match (*w, *bop) {
                        (Width::W32, BinOp::And) => 32.min(bits[a.idx()]).min(bb),
                        (Width::W32, _) => 32,
                        (Width::W64, BinOp::And) => bits[a.idx()].min(bb),
                        (Width::W64, BinOp::Or | BinOp::Xor) => bits[a.idx()].max(bb),
                        (Width::W64, BinOp::Shr) => match bv {
                            Val::C(c) => bits[a.idx()].saturating_sub((*c & 63) as u8),
                            _ => bits[a.idx()],
                        },
                        _ => 64,
                    };
                }
            }
            Op::Un { op: uop, w, dst, a } => {
                if *w == Width::W32 {
                    let a0 = low(&ext_of, &wide_of, *a, 4);
                    if a0 != *a {
                        *a = a0;
                        changed = true;
                    }
                }
                if single(*dst) {
                    bits[dst.idx()] = match (uop, *w) {
                        (UnOp::Clz | UnOp::Ctz | UnOp::Popcnt, _) => 7,
                        (_, Width::W32) => 32,
                        _ => 64,
                    };
                }
            }
            Op::Store {
                val: Val::T(t),
                mop,
                ..
            } if mop.size.bytes() <= 4 => {
                let t0 = low(&ext_of, &wide_of, *t, mop.size.bytes());
                if t0 != *t {
                    *t = t0;
                    changed = true;
                }
            }
            Op::Const { dst, val } if single(*dst) => bits[dst.idx()] = bitlen(*val),
            Op::Mov { dst, src } if single(*dst) => {
                bits[dst.idx()] = bits[src.idx()];
                ext_of[dst.idx()] = ext_of[src.idx()];
            }
            Op::SetCond { dst, .. } if single(*dst) => bits[dst.idx()] = 1,
            Op::Load { dst, mop, .. } if single(*dst) && !mop.signed && mop.size != MemSize::B8 => {
                bits[dst.idx()] = mop.size.bits() as u8
            }
            Op::Select { dst, t, f, .. } if single(*dst) => {
                let bt = |v: &Val| match v {
                    Val::C(c) => bitlen(*c),
                    Val::T(x) => bits[x.idx()],
                };
                bits[dst.idx()] = bt(t).max(bt(f));
            }
            _ => {}
        }
    }
    changed
}

/// A 64-bit add, sub, mul, and, or, xor or shift left by less than 32 whose result is only
/// zero-extended from its low 32 bits (a 32-bit `lea`'s address arithmetic) becomes the
/// 32-bit operation, which zero-extends its result, and the extension a move (which
/// `forward` then removes). Returns whether anything changed.
fn narrow_ops(b: &mut Block) -> bool {
    use crate::ir::{BinOp, MemSize, Width};
    let n = b.ntemps as usize;
    let mut defs = vec![0u32; n];
    for op in &b.ops {
        if let Some(d) = op_def(op) {
            defs[d.idx()] += 1;
        }
    }
    let uses = use_counts(b);
    // The op defining each single-definition, single-use temp that may narrow.
    let mut def_at = vec![usize::MAX; n];
    let mut changed = false;
    for j in 0..b.ops.len() {
        match b.ops[j] {
            Op::Bin {
                op,
                w: Width::W64,
                dst,
                b: bv,
                ..
            } if defs[dst.idx()] == 1
                && uses[dst.idx()] == 1
                && match op {
                    BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::And | BinOp::Or | BinOp::Xor => {
                        true
                    }
                    BinOp::Shl => matches!(bv, Val::C(c) if c < 32),
                    _ => false,
                } =>
            {
                def_at[dst.idx()] = j
            }
            Op::Ext {
                dst,
                a,
                from: MemSize::B4,
                signed: false,
            } if def_at[a.idx()] != usize::MAX => {
                if let Op::Bin { w, .. } = &mut b.ops[def_at[a.idx()]] {
                    *w = Width::W32;
                }
                b.ops[j] = Op::Mov { dst, src: a };
                changed = true;
            }
            _ => {}
        }
    }
    changed
}

/// For each single-definition extension `Ext(a, from)` of a single-definition temp: whether
/// some use reads more than its low `from` bytes (see `narrow`).
fn wide_extensions(b: &Block, defs: &[u32]) -> Vec<bool> {
    use crate::ir::Width;
    let n = b.ntemps as usize;
    let mut from = vec![0u32; n];
    for op in &b.ops {
        if let Op::Ext { dst, a, from: f, .. } = *op {
            if defs[dst.idx()] == 1 && defs[a.idx()] == 1 {
                from[dst.idx()] = f.bytes();
            }
        }
    }
    let mut wide = vec![false; n];
    for op in &b.ops {
        // Each operand that reads only some low bytes, with how many.
        let mut low: [(Option<Temp>, u32); 2] = [(None, 0); 2];
        match *op {
            Op::Bin {
                w: Width::W32,
                a,
                b: bv,
                ..
            } => {
                low[0] = (Some(a), 4);
                if let Val::T(t) = bv {
                    low[1] = (Some(t), 4);
                }
            }
            Op::Un { w: Width::W32, a, .. } => low[0] = (Some(a), 4),
            Op::Ext { a, from: f, .. } => low[0] = (Some(a), f.bytes()),
            Op::Store {
                val: Val::T(t),
                mop,
                ..
            } if mop.size.bytes() <= 4 => low[1] = (Some(t), mop.size.bytes()),
            _ => {}
        }
        let mut seen = [0u32; 2];
        op_uses(op, |t| {
            let f = from[t.idx()];
            if f == 0 {
                return;
            }
            // Count this use as low once per matching operand slot.
            for (k, &(lt, need)) in low.iter().enumerate() {
                if lt == Some(t) && seen[k] == 0 && need <= f {
                    seen[k] = 1;
                    return;
                }
            }
            wide[t.idx()] = true;
        });
    }
    wide
}

fn forward(b: &mut Block, helpers: &[HelperInfo]) {
    let n = b.ntemps as usize;
    // Only single-definition temps are propagated.
    let mut defs = vec![0u32; n];
    for op in &b.ops {
        if let Some(d) = op_def(op) {
            defs[d.idx()] += 1;
        }
    }
    let mut alias: Vec<Option<Val>> = vec![None; n];
    // Globals whose current value is known: a short list (blocks touch few globals).
    let mut known = Known::default();
    let sub_v = |alias: &[Option<Val>], v: Val| -> Val {
        match v {
            Val::T(t) => alias[t.idx()].unwrap_or(v),
            c => c,
        }
    };
    let sub_t = |alias: &[Option<Val>], t: Temp| -> Temp {
        match alias[t.idx()] {
            Some(Val::T(x)) => x,
            _ => t,
        }
    };
    let konst = |alias: &[Option<Val>], t: Temp| -> Option<u64> {
        match alias[t.idx()] {
            Some(Val::C(c)) => Some(c),
            _ => None,
        }
    };
    // What is known at a label: the intersection of what was known at every forward
    // branch to it and, when the op before it falls through, at that point. A label that
    // a later branch jumps back to knows nothing.
    let nl = b.nlabels as usize;
    let mut placed = vec![false; nl];
    let mut backward = vec![false; nl];
    for op in &b.ops {
        match *op {
            Op::Label(l) => placed[l as usize] = true,
            Op::Br(l) | Op::BrCond { label: l, .. } if placed[l as usize] => {
                backward[l as usize] = true
            }
            _ => {}
        }
    }
    let mut at_label: Vec<Option<(Known, Exprs)>> = vec![None; nl];
    // Pure operations already computed (on single-definition temps) in a temp that is
    // available here: a repeat becomes a move (joined at labels as `known`).
    let mut exprs = Exprs::default();
    // The binary operation that defines each single-definition temp (for `(x - y) + y`).
    let mut bin_def: Vec<Option<(BinOp, crate::ir::Width, Temp, Val)>> = vec![None; n];
    let mut falls_through = true;
    for i in 0..b.ops.len() {
        let mut op = std::mem::replace(&mut b.ops[i], Op::Label(u32::MAX));
        match op {
            Op::Br(l) | Op::BrCond { label: l, .. } => {
                let at = &mut at_label[l as usize];
                *at = Some(match at.take() {
                    None => (known.clone(), exprs.clone()),
                    Some((k, e)) => (k.intersect(&known), e.intersect(&exprs)),
                });
            }
            Op::Label(l) => {
                let from_branches = at_label[l as usize].take();
                (known, exprs) = if backward[l as usize] {
                    Default::default()
                } else {
                    match (falls_through, from_branches) {
                        (true, Some((k, e))) => (known.intersect(&k), exprs.intersect(&e)),
                        (true, None) => (known, exprs),
                        (false, Some(at)) => at,
                        (false, None) => Default::default(),
                    }
                };
            }
            _ => {}
        }
        falls_through = !matches!(op, Op::Br(_) | Op::Exit(_));
        // Substitute operands.
        match &mut op {
            Op::Mov { src, .. } => *src = sub_t(&alias, *src),
            Op::SetG { src, .. } => *src = sub_v(&alias, *src),
            Op::Bin { a, b: bv, .. } => {
                *a = sub_t(&alias, *a);
                *bv = sub_v(&alias, *bv);
            }
            Op::Un { a, .. } | Op::Ext { a, .. } => *a = sub_t(&alias, *a),
            Op::SetCond { a, b: bv, .. } | Op::BrCond { a, b: bv, .. } => {
                *a = sub_t(&alias, *a);
                *bv = sub_v(&alias, *bv);
            }
            Op::Select { a, b: bv, t, f, .. } => {
                *a = sub_t(&alias, *a);
                *bv = sub_v(&alias, *bv);
                *t = sub_v(&alias, *t);
                *f = sub_v(&alias, *f);
            }
            Op::Load { addr, sync, .. } => {
                *addr = sub_t(&alias, *addr);
                sync.0.iter_mut().for_each(|e| e.1 = sub_v(&alias, e.1));
            }
            Op::Store {
                addr, val, sync, ..
            } => {
                *addr = sub_t(&alias, *addr);
                *val = sub_v(&alias, *val);
                sync.0.iter_mut().for_each(|e| e.1 = sub_v(&alias, e.1));
            }
            Op::Call { args, .. } => args.iter_mut().for_each(|a| *a = sub_v(&alias, *a)),
            Op::Exit(crate::ir::Exit::Indirect { pc }) => *pc = sub_t(&alias, *pc),
            _ => {}
        }
        // Fold and record.
        let single = |d: Temp| defs[d.idx()] == 1;
        let new = match op {
            Op::Const { dst, val } => {
                if single(dst) {
                    alias[dst.idx()] = Some(Val::C(val));
                }
                op
            }
            Op::Mov { dst, src } => {
                if single(dst) {
                    alias[dst.idx()] = Some(alias[src.idx()].unwrap_or(Val::T(src)));
                    if defs[src.idx()] != 1 {
                        alias[dst.idx()] = None;
                    }
                }
                op
            }
            Op::GetG { dst, g } => match known.get(g) {
                Some(v) if single(dst) => {
                    alias[dst.idx()] = Some(v);
                    match v {
                        Val::C(c) => Op::Const { dst, val: c },
                        Val::T(t) => Op::Mov { dst, src: t },
                    }
                }
                _ => {
                    if single(dst) {
                        known.set(g, Some(Val::T(dst)));
                    }
                    op
                }
            },
            Op::SetG { g, src } => {
                let v = match src {
                    Val::T(t) if defs[t.idx()] != 1 => None,
                    v => Some(v),
                };
                known.set(g, v);
                op
            }
            // x ^ x and x - x are 0 (the zeroing idiom `xor eax, eax`): the read of x dies.
            Op::Bin {
                op: BinOp::Xor | BinOp::Sub,
                dst,
                a,
                b: Val::T(bt),
                ..
            } if a == bt && single(dst) => {
                alias[dst.idx()] = Some(Val::C(0));
                Op::Const { dst, val: 0 }
            }
            // x op 0 == x for these 64-bit operations (x & !0 too).
            Op::Bin {
                op: bop,
                w: crate::ir::Width::W64,
                dst,
                a,
                b: Val::C(c),
            } if single(dst)
                && defs[a.idx()] == 1
                && ((c == 0
                    && matches!(
                        bop,
                        BinOp::Add
                            | BinOp::Sub
                            | BinOp::Or
                            | BinOp::Xor
                            | BinOp::Shl
                            | BinOp::Shr
                            | BinOp::Sar
                            | BinOp::Rotl
                            | BinOp::Rotr
                    ))
                    || (c == u64::MAX && bop == BinOp::And)
                    || (c == 1 && bop == BinOp::Mul)) =>
            {
                alias[dst.idx()] = Some(alias[a.idx()].unwrap_or(Val::T(a)));
                Op::Mov { dst, src: a }
            }
            Op::Bin {
                op: bop,
                w,
                dst,
                a,
                b: Val::C(c),
            } if konst(&alias, a).is_some() && single(dst) => {
                let v = eval::bin(bop, w, konst(&alias, a).unwrap(), c);
                alias[dst.idx()] = Some(Val::C(v));
                Op::Const { dst, val: v }
            }
            Op::Un { op: uop, w, dst, a } if konst(&alias, a).is_some() && single(dst) => {
                let v = eval::un(uop, w, konst(&alias, a).unwrap());
                alias[dst.idx()] = Some(Val::C(v));
                Op::Const { dst, val: v }
            }
            Op::Ext {
                dst,
                a,
                from,
                signed,
            } if konst(&alias, a).is_some() && single(dst) => {
                let x = konst(&alias, a).unwrap();
                let sh = 64 - from.bits();
                let v = if signed {
                    (((x << sh) as i64) >> sh) as u64
                } else {
                    (x << sh) >> sh
                };
                alias[dst.idx()] = Some(Val::C(v));
                Op::Const { dst, val: v }
            }
            Op::SetCond {
                cond,
                dst,
                a,
                b: Val::C(c),
            } if konst(&alias, a).is_some() && single(dst) => {
                let v = cond.eval(konst(&alias, a).unwrap(), c) as u64;
                alias[dst.idx()] = Some(Val::C(v));
                Op::Const { dst, val: v }
            }
            Op::Select {
                cond,
                dst,
                a,
                b: Val::C(c),
                t,
                f,
            } if konst(&alias, a).is_some() && single(dst) => {
                let v = if cond.eval(konst(&alias, a).unwrap(), c) {
                    t
                } else {
                    f
                };
                match v {
                    Val::C(x) => {
                        alias[dst.idx()] = Some(Val::C(x));
                        Op::Const { dst, val: x }
                    }
                    Val::T(x) => {
                        if defs[x.idx()] == 1 {
                            alias[dst.idx()] = Some(Val::T(x));
                        }
                        Op::Mov { dst, src: x }
                    }
                }
            }
            // (x - y) + y == x: a compare's lazy flags give the first operand back as the
            // result plus the second (`jb`, `jbe`, `jl`, `jle` after `cmp`), in 64 bits or
            // in the low bits an extension keeps.
            Op::Bin {
                op: BinOp::Add,
                w: crate::ir::Width::W64,
                dst,
                a,
                b: y,
            } if single(dst) && undo_sub(&bin_def, &defs, a, y, 64).is_some() => {
                let x = undo_sub(&bin_def, &defs, a, y, 64).unwrap();
                alias[dst.idx()] = Some(Val::T(x));
                Op::Mov { dst, src: x }
            }
            Op::Ext {
                dst,
                a,
                from,
                signed,
            } if single(dst)
                && matches!(bin_def[a.idx()], Some((BinOp::Add, w, s, y))
                    if from.bits() <= width_bits(w)
                        && undo_sub(&bin_def, &defs, s, y, from.bits()).is_some()) =>
            {
                let Some((_, _, s, y)) = bin_def[a.idx()] else {
                    unreachable!()
                };
                let x = undo_sub(&bin_def, &defs, s, y, from.bits()).unwrap();
                Op::Ext {
                    dst,
                    a: x,
                    from,
                    signed,
                }
            }
            Op::Call { helper, .. } => {
                let w = helpers[helper.0 as usize].writes;
                if w == GlobalSet::ALL {
                    known.0.clear();
                } else {
                    known.0.retain(|(g, _)| !w.contains(*g));
                }
                op
            }
            other => other,
        };
        if let Op::Bin { op, w, dst, a, b } = new {
            if single(dst) {
                bin_def[dst.idx()] = Some((op, w, a, b));
            }
        }
        // Memory and helpers may change what a load reads.
        if matches!(new, Op::Store { .. } | Op::Call { .. }) {
            exprs.forget_loads();
        }
        // Common subexpressions.
        let new = match Exprs::key(&new, &defs) {
            Some((key, dst)) => match exprs.0.get(&key) {
                Some(&t) => {
                    alias[dst.idx()] = Some(Val::T(t));
                    Op::Mov { dst, src: t }
                }
                None => {
                    exprs.0.insert(key, dst);
                    new
                }
            },
            None => new,
        };
        b.ops[i] = new;
    }
}

fn width_bits(w: crate::ir::Width) -> u32 {
    match w {
        crate::ir::Width::W32 => 32,
        crate::ir::Width::W64 => 64,
    }
}

/// `x` when `t = x - y` (at least `bits` wide) and `x` and `y` are defined once (so they
/// still hold the values the subtraction read).
fn undo_sub(
    bin_def: &[Option<(BinOp, crate::ir::Width, Temp, Val)>],
    defs: &[u32],
    t: Temp,
    y: Val,
    bits: u32,
) -> Option<Temp> {
    let once = |v: Val| match v {
        Val::T(t) => defs[t.idx()] == 1,
        Val::C(_) => true,
    };
    match bin_def[t.idx()] {
        Some((BinOp::Sub, w, x, y2))
            if y2 == y && bits <= width_bits(w) && once(Val::T(x)) && once(y) =>
        {
            Some(x)
        }
        _ => None,
    }
}

/// `Exprs` key kinds: loads (the others: operators, 0x100 | unary, 0x200 | extension).
const LOAD: u16 = 0x1000;

/// Pure operations (and loads) computed so far, by operation and operands: (kind and operator, width,
/// first operand, second operand).
#[derive(Clone, Default)]
struct Exprs(crate::engine::FxMap<(u16, u8, Temp, Val), Temp>);

impl Exprs {
    /// The key of a pure operation whose result and operand temps are each defined once.
    fn key(op: &Op, defs: &[u32]) -> Option<((u16, u8, Temp, Val), Temp)> {
        let once = |t: Temp| defs[t.idx()] == 1;
        let val_once = |v: Val| match v {
            Val::T(t) => once(t),
            Val::C(_) => true,
        };
        let w = |w: crate::ir::Width| w as u8;
        let (k, dst) = match *op {
            Op::Bin {
                op,
                w: wd,
                dst,
                a,
                b,
            } if val_once(b) => ((op as u16, w(wd), a, b), dst),
            Op::Un { op, w: wd, dst, a } => ((0x100 | op as u16, w(wd), a, Val::C(0)), dst),
            Op::Ext {
                dst,
                a,
                from,
                signed,
            } => ((0x200 | signed as u16, from as u8, a, Val::C(0)), dst),
            // A second load of an address with nothing in between that could write memory
            // reads the same value (guest memory has no side-effecting reads: outside RAM
            // reads as all ones) and cannot fault where the first did not.
            Op::Load {
                dst,
                addr,
                mop,
                ref sync,
            } if sync.0.is_empty() => {
                let kind = match mop.kind {
                    crate::ir::AccessKind::Normal => 0,
                    crate::ir::AccessKind::System => 1,
                    crate::ir::AccessKind::Stack => 2,
                };
                let k = LOAD | mop.signed as u16 | (mop.rmw as u16) << 1 | kind << 2;
                ((k, mop.size as u8, addr, Val::C(0)), dst)
            }
            _ => return None,
        };
        (once(dst) && once(k.2)).then_some((k, dst))
    }
    fn forget_loads(&mut self) {
        self.0.retain(|k, _| k.0 & LOAD == 0);
    }
    /// The entries both have.
    fn intersect(&self, other: &Exprs) -> Exprs {
        Exprs(
            self.0
                .iter()
                .filter(|(k, v)| other.0.get(k) == Some(v))
                .map(|(k, v)| (*k, *v))
                .collect(),
        )
    }
}

/// A small map from globals to known values.
#[derive(Clone, Default)]
struct Known(Vec<(u16, Val)>);

impl Known {
    /// The entries both maps have.
    fn intersect(&self, other: &Known) -> Known {
        Known(
            self.0
                .iter()
                .filter(|e| other.0.contains(e))
                .copied()
                .collect(),
        )
    }
    fn get(&self, g: u16) -> Option<Val> {
        self.0.iter().find(|e| e.0 == g).map(|e| e.1)
    }
    fn set(&mut self, g: u16, v: Option<Val>) {
        self.0.retain(|e| e.0 != g);
        if let Some(v) = v {
            self.0.push((g, v));
        }
    }
}

fn dead_setg(b: &mut Block, helpers: &[HelperInfo]) {
    // Backward scan. `over[g]`: g is written again later before anything but memory
    // accesses can observe it; `since[g]`: how many memory accesses (`mems`, in backward
    // order) were already seen when that later write was, i.e. `mems[since[g]..]` lie
    // between this point and the write. A `SetG` of a global in `over` is dropped; the
    // accesses in between get its value in their sync lists (`ir::SyncList`), stored only
    // if they leave generated code. Temps defined more than once in the block keep their
    // `SetG` (the value must still be in the temp at those accesses).
    let mut defs = vec![0u32; b.ntemps as usize];
    for op in &b.ops {
        if let Some(d) = op_def(op) {
            defs[d.idx()] += 1;
        }
    }
    let mut over = GlobalSet::NONE;
    let mut since = vec![0usize; crate::env::NGLOBALS];
    let mut mems: Vec<usize> = Vec::new();
    let mut remove = vec![false; b.ops.len()];
    let mut sink: Vec<(usize, Global, Val)> = Vec::new();
    // Writes of the SSE status global stay (see `Block::sse_csr`).
    let csr = b.sse_csr;
    for i in (0..b.ops.len()).rev() {
        match &b.ops[i] {
            Op::Exit(_) | Op::Label(_) | Op::Br(_) | Op::BrCond { .. } => {
                over = GlobalSet::NONE;
                mems.clear();
            }
            Op::Load { .. } | Op::Store { .. } => mems.push(i),
            Op::Call { helper, inline, .. } => {
                let h = &helpers[helper.0 as usize];
                // An `Inline::Sse` op cannot fault (every SIMD exception is masked).
                let can_fault = h.can_fault && !matches!(inline, Some(Inline::Sse { .. }));
                if can_fault || h.reads == GlobalSet::ALL {
                    over = GlobalSet::NONE;
                    mems.clear();
                } else {
                    for (o, r) in over.0.iter_mut().zip(h.reads.0) {
                        *o &= !r;
                    }
                }
            }
            Op::GetG { g, .. } => over.0[*g as usize / 64] &= !(1 << (*g % 64)),
            &Op::SetG { g, src } => {
                let single = match src {
                    Val::T(t) => defs[t.idx()] == 1,
                    Val::C(_) => true,
                };
                let between = &mems[since[g as usize].min(mems.len())..];
                if over.contains(g) && (between.is_empty() || single) && csr != Some(g) {
                    remove[i] = true;
                    sink.extend(between.iter().map(|&m| (m, g, src)));
                    // Earlier writes of g are overwritten here, as far as they go.
                    since[g as usize] = mems.len();
                } else {
                    over = over.with(g);
                    since[g as usize] = mems.len();
                }
            }
            _ => {}
        }
    }
    // Accesses list the sunk stores in program order (a later store of one global wins).
    for (m, g, v) in sink.into_iter().rev() {
        if let Op::Load { sync, .. } | Op::Store { sync, .. } = &mut b.ops[m] {
            sync.0.retain(|e| e.0 != g);
            sync.0.push((g, v));
        }
    }
    let mut k = 0;
    b.ops.retain(|_| {
        k += 1;
        !remove[k - 1]
    });
}

fn dce(b: &mut Block) {
    let mut uses = use_counts(b);
    let pure = |op: &Op| {
        matches!(
            op,
            Op::Const { .. }
                | Op::Mov { .. }
                | Op::GetG { .. }
                | Op::Bin { .. }
                | Op::Un { .. }
                | Op::Ext { .. }
                | Op::SetCond { .. }
                | Op::Select { .. }
        )
    };
    // Backwards, so that a chain of dead operations goes in one pass (another pass only
    // for a use that comes before its definition, in a loop).
    let mut dead = vec![false; b.ops.len()];
    loop {
        let mut changed = false;
        for (i, op) in b.ops.iter().enumerate().rev() {
            if !dead[i] && pure(op) && op_def(op).is_some_and(|d| uses[d.idx()] == 0) {
                dead[i] = true;
                changed = true;
                op_uses(op, |t| uses[t.idx()] -= 1);
            }
        }
        if !changed {
            break;
        }
    }
    let mut k = 0;
    b.ops.retain(|_| {
        k += 1;
        !dead[k - 1]
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Builder, Exit, MemSize, Width};

    /// The value the first `SetG` of `g` in `blk` stores.
    fn first_set(blk: &Block, g: u16) -> Val {
        blk.ops
            .iter()
            .find_map(|op| match *op {
                Op::SetG { g: gg, src } if gg == g => Some(src),
                _ => None,
            })
            .unwrap()
    }

    fn count(blk: &Block, f: impl Fn(&Op) -> bool) -> usize {
        blk.ops.iter().filter(|op| f(op)).count()
    }

    /// A global's known value survives a label reached only past an exit (an exception
    /// check), and is forgotten at one where the paths disagree or that a later branch
    /// jumps back to.
    #[test]
    fn known_globals_join_at_labels() {
        use crate::ir::Cond;
        let mut b = Builder::new();
        b.insn_start(0x100);
        let x = b.get(1);
        let ok = b.label();
        b.brcond(Cond::Ne, x, Val::C(0), ok);
        b.exit(Exit::Exception {
            vector: 0,
            error_code: None,
        });
        b.place(ok);
        let y = b.get(1); // x on the only path here
        b.set(2, y);
        let skip = b.label();
        b.brcond(Cond::Eq, x, Val::C(5), skip);
        b.set(1, Val::C(7));
        b.place(skip);
        let z = b.get(1); // x or 7: unknown
        b.set(3, z);
        let back = b.label();
        b.place(back);
        let w = b.get(2); // a backward branch target: unknown
        b.set(4, w);
        b.brcond(Cond::Eq, w, Val::C(1), back);
        b.exit(Exit::Jump { pc: 0x200 });
        let mut blk = b.finish();
        optimize(&mut blk, &[]);
        let set = |g: u16| first_set(&blk, g);
        assert_eq!(set(2), Val::T(x), "{:?}", blk.ops);
        assert_ne!(set(3), Val::T(x), "{:?}", blk.ops);
        assert_ne!(set(3), Val::C(7), "{:?}", blk.ops);
        assert_eq!(set(4), Val::T(w), "{:?}", blk.ops);
        let gets = count(&blk, |op| matches!(op, Op::GetG { .. }));
        assert_eq!(gets, 3, "x, z and w read their globals: {:?}", blk.ops);
    }

    /// A repeated pure operation reuses the first result where that one is computed on
    /// every path (past an exception check), and not after a join where one path skipped
    /// it.
    #[test]
    fn common_subexpressions_are_computed_once() {
        use crate::ir::Cond;
        let mut b = Builder::new();
        b.insn_start(0x100);
        let x = b.get(1);
        let a1 = b.bin(BinOp::Shl, Width::W64, x, Val::C(2));
        let ok = b.label();
        b.brcond(Cond::Ne, a1, Val::C(0), ok);
        b.exit(Exit::Exception {
            vector: 0,
            error_code: None,
        });
        b.place(ok);
        let a2 = b.bin(BinOp::Shl, Width::W64, x, Val::C(2)); // a1
        b.set(2, a2);
        let skip = b.label();
        b.brcond(Cond::Eq, x, Val::C(5), skip);
        let m1 = b.bin(BinOp::Mul, Width::W64, x, Val::C(3));
        b.set(3, m1);
        b.place(skip);
        let m2 = b.bin(BinOp::Mul, Width::W64, x, Val::C(3)); // not m1: skipped on a path
        b.set(4, m2);
        b.exit(Exit::Jump { pc: 0x200 });
        let mut blk = b.finish();
        optimize(&mut blk, &[]);
        let set = |g: u16| first_set(&blk, g);
        assert_eq!(set(2), Val::T(a1), "{:?}", blk.ops);
        assert_eq!(set(4), Val::T(m2), "{:?}", blk.ops);
        let shl = count(&blk, |op| matches!(op, Op::Bin { op: BinOp::Shl, .. }));
        assert_eq!(shl, 1, "{:?}", blk.ops);
    }

    /// A load repeated with nothing in between that could write memory reuses the first
    /// value; after a store or a helper call it loads again.
    #[test]
    fn repeated_loads_are_done_once_between_writes() {
        use crate::ir::{MemOp, MemSize};
        let mop = MemOp::new(MemSize::B4);
        let mut b = Builder::new();
        b.insn_start(0x100);
        let a = b.get(1);
        let l1 = b.load(a, mop);
        b.set(2, l1);
        let l2 = b.load(a, mop); // l1
        b.set(3, l2);
        let l3 = b.load(a, MemOp::signed(MemSize::B4)); // another access: stays
        b.set(4, l3);
        b.store(a, Val::C(1), mop);
        let l4 = b.load(a, mop); // after a store: stays
        b.set(5, l4);
        b.exit(Exit::Jump { pc: 0x200 });
        let mut blk = b.finish();
        optimize(&mut blk, &[]);
        let set = |g: u16| first_set(&blk, g);
        assert_eq!(set(3), Val::T(l1), "{:?}", blk.ops);
        assert_eq!((set(4), set(5)), (Val::T(l3), Val::T(l4)), "{:?}", blk.ops);
        let loads = count(&blk, |op| matches!(op, Op::Load { .. }));
        assert_eq!(loads, 3, "{:?}", blk.ops);
    }

    #[test]
    fn xor_and_sub_of_a_temp_with_itself_fold_to_zero() {
        let mut b = Builder::new();
        b.insn_start(0x100);
        let x = b.get(1);
        let z = b.bin(BinOp::Xor, Width::W32, x, x);
        b.set(2, z);
        let y = b.get(3);
        let d = b.bin(BinOp::Sub, Width::W64, y, y);
        b.set(4, d);
        let e = b.bin(BinOp::Xor, Width::W64, x, y);
        b.set(5, e);
        b.exit(Exit::Jump { pc: 0x200 });
        let mut blk = b.finish();
        optimize(&mut blk, &[]);
        let sets: Vec<Val> = blk
            .ops
            .iter()
            .filter_map(|op| match *op {
                Op::SetG { src, .. } => Some(src),
                _ => None,
            })
            .collect();
        assert_eq!(sets[0], Val::C(0));
        assert_eq!(sets[1], Val::C(0));
        assert!(matches!(sets[2], Val::T(_)), "x ^ y stays: {:?}", blk.ops);
    }

    /// `mov r10d, r11d` whose result is also a register (a full-width use): 32-bit uses of
    /// the source after it read the extension, so the source dies there; an extension
    /// read only by 32-bit operations dies instead; a use after a label keeps the source
    /// (the extension need not have run on every path to it).
    #[test]
    fn zero_extensions_and_their_sources_are_not_both_kept_live() {
        let mut b = Builder::new();
        b.insn_start(0x100);
        let x = b.get(11);
        let ex = b.ext(x, MemSize::B4, false);
        b.set(10, ex);
        let y = b.get(9);
        let ey = b.ext(y, MemSize::B4, false);
        let r1 = b.bin(BinOp::Rotr, Width::W32, x, Val::C(6));
        b.set(1, r1);
        let r2 = b.bin(BinOp::Or, Width::W32, ey, Val::C(1));
        b.set(2, r2);
        let l = b.label();
        let c = b.get(3);
        b.brcond(crate::ir::Cond::Eq, c, Val::C(0), l);
        b.place(l);
        let r3 = b.bin(BinOp::Add, Width::W32, x, Val::C(1));
        b.set(4, r3);
        b.exit(Exit::Jump { pc: 0x200 });
        let mut blk = b.finish();
        optimize(&mut blk, &[]);
        let ops = &blk.ops;
        let reads = |t: Temp| {
            ops.iter()
                .filter(|op| {
                    let mut n = false;
                    op_uses(op, |u| n |= u == t);
                    n
                })
                .count()
        };
        let rot = ops.iter().find(|op| matches!(op, Op::Bin { op: BinOp::Rotr, .. }));
        assert!(matches!(rot, Some(&Op::Bin { a, .. }) if a == ex), "{ops:?}");
        let or = ops.iter().find(|op| matches!(op, Op::Bin { op: BinOp::Or, .. }));
        assert!(matches!(or, Some(&Op::Bin { a, .. }) if a == y), "{ops:?}");
        assert_eq!(reads(ey), 0, "{ops:?}");
        let add = ops.iter().find(|op| matches!(op, Op::Bin { op: BinOp::Add, .. }));
        assert!(matches!(add, Some(&Op::Bin { a, .. }) if a == x), "{ops:?}");
    }

    /// `lea r8d, [rdx + 1]`: the 64-bit add only zero-extended becomes a 32-bit add; not
    /// a shift by 32 or more, nor an add whose 64-bit result is also read.
    #[test]
    fn operations_only_zero_extended_from_32_bits_are_done_in_32_bits() {
        let mut b = Builder::new();
        b.insn_start(0x100);
        let x = b.get(2);
        let a = b.add(x, Val::C(1));
        let e = b.ext(a, MemSize::B4, false);
        b.set(8, e);
        let s = b.shl(x, Val::C(40));
        let es = b.ext(s, MemSize::B4, false);
        b.set(9, es);
        let a2 = b.add(x, Val::C(2));
        let e2 = b.ext(a2, MemSize::B4, false);
        b.set(10, e2);
        b.set(11, a2);
        b.exit(Exit::Jump { pc: 0x200 });
        let mut blk = b.finish();
        optimize(&mut blk, &[]);
        let ops = &blk.ops;
        let bin = |c: u64| {
            ops.iter().find_map(|op| match *op {
                Op::Bin { w, dst, b: Val::C(k), .. } if k == c => Some((w, dst)),
                _ => None,
            })
        };
        let (w, d) = bin(1).unwrap();
        assert_eq!(w, Width::W32, "{ops:?}");
        assert_eq!(first_set(&blk, 8), Val::T(d), "{ops:?}");
        assert_eq!(bin(40).unwrap().0, Width::W64, "{ops:?}");
        assert_eq!(bin(2).unwrap().0, Width::W64, "{ops:?}");
        assert_eq!(count(&blk, |op| matches!(op, Op::Ext { .. })), 2, "{ops:?}");
    }

    /// `(x - y) + y` is `x` in 64 bits, and in the low bits an extension of it keeps after a
    /// 32-bit subtraction; not when `y` is a temp written again in between.
    #[test]
    fn a_compare_result_plus_its_operand_is_the_first_operand() {
        let mut b = Builder::new();
        b.insn_start(0x100);
        let x = b.get(1);
        let y = b.get(2);
        let d = b.bin(BinOp::Sub, Width::W64, x, Val::T(y));
        let a = b.bin(BinOp::Add, Width::W64, d, Val::T(y));
        b.set(3, a); // x
        let d32 = b.bin(BinOp::Sub, Width::W32, x, Val::C(18));
        let a32 = b.bin(BinOp::Add, Width::W64, d32, Val::C(18));
        let e = b.ext(a32, MemSize::B4, false);
        b.set(4, e); // Ext(x, B4)
        let e8 = b.ext(a32, MemSize::B8, false);
        b.set(5, e8); // not x: the high half differs
        let v = b.get(6);
        let w = b.bin(BinOp::Sub, Width::W64, x, Val::T(v));
        b.push(Op::Const { dst: v, val: 3 }); // v written again: (x - v) + v is not x
        let q = b.bin(BinOp::Add, Width::W64, w, Val::T(v));
        b.set(7, q);
        b.exit(Exit::Jump { pc: 0x200 });
        let mut blk = b.finish();
        optimize(&mut blk, &[]);
        let x = first_set(&blk, 3);
        assert!(
            matches!(x, Val::T(t) if matches!(blk.ops[..], [_, Op::GetG { dst, g: 1 }, ..] if dst == t)),
            "{:?}",
            blk.ops
        );
        let def = |v: Val| {
            blk.ops
                .iter()
                .find(|op| matches!((v, op_def(op)), (Val::T(t), Some(d)) if t == d))
                .cloned()
        };
        assert!(
            matches!(def(first_set(&blk, 4)), Some(Op::Ext { a, from: MemSize::B4, .. }) if Val::T(a) == x),
            "{:?}",
            blk.ops
        );
        assert_ne!(first_set(&blk, 5), x, "{:?}", blk.ops);
        assert!(
            matches!(
                def(first_set(&blk, 7)),
                Some(Op::Bin { op: BinOp::Add, .. })
            ),
            "{:?}",
            blk.ops
        );
    }

    /// A global overwritten later with only memory accesses in between loses its `SetG`;
    /// each access in between owes its value (sync list), the last value wins per access,
    /// and a value in a temp defined twice keeps its store.
    #[test]
    fn stores_overwritten_across_accesses_sink_into_their_sync_lists() {
        use crate::ir::{AccessKind, MemOp, MemSize, SyncList};
        let mop = MemOp {
            size: MemSize::B8,
            signed: false,
            kind: AccessKind::Normal,
            rmw: false,
        };
        let mut b = Builder::new();
        b.insn_start(0x100);
        let a = b.get(1);
        let x = b.bin(BinOp::Add, Width::W64, a, Val::C(8));
        b.set(2, x); // dropped: overwritten below
        b.set(3, Val::C(7)); // dropped
        b.insn_start(0x104);
        let l1 = b.load(a, mop);
        b.set(3, Val::C(9)); // dropped
        b.insn_start(0x108);
        b.store(x, l1, mop);
        b.set(2, l1);
        b.set(3, l1);
        // A temp defined twice: its store stays (its value may change before the access).
        let t = b.temp();
        b.push(Op::Const { dst: t, val: 1 });
        b.push(Op::Const { dst: t, val: 2 });
        b.set(4, t);
        let l2 = b.load(a, mop);
        b.set(4, l2);
        b.exit(Exit::Jump { pc: 0x200 });
        let mut blk = b.finish();
        optimize(&mut blk, &[]);
        let syncs: Vec<&SyncList> = blk
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Load { sync, .. } | Op::Store { sync, .. } => Some(sync),
                _ => None,
            })
            .collect();
        assert_eq!(
            syncs[0].0,
            [(2, Val::T(x)), (3, Val::C(7))],
            "{:?}",
            blk.ops
        );
        assert_eq!(
            syncs[1].0,
            [(2, Val::T(x)), (3, Val::C(9))],
            "{:?}",
            blk.ops
        );
        assert!(syncs[2].0.is_empty(), "{:?}", blk.ops);
        let sets: Vec<(u16, Val)> = blk
            .ops
            .iter()
            .filter_map(|op| match *op {
                Op::SetG { g, src } => Some((g, src)),
                _ => None,
            })
            .collect();
        assert_eq!(
            sets,
            [
                (2, Val::T(l1)),
                (3, Val::T(l1)),
                (4, Val::T(t)),
                (4, Val::T(l2))
            ],
            "{:?}",
            blk.ops
        );
    }
}
