//! The node database, permissions, transactions and watch firing: xenstored's core.c
//! (read_node, get_node, write_node, construct_node/create_node, rm_node/delnode_sub,
//! canonicalize, perm_for_conn, errno_from_parents), transaction.c (access_node,
//! queue_watches, finalize_transaction) and watch.c (fire_watches, watch_permitted).
//!
//! Every global node lives in `Store::nodes` under its full name ("/a/b", or "@special").
//! A transaction keeps, per accessed node, xenstored's `struct accessed_node`: the
//! generation seen at first access (checked at commit), and the transaction's private copy
//! of the node (`ta_node`, None when the node does not exist in the transaction's view).

use super::wire::ABS_PATH_MAX;
use super::{Access, ConnId, DomId, Msg, Store, XsError};
use std::collections::BTreeMap;

/// NO_GENERATION: the generation of a node that does not exist.
pub(super) const NO_GEN: u64 = u64::MAX;
/// XS_PERM_* bits.
pub(super) const PERM_READ: u32 = 1;
pub(super) const PERM_WRITE: u32 = 2;
pub(super) const PERM_OWNER: u32 = 8;
/// sizeof(struct node_hdr) and sizeof(struct xs_permissions): the node-size quota counts
/// header + permissions + data + children names, as calc_node_acc_size().
const NODE_HDR_SIZE: usize = 16;
const PERM_SIZE: usize = 8;

/// A permission entry as stored: `ignore` is XS_PERM_IGNORE (an entry naming a domain that
/// no longer exists, or is younger than the node; see [`Store::adjust_perms`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct NodePerm {
    pub dom: DomId,
    pub access: Access,
    pub ignore: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Node {
    pub generation: u64,
    /// Never empty: the first entry is the owner and the default for other domains.
    pub perms: Vec<NodePerm>,
    pub data: Vec<u8>,
    /// Children leaf names in creation order (xenstored's NUL-separated `children`).
    pub children: Vec<String>,
}

impl Node {
    pub fn owner(&self) -> DomId {
        self.perms.first().map_or(0, |p| p.dom)
    }
    pub fn childlen(&self) -> usize {
        self.children.iter().map(|c| c.len() + 1).sum()
    }
    /// The children as on the wire: each name NUL-terminated.
    pub fn children_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.childlen());
        for c in &self.children {
            v.extend_from_slice(c.as_bytes());
            v.push(0);
        }
        v
    }
    /// calc_node_acc_size().
    pub fn acc_size(&self) -> usize {
        NODE_HDR_SIZE + PERM_SIZE * self.perms.len() + self.data.len() + self.childlen()
    }
}

/// xenstored's `struct domain`, reduced to what the store needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Domain {
    /// Global generation when the domain struct was allocated (chk_domain_generation).
    pub generation: u64,
    pub introduced: bool,
    /// INTRODUCE's ring frame and event channel, recorded for the transport.
    pub mfn: u64,
    pub port: u32,
    pub shutdown: bool,
    /// SET_TARGET: this domain acts with `target`'s rights.
    pub target: Option<DomId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Watch {
    /// Canonical path (absolute or "@special").
    pub node: String,
    pub token: Vec<u8>,
    /// Bytes stripped from event paths: strlen("/local/domain/<id>/") for relative watches.
    pub prefix_len: usize,
}

/// `struct accessed_node`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Accessed {
    pub name: String,
    /// Generation at first (read) access; NO_GEN when the node did not exist.
    pub generation: u64,
    /// Permissions of the node at first access (for watch permission at commit).
    pub perms: Option<Vec<NodePerm>>,
    pub check_gen: bool,
    pub modified: bool,
    /// The transaction's view of the node: None = does not exist in the transaction.
    pub ta_node: Option<Node>,
    pub fire_watch: bool,
    pub watch_exact: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Tx {
    pub id: u32,
    pub generation: u64,
    pub accessed: Vec<Accessed>,
    /// Node-count changes per domain owner (`changed_domains`); presence matters.
    pub acc_delta: BTreeMap<DomId, i64>,
    pub node_created: bool,
    pub fail: bool,
}

