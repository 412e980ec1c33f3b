//! Xen guest metadata: ELF notes (`XEN_ELFNOTE_*`, public/elfnote.h) and the legacy
//! `__xen_guest` section string, with libelf's defaults and checks.
//!
//! Where to look, as libelf's `elf_xen_parse` does: every PT_NOTE segment (skipping those
//! with p_offset 0, which some binutils emit); only if no Xen note was found there, every
//! SHT_NOTE section; only if still none, the `__xen_guest` section. Notes are owned by
//! "Xen" and have name and desc padded to 4 bytes in ELF32 and ELF64 alike. A later note of
//! the same type overrides an earlier one; feature bits accumulate.

use super::elf::{Bytes, ElfFile, PT_NOTE, SHT_NOTE};
use super::error::{ImageError, Result};

/// `XEN_ELFNOTE_*` note types (xen/include/public/elfnote.h).
pub mod note {
    pub const INFO: u32 = 0;
    pub const ENTRY: u32 = 1;
    pub const HYPERCALL_PAGE: u32 = 2;
    pub const VIRT_BASE: u32 = 3;
    pub const PADDR_OFFSET: u32 = 4;
    pub const XEN_VERSION: u32 = 5;
    pub const GUEST_OS: u32 = 6;
    pub const GUEST_VERSION: u32 = 7;
    pub const LOADER: u32 = 8;
    pub const PAE_MODE: u32 = 9;
    pub const FEATURES: u32 = 10;
    pub const BSD_SYMTAB: u32 = 11;
    pub const HV_START_LOW: u32 = 12;
    pub const L1_MFN_VALID: u32 = 13;
    pub const SUSPEND_CANCEL: u32 = 14;
    pub const INIT_P2M: u32 = 15;
    pub const MOD_START_PFN: u32 = 16;
    pub const SUPPORTED_FEATURES: u32 = 17;
    pub const PHYS32_ENTRY: u32 = 18;
    pub const MAX: u32 = PHYS32_ENTRY;
}

/// Name and kind (string or numeric) of each note type libelf interprets, indexed by type.
const NOTE_DESC: [Option<(&str, bool)>; (note::MAX + 1) as usize] = [
    None, // INFO: not interpreted by libelf
    Some(("ENTRY", false)),
    Some(("HYPERCALL_PAGE", false)),
    Some(("VIRT_BASE", false)),
    Some(("PADDR_OFFSET", false)),
    Some(("XEN_VERSION", true)),
    Some(("GUEST_OS", true)),
    Some(("GUEST_VERSION", true)),
    Some(("LOADER", true)),
    Some(("PAE_MODE", true)),
    Some(("FEATURES", true)),
    Some(("BSD_SYMTAB", true)),
    Some(("HV_START_LOW", false)),
    Some(("L1_MFN_VALID", false)),
    Some(("SUSPEND_CANCEL", false)),
    Some(("INIT_P2M", false)),
    Some(("MOD_START_PFN", false)),
    Some(("SUPPORTED_FEATURES", false)),
    Some(("PHYS32_ENTRY", false)),
];

/// The name of a note type, if libelf knows it.
pub fn note_name(kind: u32) -> Option<&'static str> {
    NOTE_DESC
        .get(kind as usize)
        .copied()
        .flatten()
        .map(|(n, _)| n)
}

/// `XENFEAT_*` numbers and names (xen/include/public/features.h, without the prefix).
pub mod feat {
    pub const WRITABLE_PAGE_TABLES: u32 = 0;
    pub const WRITABLE_DESCRIPTOR_TABLES: u32 = 1;
    pub const AUTO_TRANSLATED_PHYSMAP: u32 = 2;
    pub const SUPERVISOR_MODE_KERNEL: u32 = 3;
    pub const PAE_PGDIR_ABOVE_4GB: u32 = 4;
    pub const MMU_PT_UPDATE_PRESERVE_AD: u32 = 5;
    pub const HIGHMEM_ASSIST: u32 = 6;
    pub const GNTTAB_MAP_AVAIL_BITS: u32 = 7;
    pub const HVM_CALLBACK_VECTOR: u32 = 8;
    pub const HVM_SAFE_PVCLOCK: u32 = 9;
    pub const HVM_PIRQS: u32 = 10;
    pub const DOM0: u32 = 11;
    pub const GRANT_MAP_IDENTITY: u32 = 12;
    pub const MEMORY_OP_VNODE_SUPPORTED: u32 = 13;
    pub const ARM_SMCCC_SUPPORTED: u32 = 14;
    pub const LINUX_RSDP_UNRESTRICTED: u32 = 15;
    pub const NOT_DIRECT_MAPPED: u32 = 16;
    pub const DIRECT_MAPPED: u32 = 17;

