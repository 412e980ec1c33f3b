//! RFLAGS.TF: the engine stops after every instruction (`StopReason::SingleStep`), after
//! every round of a REP string instruction (rip still at it until the last), never after
//! an instruction that faults, and from the instruction after a POPF that set TF.

use frontend_x86::state::{X86State, G_RIP};
use frontend_x86::PlatformOp;
use jit::{Engine, EngineKind, StopReason};

mod common;
use common::{long_mode_engine, map};

const CODE: u64 = 0x10000;
const DATA: u64 = 0x18000;
const STACK: u64 = 0x19000;

/// At CODE: mov eax,1; add eax,2; mov ecx,3; mov edi,DATA; rep stosb;
/// lea rbx,[rip+3]; jmp rbx; int3; hlt
const STEPS: &[u8] = &[
    0xb8, 1, 0, 0, 0, 0x83, 0xc0, 2, 0xb9, 3, 0, 0, 0, 0xbf, 0x00, 0x80, 0x01, 0x00, 0xf3, 0xaa,
    0x48, 0x8d, 0x1d, 3, 0, 0, 0, 0xff, 0xe3, 0xcc, 0xf4,
];
/// At CODE + 0x100: pushfq; or qword [rsp], 0x100; popfq; mov eax,5; mov eax,6; hlt
const POPF: &[u8] = &[
    0x9c, 0x48, 0x81, 0x0c, 0x24, 0x00, 0x01, 0x00, 0x00, 0x9d, 0xb8, 5, 0, 0, 0, 0xb8, 6, 0, 0, 0,
    0xf4,
];
/// At CODE + 0x200: mov eax, [0x500000] (unmapped)
const FAULT: &[u8] = &[0x8b, 0x04, 0x25, 0x00, 0x00, 0x50, 0x00];

fn setup(kind: EngineKind, start: u64, tf: bool) -> Engine {
    let mut e = long_mode_engine(kind);
    for page in [CODE, DATA, STACK] {
        map(&mut e, page, page, 0);
    }
    let ram = e.ram();
    assert!(ram.write(CODE, STEPS));
    assert!(ram.write(CODE + 0x100, POPF));
    assert!(ram.write(CODE + 0x200, FAULT));
    let mut s = X86State(&mut e.env);
    s.set_rip(start);
    s.set_gpr(4, STACK + 0xff0);
    let fl = s.rflags();
    s.set_rflags(if tf { fl | 0x100 } else { fl & !0x100 });
    e.env.icount_limit = u64::MAX;
    e
}

fn rip(e: &mut Engine) -> u64 {
    e.env.g[G_RIP as usize]
}

#[test]
fn every_instruction_and_every_rep_round_traps() {
    for kind in [EngineKind::Jit, EngineKind::Interp] {
        let mut e = setup(kind, CODE, true);
        // (rip after the stop, instructions retired so far)
        let want = [
            (CODE + 5, 1),
            (CODE + 8, 2),
            (CODE + 13, 3),
            (CODE + 18, 4),
            (CODE + 18, 4), // rep stosb: rounds 1 and 2 leave rip at it
            (CODE + 18, 4),
            (CODE + 20, 5),
            (CODE + 27, 6),
            (CODE + 30, 7), // jmp rbx: at its target, past the int3
        ];
        for (k, &(r, n)) in want.iter().enumerate() {
            let stop = e.run();
            assert_eq!(stop, StopReason::SingleStep, "{kind:?} step {k}");
            assert_eq!((rip(&mut e), e.env.icount), (r, n), "{kind:?} step {k}");
        }
        let s = X86State(&mut e.env);
        assert_eq!(
            (s.gpr(0), s.gpr(1), s.gpr(3)),
            (3, 0, CODE + 30),
            "{kind:?}"
        );
        let mut b = [0u8; 4];
        assert!(e.ram().read(DATA, &mut b));
        assert_eq!(b, [3, 3, 3, 0], "{kind:?}");
        // The HLT is the platform's (no trap from the engine).
        assert!(
            matches!(e.run(), StopReason::Platform { op, .. } if op == PlatformOp::Hlt as u32),
            "{kind:?}"
        );
    }
}

#[test]
fn popf_setting_tf_traps_after_the_next_instruction() {
    for kind in [EngineKind::Jit, EngineKind::Interp] {
        let mut e = setup(kind, CODE + 0x100, false);
        assert_eq!(e.run(), StopReason::SingleStep, "{kind:?}");
        assert_eq!(
            (rip(&mut e), X86State(&mut e.env).gpr(0)),
            (CODE + 0x10f, 5),
            "{kind:?}"
        );
        assert_eq!(e.run(), StopReason::SingleStep, "{kind:?}");
        assert_eq!(
            (rip(&mut e), X86State(&mut e.env).gpr(0)),
            (CODE + 0x114, 6),
            "{kind:?}"
        );
    }
}

#[test]
fn a_faulting_instruction_does_not_trap() {
    for kind in [EngineKind::Jit, EngineKind::Interp] {
        let mut e = setup(kind, CODE + 0x200, true);
        match e.run() {
            StopReason::Exception(f) => assert_eq!((f.vector, f.addr), (14, 0x500000), "{kind:?}"),
            r => panic!("{kind:?}: expected #PF, got {r:?}"),
        }
        assert_eq!((rip(&mut e), e.env.icount), (CODE + 0x200, 0), "{kind:?}");
        // A fetch fault under TF (code not mapped) leaves the budget as it was.
        X86State(&mut e.env).set_rip(0x50_0000);
        match e.run() {
            StopReason::Exception(f) => assert_eq!((f.vector, f.addr), (14, 0x500000), "{kind:?}"),
            r => panic!("{kind:?}: expected #PF, got {r:?}"),
        }
        assert_eq!(e.env.icount_limit, u64::MAX, "{kind:?}");
    }
}
