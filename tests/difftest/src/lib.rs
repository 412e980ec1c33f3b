//! Differential testing of Xenolith's x86 engine against the host CPU.
//!
//! `native` runs a case on the host in a sandboxed child, `emu` on the engine (interpreter
//! or JIT) with the same layout, `gen` makes random cases; [`run_batch`] compares all GPRs,
//! RIP, the defined flags, the x87/SSE state, the data area and the exception raised.
//!
//! Two case families: the integer one ([`run_batch`], [`run_batch_mode`]) and the FP/SIMD
//! one ([`run_batch_fp`]: x87, MMX, SSE..SSE4.2). The x87/SSE state is compared for both
//! (see [`fp_eq`]): FCW, FSW (minus the condition codes the SDM leaves undefined, see
//! [`gen::fsw_effect`]), the abridged tag word, MXCSR, every non-empty ST register (80 bits)
//! and XMM0..15.

pub mod emu;
pub mod gen;
pub mod native;

use native::{FpState, NativeOutcome, RegState};

/// Flags compared (arithmetic flags and DF).
const COMPARED_FLAGS: u64 = 0x8d5 | 0x400;

#[derive(Default, Debug)]
pub struct BatchResult {
    pub cases: u64,
    pub rejected: u64,
    pub mismatches: u64,
    pub reports: Vec<String>,
    /// Why the batch ran fewer cases than asked (e.g. nothing to generate yet).
    pub note: Option<String>,
    /// FP family: for triage, the mnemonics most often in mismatching cases, as
    /// `mnemonic bad/total` (cases containing the mnemonic that mismatched / all of them).
    pub by_mnemonic: Vec<String>,
}

/// What a comparison leaves out.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mask<'a> {
    /// RFLAGS bits left undefined.
    pub flags: u64,
    /// FSW bits left undefined (x87 condition codes).
    pub fsw: u16,
    /// Data-area byte ranges (offset, length) with implementation-specific contents.
    pub data: &'a [(usize, usize)],
}

/// Compare x87/MMX/SSE states: FCW, FSW outside `fsw_undef`, the abridged tag word, MXCSR,
/// the ST registers that are not empty (all 80 bits; MMX registers are the significands of
/// valid registers after any MMX instruction) and all XMM registers. FOP, FIP and FDP are
/// not compared.
pub fn fp_eq(a: &FpState, b: &FpState, fsw_undef: u16) -> bool {
    a.fcw == b.fcw
        && (a.fsw & !fsw_undef) == (b.fsw & !fsw_undef)
        && a.ftw == b.ftw
        && a.mxcsr == b.mxcsr
        && a.xmm == b.xmm
        && (0..8).all(|i| !a.st_valid(i) || a.st[i] == b.st[i])
}

fn regs_eq(a: &RegState, b: &RegState, m: &Mask, mode: gen::Mode) -> bool {
    let fm = COMPARED_FLAGS & !m.flags;
    let gprs = match mode {
        gen::Mode::Long => a.gpr == b.gpr,
        // Compatibility mode: the low halves of the eight legacy registers.
        gen::Mode::Compat => (0..8).all(|i| a.gpr[i] as u32 == b.gpr[i] as u32),
    };
    gprs && a.rip == b.rip && (a.rflags & fm) == (b.rflags & fm) && fp_eq(&a.fp, &b.fp, m.fsw)
}

fn in_ranges(i: usize, ranges: &[(usize, usize)]) -> bool {
    ranges.iter().any(|&(o, l)| i >= o && i < o + l)
}

fn data_eq(a: &[u8], b: &[u8], ignore: &[(usize, usize)]) -> bool {
    if ignore.is_empty() {
        return a == b;
    }
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .enumerate()
            .all(|(i, (x, y))| x == y || in_ranges(i, ignore))
}

fn has_error_code(v: u8) -> bool {
    matches!(v, 8 | 10..=14 | 17)
}

/// Compare a native outcome with an emulated one (undefined RFLAGS bits masked; FSW and data
/// compared in full).
pub fn same(n: &NativeOutcome, e: &NativeOutcome, undef: u64, mode: gen::Mode) -> bool {
    same_masked(
        n,
        e,
        &Mask {
            flags: undef,
            ..Mask::default()
        },
        mode,
    )
}

