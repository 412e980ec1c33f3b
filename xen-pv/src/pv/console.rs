//! The PV console back end: the guest's console ring (xencons_interface in the page
//! start_info names) drained to the terminal, and console_io output.
//!
//! The ring page: `in[1024]`, `out[2048]`, then the indexes in_cons, in_prod, out_cons,
//! out_prod (u32, free-running). The guest produces into `out` and notifies its console
//! event channel; the back end consumes whenever the guest sends, yields, blocks or shuts
//! down (guests spin on yield until the ring drains).
//!
//! Input: bytes from a [`ConsoleInput`] (the terminal, a pipe, a test) are queued and
//! produced into the ring's `in` half as room allows; the caller notifies the console
//! event channel when [`Console::feed`] wrote something.

use std::collections::VecDeque;
use std::io::Write;
use std::time::Duration;

use crate::builder::DomainLayout;
use crate::core::GuestPhys;

const IN_OFF: u64 = 0;
const IN_SIZE: u32 = 1024;
const IN_CONS: u64 = 3072;
const IN_PROD: u64 = 3076;
const OUT_OFF: u64 = 1024;
const OUT_SIZE: u32 = 2048;
const OUT_CONS: u64 = 3080;
const OUT_PROD: u64 = 3084;

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

pub struct Console {
    out: Box<dyn Write>,
    /// Input bytes not yet in the ring.
    pub pending_in: VecDeque<u8>,
    /// Everything the guest printed (ring and console_io), for tests and crash reports.
    pub captured: Vec<u8>,
    /// Keep at most this many bytes in `captured` (the tail).
    pub capture_limit: usize,
}

impl Console {
    pub fn new(out: Box<dyn Write>) -> Console {
        Console { out, pending_in: VecDeque::new(), captured: Vec::new(), capture_limit: 1 << 20 }
    }

    /// Guest output from console_io or the ring.
    pub fn put(&mut self, bytes: &[u8]) {
        let _ = self.out.write_all(bytes);
        // Flush every piece: a prompt has no newline.
        let _ = self.out.flush();
        self.captured.extend_from_slice(bytes);
        if self.captured.len() > self.capture_limit * 2 {
            let cut = self.captured.len() - self.capture_limit;
            self.captured.drain(..cut);
        }
    }

    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }

    /// Consume what the guest produced in its ring. A ring whose indexes claim more than
    /// the ring holds is consumed modulo its size, as Xen's back ends do (the guest only
    /// garbles its own output).
    pub fn drain(&mut self, mem: &mut dyn GuestPhys, layout: &DomainLayout) {
        let page = layout.console.pfn << 12;
        let (Some(cons), Some(prod)) = (mem.read_u32(page + OUT_CONS), mem.read_u32(page + OUT_PROD)) else {
            return;
        };
        let n = prod.wrapping_sub(cons).min(OUT_SIZE);
        if n == 0 {
            return;
        }
        let mut buf = Vec::with_capacity(n as usize);
        let start = prod.wrapping_sub(n);
        for i in 0..n {
            let idx = start.wrapping_add(i) % OUT_SIZE;
            buf.push(mem.read_u8(page + OUT_OFF + idx as u64).unwrap_or(0));
        }
        mem.write_u32(page + OUT_CONS, prod);
        self.put(&buf);
    }

    /// Produce queued input into the ring's `in` half as room allows. True when bytes
    /// were written (the guest should be notified). A ring whose indexes are further
    /// apart than its size is left alone (the guest broke it).
    pub fn feed(&mut self, mem: &mut dyn GuestPhys, layout: &DomainLayout) -> bool {
        if self.pending_in.is_empty() {
            return false;
        }
        let page = layout.console.pfn << 12;
        let (Some(cons), Some(prod)) = (mem.read_u32(page + IN_CONS), mem.read_u32(page + IN_PROD)) else {
            return false;
        };
        let used = prod.wrapping_sub(cons);
        if used > IN_SIZE {
            return false;
        }
        let n = (IN_SIZE - used).min(self.pending_in.len() as u32);
        let mut idx = prod;
        for _ in 0..n {
            let b = self.pending_in.pop_front().unwrap();
            mem.write_u8(page + IN_OFF + (idx % IN_SIZE) as u64, b);
            idx = idx.wrapping_add(1);
        }
        mem.write_u32(page + IN_PROD, idx);
        n > 0
    }
}
