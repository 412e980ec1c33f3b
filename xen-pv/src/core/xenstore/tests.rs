//! Tests of the store against xenstored's behaviour (each message type, its errors,
//! permissions, transactions, watches, quotas, malformed input, snapshots, and a fuzzer).

use super::msg_type as t;
use super::*;
use std::collections::BTreeMap;

/// NUL-terminate each part.
fn args(parts: &[&str]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in parts {
        v.extend_from_slice(p.as_bytes());
        v.push(0);
    }
    v
}

type Ev = (ConnId, String, String);

fn events(out: &[(ConnId, Msg)]) -> Vec<Ev> {
    out.iter()
        .map(|(c, m)| {
            assert_eq!(m.ty, t::WATCH_EVENT);
            assert_eq!((m.req_id, m.tx_id), (0, 0));
            let parts: Vec<&[u8]> = m.payload.split(|&b| b == 0).collect();
            assert_eq!(parts.len(), 3, "{:?}", m.payload);
            assert!(parts[2].is_empty());
            (
                *c,
                String::from_utf8_lossy(parts[0]).into(),
                String::from_utf8_lossy(parts[1]).into(),
            )
        })
        .collect()
}

fn ev(c: ConnId, path: &str, tok: &str) -> Ev {
    (c, path.to_string(), tok.to_string())
}

/// A store with homes /local/domain/1 and /local/domain/2 owned by their domain ("n1",
/// "n2"), both introduced.
struct T {
    s: Store,
    req: u32,
}

impl T {
    fn new() -> T {
        T::with_quota(Quota::default())
    }

    fn with_quota(q: Quota) -> T {
        let mut s = Store::with_quota(q);
        for d in [1, 2] {
            let home = format!("/local/domain/{d}");
            s.try_mkdir(&home).unwrap();
            s.try_set_perms(&home, &[Perm::new(d, Access::None)])
                .unwrap();
            s.introduce(d);
        }
        T { s, req: 100 }
    }

    /// Send a request; Ok(reply payload) or Err(error name), plus the events.
    fn rq(
        &mut self,
        c: ConnId,
        ty: u32,
        tx: u32,
        payload: &[u8],
    ) -> (Result<Vec<u8>, String>, Vec<Ev>) {
        self.req += 1;
        let m = Msg::new(ty, self.req, tx, payload);
        let mut out = self.s.handle(c, &m);
        assert!(!out.is_empty());
        let (rc, reply) = out.remove(0);
        assert_eq!(rc, c);
        assert_eq!((reply.req_id, reply.tx_id), (m.req_id, m.tx_id));
        let r = if reply.ty == t::ERROR {
            let name = reply.error_name().unwrap().to_string();
            assert!(XsError::from_name(&name).is_some());
            assert_eq!(reply.payload.len(), name.len() + 1);
            Err(name)
        } else {
            assert_eq!(reply.ty, ty);
            Ok(reply.payload)
        };
        (r, events(&out))
    }

    fn call(&mut self, c: ConnId, ty: u32, payload: &[u8]) -> Result<Vec<u8>, String> {
        self.rq(c, ty, 0, payload).0
    }

    fn call_tx(&mut self, c: ConnId, ty: u32, tx: u32, payload: &[u8]) -> Result<Vec<u8>, String> {
        self.rq(c, ty, tx, payload).0
    }

    fn ok(&mut self, c: ConnId, ty: u32, payload: &[u8]) -> Vec<Ev> {
        let (r, e) = self.rq(c, ty, 0, payload);
        assert_eq!(
            r,
            Ok(b"OK\0".to_vec()),
            "type {ty} payload {:?}",
            String::from_utf8_lossy(payload)
        );
        e
    }

    fn err(&mut self, c: ConnId, ty: u32, payload: &[u8]) -> String {
        match self.rq(c, ty, 0, payload).0 {
            Err(e) => e,
            Ok(p) => panic!(
                "type {ty} {:?}: expected an error, got {:?}",
                String::from_utf8_lossy(payload),
                p
            ),
        }
    }

    fn read(&mut self, c: ConnId, tx: u32, path: &str) -> Result<String, String> {
        self.call_tx(c, t::READ, tx, &args(&[path]))
            .map(|v| String::from_utf8(v).unwrap())
    }

    fn write(&mut self, c: ConnId, tx: u32, path: &str, val: &str) -> Result<Vec<Ev>, String> {
        let mut p = args(&[path]);
        p.extend_from_slice(val.as_bytes());
        let (r, e) = self.rq(c, t::WRITE, tx, &p);
        r.map(|v| {
            assert_eq!(v, b"OK\0");
            e
        })
    }

    fn perms(&mut self, c: ConnId, path: &str) -> Result<String, String> {
        self.call(c, t::GET_PERMS, &args(&[path]))
            .map(|v| String::from_utf8(v).unwrap().replace('\0', " "))
    }

    fn watch(&mut self, c: ConnId, path: &str, tok: &str) -> Vec<Ev> {
        self.ok(c, t::WATCH, &args(&[path, tok]))
    }

    fn start(&mut self, c: ConnId) -> u32 {
        let r = self.call(c, t::TRANSACTION_START, b"\0").unwrap();
        assert_eq!(r.last(), Some(&0));
        std::str::from_utf8(&r[..r.len() - 1])
            .unwrap()
            .parse()
            .unwrap()
    }

    fn end(&mut self, c: ConnId, tx: u32, commit: bool) -> (Result<Vec<u8>, String>, Vec<Ev>) {
        self.rq(
            c,
            t::TRANSACTION_END,
            tx,
            if commit { b"T\0" } else { b"F\0" },
        )
    }
}

fn e(x: XsError) -> String {
    x.name().to_string()
}

// ---------------------------------------------------------------- initial state, API

#[test]
fn initial_tree() {
    let s = Store::new();
    assert_eq!(
        s.directory("/"),
        Some(vec!["tool".to_string(), "local".to_string()])
    );
    assert_eq!(s.directory("/local"), Some(vec!["domain".to_string()]));
    assert_eq!(s.directory("/tool"), Some(vec!["xenstored".to_string()]));
    assert_eq!(s.directory("/local/domain"), Some(vec![]));
    for p in [
        "/",
        "/tool",
        "/tool/xenstored",
        "/local",
        "/local/domain",
        "@introduceDomain",
        "@releaseDomain",
    ] {
        assert_eq!(
            s.get_perms(p),
            Some(vec![Perm::new(0, Access::None)]),
            "{p}"
        );
    }
    assert_eq!(s.read("/"), Some(vec![]));
    assert!(s.is_introduced(0));
    assert!(!s.is_introduced(1));
    s.check_tree().unwrap();
    assert_eq!(s.quota(), Quota::default());
    assert_eq!(Quota::default().max_nodes_per_dom, 1000);
    assert_eq!(Quota::default().max_node_size, 2048);
    assert_eq!(Quota::default().max_watches, 128);
    assert_eq!(Quota::default().max_transactions, 10);
}

#[test]
fn perm_strings() {
    assert_eq!(Perm::parse("r1"), Some(Perm::new(1, Access::Read)));
    assert_eq!(Perm::parse("b0x10"), Some(Perm::new(16, Access::Both)));
    assert_eq!(Perm::parse("w010"), Some(Perm::new(8, Access::Write)));
    assert_eq!(Perm::parse("n-1"), Some(Perm::new(u32::MAX, Access::None)));
    for bad in ["", "r", "x1", "r1x", "r 1x", "1", "r08"] {
        assert_eq!(Perm::parse(bad), None, "{bad}");
    }
    assert_eq!(Perm::new(u32::MAX, Access::None).to_string(), "n-1");
    assert_eq!(Perm::new(7, Access::Both).to_string(), "b7");
}

#[test]
fn direct_api() {
    let mut s = Store::new();
    let c0 = s.connect(0);
    let w = s.handle(c0, &Msg::new(t::WATCH, 1, 0, args(&["/dx", "tok"])));
    assert_eq!(events(&w[1..]), vec![ev(c0, "/dx", "tok")]);
    assert_eq!(events(&s.write("/dx", b"1")), vec![ev(c0, "/dx", "tok")]);
    assert_eq!(s.read("/dx"), Some(b"1".to_vec()));
    assert_eq!(s.read("/dx/none"), None);
    assert_eq!(s.read("/d.x"), None);
    assert_eq!(events(&s.mkdir("/dx/y")), vec![ev(c0, "/dx/y", "tok")]);
    assert_eq!(events(&s.mkdir("/dx/y")), vec![]);
    assert_eq!(
        events(&s.set_perms("/dx", &[Perm::new(3, Access::Read)])),
        vec![ev(c0, "/dx", "tok")]
    );
    assert_eq!(s.get_perms("/dx"), Some(vec![Perm::new(3, Access::Read)]));
    // Nodes created by dom0 keep the parent's owner.
    s.write("/dx/z", b"");
    assert_eq!(s.get_perms("/dx/z"), Some(vec![Perm::new(3, Access::Read)]));
    assert_eq!(events(&s.rm("/dx")), vec![ev(c0, "/dx", "tok")]);
    assert_eq!(s.read("/dx"), None);
    // Relative paths are dom0's.
    s.write("/local/domain/0/rel", b"r");
    assert_eq!(s.read("rel"), Some(b"r".to_vec()));
    assert_eq!(s.try_write("/a.b", b""), Err(XsError::EINVAL));
    assert_eq!(s.try_write("@x", b""), Err(XsError::EINVAL));
    assert_eq!(s.try_rm("/"), Err(XsError::EINVAL));
    assert_eq!(s.try_rm("/zz/yy"), Err(XsError::ENOENT));
    assert_eq!(s.try_rm("/zz"), Ok(vec![]));
    assert_eq!(
        s.try_set_perms("/nonexistent", &[Perm::new(0, Access::None)]),
        Err(XsError::ENOENT)
    );
    assert_eq!(s.try_set_perms("/", &[]), Err(XsError::EINVAL));
    assert_eq!(s.try_mkdir("/a//b"), Err(XsError::EINVAL));
    assert_eq!(s.conn_domain(c0), Some(0));
    s.disconnect(c0);
    assert_eq!(s.conn_domain(c0), None);
    assert_eq!(s.write("/dx", b"2"), vec![]);
    s.check_tree().unwrap();
}

// ---------------------------------------------------------------- READ / WRITE / paths

