//! The run loop, the translation-block cache with chaining and invalidation, and the softmmu
//! slow paths.
//!
//! Contracts:
//! - A TB is keyed by the linear pc of its first byte, the code-segment base, the frontend's
//!   mode flags, and the *physical* address of its first byte, so a page-table change never
//!   needs a code flush. A small jump cache by (pc, cs_base, flags) sits in front and is
//!   flushed with the TLB.
//! - Direct exits are chained only to TBs that start on the same virtual page as the exiting
//!   TB, so a remapped page never leaves a stale chain (QEMU's rule).
//! - Writes to a physical page holding translated code always take the slow path (the TLB
//!   never holds a write tag for such pages); the slow path invalidates the TBs it overlaps.
//!   If it overlaps the running TB and that TB has more than one instruction, the store is
//!   not performed: the instruction is restarted in a single-instruction TB.
//! - At every exit `Env::icount` is the exact number of retired guest instructions.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A fast non-cryptographic hasher for the engine's internal maps (keys are guest
/// addresses; no adversary benefits from collisions beyond slowing its own guest).
#[derive(Default)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(*b as u64);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }
    fn write_u16(&mut self, v: u16) {
        self.write_u64(v as u64);
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(v as u64);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

use crate::backend::{Backend, CodeHandle};
use crate::env::{
    self, fault, tlb_index, Env, TlbEntry, PAGE_BITS, PAGE_MASK, PAGE_SIZE, TLB_SIZE,
};
use crate::ir::{AccessKind, Block, Exit, Global, HelperInfo, MemSize};
use crate::mem::GuestRam;
use crate::ptdeps::{PtDeps, WalkPath};

/// The kind of memory access being translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Exec,
}

/// A guest exception as data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestFault {
    pub vector: u8,
    pub error_code: Option<u32>,
    /// The faulting linear address for #PF (CR2); 0 otherwise.
    pub addr: u64,
}

/// Address translation, implemented by the frontend (page walks).
pub trait Mmu {
    /// Translate `vaddr` for one access of kind `access` by `who` in the current mode,
    /// setting accessed/dirty bits as hardware does. Returns the physical address.
    fn translate(
        &mut self,
        env: &Env,
        ram: &mut GuestRam,
        vaddr: u64,
        access: Access,
        who: AccessKind,
    ) -> Result<u64, GuestFault>;

    /// `translate`, also giving the page-table entries the walk read (`crate::ptdeps`):
    /// the engine keeps a translation across a flush only while those entries are
    /// unchanged. An MMU that leaves `path` empty must have its platform flush with
    /// `Engine::tlb_flush` (nothing is known to depend on any entry).
    fn translate_path(
        &mut self,
        env: &Env,
        ram: &mut GuestRam,
        vaddr: u64,
        access: Access,
        who: AccessKind,
        _path: &mut WalkPath,
    ) -> Result<u64, GuestFault> {
        self.translate(env, ram, vaddr, access, who)
    }

    /// The physical page an instruction fetch at `vaddr` would reach now in the current
    /// mode, *without side effects* (no accessed bits set, no fault raised), with the
    /// entries read in `path`; None when the fetch would fault, or when the MMU cannot tell
    /// without side effects. The engine uses it to keep jump-cache entries across a TLB
    /// flush whose code mappings are unchanged.
    fn probe_exec(
        &mut self,
        _env: &Env,
        _ram: &mut GuestRam,
        _vaddr: u64,
        _path: &mut WalkPath,
    ) -> Option<u64> {
        None
    }
}

/// What selects a translation besides the physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TbKey {
    /// Linear address of the first instruction.
    pub pc: u64,
    /// The instruction pointer value (pc - cs_base).
    pub rip: u64,
    pub cs_base: u64,
    pub flags: u32,
}

/// Fetches guest code for the translator and records which physical pages it came from.
pub struct CodeFetcher<'a> {
    env: &'a Env,
    ram: &'a mut GuestRam,
    mmu: &'a mut dyn Mmu,
    deps: &'a mut PtDeps,
    /// Physical page of each virtual page touched: (vpage, ppage).
    pub pages: Vec<(u64, u64)>,
}

impl CodeFetcher<'_> {
    /// Fetch `buf.len()` bytes at linear `addr`. On a fault no byte is guaranteed.
    pub fn fetch(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), GuestFault> {
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr.wrapping_add(done as u64);
            let vpage = a & PAGE_MASK;
            let ppage = match self.pages.iter().find(|p| p.0 == vpage) {
                Some(p) => p.1,
                None => {
                    let mut path = WalkPath::default();
                    let p = self.mmu.translate_path(
                        self.env,
                        self.ram,
                        a,
                        Access::Exec,
                        AccessKind::Normal,
                        &mut path,
                    )? & PAGE_MASK;
                    self.deps.note(a, path.as_slice());
                    self.pages.push((vpage, p));
                    p
                }
            };
            let off = a & !PAGE_MASK;
            let n = ((PAGE_SIZE - off) as usize).min(buf.len() - done);
            if !self.ram.read(ppage + off, &mut buf[done..done + n]) {
                // Code outside RAM: fetch reads as all ones, like an unbacked bus.
                buf[done..done + n].fill(0xff);
            }
            done += n;
        }
        Ok(())
    }
}

/// The guest-architecture side of the engine.
pub trait Frontend {
    /// The key of the block to run next, from the current guest state.
    fn key(&self, env: &Env) -> TbKey;
    /// Translate at most `max_insns` instructions starting at `key`. Fails only when the
    /// first instruction cannot be fetched.
    fn translate(
        &mut self,
        env: &Env,
        key: &TbKey,
        fetch: &mut CodeFetcher,
        max_insns: u32,
    ) -> Result<Block, GuestFault>;
    /// The helper table that `Op::Call` indexes.
    fn helpers(&self) -> &[HelperInfo];
    /// The global holding the instruction pointer.
    fn pc_global(&self) -> Global;
    /// Stop after each instruction (`StopReason::SingleStep`), e.g. x86 RFLAGS.TF. Read
    /// before each block; an instruction that turns it on must end its block.
    fn single_step(&self, _env: &Env) -> bool {
        false
    }
}

/// Why `Engine::run` returned. Guest state is consistent in every case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// An exception; state is that before the faulting instruction.
    Exception(GuestFault),
    /// A platform instruction; state is that before it, `len` is its length.
    Platform { op: u32, arg: u64, len: u8 },
    /// `icount` reached `icount_limit`.
    Budget,
    /// Single-stepping (`Frontend::single_step` was on): one instruction ran to its end,
    /// or one round of a repeated one (`Exit::Repeat`); state is that after it.
    SingleStep,
}

