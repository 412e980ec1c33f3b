//! blkback against the mock platform ([`crate::mock`]: a HashMap xenstore with watches,
//! grants backed by a byte vector of "guest memory", recorded event-channel notifications),
//! and a small front end driving the shared ring in either ABI.

use std::collections::HashMap;

use xen_pv::core::backend::{Backend, DomId, XenbusState, XsOps};

use super::abi::*;
use super::ring::{ring_size, PAGE_SIZE};
use super::*;
use crate::mock::Mock;

const DOM: DomId = 7;
const DEVID: u32 = 51712;

/// A front end: the shared ring in guest pages, as blkfront sets it up.
struct Front {
    abi: Abi,
    pages: Vec<usize>,
    size: u32,
    req_prod_pvt: u32,
    rsp_cons: u32,
    evtchn: u32,
}

impl Front {
    fn ring_write(&self, m: &mut Mock, off: usize, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            let o = off + i;
            let p = self.pages[o / PAGE_SIZE];
            m.mem[p * PAGE_SIZE + o % PAGE_SIZE] = *b;
        }
    }
    fn ring_read(&self, m: &Mock, off: usize, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| {
                let o = off + i;
                m.mem[self.pages[o / PAGE_SIZE] * PAGE_SIZE + o % PAGE_SIZE]
            })
            .collect()
    }
    fn idx(&self, m: &Mock, off: usize) -> u32 {
        u32::from_le_bytes(self.ring_read(m, off, 4).try_into().unwrap())
    }
    fn set_idx(&self, m: &mut Mock, off: usize, v: u32) {
        self.ring_write(m, off, &v.to_le_bytes());
    }
    fn entry(&self, i: u32) -> usize {
        SRING_HEADER + (i % self.size) as usize * self.abi.entry_size()
    }
    /// Queue a request and publish req_prod (RING_PUSH_REQUESTS).
    fn push(&mut self, m: &mut Mock, req: &[u8]) {
        self.ring_write(m, self.entry(self.req_prod_pvt), req);
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        self.set_idx(m, 0, self.req_prod_pvt);
    }
    /// Consume the published responses as (id, operation, status).
    fn responses(&mut self, m: &Mock) -> Vec<(u64, u8, i16)> {
        let rp = self.idx(m, 8);
        let mut out = Vec::new();
        while self.rsp_cons != rp {
            let b = self.ring_read(m, self.entry(self.rsp_cons), self.abi.response_size());
            out.push(match self.abi {
                Abi::X86_64 => {
                    let r = Resp64::get(&b);
                    (r.id, r.operation, r.status)
                }
                Abi::X86_32 => {
                    let r = Resp32::get(&b);
                    (r.id, r.operation, r.status)
                }
            });
            self.rsp_cons += 1;
        }
        out
    }
}

fn kick(m: &mut Mock, be: &mut BlkBack) {
    let port = be.port().expect("connected");
    be.on_event(m, port);
}

fn seg(gref: u32, first: u8, last: u8) -> Segment {
    Segment {
        gref,
        first_sect: first,
        last_sect: last,
        _pad: 0,
    }
}

fn rw_req(abi: Abi, op: u8, id: u64, sector: u64, segs: &[Segment]) -> Vec<u8> {
    let mut s = [Segment::default(); 11];
    s[..segs.len()].copy_from_slice(segs);
    rw_req_n(abi, op, segs.len() as u8, id, sector, s)
}

fn rw_req_n(abi: Abi, op: u8, n: u8, id: u64, sector: u64, seg: [Segment; 11]) -> Vec<u8> {
    match abi {
        Abi::X86_64 => RwReq64 {
            operation: op,
            nr_segments: n,
            handle: DEVID as u16,
            _pad1: 0,
            id,
            sector_number: sector,
            seg,
        }
        .to_bytes(),
        Abi::X86_32 => RwReq32 {
            operation: op,
            nr_segments: n,
            handle: DEVID as u16,
            id,
            sector_number: sector,
            seg,
        }
        .to_bytes(),
    }
}

fn indirect_req(abi: Abi, op: u8, n: u16, id: u64, sector: u64, grefs: &[u32]) -> Vec<u8> {
    let mut g = [0u32; 8];
    g[..grefs.len()].copy_from_slice(grefs);
    let mut b = match abi {
        Abi::X86_64 => IndirectReq64 {
            operation: BLKIF_OP_INDIRECT,
            indirect_op: op,
            nr_segments: n,
            id,
            sector_number: sector,
            handle: 0,
            indirect_grefs: g,
            ..Default::default()
        }
        .to_bytes(),
        Abi::X86_32 => IndirectReq32 {
            operation: BLKIF_OP_INDIRECT,
            indirect_op: op,
            nr_segments: n,
            id,
            sector_number: sector,
            handle: 0,
            indirect_grefs: g,
            ..Default::default()
        }
        .to_bytes(),
    };
    b.resize(abi.entry_size(), 0);
    b
}

fn discard_req(abi: Abi, id: u64, flag: u8, sector: u64, n: u64) -> Vec<u8> {
    let mut b = match abi {
        Abi::X86_64 => DiscardReq64 {
            operation: BLKIF_OP_DISCARD,
            flag,
            id,
            sector_number: sector,
            nr_sectors: n,
            ..Default::default()
        }
        .to_bytes(),
        Abi::X86_32 => DiscardReq32 {
            operation: BLKIF_OP_DISCARD,
            flag,
            id,
            sector_number: sector,
            nr_sectors: n,
            ..Default::default()
        }
        .to_bytes(),
    };
    b.resize(abi.entry_size(), 0);
    b
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

struct Opts {
    abi: Option<Abi>,
    order: Option<u32>,
    persistent: bool,
    read_only: bool,
    sectors: usize,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            abi: Some(Abi::X86_64),
            order: None,
            persistent: false,
            read_only: false,
            sectors: 2048,
        }
    }
}

