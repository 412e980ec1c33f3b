//! x86 page walks: 4-level (long mode), PAE and 2-level 32-bit paging, with the permission
//! checks, accessed/dirty updates and #PF error codes of the SDM (vol. 3, ch. 4).
//!
//! Faithfulness notes: accessed/dirty bits are set only when the translation succeeds; PAE
//! PDPTEs are read from memory on each walk (hardware caches them at CR3 load, which only
//! differs if a guest rewrites live PDPTEs without reloading CR3); protection keys are not
//! implemented (CR4.PKE is never advertised).

use jit::engine::{Access, GuestFault, Mmu};
use jit::ir::AccessKind;
use jit::ptdeps::WalkPath;
use jit::{Env, GuestRam};

use crate::state::*;

/// Physical address width reported to guests.
pub const MAXPHYADDR: u32 = 46;

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const NX: u64 = 1 << 63;

/// #PF error code bits.
pub mod pfec {
    pub const P: u32 = 1 << 0;
    pub const W: u32 = 1 << 1;
    pub const U: u32 = 1 << 2;
    pub const RSVD: u32 = 1 << 3;
    pub const I: u32 = 1 << 4;
}

const PHYS_MASK: u64 = ((1u64 << MAXPHYADDR) - 1) & !0xfff;

/// The x86 MMU: stateless; everything comes from the control registers in `Env`.
#[derive(Default)]
pub struct X86Mmu;

/// Is `v` canonical for 48-bit linear addresses?
pub fn is_canonical(v: u64) -> bool {
    ((v as i64) << 16 >> 16) as u64 == v
}

struct Walk<'a> {
    ram: &'a mut GuestRam,
    write: bool,
    user: bool,
    fetch: bool,
    /// CR0.WP
    wp: bool,
    nxe: bool,
    smep: bool,
    smap: bool,
    /// EFLAGS.AC (SMAP override for explicit accesses)
    ac: bool,
    implicit: bool,
    vaddr: u64,
    /// Set accessed/dirty bits (false: a probe without side effects).
    update: bool,
    /// The entries a successful walk read.
    path: WalkPath,
}

