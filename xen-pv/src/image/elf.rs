//! A bounds-checked reader for little-endian x86 ELF32/ELF64 images.
//!
//! The image is untrusted: every field is read through [`Bytes`], which checks the range and
//! returns [`ImageError::Truncated`] instead of panicking. Header tables are copied into
//! class-independent structs ([`ElfHeader`], [`ProgramHeader`], [`SectionHeader`]); their
//! count is bounded by the u16 count fields and the tables must lie inside the image, so no
//! allocation is larger than the image itself.
//!
//! The `#[repr(C)]` structs below give the on-disk layouts. They are never transmuted: the
//! reader takes field offsets from them with `offset_of!`, and the BSD symbol-table header
//! the loader writes into guest memory is serialised with the same offsets. The asserts pin
//! each layout to the ELF specification.

use super::error::{ImageError, Result};
use std::mem::{offset_of, size_of};

pub const ELFMAG: [u8; 4] = *b"\x7fELF";
pub const EI_CLASS: usize = 4;
pub const EI_DATA: usize = 5;
pub const ELFCLASS32: u8 = 1;
pub const ELFCLASS64: u8 = 2;
pub const ELFDATA2LSB: u8 = 1;
pub const EV_CURRENT: u32 = 1;
pub const EM_386: u16 = 3;
pub const EM_X86_64: u16 = 62;

pub const PT_LOAD: u32 = 1;
pub const PT_NOTE: u32 = 4;
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;

pub const SHT_SYMTAB: u32 = 2;
pub const SHT_STRTAB: u32 = 3;
pub const SHT_NOTE: u32 = 7;
pub const SHT_NOBITS: u32 = 8;

/// ELF64 file header (64 bytes).
#[repr(C)]
#[allow(dead_code)]
pub struct Elf64Ehdr {
    pub e_ident: [u8; 16],
    pub e_type: u16,
    pub e_machine: u16,
    pub e_version: u32,
    pub e_entry: u64,
    pub e_phoff: u64,
    pub e_shoff: u64,
    pub e_flags: u32,
    pub e_ehsize: u16,
    pub e_phentsize: u16,
    pub e_phnum: u16,
    pub e_shentsize: u16,
    pub e_shnum: u16,
    pub e_shstrndx: u16,
}

/// ELF32 file header (52 bytes).
#[repr(C)]
#[allow(dead_code)]
pub struct Elf32Ehdr {
    pub e_ident: [u8; 16],
    pub e_type: u16,
    pub e_machine: u16,
    pub e_version: u32,
    pub e_entry: u32,
    pub e_phoff: u32,
    pub e_shoff: u32,
    pub e_flags: u32,
    pub e_ehsize: u16,
    pub e_phentsize: u16,
    pub e_phnum: u16,
    pub e_shentsize: u16,
    pub e_shnum: u16,
    pub e_shstrndx: u16,
}

/// ELF64 program header (56 bytes).
#[repr(C)]
#[allow(dead_code)]
pub struct Elf64Phdr {
    pub p_type: u32,
    pub p_flags: u32,
    pub p_offset: u64,
    pub p_vaddr: u64,
    pub p_paddr: u64,
    pub p_filesz: u64,
    pub p_memsz: u64,
    pub p_align: u64,
}

/// ELF32 program header (32 bytes).
#[repr(C)]
#[allow(dead_code)]
pub struct Elf32Phdr {
    pub p_type: u32,
    pub p_offset: u32,
    pub p_vaddr: u32,
    pub p_paddr: u32,
    pub p_filesz: u32,
    pub p_memsz: u32,
    pub p_flags: u32,
    pub p_align: u32,
}

/// ELF64 section header (64 bytes).
#[repr(C)]
#[allow(dead_code)]
pub struct Elf64Shdr {
    pub sh_name: u32,
    pub sh_type: u32,
    pub sh_flags: u64,
    pub sh_addr: u64,
    pub sh_offset: u64,
    pub sh_size: u64,
    pub sh_link: u32,
    pub sh_info: u32,
    pub sh_addralign: u64,
    pub sh_entsize: u64,
}

