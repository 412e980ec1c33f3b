//! Push and pop sequences, which the x64 backend looks up once per group of accesses
//! (`regalloc::access_groups`): within one page every access uses the leader's
//! translation; across a page boundary each access takes its own lookup, so the pages'
//! frames need not be adjacent and a fault on the second page is precise (the pushes
//! before it done, rsp and rip at the faulting push).

use frontend_x86::state::{X86State, G_RIP};
use jit::{Engine, EngineKind, StopReason};

mod common;
use common::{assert_halted, long_mode_engine, map};

const START: u64 = 0x10000;
/// push rax; push rcx; push rdx; push rbx; pop rsi; pop rdi; pop r8; pop r9; hlt
const CODE: &[u8] = &[
    0x50, 0x51, 0x52, 0x53, 0x5e, 0x5f, 0x41, 0x58, 0x41, 0x59, 0xf4,
];
/// Two stack pages, B above A, on frames in the other order.
const A: u64 = 0x20000;
const B: u64 = 0x21000;
const A_FRAME: u64 = 0x40000;
const B_FRAME: u64 = 0x30000;
const REGS: [(usize, u64); 4] = [
    (0, 0x0a0a_0a0a_0a0a_0a0a),
    (1, 0x0c0c_0c0c_0c0c_0c0c),
    (2, 0x0d0d_0d0d_0d0d_0d0d),
    (3, 0x0b0b_0b0b_0b0b_0b0b),
];

/// An engine that has run the code once already (so the code is translated and the
/// stack pages are in the TLB: a group's lookup can hit), ready to run it again with
/// `rsp`; A then unmapped unless `map_a`.
fn engine(kind: EngineKind, rsp: u64, map_a: bool) -> Engine {
    let mut e = long_mode_engine(kind);
    map(&mut e, START, START, 0);
    map(&mut e, B, B_FRAME, 0);
    map(&mut e, A, A_FRAME, 0);
    assert!(e.ram().write(START, CODE));
    e.env.icount_limit = u64::MAX;
    for pass in 0..2 {
        let mut s = X86State(&mut e.env);
        s.set_rip(START);
        s.set_gpr(4, rsp);
        for (r, v) in REGS {
            s.set_gpr(r, !v);
        }
        if pass == 0 {
            let r = e.run();
            assert_halted(&e, r, kind, START, CODE);
        }
    }
    for (r, v) in REGS {
        X86State(&mut e.env).set_gpr(r, v);
    }
    if !map_a {
        e.ram().write_u64(common::pte(A), 0);
        e.tlb_flush_page(A);
    }
    e
}

/// The frame address of stack address `va`.
fn frame(va: u64) -> u64 {
    match va & !0xfff {
        A => A_FRAME + (va & 0xfff),
        B => B_FRAME + (va & 0xfff),
        _ => panic!("{va:#x} is not a stack page"),
    }
}

fn read_u64(e: &mut Engine, pa: u64) -> u64 {
    let mut b = [0u8; 8];
    assert!(e.ram().read(pa, &mut b));
    u64::from_le_bytes(b)
}

#[test]
fn pushes_and_pops_within_and_across_pages() {
    for kind in [EngineKind::Jit, EngineKind::Interp] {
        // Within B; across B and A (two pushes on each page).
        for rsp in [B + 0x800, B + 0x10] {
            let mut e = engine(kind, rsp, true);
            let r = e.run();
            assert_halted(&e, r, kind, START, CODE);
            for (k, (_, v)) in REGS.iter().enumerate() {
                let va = rsp - 8 * (k as u64 + 1);
                assert_eq!(
                    read_u64(&mut e, frame(va)),
                    *v,
                    "{kind:?}: push {k} at {va:#x}"
                );
            }
            let s = X86State(&mut e.env);
            assert_eq!(s.gpr(4), rsp, "{kind:?}: rsp");
            // The pops read back in reverse order.
            assert_eq!(
                [s.gpr(6), s.gpr(7), s.gpr(8), s.gpr(9)],
                [REGS[3].1, REGS[2].1, REGS[1].1, REGS[0].1],
                "{kind:?}: pops from {rsp:#x}"
            );
        }
    }
}

#[test]
fn a_push_onto_an_unmapped_page_faults_after_the_ones_before_it() {
    for kind in [EngineKind::Jit, EngineKind::Interp] {
        let rsp = B + 0x10;
        let mut e = engine(kind, rsp, false);
        match e.run() {
            StopReason::Exception(f) => assert_eq!(
                (f.vector, f.error_code, f.addr),
                (14, Some(6), A + 0xff8),
                "{kind:?}"
            ),
            r => panic!("{kind:?}: {r:?}"),
        }
        assert_eq!(
            e.env.g[G_RIP as usize],
            START + 2,
            "{kind:?}: at the third push"
        );
        assert_eq!(X86State(&mut e.env).gpr(4), B, "{kind:?}: two pushes done");
        assert_eq!(read_u64(&mut e, frame(B + 8)), REGS[0].1, "{kind:?}");
        assert_eq!(read_u64(&mut e, frame(B)), REGS[1].1, "{kind:?}");
    }
}
