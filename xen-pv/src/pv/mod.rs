//! Running a PV domain on the engine: vCPU 0's platform loop, the hypercall table, guest
//! virtual-memory copies for hypercall arguments, the console, and domain shutdown.
//!
//! The engine stops on every platform instruction ([`frontend_x86::PlatformOp`]) and on
//! every guest exception; this module gives them Xen's meaning:
//! - 64-bit: `syscall` from guest kernel mode is a hypercall (number in rax, arguments in
//!   rdi rsi rdx r10 r8; rcx and r11 are clobbered as by the instruction). 32-bit PAE:
//!   `int $0x82` from ring 1 (ebx ecx edx esi edi).
//! - The hypercall page, when the image's HYPERCALL_PAGE note asks for one, is filled with
//!   Xen's stubs before the guest starts.
//! - An exception the guest has no handler for, and anything Xen would turn into a domain
//!   crash, ends the run as [`Shutdown::Crash`] with the reason: never an emulator panic.

pub mod backends;
pub mod console;
pub mod desc;
pub mod emulate;
pub mod events;
pub mod grant;
pub mod hypercall;
pub mod ldt;
pub mod memory;
pub mod mmu;
mod ptwr;
pub mod xs;
pub mod xsock;

use frontend_x86::state::{Seg, X86State, G_CR2};
use frontend_x86::PlatformOp;
use jit::engine::Access;
use jit::ir::AccessKind;
use jit::{Engine, GuestFault, StopReason};

use std::cell::RefCell;
use std::rc::Rc;

use crate::builder::{Domain, GuestType};
use crate::core::backend::ConsoleSink;
use crate::core::GuestPhys;

/// How a domain's run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shutdown {
    Poweroff,
    Reboot,
    Suspend,
    /// The guest crashed (SHUTDOWN_crash) or did something Xen kills a domain for.
    Crash(String),
    /// The instruction budget ran out.
    Budget,
    /// The watchdog fired.
    Watchdog,
    /// The user detached from the console (Ctrl-]).
    Detached,
}

/// What to log to stderr.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogFlags {
    pub hypercalls: bool,
    pub traps: bool,
}

/// Per-run options.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub log: LogFlags,
    /// Stop after this many guest instructions.
    pub max_insns: Option<u64>,
    /// Deterministic (time from the instruction count) or realtime.
    pub clock: Option<crate::core::time::ClockMode>,
    /// The domain's name (xenstore `name`); empty: "xenolith".
    pub name: String,
}

/// A PV domain with one vCPU, on the engine.
pub struct PvDomain {
    pub dom: Domain,
    pub opts: RunOptions,
    /// Guest kernel mode (the virtual privilege bit; 64-bit guests run both modes in ring 3).
    pub kernel_mode: bool,
    /// VMASST_TYPE_* bits the guest enabled.
    pub vm_assist: u64,
    pub trap_table: hypercall::TrapTable,
    pub callbacks: hypercall::Callbacks,
    pub kernel_ss: u64,
    pub kernel_sp: u64,
    /// The guest's console output (ring and console_io), shared with the console back end
    /// ([`PvDomain::console_sink`]).
    pub console: Rc<RefCell<console::ConsoleLog>>,
    /// Where console input comes from (none: the guest gets no input).
    pub input: Option<Box<dyn console::ConsoleInput>>,
    /// Event channel ports of the console and xenstore rings: the store's is bound to the
    /// platform's xenstored, the console's offered to domain 0 for the console back end.
    pub console_port: u32,
    pub store_port: u32,
    /// The xenstore (created when the domain starts).
    pub xs: Option<xs::Xenstore>,
    /// The host's xenstored socket (`--xenstore-socket`): domain 0 clients of the store.
    pub xsock: Option<xsock::XsSocket>,
    /// The PV back ends (`devices/`).
    pub backends: backends::Backends,
    /// The guest's LDT (MMUEXT_SET_LDT).
    pub ldt: ldt::Ldt,
    pub shutdown: Option<Shutdown>,
    pub mmu: mmu::PvMmu,
    /// The frames the domain owns (memory_op reservations).
    pub mem: memory::MemReservation,
    /// The virtual IOPL (physdev_op set_iopl).
    pub iopl: u8,
    pub clock: crate::core::time::VirtualClock,
    pub timers: crate::core::time::Timers,
    pub evtchn: crate::core::evtchn::EventChannels,
    /// The domain's grant table (its frames are platform frames).
    pub grant: crate::core::grant::GrantTable,
    /// Debug registers dr0-dr7 as the guest set them (set_debugreg).
    pub debugreg: [u64; 8],
    /// VCPUOP_register_runstate_memory_area: guest virtual address of vcpu_runstate_info.
    pub runstate_va: Option<u64>,
    /// Nanoseconds vCPU 0 spent blocked.
    pub blocked_ns: u64,
    /// Hypercalls that returned -ENOSYS, by number (for the log and tests).
    pub unimplemented: Vec<u64>,
}

