//! The differential suite: random instruction sequences on the host CPU and on both
//! engines. `DIFFTEST_CASES=N` scales it (default: a CI-sized batch), `DIFFTEST_SEED=S`
//! picks the sequence.

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn differential() {
    let n: u64 = std::env::var("DIFFTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let seed: u64 = std::env::var("DIFFTEST_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed);
    let r = xenolith_difftest::run_batch(n, seed, 6).expect("runner");
    for rep in &r.reports {
        eprintln!("{rep}\n");
    }
    println!("differential: {} cases, {} mismatches ({} rejected for reading undefined flags)", r.cases, r.mismatches, r.rejected);
    assert_eq!(r.mismatches, 0, "differential mismatches; first reports above");
}

/// The same in 32-bit compatibility mode (the translator's 32-bit paths).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn differential_compat32() {
    let n: u64 = std::env::var("DIFFTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let seed: u64 = std::env::var("DIFFTEST_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed);
    let r = xenolith_difftest::run_batch_mode(xenolith_difftest::gen::Mode::Compat, n, seed, 6).expect("runner");
    for rep in &r.reports {
        eprintln!("{rep}\n");
    }
    println!("differential (compat32): {} cases, {} mismatches ({} rejected for reading undefined flags)", r.cases, r.mismatches, r.rejected);
    assert_eq!(r.mismatches, 0, "differential mismatches; first reports above");
}
