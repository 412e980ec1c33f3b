//! Time and events on the vCPU: the PV clock in shared_info, timers (set_timer_op,
//! vcpu_op single-shot and periodic), VIRQ_TIMER, upcall delivery to the event callback,
//! and blocking (sched_op block / poll) on the virtual clock.

use std::mem::offset_of;

use frontend_x86::state::X86State;
use jit::Engine;

use super::hypercall::TrapInfo;
use super::PvDomain;
use crate::builder::abi::{SharedInfo32, SharedInfo64, VcpuInfo64, VcpuTimeInfo};
use crate::builder::GuestType;
use crate::core::errno::*;
use crate::core::GuestPhys;

pub const VIRQ_TIMER: u32 = 0;

impl PvDomain {
    fn shared_info(&self) -> u64 {
        self.dom.layout.platform.shared_info_mfn << 12
    }

    /// Write vCPU 0's vcpu_time_info and the wall clock (version protocol: odd while
    /// updating).
    pub fn publish_time(&mut self, e: &mut Engine) {
        let (ts, st, mul, shift) = self.clock.time_info();
        let t = self.vcpu_info_addr() + offset_of!(VcpuInfo64, time) as u64;
        let ram = e.ram();
        let v = GuestPhys::read_u32(ram, t).unwrap_or(0) | 1;
        GuestPhys::write_u32(ram, t, v);
        GuestPhys::write_u64(ram, t + offset_of!(VcpuTimeInfo, tsc_timestamp) as u64, ts);
        GuestPhys::write_u64(ram, t + offset_of!(VcpuTimeInfo, system_time) as u64, st);
        GuestPhys::write_u32(
            ram,
            t + offset_of!(VcpuTimeInfo, tsc_to_system_mul) as u64,
            mul,
        );
        GuestPhys::write_u8(
            ram,
            t + offset_of!(VcpuTimeInfo, tsc_shift) as u64,
            shift as u8,
        );
        // XEN_PVCLOCK_TSC_STABLE_BIT: one vCPU, one clock.
        GuestPhys::write_u8(ram, t + offset_of!(VcpuTimeInfo, flags) as u64, 1);
        GuestPhys::write_u32(ram, t, v.wrapping_add(1));

        let (sec, nsec) = self.clock.boot_wallclock;
        let base = self.shared_info();
        let (ver, s, ns, hi) = match self.guest() {
            GuestType::X86_64 => (
                offset_of!(SharedInfo64, wc_version),
                offset_of!(SharedInfo64, wc_sec),
                offset_of!(SharedInfo64, wc_nsec),
                offset_of!(SharedInfo64, wc_sec_hi),
            ),
            GuestType::X86_32Pae => (
                offset_of!(SharedInfo32, wc_version),
                offset_of!(SharedInfo32, wc_sec),
                offset_of!(SharedInfo32, wc_nsec),
                offset_of!(SharedInfo32, arch) + 24,
            ),
        };
        let wv = GuestPhys::read_u32(ram, base + ver as u64).unwrap_or(0) | 1;
        GuestPhys::write_u32(ram, base + ver as u64, wv);
        GuestPhys::write_u32(ram, base + s as u64, sec as u32);
        GuestPhys::write_u32(ram, base + ns as u64, nsec);
        GuestPhys::write_u32(ram, base + hi as u64, (sec >> 32) as u32);
        GuestPhys::write_u32(ram, base + ver as u64, wv.wrapping_add(1));
    }

    /// Write vcpu_runstate_info at the registered address: `state` (RUNSTATE_running 0,
    /// blocked 2) since now; time[0] running, time[2] blocked. One vCPU never waits
    /// (runnable) or is taken offline here.
    pub fn update_runstate(&mut self, e: &mut Engine, state: u32) {
        let Some(va) = self.runstate_va else { return };
        let now = self.now(e);
        let total_blocked = self.blocked_ns;
        let running = now.saturating_sub(total_blocked);
        let mut b = Vec::with_capacity(48);
        b.extend_from_slice(&state.to_le_bytes());
        if self.guest() == GuestType::X86_64 {
            b.extend_from_slice(&[0; 4]);
        }
        b.extend_from_slice(&now.to_le_bytes());
        for t in [running, 0, total_blocked, 0] {
            b.extend_from_slice(&t.to_le_bytes());
        }
        // A bad address is the guest's problem: Xen silently skips the update.
        let _ = self.write_guest(e, va, &b);
    }

    /// System time now.
    pub fn now(&self, e: &Engine) -> u64 {
        self.clock.now(e.env.icount)
    }

    /// Fire due timers (VIRQ_TIMER), then bound the next engine run by the next deadline
    /// (deterministic mode) or a time slice (realtime mode), and the user's budget.
    pub fn service_timers(&mut self, e: &mut Engine) {
        let now = self.now(e);
        if self.timers.expire(now) {
            self.evtchn.raise_virq(e.ram(), VIRQ_TIMER);
        }
        let mut limit = self.opts.max_insns.unwrap_or(u64::MAX);
        let ic = e.env.icount;
        if let Some(d) = self.timers.next() {
            let n = self.clock.insns_until(ic, d).unwrap_or(1_000_000).max(1);
            limit = limit.min(ic.saturating_add(n));
        } else if self.clock.mode == crate::core::time::ClockMode::Realtime {
            limit = limit.min(ic.saturating_add(10_000_000));
        }
        e.env.icount_limit = limit;
    }

