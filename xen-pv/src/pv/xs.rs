//! The domain's xenstore: the store (engine-agnostic core), the guest's ring connection,
//! and the tree Xen's toolstack (libxl) writes for a PV domU before it starts.

use crate::core::xenstore::{Access, ConnId, DomId, Msg, Perm, Store};
use crate::core::xsring::RingConn;
use crate::core::GuestPhys;

/// Our domain id (the only guest).
pub const DOMID: DomId = 1;

pub struct Xenstore {
    pub store: Store,
    pub ring: RingConn,
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
        Xenstore { store, ring }
    }

    /// The guest notified its store channel (or might have consumed responses): process
    /// its requests. True when the guest should be notified.
    pub fn service(&mut self, mem: &mut dyn GuestPhys) -> bool {
        let (notify, others) = self.ring.service(mem, &mut self.store);
        self.deliver(others);
        notify
    }

    /// Messages for connections other than the guest's ring (host socket clients, later).
    fn deliver(&mut self, msgs: Vec<(ConnId, Msg)>) {
        for (c, m) in msgs {
            if c == self.ring.conn {
                self.ring.push(&m);
            }
        }
    }
}

/// The tree libxl makes for a PV domU (libxl__domain_make, libxl__build_post): the domain
/// directory readable by the guest, the directories it may write to, memory targets and
/// the console and store rings.
fn build_tree(s: &mut Store, dom: DomId, info: &DomainInfo) {
    let base = format!("/local/domain/{dom}");
    let ro = [Perm { dom: 0, access: Access::None }, Perm { dom, access: Access::Read }];
    let rw = [Perm { dom, access: Access::None }];
    let vm = "/vm/00000000-0000-0000-0000-000000000001".to_string();
    s.mkdir(&base);
    s.set_perms(&base, &ro);
    for d in ["cpu", "memory", "device", "control", "console", "store", "image"] {
        let p = format!("{base}/{d}");
        s.mkdir(&p);
        s.set_perms(&p, &ro);
    }
    for d in ["control/shutdown", "control/feature-poweroff", "control/feature-reboot", "control/feature-suspend", "control/sysrq", "data", "drivers", "feature", "attr", "error"] {
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
        ("control/platform-feature-multiprocessor-suspend".into(), "1".into()),
        ("control/platform-feature-xs_reset_watches".into(), "1".into()),
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
    s.write(&format!("{vm}/uuid"), b"00000000-0000-0000-0000-000000000001");
    s.introduce(dom);
}
