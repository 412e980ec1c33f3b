//! The one error type of image parsing and loading.

use std::fmt;

/// Everything that can go wrong while unwrapping, parsing or loading a guest kernel image.
///
/// `Display` gives one line naming the problem, suitable for a CLI that prints it and exits 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// Neither an ELF image, a Linux bzImage nor a gzip-compressed one of them.
    UnknownFormat,
    /// A structure lies (partly) beyond the end of the data it must be read from.
    Truncated {
        what: &'static str,
        offset: u64,
        len: u64,
        size: u64,
    },
    /// EI_CLASS is neither ELFCLASS32 nor ELFCLASS64.
    WrongClass(u8),
    /// EI_DATA is not ELFDATA2LSB (x86 is little-endian).
    WrongEndian(u8),
    /// e_machine does not match the class: ELF32 needs EM_386, ELF64 needs EM_X86_64.
    WrongMachine { class: u8, machine: u16 },
    /// A header field that makes the image unreadable (entry sizes too small, ...).
    BadHeader(&'static str),
    /// A PT_LOAD segment is malformed (memsz < filesz, address overflow).
    BadSegment { index: usize, reason: &'static str },
    /// Two loadable segments cover the same (ELF physical) addresses.
    OverlappingSegments {
        first: usize,
        second: usize,
        addr: u64,
    },
    /// No PT_LOAD segment with any of the R/W/X flags.
    NoLoadableSegments,
    /// No Xen ELF note (PT_NOTE or SHT_NOTE) and no `__xen_guest` section.
    MissingXenNotes,
    /// A Xen note runs past the end of its segment or section.
    BadNote { offset: u64, reason: &'static str },
    /// Neither LOADER starts with "generic" nor GUEST_OS with "linux".
    UnsupportedLoader { loader: String, guest_os: String },
    /// XEN_VERSION does not start with "xen-3.0".
    UnsupportedXenVersion(String),
    /// A 32-bit guest that does not declare PAE support (Xen runs 32-bit PV guests only in PAE).
    NoPae,
    /// FEATURES requires (`!name`) a feature this loader does not know.
    UnknownRequiredFeature(String),
    /// The kernel requires XENFEAT_dom0, so it cannot run as an unprivileged domain.
    Dom0Only,
    /// Start, end, entry or P2M base are inconsistent (libelf's "out of bounds" checks).
    AddressOutOfBounds(&'static str),
    /// The kernel's first virtual address is not page aligned (Xen's builder refuses it).
    UnalignedKernelStart(u64),
    /// A bzImage with a boot protocol older than 2.08 (no payload fields).
    BootProtocolTooOld(u16),
    /// The bzImage payload offset/length point outside the file.
    BadPayload(&'static str),
    /// The bzImage payload starts with no magic number this loader decompresses.
    UnsupportedCompression([u8; 4]),
    /// The decompressor rejected the payload.
    CorruptPayload {
        format: &'static str,
        detail: String,
    },
    /// The decompressed kernel would exceed the size limit.
    TooBig { limit: u64 },
    /// The load sink could not place `len` bytes at guest pseudo-physical address `gpa`.
    DoesNotFit { gpa: u64, len: u64 },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ImageError::*;
        match self {
            UnknownFormat => write!(f, "not an ELF image or a Linux bzImage"),
            Truncated {
                what,
                offset,
                len,
                size,
            } => write!(
                f,
                "truncated image: {what} at {offset:#x} (+{len:#x}) lies beyond the end ({size:#x} bytes)"
            ),
            WrongClass(c) => write!(f, "wrong ELF class {c} (need ELF32 or ELF64)"),
            WrongEndian(d) => write!(f, "wrong ELF data encoding {d} (need little-endian)"),
            WrongMachine { class, machine } => write!(
                f,
                "wrong ELF machine {machine} for ELF{} (need EM_386 for ELF32, EM_X86_64 for ELF64)",
                if *class == 1 { 32 } else { 64 }
            ),
            BadHeader(why) => write!(f, "bad ELF header: {why}"),
            BadSegment { index, reason } => write!(f, "bad program header {index}: {reason}"),
            OverlappingSegments {
                first,
                second,
                addr,
            } => write!(
                f,
                "overlapping segments: program headers {first} and {second} both cover paddr {addr:#x}"
            ),
            NoLoadableSegments => write!(f, "no loadable (PT_LOAD) segment"),
            MissingXenNotes => write!(
                f,
                "not a Xen PV image: no Xen ELF notes and no __xen_guest section"
            ),
            BadNote { offset, reason } => write!(f, "bad ELF note at {offset:#x}: {reason}"),
            UnsupportedLoader { loader, guest_os } => write!(
                f,
                "unsupported guest: LOADER \"{loader}\" is not \"generic\" and GUEST_OS \"{guest_os}\" is not \"linux\""
            ),
            UnsupportedXenVersion(v) => {
                write!(f, "unsupported XEN_VERSION \"{v}\" (need \"xen-3.0\")")
            }
            NoPae => write!(
                f,
                "32-bit guest without PAE (PAE_MODE must be yes, bimodal or extended-cr3)"
            ),
            UnknownRequiredFeature(name) => {
                write!(f, "guest requires unknown Xen feature \"{name}\"")
            }
            Dom0Only => write!(
                f,
                "guest requires XENFEAT_dom0: it cannot run as an unprivileged domain"
            ),
            AddressOutOfBounds(why) => write!(f, "bad kernel addresses: {why}"),
            UnalignedKernelStart(a) => write!(f, "kernel start {a:#x} is not page aligned"),
            BootProtocolTooOld(v) => write!(
                f,
                "bzImage boot protocol {}.{:02} too old (need 2.08)",
                v >> 8,
                v & 0xff
            ),
            BadPayload(why) => write!(f, "bad bzImage payload: {why}"),
            UnsupportedCompression(m) => write!(
                f,
                "unsupported compression: payload starts {:02x} {:02x} {:02x} {:02x}",
                m[0], m[1], m[2], m[3]
            ),
            CorruptPayload { format, detail } => {
                write!(f, "corrupt {format} payload: {detail}")
            }
            TooBig { limit } => write!(f, "decompressed kernel too big (limit {limit} bytes)"),
            DoesNotFit { gpa, len } => write!(
                f,
                "kernel does not fit guest memory: {len:#x} bytes at pseudo-physical {gpa:#x}"
            ),
        }
    }
}

impl std::error::Error for ImageError {}

pub type Result<T> = std::result::Result<T, ImageError>;
