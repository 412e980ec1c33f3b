//! Selective TLB flushes with real x86 page tables: `Engine::tlb_flush_stale` drops the
//! translations made from page-table entries reported as changed (`Engine::pt_changed`)
//! and keeps the rest; helper accesses (string instructions) hit the TLB instead of
//! walking; a read of a dirty, writable page fills the TLB for writes too; a page that
//! becomes code loses its write entries (found through the slot noted at fill time); a
//! store into the running block, entered through a chain, restarts as it must.

use frontend_x86::state::{X86State, G_RIP};
use jit::{Engine, EngineKind, StopReason};

mod common;
use common::{long_mode_engine, map, pte, P, PD, RW, US};

const D: u64 = 0x40;
/// A second L1 table no walk reads.
const PT_OTHER: u64 = 0x5000;
const START: u64 = 0x10000;
/// The data page, mapped to DATA_A or DATA_B.
const DATA: u64 = 0x20000;
const DATA_A: u64 = 0x30000;
const DATA_B: u64 = 0x40000;

fn setup(data_flags: u64) -> Engine {
    let mut e = long_mode_engine(EngineKind::Jit);
    let ram = e.ram();
    ram.write_u64(PD + 8, PT_OTHER | P | RW | US);
    // mov rax, [DATA]; mov edi, DATA + 8; mov ecx, 4; rep stosb (a helper); hlt
    let mut code = vec![0x48, 0x8b, 0x04, 0x25];
    code.extend_from_slice(&(DATA as u32).to_le_bytes());
    code.push(0xbf);
    code.extend_from_slice(&((DATA + 8) as u32).to_le_bytes());
    code.extend_from_slice(&[0xb9, 4, 0, 0, 0]);
    code.extend_from_slice(&[0xf3, 0xaa, 0xf4]);
    assert!(ram.write(START, &code));
    assert!(ram.write_u64(DATA_A, 0x1111));
    assert!(ram.write_u64(DATA_B, 0x2222));
    map(&mut e, START, START, 0);
    map(&mut e, DATA, DATA_A, data_flags);
    e
}

/// Run from START to the HLT; return (rax, page walks made).
fn run(e: &mut Engine) -> (u64, u64) {
    X86State(&mut e.env).set_rip(START);
    e.env.icount_limit = u64::MAX;
    let before = e.stats().walks;
    let r = e.run();
    assert!(
        matches!(r, StopReason::Platform { .. }),
        "stopped with {r:?}"
    );
    assert_eq!(e.env.g[G_RIP as usize], START + 20, "stopped at the HLT");
    (X86State(&mut e.env).gpr(0), e.stats().walks - before)
}

#[test]
fn flush_drops_what_changed_entries_made_and_keeps_the_rest() {
    let mut e = setup(D);
    // One walk: the read of a dirty writable page fills the write tag as well, so the
    // string store after it (a helper) needs none.
    assert_eq!(run(&mut e), (0x1111, 1));
    assert_eq!(run(&mut e), (0x1111, 0), "everything hits the TLB");
    let flushes = e.stats().tlb_flushes;

    // A change no walk read (another L1 table) needs no flush at all.
    e.ram().write_u64(PT_OTHER, DATA_B | P | RW | US);
    e.pt_changed(PT_OTHER);
    e.tlb_flush_stale();
    assert_eq!(e.stats().tlb_flushes, flushes);
    assert_eq!(run(&mut e), (0x1111, 0));

    // Remapping DATA without reporting it: a flush request has nothing to drop (the
    // platform's contract is broken, which shows the TLB was kept).
    map(&mut e, DATA, DATA_B, D);
    e.tlb_flush_stale();
    assert_eq!(run(&mut e), (0x1111, 0));

    // Reported: the entry stays until the guest flushes, as on hardware...
    e.pt_changed(pte(DATA));
    assert_eq!(run(&mut e), (0x1111, 0));
    // ...and the flush drops it.
    e.tlb_flush_stale();
    assert_eq!(e.stats().tlb_flushes, flushes + 1);
    assert_eq!(run(&mut e).0, 0x2222);
}

