//! The CPUID policy: what Xenolith's virtual CPU advertises, in one place.
//!
//! The target is x86-64-v2 (SSE3, SSSE3, SSE4.1, SSE4.2, POPCNT, CX16, LAHF/SAHF, FXSR)
//! plus XSAVE with the x87 and SSE components only, MOVBE, LZCNT, BMI1/BMI2 and RDTSCP;
//! no AVX. The translator raises #UD for any instruction whose CPUID feature is not
//! advertised here ([`insn_allowed`]), so a guest never takes a path the engine cannot
//! run. Platforms add their own leaves (Xen's 0x4000_0000 range) on top of [`leaf`].

use iced_x86::{CpuidFeature as F, Instruction};

use crate::state::cr4;

/// IA32_ARCH_CAPABILITIES (MSR 0x10a, advertised by CPUID.7.0:EDX[29]): the
/// "not affected" bits for the speculative-execution issues whose guest mitigations only
/// cost time here. Generated code does not preserve a guest's branch layout, buffers or
/// speculation barriers on the host (a guest's retpoline or VERW is emulated, not a host
/// barrier), so those mitigations protect nothing on this CPU; the host protects the
/// Xenolith process as any other. RDCL_NO (Meltdown, and so L1TF), SSB_NO, MDS_NO,
/// PSCHANGE_MC_NO, TAA_NO, SBDR_SSDP_NO, FBSDP_NO, PSDP_NO (MMIO stale data), BHI_NO,
/// PBRSB_NO, GDS_NO, RFDS_NO, ITS_NO. Not IBRS_ALL: Spectre v2 is left to the guest's
/// default (retpolines), which needs no SPEC_CTRL MSR.
pub const ARCH_CAPABILITIES: u64 = 1
    | 1 << 4
    | 1 << 5
    | 1 << 6
    | 1 << 8
    | 1 << 13
    | 1 << 14
    | 1 << 15
    | 1 << 20
    | 1 << 24
    | 1 << 26
    | 1 << 27
    | 1 << 62;

/// XCR0 components supported: x87 and SSE.
pub const XCR0_SUPPORTED: u64 = 0b11;
/// XSAVE area size for x87+SSE: the legacy 512-byte region plus the 64-byte header.
pub const XSAVE_SIZE: u32 = 576;

const fn sig(s: &[u8; 12]) -> (u32, u32, u32) {
    (
        u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        u32::from_le_bytes([s[4], s[5], s[6], s[7]]),
        u32::from_le_bytes([s[8], s[9], s[10], s[11]]),
    )
}

mod bit {
    // Leaf 1 EDX
    pub const FPU: u32 = 1 << 0;
    pub const TSC: u32 = 1 << 4;
    pub const MSR: u32 = 1 << 5;
    pub const PAE: u32 = 1 << 6;
    pub const CX8: u32 = 1 << 8;
    pub const CMOV: u32 = 1 << 15;
    pub const CLFSH: u32 = 1 << 19;
    pub const MMX: u32 = 1 << 23;
    pub const FXSR: u32 = 1 << 24;
    pub const SSE: u32 = 1 << 25;
    pub const SSE2: u32 = 1 << 26;
    // Leaf 1 ECX
    pub const SSE3: u32 = 1 << 0;
    pub const SSSE3: u32 = 1 << 9;
    pub const CX16: u32 = 1 << 13;
    pub const SSE41: u32 = 1 << 19;
    pub const SSE42: u32 = 1 << 20;
    pub const MOVBE: u32 = 1 << 22;
    pub const POPCNT: u32 = 1 << 23;
    pub const XSAVE: u32 = 1 << 26;
    pub const OSXSAVE: u32 = 1 << 27;
    pub const HYPERVISOR: u32 = 1 << 31;
}

