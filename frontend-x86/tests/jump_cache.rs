//! The indirect-jump cache and the chains to other pages across TLB flushes, with real x86
//! page tables: a flush keeps the entries whose code pages still map as before (no new
//! lookup), and a remapped code page is never reached through a stale entry or chain.

use frontend_x86::state::{X86State, G_RIP};
use jit::{Engine, EngineKind, StopReason};

mod common;
use common::{long_mode_engine, map, pte, P, RW, US};

/// Code at virtual and physical 0x10000: `mov eax, 0x20000; jmp rax` (an indirect jump) or
/// `jmp 0x20000` (a direct jump to another page, chained with an epoch check).
const START: u64 = 0x10000;
/// The jump target's virtual page, mapped first to TARGET_A, then to TARGET_B.
const TARGET: u64 = 0x20000;
const TARGET_A: u64 = 0x30000;
const TARGET_B: u64 = 0x40000;

fn setup(direct: bool) -> Engine {
    let mut e = long_mode_engine(EngineKind::Jit);
    let ram = e.ram();
    let mut code = Vec::new();
    if direct {
        // jmp rel32
        code.push(0xe9);
        code.extend_from_slice(&((TARGET - (START + 5)) as u32).to_le_bytes());
    } else {
        // mov eax, TARGET; jmp rax
        code.push(0xb8);
        code.extend_from_slice(&(TARGET as u32).to_le_bytes());
        code.extend_from_slice(&[0xff, 0xe0]);
    }
    assert!(ram.write(START, &code));
    // mov ebx, 1; hlt   and   mov ebx, 2; hlt
    assert!(ram.write(TARGET_A, &[0xbb, 1, 0, 0, 0, 0xf4]));
    assert!(ram.write(TARGET_B, &[0xbb, 2, 0, 0, 0, 0xf4]));
    map(&mut e, START, START, 0);
    map(&mut e, TARGET, TARGET_A, 0);
    e
}

/// Run from START to the HLT; return (rbx, run-loop lookups made).
fn run(e: &mut Engine) -> (u64, u64) {
    X86State(&mut e.env).set_rip(START);
    X86State(&mut e.env).set_gpr(3, 0);
    e.env.icount_limit = u64::MAX;
    let before = e.stats().lookups;
    let r = e.run();
    assert!(
        matches!(r, StopReason::Platform { .. }),
        "stopped with {r:?}"
    );
    assert_eq!(e.env.g[G_RIP as usize], TARGET + 5, "stopped at the HLT");
    (X86State(&mut e.env).gpr(3), e.stats().lookups - before)
}

#[test]
fn flush_keeps_unchanged_code_and_drops_remapped_code() {
    for direct in [false, true] {
        flush_keeps_and_drops(direct);
    }
}

fn flush_keeps_and_drops(direct: bool) {
    let mut e = setup(direct);
    // First run: the indirect jump misses the cache and goes through the run loop.
    assert_eq!(run(&mut e), (1, 2));
    // Second run: the generated code's probe finds the target.
    assert_eq!(run(&mut e), (1, 1));
    // A flush with the code pages mapped as before keeps the entry.
    let kept = e.stats().jc_kept;
    e.tlb_flush();
    assert!(e.stats().jc_kept > kept);
    assert_eq!(run(&mut e), (1, 1));
    // Remap the target page: without a flush the old translation may still be used (as a
    // TLB would), after the flush the new code must run.
    map(&mut e, TARGET, TARGET_B, 0);
    e.tlb_flush();
    assert_eq!(run(&mut e), (2, 2));
    assert_eq!(run(&mut e), (2, 1));
    // Removing execute rights (NX) and flushing: the fetch faults.
    e.ram()
        .write_u64(pte(TARGET), TARGET_B | P | RW | US | 1 << 63);
    e.tlb_flush();
    X86State(&mut e.env).set_rip(START);
    match e.run() {
        StopReason::Exception(f) => assert_eq!((f.vector, f.addr), (14, TARGET)),
        r => panic!("expected #PF at the NX target, got {r:?}"),
    }
}

