//! blkback: the back end of Xen's PV block device (vbd), as Linux's xen-blkback serves a
//! domU's xen-blkfront (or PV-GRUB's / Mini-OS's blkfront).
//!
//! Design:
//! - [`BlkBack`] is one vbd of one front end, a deterministic state machine driven only by
//!   the platform's calls through [`Backend`] (a watch fired, an event arrived) and seeing
//!   Xen only through [`BackendOps`]: xenstore, event channels and grant mappings.
//! - XenBus (back-end side, as xen-blkback's `frontend_changed`): `start` writes the
//!   device's feature nodes, goes InitWait and watches the front end's `state`. Front end
//!   Initialised/Connected → read `ring-ref` (or `ring-page-order` + `ring-ref<i>`),
//!   `event-channel`, `protocol`, `feature-persistent`; map the ring, bind the event
//!   channel, go Connected. Front end Closing → Closing; Closed → unmap, unbind, Closed;
//!   Initialising after Closed → InitWait (a reconnect). Bad front-end nodes → an error
//!   node and Closing (xenbus_dev_fatal).
//! - The ring ([`ring`]) follows io/ring.h: requests are copied out once, then validated;
//!   responses are pushed once per pass with RING_PUSH_RESPONSES_AND_CHECK_NOTIFY and the
//!   pass ends with RING_FINAL_CHECK_FOR_REQUESTS. A req_prod more than a ring ahead halts
//!   the ring until the front end reconnects (as Linux: "Halting ring processing").
//! - Requests ([`abi`] has both x86 ABIs) are served synchronously: every request gets its
//!   response before the next is read. Bad requests get BLKIF_RSP_ERROR, unknown
//!   operations BLKIF_RSP_EOPNOTSUPP; nothing the guest writes can panic the back end.
//! - Data moves through [`GntOps`] only: segments are mapped writable for READ, read-only
//!   for WRITE, and unmapped after the request, except with feature-persistent where they
//!   are mapped writable once and kept in a per-ring cache (up to [`MAX_PERSISTENT_GRANTS`]).
//! - [`storage`] holds the disk: raw image files, a copy-on-write overlay, memory.

pub mod abi;
pub mod ring;
pub mod storage;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use xen_pv::core::backend::{Backend, BackendOps, DomId, GntOps, GrantHandle, XenbusState};

use abi::*;
use ring::{BackRing, RingError};
pub use storage::{CowOverlay, MemStorage, RawFile, Storage};

/// MAX_INDIRECT_SEGMENTS of Linux (advertised as feature-max-indirect-segments).
pub const MAX_INDIRECT_SEGMENTS: usize = 256;
/// Largest ring the back end accepts (max-ring-page-order: 16 pages, XENBUS_MAX_RING_GRANT_ORDER).
pub const MAX_RING_PAGE_ORDER: u32 = 4;
/// Persistent grants kept per ring (Linux's max_persistent_grants default).
pub const MAX_PERSISTENT_GRANTS: usize = 1056;
/// Discard granularity advertised (bytes).
pub const DISCARD_GRANULARITY: u32 = 4096;
const SECTOR: u64 = 512;
const SECTORS_PER_PAGE: u8 = (ring::PAGE_SIZE as u64 / SECTOR) as u8;

/// errno values for xenbus_dev_fatal messages.
const EINVAL: i32 = 22;
const ENOSYS: i32 = 38;

/// Where a vbd lives and how it is exposed.
#[derive(Clone, Debug)]
pub struct VbdConfig {
    pub frontend_dom: DomId,
    /// The virtual device number (51712 = xvda).
    pub devid: u32,
    /// `/local/domain/0/backend/vbd/<domid>/<devid>`.
    pub backend_path: String,
    /// `/local/domain/<domid>/device/vbd/<devid>`.
    pub frontend_path: String,
    pub read_only: bool,
    /// The ABI assumed when the front end writes no `protocol` node (the "native" one).
    pub default_abi: Abi,
}

