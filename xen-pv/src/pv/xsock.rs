//! The host's xenstored socket: a unix socket speaking the xenstore wire protocol, so the
//! host's own clients (`xenstore-ls`, `xenstore-read`, ... with `XENSTORED_PATH` naming
//! the socket) can inspect and change the running guest's store.
//!
//! As C xenstored's unix socket:
//! - every client is a connection of domain 0 (privileged), with its own watches and
//!   transactions; they go away when the client disconnects;
//! - messages are the wire header (16 bytes, little-endian) and a payload; a header
//!   claiming more than XENSTORE_PAYLOAD_MAX (4096) bytes is a protocol error and the
//!   client is dropped (xenstored: XENSTORE_ERROR_PROTO, then it stops talking to it);
//! - replies and watch events go to the client whose connection they are for. A watch a
//!   client registered fires on the guest's writes, and a client's writes fire the guest's
//!   watches (the caller flushes those into the guest's ring and notifies it).
//!
//! All I/O is non-blocking and done when the run loop polls ([`XsSocket::poll_in`],
//! [`XsSocket::flush_out`]); the cost of a poll is bounded (accepted clients, bytes read,
//! requests handled per client). The store core stays pure: this is only transport.
//!
//! Limits (ours, xenstored has per-domain quotas instead): at most [`MAX_CLIENTS`]
//! clients (later ones are closed at once); a client whose unsent output exceeds
//! [`MAX_PENDING_OUT`] (it does not read its watch events) is dropped, and one with more
//! than [`READ_PAUSE_OUT`] unsent is not read from until it catches up.
//!
//! The socket file is created mode 0600 (as xenstored's) and removed when the server is
//! dropped, if it is still the file this server made.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::xs::Xenstore;
use crate::core::xenstore::{ConnId, Msg};

pub const MAX_CLIENTS: usize = 64;
/// A client is dropped when this much output is waiting for it.
pub const MAX_PENDING_OUT: usize = 8 << 20;
/// No requests are read from a client while this much output is waiting for it.
pub const READ_PAUSE_OUT: usize = 64 << 10;
/// Requests handled per client per poll.
const MAX_REQUESTS_PER_POLL: usize = 256;
/// Bytes read per client per poll.
const MAX_READ_PER_POLL: usize = 64 << 10;
/// How often the run loop polls while the guest runs: often right after traffic (a
/// client's requests follow each other), rarely when idle.
const POLL_HOT: Duration = Duration::from_micros(100);
const POLL_COLD: Duration = Duration::from_millis(2);
/// Traffic this recent makes the socket "hot".
const HOT_FOR: Duration = Duration::from_millis(50);

struct Client {
    stream: UnixStream,
    conn: ConnId,
    /// A request being assembled.
    inbuf: Vec<u8>,
    /// Encoded messages not yet written.
    out: VecDeque<u8>,
    /// EOF, an I/O error or a protocol error: disconnect.
    dead: bool,
}

pub struct XsSocket {
    path: PathBuf,
    listener: UnixListener,
    /// (device, inode) of the socket file this server made.
    file_id: Option<(u64, u64)>,
    clients: Vec<Client>,
    last_poll: Option<Instant>,
    last_traffic: Option<Instant>,
}

