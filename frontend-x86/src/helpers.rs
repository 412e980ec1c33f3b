//! Helpers called from translated code: the parts of x86 that are rare, long or need guest
//! memory through the MMU. One table; `H` names each entry's index.

use jit::engine::core_of;
use jit::ir::{AccessKind, GlobalSet, HelperId, HelperInfo};
use jit::Env;

use crate::flags;
use crate::state::*;

/// Helper ids, in table order.
pub struct HelperIds {
    pub flags: HelperId,
    pub div: HelperId,
    pub rotate: HelperId,
    pub shiftd: HelperId,
    pub load_seg: HelperId,
    pub lar_lsl: HelperId,
    pub verrw: HelperId,
    pub popf: HelperId,
    pub far_jump: HelperId,
    pub pdep_pext: HelperId,
    pub rep_fast: HelperId,
    pub sse: HelperId,
    pub fxstate: HelperId,
    pub maskmov: HelperId,
    pub x87: HelperId,
    pub fenv: HelperId,
    pub clock: HelperId,
}

pub const H: HelperIds = HelperIds {
    flags: HelperId(0),
    div: HelperId(1),
    rotate: HelperId(2),
    shiftd: HelperId(3),
    load_seg: HelperId(4),
    lar_lsl: HelperId(5),
    verrw: HelperId(6),
    popf: HelperId(7),
    far_jump: HelperId(8),
    pdep_pext: HelperId(9),
    rep_fast: HelperId(10),
    sse: HelperId(11),
    fxstate: HelperId(12),
    maskmov: HelperId(13),
    x87: HelperId(14),
    fenv: HelperId(15),
    clock: HelperId(16),
};

const CC: GlobalSet = GlobalSet::NONE
    .with(G_CC_OP)
    .with(G_CC_DST)
    .with(G_CC_SRC)
    .with(G_CC_SRC2)
    .with(G_RFLAGS);

/// Every global but MXCSR: what the helpers that have nothing to do with SSE declare
/// instead of "all", so that generated code need not make MXCSR's flags current for them
/// (the x64 backend keeps them in the host's MXCSR: `jit::ir::Block::sse_csr`). Such a
/// helper must not do host floating-point arithmetic either.
const NOT_MXCSR: GlobalSet = GlobalSet::ALL.without(G_MXCSR);