impl Tx {
    pub fn find(&self, name: &str) -> Option<&Accessed> {
        self.accessed.iter().find(|a| a.name == name)
    }
    pub fn find_mut(&mut self, name: &str) -> Option<&mut Accessed> {
        self.accessed.iter_mut().find(|a| a.name == name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Conn {
    pub dom: DomId,
    pub watches: Vec<Watch>,
    pub txs: Vec<Tx>,
    pub next_tx_id: u32,
}

/// Who is doing the current operation: xenstored's `conn` with `conn->transaction`.
/// `conn: None` is the toolstack / xenstored itself (privileged, no transaction).
#[derive(Clone, Copy, Debug)]
pub(super) struct Ctx {
    pub conn: Option<ConnId>,
    pub dom: DomId,
    pub tx: Option<u32>,
}

impl Ctx {
    pub const DIRECT: Ctx = Ctx {
        conn: None,
        dom: 0,
        tx: None,
    };
    /// !domain_is_unprivileged(conn).
    pub fn privileged(&self) -> bool {
        self.dom == 0
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum AccessType {
    Read,
    Write,
    Delete,
}

/// valid_chars(): [A-Za-z0-9-/_@].
pub(super) fn valid_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'/' | b'_' | b'@')
}

/// A canonical name: "/", a "/"-path without empty components, or "@special".
pub(super) fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.iter().all(|&c| valid_char(c))
        && (name == "/"
            || name.starts_with('@')
            || (name.starts_with('/') && !name.ends_with('/') && !name.contains("//")))
}

/// get_parent(): "/" for "/x" and for "@special", "/a" for "/a/b".
pub(super) fn get_parent(name: &str) -> String {
    match name.get(1..).and_then(|s| s.rfind('/')) {
        Some(i) => name[..i + 1].to_string(),
        None => "/".to_string(),
    }
}

/// basename(): the last component.
pub(super) fn basename(name: &str) -> &str {
    name.rfind('/').map_or(name, |i| &name[i + 1..])
}

pub(super) fn child_name(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

/// watch.c is_child(): `child` is `parent` or below it ("/" is everyone's parent).
pub(super) fn is_child(child: &str, parent: &str) -> bool {
    if parent == "/" {
        return true;
    }
    child.starts_with(parent) && matches!(child.as_bytes().get(parent.len()), None | Some(b'/'))
}

/// The length of a "/local/domain/<id>/" prefix (sscanf "/local/domain/%5u/%n"), else 0.
pub(super) fn local_off(name: &str) -> usize {
    const P: &str = "/local/domain/";
    let Some(rest) = name.strip_prefix(P) else {
        return 0;
    };
    let b = rest.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i = 1;
    }
    let start = i;
    while i < b.len() && i < 5 && b[i].is_ascii_digit() {
        i += 1;
    }
    if i == start || b.get(i) != Some(&b'/') {
        return 0;
    }
    P.len() + i + 1
}

fn access_bits(a: Access) -> u32 {
    match a {
        Access::None => 0,
        Access::Read => PERM_READ,
        Access::Write => PERM_WRITE,
        Access::Both => PERM_READ | PERM_WRITE,
    }
}

fn propagates(e: XsError) -> bool {
    matches!(e, XsError::ENOMEM | XsError::ENOSPC)
}

impl Store {
    /// ++generation.
    pub(super) fn bump(&mut self) -> u64 {
        self.generation = self.generation.wrapping_add(1);
        self.generation
    }

    /// Store a node in the global database, keeping the per-owner node counts.
    pub(super) fn db_put(&mut self, name: &str, node: Node) {
        let new_owner = node.owner();
        if let Some(old) = self.nodes.insert(name.to_string(), node) {
            self.count_sub(old.owner());
        }
        *self.owned.entry(new_owner).or_insert(0) += 1;
    }

    pub(super) fn db_del(&mut self, name: &str) -> Option<Node> {
        let old = self.nodes.remove(name)?;
        self.count_sub(old.owner());
        Some(old)
    }

    fn count_sub(&mut self, dom: DomId) {
        if let Some(c) = self.owned.get_mut(&dom) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.owned.remove(&dom);
            }
        }
    }