/// Compare a native outcome with an emulated one, leaving out what `m` says.
pub fn same_masked(n: &NativeOutcome, e: &NativeOutcome, m: &Mask, mode: gen::Mode) -> bool {
    match (n, e) {
        (
            NativeOutcome::Completed { regs: r1, data: d1 },
            NativeOutcome::Completed { regs: r2, data: d2 },
        ) => regs_eq(r1, r2, m, mode) && data_eq(d1, d2, m.data),
        (
            NativeOutcome::Exception {
                regs: r1,
                data: d1,
                exc: x1,
            },
            NativeOutcome::Exception {
                regs: r2,
                data: d2,
                exc: x2,
            },
        ) => {
            // Faults report the state before the instruction: any flags an earlier
            // instruction left undefined are still compared only where defined.
            let code_ok = !has_error_code(x1.vector) || x1.error_code == x2.error_code;
            let cr2_ok = x1.vector != 14 || x1.cr2 == x2.cr2;
            x1.vector == x2.vector
                && code_ok
                && cr2_ok
                && regs_eq(r1, r2, m, mode)
                && data_eq(d1, d2, m.data)
        }
        (NativeOutcome::Timeout, NativeOutcome::Timeout) => true,
        _ => false,
    }
}

fn describe(o: &NativeOutcome) -> String {
    match o {
        NativeOutcome::Completed { regs, .. } => format!(
            "completed rip={:#x} flags={:#x} gpr={:x?}",
            regs.rip, regs.rflags, regs.gpr
        ),
        NativeOutcome::Exception { regs, exc, .. } => {
            format!(
                "exception {} code {:#x} cr2 {:#x} rip={:#x} flags={:#x} gpr={:x?}",
                exc.vector, exc.error_code, exc.cr2, regs.rip, regs.rflags, regs.gpr
            )
        }
        NativeOutcome::Timeout => "timeout".into(),
    }
}

fn fmt_f80(v: &native::F80) -> String {
    format!("{:04x}:{:016x}", v.se, v.sig)
}

/// A one-line summary of an x87/SSE state.
pub fn describe_fp(f: &FpState) -> String {
    let st: Vec<String> = (0..8)
        .map(|i| {
            if f.st_valid(i) {
                fmt_f80(&f.st[i])
            } else {
                "empty".into()
            }
        })
        .collect();
    format!(
        "fcw={:#06x} fsw={:#06x} (top {}) ftw={:#04x} mxcsr={:#06x} st=[{}]",
        f.fcw,
        f.fsw,
        f.top(),
        f.ftw,
        f.mxcsr,
        st.join(" ")
    )
}

/// The x87/SSE fields on which two states differ (as [`fp_eq`] compares them).
pub fn fp_diff(a: &FpState, b: &FpState, fsw_undef: u16) -> String {
    let mut d = Vec::new();
    if a.fcw != b.fcw {
        d.push(format!("fcw {:#06x} vs {:#06x}", a.fcw, b.fcw));
    }
    if (a.fsw & !fsw_undef) != (b.fsw & !fsw_undef) {
        d.push(format!(
            "fsw {:#06x} vs {:#06x} (undefined {:#06x})",
            a.fsw, b.fsw, fsw_undef
        ));
    }
    if a.ftw != b.ftw {
        d.push(format!("ftw {:#04x} vs {:#04x}", a.ftw, b.ftw));
    }
    if a.mxcsr != b.mxcsr {
        d.push(format!("mxcsr {:#06x} vs {:#06x}", a.mxcsr, b.mxcsr));
    }
    for i in 0..8 {
        if a.st_valid(i) && a.st[i] != b.st[i] {
            d.push(format!(
                "st{i} {} vs {}",
                fmt_f80(&a.st[i]),
                fmt_f80(&b.st[i])
            ));
        }
    }
    for i in 0..16 {
        if a.xmm[i] != b.xmm[i] {
            d.push(format!(
                "xmm{i} {:016x}{:016x} vs {:016x}{:016x}",
                a.xmm[i][1], a.xmm[i][0], b.xmm[i][1], b.xmm[i][0]
            ));
        }
    }
    d.join(", ")
}

fn regs_of(o: &NativeOutcome) -> Option<(&RegState, &[u8])> {
    match o {
        NativeOutcome::Completed { regs, data } | NativeOutcome::Exception { regs, data, .. } => {
            Some((regs, data))
        }
        NativeOutcome::Timeout => None,
    }
}

