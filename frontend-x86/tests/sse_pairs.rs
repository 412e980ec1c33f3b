//! 16-byte SSE loads and stores, which the x64 backend does with one TLB lookup when all
//! 16 bytes are in one page (`regalloc::access_pairs`) and as two 8-byte accesses
//! otherwise: across a page boundary both halves are read and written, and a fault on the
//! second page leaves the register and memory as they were (precise #PF at that page).

use frontend_x86::state::{xmm_g, X86State, G_RIP};
use frontend_x86::PlatformOp;
use jit::{Engine, EngineKind, StopReason};

mod common;
use common::{long_mode_engine, map, pte};

const START: u64 = 0x10000;
/// movups xmm0, [rsi]; movups [rdi], xmm1; hlt
const CODE: &[u8] = &[0x0f, 0x10, 0x06, 0x0f, 0x11, 0x0f, 0xf4];
/// Two writable pages (B's frame is not the one after A's, so a 16-byte access across
/// them must translate both); the page after them is not mapped, the one before is
/// read-only.
const A: u64 = 0x20000;
const B: u64 = 0x21000;
const B_FRAME: u64 = 0x30000;
const RO: u64 = 0x1f000;

const X1: [u64; 2] = [0x1111_2222_3333_4444, 0x5555_6666_7777_8888];
const X0: [u64; 2] = [0xdead_beef_dead_beef, 0xfeed_face_feed_face];

fn engine(kind: EngineKind, rsi: u64, rdi: u64) -> Engine {
    let mut e = long_mode_engine(kind);
    map(&mut e, START, START, 0);
    map(&mut e, A, A, 0);
    map(&mut e, B, B_FRAME, 0);
    map(&mut e, RO, RO, 0);
    e.ram().write_u64(pte(RO), RO | 1 | 4);
    assert!(e.ram().write(START, CODE));
    for k in 0..0x3000 / 8 {
        e.ram()
            .write_u64(RO + 8 * k, 0x0101_0101_0101_0101 * (k % 251));
        e.ram()
            .write_u64(B_FRAME + 8 * k, 0x0102_0304_0506_0708 ^ k);
    }
    let mut s = X86State(&mut e.env);
    s.set_rip(START);
    s.set_gpr(6, rsi);
    s.set_gpr(7, rdi);
    for (i, v) in [(0, X0), (1, X1)] {
        e.env.g[xmm_g(i) as usize] = v[0];
        e.env.g[xmm_g(i) as usize + 1] = v[1];
    }
    e.env.icount_limit = u64::MAX;
    e
}

fn xmm0(e: &Engine) -> [u64; 2] {
    [e.env.g[xmm_g(0) as usize], e.env.g[xmm_g(0) as usize + 1]]
}

/// The 16 bytes at virtual address `a` (RO, A and B mapped as `engine` does).
fn read16(e: &mut Engine, a: u64) -> [u64; 2] {
    let mut b = [0u8; 16];
    for (k, byte) in b.iter_mut().enumerate() {
        let va = a + k as u64;
        let pa = if va & !0xfff == B {
            B_FRAME + (va & 0xfff)
        } else {
            va
        };
        let mut x = [0u8];
        assert!(e.ram().read(pa, &mut x));
        *byte = x[0];
    }
    [
        u64::from_le_bytes(b[..8].try_into().unwrap()),
        u64::from_le_bytes(b[8..].try_into().unwrap()),
    ]
}

fn halted(e: &Engine, r: StopReason, kind: EngineKind) {
    assert!(
        matches!(r, StopReason::Platform { op, .. } if op == PlatformOp::Hlt as u32),
        "{kind:?}: stopped with {r:?}"
    );
    assert_eq!(e.env.g[G_RIP as usize], START + 6, "{kind:?}");
}

#[test]
fn within_and_across_pages() {
    for kind in [EngineKind::Jit, EngineKind::Interp] {
        // Loop over alignments within a page and across the A/B boundary.
        for (src, dst) in [
            (A + 0x40, B + 0x80),
            (A + 0x7, B + 0x9),
            (B - 8, B - 3),
            (B - 1, B - 15),
        ] {
            let mut e = engine(kind, src, dst);
            let want = read16(&mut e, src);
            let r = e.run();
            halted(&e, r, kind);
            assert_eq!(xmm0(&e), want, "{kind:?}: load at {src:#x}");
            assert_eq!(read16(&mut e, dst), X1, "{kind:?}: store at {dst:#x}");
        }
    }
}

/// Run `e`: it must stop with #PF(`code`) at `addr`.
fn assert_page_fault(e: &mut Engine, code: u32, addr: u64, kind: EngineKind, what: &str) {
    match e.run() {
        StopReason::Exception(f) => assert_eq!(
            (f.vector, f.error_code, f.addr),
            (14, Some(code), addr),
            "{kind:?}: {what}"
        ),
        r => panic!("{kind:?}: {what}: {r:?}"),
    }
}

#[test]
fn second_page_faults_are_precise() {
    for kind in [EngineKind::Jit, EngineKind::Interp] {
        // A load whose second quadword is on the unmapped page.
        let mut e = engine(kind, B + 0xff8, A);
        assert_page_fault(&mut e, 4, B + 0x1000, kind, "load");
        assert_eq!((xmm0(&e), e.env.g[G_RIP as usize]), (X0, START), "{kind:?}");

        // A store that starts on the read-only page and ends on a writable one: the first
        // page faults (a write to a present page), nothing is written.
        let mut e = engine(kind, A, A - 4);
        let before = read16(&mut e, A - 4);
        assert_page_fault(&mut e, 7, A - 4, kind, "store");
        assert_eq!(e.env.g[G_RIP as usize], START + 3, "{kind:?}");
        assert_eq!(read16(&mut e, A - 4), before, "{kind:?}: memory unchanged");

        // A store whose second quadword is on the unmapped page: not-present write fault
        // at that page, the first page unchanged.
        let mut e = engine(kind, A, B + 0xffc);
        let before = read16(&mut e, B + 0xff0);
        assert_page_fault(&mut e, 6, B + 0x1000, kind, "store at the end");
        assert_eq!(
            read16(&mut e, B + 0xff0),
            before,
            "{kind:?}: memory unchanged"
        );
    }
}
