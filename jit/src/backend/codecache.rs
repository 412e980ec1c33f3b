//! The bookkeeping every native backend shares: the executable region, the chain slots
//! and the per-TB table behind `Backend::{execute, chain, unchain, entry_addr, flush,
//! is_full}`.
//!
//! Chaining never patches code: each chainable exit (`Exit::Jump`, `Exit::Repeat`) loads
//! its target from a slot in a separate RW, never-executable array and jumps there. A slot
//! starts out holding the address of the exit's own "return to the run loop" code;
//! `chain` stores another block's entry, `unchain` restores the default. Slots and code
//! stay valid until `reset`, which the engine only requests when no generated code runs.

use memmap2::MmapMut;

use super::{CodeBufferFull, CodeHandle};
use crate::env::Env;
use crate::execmem::ExecMem;

/// Chain slots available between flushes.
pub const NSLOTS: usize = 1 << 21;
/// Report "full" while this many slots are still free, so a block always fits.
const SLOT_MARGIN: usize = 1 << 16;

struct TbInfo {
    entry: usize,
    /// Per static exit: (chain slot index, default target address) for chainable exits.
    exits: Vec<Option<(usize, usize)>>,
    /// The exits chained with `chain_far` (two slots each).
    far: Vec<u32>,
    /// Per static exit: where the backend patches the jump itself instead of using the
    /// slot (see `Backend::chain` of the x86_64 backend), if it does.
    patch: Vec<Option<usize>>,
}

pub struct CodeCache {
    pub mem: ExecMem,
    _slots_map: MmapMut,
    /// Base of the slot array (generated code loads `slots[i]`).
    pub slots: *mut u64,
    slots_used: usize,
    tbs: Vec<TbInfo>,
    /// The backend's entry trampoline, `extern "C" fn(*mut Env, *const u8) -> u64`.
    pub prologue: usize,
    /// `XENOLITH_PERF_MAP=1`: each block's host range and guest pc go to
    /// /tmp/perf-PID.map, so `perf report` names generated code by guest address.
    perf_map: Option<std::fs::File>,
}

