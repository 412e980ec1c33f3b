//! The PV back ends of the domain (`devices/`), driven through the core's seam
//! ([`crate::core::backend`]): this module implements [`BackendOps`] over the domain's
//! xenstore (domain 0's connection), event channels and grant table, and routes to each
//! back end the watch events and event-channel notifications meant for it.
//!
//! - A back end's watch tokens are prefixed with its index (`"3:token"`), so an event finds
//!   its back end without a table; the back end sees its own token.
//! - A back end's event-channel port is the guest's port number (see `core/evtchn.rs`): a
//!   guest `EVTCHNOP_send` on it calls [`Backend::on_event`].
//! - Back ends run only from here, synchronously, when the guest sends or writes the store,
//!   and get a turn ([`Backend::poll`]) when the guest yields or blocks and before the
//!   domain stops: deterministic, as the rest of the platform.
//! - The console back end (`devices::console`, added with [`PvDomain::add_console`]) gets
//!   the host's console input ([`Backend::input`]). Its event channel is the builder's
//!   console port, which the platform offers unbound to domain 0 (`reserve_unbound`, as
//!   libxl does for xenconsoled) and the back end claims with an ordinary
//!   [`EvtOps::bind_interdomain`].
//! - Grant mappings go through the core's grant table as domain 0 ([`grant::Backend`]);
//!   guest memory the back ends write is reported to the engine (translated code there is
//!   invalidated).

use std::collections::HashMap;

use jit::Engine;

use super::grant::Tracked;
use super::xs::Xenstore;
use super::PvDomain;
use crate::core::backend::{Backend, DomId, EvtOps, GntOps, GrantHandle, XsOps};
use crate::core::errno::EINVAL;
use crate::core::evtchn::{EventChannels, PortState, GUEST_DOMID};
use crate::core::grant::{self, GrantMapper, GrantTable};
use crate::core::xenstore::{msg_type, Access, Perm};
use crate::core::GuestPhys;

/// The back ends and their event-channel ports.
#[derive(Default)]
pub struct Backends {
    devs: Vec<Option<Box<dyn Backend>>>,
    /// Guest port → back end.
    ports: HashMap<u32, usize>,
    /// The console back end: console input goes to it.
    console: Option<usize>,
}

impl Backends {
    pub fn len(&self) -> usize {
        self.devs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devs.is_empty()
    }

    pub fn owner_of(&self, port: u32) -> Option<usize> {
        self.ports.get(&port).copied()
    }
}

/// [`crate::core::backend::BackendOps`] for back end `dev`.
struct PlatformOps<'a> {
    dev: usize,
    xs: &'a mut Xenstore,
    evtchn: &'a mut EventChannels,
    mem: &'a mut dyn GuestPhys,
    grant: &'a mut GrantTable,
    /// Whether a guest frame can take the writable type (it is not a page table).
    writable: &'a dyn Fn(u64) -> bool,
    ports: &'a mut HashMap<u32, usize>,
}

impl PlatformOps<'_> {
    /// Domain 0's view of the guest's grant table.
    fn mapper(&mut self) -> grant::Backend<'_> {
        grant::Backend {
            table: &mut *self.grant,
            mem: &mut *self.mem,
            domid: 0,
            writable: self.writable,
        }
    }
}

impl XsOps for PlatformOps<'_> {
    fn read(&mut self, path: &str) -> Option<Vec<u8>> {
        self.xs.store.read(path)
    }
    fn write(&mut self, path: &str, value: &[u8]) -> bool {
        match self.xs.store.try_write(path, value) {
            Ok(ev) => {
                self.xs.fire(ev);
                true
            }
            Err(_) => false,
        }
    }
    fn mkdir(&mut self, path: &str) -> bool {
        match self.xs.store.try_mkdir(path) {
            Ok(ev) => {
                self.xs.fire(ev);
                true
            }
            Err(_) => false,
        }
    }
    fn rm(&mut self, path: &str) -> bool {
        match self.xs.store.try_rm(path) {
            Ok(ev) => {
                self.xs.fire(ev);
                true
            }
            Err(_) => false,
        }
    }
    fn directory(&mut self, path: &str) -> Vec<String> {
        self.xs.store.directory(path).unwrap_or_default()
    }
    fn watch(&mut self, path: &str, token: &str) {
        let payload = format!("{path}\0{}:{token}\0", self.dev);
        self.xs.dom0_request(msg_type::WATCH, payload.as_bytes());
    }
    fn unwatch(&mut self, path: &str, token: &str) {
        let payload = format!("{path}\0{}:{token}\0", self.dev);
        self.xs.dom0_request(msg_type::UNWATCH, payload.as_bytes());
    }
}