    /// Every feature name a FEATURES string may use.
    pub const NAMES: [(&str, u32); 18] = [
        ("writable_page_tables", WRITABLE_PAGE_TABLES),
        ("writable_descriptor_tables", WRITABLE_DESCRIPTOR_TABLES),
        ("auto_translated_physmap", AUTO_TRANSLATED_PHYSMAP),
        ("supervisor_mode_kernel", SUPERVISOR_MODE_KERNEL),
        ("pae_pgdir_above_4gb", PAE_PGDIR_ABOVE_4GB),
        ("mmu_pt_update_preserve_ad", MMU_PT_UPDATE_PRESERVE_AD),
        ("highmem_assist", HIGHMEM_ASSIST),
        ("gnttab_map_avail_bits", GNTTAB_MAP_AVAIL_BITS),
        ("hvm_callback_vector", HVM_CALLBACK_VECTOR),
        ("hvm_safe_pvclock", HVM_SAFE_PVCLOCK),
        ("hvm_pirqs", HVM_PIRQS),
        ("dom0", DOM0),
        ("grant_map_identity", GRANT_MAP_IDENTITY),
        ("memory_op_vnode_supported", MEMORY_OP_VNODE_SUPPORTED),
        ("ARM_SMCCC_supported", ARM_SMCCC_SUPPORTED),
        ("linux_rsdp_unrestricted", LINUX_RSDP_UNRESTRICTED),
        ("not_direct_mapped", NOT_DIRECT_MAPPED),
        ("direct_mapped", DIRECT_MAPPED),
    ];
}

/// Feature bitmaps (XENFEAT_NR_SUBMAPS is 1: one 32-bit word each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// Features the kernel can use (the FEATURES names, required ones included, OR'd with
    /// the SUPPORTED_FEATURES note).
    pub supported: u32,
    /// Features the kernel cannot run without (`!name`).
    pub required: u32,
}

impl Features {
    pub fn supports(&self, nr: u32) -> bool {
        nr < 32 && self.supported & (1 << nr) != 0
    }
    pub fn requires(&self, nr: u32) -> bool {
        nr < 32 && self.required & (1 << nr) != 0
    }
}

/// Parse a FEATURES string (`name|!name|...`) into `f`, as libelf's
/// `elf_xen_parse_features` does: unknown names are ignored unless required, in which case
/// the whole string is refused. Names come from features.h (libelf's own table knows only
/// seven of them; this one knows them all, so a guest requiring e.g. gnttab_map_avail_bits
/// loads here and the domain builder decides whether it can honour it).
pub fn parse_features(s: &[u8], f: &mut Features) -> Result<()> {
    for tok in s.split(|&c| c == b'|') {
        if tok.is_empty() {
            continue;
        }
        let (required, name) = match tok.split_first() {
            Some((b'!', rest)) => (true, rest),
            _ => (false, tok),
        };
        match feat::NAMES.iter().find(|(n, _)| n.as_bytes() == name) {
            Some(&(_, nr)) => {
                f.supported |= 1 << nr;
                if required {
                    f.required |= 1 << nr;
                }
            }
            None if required => {
                return Err(ImageError::UnknownRequiredFeature(
                    String::from_utf8_lossy(name).into_owned(),
                ))
            }
            None => {}
        }
    }
    Ok(())
}

/// PAE support of a 32-bit guest (libelf's XEN_PAE_*).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PaeMode {
    /// Not declared: a 32-bit guest without PAE, which current Xen cannot run.
    #[default]
    No,
    /// Legacy `PAE=yes` (without `[extended-cr3]`).
    Yes,
    /// PAE with L3 tables above 4 GiB: note "yes" or legacy `PAE=yes[extended-cr3]`.
    ExtendedCr3,
    /// Note containing "bimodal": runs with or without PAE.
    Bimodal,
}