impl VbdConfig {
    /// The usual paths for `devid` of domain `frontend_dom`, x86_64 as the native ABI.
    pub fn new(frontend_dom: DomId, devid: u32, read_only: bool) -> VbdConfig {
        VbdConfig {
            frontend_dom,
            devid,
            backend_path: format!("/local/domain/0/backend/vbd/{frontend_dom}/{devid}"),
            frontend_path: format!("/local/domain/{frontend_dom}/device/vbd/{devid}"),
            read_only,
            default_abi: Abi::X86_64,
        }
    }
}

/// The Linux name of a xvd device number (51712 → "xvda", 51728 → "xvdb"); extended
/// numbers (1 << 28 | disk << 8) too.
pub fn xvd_name(devid: u32) -> String {
    let disk = if devid & (1 << 28) != 0 {
        (devid >> 8) & 0xfffff
    } else {
        (devid >> 4) & 0xf
    };
    let mut n = disk + 1;
    let mut s = Vec::new();
    while n > 0 {
        n -= 1;
        s.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    s.reverse();
    format!("xvd{}", String::from_utf8_lossy(&s))
}

/// The nodes the toolstack (libxl's device_disk_add) writes for a vbd, as (path, value):
/// the back end's directory first, then the front end's. The platform writes them (with
/// the permissions it manages) before calling [`Backend::start`]. `params` is the image
/// path shown to tools.
pub fn toolstack_nodes(cfg: &VbdConfig, params: &str) -> Vec<(String, String)> {
    let be = &cfg.backend_path;
    let fe = &cfg.frontend_path;
    let mut v = Vec::new();
    let mut put = |p: String, val: String| v.push((p, val));
    put(format!("{be}/frontend"), fe.clone());
    put(format!("{be}/frontend-id"), cfg.frontend_dom.to_string());
    put(format!("{be}/online"), "1".into());
    put(format!("{be}/removable"), "0".into());
    put(format!("{be}/bootable"), "1".into());
    put(
        format!("{be}/state"),
        (XenbusState::Initialising as u8).to_string(),
    );
    put(format!("{be}/dev"), xvd_name(cfg.devid));
    put(format!("{be}/type"), "file".into());
    put(
        format!("{be}/mode"),
        if cfg.read_only { "r" } else { "w" }.into(),
    );
    put(format!("{be}/device-type"), "disk".into());
    put(format!("{be}/discard-enable"), "1".into());
    put(format!("{be}/params"), params.into());
    put(format!("{fe}/backend"), be.clone());
    put(format!("{fe}/backend-id"), "0".into());
    put(
        format!("{fe}/state"),
        (XenbusState::Initialising as u8).to_string(),
    );
    put(format!("{fe}/virtual-device"), cfg.devid.to_string());
    put(format!("{fe}/device-type"), "disk".into());
    put(format!("{fe}/trusted"), "1".into());
    v
}

/// Counters (for tests and logs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkStats {
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub discards: u64,
    pub errors: u64,
    pub unsupported: u64,
    /// Grant map calls made for data and indirect pages (persistent hits make none).
    pub data_maps: u64,
}

/// The grant mappings of one ring's data pages.
struct GrantCache {
    dom: DomId,
    persistent: bool,
    /// gref → mapping (writable), kept until disconnect. BTreeMap: deterministic order.
    cache: BTreeMap<u32, GrantHandle>,
}

/// A mapped page for one request; `temporary` ones are unmapped when it completes.
#[derive(Clone, Copy)]
struct Mapped {
    h: GrantHandle,
    temporary: bool,
}

impl GrantCache {
    fn map(
        &mut self,
        ops: &mut dyn GntOps,
        gref: u32,
        writable: bool,
        stats: &mut BlkStats,
    ) -> Result<Mapped, i16> {
        if self.persistent {
            if let Some(&h) = self.cache.get(&gref) {
                return Ok(Mapped {
                    h,
                    temporary: false,
                });
            }
            // Persistent grants are granted writable by the front end and mapped so.
            stats.data_maps += 1;
            let h = ops.map(self.dom, gref, true)?;
            if self.cache.len() < MAX_PERSISTENT_GRANTS {
                self.cache.insert(gref, h);
                return Ok(Mapped {
                    h,
                    temporary: false,
                });
            }
            return Ok(Mapped { h, temporary: true });
        }
        stats.data_maps += 1;
        Ok(Mapped {
            h: ops.map(self.dom, gref, writable)?,
            temporary: true,
        })
    }