/// Encoding of a block's return value: `tb << 32 | index << 8 | kind`.
pub mod ret {
    /// Left through static exit `index` of the TB (see `Tb::exits`).
    pub const EXIT: u64 = 0;
    /// A slow path or helper faulted during instruction `index`.
    pub const FAULT: u64 = 1;
    /// The icount budget was exhausted at TB entry (nothing executed).
    pub const BUDGET: u64 = 2;
    /// Left through static exit `index`, an `Exit::Indirect` (the pc global holds the
    /// target) that the backend does not chain: nothing else to look up.
    pub const INDIRECT: u64 = 3;
    pub fn encode(tb: u32, index: u32, kind: u64) -> u64 {
        (tb as u64) << 32 | (index as u64) << 8 | kind
    }
}

/// A static exit of a TB with the index of the instruction it belongs to.
#[derive(Clone, Copy, Debug)]
pub struct TbExit {
    pub exit: Exit,
    pub insn: u32,
    /// The pc of instruction `insn` (the run loop's copy of `block.insn_pcs[insn]`).
    pub pc: u64,
    /// An `Exit::Indirect` to a constant pc (a backend may chain it, `chain_far`).
    pub far: bool,
}

/// A translated block. `repr(C)` keeps what the run loop reads on every entry and exit
/// (validity, code, exits, key) in the first cache line; the rest is read when blocks are
/// made, chained or invalidated.
#[repr(C)]
pub struct Tb {
    pub valid: bool,
    /// Translated for a single instruction (SMC restart); never entered in the cache.
    pub one_shot: bool,
    /// Per half of the address space: `jc_gen + 1` when the TB's code pages were last
    /// noted in `jc_pages` (so noting them again in the same generation is skipped).
    jc_noted: [u32; 2],
    pub code: Option<CodeHandle>,
    /// Host address of the compiled code (backends that chain), for jump-cache entries.
    pub entry: Option<u64>,
    pub exits: Vec<TbExit>,
    pub key: TbKey,
    /// Physical pages covered (first, optional second).
    pub pages: [Option<u64>; 2],
    /// Physical byte ranges covered.
    pub ranges: Vec<(u64, u64)>,
    /// The translated block without its ops (they are dropped once compiled): the
    /// instruction table and the block's mode.
    pub block: Block,
    /// Chained jumps into this TB: (source tb, exit index).
    pub incoming: Vec<(u32, u32)>,
    /// The pcs it was entered in `Env::jc` for (`None`: too many to keep, scan it all),
    /// so that invalidation clears its entries without scanning the whole cache.
    jc_pcs: Option<Vec<u64>>,
    /// Outgoing chains: exit index -> target tb.
    pub chained: Vec<(u32, u32)>,
}

impl Tb {
    pub fn ninsns(&self) -> u32 {
        self.block.insn_pcs.len() as u32
    }
}

/// Statistics, for benchmarks and tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub tbs_translated: u64,
    pub insns_translated: u64,
    pub translate_ns: u64,
    pub chains: u64,
    pub invalidations: u64,
    pub smc_restarts: u64,
    pub flushes: u64,
    pub lookups: u64,
    /// Whole-TLB flushes and single-page flushes the platform asked for.
    pub tlb_flushes: u64,
    pub tlb_page_flushes: u64,
    /// Returns to the run loop by cause: unchained direct exits, indirect-jump cache misses,
    /// platform instructions, exceptions (static and faults), syncs.
    pub exit_jump: u64,
    pub exit_indirect: u64,
    pub exit_platform: u64,
    pub exit_exception: u64,
    pub exit_sync: u64,
    /// Jump-cache hits in the run loop (lookups that did not need the hash map).
    pub jc_hits: u64,
    /// TLB flushes after which a half of the jump caches was kept (its code mappings
    /// re-walked and unchanged), and after which it was dropped.
    pub jc_kept: u64,
    pub jc_dropped: u64,
    /// Slow-path translations: found in the victim TLB, and page walks.
    pub victim_hits: u64,
    pub walks: u64,
}

/// The code pages the jump-cache entries of one half of the address space depend on.
#[derive(Default)]
struct JcPages {
    /// Virtual page -> the physical page its TBs were translated from.
    pages: FxMap<u64, u64>,
    /// The MMU mode the pages were translated in (all entries share it, or `mixed`).
    mmu_idx: u32,
    /// Entries from several MMU modes, a remapped page, or too many pages: drop the half
    /// at the next flush instead of re-walking.
    mixed: bool,
}

/// The tag of `e` that allows `access`.
fn tag(e: &TlbEntry, access: Access) -> u64 {
    match access {
        Access::Read => e.read,
        Access::Write => e.write,
        Access::Exec => e.exec,
    }
}

const WRITE_SLOT_NONE: u32 = 0;
const WRITE_SLOT_MANY: u32 = u32::MAX;

/// More code pages than this in one half: a flush drops the half rather than re-walk.
const JC_PAGES_MAX: usize = 4096;

const JC_SIZE: usize = 4096;

/// Everything the slow paths reach through `Env::rt`.
pub struct Core {
    pub ram: GuestRam,
    pub mmu: Box<dyn Mmu>,
    pub backend: Box<dyn Backend>,
    pub tbs: Vec<Tb>,
    lookup: FxMap<(TbKey, u64), u32>,
    /// Jump cache by key: (key, TB id, generation). An entry counts only while its
    /// generation is `jc_gen`, so a TLB flush invalidates the cache in O(1).
    jc: Vec<Option<(TbKey, u32, u32)>>,
    jc_gen: [u32; 2],
    /// What each half's jump-cache entries (here and in `Env::jc`) assume about mappings.
    jc_pages: [JcPages; 2],
    /// The page-table entries the TLB and jump caches were filled from.
    pt_deps: PtDeps,
    /// Per guest physical page: the main-TLB slot (mode * TLB_SIZE + index, plus one) of
    /// the write entries made for it since it was last protected, `WRITE_SLOT_NONE`, or
    /// `WRITE_SLOT_MANY` (several slots: search them all). A slot may since hold another
    /// page; victim entries are always searched.
    write_slots: Vec<u32>,
    /// The lower half of the jump caches awaits its check in its own mode
    /// (`Engine::revalidate_jc_half`).
    jc_verify_lower: bool,
    page_tbs: FxMap<u64, Vec<u32>>,
    /// One bit per RAM page: the page holds translated code (mirrors `page_tbs`).
    code_pages: Vec<u64>,
    pub stats: Stats,
    pub max_insns: u32,
    /// Run the IR optimiser on each block (`XENOLITH_NO_OPT=1` turns it off).
    pub optimize: bool,
    /// Print each block's IR to stderr (`XENOLITH_DUMP_IR=1`).
    pub dump_ir: bool,
}

/// One vCPU's execution engine.
pub struct Engine {
    pub env: Box<Env>,
    pub core: Box<Core>,
    pub frontend: Box<dyn Frontend>,
    single_insn_next: bool,
}

