//! The x86 guest frontend: decoding with iced-x86, translation to Xenolith IR, the CPU
//! state layout, lazy flags, segment descriptors and page walks.
//!
//! Nothing here depends on the host: the engine (`jit`) runs the IR on whichever backend
//! the host has. The platform (Xen PV) owns privileged semantics: every instruction whose
//! effect is platform-defined leaves the block as [`jit::StopReason::Platform`] with a
//! [`PlatformOp`], before it executes; the platform emulates it and advances rip.

pub mod cpuid;
pub mod desc;
pub mod flags;
pub mod fp;
pub mod helpers;
pub mod mmu;
pub mod state;
pub mod translate;

use jit::engine::{CodeFetcher, GuestFault, TbKey};
use jit::ir::{Block, Global, HelperInfo};
use jit::Env;

pub use mmu::X86Mmu;
pub use state::X86State;
use state::*;

/// Instructions the platform decides. `arg` in the exit is the iced `Code` of the
/// instruction unless noted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum PlatformOp {
    Cpuid = 1,
    Rdmsr,
    Wrmsr,
    /// IN/OUT/INS/OUTS
    Io,
    Cli,
    Sti,
    Hlt,
    /// MOV to/from CRn, CLTS, LMSW
    MovCr,
    /// MOV to/from DRn
    MovDr,
    /// LGDT, LIDT, LLDT, LTR
    DescTable,
    Syscall,
    Sysret,
    Sysenter,
    Sysexit,
    Iret,
    Swapgs,
    Invlpg,
    /// INT n / INT3 / INTO (taken) / INT1: arg = vector | kind << 8 (0 int n, 1 int3,
    /// 2 into, 3 int1)
    SoftInt,
    Rdtsc,
    Rdtscp,
    Rdpmc,
    /// WBINVD, INVD, other cache control with no guest-visible effect but privilege checks
    CacheCtl,
    Xgetbv,
    Xsetbv,
    Rdpid,
    /// An instruction the frontend does not translate but a platform might emulate
    /// (e.g. forced-emulation prefixes); arg = Code
    Other,
}

impl PlatformOp {
    pub fn from_u32(v: u32) -> Option<PlatformOp> {
        use PlatformOp::*;
        const ALL: [PlatformOp; 26] = [
            Cpuid, Rdmsr, Wrmsr, Io, Cli, Sti, Hlt, MovCr, MovDr, DescTable, Syscall, Sysret,
            Sysenter, Sysexit, Iret, Swapgs, Invlpg, SoftInt, Rdtsc, Rdtscp, Rdpmc, CacheCtl,
            Xgetbv, Xsetbv, Rdpid, Other,
        ];
        ALL.iter().copied().find(|o| *o as u32 == v)
    }
}

/// The x86 frontend for the engine.
pub struct X86Frontend {
    helpers: Vec<HelperInfo>,
}

impl X86Frontend {
    pub fn new() -> X86Frontend {
        X86Frontend {
            helpers: helpers::table(),
        }
    }
}

impl Default for X86Frontend {
    fn default() -> Self {
        Self::new()
    }
}

