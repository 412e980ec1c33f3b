//! Privileged and platform instructions as Xen emulates them for PV guests: CPUID (the
//! policy, plain and through the forced-emulation prefix `ud2; "xen"; cpuid`), RDMSR/WRMSR
//! with Xen's MSR policy, port I/O under the virtual IOPL (a domU has no ports: reads give
//! all ones, writes are dropped), moves from control registers, CLTS, WBINVD.

use frontend_x86::state::{
    cr4, Seg, X86State, G_CR0, G_CR2, G_CR4, G_KERNEL_GS_BASE, G_TSC_AUX, G_XCR0,
};
use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Register};
use jit::{Engine, GuestFault};

use super::PvDomain;
use crate::builder::GuestType;

/// The forced-emulation prefix and CPUID: `ud2; .ascii "xen"; cpuid`.
pub const FORCED_CPUID: [u8; 7] = [0x0f, 0x0b, 0x78, 0x65, 0x6e, 0x0f, 0xa2];

const fn sig(s: &[u8; 12]) -> (u32, u32, u32) {
    (
        u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        u32::from_le_bytes([s[4], s[5], s[6], s[7]]),
        u32::from_le_bytes([s[8], s[9], s[10], s[11]]),
    )
}

/// Xenolith's CPUID policy for PV guests: the virtual CPU's leaves
/// ([`frontend_x86::cpuid::leaf`]) plus Xen's hypervisor leaves.
pub fn cpuid_policy(leaf: u32, sub: u32, cr4: u64, xcr0: u64) -> (u32, u32, u32, u32) {
    match leaf {
        0x4000_0000 => {
            let (b, c, d) = sig(b"XenVMMXenVMM");
            (0x4000_0005, b, c, d)
        }
        0x4000_0001 => (
            (super::hypercall::XEN_MAJOR << 16 | super::hypercall::XEN_MINOR) as u32,
            0,
            0,
            0,
        ),
        // One hypercall page, installed by writing its address to MSR 0x40000000.
        0x4000_0002 => (1, 0x4000_0000, 0, 0),
        0x4000_0003..=0x4000_00ff => (0, 0, 0, 0),
        _ => frontend_x86::cpuid::leaf(leaf, sub, cr4, xcr0),
    }
}

impl PvDomain {
    fn set_cpuid_regs(e: &mut Engine) {
        let mut s = X86State(&mut e.env);
        let (a, b, c, d) = cpuid_policy(s.gpr(0) as u32, s.gpr(1) as u32, s.g(G_CR4), s.g(G_XCR0));
        s.set_gpr(0, a as u64);
        s.set_gpr(3, b as u64);
        s.set_gpr(1, c as u64);
        s.set_gpr(2, d as u64);
    }

    /// A #UD at rip: the forced-emulation CPUID, if that is what is there.
    pub(super) fn try_forced_cpuid(&mut self, e: &mut Engine) -> bool {
        let rip = X86State(&mut e.env).rip();
        let mut b = [0u8; 7];
        if self.read_guest(e, rip, &mut b).is_err() || b != FORCED_CPUID {
            return false;
        }
        Self::set_cpuid_regs(e);
        X86State(&mut e.env).set_rip(rip + 7);
        e.env.icount += 1;
        true
    }

    /// Plain CPUID (from user or kernel mode): the same policy.
    pub(super) fn emulate_cpuid(&mut self, e: &mut Engine, next: u64) {
        Self::set_cpuid_regs(e);
        X86State(&mut e.env).set_rip(next);
        e.env.icount += 1;
    }

    pub(super) fn decode_at_rip(&self, e: &mut Engine) -> Option<Instruction> {
        let rip = X86State(&mut e.env).rip();
        let mut b = [0u8; 15];
        // An instruction may end before an unmapped page: fetch what can be fetched.
        let mut n = 15;
        while n > 0 && self.read_guest(e, rip, &mut b[..n]).is_err() {
            n -= 1;
        }
        let bits = if self.guest() == GuestType::X86_64
            && X86State(&mut e.env).g(Seg::Cs.attr_g()) & frontend_x86::state::attr::L != 0
        {
            64
        } else {
            32
        };
        let mut dec = Decoder::with_ip(bits, &b[..n], rip, DecoderOptions::NONE);
        let i = dec.decode();
        (i.code() != Code::INVALID).then_some(i)
    }

    fn gp0(&mut self, e: &mut Engine) {
        self.deliver_fault(
            e,
            GuestFault {
                vector: 13,
                error_code: Some(0),
                addr: 0,
            },
        );
    }

