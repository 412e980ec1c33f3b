//! Xen 2-level event channels for one PV domain with one vCPU.
//!
//! Design:
//! - The port table ([`Port`] per port) lives here, on the host side. The only guest-visible
//!   state is in `shared_info`: the `evtchn_pending` / `evtchn_mask` bitmaps and vCPU 0's
//!   `evtchn_upcall_pending`, `evtchn_upcall_mask` and `evtchn_pending_sel`. Those are always
//!   read and written through [`GuestPhys`] at `shared_info_gpa`, never cached, because the
//!   guest changes them behind our back (it masks, clears pending bits, clears the selector).
//! - Bits are addressed byte-wise (bit `n` of a bitmap is bit `n % 8` of byte `n / 8`). The
//!   words are little-endian, so this is the same bit for 32- and 64-bit word sizes; only the
//!   offsets, the ports per selector bit and the port limit depend on [`GuestWidth`].
//! - Raising follows Xen's `evtchn_2l_set_pending`: only a 0->1 transition of the pending bit
//!   of an unmasked port sets the selector bit, and only a 0->1 transition of the selector bit
//!   sets `evtchn_upcall_pending`. Unmask follows `evtchn_2l_unmask`.
//! - Back ends (console, xenstore, PV devices) live in the emulator and act as domain 0.
//!   Their channels are [`PortState::Interdomain`] ports whose remote port number is the
//!   guest's own port number: the emulator identifies a channel by the guest port. A guest
//!   `EVTCHNOP_send` on such a port is handed back to the caller ([`EventChannels::send`]);
//!   the back end notifies the guest with [`EventChannels::raise`].
//! - Loopback channels (interdomain to ourselves, via `bind_interdomain` with DOMID_SELF) and
//!   IPIs are delivered locally.
//!
//! - FIFO (Xen 4.4+ ABI, `evtchn_fifo.rs`): EVTCHNOP_init_control switches the domain to it,
//!   EVTCHNOP_reset back to 2-level. The port table, the back-end model and this API are the
//!   same in both modes; [`EventChannels::raise`], `unmask`, `is_pending` and `close`
//!   dispatch on the mode, and the port limit becomes 2^17.
//!
//! Guest-supplied values never panic: bad ports/vCPUs/VIRQs are errors (positive errno), and
//! a `shared_info` outside guest memory makes the memory side a no-op.

use super::errno::{EBUSY, EEXIST, EINVAL, ENOENT, ENOSPC, ENOSYS};
use super::evtchn_fifo::{self as fifo, Fifo};
use super::GuestPhys;
use std::mem::size_of;

/// DOMID_SELF (public/xen.h).
pub const DOMID_SELF: u16 = 0x7ff0;
/// Our guest's domain id.
pub const GUEST_DOMID: u16 = 1;
/// NR_VIRQS (public/xen.h).
pub const NR_VIRQS: u32 = 24;

// EVTCHNOP_* command numbers (public/event_channel.h).
pub const EVTCHNOP_BIND_INTERDOMAIN: u32 = 0;
pub const EVTCHNOP_BIND_VIRQ: u32 = 1;
pub const EVTCHNOP_BIND_PIRQ: u32 = 2;
pub const EVTCHNOP_CLOSE: u32 = 3;
pub const EVTCHNOP_SEND: u32 = 4;
pub const EVTCHNOP_STATUS: u32 = 5;
pub const EVTCHNOP_ALLOC_UNBOUND: u32 = 6;
pub const EVTCHNOP_BIND_IPI: u32 = 7;
pub const EVTCHNOP_BIND_VCPU: u32 = 8;
pub const EVTCHNOP_UNMASK: u32 = 9;
pub const EVTCHNOP_RESET: u32 = 10;
pub const EVTCHNOP_INIT_CONTROL: u32 = 11;
pub const EVTCHNOP_EXPAND_ARRAY: u32 = 12;
pub const EVTCHNOP_SET_PRIORITY: u32 = 13;
pub const EVTCHNOP_RESET_CONT: u32 = 14;

// EVTCHNSTAT_* values (public/event_channel.h, struct evtchn_status).
pub const EVTCHNSTAT_CLOSED: u32 = 0;
pub const EVTCHNSTAT_UNBOUND: u32 = 1;
pub const EVTCHNSTAT_INTERDOMAIN: u32 = 2;
pub const EVTCHNSTAT_PIRQ: u32 = 3;
pub const EVTCHNSTAT_VIRQ: u32 = 4;
pub const EVTCHNSTAT_IPI: u32 = 5;

// shared_info layout, x86 (public/xen.h, arch-x86/xen-x86_{32,64}.h; checked against
// /usr/include/xen): `struct vcpu_info vcpu_info[XEN_LEGACY_MAX_VCPUS = 32]`, each 64 bytes
// on both widths (u8 evtchn_upcall_pending @0, u8 evtchn_upcall_mask @1, xen_ulong_t
// evtchn_pending_sel @ sizeof(xen_ulong_t), arch_vcpu_info, vcpu_time_info); then
// `xen_ulong_t evtchn_pending[bits(xen_ulong_t)]` and `evtchn_mask[bits(xen_ulong_t)]`.
// xen_ulong_t is `unsigned long`: 8 bytes for 64-bit guests, 4 for 32-bit (PAE) guests.
/// Offset of vcpu_info[0].evtchn_upcall_pending.
pub const VCPU0_UPCALL_PENDING: u64 = 0;
/// Offset of vcpu_info[0].evtchn_upcall_mask.
pub const VCPU0_UPCALL_MASK: u64 = 1;
/// Offset of vcpu_info[0].evtchn_pending_sel, 64-bit guest.
pub const VCPU0_PENDING_SEL_64: u64 = 8;
/// Offset of vcpu_info[0].evtchn_pending_sel, 32-bit guest.
pub const VCPU0_PENDING_SEL_32: u64 = 4;
/// Offset of evtchn_pending (both widths: 32 vcpu_info * 64 bytes).
pub const EVTCHN_PENDING: u64 = 32 * 64;
/// Offset of evtchn_mask, 64-bit guest (evtchn_pending is 64 * 8 bytes).
pub const EVTCHN_MASK_64: u64 = EVTCHN_PENDING + 64 * 8;
/// Offset of evtchn_mask, 32-bit guest (evtchn_pending is 32 * 4 bytes).
pub const EVTCHN_MASK_32: u64 = EVTCHN_PENDING + 32 * 4;
const _: () = assert!(EVTCHN_PENDING == 2048 && EVTCHN_MASK_64 == 2560 && EVTCHN_MASK_32 == 2176);