/// Where the Xen metadata came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteSource {
    /// Xen notes in PT_NOTE segments.
    ProgramHeaders,
    /// Xen notes in SHT_NOTE sections (no PT_NOTE had any).
    Sections,
    /// The legacy `__xen_guest` section string.
    XenGuestSection,
}

/// The value of one recorded note, as libelf records it in `elf_notes[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoteValue {
    /// A numeric note: the desc read as a 1/2/4/8-byte little-endian value (0 for any other
    /// size, as libelf does).
    Num(u64),
    /// A string note, up to its first NUL.
    Str(String),
}

/// One Xen note of a type libelf interprets, in image order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XenNote {
    pub kind: u32,
    pub name: &'static str,
    pub value: NoteValue,
    /// The raw desc bytes (for notes such as L1_MFN_VALID whose desc is not one number).
    pub desc: Vec<u8>,
}

/// Xen metadata of a PV kernel after libelf's defaults were applied (`elf_dom_parms`).
///
/// Addresses are guest-virtual unless named otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XenParams {
    pub source: NoteSource,
    /// Every interpreted note, in order (empty for `__xen_guest`).
    pub notes: Vec<XenNote>,
    pub guest_os: String,
    pub guest_version: String,
    pub xen_version: String,
    pub loader: String,
    pub pae: PaeMode,
    /// BSD_SYMTAB "yes" (or legacy BSD_SYMTAB present): load the symbol table after the
    /// kernel.
    pub bsd_symtab: bool,
    /// VIRT_BASE (default 0).
    pub virt_base: u64,
    /// PADDR_OFFSET (default 0 with notes, VIRT_BASE with `__xen_guest`).
    pub elf_paddr_offset: u64,
    /// ENTRY (default e_entry).
    pub virt_entry: u64,
    /// HYPERCALL_PAGE: where the builder writes the hypercall page. Legacy value is a page
    /// index from VIRT_BASE, already converted. Recent Linux has none.
    pub virt_hypercall: Option<u64>,
    /// HV_START_LOW: lowest start of the hypervisor hole (32-bit PAE).
    pub virt_hv_start_low: Option<u64>,
    /// INIT_P2M: where the builder maps the initial p2m list (64-bit).
    pub p2m_base: Option<u64>,
    /// MOD_START_PFN != 0: the initrd may be passed unmapped, by pfn.
    pub unmapped_initrd: bool,
    /// SUSPEND_CANCEL value, if present.
    pub suspend_cancel: Option<u64>,
    /// L1_MFN_VALID mask/value pairs (maddr_t = 8 bytes), if present and well formed.
    pub l1_mfn_valid: Option<Vec<(u64, u64)>>,
    /// PHYS32_ENTRY (PVH only; a PV loader ignores it).
    pub phys_entry: Option<u32>,
    pub features: Features,
}

/// Metadata as found, before defaults (libelf's UNSET_ADDR is `None`).
#[derive(Debug, Clone)]
pub(crate) struct RawXenInfo {
    pub source: NoteSource,
    pub notes: Vec<XenNote>,
    pub guest_os: String,
    pub guest_version: String,
    pub xen_version: String,
    pub loader: String,
    pub pae: PaeMode,
    pub bsd_symtab: bool,
    pub virt_base: Option<u64>,
    pub virt_entry: Option<u64>,
    pub virt_hypercall: Option<u64>,
    pub virt_hv_start_low: Option<u64>,
    pub p2m_base: Option<u64>,
    pub elf_paddr_offset: Option<u64>,
    pub unmapped_initrd: bool,
    pub suspend_cancel: Option<u64>,
    pub l1_mfn_valid: Option<Vec<(u64, u64)>>,
    pub phys_entry: Option<u32>,
    pub features: Features,
}

impl RawXenInfo {
    fn new(source: NoteSource) -> Self {
        RawXenInfo {
            source,
            notes: Vec::new(),
            guest_os: String::new(),
            guest_version: String::new(),
            xen_version: String::new(),
            loader: String::new(),
            pae: PaeMode::No,
            bsd_symtab: false,
            virt_base: None,
            virt_entry: None,
            virt_hypercall: None,
            virt_hv_start_low: None,
            p2m_base: None,
            elf_paddr_offset: None,
            unmapped_initrd: false,
            suspend_cancel: None,
            l1_mfn_valid: None,
            phys_entry: None,
            features: Features::default(),
        }
    }
}

