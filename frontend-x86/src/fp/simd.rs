//! MMX/SSE operations on register values: one function per instruction, over a 128-bit
//! value (`V`, low quadword first). MMX forms run the same function with `Cx::n == 8`
//! (only the low quadword is meaningful and written back).
//!
//! Each function gets the destination (also the first source) by reference, the second
//! source by value and the immediate, and returns a value whose meaning depends on the
//! instruction's [`Shape`](super::Shape) (a GPR result, or flags).

use super::soft::Ctx;

pub type V = [u64; 2];

/// Operation context.
pub struct Cx {
    /// Operand width in bytes: 16 (XMM) or 8 (MMX).
    pub n: usize,
    /// SSE floating point context from MXCSR (flags accumulate here).
    pub fp: Ctx,
    /// The host fast path may be used (see `ssefp`): MXCSR rounds to nearest without
    /// FTZ/DAZ, masks every exception and already has PE set.
    pub fast: bool,
    /// XMM0 (the implicit operand of BLENDV*, PBLENDVB), and its new value if written
    /// (PCMPxSTRM).
    pub xmm0: V,
    pub out_xmm0: Option<V>,
    /// RAX/RDX (explicit-length string compares).
    pub rax: u64,
    pub rdx: u64,
    /// REX.W: PCMPESTRx take 64-bit lengths.
    pub wide: bool,
    /// Arithmetic flags written by the instruction (RFLAGS bit positions), if any.
    pub out_flags: Option<u64>,
    /// MXCSR exception masks (IM..PM as bits 0..5).
    pub masks: u8,
    /// The op merged its exception flags stage by stage itself (DPPS/DPPD): the helper
    /// takes `fp.flags` as they are.
    pub staged: bool,
}

pub type OpFn = fn(&mut Cx, &mut V, V, u8) -> u64;

// ---- lane views ----

pub fn bytes(v: V) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&v[0].to_le_bytes());
    b[8..].copy_from_slice(&v[1].to_le_bytes());
    b
}
pub fn from_bytes(b: [u8; 16]) -> V {
    [
        u64::from_le_bytes(b[..8].try_into().unwrap()),
        u64::from_le_bytes(b[8..].try_into().unwrap()),
    ]
}
pub fn words(v: V) -> [u16; 8] {
    let b = bytes(v);
    std::array::from_fn(|i| u16::from_le_bytes([b[2 * i], b[2 * i + 1]]))
}
pub fn from_words(w: [u16; 8]) -> V {
    let mut b = [0u8; 16];
    for i in 0..8 {
        b[2 * i..2 * i + 2].copy_from_slice(&w[i].to_le_bytes());
    }
    from_bytes(b)
}
pub fn dwords(v: V) -> [u32; 4] {
    [
        v[0] as u32,
        (v[0] >> 32) as u32,
        v[1] as u32,
        (v[1] >> 32) as u32,
    ]
}
pub fn from_dwords(d: [u32; 4]) -> V {
    [
        d[0] as u64 | (d[1] as u64) << 32,
        d[2] as u64 | (d[3] as u64) << 32,
    ]
}

/// Lane-wise binary operation over `$n`-byte operands with lanes of `$t`.
macro_rules! lanes {
    ($name:ident, $view:ident, $from:ident, $t:ty, $st:ty, |$a:ident, $b:ident| $e:expr) => {
        pub fn $name(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
            let (x, y) = ($view(*d), $view(s));
            let lanes = c.n / std::mem::size_of::<$t>();
            let mut r = x;
            for i in 0..lanes {
                let ($a, $b) = (x[i] as $st, y[i] as $st);
                r[i] = ($e) as $t;
            }
            *d = $from(r);
            0
        }
    };
}

fn q_view(v: V) -> [u64; 2] {
    v
}
fn q_from(v: [u64; 2]) -> V {
    v
}

lanes!(paddb, bytes, from_bytes, u8, u8, |a, b| a.wrapping_add(b));
lanes!(paddw, words, from_words, u16, u16, |a, b| a.wrapping_add(b));
lanes!(paddd, dwords, from_dwords, u32, u32, |a, b| a
    .wrapping_add(b));