/// The toolstack writes its nodes, the back end starts (InitWait).
fn create(o: &Opts, storage: Box<dyn Storage>) -> (Mock, BlkBack) {
    let mut m = Mock::new(DOM);
    let cfg = VbdConfig::new(DOM, DEVID, o.read_only);
    for (p, v) in toolstack_nodes(&cfg, "/images/disk.img") {
        m.set(&p, &v);
    }
    let mut be = BlkBack::new(cfg, storage);
    be.start(&mut m);
    m.pump(&mut be);
    assert_eq!(be.state(), XenbusState::InitWait);
    (m, be)
}

/// The front end allocates its ring and event channel, writes its nodes, and goes
/// Initialised.
fn front_connect(m: &mut Mock, be: &mut BlkBack, o: &Opts) -> Front {
    let npages = 1usize << o.order.unwrap_or(0);
    let pages: Vec<usize> = (0..npages).map(|_| m.alloc_page()).collect();
    let abi = o.abi.unwrap_or(Abi::X86_64);
    let f = Front {
        abi,
        size: ring_size(abi, npages),
        pages: pages.clone(),
        req_prod_pvt: 0,
        rsp_cons: 0,
        evtchn: 40 + m.offered.len() as u32 + m.bound.len() as u32,
    };
    for &p in &pages {
        m.page(p).fill(0);
    }
    // SHARED_RING_INIT: req_event = rsp_event = 1.
    f.set_idx(m, 4, 1);
    f.set_idx(m, 12, 1);
    m.offered.insert(f.evtchn);
    let fe = format!("/local/domain/{DOM}/device/vbd/{DEVID}");
    let grefs: Vec<u32> = pages.iter().map(|&p| m.grant(p, false)).collect();
    match o.order {
        None => m.set(&format!("{fe}/ring-ref"), &grefs[0].to_string()),
        Some(ord) => {
            m.set(&format!("{fe}/ring-page-order"), &ord.to_string());
            for (i, g) in grefs.iter().enumerate() {
                m.set(&format!("{fe}/ring-ref{i}"), &g.to_string());
            }
        }
    }
    m.set(&format!("{fe}/event-channel"), &f.evtchn.to_string());
    if let Some(a) = o.abi {
        m.set(&format!("{fe}/protocol"), a.protocol());
    }
    m.set(
        &format!("{fe}/feature-persistent"),
        if o.persistent { "1" } else { "0" },
    );
    m.set(&format!("{fe}/state"), "3");
    m.pump(be);
    f
}

fn connected(o: Opts) -> (Mock, BlkBack, Front) {
    let disk = pattern(o.sectors * 512, 3);
    let (mut m, mut be) = create(&o, Box::new(MemStorage::new(disk, false)));
    let f = front_connect(&mut m, &mut be, &o);
    assert_eq!(be.state(), XenbusState::Connected);
    (m, be, f)
}

fn disk(be: &mut BlkBack, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    be.storage().read_at(off, &mut b).unwrap();
    b
}

const BE: &str = "/local/domain/0/backend/vbd/7/51712";
const FE: &str = "/local/domain/7/device/vbd/51712";

#[test]
fn ring_sizes_match_ring_h() {
    assert_eq!(ring_size(Abi::X86_64, 1), 32);
    assert_eq!(ring_size(Abi::X86_32, 1), 32);
    assert_eq!(ring_size(Abi::X86_64, 16), 512);
    assert_eq!(ring_size(Abi::X86_32, 4), 128);
    assert_eq!(Abi::X86_64.entry_size(), 112);
    assert_eq!(Abi::X86_32.entry_size(), 108);
    assert_eq!(Abi::X86_64.response_size(), 16);
    assert_eq!(Abi::X86_32.response_size(), 12);
}

#[test]
fn toolstack_nodes_and_names() {
    let cfg = VbdConfig::new(DOM, DEVID, true);
    let n: HashMap<String, String> = toolstack_nodes(&cfg, "/x.img").into_iter().collect();
    assert_eq!(n[&format!("{BE}/frontend")], FE);
    assert_eq!(n[&format!("{FE}/backend")], BE);
    assert_eq!(n[&format!("{FE}/virtual-device")], "51712");
    assert_eq!(n[&format!("{BE}/mode")], "r");
    assert_eq!(n[&format!("{BE}/dev")], "xvda");
    assert_eq!(xvd_name(51728), "xvdb");
    assert_eq!(xvd_name((1 << 28) | (26 << 8)), "xvdaa");
}

