//! consoleback: the back end of a PV domain's primary console, as xenconsoled serves it
//! (tools/console/daemon/io.c), written only against the seam ([`BackendOps`]).
//!
//! Design:
//! - [`ConsoleBack`] is the console of one domain, a deterministic state machine driven by
//!   the platform's calls through [`Backend`]: a watch fired, the guest notified, a poll
//!   (the guest yielded or blocked, or the domain is stopping), host input arrived.
//! - Connection, as xenconsoled's `domain_create_ring`: `start` watches the domain's
//!   `console` directory (the watch fires at once, and again on every change) and each
//!   event reads `ring-ref` and `port`. The ring page is mapped writable through grant entry
//!   [`GNTTAB_RESERVED_CONSOLE`], which the toolstack grants to domain 0 when it builds the
//!   domain (xenconsoled prefers it to a foreign mapping of ring-ref's frame); the event
//!   channel, which the toolstack allocated unbound for domain 0, is bound with
//!   `bind_interdomain`. A new `ring-ref` remaps the page, a new `port` rebinds.
//! - Output (xenconsoled's `buffer_append`): both `out` indexes are read once; when
//!   `out_prod - out_cons` is 0 or more than the ring holds, nothing is consumed (indexes
//!   the guest garbled are left as they are: only its own console suffers, and nothing
//!   loops). Otherwise the bytes are copied out (at most two pieces, indexes masked with
//!   [`MASK_OUT`]), `out_cons` is published after the copy, the guest is notified and the
//!   bytes go to the [`ConsoleSink`].
//! - Input (xenconsoled's `handle_tty_read` with `ring_free_bytes`): bytes from the host
//!   queue in the back end (up to [`MAX_PENDING_INPUT`]; more is dropped) and are produced
//!   into `in` as room allows: `in_prod - in_cons` more than the ring means no room (the
//!   guest broke the ring); `in_prod` is published after the data, then the guest is
//!   notified. What did not fit is produced when the guest notifies (it does after
//!   consuming input) or at the next poll.
//! - Barriers: the back end runs only while the guest's vCPU is stopped, so the guest never
//!   sees a half-done update; the order still follows xenconsoled's (indexes read once
//!   before the data, xen_mb; data before the index that publishes it, xen_wmb), and every
//!   decision uses the index snapshot, never a second read.
//! - Guest memory is reached only through [`GntOps::read`]/[`GntOps::write`] on the mapped
//!   page; nothing the guest writes can panic the back end.

use std::collections::VecDeque;
use std::mem::{offset_of, size_of};

use xen_pv::core::backend::{Backend, BackendOps, ConsoleSink, DomId, GntOps, GrantHandle};

/// The grant entry the toolstack fills for the console page (public/grant_table.h).
pub const GNTTAB_RESERVED_CONSOLE: u32 = 0;
/// Host input queued for the guest beyond this is dropped (the guest is not reading).
pub const MAX_PENDING_INPUT: usize = 1 << 20;

/// `struct xencons_interface` (public/io/console.h).
#[repr(C)]
pub struct XenconsInterface {
    pub in_: [u8; 1024],
    pub out: [u8; 2048],
    pub in_cons: u32,
    pub in_prod: u32,
    pub out_cons: u32,
    pub out_prod: u32,
}

const IN_OFF: usize = offset_of!(XenconsInterface, in_);
const OUT_OFF: usize = offset_of!(XenconsInterface, out);
const IN_SIZE: u32 = 1024;
const OUT_SIZE: u32 = 2048;
/// Offset of the four indexes (in_cons, in_prod, out_cons, out_prod), read as one.
const IDX_OFF: usize = offset_of!(XenconsInterface, in_cons);
const IN_PROD_OFF: usize = offset_of!(XenconsInterface, in_prod);
const OUT_CONS_OFF: usize = offset_of!(XenconsInterface, out_cons);
/// MASK_XENCONS_IDX(idx, in) and (idx, out).
pub const MASK_IN: u32 = IN_SIZE - 1;
pub const MASK_OUT: u32 = OUT_SIZE - 1;

