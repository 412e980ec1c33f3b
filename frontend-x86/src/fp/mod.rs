//! Floating point and SIMD: x87, MMX, SSE..SSE4.2 and the state save/restore
//! instructions. Arithmetic goes through [`soft`], a soft-float with x86 semantics, so
//! results are bit-identical on every host.
//!
//! Register moves, logic and loads/stores are translated inline (see
//! `translate::fp`); every other MMX/SSE instruction is one entry of [`table`]: a pure
//! function over 128-bit values ([`simd`]) called through the `sse` helper, which fetches
//! the operands from the state globals (a memory source is first loaded by the generated
//! code into `G_FPTMP`, so faults stay precise), writes the result back, merges MXCSR
//! flags and raises #XM for unmasked SIMD floating-point exceptions.

pub mod simd;
pub mod soft;
pub mod ssefp;
pub mod state;
pub mod x87;

use iced_x86::Mnemonic as M;
use jit::Env;

use crate::state::*;
use simd::{Cx, OpFn, V};

/// How an instruction's operands map onto the op function and its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// op0: XMM/MM destination (and first source); op1: XMM/MM register or memory (or an
    /// imm8 shift count); optional imm8.
    Rm,
    /// As `Rm`, but only flags are produced (PTEST, COMISS...): returns RFLAGS bits.
    Flags,
    /// op0: GPR; op1: XMM/MM register or memory; returns the GPR value.
    ToGpr,
    /// op0: XMM/MM; op1: GPR or memory (the value is the source's low quadword).
    FromGpr,
    /// op0: GPR or memory; op1: XMM register; imm8 (PEXTR*, EXTRACTPS).
    Extract,
    /// PCMPxSTRI: ECX and flags (returns flags).
    StrI,
    /// PCMPxSTRM: XMM0 and flags (returns flags).
    StrM,
}

pub struct Entry {
    pub m: M,
    pub f: OpFn,
    pub shape: Shape,
}

macro_rules! entries {
    ($($m:ident => $f:path, $shape:ident;)*) => {
        vec![$(Entry { m: M::$m, f: $f, shape: Shape::$shape },)*]
    };
}