impl XsSocket {
    /// Listen on `path`. A stale socket file there (nobody accepts on it) is removed first;
    /// a live one, or anything that is not a socket, is an error.
    pub fn bind(path: &Path) -> Result<XsSocket, String> {
        let shown = path.display();
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(format!(
                        "{shown}: a server is already listening on this socket"
                    ));
                }
                std::fs::remove_file(path)
                    .map_err(|e| format!("{shown}: removing the stale socket: {e}"))?;
            }
            Ok(_) => return Err(format!("{shown}: exists and is not a socket")),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{shown}: {e}")),
        }
        let listener = UnixListener::bind(path).map_err(|e| format!("{shown}: {e}"))?;
        let file_id = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
        let sock = XsSocket {
            path: path.to_path_buf(),
            listener,
            file_id,
            clients: Vec::new(),
            last_poll: None,
            last_traffic: None,
        };
        // Domain 0's store: only the user who runs the guest may talk to it.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{shown}: {e}"))?;
        sock.listener
            .set_nonblocking(true)
            .map_err(|e| format!("{shown}: {e}"))?;
        Ok(sock)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Connected clients.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Whether the run loop should poll now (rate limit for a running guest).
    pub fn due(&self) -> bool {
        let Some(last) = self.last_poll else {
            return true;
        };
        let hot = self.last_traffic.is_some_and(|t| t.elapsed() < HOT_FOR);
        last.elapsed() >= if hot { POLL_HOT } else { POLL_COLD }
    }

    /// Whether there was traffic very recently (a waiting caller should poll often).
    pub fn hot(&self) -> bool {
        self.last_traffic.is_some_and(|t| t.elapsed() < HOT_FOR)
    }

    /// Accept new clients, read what they sent and hand every whole request to the store
    /// (replies and events land in `xs.external`, the guest's ring and the back ends'
    /// queue). True when anything happened.
    pub fn poll_in(&mut self, xs: &mut Xenstore) -> bool {
        self.last_poll = Some(Instant::now());
        let mut activity = false;
        // New clients (a bounded number per poll).
        for _ in 0..MAX_CLIENTS {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    activity = true;
                    if self.clients.len() >= MAX_CLIENTS || stream.set_nonblocking(true).is_err() {
                        continue; // dropped: closed at once
                    }
                    let conn = xs.store.connect(0);
                    self.clients.push(Client {
                        stream,
                        conn,
                        inbuf: Vec::new(),
                        out: VecDeque::new(),
                        dead: false,
                    });
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        for c in &mut self.clients {
            if c.dead || c.out.len() > READ_PAUSE_OUT {
                continue;
            }
            activity |= c.read(xs);
        }
        if activity {
            self.last_traffic = self.last_poll;
        }
        activity
    }

    /// Take the messages for the clients from `xs.external`, write what the sockets accept,
    /// and disconnect the clients that went away. True when anything was written.
    pub fn flush_out(&mut self, xs: &mut Xenstore) -> bool {
        for (conn, m) in std::mem::take(&mut xs.external) {
            // Messages for a connection that is gone are dropped.
            if let Some(c) = self.clients.iter_mut().find(|c| c.conn == conn && !c.dead) {
                c.out.extend(m.encode());
                if c.out.len() > MAX_PENDING_OUT {
                    c.dead = true;
                }
            }
        }
        let mut wrote = false;
        for c in &mut self.clients {
            if !c.dead {
                wrote |= c.write();
            }
        }
        self.clients.retain(|c| {
            if c.dead {
                xs.store.disconnect(c.conn);
            }
            !c.dead
        });
        if wrote {
            self.last_traffic = Some(Instant::now());
        }
        wrote
    }

    /// Disconnect every client (the domain is going away).
    pub fn close_all(&mut self, xs: &mut Xenstore) {
        for c in self.clients.drain(..) {
            xs.store.disconnect(c.conn);
        }
    }
}

impl Client {
    /// Read and handle what the client sent. True when bytes came (or the client left).
    fn read(&mut self, xs: &mut Xenstore) -> bool {
        let mut got = false;
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while total < MAX_READ_PER_POLL {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.dead = true;
                    return true;
                }
                Ok(n) => {
                    got = true;
                    total += n;
                    self.inbuf.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.dead = true;
                    return true;
                }
            }
        }
        let mut used = 0;
        for _ in 0..MAX_REQUESTS_PER_POLL {
            match Msg::decode(&self.inbuf[used..]) {
                Ok(Some((m, n))) => {
                    used += n;
                    xs.request(self.conn, &m);
                }
                Ok(None) => break,
                Err(_) => {
                    // A length over XENSTORE_PAYLOAD_MAX: xenstored drops the client.
                    self.dead = true;
                    break;
                }
            }
        }
        self.inbuf.drain(..used);
        got
    }

    /// Write queued output until the socket is full. True when bytes were written.
    fn write(&mut self) -> bool {
        let mut wrote = false;
        while !self.out.is_empty() {
            let (a, _) = self.out.as_slices();
            match self.stream.write(a) {
                Ok(0) => {
                    self.dead = true;
                    break;
                }
                Ok(n) => {
                    wrote = true;
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.dead = true;
                    break;
                }
            }
        }
        wrote
    }
}