/// Run `n` random cases from `seed` on the host and on both engines.
pub fn run_batch(n: u64, seed: u64, max_len: u64) -> std::io::Result<BatchResult> {
    run_batch_mode(gen::Mode::Long, n, seed, max_len)
}

/// As [`run_batch`], for cases of the given mode.
pub fn run_batch_mode(
    mode: gen::Mode,
    n: u64,
    seed: u64,
    max_len: u64,
) -> std::io::Result<BatchResult> {
    run_batch_family(gen::Family::Int, mode, n, seed, max_len)
}

/// As [`run_batch_mode`], for FP/SIMD cases (x87, MMX, SSE..SSE4.2). Runs no case, with
/// [`BatchResult::note`] saying so, while the frontend implements none of those mnemonics.
pub fn run_batch_fp(
    mode: gen::Mode,
    n: u64,
    seed: u64,
    max_len: u64,
) -> std::io::Result<BatchResult> {
    run_batch_family(gen::Family::Fp, mode, n, seed, max_len)
}

/// Generate the next accepted case of `family` (`fp_codes` empty for the integer family):
/// the case and its masks (RFLAGS, FSW) for a run that completes. Rejected cases (reading
/// undefined flags or condition codes) are counted in `rejected`.
fn next_case(
    rng: &mut gen::Rng,
    family: gen::Family,
    mode: gen::Mode,
    codes: &[iced_x86::Code],
    fp_codes: &[iced_x86::Code],
    max_len: u64,
    rejected: &mut u64,
) -> (gen::Case, u64, u16) {
    loop {
        let c = match family {
            gen::Family::Int => gen::case(rng, mode, codes, max_len),
            gen::Family::Fp => gen::fp_case(rng, mode, fp_codes, codes, max_len),
        };
        let Some(undef) = gen::undefined_flags(&c.insns) else {
            *rejected += 1;
            continue;
        };
        let fsw = match family {
            gen::Family::Int => 0,
            gen::Family::Fp => match gen::fsw_undefined(&c.insns) {
                Some(u) => u,
                None => {
                    *rejected += 1;
                    continue;
                }
            },
        };
        return (c, undef, fsw);
    }
}

/// The masks for comparing an outcome of case `c`: those of the whole case, or for an
/// exception those of the instructions before the faulting one.
fn masks_for<'a>(
    o: &NativeOutcome,
    c: &'a gen::Case,
    family: gen::Family,
    undef: u64,
    fsw: u16,
) -> Mask<'a> {
    let (undef, fsw) = match o {
        NativeOutcome::Exception { regs, .. } => (
            gen::undefined_flags_before(&c.insns, regs.rip).unwrap_or(undef),
            match family {
                gen::Family::Int => 0,
                gen::Family::Fp => gen::fsw_undefined_before(&c.insns, regs.rip).unwrap_or(fsw),
            },
        ),
        _ => (undef, fsw),
    };
    Mask {
        flags: undef,
        fsw,
        data: &c.data_ignore,
    }
}

