//! Host backends. Each turns an IR [`Block`] into something `execute` can run, and follows
//! the same protocol (see [`crate::engine::ret`]):
//!
//! - On entry: if `Env::icount >= Env::icount_limit` return `BUDGET` without executing,
//!   with the pc global at the block's start pc.
//! - The slow paths and helpers know which TB runs: `Env::cur_tb` holds its id whenever a
//!   `can_fault` helper runs, and whenever a store's slow path runs unless its descriptor
//!   carries the id (`engine::mem_info_tb`). A backend may simply write it at entry.
//! - Static exits are numbered in the order their `Op::Exit` appear in the block.
//!   `Exit::Jump` adds the number of instructions up to and including the exiting one to
//!   `Env::icount`, then goes through the exit's chain (initially: write the pc global and
//!   return `EXIT|index`). A chained jump need not write the pc global: the block it
//!   enters starts there, and writes it itself if it returns at its budget check. `Exit::Repeat` is the same except that it adds
//!   only the index of the exiting instruction (it does not retire). `Exit::Indirect` does
//!   the same as Jump with a computed pc, then may probe `Env::jc` (index
//!   `env::jc_index(pc)`, matching pc and `Block::mode`) and jump to the cached entry
//!   instead of returning (a block entered that way needs no pc global either).
//!   The other exits return `EXIT|index` and the run loop does the bookkeeping. An
//!   `Exit::Indirect` that is not chained with `chain_far` may return `INDIRECT|index`
//!   instead (the run loop then reads nothing of the TB).
//! - A load/store slow path or a `can_fault` helper that leaves `Env::fault != 0` makes
//!   the block return `FAULT|insn_index` at once.

use crate::env::Env;
use crate::ir::{Block, Global, HelperInfo};

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
pub mod codecache;
pub mod interp;
pub mod regalloc;
#[cfg(target_arch = "riscv64")]
pub mod riscv64;
#[cfg(test)]
pub(crate) mod testkit;
#[cfg(target_arch = "x86_64")]
pub mod x64;

/// A backend's handle to compiled code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeHandle(pub usize);

/// The code buffer is full; the engine flushes and retries.
#[derive(Debug)]
pub struct CodeBufferFull;

pub trait Backend {
    fn name(&self) -> &'static str;
    fn compile(
        &mut self,
        block: &Block,
        tb: u32,
        helpers: &[HelperInfo],
        pc_global: Global,
    ) -> Result<CodeHandle, CodeBufferFull>;
    /// Run compiled code until it returns to the loop.
    ///
    /// # Safety
    /// `env` must be valid, with `Env::rt` pointing at the engine core that owns this backend.
    unsafe fn execute(&mut self, env: *mut Env, code: CodeHandle) -> u64;
    /// `execute`, with `code`'s entry address (`entry_addr`) when the caller has it at
    /// hand (it saves a lookup in the backend's tables on every run-loop iteration).
    ///
    /// # Safety
    /// As `execute`; `entry`, when given, is `entry_addr(code)`.
    unsafe fn execute_entry(&mut self, env: *mut Env, code: CodeHandle, entry: Option<u64>) -> u64 {
        let _ = entry;
        // SAFETY: the caller's contract.
        unsafe { self.execute(env, code) }
    }
    /// Make static exit `exit` of `from` continue directly into `to`. Returns false when the
    /// backend does not chain.
    fn chain(&mut self, from: CodeHandle, exit: u32, to: CodeHandle) -> bool;
    fn unchain(&mut self, from: CodeHandle, exit: u32);
    /// Make exit `exit` of `from`, an indirect jump to a constant pc (see
    /// `regalloc::far_targets`), continue directly into `to` as long as the jump-cache
    /// epoch of the target's half is still `epoch`; afterwards it probes `Env::jc` as any
    /// indirect jump. Returns false when the backend does not chain such exits.
    fn chain_far(&mut self, _from: CodeHandle, _exit: u32, _to: CodeHandle, _epoch: u64) -> bool {
        false
    }
    /// The host address generated code may jump to for `code` (for `Env::jc`), if the
    /// backend probes the indirect-jump cache.
    fn entry_addr(&self, _code: CodeHandle) -> Option<u64> {
        None
    }
    /// Drop all code.
    fn flush(&mut self);
    fn is_full(&self) -> bool;
}