#[test]
fn start_writes_features_and_connects() {
    let o = Opts::default();
    let (mut m, mut be) = create(&o, Box::new(MemStorage::new(vec![0; 1 << 20], false)));
    assert_eq!(m.get(&format!("{BE}/state")).as_deref(), Some("2"));
    assert_eq!(m.get(&format!("{BE}/sectors")).as_deref(), Some("2048"));
    assert_eq!(m.get(&format!("{BE}/sector-size")).as_deref(), Some("512"));
    assert_eq!(m.get(&format!("{BE}/info")).as_deref(), Some("0"));
    assert_eq!(m.get(&format!("{BE}/mode")).as_deref(), Some("w"));
    for k in [
        "feature-flush-cache",
        "feature-barrier",
        "feature-discard",
        "feature-persistent",
    ] {
        assert_eq!(m.get(&format!("{BE}/{k}")).as_deref(), Some("1"), "{k}");
    }
    assert_eq!(m.get(&format!("{BE}/discard-secure")).as_deref(), Some("0"));
    assert_eq!(
        m.get(&format!("{BE}/feature-max-indirect-segments"))
            .as_deref(),
        Some("256")
    );
    assert_eq!(
        m.get(&format!("{BE}/max-ring-page-order")).as_deref(),
        Some("4")
    );
    assert_eq!(
        m.get(&format!("{BE}/hotplug-status")).as_deref(),
        Some("connected")
    );
    assert!(m.watches.iter().any(|(p, _)| p == &format!("{FE}/state")));
    // Front end states before Initialised change nothing.
    m.set(&format!("{FE}/state"), "2");
    m.pump(&mut be);
    assert_eq!(be.state(), XenbusState::InitWait);
    let f = front_connect(&mut m, &mut be, &o);
    assert_eq!(be.state(), XenbusState::Connected);
    assert_eq!(m.get(&format!("{BE}/state")).as_deref(), Some("4"));
    assert_eq!(be.ring_info(), Some((Abi::X86_64, 32, 1, false)));
    assert_eq!(m.bound.get(&be.port().unwrap()), Some(&f.evtchn));
    // A second watch firing with Connected is a no-op.
    m.set(&format!("{FE}/state"), "4");
    m.pump(&mut be);
    assert_eq!(be.state(), XenbusState::Connected);
    assert_eq!(m.maps.len(), 1);
}

#[test]
fn read_only_disk_nodes() {
    let o = Opts {
        read_only: true,
        ..Default::default()
    };
    let (m, be) = create(&o, Box::new(MemStorage::new(vec![0; 4096], false)));
    assert!(be.is_read_only());
    assert_eq!(m.get(&format!("{BE}/info")).as_deref(), Some("4"));
    assert_eq!(m.get(&format!("{BE}/mode")).as_deref(), Some("r"));
    assert_eq!(m.get(&format!("{BE}/feature-discard")), None);
    // A read-only storage makes the disk read-only too.
    let (m2, be2) = create(
        &Opts::default(),
        Box::new(MemStorage::new(vec![0; 4096], true)),
    );
    assert!(be2.is_read_only());
    assert_eq!(m2.get(&format!("{BE}/info")).as_deref(), Some("4"));
}

fn roundtrip(abi: Abi) {
    let (mut m, mut be, mut f) = connected(Opts {
        abi: Some(abi),
        ..Default::default()
    });
    let (p1, p2) = (m.alloc_page(), m.alloc_page());
    let data1 = pattern(4096, 100);
    let data2 = pattern(4096, 200);
    m.page(p1).copy_from_slice(&data1);
    m.page(p2).copy_from_slice(&data2);
    let (g1, g2) = (m.grant(p1, true), m.grant(p2, true));
    // Sectors 2..=7 of page 1, then 0..=3 of page 2: 10 sectors at sector 100.
    f.push(
        &mut m,
        &rw_req(
            abi,
            BLKIF_OP_WRITE,
            0xdead_beef_0000_0001,
            100,
            &[seg(g1, 2, 7), seg(g2, 0, 3)],
        ),
    );
    kick(&mut m, &mut be);
    assert_eq!(
        f.responses(&m),
        vec![(0xdead_beef_0000_0001, BLKIF_OP_WRITE, BLKIF_RSP_OKAY)]
    );
    assert_eq!(m.notified.len(), 1);
    let mut want = data1[1024..4096].to_vec();
    want.extend_from_slice(&data2[..2048]);
    assert_eq!(disk(&mut be, 100 * 512, 5120), want);
    assert_eq!(
        disk(&mut be, 99 * 512, 512),
        pattern(2048 * 512, 3)[99 * 512..100 * 512]
    );
    // Read it back into fresh (writable) pages at other offsets.
    let (p3, p4) = (m.alloc_page(), m.alloc_page());
    let (g3, g4) = (m.grant(p3, false), m.grant(p4, false));
    f.push(
        &mut m,
        &rw_req(abi, BLKIF_OP_READ, 7, 100, &[seg(g3, 0, 4), seg(g4, 3, 7)]),
    );
    kick(&mut m, &mut be);
    assert_eq!(f.responses(&m), vec![(7, BLKIF_OP_READ, BLKIF_RSP_OKAY)]);
    assert_eq!(&m.page(p3)[..2560], &want[..2560]);
    assert_eq!(&m.page(p4)[1536..4096], &want[2560..]);
    // Nothing stays mapped but the ring.
    assert_eq!(m.maps.len(), 1);
    // The back end asked to hear of the next request.
    assert_eq!(f.idx(&m, 4), 3);
}

#[test]
fn read_write_roundtrip_x86_64() {
    roundtrip(Abi::X86_64);
}

#[test]
fn read_write_roundtrip_x86_32() {
    roundtrip(Abi::X86_32);
}

#[test]
fn default_protocol_is_the_configured_native_abi() {
    let (_m, be, _f) = connected(Opts {
        abi: None,
        ..Default::default()
    });
    assert_eq!(be.ring_info().unwrap().0, Abi::X86_64);
}