lanes!(paddq, q_view, q_from, u64, u64, |a, b| a.wrapping_add(b));
lanes!(psubb, bytes, from_bytes, u8, u8, |a, b| a.wrapping_sub(b));
lanes!(psubw, words, from_words, u16, u16, |a, b| a.wrapping_sub(b));
lanes!(psubd, dwords, from_dwords, u32, u32, |a, b| a
    .wrapping_sub(b));
lanes!(psubq, q_view, q_from, u64, u64, |a, b| a.wrapping_sub(b));
lanes!(paddsb, bytes, from_bytes, u8, i8, |a, b| a
    .saturating_add(b));
lanes!(paddsw, words, from_words, u16, i16, |a, b| a
    .saturating_add(b));
lanes!(paddusb, bytes, from_bytes, u8, u8, |a, b| a
    .saturating_add(b));
lanes!(paddusw, words, from_words, u16, u16, |a, b| a
    .saturating_add(b));
lanes!(psubsb, bytes, from_bytes, u8, i8, |a, b| a
    .saturating_sub(b));
lanes!(psubsw, words, from_words, u16, i16, |a, b| a
    .saturating_sub(b));
lanes!(psubusb, bytes, from_bytes, u8, u8, |a, b| a
    .saturating_sub(b));
lanes!(psubusw, words, from_words, u16, u16, |a, b| a
    .saturating_sub(b));
lanes!(pmullw, words, from_words, u16, u16, |a, b| a
    .wrapping_mul(b));
lanes!(pmulhw, words, from_words, u16, i16, |a, b| ((a as i32
    * b as i32)
    >> 16));
lanes!(pmulhuw, words, from_words, u16, u16, |a, b| ((a as u32
    * b as u32)
    >> 16));
lanes!(pmulld, dwords, from_dwords, u32, u32, |a, b| a
    .wrapping_mul(b));
lanes!(pmulhrsw, words, from_words, u16, i16, |a, b| ((((a
    as i32
    * b as i32)
    >> 14)
    + 1)
    >> 1));
lanes!(pavgb, bytes, from_bytes, u8, u16, |a, b| (a + b + 1) >> 1);
lanes!(pavgw, words, from_words, u16, u32, |a, b| (a + b + 1) >> 1);
lanes!(pminub, bytes, from_bytes, u8, u8, |a, b| a.min(b));
lanes!(pmaxub, bytes, from_bytes, u8, u8, |a, b| a.max(b));
lanes!(pminsb, bytes, from_bytes, u8, i8, |a, b| a.min(b));
lanes!(pmaxsb, bytes, from_bytes, u8, i8, |a, b| a.max(b));
lanes!(pminuw, words, from_words, u16, u16, |a, b| a.min(b));
lanes!(pmaxuw, words, from_words, u16, u16, |a, b| a.max(b));
lanes!(pminsw, words, from_words, u16, i16, |a, b| a.min(b));
lanes!(pmaxsw, words, from_words, u16, i16, |a, b| a.max(b));
lanes!(pminud, dwords, from_dwords, u32, u32, |a, b| a.min(b));
lanes!(pmaxud, dwords, from_dwords, u32, u32, |a, b| a.max(b));
lanes!(pminsd, dwords, from_dwords, u32, i32, |a, b| a.min(b));
lanes!(pmaxsd, dwords, from_dwords, u32, i32, |a, b| a.max(b));
lanes!(pcmpeqb, bytes, from_bytes, u8, u8, |a, b| if a == b {
    u8::MAX
} else {
    0
});
lanes!(pcmpeqw, words, from_words, u16, u16, |a, b| if a == b {
    u16::MAX
} else {
    0
});
lanes!(pcmpeqd, dwords, from_dwords, u32, u32, |a, b| if a == b {
    u32::MAX
} else {
    0
});
lanes!(pcmpeqq, q_view, q_from, u64, u64, |a, b| if a == b {
    u64::MAX
} else {
    0
});
lanes!(pcmpgtb, bytes, from_bytes, u8, i8, |a, b| if a > b {
    u8::MAX
} else {
    0
});
lanes!(pcmpgtw, words, from_words, u16, i16, |a, b| if a > b {
    u16::MAX
} else {
    0
});
lanes!(pcmpgtd, dwords, from_dwords, u32, i32, |a, b| if a > b {
    u32::MAX
} else {
    0
});
lanes!(pcmpgtq, q_view, q_from, u64, i64, |a, b| if a > b {
    u64::MAX
} else {
    0
});
lanes!(psignb, bytes, from_bytes, u8, i8, |a, b| if b < 0 {
    a.wrapping_neg()
} else if b == 0 {
    0
} else {
    a
});
lanes!(psignw, words, from_words, u16, i16, |a, b| if b < 0 {
    a.wrapping_neg()
} else if b == 0 {
    0
} else {
    a
});
lanes!(psignd, dwords, from_dwords, u32, i32, |a, b| if b < 0 {
    a.wrapping_neg()
} else if b == 0 {
    0
} else {
    a
});
lanes!(pabsb, bytes, from_bytes, u8, i8, |_a, b| b.unsigned_abs());
lanes!(pabsw, words, from_words, u16, i16, |_a, b| b.unsigned_abs());
lanes!(pabsd, dwords, from_dwords, u32, i32, |_a, b| b
    .unsigned_abs());
