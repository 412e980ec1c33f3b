//! consoleback against the mock platform ([`crate::mock`]: a HashMap xenstore with
//! watches, grant entry 0 backed by a page of "guest memory", an event channel offered to
//! domain 0, recorded notifications) and a `Vec` sink. The tests play the guest's side of
//! the ring.

use std::cell::RefCell;
use std::rc::Rc;

use xen_pv::core::backend::{Backend, DomId, XsOps};

use super::*;
use crate::mock::{Mock, LOCAL_PORT_OFFSET};

const DOM: DomId = 3;
/// The console page: the first page of the mock's guest memory.
const RING_PAGE: usize = 0;
/// The guest's console port (start_info.console.evtchn).
const GPORT: u32 = 2;

/// The platform as the toolstack leaves it for the console: the console page granted as
/// grant 0 (writable), its nodes in the store, the guest's port offered to domain 0.
fn mock() -> Mock {
    let mut m = Mock::new(DOM);
    let page = m.alloc_page();
    assert_eq!(page, RING_PAGE);
    m.grants.insert(GNTTAB_RESERVED_CONSOLE, (page, false));
    m.offered.insert(GPORT);
    m.xs.insert(
        format!("/local/domain/{DOM}/console/ring-ref"),
        b"4660".to_vec(),
    );
    m.xs.insert(
        format!("/local/domain/{DOM}/console/port"),
        GPORT.to_string().into_bytes(),
    );
    m
}

