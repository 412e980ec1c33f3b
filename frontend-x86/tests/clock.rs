//! RDTSC/RDTSCP: with `Env::inline_clock` the block reads the platform's clock itself (the
//! retired-instruction count at the instruction plus `Env::clock_offset`); otherwise they
//! exit to the platform.

use frontend_x86::state::{X86State, G_RIP, G_TSC_AUX};
use frontend_x86::PlatformOp;
use jit::{Engine, EngineKind, StopReason};

mod common;
use common::{long_mode_engine, map};

const START: u64 = 0x10000;

/// nop; nop; rdtsc; mov rsi, rax; mov rdi, rdx; rdtscp; hlt
const CODE: &[u8] = &[
    0x90, 0x90, 0x0f, 0x31, 0x48, 0x89, 0xc6, 0x48, 0x89, 0xd7, 0x0f, 0x01, 0xf9, 0xf4,
];

fn setup(kind: EngineKind) -> Engine {
    let mut e = long_mode_engine(kind);
    map(&mut e, START, START, 0);
    assert!(e.ram().write(START, CODE));
    X86State(&mut e.env).set_rip(START);
    e.env.g[G_TSC_AUX as usize] = 0xdead_0000_0000_0007;
    e.env.icount = 5;
    e.env.icount_limit = u64::MAX;
    e
}

#[test]
fn inline_clock_is_the_instruction_count_plus_the_offset() {
    for kind in [EngineKind::Jit, EngineKind::Interp] {
        let mut e = setup(kind);
        e.env.inline_clock = 1;
        e.env.clock_offset = 0x2_ffff_fff9;
        let r = e.run();
        assert!(
            matches!(r, StopReason::Platform { op, .. } if op == PlatformOp::Hlt as u32),
            "{kind:?}: stopped with {r:?}"
        );
        assert_eq!(e.env.g[G_RIP as usize], START + 13, "{kind:?}: at the HLT");
        let s = X86State(&mut e.env);
        // rdtsc is instruction 2 (5 + 2 + offset), rdtscp instruction 5.
        assert_eq!((s.gpr(6), s.gpr(7)), (0, 3), "{kind:?}: rdtsc");
        assert_eq!(
            (s.gpr(0), s.gpr(2), s.gpr(1)),
            (3, 3, 7),
            "{kind:?}: rdtscp"
        );
    }
}

#[test]
fn without_inline_clock_rdtsc_exits_to_the_platform() {
    for kind in [EngineKind::Jit, EngineKind::Interp] {
        let mut e = setup(kind);
        let r = e.run();
        assert!(
            matches!(r, StopReason::Platform { op, len: 2, .. } if op == PlatformOp::Rdtsc as u32),
            "{kind:?}: stopped with {r:?}"
        );
        assert_eq!(
            (e.env.g[G_RIP as usize], e.env.icount),
            (START + 2, 7),
            "{kind:?}"
        );
    }
}
