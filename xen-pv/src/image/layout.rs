//! Where the kernel goes: libelf's address calculation (`elf_parse_binary`,
//! `elf_xen_addr_calc_check`), the segment list, the optional BSD symbol table, and copying
//! it all into guest memory through a [`LoadSink`].
//!
//! Three address spaces appear here:
//! - ELF physical (`p_paddr`): what libelf computes `pstart`/`pend` from;
//! - guest virtual: `vaddr = p_paddr + virt_offset`, `virt_offset = virt_base - elf_paddr_offset`;
//!   the kernel occupies `[virt_kstart, virt_kend)`;
//! - guest pseudo-physical (`gpa`): `vaddr - virt_base`, i.e. `p_paddr - elf_paddr_offset`. The
//!   builder backs the kernel with pfns starting at `(virt_kstart - virt_base) >> 12`, and
//!   maps every page it creates at `virt_base + (pfn << 12)`. Sinks receive gpas.

use super::elf::{patch_symtab_ehdr, write_shdr, ElfFile, SectionHeader, Writer, SHT_STRTAB};
use super::error::{ImageError, Result};
use super::xen::{RawXenInfo, XenParams};

/// Guest page size.
pub const PAGE_SIZE: u64 = 4096;

/// One loadable segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadSegment {
    /// Index in the program header table.
    pub index: usize,
    /// p_flags (PF_R/PF_W/PF_X).
    pub flags: u32,
    /// p_offset: where its file bytes start in the (decompressed) ELF.
    pub file_offset: u64,
    /// p_filesz: bytes copied from the file.
    pub filesz: u64,
    /// p_memsz: bytes occupied; `memsz - filesz` are zeroed (bss).
    pub memsz: u64,
    /// p_paddr, as in the ELF.
    pub elf_paddr: u64,
    /// Guest-virtual address of the first byte.
    pub vaddr: u64,
    /// Guest pseudo-physical address of the first byte.
    pub gpa: u64,
}

/// The symbol table a BSD_SYMTAB kernel gets after its image (libelf's
/// `elf_parse_bsdsyms`/`elf_load_bsdsyms`): a 4-byte size, a cut-down ELF header with three
/// section headers (null, symtab, strtab), then the symbol and string tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BsdSymtab {
    /// Guest-virtual start (the image end rounded up to 4/8 bytes).
    pub vaddr: u64,
    /// Guest pseudo-physical start.
    pub gpa: u64,
    /// Bytes reserved (the kernel's `virt_kend` includes them).
    pub size: u64,
    symtab_index: usize,
    strtab_index: usize,
}

/// The kernel's place in guest memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelLayout {
    /// Lowest p_paddr of the loadable segments.
    pub pstart: u64,
    /// Highest p_paddr + p_memsz of the loadable segments.
    pub pend: u64,
    /// virt_base - elf_paddr_offset.
    pub virt_offset: u64,
    /// First guest-virtual byte of the kernel (page aligned).
    pub virt_kstart: u64,
    /// End of the kernel, BSD symbol table included.
    pub virt_kend: u64,
    /// Loadable segments with a non-zero memsz, in program-header order.
    pub segments: Vec<LoadSegment>,
    pub bsd_symtab: Option<BsdSymtab>,
}

impl KernelLayout {
    /// Guest pseudo-physical address of the first kernel byte.
    pub fn gpa_start(&self, virt_base: u64) -> u64 {
        self.virt_kstart.wrapping_sub(virt_base)
    }
}

/// Where the loader puts bytes: guest RAM, addressed by pseudo-physical address.
///
/// A closure `FnMut(u64, &[u8]) -> Result<(), ImageError>` is a sink.
pub trait LoadSink {
    /// Copy `data` to pseudo-physical address `gpa`.
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<()>;

    /// Zero `len` bytes at `gpa` (bss). The default writes a zero page at a time.
    fn zero(&mut self, gpa: u64, len: u64) -> Result<()> {
        static ZEROS: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(PAGE_SIZE);
            let at = gpa
                .checked_add(done)
                .ok_or(ImageError::DoesNotFit { gpa, len })?;
            self.write(at, &ZEROS[..n as usize])?;
            done += n;
        }
        Ok(())
    }
}

impl<F: FnMut(u64, &[u8]) -> Result<()>> LoadSink for F {
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<()> {
        self(gpa, data)
    }
}

