//! The mock platform the back ends' unit tests run against: everything behind the seam
//! traits of `xen_pv::core::backend` ([`XsOps`], [`EvtOps`], [`GntOps`]), kept in plain
//! fields the tests inspect and edit.
//!
//! - Xenstore is a `HashMap` of absolute paths. A watch fires once when set (as xenstored
//!   does) and again for every write or rm at or below its path; the events queue in
//!   `pending` until [`Mock::pump`] delivers them to a back end.
//! - "Guest memory" is a byte vector of pages. The test plays the guest: it takes pages with
//!   [`Mock::alloc_page`], fills them through [`Mock::page`], and grants them to domain 0
//!   with [`Mock::grant`] (or by writing `grants` directly, for a fixed gref). Mappings check
//!   the domain, the gref and the read-only flag, and count the map calls.
//! - Event channels: the guest offers a port to domain 0 by putting it in `offered`;
//!   binding takes it from there into `bound` (local → remote), the local port being the
//!   remote port + 100. Unbinding offers the remote port again, as closing one end of an
//!   interdomain channel leaves the other unbound in Xen. Notifications are recorded in
//!   `notified`; one on a port that is not bound fails the test.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use xen_pv::core::backend::{Backend, DomId, EvtOps, GntOps, GrantHandle, XsOps};
use xen_pv::core::errno::EINVAL;
use xen_pv::core::grant::{
    GNTST_BAD_DOMAIN, GNTST_BAD_GNTREF, GNTST_BAD_HANDLE, GNTST_PERMISSION_DENIED,
};

/// A guest page.
pub(crate) const PAGE: usize = 4096;
/// Pages of guest memory.
const PAGES: usize = 256;
/// A bound local port is the remote port plus this.
pub(crate) const LOCAL_PORT_OFFSET: u32 = 100;

#[derive(Default)]
pub(crate) struct Mock {
    /// The guest's domain id: grants and event channels of other domains do not exist.
    pub(crate) dom: DomId,
    pub(crate) xs: HashMap<String, Vec<u8>>,
    /// Set watches, as (path, token).
    pub(crate) watches: Vec<(String, String)>,
    /// Watch events not yet delivered, as (path, token).
    pub(crate) pending: VecDeque<(String, String)>,
    /// Guest memory: `PAGES` pages.
    pub(crate) mem: Vec<u8>,
    next_page: usize,
    /// The guest's grant table: gref → (page, read-only).
    pub(crate) grants: HashMap<u32, (usize, bool)>,
    next_gref: u32,
    /// Active mappings: handle → (page, writable).
    pub(crate) maps: BTreeMap<u32, (usize, bool)>,
    next_handle: u32,
    /// Every `map` call, failed ones included.
    pub(crate) map_calls: usize,
    /// Remote ports the guest allocated unbound for domain 0.
    pub(crate) offered: BTreeSet<u32>,
    /// Bound channels: local port → remote port.
    pub(crate) bound: BTreeMap<u32, u32>,
    /// Local ports notified, in order.
    pub(crate) notified: Vec<u32>,
}

