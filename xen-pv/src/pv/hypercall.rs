//! The hypercall table: number → name, handler. Handlers read their arguments from guest
//! memory through bounds-checked, page-walked copies and return Xen's values and errors.
//! Numbers without a handler return -ENOSYS and are logged once.

use frontend_x86::state::{Seg, X86State, G_KERNEL_GS_BASE};
use jit::Engine;

use super::{PvDomain, Shutdown};
use crate::builder::vcpu::xen_desc;
use crate::builder::GuestType;
use crate::core::backend::ConsoleSink;
use crate::core::errno::*;

/// One virtual IDT entry (trap_info).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapInfo {
    /// Bits 0-1: DPL; bit 2: mask events on entry.
    pub flags: u8,
    pub cs: u16,
    pub address: u64,
}

#[derive(Clone, Debug)]
pub struct TrapTable(pub [TrapInfo; 256]);

impl Default for TrapTable {
    fn default() -> Self {
        TrapTable([TrapInfo::default(); 256])
    }
}

impl TrapTable {
    pub fn get(&self, v: u8) -> Option<TrapInfo> {
        let t = self.0[v as usize];
        (t.address != 0).then_some(t)
    }
}

/// Registered callbacks (callback_op / set_callbacks): address and CALLBACKF_* flags.
#[derive(Clone, Copy, Debug, Default)]
pub struct Callbacks {
    pub event: (u64, u16),
    pub failsafe: (u64, u16),
    pub syscall: (u64, u16),
    pub syscall32: (u64, u16),
    pub sysenter: (u64, u16),
    pub nmi: (u64, u16),
    /// 32-bit guests: the code selectors of the event and failsafe callbacks.
    pub event_cs: u16,
    pub failsafe_cs: u16,
}

pub type Handler = fn(&mut PvDomain, &mut Engine, [u64; 6]) -> HcResult;

/// A table entry: name, handler, and whether the handler sets the guest's registers itself
/// (iret: rax is not the return value).
pub struct Hypercall {
    pub name: &'static str,
    pub handler: Option<Handler>,
    pub sets_regs: bool,
}

const fn hc(name: &'static str, handler: Handler) -> Hypercall {
    Hypercall {
        name,
        handler: Some(handler),
        sets_regs: false,
    }
}
const fn none(name: &'static str) -> Hypercall {
    Hypercall {
        name,
        handler: None,
        sets_regs: false,
    }
}

/// Xen's hypercall numbers (public/xen.h), in order.
pub static TABLE: [Hypercall; 42] = [
    hc("set_trap_table", set_trap_table),
    hc("mmu_update", super::mmu::mmu_update),
    hc("set_gdt", super::desc::set_gdt),
    hc("stack_switch", stack_switch),
    hc("set_callbacks", set_callbacks),
    hc("fpu_taskswitch", fpu_taskswitch),
    hc("sched_op_compat", sched_op_compat),
    none("platform_op"),
    hc("set_debugreg", set_debugreg),
    hc("get_debugreg", get_debugreg),
    hc("update_descriptor", super::desc::update_descriptor),
    none("ni_hypercall"),
    hc("memory_op", super::mmu::memory_op),
    hc("multicall", super::mmu::multicall),
    hc("update_va_mapping", super::mmu::update_va_mapping),
    hc("set_timer_op", super::events::set_timer_op),
    none("event_channel_op_compat"),
    hc("xen_version", xen_version),
    hc("console_io", console_io),
    none("physdev_op_compat"),
    hc("grant_table_op", super::grant::grant_table_op),
    hc("vm_assist", vm_assist),
    none("update_va_mapping_otherdomain"),
    Hypercall {
        name: "iret",
        handler: Some(iret),
        sets_regs: true,
    },
    hc("vcpu_op", super::mmu::vcpu_op),
    hc("set_segment_base", set_segment_base),
    hc("mmuext_op", super::mmu::mmuext_op),
    none("xsm_op"),
    hc("nmi_op", nmi_op),
    hc("sched_op", sched_op),
    hc("callback_op", callback_op),
    none("xenoprof_op"),
    hc("event_channel_op", event_channel_op),
    hc("physdev_op", physdev_op),
    hc("hvm_op", hvm_op),
    hc("sysctl", privileged_only),
    hc("domctl", privileged_only),
    none("kexec_op"),
    none("tmem_op"),
    none("argo_op"),
    none("xenpmu_op"),
    none("dm_op"),
];

/// Xen's hypercall page: 32-byte stubs, `syscall` (64-bit) or `int $0x82` (32-bit); the
/// iret stub (23) does not return.
pub fn hypercall_page(guest: GuestType) -> [u8; 4096] {
    let mut p = [0xccu8; 4096];
    for i in 0..128u32 {
        let s = &mut p[i as usize * 32..i as usize * 32 + 32];
        let n = i.to_le_bytes();
        let stub: Vec<u8> = match (guest, i) {
            // push rcx; push r11; push rax; mov $23, eax; syscall
            (GuestType::X86_64, 23) => {
                [&[0x51, 0x41, 0x53, 0x50, 0xb8][..], &n, &[0x0f, 0x05]].concat()
            }
            // push rcx; push r11; mov $i, eax; syscall; pop r11; pop rcx; ret
            (GuestType::X86_64, _) => [
                &[0x51, 0x41, 0x53, 0xb8][..],
                &n,
                &[0x0f, 0x05, 0x41, 0x5b, 0x59, 0xc3],
            ]
            .concat(),
            // push eax; mov $23, eax; int $0x82
            (GuestType::X86_32Pae, 23) => [&[0x50, 0xb8][..], &n, &[0xcd, 0x82]].concat(),
            // mov $i, eax; int $0x82; ret
            (GuestType::X86_32Pae, _) => [&[0xb8][..], &n, &[0xcd, 0x82, 0xc3]].concat(),
        };
        s[..stub.len()].copy_from_slice(&stub);
    }
    p
}