#[test]
fn write_read_relative() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    let c1 = t.s.connect(1);
    t.write(c1, 0, "foo", "bar").unwrap();
    assert_eq!(t.read(c0, 0, "/local/domain/1/foo"), Ok("bar".into()));
    assert_eq!(t.read(c1, 0, "foo"), Ok("bar".into()));
    assert_eq!(t.read(c1, 0, "/local/domain/1/foo"), Ok("bar".into()));
    // dom0's relative paths are under /local/domain/0 (missing: ENOENT, /local/domain is
    // readable to dom0).
    assert_eq!(t.read(c0, 0, "foo"), Err(e(XsError::ENOENT)));
    // Values are binary and need no NUL.
    t.ok(c1, t::WRITE, b"bin\0a\0b");
    assert_eq!(t.call(c1, t::READ, b"bin\0"), Ok(b"a\0b".to_vec()));
    t.ok(c1, t::WRITE, b"empty\0");
    assert_eq!(t.call(c1, t::READ, b"empty\0"), Ok(vec![]));
    // Overwrite keeps permissions.
    t.ok(
        c0,
        t::SET_PERMS,
        &args(&["/local/domain/1/foo", "n1", "r2"]),
    );
    t.write(c1, 0, "foo", "baz").unwrap();
    assert_eq!(t.perms(c0, "/local/domain/1/foo"), Ok("n1 r2 ".into()));
    assert_eq!(t.read(c0, 0, "/local/domain/1/foo"), Ok("baz".into()));
    // Malformed WRITE.
    assert_eq!(t.err(c1, t::WRITE, b""), "EINVAL");
    assert_eq!(t.err(c1, t::WRITE, b"foo"), "EINVAL");
    // Malformed READ: one string, NUL at the end.
    assert_eq!(t.err(c1, t::READ, b"foo"), "EINVAL");
    assert_eq!(t.err(c1, t::READ, b"foo\0\0"), "EINVAL");
    assert_eq!(t.err(c1, t::READ, b""), "EINVAL");
    t.s.check_tree().unwrap();
}

#[test]
fn path_validation() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    let c1 = t.s.connect(1);
    for bad in [
        "/a.b", "/a b", "/a//b", "/a/", "", "@foo", "/a\u{e9}", "a/", "//",
    ] {
        assert_eq!(t.read(c0, 0, bad), Err(e(XsError::EINVAL)), "{bad:?}");
    }
    assert_eq!(t.read(c0, 0, "/"), Ok(String::new()));
    assert_eq!(t.read(c0, 0, "/A-z_0@9"), Err(e(XsError::ENOENT)));
    // Absolute limit (everybody).
    let p = format!("/{}", "a".repeat(ABS_PATH_MAX - 1));
    assert_eq!(t.read(c0, 0, &p), Err(e(XsError::ENOENT)));
    let p = format!("/{}", "a".repeat(ABS_PATH_MAX));
    assert_eq!(t.read(c0, 0, &p), Err(e(XsError::EINVAL)));
    // Relative limit (unprivileged): the part after /local/domain/<id>/.
    assert_eq!(t.read(c1, 0, &"x".repeat(2048)), Err(e(XsError::ENOENT)));
    assert_eq!(t.read(c1, 0, &"x".repeat(2049)), Err(e(XsError::EINVAL)));
    assert_eq!(
        t.read(c1, 0, &format!("/local/domain/2/{}", "x".repeat(2048))),
        Err(e(XsError::EACCES))
    );
    assert_eq!(
        t.read(c1, 0, &format!("/local/domain/2/{}", "x".repeat(2049))),
        Err(e(XsError::EINVAL))
    );
    // Outside /local/domain/<id>/ the whole path counts.
    assert_eq!(
        t.read(c1, 0, &format!("/{}", "a".repeat(2047))),
        Err(e(XsError::EACCES))
    );
    assert_eq!(
        t.read(c1, 0, &format!("/{}", "a".repeat(2048))),
        Err(e(XsError::EINVAL))
    );
    // dom0 has no relative limit.
    assert_eq!(
        t.read(c0, 0, &format!("/local/domain/1/{}", "x".repeat(2049))),
        Err(e(XsError::ENOENT))
    );
}

#[test]
fn write_creates_parents_and_inherits_perms() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    let c1 = t.s.connect(1);
    let c2 = t.s.connect(2);
    t.write(c1, 0, "a/b/c", "1").unwrap();
    for p in ["a", "a/b", "a/b/c"] {
        assert_eq!(t.perms(c1, p), Ok("n1 ".into()));
    }
    assert_eq!(t.call(c1, t::DIRECTORY, b"a\0"), Ok(b"b\0".to_vec()));
    // A dom0-owned directory readable by dom1: dom1 cannot create inside it.
    t.ok(c0, t::MKDIR, &args(&["/local/domain/1/ro"]));
    t.ok(c0, t::SET_PERMS, &args(&["/local/domain/1/ro", "n0", "r1"]));
    assert_eq!(t.write(c1, 0, "ro/x", ""), Err(e(XsError::EACCES)));
    assert_eq!(t.write(c1, 0, "ro/x/y", ""), Err(e(XsError::EACCES)));
    // dom0 creating keeps the parent's owner.
    t.write(c0, 0, "/local/domain/1/ro/k", "").unwrap();
    assert_eq!(t.perms(c0, "/local/domain/1/ro/k"), Ok("n0 r1 ".into()));
    t.write(c0, 0, "/local/domain/1/x", "").unwrap();
    assert_eq!(t.perms(c0, "/local/domain/1/x"), Ok("n1 ".into()));
    // A writable dom0-owned directory: the guest owns what it creates, ACL kept.
    t.ok(c0, t::MKDIR, &args(&["/local/domain/1/rw"]));
    t.ok(
        c0,
        t::SET_PERMS,
        &args(&["/local/domain/1/rw", "n0", "b1", "r2"]),
    );
    t.write(c1, 0, "rw/new/deep", "v").unwrap();
    assert_eq!(t.perms(c1, "rw/new"), Ok("n1 b1 r2 ".into()));
    assert_eq!(t.perms(c1, "rw/new/deep"), Ok("n1 b1 r2 ".into()));
    assert_eq!(t.read(c2, 0, "/local/domain/1/rw/new/deep"), Ok("v".into()));
    t.s.check_tree().unwrap();
}

#[test]
fn permission_rules() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    let c1 = t.s.connect(1);
    let c2 = t.s.connect(2);
    let c3 = t.s.connect(3);
    t.ok(
        c0,
        t::SET_PERMS,
        &args(&["/local/domain/1", "n1", "r2", "r3"]),
    );
    t.write(c0, 0, "/local/domain/1/acl", "v").unwrap();
    // Default "r" for others, write-only dom1, nothing for dom2.
    t.ok(
        c0,
        t::SET_PERMS,
        &args(&["/local/domain/1/acl", "r0", "w1", "n2"]),
    );
    assert_eq!(t.read(c3, 0, "/local/domain/1/acl"), Ok("v".into()));
    assert_eq!(
        t.write(c3, 0, "/local/domain/1/acl", "x"),
        Err(e(XsError::EACCES))
    );
    assert_eq!(t.read(c1, 0, "acl"), Err(e(XsError::EACCES)));
    t.write(c1, 0, "acl", "w").unwrap();
    assert_eq!(
        t.read(c2, 0, "/local/domain/1/acl"),
        Err(e(XsError::EACCES))
    );
    assert_eq!(t.read(c0, 0, "/local/domain/1/acl"), Ok("w".into()));
    // The first matching ACL entry wins.
    t.ok(
        c0,
        t::SET_PERMS,
        &args(&["/local/domain/1/acl", "n0", "r2", "b2"]),
    );
    assert_eq!(t.read(c2, 0, "/local/domain/1/acl"), Ok("w".into()));
    assert_eq!(
        t.write(c2, 0, "/local/domain/1/acl", "x"),
        Err(e(XsError::EACCES))
    );
    // The owner has everything whatever the letters say.
    t.ok(c0, t::SET_PERMS, &args(&["/local/domain/1/acl", "n2"]));
    t.write(c2, 0, "/local/domain/1/acl", "mine").unwrap();
    assert_eq!(t.read(c2, 0, "/local/domain/1/acl"), Ok("mine".into()));
    // Missing nodes: ENOENT if the nearest existing ancestor grants the access, else EACCES.
    t.ok(c0, t::SET_PERMS, &args(&["/local/domain/1", "n1"]));
    assert_eq!(
        t.read(c2, 0, "/local/domain/1/none"),
        Err(e(XsError::EACCES))
    );
    assert_eq!(
        t.read(c2, 0, "/local/domain/1/none/deeper"),
        Err(e(XsError::EACCES))
    );
    assert_eq!(t.read(c1, 0, "none/deeper"), Err(e(XsError::ENOENT)));
    assert_eq!(t.read(c2, 0, "/nonexistent"), Err(e(XsError::EACCES)));
    assert_eq!(t.read(c0, 0, "/nonexistent"), Err(e(XsError::ENOENT)));
}

#[test]
fn guest_cannot_read_root_or_tool() {
    let mut t = T::new();
    let c1 = t.s.connect(1);
    assert_eq!(t.read(c1, 0, "/"), Err(e(XsError::EACCES)));
    assert_eq!(
        t.call(c1, t::DIRECTORY, b"/tool\0"),
        Err(e(XsError::EACCES))
    );
    assert_eq!(
        t.call(c1, t::DIRECTORY, b"/local/domain\0"),
        Err(e(XsError::EACCES))
    );
    assert_eq!(t.write(c1, 0, "/evil", ""), Err(e(XsError::EACCES)));
    assert_eq!(
        t.write(c1, 0, "/local/domain/2/evil", ""),
        Err(e(XsError::EACCES))
    );
}

// ---------------------------------------------------------------- DIRECTORY(_PART)

#[test]
fn directory() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    let c1 = t.s.connect(1);
    for c in ["a", "b", "c"] {
        t.write(c0, 0, &format!("/d/{c}"), "").unwrap();
    }
    assert_eq!(t.call(c0, t::DIRECTORY, b"/d\0"), Ok(b"a\0b\0c\0".to_vec()));
    assert_eq!(t.call(c0, t::DIRECTORY, b"/d/a\0"), Ok(vec![]));
    assert_eq!(
        t.call(c0, t::DIRECTORY, b"/d/zz\0"),
        Err(e(XsError::ENOENT))
    );
    assert_eq!(t.call(c1, t::DIRECTORY, b"/d\0"), Err(e(XsError::EACCES)));
    assert_eq!(t.call(c0, t::DIRECTORY, b"/d"), Err(e(XsError::EINVAL)));
    // Removal keeps order.
    t.ok(c0, t::RM, b"/d/b\0");
    assert_eq!(t.call(c0, t::DIRECTORY, b"/d\0"), Ok(b"a\0c\0".to_vec()));
    // A listing over XENSTORE_PAYLOAD_MAX is E2BIG.
    for i in 0..40 {
        t.ok(
            c0,
            t::MKDIR,
            &args(&[&format!("/big/n{i:03}{}", "x".repeat(96))]),
        );
    }
    assert_eq!(
        t.call(c0, t::DIRECTORY, b"/big\0").map(|v| v.len()),
        Ok(4040)
    );
    t.ok(
        c0,
        t::MKDIR,
        &args(&[&format!("/big/n040{}", "x".repeat(96))]),
    );
    assert_eq!(t.call(c0, t::DIRECTORY, b"/big\0"), Err(e(XsError::E2BIG)));
}

fn dir_part(t: &mut T, c: ConnId, path: &str, off: &str) -> Result<(u64, Vec<u8>), String> {
    let r = t.call(c, t::DIRECTORY_PART, &args(&[path, off]))?;
    assert!(r.len() <= Msg::MAX_PAYLOAD);
    let n = r.iter().position(|&b| b == 0).unwrap();
    Ok((
        std::str::from_utf8(&r[..n]).unwrap().parse().unwrap(),
        r[n + 1..].to_vec(),
    ))
}

