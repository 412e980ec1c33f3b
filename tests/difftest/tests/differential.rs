//! The differential suite: random instruction sequences on the host CPU and on both
//! engines. `DIFFTEST_CASES=N` scales it (default: a CI-sized batch), `DIFFTEST_SEED=S`
//! picks the sequence.

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn differential() {
    let n: u64 = std::env::var("DIFFTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("DIFFTEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let r = xenolith_difftest::run_batch(n, seed, 6).expect("runner");
    for rep in &r.reports {
        eprintln!("{rep}\n");
    }
    println!(
        "differential: {} cases, {} mismatches ({} rejected for reading undefined flags)",
        r.cases, r.mismatches, r.rejected
    );
    assert_eq!(
        r.mismatches, 0,
        "differential mismatches; first reports above"
    );
}

/// The same in 32-bit compatibility mode (the translator's 32-bit paths).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn differential_compat32() {
    let n: u64 = std::env::var("DIFFTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("DIFFTEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let r = xenolith_difftest::run_batch_mode(xenolith_difftest::gen::Mode::Compat, n, seed, 6)
        .expect("runner");
    for rep in &r.reports {
        eprintln!("{rep}\n");
    }
    println!("differential (compat32): {} cases, {} mismatches ({} rejected for reading undefined flags)", r.cases, r.mismatches, r.rejected);
    assert_eq!(
        r.mismatches, 0,
        "differential mismatches; first reports above"
    );
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn cases_and_seed(default: u64) -> (u64, u64) {
    let n: u64 = std::env::var("DIFFTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let seed: u64 = std::env::var("DIFFTEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    (n, seed)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn fp_batch(mode: xenolith_difftest::gen::Mode, label: &str) {
    if !xenolith_difftest::fp_oracle_host() {
        println!(
            "differential ({label}): SKIP on a {} host: the FP corner cases are pinned against an AMD host (vectors_fp64 checks them here; DIFFTEST_FP_ANY_VENDOR=1 compares anyway)",
            xenolith_difftest::host_vendor()
        );
        return;
    }
    let (n, seed) = cases_and_seed(20_000);
    let r = xenolith_difftest::run_batch_fp(mode, n, seed, 4).expect("runner");
    for rep in &r.reports {
        eprintln!("{rep}\n");
    }
    if !r.by_mnemonic.is_empty() {
        let top: Vec<&str> = r.by_mnemonic.iter().take(40).map(|s| s.as_str()).collect();
        eprintln!(
            "mismatching cases by mnemonic (worst ratio first): {}\n",
            top.join(", ")
        );
    }
    let note = r
        .note
        .as_deref()
        .map(|n| format!("; {n}"))
        .unwrap_or_default();
    println!(
        "differential ({label}): {} cases, {} mismatches ({} rejected for reading undefined flags or condition codes{note})",
        r.cases, r.mismatches, r.rejected
    );
    assert_eq!(
        r.mismatches, 0,
        "differential mismatches; first reports above"
    );
}

/// Runs the ignored test `inner` of this binary in a child process and forwards its output:
/// an engine bug that aborts the process (a panic in a helper cannot unwind) or hangs it
/// then fails only this test, not the integer ones sharing the binary.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn run_isolated(inner: &str) {
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            inner,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("spawn the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The child's own report lines (its test-harness chatter left out; the harness prints
    // "test NAME ... " in front of the test's first line).
    for l in stdout.lines() {
        let l = match l.strip_prefix("test ") {
            Some(rest) => rest.split_once(" ... ").map_or("", |(_, r)| r),
            None if l.starts_with("running ") => "",
            None => l,
        };
        if !matches!(l.trim(), "" | "ok" | "FAILED") {
            println!("{l}");
        }
    }
    if !out.status.success() {
        eprintln!("{stderr}");
        use std::os::unix::process::ExitStatusExt;
        match out.status.signal() {
            Some(sig) => panic!("{inner}: the test process died of signal {sig} (an engine panic in a helper aborts; see the case printed above)"),
            None => panic!("{inner} failed; reports above"),
        }
    }
}

/// x87, MMX and SSE..SSE4.2 sequences (the FP family), with the x87/SSE state compared.
/// Runs [`fp_batch_inner_long`] in a child process (see [`run_isolated`]).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn differential_fp() {
    run_isolated("fp_batch_inner_long");
}

/// The FP family in 32-bit compatibility mode.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn differential_fp_compat32() {
    run_isolated("fp_batch_inner_compat32");
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
#[ignore = "run by differential_fp in a child process"]
fn fp_batch_inner_long() {
    fp_batch(xenolith_difftest::gen::Mode::Long, "fp");
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
#[ignore = "run by differential_fp_compat32 in a child process"]
fn fp_batch_inner_compat32() {
    fp_batch(xenolith_difftest::gen::Mode::Compat, "fp compat32");
}

/// Random x87/SSE states survive a case that does not touch them, on the host and on both
/// engines alike (the state plumbing: FXRSTOR/FXSAVE images, the signal frame, physical vs
/// stack order of the x87 registers), for completions and for faults.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn fp_state_passthrough() {
    use xenolith_difftest::gen::{gen_fp_state, Mode, Rng};
    use xenolith_difftest::native::{NativeOutcome, NativeRunner, RegState, DATA_ADDR, DATA_SIZE};
    let mut native = NativeRunner::new().unwrap();
    let mut engines = [
        xenolith_difftest::emu::EmuRunner::new(jit::EngineKind::Interp),
        xenolith_difftest::emu::EmuRunner::new(jit::EngineKind::Jit),
    ];
    let mut rng = Rng::new(7);
    let data = vec![0x5au8; DATA_SIZE];
    // nop; add rax, rcx; ud2 (a fault: the state comes from the signal frame natively).
    for code in [&[0x90u8][..], &[0x48, 0x01, 0xc8], &[0x0f, 0x0b]] {
        for _ in 0..200 {
            let mut init = RegState::default();
            init.gpr[4] = DATA_ADDR + 0x1800;
            init.fp = gen_fp_state(&mut rng);
            let nat = native.run(code, &init, &data).unwrap();
            match &nat {
                NativeOutcome::Completed { regs, .. } | NativeOutcome::Exception { regs, .. } => {
                    assert_eq!(regs.fp, init.fp)
                }
                o => panic!("{o:?}"),
            }
            for e in engines.iter_mut() {
                let o = e.run_mode(Mode::Long, code, &init, &data, 1000);
                assert!(
                    xenolith_difftest::same(&nat, &o, 0, Mode::Long),
                    "native {nat:?}\nemu {o:?}"
                );
            }
        }
    }
}

/// The FP generator and the native runner on their own, over every FP-family encoding
/// whether the frontend implements it or not: no case upsets the sandbox, and each runs the
/// same twice (the generated state is the whole input).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn fp_generator_native_smoke() {
    use xenolith_difftest::gen::{self, Mode, Rng};
    let (n, seed) = cases_and_seed(2_000);
    for mode in [Mode::Long, Mode::Compat] {
        let fp_codes = gen::fp_candidate_codes(mode);
        assert!(
            fp_codes.len() > 400,
            "{} FP-family encodings for {mode:?}",
            fp_codes.len()
        );
        let int_codes = gen::codes(mode);
        let mut native = xenolith_difftest::native::NativeRunner::new().unwrap();
        let mut rng = Rng::new(seed);
        let mut vectors = std::collections::BTreeMap::new();
        let (mut ran, mut rejected) = (0u64, 0u64);
        while ran < n / 2 {
            let c = gen::fp_case(&mut rng, mode, &fp_codes, &int_codes, 4);
            if gen::undefined_flags(&c.insns).is_none() || gen::fsw_undefined(&c.insns).is_none() {
                rejected += 1;
                continue;
            }
            ran += 1;
            let a = xenolith_difftest::run_native_case(&mut native, mode, &c).expect("native run");
            let b = xenolith_difftest::run_native_case(&mut native, mode, &c).expect("native run");
            assert_eq!(a, b, "case {ran}: code {:02x?}", c.code);
            let key = match &a {
                xenolith_difftest::native::NativeOutcome::Completed { .. } => {
                    "completed".to_string()
                }
                xenolith_difftest::native::NativeOutcome::Exception { exc, .. } => {
                    format!("vector {}", exc.vector)
                }
                xenolith_difftest::native::NativeOutcome::Timeout => "timeout".to_string(),
            };
            *vectors.entry(key).or_insert(0u64) += 1;
        }
        println!(
            "fp generator ({mode:?}, {} encodings): {ran} cases ({rejected} rejected): {vectors:?}",
            fp_codes.len()
        );
        assert!(!vectors.contains_key("timeout"));
    }
}

/// Lists the FP-family encodings the frontend does not implement yet (informational).
#[test]
fn fp_coverage() {
    use xenolith_difftest::gen::{fp_candidate_codes, fp_codes, Mode};
    let all = fp_candidate_codes(Mode::Long);
    let done = fp_codes(Mode::Long);
    let mut missing: Vec<String> = all
        .iter()
        .filter(|c| !done.contains(c))
        .map(|c| format!("{:?}", c.mnemonic()))
        .collect();
    missing.sort();
    missing.dedup();
    println!(
        "fp coverage: {} of {} encodings implemented; missing mnemonics: {}",
        done.len(),
        all.len(),
        missing.join(" ")
    );
}
