//! Which guest page-table entries the TLB and the jump caches were filled from.
//!
//! A guest must flush after changing a present page-table entry, and a hardware flush drops
//! every translation. What it really has to drop are the translations that entry produced:
//! every other one would be refilled to exactly what it was. The engine records, for each
//! half of the address space (bit 63 of the virtual address), the guest-physical chunks of
//! page-table memory that page walks for that half read; a platform that sees an entry
//! change (`Engine::pt_changed`) marks only the halves that read it as stale, and a flush
//! request (`Engine::tlb_flush_stale`) drops those halves. A 64-bit PV kernel's changes
//! to user page tables then leave the kernel half of the TLB warm, and changes to tables
//! no walk has read since the last flush (a process being torn down) need no flush at all.
//!
//! Granularity is 2 KiB, so the two halves of a 4-level top table (slots 0..255 and
//! 256..511) are told apart: changing a user slot of the kernel's L4 does not touch the
//! upper half.

/// log2 of the chunk size.
const CHUNK_BITS: u32 = 11;

/// The guest-physical entries one successful page walk read, top level first.
#[derive(Clone, Copy, Debug, Default)]
pub struct WalkPath {
    pub entries: [u64; 4],
    pub len: usize,
    /// A write to the page would be allowed now and would set no accessed/dirty bit (the
    /// leaf is already dirty): a read may fill the TLB for writes too, as a hardware TLB
    /// caches the dirty state with the translation.
    pub writable_dirty: bool,
}

impl WalkPath {
    pub fn push(&mut self, pa: u64) {
        if self.len < self.entries.len() {
            self.entries[self.len] = pa;
            self.len += 1;
        }
    }

    pub fn as_slice(&self) -> &[u64] {
        &self.entries[..self.len]
    }
}

/// Per-half dependency sets and stale marks. Chunks outside guest RAM are never noted;
/// a change reported there marks both halves stale (page tables live in RAM, so this only
/// makes a flush conservative).
pub struct PtDeps {
    planes: [Vec<u64>; 2],
    /// Any bit set in the plane since its last clear (skips clearing untouched planes).
    used: [bool; 2],
    stale: [bool; 2],
    chunks: u64,
}

impl PtDeps {
    pub fn new(ram_size: u64) -> PtDeps {
        let chunks = ram_size.div_ceil(1 << CHUNK_BITS);
        let words = chunks.div_ceil(64) as usize;
        PtDeps {
            planes: [vec![0; words], vec![0; words]],
            used: [false; 2],
            stale: [false; 2],
            chunks,
        }
    }

    /// Translations for `vaddr` now depend on the entries of `path`.
    pub fn note(&mut self, vaddr: u64, path: &[u64]) {
        let half = (vaddr >> 63) as usize;
        for &pa in path {
            let c = pa >> CHUNK_BITS;
            if c < self.chunks {
                self.planes[half][(c / 64) as usize] |= 1 << (c % 64);
                self.used[half] = true;
            }
        }
    }

    /// The entry at guest-physical `pa` changed: mark the halves that read it stale.
    pub fn changed(&mut self, pa: u64) {
        let c = pa >> CHUNK_BITS;
        for half in 0..2 {
            if c >= self.chunks || self.planes[half][(c / 64) as usize] & (1 << (c % 64)) != 0 {
                self.stale[half] = true;
            }
        }
    }

    pub fn is_stale(&self, half: usize) -> bool {
        self.stale[half]
    }

    /// Every translation of `half` was dropped (in every MMU mode, jump caches included or
    /// revalidated): nothing depends on any entry any more.
    pub fn clear(&mut self, half: usize) {
        if std::mem::take(&mut self.used[half]) {
            self.planes[half].fill(0);
        }
        self.stale[half] = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPPER: u64 = 0xffff_8800_0000_0000;

    #[test]
    fn changes_mark_only_the_halves_that_read_them() {
        let mut d = PtDeps::new(1 << 20);
        // A walk of each half through one L4 (at 0x1000): the lower through slot 0 and a
        // table at 0x2000, the upper through slot 273 and a table at 0x3000.
        d.note(0x40_0000, &[0x1000, 0x2008]);
        d.note(UPPER, &[0x1000 + 273 * 8, 0x3000]);
        d.changed(0x5000);
        assert!(!d.is_stale(0) && !d.is_stale(1), "no walk read 0x5000");
        d.changed(0x2ff8); // same 4 KiB table as 0x2008, other 2 KiB chunk
        assert!(!d.is_stale(0));
        d.changed(0x2100);
        assert!(d.is_stale(0) && !d.is_stale(1));
        d.clear(0);
        assert!(!d.is_stale(0));
        d.changed(0x1000 + 5 * 8); // a user slot of the L4
        assert!(
            !d.is_stale(0) && !d.is_stale(1),
            "the lower half was flushed"
        );
        d.changed(0x1000 + 300 * 8); // a kernel slot
        assert!(d.is_stale(1) && !d.is_stale(0));
        d.changed(1 << 30); // outside RAM: conservative
        assert!(d.is_stale(0) && d.is_stale(1));
    }
}