#[test]
fn directory_part() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    let c1 = t.s.connect(1);
    for c in ["a", "b", "c"] {
        t.write(c0, 0, &format!("/d/{c}"), "").unwrap();
    }
    let (g, body) = dir_part(&mut t, c0, "/d", "0").unwrap();
    assert_eq!(g, t.s.nodes["/d"].generation);
    assert_eq!(body, b"a\0b\0c\0\0");
    assert_eq!(dir_part(&mut t, c0, "/d", "2").unwrap().1, b"b\0c\0\0");
    assert_eq!(dir_part(&mut t, c0, "/d", "6").unwrap().1, b"\0");
    assert_eq!(dir_part(&mut t, c0, "/d", "100").unwrap().1, b"\0");
    assert_eq!(dir_part(&mut t, c0, "/d", "-1").unwrap().1, b"\0");
    assert_eq!(dir_part(&mut t, c0, "/d/a", "0").unwrap().1, b"\0");
    // The generation changes with the children.
    t.write(c0, 0, "/d/e", "").unwrap();
    let (g2, body) = dir_part(&mut t, c0, "/d", "0").unwrap();
    assert!(g2 > g);
    assert_eq!(body, b"a\0b\0c\0e\0\0");
    // Exactly two strings.
    assert_eq!(
        t.call(c0, t::DIRECTORY_PART, b"/d\0"),
        Err(e(XsError::EINVAL))
    );
    assert_eq!(
        t.call(c0, t::DIRECTORY_PART, b"/d\x000"),
        Err(e(XsError::EINVAL))
    );
    assert_eq!(
        t.call(c0, t::DIRECTORY_PART, &args(&["/d", "0", "x"])),
        Err(e(XsError::EINVAL))
    );
    assert_eq!(dir_part(&mut t, c1, "/d", "0"), Err(e(XsError::EACCES)));
    assert_eq!(dir_part(&mut t, c0, "/nope", "0"), Err(e(XsError::ENOENT)));
    // A long list comes in pieces that fit and reassemble to DIRECTORY's answer.
    let mut full = Vec::new();
    for i in 0..80 {
        let name = format!("n{i:03}{}", "x".repeat(60 + i));
        t.ok(c0, t::MKDIR, &args(&[&format!("/big/{name}")]));
        full.extend_from_slice(name.as_bytes());
        full.push(0);
    }
    let mut got = Vec::new();
    let mut pieces = 0;
    loop {
        let (_, body) = dir_part(&mut t, c0, "/big", &got.len().to_string()).unwrap();
        pieces += 1;
        if body.ends_with(b"\0\0") || body == b"\0" {
            got.extend_from_slice(&body[..body.len() - 1]);
            break;
        }
        assert!(!body.is_empty());
        got.extend_from_slice(&body);
    }
    assert_eq!(got, full);
    assert!(pieces >= 2);
}

// ---------------------------------------------------------------- GET_PERMS / SET_PERMS

#[test]
fn get_set_perms() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    let c1 = t.s.connect(1);
    let c2 = t.s.connect(2);
    t.ok(c0, t::MKDIR, b"/p\0");
    assert_eq!(t.call(c0, t::GET_PERMS, b"/p\0"), Ok(b"n0\0".to_vec()));
    t.ok(c0, t::SET_PERMS, &args(&["/p", "n0", "r1", "w2"]));
    assert_eq!(
        t.call(c0, t::GET_PERMS, b"/p\0"),
        Ok(b"n0\0r1\0w2\0".to_vec())
    );
    // strtol(.., 0) ids; "%i" output.
    t.ok(c0, t::SET_PERMS, &args(&["/p", "r0x1"]));
    assert_eq!(t.perms(c0, "/p"), Ok("r1 ".into()));
    t.ok(c0, t::SET_PERMS, &args(&["/p", "b010"]));
    assert_eq!(t.perms(c0, "/p"), Ok("b8 ".into()));
    t.ok(c0, t::SET_PERMS, &args(&["/p", "n-1"]));
    assert_eq!(t.perms(c0, "/p"), Ok("n-1 ".into()));
    for bad in [
        &args(&["/p", "x1"])[..],
        &args(&["/p", "r"]),
        &args(&["/p", "r1x"]),
        &args(&["/p", ""]),
        b"/p\0",
        b"/p\0r1",
        b"",
    ] {
        assert_eq!(
            t.err(c0, t::SET_PERMS, bad),
            "EINVAL",
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(t.err(c0, t::SET_PERMS, &args(&["/nope", "n0"])), "ENOENT");
    assert_eq!(t.err(c0, t::SET_PERMS, &args(&["/a..b", "n0"])), "EINVAL");
    assert_eq!(t.err(c0, t::GET_PERMS, b"/nope\0"), "ENOENT");
    assert_eq!(t.err(c0, t::GET_PERMS, b"/p"), "EINVAL");
    // Special nodes.
    t.ok(c0, t::SET_PERMS, &args(&["@releaseDomain", "n0", "r1"]));
    assert_eq!(t.perms(c0, "@releaseDomain"), Ok("n0 r1 ".into()));
    assert_eq!(t.perms(c1, "@releaseDomain"), Ok("n0 r1 ".into()));
    assert_eq!(t.perms(c2, "@releaseDomain"), Err(e(XsError::EACCES)));
    assert_eq!(t.perms(c0, "@other"), Err(e(XsError::ENOENT)));
    // A guest's own node.
    t.write(c1, 0, "g", "").unwrap();
    assert_eq!(t.perms(c1, "g"), Ok("n1 ".into()));
    t.ok(c1, t::SET_PERMS, &args(&["g", "n1", "r2"]));
    assert_eq!(t.perms(c2, "/local/domain/1/g"), Ok("n1 r2 ".into()));
    // The guest may not give it away; others may not touch it.
    assert_eq!(t.err(c1, t::SET_PERMS, &args(&["g", "n2"])), "EPERM");
    assert_eq!(
        t.err(c2, t::SET_PERMS, &args(&["/local/domain/1/g", "n1"])),
        "EACCES"
    );
    assert_eq!(
        t.err(c2, t::SET_PERMS, &args(&["/local/domain/1/none", "n1"])),
        "EACCES"
    );
    assert_eq!(
        t.err(c1, t::SET_PERMS, &args(&["/local/domain", "n1"])),
        "EACCES"
    );
    // Write access is not enough: ownership is needed.
    t.ok(c0, t::SET_PERMS, &args(&["/local/domain/1/g", "n0", "b1"]));
    assert_eq!(t.err(c1, t::SET_PERMS, &args(&["g", "n0", "b1"])), "EACCES");
    t.ok(c0, t::SET_PERMS, &args(&["/local/domain/1/g", "n1"]));
    // At most 5 entries from a guest; dom0 unlimited.
    assert_eq!(
        t.err(
            c1,
            t::SET_PERMS,
            &args(&["g", "n1", "r2", "r3", "r4", "r5", "r6"])
        ),
        "ENOSPC"
    );
    t.ok(
        c1,
        t::SET_PERMS,
        &args(&["g", "n1", "r2", "r3", "r4", "r5"]),
    );
    t.ok(
        c0,
        t::SET_PERMS,
        &args(&[
            "/local/domain/1/g",
            "n1",
            "r2",
            "r3",
            "r4",
            "r5",
            "r6",
            "r7",
        ]),
    );
    // dom0 may change the owner; the old owner loses its rights.
    t.ok(c0, t::SET_PERMS, &args(&["/local/domain/1/g", "n2"]));
    assert_eq!(t.write(c1, 0, "g", "x"), Err(e(XsError::EACCES)));
    t.write(c2, 0, "/local/domain/1/g", "x").unwrap();
    t.s.check_tree().unwrap();
}

#[test]
fn acl_entries_of_released_domains_are_ignored() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    t.write(c0, 0, "/shared", "s").unwrap();
    t.ok(c0, t::SET_PERMS, &args(&["/shared", "n0", "r5"]));
    t.s.introduce(5);
    let c5 = t.s.connect(5);
    assert_eq!(t.read(c5, 0, "/shared"), Ok("s".into()));
    t.ok(c0, t::RELEASE, b"5\0");
    assert_eq!(t.read(c5, 0, "/shared"), Err(e(XsError::EACCES)));
    // Rewritten while the domain is gone: the entry stays ignored for a new domain 5.
    t.write(c0, 0, "/shared", "t").unwrap();
    t.s.introduce(5);
    assert_eq!(t.read(c5, 0, "/shared"), Err(e(XsError::EACCES)));
    assert_eq!(t.perms(c0, "/shared"), Ok("n0 r5 ".into()));
    // Setting the permissions again makes it count.
    t.ok(c0, t::SET_PERMS, &args(&["/shared", "n0", "r5"]));
    assert_eq!(t.read(c5, 0, "/shared"), Ok("t".into()));
}

// ---------------------------------------------------------------- MKDIR / RM

#[test]
fn mkdir() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    let c2 = t.s.connect(2);
    t.watch(c0, "/m", "w");
    assert_eq!(t.ok(c0, t::MKDIR, b"/m/n\0"), vec![ev(c0, "/m/n", "w")]);
    assert_eq!(t.read(c0, 0, "/m"), Ok(String::new()));
    assert_eq!(t.ok(c0, t::MKDIR, b"/m/n\0"), vec![]);
    t.write(c0, 0, "/m/n", "keep").unwrap();
    t.ok(c0, t::MKDIR, b"/m/n\0");
    assert_eq!(t.read(c0, 0, "/m/n"), Ok("keep".into()));
    assert_eq!(t.err(c2, t::MKDIR, b"/local/domain/1/x\0"), "EACCES");
    assert_eq!(t.err(c0, t::MKDIR, b"/m/n"), "EINVAL");
    assert_eq!(t.err(c0, t::MKDIR, b"/m/\0"), "EINVAL");
    assert_eq!(t.err(c0, t::MKDIR, b"@m\0"), "EINVAL");
    let c1 = t.s.connect(1);
    t.ok(c1, t::MKDIR, b"dir\0");
    assert_eq!(t.perms(c1, "dir"), Ok("n1 ".into()));
}

#[test]
fn rm() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    let c1 = t.s.connect(1);
    let c2 = t.s.connect(2);
    t.write(c0, 0, "/r/a/b", "1").unwrap();
    t.write(c0, 0, "/r/a/c", "2").unwrap();
    t.ok(c0, t::RM, b"/r/a\0");
    assert_eq!(t.read(c0, 0, "/r/a"), Err(e(XsError::ENOENT)));
    assert_eq!(t.read(c0, 0, "/r/a/b"), Err(e(XsError::ENOENT)));
    assert_eq!(t.call(c0, t::DIRECTORY, b"/r\0"), Ok(vec![]));
    t.ok(c0, t::RM, b"/r/nothing\0");
    assert_eq!(t.err(c0, t::RM, b"/r/x/y\0"), "ENOENT");
    assert_eq!(t.err(c0, t::RM, b"/\0"), "EINVAL");
    assert_eq!(t.err(c0, t::RM, b"@introduceDomain\0"), "EINVAL");
    assert_eq!(t.err(c0, t::RM, b"/r"), "EINVAL");
    t.write(c1, 0, "mine", "").unwrap();
    assert_eq!(t.err(c2, t::RM, b"/local/domain/1/mine\0"), "EACCES");
    assert_eq!(t.err(c2, t::RM, b"/local/domain/1/none\0"), "EACCES");
    // Only the removed node's permission counts, not its descendants'.
    t.write(c0, 0, "/local/domain/1/sub/x", "").unwrap();
    t.ok(c0, t::SET_PERMS, &args(&["/local/domain/1/sub/x", "n0"]));
    assert_eq!(
        t.s.owned.get(&0).copied(),
        Some(t.s.nodes.values().filter(|n| n.owner() == 0).count() as u32)
    );
    let dom0_nodes = t.s.owned[&0];
    t.ok(c1, t::RM, b"sub\0");
    assert_eq!(t.s.owned[&0], dom0_nodes - 1);
    // A guest may remove its own home (the parent is written without a permission check).
    t.ok(c1, t::RM, b"/local/domain/1\0");
    assert_eq!(t.read(c0, 0, "/local/domain/1"), Err(e(XsError::ENOENT)));
    assert_eq!(t.err(c1, t::RM, b"/local/domain/1\0"), "EACCES");
    t.s.check_tree().unwrap();
}