fn c_str(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&c| c == 0) {
        Some(n) => &bytes[..n],
        None => bytes,
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// libelf's `elf_note_numeric`.
fn note_numeric(desc: &[u8]) -> u64 {
    match desc.len() {
        1 | 2 | 4 | 8 => {
            let mut b = [0u8; 8];
            b[..desc.len()].copy_from_slice(desc);
            u64::from_le_bytes(b)
        }
        _ => 0,
    }
}

/// One note in a note area, borrowed.
struct RawNote<'a> {
    name: &'a [u8],
    kind: u32,
    desc: &'a [u8],
    /// The desc ran past the end of the file: `desc` is its string up to the NUL.
    truncated: bool,
}

/// Walk the notes of one note area of `len` bytes at the start of `data` (the file from
/// the area's offset on). `base` is the area's file offset (for errors). As libelf, a note
/// that starts inside the area may run past its end (GRUB's i386-xen image has one): only
/// running past the end of the file is an error.
fn walk_notes<'a>(
    data: &'a [u8],
    len: u64,
    base: u64,
    mut f: impl FnMut(RawNote<'a>) -> Result<()>,
) -> Result<()> {
    let b = Bytes::new(data, "ELF note");
    let len = len.min(b.len());
    let mut off: u64 = 0;
    // Fewer than a header's worth of trailing bytes is padding, not a note.
    while off.checked_add(12).is_some_and(|e| e <= len) {
        let namesz = u64::from(b.u32(off)?);
        let descsz = u64::from(b.u32(off + 4)?);
        let kind = b.u32(off + 8)?;
        let name_off = off + 12;
        let desc_off = name_off + ((namesz + 3) & !3);
        let next = desc_off + ((descsz + 3) & !3);
        let bad = |reason| ImageError::BadNote {
            offset: base + off,
            reason,
        };
        if name_off + namesz > b.len() {
            return Err(bad("name runs past the end of the file"));
        }
        let name = b.slice(name_off, namesz)?;
        let desc = if desc_off + descsz <= b.len() {
            b.slice(desc_off, descsz)?
        } else {
            // libelf reads a string desc up to its NUL if that lies in the file (GRUB's
            // i386-xen PAE_MODE note ends the file so); a number cut off is an error.
            let start = desc_off.min(b.len());
            let avail = b.slice(start, b.len() - start)?;
            let is_str = NOTE_DESC
                .get(kind as usize)
                .copied()
                .flatten()
                .is_some_and(|(_, s)| s);
            if !is_str {
                return Err(bad("desc runs past the end of the file"));
            }
            match avail.iter().position(|&c| c == 0) {
                Some(nul) => &avail[..=nul],
                None => return Err(bad("desc runs past the end of the file")),
            }
        };
        let truncated = desc_off + descsz > b.len();
        f(RawNote {
            name: c_str(name),
            kind,
            desc,
            truncated,
        })?;
        off = next;
    }
    Ok(())
}