impl PvDomain {
    /// Dispatch hypercall `nr` (rip already past the instruction).
    pub fn hypercall(&mut self, e: &mut Engine, nr: u64, args: [u64; 6]) {
        let entry = TABLE.get(nr as usize);
        let name = entry.map_or("unknown", |h| h.name);
        let (r, sets_regs) = match entry.and_then(|h| h.handler.map(|f| (f, h.sets_regs))) {
            Some((f, sets)) => (f(self, e, args), sets),
            None => {
                if !self.unimplemented.contains(&nr) {
                    self.unimplemented.push(nr);
                    eprintln!("(XEN) hypercall {nr} ({name}) not implemented: -ENOSYS");
                }
                (Err(ENOSYS), false)
            }
        };
        if self.opts.log.hypercalls {
            eprintln!(
                "(XEN) hypercall {name}({:#x}, {:#x}, {:#x}) = {r:?}",
                args[0], args[1], args[2]
            );
        }
        if !sets_regs {
            let v = to_rax(r);
            let v = if self.guest() == GuestType::X86_32Pae {
                v & 0xffff_ffff
            } else {
                v
            };
            X86State(&mut e.env).set_gpr(0, v);
        }
    }

    fn word(&self) -> usize {
        self.guest().word_size() as usize
    }

    fn read_bytes(&self, e: &mut Engine, va: u64, len: usize) -> Result<Vec<u8>, i64> {
        let mut b = vec![0u8; len];
        self.read_guest(e, va, &mut b).map_err(|_| EFAULT)?;
        Ok(b)
    }

    fn read_u32_at(&self, e: &mut Engine, va: u64) -> Result<u32, i64> {
        let mut b = [0u8; 4];
        self.read_guest(e, va, &mut b).map_err(|_| EFAULT)?;
        Ok(u32::from_le_bytes(b))
    }

    fn put_bytes(&self, e: &mut Engine, va: u64, data: &[u8]) -> Result<(), i64> {
        self.write_guest(e, va, data).map_err(|_| EFAULT)
    }

    /// Swap kernel and user mode (Xen's toggle_guest_mode: the GS bases swap too).
    pub fn toggle_mode(&mut self, e: &mut Engine) {
        self.kernel_mode = !self.kernel_mode;
        if self.guest() == GuestType::X86_64 {
            let mut s = X86State(&mut e.env);
            let gs = s.g(Seg::Gs.base_g());
            let kgs = s.g(G_KERNEL_GS_BASE);
            s.set_g(Seg::Gs.base_g(), kgs);
            s.set_g(G_KERNEL_GS_BASE, gs);
        }
        self.switch_space(e);
    }
}

fn set_trap_table(d: &mut PvDomain, e: &mut Engine, a: [u64; 6]) -> HcResult {
    let mut va = a[0];
    if va == 0 {
        d.trap_table = TrapTable::default();
        return Ok(0);
    }
    let w = d.word();
    let entry = if w == 8 { 16 } else { 8 };
    // Xen processes entries until one with address 0 (bounded by the table size).
    for _ in 0..=256 {
        let b = d.read_bytes(e, va, entry)?;
        let address = if w == 8 {
            u64::from_le_bytes(b[8..16].try_into().unwrap())
        } else {
            u32::from_le_bytes(b[4..8].try_into().unwrap()) as u64
        };
        if address == 0 {
            break;
        }
        // do_set_trap_table: a non-canonical handler ends the call with -EINVAL.
        if w == 8 && !super::is_canonical(address) {
            return Err(EINVAL);
        }
        let vector = b[0];
        let cs = u16::from_le_bytes([b[2], b[3]]);
        let cs = if w == 8 { cs } else { fixup_cs32(cs) };
        d.trap_table.0[vector as usize] = TrapInfo {
            flags: b[1],
            cs,
            address,
        };
        va = va.wrapping_add(entry as u64);
    }
    Ok(0)
}

fn stack_switch(d: &mut PvDomain, _e: &mut Engine, a: [u64; 6]) -> HcResult {
    d.kernel_ss = a[0] & 0xffff;
    d.kernel_sp = a[1];
    Ok(0)
}

fn set_callbacks(d: &mut PvDomain, _e: &mut Engine, a: [u64; 6]) -> HcResult {
    match d.guest() {
        GuestType::X86_64 => {
            d.callbacks.event = (a[0], 0);
            d.callbacks.failsafe = (a[1], 0);
            d.callbacks.syscall = (a[2], 0);
        }
        GuestType::X86_32Pae => {
            // (event_selector, event_address, failsafe_selector, failsafe_address)
            d.callbacks.event = (a[1] & 0xffff_ffff, 0);
            d.callbacks.failsafe = (a[3] & 0xffff_ffff, 0);
            d.callbacks.event_cs = fixup_cs32(a[0] as u16);
            d.callbacks.failsafe_cs = fixup_cs32(a[2] as u16);
        }
    }
    Ok(0)
}