    fn release(ops: &mut dyn GntOps, maps: &[Mapped]) {
        for m in maps.iter().filter(|m| m.temporary) {
            let _ = ops.unmap(m.h);
        }
    }

    fn clear(&mut self, ops: &mut dyn GntOps) {
        for (_, h) in std::mem::take(&mut self.cache) {
            let _ = ops.unmap(h);
        }
    }
}

/// A connected ring.
struct Conn {
    ring: BackRing,
    port: u32,
    grants: GrantCache,
    /// A protocol error stopped processing until the front end reconnects.
    halted: bool,
}

/// What a request came to: its response fields.
struct Outcome {
    id: u64,
    operation: u8,
    status: i16,
}

/// One vbd back end.
pub struct BlkBack {
    cfg: VbdConfig,
    storage: Box<dyn Storage>,
    read_only: bool,
    state: XenbusState,
    conn: Option<Conn>,
    discard: bool,
    token: String,
    pub stats: BlkStats,
}

impl BlkBack {
    /// A vbd serving `storage`; read-only when `cfg.read_only` or the storage is.
    pub fn new(cfg: VbdConfig, storage: Box<dyn Storage>) -> BlkBack {
        let read_only = cfg.read_only || storage.read_only();
        let token = format!("vbd/{}/{}", cfg.frontend_dom, cfg.devid);
        BlkBack {
            cfg,
            storage,
            read_only,
            state: XenbusState::Unknown,
            conn: None,
            discard: true,
            token,
            stats: BlkStats::default(),
        }
    }