    /// find_or_alloc_domain(): every domain id names an existing domain here (there is no
    /// hypervisor to ask), so referencing one allocates its struct.
    pub(super) fn dom_alloc(&mut self, dom: DomId) {
        let g = self.generation;
        self.domains.entry(dom).or_insert(Domain {
            generation: g,
            introduced: false,
            mfn: 0,
            port: 0,
            shutdown: false,
            target: None,
        });
    }

    /// domain_adjust_node_perms(): ACL entries (not the owner) naming a domain that is gone
    /// or younger than the node are ignored from now on.
    pub(super) fn adjust_perms(&self, node: &mut Node) {
        let gen = node.generation;
        for p in node.perms.iter_mut().skip(1) {
            if !p.ignore
                && !self
                    .domains
                    .get(&p.dom)
                    .is_some_and(|d| d.generation <= gen)
            {
                p.ignore = true;
            }
        }
    }

    /// perm_for_conn(): owners, dom0 and the owner's controller (SET_TARGET) get
    /// everything; else the first ACL entry naming the domain (or its target); else the
    /// default (the owner entry's letter).
    pub(super) fn perm_for(&self, dom: DomId, perms: &[NodePerm]) -> u32 {
        let all = PERM_READ | PERM_WRITE | PERM_OWNER;
        let Some(first) = perms.first() else {
            return if dom == 0 { all } else { 0 };
        };
        let target = self.domains.get(&dom).and_then(|d| d.target);
        if dom == 0 || first.dom == dom || target == Some(first.dom) {
            return all;
        }
        for p in &perms[1..] {
            if !p.ignore && (p.dom == dom || target == Some(p.dom)) {
                return access_bits(p.access);
            }
        }
        access_bits(first.access)
    }

    /// canonicalize(): validate a client path and make relative ones absolute. The length
    /// limits: XENSTORE_ABS_PATH_MAX for everybody (xenstore.txt; is_valid_nodename() up
    /// to Xen 4.17), and the path-max quota on the part after "/local/domain/<id>/" for
    /// unprivileged domains (current xenstored).
    pub(super) fn canonicalize(
        &self,
        ctx: Ctx,
        path: &[u8],
        allow_special: bool,
    ) -> Result<String, XsError> {
        if !path.iter().all(|&c| valid_char(c)) || (path.first() == Some(&b'@') && !allow_special) {
            return Err(XsError::EINVAL);
        }
        // Only ASCII remains.
        let p = std::str::from_utf8(path).map_err(|_| XsError::EINVAL)?;
        let name = if p.starts_with('/') || p.starts_with('@') {
            p.to_string()
        } else {
            format!("/local/domain/{}/{}", ctx.dom, p)
        };
        let bad_shape = (name.ends_with('/') && name != "/") || name.contains("//");
        let too_long = name.len() > ABS_PATH_MAX
            || (!ctx.privileged()
                && name.len() - local_off(&name) > self.quota.max_path_len as usize);
        if bad_shape || too_long {
            return Err(XsError::EINVAL);
        }
        Ok(name)
    }

    pub(super) fn tx_ref(&self, ctx: Ctx) -> Option<&Tx> {
        let (c, t) = (ctx.conn?, ctx.tx?);
        self.conns.get(&c)?.txs.iter().find(|x| x.id == t)
    }

    pub(super) fn tx_mut(&mut self, ctx: Ctx) -> Option<&mut Tx> {
        let (c, t) = (ctx.conn?, ctx.tx?);
        self.conns.get_mut(&c)?.txs.iter_mut().find(|x| x.id == t)
    }