/// The guest's side of the console ring (struct xencons_interface in the console page).
impl Mock {
    fn idx(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.page_ref(RING_PAGE)[off..off + 4].try_into().unwrap())
    }
    fn set_idx(&mut self, off: usize, v: u32) {
        self.page(RING_PAGE)[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn out_cons(&self) -> u32 {
        self.idx(3080)
    }
    fn out_prod(&self) -> u32 {
        self.idx(3084)
    }
    fn in_cons(&self) -> u32 {
        self.idx(3072)
    }
    fn in_prod(&self) -> u32 {
        self.idx(3076)
    }
    /// The guest's side: produce into `out` (as hvc_xen's __write_console, which writes
    /// only what fits) and publish out_prod. Returns how many bytes fit.
    fn guest_write(&mut self, data: &[u8]) -> usize {
        let (cons, mut prod) = (self.out_cons(), self.out_prod());
        let mut n = 0;
        while n < data.len() && prod.wrapping_sub(cons) < 2048 {
            self.page(RING_PAGE)[1024 + (prod & 2047) as usize] = data[n];
            prod = prod.wrapping_add(1);
            n += 1;
        }
        self.set_idx(3084, prod);
        n
    }
    /// The guest's side: consume everything in `in`.
    fn guest_read(&mut self) -> Vec<u8> {
        let (mut cons, prod) = (self.in_cons(), self.in_prod());
        let mut v = Vec::new();
        while cons != prod {
            v.push(self.page_ref(RING_PAGE)[(cons & 1023) as usize]);
            cons = cons.wrapping_add(1);
        }
        self.set_idx(3072, cons);
        v
    }
    fn local_port(&self) -> u32 {
        self.bound_to(GPORT).expect("bound")
    }
}

type Sink = Rc<RefCell<Vec<u8>>>;

fn started() -> (Mock, ConsoleBack, Sink) {
    let mut m = mock();
    let sink: Sink = Rc::default();
    let mut be = ConsoleBack::new(DOM, Box::new(sink.clone()));
    be.start(&mut m);
    m.pump(&mut be);
    (m, be, sink)
}

fn out(s: &Sink) -> String {
    String::from_utf8_lossy(&s.borrow()).into_owned()
}

#[test]
fn connects_through_grant_zero_and_the_offered_port() {
    let (m, be, _) = started();
    assert!(be.connected());
    assert_eq!(
        m.maps
            .values()
            .map(|&(_, writable)| writable)
            .collect::<Vec<_>>(),
        vec![true],
        "one writable mapping"
    );
    assert_eq!(be.port(), Some(m.local_port()));
    assert!(m.notified.is_empty(), "nothing to say yet");
}

#[test]
fn output_is_drained_on_the_event_and_the_guest_notified() {
    let (mut m, mut be, sink) = started();
    m.guest_write(b"hello, ");
    let p = m.local_port();
    be.on_event(&mut m, p);
    assert_eq!(out(&sink), "hello, ");
    assert_eq!(m.out_cons(), m.out_prod());
    assert_eq!(m.notified, vec![p]);
    // An event on some other port is not ours.
    m.guest_write(b"world");
    be.on_event(&mut m, p + 1);
    assert_eq!(out(&sink), "hello, ");
    // A poll (the guest yielded) picks it up.
    be.poll(&mut m);
    assert_eq!(out(&sink), "hello, world");
    assert_eq!(m.notified, vec![p, p]);
    // Nothing new: no notification.
    be.poll(&mut m);
    assert_eq!(m.notified.len(), 2);
}

#[test]
fn output_wraps_around_the_ring_and_the_index_space() {
    for start in [2040u32, u32::MAX - 5, 0xffff_f800] {
        let (mut m, mut be, sink) = started();
        m.set_idx(3080, start);
        m.set_idx(3084, start);
        let msg: Vec<u8> = (0..100u8).collect();
        assert_eq!(m.guest_write(&msg), 100);
        be.poll(&mut m);
        assert_eq!(*sink.borrow(), msg, "start {start:#x}");
        assert_eq!(m.out_cons(), start.wrapping_add(100));
    }
}

#[test]
fn partial_drains_keep_order_and_a_full_ring_is_consumed_whole() {
    let (mut m, mut be, sink) = started();
    let text: Vec<u8> = (0..5000).map(|i| b'a' + (i % 26) as u8).collect();
    let mut sent = 0;
    // The guest writes what fits, then yields until the ring drains (hvc_xen's loop).
    while sent < text.len() {
        sent += m.guest_write(&text[sent..]);
        if m.out_prod().wrapping_sub(m.out_cons()) == 2048 {
            be.poll(&mut m);
        }
    }
    be.poll(&mut m);
    assert_eq!(*sink.borrow(), text);
    assert_eq!(be.out_bytes, 5000);
    assert_eq!(m.out_cons(), 5000);
}

#[test]
fn garbled_output_indexes_are_ignored_as_xenconsoled_does() {
    for (cons, prod) in [(0u32, 2049u32), (100, 99), (0, u32::MAX), (5, 0x8000_0005)] {
        let (mut m, mut be, sink) = started();
        m.set_idx(3080, cons);
        m.set_idx(3084, prod);
        be.poll(&mut m);
        let p = m.local_port();
        be.on_event(&mut m, p);
        assert!(sink.borrow().is_empty(), "{cons} {prod}");
        assert_eq!(
            (m.out_cons(), m.out_prod()),
            (cons, prod),
            "indexes untouched"
        );
        assert!(m.notified.is_empty());
        // The guest repairs its ring: output flows again.
        m.set_idx(3080, prod);
        m.guest_write(b"ok");
        be.poll(&mut m);
        assert_eq!(out(&sink), "ok");
    }
}

#[test]
fn input_goes_into_the_ring_and_waits_when_it_is_full() {
    let (mut m, mut be, _) = started();
    let p = m.local_port();
    be.input(&mut m, b"ls\r");
    assert_eq!(m.in_prod(), 3);
    assert_eq!(m.notified, vec![p]);
    assert_eq!(m.guest_read(), b"ls\r");
    // More than the ring holds: 1024 now, the rest when the guest has read.
    let big: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    be.input(&mut m, &big);
    assert_eq!(m.in_prod().wrapping_sub(m.in_cons()), 1024);
    assert_eq!(be.pending_input(), 3000 - 1024);
    let mut got = m.guest_read();
    // A full ring takes nothing and does not notify.
    let n = m.notified.len();
    be.input(&mut m, b"");
    be.poll(&mut m);
    assert_eq!(
        m.notified.len(),
        n + 1,
        "the poll after the guest read produced more"
    );
    while be.pending_input() > 0 || m.in_prod() != m.in_cons() {
        got.extend(m.guest_read());
        be.on_event(&mut m, p);
    }
    assert_eq!(got, big, "in order across the wrap");
    assert_eq!(be.in_bytes, 3003);
}

#[test]
fn input_into_a_full_ring_stays_queued() {
    let (mut m, mut be, _) = started();
    be.input(&mut m, &[b'x'; 1024]);
    assert_eq!(be.pending_input(), 0);
    let n = m.notified.len();
    be.input(&mut m, b"y");
    assert_eq!(be.pending_input(), 1);
    assert_eq!(m.in_prod(), 1024);
    assert_eq!(m.notified.len(), n, "nothing produced, no notification");
    m.set_idx(3072, 1); // the guest read one byte
    be.poll(&mut m);
    assert_eq!(m.in_prod(), 1025);
    assert_eq!(m.page(RING_PAGE)[0], b'y');
}

#[test]
fn garbled_input_indexes_take_nothing() {
    let (mut m, mut be, _) = started();
    m.set_idx(3072, 0);
    m.set_idx(3076, 1025);
    be.input(&mut m, b"abc");
    assert_eq!(m.in_prod(), 1025);
    assert_eq!(be.pending_input(), 3);
    assert!(m.notified.is_empty());
    // in_cons ahead of in_prod: also more than the ring.
    m.set_idx(3072, 10);
    m.set_idx(3076, 5);
    be.poll(&mut m);
    assert_eq!(m.in_prod(), 5);
    // Repaired: delivered.
    m.set_idx(3072, 5);
    be.poll(&mut m);
    assert_eq!(m.guest_read(), b"abc");
}

#[test]
fn input_before_the_connection_is_delivered_on_connect() {
    let mut m = mock();
    let sink: Sink = Rc::default();
    let mut be = ConsoleBack::new(DOM, Box::new(sink.clone()));
    be.input(&mut m, b"early");
    be.poll(&mut m);
    assert_eq!(be.pending_input(), 5);
    be.start(&mut m);
    m.pump(&mut be);
    assert_eq!(m.guest_read(), b"early");
}

#[test]
fn excess_input_is_dropped() {
    let (mut m, mut be, _) = started();
    m.set_idx(3076, 2000); // broken ring: nothing is taken
    be.input(&mut m, &vec![1u8; MAX_PENDING_INPUT + 10]);
    assert_eq!(be.pending_input(), MAX_PENDING_INPUT);
    assert_eq!(be.dropped_input, 10);
}

#[test]
fn no_grant_or_no_port_leaves_it_disconnected_and_harmless() {
    let mut m = mock();
    m.grants.clear(); // grant 0 does not exist
    let sink: Sink = Rc::default();
    let mut be = ConsoleBack::new(DOM, Box::new(sink.clone()));
    be.start(&mut m);
    m.pump(&mut be);
    assert!(!be.connected());
    be.poll(&mut m);
    be.input(&mut m, b"x");
    be.on_event(&mut m, 102);
    // Missing nodes: nothing is mapped.
    let mut m = mock();
    m.xs.clear();
    be.start(&mut m);
    m.pump(&mut be);
    assert_eq!(m.map_calls, 0);
    assert!(!be.connected());
    // A port that is not offered: the ring is mapped, output still drained (no notify).
    let mut m = mock();
    m.offered.clear();
    let mut be = ConsoleBack::new(DOM, Box::new(sink.clone()));
    be.start(&mut m);
    m.pump(&mut be);
    assert!(!be.connected());
    m.guest_write(b"quiet");
    be.poll(&mut m);
    assert_eq!(out(&sink), "quiet");
    assert!(m.notified.is_empty());
}

#[test]
fn a_new_port_rebinds_and_a_new_ring_ref_remaps() {
    let (mut m, mut be, _) = started();
    m.offered.insert(7);
    XsOps::write(&mut m, &format!("/local/domain/{DOM}/console/port"), b"7");
    m.pump(&mut be);
    assert_eq!(be.port(), Some(7 + LOCAL_PORT_OFFSET));
    assert_eq!(m.bound_to(GPORT), None, "the old port was unbound");
    assert_eq!(m.map_calls, 1, "same ring-ref: same mapping");
    XsOps::write(
        &mut m,
        &format!("/local/domain/{DOM}/console/ring-ref"),
        b"4661",
    );
    m.pump(&mut be);
    assert_eq!(m.map_calls, 2);
    assert_eq!(m.maps.len(), 1, "the old mapping was released");
    // Garbage in the store: nothing changes.
    XsOps::write(
        &mut m,
        &format!("/local/domain/{DOM}/console/port"),
        b"banana",
    );
    m.pump(&mut be);
    assert!(be.connected());
}

#[test]
fn shutdown_drains_flushes_and_releases_everything() {
    let (mut m, mut be, sink) = started();
    m.guest_write(b"last words");
    be.shutdown(&mut m);
    assert_eq!(out(&sink), "last words");
    assert!(m.maps.is_empty());
    assert_eq!(m.bound_to(GPORT), None);
    assert!(m.watches.is_empty());
    assert!(!be.connected());
}
