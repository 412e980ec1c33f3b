//! The one error type of the domain builder.

use std::fmt;

use crate::image::ImageError;

/// Everything that can go wrong while building a domain. `Display` gives one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// Guest RAM cannot hold the guest's pages plus the platform frames.
    RamTooSmall { need_pages: u64, have_pages: u64 },
    /// A segment does not fit the guest's pages (Xen's "segment too large" / "not enough
    /// memory for initial mapping").
    OutOfMemory {
        what: &'static str,
        pages: u64,
        used: u64,
        nr_pages: u64,
    },
    /// A virtual address computation left the guest's address space (wrapped past the top,
    /// or beyond 4 GiB for a 32-bit guest).
    AddressOverflow(&'static str),
    /// Two mappings cover the same virtual addresses, or a guest mapping reaches into the
    /// hypervisor's area.
    Overlap { what: &'static str, addr: u64 },
    /// The guest wants something this platform does not provide.
    Unsupported(&'static str),
    /// More machine frames than this guest type can have (the M2P table's virtual area; 4 GiB
    /// for PAE guests).
    TooManyFrames { frames: u64, max: u64 },
    /// The kernel image could not be loaded.
    Image(ImageError),
    /// A write fell outside guest RAM (a builder bug, reported rather than panicking).
    OutsideRam { addr: u64, len: u64 },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use BuildError::*;
        match self {
            RamTooSmall {
                need_pages,
                have_pages,
            } => write!(
                f,
                "guest RAM too small: need {need_pages:#x} pages, have {have_pages:#x}"
            ),
            OutOfMemory {
                what,
                pages,
                used,
                nr_pages,
            } => write!(
                f,
                "out of guest memory: {what} needs {pages:#x} pages, {used:#x} of {nr_pages:#x} already used"
            ),
            AddressOverflow(what) => write!(f, "virtual address overflow: {what}"),
            Overlap { what, addr } => write!(f, "overlapping mappings: {what} at {addr:#x}"),
            Unsupported(what) => write!(f, "unsupported guest: {what}"),
            TooManyFrames { frames, max } => write!(
                f,
                "too much RAM: {frames:#x} machine frames, this guest type allows {max:#x}"
            ),
            Image(e) => write!(f, "{e}"),
            OutsideRam { addr, len } => write!(
                f,
                "builder write outside guest RAM: {len:#x} bytes at {addr:#x}"
            ),
        }
    }
}

impl std::error::Error for BuildError {}

impl From<ImageError> for BuildError {
    fn from(e: ImageError) -> Self {
        BuildError::Image(e)
    }
}

pub type Result<T> = std::result::Result<T, BuildError>;
