//! The seam between the platform core and the PV back ends in `devices/` (the role QEMU's
//! include/hw/xen/xen_backend_ops.h plays): a back end sees xenstore, event channels and
//! grant mappings only through these narrow traits, never the JIT, KVM, or a raw guest
//! address. Back ends run as domain 0 inside the emulator and are deterministic state
//! machines: they act only when the platform calls them (a watch fired, an event arrived).
//!
//! The same back end runs unchanged over the JIT platform, a future KVM platform, or a
//! unit test's mock implementation of [`BackendOps`].
//!
//! Besides events and watches, the platform gives each back end a turn when the guest
//! yields or blocks and before the domain stops ([`Backend::poll`]: a real domain 0 runs
//! concurrently, and guests spin on yield waiting for it), and hands host input to the
//! back end that has some ([`Backend::input`]: the console's keyboard). A console back end
//! writes the guest's output into a [`ConsoleSink`].

/// A domain id (public/xen.h domid_t).
pub type DomId = u16;

/// Xenstore as a back end uses it: paths are absolute, values are bytes.
pub trait XsOps {
    fn read(&mut self, path: &str) -> Option<Vec<u8>>;
    /// Write `value` at `path` (creating parents). False when the store refuses it.
    fn write(&mut self, path: &str, value: &[u8]) -> bool;
    fn mkdir(&mut self, path: &str) -> bool;
    fn rm(&mut self, path: &str) -> bool;
    fn directory(&mut self, path: &str) -> Vec<String>;
    /// Watch `path` (and its subtree); events come back through [`Backend::on_watch`] with
    /// `token`. A new watch fires once at once, as xenstored does.
    fn watch(&mut self, path: &str, token: &str);
    fn unwatch(&mut self, path: &str, token: &str);

    fn read_str(&mut self, path: &str) -> Option<String> {
        self.read(path).and_then(|v| String::from_utf8(v).ok())
    }
    fn read_u64(&mut self, path: &str) -> Option<u64> {
        self.read_str(path).and_then(|s| s.trim().parse().ok())
    }
    fn write_str(&mut self, path: &str, value: &str) -> bool {
        self.write(path, value.as_bytes())
    }
}

/// Interdomain event channels from the back end's side.
pub trait EvtOps {
    /// Bind a local port to `remote_port` of domain `remote_dom` (EVTCHNOP_bind_interdomain:
    /// the remote port must be unbound and offered to domain 0). Returns the local port.
    fn bind_interdomain(&mut self, remote_dom: DomId, remote_port: u32) -> Result<u32, i64>;
    /// Notify the other end of local port `port`.
    fn notify(&mut self, port: u32);
    fn unbind(&mut self, port: u32);
}

/// An active grant mapping held by a back end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantHandle(pub u32);

/// Grant mappings from the back end's side. Data moves only through `read`/`write`, which
/// check the mapping's bounds and its read-only flag.
pub trait GntOps {
    /// Map grant `gref` of domain `dom` (GNTMAP_host_map, plus GNTMAP_readonly unless
    /// `writable`). Err is Xen's GNTST_* status.
    fn map(&mut self, dom: DomId, gref: u32, writable: bool) -> Result<GrantHandle, i16>;
    fn unmap(&mut self, h: GrantHandle) -> Result<(), i16>;
    /// Copy from the mapped page at byte `offset`. False if out of bounds or unmapped.
    fn read(&mut self, h: GrantHandle, offset: usize, buf: &mut [u8]) -> bool;
    /// Copy into the mapped page. False if out of bounds, unmapped or read-only.
    fn write(&mut self, h: GrantHandle, offset: usize, data: &[u8]) -> bool;

    /// Map several grants of one domain; on any failure the ones mapped are unmapped again.
    fn map_batch(
        &mut self,
        dom: DomId,
        grefs: &[u32],
        writable: bool,
    ) -> Result<Vec<GrantHandle>, i16> {
        let mut out = Vec::with_capacity(grefs.len());
        for &g in grefs {
            match self.map(dom, g, writable) {
                Ok(h) => out.push(h),
                Err(s) => {
                    for h in out {
                        let _ = self.unmap(h);
                    }
                    return Err(s);
                }
            }
        }
        Ok(out)
    }
}

/// Everything a back end may call.
pub trait BackendOps: XsOps + EvtOps + GntOps {}
impl<T: XsOps + EvtOps + GntOps> BackendOps for T {}

/// A PV back end (one device of one front end).
pub trait Backend {
    /// A short name for logs ("vbd 51712").
    fn name(&self) -> String;
    /// Called once when the platform adds the device: write the back-end nodes, set watches.
    fn start(&mut self, ops: &mut dyn BackendOps);
    /// A watch this back end set fired for `path`.
    fn on_watch(&mut self, ops: &mut dyn BackendOps, path: &str, token: &str);
    /// The front end notified local port `port` (one this back end bound).
    fn on_event(&mut self, ops: &mut dyn BackendOps, port: u32);
    /// The domain is going away: unmap everything, flush storage.
    fn shutdown(&mut self, ops: &mut dyn BackendOps);
    /// A turn outside of any event: the guest yielded or blocked (when a back end in a real
    /// domain 0 would get the CPU), or the domain is about to stop. A back end picks up
    /// work the front end left without notifying (a console ring the guest filled and now
    /// spins on with SCHEDOP_yield). Most back ends have none: the default does nothing.
    fn poll(&mut self, ops: &mut dyn BackendOps) {
        let _ = ops;
    }
    /// Bytes from the host for the device (a console's keyboard), in order. Back ends
    /// without host input ignore them (the default).
    fn input(&mut self, ops: &mut dyn BackendOps, bytes: &[u8]) {
        let _ = (ops, bytes);
    }
}

/// Where a console back end puts the guest's output (the terminal; a `Vec` in tests).
/// Shared with the platform (console_io output goes to the same sink): see the
/// `Rc<RefCell<_>>` implementation.
pub trait ConsoleSink {
    /// Guest output, in the order the guest produced it. An implementation writes it out
    /// at once (a shell prompt has no newline).
    fn write(&mut self, bytes: &[u8]);
    /// Push out anything buffered.
    fn flush(&mut self) {}
}

impl ConsoleSink for Vec<u8> {
    fn write(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// One sink written from two places (the console back end and the platform's console_io):
/// both write in their turn, so the bytes stay in the order the guest produced them.
impl<T: ConsoleSink + ?Sized> ConsoleSink for std::rc::Rc<std::cell::RefCell<T>> {
    fn write(&mut self, bytes: &[u8]) {
        self.borrow_mut().write(bytes);
    }
    fn flush(&mut self) {
        self.borrow_mut().flush();
    }
}

/// XenbusState (public/io/xenbus.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum XenbusState {
    Unknown = 0,
    Initialising = 1,
    InitWait = 2,
    Initialised = 3,
    Connected = 4,
    Closing = 5,
    Closed = 6,
    Reconfiguring = 7,
    Reconfigured = 8,
}

impl XenbusState {
    pub fn from_u64(v: u64) -> XenbusState {
        use XenbusState::*;
        match v {
            1 => Initialising,
            2 => InitWait,
            3 => Initialised,
            4 => Connected,
            5 => Closing,
            6 => Closed,
            7 => Reconfiguring,
            8 => Reconfigured,
            _ => Unknown,
        }
    }
}