// ---------------------------------------------------------------- watches

#[test]
fn watches_basic() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    let c1 = t.s.connect(1);
    // Fires once at once, with the path as registered (relative here).
    assert_eq!(t.watch(c1, "w", "tok"), vec![ev(c1, "w", "tok")]);
    assert_eq!(
        t.write(c1, 0, "w/x", "1").unwrap(),
        vec![ev(c1, "w/x", "tok")]
    );
    assert_eq!(
        t.write(c0, 0, "/local/domain/1/w", "").unwrap(),
        vec![ev(c1, "w", "tok")]
    );
    assert_eq!(t.write(c1, 0, "other", "").unwrap(), vec![]);
    assert_eq!(
        t.watch(c0, "/local/domain/1", "T"),
        vec![ev(c0, "/local/domain/1", "T")]
    );
    let mut got = t.write(c1, 0, "w/y", "").unwrap();
    got.sort();
    assert_eq!(
        got,
        vec![ev(c0, "/local/domain/1/w/y", "T"), ev(c1, "w/y", "tok")]
    );
    // Duplicates (compared on the absolute path), other tokens, tx_id ignored.
    assert_eq!(t.err(c1, t::WATCH, &args(&["w", "tok"])), "EEXIST");
    assert_eq!(
        t.err(c1, t::WATCH, &args(&["/local/domain/1/w", "tok"])),
        "EEXIST"
    );
    let (r, evs) = t.rq(c1, t::WATCH, 9999, &args(&["w", "tok2"]));
    assert_eq!(r, Ok(b"OK\0".to_vec()));
    assert_eq!(evs, vec![ev(c1, "w", "tok2")]);
    // Watching a node that does not exist (or cannot be read) is fine.
    assert_eq!(
        t.watch(c1, "/local/domain/2/none", "n"),
        vec![ev(c1, "/local/domain/2/none", "n")]
    );
    // UNWATCH matches the canonical path and token.
    t.ok(c1, t::UNWATCH, &args(&["w", "tok"]));
    assert_eq!(t.err(c1, t::UNWATCH, &args(&["w", "tok"])), "ENOENT");
    t.ok(c1, t::UNWATCH, &args(&["/local/domain/1/w", "tok2"]));
    assert_eq!(
        t.write(c1, 0, "w/z", "").unwrap(),
        vec![ev(c0, "/local/domain/1/w/z", "T")]
    );
    // Exactly two strings, a valid path.
    assert_eq!(t.err(c1, t::WATCH, b"w\0"), "EINVAL");
    assert_eq!(t.err(c1, t::WATCH, b"w\0t\0\0"), "EINVAL");
    assert_eq!(t.err(c1, t::WATCH, b"w.x\0t\0"), "EINVAL");
    assert_eq!(t.err(c1, t::UNWATCH, b"w\0"), "EINVAL");
    assert_eq!(t.err(c1, t::UNWATCH, b"w/\0t\0"), "EINVAL");
    let (r, evs) = t.rq(c1, t::WATCH, 0, b"w2\0t\0junk");
    assert_eq!((r, evs), (Ok(b"OK\0".to_vec()), vec![ev(c1, "w2", "t")]));
    // RESET_WATCHES.
    t.ok(c0, t::RESET_WATCHES, b"");
    assert_eq!(t.write(c1, 0, "w/q", "").unwrap(), vec![]);
    assert_eq!(
        t.err(c0, t::UNWATCH, &args(&["/local/domain/1", "T"])),
        "ENOENT"
    );
}

#[test]
fn watch_on_root_and_event_rules() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    t.watch(c0, "/", "r");
    assert_eq!(
        t.write(c0, 0, "/np/a/b", "").unwrap(),
        vec![ev(c0, "/np/a/b", "r")]
    );
    // Identical events produced by one request are sent once.
    t.ok(c0, t::RESET_WATCHES, b"");
    t.watch(c0, "/dd", "T");
    t.watch(c0, "/dd/e", "T");
    assert_eq!(
        t.write(c0, 0, "/dd/e", "").unwrap(),
        vec![ev(c0, "/dd/e", "T")]
    );
    // Events longer than XENSTORE_PAYLOAD_MAX are dropped.
    let tok = "k".repeat(4090);
    assert_eq!(t.watch(c0, "/ee", &tok), vec![ev(c0, "/ee", &tok)]);
    assert_eq!(
        t.write(c0, 0, "/ee", "").unwrap(),
        vec![ev(c0, "/ee", &tok)]
    );
    assert_eq!(t.write(c0, 0, "/ee/abcdef", "").unwrap(), vec![]);
    // A watch on "/a" does not match "/ab".
    t.watch(c0, "/a", "A");
    assert_eq!(t.write(c0, 0, "/ab", "").unwrap(), vec![]);
    // Set-perms fires.
    t.write(c0, 0, "/a", "").unwrap();
    assert_eq!(
        t.ok(c0, t::SET_PERMS, &args(&["/a", "n0", "r1"])),
        vec![ev(c0, "/a", "A")]
    );
}

#[test]
fn watch_rm_subtree() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    t.write(c0, 0, "/s/a/b", "").unwrap();
    t.write(c0, 0, "/s/a/c", "").unwrap();
    t.watch(c0, "/s", "T1");
    t.watch(c0, "/s/a/b", "T2");
    t.watch(c0, "/s/a/x", "T3");
    t.watch(c0, "/s/a", "T4");
    // Descendants fire watches set exactly on them; the removed node fires watches on
    // itself and its ancestors.
    assert_eq!(
        t.ok(c0, t::RM, b"/s/a\0"),
        vec![
            ev(c0, "/s/a/b", "T2"),
            ev(c0, "/s/a", "T1"),
            ev(c0, "/s/a", "T4")
        ]
    );
    // Relative watches report relative paths on removal too.
    let c1 = t.s.connect(1);
    t.write(c1, 0, "dev/vif/0/state", "4").unwrap();
    t.watch(c1, "dev/vif/0/state", "st");
    t.watch(c1, "dev", "d");
    assert_eq!(
        t.ok(c1, t::RM, b"dev/vif\0"),
        vec![ev(c1, "dev/vif/0/state", "st"), ev(c1, "dev/vif", "d")]
    );
}

#[test]
fn watch_permissions() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    let c1 = t.s.connect(1);
    let c2 = t.s.connect(2);
    // The initial event needs no permission.
    assert_eq!(
        t.watch(c2, "/local/domain/1", "t"),
        vec![ev(c2, "/local/domain/1", "t")]
    );
    // Neither the node nor its parent readable by dom2: nothing.
    assert_eq!(t.write(c1, 0, "secret", "").unwrap(), vec![]);
    // Permission change: the new permissions make it readable.
    assert_eq!(
        t.ok(c0, t::SET_PERMS, &args(&["/local/domain/1", "n1", "r2"])),
        vec![ev(c2, "/local/domain/1", "t")]
    );
    // The child inherits the readable permissions.
    assert_eq!(
        t.write(c1, 0, "hidden", "").unwrap(),
        vec![ev(c2, "/local/domain/1/hidden", "t")]
    );
    // The old permissions count for a permission change.
    assert_eq!(
        t.ok(c1, t::SET_PERMS, &args(&["hidden", "n1"])),
        vec![ev(c2, "/local/domain/1/hidden", "t")]
    );
    // An unreadable node whose parent is readable: the event is sent.
    assert_eq!(
        t.write(c1, 0, "hidden", "x").unwrap(),
        vec![ev(c2, "/local/domain/1/hidden", "t")]
    );
    // Node and parent unreadable: no event.
    t.write(c1, 0, "priv", "").unwrap();
    t.ok(c1, t::SET_PERMS, &args(&["priv", "n1"]));
    assert_eq!(t.write(c1, 0, "priv/x", "").unwrap(), vec![]);
    // Removal: readable nodes fire, unreadable ones under unreadable parents do not.
    assert_eq!(
        t.ok(c1, t::RM, b"priv\0"),
        vec![ev(c2, "/local/domain/1/priv", "t")]
    );
    // dom0 sees everything.
    t.watch(c0, "/local/domain/1", "z");
    t.write(c1, 0, "priv2", "").unwrap();
    t.ok(c1, t::SET_PERMS, &args(&["priv2", "n1"]));
    assert_eq!(
        t.write(c1, 0, "priv2/x", "").unwrap(),
        vec![ev(c0, "/local/domain/1/priv2/x", "z")]
    );
}

#[test]
fn special_watches() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    let c1 = t.s.connect(1);
    assert_eq!(
        t.watch(c0, "@introduceDomain", "i"),
        vec![ev(c0, "@introduceDomain", "i")]
    );
    assert_eq!(
        t.watch(c1, "@introduceDomain", "g"),
        vec![ev(c1, "@introduceDomain", "g")]
    );
    t.watch(c0, "/", "root");
    // Only readers of the special node (or "/") hear it; "/" watches do not match.
    assert_eq!(
        events(&t.s.introduce(5)),
        vec![ev(c0, "@introduceDomain", "i")]
    );
    assert_eq!(events(&t.s.introduce(5)), vec![]);
    assert_eq!(
        t.watch(c0, "@releaseDomain", "r"),
        vec![ev(c0, "@releaseDomain", "r")]
    );
    t.watch(c1, "@releaseDomain", "g");
    assert_eq!(events(&t.s.release(5)), vec![ev(c0, "@releaseDomain", "r")]);
    assert_eq!(events(&t.s.release(5)), vec![]);
    // Giving dom1 read access to the special node lets it hear.
    t.ok(c0, t::SET_PERMS, &args(&["@releaseDomain", "n0", "r1"]));
    t.s.introduce(6);
    let mut got = events(&t.s.release(6));
    got.sort();
    assert_eq!(
        got,
        vec![ev(c0, "@releaseDomain", "r"), ev(c1, "@releaseDomain", "g")]
    );
    // The INTRODUCE message.
    let (r, evs) = t.rq(c0, t::INTRODUCE, 0, &args(&["7", "1234", "3"]));
    assert_eq!(r, Ok(b"OK\0".to_vec()));
    assert_eq!(evs, vec![ev(c0, "@introduceDomain", "i")]);
    assert_eq!(t.s.ring_info(7), Some((1234, 3)));
    assert_eq!(
        t.call(c0, t::IS_DOMAIN_INTRODUCED, b"7\0"),
        Ok(b"T\0".to_vec())
    );
    // Re-introducing rebinds the port, fires nothing, resets the domain's connections.
    let c7 = t.s.connect(7);
    t.watch(c7, "x", "y");
    let tx = t.start(c7);
    let (r, evs) = t.rq(c0, t::INTRODUCE, 0, &args(&["7", "1234", "9"]));
    assert_eq!((r, evs), (Ok(b"OK\0".to_vec()), vec![]));
    assert_eq!(t.s.ring_info(7), Some((1234, 9)));
    assert!(t.s.conns[&c7].watches.is_empty());
    assert_eq!(t.call_tx(c7, t::READ, tx, b"x\0"), Err(e(XsError::ENOENT)));
}