#[test]
fn probe_sets_no_accessed_bits() {
    let mut e = setup(false);
    assert_eq!(run(&mut e), (1, 2));
    // Clear the accessed bits; a kept flush must not set them again (a probe has no side
    // effects), while the next refill of a data or code TLB entry would.
    let pte = pte(TARGET);
    let v = e.ram().read_u64(pte).unwrap();
    e.ram().write_u64(pte, v & !0x20);
    e.tlb_flush();
    assert_eq!(e.ram().read_u64(pte).unwrap() & 0x20, 0);
}

/// A context switch (`tlb_flush_lower`) while another MMU mode runs (a PV kernel, whose
/// user code fills the lower half of the jump cache): the lower half is checked when its
/// own mode runs again, under the page tables it has then; kept when they map its code as
/// before, dropped when they do not.
#[test]
fn context_switch_checks_the_lower_half_in_its_own_mode() {
    let mut e = setup(false);
    assert_eq!(run(&mut e), (1, 2));
    assert_eq!(run(&mut e), (1, 1));
    let user = e.env.mmu_idx;
    // "Kernel" mode (address-space id 1 selects another MMU mode): the switch defers the
    // check, so nothing is dropped yet.
    X86State(&mut e.env).set_asid(1);
    assert_ne!(e.env.mmu_idx, user);
    let (kept, dropped) = (e.stats().jc_kept, e.stats().jc_dropped);
    e.tlb_flush_lower(e.env.mmu_idx as usize);
    assert_eq!((e.stats().jc_kept, e.stats().jc_dropped), (kept, dropped));
    // Back in the user mode with the same mappings: kept, no lookup.
    X86State(&mut e.env).set_asid(0);
    assert_eq!(run(&mut e), (1, 1));
    assert_eq!(e.stats().jc_kept, kept + 1);
    // Another switch, and the new tables map the target elsewhere: dropped, new code.
    X86State(&mut e.env).set_asid(1);
    e.tlb_flush_lower(e.env.mmu_idx as usize);
    map(&mut e, TARGET, TARGET_B, 0);
    X86State(&mut e.env).set_asid(0);
    assert_eq!(run(&mut e), (2, 2));
    assert_eq!(e.stats().jc_dropped, dropped + 1);
}

/// A block reached through the jump cache (an indirect call) and then rewritten by a store
/// is never entered again through its cache entry: the invalidation clears the entries at
/// the pcs the block was entered for (`Core::invalidate_tb`).
#[test]
fn rewritten_code_is_not_reached_through_the_jump_cache() {
    const CALLEE: u64 = 0x20000;
    const STACK: u64 = 0x50000;
    let mut e = long_mode_engine(EngineKind::Jit);
    #[rustfmt::skip]
    let code = [
        0x31, 0xdb,                         // xor ebx, ebx
        0xbe, 3, 0, 0, 0,                   // mov esi, 3
        0xb8, 0, 0, 2, 0,                   // loop: mov eax, CALLEE
        0xff, 0xd0,                         // call rax
        0x01, 0xcb,                         // add ebx, ecx
        0xc6, 0x04, 0x25, 1, 0, 2, 0, 5,    // mov byte [CALLEE + 1], 5
        0xff, 0xce,                         // dec esi
        0x75, 0xeb,                         // jnz loop
        0xf4,                               // hlt
    ];
    let ram = e.ram();
    assert!(ram.write(START, &code));
    // mov ecx, 1; ret
    assert!(ram.write(CALLEE, &[0xb9, 1, 0, 0, 0, 0xc3]));
    map(&mut e, START, START, 0);
    map(&mut e, CALLEE, CALLEE, 0);
    map(&mut e, STACK - 0x1000, STACK - 0x1000, 0);
    let mut s = X86State(&mut e.env);
    s.set_rip(START);
    s.set_gpr(4, STACK);
    e.env.icount_limit = u64::MAX;
    let r = e.run();
    assert!(matches!(r, StopReason::Platform { .. }), "stopped with {r:?}");
    assert_eq!(e.env.g[G_RIP as usize], START + code.len() as u64 - 1, "at the hlt");
    // The first call runs `mov ecx, 1`, the next two the rewritten `mov ecx, 5`.
    assert_eq!(X86State(&mut e.env).gpr(3), 1 + 5 + 5);
    assert!(e.stats().invalidations >= 1);
}
