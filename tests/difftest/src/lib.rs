//! Differential testing of Xenolith's x86 engine against the host CPU.
//!
//! `native` runs a case on the host in a sandboxed child, `emu` on the engine (interpreter
//! or JIT) with the same layout, `gen` makes random cases; [`run_batch`] compares all GPRs,
//! RIP, the defined flags, the data area and the exception raised.

pub mod emu;
pub mod gen;
pub mod native;

use native::{NativeOutcome, RegState};

/// Flags compared (arithmetic flags and DF).
const COMPARED_FLAGS: u64 = 0x8d5 | 0x400;

#[derive(Default, Debug)]
pub struct BatchResult {
    pub cases: u64,
    pub rejected: u64,
    pub mismatches: u64,
    pub reports: Vec<String>,
}

fn regs_eq(a: &RegState, b: &RegState, undef: u64, mode: gen::Mode) -> bool {
    let m = COMPARED_FLAGS & !undef;
    let gprs = match mode {
        gen::Mode::Long => a.gpr == b.gpr,
        // Compatibility mode: the low halves of the eight legacy registers.
        gen::Mode::Compat => (0..8).all(|i| a.gpr[i] as u32 == b.gpr[i] as u32),
    };
    gprs && a.rip == b.rip && (a.rflags & m) == (b.rflags & m)
}

fn has_error_code(v: u8) -> bool {
    matches!(v, 8 | 10..=14 | 17)
}

/// Compare a native outcome with an emulated one.
pub fn same(n: &NativeOutcome, e: &NativeOutcome, undef: u64, mode: gen::Mode) -> bool {
    match (n, e) {
        (NativeOutcome::Completed { regs: r1, data: d1 }, NativeOutcome::Completed { regs: r2, data: d2 }) => regs_eq(r1, r2, undef, mode) && d1 == d2,
        (NativeOutcome::Exception { regs: r1, data: d1, exc: x1 }, NativeOutcome::Exception { regs: r2, data: d2, exc: x2 }) => {
            // Faults report the state before the instruction: any flags an earlier
            // instruction left undefined are still compared only where defined.
            let code_ok = !has_error_code(x1.vector) || x1.error_code == x2.error_code;
            let cr2_ok = x1.vector != 14 || x1.cr2 == x2.cr2;
            x1.vector == x2.vector && code_ok && cr2_ok && regs_eq(r1, r2, undef, mode) && d1 == d2
        }
        (NativeOutcome::Timeout, NativeOutcome::Timeout) => true,
        _ => false,
    }
}

fn describe(o: &NativeOutcome) -> String {
    match o {
        NativeOutcome::Completed { regs, .. } => format!("completed rip={:#x} flags={:#x} gpr={:x?}", regs.rip, regs.rflags, regs.gpr),
        NativeOutcome::Exception { regs, exc, .. } => {
            format!("exception {} code {:#x} cr2 {:#x} rip={:#x} flags={:#x} gpr={:x?}", exc.vector, exc.error_code, exc.cr2, regs.rip, regs.rflags, regs.gpr)
        }
        NativeOutcome::Timeout => "timeout".into(),
    }
}

/// Run `n` random cases from `seed` on the host and on both engines.
pub fn run_batch(n: u64, seed: u64, max_len: u64) -> std::io::Result<BatchResult> {
    run_batch_mode(gen::Mode::Long, n, seed, max_len)
}