impl EvtOps for PlatformOps<'_> {
    fn bind_interdomain(&mut self, remote_dom: DomId, remote_port: u32) -> Result<u32, i64> {
        if remote_dom != GUEST_DOMID {
            return Err(EINVAL);
        }
        self.evtchn.connect_backend(remote_port, 0)?;
        self.ports.insert(remote_port, self.dev);
        Ok(remote_port)
    }
    fn notify(&mut self, port: u32) {
        // Only while the guest's end is still connected to domain 0: a port the guest closed
        // (and perhaps reused) is no longer this back end's, as Xen's notify on a channel
        // whose remote end was closed goes nowhere.
        let connected = self.evtchn.status(port).is_ok_and(|p| {
            p.state
                == PortState::Interdomain {
                    remote_dom: 0,
                    remote_port: port,
                }
        });
        if connected && self.ports.get(&port) == Some(&self.dev) {
            self.evtchn.raise(self.mem, port);
        }
    }
    fn unbind(&mut self, port: u32) {
        if self.ports.get(&port) == Some(&self.dev) {
            self.ports.remove(&port);
            let _ = self.evtchn.disconnect_backend(port, 0);
        }
    }
}

impl GntOps for PlatformOps<'_> {
    fn map(&mut self, dom: DomId, gref: u32, writable: bool) -> Result<GrantHandle, i16> {
        let flags = grant::GNTMAP_HOST_MAP | if writable { 0 } else { grant::GNTMAP_READONLY };
        self.mapper().map(dom, gref, flags).map(GrantHandle)
    }
    fn unmap(&mut self, h: GrantHandle) -> Result<(), i16> {
        self.mapper().unmap(h.0)
    }
    fn read(&mut self, h: GrantHandle, offset: usize, buf: &mut [u8]) -> bool {
        self.mapper().read(h.0, offset, buf).is_ok()
    }
    fn write(&mut self, h: GrantHandle, offset: usize, data: &[u8]) -> bool {
        self.mapper().write(h.0, offset, data).is_ok()
    }
}

impl PvDomain {
    /// Run `f` on back end `dev` with the platform's ops.
    fn with_backend(
        &mut self,
        e: &mut Engine,
        dev: usize,
        f: impl FnOnce(&mut dyn Backend, &mut PlatformOps),
    ) {
        let Some(mut b) = self.backends.devs.get_mut(dev).and_then(Option::take) else {
            return;
        };
        if let Some(xs) = self.xs.as_mut() {
            let tables = &self.mmu.tables;
            let writable = |mfn: u64| !tables.contains_key(&mfn);
            let mut mem = Tracked {
                ram: e.ram(),
                writes: Vec::new(),
            };
            let mut ops = PlatformOps {
                dev,
                xs,
                evtchn: &mut self.evtchn,
                mem: &mut mem,
                grant: &mut self.grant,
                writable: &writable,
                ports: &mut self.backends.ports,
            };
            f(b.as_mut(), &mut ops);
            let writes = std::mem::take(&mut mem.writes);
            // Back ends wrote guest memory (disk reads): translated code there is stale.
            for (a, n) in writes {
                e.core.notify_phys_write(&mut e.env, a, n);
            }
        }
        self.backends.devs[dev] = Some(b);
    }