/// The case the engines are running, for the panic hook and the watchdog: an engine bug
/// that panics in a helper (which aborts the process: helpers cannot unwind) or hangs in
/// one (the instruction budget cannot stop a helper) still names the case.
mod inflight {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, Once};
    use std::time::{Duration, Instant};

    static CASE: Mutex<Option<String>> = Mutex::new(None);
    /// Serial number of the running case (0 = none).
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    static INIT: Once = Once::new();
    /// How long one case may run on an engine before the process is aborted.
    const HANG: Duration = Duration::from_secs(60);

    fn install() {
        INIT.call_once(|| {
            let prev = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if let Ok(c) = CASE.try_lock() {
                    if let Some(c) = c.as_ref() {
                        eprintln!("difftest: panic while the engine ran this case:\n{c}");
                    }
                }
                prev(info);
            }));
            std::thread::spawn(|| {
                let (mut last, mut since) = (0, Instant::now());
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    let now = SERIAL.load(Ordering::SeqCst);
                    if now == 0 || now != last {
                        (last, since) = (now, Instant::now());
                    } else if since.elapsed() > HANG {
                        let c = CASE.lock().map(|c| c.clone().unwrap_or_default()).unwrap_or_default();
                        eprintln!("difftest: the engine ran one case for over {HANG:?} (hung in a helper?); aborting. The case:\n{c}");
                        std::process::abort();
                    }
                }
            });
        });
    }

    /// Mark the start of running `describe()` on the engines.
    pub fn start(serial: u64, describe: String) {
        install();
        *CASE.lock().unwrap_or_else(|e| e.into_inner()) = Some(describe);
        SERIAL.store(serial, Ordering::SeqCst);
    }

    pub fn end() {
        SERIAL.store(0, Ordering::SeqCst);
        *CASE.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

fn disassemble(c: &gen::Case) -> String {
    let mut fmt = iced_x86::FastFormatter::new();
    let mut dis = String::new();
    for i in &c.insns {
        let mut s = String::new();
        fmt.format(i, &mut s);
        dis.push_str(&format!("    {:x}: {}\n", i.ip(), s));
    }
    dis
}

fn run_batch_family(
    family: gen::Family,
    mode: gen::Mode,
    n: u64,
    seed: u64,
    max_len: u64,
) -> std::io::Result<BatchResult> {
    let codes = gen::codes(mode);
    let fp_codes = match family {
        gen::Family::Int => Vec::new(),
        gen::Family::Fp => gen::fp_codes(mode),
    };
    let mut res = BatchResult::default();
    if family == gen::Family::Fp && fp_codes.is_empty() {
        res.note = Some(format!(
            "skipped: the frontend implements none of the {} FP/SIMD encodings of this family yet",
            gen::fp_candidate_codes(mode).len()
        ));
        return Ok(res);
    }
    let mut native = native::NativeRunner::new()?;
    let mut interp = emu::EmuRunner::new(jit::EngineKind::Interp);
    let mut jit_ = emu::EmuRunner::new(jit::EngineKind::Jit);
    let mut rng = gen::Rng::new(seed);
    let mut tally: std::collections::HashMap<iced_x86::Mnemonic, (u64, u64)> = Default::default();
    while res.cases < n {
        let (c, undef, fsw) = next_case(
            &mut rng,
            family,
            mode,
            &codes,
            &fp_codes,
            max_len,
            &mut res.rejected,
        );
        res.cases += 1;
        let before = res.mismatches;
        let nat = run_native_case(&mut native, mode, &c)?;
        // The native runner reports IF and RF; the engine's flags are compared masked.
        for (name, runner) in [("interp", &mut interp), ("jit", &mut jit_)] {
            inflight::start(res.cases, {
                let fp = if family == gen::Family::Fp {
                    format!("\n  init fp: {}", describe_fp(&c.init.fp))
                } else {
                    String::new()
                };
                format!("[{name}] {family:?} case {} (seed {seed:#x}) code {:02x?} init gpr={:x?} flags={:#x}\n{}{fp}", res.cases, c.code, c.init.gpr, c.init.rflags, disassemble(&c))
            });
            let emu = runner.run_mode(mode, &c.code, &c.init, &c.data, 100_000);
            inflight::end();
            let m = masks_for(&nat, &c, family, undef, fsw);
            if !same_masked(&nat, &emu, &m, mode) {
                res.mismatches += 1;
                if res.reports.len() < 20 {
                    let dis = disassemble(&c);
                    let mut rep = format!(
                        "[{name}] case {} code {:02x?} (undef flags {:#x}) init gpr={:x?} flags={:#x}\n{dis}  native: {}\n  {name}: {}",
                        res.cases,
                        c.code,
                        m.flags,
                        c.init.gpr,
                        c.init.rflags,
                        describe(&nat),
                        describe(&emu)
                    );
                    if family == gen::Family::Fp {
                        rep.push_str(&format!("\n  init fp: {}", describe_fp(&c.init.fp)));
                        if let (Some((a, da)), Some((b, db))) = (regs_of(&nat), regs_of(&emu)) {
                            rep.push_str(&format!("\n  native fp: {}", describe_fp(&a.fp)));
                            let d = fp_diff(&a.fp, &b.fp, m.fsw);
                            if !d.is_empty() {
                                rep.push_str(&format!("\n  fp differs (native vs {name}): {d}"));
                            }
                            let bad: Vec<usize> = (0..da.len().min(db.len()))
                                .filter(|&i| da[i] != db[i] && !in_ranges(i, m.data))
                                .collect();
                            if let (Some(f), Some(l)) = (bad.first(), bad.last()) {
                                rep.push_str(&format!(
                                    "\n  data differs at offsets {f:#x}..={l:#x} ({} bytes)",
                                    bad.len()
                                ));
                            }
                        }
                    }
                    res.reports.push(rep);
                }
            }
        }
        if family == gen::Family::Fp {
            let mut ms: Vec<iced_x86::Mnemonic> = c.insns.iter().map(|i| i.mnemonic()).collect();
            ms.sort_by_key(|m| *m as u32);
            ms.dedup();
            for m in ms {
                let t = tally.entry(m).or_default();
                t.1 += 1;
                if res.mismatches > before {
                    t.0 += 1;
                }
            }
        }
    }
    let mut worst: Vec<_> = tally.into_iter().filter(|(_, (bad, _))| *bad > 0).collect();
    worst.sort_by(|a, b| {
        (b.1 .0 * a.1 .1)
            .cmp(&(a.1 .0 * b.1 .1))
            .then(b.1 .0.cmp(&a.1 .0))
    });
    res.by_mnemonic = worst
        .iter()
        .map(|(m, (bad, all))| format!("{m:?} {bad}/{all}"))
        .collect();
    Ok(res)
}

/// FNV-1a, for outcome digests.
fn fnv(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= *b as u64;
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
}

/// Hash how an outcome ended (completion, or the exception with its error code and cr2
/// where they are defined, or a timeout); the registers and data of a completion or an
/// exception are returned for the caller's masked hashing (`true`: an exception).
fn fnv_outcome_head<'a>(
    h: &mut u64,
    o: &'a NativeOutcome,
) -> Option<(&'a RegState, &'a [u8], bool)> {
    match o {
        NativeOutcome::Completed { regs, data } => {
            fnv(h, &[1]);
            Some((regs, data, false))
        }
        NativeOutcome::Exception { regs, data, exc } => {
            fnv(h, &[2, exc.vector]);
            if has_error_code(exc.vector) {
                fnv(h, &exc.error_code.to_le_bytes());
            }
            if exc.vector == 14 {
                fnv(h, &exc.cr2.to_le_bytes());
            }
            Some((regs, data, true))
        }
        NativeOutcome::Timeout => {
            fnv(h, &[3]);
            None
        }
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
            gen::Mode::Compat => r.gpr[..8]
                .iter()
                .for_each(|g| fnv(h, &(*g as u32).to_le_bytes())),
        }
        fnv(h, &r.rip.to_le_bytes());
        fnv(h, &(r.rflags & COMPARED_FLAGS & !undef).to_le_bytes());
        fnv(h, d);
    };
    if let Some((regs, data, faulted)) = fnv_outcome_head(&mut h, o) {
        let undef = if faulted {
            gen::undefined_flags_before(&c.insns, regs.rip).unwrap_or(base)
        } else {
            base
        };
        regs_data(&mut h, regs, data, undef);
    }
    h
}