pub fn table() -> Vec<HelperInfo> {
    let gprs = {
        let mut s = GlobalSet::NONE;
        for i in 0..16 {
            s = s.with(G_GPR0 + i);
        }
        s
    };
    vec![
        HelperInfo {
            name: "flags",
            func: flags::helper_flags,
            reads: CC,
            writes: GlobalSet::NONE,
            can_fault: false,
        },
        HelperInfo {
            name: "div",
            func: helper_div,
            reads: gprs,
            writes: gprs,
            can_fault: true,
        },
        HelperInfo {
            name: "rotate",
            func: helper_rotate,
            reads: CC,
            writes: CC,
            can_fault: false,
        },
        HelperInfo {
            name: "shiftd",
            func: helper_shiftd,
            reads: CC,
            writes: CC,
            can_fault: false,
        },
        HelperInfo {
            name: "load_seg",
            func: crate::desc::helper_load_seg,
            reads: NOT_MXCSR,
            writes: NOT_MXCSR,
            can_fault: true,
        },
        HelperInfo {
            name: "lar_lsl",
            func: crate::desc::helper_lar_lsl,
            reads: NOT_MXCSR,
            writes: CC,
            can_fault: true,
        },
        HelperInfo {
            name: "verrw",
            func: crate::desc::helper_verrw,
            reads: NOT_MXCSR,
            writes: CC,
            can_fault: true,
        },
        HelperInfo {
            name: "popf",
            func: helper_popf,
            reads: NOT_MXCSR,
            writes: CC,
            can_fault: false,
        },
        HelperInfo {
            name: "far_jump",
            func: crate::desc::helper_far_jump,
            reads: NOT_MXCSR,
            writes: NOT_MXCSR,
            can_fault: true,
        },
        HelperInfo {
            name: "pdep_pext",
            func: helper_pdep_pext,
            reads: GlobalSet::NONE,
            writes: GlobalSet::NONE,
            can_fault: false,
        },
        HelperInfo {
            name: "rep_fast",
            func: helper_rep_fast,
            reads: NOT_MXCSR,
            writes: gprs,
            can_fault: false,
        },
        HelperInfo {
            name: "sse",
            func: crate::fp::helper_sse,
            reads: fp_state().with(G_GPR0).with(G_GPR0 + 2).with(G_CR4),
            writes: fp_state().with(G_GPR0 + 1),
            can_fault: true,
        },
        HelperInfo {
            name: "fxstate",
            func: crate::fp::state::helper_fxstate,
            reads: GlobalSet::ALL,
            writes: fp_state(),
            can_fault: true,
        },
        HelperInfo {
            name: "maskmov",
            func: crate::fp::helper_maskmov,
            reads: NOT_MXCSR,
            writes: GlobalSet::NONE,
            can_fault: true,
        },
        HelperInfo {
            name: "x87",
            func: crate::fp::x87::helper_x87,
            reads: x87_state(),
            writes: x87_state(),
            can_fault: false,
        },
        HelperInfo {
            name: "fenv",
            func: crate::fp::state::helper_fenv,
            reads: GlobalSet::ALL,
            writes: fp_state(),
            can_fault: true,
        },
        HelperInfo {
            name: "clock",
            func: helper_clock,
            reads: GlobalSet::NONE,
            writes: GlobalSet::NONE,
            can_fault: false,
        },
    ]
}

/// The platform's time for RDTSC/RDTSCP when `Env::inline_clock` is set: the retired
/// instruction count at instruction `insn` of the running block (`Env::icount` holds the
/// count at the block's entry) plus `Env::clock_offset`.
unsafe extern "C" fn helper_clock(env: *mut Env, insn: u64, _: u64, _: u64, _: u64) -> u64 {
    // SAFETY: helper contract.
    let e = unsafe { env_mut(env) };
    e.icount.wrapping_add(insn).wrapping_add(e.clock_offset)
}

/// The x87 helper's state: the FP/SIMD state but MXCSR.
pub fn x87_state() -> GlobalSet {
    fp_state().without(G_MXCSR)
}

/// The FP/SIMD state globals (XMM, MXCSR, x87, scratch).
pub fn fp_state() -> GlobalSet {
    let mut s = GlobalSet::NONE;
    for g in G_XMM0..G_X86_END {
        s = s.with(g);
    }
    s
}

/// Access to the globals of the env a helper was called with.
///
/// # Safety
/// `env` must be the valid pointer the helper received.
pub unsafe fn env_mut<'a>(env: *mut Env) -> &'a mut Env {
    // SAFETY: per the contract.
    unsafe { &mut *env }
}

/// Guest memory load from a helper (through the MMU and TLB). Records the fault in env.
///
/// # Safety
/// Inside a helper, with its env pointer.
pub unsafe fn load(env: *mut Env, addr: u64, size: u32, who: AccessKind) -> Result<u64, ()> {
    // SAFETY: helper context (see contract).
    let (core, e) = unsafe { (core_of(env), &mut *env) };
    core.load(e, addr, size, who)
        .map_err(|f| e.raise(f.vector, f.error_code, f.addr))
}

/// Guest memory store from a helper.
///
/// # Safety
/// Inside a helper, with its env pointer.
pub unsafe fn store(
    env: *mut Env,
    addr: u64,
    size: u32,
    val: u64,
    who: AccessKind,
) -> Result<(), ()> {
    // SAFETY: helper context (see contract).
    let (core, e) = unsafe { (core_of(env), &mut *env) };
    match core.store(e, addr, size, val, who) {
        Ok(true) => Ok(()),
        Ok(false) => {
            e.fault = jit::env::fault::SMC_RESTART;
            Err(())
        }
        Err(f) => {
            e.raise(f.vector, f.error_code, f.addr);
            Err(())
        }
    }
}