    /// access_node(): record a transaction's access to a node. Ok(false) is xenstored's
    /// "nothing to delete" (a delete of a node the transaction never saw).
    pub(super) fn access(
        &mut self,
        ctx: Ctx,
        name: &str,
        node: Option<&Node>,
        ty: AccessType,
    ) -> Result<bool, XsError> {
        let unpriv = !ctx.privileged();
        let max = self.quota.max_transaction_nodes as usize;
        let Some(tx) = self.tx_mut(ctx) else {
            return Ok(true);
        };
        let (idx, introduced) = match tx.accessed.iter().position(|a| a.name == name) {
            Some(i) => (i, false),
            None => {
                if unpriv && tx.accessed.len() + 1 > max {
                    tx.fail = true;
                    return Err(XsError::ENOSPC);
                }
                let mut a = Accessed {
                    name: name.to_string(),
                    generation: 0,
                    perms: None,
                    check_gen: false,
                    modified: false,
                    ta_node: None,
                    fire_watch: false,
                    watch_exact: false,
                };
                if let Some(n) = node {
                    if n.generation != NO_GEN && !n.perms.is_empty() {
                        a.perms = Some(n.perms.clone());
                    }
                }
                if ty == AccessType::Read {
                    a.generation = node.map_or(NO_GEN, |n| n.generation);
                    a.check_gen = true;
                    a.ta_node = node.cloned();
                }
                tx.accessed.push(a);
                (tx.accessed.len() - 1, true)
            }
        };
        let a = &mut tx.accessed[idx];
        if ty != AccessType::Read {
            a.modified = true;
        }
        if introduced && ty == AccessType::Delete {
            return Ok(false);
        }
        if ty == AccessType::Delete {
            a.ta_node = None;
        }
        Ok(true)
    }

    /// read_node(): the node as the context sees it (its transaction's copy if it has one),
    /// with permissions adjusted; records the access in a transaction.
    pub(super) fn read_node(&mut self, ctx: Ctx, name: &str) -> Result<Node, XsError> {
        if let Some(a) = self.tx_ref(ctx).and_then(|t| t.find(name)) {
            return match a.ta_node.clone() {
                Some(mut n) => {
                    self.adjust_perms(&mut n);
                    Ok(n)
                }
                None => Err(XsError::ENOENT),
            };
        }
        match self.nodes.get(name).cloned() {
            None => {
                self.access(ctx, name, None, AccessType::Read)?;
                Err(XsError::ENOENT)
            }
            Some(mut n) => {
                self.adjust_perms(&mut n);
                self.access(ctx, name, Some(&n), AccessType::Read)?;
                Ok(n)
            }
        }
    }

    /// get_node() after canonicalize: read and check `perm`; a failure is reported as
    /// EACCES unless the nearest existing ancestor grants some of `perm`
    /// (errno_from_parents).
    pub(super) fn get_node(&mut self, ctx: Ctx, name: &str, perm: u32) -> Result<Node, XsError> {
        let err = match self.read_node(ctx, name) {
            Ok(n) if self.perm_for(ctx.dom, &n.perms) & perm == perm => return Ok(n),
            Ok(_) => XsError::EACCES,
            Err(e) => e,
        };
        if propagates(err) {
            return Err(err);
        }
        Err(self.errno_from_parents(ctx, name, err, perm))
    }

    fn errno_from_parents(&mut self, ctx: Ctx, name: &str, errnum: XsError, perm: u32) -> XsError {
        // ask_parents()
        let mut n = name.to_string();
        let parent = loop {
            n = get_parent(&n);
            match self.read_node(ctx, &n) {
                Ok(p) => break Some(p),
                Err(e) if propagates(e) => return e,
                Err(_) => {}
            }
            if n == "/" {
                break None;
            }
        };
        let pp = parent.map_or(0, |p| self.perm_for(ctx.dom, &p.perms));
        if pp & perm != 0 {
            errnum
        } else {
            XsError::EACCES
        }
    }

