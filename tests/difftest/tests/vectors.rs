//! The committed x86 test vectors (digests of the host CPU's outcomes for seeded cases),
//! checked on every host: this is how aarch64 and riscv64 hosts run the differential suite.
//! Regenerate on x86_64 with `DIFFTEST_WRITE_VECTORS=1 cargo test --release -p
//! xenolith-difftest --test vectors` after changing the generator.
//!
//! `fp64.bin` holds FP-family vectors (x87/MMX/SSE, 64-bit mode); it pins the encodings it
//! was generated from. Record it (only it) with `DIFFTEST_WRITE_FP_VECTORS=1 cargo test
//! --release -p xenolith-difftest --test vectors vectors_fp64`; until it exists the test
//! says so and passes. `DIFFTEST_FP_ONLY`/`DIFFTEST_FP_SKIP`/`DIFFTEST_FP_APPROX` (see
//! `gen::fp_candidate_codes`) change the pinned set when set while recording.

use xenolith_difftest::gen::Mode;
use xenolith_difftest::vectors;

// The recording parameters (used when recording on an x86_64 host).
#[cfg_attr(
    not(all(target_arch = "x86_64", target_os = "linux")),
    allow(dead_code)
)]
const SEED: u64 = 0x7e57_7ec5;
#[cfg_attr(
    not(all(target_arch = "x86_64", target_os = "linux")),
    allow(dead_code)
)]
const CASES: u64 = 10_000;

fn path(mode: Mode) -> std::path::PathBuf {
    let name = match mode {
        Mode::Long => "long64.bin",
        Mode::Compat => "compat32.bin",
    };
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("vectors")
        .join(name)
}

fn check(mode: Mode) {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if std::env::var_os("DIFFTEST_WRITE_VECTORS").is_some() {
        let v = vectors::record(mode, CASES, SEED, 6).expect("native runner");
        std::fs::create_dir_all(path(mode).parent().unwrap()).unwrap();
        std::fs::write(path(mode), vectors::encode(&v)).unwrap();
    }
    let bytes = std::fs::read(path(mode)).expect("committed vectors");
    let v = vectors::decode(&bytes).expect("valid vector file");
    assert_eq!(v.mode, mode);
    let (cases, bad, reports) = vectors::check(&v);
    for r in &reports {
        eprintln!("{r}");
    }
    println!("vectors ({:?}): {cases} cases, {bad} mismatches", mode);
    assert_eq!(bad, 0);
}

#[test]
fn vectors_long64() {
    check(Mode::Long);
}

#[test]
fn vectors_compat32() {
    check(Mode::Compat);
}

#[cfg_attr(
    not(all(target_arch = "x86_64", target_os = "linux")),
    allow(dead_code)
)]
const FP_SEED: u64 = 0xf1_0a7;
#[cfg_attr(
    not(all(target_arch = "x86_64", target_os = "linux")),
    allow(dead_code)
)]
const FP_CASES: u64 = 10_000;

#[test]
fn vectors_fp64() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("vectors")
        .join("fp64.bin");
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if std::env::var_os("DIFFTEST_WRITE_FP_VECTORS").is_some() {
        let v = vectors::record_fp(Mode::Long, FP_CASES, FP_SEED, 4)
            .expect("native runner and FP encodings to record");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, vectors::encode(&v)).unwrap();
        println!(
            "recorded {} FP vectors over {} encodings",
            v.digests.len(),
            v.codes.len()
        );
    }
    let Ok(bytes) = std::fs::read(&path) else {
        println!(
            "vectors (fp64): {} not recorded yet: skipped",
            path.display()
        );
        return;
    };
    let v = vectors::decode(&bytes).expect("valid vector file");
    assert_eq!(v.mode, Mode::Long);
    assert_eq!(v.family, xenolith_difftest::gen::Family::Fp);
    let (cases, bad, reports) = vectors::check(&v);
    for r in &reports {
        eprintln!("{r}");
    }
    println!(
        "vectors (fp64): {cases} cases over {} encodings, {bad} mismatches",
        v.codes.len()
    );
    assert_eq!(bad, 0);
}

/// Recording FP vectors is deterministic and the file format round-trips (a small batch,
/// kept in memory; needs the frontend to implement some FP/SIMD mnemonic).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn fp_vectors_record_round_trip() {
    if xenolith_difftest::gen::fp_codes(Mode::Long).is_empty() {
        println!("no FP/SIMD mnemonic implemented yet: skipped");
        return;
    }
    let a = vectors::record_fp(Mode::Long, 300, 99, 4).unwrap();
    let b = vectors::record_fp(Mode::Long, 300, 99, 4).unwrap();
    assert_eq!(a.digests, b.digests);
    let d = vectors::decode(&vectors::encode(&a)).expect("decodes");
    assert_eq!(
        (d.family, d.mode, d.seed, d.max_len),
        (a.family, a.mode, a.seed, a.max_len)
    );
    assert_eq!((d.codes, d.digests), (a.codes, a.digests));
    // The integer format is unchanged by the FP family.
    let bytes = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("vectors")
            .join("long64.bin"),
    )
    .unwrap();
    assert_eq!(vectors::encode(&vectors::decode(&bytes).unwrap()), bytes);
}