#[test]
fn multi_page_ring_wraps() {
    for abi in [Abi::X86_64, Abi::X86_32] {
        let (mut m, mut be, mut f) = connected(Opts {
            abi: Some(abi),
            order: Some(2),
            ..Default::default()
        });
        assert_eq!(be.ring_info(), Some((abi, 128, 4, false)));
        let p = m.alloc_page();
        let g = m.grant(p, false);
        let mut id = 0;
        // 5 rounds of 100 requests: the ring (128) wraps and entries straddle pages.
        for _ in 0..5 {
            for _ in 0..100 {
                f.push(
                    &mut m,
                    &rw_req(abi, BLKIF_OP_READ, id, id % 2000, &[seg(g, 0, 0)]),
                );
                id += 1;
            }
            kick(&mut m, &mut be);
            let r = f.responses(&m);
            assert_eq!(r.len(), 100);
            assert!(r
                .iter()
                .all(|&(_, op, st)| op == BLKIF_OP_READ && st == BLKIF_RSP_OKAY));
            assert_eq!(r.last().unwrap().0, id - 1);
        }
        assert_eq!(
            &m.page(p)[..512],
            &pattern(2048 * 512, 3)[499 * 512..][..512]
        );
    }
}

#[test]
fn notification_only_when_front_end_asks() {
    let (mut m, mut be, mut f) = connected(Opts::default());
    let p = m.alloc_page();
    let g = m.grant(p, false);
    // The front end does not want a notification before 10 responses.
    f.set_idx(&mut m, 12, 10);
    f.push(
        &mut m,
        &rw_req(Abi::X86_64, BLKIF_OP_READ, 1, 0, &[seg(g, 0, 7)]),
    );
    kick(&mut m, &mut be);
    assert!(m.notified.is_empty());
    assert_eq!(f.responses(&m).len(), 1);
    f.set_idx(&mut m, 12, 2);
    f.push(
        &mut m,
        &rw_req(Abi::X86_64, BLKIF_OP_READ, 2, 0, &[seg(g, 0, 7)]),
    );
    kick(&mut m, &mut be);
    assert_eq!(m.notified.len(), 1);
    assert_eq!(f.responses(&m).len(), 1);
    // A spurious event with nothing queued produces nothing.
    kick(&mut m, &mut be);
    assert_eq!(m.notified.len(), 1);
    assert!(f.responses(&m).is_empty());
}

fn indirect(abi: Abi, persistent: bool) {
    let (mut m, mut be, mut f) = connected(Opts {
        abi: Some(abi),
        persistent,
        ..Default::default()
    });
    // 40 full-page segments (> 11) at sector 8: 320 sectors.
    let n = 40;
    let pages: Vec<usize> = (0..n).map(|_| m.alloc_page()).collect();
    let data = pattern(n * 4096, 77);
    for (i, &p) in pages.iter().enumerate() {
        m.page(p).copy_from_slice(&data[i * 4096..(i + 1) * 4096]);
    }
    let grefs: Vec<u32> = pages.iter().map(|&p| m.grant(p, false)).collect();
    let ip = m.alloc_page();
    // Indirect pages are granted read-only, except to a persistent-grant back end (which
    // maps every grant writable, as blkfront grants them).
    let ig = m.grant(ip, !persistent);
    let mut list = Vec::new();
    for &g in &grefs {
        list.extend(seg(g, 0, 7).to_bytes());
    }
    m.page(ip)[..list.len()].copy_from_slice(&list);
    f.push(
        &mut m,
        &indirect_req(abi, BLKIF_OP_WRITE, n as u16, 11, 8, &[ig]),
    );
    kick(&mut m, &mut be);
    assert_eq!(f.responses(&m), vec![(11, BLKIF_OP_WRITE, BLKIF_RSP_OKAY)]);
    assert_eq!(disk(&mut be, 8 * 512, n * 4096), data);
    for &p in &pages {
        m.page(p).fill(0);
    }
    f.push(
        &mut m,
        &indirect_req(abi, BLKIF_OP_READ, n as u16, 12, 8, &[ig]),
    );
    kick(&mut m, &mut be);
    assert_eq!(f.responses(&m), vec![(12, BLKIF_OP_READ, BLKIF_RSP_OKAY)]);
    for (i, &p) in pages.iter().enumerate() {
        assert_eq!(m.page(p), &data[i * 4096..(i + 1) * 4096]);
    }
}

#[test]
fn indirect_descriptors_x86_64() {
    indirect(Abi::X86_64, false);
}

#[test]
fn indirect_descriptors_x86_32() {
    indirect(Abi::X86_32, false);
}