// EVTCHNOP argument layouts (public/event_channel.h). domid_t is u16, evtchn_port_t u32.

/// EVTCHNOP_alloc_unbound. IN dom, remote_dom; OUT port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnAllocUnbound {
    pub dom: u16,
    pub remote_dom: u16,
    pub port: u32,
}
const _: () = assert!(size_of::<EvtchnAllocUnbound>() == 8);

/// EVTCHNOP_bind_interdomain. IN remote_dom, remote_port; OUT local_port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnBindInterdomain {
    pub remote_dom: u16,
    pub remote_port: u32,
    pub local_port: u32,
}
const _: () = assert!(size_of::<EvtchnBindInterdomain>() == 12);

/// EVTCHNOP_bind_virq. IN virq, vcpu; OUT port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnBindVirq {
    pub virq: u32,
    pub vcpu: u32,
    pub port: u32,
}
const _: () = assert!(size_of::<EvtchnBindVirq>() == 12);

/// EVTCHNOP_bind_ipi. IN vcpu; OUT port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnBindIpi {
    pub vcpu: u32,
    pub port: u32,
}
const _: () = assert!(size_of::<EvtchnBindIpi>() == 8);

/// EVTCHNOP_close.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnClose {
    pub port: u32,
}
const _: () = assert!(size_of::<EvtchnClose>() == 4);

/// EVTCHNOP_send.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnSend {
    pub port: u32,
}
const _: () = assert!(size_of::<EvtchnSend>() == 4);

/// EVTCHNOP_status. IN dom, port; OUT status, vcpu, u. The union `u` is 8 bytes:
/// unbound {dom u16 @0}, interdomain {dom u16 @0, port u32 @4}, pirq u32 @0, virq u32 @0;
/// here it is two little-endian u32 words.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnStatus {
    pub dom: u16,
    pub _pad: u16,
    pub port: u32,
    pub status: u32,
    pub vcpu: u32,
    pub u: [u32; 2],
}
const _: () = assert!(size_of::<EvtchnStatus>() == 24);

impl EvtchnStatus {
    /// The OUT fields for `port` in state `p`.
    pub fn new(dom: u16, port: u32, p: &Port) -> Self {
        let (status, u) = match p.state {
            PortState::Free => (EVTCHNSTAT_CLOSED, [0, 0]),
            PortState::Unbound { remote_dom } => (EVTCHNSTAT_UNBOUND, [remote_dom as u32, 0]),
            PortState::Interdomain {
                remote_dom,
                remote_port,
            } => (EVTCHNSTAT_INTERDOMAIN, [remote_dom as u32, remote_port]),
            PortState::Virq(v) => (EVTCHNSTAT_VIRQ, [v, 0]),
            PortState::Ipi => (EVTCHNSTAT_IPI, [0, 0]),
            PortState::Pirq(p) => (EVTCHNSTAT_PIRQ, [p, 0]),
        };
        EvtchnStatus {
            dom,
            _pad: 0,
            port,
            status,
            vcpu: p.vcpu,
            u,
        }
    }

    /// The guest-memory image (24 bytes, little-endian).
    pub fn to_bytes(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0..2].copy_from_slice(&self.dom.to_le_bytes());
        b[4..8].copy_from_slice(&self.port.to_le_bytes());
        b[8..12].copy_from_slice(&self.status.to_le_bytes());
        b[12..16].copy_from_slice(&self.vcpu.to_le_bytes());
        b[16..20].copy_from_slice(&self.u[0].to_le_bytes());
        b[20..24].copy_from_slice(&self.u[1].to_le_bytes());
        b
    }
}

/// EVTCHNOP_bind_vcpu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnBindVcpu {
    pub port: u32,
    pub vcpu: u32,
}
const _: () = assert!(size_of::<EvtchnBindVcpu>() == 8);

/// EVTCHNOP_unmask.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnUnmask {
    pub port: u32,
}
const _: () = assert!(size_of::<EvtchnUnmask>() == 4);

/// The guest's word size, which fixes the 2-level ABI's geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestWidth {
    /// 64-bit guest: u64 words, 64 ports per selector bit, 4096 ports.
    W64,
    /// 32-bit (PAE) guest: u32 words, 32 ports per selector bit, 1024 ports.
    W32,
}