impl Engine {
    pub fn new(
        ram: GuestRam,
        mmu: Box<dyn Mmu>,
        frontend: Box<dyn Frontend>,
        backend: Box<dyn Backend>,
    ) -> Engine {
        let ram_pages = ram.size() / PAGE_SIZE;
        let pt_deps = PtDeps::new(ram.size());
        let mut env = Env::new();
        let core = Box::new(Core {
            ram,
            mmu,
            backend,
            tbs: Vec::new(),
            lookup: FxMap::default(),
            jc: vec![None; JC_SIZE],
            jc_gen: [0; 2],
            jc_pages: Default::default(),
            pt_deps,
            write_slots: vec![WRITE_SLOT_NONE; ram_pages as usize],
            jc_verify_lower: false,
            code_pages: vec![0; ram_pages.div_ceil(64) as usize + 1],
            page_tbs: FxMap::default(),
            stats: Stats::default(),
            max_insns: 512,
            optimize: std::env::var_os("XENOLITH_NO_OPT").is_none(),
            dump_ir: std::env::var_os("XENOLITH_DUMP_IR").is_some(),
        });
        env.rt = std::ptr::null_mut();
        Engine {
            env,
            core,
            frontend,
            single_insn_next: false,
        }
    }

    pub fn ram(&mut self) -> &mut GuestRam {
        &mut self.core.ram
    }

    pub fn stats(&self) -> Stats {
        self.core.stats
    }

    /// Flush the TLB (e.g. CR3 reload). The jump caches depend on the code mappings, not
    /// on the TLB: each half of them is kept when every code page its entries came from
    /// still maps to the same physical page with execute rights (re-walked without side
    /// effects, as a refill would find it), and dropped otherwise.
    pub fn tlb_flush(&mut self) {
        self.core.stats.tlb_flushes += 1;
        self.env.tlb_flush_entries();
        for half in 0..2 {
            self.core.pt_deps.clear(half);
            self.revalidate_jc_half(half);
        }
    }

    /// After every TLB entry of `half` was dropped: keep that half of the jump caches when
    /// the code pages it came from map as before.
    fn revalidate_jc_half(&mut self, half: usize) {
        if half == 0 {
            // Entries of another mode (a PV guest's user code, while its kernel runs) are
            // checked when that mode runs next, under the page tables it has then.
            let r = &self.core.jc_pages[0];
            let other_mode = !r.pages.is_empty() && !r.mixed && r.mmu_idx != self.env.mmu_idx;
            self.core.jc_verify_lower = other_mode;
            if other_mode {
                return;
            }
        }
        if self.core.jc_pages_unchanged(&self.env, half) {
            self.core.stats.jc_kept += 1;
        } else {
            self.core.stats.jc_dropped += 1;
            self.drop_jc_half(half);
        }
    }

    /// The platform changed the guest page-table entry at guest-physical `pa` (present
    /// before, other than by setting accessed/dirty bits). Translations made from it stay
    /// usable until the guest flushes, as on hardware; see `tlb_flush_stale`.
    pub fn pt_changed(&mut self, pa: u64) {
        self.core.pt_deps.changed(pa);
    }

    /// The guest asks for a full TLB flush: drop what a flush would change, i.e. each half
    /// of the address space that has translations made from an entry reported to
    /// `pt_changed` since (all its MMU modes; jump caches revalidated). Every other
    /// translation would be refilled exactly as it is. The platform must report every
    /// changed entry (and flush itself for changes of anything else that translations
    /// depend on, e.g. the page-table base).
    pub fn tlb_flush_stale(&mut self) {
        let stale = [0, 1].map(|h| self.core.pt_deps.is_stale(h));
        match stale {
            [true, true] => self.tlb_flush(),
            [false, false] => {}
            _ => {
                let half = stale[1] as usize;
                self.core.stats.tlb_flushes += 1;
                self.env.tlb_flush_half(half);
                self.core.pt_deps.clear(half);
                self.revalidate_jc_half(half);
            }
        }
    }

    /// Flush one virtual page (INVLPG). The jump caches depend on it only when code was
    /// translated from that page (in the current generation of its half).
    pub fn tlb_flush_page(&mut self, vaddr: u64) {
        self.core.stats.tlb_page_flushes += 1;
        self.env.tlb_flush_page_entries(vaddr);
        let half = (vaddr >> 63) as usize;
        let r = &self.core.jc_pages[half];
        if r.mixed || r.pages.contains_key(&(vaddr & PAGE_MASK)) {
            self.drop_jc_half(half);
        }
    }

    /// Forget both jump caches' entries (and chains to other pages) for one half of the
    /// address space.
    fn drop_jc_half(&mut self, half: usize) {
        if half == 0 {
            self.core.jc_verify_lower = false;
        }
        self.env.jc_invalidate_half(half);
        self.core.jc_invalidate_half(half);
    }

    /// Flush the TLB but the upper half of MMU mode `keep_mode`: for a context switch
    /// whose upper half (a PV kernel's, in that mode) is mapped exactly as before.
    ///
    /// The lower half of the jump caches holds code of the MMU mode it was translated in
    /// (a PV guest's user mode), which the new page tables may map as before (a forked
    /// child, a program run again): it is checked, not dropped, when the run loop next
    /// runs in that mode, under the page tables it then has. No code of that mode runs
    /// before (a jump-cache entry matches only its own mode), and each mode change passes
    /// through the run loop.
    pub fn tlb_flush_lower(&mut self, keep_mode: usize) {
        self.core.stats.tlb_flushes += 1;
        self.env.tlb_flush_lower(keep_mode);
        self.core.pt_deps.clear(0);
        self.revalidate_jc_half(0);
    }

    /// Drop the write permission of every TLB entry that maps physical page `ppage` (the
    /// page becomes read-only for the guest, e.g. a PV page table): cheaper than a flush.
    pub fn tlb_drop_writes(&mut self, ppage: u64) {
        self.core
            .protect_code_page(&mut self.env, ppage & PAGE_MASK);
    }

    /// Drop every translation (e.g. when the platform rewrites code behind the engine's back).
    pub fn flush_code(&mut self) {
        self.core.flush_all();
        self.env.tlb_flush();
    }