#[test]
fn persistent_grants_are_kept_mapped() {
    let (mut m, mut be, mut f) = connected(Opts {
        persistent: true,
        ..Default::default()
    });
    assert!(be.ring_info().unwrap().3);
    let pages: Vec<usize> = (0..3).map(|_| m.alloc_page()).collect();
    let grefs: Vec<u32> = pages.iter().map(|&p| m.grant(p, false)).collect();
    let segs: Vec<Segment> = grefs.iter().map(|&g| seg(g, 0, 7)).collect();
    f.push(&mut m, &rw_req(Abi::X86_64, BLKIF_OP_READ, 1, 0, &segs));
    kick(&mut m, &mut be);
    assert_eq!(f.responses(&m), vec![(1, BLKIF_OP_READ, 0)]);
    assert_eq!(be.persistent_grants(), 3);
    assert_eq!(be.stats.data_maps, 3);
    let calls = m.map_calls;
    // The same pages again, for a write: no new mapping.
    f.push(&mut m, &rw_req(Abi::X86_64, BLKIF_OP_WRITE, 2, 40, &segs));
    kick(&mut m, &mut be);
    assert_eq!(f.responses(&m), vec![(2, BLKIF_OP_WRITE, 0)]);
    assert_eq!(m.map_calls, calls);
    assert_eq!(
        disk(&mut be, 40 * 512, 3 * 4096),
        pattern(2048 * 512, 3)[..3 * 4096]
    );
    assert_eq!(m.maps.len(), 4);
    // Indirect pages go through the cache too.
    indirect(Abi::X86_64, true);
    // Closing unmaps everything.
    m.set(&format!("{FE}/state"), "6");
    m.pump(&mut be);
    assert_eq!(be.state(), XenbusState::Closed);
    assert!(m.maps.is_empty());
    assert!(m.bound.is_empty());
}

#[test]
fn flush_barrier_and_discard() {
    for abi in [Abi::X86_64, Abi::X86_32] {
        let (mut m, mut be, mut f) = connected(Opts {
            abi: Some(abi),
            ..Default::default()
        });
        let p = m.alloc_page();
        m.page(p).copy_from_slice(&pattern(4096, 9));
        let g = m.grant(p, true);
        f.push(&mut m, &rw_req(abi, BLKIF_OP_FLUSH_DISKCACHE, 1, 0, &[]));
        f.push(
            &mut m,
            &rw_req(abi, BLKIF_OP_WRITE_BARRIER, 2, 16, &[seg(g, 0, 7)]),
        );
        f.push(&mut m, &rw_req(abi, BLKIF_OP_WRITE_BARRIER, 3, 0, &[]));
        f.push(&mut m, &discard_req(abi, 4, 0, 1000, 24));
        f.push(&mut m, &discard_req(abi, 5, BLKIF_DISCARD_SECURE, 0, 8));
        f.push(&mut m, &discard_req(abi, 6, 0, 2040, 9));
        f.push(&mut m, &discard_req(abi, 7, 0, u64::MAX - 2, 9));
        kick(&mut m, &mut be);
        assert_eq!(
            f.responses(&m),
            vec![
                (1, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_RSP_OKAY),
                (2, BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_OKAY),
                (3, BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_OKAY),
                (4, BLKIF_OP_DISCARD, BLKIF_RSP_OKAY),
                (5, BLKIF_OP_DISCARD, BLKIF_RSP_EOPNOTSUPP),
                (6, BLKIF_OP_DISCARD, BLKIF_RSP_ERROR),
                (7, BLKIF_OP_DISCARD, BLKIF_RSP_ERROR),
            ]
        );
        assert_eq!(be.stats.flushes, 3);
        assert_eq!(disk(&mut be, 16 * 512, 4096), pattern(4096, 9));
        assert_eq!(disk(&mut be, 1000 * 512, 24 * 512), vec![0; 24 * 512]);
        assert_eq!(
            disk(&mut be, 1024 * 512, 512),
            pattern(2048 * 512, 3)[1024 * 512..1025 * 512]
        );
    }
}