/// DIV/IDIV. a0 = operand size in bytes | signed << 8, a1 = divisor. Writes rax/rdx (or
/// ax for 8-bit) or raises #DE.
unsafe extern "C" fn helper_div(env: *mut Env, a0: u64, divisor: u64, _: u64, _: u64) -> u64 {
    // SAFETY: helper contract.
    let e = unsafe { env_mut(env) };
    let bytes = (a0 & 0xff) as u32;
    let signed = a0 & 0x100 != 0;
    let rax = e.g[0];
    let rdx = e.g[2];
    let bits = bytes * 8;
    let de = |e: &mut Env| {
        e.raise(0, None, 0);
        0
    };
    match (bytes, signed) {
        (1, false) => {
            let n = rax & 0xffff;
            let d = divisor & 0xff;
            if d == 0 || n / d > 0xff {
                return de(e);
            }
            e.g[0] = (rax & !0xffff) | (n % d) << 8 | (n / d);
        }
        (1, true) => {
            let n = rax as u16 as i16 as i64;
            let d = divisor as u8 as i8 as i64;
            if d == 0 {
                return de(e);
            }
            let q = n / d;
            if q > 127 || q < -128 {
                return de(e);
            }
            let r = n % d;
            e.g[0] = (rax & !0xffff) | ((r as u64 & 0xff) << 8) | (q as u64 & 0xff);
        }
        (_, false) if bits <= 32 || rdx == 0 => {
            // The dividend fits 64 bits: the host's 64-bit divide (u128 division is a
            // libcall), and the quotient overflows exactly when it exceeds the width.
            let m = super::translate::size_mask(bytes);
            let n = if bits == 64 { rax } else { (rdx & m) << bits | (rax & m) };
            let d = divisor & m;
            if d == 0 || n / d > m {
                return de(e);
            }
            write_sized(e, 0, n / d, bytes);
            write_sized(e, 2, n % d, bytes);
        }
        (_, true) if bits <= 32 || rdx == ((rax as i64) >> 63) as u64 => {
            // The dividend fits 64 bits (signed), as after cdq/cqo.
            let m = super::translate::size_mask(bytes);
            let n = if bits == 64 {
                rax as i64
            } else {
                ((((rdx & m) << bits | (rax & m)) << (64 - 2 * bits)) as i64) >> (64 - 2 * bits)
            };
            let dsh = 64 - bits;
            let d = ((divisor << dsh) as i64) >> dsh;
            if d == 0 {
                return de(e);
            }
            // i64::MIN / -1 overflows 64 bits, and so any width.
            let (Some(q), Some(r)) = (n.checked_div(d), n.checked_rem(d)) else {
                return de(e);
            };
            let max = i64::MAX >> (64 - bits);
            if q > max || q < -max - 1 {
                return de(e);
            }
            write_sized(e, 0, q as u64, bytes);
            write_sized(e, 2, r as u64, bytes);
        }
        (_, false) => {
            let m = super::translate::size_mask(bytes);
            let n = ((rdx & m) as u128) << bits | (rax & m) as u128;
            let d = (divisor & m) as u128;
            if d == 0 || n / d > m as u128 {
                return de(e);
            }
            let (q, r) = ((n / d) as u64, (n % d) as u64);
            write_sized(e, 0, q, bytes);
            write_sized(e, 2, r, bytes);
        }
        (_, true) => {
            let m = super::translate::size_mask(bytes);
            let sh = 128 - 2 * bits;
            let n = (((((rdx & m) as u128) << bits | (rax & m) as u128) << sh) as i128) >> sh;
            let dsh = 64 - bits;
            let d = (((divisor << dsh) as i64) >> dsh) as i128;
            if d == 0 {
                return de(e);
            }
            let (q, r) = match n.checked_div(d) {
                Some(q) => (q, n % d),
                None => return de(e),
            };
            let max = (1i128 << (bits - 1)) - 1;
            if q > max || q < -max - 1 {
                return de(e);
            }
            write_sized(e, 0, q as u64, bytes);
            write_sized(e, 2, r as u64, bytes);
        }
    }
    0
}