/// As [`outcome_digest`] for FP-family cases: also the x87/SSE state as [`fp_eq`] compares
/// it (undefined condition codes masked, empty ST registers left out) and the data area
/// with the case's implementation-specific ranges zeroed.
pub fn outcome_digest_fp(o: &NativeOutcome, c: &gen::Case, mode: gen::Mode) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let base_flags = gen::undefined_flags(&c.insns).unwrap_or(0);
    let base_fsw = gen::fsw_undefined(&c.insns).unwrap_or(0);
    let state = |h: &mut u64, r: &RegState, d: &[u8], m: &Mask| {
        match mode {
            gen::Mode::Long => r.gpr.iter().for_each(|g| fnv(h, &g.to_le_bytes())),
            gen::Mode::Compat => r.gpr[..8]
                .iter()
                .for_each(|g| fnv(h, &(*g as u32).to_le_bytes())),
        }
        fnv(h, &r.rip.to_le_bytes());
        fnv(h, &(r.rflags & COMPARED_FLAGS & !m.flags).to_le_bytes());
        let mut d = d.to_vec();
        for &(o, l) in m.data {
            let end = (o + l).min(d.len());
            d[o.min(end)..end].fill(0);
        }
        fnv(h, &d);
        let f = &r.fp;
        fnv(h, &f.fcw.to_le_bytes());
        fnv(h, &(f.fsw & !m.fsw).to_le_bytes());
        fnv(h, &[f.ftw]);
        fnv(h, &f.mxcsr.to_le_bytes());
        for i in 0..8 {
            if f.st_valid(i) {
                fnv(h, &[i as u8]);
                fnv(h, &f.st[i].sig.to_le_bytes());
                fnv(h, &f.st[i].se.to_le_bytes());
            }
        }
        for x in &f.xmm {
            fnv(h, &x[0].to_le_bytes());
            fnv(h, &x[1].to_le_bytes());
        }
    };
    let m = masks_for(o, c, gen::Family::Fp, base_flags, base_fsw);
    if let Some((regs, data, _)) = fnv_outcome_head(&mut h, o) {
        state(&mut h, regs, data, &m);
    }
    h
}