#[test]
fn bad_requests_get_error_responses() {
    for abi in [Abi::X86_64, Abi::X86_32] {
        let (mut m, mut be, mut f) = connected(Opts {
            abi: Some(abi),
            ..Default::default()
        });
        let p = m.alloc_page();
        let g = m.grant(p, false);
        let ro = m.grant(p, true);
        let before = disk(&mut be, 0, 2048 * 512);
        let reqs: Vec<(Vec<u8>, u8, i16)> = vec![
            (
                rw_req(abi, BLKIF_OP_READ, 0, 0, &[seg(9999, 0, 7)]),
                BLKIF_OP_READ,
                BLKIF_RSP_ERROR,
            ),
            (
                rw_req(abi, BLKIF_OP_READ, 0, 0, &[seg(g, 5, 4)]),
                BLKIF_OP_READ,
                BLKIF_RSP_ERROR,
            ),
            (
                rw_req(abi, BLKIF_OP_WRITE, 0, 0, &[seg(g, 0, 8)]),
                BLKIF_OP_WRITE,
                BLKIF_RSP_ERROR,
            ),
            (
                rw_req_n(abi, BLKIF_OP_READ, 12, 0, 0, [seg(g, 0, 0); 11]),
                BLKIF_OP_READ,
                BLKIF_RSP_ERROR,
            ),
            (
                rw_req(abi, BLKIF_OP_READ, 0, 0, &[]),
                BLKIF_OP_READ,
                BLKIF_RSP_ERROR,
            ),
            (
                rw_req(abi, BLKIF_OP_READ, 0, 2047, &[seg(g, 0, 1)]),
                BLKIF_OP_READ,
                BLKIF_RSP_ERROR,
            ),
            (
                rw_req(abi, BLKIF_OP_WRITE, 0, u64::MAX, &[seg(g, 0, 1)]),
                BLKIF_OP_WRITE,
                BLKIF_RSP_ERROR,
            ),
            // A READ needs to write the page: a read-only grant fails to map.
            (
                rw_req(abi, BLKIF_OP_READ, 0, 0, &[seg(ro, 0, 7)]),
                BLKIF_OP_READ,
                BLKIF_RSP_ERROR,
            ),
            // The first segment maps, the second does not: nothing leaks, nothing written.
            (
                rw_req(abi, BLKIF_OP_WRITE, 0, 0, &[seg(g, 0, 7), seg(4242, 0, 7)]),
                BLKIF_OP_WRITE,
                BLKIF_RSP_ERROR,
            ),
            (rw_req(abi, 4, 0, 0, &[]), 4, BLKIF_RSP_EOPNOTSUPP),
            (rw_req(abi, 200, 0, 0, &[]), 200, BLKIF_RSP_EOPNOTSUPP),
            (
                indirect_req(abi, BLKIF_OP_FLUSH_DISKCACHE, 1, 0, 0, &[g]),
                BLKIF_OP_FLUSH_DISKCACHE,
                BLKIF_RSP_ERROR,
            ),
            (
                indirect_req(abi, BLKIF_OP_READ, 257, 0, 0, &[g]),
                BLKIF_OP_READ,
                BLKIF_RSP_ERROR,
            ),
            (
                indirect_req(abi, BLKIF_OP_READ, 0, 0, 0, &[g]),
                BLKIF_OP_READ,
                BLKIF_RSP_ERROR,
            ),
            (
                indirect_req(abi, BLKIF_OP_READ, 1, 0, 0, &[777]),
                BLKIF_OP_READ,
                BLKIF_RSP_ERROR,
            ),
            // A valid request still works after all that.
            (
                rw_req(abi, BLKIF_OP_READ, 0, 2047, &[seg(g, 7, 7)]),
                BLKIF_OP_READ,
                BLKIF_RSP_OKAY,
            ),
        ];
        // The indirect page for the "bad gref in an indirect page" case: a segment list with
        // a bad gref (page p holds zeros → gref 0, unknown).
        for (i, (r, _, _)) in reqs.iter().enumerate() {
            let mut r = r.clone();
            // Give each request its index as id (the id sits at offset 8 / 4).
            let at = if abi == Abi::X86_64 { 8 } else { 4 };
            r[at..at + 8].copy_from_slice(&(i as u64).to_le_bytes());
            f.push(&mut m, &r);
        }
        kick(&mut m, &mut be);
        let got = f.responses(&m);
        let want: Vec<(u64, u8, i16)> = reqs
            .iter()
            .enumerate()
            .map(|(i, &(_, op, st))| (i as u64, op, st))
            .collect();
        assert_eq!(got, want, "{abi:?}");
        assert_eq!(disk(&mut be, 0, 2048 * 512), before);
        assert_eq!(m.maps.len(), 1, "only the ring stays mapped");
        assert!(!be.halted());
    }
}

#[test]
fn write_on_read_only_disk_fails() {
    let o = Opts {
        read_only: true,
        ..Default::default()
    };
    let (mut m, mut be) = create(&o, Box::new(MemStorage::new(pattern(1 << 20, 1), false)));
    let mut f = front_connect(&mut m, &mut be, &o);
    let p = m.alloc_page();
    let g = m.grant(p, false);
    f.push(
        &mut m,
        &rw_req(Abi::X86_64, BLKIF_OP_WRITE, 1, 0, &[seg(g, 0, 7)]),
    );
    f.push(
        &mut m,
        &rw_req(Abi::X86_64, BLKIF_OP_WRITE_BARRIER, 2, 0, &[]),
    );
    f.push(&mut m, &discard_req(Abi::X86_64, 3, 0, 0, 8));
    f.push(
        &mut m,
        &rw_req(Abi::X86_64, BLKIF_OP_READ, 4, 0, &[seg(g, 0, 7)]),
    );
    kick(&mut m, &mut be);
    assert_eq!(
        f.responses(&m),
        vec![
            (1, BLKIF_OP_WRITE, -1),
            (2, BLKIF_OP_WRITE_BARRIER, -1),
            (3, BLKIF_OP_DISCARD, -2),
            (4, BLKIF_OP_READ, 0)
        ]
    );
    assert_eq!(disk(&mut be, 0, 1 << 20), pattern(1 << 20, 1));
    assert_eq!(m.page(p), &pattern(1 << 20, 1)[..4096]);
}

#[test]
fn bogus_req_prod_halts_the_ring() {
    let (mut m, mut be, mut f) = connected(Opts::default());
    let p = m.alloc_page();
    let g = m.grant(p, false);
    f.push(
        &mut m,
        &rw_req(Abi::X86_64, BLKIF_OP_READ, 1, 0, &[seg(g, 0, 7)]),
    );
    kick(&mut m, &mut be);
    assert_eq!(f.responses(&m).len(), 1);
    // req_prod claims 33 requests beyond the responses of a 32-entry ring.
    f.set_idx(&mut m, 0, 1 + 33);
    let notified = m.notified.len();
    kick(&mut m, &mut be);
    assert!(be.halted());
    assert!(f.responses(&m).is_empty());
    assert_eq!(m.notified.len(), notified);
    // Even a sane req_prod is ignored until the front end reconnects.
    f.set_idx(&mut m, 0, 2);
    kick(&mut m, &mut be);
    assert!(f.responses(&m).is_empty());
    // Exactly one ring ahead is legal.
    let (mut m, mut be, mut f) = connected(Opts::default());
    let p = m.alloc_page();
    let g = m.grant(p, false);
    for i in 0..32 {
        f.push(
            &mut m,
            &rw_req(Abi::X86_64, BLKIF_OP_READ, i, 0, &[seg(g, 0, 0)]),
        );
    }
    kick(&mut m, &mut be);
    assert_eq!(f.responses(&m).len(), 32);
    assert!(!be.halted());
}