    /// Is the virtual IOPL enough for port I/O in the current mode?
    pub(super) fn iopl_ok(&self) -> bool {
        let cpl = if self.kernel_mode { 1 } else { 3 };
        self.iopl >= cpl
    }

    pub(super) fn emulate_io(&mut self, e: &mut Engine, next: u64) {
        if !self.iopl_ok() {
            return self.gp0(e);
        }
        let Some(i) = self.decode_at_rip(e) else {
            return self.gp0(e);
        };
        let is_in = matches!(i.mnemonic(), iced_x86::Mnemonic::In);
        let is_out = matches!(i.mnemonic(), iced_x86::Mnemonic::Out);
        if !is_in && !is_out {
            // INS/OUTS: a domU has no ports; nothing to transfer is not Xen's behaviour,
            // so refuse loudly.
            let rip = X86State(&mut e.env).rip();
            return self.crash(e, format!("string port I/O at {rip:#x} is not emulated"));
        }
        if is_in {
            let r = i.op0_register();
            let size = r.size();
            let mut s = X86State(&mut e.env);
            let old = s.gpr(0);
            let v = match size {
                1 => (old & !0xff) | 0xff,
                2 => (old & !0xffff) | 0xffff,
                _ => 0xffff_ffff,
            };
            s.set_gpr(0, v);
        }
        X86State(&mut e.env).set_rip(next);
        e.env.icount += 1;
    }

    pub(super) fn emulate_msr(&mut self, e: &mut Engine, write: bool, next: u64) {
        if !self.kernel_mode {
            return self.gp0(e);
        }
        let mut s = X86State(&mut e.env);
        let msr = s.gpr(1) as u32;
        let val = (s.gpr(2) << 32) | (s.gpr(0) & 0xffff_ffff);
        let gs_g = Seg::Gs.base_g();
        let fs_g = Seg::Fs.base_g();
        let ok = match (msr, write) {
            (0xc000_0100, false) => Some(s.g(fs_g)),
            (0xc000_0101, false) => Some(s.g(gs_g)),
            (0xc000_0102, false) => Some(s.g(G_KERNEL_GS_BASE)),
            (0xc000_0100, true) if super::is_canonical(val) => {
                s.set_g(fs_g, val);
                Some(0)
            }
            (0xc000_0101, true) if super::is_canonical(val) => {
                s.set_g(gs_g, val);
                Some(0)
            }
            (0xc000_0102, true) if super::is_canonical(val) => {
                s.set_g(G_KERNEL_GS_BASE, val);
                Some(0)
            }
            // EFER: LME | LMA | NXE | SCE, read-only for the guest.
            (0xc000_0080, false) => Some(0xd01),
            // TSC: the virtual TSC.
            (0x10, false) => Some(self.clock.tsc(e.env.icount)),
            // TSC_AUX (RDTSCP/RDPID): 32 bits.
            (0xc000_0103, false) => Some(s.g(G_TSC_AUX)),
            (0xc000_0103, true) if val >> 32 == 0 => {
                s.set_g(G_TSC_AUX, val);
                Some(0)
            }
            // IA32_UCODE_REV / AMD PATCHLEVEL: reads 0; Intel documents writing 0 before
            // CPUID leaf 1 (our policy is GenuineIntel), anything else is #GP, as Xen.
            (0x8b, false) => Some(0),
            (0x8b, true) if val == 0 => Some(0),
            // IA32_ARCH_CAPABILITIES: read-only, from the CPUID policy.
            (0x10a, false) => Some(frontend_x86::cpuid::ARCH_CAPABILITIES),
            // MSR_IA32_MISC_ENABLE: Xen's PV policy (fast strings, BTS/PEBS unavailable)
            (0x1a0, false) => Some(1 | 1 << 11 | 1 << 12),
            // PAT: the power-on value, read-only for a PV guest.
            (0x277, false) => Some(0x0007_0406_0007_0406),
            // Xen's hypercall-page MSR is for HVM guests.
            _ => None,
        };
        match ok {
            Some(v) => {
                let mut s = X86State(&mut e.env);
                if !write {
                    s.set_gpr(0, v & 0xffff_ffff);
                    s.set_gpr(2, v >> 32);
                }
                s.set_rip(next);
                e.env.icount += 1;
            }
            None => self.gp0(e),
        }
    }