lanes!(pand, q_view, q_from, u64, u64, |a, b| a & b);
lanes!(pandn, q_view, q_from, u64, u64, |a, b| !a & b);
lanes!(por, q_view, q_from, u64, u64, |a, b| a | b);
lanes!(pxor, q_view, q_from, u64, u64, |a, b| a ^ b);

pub fn pmuludq(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    for i in 0..c.n / 8 {
        d[i] = (d[i] as u32 as u64) * (s[i] as u32 as u64);
    }
    0
}
pub fn pmuldq(_: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let (x, y) = (dwords(*d), dwords(s));
    *d = [
        (x[0] as i32 as i64 * y[0] as i32 as i64) as u64,
        (x[2] as i32 as i64 * y[2] as i32 as i64) as u64,
    ];
    0
}
pub fn pmaddwd(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let (x, y) = (words(*d), words(s));
    let mut r = dwords(*d);
    for i in 0..c.n / 4 {
        let p = |k: usize| x[k] as i16 as i32 as i64 * y[k] as i16 as i32 as i64;
        r[i] = (p(2 * i) + p(2 * i + 1)) as u32;
    }
    *d = from_dwords(r);
    0
}
pub fn pmaddubsw(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let (x, y) = (bytes(*d), bytes(s));
    let mut r = words(*d);
    for i in 0..c.n / 2 {
        let p = |k: usize| x[k] as i32 * y[k] as i8 as i32;
        r[i] = (p(2 * i) + p(2 * i + 1)).clamp(i16::MIN as i32, i16::MAX as i32) as u16;
    }
    *d = from_words(r);
    0
}
pub fn psadbw(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let (x, y) = (bytes(*d), bytes(s));
    for q in 0..c.n / 8 {
        d[q] = (0..8)
            .map(|i| (x[8 * q + i] as i32 - y[8 * q + i] as i32).unsigned_abs() as u64)
            .sum();
    }
    0
}

// ---- shifts (count in the source's low quadword, or the immediate placed there) ----