    /// Run until an exception, a platform instruction or the icount budget.
    pub fn run(&mut self) -> StopReason {
        let env: *mut Env = &mut *self.env;
        let core: *mut Core = &mut *self.core;
        // SAFETY: `env` and `core` are boxed, so their addresses are stable; generated code
        // and slow paths reach `core` only through `Env::rt` while we are inside
        // `backend.execute`, and we hold no reference into either across that call.
        unsafe { (*env).rt = core as *mut u8 };
        let pc_global = self.frontend.pc_global();
        let mut last_exit: Option<(u32, u32, bool)> = None;
        let mut fill_jc = false;
        loop {
            // The lower half's pending check (it waits again while another mode runs).
            // SAFETY: no reference into env/core is live here.
            if unsafe { (*core).jc_verify_lower } {
                self.revalidate_jc_half(0);
            }
            // SAFETY: short-lived references; see above.
            let (envr, corer) = unsafe { (&mut *env, &mut *core) };
            if envr.icount >= envr.icount_limit {
                return StopReason::Budget;
            }
            let key = self.frontend.key(envr);
            // Single-stepping: one instruction in a block of its own (never cached or
            // chained), and a budget that ends at it, so that a block it reaches through
            // the jump cache returns at its entry check without running.
            let step = self.frontend.single_step(envr);
            let single = std::mem::take(&mut self.single_insn_next) || step;
            let flushes = corer.stats.flushes;
            // After an indirect jump, the generated code's jump-cache probe just missed:
            // the run loop's own cache rarely has the target then (under a tenth of the
            // time in a Linux fork+exec loop) and costs a cache miss to look at.
            let tb = match corer.find_tb(envr, &key, single, !fill_jc, &mut *self.frontend) {
                Ok(t) => t,
                Err(f) => return StopReason::Exception(f),
            };
            if corer.stats.flushes != flushes {
                // The code cache was flushed: the exit we came from is gone.
                last_exit = None;
            }
            match last_exit.take() {
                Some((from, idx, true)) if !single => corer.chain_far(envr, from, idx, tb),
                Some((from, idx, false)) if !single && corer.can_chain(from, tb) => {
                    corer.chain(from, idx, tb)
                }
                _ => {}
            }
            if std::mem::take(&mut fill_jc) && !single {
                let t = &mut corer.tbs[tb as usize];
                if let Some(entry) = t.entry {
                    envr.jc_insert(crate::env::JcEntry {
                        pc: key.rip,
                        mode: mode_word(&key),
                        code: entry,
                        epoch: envr.jc_epoch_for(key.rip),
                    });
                    if let Some(pcs) = &mut t.jc_pcs {
                        if !pcs.contains(&key.rip) {
                            if pcs.len() < 8 {
                                pcs.push(key.rip);
                            } else {
                                t.jc_pcs = None;
                            }
                        }
                    }
                    corer.jc_record(tb);
                }
            }
            envr.cur_tb = tb;
            let t = &corer.tbs[tb as usize];
            let (code, entry) = (t.code.expect("compiled TB"), t.entry);
            let limit = envr.icount_limit;
            if step {
                envr.icount_limit = limit.min(envr.icount + 1);
            }
            // SAFETY: the backend runs generated code against `env`; no Rust references
            // into env/core are live across the call. `entry` is the TB's entry address.
            let r = unsafe { (*core).backend.execute_entry(env, code, entry) };
            let (envr, corer) = unsafe { (&mut *env, &mut *core) };
            if step {
                envr.icount_limit = limit;
            }
            let tb_id = (r >> 32) as u32;
            let index = ((r >> 8) & 0xff_ffff) as u32;
            match r & 0xff {
                ret::EXIT => {
                    let t = &corer.tbs[tb_id as usize];
                    let e = t.exits[index as usize];
                    match e.exit {
                        Exit::Jump { .. } | Exit::Repeat { .. } => {
                            corer.stats.exit_jump += 1;
                            if t.valid && !t.one_shot {
                                last_exit = Some((tb_id, index, false));
                            }
                        }
                        Exit::Indirect { .. } => {
                            corer.stats.exit_indirect += 1;
                            fill_jc = true;
                            // A far exit (known target on another page) is chained below
                            // when the backend gave it a slot.
                            if e.far && t.valid && !t.one_shot {
                                last_exit = Some((tb_id, index, true));
                            }
                        }
                        Exit::Exception { vector, error_code } => {
                            corer.stats.exit_exception += 1;
                            envr.g[pc_global as usize] = e.pc;
                            envr.icount += e.insn as u64;
                            return StopReason::Exception(GuestFault {
                                vector,
                                error_code,
                                addr: 0,
                            });
                        }
                        Exit::Platform { op, arg, len } => {
                            corer.stats.exit_platform += 1;
                            envr.g[pc_global as usize] = e.pc;
                            envr.icount += e.insn as u64;
                            return StopReason::Platform { op, arg, len };
                        }
                        Exit::Sync { pc } => {
                            corer.stats.exit_sync += 1;
                            if pc != crate::ir::SYNC_KEEP_PC {
                                envr.g[pc_global as usize] = pc;
                            }
                            envr.icount += e.insn as u64 + 1;
                        }
                    }
                }
                ret::FAULT => {
                    let t = &corer.tbs[tb_id as usize];
                    envr.g[pc_global as usize] = t.block.insn_pcs[index as usize];
                    envr.icount += index as u64;
                    let f = std::mem::replace(&mut envr.fault, fault::NONE);
                    match f {
                        fault::SMC_RESTART => {
                            corer.stats.smc_restarts += 1;
                            self.single_insn_next = true;
                            // The instruction did not complete: it runs again.
                            continue;
                        }
                        _ => {
                            corer.stats.exit_exception += 1;
                            let gf = GuestFault {
                                vector: envr.exc_vector as u8,
                                error_code: (envr.exc_has_code != 0)
                                    .then_some(envr.exc_code as u32),
                                addr: envr.exc_addr,
                            };
                            return StopReason::Exception(gf);
                        }
                    }
                }
                ret::INDIRECT => {
                    corer.stats.exit_indirect += 1;
                    fill_jc = true;
                }
                // Stepping, the budget ends after the stepped instruction: a block entered
                // after it (through the jump cache) returned here without running.
                ret::BUDGET if step => return StopReason::SingleStep,
                ret::BUDGET => return StopReason::Budget,
                k => panic!("backend returned unknown exit kind {k}"),
            }
            if step {
                return StopReason::SingleStep;
            }
        }
    }
}

impl Core {
    fn flush_all(&mut self) {
        self.tbs.clear();
        self.lookup.clear();
        self.jc.fill(None);
        self.jc_pages = Default::default();
        self.page_tbs.clear();
        self.code_pages.fill(0);
        self.backend.flush();
        self.stats.flushes += 1;
    }

    /// Forget the jump-cache entries of one half of the address space (1: the upper).
    fn jc_invalidate_half(&mut self, half: usize) {
        self.jc_gen[half] = self.jc_gen[half].wrapping_add(1);
        if self.jc_gen[half] == 0 {
            self.jc.fill(None);
            // Generations wrapped: no TB may look noted in the new one.
            for t in self.tbs.iter_mut() {
                t.jc_noted[half] = 0;
            }
        }
        self.jc_pages[half] = JcPages::default();
    }

