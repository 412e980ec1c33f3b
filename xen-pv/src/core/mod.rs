//! The engine-agnostic core of the Xen platform: event channels, time, grant tables
//! and xenstore. Nothing here knows the JIT or KVM: guest memory is reached through
//! [`GuestPhys`] (bounds-checked physical accesses), and the vCPU side is driven by whoever
//! runs the guest.

pub mod backend;
pub mod errno;
pub mod evtchn;
pub mod evtchn_fifo;
pub mod grant;
pub mod time;
pub mod xenstore;
pub mod xsring;

/// Bounds-checked access to guest physical (= machine, the p2m is the identity) memory.
/// Every method fails (false / None) rather than touching memory outside the guest.
pub trait GuestPhys {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool;
    fn write(&mut self, gpa: u64, data: &[u8]) -> bool;
    /// Bytes of guest physical memory.
    fn size(&self) -> u64;

    fn read_u64(&self, gpa: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b).then(|| u64::from_le_bytes(b))
    }
    fn read_u32(&self, gpa: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read(gpa, &mut b).then(|| u32::from_le_bytes(b))
    }
    fn read_u8(&self, gpa: u64) -> Option<u8> {
        let mut b = [0u8; 1];
        self.read(gpa, &mut b).then_some(b[0])
    }
    fn write_u64(&mut self, gpa: u64, v: u64) -> bool {
        self.write(gpa, &v.to_le_bytes())
    }
    fn write_u32(&mut self, gpa: u64, v: u32) -> bool {
        self.write(gpa, &v.to_le_bytes())
    }
    fn write_u8(&mut self, gpa: u64, v: u8) -> bool {
        self.write(gpa, &[v])
    }
}

impl GuestPhys for jit::GuestRam {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        jit::GuestRam::read(self, gpa, buf)
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> bool {
        jit::GuestRam::write(self, gpa, data)
    }
    fn size(&self) -> u64 {
        jit::GuestRam::size(self)
    }
    // Fixed-size accesses as plain loads and stores (page-table validation reads entries
    // one by one; the slice copies of the defaults were calls to memcpy).
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        self.read_le(gpa, 8)
    }
    fn read_u32(&self, gpa: u64) -> Option<u32> {
        self.read_le(gpa, 4).map(|v| v as u32)
    }
    fn read_u8(&self, gpa: u64) -> Option<u8> {
        self.read_le(gpa, 1).map(|v| v as u8)
    }
    fn write_u64(&mut self, gpa: u64, v: u64) -> bool {
        self.write_le(gpa, 8, v)
    }
    fn write_u32(&mut self, gpa: u64, v: u32) -> bool {
        self.write_le(gpa, 4, v as u64)
    }
    fn write_u8(&mut self, gpa: u64, v: u8) -> bool {
        self.write_le(gpa, 1, v as u64)
    }
}

/// A plain byte vector as guest memory, for unit tests.
impl GuestPhys for Vec<u8> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        match usize::try_from(gpa)
            .ok()
            .and_then(|a| Some(a..a.checked_add(buf.len())?))
        {
            Some(r) if r.end <= self.len() => {
                buf.copy_from_slice(&self[r]);
                true
            }
            _ => false,
        }
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> bool {
        match usize::try_from(gpa)
            .ok()
            .and_then(|a| Some(a..a.checked_add(data.len())?))
        {
            Some(r) if r.end <= self.len() => {
                self[r].copy_from_slice(data);
                true
            }
            _ => false,
        }
    }
    fn size(&self) -> u64 {
        self.len() as u64
    }
}
