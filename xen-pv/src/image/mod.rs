//! Guest kernel images: unwrapping (bzImage, gzip), ELF parsing, Xen metadata and load
//! layout — the image half of a PV domain builder, with the semantics of Xen's libelf
//! (`xen/common/libelf/`) and toolstack loaders (`tools/libs/guest/xg_dom_elfloader.c`,
//! `xg_dom_bzimageloader.c`).
//!
//! ```text
//! bytes ──unwrap──▶ ELF bytes ──ElfFile::parse──▶ headers ──find_xen_info──▶ raw notes
//!   (gzip?, bzImage payload                                  │
//!    decompressed)                                layout::compute (defaults, checks)
//!                                                            ▼
//!                                    GuestImage { xen: XenParams, layout: KernelLayout }
//!                                                            │ load(sink)
//!                                                            ▼
//!                                       segments + bss (+ BSD symtab) into guest RAM
//! ```
//!
//! Everything read from the image is bounds-checked ([`elf::Bytes`]); malformed input gives
//! an [`ImageError`], never a panic, and no allocation is sized by a header field beyond the
//! image size or the decompression limit ([`DEFAULT_SIZE_LIMIT`]).
//!
//! Faithfulness to libelf, and the deliberate differences:
//! - notes: PT_NOTE first, SHT_NOTE only if no PT_NOTE had a Xen note, `__xen_guest` last;
//!   libelf's defaults (VIRT_BASE 0, PADDR_OFFSET 0 with notes or VIRT_BASE with
//!   `__xen_guest`, ENTRY e_entry) and its checks (LOADER "generic" or GUEST_OS "linux",
//!   XEN_VERSION "xen-3.0", start/entry/p2m bounds); the toolstack's checks (32-bit needs PAE,
//!   no XENFEAT_dom0 requirement, page-aligned kernel start);
//! - FEATURES knows every name in features.h, not libelf's seven;
//! - stricter than libelf, which marks a broken image and goes on: a note, segment or table
//!   outside the image is an error; so are overlapping PT_LOADs and p_filesz > p_memsz;
//! - zero-size PT_LOADs count towards the kernel range, as in libelf, but are never read;
//! - lzop: checksums are parsed from the flags (Xen assumes exactly one) and stored blocks
//!   are accepted; an uncompressed ELF payload is accepted.

pub mod bzimage;
pub mod decompress;
pub mod elf;
pub mod error;
pub mod layout;
pub mod xen;

use std::borrow::Cow;

pub use bzimage::BzImageInfo;
pub use decompress::Compression;
pub use elf::{ElfClass, ElfFile, ElfHeader};
pub use error::ImageError;
pub use layout::{BsdSymtab, KernelLayout, LoadSegment, LoadSink, SliceSink, PAGE_SIZE};
pub use xen::{feat, note, Features, NoteSource, NoteValue, PaeMode, XenNote, XenParams};

/// Largest decompressed kernel accepted by [`GuestImage::parse`].
pub const DEFAULT_SIZE_LIMIT: usize = 512 << 20;

/// How the ELF image was wrapped in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The whole input was gzip-compressed (libxc gunzips a kernel file before probing).
    pub gzip: bool,
    /// The ELF came from a Linux bzImage payload.
    pub bzimage: Option<BzImageInfo>,
}

/// Unwrap a kernel file to its ELF bytes: gunzip a gzip file, extract a bzImage payload.
/// Borrows when the input already is an ELF image.
pub fn unwrap_kernel(bytes: &[u8], limit: usize) -> Result<(Cow<'_, [u8]>, Container), ImageError> {
    let mut container = Container {
        gzip: false,
        bzimage: None,
    };
    let data: Cow<'_, [u8]> = if bytes.starts_with(b"\x1f\x8b") {
        container.gzip = true;
        Cow::Owned(decompress::decompress(Compression::Gzip, bytes, limit)?)
    } else {
        Cow::Borrowed(bytes)
    };
    if elf::is_elf(&data) {
        return Ok((data, container));
    }
    if bzimage::is_bzimage(&data) {
        let (info, elf_bytes) = bzimage::extract(&data, limit)?;
        if !elf::is_elf(&elf_bytes) {
            return Err(ImageError::BadPayload(
                "decompressed payload is not an ELF image",
            ));
        }
        container.bzimage = Some(info);
        return Ok((Cow::Owned(elf_bytes), container));
    }
    Err(ImageError::UnknownFormat)
}

/// A parsed Xen PV kernel, ready to be loaded.
#[derive(Debug, Clone)]
pub struct GuestImage<'a> {
    elf_data: Cow<'a, [u8]>,
    pub container: Container,
    pub header: ElfHeader,
    pub xen: XenParams,
    pub layout: KernelLayout,
}

impl<'a> GuestImage<'a> {
    /// Parse a kernel file: ELF, bzImage or gzip of either, decompressing at most
    /// [`DEFAULT_SIZE_LIMIT`] bytes.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ImageError> {
        Self::parse_with_limit(bytes, DEFAULT_SIZE_LIMIT)
    }

    /// [`GuestImage::parse`] with a different decompression limit.
    pub fn parse_with_limit(bytes: &'a [u8], limit: usize) -> Result<Self, ImageError> {
        let (data, container) = unwrap_kernel(bytes, limit)?;
        Self::from_elf(data, container)
    }

    /// Parse ELF bytes already unwrapped.
    pub fn from_elf(data: Cow<'a, [u8]>, container: Container) -> Result<Self, ImageError> {
        let (header, xen, layout) = {
            let elf = ElfFile::parse(&data)?;
            let raw = xen::find_xen_info(&elf)?;
            let (xen, layout) = layout::compute(&elf, raw)?;
            (elf.header, xen, layout)
        };
        Ok(GuestImage {
            elf_data: data,
            container,
            header,
            xen,
            layout,
        })
    }

    /// The same image, owning its ELF bytes (copies them if they were borrowed).
    pub fn into_owned(self) -> GuestImage<'static> {
        GuestImage {
            elf_data: Cow::Owned(self.elf_data.into_owned()),
            container: self.container,
            header: self.header,
            xen: self.xen,
            layout: self.layout,
        }
    }

    /// The (decompressed) ELF image.
    pub fn elf_bytes(&self) -> &[u8] {
        &self.elf_data
    }

    pub fn class(&self) -> ElfClass {
        self.header.class
    }

    pub fn is_64bit(&self) -> bool {
        self.header.class == ElfClass::Elf64
    }

    /// The Xen guest type (also start_info's magic): "xen-3.0-x86_64" or "xen-3.0-x86_32p".
    /// (Parsing refuses 32-bit guests without PAE.)
    pub fn guest_type(&self) -> &'static str {
        if self.is_64bit() {
            "xen-3.0-x86_64"
        } else {
            "xen-3.0-x86_32p"
        }
    }

    /// Copy the kernel into guest memory: every segment's file bytes, zeroes for its bss,
    /// and the BSD symbol table if the kernel asked for one. Addresses given to the sink are
    /// pseudo-physical (`vaddr - virt_base`).
    pub fn load(&self, sink: &mut dyn LoadSink) -> Result<(), ImageError> {
        let elf = ElfFile::parse(&self.elf_data)?;
        layout::load(&elf, &self.layout, sink)
    }
}
