//! Snapshot format of a [`Store`]: the whole state, deterministic (everything is in ordered
//! maps), little-endian.
//!
//! ```text
//! magic "XNLXSTOR", u32 version (1)
//! quota: 9 x u32 (nodes, node size, watches, transactions, outstanding,
//!        transaction nodes, perms, path max, memory)
//! u64 generation, u32 next connection id
//! u32 n, n x domain: u32 id, u64 generation, u8 introduced, u64 mfn, u32 port,
//!                    u8 shutdown, u8 has_target, u32 target
//! u32 n, n x (str name, node)
//! u32 n, n x connection: u32 id, u32 dom, u32 next_tx_id,
//!     u32 n, n x watch: str path, bytes token, u32 prefix_len
//!     u32 n, n x transaction: u32 id, u64 generation, u8 node_created, u8 fail,
//!         u32 n, n x (u32 dom, i64 delta),
//!         u32 n, n x accessed: str name, u64 generation, u8 has_perms, [perms],
//!             u8 check_gen, u8 modified, u8 has_node, [node], u8 fire_watch, u8 exact
//! node  = u64 generation, perms, bytes data, u32 n, n x str child
//! perms = u32 n, n x (u32 dom, u8 letter, u8 ignore)
//! str / bytes = u32 length, bytes
//! ```
//! `load` checks every length against the input and the tree's consistency, and never
//! panics.

use super::tree::{valid_name, Accessed, Conn, Domain, Node, NodePerm, Tx, Watch};
use super::{Access, Quota, Store};
use std::collections::BTreeMap;

const MAGIC: &[u8; 8] = b"XNLXSTOR";
const VERSION: u32 = 1;

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn bool(&mut self, v: bool) {
        self.0.push(v as u8);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        self.u32(n as u32);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.0.extend_from_slice(b);
    }
    fn perms(&mut self, p: &[NodePerm]) {
        self.len(p.len());
        for q in p {
            self.u32(q.dom);
            self.u8(q.access.letter());
            self.bool(q.ignore);
        }
    }
    fn node(&mut self, n: &Node) {
        self.u64(n.generation);
        self.perms(&n.perms);
        self.bytes(&n.data);
        self.len(n.children.len());
        for c in &n.children {
            self.bytes(c.as_bytes());
        }
    }
}

pub(super) fn save(s: &Store) -> Vec<u8> {
    let mut w = W(Vec::new());
    w.0.extend_from_slice(MAGIC);
    w.u32(VERSION);
    let q = &s.quota;
    for v in [
        q.max_nodes_per_dom,
        q.max_node_size,
        q.max_watches,
        q.max_transactions,
        q.max_outstanding,
        q.max_transaction_nodes,
        q.max_perms,
        q.max_path_len,
        q.max_memory,
    ] {
        w.u32(v);
    }
    w.u64(s.generation);
    w.u32(s.next_conn);
    w.len(s.domains.len());
    for (&id, d) in &s.domains {
        w.u32(id);
        w.u64(d.generation);
        w.bool(d.introduced);
        w.u64(d.mfn);
        w.u32(d.port);
        w.bool(d.shutdown);
        w.bool(d.target.is_some());
        w.u32(d.target.unwrap_or(0));
    }
    w.len(s.nodes.len());
    for (name, n) in &s.nodes {
        w.bytes(name.as_bytes());
        w.node(n);
    }
    w.len(s.conns.len());
    for (&id, c) in &s.conns {
        w.u32(id);
        w.u32(c.dom);
        w.u32(c.next_tx_id);
        w.len(c.watches.len());
        for x in &c.watches {
            w.bytes(x.node.as_bytes());
            w.bytes(&x.token);
            w.len(x.prefix_len);
        }
        w.len(c.txs.len());
        for t in &c.txs {
            w.u32(t.id);
            w.u64(t.generation);
            w.bool(t.node_created);
            w.bool(t.fail);
            w.len(t.acc_delta.len());
            for (&d, &v) in &t.acc_delta {
                w.u32(d);
                w.u64(v as u64);
            }
            w.len(t.accessed.len());
            for a in &t.accessed {
                w.bytes(a.name.as_bytes());
                w.u64(a.generation);
                w.bool(a.perms.is_some());
                if let Some(p) = &a.perms {
                    w.perms(p);
                }
                w.bool(a.check_gen);
                w.bool(a.modified);
                w.bool(a.ta_node.is_some());
                if let Some(n) = &a.ta_node {
                    w.node(n);
                }
                w.bool(a.fire_watch);
                w.bool(a.watch_exact);
            }
        }
    }
    w.0
}

struct R<'a> {
    b: &'a [u8],
    pos: usize,
}

type Res<T> = Result<T, String>;