/// As [`run_batch`], for cases of the given mode.
pub fn run_batch_mode(mode: gen::Mode, n: u64, seed: u64, max_len: u64) -> std::io::Result<BatchResult> {
    let mut native = native::NativeRunner::new()?;
    let mut interp = emu::EmuRunner::new(jit::EngineKind::Interp);
    let mut jit_ = emu::EmuRunner::new(jit::EngineKind::Jit);
    let codes = gen::codes(mode);
    let mut rng = gen::Rng::new(seed);
    let mut res = BatchResult::default();
    let mut fmt = iced_x86::FastFormatter::new();
    while res.cases < n {
        let c = gen::case(&mut rng, mode, &codes, max_len);
        let Some(undef) = gen::undefined_flags(&c.insns) else {
            res.rejected += 1;
            continue;
        };
        res.cases += 1;
        let nat = run_native_case(&mut native, mode, &c)?;
        // The native runner reports IF and RF; the engine's flags are compared masked.
        for (name, runner) in [("interp", &mut interp), ("jit", &mut jit_)] {
            let emu = runner.run_mode(mode, &c.code, &c.init, &c.data, 100_000);
            let undef = match &nat {
                NativeOutcome::Exception { regs, .. } => gen::undefined_flags_before(&c.insns, regs.rip).unwrap_or(undef),
                _ => undef,
            };
            if !same(&nat, &emu, undef, mode) {
                res.mismatches += 1;
                if res.reports.len() < 20 {
                    let mut dis = String::new();
                    for i in &c.insns {
                        let mut s = String::new();
                        fmt.format(i, &mut s);
                        dis.push_str(&format!("    {:x}: {}\n", i.ip(), s));
                    }
                    res.reports.push(format!(
                        "[{name}] case {} (undef flags {:#x}) init gpr={:x?} flags={:#x}\n{dis}  native: {}\n  {name}: {}",
                        res.cases,
                        undef,
                        c.init.gpr,
                        c.init.rflags,
                        describe(&nat),
                        describe(&emu)
                    ));
                }
            }
        }
    }
    Ok(res)
}

/// FNV-1a, for outcome digests.
fn fnv(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= *b as u64;
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
}

/// A host-independent digest of an outcome exactly as [`same`] compares it (undefined flags
/// and the mode's register view masked), so cases run natively on x86 can be checked on
/// other hosts from a committed file of digests.
pub fn outcome_digest(o: &NativeOutcome, c: &gen::Case, mode: gen::Mode) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let base = gen::undefined_flags(&c.insns).unwrap_or(0);
    let regs_data = |h: &mut u64, r: &RegState, d: &[u8], undef: u64| {
        match mode {
            gen::Mode::Long => r.gpr.iter().for_each(|g| fnv(h, &g.to_le_bytes())),
            gen::Mode::Compat => r.gpr[..8].iter().for_each(|g| fnv(h, &(*g as u32).to_le_bytes())),
        }
        fnv(h, &r.rip.to_le_bytes());
        fnv(h, &(r.rflags & COMPARED_FLAGS & !undef).to_le_bytes());
        fnv(h, d);
    };
    match o {
        NativeOutcome::Completed { regs, data } => {
            fnv(&mut h, &[1]);
            regs_data(&mut h, regs, data, base);
        }
        NativeOutcome::Exception { regs, data, exc } => {
            fnv(&mut h, &[2, exc.vector]);
            if has_error_code(exc.vector) {
                fnv(&mut h, &exc.error_code.to_le_bytes());
            }
            if exc.vector == 14 {
                fnv(&mut h, &exc.cr2.to_le_bytes());
            }
            let undef = gen::undefined_flags_before(&c.insns, regs.rip).unwrap_or(base);
            regs_data(&mut h, regs, data, undef);
        }
        NativeOutcome::Timeout => fnv(&mut h, &[3]),
    }
    h
}

/// Committed test vectors: the digests of the host CPU's outcomes for a seeded sequence
/// of cases (tests/difftest/vectors/*.bin).
pub mod vectors {
    use super::*;

    const MAGIC: &[u8; 8] = b"XLDVEC01";

    pub struct Vectors {
        pub mode: gen::Mode,
        pub seed: u64,
        pub max_len: u64,
        pub digests: Vec<u64>,
    }

