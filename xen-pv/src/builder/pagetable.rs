//! The initial page tables, with the arithmetic of Xen's toolstack (`count_pgtables`,
//! `alloc_pgtables_pv`, `setup_pgtables_pv` in tools/libs/guest/xg_dom_x86.c), and a small
//! table walker for the platform's own mappings (M2P, GDT) that Xen itself would install.
//!
//! A [`Mapping`] maps the virtual range `[from, to]` (inclusive, masked to the guest's
//! virtual width) to consecutive pfns starting at `pfn`, with freshly allocated tables. Its
//! tables are laid out top level first: the single top-level table (first mapping only),
//! then the next level's tables, down to the L1s. A later mapping reuses a table an earlier
//! one already has at the same level and place, so tables are never duplicated.
//!
//! Entries are Xen's: upper levels `P|RW|A|D|U`; L1 `P|RW|A`, read-only when the target is
//! one of the page-table frames themselves. A 64-bit PV kernel runs in ring 3, so Xen's
//! `adjust_guest_l1e` adds `_PAGE_USER` to every present L1 entry when it validates the
//! tables at pin time; the builder writes L1 entries as the guest sees them after that, with
//! `U` set. (Xen also sets its internal `_PAGE_GUEST_KERNEL` marker, PTE bit 52, a software
//! bit the guest masks away; it is not reproduced.)

use jit::GuestRam;

use super::error::{BuildError, Result};

pub const PAGE_SHIFT: u32 = 12;
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Index bits per level (both 4-level and PAE tables have 512 8-byte entries).
const LEVEL_SHIFT: u32 = 9;

pub const P: u64 = 1 << 0;
pub const RW: u64 = 1 << 1;
pub const US: u64 = 1 << 2;
pub const A: u64 = 1 << 5;
pub const D: u64 = 1 << 6;
pub const NX: u64 = 1 << 63;

/// Mask of the frame address in an entry.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Paging shape of a guest type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PtParams {
    /// 4 (x86_64) or 3 (PAE).
    pub levels: usize,
    /// Virtual address width mask (48 or 32 bits).
    pub vaddr_mask: u64,
    /// Entry flags per level (index 0 = L1 entries).
    pub prot: [u64; 4],
    /// Add `_PAGE_USER` to L1 entries (64-bit PV: what Xen's pin-time validation does).
    pub user_l1: bool,
}

const UPPER: u64 = P | RW | A | D | US;

pub const X86_64: PtParams = PtParams {
    levels: 4,
    vaddr_mask: (1 << 48) - 1,
    prot: [P | RW | A, UPPER, UPPER, UPPER],
    user_l1: true,
};

/// 64-bit Xen runs PAE guests with their L3 used as a real 4-level L3, so L3 entries carry
/// the full flag set (native PAE PDPTEs would treat RW/U/A/D as reserved).
pub const X86_32_PAE: PtParams = PtParams {
    levels: 3,
    vaddr_mask: (1 << 32) - 1,
    prot: [P | RW | A, UPPER, UPPER, 0],
    user_l1: false,
};

/// The tables of one level that one mapping owns: they cover `[from, to]` and start at
/// frame `pfn`; `count == 0` means none (the range is then `from == to == 0`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LevelTables {
    pub from: u64,
    pub to: u64,
    pub pfn: u64,
    pub count: u64,
}

/// One virtually contiguous mapping and the tables allocated for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    /// Masked virtual range, inclusive.
    pub from: u64,
    pub to: u64,
    /// The pfn mapped at `from`.
    pub pfn: u64,
    /// Page-table frames this mapping allocated (all levels).
    pub tables: u64,
    /// Index 0 = L1 tables ... `levels - 1` = the top-level table.
    pub lvls: [LevelTables; 4],
}

impl Mapping {
    /// First frame of this mapping's tables.
    pub fn first_table_pfn(&self, params: &PtParams) -> u64 {
        self.lvls[params.levels - 1].pfn
    }
    /// Is `pfn` one of this mapping's table frames?
    pub fn is_table(&self, params: &PtParams, pfn: u64) -> bool {
        let first = self.first_table_pfn(params);
        pfn >= first && pfn - first < self.tables
    }
}

fn bits_mask(bits: u32) -> u64 {
    if bits >= 64 {
        !0
    } else {
        (1u64 << bits) - 1
    }
}