// ---------------------------------------------------------------- transactions

#[test]
fn transactions_basic() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    let c1 = t.s.connect(1);
    let t1 = t.start(c1);
    let t2 = t.start(c1);
    assert_eq!((t1, t2), (1, 2));
    t.watch(c0, "/local/domain/1", "w");
    // Private view; no events before the commit.
    assert_eq!(t.write(c1, t1, "t/a", "1").unwrap(), vec![]);
    assert_eq!(t.read(c1, 0, "t/a"), Err(e(XsError::ENOENT)));
    assert_eq!(
        t.read(c0, 0, "/local/domain/1/t/a"),
        Err(e(XsError::ENOENT))
    );
    assert_eq!(t.read(c1, t1, "t/a"), Ok("1".into()));
    assert_eq!(t.read(c1, t2, "t/a"), Err(e(XsError::ENOENT)));
    assert_eq!(t.call_tx(c1, t::DIRECTORY, t1, b"t\0"), Ok(b"a\0".to_vec()));
    let (r, evs) = t.end(c1, t1, true);
    assert_eq!(r, Ok(b"OK\0".to_vec()));
    assert_eq!(evs, vec![ev(c0, "/local/domain/1/t/a", "w")]);
    assert_eq!(t.read(c1, 0, "t/a"), Ok("1".into()));
    assert_eq!(t.perms(c1, "t/a"), Ok("n1 ".into()));
    // Abort.
    t.write(c1, t2, "t/b", "2").unwrap();
    assert_eq!(t.end(c1, t2, false), (Ok(b"OK\0".to_vec()), vec![]));
    assert_eq!(t.read(c1, 0, "t/b"), Err(e(XsError::ENOENT)));
    // Gone after END.
    assert_eq!(t.end(c1, t2, true).0, Err(e(XsError::ENOENT)));
    assert_eq!(t.read(c1, t2, "t/a"), Err(e(XsError::ENOENT)));
    // END needs a transaction and "T" or "F".
    assert_eq!(t.end(c1, 0, true).0, Err(e(XsError::ENOENT)));
    let t3 = t.start(c1);
    assert_eq!(t3, 3);
    assert_eq!(
        t.call_tx(c1, t::TRANSACTION_END, t3, b"X\0"),
        Err(e(XsError::EINVAL))
    );
    assert_eq!(
        t.call_tx(c1, t::TRANSACTION_END, t3, b"T"),
        Err(e(XsError::EINVAL))
    );
    assert_eq!(t.read(c1, t3, "t/a"), Ok("1".into()));
    // No nesting; unknown ids; ids are per connection.
    assert_eq!(
        t.call_tx(c1, t::TRANSACTION_START, t3, b"\0"),
        Err(e(XsError::EBUSY))
    );
    assert_eq!(
        t.call_tx(c1, t::TRANSACTION_START, 77, b"\0"),
        Err(e(XsError::ENOENT))
    );
    assert_eq!(
        t.call_tx(c1, t::GET_DOMAIN_PATH, 77, b"1\0"),
        Err(e(XsError::ENOENT))
    );
    assert_eq!(
        t.read(c0, t3, "/local/domain/1/t/a"),
        Err(e(XsError::ENOENT))
    );
    assert_eq!(t.start(c0), 1);
    // RESET_WATCHES drops transactions too.
    t.ok(c1, t::RESET_WATCHES, b"");
    assert_eq!(t.read(c1, t3, "t/a"), Err(e(XsError::ENOENT)));
    // Disconnect drops them.
    let t4 = t.start(c1);
    t.write(c1, t4, "t/c", "").unwrap();
    t.s.disconnect(c1);
    assert_eq!(t.s.read("/local/domain/1/t/c"), None);
}

#[test]
fn transaction_conflicts() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    t.write(c0, 0, "/c/x", "0").unwrap();
    // A node read in the transaction changed: EAGAIN, nothing applied, transaction gone.
    let a = t.start(c0);
    assert_eq!(t.read(c0, a, "/c/x"), Ok("0".into()));
    t.write(c0, 0, "/c/x", "1").unwrap();
    t.write(c0, a, "/c/y", "").unwrap();
    assert_eq!(t.end(c0, a, true).0, Err(e(XsError::EAGAIN)));
    assert_eq!(t.read(c0, 0, "/c/y"), Err(e(XsError::ENOENT)));
    assert_eq!(t.end(c0, a, false).0, Err(e(XsError::ENOENT)));
    // An unrelated change does not conflict.
    let b = t.start(c0);
    assert_eq!(t.read(c0, b, "/c/x"), Ok("1".into()));
    t.write(c0, 0, "/other", "").unwrap();
    t.write(c0, b, "/c/x", "2").unwrap();
    assert_eq!(t.end(c0, b, true).0, Ok(b"OK\0".to_vec()));
    assert_eq!(t.read(c0, 0, "/c/x"), Ok("2".into()));
    // Creating a node reads its parent: a concurrent new sibling conflicts.
    let c = t.start(c0);
    t.write(c0, c, "/c/new1", "").unwrap();
    t.write(c0, 0, "/c/other", "").unwrap();
    assert_eq!(t.end(c0, c, true).0, Err(e(XsError::EAGAIN)));
    // A node seen missing and created meanwhile conflicts, even without writes.
    let d = t.start(c0);
    assert_eq!(t.read(c0, d, "/c/q"), Err(e(XsError::ENOENT)));
    t.write(c0, 0, "/c/q", "").unwrap();
    assert_eq!(t.end(c0, d, true).0, Err(e(XsError::EAGAIN)));
    // A transaction sees a node as of its first access (xenstored copies lazily).
    let f = t.start(c0);
    t.write(c0, 0, "/c/x", "5").unwrap();
    assert_eq!(t.read(c0, f, "/c/x"), Ok("5".into()));
    t.write(c0, f, "/c/x", "6").unwrap();
    assert_eq!(t.end(c0, f, true).0, Ok(b"OK\0".to_vec()));
    assert_eq!(t.read(c0, 0, "/c/x"), Ok("6".into()));
    // Two transactions writing the same node: the second to commit loses.
    let g = t.start(c0);
    let h = t.start(c0);
    t.write(c0, g, "/c/x", "g").unwrap();
    t.write(c0, h, "/c/x", "h").unwrap();
    assert_eq!(t.end(c0, g, true).0, Ok(b"OK\0".to_vec()));
    assert_eq!(t.end(c0, h, true).0, Err(e(XsError::EAGAIN)));
    assert_eq!(t.read(c0, 0, "/c/x"), Ok("g".into()));
    t.s.check_tree().unwrap();
}

#[test]
fn transaction_rm_set_perms_and_watches() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    t.write(c0, 0, "/tr/a/b", "").unwrap();
    t.write(c0, 0, "/tr/a/c", "").unwrap();
    t.watch(c0, "/tr", "W");
    t.watch(c0, "/tr/a/b", "B");
    let x = t.start(c0);
    assert_eq!(
        t.rq(c0, t::RM, x, b"/tr/a\0"),
        (Ok(b"OK\0".to_vec()), vec![])
    );
    assert_eq!(t.read(c0, x, "/tr/a"), Err(e(XsError::ENOENT)));
    assert_eq!(t.read(c0, x, "/tr/a/b"), Err(e(XsError::ENOENT)));
    assert_eq!(t.call_tx(c0, t::DIRECTORY, x, b"/tr\0"), Ok(vec![]));
    assert_eq!(t.read(c0, 0, "/tr/a/b"), Ok(String::new()));
    assert_eq!(
        t.rq(c0, t::SET_PERMS, x, &args(&["/tr", "n0", "r3"])),
        (Ok(b"OK\0".to_vec()), vec![])
    );
    assert_eq!(t.perms(c0, "/tr"), Ok("n0 ".into()));
    let (r, evs) = t.end(c0, x, true);
    assert_eq!(r, Ok(b"OK\0".to_vec()));
    assert_eq!(
        evs,
        vec![
            ev(c0, "/tr/a", "W"),
            ev(c0, "/tr", "W"),
            ev(c0, "/tr/a/b", "B")
        ]
    );
    assert_eq!(t.call(c0, t::DIRECTORY, b"/tr\0"), Ok(vec![]));
    assert_eq!(t.perms(c0, "/tr"), Ok("n0 r3 ".into()));
    t.s.check_tree().unwrap();
    // Create then delete inside one transaction: nothing remains, watch fires at commit.
    let y = t.start(c0);
    t.write(c0, y, "/tr/tmp/z", "").unwrap();
    t.ok(c0, t::WATCH, &args(&["/tr/tmp", "TMP"]));
    assert_eq!(t.rq(c0, t::RM, y, b"/tr/tmp\0").0, Ok(b"OK\0".to_vec()));
    let (r, _) = t.end(c0, y, true);
    assert_eq!(r, Ok(b"OK\0".to_vec()));
    assert_eq!(t.read(c0, 0, "/tr/tmp"), Err(e(XsError::ENOENT)));
    t.s.check_tree().unwrap();
    // MKDIR and DIRECTORY_PART in a transaction.
    let z = t.start(c0);
    t.ok(c0, t::WATCH, &args(&["/tm", "M"]));
    assert_eq!(
        t.rq(c0, t::MKDIR, z, b"/tm/a\0"),
        (Ok(b"OK\0".to_vec()), vec![])
    );
    let r = t
        .call_tx(c0, t::DIRECTORY_PART, z, &args(&["/tm", "0"]))
        .unwrap();
    assert!(r.ends_with(b"\0a\0\0"));
    assert_eq!(
        t.end(c0, z, true),
        (Ok(b"OK\0".to_vec()), vec![ev(c0, "/tm/a", "M")])
    );
}