impl CodeCache {
    pub fn new(code_size: usize, backend: &str) -> CodeCache {
        let mem = ExecMem::new(code_size)
            .unwrap_or_else(|e| panic!("{backend} backend: cannot reserve code memory: {e}"));
        let mut slots_map = MmapMut::map_anon(NSLOTS * 8)
            .unwrap_or_else(|e| panic!("{backend} backend: cannot map chain slots: {e}"));
        let slots = slots_map.as_mut_ptr() as *mut u64;
        let perf_map = std::env::var_os("XENOLITH_PERF_MAP").and_then(|_| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(format!("/tmp/perf-{}.map", std::process::id()))
                .ok()
        });
        CodeCache {
            mem,
            _slots_map: slots_map,
            slots,
            slots_used: 0,
            tbs: Vec::new(),
            prologue: 0,
            perf_map,
        }
    }

    /// The first of `n` consecutive slots for the block being compiled, or `CodeBufferFull`.
    pub fn reserve_slots(&self, n: usize) -> Result<usize, CodeBufferFull> {
        if self.slots_used + n > NSLOTS {
            return Err(CodeBufferFull);
        }
        Ok(self.slots_used)
    }

    fn set_slot(&mut self, idx: usize, target: usize) {
        assert!(idx < NSLOTS);
        // SAFETY: idx < NSLOTS, so the pointer is a valid, aligned u64 inside our RW slot
        // mapping. Generated code only reads slots, with plain aligned 8-byte loads, which
        // are single-copy atomic on every supported host.
        unsafe { std::ptr::write_volatile(self.slots.add(idx), target as u64) };
    }

    /// Write a compiled block at `base` (which must be `mem.next_addr()` when it was
    /// assembled), claim its slots up to `slot_end` and point them at their defaults.
    pub fn install(
        &mut self,
        tb: u32,
        guest_pc: u64,
        code: &[u8],
        base: usize,
        slot_end: usize,
        defaults: Vec<Option<(usize, usize)>>,
    ) -> Result<CodeHandle, CodeBufferFull> {
        if let Some(dir) = std::env::var_os("XENOLITH_DUMP_CODE") {
            // Debug aid: `objdump -D -b binary -mi386:x86-64 --adjust-vma=ADDR FILE`
            // (aarch64: `aarch64-linux-gnu-objdump ... -maarch64`, riscv64:
            // `riscv64-linux-gnu-objdump ... -m riscv:rv64`).
            let _ = std::fs::write(
                std::path::Path::new(&dir).join(format!("tb{tb}_{base:x}.bin")),
                code,
            );
        }
        let p = self.mem.write(code).ok_or(CodeBufferFull)?;
        assert_eq!(p as usize, base, "code was assembled for another address");
        if let Some(f) = self.perf_map.as_mut() {
            use std::io::Write;
            let _ = writeln!(f, "{base:x} {:x} g{guest_pc:x}", code.len());
        }
        self.slots_used = slot_end;
        for &(slot, addr) in defaults.iter().flatten() {
            self.set_slot(slot, addr);
        }
        self.tbs.push(TbInfo {
            entry: base,
            exits: defaults,
            far: Vec::new(),
            patch: Vec::new(),
        });
        Ok(CodeHandle(self.tbs.len() - 1))
    }

    /// Run a block through the backend's trampoline.
    ///
    /// # Safety
    /// `prologue` must be the backend's trampoline, following the host C ABI for
    /// `extern "C" fn(*mut Env, *const u8) -> u64`; `env` must be valid with `Env::rt`
    /// pointing at the engine core (see `Backend::execute`).
    pub unsafe fn execute(&self, env: *mut Env, code: CodeHandle) -> u64 {
        // SAFETY: per this function's contract.
        unsafe { self.execute_at(env, self.tbs[code.0].entry) }
    }

    /// `execute`, given the block's entry address (`entry_addr`).
    ///
    /// # Safety
    /// As `execute`, and `entry` must be the entry of a block installed here and not
    /// flushed.
    pub unsafe fn execute_at(&self, env: *mut Env, entry: usize) -> u64 {
        // SAFETY: per this function's contract; `entry` is a block installed here and not
        // flushed. The generated code only touches `env`, guest RAM through TLB entries the
        // engine filled, the chain slots, its own frame, and the engine's slow paths and
        // helpers.
        unsafe {
            let f: unsafe extern "C" fn(*mut Env, *const u8) -> u64 =
                std::mem::transmute(self.prologue);
            f(env, entry as *const u8)
        }
    }

    pub fn chain(&mut self, from: CodeHandle, exit: u32, to: CodeHandle) -> bool {
        let target = self.tbs[to.0].entry;
        match self.tbs[from.0].exits.get(exit as usize).copied().flatten() {
            Some((slot, _)) => {
                self.set_slot(slot, target);
                true
            }
            None => false,
        }
    }

    /// Record the patch sites of `tb`'s exits (indexed by exit; see `TbInfo::patch`).
    pub fn set_patch_sites(&mut self, tb: CodeHandle, sites: Vec<Option<usize>>) {
        self.tbs[tb.0].patch = sites;
    }

    /// The patch site of exit `exit` of `tb`, and the address its jump goes to unchained.
    pub fn patch_site(&self, tb: CodeHandle, exit: u32) -> Option<(usize, usize)> {
        let t = &self.tbs[tb.0];
        let site = t.patch.get(exit as usize).copied().flatten()?;
        let (_, default) = t.exits.get(exit as usize).copied().flatten()?;
        Some((site, default))
    }

    /// Entry address of an installed block.
    pub fn entry(&self, tb: CodeHandle) -> usize {
        self.tbs[tb.0].entry
    }

    /// Mark exit `exit` of `tb` as far (its slot and the next are its own).
    pub fn set_far(&mut self, tb: CodeHandle, exit: u32) {
        self.tbs[tb.0].far.push(exit);
    }

    /// Chain a far exit: its slot gets `to`'s entry, the slot after it `epoch`.
    pub fn chain_far(&mut self, from: CodeHandle, exit: u32, to: CodeHandle, epoch: u64) -> bool {
        let f = &self.tbs[from.0];
        match f.exits.get(exit as usize).copied().flatten() {
            Some((slot, _)) if f.far.contains(&exit) => {
                self.set_slot(slot + 1, epoch as usize);
                self.chain(from, exit, to)
            }
            _ => false,
        }
    }

    pub fn unchain(&mut self, from: CodeHandle, exit: u32) {
        if let Some((slot, default)) = self.tbs[from.0].exits.get(exit as usize).copied().flatten()
        {
            self.set_slot(slot, default);
        }
    }

    pub fn entry_addr(&self, code: CodeHandle) -> Option<u64> {
        Some(self.tbs[code.0].entry as u64)
    }

    /// Drop all code and slots (the backend then writes its trampoline again).
    pub fn reset(&mut self) {
        self.mem.flush();
        self.tbs.clear();
        self.slots_used = 0;
    }

    pub fn is_full(&self) -> bool {
        self.mem.is_full() || self.slots_used + SLOT_MARGIN > NSLOTS
    }
}
