//! The per-vCPU environment generated code runs against, and the softmmu TLB.
//!
//! `Env` is `#[repr(C)]` because backends address its fields by offset. Guest globals come
//! first so that global `i` is at byte offset `8 * i`.

use std::mem::offset_of;

/// Number of u64 guest-state slots.
pub const NGLOBALS: usize = 256;
/// TLB entries per MMU mode (direct-mapped, indexed by virtual page number).
pub const TLB_BITS: u32 = 12;
pub const TLB_SIZE: usize = 1 << TLB_BITS;
/// Number of MMU modes (the frontend decides what they mean, e.g. supervisor and user).
pub const NB_MMU_MODES: usize = 3;
pub const PAGE_BITS: u32 = 12;
pub const PAGE_SIZE: u64 = 1 << PAGE_BITS;
pub const PAGE_MASK: u64 = !(PAGE_SIZE - 1);
/// Victim TLB entries per MMU mode: a small fully associative cache of entries evicted
/// from the direct-mapped TLB, checked by the slow path before a page walk (two buffers a
/// power-of-two apart map to the same TLB index).
pub const VICTIM_SIZE: usize = 8;
/// Tag value that never matches (not page aligned).
pub const TLB_INVALID: u64 = 1;

/// One TLB entry. A tag holds the virtual page address for which that access is allowed
/// without a slow path; `addend` turns a virtual address into a host pointer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TlbEntry {
    pub read: u64,
    pub write: u64,
    pub exec: u64,
    pub addend: u64,
}

impl TlbEntry {
    pub const EMPTY: TlbEntry = TlbEntry {
        read: TLB_INVALID,
        write: TLB_INVALID,
        exec: TLB_INVALID,
        addend: 0,
    };

    /// Does the entry translate nothing (no tag is a page address)?
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.read & !PAGE_MASK != 0
            && self.write & !PAGE_MASK != 0
            && self.exec & !PAGE_MASK != 0
    }

    /// The half of the address space (1: bit 63 set) of the page the entry translates, if
    /// any (all its tags are one page).
    #[inline]
    pub fn half(&self) -> Option<usize> {
        [self.read, self.write, self.exec]
            .into_iter()
            .find(|&t| t & !PAGE_MASK == 0)
            .map(|t| (t >> 63) as usize)
    }

    /// Does the entry translate a page of `half` of the address space (1: bit 63 set)?
    pub fn in_half(&self, half: usize) -> bool {
        [self.read, self.write, self.exec]
            .iter()
            .any(|&t| t != TLB_INVALID && (t >> 63) as usize == half)
    }
}

const _: () = assert!(std::mem::size_of::<TlbEntry>() == 32);
const _: () = assert!(offset_of!(TlbEntry, read) == 0);
const _: () = assert!(offset_of!(TlbEntry, write) == 8);
const _: () = assert!(offset_of!(TlbEntry, exec) == 16);
const _: () = assert!(offset_of!(TlbEntry, addend) == 24);

/// Entries of the indirect-jump cache generated code probes on `Exit::Indirect`.
pub const JC_BITS: u32 = 15;
pub const JC_ENTRIES: usize = 1 << JC_BITS;

/// One indirect-jump cache entry: the target pc, the mode word of the blocks it is valid
/// for (see [`crate::ir::Block::mode`]) and the host address to enter. `code == 0` is empty.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct JcEntry {
    pub pc: u64,
    pub mode: u64,
    pub code: u64,
    /// [`Env::jc_epoch`] of the entry's half of the address space (bit 63 of `pc`) when
    /// the entry was made: a TLB flush bumps the epoch instead of clearing the cache, and
    /// the probe compares it too.
    pub epoch: u64,
}

impl JcEntry {
    pub const EMPTY: JcEntry = JcEntry {
        pc: 0,
        mode: u64::MAX,
        code: 0,
        epoch: u64::MAX,
    };
}