#[test]
fn transaction_quotas() {
    // At most max_transactions + 1 open per unprivileged domain (xenstored's ">").
    let mut t = T::new();
    let c0 = t.s.connect(0);
    let c1 = t.s.connect(1);
    for i in 1..=11 {
        assert_eq!(t.start(c1), i);
    }
    assert_eq!(
        t.call(c1, t::TRANSACTION_START, b"\0"),
        Err(e(XsError::ENOSPC))
    );
    // Per domain, not per connection.
    let c1b = t.s.connect(1);
    assert_eq!(
        t.call(c1b, t::TRANSACTION_START, b"\0"),
        Err(e(XsError::ENOSPC))
    );
    assert_eq!(t.end(c1, 5, false).0, Ok(b"OK\0".to_vec()));
    assert_eq!(t.start(c1), 12);
    for _ in 0..30 {
        t.start(c0);
    }
    // Accessed nodes per transaction.
    let mut t = T::with_quota(Quota {
        max_transaction_nodes: 3,
        ..Quota::default()
    });
    let c1 = t.s.connect(1);
    let x = t.start(c1);
    assert_eq!(t.read(c1, x, "a"), Err(e(XsError::ENOENT))); // "a" and its parent
    assert_eq!(t.read(c1, x, "b"), Err(e(XsError::ENOENT)));
    assert_eq!(t.read(c1, x, "c"), Err(e(XsError::ENOSPC)));
    assert_eq!(t.end(c1, x, true).0, Err(e(XsError::ENOMEM)));
    // The node-size quota inside a transaction fails the transaction.
    let mut t = T::new();
    let c1 = t.s.connect(1);
    let x = t.start(c1);
    t.write(c1, x, "ok", "").unwrap();
    assert_eq!(
        t.write(c1, x, "big", &"v".repeat(3000)),
        Err(e(XsError::ENOSPC))
    );
    assert_eq!(t.end(c1, x, true).0, Err(e(XsError::ENOMEM)));
    assert_eq!(t.read(c1, 0, "ok"), Err(e(XsError::ENOENT)));
}

// ---------------------------------------------------------------- quotas

#[test]
fn quota_nodes() {
    let q = Quota {
        max_nodes_per_dom: 5,
        ..Quota::default()
    };
    let mut t = T::with_quota(q);
    let c0 = t.s.connect(0);
    let c1 = t.s.connect(1);
    assert_eq!(t.s.owned[&1], 1); // the home
    for n in ["a", "b", "c", "d"] {
        t.write(c1, 0, n, "").unwrap();
    }
    assert_eq!(t.write(c1, 0, "e", ""), Err(e(XsError::ENOSPC)));
    assert_eq!(t.write(c1, 0, "x/y", ""), Err(e(XsError::ENOSPC)));
    // dom0 is exempt, even creating nodes owned by the domain.
    t.write(c0, 0, "/local/domain/1/z", "").unwrap();
    assert_eq!(t.s.owned[&1], 6);
    t.ok(c1, t::RM, b"a\0");
    assert_eq!(t.write(c1, 0, "e", ""), Err(e(XsError::ENOSPC)));
    t.ok(c1, t::RM, b"b\0");
    t.ok(c1, t::RM, b"z\0");
    t.ok(c1, t::RM, b"c\0");
    assert_eq!(t.s.owned[&1], 2);
    // Creating k nodes needs count + k <= max; a failure leaves nothing behind.
    assert_eq!(t.write(c1, 0, "p/q/r/s", ""), Err(e(XsError::ENOSPC)));
    assert_eq!(t.read(c1, 0, "p"), Err(e(XsError::ENOENT)));
    t.write(c1, 0, "p/q/r", "").unwrap();
    assert_eq!(t.s.owned[&1], 5);
    t.s.check_tree().unwrap();
    // Transactions: checked as they go, and at commit with ">=" (xenstored's
    // acc_fix_domains()).
    let mut t = T::with_quota(q);
    let c1 = t.s.connect(1);
    let x = t.start(c1);
    for n in ["a", "b", "c", "d"] {
        t.write(c1, x, n, "").unwrap();
    }
    assert_eq!(t.write(c1, x, "e", ""), Err(e(XsError::ENOSPC)));
    assert_eq!(t.end(c1, x, true).0, Err(e(XsError::ENOSPC)));
    assert_eq!(t.s.owned[&1], 1);
    let y = t.start(c1);
    for n in ["a", "b", "c"] {
        t.write(c1, y, n, "").unwrap();
    }
    assert_eq!(t.end(c1, y, true).0, Ok(b"OK\0".to_vec()));
    assert_eq!(t.s.owned[&1], 4);
    // A failed request inside a transaction does not count.
    let z = t.start(c1);
    assert_eq!(
        t.write(c1, z, "big/x", &"v".repeat(3000)),
        Err(e(XsError::ENOSPC))
    );
    assert_eq!(
        t.s.tx_ref(tree::Ctx {
            conn: Some(c1),
            dom: 1,
            tx: Some(z)
        })
        .unwrap()
        .acc_delta
        .get(&1),
        None
    );
}

#[test]
fn quota_node_size() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    let c1 = t.s.connect(1);
    // 16 (header) + 8 (one permission) + value <= 2048.
    t.write(c1, 0, "big", &"v".repeat(2024)).unwrap();
    assert_eq!(
        t.write(c1, 0, "big", &"v".repeat(2025)),
        Err(e(XsError::ENOSPC))
    );
    assert_eq!(t.read(c1, 0, "big").map(|v| v.len()), Ok(2024));
    t.write(c0, 0, "/local/domain/1/big", &"v".repeat(4000))
        .unwrap();
    // The guest cannot rewrite the oversized node, not even its permissions.
    assert_eq!(
        t.err(c1, t::SET_PERMS, &args(&["big", "n1", "r2"])),
        "ENOSPC"
    );
    t.write(c1, 0, "big", "").unwrap();
    // More permissions, less room.
    t.ok(c1, t::SET_PERMS, &args(&["big", "n1", "r2"]));
    assert_eq!(
        t.write(c1, 0, "big", &"v".repeat(2017)),
        Err(e(XsError::ENOSPC))
    );
    t.write(c1, 0, "big", &"v".repeat(2016)).unwrap();
    // The parent's children list counts: a new child that overflows it is refused and
    // leaves nothing behind.
    t.ok(c1, t::MKDIR, b"dir\0");
    for i in 0..20 {
        t.ok(
            c1,
            t::MKDIR,
            &args(&[&format!("dir/c{i:02}{}", "x".repeat(97))]),
        );
    }
    assert_eq!(
        t.err(
            c1,
            t::MKDIR,
            &args(&[&format!("dir/c20{}", "x".repeat(97))])
        ),
        "ENOSPC"
    );
    assert_eq!(
        t.call(c1, t::DIRECTORY, b"dir\0").map(|v| v.len()),
        Ok(2020)
    );
    assert_eq!(
        t.read(c1, 0, &format!("dir/c20{}", "x".repeat(97))),
        Err(e(XsError::ENOENT))
    );
    t.ok(
        c0,
        t::MKDIR,
        &args(&[&format!("/local/domain/1/dir/c20{}", "x".repeat(97))]),
    );
    t.s.check_tree().unwrap();
}

#[test]
fn quota_watches() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    let c1 = t.s.connect(1);
    // xenstored refuses only when the domain already has more than 128.
    for i in 0..129 {
        t.watch(c1, &format!("w{i}"), "t");
    }
    assert_eq!(t.err(c1, t::WATCH, &args(&["w129", "t"])), "E2BIG");
    t.ok(c1, t::UNWATCH, &args(&["w0", "t"]));
    t.watch(c1, "w129", "t");
    for i in 0..300 {
        t.watch(c0, &format!("/w{i}"), "t");
    }
}

#[test]
fn quota_path_max_via_control() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    let c1 = t.s.connect(1);
    t.ok(c0, t::CONTROL, &args(&["quota", "set", "path-max", "10"]));
    assert_eq!(t.s.quota().max_path_len, 10);
    assert_eq!(t.read(c1, 0, &"a".repeat(10)), Err(e(XsError::ENOENT)));
    assert_eq!(t.read(c1, 0, &"a".repeat(11)), Err(e(XsError::EINVAL)));
    assert_eq!(
        t.read(c0, 0, &format!("/local/domain/0/{}", "a".repeat(11))),
        Err(e(XsError::ENOENT))
    );
}

// ---------------------------------------------------------------- domains

#[test]
fn domain_messages() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    let c1 = t.s.connect(1);
    for (ty, p) in [
        (t::INTRODUCE, args(&["3", "1", "1"])),
        (t::RELEASE, args(&["2"])),
        (t::RESUME, args(&["2"])),
        (t::SET_TARGET, args(&["1", "2"])),
        (t::IS_DOMAIN_INTRODUCED, args(&["1"])),
        (t::CONTROL, args(&["print", "x"])),
    ] {
        assert_eq!(t.err(c1, ty, &p), "EACCES", "type {ty}");
    }
    // GET_DOMAIN_PATH: anybody, atoi semantics.
    assert_eq!(
        t.call(c1, t::GET_DOMAIN_PATH, b"1\0"),
        Ok(b"/local/domain/1\0".to_vec())
    );
    assert_eq!(
        t.call(c1, t::GET_DOMAIN_PATH, b"42\0"),
        Ok(b"/local/domain/42\0".to_vec())
    );
    assert_eq!(
        t.call(c1, t::GET_DOMAIN_PATH, b"\0"),
        Ok(b"/local/domain/0\0".to_vec())
    );
    assert_eq!(
        t.call(c1, t::GET_DOMAIN_PATH, b"-1\0"),
        Ok(b"/local/domain/4294967295\0".to_vec())
    );
    assert_eq!(
        t.call(c1, t::GET_DOMAIN_PATH, b"1"),
        Err(e(XsError::EINVAL))
    );
    // INTRODUCE.
    assert_eq!(t.err(c0, t::INTRODUCE, &args(&["3", "100"])), "EINVAL");
    assert_eq!(t.err(c0, t::INTRODUCE, &args(&["3", "100", "0"])), "EINVAL");
    t.ok(c0, t::INTRODUCE, &args(&["3", "100", "5", "extra"]));
    assert_eq!(t.s.ring_info(3), Some((100, 5)));
    // IS_DOMAIN_INTRODUCED.
    for (d, a) in [
        ("3", "T"),
        ("4", "F"),
        ("0", "T"),
        ("32752", "T"),
        ("1", "T"),
    ] {
        assert_eq!(
            t.call(c0, t::IS_DOMAIN_INTRODUCED, &args(&[d])),
            Ok(args(&[a])),
            "{d}"
        );
    }
    assert_eq!(t.err(c0, t::IS_DOMAIN_INTRODUCED, b"3"), "EINVAL");
    // RESUME.
    t.ok(c0, t::RESUME, b"3\0");
    assert_eq!(t.err(c0, t::RESUME, b"0\0"), "EINVAL");
    assert_eq!(t.err(c0, t::RESUME, b"4\0"), "ENOENT");
    assert_eq!(t.err(c0, t::RESUME, b"3"), "EINVAL");
    // SET_TARGET: dom3 acts with dom1's rights.
    t.write(c1, 0, "secret", "s").unwrap();
    let c3 = t.s.connect(3);
    assert_eq!(
        t.read(c3, 0, "/local/domain/1/secret"),
        Err(e(XsError::EACCES))
    );
    assert_eq!(t.err(c0, t::SET_TARGET, &args(&["3", "4"])), "ENOENT");
    assert_eq!(t.err(c0, t::SET_TARGET, &args(&["4", "1"])), "ENOENT");
    assert_eq!(t.err(c0, t::SET_TARGET, &args(&["3"])), "EINVAL");
    t.ok(c0, t::SET_TARGET, &args(&["3", "1"]));
    assert_eq!(t.read(c3, 0, "/local/domain/1/secret"), Ok("s".into()));
    t.write(c3, 0, "/local/domain/1/secret", "t").unwrap();
    t.ok(
        c0,
        t::SET_PERMS,
        &args(&["/local/domain/1/secret", "n0", "r1"]),
    );
    assert_eq!(t.read(c3, 0, "/local/domain/1/secret"), Ok("t".into()));
    assert_eq!(
        t.write(c3, 0, "/local/domain/1/secret", "u"),
        Err(e(XsError::EACCES))
    );
    // RELEASE: the domain's nodes go (watches fire), its watches go first.
    t.watch(c0, "/local/domain", "ld");
    t.watch(c0, "@releaseDomain", "rel");
    t.watch(c1, "secret", "mine");
    assert_eq!(t.err(c0, t::RELEASE, b"0\0"), "EINVAL");
    assert_eq!(t.err(c0, t::RELEASE, b"4\0"), "ENOENT");
    assert_eq!(t.err(c0, t::RELEASE, b"1"), "EINVAL");
    let (r, evs) = t.rq(c0, t::RELEASE, 0, b"1\0");
    assert_eq!(r, Ok(b"OK\0".to_vec()));
    assert_eq!(
        evs,
        vec![
            ev(c0, "/local/domain/1", "ld"),
            ev(c0, "@releaseDomain", "rel")
        ]
    );
    assert_eq!(t.read(c0, 0, "/local/domain/1"), Err(e(XsError::ENOENT)));
    assert_eq!(
        t.call(c0, t::IS_DOMAIN_INTRODUCED, b"1\0"),
        Ok(b"F\0".to_vec())
    );
    assert!(t.s.conns[&c1].watches.is_empty());
    assert_eq!(t.s.owned.get(&1), None);
    assert_eq!(t.err(c0, t::RELEASE, b"1\0"), "ENOENT");
    t.s.check_tree().unwrap();
}

