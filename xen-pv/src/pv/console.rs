//! The PV console back end: the guest's console ring (xencons_interface in the page
//! start_info names) drained to the terminal, and console_io output.
//!
//! The ring page: `in[1024]`, `out[2048]`, then the indexes in_cons, in_prod, out_cons,
//! out_prod (u32, free-running). The guest produces into `out` and notifies its console
//! event channel; the back end consumes whenever the guest sends, yields, blocks or shuts
//! down (guests spin on yield until the ring drains).

use std::io::Write;

use crate::builder::DomainLayout;
use crate::core::GuestPhys;

const OUT_OFF: u64 = 1024;
const OUT_SIZE: u32 = 2048;
const OUT_CONS: u64 = 3080;
const OUT_PROD: u64 = 3084;

pub struct Console {
    out: Box<dyn Write>,
    /// Everything the guest printed (ring and console_io), for tests and crash reports.
    pub captured: Vec<u8>,
    /// Keep at most this many bytes in `captured` (the tail).
    pub capture_limit: usize,
}

impl Console {
    pub fn new(out: Box<dyn Write>) -> Console {
        Console { out, captured: Vec::new(), capture_limit: 1 << 20 }
    }

    /// Guest output from console_io or the ring.
    pub fn put(&mut self, bytes: &[u8]) {
        let _ = self.out.write_all(bytes);
        if bytes.contains(&b'\n') {
            let _ = self.out.flush();
        }
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
}