const _: () = assert!(std::mem::size_of::<JcEntry>() == 32);
const _: () = assert!(offset_of!(JcEntry, pc) == 0);
const _: () = assert!(offset_of!(JcEntry, mode) == 8);
const _: () = assert!(offset_of!(JcEntry, code) == 16);

/// Index of `pc` in the indirect-jump cache: its first way. The cache is two-way
/// associative in pairs of entries (`i`, `i ^ 1`): an entry may also sit in the other half
/// of its pair, where it was moved when a newer target took its first way. Every backend
/// probes the first way; a backend may also probe the second.
#[inline]
pub fn jc_index(pc: u64) -> usize {
    ((pc ^ (pc >> JC_BITS)) as usize) & (JC_ENTRIES - 1)
}

/// Fault codes in [`Env::fault`].
pub mod fault {
    /// No fault.
    pub const NONE: u32 = 0;
    /// A guest exception is pending in `Env::exc_*`.
    pub const EXCEPTION: u32 = 1;
    /// A store hit the code of the running block: restart the instruction after the
    /// block is invalidated.
    pub const SMC_RESTART: u32 = 2;
}

/// The state generated code runs against.
#[repr(C)]
pub struct Env {
    /// Guest globals; the frontend assigns their meaning.
    pub g: [u64; NGLOBALS],
    /// Guest instructions retired so far.
    pub icount: u64,
    /// The run loop stops before starting a block when `icount >= icount_limit`.
    pub icount_limit: u64,
    /// Non-zero when a slow path or helper raised a fault (see [`fault`]).
    pub fault: u32,
    /// Current MMU mode (selects the TLB).
    pub mmu_idx: u32,
    /// Id of the running TB (written by each TB on entry).
    pub cur_tb: u32,
    pub _pad: u32,
    pub exc_vector: u32,
    pub exc_has_code: u32,
    pub exc_code: u64,
    pub exc_addr: u64,
    /// Index of the instruction within the running block that the last slow path was for.
    pub cur_insn: u64,
    /// Opaque back pointer to the engine's runtime (used by slow paths and helpers).
    pub rt: *mut u8,
    /// Scratch space for backends (spill slots are on the host stack; this is for helpers
    /// that return a second value).
    pub scratch: [u64; 4],
    /// The indirect-jump cache's epochs for the lower and the upper half of the address
    /// space (see [`JcEntry::epoch`]); never u64::MAX.
    pub jc_epoch: [u64; 2],
    /// Non-zero when the platform's clock is the retired-instruction count plus
    /// `clock_offset` (a deterministic clock): a frontend may then read the time in
    /// generated code (x86 RDTSC) instead of exiting to the platform. Set before the
    /// first translation (blocks are not retranslated when it changes).
    pub inline_clock: u64,
    /// See `inline_clock`; the platform keeps it current while generated code runs.
    pub clock_offset: u64,
    pub tlb: [[TlbEntry; TLB_SIZE]; NB_MMU_MODES],
    /// Indirect-jump cache (host code addresses; only backends that chain use it).
    pub jc: [JcEntry; JC_ENTRIES],
    /// Victim TLB (slow path only), and the next slot to replace per mode.
    pub victim: [[TlbEntry; VICTIM_SIZE]; NB_MMU_MODES],
    pub victim_next: [u32; NB_MMU_MODES],
    /// Per MMU mode and half of the address space, the indexes of the main TLB's entries
    /// filled since: every entry that is not empty has its index among the first
    /// `tlb_used_len[m][h]` of its mode and half (which may also hold emptied ones, ones
    /// refilled for the other half, and repeats), so a flush touches the entries in use
    /// instead of the whole TLB (a PV kernel flushes one half or the other tens of
    /// thousands of times per second of guest work). Kept by [`Env::tlb_set`].
    pub tlb_used: [[[u16; TLB_SIZE]; 2]; NB_MMU_MODES],
    pub tlb_used_len: [[u32; 2]; NB_MMU_MODES],
}
const _: () = assert!(TLB_SIZE <= 1 << 16, "tlb_used holds u16 indexes");

