//! The xenstore store core: a pure, deterministic implementation of C xenstored's semantics
//! (Xen's `tools/xenstored`: core.c, transaction.c, watch.c, domain.c, control.c), with no
//! I/O. A transport (the guest's ring page, a host unix socket) feeds whole requests to
//! [`Store::handle`] and delivers the messages it returns.
//!
//! Design:
//! - Connections ([`Store::connect`]) belong to a domain; domain 0 is privileged (a socket
//!   client is domain 0, as xenstored's socket connections). Relative paths are relative to
//!   `/local/domain/<domid>`.
//! - [`Store::handle`] processes one request and returns every message to send: first the
//!   reply to the requester (the request's type, or ERROR with the errno name, with req_id
//!   and tx_id copied), then the WATCH_EVENTs fired by the request (for any connection,
//!   including the requester). xenstored queues a write's events before its ack; here the
//!   reply always comes first.
//! - Errors, argument parsing, permission rules, quotas (with xenstored's comparisons) and
//!   transaction semantics follow current xenstored; see the per-function comments and the
//!   module tests. Domains: there is no hypervisor to ask, so every domain id is taken to
//!   exist (xenstored asks Xen in domain_alloc_permrefs()); a RELEASEd domain's struct goes
//!   away, so ACL entries naming it are ignored from then on, as xenstored does.
//! - Not modelled (transport or daemon matters): the outstanding-requests and memory
//!   quotas (their values are in [`Quota`] for the transport), write rate limiting, watch
//!   event timeouts, live update, and dropping an event identical to one still queued from
//!   an earlier request (only duplicates within one call's output are dropped).
//! - Everything is in ordered maps, so behaviour and [`Store::snapshot`] are deterministic.
//!   Nothing panics on any input.

mod ops;
mod snapshot;
mod tree;
mod wire;

#[cfg(test)]
mod tests;

pub use wire::{msg_type, Msg, XsError, ABS_PATH_MAX, DOMID_SELF, REL_PATH_MAX, RING_SIZE};

use std::collections::BTreeMap;
use tree::{Conn, Ctx, Domain, Node, NodePerm};

/// A domain id.
pub type DomId = u32;
/// A connection: a domain's ring, or a socket client.
pub type ConnId = u32;

/// A permission letter: 'n', 'r', 'w', 'b'.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    None,
    Read,
    Write,
    Both,
}

impl Access {
    pub fn letter(self) -> u8 {
        match self {
            Access::None => b'n',
            Access::Read => b'r',
            Access::Write => b'w',
            Access::Both => b'b',
        }
    }
    pub fn from_letter(c: u8) -> Option<Access> {
        Some(match c {
            b'n' => Access::None,
            b'r' => Access::Read,
            b'w' => Access::Write,
            b'b' => Access::Both,
            _ => return None,
        })
    }
}

/// One permission entry. In a node's list the first entry is the owner, and its letter is
/// the access of every domain not named later in the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    pub dom: DomId,
    pub access: Access,
}

impl Perm {
    pub fn new(dom: DomId, access: Access) -> Perm {
        Perm { dom, access }
    }
    /// Parse "r1"-style strings as xenstored does (the id is C `strtol(.., 0)`).
    pub fn parse(s: &str) -> Option<Perm> {
        ops::parse_perm(s.as_bytes()).map(|p| Perm {
            dom: p.dom,
            access: p.access,
        })
    }
}

impl std::fmt::Display for Perm {
    /// xenstore_perm_to_string(): the letter and the id printed as a C int.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.access.letter() as char, self.dom as i32)
    }
}