fn fpu_taskswitch(_d: &mut PvDomain, e: &mut Engine, a: [u64; 6]) -> HcResult {
    // Sets or clears CR0.TS as the guest sees it.
    let mut s = X86State(&mut e.env);
    let cr0 = s.g(frontend_x86::state::G_CR0);
    let ts = 1 << 3;
    s.set_g(
        frontend_x86::state::G_CR0,
        if a[0] != 0 { cr0 | ts } else { cr0 & !ts },
    );
    Ok(0)
}

/// SHUTDOWN_* reasons.
fn shutdown_reason(r: u64) -> Option<Shutdown> {
    Some(match r {
        0 => Shutdown::Poweroff,
        1 => Shutdown::Reboot,
        2 => Shutdown::Suspend,
        3 => Shutdown::Crash("the guest reported a crash (SHUTDOWN_crash)".into()),
        4 => Shutdown::Watchdog,
        _ => return None,
    })
}

fn sched_op_compat(d: &mut PvDomain, e: &mut Engine, a: [u64; 6]) -> HcResult {
    match a[0] {
        // yield and block: as sched_op's (neither reads an argument)
        0 | 1 => sched_op(d, e, a),
        2 => {
            // Xen ignores unknown reasons in the compat call's domain_shutdown, except
            // that the domain stops; treat them as a crash.
            d.shutdown = Some(shutdown_reason(a[1]).unwrap_or(Shutdown::Crash(format!(
                "shutdown with unknown reason {}",
                a[1]
            ))));
            Ok(0)
        }
        _ => Err(ENOSYS),
    }
}

fn sched_op(d: &mut PvDomain, e: &mut Engine, a: [u64; 6]) -> HcResult {
    match a[0] {
        // yield
        0 => {
            // The back ends' turn (a guest spins on yield until its console ring drains).
            d.poll_backends(e);
            Ok(0)
        }
        // block
        1 => {
            d.block(e);
            Ok(0)
        }
        // poll: struct sched_poll { XEN_GUEST_HANDLE(evtchn_port_t) ports; unsigned int
        // nr_ports; uint64_t timeout; }
        3 => {
            let (ports_va, n, timeout) = match d.guest() {
                GuestType::X86_64 => {
                    let b = d.read_bytes(e, a[1], 24)?;
                    (
                        u64::from_le_bytes(b[..8].try_into().unwrap()),
                        u32::from_le_bytes(b[8..12].try_into().unwrap()),
                        u64::from_le_bytes(b[16..24].try_into().unwrap()),
                    )
                }
                GuestType::X86_32Pae => {
                    let b = d.read_bytes(e, a[1], 16)?;
                    (
                        u32::from_le_bytes(b[..4].try_into().unwrap()) as u64,
                        u32::from_le_bytes(b[4..8].try_into().unwrap()),
                        u64::from_le_bytes(b[8..16].try_into().unwrap()),
                    )
                }
            };
            // Xen: at most 128 ports (and never more than the domain has).
            if n > 128 {
                return Err(EINVAL);
            }
            let mut ports = Vec::with_capacity(n as usize);
            for i in 0..n as u64 {
                ports.push(d.read_u32_at(e, ports_va + 4 * i)?);
            }
            let timeout = (timeout != 0).then_some(timeout);
            if !d.wait_for_event(e, timeout, &ports) {
                d.crash(
                    e,
                    "sched_op poll with no timeout on ports nothing can signal".into(),
                );
            }
            Ok(0)
        }
        // shutdown: struct sched_shutdown { unsigned int reason; }
        2 => {
            let reason = d.read_u32_at(e, a[1])? as u64;
            match shutdown_reason(reason) {
                Some(s) => {
                    d.shutdown = Some(s);
                    Ok(0)
                }
                None => Err(EINVAL),
            }
        }
        // remote_shutdown: a domU may not shut down another domain.
        4 => Err(EPERM),
        // shutdown_code: remembered for the shutdown that follows.
        5 => {
            d.read_u32_at(e, a[1])?;
            Ok(0)
        }
        _ => Err(ENOSYS),
    }
}

/// The version this platform reports: Xen 4.17.
pub const XEN_MAJOR: u64 = 4;
pub const XEN_MINOR: u64 = 17;

