//! Xen's FIFO event-channel ABI (Xen 4.4+, public/event_channel.h "FIFO ABI"), for one
//! domain with one vCPU. [`super::evtchn::EventChannels`] switches to it at
//! EVTCHNOP_init_control and back to 2-level at EVTCHNOP_reset.
//!
//! Design:
//! - Guest-visible state is the control block (`struct evtchn_fifo_control_block`: the READY
//!   bitmap and the 16 queue heads) in a guest frame, and the event array: one 32-bit event
//!   word per port, 1024 per guest frame added with EVTCHNOP_expand_array. Both are reached
//!   only through [`GuestPhys`] at their guest-physical (= machine) addresses and re-read on
//!   every use: the guest changes them behind our back (it consumes queues, masks, unlinks).
//! - Host-side state is what Xen keeps in the hypervisor: the queue tails, each port's
//!   priority, the queue it was last linked on (`fifo_lastq`), and the "pending while its
//!   event word did not exist" flag that is replayed when the array grows.
//! - Raising follows Xen's `evtchn_fifo_set_pending`: set PENDING; if the word is not MASKED
//!   and LINKED goes 0->1, append the port to its priority's queue (link the old tail's word
//!   to it if that word is still LINKED, else make it the head); if the queue was empty, set
//!   the priority's READY bit and, on its 0->1 transition, the vCPU's
//!   `evtchn_upcall_pending`. With one vCPU and no concurrency, the BUSY bit and Xen's
//!   cmpxchg retry loops reduce to plain read-modify-writes.
//!
//! Nothing guest-controlled panics: ports and priorities are range-checked, frames outside
//! guest RAM are refused, and a failing guest-memory access makes that step a no-op.

use super::errno::{EINVAL, ENOENT, ENOSPC, EOPNOTSUPP};
use super::GuestPhys;
use std::mem::{offset_of, size_of};

/// EVTCHN_FIFO_LINK_BITS: the link field's width, returned by init_control.
pub const EVTCHN_FIFO_LINK_BITS: u8 = 17;
/// EVTCHN_FIFO_NR_CHANNELS: the port limit of the FIFO ABI.
pub const EVTCHN_FIFO_NR_CHANNELS: u32 = 1 << EVTCHN_FIFO_LINK_BITS;
/// Event word bits.
pub const EVTCHN_FIFO_PENDING: u32 = 31;
pub const EVTCHN_FIFO_MASKED: u32 = 30;
pub const EVTCHN_FIFO_LINKED: u32 = 29;
pub const EVTCHN_FIFO_BUSY: u32 = 28;
pub const EVTCHN_FIFO_LINK_MASK: u32 = (1 << EVTCHN_FIFO_LINK_BITS) - 1;
/// Priorities: 0 is the highest, 15 the lowest; new ports get 7.
pub const EVTCHN_FIFO_PRIORITY_MAX: u32 = 0;
pub const EVTCHN_FIFO_PRIORITY_DEFAULT: u32 = 7;
pub const EVTCHN_FIFO_PRIORITY_MIN: u32 = 15;
pub const EVTCHN_FIFO_MAX_QUEUES: usize = EVTCHN_FIFO_PRIORITY_MIN as usize + 1;
/// Event words per 4 KiB event-array frame.
pub const EVTCHN_FIFO_EVENT_WORDS_PER_PAGE: u32 = 4096 / 4;
/// The most event-array frames a domain can add (2^17 ports / 1024).
pub const EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES: usize =
    (EVTCHN_FIFO_NR_CHANNELS / EVTCHN_FIFO_EVENT_WORDS_PER_PAGE) as usize;
const _: () = assert!(EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES == 128);

/// struct evtchn_fifo_control_block (guest memory, one per vCPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnFifoControlBlock {
    pub ready: u32,
    pub _rsvd: u32,
    pub head: [u32; EVTCHN_FIFO_MAX_QUEUES],
}
const _: () = assert!(size_of::<EvtchnFifoControlBlock>() == 72);
const _: () = assert!(offset_of!(EvtchnFifoControlBlock, ready) == 0);
const _: () = assert!(offset_of!(EvtchnFifoControlBlock, head) == 8);

/// EVTCHNOP_init_control. IN control_gfn, offset, vcpu; OUT link_bits. Same layout for
/// 32-bit guests (the u64 is first, the struct is padded to 24 bytes explicitly).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnInitControl {
    pub control_gfn: u64,
    pub offset: u32,
    pub vcpu: u32,
    pub link_bits: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(size_of::<EvtchnInitControl>() == 24);