/// xenstored's hard quotas (domain.c `hard_quotas[]`), with its defaults. They apply to
/// unprivileged domains only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// "nodes": nodes owned by a domain (1000). Creating a node when the domain owns
    /// `>= max` fails with ENOSPC; a transaction that created nodes fails at commit with
    /// ENOSPC when a domain it changed would own `>= max`.
    pub max_nodes_per_dom: u32,
    /// "node-size": header (16) + 8 per permission + value + children names (2048); more is
    /// ENOSPC.
    pub max_node_size: u32,
    /// "watches" per domain (128). xenstored refuses a WATCH (E2BIG) when the domain already
    /// has more than this, so 129 fit.
    pub max_watches: u32,
    /// "transactions" per domain (10). TRANSACTION_START fails (ENOSPC) when the domain has
    /// more than this open, so 11 fit.
    pub max_transactions: u32,
    /// "outstanding" requests per domain (20): for the transport (stop reading a domain's
    /// ring while this many replies are unsent); not enforced by the store.
    pub max_outstanding: u32,
    /// "transaction-nodes": nodes a transaction may access (1024); more is ENOSPC and fails
    /// the transaction.
    pub max_transaction_nodes: u32,
    /// "node-permissions": entries in a SET_PERMS (5); more is ENOSPC.
    pub max_perms: u32,
    /// "path-max": path length after "/local/domain/<id>/" (2048); more is EINVAL.
    pub max_path_len: u32,
    /// "memory" per domain (2.5 MiB): not enforced by the store.
    pub max_memory: u32,
}

impl Default for Quota {
    fn default() -> Quota {
        Quota {
            max_nodes_per_dom: 1000,
            max_node_size: 2048,
            max_watches: 128,
            max_transactions: 10,
            max_outstanding: 20,
            max_transaction_nodes: 1024,
            max_perms: 5,
            max_path_len: REL_PATH_MAX as u32,
            max_memory: 2 * 1024 * 1024 + 512 * 1024,
        }
    }
}

/// The whole xenstore state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Store {
    quota: Quota,
    /// The global generation counter (transaction.c `generation`).
    generation: u64,
    nodes: BTreeMap<String, Node>,
    /// Nodes per owner domain (derived from `nodes`).
    owned: BTreeMap<DomId, u32>,
    domains: BTreeMap<DomId, Domain>,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: ConnId,
    /// Messages produced by the current call (scratch).
    out: Vec<(ConnId, Msg)>,
    /// Node-count changes of the current request inside a transaction (scratch).
    req_delta: BTreeMap<DomId, i64>,
}

impl Default for Store {
    fn default() -> Store {
        Store::new()
    }
}

impl Store {
    /// An empty store as xenstored sets it up (setup_structure(): "/", "/tool",
    /// "/tool/xenstored", "@releaseDomain", "@introduceDomain", all "n0"), plus the
    /// toolstack's "/local" and "/local/domain" (also "n0"). Domain 0 is introduced.
    pub fn new() -> Store {
        Store::with_quota(Quota::default())
    }

    pub fn with_quota(quota: Quota) -> Store {
        let mut s = Store {
            quota,
            generation: 0,
            nodes: BTreeMap::new(),
            owned: BTreeMap::new(),
            domains: BTreeMap::new(),
            conns: BTreeMap::new(),
            next_conn: 1,
            out: Vec::new(),
            req_delta: BTreeMap::new(),
        };
        s.dom_alloc(0);
        if let Some(d) = s.domains.get_mut(&0) {
            d.introduced = true;
        }
        let n0 = vec![NodePerm {
            dom: 0,
            access: Access::None,
            ignore: false,
        }];
        for (name, kids) in [
            ("/", &["tool", "local"][..]),
            ("/tool", &["xenstored"][..]),
            ("/tool/xenstored", &[][..]),
            ("@releaseDomain", &[][..]),
            ("@introduceDomain", &[][..]),
            ("/local", &["domain"][..]),
            ("/local/domain", &[][..]),
        ] {
            let generation = s.bump();
            let node = Node {
                generation,
                perms: n0.clone(),
                data: Vec::new(),
                children: kids.iter().map(|k| k.to_string()).collect(),
            };
            s.db_put(name, node);
        }
        s
    }

