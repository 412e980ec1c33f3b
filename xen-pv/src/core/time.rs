//! The virtual clock: the one source of guest time.
//!
//! Guest system time is nanoseconds since the domain started. The guest TSC runs at 1 GHz
//! and equals system time, so `vcpu_time_info` is the identity (tsc_to_system_mul 2^31,
//! tsc_shift 1) and never needs refreshing: rdtsc and the PV clock always agree.
//! - Deterministic mode: time is the retired-instruction count (1 ns per instruction) plus
//!   the time the guest spent blocked (skipped to the next timer at once). Two runs of the
//!   same guest see the same times.
//! - Realtime mode: time follows the host's monotonic clock; blocking sleeps.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockMode {
    Deterministic,
    Realtime,
}

#[derive(Clone, Debug)]
pub struct VirtualClock {
    pub mode: ClockMode,
    start: Instant,
    /// Deterministic mode: nanoseconds skipped while blocked.
    idle_ns: u64,
    /// Wall-clock time at system time 0 (seconds, nanoseconds since the epoch).
    pub boot_wallclock: (u64, u32),
}

/// The wall clock a deterministic run starts at: 2026-01-01T00:00:00Z.
pub const DETERMINISTIC_EPOCH: u64 = 1_767_225_600;

impl VirtualClock {
    pub fn new(mode: ClockMode) -> VirtualClock {
        let boot_wallclock = match mode {
            ClockMode::Deterministic => (DETERMINISTIC_EPOCH, 0),
            ClockMode::Realtime => {
                let d = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                (d.as_secs(), d.subsec_nanos())
            }
        };
        VirtualClock {
            mode,
            start: Instant::now(),
            idle_ns: 0,
            boot_wallclock,
        }
    }

    /// Guest system time (ns) after `icount` retired instructions.
    pub fn now(&self, icount: u64) -> u64 {
        match self.mode {
            ClockMode::Deterministic => icount.wrapping_add(self.idle_ns),
            ClockMode::Realtime => self.start.elapsed().as_nanos() as u64,
        }
    }

    /// Deterministic mode: the clock is the retired-instruction count plus this offset
    /// (the engine may then compute it in generated code: `jit::Env::inline_clock`).
    pub fn icount_offset(&self) -> Option<u64> {
        match self.mode {
            ClockMode::Deterministic => Some(self.idle_ns),
            ClockMode::Realtime => None,
        }
    }

    /// The guest TSC (1 GHz: equal to system time).
    pub fn tsc(&self, icount: u64) -> u64 {
        self.now(icount)
    }

    /// Instructions that may run before system time reaches `deadline` (deterministic
    /// mode); None in realtime mode, where instruction counts do not map to time.
    pub fn insns_until(&self, icount: u64, deadline: u64) -> Option<u64> {
        match self.mode {
            ClockMode::Deterministic => Some(deadline.saturating_sub(self.now(icount))),
            ClockMode::Realtime => None,
        }
    }

    /// The guest is idle until `deadline`: skip (deterministic) or sleep (realtime).
    pub fn idle_until(&mut self, icount: u64, deadline: u64) {
        let now = self.now(icount);
        if deadline <= now {
            return;
        }
        match self.mode {
            ClockMode::Deterministic => self.idle_ns += deadline - now,
            ClockMode::Realtime => std::thread::sleep(Duration::from_nanos(deadline - now)),
        }
    }

    /// `vcpu_time_info` fields for this clock: (tsc_timestamp, system_time, mul, shift).
    pub fn time_info(&self) -> (u64, u64, u32, i8) {
        (0, 0, 0x8000_0000, 1)
    }
}

/// One-shot and periodic timers of one vCPU, in system time.
#[derive(Clone, Debug, Default)]
pub struct Timers {
    pub singleshot: Option<u64>,
    /// (next deadline, period)
    pub periodic: Option<(u64, u64)>,
}

impl Timers {
    /// The earliest deadline.
    pub fn next(&self) -> Option<u64> {
        match (self.singleshot, self.periodic) {
            (Some(a), Some((b, _))) => Some(a.min(b)),
            (Some(a), None) => Some(a),
            (None, Some((b, _))) => Some(b),
            (None, None) => None,
        }
    }

    /// Expire what is due at `now`; returns whether any timer fired (VIRQ_TIMER).
    pub fn expire(&mut self, now: u64) -> bool {
        let mut fired = false;
        if self.singleshot.is_some_and(|t| t <= now) {
            self.singleshot = None;
            fired = true;
        }
        if let Some((next, period)) = &mut self.periodic {
            if *next <= now {
                fired = true;
                // Skip missed periods, as Xen's periodic timer does.
                let missed = (now - *next) / *period + 1;
                *next += missed * *period;
            }
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_clock_counts_instructions_and_idle_time() {
        let mut c = VirtualClock::new(ClockMode::Deterministic);
        assert_eq!(c.now(1000), 1000);
        assert_eq!(c.insns_until(1000, 5000), Some(4000));
        c.idle_until(1000, 5000);
        assert_eq!(c.now(1000), 5000);
        assert_eq!(c.now(1010), 5010);
        assert_eq!(c.tsc(1010), 5010);
        c.idle_until(1010, 10); // in the past: nothing
        assert_eq!(c.now(1010), 5010);
        assert_eq!(c.boot_wallclock, (DETERMINISTIC_EPOCH, 0));
    }

    #[test]
    fn time_info_is_identity() {
        let (ts, st, mul, shift) = VirtualClock::new(ClockMode::Deterministic).time_info();
        // Linux's pvclock: ((tsc - ts) << shift) * mul >> 32 + st
        let tsc = 123_456_789_012u64;
        let ns = (((tsc - ts) << shift) as u128 * mul as u128 >> 32) as u64 + st;
        assert_eq!(ns, tsc);
    }

    #[test]
    fn timers_fire_and_periodic_skips_missed_periods() {
        let mut t = Timers {
            singleshot: Some(100),
            periodic: Some((50, 20)),
        };
        assert_eq!(t.next(), Some(50));
        assert!(!t.expire(49));
        assert!(t.expire(50));
        assert_eq!(t.periodic, Some((70, 20)));
        assert!(t.expire(135));
        assert_eq!(t.singleshot, None);
        assert_eq!(t.periodic, Some((150, 20)));
        assert_eq!(t.next(), Some(150));
    }
}
