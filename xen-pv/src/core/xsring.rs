//! The guest's xenstore connection: the shared ring page (`struct
//! xenstore_domain_interface`, xen/io/xs_wire.h) and message framing over it.
//!
//! Layout: `req[1024]`, `rsp[1024]`, then the free-running u32 indexes `req_cons`,
//! `req_prod`, `rsp_cons`, `rsp_prod`, and `server_features`, `connection`, `error`.
//! The guest produces requests and consumes responses; the server does the reverse and
//! notifies the store event channel when it produced something.
//!
//! Engine-agnostic: the ring is reached through [`GuestPhys`]; the page and the indexes are
//! untrusted (indexes claiming more than the ring holds are a protocol error, as in
//! xenstored: the connection is marked with `error` and ignored).

use std::collections::VecDeque;

use super::xenstore::{ConnId, DomId, Msg, Store};
use super::GuestPhys;

pub const RING_SIZE: u32 = 1024;
const REQ: u64 = 0;
const RSP: u64 = 1024;
const REQ_CONS: u64 = 2048;
const REQ_PROD: u64 = 2052;
const RSP_CONS: u64 = 2056;
const RSP_PROD: u64 = 2060;
const SERVER_FEATURES: u64 = 2064;
const CONNECTION: u64 = 2068;
const ERROR: u64 = 2072;

/// XENSTORE_SERVER_FEATURE_RECONNECTION | XENSTORE_SERVER_FEATURE_ERROR
pub const SERVER_FEATURES_OFFERED: u32 = 1 | 2;
/// XENSTORE_ERROR_RINGIDX
const ERROR_RINGIDX: u32 = 2;
/// XENSTORE_RECONNECT
const RECONNECT: u32 = 1;

/// One domain's ring connection.
pub struct RingConn {
    /// Guest physical address of the ring page.
    pub page: u64,
    pub conn: ConnId,
    pub dom: DomId,
    /// A request being assembled (header first).
    inbuf: Vec<u8>,
    /// Response bytes waiting for room in the ring.
    out: VecDeque<u8>,
    /// A protocol error stopped this connection.
    pub broken: bool,
}

impl RingConn {
    /// Connect the ring at `page` to `store` as `conn`, and advertise the server features.
    pub fn new(mem: &mut dyn GuestPhys, page: u64, store: &mut Store, dom: DomId) -> RingConn {
        mem.write_u32(page + SERVER_FEATURES, SERVER_FEATURES_OFFERED);
        let conn = store.connect(dom);
        RingConn {
            page,
            conn,
            dom,
            inbuf: Vec::new(),
            out: VecDeque::new(),
            broken: false,
        }
    }

    /// Queue a message for the guest.
    pub fn push(&mut self, m: &Msg) {
        self.out.extend(m.encode());
    }

    /// Consume the guest's requests, let `store` handle every complete message, write
    /// what fits of the replies. Messages for other connections are returned. `notify` is
    /// set when the guest should be signalled (responses produced or requests consumed).
    pub fn service(
        &mut self,
        mem: &mut dyn GuestPhys,
        store: &mut Store,
    ) -> (bool, Vec<(ConnId, Msg)>) {
        let mut others = Vec::new();
        let mut notify = false;
        if self.broken {
            return (false, others);
        }
        // A guest asking to reconnect (XENSTORE_RECONNECT): drop its state, reset the ring.
        if mem.read_u32(self.page + CONNECTION) == Some(RECONNECT) {
            store.disconnect(self.conn);
            self.conn = store.connect(self.dom);
            self.inbuf.clear();
            self.out.clear();
            for off in [REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD] {
                mem.write_u32(self.page + off, 0);
            }
            mem.write_u32(self.page + CONNECTION, 0);
            return (true, others);
        }
        loop {
            notify |= self.flush(mem);
            let Some((cons, prod)) = self.indexes(mem, REQ_CONS, REQ_PROD) else {
                return (false, others);
            };
            if cons == prod {
                break;
            }
            let mut byte = [0u8; 1];
            let mut idx = cons;
            while idx != prod {
                mem.read(self.page + REQ + (idx % RING_SIZE) as u64, &mut byte);
                self.inbuf.push(byte[0]);
                idx = idx.wrapping_add(1);
                if self.complete().is_some() {
                    break;
                }
            }
            mem.write_u32(self.page + REQ_CONS, idx);
            notify = true;
            if let Some(len) = self.complete() {
                let b: Vec<u8> = self.inbuf.drain(..len).collect();
                let h: [u8; 16] = b[..16].try_into().unwrap();
                let (ty, req_id, tx_id, _) = Msg::parse_header(&h);
                let m = Msg {
                    ty,
                    req_id,
                    tx_id,
                    payload: b[16..].to_vec(),
                };
                for (c, r) in store.handle(self.conn, &m) {
                    if c == self.conn {
                        self.push(&r);
                    } else {
                        others.push((c, r));
                    }
                }
            } else if self.broken {
                return (notify, others);
            }
        }
        notify |= self.flush(mem);
        (notify, others)
    }

    /// The length of the complete message at the head of `inbuf`, if there is one. An
    /// oversized length breaks the connection.
    fn complete(&mut self) -> Option<usize> {
        if self.inbuf.len() < Msg::HEADER {
            return None;
        }
        let h: [u8; 16] = self.inbuf[..16].try_into().unwrap();
        let len = Msg::parse_header(&h).3 as usize;
        if len > Msg::MAX_PAYLOAD {
            // xenstored answers E2BIG and closes such a connection; the guest cannot
            // recover its framing either way.
            self.broken = true;
            return None;
        }
        (self.inbuf.len() >= Msg::HEADER + len).then_some(Msg::HEADER + len)
    }

    /// Read a (cons, prod) pair; a pair further apart than the ring is a protocol error.
    fn indexes(&mut self, mem: &mut dyn GuestPhys, c: u64, p: u64) -> Option<(u32, u32)> {
        let (cons, prod) = (mem.read_u32(self.page + c)?, mem.read_u32(self.page + p)?);
        if prod.wrapping_sub(cons) > RING_SIZE {
            mem.write_u32(self.page + ERROR, ERROR_RINGIDX);
            self.broken = true;
            return None;
        }
        Some((cons, prod))
    }

    /// Write queued response bytes into the ring as room allows. True if any were written.
    pub fn flush(&mut self, mem: &mut dyn GuestPhys) -> bool {
        if self.out.is_empty() || self.broken {
            return false;
        }
        let Some((cons, prod)) = self.indexes(mem, RSP_CONS, RSP_PROD) else {
            return false;
        };
        let room = RING_SIZE - prod.wrapping_sub(cons);
        let n = room.min(self.out.len() as u32);
        let mut idx = prod;
        for _ in 0..n {
            let b = self.out.pop_front().unwrap();
            mem.write(self.page + RSP + (idx % RING_SIZE) as u64, &[b]);
            idx = idx.wrapping_add(1);
        }
        mem.write_u32(self.page + RSP_PROD, idx);
        n > 0
    }

    /// Response bytes still waiting for room.
    pub fn pending_out(&self) -> usize {
        self.out.len()
    }
}