#[test]
fn bad_frontend_nodes_are_fatal() {
    let err = format!("/local/domain/0/error/backend/vbd/{DOM}/{DEVID}/error");
    let cases: Vec<(&str, Option<&str>)> = vec![
        ("ring-ref", None),
        ("ring-ref", Some("nonsense")),
        ("event-channel", None),
        ("protocol", Some("arm-abi")),
        ("ring-page-order", Some("5")),
        ("multi-queue-num-queues", Some("4")),
        // A ring gref the guest never granted, an event channel it never offered.
        ("ring-ref", Some("31337")),
        ("event-channel", Some("999")),
    ];
    for (node, val) in cases {
        let o = Opts::default();
        let (mut m, mut be) = create(&o, Box::new(MemStorage::new(vec![0; 1 << 20], false)));
        // The front end writes its nodes unseen (no watch), breaks one, then goes Initialised.
        let w = std::mem::take(&mut m.watches);
        let _f = front_connect(&mut m, &mut be, &o);
        m.watches = w;
        match val {
            None => {
                XsOps::rm(&mut m, &format!("{FE}/{node}"));
            }
            Some(v) => m.set(&format!("{FE}/{node}"), v),
        }
        m.pending.clear();
        m.set(&format!("{FE}/state"), "3");
        m.pump(&mut be);
        assert_eq!(be.state(), XenbusState::Closing, "{node}={val:?}");
        assert_eq!(m.get(&format!("{BE}/state")).as_deref(), Some("5"));
        assert!(m.get(&err).is_some(), "{node}: error node");
        assert!(m.maps.is_empty(), "{node}: nothing left mapped");
        assert!(m.bound.is_empty(), "{node}: nothing left bound");
        // The front end closes; the back end follows.
        m.set(&format!("{FE}/state"), "6");
        m.pump(&mut be);
        assert_eq!(be.state(), XenbusState::Closed);
    }
}

#[test]
fn close_and_reconnect() {
    let o = Opts {
        order: Some(1),
        ..Default::default()
    };
    let (mut m, mut be, mut f) = connected(Opts {
        order: Some(1),
        ..Default::default()
    });
    let p = m.alloc_page();
    let g = m.grant(p, true);
    m.page(p).copy_from_slice(&pattern(4096, 55));
    f.push(
        &mut m,
        &rw_req(Abi::X86_64, BLKIF_OP_WRITE, 1, 64, &[seg(g, 0, 7)]),
    );
    kick(&mut m, &mut be);
    assert_eq!(f.responses(&m), vec![(1, BLKIF_OP_WRITE, 0)]);
    let old_port = be.port().unwrap();
    m.set(&format!("{FE}/state"), "5");
    m.pump(&mut be);
    assert_eq!(be.state(), XenbusState::Closing);
    m.set(&format!("{FE}/state"), "6");
    m.pump(&mut be);
    assert_eq!(be.state(), XenbusState::Closed);
    assert_eq!(m.get(&format!("{BE}/state")).as_deref(), Some("6"));
    assert!(m.maps.is_empty());
    assert!(m.bound.is_empty());
    // Removing the front end's directory after a close changes nothing.
    XsOps::rm(&mut m, FE);
    XsOps::rm(&mut m, FE);
    m.pump(&mut be);
    assert_eq!(be.state(), XenbusState::Closed);
    m.set(&format!("{FE}/state"), "6");
    // Events on the old port are ignored.
    be.on_event(&mut m, old_port);
    // The front end restarts (e.g. the guest kernel after PV-GRUB, or a module reload).
    m.set(&format!("{FE}/state"), "1");
    m.pump(&mut be);
    assert_eq!(be.state(), XenbusState::InitWait);
    let o32 = Opts {
        abi: Some(Abi::X86_32),
        ..o
    };
    let mut f = front_connect(&mut m, &mut be, &o32);
    assert_eq!(be.state(), XenbusState::Connected);
    assert_eq!(be.ring_info(), Some((Abi::X86_32, 64, 2, false)));
    let q = m.alloc_page();
    let gq = m.grant(q, false);
    f.push(
        &mut m,
        &rw_req(Abi::X86_32, BLKIF_OP_READ, 2, 64, &[seg(gq, 0, 7)]),
    );
    kick(&mut m, &mut be);
    assert_eq!(f.responses(&m), vec![(2, BLKIF_OP_READ, 0)]);
    assert_eq!(m.page(q), &pattern(4096, 55)[..]);
    // Shutdown unmaps and unbinds.
    be.shutdown(&mut m);
    assert!(m.maps.is_empty() && m.bound.is_empty());
}

// ---- storage ----

fn tmp(name: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("xenolith-blk-{}-{n}-{name}", std::process::id()))
}

