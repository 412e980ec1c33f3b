//! Runs a test case on Xenolith's engine with the same memory layout the native runner
//! gives the host CPU: code at CODE_ADDR, the data area at DATA_ADDR with unmapped guard
//! pages around it, 64-bit user mode (CPL 3).

use frontend_x86::state::*;
use frontend_x86::{PlatformOp, X86State};
use jit::{Engine, EngineKind, StopReason};

use crate::gen::Mode;
use crate::native::{
    FpState, NativeException, NativeOutcome, RegState, CODE_ADDR, CODE_SIZE, DATA_ADDR, DATA_SIZE,
    F80,
};

const RAM: u64 = 4 << 20;
const CODE_PHYS: u64 = 0x10_0000;
const DATA_PHYS: u64 = 0x20_0000;
const PT: u64 = 0x1000;
/// Where the emulator keeps its copy of Linux's GDT (inside the code area, past any test).
const GDT_OFF: u64 = 0xf000;
/// GDT entries as Linux 6.x sets them up (arch/x86/kernel/cpu/common.c): kernel 32-bit
/// code, kernel code, kernel data, user 32-bit code, user data, user code, then the 64-bit
/// TSS (busy) at 8-9; 16 entries, limit 127.
const LINUX_GDT: [u64; 16] = [
    0,
    0x00cf_9b00_0000_ffff,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x00cf_fb00_0000_ffff,
    0x00cf_f300_0000_ffff,
    0x00af_fb00_0000_ffff,
    0,
    0x0000_8b00_0000_4087,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
];

pub struct EmuRunner {
    e: Engine,
}

impl EmuRunner {
    pub fn new(kind: EngineKind) -> EmuRunner {
        let mut e = frontend_x86::new_engine(RAM, kind).expect("guest RAM");
        let ram = e.ram();
        // L4 -> L3 -> L2; L2[128] -> code L1, L2[256] -> data L1.
        ram.write_u64(PT, (PT + 0x1000) | 7);
        ram.write_u64(PT + 0x1000, (PT + 0x2000) | 7);
        let l2 = PT + 0x2000;
        let code_l1 = PT + 0x3000;
        let data_l1 = PT + 0x4000;
        ram.write_u64(l2 + ((CODE_ADDR >> 21) & 511) * 8, code_l1 | 7);
        ram.write_u64(l2 + ((DATA_ADDR >> 21) & 511) * 8, data_l1 | 7);
        for i in 0..(CODE_SIZE as u64 / 4096) {
            ram.write_u64(code_l1 + i * 8, (CODE_PHYS + i * 4096) | 7);
        }
        for i in 0..(DATA_SIZE as u64 / 4096) {
            ram.write_u64(data_l1 + i * 8, (DATA_PHYS + i * 4096) | 7);
        }
        // Linux x86_64's GDT (the entries user code can observe), in the last code page.
        for (i, d) in LINUX_GDT.iter().enumerate() {
            ram.write_u64(CODE_PHYS + GDT_OFF + 8 * i as u64, *d);
        }
        EmuRunner { e }
    }

    /// Run `code` from CODE_ADDR until it runs off its end (a HLT is appended), raises an
    /// exception, or executes `max_insns` instructions (reported as Timeout).
    pub fn run(
        &mut self,
        code: &[u8],
        init: &RegState,
        data: &[u8],
        max_insns: u64,
    ) -> NativeOutcome {
        self.run_mode(Mode::Long, code, init, data, max_insns)
    }