impl GuestWidth {
    /// Bits in a xen_ulong_t.
    pub fn word_bits(self) -> u32 {
        match self {
            GuestWidth::W64 => 64,
            GuestWidth::W32 => 32,
        }
    }
    /// EVTCHN_2L_NR_CHANNELS: word_bits squared.
    pub fn max_ports(self) -> u32 {
        self.word_bits() * self.word_bits()
    }
    fn pending_sel_off(self) -> u64 {
        match self {
            GuestWidth::W64 => VCPU0_PENDING_SEL_64,
            GuestWidth::W32 => VCPU0_PENDING_SEL_32,
        }
    }
    fn mask_off(self) -> u64 {
        match self {
            GuestWidth::W64 => EVTCHN_MASK_64,
            GuestWidth::W32 => EVTCHN_MASK_32,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortState {
    Free,
    Unbound { remote_dom: u16 },
    Interdomain { remote_dom: u16, remote_port: u32 },
    Virq(u32),
    Ipi,
    Pirq(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    pub state: PortState,
    /// The vCPU notified (always 0: one vCPU).
    pub vcpu: u32,
}

const FREE: Port = Port {
    state: PortState::Free,
    vcpu: 0,
};

/// VIRQs that are per-vCPU in Xen (VIRQ_TIMER, VIRQ_DEBUG, VIRQ_XENOPROF, VIRQ_XENPMU):
/// their ports cannot be moved with bind_vcpu.
fn virq_is_global(virq: u32) -> bool {
    !matches!(virq, 0 | 1 | 7 | 13)
}

/// The event-channel state of the domain.
#[derive(Clone, Debug)]
pub struct EventChannels {
    width: GuestWidth,
    shared_info_gpa: u64,
    /// vCPU 0's vcpu_info: in shared_info until VCPUOP_register_vcpu_info moves it.
    vcpu_info_gpa: u64,
    ports: Vec<Port>,
    virq_to_port: [u32; NR_VIRQS as usize],
    /// The FIFO ABI's state once EVTCHNOP_init_control succeeded (None: 2-level).
    fifo: Option<Box<Fifo>>,
}

impl EventChannels {
    pub fn new(width: GuestWidth, shared_info_gpa: u64) -> Self {
        EventChannels {
            width,
            shared_info_gpa,
            vcpu_info_gpa: shared_info_gpa,
            ports: vec![FREE; width.max_ports() as usize],
            virq_to_port: [0; NR_VIRQS as usize],
            fifo: None,
        }
    }

    /// Is the FIFO ABI in use?
    pub fn is_fifo(&self) -> bool {
        self.fifo.is_some()
    }

    /// The FIFO state (None in 2-level mode).
    pub fn fifo(&self) -> Option<&Fifo> {
        self.fifo.as_deref()
    }

    /// The port limit of the current ABI: EVTCHN_2L_NR_CHANNELS, or 2^17 with FIFO.
    pub fn max_ports(&self) -> u32 {
        if self.fifo.is_some() {
            fifo::EVTCHN_FIFO_NR_CHANNELS
        } else {
            self.width.max_ports()
        }
    }

    pub fn width(&self) -> GuestWidth {
        self.width
    }

    pub fn shared_info_gpa(&self) -> u64 {
        self.shared_info_gpa
    }

    /// Where vCPU 0's vcpu_info lives (VCPUOP_register_vcpu_info).
    pub fn vcpu_info_gpa(&self) -> u64 {
        self.vcpu_info_gpa
    }

    pub fn set_vcpu_info_gpa(&mut self, gpa: u64) {
        self.vcpu_info_gpa = gpa;
    }

    fn resolve_dom(dom: u16) -> u16 {
        if dom == DOMID_SELF {
            GUEST_DOMID
        } else {
            dom
        }
    }

    fn port_mut(&mut self, port: u32) -> Result<&mut Port, i64> {
        self.ports.get_mut(port as usize).ok_or(EINVAL)
    }

    /// Lowest free port >= 1 (port 0 is reserved, as in Xen).
    fn free_port(&self) -> Result<u32, i64> {
        (1..self.ports.len())
            .find(|&p| self.ports[p].state == PortState::Free)
            .map(|p| p as u32)
            .ok_or(ENOSPC)
    }

    fn alloc(&mut self, state: PortState, vcpu: u32) -> Result<u32, i64> {
        let p = self.free_port()?;
        self.ports[p as usize] = Port { state, vcpu };
        if let Some(f) = self.fifo.as_mut() {
            f.init_port(p);
        }
        Ok(p)
    }

    /// Reserve `port` as an interdomain channel to a back end in domain `backend_dom` (the
    /// builder's xenstore port, bound to the platform's xenstored from the start). The back
    /// end's port number is the same as ours.
    pub fn bind_backend(&mut self, port: u32, backend_dom: u16) -> Result<(), i64> {
        if port == 0 {
            return Err(EINVAL);
        }
        let p = self.port_mut(port)?;
        if p.state != PortState::Free {
            return Err(EBUSY);
        }
        *p = Port {
            state: PortState::Interdomain {
                remote_dom: backend_dom,
                remote_port: port,
            },
            vcpu: 0,
        };
        if let Some(f) = self.fifo.as_mut() {
            f.init_port(port);
        }
        Ok(())
    }

    /// Reserve `port` unbound toward domain `remote_dom`, as the toolstack allocates a
    /// channel for a back end that binds it later (libxl's console port:
    /// xc_evtchn_alloc_unbound(domid, console_domid); xenconsoled then binds it with
    /// bind_interdomain, here [`Self::connect_backend`]). EBUSY if the port is in use.
    pub fn reserve_unbound(&mut self, port: u32, remote_dom: u16) -> Result<(), i64> {
        if port == 0 {
            return Err(EINVAL);
        }
        let p = self.port_mut(port)?;
        if p.state != PortState::Free {
            return Err(EBUSY);
        }
        *p = Port {
            state: PortState::Unbound { remote_dom },
            vcpu: 0,
        };
        if let Some(f) = self.fifo.as_mut() {
            f.init_port(port);
        }
        Ok(())
    }

    /// A back end in `backend_dom` binds the guest's unbound port `port` (allocated by the
    /// guest with alloc_unbound(backend_dom)): the port becomes interdomain. EINVAL unless
    /// the port is unbound toward that domain.
    pub fn connect_backend(&mut self, port: u32, backend_dom: u16) -> Result<(), i64> {
        let p = self.port_mut(port)?;
        if p.state
            != (PortState::Unbound {
                remote_dom: backend_dom,
            })
        {
            return Err(EINVAL);
        }
        p.state = PortState::Interdomain {
            remote_dom: backend_dom,
            remote_port: port,
        };
        Ok(())
    }

    /// The back end in `backend_dom` closed its end of the guest's port `port`: the guest's
    /// end becomes unbound toward that domain again (Xen's evtchn_close on the remote side).
    pub fn disconnect_backend(&mut self, port: u32, backend_dom: u16) -> Result<(), i64> {
        let p = self.port_mut(port)?;
        match p.state {
            PortState::Interdomain { remote_dom, .. } if remote_dom == backend_dom => {
                p.state = PortState::Unbound {
                    remote_dom: backend_dom,
                };
                Ok(())
            }
            _ => Err(EINVAL),
        }
    }

    /// EVTCHNOP_alloc_unbound (dom == DOMID_SELF): a port awaiting `remote_dom`.
    pub fn alloc_unbound(&mut self, remote_dom: u16) -> Result<u32, i64> {
        let remote_dom = Self::resolve_dom(remote_dom);
        self.alloc(PortState::Unbound { remote_dom }, 0)
    }

    /// EVTCHNOP_bind_interdomain. Only loopback (remote_dom DOMID_SELF or our own id) is
    /// possible: the remote port must be unbound toward us. Other domains: EINVAL (back ends
    /// connect from their side with [`Self::connect_backend`]).
    pub fn bind_interdomain(&mut self, remote_dom: u16, remote_port: u32) -> Result<u32, i64> {
        if Self::resolve_dom(remote_dom) != GUEST_DOMID {
            return Err(EINVAL);
        }
        let r = *self.ports.get(remote_port as usize).ok_or(EINVAL)?;
        if r.state
            != (PortState::Unbound {
                remote_dom: GUEST_DOMID,
            })
        {
            return Err(EINVAL);
        }
        let lport = self.alloc(
            PortState::Interdomain {
                remote_dom: GUEST_DOMID,
                remote_port,
            },
            r.vcpu,
        )?;
        self.ports[remote_port as usize].state = PortState::Interdomain {
            remote_dom: GUEST_DOMID,
            remote_port: lport,
        };
        Ok(lport)
    }

    /// EVTCHNOP_bind_virq: EINVAL for virq >= NR_VIRQS, ENOENT for a vCPU other than 0,
    /// EEXIST if the VIRQ is already bound.
    pub fn bind_virq(&mut self, virq: u32, vcpu: u32) -> Result<u32, i64> {
        if virq >= NR_VIRQS {
            return Err(EINVAL);
        }
        if vcpu != 0 {
            return Err(ENOENT);
        }
        if self.virq_to_port[virq as usize] != 0 {
            return Err(EEXIST);
        }
        let p = self.alloc(PortState::Virq(virq), vcpu)?;
        self.virq_to_port[virq as usize] = p;
        Ok(p)
    }

    /// EVTCHNOP_bind_ipi: ENOENT for a vCPU other than 0.
    pub fn bind_ipi(&mut self, vcpu: u32) -> Result<u32, i64> {
        if vcpu != 0 {
            return Err(ENOENT);
        }
        self.alloc(PortState::Ipi, vcpu)
    }

    /// EVTCHNOP_close. EINVAL for port 0, out-of-range or free ports. A loopback peer
    /// becomes unbound again (as Xen). The port's pending bit (2-level) or PENDING
    /// (FIFO) is cleared, as Xen's evtchn_free does.
    pub fn close(&mut self, mem: &mut dyn GuestPhys, port: u32) -> Result<(), i64> {
        if port == 0 {
            return Err(EINVAL);
        }
        let p = *self.ports.get(port as usize).ok_or(EINVAL)?;
        match p.state {
            PortState::Free => return Err(EINVAL),
            PortState::Virq(v) => {
                if let Some(slot) = self.virq_to_port.get_mut(v as usize) {
                    if *slot == port {
                        *slot = 0;
                    }
                }
            }
            PortState::Interdomain {
                remote_dom: GUEST_DOMID,
                remote_port,
            } if remote_port != port => {
                if let Some(peer) = self.ports.get_mut(remote_port as usize) {
                    if peer.state
                        == (PortState::Interdomain {
                            remote_dom: GUEST_DOMID,
                            remote_port: port,
                        })
                    {
                        peer.state = PortState::Unbound {
                            remote_dom: GUEST_DOMID,
                        };
                    }
                }
            }
            _ => {}
        }
        self.ports[port as usize] = FREE;
        self.clear_pending(mem, port);
        Ok(())
    }

    /// evtchn_port_clear_pending.
    fn clear_pending(&mut self, mem: &mut dyn GuestPhys, port: u32) {
        match self.fifo.as_mut() {
            Some(f) => f.clear_pending(mem, port),
            None => {
                let _ = self.test_and_clear_bit(mem, EVTCHN_PENDING, port);
            }
        }
    }

    /// EVTCHNOP_status (dom == DOMID_SELF). Free ports (and port 0) report Free; EINVAL
    /// out of range.
    pub fn status(&self, port: u32) -> Result<Port, i64> {
        self.ports.get(port as usize).copied().ok_or(EINVAL)
    }

    /// EVTCHNOP_bind_vcpu: ENOENT for a vCPU other than 0; EINVAL for invalid/free ports,
    /// IPIs and per-vCPU VIRQs (as Xen). With one vCPU it changes nothing else.
    pub fn bind_vcpu(&mut self, port: u32, vcpu: u32) -> Result<(), i64> {
        if vcpu != 0 {
            return Err(ENOENT);
        }
        let p = self.port_mut(port)?;
        match p.state {
            PortState::Virq(v) if virq_is_global(v) => {}
            PortState::Unbound { .. } | PortState::Interdomain { .. } | PortState::Pirq(_) => {}
            _ => return Err(EINVAL),
        }
        p.vcpu = vcpu;
        Ok(())
    }

    pub fn port_of_virq(&self, virq: u32) -> Option<u32> {
        match self.virq_to_port.get(virq as usize) {
            Some(&p) if p != 0 => Some(p),
            _ => None,
        }
    }

    /// Guest-initiated EVTCHNOP_send. Ok(Some((backend_dom, port))) for an interdomain
    /// channel to a back end (the caller notifies it; `port` is the channel's port, the same
    /// number on both sides); Ok(None) when delivered locally (IPI, loopback) or dropped
    /// (unbound, as Xen); Err(EINVAL) for invalid, free, VIRQ and PIRQ ports.
    pub fn send(&mut self, mem: &mut dyn GuestPhys, port: u32) -> Result<Option<(u16, u32)>, i64> {
        let p = *self.ports.get(port as usize).ok_or(EINVAL)?;
        match p.state {
            PortState::Interdomain {
                remote_dom: GUEST_DOMID,
                remote_port,
            } => {
                self.raise(mem, remote_port);
                Ok(None)
            }
            PortState::Interdomain {
                remote_dom,
                remote_port,
            } => Ok(Some((remote_dom, remote_port))),
            PortState::Ipi => {
                self.raise(mem, port);
                Ok(None)
            }
            PortState::Unbound { .. } => Ok(None),
            PortState::Free | PortState::Virq(_) | PortState::Pirq(_) => Err(EINVAL),
        }
    }

    // Byte-wise bit helpers on shared_info. None when outside guest memory.
    fn bit_addr(&self, off: u64, bit: u32) -> (u64, u8) {
        (
            self.shared_info_gpa
                .wrapping_add(off)
                .wrapping_add((bit / 8) as u64),
            1u8 << (bit % 8),
        )
    }

    fn test_bit(&self, mem: &dyn GuestPhys, off: u64, bit: u32) -> Option<bool> {
        let (a, m) = self.bit_addr(off, bit);
        Some(mem.read_u8(a)? & m != 0)
    }

    /// Returns the old value of the bit.
    fn test_and_set_bit(&self, mem: &mut dyn GuestPhys, off: u64, bit: u32) -> Option<bool> {
        let (a, m) = self.bit_addr(off, bit);
        let b = mem.read_u8(a)?;
        if b & m == 0 && !mem.write_u8(a, b | m) {
            return None;
        }
        Some(b & m != 0)
    }

    /// Returns the old value of the bit.
    fn test_and_clear_bit(&self, mem: &mut dyn GuestPhys, off: u64, bit: u32) -> Option<bool> {
        let (a, m) = self.bit_addr(off, bit);
        let b = mem.read_u8(a)?;
        if b & m != 0 && !mem.write_u8(a, b & !m) {
            return None;
        }
        Some(b & m != 0)
    }

    /// Set vCPU 0's selector bit for `port`'s word; on a 0->1 transition mark the upcall
    /// pending (vcpu_mark_events_pending).
    fn mark_pending(&self, mem: &mut dyn GuestPhys, port: u32) {
        let word = port / self.width.word_bits();
        if self.test_and_set_bit(
            mem,
            self.vcpu_info_gpa
                .wrapping_sub(self.shared_info_gpa)
                .wrapping_add(self.width.pending_sel_off()),
            word,
        ) == Some(false)
        {
            let _ = mem.write_u8(self.vcpu_info_gpa.wrapping_add(VCPU0_UPCALL_PENDING), 1);
        }
    }

    /// Raise an event on `port` toward the guest (evtchn_2l_set_pending): set the pending
    /// bit; on a 0->1 transition of an unmasked port, set the selector bit and (on its 0->1
    /// transition) evtchn_upcall_pending. Returns whether an upcall is now deliverable
    /// (upcall_pending set and upcall_mask clear). Port 0 and out-of-range ports are ignored.
    /// In FIFO mode: Xen's evtchn_fifo_set_pending (see `evtchn_fifo.rs`).
    pub fn raise(&mut self, mem: &mut dyn GuestPhys, port: u32) -> bool {
        if let Some(f) = self.fifo.as_mut() {
            if port != 0 && port < fifo::EVTCHN_FIFO_NR_CHANNELS {
                f.set_pending(mem, port, self.vcpu_info_gpa);
            }
        } else if port != 0 && port < self.width.max_ports() {
            let was = self.test_and_set_bit(mem, EVTCHN_PENDING, port);
            if was == Some(false) && self.test_bit(mem, self.width.mask_off(), port) == Some(false)
            {
                self.mark_pending(mem, port);
            }
        }
        self.upcall_deliverable(mem)
    }

    /// Raise the port bound to `virq`; false (nothing happens) when it is unbound.
    pub fn raise_virq(&mut self, mem: &mut dyn GuestPhys, virq: u32) -> bool {
        match self.port_of_virq(virq) {
            Some(p) => self.raise(mem, p),
            None => false,
        }
    }

    /// EVTCHNOP_unmask (evtchn_2l_unmask): clear the mask bit; if it was set and the port is
    /// pending, set the selector bit and upcall_pending as raise() does. Returns as raise().
    /// In FIFO mode: clear MASKED and relink if PENDING (evtchn_fifo_unmask); a port without
    /// an event word is left alone.
    pub fn unmask(&mut self, mem: &mut dyn GuestPhys, port: u32) -> Result<bool, i64> {
        if port >= self.max_ports() {
            return Err(EINVAL);
        }
        if let Some(f) = self.fifo.as_mut() {
            f.unmask(mem, port, self.vcpu_info_gpa);
        } else if self.test_and_clear_bit(mem, self.width.mask_off(), port) == Some(true)
            && self.test_bit(mem, EVTCHN_PENDING, port) == Some(true)
        {
            self.mark_pending(mem, port);
        }
        Ok(self.upcall_deliverable(mem))
    }

    /// EVTCHNOP_reset for DOMID_SELF: close every port (back-end ones included, as Xen;
    /// their pending state cleared), then switch back to the 2-level ABI if FIFO was in
    /// use (the control block and array frames are released, the port limit shrinks).
    pub fn reset(&mut self, mem: &mut dyn GuestPhys) {
        for port in 1..self.ports.len() as u32 {
            if self.ports[port as usize].state != PortState::Free {
                self.ports[port as usize] = FREE;
                self.clear_pending(mem, port);
            }
        }
        self.virq_to_port = [0; NR_VIRQS as usize];
        if self.fifo.take().is_some() {
            self.ports.truncate(self.width.max_ports() as usize);
        }
    }

    /// EVTCHNOP_init_control (evtchn_fifo_init_control) for the domain's one vCPU: the
    /// control block at `offset` in guest frame `gfn`. Errors as Xen: ENOENT for a vCPU
    /// other than 0; EINVAL for an offset that is not 8-byte aligned or lets the 72-byte
    /// block cross the frame, for a second init (the vCPU's block is mapped), and for a
    /// frame the domain may not map writable (`frame_ok`) or outside guest memory.
    /// On the switch from 2-level, ports pending in the shared_info bitmap are remembered
    /// and set pending in the FIFO array once their event-array frame is added; every
    /// port gets the default priority. Returns EVTCHN_FIFO_LINK_BITS.
    pub fn init_control(
        &mut self,
        mem: &mut dyn GuestPhys,
        gfn: u64,
        offset: u32,
        vcpu: u32,
        frame_ok: &dyn Fn(u64) -> bool,
    ) -> Result<u8, i64> {
        let cb = fifo::check_init_control(gfn, offset, vcpu)?;
        if self.fifo.is_some() {
            return Err(EINVAL);
        }
        if !frame_ok(gfn) || !fifo::frame_in_ram(mem, gfn) {
            return Err(EINVAL);
        }
        let mut f = Box::new(Fifo::new(cb));
        for port in 1..self.width.max_ports() {
            if self.test_bit(mem, EVTCHN_PENDING, port) == Some(true) {
                f.mark_pending(port);
            }
        }
        self.fifo = Some(f);
        self.ports
            .resize(fifo::EVTCHN_FIFO_NR_CHANNELS as usize, FREE);
        Ok(fifo::EVTCHN_FIFO_LINK_BITS)
    }

    /// EVTCHNOP_expand_array: add event-array frame `gfn` (1024 more ports with event
    /// words). EOPNOTSUPP before init_control, ENOSPC past 128 frames, EINVAL for a frame
    /// the domain may not map writable or outside guest memory. Returns as raise().
    pub fn expand_array(
        &mut self,
        mem: &mut dyn GuestPhys,
        gfn: u64,
        frame_ok: &dyn Fn(u64) -> bool,
    ) -> Result<bool, i64> {
        let vi = self.vcpu_info_gpa;
        let f = self.fifo.as_mut().ok_or(fifo::NOT_FIFO)?;
        f.expand(mem, gfn, frame_ok, vi)?;
        Ok(self.upcall_deliverable(mem))
    }

    /// EVTCHNOP_set_priority: EINVAL for an out-of-range port or a priority above 15;
    /// ENOSYS in 2-level mode (no priorities there), as Xen's evtchn_port_set_priority.
    pub fn set_priority(&mut self, port: u32, priority: u32) -> Result<(), i64> {
        if port >= self.max_ports() {
            return Err(EINVAL);
        }
        self.fifo
            .as_mut()
            .ok_or(ENOSYS)?
            .set_priority(port, priority)
    }

    /// vcpu_info[0].evtchn_upcall_pending, ignoring the upcall mask (false when
    /// shared_info is outside guest memory).
    pub fn upcall_pending(&self, mem: &dyn GuestPhys) -> bool {
        matches!(mem.read_u8(self.vcpu_info_gpa.wrapping_add(VCPU0_UPCALL_PENDING)), Some(p) if p != 0)
    }

    /// Is `port`'s bit set in evtchn_pending (mask ignored, as SCHEDOP_poll)? False for
    /// out-of-range ports.
    pub fn is_pending(&self, mem: &dyn GuestPhys, port: u32) -> bool {
        match self.fifo.as_deref() {
            Some(f) => f.is_pending(mem, port),
            None => {
                port < self.width.max_ports()
                    && self.test_bit(mem, EVTCHN_PENDING, port) == Some(true)
            }
        }
    }

    /// Is an event deliverable right now (upcall_pending && !upcall_mask)?
    pub fn upcall_deliverable(&self, mem: &dyn GuestPhys) -> bool {
        let pending = mem.read_u8(self.vcpu_info_gpa.wrapping_add(VCPU0_UPCALL_PENDING));
        let mask = mem.read_u8(self.vcpu_info_gpa.wrapping_add(VCPU0_UPCALL_MASK));
        matches!((pending, mask), (Some(p), Some(0)) if p != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SI: u64 = 0x1000;

    fn mem() -> Vec<u8> {
        vec![0u8; 1 << 16]
    }

    fn byte(m: &[u8], off: u64) -> u8 {
        m[(SI + off) as usize]
    }

    #[test]
    fn alloc_close_reuses_lowest_port() {
        let mut m = mem();
        let mut ec = EventChannels::new(GuestWidth::W64, SI);
        ec.bind_backend(1, 0).unwrap();
        ec.bind_backend(2, 0).unwrap();
        assert_eq!(ec.bind_backend(2, 0), Err(EBUSY));
        assert_eq!(ec.bind_backend(0, 0), Err(EINVAL));
        assert_eq!(ec.alloc_unbound(0), Ok(3));
        assert_eq!(ec.alloc_unbound(DOMID_SELF), Ok(4));
        assert_eq!(
            ec.status(4).unwrap().state,
            PortState::Unbound {
                remote_dom: GUEST_DOMID
            }
        );
        assert_eq!(ec.bind_ipi(0), Ok(5));
        ec.close(&mut m, 3).unwrap();
        assert_eq!(ec.status(3).unwrap().state, PortState::Free);
        assert_eq!(ec.close(&mut m, 3), Err(EINVAL));
        assert_eq!(ec.close(&mut m, 0), Err(EINVAL));
        assert_eq!(ec.close(&mut m, 1 << 20), Err(EINVAL));
        assert_eq!(ec.bind_ipi(0), Ok(3));
        assert_eq!(ec.bind_ipi(1), Err(ENOENT));
        assert_eq!(ec.alloc_unbound(0), Ok(6));
        ec.reset(&mut m);
        assert_eq!(ec.status(1).unwrap().state, PortState::Free);
        assert_eq!(ec.alloc_unbound(0), Ok(1));
    }

    #[test]
    fn bind_virq_rules() {
        let mut m = mem();
        let mut ec = EventChannels::new(GuestWidth::W64, SI);
        let p = ec.bind_virq(0, 0).unwrap();
        assert_eq!(p, 1);
        assert_eq!(ec.bind_virq(0, 0), Err(EEXIST));
        assert_eq!(ec.bind_virq(24, 0), Err(EINVAL));
        assert_eq!(ec.bind_virq(3, 1), Err(ENOENT));
        assert_eq!(ec.port_of_virq(0), Some(1));
        assert_eq!(ec.port_of_virq(99), None);
        // VIRQ_TIMER is per-vCPU: cannot be moved.
        assert_eq!(ec.bind_vcpu(p, 0), Err(EINVAL));
        let c = ec.bind_virq(2, 0).unwrap();
        assert_eq!(ec.bind_vcpu(c, 0), Ok(()));
        assert_eq!(ec.bind_vcpu(c, 1), Err(ENOENT));
        ec.close(&mut m, p).unwrap();
        assert_eq!(ec.port_of_virq(0), None);
        assert_eq!(ec.bind_virq(0, 0), Ok(1));
    }

    #[test]
    fn send_rules() {
        let mut m = mem();
        let mut ec = EventChannels::new(GuestWidth::W64, SI);
        assert_eq!(ec.send(&mut m, 5), Err(EINVAL));
        assert_eq!(ec.send(&mut m, 1 << 20), Err(EINVAL));
        ec.bind_backend(1, 0).unwrap();
        ec.bind_backend(2, 0).unwrap();
        assert_eq!(ec.send(&mut m, 2), Ok(Some((0, 2))));
        let v = ec.bind_virq(1, 0).unwrap();
        assert_eq!(ec.send(&mut m, v), Err(EINVAL));
        // Unbound: silently dropped.
        let u = ec.alloc_unbound(0).unwrap();
        assert_eq!(ec.send(&mut m, u), Ok(None));
        assert_eq!(byte(&m, EVTCHN_PENDING), 0);
        // A back end connects to the unbound port.
        assert_eq!(ec.connect_backend(u, 3), Err(EINVAL));
        ec.connect_backend(u, 0).unwrap();
        assert_eq!(ec.send(&mut m, u), Ok(Some((0, u))));
        // IPI: delivered locally.
        let i = ec.bind_ipi(0).unwrap();
        assert_eq!(ec.send(&mut m, i), Ok(None));
        assert_ne!(byte(&m, EVTCHN_PENDING) & (1 << i), 0);
        assert!(ec.upcall_deliverable(&m));
    }

    #[test]
    fn reserved_unbound_port_is_claimed_by_its_back_end() {
        let mut ev = EventChannels::new(GuestWidth::W64, 0);
        assert_eq!(ev.reserve_unbound(0, 0), Err(EINVAL));
        ev.reserve_unbound(2, 0).unwrap();
        assert_eq!(ev.reserve_unbound(2, 0), Err(EBUSY));
        assert_eq!(
            ev.status(2).unwrap().state,
            PortState::Unbound { remote_dom: 0 }
        );
        // The guest's alloc_unbound does not hand it out again.
        assert_ne!(ev.alloc_unbound(0).unwrap(), 2);
        // Another domain cannot take it; domain 0 can.
        assert_eq!(ev.connect_backend(2, 5), Err(EINVAL));
        ev.connect_backend(2, 0).unwrap();
        assert_eq!(
            ev.status(2).unwrap().state,
            PortState::Interdomain {
                remote_dom: 0,
                remote_port: 2
            }
        );
    }

    #[test]
    fn loopback_interdomain() {
        let mut m = mem();
        let mut ec = EventChannels::new(GuestWidth::W64, SI);
        let a = ec.alloc_unbound(DOMID_SELF).unwrap();
        assert_eq!(ec.bind_interdomain(0, a), Err(EINVAL));
        let b = ec.bind_interdomain(DOMID_SELF, a).unwrap();
        assert_eq!(
            ec.status(a).unwrap().state,
            PortState::Interdomain {
                remote_dom: GUEST_DOMID,
                remote_port: b
            }
        );
        assert_eq!(ec.send(&mut m, a), Ok(None));
        assert_ne!(byte(&m, EVTCHN_PENDING) & (1 << b), 0);
        assert_eq!(byte(&m, EVTCHN_PENDING) & (1 << a), 0);
        ec.close(&mut m, b).unwrap();
        assert_eq!(
            ec.status(a).unwrap().state,
            PortState::Unbound {
                remote_dom: GUEST_DOMID
            }
        );
    }

    #[test]
    fn raise_sets_bits_w64() {
        let mut m = mem();
        let mut ec = EventChannels::new(GuestWidth::W64, SI);
        assert!(ec.raise(&mut m, 70)); // word 1, bit 6
        assert_eq!(m[0x1000 + 2048 + 8], 1 << 6);
        assert_eq!(m[0x1000 + 8], 0b10); // pending_sel bit 1
        assert_eq!(m[0x1000], 1);
        // Nothing else changed in the 32-bit places.
        assert_eq!(m[0x1000 + 4], 0);
        assert_eq!(m[0x1000 + 2048 + 4], 0);
    }

    #[test]
    fn raise_sets_bits_w32() {
        let mut m = mem();
        let mut ec = EventChannels::new(GuestWidth::W32, SI);
        assert!(ec.raise(&mut m, 70)); // word 2 (32 per word), bit 6 of that word
        assert_eq!(m[0x1000 + 2048 + 8], 1 << 6);
        assert_eq!(m[0x1000 + 4], 0b100); // pending_sel @4, bit 2
        assert_eq!(m[0x1000 + 8], 0);
        assert_eq!(m[0x1000], 1);
        // Mask @2176 for W32.
        m[0x1000 + 2176 + 9] = 1; // port 72 masked
        m[0x1000 + 4] = 0;
        m[0x1000] = 0;
        assert!(!ec.raise(&mut m, 72));
        assert_eq!(m[0x1000 + 2048 + 9], 1);
        assert_eq!(m[0x1000 + 4], 0);
        assert_eq!(ec.unmask(&mut m, 72), Ok(true));
        assert_eq!(m[0x1000 + 2176 + 9], 0);
        assert_eq!(m[0x1000 + 4], 0b100);
        assert_eq!(ec.unmask(&mut m, 1024), Err(EINVAL));
        let before = m.clone();
        ec.raise(&mut m, 1024); // out of range: memory untouched
        ec.raise(&mut m, 0); // port 0: never raised
        assert!(m == before);
    }

    #[test]
    fn masked_then_unmask_delivers() {
        let mut m = mem();
        let mut ec = EventChannels::new(GuestWidth::W64, SI);
        let p = ec.bind_virq(3, 0).unwrap();
        m[(SI + EVTCHN_MASK_64) as usize] |= 1 << p;
        assert!(!ec.raise_virq(&mut m, 3));
        assert_ne!(byte(&m, EVTCHN_PENDING) & (1 << p), 0);
        assert_eq!(byte(&m, VCPU0_PENDING_SEL_64), 0);
        assert_eq!(byte(&m, VCPU0_UPCALL_PENDING), 0);
        assert!(!ec.upcall_deliverable(&m));
        assert!(!ec.upcall_pending(&m));
        assert!(ec.is_pending(&m, p));
        assert!(!ec.is_pending(&m, p + 1));
        assert!(!ec.is_pending(&m, 1 << 20));
        assert_eq!(ec.unmask(&mut m, p), Ok(true));
        assert_eq!(byte(&m, EVTCHN_MASK_64), 0);
        assert_eq!(byte(&m, VCPU0_PENDING_SEL_64), 1);
        assert_eq!(byte(&m, VCPU0_UPCALL_PENDING), 1);
        // upcall_mask set: pending but not deliverable.
        m[(SI + VCPU0_UPCALL_MASK) as usize] = 1;
        assert!(!ec.upcall_deliverable(&m));
        assert!(ec.upcall_pending(&m));
        assert!(!ec.raise_virq(&mut m, 5)); // unbound virq: nothing
    }

    #[test]
    fn only_pending_transition_propagates() {
        let mut m = mem();
        let mut ec = EventChannels::new(GuestWidth::W64, SI);
        assert!(ec.raise(&mut m, 1));
        // Guest clears selector and upcall_pending but leaves the port pending.
        m[(SI + VCPU0_PENDING_SEL_64) as usize] = 0;
        m[(SI + VCPU0_UPCALL_PENDING) as usize] = 0;
        assert!(!ec.raise(&mut m, 1));
        assert_eq!(byte(&m, VCPU0_PENDING_SEL_64), 0);
        assert_eq!(byte(&m, VCPU0_UPCALL_PENDING), 0);
        // Selector still set from before: a new port in the same word sets no upcall.
        m[(SI + VCPU0_PENDING_SEL_64) as usize] = 1;
        assert!(!ec.raise(&mut m, 2));
        assert_eq!(byte(&m, VCPU0_UPCALL_PENDING), 0);
        // Another word: upcall.
        assert!(ec.raise(&mut m, 64));
        assert_eq!(byte(&m, VCPU0_PENDING_SEL_64), 0b11);
    }

    #[test]
    fn port_limit() {
        for (w, max) in [(GuestWidth::W32, 1024u32), (GuestWidth::W64, 4096)] {
            let mut m = mem();
            let mut ec = EventChannels::new(w, SI);
            for i in 1..max {
                assert_eq!(ec.alloc_unbound(0), Ok(i));
            }
            assert_eq!(ec.alloc_unbound(0), Err(ENOSPC));
            assert_eq!(ec.bind_ipi(0), Err(ENOSPC));
            assert_eq!(ec.status(max), Err(EINVAL));
            ec.close(&mut m, max - 1).unwrap();
            assert_eq!(ec.bind_ipi(0), Ok(max - 1));
        }
    }

    #[test]
    fn shared_info_out_of_memory_is_harmless() {
        let mut m = vec![0u8; 16];
        let mut ec = EventChannels::new(GuestWidth::W64, u64::MAX - 4);
        assert!(!ec.raise(&mut m, 5));
        assert_eq!(ec.unmask(&mut m, 5), Ok(false));
        assert!(!ec.upcall_deliverable(&m));
    }

    #[test]
    fn status_encoding() {
        let mut ec = EventChannels::new(GuestWidth::W64, SI);
        ec.bind_backend(2, 0).unwrap();
        let s = EvtchnStatus::new(DOMID_SELF, 2, &ec.status(2).unwrap());
        let b = s.to_bytes();
        assert_eq!(&b[0..2], &[0xf0, 0x7f]);
        assert_eq!(b[4], 2);
        assert_eq!(b[8], EVTCHNSTAT_INTERDOMAIN as u8);
        assert_eq!(&b[16..24], &[0, 0, 0, 0, 2, 0, 0, 0]);
        let s = EvtchnStatus::new(DOMID_SELF, 9, &ec.status(9).unwrap());
        assert_eq!(s.status, EVTCHNSTAT_CLOSED);
    }
}