    pub fn state(&self) -> XenbusState {
        self.state
    }
    pub fn config(&self) -> &VbdConfig {
        &self.cfg
    }
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }
    /// The local event channel port while connected.
    pub fn port(&self) -> Option<u32> {
        self.conn.as_ref().map(|c| c.port)
    }
    /// The negotiated ring: (ABI, entries, pages, persistent grants in use).
    pub fn ring_info(&self) -> Option<(Abi, u32, usize, bool)> {
        self.conn.as_ref().map(|c| {
            (
                c.ring.abi,
                c.ring.size,
                c.ring.pages.len(),
                c.grants.persistent,
            )
        })
    }
    /// Whether ring processing stopped on a protocol error.
    pub fn halted(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.halted)
    }
    pub fn persistent_grants(&self) -> usize {
        self.conn.as_ref().map_or(0, |c| c.grants.cache.len())
    }
    pub fn storage(&mut self) -> &mut dyn Storage {
        self.storage.as_mut()
    }
    pub fn sectors(&self) -> u64 {
        self.storage.len() / SECTOR
    }

    fn be(&self, node: &str) -> String {
        format!("{}/{}", self.cfg.backend_path, node)
    }
    fn fe(&self, node: &str) -> String {
        format!("{}/{}", self.cfg.frontend_path, node)
    }

    fn switch_state(&mut self, ops: &mut dyn BackendOps, s: XenbusState) {
        if self.state == s {
            return;
        }
        self.state = s;
        let p = self.be("state");
        ops.write_str(&p, &(s as u8).to_string());
    }

    /// xenbus_dev_fatal: record the error under `error/<backend node>/error` of domain 0
    /// and go Closing.
    fn fatal(&mut self, ops: &mut dyn BackendOps, errno: i32, msg: &str) {
        let be = &self.cfg.backend_path;
        let rel = be
            .strip_prefix("/local/domain/0/")
            .unwrap_or(be.trim_start_matches('/'));
        let path = format!("/local/domain/0/error/{rel}/error");
        ops.write_str(&path, &format!("{errno} {msg}"));
        self.switch_state(ops, XenbusState::Closing);
    }

    fn write_features(&mut self, ops: &mut dyn BackendOps) {
        let sectors = self.sectors();
        let info = if self.read_only { VDISK_READONLY } else { 0 };
        self.discard = ops
            .read_u64(&self.be("discard-enable"))
            .is_none_or(|v| v != 0)
            && !self.read_only;
        let mut nodes: Vec<(&str, String)> = vec![
            ("sectors", sectors.to_string()),
            ("sector-size", SECTOR.to_string()),
            ("physical-sector-size", SECTOR.to_string()),
            ("info", info.to_string()),
            ("mode", if self.read_only { "r" } else { "w" }.into()),
            ("feature-flush-cache", "1".into()),
            ("feature-barrier", "1".into()),
            ("feature-persistent", "1".into()),
            (
                "feature-max-indirect-segments",
                MAX_INDIRECT_SEGMENTS.to_string(),
            ),
            ("max-ring-page-order", MAX_RING_PAGE_ORDER.to_string()),
        ];
        if self.discard {
            nodes.push(("discard-granularity", DISCARD_GRANULARITY.to_string()));
            nodes.push(("discard-alignment", "0".into()));
            nodes.push(("discard-secure", "0".into()));
            nodes.push(("feature-discard", "1".into()));
        }
        nodes.push(("hotplug-status", "connected".into()));
        for (k, v) in nodes {
            let p = self.be(k);
            ops.write_str(&p, &v);
        }
    }

    /// xen_blkif_disconnect: unmap every grant, unbind the event channel.
    fn disconnect(&mut self, ops: &mut dyn BackendOps) {
        if let Some(mut c) = self.conn.take() {
            c.grants.clear(ops);
            for h in c.ring.pages.drain(..) {
                let _ = ops.unmap(h);
            }
            ops.unbind(c.port);
        }
    }

    /// connect_ring: read the front end's nodes, map the ring, bind the event channel.
    fn connect_ring(&mut self, ops: &mut dyn BackendOps) -> Result<(), (i32, String)> {
        let fe = self.cfg.frontend_path.clone();
        let abi = match ops.read_str(&self.fe("protocol")) {
            None => self.cfg.default_abi,
            Some(p) => Abi::from_protocol(p.trim_end_matches('\0'))
                .ok_or((ENOSYS, format!("unknown fe protocol {p}")))?,
        };
        let persistent = ops.read_u64(&self.fe("feature-persistent")).unwrap_or(0) != 0;
        if let Some(q) = ops.read_str(&self.fe("multi-queue-num-queues")) {
            if q.trim().parse::<u64>().ok() != Some(1) {
                return Err((
                    ENOSYS,
                    format!("guest requested {q} queues, exceeding the maximum of 1."),
                ));
            }
        }
        let evtchn = ops
            .read_u64(&self.fe("event-channel"))
            .and_then(|v| u32::try_from(v).ok());
        let evtchn = evtchn.ok_or((EINVAL, format!("reading {fe}/event-channel")))?;
        let mut grefs = Vec::new();
        match ops.read_str(&self.fe("ring-page-order")) {
            None => {
                let r = ops
                    .read_u64(&self.fe("ring-ref"))
                    .and_then(|v| u32::try_from(v).ok());
                grefs.push(r.ok_or((EINVAL, format!("reading {fe}/ring-ref")))?);
            }
            Some(s) => {
                let order = s
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| (EINVAL, format!("reading {fe}/ring-page-order")))?;
                if order > MAX_RING_PAGE_ORDER {
                    return Err((
                        EINVAL,
                        format!(
                            "requested ring page order {order} exceed max:{MAX_RING_PAGE_ORDER}"
                        ),
                    ));
                }
                for i in 0..1u32 << order {
                    let r = ops
                        .read_u64(&self.fe(&format!("ring-ref{i}")))
                        .and_then(|v| u32::try_from(v).ok());
                    grefs.push(r.ok_or((EINVAL, format!("reading {fe}/ring-ref{i}")))?);
                }
            }
        }
        let dom = self.cfg.frontend_dom;
        let pages = ops.map_batch(dom, &grefs, true).map_err(|st| {
            (
                EINVAL,
                format!("mapping ring-ref port {evtchn} (GNTST {st})"),
            )
        })?;
        let port = match ops.bind_interdomain(dom, evtchn) {
            Ok(p) => p,
            Err(e) => {
                for h in pages {
                    let _ = ops.unmap(h);
                }
                return Err((
                    EINVAL,
                    format!("binding event channel {evtchn} (error {e})"),
                ));
            }
        };
        let ring = BackRing::new(pages, abi);
        self.conn = Some(Conn {
            ring,
            port,
            grants: GrantCache {
                dom,
                persistent,
                cache: BTreeMap::new(),
            },
            halted: false,
        });
        Ok(())
    }

    /// frontend_changed.
    fn frontend_changed(&mut self, ops: &mut dyn BackendOps, fstate: XenbusState) {
        match fstate {
            XenbusState::Initialising => {
                if self.state == XenbusState::Closed {
                    // The front end restarts: prepare for a reconnect.
                    self.switch_state(ops, XenbusState::InitWait);
                }
            }
            XenbusState::Initialised | XenbusState::Connected => {
                // Connect even when two watches fired close together and the intermediate
                // state was missed; once Connected, nothing to do. Unlike Linux, a back end
                // that is Closing (after a fatal error) waits for the front end to close
                // rather than retrying on a repeated watch.
                if self.state == XenbusState::Connected || self.state == XenbusState::Closing {
                    return;
                }
                self.disconnect(ops);
                match self.connect_ring(ops) {
                    Ok(()) => self.switch_state(ops, XenbusState::Connected),
                    Err((errno, msg)) => {
                        self.disconnect(ops);
                        self.fatal(ops, errno, &msg);
                    }
                }
            }
            XenbusState::Closing => self.switch_state(ops, XenbusState::Closing),
            XenbusState::Closed => {
                self.disconnect(ops);
                self.switch_state(ops, XenbusState::Closed);
            }
            XenbusState::Unknown => {
                // The front end's directory went away (Linux unregisters the device).
                if self.conn.is_some() || self.state == XenbusState::Connected {
                    self.disconnect(ops);
                    self.switch_state(ops, XenbusState::Closed);
                }
            }
            XenbusState::InitWait | XenbusState::Reconfiguring | XenbusState::Reconfigured => {}
        }
    }

    /// do_block_io_op: serve requests until the ring is empty and the final check agrees.
    fn process_ring(&mut self, ops: &mut dyn BackendOps) {
        let Some(mut c) = self.conn.take() else {
            return;
        };
        if !c.halted {
            if let Err(e) = self.serve(ops, &mut c) {
                // Linux halts the ring on a bogus req_prod; an unreadable ring likewise.
                let _ = e;
                c.halted = true;
            }
        }
        self.conn = Some(c);
    }

    fn serve(&mut self, ops: &mut dyn BackendOps, c: &mut Conn) -> Result<(), RingError> {
        // Each pass consumes at most one ring's worth (req_prod is bounded by the
        // responses produced); the cap only guards against a front end racing us forever.
        for _ in 0..1024 {
            let rp = c.ring.req_prod(ops)?;
            while c.ring.req_cons != rp && !c.ring.cons_overflow() {
                let raw = c.ring.copy_request(ops, c.ring.req_cons)?;
                c.ring.req_cons = c.ring.req_cons.wrapping_add(1);
                let out = match Request::decode(c.ring.abi, &raw) {
                    Some(req) => self.dispatch(ops, &mut c.grants, req),
                    None => Outcome {
                        id: 0,
                        operation: raw.first().copied().unwrap_or(0),
                        status: BLKIF_RSP_ERROR,
                    },
                };
                if out.status == BLKIF_RSP_ERROR {
                    self.stats.errors += 1;
                } else if out.status == BLKIF_RSP_EOPNOTSUPP {
                    self.stats.unsupported += 1;
                }
                c.ring.put_response(
                    ops,
                    &encode_response(c.ring.abi, out.id, out.operation, out.status),
                )?;
            }
            if c.ring.push_responses(ops)? {
                ops.notify(c.port);
            }
            if !c.ring.final_check_for_requests(ops)? {
                return Ok(());
            }
        }
        Ok(())
    }

    fn dispatch(
        &mut self,
        ops: &mut dyn BackendOps,
        grants: &mut GrantCache,
        req: Request,
    ) -> Outcome {
        match req {
            Request::Rw {
                operation,
                nr_segments,
                id,
                sector_number,
                seg,
            } => {
                let n = nr_segments as usize;
                let status = if n > BLKIF_MAX_SEGMENTS_PER_REQUEST {
                    BLKIF_RSP_ERROR
                } else {
                    self.rw(ops, grants, operation, sector_number, &seg[..n])
                };
                Outcome {
                    id,
                    operation,
                    status,
                }
            }
            Request::Indirect {
                indirect_op,
                nr_segments,
                id,
                sector_number,
                indirect_grefs,
            } => {
                let status = match self.indirect_segments(
                    ops,
                    grants,
                    indirect_op,
                    nr_segments as usize,
                    &indirect_grefs,
                ) {
                    Some(segs) => self.rw(ops, grants, indirect_op, sector_number, &segs),
                    None => BLKIF_RSP_ERROR,
                };
                Outcome {
                    id,
                    operation: indirect_op,
                    status,
                }
            }
            Request::Discard {
                id,
                flag,
                sector_number,
                nr_sectors,
            } => Outcome {
                id,
                operation: BLKIF_OP_DISCARD,
                status: self.discard(flag, sector_number, nr_sectors),
            },
            Request::Other { operation, id } => Outcome {
                id,
                operation,
                status: BLKIF_RSP_EOPNOTSUPP,
            },
        }
    }

    /// Read the segment list of an INDIRECT request from its indirect pages.
    fn indirect_segments(
        &mut self,
        ops: &mut dyn BackendOps,
        grants: &mut GrantCache,
        op: u8,
        n: usize,
        grefs: &[u32; 8],
    ) -> Option<Vec<Segment>> {
        if (op != BLKIF_OP_READ && op != BLKIF_OP_WRITE) || n == 0 || n > MAX_INDIRECT_SEGMENTS {
            return None;
        }
        let pages = n.div_ceil(SEGS_PER_INDIRECT_FRAME);
        let mut segs = Vec::with_capacity(n);
        for (i, &gref) in grefs.iter().take(pages).enumerate() {
            let m = grants.map(ops, gref, false, &mut self.stats).ok()?;
            let count = (n - i * SEGS_PER_INDIRECT_FRAME).min(SEGS_PER_INDIRECT_FRAME);
            let mut buf = vec![0u8; count * Segment::SIZE];
            let ok = GntOps::read(ops, m.h, 0, &mut buf);
            GrantCache::release(ops, &[m]);
            if !ok {
                return None;
            }
            segs.extend(buf.chunks_exact(Segment::SIZE).map(Segment::get));
        }
        Some(segs)
    }

    /// dispatch_rw_block_io for READ, WRITE, WRITE_BARRIER and FLUSH_DISKCACHE.
    fn rw(
        &mut self,
        ops: &mut dyn BackendOps,
        grants: &mut GrantCache,
        op: u8,
        sector: u64,
        segs: &[Segment],
    ) -> i16 {
        let flush = op == BLKIF_OP_WRITE_BARRIER || op == BLKIF_OP_FLUSH_DISKCACHE;
        let read = op == BLKIF_OP_READ;
        if segs.is_empty() && !flush {
            return BLKIF_RSP_ERROR;
        }
        let mut nr_sects: u64 = 0;
        for s in segs {
            if s.last_sect >= SECTORS_PER_PAGE || s.last_sect < s.first_sect {
                return BLKIF_RSP_ERROR;
            }
            nr_sects += (s.last_sect - s.first_sect) as u64 + 1;
        }
        // xen_vbd_translate.
        if !read && self.read_only {
            return BLKIF_RSP_ERROR;
        }
        if nr_sects != 0 {
            match sector.checked_add(nr_sects) {
                Some(end) if end <= self.sectors() => {}
                _ => return BLKIF_RSP_ERROR,
            }
        }
        if flush {
            self.stats.flushes += 1;
            if self.storage.flush().is_err() {
                return BLKIF_RSP_ERROR;
            }
        }
        if segs.is_empty() {
            return BLKIF_RSP_OKAY;
        }
        let mut maps = Vec::with_capacity(segs.len());
        for s in segs {
            match grants.map(ops, s.gref, read, &mut self.stats) {
                Ok(m) => maps.push(m),
                Err(_) => {
                    GrantCache::release(ops, &maps);
                    return BLKIF_RSP_ERROR;
                }
            }
        }
        let mut ok = true;
        let mut off = sector * SECTOR;
        let mut buf = vec![0u8; ring::PAGE_SIZE];
        for (s, m) in segs.iter().zip(&maps) {
            let page_off = s.first_sect as usize * SECTOR as usize;
            let len = (s.last_sect - s.first_sect + 1) as usize * SECTOR as usize;
            let b = &mut buf[..len];
            ok = if read {
                self.storage.read_at(off, b).is_ok() && GntOps::write(ops, m.h, page_off, b)
            } else {
                GntOps::read(ops, m.h, page_off, b) && self.storage.write_at(off, b).is_ok()
            };
            if !ok {
                break;
            }
            off += len as u64;
        }
        GrantCache::release(ops, &maps);
        if read {
            self.stats.reads += 1;
        } else {
            self.stats.writes += 1;
        }
        if ok {
            BLKIF_RSP_OKAY
        } else {
            BLKIF_RSP_ERROR
        }
    }

    /// dispatch_discard_io.
    fn discard(&mut self, flag: u8, sector: u64, nr_sectors: u64) -> i16 {
        self.stats.discards += 1;
        if flag & BLKIF_DISCARD_SECURE != 0 {
            // discard-secure is advertised as 0.
            return BLKIF_RSP_EOPNOTSUPP;
        }
        if !self.discard {
            return BLKIF_RSP_EOPNOTSUPP;
        }
        if self.read_only {
            return BLKIF_RSP_ERROR;
        }
        let range = sector
            .checked_add(nr_sectors)
            .filter(|&end| end <= self.sectors());
        if range.is_none() {
            return BLKIF_RSP_ERROR;
        }
        match self.storage.discard(sector * SECTOR, nr_sectors * SECTOR) {
            Ok(()) => BLKIF_RSP_OKAY,
            Err(_) => BLKIF_RSP_ERROR,
        }
    }
}