macro_rules! shift {
    ($name:ident, $view:ident, $from:ident, $t:ty, $st:ty, $bits:expr, $op:tt, $arith:expr) => {
        pub fn $name(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
            let count = s[0];
            let x = $view(*d);
            let mut r = x;
            let lanes = c.n / std::mem::size_of::<$t>();
            for i in 0..lanes {
                r[i] = if count >= $bits {
                    if $arith { ((x[i] as $st) >> ($bits - 1)) as $t } else { 0 }
                } else {
                    ((x[i] as $st) $op count) as $t
                };
            }
            *d = $from(r);
            0
        }
    };
}
shift!(psllw, words, from_words, u16, u16, 16, <<, false);
shift!(pslld, dwords, from_dwords, u32, u32, 32, <<, false);
shift!(psllq, q_view, q_from, u64, u64, 64, <<, false);
shift!(psrlw, words, from_words, u16, u16, 16, >>, false);
shift!(psrld, dwords, from_dwords, u32, u32, 32, >>, false);
shift!(psrlq, q_view, q_from, u64, u64, 64, >>, false);
shift!(psraw, words, from_words, u16, i16, 16, >>, true);
shift!(psrad, dwords, from_dwords, u32, i32, 32, >>, true);

pub fn pslldq(_: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let n = s[0].min(16) as usize;
    let x = bytes(*d);
    *d = from_bytes(std::array::from_fn(|i| if i >= n { x[i - n] } else { 0 }));
    0
}
pub fn psrldq(_: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let n = s[0].min(16) as usize;
    let x = bytes(*d);
    *d = from_bytes(std::array::from_fn(
        |i| if i + n < 16 { x[i + n] } else { 0 },
    ));
    0
}

// ---- pack / unpack ----

fn pack<T: Copy, U: Copy>(c: &Cx, x: &[T], y: &[T], f: impl Fn(T) -> U, zero: U) -> [U; 16] {
    // Half of the output lanes from each source.
    let half = x.len().min(c.n / std::mem::size_of::<U>() / 2);
    let mut r = [zero; 16];
    for i in 0..half {
        r[i] = f(x[i]);
        r[half + i] = f(y[i]);
    }
    r
}
pub fn packsswb(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let r = pack(
        c,
        &words(*d),
        &words(s),
        |w| (w as i16).clamp(-128, 127) as u8,
        0u8,
    );
    *d = from_bytes(r);
    0
}
pub fn packuswb(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let r = pack(
        c,
        &words(*d),
        &words(s),
        |w| (w as i16).clamp(0, 255) as u8,
        0u8,
    );
    *d = from_bytes(r);
    0
}
pub fn packssdw(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let r = pack(
        c,
        &dwords(*d),
        &dwords(s),
        |w| (w as i32).clamp(-32768, 32767) as u16,
        0u16,
    );
    *d = from_words(r[..8].try_into().unwrap());
    0
}
pub fn packusdw(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let r = pack(
        c,
        &dwords(*d),
        &dwords(s),
        |w| (w as i32).clamp(0, 65535) as u16,
        0u16,
    );
    *d = from_words(r[..8].try_into().unwrap());
    0
}

/// Interleave the low (`high == false`) or high halves of the two operands' lanes.
macro_rules! unpack {
    ($name:ident, $view:ident, $from:ident, $t:ty, $high:expr) => {
        pub fn $name(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
            let (x, y) = ($view(*d), $view(s));
            let lanes = c.n / std::mem::size_of::<$t>();
            let base = if $high { lanes / 2 } else { 0 };
            let mut r = x;
            for i in 0..lanes / 2 {
                r[2 * i] = x[base + i];
                r[2 * i + 1] = y[base + i];
            }
            *d = $from(r);
            0
        }
    };
}
unpack!(punpcklbw, bytes, from_bytes, u8, false);
unpack!(punpcklwd, words, from_words, u16, false);
unpack!(punpckldq, dwords, from_dwords, u32, false);
unpack!(punpcklqdq, q_view, q_from, u64, false);
unpack!(punpckhbw, bytes, from_bytes, u8, true);
unpack!(punpckhwd, words, from_words, u16, true);
unpack!(punpckhdq, dwords, from_dwords, u32, true);
unpack!(punpckhqdq, q_view, q_from, u64, true);

// ---- shuffles, blends, inserts, extracts ----

