//! xen-pv: the Xen PV platform of Xenolith.
//!
//! - [`image`]: guest kernel images — ELF32/ELF64 parsing, Xen ELF notes and the legacy
//!   `__xen_guest` string, the load layout, and bzImage payload decompression — with the
//!   semantics of Xen's libelf and toolstack loaders. The domain builder uses it to learn
//!   where the kernel goes and to copy it into guest RAM through a `LoadSink`.
//!
//! Design rule for this crate: guest input (images, hypercall arguments, ring contents) is
//! untrusted; it is read through bounds-checked accessors and errors are values, never
//! panics.

pub mod image;
