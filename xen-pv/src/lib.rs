//! xen-pv: the Xen PV platform of Xenolith.
//!
//! - [`image`]: guest kernel images — ELF32/ELF64 parsing, Xen ELF notes and the legacy
//!   `__xen_guest` string, the load layout, and bzImage payload decompression — with the
//!   semantics of Xen's libelf and toolstack loaders. The domain builder uses it to learn
//!   where the kernel goes and to copy it into guest RAM through a `LoadSink`.
//! - [`builder`]: the domain builder — the layout Xen's toolstack gives a PV domU (kernel,
//!   module, p2m list, start_info, xenstore and console pages, page tables, boot stack),
//!   the guest-visible Xen structures (start_info, shared_info) with compile-time layout
//!   checks, the platform frames Xen itself provides (shared_info, the read-only M2P table,
//!   Xen's GDT), and vCPU 0's initial state.
//! - [`core`]: the engine-agnostic core (event channels, time; grant tables and xenstore
//!   later), driven through [`core::GuestPhys`].
//! - [`mm`]: the PV MMU — Xen's page type system, mmu_update / mmuext_op /
//!   update_va_mapping validation, writable page tables.
//!
//! Design rule for this crate: guest input (images, hypercall arguments, ring contents) is
//! untrusted; it is read through bounds-checked accessors and errors are values, never
//! panics.

pub mod builder;
pub mod core;
pub mod image;
pub mod mm;
pub mod pv;