#[test]
fn raw_file_storage() {
    let path = tmp("raw.img");
    std::fs::write(&path, pattern(64 * 1024, 4)).unwrap();
    {
        let mut ro = RawFile::open(&path, true).unwrap();
        assert!(ro.read_only());
        assert_eq!(ro.len(), 65536);
        assert!(ro.write_at(0, &[1]).is_err());
        assert!(ro.discard(0, 512).is_err());
        let mut b = [0u8; 512];
        assert!(ro.read_at(65536 - 256, &mut b).is_err());
        assert!(ro.read_at(u64::MAX - 10, &mut b).is_err());
        ro.read_at(512, &mut b).unwrap();
        assert_eq!(&b[..], &pattern(64 * 1024, 4)[512..1024]);
    }
    {
        let mut rw = RawFile::open(&path, false).unwrap();
        rw.write_at(1000, &[9; 100]).unwrap();
        rw.discard(8192, 4096).unwrap();
        assert!(rw.write_at(65500, &[0; 100]).is_err());
        rw.flush().unwrap();
    }
    let mut want = pattern(64 * 1024, 4);
    want[1000..1100].fill(9);
    want[8192..12288].fill(0);
    assert_eq!(std::fs::read(&path).unwrap(), want);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn cow_overlay_storage() {
    let base = tmp("base.img");
    let ov = tmp("overlay.cow");
    // 5.5 blocks: the last block is partial.
    let size = 5 * 4096 + 2048;
    let orig = pattern(size, 6);
    std::fs::write(&base, &orig).unwrap();
    let mut want = orig.clone();
    {
        let mut c = CowOverlay::open(&base, &ov).unwrap();
        assert_eq!(c.len(), size as u64);
        assert!(!c.read_only());
        // Straddles blocks 0 and 1, partial in both.
        c.write_at(4000, &[1; 200]).unwrap();
        want[4000..4200].fill(1);
        // A full block, then a rewrite inside it.
        c.write_at(8192, &[2; 4096]).unwrap();
        c.write_at(8192 + 100, &[3; 10]).unwrap();
        want[8192..12288].fill(2);
        want[8292..8302].fill(3);
        // The partial last block.
        c.write_at(size as u64 - 10, &[4; 10]).unwrap();
        want[size - 10..].fill(4);
        // Discard: block 3 whole (becomes zeros), part of block 4.
        c.discard(3 * 4096, 4096 + 512).unwrap();
        want[3 * 4096..4 * 4096 + 512].fill(0);
        assert!(c.write_at(size as u64 - 1, &[0; 2]).is_err());
        assert!(c.discard(size as u64, 1).is_err());
        let mut b = [0u8; 2];
        assert!(c.read_at(size as u64 - 1, &mut b).is_err());
        let mut all = vec![0u8; size];
        c.read_at(0, &mut all).unwrap();
        assert_eq!(all, want);
        c.flush().unwrap();
    }
    assert_eq!(
        std::fs::read(&base).unwrap(),
        orig,
        "the base is never modified"
    );
    {
        let mut c = CowOverlay::open(&base, &ov).unwrap();
        let mut all = vec![0u8; size];
        c.read_at(0, &mut all).unwrap();
        assert_eq!(all, want, "a reopened overlay sees the earlier writes");
        c.write_at(0, &[5; 4]).unwrap();
        want[..4].fill(5);
    }
    {
        let mut c = CowOverlay::open(&base, &ov).unwrap();
        let mut all = vec![0u8; size];
        c.read_at(0, &mut all).unwrap();
        assert_eq!(all, want);
    }
    // An overlay made for another base is refused; so is garbage.
    let other = tmp("other.img");
    std::fs::write(&other, vec![0u8; 4096]).unwrap();
    assert!(CowOverlay::open(&other, &ov).is_err());
    let junk = tmp("junk.cow");
    std::fs::write(&junk, b"not an overlay").unwrap();
    assert!(CowOverlay::open(&base, &junk).is_err());
    for p in [&base, &ov, &other, &junk] {
        std::fs::remove_file(p).unwrap();
    }
}

#[test]
fn blkback_over_cow_overlay() {
    let base = tmp("vbd-base.img");
    let ov = tmp("vbd.cow");
    let orig = pattern(1 << 20, 8);
    std::fs::write(&base, &orig).unwrap();
    let o = Opts::default();
    let (mut m, mut be) = create(&o, Box::new(CowOverlay::open(&base, &ov).unwrap()));
    assert_eq!(m.get(&format!("{BE}/sectors")).as_deref(), Some("2048"));
    let mut f = front_connect(&mut m, &mut be, &o);
    let p = m.alloc_page();
    m.page(p).copy_from_slice(&pattern(4096, 99));
    let g = m.grant(p, false);
    f.push(
        &mut m,
        &rw_req(Abi::X86_64, BLKIF_OP_WRITE, 1, 3, &[seg(g, 1, 3)]),
    );
    f.push(
        &mut m,
        &rw_req(Abi::X86_64, BLKIF_OP_FLUSH_DISKCACHE, 2, 0, &[]),
    );
    kick(&mut m, &mut be);
    assert_eq!(
        f.responses(&m),
        vec![(1, BLKIF_OP_WRITE, 0), (2, BLKIF_OP_FLUSH_DISKCACHE, 0)]
    );
    be.shutdown(&mut m);
    drop(be);
    assert_eq!(std::fs::read(&base).unwrap(), orig);
    let mut c = CowOverlay::open(&base, &ov).unwrap();
    let mut b = vec![0u8; 1536];
    c.read_at(3 * 512, &mut b).unwrap();
    assert_eq!(b, pattern(4096, 99)[512..2048]);
    std::fs::remove_file(&base).unwrap();
    std::fs::remove_file(&ov).unwrap();
}

#[test]
fn mem_storage_bounds() {
    let mut s = MemStorage::new(vec![0; 1024], false);
    let mut b = [0u8; 16];
    assert!(s.read_at(1020, &mut b).is_err());
    assert!(s.write_at(u64::MAX, &b).is_err());
    assert!(s.discard(1000, 100).is_err());
    s.write_at(1008, &[1; 16]).unwrap();
    s.read_at(1008, &mut b).unwrap();
    assert_eq!(b, [1; 16]);
}