pub const OFF_ICOUNT: usize = offset_of!(Env, icount);
pub const OFF_ICOUNT_LIMIT: usize = offset_of!(Env, icount_limit);
pub const OFF_FAULT: usize = offset_of!(Env, fault);
pub const OFF_MMU_IDX: usize = offset_of!(Env, mmu_idx);
pub const OFF_CUR_TB: usize = offset_of!(Env, cur_tb);
pub const OFF_TLB: usize = offset_of!(Env, tlb);
pub const OFF_JC: usize = offset_of!(Env, jc);
pub const OFF_JC_EPOCH: usize = offset_of!(Env, jc_epoch);
pub const OFF_SCRATCH: usize = offset_of!(Env, scratch);
const _: () = assert!(offset_of!(JcEntry, epoch) == 24);
const _: () = assert!(offset_of!(Env, g) == 0);

impl Env {
    pub fn new() -> Box<Env> {
        // Built field by field: the struct is large, avoid a big stack temporary.
        let mut e: Box<std::mem::MaybeUninit<Env>> = Box::new_uninit();
        let p = e.as_mut_ptr();
        // SAFETY: every field of `Env` is written exactly once below before `assume_init`;
        // `addr_of_mut!` never creates references to uninitialised memory.
        unsafe {
            std::ptr::addr_of_mut!((*p).g).write([0; NGLOBALS]);
            std::ptr::addr_of_mut!((*p).icount).write(0);
            std::ptr::addr_of_mut!((*p).icount_limit).write(u64::MAX);
            std::ptr::addr_of_mut!((*p).fault).write(0);
            std::ptr::addr_of_mut!((*p).mmu_idx).write(0);
            std::ptr::addr_of_mut!((*p).cur_tb).write(u32::MAX);
            std::ptr::addr_of_mut!((*p)._pad).write(0);
            std::ptr::addr_of_mut!((*p).exc_vector).write(0);
            std::ptr::addr_of_mut!((*p).exc_has_code).write(0);
            std::ptr::addr_of_mut!((*p).exc_code).write(0);
            std::ptr::addr_of_mut!((*p).exc_addr).write(0);
            std::ptr::addr_of_mut!((*p).cur_insn).write(0);
            std::ptr::addr_of_mut!((*p).rt).write(std::ptr::null_mut());
            std::ptr::addr_of_mut!((*p).scratch).write([0; 4]);
            std::ptr::addr_of_mut!((*p).jc_epoch).write([0; 2]);
            std::ptr::addr_of_mut!((*p).inline_clock).write(0);
            std::ptr::addr_of_mut!((*p).clock_offset).write(0);
            std::ptr::addr_of_mut!((*p).tlb).write([[TlbEntry::EMPTY; TLB_SIZE]; NB_MMU_MODES]);
            std::ptr::addr_of_mut!((*p).jc).write([JcEntry::EMPTY; JC_ENTRIES]);
            std::ptr::addr_of_mut!((*p).victim)
                .write([[TlbEntry::EMPTY; VICTIM_SIZE]; NB_MMU_MODES]);
            std::ptr::addr_of_mut!((*p).victim_next).write([0; NB_MMU_MODES]);
            std::ptr::addr_of_mut!((*p).tlb_used).write([[[0; TLB_SIZE]; 2]; NB_MMU_MODES]);
            std::ptr::addr_of_mut!((*p).tlb_used_len).write([[0; 2]; NB_MMU_MODES]);
            e.assume_init()
        }
    }

    /// Flush every TLB entry of every mode (and the jump cache, whose entries assume the
    /// current mappings).
    pub fn tlb_flush(&mut self) {
        self.tlb_flush_entries();
        self.jc_invalidate();
    }

    /// Flush every TLB entry of every mode, leaving the jump cache to the caller.
    pub fn tlb_flush_entries(&mut self) {
        for m in 0..NB_MMU_MODES {
            self.tlb_flush_mode(m);
        }
        for m in self.victim.iter_mut() {
            m.fill(TlbEntry::EMPTY);
        }
    }

