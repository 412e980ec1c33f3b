//! devices: the PV back ends, written against `xen_pv::core::backend`.

pub mod blk;
pub mod console;

#[cfg(test)]
mod mock;