/// Interpret one Xen note (libelf's `elf_xen_parse_note`). Unknown types are ignored.
fn apply_note(info: &mut RawXenInfo, n: &RawNote<'_>) -> Result<()> {
    let Some((name, is_str)) = NOTE_DESC.get(n.kind as usize).copied().flatten() else {
        return Ok(());
    };
    let s = c_str(n.desc);
    let val = if n.truncated { 0 } else { note_numeric(n.desc) };
    info.notes.push(XenNote {
        kind: n.kind,
        name,
        value: if is_str {
            NoteValue::Str(lossy(s))
        } else {
            NoteValue::Num(val)
        },
        desc: n.desc.to_vec(),
    });
    match n.kind {
        note::LOADER => info.loader = lossy(s),
        note::GUEST_OS => info.guest_os = lossy(s),
        note::GUEST_VERSION => info.guest_version = lossy(s),
        note::XEN_VERSION => info.xen_version = lossy(s),
        note::PAE_MODE => {
            if s == b"yes" {
                info.pae = PaeMode::ExtendedCr3;
            }
            if s.windows(7).any(|w| w == b"bimodal") {
                info.pae = PaeMode::Bimodal;
            }
        }
        note::BSD_SYMTAB if s == b"yes" => info.bsd_symtab = true,
        note::VIRT_BASE => info.virt_base = Some(val),
        note::ENTRY => info.virt_entry = Some(val),
        note::INIT_P2M => info.p2m_base = Some(val),
        note::MOD_START_PFN => info.unmapped_initrd = val != 0,
        note::PADDR_OFFSET => info.elf_paddr_offset = Some(val),
        note::HYPERCALL_PAGE => info.virt_hypercall = Some(val),
        note::HV_START_LOW => info.virt_hv_start_low = Some(val),
        note::SUSPEND_CANCEL => info.suspend_cancel = Some(val),
        note::L1_MFN_VALID => {
            info.l1_mfn_valid = if !n.desc.is_empty() && n.desc.len().is_multiple_of(16) {
                Some(
                    n.desc
                        .chunks_exact(16)
                        .map(|c| (note_numeric(&c[..8]), note_numeric(&c[8..])))
                        .collect(),
                )
            } else {
                None
            };
        }
        note::FEATURES => parse_features(s, &mut info.features)?,
        // An array of u32 words, XENFEAT_NR_SUBMAPS (1) of them used.
        note::SUPPORTED_FEATURES if n.desc.len() >= 4 && n.desc.len().is_multiple_of(4) => {
            info.features.supported |= note_numeric(&n.desc[..4]) as u32;
        }
        note::PHYS32_ENTRY => info.phys_entry = Some(val as u32),
        _ => {}
    }
    Ok(())
}

/// Parse the Xen notes in one note area (`len` bytes at the start of `data`, the file from
/// the area on); returns how many Xen notes it held.
fn parse_note_area(info: &mut RawXenInfo, data: &[u8], len: u64, base: u64) -> Result<usize> {
    let mut count = 0;
    walk_notes(data, len, base, |n| {
        if n.name == b"Xen" {
            apply_note(info, &n)?;
            count += 1;
        }
        Ok(())
    })?;
    Ok(count)
}

/// C's `strtoull(s, NULL, 0)`: leading blanks, optional sign, 0x/0 prefixes, stops at the
/// first non-digit, saturates on overflow.
pub(crate) fn strtoull(s: &[u8]) -> u64 {
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
        i += 1;
    }
    let mut neg = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        neg = s[i] == b'-';
        i += 1;
    }
    let mut radix = 10;
    if s.get(i) == Some(&b'0') {
        if matches!(s.get(i + 1), Some(b'x' | b'X'))
            && s.get(i + 2).is_some_and(|c| c.is_ascii_hexdigit())
        {
            radix = 16;
            i += 2;
        } else {
            radix = 8;
        }
    }
    let mut v: u64 = 0;
    let mut overflow = false;
    while let Some(d) = s.get(i).and_then(|&c| (c as char).to_digit(radix)) {
        match v
            .checked_mul(radix.into())
            .and_then(|v| v.checked_add(d.into()))
        {
            Some(n) => v = n,
            None => overflow = true,
        }
        i += 1;
    }
    if overflow {
        u64::MAX
    } else if neg {
        v.wrapping_neg()
    } else {
        v
    }
}