#[test]
fn control() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    t.ok(c0, t::CONTROL, &args(&["print", "hello"]));
    assert_eq!(t.err(c0, t::CONTROL, &args(&["print"])), "EINVAL");
    t.ok(c0, t::CONTROL, &args(&["check"]));
    assert_eq!(t.err(c0, t::CONTROL, &args(&["check", "x"])), "EINVAL");
    let help = String::from_utf8(t.call(c0, t::CONTROL, &args(&["help"])).unwrap()).unwrap();
    assert!(
        help.starts_with("check")
            && help.contains("\nprint           <string>\n")
            && help.ends_with("\n\0")
    );
    let q = String::from_utf8(t.call(c0, t::CONTROL, &args(&["quota"])).unwrap()).unwrap();
    assert!(
        q.starts_with("Quota settings:\nnodes            :     1000 Nodes per domain\n"),
        "{q}"
    );
    t.ok(c0, t::CONTROL, &args(&["quota", "set", "nodes", "7"]));
    assert_eq!(t.s.quota().max_nodes_per_dom, 7);
    assert_eq!(
        t.err(c0, t::CONTROL, &args(&["quota", "set", "nodes", "0"])),
        "EINVAL"
    );
    assert_eq!(
        t.err(c0, t::CONTROL, &args(&["quota", "set", "bogus", "1"])),
        "EINVAL"
    );
    assert_eq!(
        t.err(c0, t::CONTROL, &args(&["quota", "set", "nodes"])),
        "EINVAL"
    );
    let d = String::from_utf8(t.call(c0, t::CONTROL, &args(&["quota", "1"])).unwrap()).unwrap();
    assert!(
        d.starts_with("Domain 1:\nnodes            :        1 (max        1)\n"),
        "{d}"
    );
    assert_eq!(t.err(c0, t::CONTROL, &args(&["quota", "99"])), "ENOENT");
    assert_eq!(t.err(c0, t::CONTROL, &args(&["bogus"])), "EINVAL");
    assert_eq!(t.err(c0, t::CONTROL, b"print"), "EINVAL");
    assert_eq!(t.err(c0, t::CONTROL, b""), "EINVAL");
}

// ---------------------------------------------------------------- malformed requests

#[test]
fn malformed() {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    let c1 = t.s.connect(1);
    for ty in [t::WATCH_EVENT, t::ERROR, 20, 23, 100, t::INVALID, u32::MAX] {
        assert_eq!(t.err(c0, ty, b"/\0"), "ENOSYS", "{ty}");
        assert_eq!(t.err(c1, ty, b"/\0"), "ENOSYS", "{ty}");
    }
    let mut p = args(&["/x"]);
    p.resize(Msg::MAX_PAYLOAD, b'v');
    t.ok(c0, t::WRITE, &p);
    p.push(b'v');
    assert_eq!(t.err(c0, t::WRITE, &p), "E2BIG");
    // An unknown connection gets EINVAL.
    let out = t.s.handle(999, &Msg::new(t::READ, 5, 0, args(&["/"])));
    assert_eq!(out, vec![(999, XsError::EINVAL.reply(5, 0))]);
    // The reply echoes req_id and tx_id.
    let x = t.start(c0);
    let out = t.s.handle(c0, &Msg::new(t::READ, 0xdead, x, args(&["/x"])));
    assert_eq!(
        (out[0].1.req_id, out[0].1.tx_id, out[0].1.ty),
        (0xdead, x, t::READ)
    );
    // Reserved trailing bytes after TRANSACTION_START's NUL are ignored, as in xenstored.
    assert!(t.call(c0, t::TRANSACTION_START, b"").is_ok());
    assert!(t.call(c0, t::TRANSACTION_START, b"junk").is_ok());
}

// ---------------------------------------------------------------- snapshot

fn busy_store() -> (Store, Vec<ConnId>) {
    let mut t = T::new();
    let c0 = t.s.connect(0);
    let c1 = t.s.connect(1);
    let c2 = t.s.connect(2);
    t.watch(c0, "/", "all");
    t.watch(c0, "@releaseDomain", "rel");
    t.watch(c1, "dev", "d");
    t.watch(c2, "/local/domain/1", "peer");
    t.write(c1, 0, "dev/vbd/51712/state", "1").unwrap();
    t.ok(c1, t::SET_PERMS, &args(&["dev", "n1", "r2"]));
    t.write(c0, 0, "/vm/uuid", "abc").unwrap();
    t.ok(c0, t::SET_PERMS, &args(&["/vm", "n0", "r7"]));
    t.s.introduce_ring(7, 0x1234, 5);
    t.ok(c0, t::SET_TARGET, &args(&["7", "1"]));
    t.s.introduce(8);
    t.s.release(8);
    let x = t.start(c1);
    t.write(c1, x, "dev/vbd/51712/state", "4").unwrap();
    t.write(c1, x, "tx/new", "n").unwrap();
    t.ok(c1, t::RESET_WATCHES, b"");
    t.watch(c1, "dev", "d2");
    let x2 = t.start(c1);
    assert_eq!(t.rq(c1, t::RM, x2, b"dev\0").0, Ok(b"OK\0".to_vec()));
    let y = t.start(c0);
    let _ = t.read(c0, y, "/missing");
    t.ok(c0, t::CONTROL, &args(&["quota", "set", "watches", "50"]));
    (t.s, vec![c0, c1, c2])
}

#[test]
fn snapshot_roundtrip() {
    let (mut s, conns) = busy_store();
    let snap = s.snapshot();
    assert_eq!(&snap[..8], b"XNLXSTOR");
    let mut r = Store::restore(&snap).unwrap();
    assert_eq!(r, s);
    assert_eq!(r.snapshot(), snap);
    r.check_tree().unwrap();
    // Identical behaviour afterwards.
    let (c0, c1) = (conns[0], conns[1]);
    let script: Vec<(ConnId, Msg)> = vec![
        (c1, Msg::new(t::TRANSACTION_END, 1, 2, b"T\0".to_vec())),
        (c1, Msg::new(t::WRITE, 2, 0, b"dev/x\0y".to_vec())),
        (c0, Msg::new(t::TRANSACTION_END, 3, 1, b"T\0".to_vec())),
        (c1, Msg::new(t::TRANSACTION_START, 4, 0, b"\0".to_vec())),
        (
            c0,
            Msg::new(t::DIRECTORY_PART, 5, 0, args(&["/local/domain/1", "0"])),
        ),
        (c0, Msg::new(t::RELEASE, 6, 0, args(&["7"]))),
        (c1, Msg::new(t::WATCH, 7, 0, args(&["dev", "d2"]))),
    ];
    for (c, m) in &script {
        assert_eq!(s.handle(*c, m), r.handle(*c, m), "{m:?}");
    }
    assert_eq!(s.connect(3), r.connect(3));
    assert_eq!(s.write("/z", b"1"), r.write("/z", b"1"));
    assert_eq!(s, r);
}

#[test]
fn snapshot_rejects_bad_input() {
    let (s, _) = busy_store();
    let snap = s.snapshot();
    assert!(Store::restore(b"").is_err());
    assert!(Store::restore(b"XNLXSTOQ\x01\0\0\0").is_err());
    let mut v2 = snap.clone();
    v2[8] = 2;
    assert!(Store::restore(&v2).is_err());
    let mut long = snap.clone();
    long.push(0);
    assert!(Store::restore(&long).is_err());
    for n in 0..snap.len() {
        assert!(Store::restore(&snap[..n]).is_err(), "prefix {n}");
    }
    // Corruption never panics; whatever loads is consistent and usable.
    let mut rng = Rng(0x5eed);
    for _ in 0..3000 {
        let mut b = snap.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(b.len());
            b[i] = rng.next() as u8;
        }
        if let Ok(mut r) = Store::restore(&b) {
            r.check_tree().unwrap();
            let c = r.connect(1);
            r.handle(c, &Msg::new(t::WRITE, 1, 0, b"x\0y".to_vec()));
            r.handle(c, &Msg::new(t::RM, 1, 0, b"/local\0".to_vec()));
            r.release(1);
            r.check_tree().unwrap();
            let _ = Store::restore(&r.snapshot()).unwrap();
        }
    }
}

// ---------------------------------------------------------------- fuzzing

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

fn fuzz_path(r: &mut Rng) -> Vec<u8> {
    const ODD: [&str; 12] = [
        "/",
        "@introduceDomain",
        "@releaseDomain",
        "@foo",
        "",
        "/a//b",
        "/a/",
        "bad.path",
        "/tool/xenstored",
        "/local/domain",
        "/local/domain/1",
        "/local/domain/2",
    ];
    if r.below(8) == 0 {
        return ODD[r.below(ODD.len())].as_bytes().to_vec();
    }
    const COMPS: [&str; 8] = ["a", "b", "c", "d", "1", "2", "x-y", "_"];
    let mut p: Vec<u8> = match r.below(6) {
        0 | 1 | 2 => Vec::new(),
        3 => b"/local/domain/1/".to_vec(),
        4 => b"/local/domain/2/".to_vec(),
        _ => b"/a/".to_vec(),
    };
    for i in 0..1 + r.below(4) {
        if i > 0 {
            p.push(b'/');
        }
        p.extend_from_slice(r.pick(&COMPS).as_bytes());
    }
    if r.below(30) == 0 {
        p.push(*r.pick(b"./ @\x80"));
    }
    if r.below(100) == 0 {
        p.extend(std::iter::repeat(b'q').take(r.below(3500)));
    }
    p
}