impl Drop for XsSocket {
    /// Remove the socket file, unless someone replaced it since.
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && Some((m.dev(), m.ino())) == self.file_id);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("xenolith-xsock-{}-{name}", std::process::id()))
    }

    #[test]
    fn bind_refuses_non_sockets_and_replaces_stale_sockets() {
        let p = tmp("file");
        std::fs::write(&p, b"x").unwrap();
        let e = XsSocket::bind(&p).err().unwrap();
        assert!(e.contains("exists and is not a socket"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
        std::fs::remove_file(&p).unwrap();

        let p = tmp("stale");
        drop(UnixListener::bind(&p).unwrap()); // leaves the file, nobody listening
        let s = XsSocket::bind(&p).unwrap();
        // A second server on a live socket is refused.
        let e = XsSocket::bind(&p).err().unwrap();
        assert!(e.contains("already listening"), "{e}");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(s);
        assert!(
            std::fs::symlink_metadata(&p).is_err(),
            "the socket file is removed at drop"
        );
    }

    use crate::core::xenstore::msg_type;
    use crate::pv::xs::DomainInfo;

    fn store(mem: &mut Vec<u8>) -> Xenstore {
        let info = DomainInfo {
            name: "t",
            memory_kib: 64,
            store_pfn: 1,
            store_port: 1,
            console_pfn: 2,
            console_port: 2,
        };
        Xenstore::new(mem, &info)
    }

    /// A test client: the stream and the bytes read but not yet taken.
    struct C(UnixStream, Vec<u8>);

    impl C {
        fn connect(p: &Path) -> C {
            let s = UnixStream::connect(p).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            C(s, Vec::new())
        }
        fn send(&mut self, m: Msg) {
            self.0.write_all(&m.encode()).unwrap();
        }
        /// Poll until one whole message came.
        fn recv(&mut self, sock: &mut XsSocket, xs: &mut Xenstore) -> Msg {
            for _ in 0..200 {
                if let Ok(Some((m, n))) = Msg::decode(&self.1) {
                    self.1.drain(..n);
                    return m;
                }
                sock.poll_in(xs);
                sock.flush_out(xs);
                let mut b = [0u8; 4096];
                if let Ok(n) = self.0.read(&mut b) {
                    self.1.extend_from_slice(&b[..n]);
                }
            }
            panic!("no message");
        }
    }

    #[test]
    fn clients_are_domain_0_with_their_own_replies_and_watches() {
        let mut mem = vec![0u8; 4 << 12];
        let mut xs = store(&mut mem);
        let p = tmp("clients");
        let mut sock = XsSocket::bind(&p).unwrap();
        let mut a = C::connect(&p);
        let mut b = C::connect(&p);
        // A request split across writes is assembled.
        let req = Msg::new(msg_type::READ, 7, 0, &b"/local/domain/1/name\0"[..]).encode();
        a.0.write_all(&req[..5]).unwrap();
        sock.poll_in(&mut xs);
        a.0.write_all(&req[5..]).unwrap();
        let r = a.recv(&mut sock, &mut xs);
        assert_eq!(
            (r.ty, r.req_id, r.payload.as_slice()),
            (msg_type::READ, 7, &b"t"[..])
        );
        assert_eq!(sock.clients(), 2);
        // b watches; a's write fires b's watch (and only b gets it).
        b.send(Msg::new(
            msg_type::WATCH,
            1,
            0,
            &b"/local/domain/1/data/x\0tok\0"[..],
        ));
        let r = b.recv(&mut sock, &mut xs);
        assert_eq!(r.ty, msg_type::WATCH);
        let r = b.recv(&mut sock, &mut xs);
        assert_eq!(
            (r.ty, r.payload.as_slice()),
            (msg_type::WATCH_EVENT, &b"/local/domain/1/data/x\0tok\0"[..])
        );
        a.send(Msg::new(
            msg_type::WRITE,
            2,
            0,
            &b"/local/domain/1/data/x\0v"[..],
        ));
        let r = a.recv(&mut sock, &mut xs);
        assert_eq!(r.ty, msg_type::WRITE);
        let r = b.recv(&mut sock, &mut xs);
        assert_eq!(r.ty, msg_type::WATCH_EVENT);
        // A toolstack write fires it too.
        let ev = xs.store.write("/local/domain/1/data/x", b"w");
        xs.fire(ev);
        let r = b.recv(&mut sock, &mut xs);
        assert_eq!(r.ty, msg_type::WATCH_EVENT);
        // Errors are the store's.
        a.send(Msg::new(msg_type::READ, 3, 0, &b"/nope\0"[..]));
        let r = a.recv(&mut sock, &mut xs);
        assert_eq!(r.error_name(), Some("ENOENT"));
        // b leaves: its watch goes with it.
        drop(b);
        for _ in 0..10 {
            sock.poll_in(&mut xs);
            sock.flush_out(&mut xs);
        }
        assert_eq!(sock.clients(), 1);
        let ev = xs.store.write("/local/domain/1/data/x", b"z");
        assert!(ev.is_empty(), "{ev:?}");
        drop(sock);
        assert!(std::fs::symlink_metadata(&p).is_err());
    }

    #[test]
    fn an_oversized_message_drops_the_client() {
        let mut mem = vec![0u8; 4 << 12];
        let mut xs = store(&mut mem);
        let p = tmp("oversized");
        let mut sock = XsSocket::bind(&p).unwrap();
        let mut a = C::connect(&p);
        let mut h = Msg::new(msg_type::READ, 1, 0, Vec::new()).encode();
        h[12..16].copy_from_slice(&4097u32.to_le_bytes());
        a.0.write_all(&h).unwrap();
        for _ in 0..10 {
            sock.poll_in(&mut xs);
            sock.flush_out(&mut xs);
        }
        assert_eq!(sock.clients(), 0);
        a.0.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut b = [0u8; 16];
        assert_eq!(a.0.read(&mut b).unwrap(), 0, "closed");
        // Exactly 4096 is fine.
        let mut a = C::connect(&p);
        let mut path = b"/local/domain/1/data/".to_vec();
        path.resize(4095, b'a');
        path.push(0);
        a.send(Msg::new(msg_type::READ, 1, 0, path));
        let r = a.recv(&mut sock, &mut xs);
        assert_eq!(r.ty, msg_type::ERROR);
        assert_eq!(sock.clients(), 1);
    }
}
