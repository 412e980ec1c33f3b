//! The committed x86 test vectors (digests of the host CPU's outcomes for seeded cases),
//! checked on every host: this is how aarch64 and riscv64 hosts run the differential suite.
//! Regenerate on x86_64 with `DIFFTEST_WRITE_VECTORS=1 cargo test --release -p
//! xenolith-difftest --test vectors` after changing the generator.

use xenolith_difftest::gen::Mode;
use xenolith_difftest::vectors;

const SEED: u64 = 0x7e57_7ec5;
const CASES: u64 = 10_000;

fn path(mode: Mode) -> std::path::PathBuf {
    let name = match mode {
        Mode::Long => "long64.bin",
        Mode::Compat => "compat32.bin",
    };
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors").join(name)
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
