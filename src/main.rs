//! `xenolith`: run x86 guests without Xen, on any host.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

mod disk;
mod flat;
mod run;
mod term;
mod xlcfg;

#[derive(Parser)]
#[command(
    name = "xenolith",
    version,
    about = "Run x86 Xen PV guests without Xen, on any host"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Engine {
    /// The IR interpreter (every host).
    Interp,
    /// The host's JIT backend.
    Jit,
}

impl Engine {
    fn kind(self) -> jit::EngineKind {
        match self {
            Engine::Interp => jit::EngineKind::Interp,
            Engine::Jit => jit::EngineKind::Jit,
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Clock {
    Deterministic,
    Realtime,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum LogWhat {
    Hypercalls,
    Traps,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a Xen PV guest (the demo guest from roms/ when no kernel is given).
    Run {
        /// The kernel: an ELF with Xen notes or a bzImage.
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// The initrd (module).
        #[arg(long)]
        ramdisk: Option<PathBuf>,
        /// The kernel command line.
        #[arg(long)]
        cmdline: Option<String>,
        /// Guest RAM in MiB (default 256).
        #[arg(long)]
        memory: Option<u64>,
        #[arg(long, value_enum, default_value = "jit")]
        engine: Engine,
        /// Log hypercalls or traps to stderr (repeatable).
        #[arg(long, value_enum)]
        log: Vec<LogWhat>,
        /// Stop (exit status 1) after this many guest instructions.
        #[arg(long)]
        max_insns: Option<u64>,
        /// Guest time: deterministic (from the instruction count) or realtime. Default:
        /// realtime when stdin is a terminal (an interactive console), else deterministic.
        #[arg(long, value_enum)]
        clock: Option<Clock>,
        /// A virtual disk, as an xl disk specification: 'IMAGE,raw,xvda,rw' (or ro), or
        /// key=value form; `overlay=FILE` keeps IMAGE unmodified and writes to FILE.
        /// Repeatable; replaces the config file's `disk` list.
        #[arg(long)]
        disk: Vec<String>,
        /// Serve the guest's xenstore on this unix socket, speaking xenstored's protocol:
        /// `XENSTORED_PATH=PATH xenstore-ls /local/domain/1` (clients are domain 0).
        /// Makes the default clock realtime.
        #[arg(long, value_name = "PATH")]
        xenstore_socket: Option<PathBuf>,
        /// An xl.cfg file (name, type, kernel, ramdisk, cmdline/extra/root, memory, vcpus,
        /// disk, on_poweroff, on_crash); options given on the command line win.
        config: Option<PathBuf>,
    },
    /// Print what the loader sees in a kernel image and the layout the builder gives it.
    Info {
        image: PathBuf,
        /// Guest RAM in MiB for the layout.
        #[arg(long, default_value_t = 256)]
        memory: u64,
    },
    /// Run a flat x86-64 image (the engine's test and benchmark guests; see roms/README.md).
    Flat {
        /// The raw image, loaded and entered at 0x100000.
        image: PathBuf,
        #[arg(long, value_enum, default_value = "jit")]
        engine: Engine,
        /// Guest RAM in MiB.
        #[arg(long, default_value_t = 256)]
        memory: u64,
        /// Stop after this many guest instructions.
        #[arg(long)]
        max_insns: Option<u64>,
        /// Print engine statistics to stderr at the end.
        #[arg(long)]
        stats: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xenolith: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Run {
            kernel,
            ramdisk,
            cmdline,
            memory,
            engine,
            log,
            max_insns,
            clock,
            disk,
            xenstore_socket,
            config,
        } => {
            let cfg = match &config {
                Some(p) => {
                    let text = std::fs::read_to_string(p)
                        .with_context(|| format!("reading {}", p.display()))?;
                    xlcfg::parse(&text).with_context(|| format!("{}", p.display()))?
                }
                None => xlcfg::XlConfig::default(),
            };
            let specs = if disk.is_empty() { &cfg.disks } else { &disk };
            let mut disks: Vec<disk::DiskSpec> = Vec::new();
            for s in specs {
                let d = disk::parse(s)?;
                if disks.iter().any(|o| o.devid == d.devid) {
                    anyhow::bail!("disk '{s}': {} is given twice", d.vdev);
                }
                disks.push(d);
            }
            let status = run::run(run::RunArgs {
                kernel: kernel.or(cfg.kernel.map(PathBuf::from)),
                ramdisk: ramdisk.or(cfg.ramdisk.map(PathBuf::from)),
                cmdline: cmdline.or(cfg.cmdline).unwrap_or_default(),
                memory_mib: memory.or(cfg.memory_mib).unwrap_or(256),
                clock: match clock {
                    Some(Clock::Deterministic) => xen_pv::core::time::ClockMode::Deterministic,
                    Some(Clock::Realtime) => xen_pv::core::time::ClockMode::Realtime,
                    // An interactive console, or host clients of the store: the guest lives
                    // in real time.
                    None if term::Terminal::is_tty() || xenstore_socket.is_some() => {
                        xen_pv::core::time::ClockMode::Realtime
                    }
                    None => xen_pv::core::time::ClockMode::Deterministic,
                },
                name: cfg.name.clone().unwrap_or_default(),
                engine: engine.kind(),
                log: xen_pv::pv::LogFlags {
                    hypercalls: log.contains(&LogWhat::Hypercalls),
                    traps: log.contains(&LogWhat::Traps),
                },
                max_insns,
                disks,
                xenstore_socket,
            })?;
            Ok(ExitCode::from(status))
        }
        Cmd::Info { image, memory } => {
            run::info(&image, memory)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Flat {
            image,
            engine,
            memory,
            max_insns,
            stats,
        } => {
            let bytes =
                std::fs::read(&image).with_context(|| format!("reading {}", image.display()))?;
            let opts = flat::FlatOptions {
                ram_mib: memory,
                engine: engine.kind(),
                max_insns,
                echo: true,
            };
            let mut e = flat::load(&bytes, &opts)?;
            let t0 = std::time::Instant::now();
            let r = flat::run(&mut e, &opts);
            let dt = t0.elapsed();
            if stats {
                let s = e.stats();
                eprintln!(
                    "engine {}: {} guest instructions in {:.3} s; {} TBs ({} instructions) translated in {:.3} s ({:.0} insns/s); {} chains, {} invalidations, {} SMC restarts; {} lookups ({} indirect-jump cache misses)",
                    e.core.backend.name(),
                    e.env.icount,
                    dt.as_secs_f64(),
                    s.tbs_translated,
                    s.insns_translated,
                    s.translate_ns as f64 / 1e9,
                    s.insns_translated as f64 / (s.translate_ns.max(1) as f64 / 1e9),
                    s.chains,
                    s.invalidations,
                    s.smc_restarts,
                    s.lookups,
                    s.exit_indirect
                );
            }
            let r = r?;
            debug_assert_eq!(r.icount, e.env.icount);
            Ok(ExitCode::from(r.status))
        }
    }
}
