//! Soft-float with x86 semantics (being written).