/// The standard and extended leaves (0 .. 0xd, 0x8000_0000 .. 0x8000_0008). `cr4` gives
/// the OSXSAVE bit, `xcr0` the enabled XSAVE components.
pub fn leaf(leaf: u32, sub: u32, cr4: u64, xcr0: u64) -> (u32, u32, u32, u32) {
    use bit::*;
    let (b, d, c) = sig(b"GenuineIntel");
    match leaf {
        0 => (0xd, b, c, d),
        // Family 6 model 0x3a stepping 9; one logical processor; CLFLUSH line 64 bytes.
        1 => {
            let edx = FPU | TSC | MSR | PAE | CX8 | CMOV | CLFSH | MMX | FXSR | SSE | SSE2;
            let mut ecx = SSE3 | SSSE3 | CX16 | SSE41 | SSE42 | MOVBE | POPCNT | XSAVE | HYPERVISOR;
            if cr4 & cr4::OSXSAVE != 0 {
                ecx |= OSXSAVE;
            }
            (0x0003_06a9, 0x0001_0800, ecx, edx)
        }
        // EBX: BMI1, BMI2, CLFLUSHOPT, CLWB. ECX: RDPID. EDX: ARCH_CAPABILITIES.
        7 if sub == 0 => (0, 1 << 3 | 1 << 8 | 1 << 23 | 1 << 24, 1 << 22, 1 << 29),
        0xd => match sub {
            // Supported components; size for the enabled ones; size for all.
            0 => {
                let cur = if xcr0 & !1 != 0 { XSAVE_SIZE } else { 512 + 64 };
                (XCR0_SUPPORTED as u32, cur, XSAVE_SIZE, 0)
            }
            // XSAVEOPT
            1 => (1, 0, 0, 0),
            _ => (0, 0, 0, 0),
        },
        0x8000_0000 => (0x8000_0008, 0, 0, 0),
        // ECX: LAHF/SAHF, LZCNT, PREFETCHW. EDX: SYSCALL, NX, RDTSCP, LM.
        0x8000_0001 => (
            0,
            0,
            1 | 1 << 5 | 1 << 8,
            1 << 11 | 1 << 20 | 1 << 27 | 1 << 29,
        ),
        0x8000_0002..=0x8000_0004 => {
            let name = *b"Xenolith x86-64 virtual CPU\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
            let i = (leaf - 0x8000_0002) as usize * 16;
            let w = |k: usize| u32::from_le_bytes(name[i + k..i + k + 4].try_into().unwrap());
            (w(0), w(4), w(8), w(12))
        }
        // 48-bit virtual, 40-bit physical addresses
        0x8000_0008 => (0x3028, 0, 0, 0),
        _ => (0, 0, 0, 0),
    }
}

/// Is an instruction of this CPUID feature advertised (and so translated)?
pub fn feature_advertised(f: F) -> bool {
    matches!(
        f,
        F::INTEL8086
            | F::INTEL186
            | F::INTEL286
            | F::INTEL386
            | F::INTEL486
            | F::X64
            | F::CPUID
            | F::TSC
            | F::MSR
            | F::CX8
            | F::CMOV
            | F::CLFSH
            | F::FPU
            | F::FPU287
            | F::FPU387
            | F::MMX
            | F::FXSR
            | F::SSE
            | F::SSE2
            | F::SSE3
            | F::SSSE3
            | F::SSE4_1
            | F::SSE4_2
            | F::POPCNT
            | F::CMPXCHG16B
            | F::LZCNT
            | F::BMI1
            | F::BMI2
            | F::MOVBE
            | F::SYSCALL
            | F::SEP
            | F::XSAVE
            | F::XSAVEOPT
            | F::PAUSE
            | F::MULTIBYTENOP
            | F::RDTSCP
            | F::RDPMC
            | F::RDPID
            | F::PREFETCHW
            | F::CLFLUSHOPT
            | F::CLWB
            // ENDBR32/64 are hint NOPs on CPUs without CET.
            | F::CET_IBT
            // Not in the policy (CPUID leaf 7), but the instructions are also gated by
            // CR4.FSGSBASE at run time, which a platform sets only when it advertises it.
            | F::FSGSBASE
    )
}

/// May this instruction run on the advertised CPU (all of its CPUID features advertised)?
pub fn insn_allowed(insn: &Instruction) -> bool {
    insn.cpuid_features().iter().all(|f| feature_advertised(*f))
}