/// The helper-implemented MMX/SSE instructions. An entry's index is its op number.
pub fn table() -> &'static [Entry] {
    use simd::*;
    static T: std::sync::OnceLock<Vec<Entry>> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        entries! {
            Paddb => paddb, Rm; Paddw => paddw, Rm; Paddd => paddd, Rm; Paddq => paddq, Rm;
            Psubb => psubb, Rm; Psubw => psubw, Rm; Psubd => psubd, Rm; Psubq => psubq, Rm;
            Paddsb => paddsb, Rm; Paddsw => paddsw, Rm; Paddusb => paddusb, Rm; Paddusw => paddusw, Rm;
            Psubsb => psubsb, Rm; Psubsw => psubsw, Rm; Psubusb => psubusb, Rm; Psubusw => psubusw, Rm;
            Pmullw => pmullw, Rm; Pmulhw => pmulhw, Rm; Pmulhuw => pmulhuw, Rm; Pmulld => pmulld, Rm;
            Pmulhrsw => pmulhrsw, Rm; Pmuludq => pmuludq, Rm; Pmuldq => pmuldq, Rm;
            Pmaddwd => pmaddwd, Rm; Pmaddubsw => pmaddubsw, Rm; Psadbw => psadbw, Rm;
            Pavgb => pavgb, Rm; Pavgw => pavgw, Rm;
            Pminub => pminub, Rm; Pmaxub => pmaxub, Rm; Pminsb => pminsb, Rm; Pmaxsb => pmaxsb, Rm;
            Pminuw => pminuw, Rm; Pmaxuw => pmaxuw, Rm; Pminsw => pminsw, Rm; Pmaxsw => pmaxsw, Rm;
            Pminud => pminud, Rm; Pmaxud => pmaxud, Rm; Pminsd => pminsd, Rm; Pmaxsd => pmaxsd, Rm;
            Pcmpeqb => pcmpeqb, Rm; Pcmpeqw => pcmpeqw, Rm; Pcmpeqd => pcmpeqd, Rm; Pcmpeqq => pcmpeqq, Rm;
            Pcmpgtb => pcmpgtb, Rm; Pcmpgtw => pcmpgtw, Rm; Pcmpgtd => pcmpgtd, Rm; Pcmpgtq => pcmpgtq, Rm;
            Psignb => psignb, Rm; Psignw => psignw, Rm; Psignd => psignd, Rm;
            Pabsb => pabsb, Rm; Pabsw => pabsw, Rm; Pabsd => pabsd, Rm;
            Psllw => psllw, Rm; Pslld => pslld, Rm; Psllq => psllq, Rm;
            Psrlw => psrlw, Rm; Psrld => psrld, Rm; Psrlq => psrlq, Rm;
            Psraw => psraw, Rm; Psrad => psrad, Rm; Pslldq => pslldq, Rm; Psrldq => psrldq, Rm;
            Packsswb => packsswb, Rm; Packuswb => packuswb, Rm; Packssdw => packssdw, Rm; Packusdw => packusdw, Rm;
            Punpcklbw => punpcklbw, Rm; Punpcklwd => punpcklwd, Rm; Punpckldq => punpckldq, Rm; Punpcklqdq => punpcklqdq, Rm;
            Punpckhbw => punpckhbw, Rm; Punpckhwd => punpckhwd, Rm; Punpckhdq => punpckhdq, Rm; Punpckhqdq => punpckhqdq, Rm;
            Unpcklps => punpckldq, Rm; Unpckhps => punpckhdq, Rm; Unpcklpd => punpcklqdq, Rm; Unpckhpd => punpckhqdq, Rm;
            Pshufd => pshufd, Rm; Pshuflw => pshuflw, Rm; Pshufhw => pshufhw, Rm; Pshufw => pshufw, Rm;
            Shufps => shufps, Rm; Shufpd => shufpd, Rm; Pshufb => pshufb, Rm; Palignr => palignr, Rm;
            Phaddw => phaddw, Rm; Phaddd => phaddd, Rm; Phaddsw => phaddsw, Rm;
            Phsubw => phsubw, Rm; Phsubd => phsubd, Rm; Phsubsw => phsubsw, Rm;
            Pblendw => pblendw, Rm; Blendps => blendps, Rm; Blendpd => blendpd, Rm;
            Pblendvb => pblendvb, Rm; Blendvps => blendvps, Rm; Blendvpd => blendvpd, Rm;
            Pmovsxbw => pmovsxbw, Rm; Pmovsxbd => pmovsxbd, Rm; Pmovsxbq => pmovsxbq, Rm;
            Pmovsxwd => pmovsxwd, Rm; Pmovsxwq => pmovsxwq, Rm; Pmovsxdq => pmovsxdq, Rm;
            Pmovzxbw => pmovzxbw, Rm; Pmovzxbd => pmovzxbd, Rm; Pmovzxbq => pmovzxbq, Rm;
            Pmovzxwd => pmovzxwd, Rm; Pmovzxwq => pmovzxwq, Rm; Pmovzxdq => pmovzxdq, Rm;
            Insertps => insertps, Rm; Phminposuw => phminposuw, Rm; Mpsadbw => mpsadbw, Rm;
            Movddup => movddup, Rm; Movshdup => movshdup, Rm; Movsldup => movsldup, Rm;
            Pinsrb => pinsrb, FromGpr; Pinsrw => pinsrw, FromGpr; Pinsrd => pinsrd, FromGpr; Pinsrq => pinsrq, FromGpr;
            Pextrb => pextrb, Extract; Pextrw => pextrw, Extract; Pextrd => pextrd, Extract; Pextrq => pextrq, Extract;
            Extractps => pextrd, Extract;
            Pmovmskb => pmovmskb, ToGpr; Movmskps => movmskps, ToGpr; Movmskpd => movmskpd, ToGpr;
            Ptest => ptest, Flags;
            Pcmpistri => pcmpistri, StrI; Pcmpestri => pcmpestri, StrI;
            Pcmpistrm => pcmpistrm, StrM; Pcmpestrm => pcmpestrm, StrM;
            Crc32 => crc32, ToGpr;
        }
        .into_iter()
        .chain(fp_entries())
        .collect()
    })
}

