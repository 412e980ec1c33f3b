//! xen-pv
