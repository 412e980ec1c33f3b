//! End to end: the default ROM boots on both engines and prints its own success line.

mod common;

fn run(engine: &str) -> (i32, String) {
    let out = common::xenolith()
        .args([
            "flat",
            concat!(env!("CARGO_MANIFEST_DIR"), "/roms/hello/hello.bin"),
            "--engine",
            engine,
            "--stats",
        ])
        .output()
        .expect("run xenolith");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn hello_rom_passes_on_interp_and_jit() {
    for engine in ["interp", "jit"] {
        let (code, out) = run(engine);
        assert!(
            out.contains("Xenolith flat guest: all checks passed"),
            "{engine}: {out}"
        );
        assert_eq!(code, 0, "{engine}");
    }
}

#[test]
fn bad_image_is_a_clear_error() {
    let out = common::xenolith()
        .args(["flat", "/nonexistent.bin"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading /nonexistent.bin"));
}