    /// write_node(): bump the generation, record the access, enforce the node-size quota
    /// (unprivileged writers), store globally or in the transaction.
    pub(super) fn write_node(
        &mut self,
        ctx: Ctx,
        name: &str,
        node: &mut Node,
        no_quota: bool,
    ) -> Result<(), XsError> {
        node.generation = self.bump();
        self.access(ctx, name, Some(node), AccessType::Write)?;
        self.adjust_perms(node);
        if !ctx.privileged() && !no_quota && node.acc_size() > self.quota.max_node_size as usize {
            if let Some(tx) = self.tx_mut(ctx) {
                tx.fail = true;
            }
            return Err(XsError::ENOSPC);
        }
        match self.tx_mut(ctx) {
            Some(tx) => {
                if let Some(a) = tx.find_mut(name) {
                    a.ta_node = Some(node.clone());
                }
            }
            None => self.db_put(name, node.clone()),
        }
        Ok(())
    }

    /// Undo a node written by a failed create (destroy_node): fails a transaction.
    fn destroy_node(&mut self, ctx: Ctx, name: &str) {
        match self.tx_mut(ctx) {
            Some(tx) => {
                if let Some(a) = tx.find_mut(name) {
                    a.ta_node = None;
                }
                tx.fail = true;
            }
            None => {
                self.db_del(name);
            }
        }
    }

    /// domain_nbentry(): nodes owned by the context's domain (0 for privileged ones), as
    /// the context sees it (global + transaction + this request).
    pub(super) fn nbentry(&self, ctx: Ctx) -> i64 {
        if ctx.privileged() {
            return 0;
        }
        let mut n = self.owned.get(&ctx.dom).copied().unwrap_or(0) as i64;
        if let Some(tx) = self.tx_ref(ctx) {
            n += tx.acc_delta.get(&ctx.dom).copied().unwrap_or(0);
            n += self.req_delta.get(&ctx.dom).copied().unwrap_or(0);
        }
        n
    }

    /// domain_nbentry_inc/dec: global counts follow the tree; a transaction's changes are
    /// kept per request and folded into the transaction when the request succeeds.
    pub(super) fn nbentry_add(&mut self, ctx: Ctx, dom: DomId, d: i64) {
        if self.tx_ref(ctx).is_some() {
            *self.req_delta.entry(dom).or_insert(0) += d;
        }
    }

    /// construct_node() + create_node(): create `name` and its missing parents. New nodes
    /// inherit the parent's permissions; an unprivileged creator becomes their owner.
    /// Returns the new leaf.
    pub(super) fn create_node(
        &mut self,
        ctx: Ctx,
        name: &str,
        data: Vec<u8>,
    ) -> Result<Node, XsError> {
        let mut new_names = vec![name.to_string()];
        let mut pname = get_parent(name);
        let parent = loop {
            match self.read_node(ctx, &pname) {
                Ok(p) => break p,
                Err(XsError::ENOENT) if pname != "/" => {
                    let next = get_parent(&pname);
                    new_names.push(std::mem::replace(&mut pname, next));
                }
                Err(e) => return Err(e),
            }
        };
        if let Some(tx) = self.tx_mut(ctx) {
            tx.node_created = true;
        }
        // chain[0] is the existing parent, then the new nodes top-down.
        let mut perms = parent.perms.clone();
        if !ctx.privileged() {
            if let Some(p) = perms.first_mut() {
                p.dom = ctx.dom;
            }
        }
        let mut chain: Vec<(String, Node)> = vec![(pname, parent)];
        for nm in new_names.into_iter().rev() {
            if let Some(last) = chain.last_mut() {
                last.1.children.push(basename(&nm).to_string());
            }
            let node = Node {
                generation: NO_GEN,
                perms: perms.clone(),
                data: Vec::new(),
                children: Vec::new(),
            };
            chain.push((nm, node));
        }
        let leaf = chain.len() - 1;
        chain[leaf].1.data = data;
        // Write bottom-up; new nodes are subject to the nodes-per-domain quota.
        let mut written: Vec<String> = Vec::new();
        let mut result = Ok(());
        for k in (0..chain.len()).rev() {
            let is_new = k > 0;
            if is_new
                && !ctx.privileged()
                && self.nbentry(ctx) >= self.quota.max_nodes_per_dom as i64
            {
                result = Err(XsError::ENOSPC);
                break;
            }
            let (nm, mut nd) = std::mem::replace(&mut chain[k], (String::new(), Node::empty()));
            let r = self.write_node(ctx, &nm, &mut nd, false);
            let owner = nd.owner();
            chain[k] = (nm, nd);
            if let Err(e) = r {
                result = Err(e);
                break;
            }
            if is_new {
                self.nbentry_add(ctx, owner, 1);
                written.push(chain[k].0.clone());
            }
        }
        if let Err(e) = result {
            for nm in written {
                self.destroy_node(ctx, &nm);
            }
            return Err(e);
        }
        Ok(chain.pop().map(|c| c.1).unwrap_or_else(Node::empty))
    }

