//! vCPU 0's initial state, as the toolstack hands it to Xen (`vcpu_x86_64`/`vcpu_x86_32`
//! in xg_dom_x86.c) and as Xen then loads it.
//!
//! Segments: the flat selectors (0xe033, 0xe02b, ...) index Xen's reserved GDT entries,
//! which follow the guest's 14 GDT frames in every PV vCPU's GDT. The builder writes those
//! descriptors into a platform frame mapped at Xen's per-domain GDT address, points GDTR
//! there (limit 0xefff), and loads the hidden segment state from the same descriptors, so a
//! later selector load, `lar` or an iret frame naming a flat selector sees what it would
//! under Xen. 64-bit guests get null data selectors (Xen's FLAT_KERNEL_DS64 is 0).

use frontend_x86::desc::Desc;
use frontend_x86::state::*;
use jit::Env;

use super::abi::sel;
use super::layout::{DomainLayout, GuestType};

/// A flat (base 0, limit 4 GiB, granular) descriptor with access byte `access` and flags
/// nibble `flags` (bit 1 L, bit 2 D/B, bit 3 G).
const fn flat_desc(access: u8, flags: u8) -> u64 {
    0x0000_ffff | (access as u64) << 40 | 0xf << 48 | (flags as u64) << 52
}

/// Xen's reserved GDT entries, from selector 0xe000 (the GDT page `FIRST_RESERVED_GDT_PAGE`):
/// the 64-bit hypervisor's `gdt` for 64-bit guests, `compat_gdt` for 32-bit ones.
pub fn xen_gdt_entries(guest: GuestType) -> [u64; 8] {
    const CODE64: u8 = 0xa; // G | L
    const FLAT32: u8 = 0xc; // G | D/B
    match guest {
        GuestType::X86_64 => [
            0,
            flat_desc(0x9b, CODE64), // 0xe008 ring 0 code, 64-bit
            flat_desc(0x93, FLAT32), // 0xe010 ring 0 data
            0,
            flat_desc(0xfb, FLAT32), // 0xe023 ring 3 code, compatibility
            flat_desc(0xf3, FLAT32), // 0xe02b ring 3 data
            flat_desc(0xfb, CODE64), // 0xe033 ring 3 code, 64-bit
            flat_desc(0x9b, FLAT32), // 0xe038 ring 0 code, compatibility
        ],
        GuestType::X86_32Pae => [
            0,
            flat_desc(0x9b, CODE64), // 0xe008 ring 0 code, 64-bit
            flat_desc(0x93, FLAT32), // 0xe010 ring 0 data
            flat_desc(0xbb, FLAT32), // 0xe019 ring 1 code, compatibility
            flat_desc(0xb3, FLAT32), // 0xe021 ring 1 data
            flat_desc(0xfb, FLAT32), // 0xe02b ring 3 code, compatibility
            flat_desc(0xf3, FLAT32), // 0xe033 ring 3 data
            flat_desc(0x9b, FLAT32), // 0xe038 ring 0 code, compatibility
        ],
    }
}

/// The descriptor a flat selector names, decoded.
pub fn xen_desc(guest: GuestType, selector: u16) -> Option<Desc> {
    let off = (selector & !7) as u64;
    let i = off.checked_sub(sel::FIRST_RESERVED_GDT_BYTE)? / 8;
    let d = *xen_gdt_entries(guest).get(i as usize)?;
    (d != 0).then_some(Desc {
        lo: d as u32,
        hi: (d >> 32) as u32,
    })
}

/// `VGCF_in_kernel | VGCF_online`.
pub const VGCF_IN_KERNEL: u64 = 1 << 2;
pub const VGCF_ONLINE: u64 = 1 << 5;
/// Xen's architectural debug-register defaults.
pub const DR6_DEFAULT: u64 = 0xffff_0ff0;
pub const DR7_DEFAULT: u64 = 0x0000_0400;

/// vCPU 0's initial registers, as data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuInit {
    pub guest: GuestType,
    pub rip: u64,
    /// Top of the boot stack page.
    pub rsp: u64,
    /// Virtual address of start_info.
    pub rsi: u64,
    /// IF only.
    pub rflags: u64,
    pub cs: u16,
    pub ss: u16,
    pub ds: u16,
    pub es: u16,
    pub fs: u16,
    pub gs: u16,
    /// The stack Xen switches to on a trap from guest user mode (`kernel_ss:kernel_sp`),
    /// here the boot stack. (libxc's `vcpu_x86_64` copies `user_regs.esp`, the low 32 bits of
    /// rsp, for a 64-bit guest; no guest enters user mode before `stack_switch` replaces it,
    /// so the untruncated value is kept.)
    pub kernel_ss: u16,
    pub kernel_sp: u64,
    /// ctrlreg[3] as the guest sees it: the L4's machine address (64-bit) or
    /// `xen_pfn_to_cr3_x86_32(l3 pfn)` (PAE, `pfn << 12 | pfn >> 20`).
    pub cr3: u64,
    /// The table the MMU walks: the L4 (64-bit) or the platform's compat L4 (PAE).
    pub mmu_cr3: u64,
    pub gdtr_base: u64,
    pub gdtr_limit: u16,
    /// 3 (64-bit kernel) or 1 (32-bit kernel).
    pub cpl: u8,
    /// `VGCF_*`.
    pub flags: u64,
    pub dr6: u64,
    pub dr7: u64,
}