impl Walk<'_> {
    fn fault(&self, code: u32) -> GuestFault {
        let mut c = code;
        if self.write {
            c |= pfec::W;
        }
        if self.user {
            c |= pfec::U;
        }
        if self.fetch && (self.nxe || self.smep) {
            c |= pfec::I;
        }
        GuestFault {
            vector: 14,
            error_code: Some(c),
            addr: self.vaddr,
        }
    }

    fn read_entry(&self, pa: u64, wide: bool) -> u64 {
        if wide {
            self.ram.read_u64(pa).unwrap_or(0)
        } else {
            self.ram.read_u32(pa).map(|v| v as u64).unwrap_or(0)
        }
    }

    /// Permission checks with the accumulated rights; returns the fault code if denied.
    fn check(&self, rw: bool, us: bool, nx: bool) -> Result<(), GuestFault> {
        let denied = if self.user {
            !us || (self.write && !rw) || (self.fetch && nx)
        } else {
            (self.write && !rw && self.wp)
                || (self.fetch && nx)
                || (self.fetch && us && self.smep)
                || (!self.fetch && us && self.smap && (self.implicit || !self.ac))
        };
        if denied {
            Err(self.fault(pfec::P))
        } else {
            Ok(())
        }
    }

    /// Walk a multi-level table. `levels`: list of (table physical address is computed).
    fn walk(&mut self, cr3: u64, mode: PagingMode) -> Result<u64, GuestFault> {
        let v = self.vaddr;
        let (wide, shifts, top): (bool, &[u32], u64) = match mode {
            PagingMode::Long => (true, &[39, 30, 21, 12], cr3 & PHYS_MASK),
            PagingMode::Pae => (true, &[30, 21, 12], cr3 & 0xffff_ffe0),
            PagingMode::Legacy => (false, &[22, 12], cr3 & 0xffff_f000),
        };
        let idx_bits = if wide { 9 } else { 10 };
        let esize = if wide { 8 } else { 4 };
        let mut table = top;
        let mut rw = true;
        let mut us = true;
        let mut nx = false;
        let mut entries: [(u64, u64); 4] = [(0, 0); 4];
        let mut n = 0;
        // Reserved: physical-address bits from MAXPHYADDR up. With 4-level paging bits
        // 52..62 are ignored (software-available; 59..62 would be protection keys with
        // CR4.PKE, never set); with PAE paging bits MAXPHYADDR..62 are all reserved.
        let rsvd_hi = match mode {
            PagingMode::Long => ((1u64 << 52) - 1) & !((1u64 << MAXPHYADDR) - 1),
            PagingMode::Pae => ((1u64 << 63) - 1) & !((1u64 << MAXPHYADDR) - 1),
            PagingMode::Legacy => 0,
        };
        for (level, &shift) in shifts.iter().enumerate() {
            let nbits = if mode == PagingMode::Pae && level == 0 {
                2
            } else {
                idx_bits
            };
            let idx = (v >> shift) & ((1 << nbits) - 1);
            let pa = table + idx * esize;
            let e = self.read_entry(pa, wide);
            if e & P == 0 {
                return Err(self.fault(0));
            }
            // Reserved bits.
            let mut rsvd = e & rsvd_hi != 0;
            if wide && !self.nxe && e & NX != 0 {
                rsvd = true;
            }
            let last_level = level + 1 == shifts.len();
            let is_pdpte_pae = mode == PagingMode::Pae && level == 0;
            if is_pdpte_pae && e & 0x1e6 != 0 {
                rsvd = true;
            }
            let large = !last_level && !is_pdpte_pae && e & PS != 0;
            if large {
                if mode == PagingMode::Long && level == 0 {
                    rsvd = true; // PS in a PML4E
                } else if wide {
                    // 2 MiB / 1 GiB page: bits 12..shift (except PAT at 12) are reserved
                    let rmask = ((1u64 << shift) - 1) & !0x1fff;
                    if e & rmask != 0 {
                        rsvd = true;
                    }
                }
            }
            if rsvd {
                return Err(self.fault(pfec::P | pfec::RSVD));
            }
            if !is_pdpte_pae {
                rw &= e & RW != 0;
                us &= e & US != 0;
                nx |= wide && e & NX != 0;
            }
            entries[n] = (pa, e);
            n += 1;
            if large || last_level {
                self.check(rw, us, nx)?;
                for &(epa, _) in &entries[..n] {
                    self.path.push(epa);
                }
                // Every level is accessed after this walk; a write would need nothing more
                // when the leaf is dirty and the rights allow it.
                self.path.writable_dirty =
                    !self.fetch && e & D != 0 && if self.user { rw } else { rw || !self.wp };
                // Set accessed bits on every level, dirty on the leaf for writes.
                for (i, &(epa, ev)) in entries[..n].iter().enumerate().filter(|_| self.update) {
                    let leaf = i + 1 == n;
                    if mode == PagingMode::Pae && i == 0 {
                        continue; // PDPTEs have no A bit in PAE mode
                    }
                    let mut nv = ev | A;
                    if leaf && self.write {
                        nv |= D;
                    }
                    if nv != ev {
                        if wide {
                            self.ram.write_u64(epa, nv);
                        } else {
                            self.ram.write_u32(epa, nv as u32);
                        }
                    }
                }
                let page_mask = if large { (1u64 << shift) - 1 } else { 0xfff };
                let base = if wide {
                    e & PHYS_MASK & !page_mask
                } else if large {
                    // 4 MiB page with PSE-36: bits 13..20 give physical bits 32..39.
                    (e & 0xffc0_0000) | ((e >> 13) & 0xff) << 32
                } else {
                    e & 0xffff_f000
                };
                return Ok(base | (v & page_mask));
            }
            table = if wide { e & PHYS_MASK } else { e & 0xffff_f000 };
        }
        unreachable!("page walk ends at the last level")
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PagingMode {
    Long,
    Pae,
    Legacy,
}

impl Mmu for X86Mmu {
    fn translate(
        &mut self,
        env: &Env,
        ram: &mut GuestRam,
        vaddr: u64,
        access: Access,
        who: AccessKind,
    ) -> Result<u64, GuestFault> {
        walk(env, ram, vaddr, access, who, true, &mut WalkPath::default())
    }

    fn translate_path(
        &mut self,
        env: &Env,
        ram: &mut GuestRam,
        vaddr: u64,
        access: Access,
        who: AccessKind,
        path: &mut WalkPath,
    ) -> Result<u64, GuestFault> {
        walk(env, ram, vaddr, access, who, true, path)
    }

    fn probe_exec(
        &mut self,
        env: &Env,
        ram: &mut GuestRam,
        vaddr: u64,
        path: &mut WalkPath,
    ) -> Option<u64> {
        walk(
            env,
            ram,
            vaddr,
            Access::Exec,
            AccessKind::Normal,
            false,
            path,
        )
        .ok()
    }
}

/// Translate `vaddr` in the mode `env` holds; `update`: set accessed/dirty bits. On success
/// `path` receives the page-table entries read (none without paging).
fn walk(
    env: &Env,
    ram: &mut GuestRam,
    vaddr: u64,
    access: Access,
    who: AccessKind,
    update: bool,
    path: &mut WalkPath,
) -> Result<u64, GuestFault> {
    {
        let g = &env.g;
        let cr0 = g[G_CR0 as usize];
        let cr4 = g[G_CR4 as usize];
        let efer = g[G_EFER as usize];
        let lma = efer & efer::LMA != 0;
        if lma && !is_canonical(vaddr) {
            let vector = if who == AccessKind::Stack { 12 } else { 13 };
            return Err(GuestFault {
                vector,
                error_code: Some(0),
                addr: 0,
            });
        }
        if cr0 & cr0::PG == 0 {
            return Ok(if lma { vaddr } else { vaddr & 0xffff_ffff });
        }
        let mode = if lma {
            PagingMode::Long
        } else if cr4 & cr4::PAE != 0 {
            PagingMode::Pae
        } else {
            PagingMode::Legacy
        };
        let vaddr = if lma { vaddr } else { vaddr & 0xffff_ffff };
        let mut w = Walk {
            ram,
            write: access == Access::Write,
            user: who != AccessKind::System && g[G_CPL as usize] == 3,
            fetch: access == Access::Exec,
            wp: cr0 & cr0::WP != 0,
            nxe: efer & efer::NXE != 0 && mode != PagingMode::Legacy,
            smep: cr4 & cr4::SMEP != 0,
            smap: cr4 & cr4::SMAP != 0,
            ac: g[G_RFLAGS as usize] & fl::AC != 0,
            implicit: who == AccessKind::System,
            vaddr,
            update,
            path: WalkPath::default(),
        };
        let r = if mode == PagingMode::Legacy && cr4 & cr4::PSE == 0 {
            // Without PSE the PS bit is ignored: walk as if it were clear.
            w.walk_legacy_nopse(g[G_CR3 as usize])
        } else {
            w.walk(g[G_CR3 as usize], mode)
        };
        *path = w.path;
        r
    }
}

impl Walk<'_> {
    fn walk_legacy_nopse(&mut self, cr3: u64) -> Result<u64, GuestFault> {
        let v = self.vaddr;
        let pde_pa = (cr3 & 0xffff_f000) + ((v >> 22) & 0x3ff) * 4;
        let pde = self.read_entry(pde_pa, false);
        if pde & P == 0 {
            return Err(self.fault(0));
        }
        let pte_pa = (pde & 0xffff_f000) + ((v >> 12) & 0x3ff) * 4;
        let pte = self.read_entry(pte_pa, false);
        if pte & P == 0 {
            return Err(self.fault(0));
        }
        self.check(pde & pte & RW != 0, pde & pte & US != 0, false)?;
        self.path.push(pde_pa);
        self.path.push(pte_pa);
        if self.update {
            self.ram.write_u32(pde_pa, (pde | A) as u32);
            self.ram
                .write_u32(pte_pa, (pte | A | if self.write { D } else { 0 }) as u32);
        }
        Ok((pte & 0xffff_f000) | (v & 0xfff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        env: Box<Env>,
        ram: GuestRam,
    }

    /// Long mode with CR3 = 0x1000, tables at 0x1000 (L4), 0x2000 (L3), 0x3000 (L2), 0x4000 (L1).
    fn long_mode() -> Fixture {
        let mut env = Env::new();
        let mut ram = GuestRam::new(1 << 20).unwrap();
        env.g[G_CR0 as usize] = cr0::PE | cr0::PG | cr0::WP;
        env.g[G_CR4 as usize] = cr4::PAE;
        env.g[G_EFER as usize] = efer::LMA | efer::LME | efer::NXE;
        env.g[G_CR3 as usize] = 0x1000;
        ram.write_u64(0x1000, 0x2000 | P | RW | US);
        ram.write_u64(0x2000, 0x3000 | P | RW | US);
        ram.write_u64(0x3000, 0x4000 | P | RW | US);
        // VA 0x0000 -> PA 0x10000 user RW; VA 0x1000 -> 0x11000 user RO; VA 0x2000 -> 0x12000 supervisor; 0x3000 NX
        ram.write_u64(0x4000, 0x10000 | P | RW | US);
        ram.write_u64(0x4008, 0x11000 | P | US);
        ram.write_u64(0x4010, 0x12000 | P | RW);
        ram.write_u64(0x4018, 0x13000 | P | RW | US | NX);
        Fixture { env, ram }
    }

    fn tr(f: &mut Fixture, va: u64, acc: Access, cpl: u64) -> Result<u64, GuestFault> {
        f.env.g[G_CPL as usize] = cpl;
        X86Mmu.translate(&f.env, &mut f.ram, va, acc, AccessKind::Normal)
    }

    fn pf(code: u32, addr: u64) -> Result<u64, GuestFault> {
        Err(GuestFault {
            vector: 14,
            error_code: Some(code),
            addr,
        })
    }

    #[test]
    fn long_mode_walk_and_error_codes() {
        let mut f = long_mode();
        assert_eq!(tr(&mut f, 0x123, Access::Read, 3), Ok(0x10123));
        // A bits set on all levels, D not yet.
        assert_eq!(f.ram.read_u64(0x4000).unwrap() & (A | D), A);
        assert_eq!(f.ram.read_u64(0x1000).unwrap() & A, A);
        assert_eq!(tr(&mut f, 0x8, Access::Write, 3), Ok(0x10008));
        assert_eq!(f.ram.read_u64(0x4000).unwrap() & (A | D), A | D);
        // user write to read-only page: P|W|U
        assert_eq!(
            tr(&mut f, 0x1004, Access::Write, 3),
            pf(pfec::P | pfec::W | pfec::U, 0x1004)
        );
        // supervisor write to RO page with WP=1 faults, with WP=0 succeeds
        assert_eq!(
            tr(&mut f, 0x1004, Access::Write, 0),
            pf(pfec::P | pfec::W, 0x1004)
        );
        f.env.g[G_CR0 as usize] &= !cr0::WP;
        assert_eq!(tr(&mut f, 0x1004, Access::Write, 0), Ok(0x11004));
        // user read of supervisor page
        assert_eq!(
            tr(&mut f, 0x2000, Access::Read, 3),
            pf(pfec::P | pfec::U, 0x2000)
        );
        // exec of NX page: P|I|U
        assert_eq!(
            tr(&mut f, 0x3000, Access::Exec, 3),
            pf(pfec::P | pfec::I | pfec::U, 0x3000)
        );
        // not present: only U|W bits
        assert_eq!(
            tr(&mut f, 0x5000, Access::Write, 3),
            pf(pfec::W | pfec::U, 0x5000)
        );
        // not-present at the L3 level
        assert_eq!(tr(&mut f, 1 << 30, Access::Read, 0), pf(0, 1 << 30));
        // non-canonical -> #GP(0), or #SS(0) through the stack segment
        assert_eq!(
            tr(&mut f, 0x0000_8000_0000_0000, Access::Read, 3),
            Err(GuestFault {
                vector: 13,
                error_code: Some(0),
                addr: 0
            })
        );
        f.env.g[G_CPL as usize] = 3;
        let ss = X86Mmu.translate(
            &f.env,
            &mut f.ram,
            0xffff_7fff_ffff_fff8,
            Access::Write,
            AccessKind::Stack,
        );
        assert_eq!(
            ss,
            Err(GuestFault {
                vector: 12,
                error_code: Some(0),
                addr: 0
            })
        );
        // Software bits 52..58 (Linux uses 58, Xen 52) are ignored, not reserved.
        f.ram
            .write_u64(0x4000, 0x10000 | P | RW | US | 1 << 52 | 1 << 58);
        f.env.tlb_flush();
        assert_eq!(tr(&mut f, 0x10, Access::Read, 3), Ok(0x10010));
        // A physical-address bit above MAXPHYADDR is reserved.
        f.ram.write_u64(0x4000, 0x10000 | P | RW | US | 1 << 50);
        assert_eq!(
            tr(&mut f, 0x10, Access::Read, 3),
            pf(pfec::P | pfec::RSVD | pfec::U, 0x10)
        );
        // reserved bit (NX with NXE=0)
        f.env.g[G_EFER as usize] &= !efer::NXE;
        assert_eq!(
            tr(&mut f, 0x3000, Access::Read, 3),
            pf(pfec::P | pfec::RSVD | pfec::U, 0x3000)
        );
    }

    #[test]
    fn large_pages_and_pae() {
        let mut f = long_mode();
        // 2 MiB page at VA 0x200000 -> PA 0x400000
        f.ram.write_u64(0x3008, 0x400000 | P | RW | US | PS);
        assert_eq!(tr(&mut f, 0x212345, Access::Read, 3), Ok(0x412345));
        // misaligned 2 MiB frame -> reserved
        f.ram.write_u64(0x3008, 0x402000 | P | RW | US | PS);
        assert_eq!(
            tr(&mut f, 0x212345, Access::Read, 3),
            pf(pfec::P | pfec::RSVD | pfec::U, 0x212345)
        );

        // PAE: CR3 -> PDPT at 0x5000; PDPTE0 -> PD 0x6000 -> PT 0x7000
        let mut env = Env::new();
        let mut ram = GuestRam::new(1 << 20).unwrap();
        env.g[G_CR0 as usize] = cr0::PE | cr0::PG;
        env.g[G_CR4 as usize] = cr4::PAE;
        env.g[G_CR3 as usize] = 0x5000;
        ram.write_u64(0x5000, 0x6000 | P);
        ram.write_u64(0x6000, 0x7000 | P | RW | US);
        ram.write_u64(0x7000 + 5 * 8, 0x20000 | P | RW | US);
        env.g[G_CPL as usize] = 3;
        let r = X86Mmu.translate(&env, &mut ram, 0x5010, Access::Write, AccessKind::Normal);
        assert_eq!(r, Ok(0x20010));
        assert_eq!(ram.read_u64(0x7028).unwrap() & (A | D), A | D);
        // PDPTE with reserved bit 1 (RW is reserved in PAE PDPTEs)
        ram.write_u64(0x5000, 0x6000 | P | RW);
        let r = X86Mmu.translate(&env, &mut ram, 0x5010, Access::Read, AccessKind::Normal);
        assert_eq!(r, pf(pfec::P | pfec::RSVD | pfec::U, 0x5010));
    }
}