    /// Deliver a pending upcall if events are unmasked: Xen's event-callback bounce
    /// (a frame like an interrupt's, events masked on entry).
    pub fn maybe_upcall(&mut self, e: &mut Engine) {
        if self.shutdown.is_some() || self.callbacks.event.0 == 0 {
            return;
        }
        if !self.evtchn.upcall_deliverable(e.ram()) {
            return;
        }
        let rip = X86State(&mut e.env).rip();
        let t = TrapInfo {
            flags: 4,
            cs: self.callbacks.event_cs,
            address: self.callbacks.event.0,
        };
        if let Err(why) = self.bounce(e, 0, None, rip, t) {
            self.crash(e, why);
        }
    }

    /// sched_op block: enable event delivery and wait for an event (or the next timer).
    pub fn block(&mut self, e: &mut Engine) {
        self.set_upcall_mask(e, 0);
        self.wait_for_event(e, None, &[]);
    }

    /// Wait until an event is pending for the vCPU (or one of `ports`), or `timeout`.
    /// Returns false when nothing can ever wake the guest.
    pub fn wait_for_event(&mut self, e: &mut Engine, timeout: Option<u64>, ports: &[u32]) -> bool {
        loop {
            // The back ends' turn while the vCPU waits (the console drains its ring).
            self.poll_backends(e);
            let pending = if ports.is_empty() {
                self.evtchn.upcall_pending(e.ram())
            } else {
                ports.iter().any(|&p| self.evtchn.is_pending(e.ram(), p))
            };
            if pending {
                return true;
            }
            let now = self.now(e);
            let next = match (self.timers.next(), timeout) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => {
                    // Only console input or a xenstore-socket client can wake the guest now.
                    if (self.input.is_some() || self.xsock.is_some()) && self.wait_host(e, None) {
                        if self.shutdown.is_some() {
                            return true;
                        }
                        continue;
                    }
                    return false;
                }
            };
            let ic = e.env.icount;
            self.update_runstate(e, 2);
            if self.clock.mode == crate::core::time::ClockMode::Realtime
                && (self.input.is_some() || self.xsock.is_some())
            {
                // Sleep until the deadline, console input or socket traffic, whichever
                // comes first.
                let wait = std::time::Duration::from_nanos(next.saturating_sub(now));
                if self.wait_host(e, Some(wait)) {
                    self.update_runstate(e, 0);
                    if self.shutdown.is_some() {
                        return true;
                    }
                    continue;
                }
                // The wait took the time: the realtime clock has moved on.
            } else {
                self.clock.idle_until(ic, next);
                // Deterministic time jumps; socket clients are still served.
                self.service_xsock(e, false);
            }
            let now2 = self.now(e).max(now);
            self.blocked_ns += now2.saturating_sub(now);
            self.update_runstate(e, 0);
            if self.timers.expire(now2) {
                self.evtchn.raise_virq(e.ram(), VIRQ_TIMER);
            }
            if timeout.is_some_and(|t| now2 >= t) {
                return true;
            }
        }
    }
}

pub(super) fn set_timer_op(d: &mut PvDomain, e: &mut Engine, a: [u64; 6]) -> HcResult {
    let t = match d.guest() {
        GuestType::X86_64 => a[0],
        GuestType::X86_32Pae => (a[0] & 0xffff_ffff) | (a[1] & 0xffff_ffff) << 32,
    };
    // 0 cancels; a deadline in the past fires at once (Xen's set_timer_op).
    d.timers.singleshot = if t == 0 { None } else { Some(t) };
    d.service_timers(e);
    Ok(0)
}

/// vcpu_op timer commands (the rest of vcpu_op is in mmu.rs's dispatcher).
pub(super) fn vcpu_timer_op(d: &mut PvDomain, e: &mut Engine, cmd: u64, arg: u64) -> HcResult {
    match cmd {
        // VCPUOP_set_periodic_timer { uint64_t period_ns; }
        6 => {
            let mut b = [0u8; 8];
            d.read_guest(e, arg, &mut b).map_err(|_| EFAULT)?;
            let p = u64::from_le_bytes(b);
            // Xen refuses periods under 1 ms... (MILLISECS(1)) with -EINVAL.
            if p < 1_000_000 {
                return Err(EINVAL);
            }
            let now = d.now(e);
            d.timers.periodic = Some((now + p, p));
            d.service_timers(e);
            Ok(0)
        }
        // VCPUOP_stop_periodic_timer
        7 => {
            d.timers.periodic = None;
            Ok(0)
        }
        // VCPUOP_set_singleshot_timer { uint64_t timeout_abs_ns; uint32_t flags; }
        8 => {
            let mut b = [0u8; 12];
            d.read_guest(e, arg, &mut b).map_err(|_| EFAULT)?;
            let t = u64::from_le_bytes(b[..8].try_into().unwrap());
            let flags = u32::from_le_bytes(b[8..].try_into().unwrap());
            // VCPU_SSHOTTMR_future: a deadline in the past is -ETIME.
            if flags & 1 != 0 && t < d.now(e) {
                return Err(ETIME);
            }
            d.timers.singleshot = Some(t);
            d.service_timers(e);
            Ok(0)
        }
        // VCPUOP_stop_singleshot_timer
        9 => {
            d.timers.singleshot = None;
            Ok(0)
        }
        _ => Err(ENOSYS),
    }
}