const _: () = assert!(offset_of!(EvtchnInitControl, offset) == 8);
const _: () = assert!(offset_of!(EvtchnInitControl, vcpu) == 12);
const _: () = assert!(offset_of!(EvtchnInitControl, link_bits) == 16);

impl EvtchnInitControl {
    pub fn from_bytes(b: &[u8; 24]) -> Self {
        let mut pad = [0u8; 7];
        pad.copy_from_slice(&b[17..24]);
        EvtchnInitControl {
            control_gfn: u64::from_le_bytes(b[0..8].try_into().unwrap_or_default()),
            offset: u32::from_le_bytes(b[8..12].try_into().unwrap_or_default()),
            vcpu: u32::from_le_bytes(b[12..16].try_into().unwrap_or_default()),
            link_bits: b[16],
            _pad: pad,
        }
    }

    pub fn to_bytes(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0..8].copy_from_slice(&self.control_gfn.to_le_bytes());
        b[8..12].copy_from_slice(&self.offset.to_le_bytes());
        b[12..16].copy_from_slice(&self.vcpu.to_le_bytes());
        b[16] = self.link_bits;
        b[17..24].copy_from_slice(&self._pad);
        b
    }
}

/// EVTCHNOP_expand_array. IN array_gfn.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnExpandArray {
    pub array_gfn: u64,
}
const _: () = assert!(size_of::<EvtchnExpandArray>() == 8);

/// EVTCHNOP_set_priority. IN port, priority.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnSetPriority {
    pub port: u32,
    pub priority: u32,
}
const _: () = assert!(size_of::<EvtchnSetPriority>() == 8);
const _: () = assert!(offset_of!(EvtchnSetPriority, priority) == 4);

/// Host-side per-port FIFO state (Xen's `evtchn->priority`, `fifo_lastq`, `pending`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FifoPort {
    priority: u8,
    /// The queue the port was last linked on (lastq.last_priority; starts at 0 as Xen's
    /// zeroed struct evtchn).
    last_priority: u8,
    /// Raised while its event word did not exist: replayed by expand_array.
    pending: bool,
}

const DEFAULT_PORT: FifoPort = FifoPort {
    priority: EVTCHN_FIFO_PRIORITY_DEFAULT as u8,
    last_priority: 0,
    pending: false,
};

/// Is guest frame `gfn` inside guest memory (the whole frame)?
pub(super) fn frame_in_ram(mem: &dyn GuestPhys, gfn: u64) -> bool {
    gfn.checked_add(1)
        .and_then(|n| n.checked_mul(4096))
        .is_some_and(|end| end <= mem.size())
}

/// The FIFO state of the domain (vCPU 0's control block and queues, the event array).
#[derive(Clone, Debug)]
pub struct Fifo {
    /// Guest-physical address of vCPU 0's control block.
    control_block: u64,
    /// Guest-physical addresses of the event-array frames, in port order.
    array: Vec<u64>,
    /// Each queue's tail port (0: none), host side as in Xen.
    tail: [u32; EVTCHN_FIFO_MAX_QUEUES],
    ports: Vec<FifoPort>,
}

impl Fifo {
    /// A FIFO state with vCPU 0's control block at `control_block` and no event array.
    pub(super) fn new(control_block: u64) -> Self {
        Fifo {
            control_block,
            array: Vec::new(),
            tail: [0; EVTCHN_FIFO_MAX_QUEUES],
            ports: vec![DEFAULT_PORT; EVTCHN_FIFO_NR_CHANNELS as usize],
        }
    }

    pub fn control_block_gpa(&self) -> u64 {
        self.control_block
    }

    /// Ports with an event word (1024 per array frame).
    pub fn num_evtchns(&self) -> u32 {
        self.array.len() as u32 * EVTCHN_FIFO_EVENT_WORDS_PER_PAGE
    }

    /// The priority of `port` (None out of range).
    pub fn priority(&self, port: u32) -> Option<u32> {
        self.ports.get(port as usize).map(|p| p.priority as u32)
    }

    /// The host-side tail of queue `q`.
    pub fn tail(&self, q: usize) -> Option<u32> {
        self.tail.get(q).copied()
    }