/// Plan the tables for mapping virtual `[from, to]` (inclusive) to pfns from `pfn`, with
/// its table frames starting at `table_pfn`, given the mappings made before
/// (`count_pgtables`). `nr_pages` bounds the mapped pfns.
pub fn plan(
    params: &PtParams,
    existing: &[Mapping],
    from: u64,
    to: u64,
    pfn: u64,
    table_pfn: u64,
    nr_pages: u64,
) -> Result<Mapping> {
    if to < from {
        return Err(BuildError::AddressOverflow("mapping ends before it starts"));
    }
    let pfn_end = pfn
        .checked_add((to - from) >> PAGE_SHIFT)
        .ok_or(BuildError::AddressOverflow("mapping size"))?;
    if pfn_end >= nr_pages {
        return Err(BuildError::OutOfMemory {
            what: "initial mapping",
            pages: pfn_end + 1 - pfn,
            used: pfn,
            nr_pages,
        });
    }
    let mut map = Mapping {
        from: from & params.vaddr_mask,
        to: to & params.vaddr_mask,
        pfn,
        ..Mapping::default()
    };
    for m in existing {
        if map.from <= m.to && map.to >= m.from {
            return Err(BuildError::Overlap {
                what: "initial mappings",
                addr: from,
            });
        }
    }
    let top = params.levels - 1;
    for l in (0..params.levels).rev() {
        let t = &mut map.lvls[l];
        t.pfn = table_pfn + map.tables;
        if l == top {
            // The top-level table belongs to the first mapping only.
            if existing.is_empty() {
                *t = LevelTables {
                    from: 0,
                    to: params.vaddr_mask,
                    pfn: t.pfn,
                    count: 1,
                };
                map.tables += 1;
            }
            continue;
        }
        let bits = PAGE_SHIFT + (l as u32 + 1) * LEVEL_SHIFT;
        let mask = bits_mask(bits);
        t.from = map.from & !mask;
        t.to = map.to | mask;
        // PAE: the first mapping also gets the L2 for the top GiB (l3 slot 3), where Xen
        // keeps its own entries (the M2P among them).
        if params.levels == 3 && existing.is_empty() && to < 0xc000_0000 && l == 1 {
            t.to = params.vaddr_mask;
        }
        // Tables an earlier mapping already has at this level are shared, not duplicated.
        for m in existing {
            let c = &m.lvls[l];
            if c.from == c.to {
                continue;
            }
            if t.from >= c.from && t.to <= c.to {
                t.from = 0;
                t.to = 0;
                break;
            }
            if t.from >= c.from && t.from <= c.to {
                t.from = c.to + 1;
            }
            if t.to >= c.from && t.to <= c.to {
                t.to = c.from - 1;
            }
        }
        if t.from < t.to {
            t.count = ((t.to - t.from) >> bits) + 1;
        }
        map.tables += t.count;
    }
    Ok(map)
}

/// Write every table of `maps` into guest RAM, pfn == mfn (`setup_pgtables_pv` with an
/// identity p2m). The table frames must be zeroed beforehand.
pub fn write_tables(ram: &mut GuestRam, params: &PtParams, maps: &[Mapping]) -> Result<()> {
    for l in (0..params.levels).rev() {
        let shift = PAGE_SHIFT + l as u32 * LEVEL_SHIFT;
        for m1 in maps {
            let t = m1.lvls[l];
            if t.count == 0 {
                continue;
            }
            for m2 in maps {
                // What the entries at this level point to: the next level's tables, or
                // for L1 entries the mapped frames.
                let (cfrom, cto, cpfn) = if l > 0 {
                    let c = m2.lvls[l - 1];
                    if c.count == 0 {
                        continue;
                    }
                    (c.from, c.to, c.pfn)
                } else {
                    (m2.from, m2.to, m2.pfn)
                };
                if cfrom >= t.to || cto <= t.from {
                    continue;
                }
                let lo = cfrom.max(t.from);
                let hi = cto.min(t.to);
                let first = (lo - t.from) >> shift;
                let last = (hi - t.from) >> shift;
                let mut target = ((lo - cfrom) >> shift) + cpfn;
                for p in first..=last {
                    let mut prot = params.prot[l];
                    if l == 0 {
                        if maps.iter().any(|m| m.is_table(params, target)) {
                            prot &= !RW;
                        }
                        if params.user_l1 {
                            prot |= US;
                        }
                    }
                    let addr = (t.pfn << PAGE_SHIFT) + p * 8;
                    let entry = (target << PAGE_SHIFT) | prot;
                    if !ram.write_u64(addr, entry) {
                        return Err(BuildError::OutsideRam { addr, len: 8 });
                    }
                    target += 1;
                }
            }
        }
    }
    Ok(())
}

/// Hands out platform frames (machine frames the guest does not own) from a fixed range.
#[derive(Debug)]
pub struct FrameAlloc {
    pub next: u64,
    pub end: u64,
}

impl FrameAlloc {
    pub fn alloc(&mut self) -> Result<u64> {
        if self.next >= self.end {
            return Err(BuildError::OutOfMemory {
                what: "platform page tables",
                pages: 1,
                used: self.next,
                nr_pages: self.end,
            });
        }
        self.next += 1;
        Ok(self.next - 1)
    }
}

