//! `xenolith run` and `xenolith info`: build a PV domain from a kernel image and run it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xen_pv::builder::{self, DomainConfig};
use xen_pv::image::GuestImage;
use xen_pv::pv::{LogFlags, PvDomain, RunOptions, Shutdown};

/// The demo guest `xenolith run` boots with no kernel given.
pub const DEFAULT_KERNEL: &str = "roms/pv/hello.elf";

pub struct RunArgs {
    pub kernel: Option<PathBuf>,
    pub ramdisk: Option<PathBuf>,
    pub cmdline: String,
    pub memory_mib: u64,
    pub engine: jit::EngineKind,
    pub log: LogFlags,
    pub max_insns: Option<u64>,
    pub clock: xen_pv::core::time::ClockMode,
    /// The domain's name (xenstore).
    pub name: String,
    /// Virtual disks (xl disk specifications), served by the block back end.
    pub disks: Vec<crate::disk::DiskSpec>,
    /// Serve the store on this unix socket (xenstored's protocol, clients as domain 0).
    pub xenstore_socket: Option<PathBuf>,
}

/// Exit status for a shutdown: 0 poweroff (and reboot/suspend, which end the run), 1 crash.
pub fn exit_status(s: &Shutdown) -> u8 {
    match s {
        Shutdown::Poweroff | Shutdown::Reboot | Shutdown::Suspend | Shutdown::Detached => 0,
        Shutdown::Crash(_) | Shutdown::Watchdog | Shutdown::Budget => 1,
    }
}

fn default_kernel() -> PathBuf {
    // Relative to the working directory, else next to the source tree the binary was built from.
    let p = PathBuf::from(DEFAULT_KERNEL);
    if p.is_file() {
        return p;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_KERNEL)
}