    /// Guest-physical address of `port`'s event word; None beyond the array.
    pub fn word_gpa(&self, port: u32) -> Option<u64> {
        let page = self
            .array
            .get((port / EVTCHN_FIFO_EVENT_WORDS_PER_PAGE) as usize)?;
        Some(page + 4 * (port % EVTCHN_FIFO_EVENT_WORDS_PER_PAGE) as u64)
    }

    fn test_bit(mem: &dyn GuestPhys, addr: u64, bit: u32) -> Option<bool> {
        Some(mem.read_u32(addr)? & (1 << bit) != 0)
    }

    /// Returns the old value of the bit.
    fn test_and_set_bit(mem: &mut dyn GuestPhys, addr: u64, bit: u32) -> Option<bool> {
        let v = mem.read_u32(addr)?;
        if v & (1 << bit) == 0 && !mem.write_u32(addr, v | (1 << bit)) {
            return None;
        }
        Some(v & (1 << bit) != 0)
    }

    fn clear_bit(mem: &mut dyn GuestPhys, addr: u64, bit: u32) {
        if let Some(v) = mem.read_u32(addr) {
            if v & (1 << bit) != 0 {
                let _ = mem.write_u32(addr, v & !(1 << bit));
            }
        }
    }

    /// Set the LINK field of `tail`'s word to `link` iff the word is still LINKED (clearing
    /// BUSY, as Xen's try_set_link). Returns whether it was linked.
    fn set_link(&self, mem: &mut dyn GuestPhys, tail: u32, link: u32) -> bool {
        let Some(w) = self.word_gpa(tail) else {
            return false;
        };
        match mem.read_u32(w) {
            Some(v) if v & (1 << EVTCHN_FIFO_LINKED) != 0 => {
                let new = (v & !((1 << EVTCHN_FIFO_BUSY) | EVTCHN_FIFO_LINK_MASK)) | link;
                mem.write_u32(w, new)
            }
            _ => false,
        }
    }

    /// evtchn_fifo_set_pending for `port` toward vCPU 0, whose vcpu_info is at
    /// `vcpu_info_gpa`. The caller has range-checked the port.
    pub(super) fn set_pending(&mut self, mem: &mut dyn GuestPhys, port: u32, vcpu_info_gpa: u64) {
        let Some(slot) = self.ports.get(port as usize).copied() else {
            return;
        };
        let Some(word) = self.word_gpa(port) else {
            // No event word yet: remember it for expand_array.
            self.ports[port as usize].pending = true;
            return;
        };
        let q = slot.priority as usize;
        let old_q = slot.last_priority as usize;
        let _was_pending = Self::test_and_set_bit(mem, word, EVTCHN_FIFO_PENDING);
        let mut linked = true;
        if Self::test_bit(mem, word, EVTCHN_FIFO_MASKED) == Some(false)
            && Self::test_and_set_bit(mem, word, EVTCHN_FIFO_LINKED) == Some(false)
        {
            // This port was the old queue's tail: that queue is empty now.
            if self.tail[old_q] == port {
                self.tail[old_q] = 0;
            }
            if old_q != q {
                self.ports[port as usize].last_priority = q as u8;
            }
            linked = false;
            if self.tail[q] != 0 {
                linked = self.set_link(mem, self.tail[q], port);
            }
            if !linked {
                let _ = mem.write_u32(self.control_block + 8 + 4 * q as u64, port);
            }
            self.tail[q] = port;
        }
        if !linked && Self::test_and_set_bit(mem, self.control_block, q as u32) == Some(false) {
            // vcpu_mark_events_pending: evtchn_upcall_pending (bit 0 of byte 0).
            if let Some(b) = mem.read_u8(vcpu_info_gpa) {
                let _ = mem.write_u8(vcpu_info_gpa, b | 1);
            }
        }
    }

    /// evtchn_fifo_clear_pending: clear PENDING (the guest unlinks non-pending events).
    pub(super) fn clear_pending(&mut self, mem: &mut dyn GuestPhys, port: u32) {
        if let Some(p) = self.ports.get_mut(port as usize) {
            p.pending = false;
        }
        if let Some(w) = self.word_gpa(port) {
            Self::clear_bit(mem, w, EVTCHN_FIFO_PENDING);
        }
    }

    /// evtchn_fifo_unmask: clear MASKED; relink if pending.
    pub(super) fn unmask(&mut self, mem: &mut dyn GuestPhys, port: u32, vcpu_info_gpa: u64) {
        let Some(w) = self.word_gpa(port) else { return };
        Self::clear_bit(mem, w, EVTCHN_FIFO_MASKED);
        if Self::test_bit(mem, w, EVTCHN_FIFO_PENDING) == Some(true) {
            self.set_pending(mem, port, vcpu_info_gpa);
        }
    }