    pub fn encode(v: &Vectors) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&(v.mode.bitness() as u64).to_le_bytes());
        b.extend_from_slice(&v.seed.to_le_bytes());
        b.extend_from_slice(&v.max_len.to_le_bytes());
        b.extend_from_slice(&(v.digests.len() as u64).to_le_bytes());
        for d in &v.digests {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b
    }

    pub fn decode(b: &[u8]) -> Option<Vectors> {
        let word = |i: usize| b.get(8 + 8 * i..16 + 8 * i).map(|s| u64::from_le_bytes(s.try_into().unwrap()));
        if b.get(..8)? != MAGIC {
            return None;
        }
        let mode = match word(0)? {
            64 => gen::Mode::Long,
            32 => gen::Mode::Compat,
            _ => return None,
        };
        let (seed, max_len, n) = (word(1)?, word(2)?, word(3)? as usize);
        let digests = (0..n).map(|i| word(4 + i)).collect::<Option<Vec<_>>>()?;
        Some(Vectors { mode, seed, max_len, digests })
    }

    /// Generate `n` accepted cases and their native digests (x86_64 hosts).
    pub fn record(mode: gen::Mode, n: u64, seed: u64, max_len: u64) -> std::io::Result<Vectors> {
        let mut native = native::NativeRunner::new()?;
        let codes = gen::codes(mode);
        let mut rng = gen::Rng::new(seed);
        let mut digests = Vec::new();
        while (digests.len() as u64) < n {
            let c = gen::case(&mut rng, mode, &codes, max_len);
            if gen::undefined_flags(&c.insns).is_none() {
                continue;
            }
            let o = run_native_case(&mut native, mode, &c)?;
            digests.push(outcome_digest(&o, &c, mode));
        }
        Ok(Vectors { mode, seed, max_len, digests })
    }

    /// Check both engines against recorded digests: (cases, mismatches, first reports).
    pub fn check(v: &Vectors) -> (u64, u64, Vec<String>) {
        let mut interp = emu::EmuRunner::new(jit::EngineKind::Interp);
        let mut jit_ = emu::EmuRunner::new(jit::EngineKind::Jit);
        let codes = gen::codes(v.mode);
        let mut rng = gen::Rng::new(v.seed);
        let (mut cases, mut bad, mut reports) = (0u64, 0u64, Vec::new());
        for want in &v.digests {
            let c = loop {
                let c = gen::case(&mut rng, v.mode, &codes, v.max_len);
                if gen::undefined_flags(&c.insns).is_some() {
                    break c;
                }
            };
            cases += 1;
            for (name, r) in [("interp", &mut interp), ("jit", &mut jit_)] {
                let o = r.run_mode(v.mode, &c.code, &c.init, &c.data, 100_000);
                if outcome_digest(&o, &c, v.mode) != *want {
                    bad += 1;
                    if reports.len() < 10 {
                        reports.push(format!("[{name}] vector case {cases}: code {:02x?}", c.code));
                    }
                }
            }
        }
        (cases, bad, reports)
    }
}

/// Run one case natively, mapping a compatibility-mode completion back to the code's end.
fn run_native_case(native: &mut native::NativeRunner, mode: gen::Mode, c: &gen::Case) -> std::io::Result<NativeOutcome> {
    let mut run = |code: &[u8]| -> std::io::Result<NativeOutcome> {
        match native.run(code, &c.init, &c.data)? {
            NativeOutcome::Timeout => native.run(code, &c.init, &c.data),
            o => Ok(o),
        }
    };
    match mode {
        gen::Mode::Long => run(&c.code),
        gen::Mode::Compat => {
            let blob = gen::compat_blob(&c.code);
            let mut o = run(&blob)?;
            if let NativeOutcome::Completed { regs, .. } = &mut o {
                if regs.rip == native::CODE_ADDR + blob.len() as u64 {
                    regs.rip = mode.code_start() + c.code.len() as u64;
                }
            }
            Ok(o)
        }
    }
}