/// ELF32 section header (40 bytes).
#[repr(C)]
#[allow(dead_code)]
pub struct Elf32Shdr {
    pub sh_name: u32,
    pub sh_type: u32,
    pub sh_flags: u32,
    pub sh_addr: u32,
    pub sh_offset: u32,
    pub sh_size: u32,
    pub sh_link: u32,
    pub sh_info: u32,
    pub sh_addralign: u32,
    pub sh_entsize: u32,
}

/// Note header, the same in ELF32 and ELF64 (Xen pads name and desc to 4 bytes in both).
#[repr(C)]
#[allow(dead_code)]
pub struct ElfNoteHdr {
    pub n_namesz: u32,
    pub n_descsz: u32,
    pub n_type: u32,
}

const _: () = {
    assert!(size_of::<Elf64Ehdr>() == 64);
    assert!(offset_of!(Elf64Ehdr, e_ident) == 0);
    assert!(offset_of!(Elf64Ehdr, e_type) == 16);
    assert!(offset_of!(Elf64Ehdr, e_machine) == 18);
    assert!(offset_of!(Elf64Ehdr, e_version) == 20);
    assert!(offset_of!(Elf64Ehdr, e_entry) == 24);
    assert!(offset_of!(Elf64Ehdr, e_phoff) == 32);
    assert!(offset_of!(Elf64Ehdr, e_shoff) == 40);
    assert!(offset_of!(Elf64Ehdr, e_flags) == 48);
    assert!(offset_of!(Elf64Ehdr, e_ehsize) == 52);
    assert!(offset_of!(Elf64Ehdr, e_phentsize) == 54);
    assert!(offset_of!(Elf64Ehdr, e_phnum) == 56);
    assert!(offset_of!(Elf64Ehdr, e_shentsize) == 58);
    assert!(offset_of!(Elf64Ehdr, e_shnum) == 60);
    assert!(offset_of!(Elf64Ehdr, e_shstrndx) == 62);

    assert!(size_of::<Elf32Ehdr>() == 52);
    assert!(offset_of!(Elf32Ehdr, e_ident) == 0);
    assert!(offset_of!(Elf32Ehdr, e_type) == 16);
    assert!(offset_of!(Elf32Ehdr, e_machine) == 18);
    assert!(offset_of!(Elf32Ehdr, e_version) == 20);
    assert!(offset_of!(Elf32Ehdr, e_entry) == 24);
    assert!(offset_of!(Elf32Ehdr, e_phoff) == 28);
    assert!(offset_of!(Elf32Ehdr, e_shoff) == 32);
    assert!(offset_of!(Elf32Ehdr, e_flags) == 36);
    assert!(offset_of!(Elf32Ehdr, e_ehsize) == 40);
    assert!(offset_of!(Elf32Ehdr, e_phentsize) == 42);
    assert!(offset_of!(Elf32Ehdr, e_phnum) == 44);
    assert!(offset_of!(Elf32Ehdr, e_shentsize) == 46);
    assert!(offset_of!(Elf32Ehdr, e_shnum) == 48);
    assert!(offset_of!(Elf32Ehdr, e_shstrndx) == 50);

    assert!(size_of::<Elf64Phdr>() == 56);
    assert!(offset_of!(Elf64Phdr, p_type) == 0);
    assert!(offset_of!(Elf64Phdr, p_flags) == 4);
    assert!(offset_of!(Elf64Phdr, p_offset) == 8);
    assert!(offset_of!(Elf64Phdr, p_vaddr) == 16);
    assert!(offset_of!(Elf64Phdr, p_paddr) == 24);
    assert!(offset_of!(Elf64Phdr, p_filesz) == 32);
    assert!(offset_of!(Elf64Phdr, p_memsz) == 40);
    assert!(offset_of!(Elf64Phdr, p_align) == 48);

    assert!(size_of::<Elf32Phdr>() == 32);
    assert!(offset_of!(Elf32Phdr, p_type) == 0);
    assert!(offset_of!(Elf32Phdr, p_offset) == 4);
    assert!(offset_of!(Elf32Phdr, p_vaddr) == 8);
    assert!(offset_of!(Elf32Phdr, p_paddr) == 12);
    assert!(offset_of!(Elf32Phdr, p_filesz) == 16);
    assert!(offset_of!(Elf32Phdr, p_memsz) == 20);
    assert!(offset_of!(Elf32Phdr, p_flags) == 24);
    assert!(offset_of!(Elf32Phdr, p_align) == 28);

    assert!(size_of::<Elf64Shdr>() == 64);
    assert!(offset_of!(Elf64Shdr, sh_name) == 0);
    assert!(offset_of!(Elf64Shdr, sh_type) == 4);
    assert!(offset_of!(Elf64Shdr, sh_flags) == 8);
    assert!(offset_of!(Elf64Shdr, sh_addr) == 16);
    assert!(offset_of!(Elf64Shdr, sh_offset) == 24);
    assert!(offset_of!(Elf64Shdr, sh_size) == 32);
    assert!(offset_of!(Elf64Shdr, sh_link) == 40);
    assert!(offset_of!(Elf64Shdr, sh_info) == 44);
    assert!(offset_of!(Elf64Shdr, sh_addralign) == 48);
    assert!(offset_of!(Elf64Shdr, sh_entsize) == 56);

    assert!(size_of::<Elf32Shdr>() == 40);
    assert!(offset_of!(Elf32Shdr, sh_name) == 0);
    assert!(offset_of!(Elf32Shdr, sh_type) == 4);
    assert!(offset_of!(Elf32Shdr, sh_flags) == 8);
    assert!(offset_of!(Elf32Shdr, sh_addr) == 12);
    assert!(offset_of!(Elf32Shdr, sh_offset) == 16);
    assert!(offset_of!(Elf32Shdr, sh_size) == 20);
    assert!(offset_of!(Elf32Shdr, sh_link) == 24);
    assert!(offset_of!(Elf32Shdr, sh_info) == 28);
    assert!(offset_of!(Elf32Shdr, sh_addralign) == 32);
    assert!(offset_of!(Elf32Shdr, sh_entsize) == 36);

    assert!(size_of::<ElfNoteHdr>() == 12);
    assert!(offset_of!(ElfNoteHdr, n_namesz) == 0);
    assert!(offset_of!(ElfNoteHdr, n_descsz) == 4);
    assert!(offset_of!(ElfNoteHdr, n_type) == 8);
};