/// Which engine to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    Interp,
    Jit,
}

/// The best backend for this host (the interpreter where no JIT backend exists).
pub fn new_backend(kind: EngineKind) -> Box<dyn Backend> {
    match kind {
        EngineKind::Interp => Box::new(interp::Interp::new()),
        #[cfg(target_arch = "x86_64")]
        EngineKind::Jit => Box::new(x64::X64Backend::new()),
        #[cfg(target_arch = "aarch64")]
        EngineKind::Jit => Box::new(aarch64::A64Backend::new()),
        #[cfg(target_arch = "riscv64")]
        EngineKind::Jit => Box::new(riscv64::Rv64Backend::new()),
        #[cfg(not(any(
            target_arch = "x86_64",
            target_arch = "aarch64",
            target_arch = "riscv64"
        )))]
        EngineKind::Jit => Box::new(interp::Interp::new()),
    }
}

/// Pure evaluation of arithmetic ops, shared by the interpreter and constant folding.
pub mod eval {
    use crate::ir::{BinOp, UnOp, Width};

    pub fn bin(op: BinOp, w: Width, a: u64, b: u64) -> u64 {
        match w {
            Width::W64 => match op {
                BinOp::Add => a.wrapping_add(b),
                BinOp::Sub => a.wrapping_sub(b),
                BinOp::And => a & b,
                BinOp::Or => a | b,
                BinOp::Xor => a ^ b,
                BinOp::Shl => a << (b & 63),
                BinOp::Shr => a >> (b & 63),
                BinOp::Sar => ((a as i64) >> (b & 63)) as u64,
                BinOp::Rotl => a.rotate_left((b & 63) as u32),
                BinOp::Rotr => a.rotate_right((b & 63) as u32),
                BinOp::Mul => a.wrapping_mul(b),
                BinOp::MulHU => ((a as u128 * b as u128) >> 64) as u64,
                BinOp::MulHS => ((a as i64 as i128 * b as i64 as i128) >> 64) as u64,
            },
            Width::W32 => {
                let (a, b) = (a as u32, b as u32);
                (match op {
                    BinOp::Add => a.wrapping_add(b),
                    BinOp::Sub => a.wrapping_sub(b),
                    BinOp::And => a & b,
                    BinOp::Or => a | b,
                    BinOp::Xor => a ^ b,
                    BinOp::Shl => a << (b & 31),
                    BinOp::Shr => a >> (b & 31),
                    BinOp::Sar => ((a as i32) >> (b & 31)) as u32,
                    BinOp::Rotl => a.rotate_left(b & 31),
                    BinOp::Rotr => a.rotate_right(b & 31),
                    BinOp::Mul => a.wrapping_mul(b),
                    BinOp::MulHU => ((a as u64 * b as u64) >> 32) as u32,
                    BinOp::MulHS => ((a as i32 as i64 * b as i32 as i64) >> 32) as u32,
                }) as u64
            }
        }
    }

    pub fn un(op: UnOp, w: Width, a: u64) -> u64 {
        match w {
            Width::W64 => match op {
                UnOp::Not => !a,
                UnOp::Neg => a.wrapping_neg(),
                UnOp::Bswap => a.swap_bytes(),
                UnOp::Clz => a.leading_zeros() as u64,
                UnOp::Ctz => a.trailing_zeros() as u64,
                UnOp::Popcnt => a.count_ones() as u64,
            },
            Width::W32 => {
                let a = a as u32;
                (match op {
                    UnOp::Not => !a,
                    UnOp::Neg => a.wrapping_neg(),
                    UnOp::Bswap => a.swap_bytes(),
                    UnOp::Clz => a.leading_zeros(),
                    UnOp::Ctz => a.trailing_zeros(),
                    UnOp::Popcnt => a.count_ones(),
                }) as u64
            }
        }
    }
}
