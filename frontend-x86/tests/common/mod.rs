//! Shared by the tests that run real x86 code: a 4-level page table at PML4..PT whose one L1
//! table covers the first 2 MiB (pages mapped with `map`), and 64-bit mode at CPL 3.
#![allow(dead_code)]

use jit::{Engine, EngineKind, StopReason};

pub const P: u64 = 1;
pub const RW: u64 = 2;
pub const US: u64 = 4;
pub const PML4: u64 = 0x1000;
pub const PDPT: u64 = 0x2000;
pub const PD: u64 = 0x3000;
pub const PT: u64 = 0x4000;

/// The L1 entry that maps `va` (below 2 MiB).
pub fn pte(va: u64) -> u64 {
    PT + ((va >> 12) & 511) * 8
}

/// Map page `va` to `pa`, present, user, writable, plus `flags`.
pub fn map(e: &mut Engine, va: u64, pa: u64, flags: u64) {
    e.ram().write_u64(pte(va), pa | P | RW | US | flags);
}

/// An engine of `kind` with 1 MiB of RAM, the tables linked (no page mapped yet) and the
/// CPU in 64-bit mode at CPL 3 with CR3 = PML4.
pub fn long_mode_engine(kind: EngineKind) -> Engine {
    let mut e = frontend_x86::new_engine(1 << 20, kind).expect("engine");
    let ram = e.ram();
    ram.write_u64(PML4, PDPT | P | RW | US);
    ram.write_u64(PDPT, PD | P | RW | US);
    ram.write_u64(PD, PT | P | RW | US);
    frontend_x86::setup_long_mode(&mut e.env, PML4, 3);
    e
}

/// `r` must be the stop at a HLT, and rip at that HLT (the last byte of `code` at `start`).
pub fn assert_halted(e: &Engine, r: StopReason, kind: EngineKind, start: u64, code: &[u8]) {
    assert!(
        matches!(r, StopReason::Platform { op, .. } if op == frontend_x86::PlatformOp::Hlt as u32),
        "{kind:?}: stopped with {r:?}"
    );
    assert_eq!(
        e.env.g[frontend_x86::state::G_RIP as usize],
        start + code.len() as u64 - 1,
        "{kind:?}: rip at the hlt"
    );
}