/// Bounds-checked little-endian reads from an untrusted byte slice.
#[derive(Clone, Copy)]
pub struct Bytes<'a> {
    pub data: &'a [u8],
    /// Names the structure in truncation errors.
    pub what: &'static str,
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8], what: &'static str) -> Self {
        Bytes { data, what }
    }

    pub fn len(&self) -> u64 {
        self.data.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn truncated(&self, offset: u64, len: u64) -> ImageError {
        ImageError::Truncated {
            what: self.what,
            offset,
            len,
            size: self.len(),
        }
    }

    /// The `len` bytes at `offset`, or a truncation error.
    pub fn slice(&self, offset: u64, len: u64) -> Result<&'a [u8]> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| self.truncated(offset, len))?;
        if end > self.len() {
            return Err(self.truncated(offset, len));
        }
        // Both fit in usize: they are at most the slice length.
        self.data
            .get(offset as usize..end as usize)
            .ok_or_else(|| self.truncated(offset, len))
    }

    pub fn array<const N: usize>(&self, offset: u64) -> Result<[u8; N]> {
        let s = self.slice(offset, N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub fn u8(&self, offset: u64) -> Result<u8> {
        Ok(self.array::<1>(offset)?[0])
    }
    pub fn u16(&self, offset: u64) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(offset)?))
    }
    pub fn u32(&self, offset: u64) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(offset)?))
    }
    pub fn u64(&self, offset: u64) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(offset)?))
    }
}