const _: () = {
    assert!(IN_OFF == 0 && OUT_OFF == 1024);
    assert!(IDX_OFF == 3072 && IN_PROD_OFF == 3076 && OUT_CONS_OFF == 3080);
    assert!(offset_of!(XenconsInterface, out_prod) == 3084);
    assert!(size_of::<XenconsInterface>() == 3088);
    assert!(
        IN_SIZE as usize == size_of::<[u8; 1024]>() && OUT_SIZE as usize == size_of::<[u8; 2048]>()
    );
    // The masks work only for power-of-two rings.
    assert!(IN_SIZE.is_power_of_two() && OUT_SIZE.is_power_of_two());
};

/// The four ring indexes, as read in one go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Indexes {
    in_cons: u32,
    in_prod: u32,
    out_cons: u32,
    out_prod: u32,
}

/// The primary console of one domain.
pub struct ConsoleBack {
    dom: DomId,
    /// `/local/domain/<dom>/console`.
    path: String,
    sink: Box<dyn ConsoleSink>,
    /// The mapped ring page and the ring-ref it was mapped for.
    ring: Option<(GrantHandle, u64)>,
    /// (local port, the guest's port).
    port: Option<(u32, u32)>,
    /// Host input not yet in the ring.
    pending: VecDeque<u8>,
    /// Counters: bytes the guest printed through the ring, bytes it got, input dropped.
    pub out_bytes: u64,
    pub in_bytes: u64,
    pub dropped_input: u64,
}

const WATCH_TOKEN: &str = "console";

impl ConsoleBack {
    /// The console of domain `dom`, its output going to `sink`.
    pub fn new(dom: DomId, sink: Box<dyn ConsoleSink>) -> ConsoleBack {
        ConsoleBack {
            dom,
            path: format!("/local/domain/{dom}/console"),
            sink,
            ring: None,
            port: None,
            pending: VecDeque::new(),
            out_bytes: 0,
            in_bytes: 0,
            dropped_input: 0,
        }
    }

    /// Whether the ring is mapped and its event channel bound.
    pub fn connected(&self) -> bool {
        self.ring.is_some() && self.port.is_some()
    }

    /// The local event-channel port, once bound.
    pub fn port(&self) -> Option<u32> {
        self.port.map(|p| p.0)
    }

    /// Host input waiting for room in the ring.
    pub fn pending_input(&self) -> usize {
        self.pending.len()
    }

    /// (Re)connect from the store's `ring-ref` and `port`, as xenconsoled's
    /// domain_create_ring: without both nodes, nothing changes.
    fn connect(&mut self, ops: &mut dyn BackendOps) {
        let Some(ring_ref) = ops.read_u64(&format!("{}/ring-ref", self.path)) else {
            return;
        };
        let Some(remote) = ops
            .read_u64(&format!("{}/port", self.path))
            .and_then(|p| u32::try_from(p).ok())
        else {
            return;
        };
        if let Some((h, r)) = self.ring {
            if r != ring_ref {
                let _ = ops.unmap(h);
                self.ring = None;
            }
        }
        if self.ring.is_none() {
            match ops.map(self.dom, GNTTAB_RESERVED_CONSOLE, true) {
                Ok(h) => self.ring = Some((h, ring_ref)),
                Err(_) => return,
            }
        }
        if self.port.is_some_and(|(_, r)| r != remote) {
            let (local, _) = self.port.take().unwrap_or_default();
            ops.unbind(local);
        }
        if self.port.is_none() {
            if let Ok(local) = ops.bind_interdomain(self.dom, remote) {
                self.port = Some((local, remote));
            }
        }
        // Whatever the guest produced before we got here.
        self.service(ops);
    }

    fn disconnect(&mut self, ops: &mut dyn BackendOps) {
        if let Some((h, _)) = self.ring.take() {
            let _ = ops.unmap(h);
        }
        if let Some((local, _)) = self.port.take() {
            ops.unbind(local);
        }
    }