    /// MOV to/from CRn, CLTS, LMSW from the guest kernel.
    pub(super) fn emulate_cr(&mut self, e: &mut Engine, next: u64) {
        if !self.kernel_mode {
            return self.gp0(e);
        }
        let Some(i) = self.decode_at_rip(e) else {
            return self.gp0(e);
        };
        let gpr = |r: Register| {
            r.full_register()
                .number()
                .checked_sub(Register::RAX.number())
        };
        match i.code() {
            Code::Clts => {
                let mut s = X86State(&mut e.env);
                let v = s.g(G_CR0) & !(1 << 3);
                s.set_g(G_CR0, v);
            }
            Code::Mov_r64_cr | Code::Mov_r32_cr => {
                let Some(dst) = gpr(i.op0_register()) else {
                    return self.gp0(e);
                };
                let v = match i.op1_register() {
                    Register::CR0 => X86State(&mut e.env).g(G_CR0),
                    Register::CR2 => X86State(&mut e.env).g(G_CR2),
                    Register::CR3 => match self.guest() {
                        GuestType::X86_64 => self.mmu.kernel_base,
                        GuestType::X86_32Pae => {
                            let pfn = (self.mmu.kernel_base >> 12) as u32;
                            (pfn << 12 | pfn >> 20) as u64
                        }
                    },
                    // Xen shows PAE, OSFXSR, OSXMMEXCPT and the bits the guest may set.
                    Register::CR4 => X86State(&mut e.env).g(G_CR4),
                    _ => return self.gp0(e),
                };
                let v = if i.code() == Code::Mov_r32_cr {
                    v & 0xffff_ffff
                } else {
                    v
                };
                X86State(&mut e.env).set_gpr(dst, v);
            }
            Code::Mov_cr_r64 | Code::Mov_cr_r32 if i.op0_register() == Register::CR3 => {
                let Some(src) = gpr(i.op1_register()) else {
                    return self.gp0(e);
                };
                let v = X86State(&mut e.env).gpr(src);
                let mfn = match self.guest() {
                    GuestType::X86_64 => v >> 12,
                    GuestType::X86_32Pae => {
                        let v = v as u32;
                        ((v >> 12) | (v << 20)) as u64 & 0xf_ffff_ffff
                    }
                };
                // As MMUEXT_NEW_BASEPTR.
                if super::mmu::new_baseptr(self, e, mfn).is_err() {
                    return self.gp0(e);
                }
            }
            Code::Mov_cr_r64 | Code::Mov_cr_r32 if i.op0_register() == Register::CR0 => {
                // Only TS may change.
                let Some(src) = gpr(i.op1_register()) else {
                    return self.gp0(e);
                };
                let v = X86State(&mut e.env).gpr(src);
                let mut s = X86State(&mut e.env);
                let cr0 = s.g(G_CR0);
                if (v ^ cr0) & !(1u64 << 3) & 0xffff_ffff != 0 {
                    return self.gp0(e);
                }
                s.set_g(G_CR0, (cr0 & !8) | (v & 8));
            }
            Code::Mov_cr_r64 | Code::Mov_cr_r32 if i.op0_register() == Register::CR4 => {
                // As Xen's pv_fixup_guest_cr4: the guest may toggle OSXSAVE only; other
                // bits keep their values (a write trying to change them is ignored).
                let Some(src) = gpr(i.op1_register()) else {
                    return self.gp0(e);
                };
                let v = X86State(&mut e.env).gpr(src);
                let mut s = X86State(&mut e.env);
                let cr4 = s.g(G_CR4);
                s.set_g(G_CR4, (cr4 & !cr4::OSXSAVE) | (v & cr4::OSXSAVE));
            }
            _ => return self.gp0(e),
        }
        X86State(&mut e.env).set_rip(next);
        e.env.icount += 1;
    }
}