fn xen_version(d: &mut PvDomain, e: &mut Engine, a: [u64; 6]) -> HcResult {
    let fixed = |s: &[u8], n: usize| {
        let mut v = s.to_vec();
        v.resize(n, 0);
        v
    };
    match a[0] {
        0 => Ok((XEN_MAJOR << 16 | XEN_MINOR) as i64),
        // extraversion: char[16]
        1 => d.put_bytes(e, a[1], &fixed(b".0-xenolith", 16)).map(|_| 0),
        // compile_info: compiler[64], compile_by[16], compile_domain[32], compile_date[32]
        2 => {
            let mut v = fixed(b"rustc", 64);
            v.extend(fixed(b"xenolith", 16));
            v.extend(fixed(b"", 32));
            v.extend(fixed(b"", 32));
            d.put_bytes(e, a[1], &v).map(|_| 0)
        }
        // capabilities: char[1024]
        3 => {
            let caps: &[u8] = match d.guest() {
                GuestType::X86_64 => b"xen-3.0-x86_64 xen-3.0-x86_32p",
                GuestType::X86_32Pae => b"xen-3.0-x86_64 xen-3.0-x86_32p",
            };
            d.put_bytes(e, a[1], &fixed(caps, 1024)).map(|_| 0)
        }
        // changeset: char[64]
        4 => d.put_bytes(e, a[1], &fixed(b"xenolith", 64)).map(|_| 0),
        // platform_parameters: { unsigned long virt_start; }
        5 => {
            let (v, w) = match d.guest() {
                GuestType::X86_64 => (crate::builder::abi::va::HYPERVISOR_VIRT_START_64, 8),
                GuestType::X86_32Pae => (crate::builder::abi::va::HYPERVISOR_VIRT_START_PAE, 4),
            };
            d.put_bytes(e, a[1], &v.to_le_bytes()[..w]).map(|_| 0)
        }
        // get_features: { unsigned int submap_idx; uint32_t submap; }
        6 => {
            let idx = d.read_u32_at(e, a[1])?;
            // What Xen 4.17's XENVER_get_features reports to a PV domU: preserve-AD
            // mmu_update (5), highmem_assist (6), gnttab_map_avail_bits (7),
            // memory_op_vnode_supported (13), and pae_pgdir_above_4gb (4) once the guest
            // enabled VMASST_TYPE_pae_extended_cr3. (writable_page_tables is only for
            // translated guests.)
            let map: u32 = match idx {
                0 => {
                    (1 << 5)
                        | (1 << 6)
                        | (1 << 7)
                        | (1 << 13)
                        | if d.vm_assist & (1 << 3) != 0 {
                            1 << 4
                        } else {
                            0
                        }
                }
                _ => 0,
            };
            d.put_bytes(e, a[1] + 4, &map.to_le_bytes()).map(|_| 0)
        }
        // pagesize
        7 => Ok(4096),
        // guest_handle: xen_domain_handle_t (16 bytes)
        8 => d.put_bytes(e, a[1], &[0u8; 16]).map(|_| 0),
        // commandline: privileged only
        9 => Err(EPERM),
        // build_id: privileged only
        10 => Err(EPERM),
        _ => Err(ENOSYS),
    }
}

fn console_io(d: &mut PvDomain, e: &mut Engine, a: [u64; 6]) -> HcResult {
    match a[0] {
        // CONSOLEIO_write
        0 => {
            let n = (a[1] & 0xffff_ffff) as usize;
            if n > super::MAX_COPY {
                return Err(EINVAL);
            }
            let b = d.read_bytes(e, a[2], n)?;
            d.console.borrow_mut().write(&b);
            Ok(0)
        }
        // CONSOLEIO_read: a domU has nothing to read here (input goes through the ring).
        1 => Ok(0),
        _ => Err(ENOSYS),
    }
}

fn vm_assist(d: &mut PvDomain, _e: &mut Engine, a: [u64; 6]) -> HcResult {
    let ty = a[1];
    // VMASST_TYPE_4gb_segments(0), _notify(1), writable_pagetables(2), pae_extended_cr3(3),
    // architectural_iopl(4), runstate_update_flag(5), m2p_strict(32): the PV set.
    let valid: u64 = match d.guest() {
        GuestType::X86_64 => 0x3f | 1 << 32,
        GuestType::X86_32Pae => 0x3f,
    };
    if ty >= 64 || valid & (1 << ty) == 0 {
        return Err(EINVAL);
    }
    match a[0] {
        0 => d.vm_assist |= 1 << ty,
        1 => d.vm_assist &= !(1 << ty),
        _ => return Err(ENOSYS),
    }
    Ok(0)
}

/// Load a flat Xen selector into `seg` (RPL forced to 3 for 64-bit guests).
/// Load a segment register for a return to the guest (iret, the failsafe path): Xen's
/// flat selectors, the null selector for data segments, or a descriptor of the guest's GDT
/// that the hardware would accept for an iret to ring 3 (a present code segment for CS, a
/// present writable data segment for SS and data registers, DPL = RPL).
pub(super) fn load_return_seg(
    d: &PvDomain,
    e: &mut Engine,
    seg: Seg,
    sel: u16,
) -> Result<(), String> {
    if let Some(desc) = xen_desc(d.guest(), sel) {
        let mut s = X86State(&mut e.env);
        s.set_seg(seg, sel, desc.base(), desc.limit(), desc.attr());
        if seg == Seg::Cs {
            // The CPL is the new code selector's RPL, as after a hardware iret.
            s.set_cpl((sel & 3) as u8);
        }
        return Ok(());
    }
    if sel & !3 == 0 && seg != Seg::Cs && seg != Seg::Ss {
        X86State(&mut e.env).set_seg(seg, sel, 0, 0, 0);
        return Ok(());
    }
    let Some(desc) = d.guest_desc(e, sel) else {
        return Err(format!(
            "iret to selector {sel:#x}: not a descriptor of the guest's GDT"
        ));
    };
    let ok = desc.present()
        && desc.dpl() == (sel & 3) as u32
        && match seg {
            Seg::Cs => desc.is_code(),
            Seg::Ss => desc.writable_data(),
            _ => desc.is_seg() && desc.readable(),
        };
    if !ok {
        return Err(format!(
            "iret to selector {sel:#x}: descriptor {:#010x}{:08x} is not usable for {seg:?}",
            desc.hi, desc.lo
        ));
    }
    // The accessed bit, as the hardware sets it on a load, is left to the guest's copy.
    let mut s = X86State(&mut e.env);
    s.set_seg(seg, sel, desc.base(), desc.limit(), desc.attr() | 1);
    if seg == Seg::Cs {
        s.set_cpl((sel & 3) as u8);
    }
    Ok(())
}