    /// PENDING of `port`'s word (false without a word).
    pub(super) fn is_pending(&self, mem: &dyn GuestPhys, port: u32) -> bool {
        self.word_gpa(port)
            .is_some_and(|w| Self::test_bit(mem, w, EVTCHN_FIFO_PENDING) == Some(true))
    }

    /// A port was bound (evtchn_fifo_init): default priority.
    pub(super) fn init_port(&mut self, port: u32) {
        if let Some(p) = self.ports.get_mut(port as usize) {
            p.priority = EVTCHN_FIFO_PRIORITY_DEFAULT as u8;
        }
    }

    /// Record a port that was pending in the 2-level bitmap at the switch (setup_ports).
    pub(super) fn mark_pending(&mut self, port: u32) {
        if let Some(p) = self.ports.get_mut(port as usize) {
            p.pending = true;
        }
    }

    /// evtchn_fifo_set_priority: EINVAL above EVTCHN_FIFO_PRIORITY_MIN. Future events use
    /// the new queue; an already linked event stays where it is.
    pub(super) fn set_priority(&mut self, port: u32, priority: u32) -> Result<(), i64> {
        if priority > EVTCHN_FIFO_PRIORITY_MIN {
            return Err(EINVAL);
        }
        let p = self.ports.get_mut(port as usize).ok_or(EINVAL)?;
        p.priority = priority as u8;
        Ok(())
    }

    /// add_page_to_event_array: ENOSPC when the array is full, EINVAL for a frame the
    /// domain may not use (`frame_ok`) or outside guest memory. Events raised while their
    /// word was missing are set pending now.
    pub(super) fn expand(
        &mut self,
        mem: &mut dyn GuestPhys,
        gfn: u64,
        frame_ok: &dyn Fn(u64) -> bool,
        vcpu_info_gpa: u64,
    ) -> Result<(), i64> {
        if self.array.len() >= EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES {
            return Err(ENOSPC);
        }
        if !frame_ok(gfn) || !frame_in_ram(mem, gfn) {
            return Err(EINVAL);
        }
        let first = self.num_evtchns();
        self.array.push(gfn << 12);
        for port in first..self.num_evtchns() {
            if self.ports[port as usize].pending {
                self.set_pending(mem, port, vcpu_info_gpa);
            }
        }
        Ok(())
    }
}

/// The argument checks of evtchn_fifo_init_control, in Xen's order: ENOENT for a vCPU the
/// domain does not have, EINVAL for a control block crossing the frame or not 8-byte
/// aligned. Returns the control block's guest-physical address.
pub(super) fn check_init_control(gfn: u64, offset: u32, vcpu: u32) -> Result<u64, i64> {
    if vcpu != 0 {
        return Err(ENOENT);
    }
    if offset as usize > 4096 - size_of::<EvtchnFifoControlBlock>() {
        return Err(EINVAL);
    }
    if offset & 7 != 0 {
        return Err(EINVAL);
    }
    Ok(gfn.wrapping_shl(12).wrapping_add(offset as u64))
}

