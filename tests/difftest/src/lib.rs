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

fn regs_eq(a: &RegState, b: &RegState, undef: u64) -> bool {
    let m = COMPARED_FLAGS & !undef;
    a.gpr == b.gpr && a.rip == b.rip && (a.rflags & m) == (b.rflags & m)
}

fn has_error_code(v: u8) -> bool {
    matches!(v, 8 | 10..=14 | 17)
}

/// Compare a native outcome with an emulated one.
pub fn same(n: &NativeOutcome, e: &NativeOutcome, undef: u64) -> bool {
    match (n, e) {
        (NativeOutcome::Completed { regs: r1, data: d1 }, NativeOutcome::Completed { regs: r2, data: d2 }) => regs_eq(r1, r2, undef) && d1 == d2,
        (NativeOutcome::Exception { regs: r1, data: d1, exc: x1 }, NativeOutcome::Exception { regs: r2, data: d2, exc: x2 }) => {
            // Faults report the state before the instruction: any flags an earlier
            // instruction left undefined are still compared only where defined.
            let code_ok = !has_error_code(x1.vector) || x1.error_code == x2.error_code;
            let cr2_ok = x1.vector != 14 || x1.cr2 == x2.cr2;
            x1.vector == x2.vector && code_ok && cr2_ok && regs_eq(r1, r2, undef) && d1 == d2
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
    let mut native = native::NativeRunner::new()?;
    let mut interp = emu::EmuRunner::new(jit::EngineKind::Interp);
    let mut jit_ = emu::EmuRunner::new(jit::EngineKind::Jit);
    let codes = gen::codes();
    let mut rng = gen::Rng::new(seed);
    let mut res = BatchResult::default();
    let mut fmt = iced_x86::FastFormatter::new();
    while res.cases < n {
        let c = gen::case(&mut rng, &codes, max_len);
        let Some(undef) = gen::undefined_flags(&c.insns) else {
            res.rejected += 1;
            continue;
        };
        res.cases += 1;
        let nat = native.run(&c.code, &c.init, &c.data)?;
        // The native runner reports IF and RF; the engine's flags are compared masked.
        for (name, runner) in [("interp", &mut interp), ("jit", &mut jit_)] {
            let emu = runner.run(&c.code, &c.init, &c.data, 100_000);
            let undef = match &nat {
                NativeOutcome::Exception { regs, .. } => gen::undefined_flags_before(&c.insns, regs.rip).unwrap_or(undef),
                _ => undef,
            };
            if !same(&nat, &emu, undef) {
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
