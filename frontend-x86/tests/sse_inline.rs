//! SSE arithmetic that the x64 backend runs as the host's own instruction (`Inline::Sse`),
//! whose exception flags stay in the host's MXCSR while generated code runs: every
//! engine must show the guest the same results and the same MXCSR flags, through STMXCSR,
//! after LDMXCSR cleared them, and in the state the run loop sees after an exit.

use frontend_x86::state::{xmm_g, X86State, G_MXCSR};
use jit::{Engine, EngineKind};

mod common;
use common::{assert_halted, long_mode_engine, map};

const START: u64 = 0x10000;
const DATA: u64 = 0x20000;

/// divps xmm0, xmm1; stmxcsr [0x20000]; ldmxcsr [0x20004]; addps xmm2, xmm2;
/// stmxcsr [0x20008]; mulps xmm3, xmm4; mulss xmm5, [0x2000c]; hlt
const CODE: &[u8] = &[
    0x0f, 0x5e, 0xc1, 0x0f, 0xae, 0x1c, 0x25, 0x00, 0x00, 0x02, 0x00, 0x0f, 0xae, 0x14, 0x25, 0x04,
    0x00, 0x02, 0x00, 0x0f, 0x58, 0xd2, 0x0f, 0xae, 0x1c, 0x25, 0x08, 0x00, 0x02, 0x00, 0x0f, 0x59,
    0xdc, 0xf3, 0x0f, 0x59, 0x2c, 0x25, 0x0c, 0x00, 0x02, 0x00, 0xf4,
];

const ONE: u32 = 0x3f80_0000;
const THREE: u32 = 0x4040_0000;
/// 2^-100: its square underflows single precision (UE and PE when masked, result +0).
const TINY: u32 = 0x0d80_0000;

fn splat(x: u32) -> [u64; 2] {
    let q = x as u64 | (x as u64) << 32;
    [q, q]
}

fn run(kind: EngineKind, mxcsr: u64) -> Engine {
    let mut e = long_mode_engine(kind);
    map(&mut e, START, START, 0);
    map(&mut e, DATA, DATA, 0);
    assert!(e.ram().write(START, CODE));
    e.ram().write_u64(DATA, 0);
    e.ram().write_u64(DATA + 4, 0x1f80 | (TINY as u64) << 32);
    e.ram().write_u64(DATA + 12, TINY as u64);
    let regs = [
        (0, splat(ONE)),
        (1, splat(THREE)),
        (2, splat(ONE)),
        (3, splat(TINY)),
        (4, splat(TINY)),
        (
            5,
            [0x1234_5678_0000_0000 | TINY as u64, 0x9abc_def0_0fed_cba9],
        ),
    ];
    for (i, v) in regs {
        e.env.g[xmm_g(i) as usize] = v[0];
        e.env.g[xmm_g(i) as usize + 1] = v[1];
    }
    e.env.g[G_MXCSR as usize] = mxcsr;
    X86State(&mut e.env).set_rip(START);
    e.env.icount_limit = u64::MAX;
    let r = e.run();
    assert_halted(&e, r, kind, START, CODE);
    e
}

fn xmm(e: &Engine, i: u32) -> [u64; 2] {
    [e.env.g[xmm_g(i) as usize], e.env.g[xmm_g(i) as usize + 1]]
}

/// From MXCSR 0x1f80 (the control bits the x64 backend runs inline): 1/3 sets PE, which
/// STMXCSR sees; LDMXCSR clears it and an exact ADDPS leaves it clear; the underflowing
/// products set UE and PE, which the state after the exit holds.
#[test]
fn inline_sse_flags_are_the_guests() {
    for kind in [EngineKind::Jit, EngineKind::Interp] {
        let mut e = run(kind, 0x1f80);
        assert_eq!(
            xmm(&e, 0),
            splat(0x3eaa_aaab),
            "{kind:?}: 1/3 rounded to nearest"
        );
        assert_eq!(
            e.ram().read_u32(DATA),
            Some(0x1fa0),
            "{kind:?}: PE after the division"
        );
        assert_eq!(xmm(&e, 2), splat(0x4000_0000), "{kind:?}: 1 + 1");
        assert_eq!(
            e.ram().read_u32(DATA + 8),
            Some(0x1f80),
            "{kind:?}: cleared by LDMXCSR"
        );
        assert_eq!(xmm(&e, 3), [0, 0], "{kind:?}: underflow to +0");
        assert_eq!(
            xmm(&e, 5),
            [0x1234_5678_0000_0000, 0x9abc_def0_0fed_cba9],
            "{kind:?}: MULSS keeps the upper elements"
        );
        assert_eq!(
            e.env.g[G_MXCSR as usize], 0x1fb0,
            "{kind:?}: UE and PE after the exit"
        );
    }
}

/// Rounding toward zero (not the host's control bits): the helper computes 1/3 rounded
/// down; after LDMXCSR restores 0x1f80 the rest runs as above.
#[test]
fn other_control_bits_take_the_helper() {
    for kind in [EngineKind::Jit, EngineKind::Interp] {
        let mut e = run(kind, 0x7f80);
        assert_eq!(
            xmm(&e, 0),
            splat(0x3eaa_aaaa),
            "{kind:?}: 1/3 rounded toward zero"
        );
        assert_eq!(e.ram().read_u32(DATA), Some(0x7fa0), "{kind:?}");
        assert_eq!(e.ram().read_u32(DATA + 8), Some(0x1f80), "{kind:?}");
        assert_eq!(xmm(&e, 3), [0, 0], "{kind:?}");
        assert_eq!(e.env.g[G_MXCSR as usize], 0x1fb0, "{kind:?}");
    }
}