    /// rm_node(): remove `name` and its subtree (post-order, firing watches for each node:
    /// exact for the descendants, recursive for `name` itself), then unlink it from its
    /// parent.
    pub(super) fn rm_node(&mut self, ctx: Ctx, name: &str) -> Result<(), XsError> {
        let pname = get_parent(name);
        let mut parent = match self.read_node(ctx, &pname) {
            Ok(p) => p,
            Err(e) if propagates(e) => return Err(e),
            Err(_) => return Err(XsError::EINVAL),
        };
        self.walk_delete(ctx, name)?;
        let base = basename(name);
        match parent.children.iter().position(|c| c == base) {
            Some(i) => {
                parent.children.remove(i);
                self.write_node(ctx, &pname, &mut parent, true)
                    .map_err(|_| XsError::EIO)
            }
            None => Err(XsError::EIO),
        }
    }

    fn walk_delete(&mut self, ctx: Ctx, root: &str) -> Result<(), XsError> {
        struct Frame {
            name: String,
            node: Node,
            kids: Vec<String>,
            pos: usize,
        }
        let first = self.read_node(ctx, root).map_err(|_| XsError::EIO)?;
        let mut stack = vec![Frame {
            name: root.to_string(),
            kids: first.children.clone(),
            node: first,
            pos: 0,
        }];
        loop {
            let Some(top) = stack.last_mut() else {
                return Ok(());
            };
            if top.pos < top.kids.len() {
                let cname = child_name(&top.name, &top.kids[top.pos]);
                top.pos += 1;
                let n = self.read_node(ctx, &cname).map_err(|_| XsError::EIO)?;
                stack.push(Frame {
                    name: cname,
                    kids: n.children.clone(),
                    node: n,
                    pos: 0,
                });
                continue;
            }
            let Some(f) = stack.pop() else { return Ok(()) };
            self.delnode_sub(ctx, &f.name, f.node, root)?;
            let Some(p) = stack.last_mut() else {
                return Ok(());
            };
            // rm_from_parent()
            let base = basename(&f.name);
            if let Some(i) = p.node.children.iter().position(|c| c == base) {
                p.node.children.remove(i);
            }
            let pname = p.name.clone();
            let mut pnode = std::mem::replace(&mut p.node, Node::empty());
            let r = self.write_node(ctx, &pname, &mut pnode, true);
            if let Some(p) = stack.last_mut() {
                p.node = pnode;
            }
            r.map_err(|_| XsError::EIO)?;
        }
    }

    fn delnode_sub(
        &mut self,
        ctx: Ctx,
        name: &str,
        mut node: Node,
        root: &str,
    ) -> Result<(), XsError> {
        node.generation = self.bump();
        let really = self.access(ctx, name, Some(&node), AccessType::Delete)?;
        self.nbentry_add(ctx, node.owner(), -1);
        if really && self.tx_ref(ctx).is_none() {
            self.db_del(name);
        }
        self.fire_watches(ctx, name, Some(&node), name != root, None);
        Ok(())
    }