    pub fn quota(&self) -> Quota {
        self.quota
    }

    pub fn set_quota(&mut self, q: Quota) {
        self.quota = q;
    }

    /// A connection for `dom` (privileged when dom == 0; a socket client is dom 0).
    pub fn connect(&mut self, dom: DomId) -> ConnId {
        let mut id = self.next_conn;
        while id == 0 || self.conns.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_conn = id.wrapping_add(1);
        self.dom_alloc(dom);
        self.conns.insert(
            id,
            Conn {
                dom,
                watches: Vec::new(),
                txs: Vec::new(),
                next_tx_id: 0,
            },
        );
        id
    }

    /// Drop a connection: its watches and open transactions go away.
    pub fn disconnect(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
    }

    /// The domain of a connection.
    pub fn conn_domain(&self, conn: ConnId) -> Option<DomId> {
        self.conns.get(&conn).map(|c| c.dom)
    }

    /// Handle one request from `conn`. Returns the reply to `conn` first, then the
    /// WATCH_EVENTs fired. An unknown `conn` gets an EINVAL reply.
    pub fn handle(&mut self, conn: ConnId, m: &Msg) -> Vec<(ConnId, Msg)> {
        self.out.clear();
        self.req_delta.clear();
        let (result, ctx) = self.dispatch(conn, m);
        let reply = match result {
            Ok((ty, payload)) if payload.len() <= Msg::MAX_PAYLOAD => {
                Msg::new(ty, m.req_id, m.tx_id, payload)
            }
            Ok(_) => XsError::E2BIG.reply(m.req_id, m.tx_id),
            Err(e) => e.reply(m.req_id, m.tx_id),
        };
        // acc_commit() / acc_drop(): a transaction keeps this request's node-count changes
        // only when the request succeeded.
        let delta = std::mem::take(&mut self.req_delta);
        if reply.ty != msg_type::ERROR {
            if let Some(tx) = ctx.and_then(|c| self.tx_mut(c)) {
                for (dom, d) in delta {
                    if d != 0 {
                        *tx.acc_delta.entry(dom).or_insert(0) += d;
                    }
                }
            }
        }
        let mut v = Vec::with_capacity(1 + self.out.len());
        v.push((conn, reply));
        v.append(&mut self.out);
        v
    }

    fn direct(
        &mut self,
        f: impl FnOnce(&mut Store) -> Result<(), XsError>,
    ) -> Result<Vec<(ConnId, Msg)>, XsError> {
        self.out.clear();
        self.req_delta.clear();
        let r = f(self);
        let ev = std::mem::take(&mut self.out);
        r.map(|()| ev)
    }

    /// Toolstack WRITE as dom0, outside any transaction (creates missing parents, fires
    /// watches). Errors (an invalid path) are dropped; see [`Store::try_write`].
    pub fn write(&mut self, path: &str, value: &[u8]) -> Vec<(ConnId, Msg)> {
        self.try_write(path, value).unwrap_or_default()
    }

    pub fn try_write(&mut self, path: &str, value: &[u8]) -> Result<Vec<(ConnId, Msg)>, XsError> {
        self.direct(|s| s.do_write(Ctx::DIRECT, path.as_bytes(), value))
    }