fn digest(family: gen::Family, o: &NativeOutcome, c: &gen::Case, mode: gen::Mode) -> u64 {
    match family {
        gen::Family::Int => outcome_digest(o, c, mode),
        gen::Family::Fp => outcome_digest_fp(o, c, mode),
    }
}

/// Committed test vectors: the digests of the host CPU's outcomes for a seeded sequence
/// of cases (tests/difftest/vectors/*.bin).
///
/// Integer family files (`XLDVEC01`): mode bitness, seed, max_len, count, digests (u64 LE).
/// FP family files (`XLDVFP01`): mode bitness, seed, max_len, then the encodings the cases
/// were generated from (count, then each iced `Code` name as u16 length + bytes), so the
/// file stays valid when the frontend implements more mnemonics, then count and digests.
pub mod vectors {
    use super::*;
    use iced_x86::Code;

    const MAGIC: &[u8; 8] = b"XLDVEC01";
    const MAGIC_FP: &[u8; 8] = b"XLDVFP01";

    pub struct Vectors {
        pub family: gen::Family,
        pub mode: gen::Mode,
        pub seed: u64,
        pub max_len: u64,
        /// FP family: the encodings generated from (empty for the integer family, which
        /// always uses [`gen::codes`]).
        pub codes: Vec<Code>,
        pub digests: Vec<u64>,
    }