pub fn pshufd(_: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let x = dwords(s);
    *d = from_dwords(std::array::from_fn(|i| x[(imm >> (2 * i) & 3) as usize]));
    0
}
pub fn pshuflw(_: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let x = words(s);
    *d = from_words(std::array::from_fn(|i| {
        if i < 4 {
            x[(imm >> (2 * i) & 3) as usize]
        } else {
            x[i]
        }
    }));
    0
}
pub fn pshufhw(_: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let x = words(s);
    *d = from_words(std::array::from_fn(|i| {
        if i >= 4 {
            x[4 + (imm >> (2 * (i - 4)) & 3) as usize]
        } else {
            x[i]
        }
    }));
    0
}
pub fn pshufw(_: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let x = words(s);
    *d = from_words(std::array::from_fn(|i| {
        if i < 4 {
            x[(imm >> (2 * i) & 3) as usize]
        } else {
            0
        }
    }));
    0
}
pub fn shufps(_: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let (x, y) = (dwords(*d), dwords(s));
    let sel = |i: usize| (imm >> (2 * i) & 3) as usize;
    *d = from_dwords([x[sel(0)], x[sel(1)], y[sel(2)], y[sel(3)]]);
    0
}
pub fn shufpd(_: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    *d = [d[(imm & 1) as usize], s[(imm >> 1 & 1) as usize]];
    0
}
pub fn pshufb(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let (x, y) = (bytes(*d), bytes(s));
    let mask = c.n - 1;
    *d = from_bytes(std::array::from_fn(|i| {
        if i >= c.n || y[i] & 0x80 != 0 {
            0
        } else {
            x[y[i] as usize & mask]
        }
    }));
    0
}
pub fn palignr(c: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    // dst:src concatenated (dst high), shifted right by imm bytes.
    let n = c.n;
    let (x, y) = (bytes(*d), bytes(s));
    let mut cat = [0u8; 32];
    cat[..n].copy_from_slice(&y[..n]);
    cat[n..2 * n].copy_from_slice(&x[..n]);
    let sh = imm as usize;
    *d = from_bytes(std::array::from_fn(|i| {
        if i < n && sh + i < 2 * n {
            cat[sh + i]
        } else {
            0
        }
    }));
    0
}
macro_rules! hadd {
    ($name:ident, $view:ident, $from:ident, $t:ty, $st:ty, |$a:ident, $b:ident| $e:expr) => {
        pub fn $name(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
            let (x, y) = ($view(*d), $view(s));
            let lanes = c.n / std::mem::size_of::<$t>();
            let mut r = x;
            for i in 0..lanes / 2 {
                let f = |v: &[$t], k: usize| {
                    let ($a, $b) = (v[2 * k] as $st, v[2 * k + 1] as $st);
                    ($e) as $t
                };
                r[i] = f(&x, i);
                r[lanes / 2 + i] = f(&y, i);
            }
            *d = $from(r);
            0
        }
    };
}
hadd!(phaddw, words, from_words, u16, u16, |a, b| a
    .wrapping_add(b));
hadd!(phaddd, dwords, from_dwords, u32, u32, |a, b| a
    .wrapping_add(b));
hadd!(phaddsw, words, from_words, u16, i16, |a, b| a
    .saturating_add(b));
hadd!(phsubw, words, from_words, u16, u16, |a, b| a
    .wrapping_sub(b));
hadd!(phsubd, dwords, from_dwords, u32, u32, |a, b| a
    .wrapping_sub(b));
hadd!(phsubsw, words, from_words, u16, i16, |a, b| a
    .saturating_sub(b));

pub fn pblendw(_: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let (x, y) = (words(*d), words(s));
    *d = from_words(std::array::from_fn(|i| {
        if imm >> i & 1 != 0 {
            y[i]
        } else {
            x[i]
        }
    }));
    0
}
pub fn blendps(_: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let (x, y) = (dwords(*d), dwords(s));
    *d = from_dwords(std::array::from_fn(|i| {
        if imm >> i & 1 != 0 {
            y[i]
        } else {
            x[i]
        }
    }));
    0
}
pub fn blendpd(_: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    *d = std::array::from_fn(|i| if imm >> i & 1 != 0 { s[i] } else { d[i] });
    0
}
pub fn pblendvb(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let (x, y, m) = (bytes(*d), bytes(s), bytes(c.xmm0));
    *d = from_bytes(std::array::from_fn(|i| {
        if m[i] & 0x80 != 0 {
            y[i]
        } else {
            x[i]
        }
    }));
    0
}
pub fn blendvps(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let (x, y, m) = (dwords(*d), dwords(s), dwords(c.xmm0));
    *d = from_dwords(std::array::from_fn(|i| {
        if m[i] >> 31 != 0 {
            y[i]
        } else {
            x[i]
        }
    }));
    0
}
pub fn blendvpd(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let m = c.xmm0;
    *d = std::array::from_fn(|i| if m[i] >> 63 != 0 { s[i] } else { d[i] });
    0
}

