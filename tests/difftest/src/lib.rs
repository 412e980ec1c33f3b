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
        // A timeout on a loaded machine is retried once before it counts.
        let mut run_native = |code: &[u8]| -> std::io::Result<NativeOutcome> {
            match native.run(code, &c.init, &c.data)? {
                NativeOutcome::Timeout => native.run(code, &c.init, &c.data),
                o => Ok(o),
            }
        };
        let nat = match mode {
            gen::Mode::Long => run_native(&c.code)?,
            gen::Mode::Compat => {
                let blob = gen::compat_blob(&c.code);
                let mut o = run_native(&blob)?;
                // Completion is reported at the end of the blob: map it to the end of the
                // compatibility-mode code.
                if let NativeOutcome::Completed { regs, .. } = &mut o {
                    if regs.rip == native::CODE_ADDR + blob.len() as u64 {
                        regs.rip = mode.code_start() + c.code.len() as u64;
                    }
                }
                o
            }
        };
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