/// The TB flags for the current state.
pub fn tb_flags(g: &[u64]) -> u32 {
    let cs_attr = g[Seg::Cs.attr_g() as usize];
    let lma = g[G_EFER as usize] & efer::LMA != 0;
    let cpl = g[G_CPL as usize] as u32 & 3;
    let mut f = cpl << tbf::CPL_SHIFT;
    if lma {
        f |= tbf::LMA;
    }
    if lma && cs_attr & attr::L != 0 {
        f |= tbf::CODE64;
    } else {
        if cs_attr & attr::DB != 0 {
            f |= tbf::CODE32;
        }
        if g[Seg::Ss.attr_g() as usize] & attr::DB != 0 {
            f |= tbf::SS32;
        }
        if g[Seg::Ds.base_g() as usize]
            | g[Seg::Es.base_g() as usize]
            | g[Seg::Ss.base_g() as usize]
            != 0
        {
            f |= tbf::ADDSEG;
        }
    }
    if cpl == 3 {
        f |= tbf::MMU_USER;
        if g[G_ASID as usize] & 1 != 0 {
            f |= tbf::ASID;
        }
    }
    if g[G_RFLAGS as usize] & fl::DF != 0 {
        f |= tbf::DF;
    }
    let (c0, c4) = (g[G_CR0 as usize], g[G_CR4 as usize]);
    for (on, bit) in [
        (c0 & cr0::TS != 0, tbf::TS),
        (c0 & cr0::EM != 0, tbf::EM),
        (c0 & cr0::MP != 0, tbf::MP),
        (c4 & cr4::OSFXSR != 0, tbf::OSFXSR),
        (c4 & cr4::OSXSAVE != 0, tbf::OSXSAVE),
        (g[G_MXCSR as usize] & 0xffc0 == 0x1f80, tbf::MXCSR_HOST),
    ] {
        if on {
            f |= bit;
        }
    }
    f
}

impl jit::Frontend for X86Frontend {
    fn key(&self, env: &Env) -> TbKey {
        let g = &env.g;
        let flags = tb_flags(g);
        let rip = g[G_RIP as usize];
        let cs_base = if flags & tbf::CODE64 != 0 {
            0
        } else {
            g[Seg::Cs.base_g() as usize]
        };
        let pc = if flags & tbf::CODE64 != 0 {
            rip
        } else {
            cs_base.wrapping_add(rip) & 0xffff_ffff
        };
        TbKey {
            pc,
            rip,
            cs_base,
            flags,
        }
    }

    fn translate(
        &mut self,
        env: &Env,
        key: &TbKey,
        fetch: &mut CodeFetcher,
        max_insns: u32,
    ) -> Result<Block, GuestFault> {
        translate::translate(env, key, fetch, max_insns)
    }

    fn helpers(&self) -> &[HelperInfo] {
        &self.helpers
    }

    fn pc_global(&self) -> Global {
        G_RIP
    }

    /// RFLAGS.TF: a debug trap after each instruction.
    fn single_step(&self, env: &Env) -> bool {
        env.g[G_RFLAGS as usize] & crate::state::fl::TF != 0
    }
}

/// Build an engine for an x86 guest with `ram_size` bytes of RAM.
pub fn new_engine(ram_size: u64, kind: jit::EngineKind) -> std::io::Result<jit::Engine> {
    let ram = jit::GuestRam::new(ram_size)?;
    Ok(jit::Engine::new(
        ram,
        Box::new(X86Mmu),
        Box::new(X86Frontend::new()),
        jit::backend::new_backend(kind),
    ))
}

/// Put the CPU in 64-bit mode with paging on (`cr3`), at `cpl`, with flat segments.
pub fn setup_long_mode(env: &mut Env, cr3: u64, cpl: u8) {
    let mut s = X86State(env);
    s.set_g(G_CR0, cr0::PE | cr0::PG | cr0::WP | cr0::MP);
    s.set_g(G_CR4, cr4::PAE | cr4::OSFXSR | cr4::OSXMMEXCPT);
    s.set_g(G_EFER, efer::LME | efer::LMA | efer::NXE | efer::SCE);
    s.set_g(G_CR3, cr3);
    let rpl = cpl as u16;
    let dpl = (cpl as u64) << attr::DPL_SHIFT;
    s.set_seg(
        Seg::Cs,
        0x30 | rpl,
        0,
        0xffff_ffff,
        0xb | attr::S | dpl | attr::P | attr::L | attr::G,
    );
    for sg in [Seg::Ds, Seg::Es, Seg::Ss, Seg::Fs, Seg::Gs] {
        s.set_seg(
            sg,
            0x28 | rpl,
            0,
            0xffff_ffff,
            0x3 | attr::S | dpl | attr::P | attr::DB | attr::G,
        );
    }
    s.set_cpl(cpl);
    s.set_rflags(fl::FIXED1);
    fp::state::reset(env);
}