/// Xen's fixup_guest_code_selector for 32-bit guests: an RPL-0 selector becomes RPL 1
/// (the guest kernel runs in ring 1).
pub(super) fn fixup_cs32(sel: u16) -> u16 {
    if sel & 3 == 0 && sel != 0 {
        sel | 1
    } else {
        sel
    }
}

/// HYPERVISOR_iret for 32-bit guests (Xen's compat_iret): the frame at esp is eax, eip, cs,
/// eflags, and for a return to ring 2/3 also esp, ss. A return to ring 1 leaves esp just
/// above the frame. A frame whose selectors cannot be loaded goes to the failsafe callback.
fn compat_iret(d: &mut PvDomain, e: &mut Engine) -> HcResult {
    let esp = X86State(&mut e.env).gpr(4) & 0xffff_ffff;
    let Ok(b) = d.read_bytes(e, esp, 16) else {
        d.crash(e, format!("iret: cannot read the iret frame at {esp:#x}"));
        return Ok(0);
    };
    let w = |i: usize| u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap()) as u64;
    let (eax, eip, cs, eflags) = (w(0), w(1), fixup_cs32(w(2) as u16), w(3));
    if eflags & (1 << 17) != 0 {
        d.crash(e, "iret to virtual-8086 mode".into());
        return Ok(0);
    }
    const ARCHITECTURAL_IOPL: u64 = 1 << 4;
    if d.vm_assist & ARCHITECTURAL_IOPL != 0 {
        d.iopl = ((eflags >> 12) & 3) as u8;
    }
    let (new_esp, ss) = if cs & 3 == 1 {
        (esp + 16, X86State(&mut e.env).seg_sel(Seg::Ss))
    } else {
        let Ok(t) = d.read_bytes(e, esp + 16, 8) else {
            d.crash(e, format!("iret: cannot read the iret frame at {esp:#x}"));
            return Ok(0);
        };
        (
            u32::from_le_bytes(t[..4].try_into().unwrap()) as u64,
            u32::from_le_bytes(t[4..].try_into().unwrap()) as u16,
        )
    };
    let mut s = X86State(&mut e.env);
    s.set_gpr(0, eax);
    s.set_rip(eip);
    s.set_rflags((eflags & !0x3000 & 0x003f_7fd7) | 0x200 | 2);
    s.set_gpr(4, new_esp);
    d.set_upcall_mask(e, (eflags & 0x200 == 0) as u8);
    if let Err(why) =
        load_return_seg(d, e, Seg::Cs, cs).and_then(|_| load_return_seg(d, e, Seg::Ss, ss))
    {
        return_failed(d, e, cs, ss, why);
        return Ok(eax as i64);
    }
    d.kernel_mode = cs & 3 != 3;
    Ok(eax as i64)
}

/// A return to the guest could not load `cs`/`ss`: the registers hold the context being
/// returned to, with those selectors as they were asked for (what Xen's failsafe frame
/// shows), and the failsafe callback runs.
fn return_failed(d: &mut PvDomain, e: &mut Engine, cs: u16, ss: u16, why: String) {
    // A selector that loads is loaded; one that does not keeps just its value.
    for (seg, sel) in [(Seg::Cs, cs), (Seg::Ss, ss)] {
        if load_return_seg(d, e, seg, sel).is_err() {
            X86State(&mut e.env).set_seg(seg, sel, 0, 0, 0);
        }
    }
    d.failsafe(e, why);
}