    /// Add a back end: write the toolstack's nodes for it (`nodes`: path, value), then
    /// start it. Permissions as libxl sets them: nodes under the guest's own domain path
    /// (the front end's directory) are the guest's, readable by domain 0; the others are
    /// domain 0's, readable by the guest.
    /// Returns the back end's index (None before the domain started: there is no store).
    pub fn add_backend(
        &mut self,
        e: &mut Engine,
        dev: Box<dyn Backend>,
        nodes: &[(String, String)],
    ) -> Option<usize> {
        let xs = self.xs.as_mut()?;
        let guest = GUEST_DOMID as u32;
        let own = format!("/local/domain/{guest}/");
        let fe = [Perm::new(guest, Access::None), Perm::new(0, Access::Read)];
        let be = [Perm::new(0, Access::None), Perm::new(guest, Access::Read)];
        for (p, v) in nodes {
            let ev = xs.store.write(p, v.as_bytes());
            xs.fire(ev);
            let perms = if p.starts_with(&own) { &fe } else { &be };
            // The node and its directory (the device's front- or back-end directory).
            if let Some((dir, _)) = p.rsplit_once('/') {
                let ev = xs.store.set_perms(dir, perms);
                xs.fire(ev);
            }
            let ev = xs.store.set_perms(p, perms);
            xs.fire(ev);
        }
        self.backends.devs.push(Some(dev));
        let i = self.backends.devs.len() - 1;
        self.with_backend(e, i, |b, ops| b.start(ops));
        self.run_backends(e);
        Some(i)
    }

    /// Add the domain's console back end (xenconsoled's role, `devices::console`): it
    /// finds the ring and port in the domain's `console` nodes, which the domain already
    /// has, and gets the host's console input. Add it before the guest runs: until it binds
    /// the console port, the guest's notifications on it are dropped, as Xen drops them.
    pub fn add_console(&mut self, e: &mut Engine, dev: Box<dyn Backend>) {
        self.backends.console = self.add_backend(e, dev, &[]);
    }

    /// Host console input for the console back end (dropped without one).
    pub fn console_input(&mut self, e: &mut Engine, bytes: &[u8]) {
        let Some(dev) = self.backends.console else {
            return;
        };
        self.with_backend(e, dev, |b, ops| b.input(ops, bytes));
        self.run_backends(e);
    }

    /// Give every back end its turn outside of events ([`Backend::poll`]): the guest
    /// yielded or blocked, or the domain is stopping.
    pub fn poll_backends(&mut self, e: &mut Engine) {
        for i in 0..self.backends.len() {
            self.with_backend(e, i, |b, ops| b.poll(ops));
        }
        self.run_backends(e);
    }

    /// Deliver pending watch events to the back ends (until none are left), then flush
    /// what they wrote for the guest into its store ring.
    pub fn run_backends(&mut self, e: &mut Engine) {
        // Bounded: a back end reacting to its own writes forever is a bug, not a hang.
        for _ in 0..10_000 {
            let Some((path, token)) = self.xs.as_mut().and_then(|x| x.backend_events.pop_front())
            else {
                break;
            };
            let Some((dev, tok)) = token
                .split_once(':')
                .and_then(|(d, t)| Some((d.parse::<usize>().ok()?, t.to_string())))
            else {
                continue;
            };
            self.with_backend(e, dev, |b, ops| b.on_watch(ops, &path, &tok));
        }
        let notify = self
            .xs
            .as_mut()
            .is_some_and(|x| x.ring_dirty && x.flush_ring(e.ram()));
        if notify {
            let p = self.store_port;
            self.evtchn.raise(e.ram(), p);
        }
    }

    /// The guest notified port `port`, which back end `dev` bound.
    pub fn backend_event(&mut self, e: &mut Engine, port: u32) {
        let Some(dev) = self.backends.owner_of(port) else {
            return;
        };
        self.with_backend(e, dev, |b, ops| b.on_event(ops, port));
        self.run_backends(e);
    }

    /// The domain is going away: let every back end unmap and flush.
    pub fn shutdown_backends(&mut self, e: &mut Engine) {
        for i in 0..self.backends.len() {
            self.with_backend(e, i, |b, ops| b.shutdown(ops));
        }
    }
}
