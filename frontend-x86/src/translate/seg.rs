//! Segment registers and descriptor-table reads: MOV to/from Sreg, LDS/LES/LFS/LGS/LSS,
//! SGDT/SIDT/SLDT/STR/SMSW, LAR/LSL/VERR/VERW, RD/WR FS/GS BASE.

use iced_x86::{Instruction, Mnemonic as M, OpKind};
use jit::ir::{Exit, MemSize, Val};

use super::{seg_of, Flow, Handler, Loc, Tr};
use crate::helpers::H;
use crate::state::*;

pub fn register(r: &mut impl FnMut(M, Handler)) {
    r(M::Lds, |t, i| lxs(t, i, Seg::Ds));
    r(M::Les, |t, i| lxs(t, i, Seg::Es));
    r(M::Lfs, |t, i| lxs(t, i, Seg::Fs));
    r(M::Lgs, |t, i| lxs(t, i, Seg::Gs));
    r(M::Lss, |t, i| lxs(t, i, Seg::Ss));
    r(M::Sgdt, |t, i| sdt(t, i, G_GDTR_BASE, G_GDTR_LIMIT));
    r(M::Sidt, |t, i| sdt(t, i, G_IDTR_BASE, G_IDTR_LIMIT));
    r(M::Sldt, |t, i| store_sel(t, i, G_LDTR_SEL));
    r(M::Str, |t, i| store_sel(t, i, G_TR_SEL));
    r(M::Smsw, |t, i| store_sel(t, i, G_CR0));
    r(M::Lar, |t, i| larlsl(t, i, 0));
    r(M::Lsl, |t, i| larlsl(t, i, 1));
    r(M::Verr, |t, i| verrw(t, i, 0));
    r(M::Verw, |t, i| verrw(t, i, 1));
    r(M::Rdfsbase, |t, i| rwbase(t, i, Seg::Fs, false));
    r(M::Rdgsbase, |t, i| rwbase(t, i, Seg::Gs, false));
    r(M::Wrfsbase, |t, i| rwbase(t, i, Seg::Fs, true));
    r(M::Wrgsbase, |t, i| rwbase(t, i, Seg::Gs, true));
}

/// End the block after a segment load (the mode flags may have changed).
fn sync(tr: &mut Tr) -> Flow {
    let next = tr.next;
    tr.b.exit(Exit::Sync { pc: next });
    Flow::End
}

pub fn mov_to_seg(tr: &mut Tr, insn: &Instruction) -> Flow {
    let s = seg_of(insn.op_register(0));
    if s == Seg::Cs {
        return tr.ud();
    }
    let v = tr.read_op_t(insn, 1, 2);
    tr.b.call_void(H.load_seg, &[Val::C(s as u64), Val::T(v)]);
    sync(tr)
}

pub fn mov_from_seg(tr: &mut Tr, insn: &Instruction) -> Flow {
    let s = seg_of(insn.op_register(1));
    let v = tr.b.get(s.sel_g());
    match insn.op_kind(0) {
        OpKind::Register => {
            // 32/64-bit destinations get the selector zero-extended.
            let r = insn.op_register(0);
            let z = tr.b.ext(v, MemSize::B2, false);
            tr.set_reg(r, z);
        }
        _ => {
            let a = tr.ea(insn);
            let m = tr.mop(insn, 2);
            tr.store(a, v, m);
        }
    }
    Flow::Next
}

fn lxs(tr: &mut Tr, insn: &Instruction, s: Seg) -> Flow {
    let bytes = tr.op_size(insn, 0);
    let a = tr.ea(insn);
    let m = tr.mop(insn, bytes);
    let off = tr.load(a, m);
    let a2 = tr.b.add(a, Val::C(bytes as u64));
    let m2 = tr.mop(insn, 2);
    let sel = tr.load(a2, m2);
    tr.b.call_void(H.load_seg, &[Val::C(s as u64), Val::T(sel)]);
    tr.set_reg(insn.op_register(0), off);
    sync(tr)
}

fn sdt(tr: &mut Tr, insn: &Instruction, base_g: u16, limit_g: u16) -> Flow {
    let a = tr.ea(insn);
    let limit = tr.b.get(limit_g);
    let base = tr.b.get(base_g);
    let m2 = tr.mop(insn, 2);
    let bb = if tr.code64() { 8 } else { 4 };
    let mb = tr.mop(insn, bb);
    let a2 = tr.b.add(a, Val::C(2));
    tr.store(a, limit, m2);
    tr.store(a2, base, mb);
    Flow::Next
}

fn store_sel(tr: &mut Tr, insn: &Instruction, g: u16) -> Flow {
    let v = tr.b.get(g);
    match tr.loc(insn, 0, 2) {
        Loc::Reg(r) => {
            let bytes = r.size() as u32;
            let z = if g == G_CR0 && bytes > 2 {
                tr.b.ext(v, MemSize::B4, false)
            } else {
                tr.b.ext(v, MemSize::B2, false)
            };
            tr.set_reg(r, z);
        }
        l => tr.write_loc(l, v),
    }
    Flow::Next
}

fn larlsl(tr: &mut Tr, insn: &Instruction, which: u64) -> Flow {
    let sel = tr.read_op_t(insn, 1, 2);
    let r = tr.b.call(H.lar_lsl, &[Val::C(which), Val::T(sel)]);
    tr.cc_static = None;
    let skip = tr.b.label();
    tr.b.brcond(jit::ir::Cond::Eq, r, Val::C(0), skip);
    let v = tr.b.and(r, Val::C(0xffff_ffff));
    tr.set_reg(insn.op_register(0), v);
    tr.b.place(skip);
    Flow::Next
}

fn verrw(tr: &mut Tr, insn: &Instruction, which: u64) -> Flow {
    let sel = tr.read_op_t(insn, 0, 2);
    tr.b.call_void(H.verrw, &[Val::C(which), Val::T(sel)]);
    tr.cc_static = None;
    Flow::Next
}

fn rwbase(tr: &mut Tr, insn: &Instruction, s: Seg, write: bool) -> Flow {
    // Only in 64-bit mode with CR4.FSGSBASE (checked at run time).
    if !tr.code64() {
        return tr.ud();
    }
    let cr4v = tr.b.get(G_CR4);
    let ok = tr.b.label();
    tr.b.brcond(jit::ir::Cond::TstNz, cr4v, Val::C(cr4::FSGSBASE), ok);
    tr.b.exit(Exit::Exception {
        vector: 6,
        error_code: None,
    });
    tr.b.place(ok);
    let r = insn.op_register(0);
    if write {
        let v = tr.reg(r);
        if r.size() == 8 {
            // Non-canonical base: #GP(0).
            let sh = tr.b.shl(v, Val::C(16));
            let sx = tr.b.sar(sh, Val::C(16));
            let good = tr.b.label();
            tr.b.brcond(jit::ir::Cond::Eq, sx, Val::T(v), good);
            tr.b.exit(Exit::Exception {
                vector: 13,
                error_code: Some(0),
            });
            tr.b.place(good);
        }
        tr.b.set(s.base_g(), v);
    } else {
        let v = tr.b.get(s.base_g());
        tr.set_reg(r, v);
    }
    Flow::Next
}