/// Size of the window in which hypercall handlers may copy guest memory at once.
pub const MAX_COPY: usize = 1 << 20;

impl PvDomain {
    pub fn new(dom: Domain, opts: RunOptions) -> PvDomain {
        let kernel_ss = dom.vcpu.kernel_ss as u64;
        let kernel_sp = dom.vcpu.kernel_sp;
        let clock = crate::core::time::VirtualClock::new(
            opts.clock
                .unwrap_or(crate::core::time::ClockMode::Deterministic),
        );
        let width = match dom.layout.guest {
            GuestType::X86_64 => crate::core::evtchn::GuestWidth::W64,
            GuestType::X86_32Pae => crate::core::evtchn::GuestWidth::W32,
        };
        let evtchn = crate::core::evtchn::EventChannels::new(
            width,
            dom.layout.platform.shared_info_mfn << 12,
        );
        let mem = memory::MemReservation::new(
            dom.layout.nr_pages,
            dom.layout.ram_pages,
            dom.layout.nr_pages..dom.layout.platform.first_mfn,
        );
        let p = &dom.layout.platform;
        let grant = crate::core::grant::guest_table(
            dom.layout.nr_pages,
            crate::core::grant::GrantFrames {
                shared_mfn: p.grant_mfn,
                shared_frames: p.grant_frames as u32,
                status_mfn: p.grant_status_mfn,
                status_frames: p.grant_status_frames as u32,
            },
        );
        PvDomain {
            grant,
            dom,
            opts,
            kernel_mode: true,
            vm_assist: 0,
            trap_table: hypercall::TrapTable::default(),
            callbacks: hypercall::Callbacks::default(),
            kernel_ss,
            kernel_sp,
            console: Rc::new(RefCell::new(console::ConsoleLog::new(Box::new(
                std::io::stdout(),
            )))),
            input: None,
            console_port: 2,
            store_port: 1,
            xs: None,
            xsock: None,
            shutdown: None,
            mmu: mmu::PvMmu::default(),
            mem,
            backends: backends::Backends::default(),
            ldt: ldt::Ldt::default(),
            iopl: 0,
            clock,
            timers: Default::default(),
            evtchn,
            debugreg: [
                0,
                0,
                0,
                0,
                0,
                0,
                crate::builder::vcpu::DR6_DEFAULT,
                crate::builder::vcpu::DR7_DEFAULT,
            ],
            runstate_va: None,
            blocked_ns: 0,
            unimplemented: Vec::new(),
        }
    }

    /// Process the guest's xenstore requests and notify it of the responses.
    pub fn service_xenstore(&mut self, e: &mut Engine) {
        let Some(xs) = self.xs.as_mut() else { return };
        if xs.service(e.ram()) {
            let p = self.store_port;
            self.evtchn.raise(e.ram(), p);
        }
        // The guest's writes may have fired back-end watches.
        self.run_backends(e);
    }

    /// Serve the host's xenstore socket: accept clients, handle their requests, then (as
    /// [`PvDomain::service_xenstore`]) let the back ends see their watch events and flush
    /// what the guest got into its ring, notifying its store port; last, write the replies
    /// and events the clients got. `force`: poll even when the rate limit says not yet.
    /// True when anything happened.
    pub fn service_xsock(&mut self, e: &mut Engine, force: bool) -> bool {
        let (Some(sock), Some(xs)) = (self.xsock.as_mut(), self.xs.as_mut()) else {
            return false;
        };
        if !force && !sock.due() {
            return false;
        }
        let got = sock.poll_in(xs);
        if got {
            self.run_backends(e);
        }
        let (Some(sock), Some(xs)) = (self.xsock.as_mut(), self.xs.as_mut()) else {
            return got;
        };
        let wrote = sock.flush_out(xs);
        got || wrote
    }

