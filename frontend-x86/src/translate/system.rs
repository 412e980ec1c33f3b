//! Privileged and platform-defined instructions (exits to the platform), and instructions
//! with no architectural effect in a single-vCPU engine (fences, hints).

use iced_x86::{Instruction, Mnemonic as M};

use super::{Flow, Handler, Tr};
use crate::state::{G_GPR0, G_TSC_AUX};
use crate::PlatformOp as P;
use jit::ir::Val;

pub fn register(r: &mut impl FnMut(M, Handler)) {
    let exits: &[(M, P)] = &[
        (M::Cpuid, P::Cpuid),
        (M::Rdmsr, P::Rdmsr),
        (M::Wrmsr, P::Wrmsr),
        (M::In, P::Io),
        (M::Out, P::Io),
        (M::Insb, P::Io),
        (M::Insw, P::Io),
        (M::Insd, P::Io),
        (M::Outsb, P::Io),
        (M::Outsw, P::Io),
        (M::Outsd, P::Io),
        (M::Cli, P::Cli),
        (M::Sti, P::Sti),
        (M::Hlt, P::Hlt),
        (M::Clts, P::MovCr),
        (M::Lmsw, P::MovCr),
        (M::Lgdt, P::DescTable),
        (M::Lidt, P::DescTable),
        (M::Lldt, P::DescTable),
        (M::Ltr, P::DescTable),
        (M::Syscall, P::Syscall),
        (M::Sysret, P::Sysret),
        (M::Sysretq, P::Sysret),
        (M::Sysenter, P::Sysenter),
        (M::Sysexit, P::Sysexit),
        (M::Sysexitq, P::Sysexit),
        (M::Iret, P::Iret),
        (M::Iretd, P::Iret),
        (M::Iretq, P::Iret),
        (M::Swapgs, P::Swapgs),
        (M::Invlpg, P::Invlpg),
        (M::Invpcid, P::Invlpg),
        (M::Rdpmc, P::Rdpmc),
        (M::Wbinvd, P::CacheCtl),
        (M::Invd, P::CacheCtl),
        (M::Xgetbv, P::Xgetbv),
        (M::Xsetbv, P::Xsetbv),
        (M::Rdpid, P::Rdpid),
    ];
    for &(m, p) in exits {
        r(m, platform_for(p));
    }
    r(M::Rdtsc, |t, i| rdtsc(t, i, false));
    r(M::Rdtscp, |t, i| rdtsc(t, i, true));
    for m in [
        M::Nop,
        M::Pause,
        M::Lfence,
        M::Sfence,
        M::Mfence,
        M::Prefetch,
        M::Prefetchnta,
        M::Prefetcht0,
        M::Prefetcht1,
        M::Prefetcht2,
        M::Prefetchw,
        M::Endbr64,
        M::Endbr32,
    ] {
        r(m, |_, _| Flow::Next);
    }
    for m in [M::Clflush, M::Clflushopt, M::Clwb] {
        r(m, cache_line);
    }
}

fn platform_for(p: P) -> Handler {
    macro_rules! h {
        ($($v:ident),*) => {
            match p {
                $(P::$v => |t: &mut Tr, i: &Instruction| t.platform(P::$v, i.code() as u64, i),)*
                _ => |t: &mut Tr, i: &Instruction| t.platform(P::Other, i.code() as u64, i),
            }
        };
    }
    h!(
        Cpuid, Rdmsr, Wrmsr, Io, Cli, Sti, Hlt, MovCr, MovDr, DescTable, Syscall, Sysret, Sysenter,
        Sysexit, Iret, Swapgs, Invlpg, Rdtsc, Rdtscp, Rdpmc, CacheCtl, Xgetbv, Xsetbv, Rdpid
    )
}

/// RDTSC/RDTSCP: EDX:EAX = the time stamp counter (and ECX = IA32_TSC_AUX for RDTSCP).
/// The platform answers (an exit), unless its clock is the instruction count plus an
/// offset (`Env::inline_clock`), which the block reads itself.
fn rdtsc(tr: &mut Tr, insn: &Instruction, aux: bool) -> Flow {
    if !tr.inline_clock {
        let op = if aux { P::Rdtscp } else { P::Rdtsc };
        return tr.platform(op, insn.code() as u64, insn);
    }
    let t = tr.b.call(crate::helpers::H.clock, &[Val::C(tr.idx as u64)]);
    let lo = tr.b.and(t, Val::C(0xffff_ffff));
    let hi = tr.b.shr(t, Val::C(32));
    if aux {
        let a = tr.b.get(G_TSC_AUX);
        let a = tr.b.and(a, Val::C(0xffff_ffff));
        tr.b.set(G_GPR0 + 1, a);
    }
    tr.b.set(G_GPR0, lo);
    tr.b.set(G_GPR0 + 2, hi);
    Flow::Next
}

/// CLFLUSH and friends: no cache to flush, but the address is checked like a read.
fn cache_line(tr: &mut Tr, insn: &Instruction) -> Flow {
    let a = tr.ea(insn);
    let m = tr.mop(insn, 1);
    let _ = tr.load(a, m);
    Flow::Next
}