/// ELF32 or ELF64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfClass {
    Elf32,
    Elf64,
}

impl ElfClass {
    pub fn ehdr_size(self) -> u64 {
        match self {
            ElfClass::Elf32 => size_of::<Elf32Ehdr>() as u64,
            ElfClass::Elf64 => size_of::<Elf64Ehdr>() as u64,
        }
    }
    pub fn phdr_size(self) -> u64 {
        match self {
            ElfClass::Elf32 => size_of::<Elf32Phdr>() as u64,
            ElfClass::Elf64 => size_of::<Elf64Phdr>() as u64,
        }
    }
    pub fn shdr_size(self) -> u64 {
        match self {
            ElfClass::Elf32 => size_of::<Elf32Shdr>() as u64,
            ElfClass::Elf64 => size_of::<Elf64Shdr>() as u64,
        }
    }
    /// libelf's `elf_round_up`: 4-byte alignment for ELF32, 8 for ELF64.
    pub fn round_up(self, v: u64) -> u64 {
        let a = match self {
            ElfClass::Elf32 => 3,
            ElfClass::Elf64 => 7,
        };
        v.wrapping_add(a) & !a
    }
}

/// The file header fields the loader uses, class independent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfHeader {
    pub class: ElfClass,
    pub e_type: u16,
    pub machine: u16,
    pub version: u32,
    pub entry: u64,
    pub phoff: u64,
    pub shoff: u64,
    pub flags: u32,
    pub ehsize: u16,
    pub phentsize: u16,
    pub phnum: u16,
    pub shentsize: u16,
    pub shnum: u16,
    pub shstrndx: u16,
}

/// One program header, class independent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramHeader {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

impl ProgramHeader {
    /// libelf's `elf_phdr_is_loadable`: PT_LOAD with at least one of R, W, X.
    pub fn is_loadable(&self) -> bool {
        self.p_type == PT_LOAD && self.flags & (PF_R | PF_W | PF_X) != 0
    }
}

/// One section header, class independent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionHeader {
    pub name: u32,
    pub sh_type: u32,
    pub flags: u64,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
    pub link: u32,
    pub info: u32,
    pub addralign: u64,
    pub entsize: u64,
}

macro_rules! field {
    ($b:expr, $base:expr, $ty:ty, $field:ident, u8) => {
        $b.u8($base + offset_of!($ty, $field) as u64)
    };
    ($b:expr, $base:expr, $ty:ty, $field:ident, u16) => {
        $b.u16($base + offset_of!($ty, $field) as u64)
    };
    ($b:expr, $base:expr, $ty:ty, $field:ident, u32) => {
        $b.u32($base + offset_of!($ty, $field) as u64)
    };
    ($b:expr, $base:expr, $ty:ty, $field:ident, u64) => {
        $b.u64($base + offset_of!($ty, $field) as u64)
    };
}

/// A parsed ELF image: the header, the program and section header tables, and the bytes.
#[derive(Debug, Clone)]
pub struct ElfFile<'a> {
    pub data: &'a [u8],
    pub header: ElfHeader,
    pub phdrs: Vec<ProgramHeader>,
    pub shdrs: Vec<SectionHeader>,
}

/// Whether `data` starts with the ELF magic.
pub fn is_elf(data: &[u8]) -> bool {
    data.get(..4) == Some(&ELFMAG[..])
}