/// Map the 4 KiB frame `mfn` at virtual `va` in the 4-level tree rooted at machine frame
/// `root`, creating missing intermediate tables from `alloc` (zeroed, entries `table_flags`).
/// The leaf gets `leaf_flags`. Existing intermediate entries are followed as they are.
pub fn map_page(
    ram: &mut GuestRam,
    root: u64,
    va: u64,
    mfn: u64,
    leaf_flags: u64,
    table_flags: u64,
    alloc: &mut FrameAlloc,
) -> Result<()> {
    let mut table = root;
    for level in (1..4u32).rev() {
        let idx = (va >> (PAGE_SHIFT + level * LEVEL_SHIFT)) & 511;
        let addr = (table << PAGE_SHIFT) + idx * 8;
        let e = ram
            .read_u64(addr)
            .ok_or(BuildError::OutsideRam { addr, len: 8 })?;
        table = if e & P != 0 {
            (e & ADDR_MASK) >> PAGE_SHIFT
        } else {
            let f = alloc.alloc()?;
            zero_frames(ram, f, 1)?;
            if !ram.write_u64(addr, (f << PAGE_SHIFT) | table_flags) {
                return Err(BuildError::OutsideRam { addr, len: 8 });
            }
            f
        };
    }
    let addr = (table << PAGE_SHIFT) + ((va >> PAGE_SHIFT) & 511) * 8;
    if !ram.write_u64(addr, (mfn << PAGE_SHIFT) | leaf_flags) {
        return Err(BuildError::OutsideRam { addr, len: 8 });
    }
    Ok(())
}

/// Zero `n` frames from `mfn`.
pub fn zero_frames(ram: &mut GuestRam, mfn: u64, n: u64) -> Result<()> {
    let addr = mfn << PAGE_SHIFT;
    let len = n << PAGE_SHIFT;
    let s = usize::try_from(len)
        .ok()
        .and_then(|l| ram.slice_mut(addr, l))
        .ok_or(BuildError::OutsideRam { addr, len })?;
    s.fill(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_matches_xen_for_small_guest() {
        // 32 MiB, VIRT_BASE 0, tables at pfn 0x124, mapping 0..4 MiB: L4, L3, L2, 2 L1s.
        let m = plan(&X86_64, &[], 0, 0x3f_ffff, 0, 0x124, 0x2000).unwrap();
        assert_eq!(m.tables, 5);
        assert_eq!(
            m.lvls[3],
            LevelTables {
                from: 0,
                to: (1 << 48) - 1,
                pfn: 0x124,
                count: 1
            }
        );
        assert_eq!(m.lvls[2].pfn, 0x125);
        assert_eq!(m.lvls[2].count, 1);
        assert_eq!(m.lvls[1].pfn, 0x126);
        assert_eq!(
            m.lvls[0],
            LevelTables {
                from: 0,
                to: 0x3f_ffff,
                pfn: 0x127,
                count: 2
            }
        );
        // Too big for the memory.
        assert!(matches!(
            plan(&X86_64, &[], 0, 0x3f_ffff, 0, 0x124, 0x3ff),
            Err(BuildError::OutOfMemory { .. })
        ));
    }

    #[test]
    fn second_mapping_shares_nothing_it_need_not() {
        let base = 0xffff_ffff_8000_0000u64;
        let m0 = plan(&X86_64, &[], base, base + 0x7f_ffff, 0, 0x2000, 0x10000).unwrap();
        // L4 + L3 + L2 + 4 L1s.
        assert_eq!(m0.tables, 7);
        // The p2m at 0x80_0000_0000: its own L3, L2, L1 (no second L4).
        let m1 = plan(
            &X86_64,
            &[m0],
            0x80_0000_0000,
            0x80_0007_ffff,
            0x3000,
            0x3080,
            0x10000,
        )
        .unwrap();
        assert_eq!(m1.tables, 3);
        assert_eq!(m1.lvls[3].count, 0);
        assert_eq!(m1.lvls[2].pfn, 0x3080);
        assert_eq!(m1.lvls[0].pfn, 0x3082);
        // A mapping inside the same 2 MiB as another one shares its L1.
        let m2 = plan(
            &X86_64,
            &[m0],
            base + 0x80_0000,
            base + 0x80_0fff,
            0x800,
            0x3000,
            0x10000,
        );
        let m2 = m2.unwrap();
        assert_eq!(m2.tables, 1, "one more L1, the L2 is shared");
        // Overlap is refused.
        assert!(matches!(
            plan(
                &X86_64,
                &[m0],
                base + 0x1000,
                base + 0x1fff,
                1,
                0x3000,
                0x10000
            ),
            Err(BuildError::Overlap { .. })
        ));
    }

    #[test]
    fn pae_gets_the_extra_l2() {
        // A 32-bit guest at VIRT_BASE 0: L3, L2 for 0..1 GiB and L2 for the top GiB.
        let m = plan(&X86_32_PAE, &[], 0, 0x3f_ffff, 0, 0x100, 0x4000).unwrap();
        assert_eq!(m.lvls[2].count, 1);
        assert_eq!(
            m.lvls[1].count, 4,
            "0..4 GiB: Xen extends the range up to the top"
        );
        assert_eq!(m.lvls[0].count, 2);
        // At 0xC0000000 the kernel's own L2 is the top one.
        let m = plan(&X86_32_PAE, &[], 0xc000_0000, 0xc03f_ffff, 0, 0x100, 0x4000).unwrap();
        assert_eq!(m.lvls[1].count, 1);
        assert_eq!(m.tables, 4);
    }
}