/// HYPERVISOR_iret: pop the iret_context from the guest stack.
fn iret(d: &mut PvDomain, e: &mut Engine, _a: [u64; 6]) -> HcResult {
    if d.guest() != GuestType::X86_64 {
        return compat_iret(d, e);
    }
    let rsp = X86State(&mut e.env).gpr(4);
    let Ok(b) = d.read_bytes(e, rsp, 9 * 8) else {
        d.crash(e, format!("iret: cannot read the iret frame at {rsp:#x}"));
        return Ok(0);
    };
    let f: Vec<u64> = b
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let (rax, r11, rcx, flags, rip, cs, rflags, sp, ss) =
        (f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]);
    if cs & 3 == 3 && d.kernel_mode {
        if d.mmu.user_base == 0 {
            // do_iret: "Guest switching to user mode with no user page tables".
            d.crash(e, "iret to user mode with no user page tables".into());
            return Ok(0);
        }
        d.toggle_mode(e);
    }
    // VMASST_TYPE_architectural_iopl: the virtual IOPL comes from the frame's rflags.
    if d.vm_assist & (1 << 4) != 0 {
        d.iopl = ((rflags >> 12) & 3) as u8;
    }
    if let Err(why) = load_return_seg(d, e, Seg::Cs, (cs | 3) as u16)
        .and_then(|_| load_return_seg(d, e, Seg::Ss, (ss | 3) as u16))
    {
        // The faulting iretq goes to the failsafe callback with the context it was
        // returning to (Linux's xen_failsafe_callback kills the task).
        let mut s = X86State(&mut e.env);
        s.set_rip(rip);
        s.set_rflags((rflags & !(0x3000 | 0x2_0000)) | 0x200 | 2);
        s.set_gpr(4, sp);
        s.set_gpr(0, rax);
        return_failed(d, e, (cs | 3) as u16, (ss | 3) as u16, why);
        return Ok(0);
    }
    let mut s = X86State(&mut e.env);
    s.set_rip(rip);
    // IOPL and VM cleared, IF always set (the guest's IF lives in the upcall mask).
    s.set_rflags((rflags & !(0x3000 | 0x2_0000)) | 0x200 | 2);
    s.set_gpr(4, sp);
    s.set_gpr(0, rax);
    // VGCF_in_syscall (bit 8): rcx/r11 are not restored from the frame; Xen leaves
    // through sysret, so the guest gets rcx = rip and r11 = rflags.
    if flags & (1 << 8) == 0 {
        s.set_gpr(11, r11);
        s.set_gpr(1, rcx);
    } else {
        let fl = s.rflags();
        s.set_gpr(11, fl);
        s.set_gpr(1, rip);
    }
    d.set_upcall_mask(e, (rflags & 0x200 == 0) as u8);
    Ok(0)
}

fn set_segment_base(d: &mut PvDomain, e: &mut Engine, a: [u64; 6]) -> HcResult {
    if d.guest() != GuestType::X86_64 {
        return Err(ENOSYS);
    }
    let mut s = X86State(&mut e.env);
    match a[0] {
        // SEGBASE_FS
        0 => s.set_g(Seg::Fs.base_g(), a[1]),
        // SEGBASE_GS_USER: the inactive (user) GS base while in kernel mode
        1 => s.set_g(G_KERNEL_GS_BASE, a[1]),
        // SEGBASE_GS_KERNEL
        2 => s.set_g(Seg::Gs.base_g(), a[1]),
        // SEGBASE_GS_USER_SEL: load the user gs selector (flat or null only so far)
        3 => {
            let sel = (a[1] & 0xffff) as u16;
            if sel & !3 != 0 && xen_desc(d.guest(), sel).is_none() {
                return Err(EINVAL);
            }
        }
        _ => return Err(EINVAL),
    }
    Ok(0)
}

fn callback_op(d: &mut PvDomain, e: &mut Engine, a: [u64; 6]) -> HcResult {
    // struct callback_register { uint16_t type; uint16_t flags; xen_callback_t address; }
    let (ty, flags, address) = match d.guest() {
        GuestType::X86_64 => {
            let b = d.read_bytes(e, a[1], 16)?;
            (
                u16::from_le_bytes([b[0], b[1]]),
                u16::from_le_bytes([b[2], b[3]]),
                u64::from_le_bytes(b[8..16].try_into().unwrap()),
            )
        }
        GuestType::X86_32Pae => {
            // compat xen_callback_t { u32 cs; u32 eip; } at offset 4.
            let b = d.read_bytes(e, a[1], 12)?;
            let cs = fixup_cs32(u16::from_le_bytes([b[4], b[5]]));
            match u16::from_le_bytes([b[0], b[1]]) {
                0 => d.callbacks.event_cs = cs,
                1 => d.callbacks.failsafe_cs = cs,
                _ => {}
            }
            (
                u16::from_le_bytes([b[0], b[1]]),
                u16::from_le_bytes([b[2], b[3]]),
                u32::from_le_bytes(b[8..12].try_into().unwrap()) as u64,
            )
        }
    };
    if d.guest() == GuestType::X86_64 {
        // pv/callback.c: a non-canonical address is -EINVAL, an unknown type -ENOSYS;
        // only the NMI callback can be unregistered.
        match a[0] {
            0 if !super::is_canonical(address) => return Err(EINVAL),
            0 if !matches!(ty, 0 | 1 | 2 | 4 | 5 | 7) => return Err(ENOSYS),
            1 if matches!(ty, 0 | 1 | 2 | 5 | 7) => return Err(EINVAL),
            1 if ty != 4 => return Err(ENOSYS),
            _ => {}
        }
    }
    let slot = match ty {
        0 => &mut d.callbacks.event,
        1 => &mut d.callbacks.failsafe,
        2 if d.guest() == GuestType::X86_64 => &mut d.callbacks.syscall,
        7 if d.guest() == GuestType::X86_64 => &mut d.callbacks.syscall32,
        5 => &mut d.callbacks.sysenter,
        4 => &mut d.callbacks.nmi,
        _ => return Err(EINVAL),
    };
    match a[0] {
        // CALLBACKOP_register
        0 => *slot = (address, flags),
        // CALLBACKOP_unregister: the event and failsafe callbacks cannot be unregistered.
        1 => {
            if ty == 0 || ty == 1 {
                return Err(EINVAL);
            }
            *slot = (0, 0);
        }
        _ => return Err(ENOSYS),
    }
    Ok(0)
}