impl<'a> ElfFile<'a> {
    /// Parse and validate the headers of an x86 ELF image.
    pub fn parse(data: &'a [u8]) -> Result<Self> {
        let b = Bytes::new(data, "ELF header");
        if !is_elf(data) {
            return Err(ImageError::UnknownFormat);
        }
        let class = match b.u8(EI_CLASS as u64)? {
            ELFCLASS32 => ElfClass::Elf32,
            ELFCLASS64 => ElfClass::Elf64,
            c => return Err(ImageError::WrongClass(c)),
        };
        match b.u8(EI_DATA as u64)? {
            ELFDATA2LSB => {}
            d => return Err(ImageError::WrongEndian(d)),
        }
        // The whole header must be there before any field is read.
        b.slice(0, class.ehdr_size())?;
        let header = match class {
            ElfClass::Elf64 => ElfHeader {
                class,
                e_type: field!(b, 0, Elf64Ehdr, e_type, u16)?,
                machine: field!(b, 0, Elf64Ehdr, e_machine, u16)?,
                version: field!(b, 0, Elf64Ehdr, e_version, u32)?,
                entry: field!(b, 0, Elf64Ehdr, e_entry, u64)?,
                phoff: field!(b, 0, Elf64Ehdr, e_phoff, u64)?,
                shoff: field!(b, 0, Elf64Ehdr, e_shoff, u64)?,
                flags: field!(b, 0, Elf64Ehdr, e_flags, u32)?,
                ehsize: field!(b, 0, Elf64Ehdr, e_ehsize, u16)?,
                phentsize: field!(b, 0, Elf64Ehdr, e_phentsize, u16)?,
                phnum: field!(b, 0, Elf64Ehdr, e_phnum, u16)?,
                shentsize: field!(b, 0, Elf64Ehdr, e_shentsize, u16)?,
                shnum: field!(b, 0, Elf64Ehdr, e_shnum, u16)?,
                shstrndx: field!(b, 0, Elf64Ehdr, e_shstrndx, u16)?,
            },
            ElfClass::Elf32 => ElfHeader {
                class,
                e_type: field!(b, 0, Elf32Ehdr, e_type, u16)?,
                machine: field!(b, 0, Elf32Ehdr, e_machine, u16)?,
                version: field!(b, 0, Elf32Ehdr, e_version, u32)?,
                entry: field!(b, 0, Elf32Ehdr, e_entry, u32)?.into(),
                phoff: field!(b, 0, Elf32Ehdr, e_phoff, u32)?.into(),
                shoff: field!(b, 0, Elf32Ehdr, e_shoff, u32)?.into(),
                flags: field!(b, 0, Elf32Ehdr, e_flags, u32)?,
                ehsize: field!(b, 0, Elf32Ehdr, e_ehsize, u16)?,
                phentsize: field!(b, 0, Elf32Ehdr, e_phentsize, u16)?,
                phnum: field!(b, 0, Elf32Ehdr, e_phnum, u16)?,
                shentsize: field!(b, 0, Elf32Ehdr, e_shentsize, u16)?,
                shnum: field!(b, 0, Elf32Ehdr, e_shnum, u16)?,
                shstrndx: field!(b, 0, Elf32Ehdr, e_shstrndx, u16)?,
            },
        };
        let machine_ok = match class {
            ElfClass::Elf32 => header.machine == EM_386,
            ElfClass::Elf64 => header.machine == EM_X86_64,
        };
        if !machine_ok {
            return Err(ImageError::WrongMachine {
                class: if class == ElfClass::Elf32 { 1 } else { 2 },
                machine: header.machine,
            });
        }

        let mut phdrs = Vec::new();
        if header.phnum > 0 {
            if u64::from(header.phentsize) < class.phdr_size() {
                return Err(ImageError::BadHeader("program header entry size too small"));
            }
            let pb = Bytes::new(data, "program header table");
            let len = u64::from(header.phentsize) * u64::from(header.phnum);
            pb.slice(header.phoff, len)?;
            phdrs.reserve(header.phnum.into());
            for i in 0..u64::from(header.phnum) {
                let base = header.phoff + i * u64::from(header.phentsize);
                phdrs.push(read_phdr(&pb, class, base)?);
            }
        }

        let mut shdrs = Vec::new();
        if header.shnum > 0 {
            if u64::from(header.shentsize) < class.shdr_size() {
                return Err(ImageError::BadHeader("section header entry size too small"));
            }
            let sb = Bytes::new(data, "section header table");
            let len = u64::from(header.shentsize) * u64::from(header.shnum);
            sb.slice(header.shoff, len)?;
            shdrs.reserve(header.shnum.into());
            for i in 0..u64::from(header.shnum) {
                let base = header.shoff + i * u64::from(header.shentsize);
                shdrs.push(read_shdr(&sb, class, base)?);
            }
        }

        Ok(ElfFile {
            data,
            header,
            phdrs,
            shdrs,
        })
    }