    /// Note the code pages TB `id` came from, before a jump-cache entry for it is made.
    /// The entry's half is that of the TB's `rip` (`Env::jc`) and `pc` (`Core::jc`); they
    /// differ only for a non-zero code-segment base, which only legacy modes have.
    fn jc_record(&mut self, id: u32) {
        let t = &mut self.tbs[id as usize];
        let (pc, mmu_idx) = (t.key.pc, t.block.mmu_idx);
        let halves = [(pc >> 63) as usize, (t.key.rip >> 63) as usize];
        let pages = t.pages;
        let unknown = pages[0].is_none();
        for half in halves
            .into_iter()
            .take(if halves[0] == halves[1] { 1 } else { 2 })
        {
            let stamp = self.jc_gen[half].wrapping_add(1);
            if t.jc_noted[half] == stamp {
                continue;
            }
            t.jc_noted[half] = stamp;
            let r = &mut self.jc_pages[half];
            if unknown {
                r.mixed = true;
            }
            if r.mixed {
                continue;
            }
            if r.pages.is_empty() {
                r.mmu_idx = mmu_idx;
            } else if r.mmu_idx != mmu_idx {
                r.mixed = true;
                continue;
            }
            for (i, p) in pages.iter().enumerate() {
                let Some(p) = *p else { continue };
                let vpage = (pc & PAGE_MASK).wrapping_add(i as u64 * PAGE_SIZE);
                if *r.pages.entry(vpage).or_insert(p) != p || r.pages.len() > JC_PAGES_MAX {
                    r.mixed = true;
                }
            }
        }
    }

    /// Whether every code page the jump-cache entries of `half` came from still maps, in
    /// the current mode, to the physical page it was translated from.
    fn jc_pages_unchanged(&mut self, env: &Env, half: usize) -> bool {
        let r = &self.jc_pages[half];
        if r.pages.is_empty() {
            return true;
        }
        if r.mixed || r.mmu_idx != env.mmu_idx {
            return false;
        }
        let (mmu, ram, deps) = (&mut self.mmu, &mut self.ram, &mut self.pt_deps);
        r.pages.iter().all(|(&v, &p)| {
            let mut path = WalkPath::default();
            let ok = mmu
                .probe_exec(env, ram, v, &mut path)
                .map(|x| x & PAGE_MASK)
                == Some(p);
            // The kept entry now depends on the entries just read.
            deps.note(v, path.as_slice());
            ok
        })
    }

    fn jc_gen_for(&self, pc: u64) -> u32 {
        self.jc_gen[(pc >> 63) as usize]
    }

    fn jc_index(key: &TbKey) -> usize {
        ((key.pc ^ (key.pc >> 12) ^ key.flags as u64) as usize) & (JC_SIZE - 1)
    }

    /// Physical address of the code at `pc` (through the exec TLB, filling it on a miss).
    fn code_phys(&mut self, env: &mut Env, pc: u64) -> Result<u64, GuestFault> {
        let e = &env.tlb[env.mmu_idx as usize][tlb_index(pc)];
        if e.exec == pc & PAGE_MASK {
            let host = pc.wrapping_add(e.addend);
            return Ok(host - self.ram.base() as u64);
        }
        let mut path = WalkPath::default();
        let p = self.mmu.translate_path(
            env,
            &mut self.ram,
            pc,
            Access::Exec,
            AccessKind::Normal,
            &mut path,
        )?;
        self.pt_deps.note(pc, path.as_slice());
        self.tlb_fill(env, pc, p, Access::Exec);
        Ok(p)
    }

    fn find_tb(
        &mut self,
        env: &mut Env,
        key: &TbKey,
        single: bool,
        probe_jc: bool,
        fe: &mut dyn Frontend,
    ) -> Result<u32, GuestFault> {
        self.stats.lookups += 1;
        if !single && probe_jc {
            if let Some((k, id, gen)) = self.jc[Self::jc_index(key)] {
                if gen == self.jc_gen_for(key.pc) && k == *key && self.tbs[id as usize].valid {
                    self.stats.jc_hits += 1;
                    return Ok(id);
                }
            }
        }
        let phys = self.code_phys(env, key.pc)?;
        if !single {
            if let Some(&id) = self.lookup.get(&(*key, phys)) {
                self.jc_record(id);
                self.jc[Self::jc_index(key)] = Some((*key, id, self.jc_gen_for(key.pc)));
                return Ok(id);
            }
        }
        if self.backend.is_full() {
            self.flush_all();
            env.jc.fill(crate::env::JcEntry::EMPTY);
        }
        let t0 = std::time::Instant::now();
        let mut fetch = CodeFetcher {
            env,
            ram: &mut self.ram,
            mmu: &mut *self.mmu,
            deps: &mut self.pt_deps,
            pages: Vec::new(),
        };
        let max = if single { 1 } else { self.max_insns };
        let mut block = fe.translate(env, key, &mut fetch, max)?;
        if self.optimize {
            crate::opt::optimize(&mut block, fe.helpers());
        }
        block.mode = mode_word(key);
        if self.dump_ir {
            eprintln!(
                "TB {} at {:#x} (flags {:#x}), {} insns, {} ops:",
                self.tbs.len(),
                key.pc,
                key.flags,
                block.insn_pcs.len(),
                block.ops.len()
            );
            for op in &block.ops {
                eprintln!("    {op:?}");
            }
        }
        let pages: Vec<(u64, u64)> = std::mem::take(&mut fetch.pages);
        let id = self.tbs.len() as u32;
        let mut exits = Vec::new();
        let mut insn: i64 = -1;
        let mut far = crate::backend::regalloc::far_targets(&block).into_iter();
        for op in &block.ops {
            match op {
                crate::ir::Op::InsnStart { .. } => insn += 1,
                crate::ir::Op::Exit(e) => exits.push(TbExit {
                    exit: *e,
                    insn: insn.max(0) as u32,
                    pc: block
                        .insn_pcs
                        .get(insn.max(0) as usize)
                        .copied()
                        .unwrap_or(key.pc),
                    far: matches!(e, Exit::Indirect { .. }) && far.next().flatten().is_some(),
                }),
                _ => {}
            }
        }
        // Physical byte ranges covered by the block's bytes.
        let mut ranges = Vec::new();
        let mut tbpages = [None, None];
        let runs = std::iter::once((key.pc, block.guest_len.max(1)))
            .chain(block.guest_more.iter().copied());
        for (start, len) in runs {
            let mut a = start;
            let end = start.wrapping_add(len as u64);
            while a != end {
                let vpage = a & PAGE_MASK;
                let n = (PAGE_SIZE - (a & !PAGE_MASK)).min(end.wrapping_sub(a));
                if let Some(&(_, pp)) = pages.iter().find(|p| p.0 == vpage) {
                    let pa = pp + (a & !PAGE_MASK);
                    ranges.push((pa, pa + n));
                    if tbpages[0].is_none() {
                        tbpages[0] = Some(pp);
                    } else if tbpages[0] != Some(pp) {
                        debug_assert!(tbpages[1].is_none() || tbpages[1] == Some(pp));
                        tbpages[1] = Some(pp);
                    }
                }
                a = a.wrapping_add(n);
            }
        }
        let code = self
            .backend
            .compile(&block, id, fe.helpers(), fe.pc_global());
        let code = match code {
            Ok(c) => c,
            Err(err) => {
                if std::env::var_os("XENOLITH_DEBUG_COMPILE").is_some() {
                    eprintln!("compile of TB at {:#x} failed: {err:?}", key.pc);
                }
                // Out of code space mid-compile: flush and retry once.
                self.flush_all();
                env.jc.fill(crate::env::JcEntry::EMPTY);
                return self.find_tb(env, key, single, probe_jc, fe);
            }
        };
        self.stats.tbs_translated += 1;
        self.stats.insns_translated += block.insn_pcs.len() as u64;
        self.stats.translate_ns += t0.elapsed().as_nanos() as u64;
        let nexits = exits.len();
        let entry = self.backend.entry_addr(code);
        // The backend has what it needs; the TB keeps the instruction table, not the ops.
        block.ops = Vec::new();
        self.tbs.push(Tb {
            key: *key,
            pages: tbpages,
            ranges,
            block,
            exits,
            code: Some(code),
            entry,
            jc_noted: [0; 2],
            valid: true,
            incoming: Vec::new(),
            jc_pcs: Some(Vec::new()),
            chained: Vec::with_capacity(nexits),
            one_shot: single,
        });
        for p in tbpages.into_iter().flatten() {
            if !self.page_tbs.contains_key(&p) {
                self.protect_code_page(env, p);
                self.set_code_page(p, true);
            }
            self.page_tbs.entry(p).or_default().push(id);
        }
        if !single {
            self.lookup.insert((*key, phys), id);
            self.jc_record(id);
            self.jc[Self::jc_index(key)] = Some((*key, id, self.jc_gen_for(key.pc)));
        }
        Ok(id)
    }

