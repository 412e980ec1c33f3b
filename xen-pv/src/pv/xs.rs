//! The domain's xenstore: the store (engine-agnostic core), the guest's ring connection,
//! and the tree Xen's toolstack (libxl) writes for a PV domU before it starts.

use std::collections::VecDeque;

use crate::core::xenstore::{msg_type, Access, ConnId, DomId, Msg, Perm, Store};
use crate::core::xsring::RingConn;
use crate::core::GuestPhys;

/// Our domain id (the only guest).
pub const DOMID: DomId = 1;

pub struct Xenstore {
    pub store: Store,
    pub ring: RingConn,
    /// Domain 0's connection, which the back ends in `devices/` use.
    pub backend_conn: ConnId,
    /// Watch events for the back ends: (path, token).
    pub backend_events: VecDeque<(String, String)>,
    /// Responses were queued for the guest's ring since the last flush.
    pub ring_dirty: bool,
    /// Messages for other connections (the host socket's clients, see `xsock.rs`), in
    /// order, until their transport takes them.
    pub external: Vec<(ConnId, Msg)>,
}

/// What the toolstack writes about the domain.
pub struct DomainInfo<'a> {
    pub name: &'a str,
    pub memory_kib: u64,
    pub store_pfn: u64,
    pub store_port: u32,
    pub console_pfn: u64,
    pub console_port: u32,
}

impl Xenstore {
    /// A store with the domain's tree, connected to its ring page.
    pub fn new(mem: &mut dyn GuestPhys, info: &DomainInfo) -> Xenstore {
        let mut store = Store::new();
        build_tree(&mut store, DOMID, info);
        let ring = RingConn::new(mem, info.store_pfn << 12, &mut store, DOMID);
        let backend_conn = store.connect(0);
        Xenstore {
            store,
            ring,
            backend_conn,
            backend_events: VecDeque::new(),
            ring_dirty: false,
            external: Vec::new(),
        }
    }

    /// Domain 0 (a back end) sends `ty` with `payload`; the reply, if an error, is None.
    pub fn dom0_request(&mut self, ty: u32, payload: &[u8]) -> Option<Vec<u8>> {
        let out = self
            .store
            .handle(self.backend_conn, &Msg::new(ty, 0, 0, payload.to_vec()));
        let mut reply = None;
        let mut rest = Vec::new();
        for (i, (c, m)) in out.into_iter().enumerate() {
            if i == 0 && c == self.backend_conn {
                reply = (m.ty != msg_type::ERROR).then_some(m.payload);
            } else {
                rest.push((c, m));
            }
        }
        self.deliver(rest);
        reply
    }

    /// Deliver watch events a direct (toolstack) store change produced.
    pub fn fire(&mut self, events: Vec<(ConnId, Msg)>) {
        self.deliver(events);
    }

    /// Flush queued responses and events into the guest's ring. True when the guest
    /// should be notified.
    pub fn flush_ring(&mut self, mem: &mut dyn GuestPhys) -> bool {
        self.ring_dirty = false;
        self.ring.flush(mem)
    }

    /// The guest notified its store channel (or might have consumed responses): process
    /// its requests. True when the guest should be notified.
    pub fn service(&mut self, mem: &mut dyn GuestPhys) -> bool {
        let (notify, others) = self.ring.service(mem, &mut self.store);
        self.deliver(others);
        notify
    }

    /// A request from another connection (a host socket client): handle it and route the
    /// reply and the watch events it fired.
    pub fn request(&mut self, conn: ConnId, m: &Msg) {
        let out = self.store.handle(conn, m);
        self.deliver(out);
    }

    /// Route messages: the guest's ring, domain 0's watch events to the back ends, and
    /// everything for other connections to `external`.
    fn deliver(&mut self, msgs: Vec<(ConnId, Msg)>) {
        for (c, m) in msgs {
            if c == self.ring.conn {
                self.ring.push(&m);
                self.ring_dirty = true;
            } else if c == self.backend_conn && m.ty == msg_type::WATCH_EVENT {
                let mut parts = m.payload.split(|&b| b == 0);
                let path = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                let token = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                self.backend_events.push_back((path, token));
            } else if c != self.backend_conn {
                self.external.push((c, m));
            }
        }
    }
}

/// The tree libxl makes for a PV domU (libxl__domain_make, libxl__build_post): the domain
/// directory readable by the guest, the directories it may write to, memory targets and
/// the console and store rings.
fn build_tree(s: &mut Store, dom: DomId, info: &DomainInfo) {
    let base = format!("/local/domain/{dom}");
    let ro = [
        Perm {
            dom: 0,
            access: Access::None,
        },
        Perm {
            dom,
            access: Access::Read,
        },
    ];
    let rw = [Perm {
        dom,
        access: Access::None,
    }];
    let vm = "/vm/00000000-0000-0000-0000-000000000001".to_string();
    s.mkdir(&base);
    s.set_perms(&base, &ro);
    for d in [
        "cpu", "memory", "device", "control", "console", "store", "image",
    ] {
        let p = format!("{base}/{d}");
        s.mkdir(&p);
        s.set_perms(&p, &ro);
    }
    for d in [
        "control/shutdown",
        "control/feature-poweroff",
        "control/feature-reboot",
        "control/feature-suspend",
        "control/sysrq",
        "data",
        "drivers",
        "feature",
        "attr",
        "error",
    ] {
        let p = format!("{base}/{d}");
        s.mkdir(&p);
        s.set_perms(&p, &rw);
    }
    let kib = info.memory_kib.to_string();
    let vals: Vec<(String, String)> = vec![
        ("domid".into(), dom.to_string()),
        ("name".into(), info.name.to_string()),
        ("vm".into(), vm.clone()),
        ("cpu/0/availability".into(), "online".into()),
        ("memory/static-max".into(), kib.clone()),
        ("memory/target".into(), kib.clone()),
        ("memory/videoram".into(), "-1".into()),
        (
            "control/platform-feature-multiprocessor-suspend".into(),
            "1".into(),
        ),
        (
            "control/platform-feature-xs_reset_watches".into(),
            "1".into(),
        ),
        ("console/ring-ref".into(), info.console_pfn.to_string()),
        ("console/port".into(), info.console_port.to_string()),
        ("console/limit".into(), "1048576".into()),
        ("console/type".into(), "xenconsoled".into()),
        ("console/output".into(), "pty".into()),
        ("store/ring-ref".into(), info.store_pfn.to_string()),
        ("store/port".into(), info.store_port.to_string()),
        ("image/os_type".into(), "linux".into()),
    ];
    for (k, v) in vals {
        let p = format!("{base}/{k}");
        s.write(&p, v.as_bytes());
        // Toolstack-written nodes: owned by dom0, readable by the guest.
        s.set_perms(&p, &ro);
    }
    s.write(&format!("{vm}/name"), info.name.as_bytes());
    s.write(
        &format!("{vm}/uuid"),
        b"00000000-0000-0000-0000-000000000001",
    );
    s.introduce(dom);
}