/// PMOVSX/PMOVZX: widen the low lanes of the source.
macro_rules! pmovx {
    ($name:ident, $view:ident, $from_n:expr, $to:ty, $sign:ty, $lanes:expr, $store:ident) => {
        pub fn $name(_: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
            let x = $view(s);
            let mut r = [0 as $to; 16 / std::mem::size_of::<$to>()];
            for i in 0..$lanes {
                r[i] = x[i] as $sign as $to;
            }
            *d = $store(r);
            0
        }
    };
}
pmovx!(pmovsxbw, bytes, 1, u16, i8, 8, from_words);
pmovx!(pmovsxbd, bytes, 1, u32, i8, 4, from_dwords);
pmovx!(pmovsxbq, bytes, 1, u64, i8, 2, q_from);
pmovx!(pmovsxwd, words, 2, u32, i16, 4, from_dwords);
pmovx!(pmovsxwq, words, 2, u64, i16, 2, q_from);
pmovx!(pmovsxdq, dwords, 4, u64, i32, 2, q_from);
pmovx!(pmovzxbw, bytes, 1, u16, u8, 8, from_words);
pmovx!(pmovzxbd, bytes, 1, u32, u8, 4, from_dwords);
pmovx!(pmovzxbq, bytes, 1, u64, u8, 2, q_from);
pmovx!(pmovzxwd, words, 2, u32, u16, 4, from_dwords);
pmovx!(pmovzxwq, words, 2, u64, u16, 2, q_from);
pmovx!(pmovzxdq, dwords, 4, u64, u32, 2, q_from);

/// PINSR*: the value is in the source's low quadword (from a GPR or memory).
pub fn pinsrb(_: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let mut b = bytes(*d);
    b[(imm & 15) as usize] = s[0] as u8;
    *d = from_bytes(b);
    0
}
pub fn pinsrw(c: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let mut w = words(*d);
    w[(imm as usize) & (c.n / 2 - 1)] = s[0] as u16;
    *d = from_words(w);
    0
}
pub fn pinsrd(_: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let mut w = dwords(*d);
    w[(imm & 3) as usize] = s[0] as u32;
    *d = from_dwords(w);
    0
}
pub fn pinsrq(_: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    d[(imm & 1) as usize] = s[0];
    0
}
/// PEXTR*/EXTRACTPS: the source is the XMM register; the result is returned.
pub fn pextrb(_: &mut Cx, _: &mut V, s: V, imm: u8) -> u64 {
    bytes(s)[(imm & 15) as usize] as u64
}
pub fn pextrw(c: &mut Cx, _: &mut V, s: V, imm: u8) -> u64 {
    words(s)[(imm as usize) & (c.n / 2 - 1)] as u64
}
pub fn pextrd(_: &mut Cx, _: &mut V, s: V, imm: u8) -> u64 {
    dwords(s)[(imm & 3) as usize] as u64
}
pub fn pextrq(_: &mut Cx, _: &mut V, s: V, imm: u8) -> u64 {
    s[(imm & 1) as usize]
}
pub fn insertps(_: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    // A register source selects its element with imm[7:6]; a memory source is in lane 0
    // (the translator passes imm[7:6] = 0 for memory).
    let v = dwords(s)[(imm >> 6) as usize];
    let mut r = dwords(*d);
    r[(imm >> 4 & 3) as usize] = v;
    for (i, l) in r.iter_mut().enumerate() {
        if imm >> i & 1 != 0 {
            *l = 0;
        }
    }
    *d = from_dwords(r);
    0
}
pub fn pmovmskb(c: &mut Cx, _: &mut V, s: V, _: u8) -> u64 {
    let b = bytes(s);
    (0..c.n).map(|i| ((b[i] >> 7) as u64) << i).sum()
}
pub fn movmskps(_: &mut Cx, _: &mut V, s: V, _: u8) -> u64 {
    dwords(s)
        .iter()
        .enumerate()
        .map(|(i, v)| ((v >> 31) as u64) << i)
        .sum()
}
pub fn movmskpd(_: &mut Cx, _: &mut V, s: V, _: u8) -> u64 {
    (s[0] >> 63) | (s[1] >> 63) << 1
}
pub fn movddup(_: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    *d = [s[0], s[0]];
    0
}
pub fn movshdup(_: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let x = dwords(s);
    *d = from_dwords([x[1], x[1], x[3], x[3]]);
    0
}
pub fn movsldup(_: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let x = dwords(s);
    *d = from_dwords([x[0], x[0], x[2], x[2]]);
    0
}