/// A sink over a host byte slice that backs guest pseudo-physical `[base, base + mem.len())`.
/// Out-of-range writes fail with [`ImageError::DoesNotFit`] and write nothing.
pub struct SliceSink<'m> {
    pub base: u64,
    pub mem: &'m mut [u8],
}

impl SliceSink<'_> {
    fn range(&mut self, gpa: u64, len: u64) -> Result<&mut [u8]> {
        let fail = ImageError::DoesNotFit { gpa, len };
        let start = gpa.checked_sub(self.base).ok_or(fail.clone())?;
        let end = start.checked_add(len).ok_or(fail.clone())?;
        let (Ok(start), Ok(end)) = (usize::try_from(start), usize::try_from(end)) else {
            return Err(fail);
        };
        self.mem.get_mut(start..end).ok_or(fail)
    }
}

impl LoadSink for SliceSink<'_> {
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<()> {
        self.range(gpa, data.len() as u64)?.copy_from_slice(data);
        Ok(())
    }
    fn zero(&mut self, gpa: u64, len: u64) -> Result<()> {
        self.range(gpa, len)?.fill(0);
        Ok(())
    }
}

/// Bytes of the packed `struct elf_sym_header` libelf builds: u32 size, then an
/// `elf_ehdr` union (64 bytes, the ELF64 size, for either class) and three `elf_shdr`
/// unions (64 bytes each).
const SYM_HEADER_SIZE: u64 = 4 + 64 + 3 * 64;
/// Offset of the section headers from the ELF header copy (`e_shoff`).
const SYM_SHOFF: u64 = 64;
const SYM_SECTIONS: u16 = 3;

/// Compute the layout and finish the Xen parameters with libelf's defaults and checks.
pub(crate) fn compute(elf: &ElfFile<'_>, raw: RawXenInfo) -> Result<(XenParams, KernelLayout)> {
    // elf_parse_binary: the range of the loadable segments. Zero-size PT_LOADs count here,
    // as in libelf, but are not loaded, bounds-checked or overlap-checked.
    let mut pstart = u64::MAX;
    let mut pend = 0u64;
    let mut any = false;
    for (i, ph) in elf.phdrs.iter().enumerate() {
        if !ph.is_loadable() {
            continue;
        }
        any = true;
        let end = ph
            .paddr
            .checked_add(ph.memsz)
            .ok_or(ImageError::BadSegment {
                index: i,
                reason: "p_paddr + p_memsz overflows",
            })?;
        pstart = pstart.min(ph.paddr);
        pend = pend.max(end);
        if ph.memsz == 0 {
            continue;
        }
        if ph.filesz > ph.memsz {
            return Err(ImageError::BadSegment {
                index: i,
                reason: "p_filesz is larger than p_memsz",
            });
        }
        elf.segment_data(ph, "PT_LOAD segment")?;
    }
    if !any {
        return Err(ImageError::NoLoadableSegments);
    }

    // Overlap check over the non-empty loadable segments, by ELF physical address.
    let mut spans: Vec<(u64, u64, usize)> = elf
        .phdrs
        .iter()
        .enumerate()
        .filter(|(_, ph)| ph.is_loadable() && ph.memsz > 0)
        .map(|(i, ph)| (ph.paddr, ph.paddr + ph.memsz, i))
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        let (a, b) = (w[0], w[1]);
        if b.0 < a.1 {
            return Err(ImageError::OverlappingSegments {
                first: a.2.min(b.2),
                second: a.2.max(b.2),
                addr: b.0,
            });
        }
    }

    // elf_xen_addr_calc_check (PV).
    if raw.elf_paddr_offset.is_some() && raw.virt_base.is_none() {
        return Err(ImageError::AddressOutOfBounds(
            "ELF_PADDR_OFFSET set, VIRT_BASE unset",
        ));
    }
    let virt_base = raw.virt_base.unwrap_or(0);
    let elf_paddr_offset = raw.elf_paddr_offset.unwrap_or(match raw.source {
        super::xen::NoteSource::XenGuestSection => virt_base,
        _ => 0,
    });
    let virt_offset = virt_base.wrapping_sub(elf_paddr_offset);
    let virt_kstart = pstart.wrapping_add(virt_offset);
    let mut virt_kend = pend.wrapping_add(virt_offset);
    let virt_entry = raw.virt_entry.unwrap_or(elf.header.entry);

    let mut bsd_symtab = None;
    if raw.bsd_symtab {
        if let Some(sym) = bsd_symtab_size(elf, pend) {
            let (sym_pstart, size, symtab_index, strtab_index) = sym;
            let vaddr = sym_pstart.wrapping_add(virt_offset);
            virt_kend = sym_pstart.wrapping_add(size).wrapping_add(virt_offset);
            bsd_symtab = Some(BsdSymtab {
                vaddr,
                gpa: vaddr.wrapping_sub(virt_base),
                size,
                symtab_index,
                strtab_index,
            });
        }
    }

    if virt_kstart > virt_kend
        || virt_entry < virt_kstart
        || virt_entry > virt_kend
        || virt_base > virt_kstart
    {
        return Err(ImageError::AddressOutOfBounds(
            "ELF start or entry out of bounds",
        ));
    }
    if let Some(p2m) = raw.p2m_base {
        if p2m >= virt_kstart && p2m < virt_kend {
            return Err(ImageError::AddressOutOfBounds(
                "P2M table base inside the kernel",
            ));
        }
    }
    // xc_dom_alloc_segment refuses a kernel segment that does not start on a page.
    if virt_kstart % PAGE_SIZE != 0 {
        return Err(ImageError::UnalignedKernelStart(virt_kstart));
    }

    let segments = elf
        .phdrs
        .iter()
        .enumerate()
        .filter(|(_, ph)| ph.is_loadable() && ph.memsz > 0)
        .map(|(i, ph)| {
            let vaddr = ph.paddr.wrapping_add(virt_offset);
            LoadSegment {
                index: i,
                flags: ph.flags,
                file_offset: ph.offset,
                filesz: ph.filesz,
                memsz: ph.memsz,
                elf_paddr: ph.paddr,
                vaddr,
                gpa: vaddr.wrapping_sub(virt_base),
            }
        })
        .collect();

    let params = XenParams {
        source: raw.source,
        notes: raw.notes,
        guest_os: raw.guest_os,
        guest_version: raw.guest_version,
        xen_version: raw.xen_version,
        loader: raw.loader,
        pae: raw.pae,
        bsd_symtab: raw.bsd_symtab,
        virt_base,
        elf_paddr_offset,
        virt_entry,
        virt_hypercall: raw.virt_hypercall,
        virt_hv_start_low: raw.virt_hv_start_low,
        p2m_base: raw.p2m_base,
        unmapped_initrd: raw.unmapped_initrd,
        suspend_cancel: raw.suspend_cancel,
        l1_mfn_valid: raw.l1_mfn_valid,
        phys_entry: raw.phys_entry,
        features: raw.features,
    };
    let layout = KernelLayout {
        pstart,
        pend,
        virt_offset,
        virt_kstart,
        virt_kend,
        segments,
        bsd_symtab,
    };
    Ok((params, layout))
}

