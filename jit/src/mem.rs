//! Guest physical memory: one contiguous host mapping, every access bounds-checked.

use memmap2::MmapMut;

/// Guest RAM. Physical address `p` lives at `base + p` for `p < size`; nothing else is RAM.
pub struct GuestRam {
    map: MmapMut,
}

impl GuestRam {
    /// Allocate `size` bytes of zeroed RAM (rounded up to 4 KiB).
    pub fn new(size: u64) -> std::io::Result<GuestRam> {
        let size = (size + 0xfff) & !0xfff;
        let len = usize::try_from(size).map_err(|_| std::io::Error::other("RAM size too large"))?;
        let map = MmapMut::map_anon(len.max(4096))?;
        Ok(GuestRam { map })
    }

    pub fn size(&self) -> u64 {
        self.map.len() as u64
    }

    /// Host base pointer (for the JIT's TLB addends only).
    pub fn base(&mut self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    fn range(&self, paddr: u64, len: usize) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(paddr).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.map.len()).then_some(start..end)
    }

    /// A slice of RAM, or None when any byte is outside RAM.
    pub fn slice(&self, paddr: u64, len: usize) -> Option<&[u8]> {
        self.range(paddr, len).map(|r| &self.map[r])
    }

    pub fn slice_mut(&mut self, paddr: u64, len: usize) -> Option<&mut [u8]> {
        self.range(paddr, len).map(|r| &mut self.map[r])
    }

    pub fn read(&self, paddr: u64, buf: &mut [u8]) -> bool {
        match self.slice(paddr, buf.len()) {
            Some(s) => {
                buf.copy_from_slice(s);
                true
            }
            None => false,
        }
    }

    pub fn write(&mut self, paddr: u64, data: &[u8]) -> bool {
        match self.slice_mut(paddr, data.len()) {
            Some(s) => {
                s.copy_from_slice(data);
                true
            }
            None => false,
        }
    }

    pub fn read_u64(&self, paddr: u64) -> Option<u64> {
        self.slice(paddr, 8)
            .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
    }

    pub fn write_u64(&mut self, paddr: u64, v: u64) -> bool {
        self.write(paddr, &v.to_le_bytes())
    }

    pub fn read_u32(&self, paddr: u64) -> Option<u32> {
        self.slice(paddr, 4)
            .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
    }

    pub fn write_u32(&mut self, paddr: u64, v: u32) -> bool {
        self.write(paddr, &v.to_le_bytes())
    }

    /// Read `size` (1..=8) bytes little-endian. The common sizes are fixed-size loads, not
    /// a call to memcpy (the engine's slow paths read guest memory this way).
    pub fn read_le(&self, paddr: u64, size: usize) -> Option<u64> {
        let s = self.slice(paddr, size)?;
        Some(match size {
            1 => s[0] as u64,
            2 => u16::from_le_bytes([s[0], s[1]]) as u64,
            4 => u32::from_le_bytes(s.try_into().ok()?) as u64,
            8 => u64::from_le_bytes(s.try_into().ok()?),
            _ => {
                let mut b = [0u8; 8];
                b[..size].copy_from_slice(s);
                u64::from_le_bytes(b)
            }
        })
    }

    pub fn write_le(&mut self, paddr: u64, size: usize, v: u64) -> bool {
        let Some(s) = self.slice_mut(paddr, size) else {
            return false;
        };
        match size {
            1 => s[0] = v as u8,
            2 => s.copy_from_slice(&(v as u16).to_le_bytes()),
            4 => s.copy_from_slice(&(v as u32).to_le_bytes()),
            8 => s.copy_from_slice(&v.to_le_bytes()),
            _ => s.copy_from_slice(&v.to_le_bytes()[..size]),
        }
        true
    }
}