    pub fn class(&self) -> ElfClass {
        self.header.class
    }

    /// The file bytes of a segment (`p_offset`, `p_filesz`).
    pub fn segment_data(&self, ph: &ProgramHeader, what: &'static str) -> Result<&'a [u8]> {
        Bytes::new(self.data, what).slice(ph.offset, ph.filesz)
    }

    /// The file bytes of a section (empty for SHT_NOBITS).
    pub fn section_data(&self, sh: &SectionHeader, what: &'static str) -> Result<&'a [u8]> {
        if sh.sh_type == SHT_NOBITS {
            return Ok(&[]);
        }
        Bytes::new(self.data, what).slice(sh.offset, sh.size)
    }

    /// A section's name from the section-header string table, if there is one and the name
    /// lies inside it (libelf reads names only through e_shstrndx).
    pub fn section_name(&self, sh: &SectionHeader) -> Option<&'a [u8]> {
        let strtab = self.shdrs.get(usize::from(self.header.shstrndx))?;
        let table = self.section_data(strtab, "section name table").ok()?;
        let rest = table.get(usize::try_from(sh.name).ok()?..)?;
        let end = rest.iter().position(|&c| c == 0)?;
        rest.get(..end)
    }

    /// The first section called `name`.
    pub fn section_by_name(&self, name: &[u8]) -> Option<&SectionHeader> {
        self.shdrs
            .iter()
            .find(|sh| self.section_name(sh) == Some(name))
    }

    /// The symbol table and its string table as libelf's `elf_init` finds them: the first
    /// SHT_SYMTAB at index >= 1 whose sh_link names a section inside the table. Returns
    /// their indices.
    pub fn symtab(&self) -> Option<(usize, usize)> {
        for (i, sh) in self.shdrs.iter().enumerate().skip(1) {
            if sh.sh_type != SHT_SYMTAB {
                continue;
            }
            let link = usize::try_from(sh.link).ok()?;
            if link == 0 || link >= self.shdrs.len() {
                return None;
            }
            return Some((i, link));
        }
        None
    }
}

fn read_phdr(b: &Bytes<'_>, class: ElfClass, base: u64) -> Result<ProgramHeader> {
    Ok(match class {
        ElfClass::Elf64 => ProgramHeader {
            p_type: field!(b, base, Elf64Phdr, p_type, u32)?,
            flags: field!(b, base, Elf64Phdr, p_flags, u32)?,
            offset: field!(b, base, Elf64Phdr, p_offset, u64)?,
            vaddr: field!(b, base, Elf64Phdr, p_vaddr, u64)?,
            paddr: field!(b, base, Elf64Phdr, p_paddr, u64)?,
            filesz: field!(b, base, Elf64Phdr, p_filesz, u64)?,
            memsz: field!(b, base, Elf64Phdr, p_memsz, u64)?,
            align: field!(b, base, Elf64Phdr, p_align, u64)?,
        },
        ElfClass::Elf32 => ProgramHeader {
            p_type: field!(b, base, Elf32Phdr, p_type, u32)?,
            flags: field!(b, base, Elf32Phdr, p_flags, u32)?,
            offset: field!(b, base, Elf32Phdr, p_offset, u32)?.into(),
            vaddr: field!(b, base, Elf32Phdr, p_vaddr, u32)?.into(),
            paddr: field!(b, base, Elf32Phdr, p_paddr, u32)?.into(),
            filesz: field!(b, base, Elf32Phdr, p_filesz, u32)?.into(),
            memsz: field!(b, base, Elf32Phdr, p_memsz, u32)?.into(),
            align: field!(b, base, Elf32Phdr, p_align, u32)?.into(),
        },
    })
}

fn read_shdr(b: &Bytes<'_>, class: ElfClass, base: u64) -> Result<SectionHeader> {
    Ok(match class {
        ElfClass::Elf64 => SectionHeader {
            name: field!(b, base, Elf64Shdr, sh_name, u32)?,
            sh_type: field!(b, base, Elf64Shdr, sh_type, u32)?,
            flags: field!(b, base, Elf64Shdr, sh_flags, u64)?,
            addr: field!(b, base, Elf64Shdr, sh_addr, u64)?,
            offset: field!(b, base, Elf64Shdr, sh_offset, u64)?,
            size: field!(b, base, Elf64Shdr, sh_size, u64)?,
            link: field!(b, base, Elf64Shdr, sh_link, u32)?,
            info: field!(b, base, Elf64Shdr, sh_info, u32)?,
            addralign: field!(b, base, Elf64Shdr, sh_addralign, u64)?,
            entsize: field!(b, base, Elf64Shdr, sh_entsize, u64)?,
        },
        ElfClass::Elf32 => SectionHeader {
            name: field!(b, base, Elf32Shdr, sh_name, u32)?,
            sh_type: field!(b, base, Elf32Shdr, sh_type, u32)?,
            flags: field!(b, base, Elf32Shdr, sh_flags, u32)?.into(),
            addr: field!(b, base, Elf32Shdr, sh_addr, u32)?.into(),
            offset: field!(b, base, Elf32Shdr, sh_offset, u32)?.into(),
            size: field!(b, base, Elf32Shdr, sh_size, u32)?.into(),
            link: field!(b, base, Elf32Shdr, sh_link, u32)?,
            info: field!(b, base, Elf32Shdr, sh_info, u32)?,
            addralign: field!(b, base, Elf32Shdr, sh_addralign, u32)?.into(),
            entsize: field!(b, base, Elf32Shdr, sh_entsize, u32)?.into(),
        },
    })
}

/// Little-endian writes into a buffer the loader builds (the BSD symbol-table header).
/// Out-of-range writes are silently dropped; callers size the buffer from the same layouts.
pub(crate) struct Writer<'b> {
    pub buf: &'b mut [u8],
}