    /// Write main-TLB entry `idx` of mode `mmu` (every write that may fill an empty entry
    /// goes through here, see `tlb_used`).
    #[inline]
    pub fn tlb_set(&mut self, mmu: usize, idx: usize, e: TlbEntry) {
        let old = &self.tlb[mmu][idx];
        if let Some(h) = e.half() {
            if old.half() != Some(h) {
                if self.tlb_used_len[mmu][h] as usize == TLB_SIZE {
                    self.tlb_used_rebuild(mmu, h);
                }
                let n = self.tlb_used_len[mmu][h] as usize;
                self.tlb_used[mmu][h][n] = idx as u16;
                self.tlb_used_len[mmu][h] += 1;
            }
        }
        self.tlb[mmu][idx] = e;
    }

    /// Rebuild the used list of mode `mmu` and `half` from the entries (when repeats
    /// filled it up).
    fn tlb_used_rebuild(&mut self, mmu: usize, half: usize) {
        let mut n = 0;
        for (i, e) in self.tlb[mmu].iter().enumerate() {
            if e.half() == Some(half) {
                self.tlb_used[mmu][half][n] = i as u16;
                n += 1;
            }
        }
        self.tlb_used_len[mmu][half] = n as u32;
    }

    /// Empty every main-TLB entry of mode `mmu`.
    fn tlb_flush_mode(&mut self, mmu: usize) {
        for half in 0..2 {
            for k in 0..self.tlb_used_len[mmu][half] as usize {
                let i = self.tlb_used[mmu][half][k] as usize;
                self.tlb[mmu][i] = TlbEntry::EMPTY;
            }
            self.tlb_used_len[mmu][half] = 0;
        }
    }

    /// Empty the main-TLB entries of mode `mmu` that translate a page of `half`.
    fn tlb_flush_mode_half(&mut self, mmu: usize, half: usize) {
        for k in 0..self.tlb_used_len[mmu][half] as usize {
            let i = self.tlb_used[mmu][half][k] as usize;
            let e = &mut self.tlb[mmu][i];
            if e.in_half(half) {
                *e = TlbEntry::EMPTY;
            }
        }
        self.tlb_used_len[mmu][half] = 0;
    }

    /// Apply `f` to every main-TLB entry that may not be empty (some more than once).
    pub fn tlb_for_each_used(&mut self, mut f: impl FnMut(&mut TlbEntry)) {
        for m in 0..NB_MMU_MODES {
            for h in 0..2 {
                for k in 0..self.tlb_used_len[m][h] as usize {
                    let i = self.tlb_used[m][h][k] as usize;
                    f(&mut self.tlb[m][i]);
                }
            }
        }
    }

    /// Invalidate the indirect-jump cache: new epochs (a full clear only when they wrap).
    pub fn jc_invalidate(&mut self) {
        self.jc_invalidate_half(0);
        self.jc_invalidate_half(1);
    }

    /// Invalidate the jump-cache entries of one half of the address space (1: the upper).
    pub fn jc_invalidate_half(&mut self, half: usize) {
        self.jc_epoch[half] += 1;
        if self.jc_epoch[half] == u64::MAX {
            self.jc.fill(JcEntry::EMPTY);
            self.jc_epoch = [0; 2];
        }
    }

    /// Enter `e` in the indirect-jump cache at its first way; a live entry for another pc
    /// there moves to the second way of the pair (so two hot targets with one index both
    /// stay), replacing what was there.
    pub fn jc_insert(&mut self, e: JcEntry) {
        let i = jc_index(e.pc);
        let old = self.jc[i];
        if old.code != 0 && old.pc != e.pc && old.epoch == self.jc_epoch_for(old.pc) {
            self.jc[i ^ 1] = old;
        } else if self.jc[i ^ 1].pc == e.pc {
            // Never two entries for one pc (one would go stale when the other is replaced).
            self.jc[i ^ 1] = JcEntry::EMPTY;
        }
        self.jc[i] = e;
    }