impl Mock {
    /// An empty platform for guest domain `dom`: no nodes, grants or offered ports.
    pub(crate) fn new(dom: DomId) -> Mock {
        Mock {
            dom,
            mem: vec![0; PAGES * PAGE],
            next_gref: 8,
            next_handle: 1,
            ..Default::default()
        }
    }
    /// A fresh guest page (its frame number in `mem`).
    pub(crate) fn alloc_page(&mut self) -> usize {
        assert!(self.next_page < PAGES, "mock guest memory exhausted");
        self.next_page += 1;
        self.next_page - 1
    }
    /// Grant `page` to domain 0 (read-only if `ro`) under a new gref.
    pub(crate) fn grant(&mut self, page: usize, ro: bool) -> u32 {
        let g = self.next_gref;
        self.next_gref += 1;
        self.grants.insert(g, (page, ro));
        g
    }
    pub(crate) fn page(&mut self, page: usize) -> &mut [u8] {
        &mut self.mem[page * PAGE..(page + 1) * PAGE]
    }
    pub(crate) fn page_ref(&self, page: usize) -> &[u8] {
        &self.mem[page * PAGE..(page + 1) * PAGE]
    }
    /// A xenstore node as a string (None if absent).
    pub(crate) fn get(&self, path: &str) -> Option<String> {
        self.xs
            .get(path)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
    /// Write a xenstore node (firing watches).
    pub(crate) fn set(&mut self, path: &str, v: &str) {
        XsOps::write(self, path, v.as_bytes());
    }
    /// The local port bound to the guest's `remote` port, if any.
    pub(crate) fn bound_to(&self, remote: u32) -> Option<u32> {
        self.bound
            .iter()
            .find(|&(_, &r)| r == remote)
            .map(|(&l, _)| l)
    }
    /// Deliver queued watch events (including those the back end causes meanwhile).
    pub(crate) fn pump(&mut self, be: &mut dyn Backend) {
        while let Some((p, t)) = self.pending.pop_front() {
            be.on_watch(self, &p, &t);
        }
    }
    fn fire(&mut self, path: &str) {
        for (w, t) in &self.watches {
            if path == w || path.starts_with(&format!("{w}/")) {
                self.pending.push_back((path.to_string(), t.clone()));
            }
        }
    }
}

impl XsOps for Mock {
    fn read(&mut self, path: &str) -> Option<Vec<u8>> {
        self.xs.get(path).cloned()
    }
    fn write(&mut self, path: &str, value: &[u8]) -> bool {
        self.xs.insert(path.to_string(), value.to_vec());
        self.fire(path);
        true
    }
    fn mkdir(&mut self, path: &str) -> bool {
        self.xs.entry(path.to_string()).or_default();
        true
    }
    fn rm(&mut self, path: &str) -> bool {
        let pre = format!("{path}/");
        self.xs.retain(|k, _| k != path && !k.starts_with(&pre));
        self.fire(path);
        true
    }
    fn directory(&mut self, path: &str) -> Vec<String> {
        let pre = format!("{path}/");
        let mut v: Vec<String> = self
            .xs
            .keys()
            .filter_map(|k| k.strip_prefix(&pre))
            .map(|r| r.split('/').next().unwrap_or("").to_string())
            .collect();
        v.sort();
        v.dedup();
        v
    }
    fn watch(&mut self, path: &str, token: &str) {
        self.watches.push((path.to_string(), token.to_string()));
        self.pending
            .push_back((path.to_string(), token.to_string()));
    }
    fn unwatch(&mut self, path: &str, token: &str) {
        self.watches.retain(|(p, t)| !(p == path && t == token));
    }
}

impl EvtOps for Mock {
    fn bind_interdomain(&mut self, remote_dom: DomId, remote_port: u32) -> Result<u32, i64> {
        if remote_dom != self.dom || !self.offered.remove(&remote_port) {
            return Err(EINVAL);
        }
        let p = remote_port + LOCAL_PORT_OFFSET;
        assert!(
            self.bound.insert(p, remote_port).is_none(),
            "local port {p} bound twice"
        );
        Ok(p)
    }
    fn notify(&mut self, port: u32) {
        assert!(
            self.bound.contains_key(&port),
            "notify on an unbound port {port}"
        );
        self.notified.push(port);
    }
    fn unbind(&mut self, port: u32) {
        if let Some(remote) = self.bound.remove(&port) {
            self.offered.insert(remote);
        }
    }
}

impl GntOps for Mock {
    fn map(&mut self, dom: DomId, gref: u32, writable: bool) -> Result<GrantHandle, i16> {
        self.map_calls += 1;
        if dom != self.dom {
            return Err(GNTST_BAD_DOMAIN);
        }
        let &(page, ro) = self.grants.get(&gref).ok_or(GNTST_BAD_GNTREF)?;
        if writable && ro {
            return Err(GNTST_PERMISSION_DENIED);
        }
        let h = self.next_handle;
        self.next_handle += 1;
        self.maps.insert(h, (page, writable));
        Ok(GrantHandle(h))
    }
    fn unmap(&mut self, h: GrantHandle) -> Result<(), i16> {
        self.maps.remove(&h.0).map(|_| ()).ok_or(GNTST_BAD_HANDLE)
    }
    fn read(&mut self, h: GrantHandle, offset: usize, buf: &mut [u8]) -> bool {
        let Some(&(page, _)) = self.maps.get(&h.0) else {
            return false;
        };
        if offset + buf.len() > PAGE {
            return false;
        }
        let a = page * PAGE + offset;
        buf.copy_from_slice(&self.mem[a..a + buf.len()]);
        true
    }
    fn write(&mut self, h: GrantHandle, offset: usize, data: &[u8]) -> bool {
        let Some(&(page, w)) = self.maps.get(&h.0) else {
            return false;
        };
        if !w || offset + data.len() > PAGE {
            return false;
        }
        let a = page * PAGE + offset;
        self.mem[a..a + data.len()].copy_from_slice(data);
        true
    }
}
