//! The PV MMU (being written).