    /// The current jump-cache epoch for a jump to `pc`.
    pub fn jc_epoch_for(&self, pc: u64) -> u64 {
        self.jc_epoch[(pc >> 63) as usize]
    }

    /// Flush the TLB except the upper half of the address space in MMU mode `keep` (a PV
    /// context switch that keeps the kernel's upper half mapped as it was), leaving the
    /// jump cache to the caller.
    pub fn tlb_flush_lower(&mut self, keep: usize) {
        for m in 0..NB_MMU_MODES {
            if m != keep {
                self.tlb_flush_mode(m);
                self.victim[m].fill(TlbEntry::EMPTY);
                continue;
            }
            self.tlb_flush_mode_half(m, 0);
            for e in self.victim[m].iter_mut() {
                if e.in_half(0) {
                    *e = TlbEntry::EMPTY;
                }
            }
        }
    }

    /// Flush every entry for one half of the address space (1: the upper, bit 63 set) in
    /// every mode, leaving the jump caches to the caller.
    pub fn tlb_flush_half(&mut self, half: usize) {
        for m in 0..NB_MMU_MODES {
            self.tlb_flush_mode_half(m, half);
        }
        for e in self.victim.iter_mut().flatten() {
            if e.in_half(half) {
                *e = TlbEntry::EMPTY;
            }
        }
    }

    /// Flush the entries for one virtual page in every mode, leaving the jump cache to the
    /// caller.
    pub fn tlb_flush_page_entries(&mut self, vaddr: u64) {
        let page = vaddr & PAGE_MASK;
        let idx = tlb_index(vaddr);
        for m in self.tlb.iter_mut() {
            let e = &mut m[idx];
            if e.read == page || e.write == page || e.exec == page {
                *e = TlbEntry::EMPTY;
            }
        }
        for m in self.victim.iter_mut() {
            for e in m
                .iter_mut()
                .filter(|e| e.read == page || e.write == page || e.exec == page)
            {
                *e = TlbEntry::EMPTY;
            }
        }
    }

    /// Record a guest exception for the run loop.
    pub fn raise(&mut self, vector: u8, code: Option<u32>, addr: u64) {
        self.fault = fault::EXCEPTION;
        self.exc_vector = vector as u32;
        self.exc_has_code = code.is_some() as u32;
        self.exc_code = code.unwrap_or(0) as u64;
        self.exc_addr = addr;
    }
}

/// Shift (from the page number) of the second field `tlb_index` folds in: the page number's
/// bits 24..35 (address bits 36..47, the top of a canonical address's significant bits).
pub const TLB_FOLD: u32 = 36 - TLB_BITS;
const _: () = assert!(TLB_FOLD >= TLB_BITS, "the two fields must not overlap");

