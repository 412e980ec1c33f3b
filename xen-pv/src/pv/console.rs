//! The guest's console on the host side: where its output goes ([`ConsoleLog`], the
//! terminal plus a captured tail) and where its input comes from ([`ConsoleInput`]).
//!
//! The console ring itself is served by a back end in `devices/` (`devices::console`,
//! xenconsoled's role), through the hub in `backends.rs`: it writes the ring's output into
//! the domain's [`ConsoleLog`] (shared as an `Rc<RefCell<_>>` [`ConsoleSink`]), and the
//! platform hands it the input ([`crate::pv::PvDomain::poll_input`]). console_io writes,
//! a hypercall and not a ring, go to the same log from the hypercall handler, so the two
//! stay in the order the guest produced them.

use std::io::Write;
use std::time::Duration;

use crate::core::backend::ConsoleSink;

/// What a console input source has for the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputEvent {
    /// Nothing (yet).
    None,
    Bytes(Vec<u8>),
    /// The user detached (Ctrl-], as `xl console`): end the run.
    Detach,
    /// The source ended (EOF): nothing more will come.
    Closed,
}

/// A source of console input (the terminal, a pipe, a test script).
pub trait ConsoleInput {
    /// What is available now, without waiting.
    fn poll(&mut self) -> InputEvent;
    /// Wait up to `timeout` (forever when None) for input.
    fn wait(&mut self, timeout: Option<Duration>) -> InputEvent;
}

/// The guest's console output: written to `out` (stdout) and flushed piece by piece, and
/// kept (the last [`ConsoleLog::capture_limit`] bytes at least) for tests and crash reports.
pub struct ConsoleLog {
    out: Box<dyn Write>,
    /// Everything the guest printed (ring and console_io), the tail of it.
    pub captured: Vec<u8>,
    /// Keep at most this many bytes in `captured` (the tail).
    pub capture_limit: usize,
}

impl ConsoleLog {
    pub fn new(out: Box<dyn Write>) -> ConsoleLog {
        ConsoleLog {
            out,
            captured: Vec::new(),
            capture_limit: 1 << 20,
        }
    }
}

impl ConsoleSink for ConsoleLog {
    fn write(&mut self, bytes: &[u8]) {
        let _ = self.out.write_all(bytes);
        // Flush every piece: a prompt has no newline.
        let _ = self.out.flush();
        self.captured.extend_from_slice(bytes);
        if self.captured.len() > self.capture_limit * 2 {
            let cut = self.captured.len() - self.capture_limit;
            self.captured.drain(..cut);
        }
    }

    fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A writer the test can look into.
    #[derive(Clone, Default)]
    struct Shared(Rc<RefCell<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn both_writers_share_one_log_in_order_and_the_tail_is_kept() {
        let w = Shared::default();
        let log = Rc::new(RefCell::new(ConsoleLog::new(Box::new(w.clone()))));
        log.borrow_mut().capture_limit = 4;
        let mut ring: Box<dyn ConsoleSink> = Box::new(log.clone());
        log.borrow_mut().write(b"io ");
        ring.write(b"ring ");
        log.borrow_mut().write(b"io");
        assert_eq!(&*w.0.borrow(), b"io ring io");
        // At most twice the limit is kept, the tail.
        assert!(
            log.borrow().captured.ends_with(b"ng io") || log.borrow().captured.ends_with(b" io")
        );
        assert!(log.borrow().captured.len() <= 8);
    }
}