    /// Remove write tags that map to physical page `p`, so stores take the slow path.
    fn protect_code_page(&mut self, env: &mut Env, p: u64) {
        let host = self.ram.base() as u64 + p;
        let drop = |e: &mut TlbEntry| {
            if e.write & !PAGE_MASK == 0 && e.write.wrapping_add(e.addend) == host {
                e.write = env::TLB_INVALID;
            }
        };
        // Entries evicted to the victim TLB keep no slot: always look there.
        env.victim.iter_mut().flatten().for_each(drop);
        let Some(rec) = self.write_slots.get_mut((p >> PAGE_BITS) as usize) else {
            return;
        };
        match std::mem::replace(rec, WRITE_SLOT_NONE) {
            WRITE_SLOT_NONE => {}
            WRITE_SLOT_MANY => env.tlb_for_each_used(drop),
            slot => {
                let k = slot as usize - 1;
                drop(&mut env.tlb[k / TLB_SIZE][k % TLB_SIZE]);
            }
        }
    }

    fn can_chain(&self, from: u32, to: u32) -> bool {
        let f = &self.tbs[from as usize];
        let t = &self.tbs[to as usize];
        f.valid
            && t.valid
            && !t.one_shot
            && f.key.pc & PAGE_MASK == t.key.pc & PAGE_MASK
            && f.key.cs_base == t.key.cs_base
    }

    /// Chain indirect exit `idx` of `from` (a far exit, if the backend made it one) to
    /// `to`, valid while the jump-cache epoch of `to`'s half stays as it is now: the epoch
    /// moves whenever a code page of that half may map elsewhere, as for `Env::jc`.
    fn chain_far(&mut self, env: &Env, from: u32, idx: u32, to: u32) {
        let (f, t) = (&self.tbs[from as usize], &self.tbs[to as usize]);
        if !f.valid || !t.valid || t.one_shot || f.key.cs_base != t.key.cs_base {
            return;
        }
        let (Some(fc), Some(tc)) = (f.code, t.code) else {
            return;
        };
        let epoch = env.jc_epoch_for(t.key.rip);
        let prev = f
            .chained
            .iter()
            .position(|c| c.0 == idx)
            .map(|p| (p, f.chained[p].1));
        if !self.backend.chain_far(fc, idx, tc, epoch) {
            return;
        }
        // The target's code pages must be among those the epoch watches.
        self.jc_record(to);
        match prev {
            Some((_, old)) if old == to => {}
            Some((pos, old)) => {
                self.tbs[old as usize]
                    .incoming
                    .retain(|&x| x != (from, idx));
                self.tbs[from as usize].chained[pos].1 = to;
                self.tbs[to as usize].incoming.push((from, idx));
            }
            None => {
                self.tbs[from as usize].chained.push((idx, to));
                self.tbs[to as usize].incoming.push((from, idx));
                self.stats.chains += 1;
            }
        }
    }

    fn chain(&mut self, from: u32, idx: u32, to: u32) {
        if self.tbs[from as usize].chained.iter().any(|c| c.0 == idx) {
            return;
        }
        let (fc, tc) = (
            self.tbs[from as usize].code.unwrap(),
            self.tbs[to as usize].code.unwrap(),
        );
        if self.backend.chain(fc, idx, tc) {
            self.tbs[from as usize].chained.push((idx, to));
            self.tbs[to as usize].incoming.push((from, idx));
            self.stats.chains += 1;
        }
    }

    fn invalidate_tb(&mut self, env: &mut Env, id: u32) {
        let t = &mut self.tbs[id as usize];
        if !t.valid {
            return;
        }
        if let Some(entry) = t.entry {
            match t.jc_pcs.take() {
                // Its entries stay in the pairs of the pcs it was entered for
                // (`Env::jc_insert` moves an entry only to the other way of its pair).
                Some(pcs) => {
                    for pc in pcs {
                        let i = crate::env::jc_index(pc);
                        for k in [i, i ^ 1] {
                            if env.jc[k].code == entry {
                                env.jc[k] = crate::env::JcEntry::EMPTY;
                            }
                        }
                    }
                }
                None => {
                    for e in env.jc.iter_mut().filter(|e| e.code == entry) {
                        *e = crate::env::JcEntry::EMPTY;
                    }
                }
            }
        }
        t.valid = false;
        self.stats.invalidations += 1;
        let key = t.key;
        let incoming = std::mem::take(&mut t.incoming);
        let pages = t.pages;
        let first = t.ranges.first().map(|r| r.0);
        for (src, idx) in incoming {
            let s = &mut self.tbs[src as usize];
            if let Some(pos) = s.chained.iter().position(|c| *c == (idx, id)) {
                s.chained.swap_remove(pos);
                let code = s.code.unwrap();
                self.backend.unchain(code, idx);
            }
        }
        if let Some(p) = first {
            if self.lookup.get(&(key, p)) == Some(&id) {
                self.lookup.remove(&(key, p));
            }
        }
        let j = Self::jc_index(&key);
        if matches!(self.jc[j], Some((_, x, _)) if x == id) {
            self.jc[j] = None;
        }
        for p in pages.into_iter().flatten() {
            if let Some(list) = self.page_tbs.get_mut(&p) {
                list.retain(|&x| x != id);
                if list.is_empty() {
                    self.page_tbs.remove(&p);
                    self.set_code_page(p, false);
                }
            }
        }
    }