impl Writer<'_> {
    pub fn put(&mut self, offset: usize, bytes: &[u8]) {
        if let Some(end) = offset.checked_add(bytes.len()) {
            if let Some(dst) = self.buf.get_mut(offset..end) {
                dst.copy_from_slice(bytes);
            }
        }
    }
    pub fn u16(&mut self, offset: usize, v: u16) {
        self.put(offset, &v.to_le_bytes());
    }
    pub fn u32(&mut self, offset: usize, v: u32) {
        self.put(offset, &v.to_le_bytes());
    }
    pub fn u64(&mut self, offset: usize, v: u64) {
        self.put(offset, &v.to_le_bytes());
    }
}

/// Serialise a section header at `base` in `w` in the given class (values are truncated to
/// 32 bits for ELF32, as a C store into the ELF32 field would).
pub(crate) fn write_shdr(w: &mut Writer<'_>, class: ElfClass, base: usize, sh: &SectionHeader) {
    match class {
        ElfClass::Elf64 => {
            w.u32(base + offset_of!(Elf64Shdr, sh_name), sh.name);
            w.u32(base + offset_of!(Elf64Shdr, sh_type), sh.sh_type);
            w.u64(base + offset_of!(Elf64Shdr, sh_flags), sh.flags);
            w.u64(base + offset_of!(Elf64Shdr, sh_addr), sh.addr);
            w.u64(base + offset_of!(Elf64Shdr, sh_offset), sh.offset);
            w.u64(base + offset_of!(Elf64Shdr, sh_size), sh.size);
            w.u32(base + offset_of!(Elf64Shdr, sh_link), sh.link);
            w.u32(base + offset_of!(Elf64Shdr, sh_info), sh.info);
            w.u64(base + offset_of!(Elf64Shdr, sh_addralign), sh.addralign);
            w.u64(base + offset_of!(Elf64Shdr, sh_entsize), sh.entsize);
        }
        ElfClass::Elf32 => {
            w.u32(base + offset_of!(Elf32Shdr, sh_name), sh.name);
            w.u32(base + offset_of!(Elf32Shdr, sh_type), sh.sh_type);
            w.u32(base + offset_of!(Elf32Shdr, sh_flags), sh.flags as u32);
            w.u32(base + offset_of!(Elf32Shdr, sh_addr), sh.addr as u32);
            w.u32(base + offset_of!(Elf32Shdr, sh_offset), sh.offset as u32);
            w.u32(base + offset_of!(Elf32Shdr, sh_size), sh.size as u32);
            w.u32(base + offset_of!(Elf32Shdr, sh_link), sh.link);
            w.u32(base + offset_of!(Elf32Shdr, sh_info), sh.info);
            w.u32(
                base + offset_of!(Elf32Shdr, sh_addralign),
                sh.addralign as u32,
            );
            w.u32(base + offset_of!(Elf32Shdr, sh_entsize), sh.entsize as u32);
        }
    }
}