impl PvDomain {
    /// IRET executed by the guest in ring 3 (64-bit: Linux's sync_core "iret to self"):
    /// the hardware allows it to the same ring, so it is emulated as the CPU would run it.
    /// Returning to an inner ring is #GP(selector).
    pub(super) fn emulate_iret(&mut self, e: &mut Engine, code: u64) {
        let size: u64 = match Code::try_from(code as usize).unwrap_or(Code::INVALID) {
            Code::Iretq => 8,
            Code::Iretd => 4,
            _ => 2,
        };
        let rsp = X86State(&mut e.env).gpr(4);
        let mut b = vec![0u8; 5 * size as usize];
        if let Err(f) = self.read_guest(e, rsp, &mut b) {
            return self.deliver_fault(
                e,
                GuestFault {
                    vector: if f.vector == 14 { 14 } else { 12 },
                    error_code: f.error_code.or(Some(0)),
                    addr: f.addr,
                },
            );
        }
        let w = |i: usize| {
            let mut x = [0u8; 8];
            x[..size as usize].copy_from_slice(&b[i * size as usize..(i + 1) * size as usize]);
            u64::from_le_bytes(x)
        };
        let (rip, cs, fl, sp, ss) = (w(0), w(1) as u16, w(2), w(3), w(4) as u16);
        let cpl = if self.guest() == GuestType::X86_64 {
            3
        } else {
            1
        };
        if cs & 3 < cpl || ss & 3 != cs & 3 {
            return self.deliver_fault(
                e,
                GuestFault {
                    vector: 13,
                    error_code: Some((cs & !3) as u32),
                    addr: 0,
                },
            );
        }
        // A selector the hardware would refuse: #GP(selector), as the CPU raises it.
        if super::hypercall::load_return_seg(self, e, Seg::Cs, cs).is_err() {
            return self.deliver_fault(
                e,
                GuestFault {
                    vector: 13,
                    error_code: Some((cs & !3) as u32),
                    addr: 0,
                },
            );
        }
        if super::hypercall::load_return_seg(self, e, Seg::Ss, ss).is_err() {
            return self.deliver_fault(
                e,
                GuestFault {
                    vector: 13,
                    error_code: Some((ss & !3) as u32),
                    addr: 0,
                },
            );
        }
        let mut s = X86State(&mut e.env);
        let old = s.rflags();
        // At CPL 3 (IOPL 0) IOPL, IF, VM, VIF, VIP stay; the rest come from the frame.
        let keep: u64 = 0x3000 | 0x200 | 0x2_0000 | 0x8_0000 | 0x10_0000;
        let changeable: u64 = 0x0025_4dd5 & !keep;
        let new = (old & !changeable) | (fl & changeable) | 2;
        s.set_rflags(new);
        s.set_rip(rip);
        s.set_gpr(4, sp);
        e.env.icount += 1;
    }
}

impl PvDomain {
    /// XGETBV (any mode) and XSETBV (guest kernel), as Xen emulates them for PV guests:
    /// XCR0 only; XSETBV needs x87 set, only supported components, SSE with AVX.
    pub(super) fn emulate_xcr(&mut self, e: &mut Engine, set: bool, next: u64) {
        let mut s = X86State(&mut e.env);
        let (ecx, val) = (
            s.gpr(1) as u32,
            (s.gpr(2) & 0xffff_ffff) << 32 | (s.gpr(0) & 0xffff_ffff),
        );
        if s.g(G_CR4) & cr4::OSXSAVE == 0 {
            return self.exception(
                e,
                GuestFault {
                    vector: 6,
                    error_code: None,
                    addr: 0,
                },
            );
        }
        if ecx != 0 {
            return self.gp0(e);
        }
        if set {
            if !self.kernel_mode || val & 1 == 0 || val & !frontend_x86::cpuid::XCR0_SUPPORTED != 0
            {
                return self.gp0(e);
            }
            s.set_g(G_XCR0, val);
        } else {
            let x = s.g(G_XCR0);
            s.set_gpr(0, x & 0xffff_ffff);
            s.set_gpr(2, x >> 32);
        }
        let mut s = X86State(&mut e.env);
        s.set_rip(next);
        e.env.icount += 1;
    }
}

impl PvDomain {
    /// RDTSCP (TSC and TSC_AUX) and RDPID (TSC_AUX into a register), in any mode.
    pub(super) fn emulate_rdtscp(&mut self, e: &mut Engine, rdpid: bool, next: u64) {
        let aux = X86State(&mut e.env).g(G_TSC_AUX);
        if rdpid {
            let Some(i) = self.decode_at_rip(e) else {
                return self.gp0(e);
            };
            let Some(r) = i
                .op0_register()
                .full_register()
                .number()
                .checked_sub(Register::RAX.number())
            else {
                return self.gp0(e);
            };
            X86State(&mut e.env).set_gpr(r, aux);
        } else {
            let t = self.clock.tsc(e.env.icount);
            let mut s = X86State(&mut e.env);
            s.set_gpr(0, t & 0xffff_ffff);
            s.set_gpr(2, t >> 32);
            s.set_gpr(1, aux & 0xffff_ffff);
        }
        X86State(&mut e.env).set_rip(next);
        e.env.icount += 1;
    }
}
