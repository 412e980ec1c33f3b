//! Flat guests: a raw x86-64 binary run on the engine with a minimal platform, for the
//! engine's own test programs and benchmarks (`xenolith flat`).
//!
//! The contract a flat image is built for:
//! - loaded at physical = virtual address 0x100000 and entered there in 64-bit mode at
//!   CPL 0, with the first 4 GiB identity-mapped (2 MiB pages) and rsp at the top of RAM;
//! - `out 0xe9, al` writes a byte to the console (stdout);
//! - `out 0xf4, al` ends the run with exit status `al`; `hlt` ends it with status 0;
//! - `rdtsc` returns the retired-instruction count (deterministic), `cpuid` a fixed policy.

use anyhow::{bail, Context, Result};
use frontend_x86::{PlatformOp, X86State};
use jit::{Engine, EngineKind, StopReason};
use std::io::Write;

pub const LOAD_ADDR: u64 = 0x10_0000;
const PT_BASE: u64 = 0x1000;

/// Outcome of a flat run.
#[derive(Debug)]
pub struct FlatExit {
    pub status: u8,
    /// Guest instructions retired.
    pub icount: u64,
}

pub struct FlatOptions {
    pub ram_mib: u64,
    pub engine: EngineKind,
    pub max_insns: Option<u64>,
    /// Echo console output to stdout as it is produced.
    pub echo: bool,
}

/// Build identity page tables for 0..4 GiB with 2 MiB pages at PT_BASE.
fn build_page_tables(e: &mut Engine) {
    let ram = e.ram();
    let l4 = PT_BASE;
    let l3 = PT_BASE + 0x1000;
    ram.write_u64(l4, l3 | 0x7);
    for i in 0..4u64 {
        let l2 = PT_BASE + 0x2000 + i * 0x1000;
        ram.write_u64(l3 + i * 8, l2 | 0x7);
        for j in 0..512u64 {
            ram.write_u64(l2 + j * 8, ((i << 30) | (j << 21)) | 0x87);
        }
    }
}

pub fn load(image: &[u8], opts: &FlatOptions) -> Result<Engine> {
    let ram_size = opts.ram_mib << 20;
    if ram_size < LOAD_ADDR + image.len() as u64 + 0x10000 {
        bail!(
            "image of {} bytes does not fit in {} MiB of RAM",
            image.len(),
            opts.ram_mib
        );
    }
    let mut e = frontend_x86::new_engine(ram_size, opts.engine).context("allocating guest RAM")?;
    build_page_tables(&mut e);
    e.ram().write(LOAD_ADDR, image);
    frontend_x86::setup_long_mode(&mut e.env, PT_BASE, 0);
    let mut s = X86State(&mut e.env);
    s.set_rip(LOAD_ADDR);
    s.set_gpr(4, ram_size - 16);
    Ok(e)
}

/// Run a loaded flat guest to its exit.
pub fn run(e: &mut Engine, opts: &FlatOptions) -> Result<FlatExit> {
    let out = std::io::stdout();
    if let Some(m) = opts.max_insns {
        e.env.icount_limit = m;
    }
    loop {
        match e.run() {
            StopReason::Budget => {
                let ic = e.env.icount;
                bail!(
                    "instruction budget of {} exhausted at rip {:#x}",
                    ic,
                    X86State(&mut e.env).rip()
                )
            }
            StopReason::SingleStep => {
                bail!(
                    "single-step trap (RFLAGS.TF) at rip {:#x}: flat guests have no #DB handler",
                    X86State(&mut e.env).rip()
                )
            }
            StopReason::Exception(f) => {
                bail!(
                    "guest exception {} (error code {:?}, address {:#x}) at rip {:#x}",
                    f.vector,
                    f.error_code,
                    f.addr,
                    X86State(&mut e.env).rip()
                )
            }
            StopReason::Platform { op, arg, len } => {
                let mut s = X86State(&mut e.env);
                let rip = s.rip();
                let next = rip + len as u64;
                match PlatformOp::from_u32(op) {
                    Some(PlatformOp::Io) => {
                        let code = iced_code(arg);
                        let port = match code {
                            iced_x86::Code::Out_imm8_AL => {
                                // re-read the immediate from the instruction bytes
                                let mut b = [0u8; 2];
                                e.ram().read(rip, &mut b);
                                b[1] as u64
                            }
                            iced_x86::Code::Out_DX_AL => X86State(&mut e.env).gpr(2) & 0xffff,
                            _ => bail!("unsupported I/O instruction {code:?} at {rip:#x}"),
                        };
                        let mut s = X86State(&mut e.env);
                        let al = s.gpr(0) as u8;
                        match port {
                            0xe9 => {
                                if opts.echo {
                                    let mut o = out.lock();
                                    o.write_all(&[al])?;
                                    if al == b'\n' {
                                        o.flush()?;
                                    }
                                }
                            }
                            0xf4 => {
                                s.set_rip(next);
                                e.env.icount += 1;
                                return Ok(FlatExit { status: al, icount: e.env.icount });
                            }
                            p => bail!("write to unknown port {p:#x} at {rip:#x}"),
                        }
                        s.set_rip(next);
                    }
                    Some(PlatformOp::Hlt) => {
                        s.set_rip(next);
                        e.env.icount += 1;
                        return Ok(FlatExit { status: 0, icount: e.env.icount });
                    }
                    Some(PlatformOp::Rdtsc) => {
                        let t = s.0.icount;
                        s.set_gpr(0, t & 0xffff_ffff);
                        s.set_gpr(2, t >> 32);
                        s.set_rip(next);
                    }
                    Some(PlatformOp::Cpuid) => {
                        let leaf = s.gpr(0) as u32;
                        let (a, b, c, d) = match leaf {
                            0 => (1, u32::from_le_bytes(*b"Xeno"), u32::from_le_bytes(*b"lith"), u32::from_le_bytes(*b"XenX")),
                            // family 6; CX8, CMOV, FXSR, SSE, SSE2, TSC; SSE3 none yet.
                            1 => (0x600, 0, 0, (1 << 8) | (1 << 15) | (1 << 4)),
                            _ => (0, 0, 0, 0),
                        };
                        s.set_gpr(0, a as u64);
                        s.set_gpr(3, b as u64);
                        s.set_gpr(1, c as u64);
                        s.set_gpr(2, d as u64);
                        s.set_rip(next);
                    }
                    _ => bail!("platform instruction {op} (arg {arg:#x}) not supported by the flat platform at {rip:#x}"),
                }
                e.env.icount += 1;
            }
        }
    }
}

fn iced_code(v: u64) -> iced_x86::Code {
    iced_x86::Code::try_from(v as usize).unwrap_or(iced_x86::Code::INVALID)
}