impl VcpuInit {
    /// The state `vcpu_x86_64`/`vcpu_x86_32` ask for, for the domain in `layout`.
    pub fn for_layout(layout: &DomainLayout) -> VcpuInit {
        let rsp = layout.pfn_va(layout.boot_stack.pfn + 1);
        let rsi = layout.pfn_va(layout.start_info.pfn);
        let l_top = layout.pgtables.pfn;
        let (cs, ss, ds, cpl, cr3, mmu_cr3) = match layout.guest {
            GuestType::X86_64 => (
                sel::FLAT_KERNEL_CS64,
                sel::FLAT_KERNEL_SS64,
                sel::FLAT_KERNEL_DS64,
                3,
                l_top << 12,
                l_top << 12,
            ),
            GuestType::X86_32Pae => {
                let pfn = l_top as u32;
                let cr3 = (pfn << 12 | pfn >> 20) as u64;
                let compat = layout.platform.compat_l4_mfn.unwrap_or(0) << 12;
                (
                    sel::FLAT_KERNEL_CS32,
                    sel::FLAT_KERNEL_SS32,
                    sel::FLAT_KERNEL_DS32,
                    1,
                    cr3,
                    compat,
                )
            }
        };
        VcpuInit {
            guest: layout.guest,
            rip: layout.entry,
            rsp,
            rsi,
            rflags: fl::IF,
            cs,
            ss,
            ds,
            es: ds,
            fs: ds,
            gs: ds,
            kernel_ss: ss,
            kernel_sp: rsp,
            cr3,
            mmu_cr3,
            gdtr_base: layout.platform.gdt_va,
            gdtr_limit: layout.platform.gdt_limit,
            cpl,
            flags: VGCF_IN_KERNEL | VGCF_ONLINE,
            dr6: DR6_DEFAULT,
            dr7: DR7_DEFAULT,
        }
    }

    /// Load this state into an engine environment: long mode with paging on `mmu_cr3`
    /// (compatibility mode for a 32-bit guest), the segments' hidden state from Xen's
    /// descriptors, GDTR, the CPL, rip/rsp/rsi and RFLAGS. Flushes the TLB.
    pub fn apply(&self, env: &mut Env) {
        frontend_x86::setup_long_mode(env, self.mmu_cr3, self.cpl);
        let mut s = X86State(env);
        let load =
            |s: &mut X86State<'_>, seg: Seg, selector: u16| match xen_desc(self.guest, selector) {
                Some(d) => s.set_seg(seg, selector, d.base(), d.limit(), d.attr()),
                // The null selector (64-bit data segments): base 0, unusable, as a null load leaves it.
                None => s.set_seg(seg, selector, 0, 0, 0),
            };
        load(&mut s, Seg::Cs, self.cs);
        load(&mut s, Seg::Ss, self.ss);
        load(&mut s, Seg::Ds, self.ds);
        load(&mut s, Seg::Es, self.es);
        load(&mut s, Seg::Fs, self.fs);
        load(&mut s, Seg::Gs, self.gs);
        s.set_g(G_GDTR_BASE, self.gdtr_base);
        s.set_g(G_GDTR_LIMIT, self.gdtr_limit as u64);
        s.set_g(G_IDTR_BASE, 0);
        s.set_g(G_IDTR_LIMIT, 0);
        s.set_g(G_LDTR_SEL, 0);
        s.set_g(G_LDTR_BASE, 0);
        s.set_g(G_LDTR_LIMIT, 0);
        s.set_g(G_KERNEL_GS_BASE, 0);
        for i in 0..16 {
            s.set_gpr(i, 0);
        }
        s.set_gpr(4, self.rsp);
        s.set_gpr(6, self.rsi);
        s.set_rip(self.rip);
        s.set_rflags(self.rflags);
        s.set_cpl(self.cpl);
        // Xen enables XSAVE for PV guests: CR4.OSXSAVE is set from the start (the guest
        // sees it in CPUID) and XCR0 holds the x87 and SSE components.
        let cr4v = s.g(G_CR4);
        s.set_g(G_CR4, cr4v | frontend_x86::state::cr4::OSXSAVE);
        s.set_g(
            frontend_x86::state::G_XCR0,
            frontend_x86::cpuid::XCR0_SUPPORTED,
        );
        env.tlb_flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_descriptors_match_xen() {
        let g = xen_gdt_entries(GuestType::X86_64);
        assert_eq!(g[1], 0x00af_9b00_0000_ffff);
        assert_eq!(g[2], 0x00cf_9300_0000_ffff);
        assert_eq!(g[4], 0x00cf_fb00_0000_ffff);
        assert_eq!(g[5], 0x00cf_f300_0000_ffff);
        assert_eq!(g[6], 0x00af_fb00_0000_ffff);
        assert_eq!(g[7], 0x00cf_9b00_0000_ffff);
        let c = xen_gdt_entries(GuestType::X86_32Pae);
        assert_eq!(c[3], 0x00cf_bb00_0000_ffff);
        assert_eq!(c[4], 0x00cf_b300_0000_ffff);
        let cs = xen_desc(GuestType::X86_64, 0xe033).unwrap();
        assert_eq!((cs.base(), cs.limit(), cs.attr()), (0, 0xffff_ffff, 0xafb));
        let ss = xen_desc(GuestType::X86_64, 0xe02b).unwrap();
        assert_eq!(ss.attr(), 0xcf3);
        assert!(xen_desc(GuestType::X86_64, 0).is_none());
        assert!(xen_desc(GuestType::X86_64, 0xe018).is_none());
        assert!(xen_desc(GuestType::X86_64, 0x10).is_none());
        assert_eq!(xen_desc(GuestType::X86_32Pae, 0xe019).unwrap().dpl(), 1);
    }
}