fn event_channel_op(d: &mut PvDomain, e: &mut Engine, a: [u64; 6]) -> HcResult {
    use crate::core::evtchn::{
        PortState, EVTCHNSTAT_CLOSED, EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_IPI, EVTCHNSTAT_PIRQ,
        EVTCHNSTAT_UNBOUND, EVTCHNSTAT_VIRQ,
    };
    let arg = a[1];
    let u32_at = |d: &PvDomain, e: &mut Engine, off: u64| d.read_u32_at(e, arg + off);
    match a[0] {
        // bind_interdomain { remote_dom u16, pad, remote_port u32, local_port u32 }: the
        // back ends' own channels are pre-bound; a domU has no other domain to bind to.
        0 => Err(EPERM),
        // bind_virq { virq, vcpu, port }
        1 => {
            let (virq, vcpu) = (u32_at(d, e, 0)?, u32_at(d, e, 4)?);
            let p = d.evtchn.bind_virq(virq, vcpu)?;
            d.put_bytes(e, arg + 8, &p.to_le_bytes())?;
            Ok(0)
        }
        // bind_pirq: no physical IRQs in a domU
        2 => Err(EPERM),
        // close { port }
        3 => {
            let p = u32_at(d, e, 0)?;
            d.evtchn.close(e.ram(), p).map(|_| 0)
        }
        // send { port }
        4 => {
            let p = u32_at(d, e, 0)?;
            let r = d.evtchn.send(e.ram(), p)?;
            if let Some((_, port)) = r {
                if port == d.store_port {
                    d.service_xenstore(e);
                } else {
                    d.backend_event(e, port);
                }
            }
            Ok(0)
        }
        // status { dom u16, pad, port u32, status u32, vcpu u32, union u }
        5 => {
            let mut b = [0u8; 2];
            d.read_guest(e, arg, &mut b).map_err(|_| EFAULT)?;
            crate::pv::mmu::check_self(u16::from_le_bytes(b) as u64)?;
            let port = u32_at(d, e, 4)?;
            let st = d.evtchn.status(port)?;
            let (status, u0, u1): (u32, u32, u32) = match st.state {
                PortState::Free => (EVTCHNSTAT_CLOSED, 0, 0),
                PortState::Unbound { remote_dom } => (EVTCHNSTAT_UNBOUND, remote_dom as u32, 0),
                PortState::Interdomain {
                    remote_dom,
                    remote_port,
                } => (EVTCHNSTAT_INTERDOMAIN, remote_dom as u32, remote_port),
                PortState::Pirq(p) => (EVTCHNSTAT_PIRQ, p, 0),
                PortState::Virq(v) => (EVTCHNSTAT_VIRQ, v, 0),
                PortState::Ipi => (EVTCHNSTAT_IPI, 0, 0),
            };
            let mut out = Vec::new();
            for v in [status, st.vcpu, u0, u1] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            d.put_bytes(e, arg + 8, &out)?;
            Ok(0)
        }
        // alloc_unbound { dom u16, remote_dom u16, port u32 }
        6 => {
            let mut b = [0u8; 4];
            d.read_guest(e, arg, &mut b).map_err(|_| EFAULT)?;
            crate::pv::mmu::check_self(u16::from_le_bytes([b[0], b[1]]) as u64)?;
            let remote = u16::from_le_bytes([b[2], b[3]]);
            let remote = if remote == crate::pv::mmu::DOMID_SELF as u16 {
                1
            } else {
                remote
            };
            let p = d.evtchn.alloc_unbound(remote)?;
            d.put_bytes(e, arg + 4, &p.to_le_bytes())?;
            Ok(0)
        }
        // bind_ipi { vcpu, port }
        7 => {
            let vcpu = u32_at(d, e, 0)?;
            let p = d.evtchn.bind_ipi(vcpu)?;
            d.put_bytes(e, arg + 4, &p.to_le_bytes())?;
            Ok(0)
        }
        // bind_vcpu { port, vcpu }
        8 => {
            let (p, v) = (u32_at(d, e, 0)?, u32_at(d, e, 4)?);
            d.evtchn.bind_vcpu(p, v).map(|_| 0)
        }
        // unmask { port }
        9 => {
            let p = u32_at(d, e, 0)?;
            d.evtchn.unmask(e.ram(), p).map(|_| 0)
        }
        // reset { dom }
        10 => {
            let mut b = [0u8; 2];
            d.read_guest(e, arg, &mut b).map_err(|_| EFAULT)?;
            crate::pv::mmu::check_self(u16::from_le_bytes(b) as u64)?;
            d.evtchn.reset(e.ram());
            let (s, c) = (d.store_port, d.console_port);
            let _ = d.evtchn.bind_backend(s, 0);
            // The console's channel as it was: bound when its back end holds it.
            if d.backends.owner_of(c).is_some() {
                let _ = d.evtchn.bind_backend(c, 0);
            } else {
                let _ = d.evtchn.reserve_unbound(c, 0);
            }
            Ok(0)
        }
        // init_control { control_gfn u64, offset u32, vcpu u32, link_bits u8 (OUT), pad[7] }
        // (the same 24 bytes for 32-bit guests). The control block's frame must be one the
        // domain owns and may map writable (not a page table): gfn == mfn for PV.
        11 => {
            use crate::core::evtchn_fifo::EvtchnInitControl;
            let b: [u8; 24] = d.read_bytes(e, arg, 24)?.try_into().map_err(|_| EFAULT)?;
            let mut ic = EvtchnInitControl::from_bytes(&b);
            let (mem, mmu) = (&d.mem, &d.mmu);
            let ok = |f: u64| mem.owns(f) && !mmu.tables.contains_key(&f);
            ic.link_bits =
                d.evtchn
                    .init_control(e.ram(), ic.control_gfn, ic.offset, ic.vcpu, &ok)?;
            d.put_bytes(e, arg, &ic.to_bytes())?;
            Ok(0)
        }
        // expand_array { array_gfn u64 }
        12 => {
            let b: [u8; 8] = d.read_bytes(e, arg, 8)?.try_into().map_err(|_| EFAULT)?;
            let (mem, mmu) = (&d.mem, &d.mmu);
            let ok = |f: u64| mem.owns(f) && !mmu.tables.contains_key(&f);
            d.evtchn
                .expand_array(e.ram(), u64::from_le_bytes(b), &ok)
                .map(|_| 0)
        }
        // set_priority { port u32, priority u32 }
        13 => {
            let (p, prio) = (u32_at(d, e, 0)?, u32_at(d, e, 4)?);
            d.evtchn.set_priority(p, prio).map(|_| 0)
        }
        // reset_cont: a reset is never left in progress here (it does not preempt), so
        // there is nothing to continue: Xen's -EBUSY.
        14 => {
            let mut b = [0u8; 2];
            d.read_guest(e, arg, &mut b).map_err(|_| EFAULT)?;
            crate::pv::mmu::check_self(u16::from_le_bytes(b) as u64)?;
            Err(EBUSY)
        }
        _ => Err(ENOSYS),
    }
}