fn cat(p: &mut Vec<u8>, s: &[u8]) {
    p.extend_from_slice(s);
    p.push(0);
}

/// A payload of any shape.
fn fuzz_any_payload(r: &mut Rng) -> Vec<u8> {
    let mut p = Vec::new();
    match r.below(5) {
        0 => p = (0..r.below(40)).map(|_| *r.pick(b"ab/\0@1-T F.")).collect(),
        1 => {}
        2 => p = fuzz_path(r),
        3 => {
            for _ in 0..r.below(5) {
                let x = fuzz_path(r);
                cat(&mut p, &x);
            }
        }
        _ => {
            let x = fuzz_path(r);
            cat(&mut p, &x);
        }
    }
    p
}

fn fuzz_msg(r: &mut Rng, req: u32, tx: u32) -> Msg {
    use t::*;
    const COMMON: [u32; 16] = [
        READ,
        WRITE,
        WRITE,
        WRITE,
        MKDIR,
        RM,
        DIRECTORY,
        WATCH,
        WATCH,
        UNWATCH,
        TRANSACTION_START,
        TRANSACTION_START,
        TRANSACTION_END,
        TRANSACTION_END,
        SET_PERMS,
        GET_PERMS,
    ];
    let ty = match r.below(20) {
        0 => r.next() as u32,
        1 => *r.pick(&[15u32, 16, 20, 23, 0xffff]),
        2..=5 => r.below(23) as u32,
        _ => *r.pick(&COMMON),
    };
    if r.below(6) == 0 {
        return Msg::new(ty, req, tx, fuzz_any_payload(r));
    }
    let mut p = Vec::new();
    let path = fuzz_path(r);
    match ty {
        WRITE => {
            cat(&mut p, &path);
            let n = if r.below(20) == 0 {
                r.below(4200)
            } else {
                r.below(12)
            };
            p.extend((0..n).map(|_| *r.pick(b"v\0w")));
        }
        WATCH | UNWATCH => {
            cat(&mut p, &path);
            cat(&mut p, r.pick(&["t1", "t2", ""]).as_bytes());
        }
        TRANSACTION_START => p.push(0),
        TRANSACTION_END => cat(&mut p, if r.below(4) == 0 { b"F" } else { b"T" }),
        SET_PERMS => {
            cat(&mut p, &path);
            for _ in 0..1 + r.below(6) {
                let perm = r.pick(&[
                    "n0", "r1", "b2", "w1", "n1", "n2", "r2", "b1", "x", "r0x1", "n-1",
                ]);
                cat(&mut p, perm.as_bytes());
            }
        }
        DIRECTORY_PART => {
            cat(&mut p, &path);
            cat(
                &mut p,
                r.pick(&["0", "1", "3", "-1", "100000", "x"]).as_bytes(),
            );
        }
        INTRODUCE | RELEASE | RESUME | GET_DOMAIN_PATH | IS_DOMAIN_INTRODUCED | SET_TARGET => {
            let n = match ty {
                INTRODUCE => 3,
                SET_TARGET => 2,
                _ => 1,
            };
            for _ in 0..n {
                cat(
                    &mut p,
                    r.pick(&["0", "1", "2", "3", "9", "32752", "-1", "x"])
                        .as_bytes(),
                );
            }
        }
        CONTROL => {
            cat(
                &mut p,
                r.pick(&["print", "check", "help", "quota", "bogus"])
                    .as_bytes(),
            );
            for _ in 0..r.below(4) {
                cat(
                    &mut p,
                    r.pick(&["set", "nodes", "watches", "node-size", "1", "50", "0", "x"])
                        .as_bytes(),
                );
            }
        }
        RESET_WATCHES => {}
        _ => cat(&mut p, &path),
    }
    Msg::new(ty, req, tx, p)
}

#[derive(Clone, Debug)]
enum Op {
    Msg(usize, Msg),
    Write(String, Vec<u8>),
    Mkdir(String),
    Rm(String),
    SetPerms(String, Vec<Perm>),
    Introduce(DomId),
    Release(DomId),
    Connect(DomId),
    Disconnect(usize),
}

fn fuzz_op(r: &mut Rng, req: u32, conns: &[ConnId], txs: &BTreeMap<ConnId, Vec<u32>>) -> Op {
    let pth = String::from_utf8_lossy(&fuzz_path(r)).into_owned();
    match r.below(200) {
        0 | 1 => Op::Write(pth, b"direct".to_vec()),
        2 => Op::Mkdir(pth),
        3 => Op::Rm(pth),
        4 => {
            let n = r.below(3);
            Op::SetPerms(
                pth,
                (0..n)
                    .map(|i| Perm::new(i as u32 + r.below(3) as u32, Access::Read))
                    .collect(),
            )
        }
        5 => Op::Introduce(r.below(5) as u32),
        6 => Op::Release(r.below(5) as u32),
        7 => Op::Connect(r.below(4) as u32),
        8 => Op::Disconnect(r.below(8)),
        _ => {
            let i = r.below(64);
            let live = conns
                .get(i % conns.len().max(1))
                .and_then(|c| txs.get(c))
                .filter(|v| !v.is_empty());
            let tx = match (live, r.below(10)) {
                (Some(v), 0..=4) => *r.pick(v),
                (_, 9) => r.next() as u32 % 8,
                _ => 0,
            };
            Op::Msg(i, fuzz_msg(r, req, tx))
        }
    }
}

#[derive(Default, Debug)]
struct Stats {
    ok: usize,
    errors: usize,
    events: usize,
    commits: usize,
    hist: BTreeMap<(u32, String), usize>,
}

/// Apply an op; check the invariants of what comes out.
fn apply(s: &mut Store, conns: &mut Vec<ConnId>, op: &Op, st: &mut Stats) -> Vec<(ConnId, Msg)> {
    let out = match op {
        Op::Msg(i, m) => {
            if conns.is_empty() {
                return vec![];
            }
            let c = conns[i % conns.len()];
            let out = s.handle(c, m);
            assert!(!out.is_empty());
            let (rc, reply) = &out[0];
            assert_eq!(*rc, c);
            assert_eq!((reply.req_id, reply.tx_id), (m.req_id, m.tx_id));
            assert!(reply.payload.len() <= Msg::MAX_PAYLOAD);
            if reply.ty == t::ERROR {
                let name = reply.error_name().unwrap();
                assert!(XsError::from_name(name).is_some());
                assert_eq!(reply.payload.len(), name.len() + 1);
                st.errors += 1;
                *st.hist.entry((m.ty, name.to_string())).or_default() += 1;
            } else {
                assert_eq!(reply.ty, m.ty);
                st.ok += 1;
                if m.ty == t::TRANSACTION_END && m.payload == b"T\0" {
                    st.commits += 1;
                }
            }
            out
        }
        Op::Write(p, v) => s.write(p, v),
        Op::Mkdir(p) => s.mkdir(p),
        Op::Rm(p) => s.rm(p),
        Op::SetPerms(p, perms) => s.set_perms(p, perms),
        Op::Introduce(d) => s.introduce(*d),
        Op::Release(d) => s.release(*d),
        Op::Connect(d) => {
            conns.push(s.connect(*d));
            vec![]
        }
        Op::Disconnect(i) => {
            if conns.len() > 2 {
                let c = conns.remove(i % conns.len());
                s.disconnect(c);
            }
            vec![]
        }
    };
    let skip = matches!(op, Op::Msg(..)) as usize;
    for (c, m) in &out[skip..] {
        assert!(
            s.conn_domain(*c).is_some(),
            "event for a missing connection"
        );
        assert_eq!((m.ty, m.req_id, m.tx_id), (t::WATCH_EVENT, 0, 0));
        assert!(m.payload.len() <= Msg::MAX_PAYLOAD);
        assert_eq!(m.payload.iter().filter(|&&b| b == 0).count(), 2);
        assert_eq!(m.payload.last(), Some(&0));
    }
    st.events += out.len() - skip;
    out
}

fn fuzz(seed: u64, quota: Quota, steps: usize) {
    let mut rng = Rng(seed);
    let mut t = T::with_quota(quota);
    let mut conns = vec![
        t.s.connect(0),
        t.s.connect(1),
        t.s.connect(2),
        t.s.connect(1),
    ];
    let mut shadow: Option<(Store, Vec<ConnId>, usize)> = None;
    let mut st = Stats::default();
    let mut st2 = Stats::default();
    let mut txs: BTreeMap<ConnId, Vec<u32>> = BTreeMap::new();
    for step in 0..steps {
        let op = fuzz_op(&mut rng, step as u32, &conns, &txs);
        let out = apply(&mut t.s, &mut conns, &op, &mut st);
        // Track the live transaction ids.
        if let (Op::Msg(_, m), Some((c, reply))) = (&op, out.first()) {
            let v = txs.entry(*c).or_default();
            match (m.ty, reply.ty) {
                (t::TRANSACTION_START, t::TRANSACTION_START) => v.push(
                    std::str::from_utf8(&reply.payload[..reply.payload.len() - 1])
                        .unwrap()
                        .parse()
                        .unwrap(),
                ),
                (t::TRANSACTION_END, _) if reply.error_name() != Some("EINVAL") => {
                    v.retain(|&x| x != m.tx_id)
                }
                (t::RESET_WATCHES, t::RESET_WATCHES) => v.clear(),
                _ => {}
            }
        }
        if let Some((sh, sc, left)) = &mut shadow {
            let o2 = apply(sh, sc, &op, &mut st2);
            assert_eq!(out, o2, "diverged after restore at step {step}: {op:?}");
            *left -= 1;
            if *left == 0 {
                assert_eq!(*sh, t.s);
                shadow = None;
            }
        }
        if step % 97 == 0 {
            t.s.check_tree()
                .unwrap_or_else(|e| panic!("step {step}: {e}"));
        }
        if step % 1000 == 500 && shadow.is_none() {
            let r = Store::restore(&t.s.snapshot()).unwrap();
            assert_eq!(r, t.s);
            shadow = Some((r, conns.clone(), 300));
        }
    }
    t.s.check_tree().unwrap();
    let mut h: Vec<_> = st.hist.iter().collect();
    h.sort_by_key(|x| std::cmp::Reverse(*x.1));
    eprintln!(
        "fuzz {seed:#x}: ok {} err {} ev {} commits {}, {} nodes; top errors {:?}",
        st.ok,
        st.errors,
        st.events,
        st.commits,
        t.s.nodes.len(),
        &h[..12]
    );
    // The fuzzer reaches the interesting paths, not only errors.
    assert!(
        st.ok > steps / 10 && st.errors > steps / 10 && st.events > steps / 20 && st.commits > 20,
        "{st:?}"
    );
}

#[test]
fn fuzz_default_quota() {
    fuzz(0x1234_5678_9abc_def1, Quota::default(), 30_000);
}

#[test]
fn fuzz_small_quota() {
    let q = Quota {
        max_nodes_per_dom: 12,
        max_node_size: 200,
        max_watches: 3,
        max_transactions: 2,
        max_transaction_nodes: 8,
        max_perms: 2,
        max_path_len: 40,
        ..Quota::default()
    };
    fuzz(0xfeed_beef_0bad_cafe, q, 30_000);
}
