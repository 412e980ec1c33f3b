//! Shared by the end-to-end tests: how to start the xenolith binary under test.

use std::process::Command;

/// The xenolith binary built for these tests. When they run for another host (`cargo test
/// --target aarch64-unknown-linux-gnu ...`), `XENOLITH_TEST_RUNNER` names the emulator to
/// start it with, e.g. `qemu-aarch64-static -L /usr/aarch64-linux-gnu`: cargo's runner
/// applies to the test binaries only, not to the programs they start.
pub fn xenolith() -> Command {
    let bin = env!("CARGO_BIN_EXE_xenolith");
    match std::env::var("XENOLITH_TEST_RUNNER") {
        Ok(r) if !r.trim().is_empty() => {
            let mut words = r.split_whitespace();
            let mut c = Command::new(words.next().unwrap_or_default());
            c.args(words).arg(bin);
            c
        }
        _ => Command::new(bin),
    }
}