    /// fire_watches(): outside a transaction, send an event to every watch matching `name`
    /// (exactly, or `name` at or below the watched path) on connections allowed to see it:
    /// one that can read the node (its old permissions `old`, or `node`, or the node in
    /// the database), or else its parent. Inside a transaction, queue for the commit.
    pub(super) fn fire_watches(
        &mut self,
        ctx: Ctx,
        name: &str,
        node: Option<&Node>,
        exact: bool,
        old: Option<&[NodePerm]>,
    ) {
        if let Some(tx) = self.tx_mut(ctx) {
            // queue_watches()
            match tx.find_mut(name) {
                None => tx.fail = true,
                Some(a) if !a.fire_watch => {
                    a.fire_watch = true;
                    a.watch_exact = exact;
                }
                Some(a) => {
                    if !exact {
                        a.watch_exact = false;
                    }
                }
            }
            return;
        }
        let node_view = match node {
            Some(n) => Some(n.clone()),
            None => self.nodes.get(name).cloned().map(|mut n| {
                self.adjust_perms(&mut n);
                n
            }),
        };
        let mut parent_view: Option<Option<Node>> = None;
        let mut events: Vec<(ConnId, Vec<u8>, Vec<u8>)> = Vec::new();
        for (&cid, c) in &self.conns {
            let hits: Vec<&Watch> = c
                .watches
                .iter()
                .filter(|w| {
                    if exact {
                        w.node == name
                    } else {
                        is_child(name, &w.node)
                    }
                })
                .collect();
            if hits.is_empty() {
                continue;
            }
            let readable = |perms: &[NodePerm]| self.perm_for(c.dom, perms) & PERM_READ != 0;
            let mut ok = old.is_some_and(readable);
            if !ok {
                if let Some(n) = &node_view {
                    ok = readable(&n.perms);
                    if !ok {
                        let pv = parent_view.get_or_insert_with(|| {
                            self.nodes.get(&get_parent(name)).cloned().map(|mut p| {
                                self.adjust_perms(&mut p);
                                p
                            })
                        });
                        ok = pv.as_ref().is_some_and(|p| readable(&p.perms));
                    }
                }
            }
            if !ok {
                continue;
            }
            for w in hits {
                let path = name.as_bytes().get(w.prefix_len..).unwrap_or(b"").to_vec();
                events.push((cid, path, w.token.clone()));
            }
        }
        for (cid, path, token) in events {
            self.send_event(cid, &path, &token);
        }
    }

    /// send_event(): drop events over XENSTORE_PAYLOAD_MAX, and a non-special event
    /// identical to one still queued for the connection (here: earlier in this call's
    /// output).
    pub(super) fn send_event(&mut self, cid: ConnId, path: &[u8], token: &[u8]) {
        let mut p = Vec::with_capacity(path.len() + token.len() + 2);
        p.extend_from_slice(path);
        p.push(0);
        p.extend_from_slice(token);
        p.push(0);
        if p.len() > Msg::MAX_PAYLOAD {
            return;
        }
        let ev = Msg::new(super::msg_type::WATCH_EVENT, 0, 0, p);
        if path.first() != Some(&b'@') && self.out.iter().any(|(c, m)| *c == cid && *m == ev) {
            return;
        }
        self.out.push((cid, ev));
    }

    /// fire_special_watches(): "@introduceDomain" / "@releaseDomain", exact match,
    /// permission from the special node (or "/").
    pub(super) fn fire_special(&mut self, name: &str) {
        if let Some(n) = self.nodes.get(name).cloned() {
            let mut n = n;
            self.adjust_perms(&mut n);
            self.fire_watches(Ctx::DIRECT, name, Some(&n), true, None);
        }
    }