impl R<'_> {
    fn take(&mut self, n: usize) -> Res<&[u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or("truncated snapshot")?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Res<u8> {
        Ok(self.take(1)?[0])
    }
    fn bool(&mut self) -> Res<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(format!("bad flag {v}")),
        }
    }
    fn u32(&mut self) -> Res<u32> {
        let t = self.take(4)?;
        Ok(u32::from_le_bytes([t[0], t[1], t[2], t[3]]))
    }
    fn u64(&mut self) -> Res<u64> {
        let t = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(t);
        Ok(u64::from_le_bytes(a))
    }
    /// A count of items each at least `min` bytes long, checked against what is left.
    fn count(&mut self, min: usize) -> Res<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min.max(1)) > self.b.len() - self.pos {
            return Err("count exceeds snapshot".into());
        }
        Ok(n)
    }
    fn bytes(&mut self) -> Res<Vec<u8>> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn string(&mut self) -> Res<String> {
        String::from_utf8(self.bytes()?).map_err(|_| "non-UTF-8 name".to_string())
    }
    fn perms(&mut self) -> Res<Vec<NodePerm>> {
        let n = self.count(6)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let dom = self.u32()?;
            let access = Access::from_letter(self.u8()?).ok_or("bad permission letter")?;
            let ignore = self.bool()?;
            v.push(NodePerm {
                dom,
                access,
                ignore,
            });
        }
        if v.is_empty() {
            return Err("empty permissions".into());
        }
        Ok(v)
    }
    fn node(&mut self) -> Res<Node> {
        let generation = self.u64()?;
        let perms = self.perms()?;
        let data = self.bytes()?;
        let n = self.count(4)?;
        let mut children = Vec::with_capacity(n);
        for _ in 0..n {
            children.push(self.string()?);
        }
        Ok(Node {
            generation,
            perms,
            data,
            children,
        })
    }
}

pub(super) fn load(b: &[u8]) -> Res<Store> {
    let mut r = R { b, pos: 0 };
    if r.take(8)? != MAGIC {
        return Err("not a xenstore snapshot".into());
    }
    let v = r.u32()?;
    if v != VERSION {
        return Err(format!("unsupported snapshot version {v}"));
    }
    let mut q = [0u32; 9];
    for x in &mut q {
        *x = r.u32()?;
    }
    let quota = Quota {
        max_nodes_per_dom: q[0],
        max_node_size: q[1],
        max_watches: q[2],
        max_transactions: q[3],
        max_outstanding: q[4],
        max_transaction_nodes: q[5],
        max_perms: q[6],
        max_path_len: q[7],
        max_memory: q[8],
    };
    let mut s = Store::with_quota(quota);
    s.nodes.clear();
    s.owned.clear();
    s.domains.clear();
    s.generation = r.u64()?;
    s.next_conn = r.u32()?;
    for _ in 0..r.count(31)? {
        let id = r.u32()?;
        let d = Domain {
            generation: r.u64()?,
            introduced: r.bool()?,
            mfn: r.u64()?,
            port: r.u32()?,
            shutdown: r.bool()?,
            target: {
                let has = r.bool()?;
                let t = r.u32()?;
                has.then_some(t)
            },
        };
        if s.domains.insert(id, d).is_some() {
            return Err(format!("duplicate domain {id}"));
        }
    }
    for _ in 0..r.count(26)? {
        let name = r.string()?;
        let node = r.node()?;
        if s.nodes.contains_key(&name) {
            return Err(format!("duplicate node {name}"));
        }
        s.db_put(&name, node);
    }
    s.check_tree()?;
    for _ in 0..r.count(20)? {
        let id = r.u32()?;
        let dom = r.u32()?;
        let next_tx_id = r.u32()?;
        if id == 0 {
            return Err("connection id 0".into());
        }
        let mut watches = Vec::new();
        for _ in 0..r.count(12)? {
            let node = r.string()?;
            let token = r.bytes()?;
            let prefix_len = r.u32()? as usize;
            if prefix_len > node.len() || token.contains(&0) || !valid_name(&node) {
                return Err("bad watch".into());
            }
            watches.push(Watch {
                node,
                token,
                prefix_len,
            });
        }
        let mut txs: Vec<Tx> = Vec::new();
        for _ in 0..r.count(22)? {
            let id = r.u32()?;
            let generation = r.u64()?;
            let node_created = r.bool()?;
            let fail = r.bool()?;
            let mut acc_delta = BTreeMap::new();
            for _ in 0..r.count(12)? {
                let d = r.u32()?;
                let v = r.u64()? as i64;
                acc_delta.insert(d, v);
            }
            let mut accessed: Vec<Accessed> = Vec::new();
            for _ in 0..r.count(18)? {
                let name = r.string()?;
                let generation = r.u64()?;
                let perms = if r.bool()? { Some(r.perms()?) } else { None };
                let check_gen = r.bool()?;
                let modified = r.bool()?;
                let ta_node = if r.bool()? { Some(r.node()?) } else { None };
                let fire_watch = r.bool()?;
                let watch_exact = r.bool()?;
                let kids_ok = ta_node.as_ref().is_none_or(|n| {
                    n.children
                        .iter()
                        .all(|c| valid_name(&format!("/{c}")) && !c.contains('/'))
                });
                if !valid_name(&name) || !kids_ok {
                    return Err(format!("bad accessed node {name:?}"));
                }
                if accessed.iter().any(|a| a.name == name) {
                    return Err(format!("duplicate accessed node {name}"));
                }
                accessed.push(Accessed {
                    name,
                    generation,
                    perms,
                    check_gen,
                    modified,
                    ta_node,
                    fire_watch,
                    watch_exact,
                });
            }
            if id == 0 || txs.iter().any(|t| t.id == id) {
                return Err(format!("bad transaction id {id}"));
            }
            txs.push(Tx {
                id,
                generation,
                accessed,
                acc_delta,
                node_created,
                fail,
            });
        }
        if s.conns
            .insert(
                id,
                Conn {
                    dom,
                    watches,
                    txs,
                    next_tx_id,
                },
            )
            .is_some()
        {
            return Err(format!("duplicate connection {id}"));
        }
    }
    if r.pos != b.len() {
        return Err("trailing bytes in snapshot".into());
    }
    Ok(s)
}