    fn indexes(ops: &mut dyn GntOps, h: GrantHandle) -> Option<Indexes> {
        let mut b = [0u8; 16];
        if !ops.read(h, IDX_OFF, &mut b) {
            return None;
        }
        let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(Indexes {
            in_cons: w(0),
            in_prod: w(4),
            out_cons: w(8),
            out_prod: w(12),
        })
    }

    /// Consume the guest's output. True when something was consumed.
    fn drain(&mut self, ops: &mut dyn GntOps, h: GrantHandle, ix: Indexes) -> bool {
        let size = ix.out_prod.wrapping_sub(ix.out_cons);
        if size == 0 || size > OUT_SIZE {
            return false;
        }
        let mut buf = vec![0u8; size as usize];
        let start = (ix.out_cons & MASK_OUT) as usize;
        let first = (size as usize).min(OUT_SIZE as usize - start);
        let (a, b) = buf.split_at_mut(first);
        if !ops.read(h, OUT_OFF + start, a) || (!b.is_empty() && !ops.read(h, OUT_OFF, b)) {
            return false;
        }
        if !ops.write(h, OUT_CONS_OFF, &ix.out_prod.to_le_bytes()) {
            return false;
        }
        self.out_bytes += size as u64;
        self.sink.write(&buf);
        true
    }

    /// Produce queued input into the ring. True when something was produced.
    fn feed(&mut self, ops: &mut dyn GntOps, h: GrantHandle, ix: Indexes) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let used = ix.in_prod.wrapping_sub(ix.in_cons);
        if used > IN_SIZE {
            // "ring is screwed: ignore it"
            return false;
        }
        let n = ((IN_SIZE - used) as usize).min(self.pending.len());
        if n == 0 {
            return false;
        }
        let data: Vec<u8> = self.pending.iter().take(n).copied().collect();
        let start = (ix.in_prod & MASK_IN) as usize;
        let first = n.min(IN_SIZE as usize - start);
        let rest = &data[first..];
        if !ops.write(h, IN_OFF + start, &data[..first])
            || (!rest.is_empty() && !ops.write(h, IN_OFF, rest))
        {
            return false;
        }
        if !ops.write(
            h,
            IN_PROD_OFF,
            &ix.in_prod.wrapping_add(n as u32).to_le_bytes(),
        ) {
            return false;
        }
        self.pending.drain(..n);
        self.in_bytes += n as u64;
        true
    }

    /// Consume output and produce input; notify the guest once if either happened.
    fn service(&mut self, ops: &mut dyn BackendOps) {
        let Some((h, _)) = self.ring else { return };
        let Some(ix) = Self::indexes(&mut *ops, h) else {
            return;
        };
        let out = self.drain(&mut *ops, h, ix);
        let inp = self.feed(&mut *ops, h, ix);
        if out || inp {
            if let Some((local, _)) = self.port {
                ops.notify(local);
            }
        }
    }
}

impl Backend for ConsoleBack {
    fn name(&self) -> String {
        format!("console of domain {}", self.dom)
    }

    fn start(&mut self, ops: &mut dyn BackendOps) {
        ops.watch(&self.path, WATCH_TOKEN);
    }

    fn on_watch(&mut self, ops: &mut dyn BackendOps, _path: &str, token: &str) {
        if token == WATCH_TOKEN {
            self.connect(ops);
        }
    }

    fn on_event(&mut self, ops: &mut dyn BackendOps, port: u32) {
        if self.port.is_some_and(|(l, _)| l == port) {
            self.service(ops);
        }
    }

    fn poll(&mut self, ops: &mut dyn BackendOps) {
        self.service(ops);
    }

    fn input(&mut self, ops: &mut dyn BackendOps, bytes: &[u8]) {
        let room = MAX_PENDING_INPUT.saturating_sub(self.pending.len());
        let take = bytes.len().min(room);
        self.pending.extend(&bytes[..take]);
        self.dropped_input += (bytes.len() - take) as u64;
        self.service(ops);
    }

    fn shutdown(&mut self, ops: &mut dyn BackendOps) {
        self.service(ops);
        self.sink.flush();
        ops.unwatch(&self.path, WATCH_TOKEN);
        self.disconnect(ops);
    }
}

#[cfg(test)]
mod tests;