fn write_sized(e: &mut Env, reg: usize, v: u64, bytes: u32) {
    e.g[reg] = match bytes {
        8 => v,
        4 => v & 0xffff_ffff,
        _ => {
            let m = super::translate::size_mask(bytes);
            (e.g[reg] & !m) | (v & m)
        }
    };
}

fn set_flags(e: &mut Env, arith: u64) {
    let r = e.g[G_RFLAGS as usize];
    e.g[G_RFLAGS as usize] = (r & !fl::ARITH) | (arith & fl::ARITH);
    e.g[G_CC_OP as usize] = CcKind::Eflags as u64 * 4;
}

fn cur_flags(e: &Env) -> u64 {
    flags::read_rflags(&e.g)
}

/// ROL/ROR/RCL/RCR with flags. a0 = bytes | kind << 8 (0 rol, 1 ror, 2 rcl, 3 rcr),
/// a1 = value, a2 = raw count (masked here). Returns the result; updates CF/OF.
unsafe extern "C" fn helper_rotate(env: *mut Env, a0: u64, val: u64, count: u64, _: u64) -> u64 {
    // SAFETY: helper contract.
    let e = unsafe { env_mut(env) };
    let bytes = (a0 & 0xff) as u32;
    let kind = (a0 >> 8) & 3;
    let bits = bytes * 8;
    let m = super::translate::size_mask(bytes);
    let cmask = if bytes == 8 { 63 } else { 31 };
    let mut c = (count & cmask) as u32;
    let v = val & m;
    let f = cur_flags(e);
    let cf_in = f & 1;
    if c == 0 {
        return v;
    }
    let msb = |x: u64| (x >> (bits - 1)) & 1;
    let (res, cf, of) = match kind {
        0 => {
            let cr = c % bits;
            let r = if cr == 0 {
                v
            } else {
                ((v << cr) | (v >> (bits - cr))) & m
            };
            let cf = r & 1;
            (r, cf, msb(r) ^ cf)
        }
        1 => {
            let cr = c % bits;
            let r = if cr == 0 {
                v
            } else {
                ((v >> cr) | (v << (bits - cr))) & m
            };
            let cf = msb(r);
            (r, cf, msb(r) ^ ((r >> (bits - 2)) & 1))
        }
        2 => {
            // RCL through CF over bits+1
            if bytes < 4 {
                c %= bits + 1;
            }
            let mut r = v;
            let mut cf = cf_in;
            for _ in 0..c {
                let nc = msb(r);
                r = ((r << 1) | cf) & m;
                cf = nc;
            }
            (r, cf, msb(r) ^ cf)
        }
        _ => {
            if bytes < 4 {
                c %= bits + 1;
            }
            let mut r = v;
            let mut cf = cf_in;
            let of = msb(v) ^ cf_in;
            for _ in 0..c {
                let nc = r & 1;
                r = (r >> 1) | (cf << (bits - 1));
                cf = nc;
            }
            (r & m, cf, of)
        }
    };
    if c != 0 {
        let newf = (f & !(fl::CF | fl::OF)) | cf | (of << 11);
        set_flags(e, newf);
    }
    res
}