    /// Handle a store to physical `[pa, pa+len)` on a page that holds code. Returns false
    /// when the store must not happen (the running TB must restart at this instruction).
    fn code_write(&mut self, env: &mut Env, pa: u64, len: u64) -> bool {
        let cur = env.cur_tb;
        let page = pa & PAGE_MASK;
        let Some(list) = self.page_tbs.get(&page) else {
            return true;
        };
        let hits: Vec<u32> = list
            .iter()
            .copied()
            .filter(|&id| {
                self.tbs[id as usize]
                    .ranges
                    .iter()
                    .any(|r| r.0 < pa + len && pa < r.1)
            })
            .collect();
        let restart = hits.contains(&cur)
            && (cur as usize) < self.tbs.len()
            && self.tbs[cur as usize].ninsns() > 1;
        for id in hits {
            self.invalidate_tb(env, id);
        }
        !restart
    }

    fn is_code_page(&self, p: u64) -> bool {
        let n = (p >> crate::env::PAGE_BITS) as usize;
        self.code_pages
            .get(n / 64)
            .is_some_and(|w| w >> (n % 64) & 1 != 0)
    }

    fn set_code_page(&mut self, p: u64, on: bool) {
        let n = (p >> crate::env::PAGE_BITS) as usize;
        if let Some(w) = self.code_pages.get_mut(n / 64) {
            if on {
                *w |= 1 << (n % 64);
            } else {
                *w &= !(1 << (n % 64));
            }
        }
    }

    fn tlb_fill(&mut self, env: &mut Env, vaddr: u64, paddr: u64, access: Access) {
        let ppage = paddr & PAGE_MASK;
        if ppage + PAGE_SIZE > self.ram.size() {
            return; // not RAM: always slow path
        }
        let vpage = vaddr & PAGE_MASK;
        if vpage == 0 {
            // Never cached: an access wrapping around from the last page would find it at
            // that page's index (`env::tlb_index`).
            return;
        }
        let code = self.is_code_page(ppage);
        let addend = (self.ram.base() as u64)
            .wrapping_add(ppage)
            .wrapping_sub(vpage);
        let mmu = env.mmu_idx as usize;
        let idx = tlb_index(vaddr);
        let old = env.tlb[mmu][idx];
        let mut e = old;
        if e.addend != addend || (e.read != vpage && e.write != vpage && e.exec != vpage) {
            e = TlbEntry::EMPTY;
            e.addend = addend;
            // Keep the evicted entry in the victim TLB.
            if old.read & !PAGE_MASK == 0
                || old.write & !PAGE_MASK == 0
                || old.exec & !PAGE_MASK == 0
            {
                let k = env.victim_next[mmu] as usize;
                env.victim[mmu][k] = old;
                env.victim_next[mmu] = ((k + 1) % crate::env::VICTIM_SIZE) as u32;
            }
        }
        match access {
            Access::Read => e.read = vpage,
            Access::Write => {
                e.read = vpage;
                if !code {
                    e.write = vpage;
                    // Where this page's write entries are (`protect_code_page`).
                    let slot = (mmu * TLB_SIZE + idx) as u32 + 1;
                    if let Some(rec) = self.write_slots.get_mut((ppage >> PAGE_BITS) as usize) {
                        if *rec == WRITE_SLOT_NONE {
                            *rec = slot;
                        } else if *rec != slot {
                            *rec = WRITE_SLOT_MANY;
                        }
                    }
                }
            }
            Access::Exec => e.exec = vpage,
        }
        env.tlb_set(mmu, idx, e);
    }

    /// Translate one access (not crossing a page) and fill the TLB.
    pub fn translate(
        &mut self,
        env: &mut Env,
        vaddr: u64,
        access: Access,
        who: AccessKind,
    ) -> Result<u64, GuestFault> {
        if who != AccessKind::System {
            // Helpers (string instructions, far transfers, ...) come here without the
            // generated code's inline lookup.
            let e = &env.tlb[env.mmu_idx as usize][tlb_index(vaddr)];
            if tag(e, access) == vaddr & PAGE_MASK {
                let host = vaddr.wrapping_add(e.addend);
                return Ok(host.wrapping_sub(self.ram.base() as u64));
            }
            if let Some(p) = self.victim_hit(env, vaddr, access) {
                self.stats.victim_hits += 1;
                return Ok(p);
            }
        }
        self.stats.walks += 1;
        let mut path = WalkPath::default();
        let p = self
            .mmu
            .translate_path(env, &mut self.ram, vaddr, access, who, &mut path)?;
        if who != AccessKind::System {
            self.pt_deps.note(vaddr, path.as_slice());
            let fill = match access {
                Access::Read if path.writable_dirty => Access::Write,
                a => a,
            };
            self.tlb_fill(env, vaddr, p, fill);
        }
        Ok(p)
    }

    /// For helpers doing bulk accesses (REP string instructions): the physical address of
    /// `vaddr` when the whole page is RAM that can be accessed directly — translated without
    /// a fault and, for writes, holding no translated code. None means "take the precise
    /// per-element path" (which raises any fault); no state other than the TLB changes.
    pub fn bulk_translate(&mut self, env: &mut Env, vaddr: u64, access: Access) -> Option<u64> {
        let p = self
            .translate(env, vaddr, access, AccessKind::Normal)
            .ok()?;
        let page = p & PAGE_MASK;
        if page + PAGE_SIZE > self.ram.size()
            || (access == Access::Write && self.is_code_page(page))
        {
            return None;
        }
        Some(p)
    }

    /// The platform wrote guest RAM directly at `[pa, pa + len)` (one page at most): drop
    /// the translations it overlaps. Call outside `Engine::run`.
    pub fn notify_phys_write(&mut self, env: &mut Env, pa: u64, len: u64) {
        if self.is_code_page(pa & PAGE_MASK) {
            let cur = std::mem::replace(&mut env.cur_tb, u32::MAX);
            self.code_write(env, pa, len);
            env.cur_tb = cur;
        }
    }

    pub fn ram_mut(&mut self) -> &mut GuestRam {
        &mut self.ram
    }