impl Backend for BlkBack {
    fn name(&self) -> String {
        format!("vbd {}", self.cfg.devid)
    }

    fn start(&mut self, ops: &mut dyn BackendOps) {
        self.write_features(ops);
        self.switch_state(ops, XenbusState::InitWait);
        let p = self.fe("state");
        ops.watch(&p, &self.token.clone());
    }

    fn on_watch(&mut self, ops: &mut dyn BackendOps, path: &str, token: &str) {
        let state_path = self.fe("state");
        // The state node itself, or an ancestor of it (a removed front-end directory).
        let ours = path == state_path
            || state_path
                .strip_prefix(path)
                .is_some_and(|r| r.starts_with('/'));
        if token != self.token || !ours {
            return;
        }
        let fstate = ops
            .read_u64(&state_path)
            .map_or(XenbusState::Unknown, XenbusState::from_u64);
        self.frontend_changed(ops, fstate);
    }

    fn on_event(&mut self, ops: &mut dyn BackendOps, port: u32) {
        // As Linux, the ring is served for as long as it is connected (also while Closing).
        if self.port() == Some(port) {
            self.process_ring(ops);
        }
    }

    fn shutdown(&mut self, ops: &mut dyn BackendOps) {
        self.disconnect(ops);
        let _ = self.storage.flush();
        let p = self.fe("state");
        ops.unwatch(&p, &self.token.clone());
    }
}