/// TLB index of a virtual address: the page number p folded as p ^ p >> TLB_FOLD, so
/// tables at the same offset in different regions of a 64-bit address space do not
/// collide in the direct-mapped TLB (a Xen PV kernel reads its M2P at
/// 0xffff8000_0000_0000 and its P2M in vmalloc space at the same offsets, in turn), and
/// 4096 pages cover any 16 MiB window.
///
/// Two adjacent cacheable pages never share an index, which the inline lookups rely on:
/// they take the index from an access's first byte and compare the tag with its last
/// byte's page, so an access into the next page must miss. p and p + 1 differ in their
/// k + 1 low bits when p has k trailing ones: the two fields' differences within the index
/// cancel only if both cover all of it, i.e. k >= TLB_FOLD + TLB_BITS - 1 = 35. A
/// canonical lower-half page has k <= 35, and with k = 35 its next page is not canonical
/// (never cached); an upper-half page has bits 35.. set, so k >= 35 only for the last
/// page of the address space, whose next page wraps to page 0, which `Core::tlb_fill`
/// never caches. (A third field cost two more instructions per access.)
#[inline]
pub fn tlb_index(vaddr: u64) -> usize {
    let p = vaddr >> PAGE_BITS;
    ((p ^ (p >> TLB_FOLD)) as usize) & (TLB_SIZE - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flushes clear exactly what they should although they only visit the entries in
    /// `tlb_used`: filled, refilled, page-flushed (leaving stale indexes) and refilled
    /// again, past the list's capacity (a rebuild).
    #[test]
    fn flushes_through_the_used_list_clear_every_entry_they_must() {
        let mut env = Env::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let fill = |env: &mut Env, mmu: usize, page: u64| {
            let e = TlbEntry {
                read: page,
                write: TLB_INVALID,
                exec: page,
                addend: 0x1000,
            };
            env.tlb_set(mmu, tlb_index(page), e);
        };
        let page_of = |r: u64| {
            let half = r >> 63;
            (half << 63) | (r >> 20 & 0xffff) << PAGE_BITS
        };
        for _ in 0..3 * TLB_SIZE {
            let r = rnd();
            let (mmu, page) = ((r % NB_MMU_MODES as u64) as usize, page_of(rnd()));
            fill(&mut env, mmu, page);
            if r & 0x30 == 0 {
                env.tlb_flush_page_entries(page);
            }
        }
        let count = |env: &Env, half: usize| {
            env.tlb.iter().flatten().filter(|e| e.in_half(half)).count()
        };
        let lower = count(&env, 0);
        assert!(lower > 0 && count(&env, 1) > 0);
        env.tlb_flush_half(1);
        assert_eq!(count(&env, 1), 0, "upper half flushed");
        assert_eq!(count(&env, 0), lower, "lower half kept");
        for _ in 0..TLB_SIZE {
            let r = rnd();
            fill(&mut env, (r % NB_MMU_MODES as u64) as usize, page_of(rnd()));
        }
        env.tlb_flush_lower(1);
        for m in [0, 2] {
            assert!(env.tlb[m].iter().all(|e| e.is_empty()), "mode {m} flushed");
        }
        assert!(env.tlb[1].iter().all(|e| !e.in_half(0)), "mode 1's lower half flushed");
        assert!(env.tlb[1].iter().any(|e| e.in_half(1)), "mode 1's upper half kept");
        env.tlb_flush_entries();
        assert!(env.tlb.iter().flatten().all(|e| e.is_empty()));
        assert_eq!(env.tlb_used_len, [[0; 2]; NB_MMU_MODES]);
    }

    /// Adjacent canonical pages never share a TLB index, whatever their trailing ones (the
    /// lookups' page-crossing check depends on it), except the last page and page 0 (which
    /// is never cached); the M2P and a P2M at the same offset do not either.
    #[test]
    fn tlb_index_separates_adjacent_pages_and_the_m2p_from_the_p2m() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for k in 0..=34 {
            for _ in 0..64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // A lower-half page number with exactly k trailing ones (35 bits), and
                // the same in the upper half.
                let p = ((x << (k + 1)) | ((1u64 << k) - 1)) & ((1 << 35) - 1);
                for a in [p << PAGE_BITS, (p << PAGE_BITS) | 0xffff_8000_0000_0000] {
                    assert_ne!(
                        tlb_index(a),
                        tlb_index(a.wrapping_add(PAGE_SIZE)),
                        "{a:#x} and the next page"
                    );
                }
                let off = x & 0x3f_ffff_f000;
                assert_ne!(
                    tlb_index(0xffff_8000_0000_0000 + off),
                    tlb_index(0xffff_c900_0000_0000 + off),
                    "offset {off:#x}"
                );
            }
        }
        assert_ne!(tlb_index(0x7fff_f000), tlb_index(0x8000_0000));
        // Why page 0 is never cached: an access wrapping around the top of the address
        // space indexes the TLB with the last page, and compares page 0 with the tag.
        assert_eq!(tlb_index(0xffff_ffff_ffff_f000), tlb_index(0));
    }
}