/// Patch the file-header fields of the BSD symbol-table copy (see `layout.rs`).
pub(crate) fn patch_symtab_ehdr(
    w: &mut Writer<'_>,
    class: ElfClass,
    base: usize,
    shoff: u64,
    shnum: u16,
) {
    match class {
        ElfClass::Elf64 => {
            w.u16(
                base + offset_of!(Elf64Ehdr, e_ehsize),
                size_of::<Elf64Ehdr>() as u16,
            );
            w.u16(
                base + offset_of!(Elf64Ehdr, e_shentsize),
                size_of::<Elf64Shdr>() as u16,
            );
            w.u32(base + offset_of!(Elf64Ehdr, e_version), EV_CURRENT);
            w.u64(base + offset_of!(Elf64Ehdr, e_shoff), shoff);
            w.u16(base + offset_of!(Elf64Ehdr, e_shnum), shnum);
            w.u64(base + offset_of!(Elf64Ehdr, e_phoff), 0);
            w.u16(base + offset_of!(Elf64Ehdr, e_phentsize), 0);
            w.u16(base + offset_of!(Elf64Ehdr, e_phnum), 0);
            w.u16(base + offset_of!(Elf64Ehdr, e_shstrndx), 0);
        }
        ElfClass::Elf32 => {
            w.u16(
                base + offset_of!(Elf32Ehdr, e_ehsize),
                size_of::<Elf32Ehdr>() as u16,
            );
            w.u16(
                base + offset_of!(Elf32Ehdr, e_shentsize),
                size_of::<Elf32Shdr>() as u16,
            );
            w.u32(base + offset_of!(Elf32Ehdr, e_version), EV_CURRENT);
            w.u32(base + offset_of!(Elf32Ehdr, e_shoff), shoff as u32);
            w.u16(base + offset_of!(Elf32Ehdr, e_shnum), shnum);
            w.u32(base + offset_of!(Elf32Ehdr, e_phoff), 0);
            w.u16(base + offset_of!(Elf32Ehdr, e_phentsize), 0);
            w.u16(base + offset_of!(Elf32Ehdr, e_phnum), 0);
            w.u16(base + offset_of!(Elf32Ehdr, e_shstrndx), 0);
        }
    }
}