    /// The value at `path` (absolute, or relative to /local/domain/0), None if it does not
    /// exist or the path is invalid.
    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        let name = self
            .canonicalize(Ctx::DIRECT, path.as_bytes(), false)
            .ok()?;
        self.nodes.get(&name).map(|n| n.data.clone())
    }

    /// The children of `path`, in order.
    pub fn directory(&self, path: &str) -> Option<Vec<String>> {
        let name = self
            .canonicalize(Ctx::DIRECT, path.as_bytes(), false)
            .ok()?;
        self.nodes.get(&name).map(|n| n.children.clone())
    }

    /// The permissions of `path` (special "@" nodes included).
    pub fn get_perms(&self, path: &str) -> Option<Vec<Perm>> {
        let name = self.canonicalize(Ctx::DIRECT, path.as_bytes(), true).ok()?;
        self.nodes
            .get(&name)
            .map(|n| n.perms.iter().map(|p| Perm::new(p.dom, p.access)).collect())
    }

    pub fn mkdir(&mut self, path: &str) -> Vec<(ConnId, Msg)> {
        self.try_mkdir(path).unwrap_or_default()
    }

    pub fn try_mkdir(&mut self, path: &str) -> Result<Vec<(ConnId, Msg)>, XsError> {
        self.direct(|s| s.do_mkdir(Ctx::DIRECT, path.as_bytes()))
    }

    pub fn rm(&mut self, path: &str) -> Vec<(ConnId, Msg)> {
        self.try_rm(path).unwrap_or_default()
    }

    pub fn try_rm(&mut self, path: &str) -> Result<Vec<(ConnId, Msg)>, XsError> {
        self.direct(|s| s.do_rm(Ctx::DIRECT, path.as_bytes()))
    }

    pub fn set_perms(&mut self, path: &str, perms: &[Perm]) -> Vec<(ConnId, Msg)> {
        self.try_set_perms(path, perms).unwrap_or_default()
    }

    /// SET_PERMS as dom0 ("@" special nodes allowed); an empty list is EINVAL.
    pub fn try_set_perms(
        &mut self,
        path: &str,
        perms: &[Perm],
    ) -> Result<Vec<(ConnId, Msg)>, XsError> {
        let np: Vec<NodePerm> = perms
            .iter()
            .map(|p| NodePerm {
                dom: p.dom,
                access: p.access,
                ignore: false,
            })
            .collect();
        self.direct(|s| s.do_set_perms(Ctx::DIRECT, path.as_bytes(), np))
    }

    /// Mark a domain introduced, firing @introduceDomain (not for dom0, nor when it already
    /// is: a re-introduction resets its connections' watches and transactions instead).
    pub fn introduce(&mut self, dom: DomId) -> Vec<(ConnId, Msg)> {
        self.introduce_ring(dom, 0, 0)
    }

    /// [`Store::introduce`] recording the ring frame and event channel (as INTRODUCE).
    pub fn introduce_ring(&mut self, dom: DomId, mfn: u64, port: u32) -> Vec<(ConnId, Msg)> {
        self.direct(|s| {
            s.introduce_domain(dom, mfn, port);
            Ok(())
        })
        .unwrap_or_default()
    }

    /// Release an introduced domain (not dom0): its connections lose their watches and
    /// transactions, the nodes it owns are removed (watches fire), it is no longer
    /// introduced, and @releaseDomain fires. Nothing happens for other domains.
    pub fn release(&mut self, dom: DomId) -> Vec<(ConnId, Msg)> {
        self.direct(|s| {
            if dom != 0 && s.domains.get(&dom).is_some_and(|d| d.introduced) {
                s.release_domain(dom);
            }
            Ok(())
        })
        .unwrap_or_default()
    }

    pub fn is_introduced(&self, dom: DomId) -> bool {
        self.domains.get(&dom).is_some_and(|d| d.introduced)
    }

    /// The (mfn, event channel) INTRODUCE gave for an introduced domain.
    pub fn ring_info(&self, dom: DomId) -> Option<(u64, u32)> {
        self.domains
            .get(&dom)
            .filter(|d| d.introduced)
            .map(|d| (d.mfn, d.port))
    }

    /// Check the store's internal consistency (tree links, names, permissions, node
    /// counts). Always Ok unless there is a bug; for tests and debugging.
    pub fn check(&self) -> Result<(), String> {
        self.check_tree()
    }

    /// Serialise the whole state (see `snapshot.rs` for the format).
    pub fn snapshot(&self) -> Vec<u8> {
        snapshot::save(self)
    }

    pub fn restore(b: &[u8]) -> Result<Store, String> {
        snapshot::load(b)
    }
}