pub fn ptest(c: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let zf = (d[0] & s[0]) | (d[1] & s[1]) == 0;
    let cf = (!d[0] & s[0]) | (!d[1] & s[1]) == 0;
    c.out_flags = Some((zf as u64) << 6 | cf as u64);
    0
}
pub fn phminposuw(_: &mut Cx, d: &mut V, s: V, _: u8) -> u64 {
    let w = words(s);
    let (mut idx, mut min) = (0usize, w[0]);
    for (i, &v) in w.iter().enumerate().skip(1) {
        if v < min {
            min = v;
            idx = i;
        }
    }
    *d = [min as u64 | (idx as u64) << 16, 0];
    0
}
pub fn mpsadbw(_: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let (x, y) = (bytes(*d), bytes(s));
    let a = (imm >> 2 & 1) as usize * 4;
    let b = (imm & 3) as usize * 4;
    *d = from_words(std::array::from_fn(|i| {
        (0..4)
            .map(|k| (x[a + i + k] as i32 - y[b + k] as i32).unsigned_abs() as u16)
            .sum()
    }));
    0
}

// ---- SSE4.2 string compares ----

/// The PCMPxSTRx core: returns IntRes2 (one bit per element) and the element count.
fn pcmpstr(a: V, alen: usize, b: V, blen: usize, imm: u8) -> (u32, usize) {
    let words_mode = imm & 1 != 0;
    let signed = imm & 2 != 0;
    let n = if words_mode { 8 } else { 16 };
    let elem = |v: V, i: usize| -> i32 {
        if words_mode {
            let w = words(v)[i];
            if signed {
                w as i16 as i32
            } else {
                w as i32
            }
        } else {
            let x = bytes(v)[i];
            if signed {
                x as i8 as i32
            } else {
                x as i32
            }
        }
    };
    let agg = imm >> 2 & 3;
    // BoolRes[j][i]: a[i] vs b[j] (j indexes the second operand), with validity overrides.
    let cmp = |i: usize, j: usize| -> bool {
        let (av, bv) = (i < alen, j < blen);
        match agg {
            0 => av && bv && elem(a, i) == elem(b, j), // equal any
            1 => {
                // ranges: a[i] (even = low, odd = high) vs b[j]
                if !(av && bv) {
                    return false;
                }
                if i % 2 == 0 {
                    elem(b, j) >= elem(a, i)
                } else {
                    elem(b, j) <= elem(a, i)
                }
            }
            2 => match (av, bv) {
                (true, true) => elem(a, i) == elem(b, j),
                (false, false) => true,
                _ => false,
            },
            _ => match (av, bv) {
                (true, true) => elem(a, i) == elem(b, j),
                (false, _) => true,
                (true, false) => false,
            },
        }
    };
    let mut res1: u32 = 0;
    for j in 0..n {
        let bit = match agg {
            0 => (0..n).any(|i| cmp(i, j)),
            1 => (0..n).step_by(2).any(|i| cmp(i, j) && cmp(i + 1, j)),
            2 => cmp(j, j),
            _ => (0..n - j).all(|i| cmp(i, i + j)),
        };
        res1 |= (bit as u32) << j;
    }
    let pol = imm >> 4 & 3;
    let mask = (1u32 << n) - 1;
    let res2 = match pol {
        0 | 2 => res1,
        1 => !res1 & mask,
        _ => res1 ^ ((1u32 << blen.min(n)) - 1),
    } & mask;
    (res2, n)
}

