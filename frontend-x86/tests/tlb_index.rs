//! An access that crosses from one page into the next is translated page by page, also
//! where the two pages' TLB indexes could coincide: the generated code's lookup takes the
//! index from the first byte's page and compares the tag with the last byte's, which is
//! only sound if adjacent pages never share an index (`jit::env::tlb_index`). The page
//! below a 2 GiB boundary (page number with 19 trailing ones) is the case an earlier fold
//! got wrong: with the next page's entry in the TLB, the crossing access used that page's
//! translation for its first bytes too.

use frontend_x86::state::X86State;
use jit::{Engine, EngineKind};

mod common;
use common::{assert_halted, long_mode_engine, map, P, PDPT, RW, US};

const START: u64 = 0x10000;
/// mov rax, [rsi]; mov rbx, [rdi]; mov [rdx], rcx; hlt
const CODE: &[u8] = &[0x48, 0x8b, 0x06, 0x48, 0x8b, 0x1f, 0x48, 0x89, 0x0a, 0xf4];
/// The page below 2 GiB and the one above, on frames far apart (and in that order the
/// other way round, so that one frame's neighbour is not the other).
const LO: u64 = 0x7fff_f000;
const _: () = assert!(LO + 0x1000 == HI);
const HI: u64 = 0x8000_0000;
const LO_FRAME: u64 = 0x40000;
const HI_FRAME: u64 = 0x30000;

fn engine(kind: EngineKind, a: u64) -> Engine {
    let mut e = long_mode_engine(kind);
    map(&mut e, START, START, 0);
    // PDPT[1] -> PD at 0x5000, its last entry -> PT at 0x6000, whose last entry maps LO;
    // PDPT[2] -> PD at 0x7000, its first entry -> PT at 0x8000, whose first maps HI.
    let f = P | RW | US;
    let ram = e.ram();
    ram.write_u64(PDPT + 8, 0x5000 | f);
    ram.write_u64(0x5000 + 511 * 8, 0x6000 | f);
    ram.write_u64(0x6000 + 511 * 8, LO_FRAME | f);
    ram.write_u64(PDPT + 16, 0x7000 | f);
    ram.write_u64(0x7000, 0x8000 | f);
    ram.write_u64(0x8000, HI_FRAME | f);
    for k in 0..0x1000 / 8 {
        ram.write_u64(LO_FRAME + 8 * k, 0x1111_1111_0000_0000 | k);
        ram.write_u64(HI_FRAME + 8 * k, 0x2222_2222_0000_0000 | k);
        // The bytes around the frames, which a wrong translation would reach.
        ram.write_u64(LO_FRAME + 0x1000 + 8 * k, 0x3333_3333_3333_3333);
        ram.write_u64(HI_FRAME - 0x1000 + 8 * k, 0x4444_4444_4444_4444);
    }
    // The first load puts HI's translation in the TLB.
    start(e, HI + 0x100, a)
}

/// CODE at START, its first load from `first`, the crossing load and store at `a`.
fn start(mut e: Engine, first: u64, a: u64) -> Engine {
    assert!(e.ram().write(START, CODE));
    let mut s = X86State(&mut e.env);
    s.set_rip(START);
    s.set_gpr(6, first);
    s.set_gpr(7, a);
    s.set_gpr(2, a);
    s.set_gpr(1, 0x0102_0304_0506_0708);
    e.env.icount_limit = u64::MAX;
    e
}

fn read8(e: &mut Engine, pa: u64) -> u8 {
    let mut b = [0u8];
    assert!(e.ram().read(pa, &mut b));
    b[0]
}

/// Runs CODE in `e` (rdi = rdx = the access's address), whose 8-byte load and store cross
/// from frame `first`'s last `off` bytes into frame `second`'s first bytes, and checks
/// the bytes loaded, the bytes stored, and that each of `guards` (a physical address and
/// the byte it holds) was not written.
fn check_crossing(
    kind: EngineKind,
    mut e: Engine,
    off: u64,
    first: u64,
    second: u64,
    guards: &[(u64, u8)],
) {
    let pa = |k: u64| {
        if k < off {
            first + 0x1000 - off + k
        } else {
            second + k - off
        }
    };
    let a = X86State(&mut e.env).gpr(7);
    let want = (0..8u64).fold(0u64, |v, k| v | (read8(&mut e, pa(k)) as u64) << (8 * k));
    let r = e.run();
    assert_halted(&e, r, kind, START, CODE);
    assert_eq!(X86State(&mut e.env).gpr(3), want, "{kind:?}: load at {a:#x}");
    let stored = 0x0102_0304_0506_0708u64.to_le_bytes();
    for k in 0..8u64 {
        assert_eq!(
            read8(&mut e, pa(k)),
            stored[k as usize],
            "{kind:?}: store at {a:#x}, byte {k}"
        );
    }
    for &(p, b) in guards {
        assert_eq!(read8(&mut e, p), b, "{kind:?}: {p:#x} written by the access at {a:#x}");
    }
}

#[test]
fn accesses_across_the_2gib_boundary_translate_both_pages() {
    for kind in [EngineKind::Jit, EngineKind::Interp] {
        for off in 1..8u64 {
            let a = HI - off;
            // Nothing outside the two pages is written.
            let guards = [(HI_FRAME - 1, 0x44), (LO_FRAME + 0x1000, 0x33)];
            check_crossing(kind, engine(kind, a), off, LO_FRAME, HI_FRAME, &guards);
        }
    }
}

/// The last page of the address space, and page 0 (which follows it: linear addresses wrap
/// around), on frames of their own.
const TOP: u64 = 0xffff_ffff_ffff_f000;
const TOP_FRAME: u64 = 0x50000;
const ZERO_FRAME: u64 = 0x60000;

fn wrap_engine(kind: EngineKind, a: u64) -> Engine {
    let mut e = long_mode_engine(kind);
    map(&mut e, START, START, 0);
    map(&mut e, 0, ZERO_FRAME, 0);
    // PML4[511] -> PDPT at 0x5000, [511] -> PD at 0x6000, [511] -> PT at 0x7000, [511] -> TOP.
    let f = P | RW | US;
    let ram = e.ram();
    ram.write_u64(common::PML4 + 511 * 8, 0x5000 | f);
    ram.write_u64(0x5000 + 511 * 8, 0x6000 | f);
    ram.write_u64(0x6000 + 511 * 8, 0x7000 | f);
    ram.write_u64(0x7000 + 511 * 8, TOP_FRAME | f);
    for k in 0..0x1000 / 8 {
        ram.write_u64(TOP_FRAME + 8 * k, 0x5555_5555_0000_0000 | k);
        ram.write_u64(ZERO_FRAME + 8 * k, 0x6666_6666_0000_0000 | k);
        ram.write_u64(ZERO_FRAME - 0x1000 + 8 * k, 0x7777_7777_7777_7777);
    }
    // The first load reads page 0 (which a TLB could keep).
    start(e, 0x100, a)
}

/// An access from the last page into page 0 (the last page and page 0 share a TLB index)
/// reads and writes both pages' frames, also with page 0 used just before.
#[test]
fn accesses_wrapping_around_the_address_space_translate_both_pages() {
    for kind in [EngineKind::Jit, EngineKind::Interp] {
        for off in 1..8u64 {
            let a = TOP.wrapping_add(0x1000 - off);
            let guards = [(ZERO_FRAME - 1, 0x77)];
            check_crossing(kind, wrap_engine(kind, a), off, TOP_FRAME, ZERO_FRAME, &guards);
        }
    }
}