/// Space for the BSD symbol table after ELF-physical `pend`: (start, size, symtab index,
/// strtab index), or None when the image has no usable symbol table (libelf then loads
/// none). The header part is sized as the whole packed header struct, which is what the
/// loader writes (upstream libelf under-counts it for ELF32; NetBSD carries the fix).
fn bsd_symtab_size(elf: &ElfFile<'_>, pend: u64) -> Option<(u64, u64, usize, usize)> {
    let class = elf.class();
    let (symi, stri) = elf.symtab()?;
    let symtab = elf.shdrs.get(symi)?;
    let strtab = elf.shdrs.get(stri)?;
    if strtab.sh_type != SHT_STRTAB {
        return None;
    }
    // Both tables must be readable for the load to succeed.
    elf.section_data(symtab, "symbol table").ok()?;
    elf.section_data(strtab, "string table").ok()?;
    let start = class.round_up(pend);
    let mut sz = class.round_up(4 + SYM_HEADER_SIZE);
    sz = class.round_up(sz.checked_add(symtab.size)?);
    sz = class.round_up(sz.checked_add(strtab.size)?);
    start.checked_add(sz)?;
    Some((start, sz, symi, stri))
}

/// Copy the loadable segments (and the BSD symbol table) through `sink`.
pub(crate) fn load(
    elf: &ElfFile<'_>,
    layout: &KernelLayout,
    sink: &mut dyn LoadSink,
) -> Result<()> {
    for seg in &layout.segments {
        let ph = elf
            .phdrs
            .get(seg.index)
            .ok_or(ImageError::BadHeader("segment index"))?;
        let data = elf.segment_data(ph, "PT_LOAD segment")?;
        if !data.is_empty() {
            sink.write(seg.gpa, data)?;
        }
        let bss = seg.memsz - seg.filesz;
        if bss > 0 {
            sink.zero(seg.gpa.wrapping_add(seg.filesz), bss)?;
        }
    }
    if let Some(sym) = &layout.bsd_symtab {
        load_bsd_symtab(elf, sym, sink)?;
    }
    Ok(())
}

