//! A block continues through an unconditional direct jump to a target on its own page
//! (the translator's `followed` jumps): the jumped-over bytes never run, the jump counts
//! as a retired instruction, and the block's guest bytes include the code at the target,
//! so a store there invalidates it (here, a store into the block being executed).

use frontend_x86::state::X86State;
use jit::{Engine, EngineKind};

mod common;
use common::{assert_halted, long_mode_engine, map};

const START: u64 = 0x10000;

fn engine(kind: EngineKind, code: &[u8]) -> Engine {
    let mut e = long_mode_engine(kind);
    map(&mut e, START, START, 0);
    assert!(e.ram().write(START, code));
    X86State(&mut e.env).set_rip(START);
    e.env.icount_limit = u64::MAX;
    e
}

#[test]
fn a_block_continues_at_a_jump_target_and_skips_the_bytes_between() {
    const CODE: &[u8] = &[
        0xb8, 0x01, 0, 0, 0, // mov eax, 1
        0xeb, 0x03, // jmp +3
        0xcc, 0xf4, 0xf9, // int3; hlt; stc (never run)
        0x83, 0xc0, 0x02, // add eax, 2
        0xe9, 0x01, 0, 0, 0, // jmp +1 (a second jump ends the block: one per block)
        0xcc, // int3 (never run)
        0x83, 0xc0, 0x04, // add eax, 4
        0xf4, // hlt
    ];
    for kind in [EngineKind::Jit, EngineKind::Interp] {
        let mut e = engine(kind, CODE);
        let r = e.run();
        assert_halted(&e, r, kind, START, CODE);
        assert_eq!(X86State(&mut e.env).gpr(0), 7, "{kind:?}: eax");
        // mov, jmp, add, jmp, add retired before the hlt.
        assert_eq!(e.env.icount, 5, "{kind:?}: instructions retired");
        let s = e.stats();
        assert_eq!(s.insns_translated, 6, "{kind:?}: instructions translated");
        assert_eq!(s.tbs_translated, 2, "{kind:?}: blocks translated");
    }
}

#[test]
fn a_store_into_code_after_a_followed_jump_invalidates_the_running_block() {
    const CODE: &[u8] = &[
        0xeb, 0x02, // jmp +2
        0xcc, 0xcc, // int3; int3 (never run)
        0xc6, 0x05, 0x01, 0, 0, 0, 0x05, // mov byte [rip+1], 5: the imm8 of the next mov
        0xb0, 0x07, // mov al, 7
        0xf4, // hlt
    ];
    for kind in [EngineKind::Jit, EngineKind::Interp] {
        let mut e = engine(kind, CODE);
        let r = e.run();
        assert_halted(&e, r, kind, START, CODE);
        assert_eq!(
            X86State(&mut e.env).gpr(0) & 0xff,
            5,
            "{kind:?}: al (the patched immediate)"
        );
        assert_eq!(e.stats().smc_restarts, 1, "{kind:?}: SMC restarts");
    }
}
