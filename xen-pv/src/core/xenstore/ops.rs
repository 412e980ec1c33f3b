//! Request dispatch and one handler per message type: xenstored's process_message() and
//! the do_* functions of core.c, watch.c, transaction.c, domain.c and control.c.

use super::tree::{get_parent, Ctx, NodePerm, Tx, Watch, PERM_OWNER, PERM_READ, PERM_WRITE};
use super::wire::{atoi, count_strings, cstr, get_string, get_strings, onearg, strtol, DOMID_SELF};
use super::{msg_type, Access, ConnId, DomId, Msg, Store, XsError};

type Reply = Result<Vec<u8>, XsError>;

fn ok() -> Reply {
    Ok(b"OK\0".to_vec())
}

fn with_nul(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// One "r1"-style permission (xenstore_strings_to_perms()): a letter, then a C
/// `strtol(.., 0)` number that must use the whole (non-empty) rest.
pub(super) fn parse_perm(s: &[u8]) -> Option<NodePerm> {
    let access = Access::from_letter(*s.first()?)?;
    let rest = &s[1..];
    let (v, used) = strtol(rest, true);
    (!rest.is_empty() && used == rest.len()).then_some(NodePerm {
        dom: v as u32,
        access,
        ignore: false,
    })
}

/// domain.c hard_quotas[] names and descriptions, in xenstored's order.
const QUOTA_NAMES: [(&str, &str); 9] = [
    ("nodes", "Nodes per domain"),
    ("watches", "Watches per domain"),
    ("outstanding", "Outstanding requests per domain"),
    ("memory", "Total Xenstore memory per domain (error level)"),
    ("transactions", "Active transactions per domain"),
    (
        "transaction-nodes",
        "Max. number of accessed nodes per transaction",
    ),
    ("node-permissions", "Max. number of permissions per node"),
    ("path-max", "Max. length of a node path"),
    ("node-size", "Max. size of a node"),
];

const CONTROL_CMDS: [(&str, &str); 4] = [
    ("check", ""),
    ("print", "<string>"),
    ("quota", "[set <name> <val>|<domid>]"),
    ("help", ""),
];

impl Store {
    /// process_message(): unknown type ENOSYS, privileged-only types EACCES, unknown tx_id
    /// ENOENT (WATCH/UNWATCH ignore tx_id), then the handler. Also returns the context so
    /// that the caller can settle the request's transaction accounting.
    pub(super) fn dispatch(
        &mut self,
        conn: ConnId,
        m: &Msg,
    ) -> (Result<(u32, Vec<u8>), XsError>, Option<Ctx>) {
        use msg_type::*;
        let Some(c) = self.conns.get(&conn) else {
            return (Err(XsError::EINVAL), None);
        };
        let dom = c.dom;
        // xenstored drops a client sending more; the transport should not pass such a
        // message on, but if it does the answer is E2BIG.
        if m.payload.len() > Msg::MAX_PAYLOAD {
            return (Err(XsError::E2BIG), None);
        }
        if m.ty >= TYPE_COUNT || matches!(m.ty, WATCH_EVENT | ERROR | 20) {
            return (Err(XsError::ENOSYS), None);
        }
        let privileged_only = matches!(
            m.ty,
            CONTROL | INTRODUCE | RELEASE | IS_DOMAIN_INTRODUCED | RESUME | SET_TARGET
        );
        if privileged_only && dom != 0 {
            return (Err(XsError::EACCES), None);
        }
        let tx = if matches!(m.ty, WATCH | UNWATCH) || m.tx_id == 0 {
            None
        } else if c.txs.iter().any(|t| t.id == m.tx_id) {
            Some(m.tx_id)
        } else {
            return (Err(XsError::ENOENT), None);
        };
        let ctx = Ctx {
            conn: Some(conn),
            dom,
            tx,
        };
        let p = m.payload.as_slice();
        let r = match m.ty {
            CONTROL => self.op_control(p),
            DIRECTORY => self.op_directory(ctx, p),
            READ => self.op_read(ctx, p),
            GET_PERMS => self.op_get_perms(ctx, p),
            WATCH => self.op_watch(ctx, conn, p),
            UNWATCH => self.op_unwatch(ctx, conn, p),
            TRANSACTION_START => self.op_transaction_start(ctx, conn),
            TRANSACTION_END => self.op_transaction_end(ctx, conn, p),
            INTRODUCE => self.op_introduce(p),
            RELEASE => self.op_release(p),
            GET_DOMAIN_PATH => self.op_get_domain_path(p),
            WRITE => self.op_write(ctx, p),
            MKDIR => onearg(p)
                .ok_or(XsError::EINVAL)
                .and_then(|a| self.do_mkdir(ctx, a))
                .and_then(|()| ok()),
            RM => onearg(p)
                .ok_or(XsError::EINVAL)
                .and_then(|a| self.do_rm(ctx, a))
                .and_then(|()| ok()),
            SET_PERMS => self.op_set_perms(ctx, p),
            IS_DOMAIN_INTRODUCED => self.op_is_domain_introduced(p),
            RESUME => self.op_resume(p),
            SET_TARGET => self.op_set_target(p),
            RESET_WATCHES => self.op_reset_watches(conn),
            DIRECTORY_PART => self.op_directory_part(ctx, p),
            _ => Err(XsError::ENOSYS),
        };
        (r.map(|payload| (m.ty, payload)), Some(ctx))
    }

    /// The node at a one-argument path, with `perm`.
    fn onearg_node(
        &mut self,
        ctx: Ctx,
        p: &[u8],
        perm: u32,
        allow_special: bool,
    ) -> Result<super::tree::Node, XsError> {
        let path = onearg(p).ok_or(XsError::EINVAL)?;
        let name = self.canonicalize(ctx, path, allow_special)?;
        self.get_node(ctx, &name, perm)
    }

    fn op_read(&mut self, ctx: Ctx, p: &[u8]) -> Reply {
        Ok(self.onearg_node(ctx, p, PERM_READ, false)?.data)
    }

    fn op_directory(&mut self, ctx: Ctx, p: &[u8]) -> Reply {
        Ok(self.onearg_node(ctx, p, PERM_READ, false)?.children_bytes())
    }

    /// send_directory_part(): "<path>\0<offset>\0" -> "<gen>\0" + children from byte
    /// `offset` as far as they fit, with an extra "\0" once the list is complete.
    fn op_directory_part(&mut self, ctx: Ctx, p: &[u8]) -> Reply {
        if count_strings(p) != 2 {
            return Err(XsError::EINVAL);
        }
        let path = cstr(p);
        let name = self.canonicalize(ctx, path, false)?;
        let node = self.get_node(ctx, &name, PERM_READ)?;
        let off = atoi(&p[path.len() + 1..]) as u32 as usize;
        let mut out = with_nul(&node.generation.to_string());
        let genlen = out.len();
        let children = node.children_bytes();
        let childlen = children.len();
        if off >= childlen {
            out.push(0);
            return Ok(out);
        }
        let maxlen = Msg::MAX_PAYLOAD - genlen - 1;
        let mut len = 0;
        loop {
            let pos = off + len;
            let s = children[pos..]
                .iter()
                .position(|&c| c == 0)
                .unwrap_or(childlen - pos);
            if len + s >= maxlen {
                break;
            }
            len += s + 1;
            if off + len >= childlen {
                break;
            }
        }
        let end = (off + len).min(childlen);
        out.extend_from_slice(&children[off..end]);
        if end == childlen {
            out.push(0);
        }
        Ok(out)
    }

    fn op_get_perms(&mut self, ctx: Ctx, p: &[u8]) -> Reply {
        let node = self.onearg_node(ctx, p, PERM_READ, true)?;
        let mut out = Vec::new();
        for q in &node.perms {
            out.extend_from_slice(&with_nul(&super::Perm::new(q.dom, q.access).to_string()));
        }
        Ok(out)
    }

    fn op_write(&mut self, ctx: Ctx, p: &[u8]) -> Reply {
        // At least the path must be NUL-terminated; the value is the rest, NULs and all.
        if get_string(p, 0) == 0 {
            return Err(XsError::EINVAL);
        }
        let path = cstr(p);
        self.do_write(ctx, path, &p[path.len() + 1..])?;
        ok()
    }

    /// do_write(): needs write permission on the node, or (to create it) on the nearest
    /// existing ancestor.
    pub(super) fn do_write(&mut self, ctx: Ctx, path: &[u8], value: &[u8]) -> Result<(), XsError> {
        let name = self.canonicalize(ctx, path, false)?;
        let node = match self.get_node(ctx, &name, PERM_WRITE) {
            Ok(mut n) => {
                n.data = value.to_vec();
                self.write_node(ctx, &name, &mut n, false)?;
                n
            }
            Err(XsError::ENOENT) => self.create_node(ctx, &name, value.to_vec())?,
            Err(e) => return Err(e),
        };
        self.fire_watches(ctx, &name, Some(&node), false, None);
        Ok(())
    }

    /// do_mkdir(): an existing node is fine (and fires nothing).
    pub(super) fn do_mkdir(&mut self, ctx: Ctx, path: &[u8]) -> Result<(), XsError> {
        let name = self.canonicalize(ctx, path, false)?;
        match self.get_node(ctx, &name, PERM_WRITE) {
            Ok(_) => Ok(()),
            Err(XsError::ENOENT) => {
                let node = self.create_node(ctx, &name, Vec::new())?;
                self.fire_watches(ctx, &name, Some(&node), false, None);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// do_rm(): a missing node is fine if its parent exists (else ENOENT); "/" is EINVAL.
    pub(super) fn do_rm(&mut self, ctx: Ctx, path: &[u8]) -> Result<(), XsError> {
        let name = self.canonicalize(ctx, path, false)?;
        match self.get_node(ctx, &name, PERM_WRITE) {
            Err(XsError::ENOENT) => match self.read_node(ctx, &get_parent(&name)) {
                Ok(_) => Ok(()),
                Err(e @ (XsError::ENOMEM | XsError::ENOSPC)) => Err(e),
                Err(_) => Err(XsError::ENOENT),
            },
            Err(e) => Err(e),
            Ok(_) if name == "/" => Err(XsError::EINVAL),
            Ok(_) => self.rm_node(ctx, &name),
        }
    }

    fn op_set_perms(&mut self, ctx: Ctx, p: &[u8]) -> Reply {
        let num = count_strings(p);
        if num < 2 {
            return Err(XsError::EINVAL);
        }
        if !ctx.privileged() && num - 1 > self.quota.max_perms as usize {
            return Err(XsError::ENOSPC);
        }
        let strings = get_strings(p);
        let perms = strings[1..]
            .iter()
            .map(|s| parse_perm(s))
            .collect::<Option<Vec<_>>>()
            .ok_or(XsError::EINVAL)?;
        self.do_set_perms(ctx, strings[0], perms)?;
        ok()
    }

    /// do_set_perms(): owner (or dom0) only, "@" nodes allowed; an unprivileged domain may
    /// not give the node away (EPERM). Watches fire for whoever could read the node before
    /// or after.
    pub(super) fn do_set_perms(
        &mut self,
        ctx: Ctx,
        path: &[u8],
        perms: Vec<NodePerm>,
    ) -> Result<(), XsError> {
        let Some(first) = perms.first().copied() else {
            return Err(XsError::EINVAL);
        };
        for q in &perms {
            self.dom_alloc(q.dom);
        }
        let name = self.canonicalize(ctx, path, true)?;
        let mut node = self.get_node(ctx, &name, PERM_WRITE | PERM_OWNER)?;
        if !ctx.privileged() && first.dom != node.owner() {
            return Err(XsError::EPERM);
        }
        let old = std::mem::replace(&mut node.perms, perms);
        let old_owner = old.first().map_or(0, |q| q.dom);
        self.nbentry_add(ctx, old_owner, -1);
        self.nbentry_add(ctx, node.owner(), 1);
        self.write_node(ctx, &name, &mut node, false)?;
        self.fire_watches(ctx, &name, Some(&node), false, Some(&old));
        Ok(())
    }

    /// do_watch(): "<path>\0<token>\0" exactly; fires once at once (after the reply).
    fn op_watch(&mut self, ctx: Ctx, conn: ConnId, p: &[u8]) -> Reply {
        let v = get_strings(p);
        if v.len() != 2 {
            return Err(XsError::EINVAL);
        }
        let relative = !matches!(v[0].first(), Some(b'/' | b'@'));
        let name = self.canonicalize(ctx, v[0], true)?;
        let token = v[1].to_vec();
        let dom = ctx.dom;
        let count: usize = self
            .conns
            .values()
            .filter(|c| c.dom == dom)
            .map(|c| c.watches.len())
            .sum();
        let max = self.quota.max_watches as usize;
        let Some(c) = self.conns.get_mut(&conn) else {
            return Err(XsError::EINVAL);
        };
        if c.watches.iter().any(|w| w.node == name && w.token == token) {
            return Err(XsError::EEXIST);
        }
        if !ctx.privileged() && count > max {
            return Err(XsError::E2BIG);
        }
        let prefix_len = if relative {
            format!("/local/domain/{dom}/").len()
        } else {
            0
        };
        let path = name.as_bytes().get(prefix_len..).unwrap_or(b"").to_vec();
        c.watches.push(Watch {
            node: name,
            token: token.clone(),
            prefix_len,
        });
        self.send_event(conn, &path, &token);
        ok()
    }

    fn op_unwatch(&mut self, ctx: Ctx, conn: ConnId, p: &[u8]) -> Reply {
        let v = get_strings(p);
        if v.len() != 2 {
            return Err(XsError::EINVAL);
        }
        let name = self.canonicalize(ctx, v[0], true)?;
        let c = self.conns.get_mut(&conn).ok_or(XsError::EINVAL)?;
        let i = c
            .watches
            .iter()
            .position(|w| w.node == name && w.token == v[1])
            .ok_or(XsError::ENOENT)?;
        c.watches.remove(i);
        ok()
    }

    fn op_reset_watches(&mut self, conn: ConnId) -> Reply {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.watches.clear();
            c.txs.clear();
        }
        ok()
    }

    /// do_transaction_start(): no nesting (EBUSY); an unprivileged domain may have at most
    /// max_transactions + 1 open (ENOSPC); ids are per connection, non-zero, increasing.
    fn op_transaction_start(&mut self, ctx: Ctx, conn: ConnId) -> Reply {
        if ctx.tx.is_some() {
            return Err(XsError::EBUSY);
        }
        let dom = ctx.dom;
        let open: usize = self
            .conns
            .values()
            .filter(|c| c.dom == dom)
            .map(|c| c.txs.len())
            .sum();
        if !ctx.privileged() && open > self.quota.max_transactions as usize {
            return Err(XsError::ENOSPC);
        }
        let generation = self.bump();
        let c = self.conns.get_mut(&conn).ok_or(XsError::EINVAL)?;
        let mut id = c.next_tx_id;
        while id == 0 || c.txs.iter().any(|t| t.id == id) {
            id = id.wrapping_add(1);
        }
        c.next_tx_id = id.wrapping_add(1);
        c.txs.push(Tx {
            id,
            generation,
            accessed: Vec::new(),
            acc_delta: Default::default(),
            node_created: false,
            fail: false,
        });
        Ok(with_nul(&id.to_string()))
    }

    /// do_transaction_end(): "T\0" commits, "F\0" aborts; either way the transaction is
    /// gone afterwards (also after a failed commit).
    fn op_transaction_end(&mut self, ctx: Ctx, conn: ConnId, p: &[u8]) -> Reply {
        let commit = match onearg(p) {
            Some(b"T") => true,
            Some(b"F") => false,
            _ => return Err(XsError::EINVAL),
        };
        let Some(id) = ctx.tx else {
            return Err(XsError::ENOENT);
        };
        let c = self.conns.get_mut(&conn).ok_or(XsError::EINVAL)?;
        let i = c
            .txs
            .iter()
            .position(|t| t.id == id)
            .ok_or(XsError::ENOENT)?;
        let tx = c.txs.remove(i);
        if commit {
            self.commit(Ctx { tx: None, ..ctx }, tx)?;
        }
        ok()
    }

    fn op_get_domain_path(&mut self, p: &[u8]) -> Reply {
        let a = onearg(p).ok_or(XsError::EINVAL)?;
        Ok(with_nul(&format!("/local/domain/{}", atoi(a) as u32)))
    }

    /// do_introduce(): "<domid>\0<mfn>\0<port>\0..."; a zero port is EINVAL.
    fn op_introduce(&mut self, p: &[u8]) -> Reply {
        let v = get_strings(p);
        if v.len() < 3 {
            return Err(XsError::EINVAL);
        }
        let dom = atoi(v[0]) as u32;
        let mfn = strtol(v[1], false).0 as u64;
        let port = atoi(v[2]) as u32;
        if port == 0 {
            return Err(XsError::EINVAL);
        }
        self.introduce_domain(dom, mfn, port);
        ok()
    }

    /// introduce_domain(): a new introduction fires @introduceDomain (not for dom0); a
    /// repeated one re-binds the event channel and resets the domain's connections
    /// (domain_conn_reset()).
    pub(super) fn introduce_domain(&mut self, dom: DomId, mfn: u64, port: u32) {
        self.dom_alloc(dom);
        let Some(d) = self.domains.get_mut(&dom) else {
            return;
        };
        if !d.introduced {
            d.introduced = true;
            d.mfn = mfn;
            d.port = port;
            d.shutdown = false;
            if dom != 0 {
                self.fire_special("@introduceDomain");
            }
        } else {
            d.port = port;
            if dom != 0 {
                for c in self.conns.values_mut().filter(|c| c.dom == dom) {
                    c.watches.clear();
                    c.txs.clear();
                }
            }
        }
    }

    /// onearg_domain(): dom0 is EINVAL, a domain not introduced ENOENT.
    fn onearg_domain(&self, p: &[u8]) -> Result<DomId, XsError> {
        let dom = atoi(onearg(p).ok_or(XsError::EINVAL)?) as u32;
        if dom == 0 {
            return Err(XsError::EINVAL);
        }
        if !self.is_introduced(dom) {
            return Err(XsError::ENOENT);
        }
        Ok(dom)
    }

    fn op_release(&mut self, p: &[u8]) -> Reply {
        let dom = self.onearg_domain(p)?;
        self.release_domain(dom);
        ok()
    }

    /// do_release() + destroy_domain(): drop the domain's watches first (its own nodes'
    /// removal must not notify it), its transactions, the nodes it owns, the domain; then
    /// @releaseDomain.
    pub(super) fn release_domain(&mut self, dom: DomId) {
        for c in self.conns.values_mut().filter(|c| c.dom == dom) {
            c.watches.clear();
            c.txs.clear();
        }
        self.remove_domain_nodes(dom);
        self.domains.remove(&dom);
        self.fire_special("@releaseDomain");
    }

    fn op_resume(&mut self, p: &[u8]) -> Reply {
        let dom = self.onearg_domain(p)?;
        if let Some(d) = self.domains.get_mut(&dom) {
            d.shutdown = false;
        }
        ok()
    }

    /// do_set_target(): "<domid>\0<target>\0"; both must be introduced (ENOENT).
    fn op_set_target(&mut self, p: &[u8]) -> Reply {
        let v = get_strings(p);
        if v.len() < 2 {
            return Err(XsError::EINVAL);
        }
        let (dom, tdom) = (atoi(v[0]) as u32, atoi(v[1]) as u32);
        if !self.is_introduced(dom) || !self.is_introduced(tdom) {
            return Err(XsError::ENOENT);
        }
        if let Some(d) = self.domains.get_mut(&dom) {
            d.target = Some(tdom);
        }
        ok()
    }

    fn op_is_domain_introduced(&mut self, p: &[u8]) -> Reply {
        let dom = atoi(onearg(p).ok_or(XsError::EINVAL)?) as u32;
        let yes = dom == DOMID_SELF || self.is_introduced(dom);
        Ok(if yes {
            b"T\0".to_vec()
        } else {
            b"F\0".to_vec()
        })
    }

    /// do_control(): "<command>\0[<parameters>\0]". Supported: check, print, quota (show,
    /// set, per domain), help; anything else is EINVAL.
    fn op_control(&mut self, p: &[u8]) -> Reply {
        let off = get_string(p, 0);
        if off == 0 {
            return Err(XsError::EINVAL);
        }
        let cmd = &p[..off - 1];
        if !CONTROL_CMDS.iter().any(|(c, _)| c.as_bytes() == cmd) {
            return Err(XsError::EINVAL);
        }
        let v = get_strings(p);
        let args = &v[1..];
        match cmd {
            b"check" => {
                if !args.is_empty() {
                    return Err(XsError::EINVAL);
                }
                ok()
            }
            b"print" => {
                if args.len() != 1 {
                    return Err(XsError::EINVAL);
                }
                ok()
            }
            b"help" => {
                if !args.is_empty() {
                    return Err(XsError::EINVAL);
                }
                let mut s = String::new();
                for (c, pars) in CONTROL_CMDS {
                    s += &format!("{c:<15} {pars}\n");
                }
                Ok(with_nul(&s))
            }
            _ => self.control_quota(args),
        }
    }

    fn quota_vals(&self) -> [u32; 9] {
        let q = &self.quota;
        [
            q.max_nodes_per_dom,
            q.max_watches,
            q.max_outstanding,
            q.max_memory,
            q.max_transactions,
            q.max_transaction_nodes,
            q.max_perms,
            q.max_path_len,
            q.max_node_size,
        ]
    }

    fn control_quota(&mut self, args: &[&[u8]]) -> Reply {
        if args.is_empty() {
            let mut s = String::from("Quota settings:\n");
            for ((name, descr), val) in QUOTA_NAMES.iter().zip(self.quota_vals()) {
                s += &format!("{name:<17}: {:>8} {descr}\n", val as i32);
            }
            return Ok(with_nul(&s));
        }
        if args[0] == b"set" {
            if args.len() != 3 {
                return Err(XsError::EINVAL);
            }
            let val = atoi(args[2]);
            if val < 1 {
                return Err(XsError::EINVAL);
            }
            let q = &mut self.quota;
            let slot = match args[1] {
                b"nodes" => &mut q.max_nodes_per_dom,
                b"watches" => &mut q.max_watches,
                b"outstanding" => &mut q.max_outstanding,
                b"memory" => &mut q.max_memory,
                b"transactions" => &mut q.max_transactions,
                b"transaction-nodes" => &mut q.max_transaction_nodes,
                b"node-permissions" => &mut q.max_perms,
                b"path-max" => &mut q.max_path_len,
                b"node-size" => &mut q.max_node_size,
                _ => return Err(XsError::EINVAL),
            };
            *slot = val as u32;
            return ok();
        }
        if args.len() != 1 {
            return Err(XsError::EINVAL);
        }
        // domain_get_quota(): current values (the maxima seen are not tracked here).
        let dom = atoi(args[0]) as u32;
        if !self.domains.contains_key(&dom) {
            return Err(XsError::ENOENT);
        }
        let nodes = self.owned.get(&dom).copied().unwrap_or(0);
        let watches: usize = self
            .conns
            .values()
            .filter(|c| c.dom == dom)
            .map(|c| c.watches.len())
            .sum();
        let txs: usize = self
            .conns
            .values()
            .filter(|c| c.dom == dom)
            .map(|c| c.txs.len())
            .sum();
        let vals = [nodes, watches as u32, 0, 0, txs as u32, 0, 0, 0, 0];
        let mut s = format!("Domain {dom}:\n");
        for ((name, _), v) in QUOTA_NAMES.iter().zip(vals) {
            s += &format!("{name:<17}: {v:>8} (max {v:>8})\n");
        }
        Ok(with_nul(&s))
    }
}