/// Parse the legacy `__xen_guest` string (libelf's `elf_xen_parse_guest_info`): comma
/// separated NAME=VALUE pairs, names up to 31 and values up to 127 characters.
///
/// As in libelf, an unknown required feature stops the parse without failing it (libelf
/// ignores that error on this path).
#[allow(clippy::collapsible_match)]
fn parse_guest_info(info: &mut RawXenInfo, s: &[u8]) {
    let s = c_str(s);
    let mut h = 0;
    while h < s.len() {
        let mut name = Vec::new();
        let mut value = Vec::new();
        loop {
            if name.len() >= 31 || h >= s.len() {
                break;
            }
            let c = s[h];
            if c == b',' {
                h += 1;
                break;
            }
            if c == b'=' {
                h += 1;
                loop {
                    if value.len() >= 127 || h >= s.len() {
                        break;
                    }
                    let c = s[h];
                    if c == b',' {
                        h += 1;
                        break;
                    }
                    value.push(c);
                    h += 1;
                }
                break;
            }
            name.push(c);
            h += 1;
        }
        let v = &value[..];
        match &name[..] {
            b"LOADER" => info.loader = lossy(v),
            b"GUEST_OS" => info.guest_os = lossy(v),
            b"GUEST_VER" => info.guest_version = lossy(v),
            b"XEN_VER" => info.xen_version = lossy(v),
            b"PAE" => {
                if v == b"yes[extended-cr3]" {
                    info.pae = PaeMode::ExtendedCr3;
                } else if v.starts_with(b"yes") {
                    info.pae = PaeMode::Yes;
                }
            }
            b"BSD_SYMTAB" => info.bsd_symtab = true,
            b"VIRT_BASE" => info.virt_base = Some(strtoull(v)),
            b"VIRT_ENTRY" => info.virt_entry = Some(strtoull(v)),
            b"ELF_PADDR_OFFSET" => info.elf_paddr_offset = Some(strtoull(v)),
            b"HYPERCALL_PAGE" => info.virt_hypercall = Some(strtoull(v).wrapping_shl(12)),
            b"FEATURES" => {
                // libelf stops here, without failing, on an unknown required feature.
                if parse_features(v, &mut info.features).is_err() {
                    break;
                }
            }
            _ => {}
        }
    }
    if let (Some(base), Some(hc)) = (info.virt_base, info.virt_hypercall) {
        info.virt_hypercall = Some(hc.wrapping_add(base));
    }
}

