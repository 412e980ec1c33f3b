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
        let page = self.array.get((port / EVTCHN_FIFO_EVENT_WORDS_PER_PAGE) as usize)?;
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
        let Some(w) = self.word_gpa(tail) else { return false };
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
        let Some(slot) = self.ports.get(port as usize).copied() else { return };
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