fn physdev_op(d: &mut PvDomain, e: &mut Engine, a: [u64; 6]) -> HcResult {
    match a[0] {
        // PHYSDEVOP_set_iopl { uint32_t iopl; }
        6 => {
            let v = d.read_u32_at(e, a[1])?;
            if v > 3 {
                return Err(EINVAL);
            }
            d.iopl = v as u8;
            Ok(0)
        }
        // PHYSDEVOP_set_iobitmap, and the IRQ/PCI calls: a domU has no physical devices.
        7 => Err(EPERM),
        _ => Err(ENOSYS),
    }
}

fn get_debugreg(d: &mut PvDomain, _e: &mut Engine, a: [u64; 6]) -> HcResult {
    match a[0] {
        0..=3 | 6 | 7 => Ok(d.debugreg[a[0] as usize] as i64),
        _ => Err(EINVAL),
    }
}

fn set_debugreg(d: &mut PvDomain, _e: &mut Engine, a: [u64; 6]) -> HcResult {
    let (r, v) = (a[0], a[1]);
    match r {
        // Breakpoint addresses must be canonical and below the hypervisor hole.
        0..=3 => {
            if !super::is_canonical(v)
                || (0xffff_8000_0000_0000..0xffff_8800_0000_0000).contains(&v)
            {
                return Err(EPERM);
            }
            d.debugreg[r as usize] = v;
        }
        // DR6: reserved bits read as set.
        6 => {
            if v >> 32 != 0 {
                return Err(EINVAL);
            }
            d.debugreg[6] = (v & 0xe00f) | 0xffff_0ff0;
        }
        // DR7: reserved bits 11-12, 14-15 and the upper half must be clear; GD unsupported.
        7 => {
            if v >> 32 != 0 || v & 0xd800 != 0 || v & (1 << 13) != 0 {
                return Err(EINVAL);
            }
            d.debugreg[7] = v | 0x400;
        }
        _ => return Err(EINVAL),
    }
    Ok(0)
}

/// nmi_op: XENNMI_register_callback / unregister_callback (the NMI callback is kept; this
/// platform never raises a virtual NMI).
fn nmi_op(d: &mut PvDomain, _e: &mut Engine, a: [u64; 6]) -> HcResult {
    match a[0] {
        0 => {
            d.callbacks.nmi = (a[1], 0);
            Ok(0)
        }
        1 => {
            d.callbacks.nmi = (0, 0);
            Ok(0)
        }
        _ => Err(ENOSYS),
    }
}

/// hvm_op from a PV guest: the parameter and time calls Linux probes are refused with
/// -EINVAL (not an HVM domain), the rest are unknown.
fn hvm_op(_d: &mut PvDomain, _e: &mut Engine, a: [u64; 6]) -> HcResult {
    match a[0] {
        // set_param, get_param, pagetable_dying, get_time
        0 | 1 | 9 | 10 => Err(EINVAL),
        _ => Err(ENOSYS),
    }
}

/// sysctl / domctl: the XSM policy refuses them to an unprivileged domU.
fn privileged_only(_d: &mut PvDomain, _e: &mut Engine, _a: [u64; 6]) -> HcResult {
    Err(EPERM)
}