/// Write the BSD symbol table as libelf's `elf_load_bsdsyms` lays it out (see
/// [`BsdSymtab`]): offsets inside the copy are relative to the ELF header copy at gpa + 4.
fn load_bsd_symtab(elf: &ElfFile<'_>, sym: &BsdSymtab, sink: &mut dyn LoadSink) -> Result<()> {
    let class = elf.class();
    let symtab = elf
        .shdrs
        .get(sym.symtab_index)
        .ok_or(ImageError::BadHeader("symtab"))?;
    let strtab = elf
        .shdrs
        .get(sym.strtab_index)
        .ok_or(ImageError::BadHeader("strtab"))?;
    let symdata = elf.section_data(symtab, "symbol table")?;
    let strdata = elf.section_data(strtab, "string table")?;

    // Offsets relative to the start of the area (gpa).
    let ehdr_off: u64 = 4;
    let symtab_off = class.round_up(SYM_HEADER_SIZE);
    let strtab_off = class.round_up(symtab_off + symtab.size);
    let total = strtab_off + strtab.size - ehdr_off;

    let mut header = vec![0u8; symtab_off as usize];
    let mut w = Writer { buf: &mut header };
    w.u32(0, total as u32);
    let ehdr_size = class.ehdr_size();
    w.put(
        ehdr_off as usize,
        elf.data.get(..ehdr_size as usize).unwrap_or(&[]),
    );
    patch_symtab_ehdr(&mut w, class, ehdr_off as usize, SYM_SHOFF, SYM_SECTIONS);
    let shdr_base = (ehdr_off + SYM_SHOFF) as usize;
    let shsz = class.shdr_size() as usize;
    // Section 0 stays all zeroes (SHN_UNDEF).
    let sym_sh = SectionHeader {
        offset: symtab_off - ehdr_off,
        link: 2,
        ..symtab.clone()
    };
    write_shdr(&mut w, class, shdr_base + shsz, &sym_sh);
    let str_sh = SectionHeader {
        offset: strtab_off - ehdr_off,
        ..strtab.clone()
    };
    write_shdr(&mut w, class, shdr_base + 2 * shsz, &str_sh);

    sink.write(sym.gpa, &header)?;
    let pad = |from: u64, to: u64, sink: &mut dyn LoadSink| -> Result<()> {
        if to > from {
            sink.zero(sym.gpa.wrapping_add(from), to - from)?;
        }
        Ok(())
    };
    sink.write(sym.gpa.wrapping_add(symtab_off), symdata)?;
    pad(symtab_off + symdata.len() as u64, strtab_off, sink)?;
    sink.write(sym.gpa.wrapping_add(strtab_off), strdata)?;
    pad(strtab_off + strdata.len() as u64, sym.size, sink)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_sink_bounds() {
        let mut mem = vec![0xaau8; 16];
        let mut s = SliceSink {
            base: 0x1000,
            mem: &mut mem,
        };
        s.write(0x1004, &[1, 2]).unwrap();
        s.zero(0x100e, 2).unwrap();
        assert_eq!(
            s.write(0x100f, &[1, 2]),
            Err(ImageError::DoesNotFit {
                gpa: 0x100f,
                len: 2
            })
        );
        assert!(s.write(0xfff, &[1]).is_err());
        assert!(s.zero(u64::MAX, 2).is_err());
        assert_eq!(mem[4..6], [1, 2]);
        assert_eq!(mem[14..], [0, 0]);
        assert_eq!(mem[15 - 1], 0);
    }

    #[test]
    fn default_zero_uses_pages() {
        let mut calls = Vec::new();
        let mut sink = |gpa: u64, d: &[u8]| -> Result<()> {
            assert!(d.iter().all(|&b| b == 0));
            calls.push((gpa, d.len()));
            Ok(())
        };
        LoadSink::zero(&mut sink, 0x10, 4096 + 5).unwrap();
        assert_eq!(calls, vec![(0x10, 4096), (0x1010, 5)]);
    }
}