    /// Look `vaddr` up in the victim TLB; on a hit swap the entry into the main TLB and
    /// return the physical address.
    fn victim_hit(&mut self, env: &mut Env, vaddr: u64, access: Access) -> Option<u64> {
        let vpage = vaddr & PAGE_MASK;
        let mmu = env.mmu_idx as usize;
        let k = env.victim[mmu]
            .iter()
            .position(|v| tag(v, access) == vpage)?;
        let idx = tlb_index(vaddr);
        let hit = env.victim[mmu][k];
        env.victim[mmu][k] = env.tlb[mmu][idx];
        env.tlb_set(mmu, idx, hit);
        let host = vaddr.wrapping_add(hit.addend);
        Some(host.wrapping_sub(self.ram.base() as u64))
    }

    /// Load `size` bytes at linear `vaddr` (any alignment), or the fault.
    pub fn load(
        &mut self,
        env: &mut Env,
        vaddr: u64,
        size: u32,
        who: AccessKind,
    ) -> Result<u64, GuestFault> {
        self.load_for(env, vaddr, size, who, Access::Read)
    }

    /// Load with the permission check of `access` (Write for the read of a RMW).
    pub fn load_for(
        &mut self,
        env: &mut Env,
        vaddr: u64,
        size: u32,
        who: AccessKind,
        access: Access,
    ) -> Result<u64, GuestFault> {
        let off = vaddr & !PAGE_MASK;
        if off + size as u64 <= PAGE_SIZE {
            let p = self.translate(env, vaddr, access, who)?;
            return Ok(self
                .ram
                .read_le(p, size as usize)
                .unwrap_or(u64::MAX & MemSize::from_bytes(size).mask()));
        }
        let n1 = (PAGE_SIZE - off) as u32;
        let v2 = vaddr.wrapping_add(n1 as u64);
        let p1 = self.translate(env, vaddr, access, who)?;
        let p2 = self.translate(env, v2, access, who)?;
        let mut v = 0u64;
        for i in 0..size {
            let pa = if i < n1 {
                p1 + i as u64
            } else {
                p2 + (i - n1) as u64
            };
            let b = self.ram.read_le(pa, 1).unwrap_or(0xff);
            v |= b << (8 * i);
        }
        Ok(v)
    }

    /// Store `size` bytes at linear `vaddr`. `Ok(false)` means an SMC restart is needed.
    pub fn store(
        &mut self,
        env: &mut Env,
        vaddr: u64,
        size: u32,
        val: u64,
        who: AccessKind,
    ) -> Result<bool, GuestFault> {
        let off = vaddr & !PAGE_MASK;
        let (p1, p2, n1) = if off + size as u64 <= PAGE_SIZE {
            (self.translate(env, vaddr, Access::Write, who)?, 0, size)
        } else {
            let n1 = (PAGE_SIZE - off) as u32;
            let p1 = self.translate(env, vaddr, Access::Write, who)?;
            let p2 = self.translate(env, vaddr.wrapping_add(n1 as u64), Access::Write, who)?;
            (p1, p2, n1)
        };
        let mut ok = true;
        if self.is_code_page(p1) {
            ok &= self.code_write(env, p1, n1 as u64);
        }
        if n1 < size && self.is_code_page(p2) {
            ok &= self.code_write(env, p2, (size - n1) as u64);
        }
        if !ok {
            return Ok(false);
        }
        if n1 == size {
            self.ram.write_le(p1, size as usize, val);
            return Ok(true);
        }
        for i in 0..size {
            let pa = if i < n1 {
                p1 + i as u64
            } else {
                p2 + (i - n1) as u64
            };
            self.ram.write_le(pa, 1, (val >> (8 * i)) & 0xff);
        }
        Ok(true)
    }
}

/// Slow-path descriptor bit: the load is the read of a read-modify-write.
pub const MEM_INFO_RMW: u64 = 1 << 7;
/// Slow-path descriptor bit: bits 32..63 hold the running TB's id, for a backend that
/// does not keep `Env::cur_tb` up to date at block entry (`mem_info_tb`).
pub const MEM_INFO_TB: u64 = 1 << 8;

/// `info` (from `mem_info`) carrying the id of the TB whose store it describes.
pub fn mem_info_tb(info: u64, tb: u32) -> u64 {
    info | MEM_INFO_TB | (tb as u64) << 32
}

/// The mode word of a key: what besides the pc an indirect jump's target must match.
pub fn mode_word(key: &TbKey) -> u64 {
    key.flags as u64 | key.cs_base << 32
}

/// Pack a slow-path access descriptor: size in bytes, sign, kind.
pub fn mem_info(size: MemSize, signed: bool, kind: AccessKind) -> u64 {
    size.bytes() as u64 | (signed as u64) << 4 | (kind as u64) << 5
}

fn kind_of(info: u64) -> AccessKind {
    match (info >> 5) & 3 {
        0 => AccessKind::Normal,
        1 => AccessKind::System,
        _ => AccessKind::Stack,
    }
}

/// Softmmu slow path for loads. On a fault sets `Env::fault` and returns 0.
///
/// # Safety
/// `env` must be a valid `Env` whose `rt` points at the running engine's `Core`.
pub unsafe extern "C" fn slow_load(env: *mut Env, vaddr: u64, info: u64) -> u64 {
    // SAFETY: the caller guarantees `env` and `env.rt` are valid and not otherwise borrowed.
    let (env, core) = unsafe { (&mut *env, &mut *((*env).rt as *mut Core)) };
    let size = (info & 0xf) as u32;
    let access = if info & MEM_INFO_RMW != 0 {
        Access::Write
    } else {
        Access::Read
    };
    match core.load_for(env, vaddr, size, kind_of(info), access) {
        Ok(v) => {
            if info & 0x10 != 0 {
                let sh = 64 - 8 * size;
                (((v << sh) as i64) >> sh) as u64
            } else {
                v
            }
        }
        Err(f) => {
            env.raise(f.vector, f.error_code, f.addr);
            0
        }
    }
}

/// Softmmu slow path for stores. On a fault (or SMC restart) sets `Env::fault`.
///
/// # Safety
/// As for [`slow_load`].
pub unsafe extern "C" fn slow_store(env: *mut Env, vaddr: u64, val: u64, info: u64) {
    // SAFETY: as in slow_load.
    let (env, core) = unsafe { (&mut *env, &mut *((*env).rt as *mut Core)) };
    let size = (info & 0xf) as u32;
    if info & MEM_INFO_TB != 0 {
        env.cur_tb = (info >> 32) as u32;
    }
    match core.store(env, vaddr, size, val, kind_of(info)) {
        Ok(true) => {}
        Ok(false) => env.fault = fault::SMC_RESTART,
        Err(f) => env.raise(f.vector, f.error_code, f.addr),
    }
}

/// Access to the engine core from helpers (guest memory through the MMU).
///
/// # Safety
/// Only valid inside a helper called by generated code or the interpreter, with the `env`
/// pointer it was given.
pub unsafe fn core_of<'a>(env: *mut Env) -> &'a mut Core {
    // SAFETY: per the function contract.
    unsafe { &mut *((*env).rt as *mut Core) }
}