fn str_len_implicit(v: V, words_mode: bool) -> usize {
    if words_mode {
        words(v).iter().position(|&w| w == 0).unwrap_or(8)
    } else {
        bytes(v).iter().position(|&b| b == 0).unwrap_or(16)
    }
}

fn str_len_explicit(r: u64, words_mode: bool, wide: bool) -> usize {
    let n: i64 = if words_mode { 8 } else { 16 };
    let v = if wide { r as i64 } else { r as i32 as i64 };
    v.unsigned_abs().min(n as u64) as usize
}

fn pcmp_common(c: &mut Cx, d: V, s: V, imm: u8, explicit: bool) -> (u32, usize) {
    let wm = imm & 1 != 0;
    let (alen, blen) = if explicit {
        (
            str_len_explicit(c.rax, wm, c.wide),
            str_len_explicit(c.rdx, wm, c.wide),
        )
    } else {
        (str_len_implicit(d, wm), str_len_implicit(s, wm))
    };
    let (res2, n) = pcmpstr(d, alen, s, blen, imm);
    let cf = res2 != 0;
    let zf = blen < n;
    let sf = alen < n;
    let of = res2 & 1 != 0;
    c.out_flags = Some(cf as u64 | (zf as u64) << 6 | (sf as u64) << 7 | (of as u64) << 11);
    (res2, n)
}

fn pcmp_index(res2: u32, n: usize, imm: u8) -> u64 {
    if res2 == 0 {
        n as u64
    } else if imm & 0x40 != 0 {
        31 - res2.leading_zeros() as u64
    } else {
        res2.trailing_zeros() as u64
    }
}

fn pcmp_mask(res2: u32, n: usize, imm: u8) -> V {
    if imm & 0x40 == 0 {
        return [res2 as u64, 0];
    }
    let mut b = [0u8; 16];
    for i in 0..n {
        let on = res2 >> i & 1 != 0;
        if n == 8 {
            let w: u16 = if on { 0xffff } else { 0 };
            b[2 * i..2 * i + 2].copy_from_slice(&w.to_le_bytes());
        } else {
            b[i] = if on { 0xff } else { 0 };
        }
    }
    from_bytes(b)
}

pub fn pcmpistri(c: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let (r, n) = pcmp_common(c, *d, s, imm, false);
    pcmp_index(r, n, imm)
}
pub fn pcmpestri(c: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let (r, n) = pcmp_common(c, *d, s, imm, true);
    pcmp_index(r, n, imm)
}
pub fn pcmpistrm(c: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let (r, n) = pcmp_common(c, *d, s, imm, false);
    c.out_xmm0 = Some(pcmp_mask(r, n, imm));
    0
}
pub fn pcmpestrm(c: &mut Cx, d: &mut V, s: V, imm: u8) -> u64 {
    let (r, n) = pcmp_common(c, *d, s, imm, true);
    c.out_xmm0 = Some(pcmp_mask(r, n, imm));
    0
}

/// CRC32 (SSE4.2, CRC-32C with the reflected polynomial 0x82F63B78): `s[1]` is the
/// running CRC (the destination's low 32 bits), `s[0]` the data, `imm` its width in bytes.
pub fn crc32(_: &mut Cx, _: &mut V, s: V, imm: u8) -> u64 {
    let mut crc = s[1] as u32;
    for i in 0..imm as u32 {
        crc ^= (s[0] >> (8 * i)) as u8 as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                crc >> 1 ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    crc as u64
}