#[test]
fn a_clean_page_walks_again_for_its_first_write() {
    let mut e = setup(0);
    // The read fills the TLB for reads only; the first write walks to set the dirty bit.
    assert_eq!(run(&mut e), (0x1111, 2));
    assert_ne!(e.ram().read_u64(pte(DATA)).unwrap() & D, 0, "dirty bit set");
    assert_eq!(run(&mut e), (0x1111, 0));
}

/// A page written through the TLB and then translated as code keeps no write entry: the
/// next store to it goes through the slow path and drops the stale translation.
#[test]
fn translated_code_loses_its_write_entries() {
    const X: u64 = 0x50000;
    let mut e = setup(D);
    // START: mov [X + 1], ebx; jmp X      X: mov eax, imm32; hlt
    let mut code = vec![0x89, 0x1c, 0x25];
    code.extend_from_slice(&((X + 1) as u32).to_le_bytes());
    code.push(0xe9);
    code.extend_from_slice(&((X as i64 - (START as i64 + 12)) as i32).to_le_bytes());
    assert!(e.ram().write(START, &code));
    assert!(e.ram().write(X, &[0xb8, 0, 0, 0, 0, 0xf4]));
    map(&mut e, X, X, D);
    for v in [5u64, 7, 9] {
        X86State(&mut e.env).set_rip(START);
        X86State(&mut e.env).set_gpr(3, v);
        e.env.icount_limit = u64::MAX;
        assert!(matches!(e.run(), StopReason::Platform { .. }));
        assert_eq!(e.env.g[G_RIP as usize], X + 5, "stopped at X's HLT");
        assert_eq!(
            X86State(&mut e.env).gpr(0),
            v,
            "X ran with the value just stored"
        );
    }
}

/// A store into the running block's own code, in a block entered through a chain (so
/// not from the run loop): the slow path knows which block runs, restarts the store
/// alone, and the modified instruction runs with its new bytes.
#[test]
fn store_into_the_running_block_entered_through_a_chain() {
    let mut e = setup(D);
    // START: cmp eax, eax ; je B (same page, chained after the first pass; a jmp would
    //        be followed, making B part of this block) ; hlt
    // B:     mov [rdi], bl ; C: mov al, imm8 ; hlt
    let b = START + 0x40;
    let c = b + 2;
    let mut code = vec![0x39, 0xc0, 0x74, (b - (START + 4)) as u8, 0xf4];
    code.resize(0x40, 0x90);
    code.extend_from_slice(&[0x88, 0x1f, 0xb0, 0x00, 0xf4]);
    assert!(e.ram().write(START, &code));
    let run = |e: &mut Engine, rdi: u64, bl: u64| {
        X86State(&mut e.env).set_rip(START);
        X86State(&mut e.env).set_gpr(7, rdi);
        X86State(&mut e.env).set_gpr(3, bl);
        X86State(&mut e.env).set_gpr(0, 0);
        e.env.icount_limit = u64::MAX;
        assert!(matches!(e.run(), StopReason::Platform { .. }));
        assert_eq!(e.env.g[G_RIP as usize], c + 2, "stopped at the HLT");
        X86State(&mut e.env).gpr(0)
    };
    // Twice storing elsewhere: B stays valid and A gets chained to it.
    assert_eq!(run(&mut e, DATA, 0x11), 0);
    assert_eq!(run(&mut e, DATA, 0x22), 0);
    assert!(e.stats().chains > 0, "A was chained to B");
    // Then into C's immediate, with B entered through the chain.
    assert_eq!(
        run(&mut e, c + 1, 0x33),
        0x33,
        "C ran with the byte just stored"
    );
    assert_eq!(run(&mut e, c + 1, 0x44), 0x44);
}