/// Find and parse the Xen metadata of an ELF image (notes, then `__xen_guest`), and apply
/// libelf's content checks (`elf_xen_note_check`) plus the domain builder's (a 32-bit guest
/// needs PAE; a domU kernel must not require dom0).
pub(crate) fn find_xen_info(elf: &ElfFile<'_>) -> Result<RawXenInfo> {
    let mut info = RawXenInfo::new(NoteSource::ProgramHeaders);
    let mut found = 0;
    for ph in &elf.phdrs {
        if ph.p_type != PT_NOTE || ph.offset == 0 {
            continue;
        }
        let area = elf.segment_data(ph, "PT_NOTE segment")?;
        let from = elf.data.get(ph.offset as usize..).unwrap_or_default();
        found += parse_note_area(&mut info, from, area.len() as u64, ph.offset)?;
    }
    if found == 0 {
        info = RawXenInfo::new(NoteSource::Sections);
        for sh in elf.shdrs.iter().skip(1) {
            if sh.sh_type != SHT_NOTE {
                continue;
            }
            let area = elf.section_data(sh, "SHT_NOTE section")?;
            let from = elf.data.get(sh.offset as usize..).unwrap_or_default();
            found += parse_note_area(&mut info, from, area.len() as u64, sh.offset)?;
        }
    }
    if found == 0 {
        info = RawXenInfo::new(NoteSource::XenGuestSection);
        let Some(sh) = elf.section_by_name(b"__xen_guest") else {
            return Err(ImageError::MissingXenNotes);
        };
        let s = elf.section_data(sh, "__xen_guest section")?;
        parse_guest_info(&mut info, s);
    }

    let loader_ok = info.loader.starts_with("generic");
    let os_ok = info.guest_os.starts_with("linux");
    if !loader_ok && !os_ok {
        return Err(ImageError::UnsupportedLoader {
            loader: info.loader.clone(),
            guest_os: info.guest_os.clone(),
        });
    }
    if !info.xen_version.starts_with("xen-3.0") {
        return Err(ImageError::UnsupportedXenVersion(info.xen_version.clone()));
    }
    if elf.class() == super::elf::ElfClass::Elf32 && info.pae == PaeMode::No {
        return Err(ImageError::NoPae);
    }
    if info.features.requires(feat::DOM0) {
        return Err(ImageError::Dom0Only);
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtoull_like_c() {
        assert_eq!(strtoull(b"0xC0000000"), 0xC000_0000);
        assert_eq!(strtoull(b"  42,"), 42);
        assert_eq!(strtoull(b"010"), 8);
        assert_eq!(strtoull(b"0"), 0);
        assert_eq!(strtoull(b"0x"), 0);
        assert_eq!(strtoull(b"junk"), 0);
        assert_eq!(strtoull(b"-1"), u64::MAX);
        assert_eq!(strtoull(b"99999999999999999999999"), u64::MAX);
        assert_eq!(strtoull(b"0xffffffff80000000"), 0xffff_ffff_8000_0000);
    }

    #[test]
    fn features() {
        let mut f = Features::default();
        parse_features(
            b"!writable_page_tables|pae_pgdir_above_4gb|no_such_thing",
            &mut f,
        )
        .unwrap();
        assert_eq!(f.supported, 0b10001);
        assert_eq!(f.required, 0b1);
        assert!(f.requires(feat::WRITABLE_PAGE_TABLES));
        assert!(f.supports(feat::PAE_PGDIR_ABOVE_4GB));
        let e = parse_features(b"!no_such_thing", &mut f).unwrap_err();
        assert_eq!(
            e,
            ImageError::UnknownRequiredFeature("no_such_thing".into())
        );
    }

    #[test]
    fn guest_info_string() {
        let mut i = RawXenInfo::new(NoteSource::XenGuestSection);
        parse_guest_info(
            &mut i,
            b"GUEST_OS=linux,GUEST_VER=2.6,XEN_VER=xen-3.0,VIRT_BASE=0xC0000000,\
              ELF_PADDR_OFFSET=0xC0000000,HYPERCALL_PAGE=0x12,LOADER=generic,\
              FEATURES=writable_page_tables|!pae_pgdir_above_4gb,PAE=yes[extended-cr3],BSD_SYMTAB\0junk",
        );
        assert_eq!(i.guest_os, "linux");
        assert_eq!(i.guest_version, "2.6");
        assert_eq!(i.xen_version, "xen-3.0");
        assert_eq!(i.loader, "generic");
        assert_eq!(i.virt_base, Some(0xC000_0000));
        assert_eq!(i.elf_paddr_offset, Some(0xC000_0000));
        assert_eq!(i.virt_hypercall, Some(0xC001_2000));
        assert_eq!(i.pae, PaeMode::ExtendedCr3);
        assert!(i.bsd_symtab);
        assert_eq!(i.features.required, 1 << feat::PAE_PGDIR_ABOVE_4GB);

        let mut i = RawXenInfo::new(NoteSource::XenGuestSection);
        parse_guest_info(&mut i, b"PAE=yes,FEATURES=!bogus,LOADER=generic");
        assert_eq!(i.pae, PaeMode::Yes);
        assert_eq!(i.loader, "", "an unknown required feature stops the parse");
    }

    #[test]
    fn note_walk_rejects_overruns() {
        // namesz 4 "Xen\0", descsz 8 but only 4 bytes of desc.
        let mut area = Vec::new();
        area.extend_from_slice(&4u32.to_le_bytes());
        area.extend_from_slice(&8u32.to_le_bytes());
        area.extend_from_slice(&1u32.to_le_bytes());
        area.extend_from_slice(b"Xen\0");
        area.extend_from_slice(&[1, 2, 3, 4]);
        let mut info = RawXenInfo::new(NoteSource::ProgramHeaders);
        let e = parse_note_area(&mut info, &area, area.len() as u64, 0x100).unwrap_err();
        assert!(
            matches!(e, ImageError::BadNote { offset: 0x100, .. }),
            "{e}"
        );
        // Trailing padding shorter than a header is fine.
        let mut area = Vec::new();
        area.extend_from_slice(&4u32.to_le_bytes());
        area.extend_from_slice(&4u32.to_le_bytes());
        area.extend_from_slice(&note::ENTRY.to_le_bytes());
        area.extend_from_slice(b"Xen\0");
        area.extend_from_slice(&0x1234u32.to_le_bytes());
        area.extend_from_slice(&[0; 8]);
        let mut info = RawXenInfo::new(NoteSource::ProgramHeaders);
        assert_eq!(
            parse_note_area(&mut info, &area, area.len() as u64, 0).unwrap(),
            1
        );
        // A note may run past its area into the rest of the file (libelf reads it).
        let mut info = RawXenInfo::new(NoteSource::ProgramHeaders);
        assert_eq!(parse_note_area(&mut info, &area, 12, 0).unwrap(), 1);
        assert_eq!(info.virt_entry, Some(0x1234));
        assert_eq!(info.virt_entry, Some(0x1234));
    }
}