/// Errors here are usage or image errors (exit status 2); the guest's own end is the Ok value.
pub fn run(a: RunArgs) -> Result<u8> {
    let kpath = a.kernel.clone().unwrap_or_else(default_kernel);
    let bytes =
        std::fs::read(&kpath).with_context(|| format!("reading kernel {}", kpath.display()))?;
    let image =
        GuestImage::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", kpath.display()))?;
    let module = match &a.ramdisk {
        Some(p) => {
            Some(std::fs::read(p).with_context(|| format!("reading ramdisk {}", p.display()))?)
        }
        None => None,
    };
    if a.memory_mib < 4 || a.memory_mib > 65536 {
        bail!("--memory {} MiB: must be between 4 and 65536", a.memory_mib);
    }
    let mut e =
        frontend_x86::new_engine(a.memory_mib << 20, a.engine).context("allocating guest RAM")?;
    let cfg = DomainConfig {
        cmdline: a.cmdline.as_bytes(),
        module: module.as_deref(),
        ..Default::default()
    };
    let dom = builder::build(e.ram(), &image, &cfg)
        .map_err(|err| anyhow::anyhow!("{}: {err}", kpath.display()))?;
    drop(image);
    let mut pv = PvDomain::new(
        dom,
        RunOptions {
            log: a.log,
            max_insns: a.max_insns,
            clock: Some(a.clock),
            name: a.name.clone(),
        },
    );
    // Console input from stdin (raw mode on a terminal; Ctrl-] detaches).
    pv.input = Some(Box::new(crate::term::Terminal::stdin()));
    // Open the disks before the guest starts: a missing image is a usage error.
    let mut disks = Vec::new();
    for d in &a.disks {
        disks.push((d, open_disk(d)?));
    }
    // The socket before the guest starts: a bad path is a usage error.
    if let Some(p) = &a.xenstore_socket {
        pv.xsock = Some(
            xen_pv::pv::xsock::XsSocket::bind(p)
                .map_err(|err| anyhow::anyhow!("--xenstore-socket {err}"))?,
        );
    }
    pv.start(&mut e)
        .map_err(|err| anyhow::anyhow!("{}: {err}", kpath.display()))?;
    // The console back end (xenconsoled's role), writing into the domain's console log.
    let console =
        devices::console::ConsoleBack::new(xen_pv::core::evtchn::GUEST_DOMID, pv.console_sink());
    pv.add_console(&mut e, Box::new(console));
    for (d, storage) in disks {
        let cfg =
            devices::blk::VbdConfig::new(xen_pv::core::evtchn::GUEST_DOMID, d.devid, !d.writable);
        let nodes = devices::blk::toolstack_nodes(&cfg, &d.target);
        pv.add_backend(
            &mut e,
            Box::new(devices::blk::BlkBack::new(cfg, storage)),
            &nodes,
        );
    }
    let s = pv.run(&mut e);
    pv.shutdown_backends(&mut e);
    match &s {
        Shutdown::Poweroff => {}
        Shutdown::Reboot => eprintln!("xenolith: the guest asked to reboot; ending the run"),
        Shutdown::Suspend => eprintln!("xenolith: the guest suspended; ending the run"),
        Shutdown::Crash(why) => eprintln!("xenolith: guest crashed: {why}"),
        Shutdown::Watchdog => eprintln!("xenolith: the guest's watchdog fired"),
        Shutdown::Budget => eprintln!(
            "xenolith: instruction budget exhausted after {} instructions",
            e.env.icount
        ),
        Shutdown::Detached => {
            eprintln!("\r\nxenolith: detached from the console; the guest was stopped")
        }
    }
    // Restore the terminal before the caller prints anything else.
    drop(pv);
    if std::env::var_os("XENOLITH_STATS").is_some() {
        let st = e.stats();
        eprintln!(
            "xenolith: {} guest instructions; {} TBs ({} instructions) translated in {:.3} s; {} lookups, {} chains, {} invalidations, {} SMC restarts, {} code flushes, {} TLB flushes, {} page flushes; run-loop returns: {} direct, {} indirect, {} platform, {} exception, {} sync; {} jump-cache hits; jump caches kept {} and dropped {} times at TLB flushes; {} victim-TLB hits, {} page walks",
            e.env.icount, st.tbs_translated, st.insns_translated, st.translate_ns as f64 / 1e9, st.lookups, st.chains, st.invalidations, st.smc_restarts, st.flushes, st.tlb_flushes, st.tlb_page_flushes,
            st.exit_jump, st.exit_indirect, st.exit_platform, st.exit_exception, st.exit_sync, st.jc_hits, st.jc_kept, st.jc_dropped, st.victim_hits, st.walks
        );
    }
    Ok(exit_status(&s))
}

/// The storage behind a disk: the image (read-only unless the disk is writable), or the
/// image read-only under a copy-on-write overlay.
fn open_disk(d: &crate::disk::DiskSpec) -> Result<Box<dyn devices::blk::Storage>> {
    use devices::blk::storage::{CowOverlay, RawFile};
    Ok(match &d.overlay {
        Some(o) => {
            Box::new(CowOverlay::open(&d.target, o).with_context(|| {
                format!("disk {}: opening {} with overlay {o}", d.vdev, d.target)
            })?)
        }
        None => Box::new(
            RawFile::open(&d.target, !d.writable)
                .with_context(|| format!("disk {}: opening {}", d.vdev, d.target))?,
        ),
    })
}

/// `xenolith info IMG`: what the loader sees and where the builder would put it.
pub fn info(path: &Path, memory_mib: u64) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let image =
        GuestImage::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    println!("{}: {}", path.display(), image.guest_type());
    if let Some(bz) = &image.container.bzimage {
        println!(
            "bzImage: boot protocol {:#06x}, payload {:?}",
            bz.protocol, bz.compression
        );
    }
    println!("Xen notes: {:#?}", image.xen);
    let mut ram = jit::GuestRam::new(memory_mib << 20).context("allocating scratch RAM")?;
    let dom = builder::build(&mut ram, &image, &DomainConfig::default())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    println!("layout with {memory_mib} MiB:\n{}", dom.layout);
    Ok(())
}