fn fp_entries() -> Vec<Entry> {
    use ssefp::*;
    entries! {
            Addps => addps, Rm; Addss => addss, Rm; Addpd => addpd, Rm; Addsd => addsd, Rm;
            Subps => subps, Rm; Subss => subss, Rm; Subpd => subpd, Rm; Subsd => subsd, Rm;
            Mulps => mulps, Rm; Mulss => mulss, Rm; Mulpd => mulpd, Rm; Mulsd => mulsd, Rm;
            Divps => divps, Rm; Divss => divss, Rm; Divpd => divpd, Rm; Divsd => divsd, Rm;
            Minps => minps, Rm; Minss => minss, Rm; Minpd => minpd, Rm; Minsd => minsd, Rm;
            Maxps => maxps, Rm; Maxss => maxss, Rm; Maxpd => maxpd, Rm; Maxsd => maxsd, Rm;
            Sqrtps => sqrtps, Rm; Sqrtss => sqrtss, Rm; Sqrtpd => sqrtpd, Rm; Sqrtsd => sqrtsd, Rm;
            Rcpps => rcpps, Rm; Rcpss => rcpss, Rm; Rsqrtps => rsqrtps, Rm; Rsqrtss => rsqrtss, Rm;
            Cmpps => cmpps, Rm; Cmpss => cmpss, Rm; Cmppd => cmppd, Rm; Cmpsd => cmpsd, Rm;
            Comiss => comiss, Flags; Ucomiss => ucomiss, Flags; Comisd => comisd, Flags; Ucomisd => ucomisd, Flags;
            Cvtps2pd => cvtps2pd, Rm; Cvtpd2ps => cvtpd2ps, Rm; Cvtss2sd => cvtss2sd, Rm; Cvtsd2ss => cvtsd2ss, Rm;
            Cvtdq2ps => cvtdq2ps, Rm; Cvtps2dq => cvtps2dq, Rm; Cvttps2dq => cvttps2dq, Rm;
            Cvtdq2pd => cvtdq2pd, Rm; Cvtpd2dq => cvtpd2dq, Rm; Cvttpd2dq => cvttpd2dq, Rm;
            Cvtpi2ps => cvtpi2ps, Rm; Cvtps2pi => cvtps2pi, Rm; Cvttps2pi => cvttps2pi, Rm;
            Cvtpi2pd => cvtdq2pd, Rm; Cvtpd2pi => cvtpd2pi, Rm; Cvttpd2pi => cvttpd2pi, Rm;
            Cvtsi2ss => cvtsi2ss, FromGpr; Cvtsi2sd => cvtsi2sd, FromGpr;
            Cvtss2si => cvtss2si, ToGpr; Cvttss2si => cvttss2si, ToGpr; Cvtsd2si => cvtsd2si, ToGpr; Cvttsd2si => cvttsd2si, ToGpr;
            Haddps => haddps, Rm; Hsubps => hsubps, Rm; Haddpd => haddpd, Rm; Hsubpd => hsubpd, Rm;
            Addsubps => addsubps, Rm; Addsubpd => addsubpd, Rm;
            Roundps => roundps, Rm; Roundss => roundss, Rm; Roundpd => roundpd, Rm; Roundsd => roundsd, Rm;
            Dpps => dpps, Rm; Dppd => dppd, Rm;
    }
}

/// Op number of a mnemonic in [`table`].
pub fn op_of(m: M) -> Option<usize> {
    static IDX: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();
    let idx = IDX.get_or_init(|| {
        let mut v = vec![u16::MAX; iced_x86::Mnemonic::values().count()];
        for (i, e) in table().iter().enumerate() {
            assert_eq!(
                v[e.m as usize],
                u16::MAX,
                "{:?} twice in the SIMD table",
                e.m
            );
            v[e.m as usize] = i as u16;
        }
        v
    });
    let i = idx[m as usize];
    (i != u16::MAX).then_some(i as usize)
}

/// `sse` helper argument bits (with the op number in the low 16 bits).
pub mod arg {
    pub const DST_MMX: u64 = 1 << 16;
    pub const SRC_MMX: u64 = 1 << 17;
    pub const WIDE: u64 = 1 << 18;
}

/// MXCSR exception mask bits start here (IM at bit 7).
const MXCSR_MASK_SHIFT: u32 = 7;

fn read_v(e: &Env, g: u64, mmx: bool) -> V {
    let g = g as usize;
    if mmx {
        [e.g[g], 0]
    } else {
        [e.g[g], e.g[g + 1]]
    }
}

/// Any MMX instruction: TOP = 0, all registers valid.
pub fn mmx_transition(e: &mut Env) {
    e.g[G_FSW as usize] &= !0x3800;
    e.g[G_FTW as usize] = 0xff;
}

