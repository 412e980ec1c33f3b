//! Xenolith's execution engine.
//!
//! - [`ir`]: the intermediate representation frontends produce.
//! - [`backend`]: the IR interpreter (every host) and the native backends (one module per
//!   host ISA; nothing outside `backend/` mentions a host instruction).
//! - [`engine`]: the run loop, the translation-block cache (keyed by physical address),
//!   chaining, self-modifying-code invalidation and the softmmu slow paths.
//! - [`env`]: the state generated code runs against, with the softmmu TLB.
//! - [`mem`]: bounds-checked guest RAM.
//!
//! The engine knows nothing about x86 or Xen: the guest architecture plugs in through
//! [`engine::Frontend`] (translation) and [`engine::Mmu`] (page walks); the platform drives
//! [`engine::Engine::run`] and handles what it returns ([`engine::StopReason`]).
//!
//! Memory ordering: guests run one vCPU per engine thread, so x86's TSO needs nothing on any
//! host today. When guests get several vCPUs, backends for weakly ordered hosts will emit
//! acquire loads and release stores (aarch64 LDAPR/STLR, riscv64 fences) for guest memory
//! accesses, and full barriers for locked instructions and MFENCE.

pub mod backend;
pub mod engine;
pub mod env;
pub mod execmem;
pub mod ir;
pub mod mem;
pub mod opt;
pub mod ptdeps;

pub use backend::EngineKind;
pub use engine::{Access, Engine, Frontend, GuestFault, Mmu, StopReason, TbKey};
pub use env::Env;
pub use mem::GuestRam;