/// SHLD/SHRD. a0 = bytes | (right as u64) << 8, a1 = dst value, a2 = src value, a3 = count.
unsafe extern "C" fn helper_shiftd(env: *mut Env, a0: u64, dst: u64, src: u64, count: u64) -> u64 {
    // SAFETY: helper contract.
    let e = unsafe { env_mut(env) };
    let bytes = (a0 & 0xff) as u32;
    let right = a0 & 0x100 != 0;
    let bits = bytes * 8;
    let m = super::translate::size_mask(bytes);
    let c = (count & if bytes == 8 { 63 } else { 31 }) as u32;
    let d = dst & m;
    let s = src & m;
    if c == 0 {
        return d;
    }
    // Use a wide concatenation; for 16-bit counts > 16 the result is undefined (we give
    // what a 32-bit rotate through the pair yields, like Intel cores).
    let (res, cf) = if bytes == 2 {
        let wide: u64 = if right {
            (s << 16 | d) | (d << 32)
        } else {
            (d << 32) | (s << 16) | d
        };
        if right {
            let r = (wide >> c) & 0xffff;
            (r, (wide >> (c - 1)) & 1)
        } else {
            let r = (wide << c >> 32) & 0xffff;
            (r, (wide << (c - 1) >> 47) & 1)
        }
    } else if right {
        let wide = (s as u128) << bits | d as u128;
        ((wide >> c) as u64 & m, ((wide >> (c - 1)) & 1) as u64)
    } else {
        let wide = (d as u128) << bits | s as u128;
        (
            ((wide << c) >> bits) as u64 & m,
            ((wide >> (2 * bits - c)) & 1) as u64,
        )
    };
    let msb = |x: u64| (x >> (bits - 1)) & 1;
    let of = msb(res) ^ msb(d);
    let zsp = {
        let mut f = 0;
        if res == 0 {
            f |= fl::ZF;
        }
        if msb(res) != 0 {
            f |= fl::SF;
        }
        if (res as u8).count_ones() % 2 == 0 {
            f |= fl::PF;
        }
        f
    };
    set_flags(e, cf | zsp | (of << 11));
    res
}

/// POPF/IRET-style flag write with privilege rules. a0 = new value, a1 = operand size
/// bytes. Returns nothing; writes RFLAGS and the lazy state.
unsafe extern "C" fn helper_popf(env: *mut Env, newv: u64, bytes: u64, _: u64, _: u64) -> u64 {
    // SAFETY: helper contract.
    let e = unsafe { env_mut(env) };
    let old = cur_flags(e);
    let cpl = e.g[G_CPL as usize];
    let iopl = (old >> 12) & 3;
    let mut mask = fl::ARITH | fl::TF | fl::DF | fl::NT | fl::AC | fl::ID;
    if cpl == 0 {
        mask |= fl::IOPL | fl::IF;
    } else if cpl <= iopl {
        mask |= fl::IF;
    }
    if bytes == 2 {
        mask &= 0xffff;
    }
    let v = (old & !mask) | (newv & mask) | fl::FIXED1;
    e.g[G_RFLAGS as usize] = v & !(fl::RF | fl::VM);
    e.g[G_CC_OP as usize] = CcKind::Eflags as u64 * 4;
    0
}

/// PDEP (a0 = 0) / PEXT (a0 = 1) of a1 with mask a2; a3 = operand bytes.
unsafe extern "C" fn helper_pdep_pext(
    _env: *mut Env,
    which: u64,
    src: u64,
    mask: u64,
    bytes: u64,
) -> u64 {
    let m = super::translate::size_mask(bytes as u32);
    let (src, mask) = (src & m, mask & m);
    let mut r = 0u64;
    let mut k = 0;
    for i in 0..64 {
        if mask >> i & 1 != 0 {
            if which == 0 {
                r |= ((src >> k) & 1) << i;
            } else {
                r |= ((src >> i) & 1) << k;
            }
            k += 1;
        }
    }
    r
}