    /// Wait up to `timeout` (forever when None) for the host: console input or traffic on
    /// the xenstore socket. True when something came. Without a socket this is a plain
    /// wait for input; with one, the wait is cut in slices (short ones right after
    /// traffic, as a client's requests follow each other) and the socket is served
    /// between them.
    pub fn wait_host(&mut self, e: &mut Engine, timeout: Option<std::time::Duration>) -> bool {
        use std::time::{Duration, Instant};
        if self.xsock.is_none() {
            return self.input.is_some() && self.poll_input(e, Some(timeout));
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let hot = self.xsock.as_ref().is_some_and(|s| s.hot());
            let mut slice = if hot {
                Duration::from_micros(200)
            } else {
                Duration::from_millis(10)
            };
            if let Some(d) = deadline {
                slice = slice.min(d.saturating_duration_since(Instant::now()));
            }
            let input = if self.input.is_some() {
                self.poll_input(e, Some(Some(slice)))
            } else {
                std::thread::sleep(slice);
                false
            };
            let sock = self.service_xsock(e, true);
            if input || sock || self.shutdown.is_some() {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
        }
    }

    /// Take console input (waiting up to `wait` for some when given) and hand it to the
    /// console back end, which produces it into the ring. Returns true when input arrived.
    pub fn poll_input(
        &mut self,
        e: &mut Engine,
        wait: Option<Option<std::time::Duration>>,
    ) -> bool {
        let Some(src) = self.input.as_mut() else {
            return false;
        };
        let ev = match wait {
            None => src.poll(),
            Some(t) => src.wait(t),
        };
        match ev {
            console::InputEvent::None => false,
            console::InputEvent::Bytes(b) => {
                self.console_input(e, &b);
                true
            }
            console::InputEvent::Detach => {
                self.shutdown = Some(Shutdown::Detached);
                true
            }
            console::InputEvent::Closed => {
                self.input = None;
                false
            }
        }
    }

    /// A sink writing into the domain's console log: the console back end's output.
    pub fn console_sink(&self) -> Box<dyn ConsoleSink> {
        Box::new(self.console.clone())
    }

    /// Everything the guest printed (the tail the log keeps).
    pub fn console_output(&self) -> Vec<u8> {
        self.console.borrow().captured.clone()
    }

    pub fn guest(&self) -> GuestType {
        self.dom.layout.guest
    }

    /// Put vCPU 0's initial state into the engine and write the hypercall page.
    pub fn start(&mut self, e: &mut Engine) -> Result<(), String> {
        self.dom.vcpu.apply(&mut e.env);
        self.init_mmu(e)?;
        self.publish_time(e);
        self.seed_grants(e);
        // The xenstore ring's channel, bound to the platform's xenstored in domain 0; the
        // console's, offered to domain 0 for the console back end to bind (as libxl does
        // for xenconsoled).
        let _ = self.evtchn.bind_backend(self.store_port, 0);
        let _ = self.evtchn.reserve_unbound(self.console_port, 0);
        let name = if self.opts.name.is_empty() {
            "xenolith"
        } else {
            self.opts.name.as_str()
        };
        let info = xs::DomainInfo {
            name,
            memory_kib: e.ram().size() >> 10,
            store_pfn: self.dom.layout.xenstore.pfn,
            store_port: self.store_port,
            console_pfn: self.dom.layout.console.pfn,
            console_port: self.console_port,
        };
        self.xs = Some(xs::Xenstore::new(e.ram(), &info));
        if let Some(va) = self.dom.layout.hypercall_page {
            let page = hypercall::hypercall_page(self.guest());
            let off = va.wrapping_sub(self.dom.layout.virt_base);
            if va & 0xfff != 0
                || off
                    >= self
                        .dom
                        .layout
                        .virt_pgtab_end
                        .wrapping_sub(self.dom.layout.virt_base)
            {
                return Err(format!(
                    "hypercall page {va:#x} is not a page of the initial mapping"
                ));
            }
            if !e.ram().write(off, &page) {
                return Err(format!("hypercall page {va:#x} is outside guest RAM"));
            }
        }
        Ok(())
    }

    /// Run until the domain shuts down.
    pub fn run(&mut self, e: &mut Engine) -> Shutdown {
        loop {
            if let Some(s) = self.shutdown.take() {
                // The back ends' last turn: the console drains what the guest printed.
                self.poll_backends(e);
                self.console.borrow_mut().flush();
                // Answer what the socket's clients already asked, then let them go.
                self.service_xsock(e, true);
                if let (Some(sock), Some(xs)) = (self.xsock.as_mut(), self.xs.as_mut()) {
                    sock.close_all(xs);
                }
                return s;
            }
            self.service_timers(e);
            self.poll_input(e, None);
            self.service_xsock(e, false);
            self.maybe_upcall(e);
            if self.shutdown.is_some() {
                continue;
            }
            // Deferred TLB flushes (new base pointers) happen before the guest runs.
            self.flush_if_dirty(e);
            // RDTSC in generated code when time is the instruction count plus an offset
            // (the mode is fixed for the run, so it is set before the first translation).
            if let Some(off) = self.clock.icount_offset() {
                e.env.inline_clock = 1;
                e.env.clock_offset = off;
            }
            match e.run() {
                StopReason::Budget => {
                    if self.opts.max_insns.is_some_and(|m| e.env.icount >= m) {
                        self.shutdown = Some(Shutdown::Budget);
                    }
                }
                StopReason::Exception(f) => self.exception(e, f),
                StopReason::SingleStep => self.single_step_trap(e),
                StopReason::Platform { op, arg, len } => {
                    let tf = X86State(&mut e.env).g(frontend_x86::state::G_RFLAGS) & 0x100 != 0;
                    let emulated = !matches!(
                        PlatformOp::from_u32(op),
                        Some(
                            PlatformOp::Syscall
                                | PlatformOp::Sysret
                                | PlatformOp::Sysenter
                                | PlatformOp::Sysexit
                                | PlatformOp::Iret
                                | PlatformOp::SoftInt
                        )
                    );
                    let next = X86State(&mut e.env).rip().wrapping_add(len as u64);
                    let icount = e.env.icount;
                    self.platform(e, op, arg, len);
                    // An instruction emulated to its end under TF traps after it, as
                    // Xen's pv_emul_instruction_done does (not a fault it raised instead).
                    if tf
                        && emulated
                        && self.shutdown.is_none()
                        && e.env.icount == icount + 1
                        && X86State(&mut e.env).rip() == next
                    {
                        self.single_step_trap(e);
                    }
                }
            }
        }
    }

    /// RFLAGS.TF after an instruction: #DB (a trap) with DR6.BS set in the virtual DR6,
    /// as Xen's do_debug forwards it.
    fn single_step_trap(&mut self, e: &mut Engine) {
        self.debugreg[6] |= 0x4000;
        self.deliver_fault(
            e,
            GuestFault {
                vector: 1,
                error_code: None,
                addr: 0,
            },
        );
    }

    /// Kill the domain as Xen's domain_crash does, with the reason and a register dump.
    pub fn crash(&mut self, e: &mut Engine, why: String) {
        let mut dump = register_dump(e);
        let rip = X86State(&mut e.env).rip();
        let mut code = [0u8; 16];
        if self.read_guest(e, rip, &mut code).is_ok() {
            dump += "code at rip:";
            for b in code {
                dump += &format!(" {b:02x}");
            }
            dump += "\n";
        }
        self.shutdown = Some(Shutdown::Crash(format!("{why}\n{dump}")));
    }

    fn exception(&mut self, e: &mut Engine, f: GuestFault) {
        if f.vector == 6 && self.try_forced_cpuid(e) {
            return;
        }
        if f.vector == 14 && self.ptwr_fault(e, f) {
            return;
        }
        if f.vector == 14 && self.ldt_fault(e, f) {
            return;
        }
        self.deliver_fault(e, f);
    }

    /// Deliver a fault to the guest's handler, or crash the domain when it has none.
    pub(super) fn deliver_fault(&mut self, e: &mut Engine, f: GuestFault) {
        if self.opts.log.traps {
            let rip = X86State(&mut e.env).rip();
            eprintln!(
                "(XEN) trap {} ec {:?} addr {:#x} at rip {rip:#x}",
                f.vector, f.error_code, f.addr
            );
        }
        match self.trap_table.get(f.vector) {
            Some(t) if t.address != 0 => {
                let mut ec = f.error_code;
                if f.vector == 14 {
                    // Xen puts cr2 in vcpu_info.arch.cr2 for the guest.
                    self.set_vcpu_cr2(e, f.addr);
                    X86State(&mut e.env).set_g(G_CR2, f.addr);
                    if self.guest() == GuestType::X86_64 {
                        // pv_inject_event: the U bit says whether the guest was in user
                        // mode, not the ring (a 64-bit kernel runs in ring 3 too).
                        ec = ec.map(|c| (c & !4) | if self.kernel_mode { 0 } else { 4 });
                    }
                }
                let rip = X86State(&mut e.env).rip();
                if let Err(why) = self.bounce(e, f.vector, ec, rip, t) {
                    self.crash(e, why);
                } else if f.vector == 7 {
                    // do_device_not_available: injecting #NM clears the guest's virtual
                    // CR0.TS, so the instruction runs when the handler returns to it.
                    let mut s = X86State(&mut e.env);
                    let cr0 = s.g(frontend_x86::state::G_CR0);
                    s.set_g(frontend_x86::state::G_CR0, cr0 & !(1 << 3));
                }
            }
            _ => {
                let name = vector_name(f.vector);
                let extra = if f.vector == 14 {
                    format!(" at address {:#x}", f.addr)
                } else {
                    String::new()
                };
                self.crash(
                    e,
                    format!(
                        "unhandled {name} (vector {}, error code {:?}){extra}: the guest has no trap handler",
                        f.vector, f.error_code
                    ),
                );
            }
        }
    }

    fn set_vcpu_cr2(&mut self, e: &mut Engine, cr2: u64) {
        // vcpu_info 0 starts shared_info.
        use crate::builder::abi::{VcpuInfo32, VcpuInfo64};
        use std::mem::offset_of;
        let base = self.vcpu_info_addr();
        match self.guest() {
            GuestType::X86_64 => {
                GuestPhys::write_u64(e.ram(), base + offset_of!(VcpuInfo64, arch) as u64, cr2);
            }
            GuestType::X86_32Pae => {
                GuestPhys::write_u32(
                    e.ram(),
                    base + offset_of!(VcpuInfo32, arch) as u64,
                    cr2 as u32,
                );
            }
        }
    }

    /// Deliver an exception (or software interrupt) to the guest's handler, building Xen's
    /// bounce frame. `rip` is the return address.
    fn bounce(
        &mut self,
        e: &mut Engine,
        _vector: u8,
        ec: Option<u32>,
        rip: u64,
        t: hypercall::TrapInfo,
    ) -> Result<(), String> {
        self.bounce_with(e, ec, rip, t, &[])
    }

    /// [`Self::bounce`], with `extra` words below the error code (the failsafe callback's
    /// ds, es, fs, gs; 64-bit frames keep rcx and r11 lowest).
    fn bounce_with(
        &mut self,
        e: &mut Engine,
        ec: Option<u32>,
        rip: u64,
        t: hypercall::TrapInfo,
        extra: &[u64],
    ) -> Result<(), String> {
        let mask = self.upcall_mask(e);
        if t.flags & 4 != 0 {
            self.set_upcall_mask(e, 1);
        }
        let s = X86State(&mut e.env);
        let rflags = s.rflags();
        let cs = s.seg_sel(Seg::Cs) as u64;
        let ss = s.seg_sel(Seg::Ss) as u64;
        let rsp = s.gpr(4);
        let iflag = if mask == 0 { 0x200 } else { 0 };
        let (top, frame, width) = match self.guest() {
            GuestType::X86_64 => {
                let (sp, ret_cs, ret_ss) = if self.kernel_mode {
                    // Kernel-mode frames show RPL 0 in cs as Xen does... for a ring-3 kernel,
                    // cs & ~3.
                    (rsp, cs & !3, ss)
                } else {
                    // From user mode: to kernel mode (page tables and GS bases switch too),
                    // on the stack_switch stack.
                    self.toggle_mode(e);
                    (self.kernel_sp, cs, ss)
                };
                let mut frame: Vec<u64> = vec![self_rcx(e), self_r11(e)];
                frame.extend_from_slice(extra);
                frame.extend(ec.map(u64::from));
                // create_bounce_frame: IF from the saved mask; IOPL is the virtual one
                // under VMASST_TYPE_architectural_iopl, else 0.
                let iopl = if self.vm_assist & (1 << 4) != 0 {
                    (self.iopl as u64 & 3) << 12
                } else {
                    0
                };
                let frame_fl = (rflags & !(0x200 | 0x3000)) | iflag | iopl;
                frame.extend_from_slice(&[
                    rip,
                    ret_cs | (mask as u64) << 32,
                    frame_fl,
                    rsp,
                    ret_ss,
                ]);
                (sp & !15, frame, 8)
            }
            GuestType::X86_32Pae => {
                // Xen's compat_create_bounce_frame: {[error code,] eip, cs | saved mask << 16,
                // eflags (IF from the mask, IOPL only with architectural_iopl)[, esp, ss]}; from
                // ring 2/3 on the stack_switch stack, else on the current one.
                const ARCHITECTURAL_IOPL: u64 = 1 << 4;
                let iopl = if self.vm_assist & ARCHITECTURAL_IOPL != 0 {
                    (self.iopl as u64) << 12
                } else {
                    0
                };
                let mut frame: Vec<u64> = extra.to_vec();
                frame.extend(ec.map(u64::from));
                frame.extend_from_slice(&[
                    rip & 0xffff_ffff,
                    cs | (mask as u64) << 16,
                    (rflags & 0xffff_cdff) | iflag | iopl,
                ]);
                let top = if cs & 2 != 0 {
                    frame.extend_from_slice(&[rsp & 0xffff_ffff, ss]);
                    self.kernel_sp & 0xffff_ffff
                } else {
                    rsp & 0xffff_ffff
                };
                (top, frame, 4)
            }
        };
        // One write: a frame that does not fit leaves the stack untouched.
        let sp = top.wrapping_sub(width * frame.len() as u64);
        let mut bytes = [0u8; 8 * 16];
        let w = width as usize;
        for (i, v) in frame.iter().enumerate() {
            bytes[i * w..(i + 1) * w].copy_from_slice(&v.to_le_bytes()[..w]);
        }
        self.write_guest(e, sp, &bytes[..frame.len() * w])
            .map_err(|f| {
                format!(
                    "cannot write the exception frame at {:#x}: {}",
                    f.addr,
                    vector_name(f.vector)
                )
            })?;
        if self.guest() == GuestType::X86_64 {
            // The guest kernel always runs on Xen's flat kernel selectors
            // (FLAT_KERNEL_CS/SS), whatever the interrupted context had loaded.
            hypercall::load_return_seg(self, e, Seg::Cs, 0xe033)?;
            hypercall::load_return_seg(self, e, Seg::Ss, 0xe02b)?;
        } else {
            // The handler's code selector (null: Xen crashes the domain); the kernel stack's
            // when coming from ring 2/3.
            if t.cs & !3 == 0 {
                return Err(format!("bounce to a null code selector {:#x}", t.cs));
            }
            if cs & 2 != 0 {
                hypercall::load_return_seg(self, e, Seg::Ss, self.kernel_ss as u16)?;
            }
            hypercall::load_return_seg(self, e, Seg::Cs, t.cs)?;
            self.kernel_mode = true;
        }
        let mut s = X86State(&mut e.env);
        s.set_gpr(4, sp);
        s.set_rip(t.address);
        // Xen clears TF, VM, RF and NT on delivery.
        s.set_rflags(rflags & !(0x100 | 0x2_0000 | 0x1_0000 | 0x4000));
        if self.guest() == GuestType::X86_64 {
            // 64-bit create_bounce_frame also clears AC, and marks the frame TRAP_syscall:
            // Xen enters the handler with sysret, so rcx = the handler, r11 = its rflags
            // (why the frame saves rcx and r11).
            let fl = rflags & !(0x100 | 0x2_0000 | 0x1_0000 | 0x4000 | 0x4_0000);
            s.set_rflags(fl);
            s.set_gpr(1, t.address);
            s.set_gpr(11, fl);
        }
        Ok(())
    }

    /// A return to the guest failed to load its selectors (`why`): bounce to the failsafe
    /// callback as Xen does, with the data selectors (ds, es, fs, gs) on top of the frame;
    /// without a failsafe callback the domain crashes.
    pub(super) fn failsafe(&mut self, e: &mut Engine, why: String) {
        let (addr, flags) = self.callbacks.failsafe;
        if addr == 0 {
            return self.crash(e, format!("{why}, and no failsafe callback"));
        }
        let rip = X86State(&mut e.env).rip();
        let cs = if self.guest() == GuestType::X86_64 {
            0
        } else {
            self.callbacks.failsafe_cs
        };
        let t = hypercall::TrapInfo {
            flags: if flags & 1 != 0 { 4 } else { 0 },
            cs,
            address: addr,
        };
        let sels: Vec<u64> = {
            let s = X86State(&mut e.env);
            [Seg::Ds, Seg::Es, Seg::Fs, Seg::Gs]
                .iter()
                .map(|&g| s.seg_sel(g) as u64)
                .collect()
        };
        // Selectors that cannot stay loaded must not fault again in the handler: a bad CS
        // or SS is replaced by the handler's (the frame keeps the values that failed).
        if let Err(why2) = self.bounce_with(e, None, rip, t, &sels) {
            self.crash(e, format!("{why}; then the failsafe callback: {why2}"));
        }
    }

    /// vCPU 0's vcpu_info (shared_info's slot 0 until register_vcpu_info moves it).
    pub fn vcpu_info_addr(&self) -> u64 {
        self.evtchn.vcpu_info_gpa()
    }

    /// evtchn_upcall_mask of vCPU 0 (byte 1 of vcpu_info).
    pub fn upcall_mask(&self, e: &mut Engine) -> u8 {
        GuestPhys::read_u8(e.ram(), self.vcpu_info_addr() + 1).unwrap_or(1)
    }

    pub fn set_upcall_mask(&self, e: &mut Engine, v: u8) {
        GuestPhys::write_u8(e.ram(), self.vcpu_info_addr() + 1, v);
    }

    fn platform(&mut self, e: &mut Engine, op: u32, arg: u64, len: u8) {
        let rip = X86State(&mut e.env).rip();
        let next = rip.wrapping_add(len as u64);
        let op = PlatformOp::from_u32(op);
        match op {
            Some(PlatformOp::Syscall) if self.guest() == GuestType::X86_64 && self.kernel_mode => {
                let mut s = X86State(&mut e.env);
                let rflags = s.rflags();
                s.set_gpr(1, next);
                s.set_gpr(11, rflags);
                s.set_rip(next);
                e.env.icount += 1;
                let args = {
                    let s = X86State(&mut e.env);
                    [s.gpr(7), s.gpr(6), s.gpr(2), s.gpr(10), s.gpr(8), s.gpr(9)]
                };
                let nr = X86State(&mut e.env).gpr(0);
                self.hypercall(e, nr, args);
            }
            Some(PlatformOp::Syscall) if self.guest() == GuestType::X86_64 => {
                // From guest user mode: bounce to the registered syscall callback.
                let (addr, cbflags) = self.callbacks.syscall;
                if addr == 0 {
                    self.exception(
                        e,
                        GuestFault {
                            vector: 6,
                            error_code: None,
                            addr: 0,
                        },
                    );
                    return;
                }
                let mut s = X86State(&mut e.env);
                let rflags = s.rflags();
                s.set_gpr(1, next);
                s.set_gpr(11, rflags);
                e.env.icount += 1;
                // CALLBACKF_mask_events masks events on entry, like a trap gate flag.
                let t = hypercall::TrapInfo {
                    flags: if cbflags & 1 != 0 { 4 } else { 0 },
                    cs: 0,
                    address: addr,
                };
                if let Err(why) = self.bounce(e, 0, None, next, t) {
                    self.crash(e, why);
                    return;
                }
                // switch_to_kernel clears DF after the bounce (sysret then loads r11).
                let mut s = X86State(&mut e.env);
                let fl = s.rflags() & !0x400;
                s.set_rflags(fl);
                s.set_gpr(11, fl);
            }
            Some(PlatformOp::SoftInt)
                if (arg & 0xff) == 0x82
                    && (arg >> 8) == 0
                    && self.guest() == GuestType::X86_32Pae
                    && self.kernel_mode =>
            {
                X86State(&mut e.env).set_rip(next);
                e.env.icount += 1;
                let (nr, args) = {
                    let s = X86State(&mut e.env);
                    let r = |i| s.gpr(i) & 0xffff_ffff;
                    (r(0), [r(3), r(1), r(2), r(6), r(7), r(5)])
                };
                self.hypercall(e, nr, args);
            }
            Some(PlatformOp::SoftInt) => {
                let vector = (arg & 0xff) as u8;
                let kind = arg >> 8;
                // Xen's own IDT gives #BP, #OF and 0x80 (the int80 direct trap) DPL 3, and
                // INT1/INT3/INTO are not checked against a gate's DPL: these reach the
                // guest's handler whatever DPL its trap table gave. Any other INT n is
                // Xen's #GP, passed on as #GP((n << 3) | 2) unless the guest's gate DPL
                // permits it (permit_softint: >= 1 from kernel mode, 3 from user mode).
                let t = self.trap_table.get(vector);
                let xen_dpl3 = kind != 0 || matches!(vector, 3 | 4 | 0x80);
                if t.is_none() && xen_dpl3 && vector != 0x80 {
                    // An exception Xen injects: without a handler, the domain crashes.
                    self.deliver_fault(
                        e,
                        GuestFault {
                            vector,
                            error_code: None,
                            addr: 0,
                        },
                    );
                    return;
                }
                let dpl_ok = xen_dpl3
                    || t.is_some_and(|t| {
                        (t.flags & 3) as u8 >= if self.kernel_mode { 1 } else { 3 }
                    });
                if !dpl_ok || t.is_none_or(|t| t.address == 0) {
                    // #GP with error code (n << 3) | 2, at the int instruction.
                    self.exception(
                        e,
                        GuestFault {
                            vector: 13,
                            error_code: Some(((vector as u32) << 3) | 2),
                            addr: 0,
                        },
                    );
                    return;
                }
                e.env.icount += 1;
                if let Err(why) = self.bounce(e, vector, None, next, t.unwrap()) {
                    self.crash(e, why);
                }
            }
            Some(PlatformOp::Io) => self.emulate_io(e, next),
            Some(PlatformOp::Cpuid) => self.emulate_cpuid(e, next),
            Some(PlatformOp::Iret) => self.emulate_iret(e, arg),
            // CLI/STI under a sufficient virtual IOPL: Xen emulates them as no-ops (guests
            // mask events through vcpu_info); otherwise #GP.
            Some(PlatformOp::Cli) | Some(PlatformOp::Sti) if self.iopl_ok() => {
                X86State(&mut e.env).set_rip(next);
                e.env.icount += 1;
            }
            Some(PlatformOp::Rdmsr) => self.emulate_msr(e, false, next),
            Some(PlatformOp::Wrmsr) => self.emulate_msr(e, true, next),
            Some(PlatformOp::MovCr) => self.emulate_cr(e, next),
            Some(PlatformOp::Xgetbv) => self.emulate_xcr(e, false, next),
            Some(PlatformOp::Rdtscp) => self.emulate_rdtscp(e, false, next),
            Some(PlatformOp::Rdpid) => self.emulate_rdtscp(e, true, next),
            Some(PlatformOp::Xsetbv) => self.emulate_xcr(e, true, next),
            Some(PlatformOp::CacheCtl) if self.kernel_mode => {
                // WBINVD/INVD: nothing to do for a guest without device memory.
                X86State(&mut e.env).set_rip(next);
                e.env.icount += 1;
            }
            Some(PlatformOp::Rdtsc) => {
                let t = self.clock.tsc(e.env.icount);
                let mut s = X86State(&mut e.env);
                s.set_gpr(0, t & 0xffff_ffff);
                s.set_gpr(2, t >> 32);
                s.set_rip(next);
                e.env.icount += 1;
            }
            Some(PlatformOp::Hlt)
            | Some(PlatformOp::Cli)
            | Some(PlatformOp::Sti)
            | Some(PlatformOp::DescTable)
            | Some(PlatformOp::CacheCtl)
            | Some(PlatformOp::MovDr)
            | Some(PlatformOp::Swapgs) => {
                // Privileged in ring 3 (or ring 1): #GP(0), as the hardware raises it.
                self.exception(
                    e,
                    GuestFault {
                        vector: 13,
                        error_code: Some(0),
                        addr: 0,
                    },
                );
            }
            _ => {
                let why = format!("platform instruction {op:?} (arg {arg:#x}) at rip {rip:#x} is not emulated yet");
                self.crash(e, why);
            }
        }
    }

    /// Copy `buf.len()` bytes from guest virtual `va` (the current page tables, as the guest
    /// kernel would read them).
    pub fn read_guest(&self, e: &mut Engine, va: u64, buf: &mut [u8]) -> Result<(), GuestFault> {
        self.copy_guest(e, va, buf.len(), Access::Read, |ram, pa, range| {
            let (s, n) = range;
            GuestPhys::read(ram, pa, &mut buf[s..s + n]);
        })
    }

    pub fn write_guest(&self, e: &mut Engine, va: u64, data: &[u8]) -> Result<(), GuestFault> {
        self.copy_guest(e, va, data.len(), Access::Write, |ram, pa, range| {
            let (s, n) = range;
            GuestPhys::write(ram, pa, &data[s..s + n]);
        })
    }

    fn copy_guest(
        &self,
        e: &mut Engine,
        va: u64,
        len: usize,
        access: Access,
        mut f: impl FnMut(&mut jit::GuestRam, u64, (usize, usize)),
    ) -> Result<(), GuestFault> {
        // Xen touches a 32-bit guest's memory with supervisor rights (a bounce frame on
        // the ring-1 stack while ring 3 runs); 64-bit PV kernels run in ring 3 with every
        // page user-accessible, so their accesses are ordinary ones (through the TLB, as
        // the guest's own would be).
        let kind = if self.guest() == GuestType::X86_32Pae {
            AccessKind::System
        } else {
            AccessKind::Normal
        };
        if len == 0 {
            return Ok(());
        }
        let first = ((0x1000 - (va & 0xfff)) as usize).min(len);
        // Translate every page first, so a fault leaves memory untouched. Most copies are
        // within one page (hypercall arguments, frames): no list for those.
        let pa0 = e.core.translate(&mut e.env, va, access, kind)?;
        let mut more = Vec::new();
        let mut done = first;
        while done < len {
            let a = va.wrapping_add(done as u64);
            let n = 0x1000usize.min(len - done);
            let pa = e.core.translate(&mut e.env, a, access, kind)?;
            more.push((pa, done, n));
            done += n;
        }
        for (pa, s, n) in std::iter::once((pa0, 0, first)).chain(more) {
            f(&mut e.core.ram, pa, (s, n));
            if access == Access::Write {
                // A write into translated code drops those translations.
                let core = &mut *e.core;
                core.notify_phys_write(&mut e.env, pa, n as u64);
            }
        }
        Ok(())
    }
}

/// A canonical 48-bit virtual address.
pub(super) fn is_canonical(v: u64) -> bool {
    ((v as i64) << 16 >> 16) as u64 == v
}

fn self_rcx(e: &mut Engine) -> u64 {
    X86State(&mut e.env).gpr(1)
}
fn self_r11(e: &mut Engine) -> u64 {
    X86State(&mut e.env).gpr(11)
}

/// The architectural name of an exception vector.
pub fn vector_name(v: u8) -> &'static str {
    const NAMES: [&str; 20] = [
        "#DE",
        "#DB",
        "NMI",
        "#BP",
        "#OF",
        "#BR",
        "#UD",
        "#NM",
        "#DF",
        "coprocessor overrun",
        "#TS",
        "#NP",
        "#SS",
        "#GP",
        "#PF",
        "reserved",
        "#MF",
        "#AC",
        "#MC",
        "#XM",
    ];
    NAMES.get(v as usize).copied().unwrap_or("interrupt")
}

/// The registers, as Xen prints them when it crashes a domain.
pub fn register_dump(e: &mut Engine) -> String {
    let s = X86State(&mut e.env);
    const N: [&str; 16] = [
        "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15",
    ];
    let mut out = format!(
        "rip: {:016x}   rflags: {:016x}   cs: {:04x}   ss: {:04x}\n",
        s.rip(),
        s.rflags(),
        s.seg_sel(Seg::Cs),
        s.seg_sel(Seg::Ss)
    );
    for (i, n) in N.iter().enumerate() {
        out += &format!(
            "{n:>3}: {:016x}{}",
            s.gpr(i),
            if i % 4 == 3 { "\n" } else { "   " }
        );
    }
    out
}