    /// Run `code` (placed at `mode.code_start()`) in 64-bit or compatibility mode.
    pub fn run_mode(
        &mut self,
        mode: Mode,
        code: &[u8],
        init: &RegState,
        data: &[u8],
        max_insns: u64,
    ) -> NativeOutcome {
        let e = &mut self.e;
        e.flush_code();
        let start = mode.code_start();
        let mut c = vec![0xcc; (start - CODE_ADDR) as usize];
        c.extend_from_slice(code);
        c.push(0xf4);
        // Pad with int3 like the native runner so running past the end is visible.
        c.resize((c.len() + 64).min(CODE_SIZE), 0xcc);
        e.ram().write(CODE_PHYS, &c);
        e.ram().write(DATA_PHYS, data);
        e.env.g = [0; jit::env::NGLOBALS];
        frontend_x86::setup_long_mode(&mut e.env, PT, 3);
        e.tlb_flush();
        let mut s = X86State(&mut e.env);
        // As Linux runs user code: CR0.NE (x87 errors as #MF) and ET, CR4.OSFXSR and
        // OSXMMEXCPT (SSE enabled, unmasked SSE exceptions as #XM); CR0.TS and EM clear.
        s.set_g(
            G_CR0,
            (s.g(G_CR0) | cr0::MP | 1 << 5 | 1 << 4) & !(cr0::TS | cr0::EM),
        );
        s.set_g(G_CR4, s.g(G_CR4) | cr4::OSFXSR | cr4::OSXMMEXCPT);
        set_fp_state(&mut s, &init.fp);
        for i in 0..16 {
            s.set_gpr(i, init.gpr[i]);
        }
        s.set_rflags((init.rflags & crate::native::RFLAGS_INPUT_MASK) | fl::IF | fl::FIXED1);
        s.set_rip(start);
        // The selectors a Linux process runs with: CS 0x33 (0x23 in compatibility mode),
        // SS 0x2b, DS/ES null (0x2b in compatibility mode, loaded by the blob), FS/GS null.
        let data = 0x3 | attr::S | 3 << attr::DPL_SHIFT | attr::P | attr::DB | attr::G;
        s.set_seg(
            Seg::Cs,
            0x33,
            0,
            0xffff_ffff,
            0xb | attr::S | 3 << attr::DPL_SHIFT | attr::P | attr::L | attr::G,
        );
        s.set_seg(Seg::Ss, 0x2b, 0, 0xffff_ffff, data);
        for sg in [Seg::Ds, Seg::Es, Seg::Fs, Seg::Gs] {
            s.set_seg(sg, 0, 0, 0, 0);
        }
        if mode == Mode::Compat {
            // Linux's USER32_CS: a 32-bit code segment in long mode.
            s.set_seg(
                Seg::Cs,
                0x23,
                0,
                0xffff_ffff,
                0xb | attr::S | 3 << attr::DPL_SHIFT | attr::P | attr::DB | attr::G,
            );
            s.set_seg(Seg::Ds, 0x2b, 0, 0xffff_ffff, data);
            s.set_seg(Seg::Es, 0x2b, 0, 0xffff_ffff, data);
        }
        s.set_g(G_GDTR_BASE, CODE_ADDR + GDT_OFF);
        s.set_g(G_GDTR_LIMIT, LINUX_GDT.len() as u64 * 8 - 1);
        e.env.icount = 0;
        e.env.icount_limit = max_insns;
        let end = start + code.len() as u64;
        let stop = e.run();
        let mut regs = RegState::default();
        let s = X86State(&mut e.env);
        for i in 0..16 {
            regs.gpr[i] = s.gpr(i);
        }
        regs.rflags = s.rflags();
        regs.rip = s.rip();
        regs.fp = fp_state(&s);
        let mut d = vec![0u8; DATA_SIZE];
        e.ram().read(DATA_PHYS, &mut d);
        match stop {
            StopReason::Platform { op, .. } if op == PlatformOp::Hlt as u32 && regs.rip == end => {
                NativeOutcome::Completed { regs, data: d }
            }
            StopReason::Platform { op, arg, len } if op == PlatformOp::SoftInt as u32 => {
                // INT3/INTn are traps: the host reports rip after the instruction.
                regs.rip += len as u64;
                let vector = (arg & 0xff) as u8;
                NativeOutcome::Exception {
                    regs,
                    data: d,
                    exc: NativeException {
                        vector,
                        error_code: 0,
                        cr2: 0,
                    },
                }
            }
            StopReason::Platform { op, .. } => {
                // Any other platform instruction at CPL 3 is #GP(0) on the host (or #UD).
                NativeOutcome::Exception {
                    regs,
                    data: d,
                    exc: NativeException {
                        vector: 0xff,
                        error_code: op as u64,
                        cr2: 0,
                    },
                }
            }
            StopReason::Exception(f) => NativeOutcome::Exception {
                regs,
                data: d,
                exc: NativeException {
                    vector: f.vector,
                    error_code: f.error_code.unwrap_or(0) as u64,
                    cr2: if f.vector == 14 { f.addr } else { 0 },
                },
            },
            StopReason::Budget => NativeOutcome::Timeout,
            // RFLAGS.TF: the #DB trap after an instruction (rip after it).
            StopReason::SingleStep => NativeOutcome::Exception {
                regs,
                data: d,
                exc: NativeException {
                    vector: 1,
                    error_code: 0,
                    cr2: 0,
                },
            },
        }
    }
}

/// Load the engine's x87/MMX/SSE globals from `fp` (ST order in `fp.st` to physical
/// registers; FOP, FIP, FCS, FDP and FDS zero, as the native runner's FXRSTOR image has them).
pub fn set_fp_state(s: &mut X86State, fp: &FpState) {
    s.set_g(G_FCW, fp.fcw as u64);
    s.set_g(G_FSW, fp.fsw as u64);
    s.set_g(G_FTW, fp.ftw as u64);
    s.set_g(G_MXCSR, fp.mxcsr as u64);
    for r in 0..8 {
        let v = fp.phys(r);
        s.set_g(G_FPR0 + 2 * r as jit::ir::Global, v.sig);
        s.set_g(G_FPR0 + 2 * r as jit::ir::Global + 1, v.se as u64);
    }
    for (i, x) in fp.xmm.iter().enumerate() {
        s.set_g(xmm_g(i as u32), x[0]);
        s.set_g(xmm_g(i as u32) + 1, x[1]);
    }
    for g in [G_FOP, G_FIP, G_FCS, G_FDP, G_FDS] {
        s.set_g(g, 0);
    }
}

/// The engine's x87/MMX/SSE state in the native runner's form.
pub fn fp_state(s: &X86State) -> FpState {
    let mut fp = FpState {
        fcw: s.g(G_FCW) as u16,
        fsw: s.g(G_FSW) as u16,
        ftw: s.g(G_FTW) as u8,
        mxcsr: s.g(G_MXCSR) as u32,
        ..FpState::default()
    };
    for r in 0..8 {
        let v = F80 {
            sig: s.g(G_FPR0 + 2 * r as jit::ir::Global),
            se: s.g(G_FPR0 + 2 * r as jit::ir::Global + 1) as u16,
        };
        fp.set_phys(r, v);
    }
    for i in 0..16 {
        fp.xmm[i] = [s.g(xmm_g(i as u32)), s.g(xmm_g(i as u32) + 1)];
    }
    fp
}