/// Bulk REP MOVS/STOS (DF = 0): performs as many whole iterations as fit in the current
/// source and destination pages, when both are plain RAM (no fault possible, no code on
/// the destination page), and updates rCX/rSI/rDI. Returns the number of iterations done;
/// 0 means "run one iteration the precise way" (faults, code pages, page-crossing
/// elements, DF = 1). a0 = kind (0 movs, 1 stos) | element size << 4 | address size << 8 |
/// 64-bit code << 12, a1 = source segment base, a2 = ES base.
pub unsafe extern "C" fn helper_rep_fast(
    env: *mut Env,
    a0: u64,
    src_base: u64,
    es_base: u64,
    _: u64,
) -> u64 {
    use jit::engine::Access;
    // SAFETY: helper contract.
    let (core, e) = unsafe { (core_of(env), &mut *env) };
    if e.g[G_RFLAGS as usize] & fl::DF != 0 {
        return 0;
    }
    let movs = a0 & 0xf == 0;
    let size = (a0 >> 4) & 0xf;
    let asize = ((a0 >> 8) & 0xf) as u32;
    let amask = crate::translate::size_mask(asize);
    let code64 = a0 & 0x1000 != 0;
    let linear = |base: u64, off: u64| -> u64 {
        let l = base.wrapping_add(off);
        if code64 {
            l
        } else {
            l & 0xffff_ffff
        }
    };
    let count = e.g[1] & amask;
    if count == 0 {
        return 0;
    }
    let rsi = e.g[6] & amask;
    let rdi = e.g[7] & amask;
    let dlin = linear(es_base, rdi);
    let mut n = count.min((0x1000 - (dlin & 0xfff)) / size);
    // Keep the index registers from wrapping inside one chunk.
    n = n.min((amask - rdi) / size + 1);
    let slin = linear(src_base, rsi);
    if movs {
        n = n
            .min((0x1000 - (slin & 0xfff)) / size)
            .min((amask - rsi) / size + 1);
    }
    if n == 0 {
        return 0;
    }
    let Some(dp) = core.bulk_translate(e, dlin, Access::Write) else {
        return 0;
    };
    let bytes = (n * size) as usize;
    if movs {
        let Some(sp) = core.bulk_translate(e, slin, Access::Read) else {
            return 0;
        };
        let ram = core.ram_mut();
        if sp + bytes as u64 <= dp || dp + bytes as u64 <= sp || sp >= dp {
            // Disjoint, or copying downwards: front-to-back element order equals memmove.
            let (lo, hi) = (sp.min(dp), sp.max(dp) + bytes as u64);
            let Some(win) = ram.slice_mut(lo, (hi - lo) as usize) else {
                return 0;
            };
            let (s0, d0) = ((sp - lo) as usize, (dp - lo) as usize);
            win.copy_within(s0..s0 + bytes, d0);
        } else {
            // Overlapping upwards: element by element, as the architectural order defines.
            let sz = size as usize;
            for i in 0..n {
                let v = ram.read_le(sp + i * size, sz).unwrap_or(0);
                ram.write_le(dp + i * size, sz, v);
            }
        }
        e.g[6] = (e.g[6] & !amask) | (rsi.wrapping_add(n * size) & amask);
    } else {
        let v = e.g[0].to_le_bytes();
        let ram = core.ram_mut();
        let Some(d) = ram.slice_mut(dp, bytes) else {
            return 0;
        };
        if size == 1 {
            d.fill(v[0]);
        } else {
            // One element, then double the filled prefix.
            let sz = size as usize;
            d[..sz].copy_from_slice(&v[..sz]);
            let mut done = sz;
            while done < bytes {
                let k = done.min(bytes - done);
                d.copy_within(0..k, done);
                done += k;
            }
        }
    }
    e.g[7] = (e.g[7] & !amask) | (rdi.wrapping_add(n * size) & amask);
    e.g[1] = (e.g[1] & !amask) | ((count - n) & amask);
    if asize == 4 {
        // 32-bit address size writes zero-extend the whole registers.
        e.g[1] &= 0xffff_ffff;
        e.g[7] &= 0xffff_ffff;
        if movs {
            e.g[6] &= 0xffff_ffff;
        }
    }
    n
}