/// The `sse` helper: a0 = op | `arg` bits, a1 = destination global, a2 = source global,
/// a3 = imm8. Returns the op's value (GPR result or flags).
pub unsafe extern "C" fn helper_sse(env: *mut Env, a0: u64, dst: u64, src: u64, imm: u64) -> u64 {
    // SAFETY: helper contract.
    let e = unsafe { crate::helpers::env_mut(env) };
    let ent = &table()[(a0 & 0xffff) as usize];
    let (dmmx, smmx) = (a0 & arg::DST_MMX != 0, a0 & arg::SRC_MMX != 0);
    let mxcsr = e.g[G_MXCSR as usize] as u32;
    let mut cx = Cx {
        n: if dmmx && ent.shape != Shape::ToGpr
            || smmx && matches!(ent.shape, Shape::ToGpr | Shape::Extract)
        {
            8
        } else {
            16
        },
        fp: soft::Ctx::sse(mxcsr),
        fast: mxcsr & 0xffc0 == 0x1f80 && mxcsr & 0x20 != 0,
        xmm0: read_v(e, xmm_g(0) as u64, false),
        out_xmm0: None,
        rax: e.g[0],
        rdx: e.g[2],
        wide: a0 & arg::WIDE != 0,
        out_flags: None,
        masks: (mxcsr >> MXCSR_MASK_SHIFT) as u8 & 0x3f,
        staged: false,
    };
    let mut d = if matches!(ent.shape, Shape::ToGpr | Shape::Extract) {
        [0, 0]
    } else {
        read_v(e, dst, dmmx)
    };
    let s = read_v(e, src, smmx);
    let r = (ent.f)(&mut cx, &mut d, s, imm as u8);
    // The x87-to-MMX transition happens even when the instruction then raises #XM.
    if dmmx || smmx {
        mmx_transition(e);
    }
    let raised = cx.fp.flags as u32;
    if raised != 0 {
        // SDM Vol. 1 §11.5.2 (and §4.9.2): pre-computation exceptions (IE, DE, ZE) of
        // all lanes are detected first; when one of them is unmasked, only those flags
        // are set and the computation (so OE, UE, PE) does not happen. Otherwise the
        // flags of all lanes are set. Any unmasked one: #XM, the destination unchanged.
        let masks = mxcsr >> MXCSR_MASK_SHIFT;
        let pre = raised & (soft::exc::IE | soft::exc::DE | soft::exc::ZE) as u32;
        let flags = if pre & !masks != 0 && !cx.staged {
            pre
        } else {
            raised
        };
        e.g[G_MXCSR as usize] |= flags as u64;
        if flags & !masks & 0x3f != 0 {
            let v = if e.g[G_CR4 as usize] & cr4::OSXMMEXCPT != 0 {
                19
            } else {
                6
            };
            e.raise(v, None, 0);
            return 0;
        }
    }
    match ent.shape {
        Shape::Rm | Shape::FromGpr => {
            let g = dst as usize;
            e.g[g] = d[0];
            if dmmx {
                e.g[g + 1] = 0xffff;
            } else {
                e.g[g + 1] = d[1];
            }
            r
        }
        Shape::ToGpr | Shape::Extract => r,
        Shape::Flags | Shape::StrM | Shape::StrI => {
            if let Some(x) = cx.out_xmm0 {
                let g = xmm_g(0) as usize;
                e.g[g] = x[0];
                e.g[g + 1] = x[1];
            }
            if ent.shape == Shape::StrI {
                e.g[1] = r;
            }
            cx.out_flags.unwrap_or(0)
        }
    }
}

/// MASKMOVQ/MASKMOVDQU: a0 = data register global, a1 = mask register global, a2 = width
/// in bytes, a3 = linear destination. Bytes whose mask byte has bit 7 set are stored; the
/// writable check covers every selected byte before any is written.
pub unsafe extern "C" fn helper_maskmov(env: *mut Env, dg: u64, mg: u64, n: u64, addr: u64) -> u64 {
    // SAFETY: helper contract.
    let e = unsafe { crate::helpers::env_mut(env) };
    let (data, mask) = (
        simd::bytes(read_v(e, dg, false)),
        simd::bytes(read_v(e, mg, false)),
    );
    let sel: Vec<usize> = (0..n as usize).filter(|&i| mask[i] & 0x80 != 0).collect();
    for &i in &sel {
        // SAFETY: helper context.
        let (core, e) = unsafe { (jit::engine::core_of(env), &mut *env) };
        if let Err(f) = core.load_for(
            e,
            addr.wrapping_add(i as u64),
            1,
            jit::ir::AccessKind::Normal,
            jit::engine::Access::Write,
        ) {
            e.raise(f.vector, f.error_code, f.addr);
            return 0;
        }
    }
    for &i in &sel {
        // SAFETY: helper context.
        if unsafe {
            crate::helpers::store(
                env,
                addr.wrapping_add(i as u64),
                1,
                data[i] as u64,
                jit::ir::AccessKind::Normal,
            )
        }
        .is_err()
        {
            return 0;
        }
    }
    0
}