    pub fn encode(v: &Vectors) -> Vec<u8> {
        let mut b = match v.family {
            gen::Family::Int => MAGIC.to_vec(),
            gen::Family::Fp => MAGIC_FP.to_vec(),
        };
        b.extend_from_slice(&(v.mode.bitness() as u64).to_le_bytes());
        b.extend_from_slice(&v.seed.to_le_bytes());
        b.extend_from_slice(&v.max_len.to_le_bytes());
        if v.family == gen::Family::Fp {
            b.extend_from_slice(&(v.codes.len() as u64).to_le_bytes());
            for c in &v.codes {
                let name = format!("{c:?}");
                b.extend_from_slice(&(name.len() as u16).to_le_bytes());
                b.extend_from_slice(name.as_bytes());
            }
        }
        b.extend_from_slice(&(v.digests.len() as u64).to_le_bytes());
        for d in &v.digests {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b
    }

    pub fn decode(b: &[u8]) -> Option<Vectors> {
        let word = |at: usize| {
            b.get(at..at + 8)
                .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
        };
        let family = match b.get(..8)? {
            m if m == MAGIC => gen::Family::Int,
            m if m == MAGIC_FP => gen::Family::Fp,
            _ => return None,
        };
        let mode = match word(8)? {
            64 => gen::Mode::Long,
            32 => gen::Mode::Compat,
            _ => return None,
        };
        let (seed, max_len) = (word(16)?, word(24)?);
        let mut at = 32;
        let mut codes = Vec::new();
        if family == gen::Family::Fp {
            let by_name: std::collections::HashMap<String, Code> =
                Code::values().map(|c| (format!("{c:?}"), c)).collect();
            let n = word(at)? as usize;
            at += 8;
            for _ in 0..n {
                let len = u16::from_le_bytes(b.get(at..at + 2)?.try_into().unwrap()) as usize;
                let name = std::str::from_utf8(b.get(at + 2..at + 2 + len)?).ok()?;
                codes.push(*by_name.get(name)?);
                at += 2 + len;
            }
        }
        let n = word(at)? as usize;
        at += 8;
        let digests = (0..n)
            .map(|i| word(at + 8 * i))
            .collect::<Option<Vec<_>>>()?;
        Some(Vectors {
            family,
            mode,
            seed,
            max_len,
            codes,
            digests,
        })
    }

    /// Generate `n` accepted integer-family cases and their native digests (x86_64 hosts).
    pub fn record(mode: gen::Mode, n: u64, seed: u64, max_len: u64) -> std::io::Result<Vectors> {
        record_family(gen::Family::Int, mode, n, seed, max_len)
    }

    /// As [`record`] for the FP family, from the encodings the frontend implements now
    /// (an error while it implements none).
    pub fn record_fp(mode: gen::Mode, n: u64, seed: u64, max_len: u64) -> std::io::Result<Vectors> {
        record_family(gen::Family::Fp, mode, n, seed, max_len)
    }

    fn record_family(
        family: gen::Family,
        mode: gen::Mode,
        n: u64,
        seed: u64,
        max_len: u64,
    ) -> std::io::Result<Vectors> {
        let codes = gen::codes(mode);
        let fp_codes = match family {
            gen::Family::Int => Vec::new(),
            gen::Family::Fp => gen::fp_codes(mode),
        };
        if family == gen::Family::Fp && fp_codes.is_empty() {
            return Err(std::io::Error::other(
                "the frontend implements no FP/SIMD mnemonic: nothing to record",
            ));
        }
        let mut native = native::NativeRunner::new()?;
        let mut rng = gen::Rng::new(seed);
        let mut digests = Vec::new();
        let mut rejected = 0;
        while (digests.len() as u64) < n {
            let (c, _, _) = next_case(
                &mut rng,
                family,
                mode,
                &codes,
                &fp_codes,
                max_len,
                &mut rejected,
            );
            let o = run_native_case(&mut native, mode, &c)?;
            digests.push(digest(family, &o, &c, mode));
        }
        Ok(Vectors {
            family,
            mode,
            seed,
            max_len,
            codes: fp_codes,
            digests,
        })
    }

    /// Check both engines against recorded digests: (cases, mismatches, first reports).
    pub fn check(v: &Vectors) -> (u64, u64, Vec<String>) {
        let mut interp = emu::EmuRunner::new(jit::EngineKind::Interp);
        let mut jit_ = emu::EmuRunner::new(jit::EngineKind::Jit);
        let codes = gen::codes(v.mode);
        let mut rng = gen::Rng::new(v.seed);
        let (mut cases, mut bad, mut reports) = (0u64, 0u64, Vec::new());
        let mut rejected = 0;
        for want in &v.digests {
            let (c, _, _) = next_case(
                &mut rng,
                v.family,
                v.mode,
                &codes,
                &v.codes,
                v.max_len,
                &mut rejected,
            );
            cases += 1;
            for (name, r) in [("interp", &mut interp), ("jit", &mut jit_)] {
                let o = r.run_mode(v.mode, &c.code, &c.init, &c.data, 100_000);
                if digest(v.family, &o, &c, v.mode) != *want {
                    bad += 1;
                    if reports.len() < 10 {
                        reports.push(format!(
                            "[{name}] vector case {cases}: code {:02x?}",
                            c.code
                        ));
                    }
                }
            }
        }
        (cases, bad, reports)
    }
}

/// Run one case natively (retrying once after a timeout), mapping a compatibility-mode
/// completion back to the code's end.
pub fn run_native_case(
    native: &mut native::NativeRunner,
    mode: gen::Mode,
    c: &gen::Case,
) -> std::io::Result<NativeOutcome> {
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

/// The host CPU's vendor string (CPUID leaf 0), e.g. "AuthenticAMD" or "GenuineIntel".
#[cfg(target_arch = "x86_64")]
pub fn host_vendor() -> String {
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 CPU and has no side effects.
    let r = unsafe { core::arch::x86_64::__cpuid(0) };
    let mut v = Vec::with_capacity(12);
    for w in [r.ebx, r.edx, r.ecx] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    String::from_utf8_lossy(&v).into_owned()
}

/// Whether the host can serve as the oracle for the FP/SIMD corner cases. The engine's
/// choices where the manuals leave results undefined or where vendors differ (FCOMI's C1,
/// EMMS and TOP, DE with NaN operands, FPREM's partial reduction, the transcendentals'
/// last bit, fault order inside FXSAVE...) were established against an AMD host and are
/// pinned by the committed FP vectors on every host; comparing them natively with another
/// vendor's CPU would report those documented differences as mismatches.
#[cfg(target_arch = "x86_64")]
pub fn fp_oracle_host() -> bool {
    if std::env::var_os("DIFFTEST_FP_ANY_VENDOR").is_some() {
        return true;
    }
    host_vendor() == "AuthenticAMD"
}