    /// The end of TRANSACTION_END "T": xenstored's checks in order (failed transaction
    /// ENOMEM, node quota ENOSPC, conflicts EAGAIN), then the commit and its watches.
    pub(super) fn commit(&mut self, ctx: Ctx, tx: Tx) -> Result<(), XsError> {
        if tx.fail {
            return Err(XsError::ENOMEM);
        }
        // acc_fix_domains(chk_quota): only unprivileged owners count.
        let chk_quota = tx.node_created && !ctx.privileged();
        for (&dom, &delta) in &tx.acc_delta {
            if dom == 0 {
                continue;
            }
            let cnt = self.owned.get(&dom).copied().unwrap_or(0) as i64 + delta;
            if chk_quota && cnt >= self.quota.max_nodes_per_dom as i64 {
                return Err(XsError::ENOSPC);
            }
            if cnt < 0 {
                return Err(XsError::ENOMEM);
            }
        }
        // finalize_transaction()
        for a in &tx.accessed {
            if a.check_gen {
                let g = self.nodes.get(&a.name).map_or(NO_GEN, |n| n.generation);
                if a.generation != g {
                    return Err(XsError::EAGAIN);
                }
            }
        }
        let plain = Ctx { tx: None, ..ctx };
        for a in tx.accessed.into_iter().filter(|a| a.modified) {
            if let Some(mut n) = a.ta_node {
                n.generation = self.bump();
                self.db_put(&a.name, n);
            } else if a.generation != NO_GEN {
                self.db_del(&a.name);
            }
            if a.fire_watch {
                self.fire_watches(plain, &a.name, None, a.watch_exact, a.perms.as_deref());
            }
        }
        Ok(())
    }

    /// domain_tree_remove(): remove every node owned by a dying domain (with its subtree),
    /// as xenstored itself (watches fire). "/" is never removed.
    pub(super) fn remove_domain_nodes(&mut self, dom: DomId) {
        let mut stack = vec!["/".to_string()];
        while let Some(name) = stack.pop() {
            let Some(node) = self.nodes.get(&name) else {
                continue;
            };
            if node.owner() == dom && name != "/" {
                let _ = self.rm_node(Ctx::DIRECT, &name);
                continue;
            }
            for c in node.children.iter().rev() {
                stack.push(child_name(&name, c));
            }
        }
    }

    /// Internal consistency: every child exists, every node but "/" and the special nodes
    /// is listed by its parent exactly once, permissions are non-empty, counts match.
    pub(super) fn check_tree(&self) -> Result<(), String> {
        if !self.nodes.contains_key("/") {
            return Err("no root".into());
        }
        let mut owned: BTreeMap<DomId, u32> = BTreeMap::new();
        for (name, n) in &self.nodes {
            if n.perms.is_empty() {
                return Err(format!("{name}: no permissions"));
            }
            *owned.entry(n.owner()).or_insert(0) += 1;
            for (i, c) in n.children.iter().enumerate() {
                if c.is_empty() || c.contains('/') || !c.bytes().all(valid_char) {
                    return Err(format!("{name}: bad child {c:?}"));
                }
                if n.children[..i].contains(c) {
                    return Err(format!("{name}: duplicate child {c}"));
                }
                if !self.nodes.contains_key(&child_name(name, c)) {
                    return Err(format!("{name}: missing child {c}"));
                }
            }
            if !valid_name(name) {
                return Err(format!("bad node name {name:?}"));
            }
            if name == "/" || name.starts_with('@') {
                continue;
            }
            let p = get_parent(name);
            match self.nodes.get(&p) {
                Some(pn) if pn.children.iter().any(|c| c == basename(name)) => {}
                _ => return Err(format!("{name}: not linked from {p}")),
            }
        }
        if owned != self.owned {
            return Err("node counts out of sync".into());
        }
        Ok(())
    }
}

impl Node {
    pub(super) fn empty() -> Node {
        Node {
            generation: NO_GEN,
            perms: Vec::new(),
            data: Vec::new(),
            children: Vec::new(),
        }
    }
}