/// expand_array before init_control.
pub(super) const NOT_FIFO: i64 = EOPNOTSUPP;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::errno::{EINVAL, ENOENT, ENOSPC, ENOSYS, EOPNOTSUPP};
    use crate::core::evtchn::{EventChannels, GuestWidth, PortState, EVTCHN_PENDING};

    /// shared_info at frame 1, control block in frame 4 at 0x40, event array frames 5, 6.
    const SI: u64 = 0x1000;
    const CB_GFN: u64 = 4;
    const CB: u64 = 0x4040;
    const A0: u64 = 5;
    const A1: u64 = 6;
    const PEND: u32 = 1 << EVTCHN_FIFO_PENDING;
    const MASK: u32 = 1 << EVTCHN_FIFO_MASKED;
    const LINK: u32 = 1 << EVTCHN_FIFO_LINKED;

    fn mem() -> Vec<u8> {
        vec![0u8; 1 << 16]
    }
    fn any(_: u64) -> bool {
        true
    }
    fn rd(m: &[u8], a: u64) -> u32 {
        GuestPhys::read_u32(&m.to_vec(), a).unwrap()
    }
    fn word(m: &[u8], port: u32) -> u32 {
        let page = if port < 1024 { A0 } else { A1 };
        rd(m, (page << 12) + 4 * (port % 1024) as u64)
    }
    fn set_word(m: &mut Vec<u8>, port: u32, v: u32) {
        let page = if port < 1024 { A0 } else { A1 };
        GuestPhys::write_u32(m, (page << 12) + 4 * (port % 1024) as u64, v);
    }
    fn ready(m: &[u8]) -> u32 {
        rd(m, CB)
    }
    fn head(m: &[u8], q: u64) -> u32 {
        rd(m, CB + 8 + 4 * q)
    }
    fn upcall(m: &[u8]) -> u8 {
        m[SI as usize]
    }
    /// A FIFO domain with one event-array frame.
    fn fifo_ec(m: &mut Vec<u8>) -> EventChannels {
        let mut ec = EventChannels::new(GuestWidth::W64, SI);
        assert_eq!(ec.init_control(m, CB_GFN, 0x40, 0, &any), Ok(17));
        ec.expand_array(m, A0, &any).unwrap();
        ec
    }

    #[test]
    fn init_control_errors() {
        let mut m = mem();
        let mut ec = EventChannels::new(GuestWidth::W64, SI);
        assert_eq!(ec.init_control(&mut m, CB_GFN, 0, 1, &any), Err(ENOENT));
        assert_eq!(
            ec.init_control(&mut m, CB_GFN, 4096 - 64, 0, &any),
            Err(EINVAL)
        );
        assert_eq!(
            ec.init_control(&mut m, CB_GFN, u32::MAX, 0, &any),
            Err(EINVAL)
        );
        assert_eq!(ec.init_control(&mut m, CB_GFN, 4, 0, &any), Err(EINVAL));
        // A frame the domain may not map writable, or outside guest memory.
        assert_eq!(
            ec.init_control(&mut m, CB_GFN, 0, 0, &|_| false),
            Err(EINVAL)
        );
        assert_eq!(ec.init_control(&mut m, 16, 0, 0, &any), Err(EINVAL));
        assert_eq!(ec.init_control(&mut m, u64::MAX, 0, 0, &any), Err(EINVAL));
        assert_eq!(ec.init_control(&mut m, 1 << 52, 0, 0, &any), Err(EINVAL));
        // Still 2-level after the failures.
        assert!(!ec.is_fifo());
        assert_eq!(ec.max_ports(), 4096);
        // The last offset where the 72-byte block fits, in the last frame.
        assert_eq!(
            ec.init_control(&mut m, 15, 4096 - 72, 0, &any),
            Ok(EVTCHN_FIFO_LINK_BITS)
        );
        assert!(ec.is_fifo());
        assert_eq!(ec.max_ports(), 1 << 17);
        assert_eq!(ec.fifo().unwrap().control_block_gpa(), 0xf000 + 4024);
        // The vCPU's block is mapped: a second init is EINVAL (a bad vCPU still ENOENT).
        assert_eq!(ec.init_control(&mut m, CB_GFN, 0, 0, &any), Err(EINVAL));
        assert_eq!(ec.init_control(&mut m, CB_GFN, 0, 3, &any), Err(ENOENT));
    }

    #[test]
    fn expand_array_errors_and_limit() {
        let mut m = mem();
        let mut ec = EventChannels::new(GuestWidth::W64, SI);
        assert_eq!(ec.expand_array(&mut m, A0, &any), Err(EOPNOTSUPP));
        ec.init_control(&mut m, CB_GFN, 0, 0, &any).unwrap();
        assert_eq!(ec.expand_array(&mut m, A0, &|_| false), Err(EINVAL));
        assert_eq!(ec.expand_array(&mut m, 16, &any), Err(EINVAL));
        assert_eq!(ec.expand_array(&mut m, u64::MAX, &any), Err(EINVAL));
        assert_eq!(ec.fifo().unwrap().num_evtchns(), 0);
        for i in 0..EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES {
            ec.expand_array(&mut m, A0 + (i as u64 % 8), &any).unwrap();
        }
        assert_eq!(ec.fifo().unwrap().num_evtchns(), 1 << 17);
        assert_eq!(ec.expand_array(&mut m, A0, &any), Err(ENOSPC));
        // Errors are checked in Xen's order: ENOSPC before the frame.
        assert_eq!(ec.expand_array(&mut m, u64::MAX, &any), Err(ENOSPC));
        assert_eq!(ec.fifo().unwrap().word_gpa(1024), Some((A0 + 1) << 12));
        assert_eq!(
            ec.fifo().unwrap().word_gpa((1 << 17) - 1),
            Some(((A0 + 7) << 12) + 4092)
        );
    }

    #[test]
    fn set_priority_rules() {
        let mut m = mem();
        let mut ec = EventChannels::new(GuestWidth::W64, SI);
        let p = ec.bind_ipi(0).unwrap();
        assert_eq!(ec.set_priority(p, 3), Err(ENOSYS));
        assert_eq!(ec.set_priority(4096, 3), Err(EINVAL));
        ec.init_control(&mut m, CB_GFN, 0, 0, &any).unwrap();
        assert_eq!(
            ec.fifo().unwrap().priority(p),
            Some(EVTCHN_FIFO_PRIORITY_DEFAULT)
        );
        assert_eq!(ec.set_priority(p, 16), Err(EINVAL));
        assert_eq!(ec.set_priority(1 << 17, 0), Err(EINVAL));
        assert_eq!(ec.set_priority(p, EVTCHN_FIFO_PRIORITY_MIN), Ok(()));
        assert_eq!(ec.set_priority(p, EVTCHN_FIFO_PRIORITY_MAX), Ok(()));
        assert_eq!(ec.fifo().unwrap().priority(p), Some(0));
        // Ports beyond the 2-level limit exist now.
        assert_eq!(ec.set_priority(5000, 2), Ok(()));
        // Binding resets the priority to the default.
        ec.close(&mut m, p).unwrap();
        assert_eq!(ec.bind_ipi(0), Ok(p));
        assert_eq!(ec.fifo().unwrap().priority(p), Some(7));
    }

    #[test]
    fn set_pending_links_in_order() {
        let mut m = mem();
        let mut ec = fifo_ec(&mut m);
        let (a, b, c) = (
            ec.bind_ipi(0).unwrap(),
            ec.bind_ipi(0).unwrap(),
            ec.bind_ipi(0).unwrap(),
        );
        assert_eq!((a, b, c), (1, 2, 3));
        assert!(ec.raise(&mut m, a));
        assert_eq!(word(&m, a), PEND | LINK);
        assert_eq!(head(&m, 7), a);
        assert_eq!(ready(&m), 1 << 7);
        assert_eq!(upcall(&m), 1);
        // The next events are linked behind the tail; head and READY stay.
        GuestPhys::write_u8(&mut m, SI, 0);
        assert_eq!(ec.send(&mut m, b), Ok(None));
        ec.raise(&mut m, c);
        assert_eq!(word(&m, a), PEND | LINK | b);
        assert_eq!(word(&m, b), PEND | LINK | c);
        assert_eq!(word(&m, c), PEND | LINK);
        assert_eq!(head(&m, 7), a);
        assert_eq!(upcall(&m), 0);
        assert_eq!(ec.fifo().unwrap().tail(7), Some(c));
        assert!(ec.is_pending(&m, b));
        assert!(!ec.is_pending(&m, 4));
        // A linked event is not linked again.
        let before = m.clone();
        ec.raise(&mut m, b);
        assert!(m == before);
        // The guest consumes the queue: clears READY and the words.
        GuestPhys::write_u32(&mut m, CB, 0);
        for p in [a, b, c] {
            set_word(&mut m, p, 0);
        }
        // The old tail is no longer LINKED: the next event becomes the head again.
        assert!(ec.raise(&mut m, b));
        assert_eq!(head(&m, 7), b);
        assert_eq!(word(&m, c), 0);
        assert_eq!(ready(&m), 1 << 7);
        assert_eq!(upcall(&m), 1);
        // BUSY on the tail is cleared when linking to it.
        set_word(&mut m, b, PEND | LINK | (1 << EVTCHN_FIFO_BUSY));
        ec.raise(&mut m, a);
        assert_eq!(word(&m, b), PEND | LINK | a);
        // Port 0 and out-of-range ports are never raised.
        let before = m.clone();
        ec.raise(&mut m, 0);
        ec.raise(&mut m, 1 << 17);
        ec.raise(&mut m, u32::MAX);
        assert!(m == before);
    }

    #[test]
    fn priorities_use_separate_queues() {
        let mut m = mem();
        let mut ec = fifo_ec(&mut m);
        let v = ec.bind_virq(0, 0).unwrap();
        let i = ec.bind_ipi(0).unwrap();
        ec.set_priority(v, 0).unwrap();
        ec.set_priority(i, 15).unwrap();
        ec.raise_virq(&mut m, 0);
        ec.raise(&mut m, i);
        assert_eq!(head(&m, 0), v);
        assert_eq!(head(&m, 15), i);
        assert_eq!(head(&m, 7), 0);
        assert_eq!(ready(&m), 1 | 1 << 15);
        assert_eq!(word(&m, v), PEND | LINK);
        assert_eq!(word(&m, i), PEND | LINK);
        // A priority change while linked: the event stays on its old queue...
        ec.set_priority(v, 3).unwrap();
        ec.raise(&mut m, v);
        assert_eq!(head(&m, 3), 0);
        assert_eq!(ec.fifo().unwrap().tail(0), Some(v));
        // ...and once the guest unlinked it, the next event goes to the new queue and the
        // old queue's tail is forgotten (it must not link the new queue's events).
        set_word(&mut m, v, 0);
        GuestPhys::write_u32(&mut m, CB, 0);
        ec.raise(&mut m, v);
        assert_eq!(head(&m, 3), v);
        assert_eq!(ready(&m), 1 << 3);
        assert_eq!(ec.fifo().unwrap().tail(0), Some(0));
        assert_eq!(ec.fifo().unwrap().tail(3), Some(v));
    }

    #[test]
    fn masked_then_unmask_links() {
        let mut m = mem();
        let mut ec = fifo_ec(&mut m);
        let p = ec.bind_virq(0, 0).unwrap();
        set_word(&mut m, p, MASK);
        assert!(!ec.raise_virq(&mut m, 0));
        assert_eq!(word(&m, p), MASK | PEND);
        assert_eq!((ready(&m), head(&m, 7), upcall(&m)), (0, 0, 0));
        assert!(ec.is_pending(&m, p));
        assert_eq!(ec.unmask(&mut m, p), Ok(true));
        assert_eq!(word(&m, p), PEND | LINK);
        assert_eq!((ready(&m), head(&m, 7), upcall(&m)), (1 << 7, p, 1));
        // Unmasking a port that is not pending only clears MASKED.
        let q = ec.bind_ipi(0).unwrap();
        set_word(&mut m, q, MASK);
        assert_eq!(ec.unmask(&mut m, q), Ok(true));
        assert_eq!(word(&m, q), 0);
        // Upcall mask set: pending but not deliverable.
        m[SI as usize + 1] = 1;
        assert!(!ec.upcall_deliverable(&m));
        assert!(ec.upcall_pending(&m));
        // Out of range: EINVAL; a port without an event word: nothing to do.
        assert_eq!(ec.unmask(&mut m, 1 << 17), Err(EINVAL));
        let before = m.clone();
        assert_eq!(ec.unmask(&mut m, 2000), Ok(false));
        assert!(m == before);
    }

    #[test]
    fn ports_beyond_the_array_wait_for_expand() {
        let mut m = mem();
        let mut ec = fifo_ec(&mut m);
        for _ in 1..1100 {
            ec.alloc_unbound(0).unwrap();
        }
        ec.close(&mut m, 1050).unwrap();
        ec.close(&mut m, 1060).unwrap();
        assert_eq!(ec.bind_ipi(0), Ok(1050));
        let before = m.clone();
        assert!(!ec.raise(&mut m, 1050));
        assert!(!ec.is_pending(&m, 1050));
        assert!(m == before);
        // Raised and then closed before the frame arrives: forgotten (no spurious event).
        assert_eq!(ec.bind_ipi(0), Ok(1060));
        ec.raise(&mut m, 1060);
        ec.close(&mut m, 1060).unwrap();
        assert!(ec.expand_array(&mut m, A1, &any).unwrap());
        assert_eq!(word(&m, 1050), PEND | LINK);
        assert_eq!(word(&m, 1060), 0);
        assert_eq!(head(&m, 7), 1050);
        assert_eq!(upcall(&m), 1);
    }

    #[test]
    fn switch_from_2level_keeps_ports_and_pending_events() {
        let mut m = mem();
        let mut ec = EventChannels::new(GuestWidth::W64, SI);
        ec.bind_backend(1, 0).unwrap();
        ec.bind_backend(2, 0).unwrap();
        let i = ec.bind_ipi(0).unwrap();
        let u = ec.alloc_unbound(0).unwrap();
        assert!(ec.raise(&mut m, 2));
        GuestPhys::write_u8(&mut m, SI, 0);
        ec.init_control(&mut m, CB_GFN, 0x40, 0, &any).unwrap();
        // No event word yet: the old pending event waits for the array.
        assert_eq!(upcall(&m), 0);
        ec.expand_array(&mut m, A0, &any).unwrap();
        assert_eq!(word(&m, 2), PEND | LINK);
        assert_eq!(head(&m, 7), 2);
        assert_eq!(upcall(&m), 1);
        assert_eq!(word(&m, 1), 0);
        // The back-end and local channels work as before.
        assert_eq!(ec.send(&mut m, 1), Ok(Some((0, 1))));
        assert_eq!(ec.send(&mut m, i), Ok(None));
        assert_eq!(word(&m, 2), PEND | LINK | i);
        ec.connect_backend(u, 0).unwrap();
        assert_eq!(ec.send(&mut m, u), Ok(Some((0, u))));
        ec.disconnect_backend(u, 0).unwrap();
        assert_eq!(
            ec.status(u).unwrap().state,
            PortState::Unbound { remote_dom: 0 }
        );
        ec.raise(&mut m, 1);
        assert_eq!(word(&m, i), PEND | LINK | 1);
        // The 2-level bitmap is no longer written.
        assert_eq!(m[(SI + EVTCHN_PENDING) as usize], 1 << 2);
    }

    #[test]
    fn close_clears_pending() {
        let mut m = mem();
        let mut ec = fifo_ec(&mut m);
        let p = ec.bind_ipi(0).unwrap();
        set_word(&mut m, p, MASK);
        ec.raise(&mut m, p);
        ec.close(&mut m, p).unwrap();
        assert_eq!(word(&m, p), MASK);
        // 2-level: the bitmap bit.
        let mut m = vec![0u8; 1 << 16];
        let mut ec = EventChannels::new(GuestWidth::W64, SI);
        let p = ec.bind_ipi(0).unwrap();
        ec.raise(&mut m, p);
        assert!(ec.is_pending(&m, p));
        ec.close(&mut m, p).unwrap();
        assert!(!ec.is_pending(&m, p));
    }

    #[test]
    fn reset_returns_to_2level() {
        let mut m = mem();
        let mut ec = fifo_ec(&mut m);
        let p = ec.bind_ipi(0).unwrap();
        ec.bind_virq(0, 0).unwrap();
        ec.alloc_unbound(0).unwrap();
        for _ in 0..5000 {
            ec.bind_ipi(0).unwrap();
        }
        set_word(&mut m, p, MASK);
        ec.raise(&mut m, p);
        ec.reset(&mut m);
        assert!(!ec.is_fifo());
        assert!(ec.fifo().is_none());
        assert_eq!(ec.max_ports(), 4096);
        assert_eq!(ec.status(4096), Err(EINVAL));
        assert_eq!(ec.status(p).unwrap().state, PortState::Free);
        assert_eq!(ec.port_of_virq(0), None);
        // Closing cleared PENDING in the (now released) array.
        assert_eq!(word(&m, p), MASK);
        assert_eq!(ec.set_priority(p, 1), Err(ENOSYS));
        assert_eq!(ec.expand_array(&mut m, A0, &any), Err(EOPNOTSUPP));
        // 2-level delivery again, and FIFO can be set up anew.
        let q = ec.bind_ipi(0).unwrap();
        assert_eq!(q, 1);
        ec.raise(&mut m, q);
        assert_eq!(m[(SI + EVTCHN_PENDING) as usize], 1 << 1);
        assert_eq!(ec.init_control(&mut m, CB_GFN, 0, 0, &any), Ok(17));
        assert_eq!(ec.fifo().unwrap().num_evtchns(), 0);
    }

    #[test]
    fn init_control_image() {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&0x1234u64.to_le_bytes());
        b[8..12].copy_from_slice(&64u32.to_le_bytes());
        b[12..16].copy_from_slice(&1u32.to_le_bytes());
        let mut ic = EvtchnInitControl::from_bytes(&b);
        assert_eq!((ic.control_gfn, ic.offset, ic.vcpu), (0x1234, 64, 1));
        ic.link_bits = 17;
        let out = ic.to_bytes();
        assert_eq!(out[16], 17);
        assert_eq!(&out[..16], &b[..16]);
    }
}
