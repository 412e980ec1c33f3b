//! Floating point and SIMD: x87, MMX, SSE..SSE4.2 and the state save/restore
//! instructions. Arithmetic goes through [`soft`], a soft-float with x86 semantics, so
//! results are bit-identical on every host.

pub mod soft;
