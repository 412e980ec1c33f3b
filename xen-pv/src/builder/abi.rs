//! Guest-visible Xen structures (xen/include/public/xen.h, arch-x86/xen.h,
//! arch-x86/xen-x86_64.h, xen-x86_32.h), native (x86_64) and compat (x86_32, `pack(4)`)
//! forms, with their constants.
//!
//! Every struct is `#[repr(C)]` with its size and every field offset asserted at compile
//! time against the numbers of Debian's libxen-dev 4.17 headers (`foreign/x86_64.h`,
//! `foreign/x86_32.h`, `__XEN_INTERFACE_VERSION__ > 0x040600`). Explicit `_pad` fields make
//! the C padding visible. Guest memory is never reinterpreted as a Rust value: [`Le`]
//! encodes a struct field by field into little-endian bytes (padding zero) and decodes it
//! back, and [`write_struct`]/[`read_struct`] move those bytes through `GuestRam`'s
//! bounds-checked accessors.
//!
//! Since the Rust offsets are the guest offsets, `std::mem::offset_of!(SharedInfo64,
//! evtchn_mask)` is the right byte offset for touching one field in guest memory.
//!
//! Unions are modelled by the member a domU uses: `start_info.console` is `console.domU`
//! (`dom0.info_off/info_size` alias its first 8 bytes).

use jit::GuestRam;

use super::error::{BuildError, Result};

/// A value with a fixed little-endian guest encoding of `SIZE` bytes.
pub trait Le: Sized {
    const SIZE: usize;
    /// Encode into `out[..SIZE]` (`out` is at least `SIZE` bytes; padding is left alone).
    fn put(&self, out: &mut [u8]);
    /// Decode from `b[..SIZE]` (`b` is at least `SIZE` bytes).
    fn get(b: &[u8]) -> Self;

    /// Decode from the start of `b`, None when it is shorter than `SIZE`.
    fn decode(b: &[u8]) -> Option<Self> {
        (b.len() >= Self::SIZE).then(|| Self::get(b))
    }
    /// The all-zero value.
    fn zeroed() -> Self {
        Self::get(&vec![0u8; Self::SIZE])
    }
    /// The encoding as a fresh buffer (padding zero).
    fn to_bytes(&self) -> Vec<u8> {
        let mut v = vec![0u8; Self::SIZE];
        self.put(&mut v);
        v
    }
}

macro_rules! le_int {
    ($($t:ty),*) => {$(
        impl Le for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put(&self, out: &mut [u8]) {
                out[..Self::SIZE].copy_from_slice(&self.to_le_bytes());
            }
            fn get(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(&b[..Self::SIZE]);
                <$t>::from_le_bytes(a)
            }
        }
    )*};
}
le_int!(u8, i8, u16, i16, u32, u64);

impl<T: Le, const N: usize> Le for [T; N] {
    const SIZE: usize = T::SIZE * N;
    fn put(&self, out: &mut [u8]) {
        for (i, v) in self.iter().enumerate() {
            v.put(&mut out[i * T::SIZE..]);
        }
    }
    fn get(b: &[u8]) -> Self {
        std::array::from_fn(|i| T::get(&b[i * T::SIZE..]))
    }
}

/// Declare a guest struct: `#[repr(C)]`, size and per-field offsets asserted at compile
/// time, and its [`Le`] encoding placing each field at its asserted offset.
macro_rules! guest_struct {
    (
        $(#[$m:meta])*
        pub struct $name:ident, size $size:literal {
            $( $(#[$fm:meta])* pub $f:ident : $t:ty = $off:literal, )*
        }
    ) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name { $( $(#[$fm])* pub $f: $t, )* }

        const _: () = assert!(std::mem::size_of::<$name>() == $size);
        $( const _: () = assert!(std::mem::offset_of!($name, $f) == $off); )*

        impl Le for $name {
            const SIZE: usize = $size;
            fn put(&self, out: &mut [u8]) {
                $( Le::put(&self.$f, &mut out[$off..]); )*
            }
            fn get(b: &[u8]) -> Self {
                Self { $( $f: <$t as Le>::get(&b[$off..]), )* }
            }
        }
    };
}

guest_struct! {
    /// `start_info.console.domU`, 64-bit.
    pub struct ConsoleDomU64, size 16 {
        /// Machine frame of the console ring page.
        pub mfn: u64 = 0,
        pub evtchn: u32 = 8,
        pub _pad: u32 = 12,
    }
}

guest_struct! {
    /// `start_info.console.domU`, 32-bit.
    pub struct ConsoleDomU32, size 8 {
        pub mfn: u32 = 0,
        pub evtchn: u32 = 4,
    }
}

guest_struct! {
    /// `struct start_info` of a 64-bit PV guest (`start_info_x86_64_t`).
    pub struct StartInfo64, size 1168 {
        /// "xen-3.0-x86_64", NUL padded.
        pub magic: [u8; 32] = 0,
        pub nr_pages: u64 = 32,
        /// Machine address of the shared_info frame.
        pub shared_info: u64 = 40,
        /// `SIF_*`.
        pub flags: u32 = 48,
        pub _pad0: u32 = 52,
        pub store_mfn: u64 = 56,
        pub store_evtchn: u32 = 64,
        pub _pad1: u32 = 68,
        pub console: ConsoleDomU64 = 72,
        /// Virtual address of the top-level page table.
        pub pt_base: u64 = 88,
        pub nr_pt_frames: u64 = 96,
        /// Virtual address of the p2m list.
        pub mfn_list: u64 = 104,
        /// Virtual address of the module, or its pfn with `SIF_MOD_START_PFN`.
        pub mod_start: u64 = 112,
        pub mod_len: u64 = 120,
        pub cmd_line: [u8; 1024] = 128,
        /// With INIT_P2M: first pfn and frame count of the p2m list (and its page tables).
        pub first_p2m_pfn: u64 = 1152,
        pub nr_p2m_frames: u64 = 1160,
    }
}

guest_struct! {
    /// `struct start_info` of a 32-bit PAE PV guest (`start_info_x86_32_t`).
    pub struct StartInfo32, size 1112 {
        pub magic: [u8; 32] = 0,
        pub nr_pages: u32 = 32,
        pub shared_info: u32 = 36,
        pub flags: u32 = 40,
        pub store_mfn: u32 = 44,
        pub store_evtchn: u32 = 48,
        pub console: ConsoleDomU32 = 52,
        pub pt_base: u32 = 60,
        pub nr_pt_frames: u32 = 64,
        pub mfn_list: u32 = 68,
        pub mod_start: u32 = 72,
        pub mod_len: u32 = 76,
        pub cmd_line: [u8; 1024] = 80,
        pub first_p2m_pfn: u32 = 1104,
        pub nr_p2m_frames: u32 = 1108,
    }
}

guest_struct! {
    /// `struct vcpu_time_info` (same layout in both forms).
    pub struct VcpuTimeInfo, size 32 {
        /// Odd while Xen updates the record.
        pub version: u32 = 0,
        pub pad0: u32 = 4,
        pub tsc_timestamp: u64 = 8,
        /// Nanoseconds since boot at `tsc_timestamp`.
        pub system_time: u64 = 16,
        pub tsc_to_system_mul: u32 = 24,
        pub tsc_shift: i8 = 28,
        /// `XEN_PVCLOCK_*`.
        pub flags: u8 = 29,
        pub pad1: [u8; 2] = 30,
    }
}

guest_struct! {
    /// `struct arch_vcpu_info`, 64-bit.
    pub struct ArchVcpuInfo64, size 16 {
        pub cr2: u64 = 0,
        pub pad: u64 = 8,
    }
}

guest_struct! {
    /// `struct arch_vcpu_info`, 32-bit.
    pub struct ArchVcpuInfo32, size 24 {
        pub cr2: u32 = 0,
        pub pad: [u32; 5] = 4,
    }
}

guest_struct! {
    /// `struct vcpu_info`, 64-bit.
    pub struct VcpuInfo64, size 64 {
        pub evtchn_upcall_pending: u8 = 0,
        pub evtchn_upcall_mask: u8 = 1,
        pub _pad: [u8; 6] = 2,
        pub evtchn_pending_sel: u64 = 8,
        pub arch: ArchVcpuInfo64 = 16,
        pub time: VcpuTimeInfo = 32,
    }
}

guest_struct! {
    /// `struct vcpu_info`, 32-bit.
    pub struct VcpuInfo32, size 64 {
        pub evtchn_upcall_pending: u8 = 0,
        pub evtchn_upcall_mask: u8 = 1,
        pub _pad: [u8; 2] = 2,
        pub evtchn_pending_sel: u32 = 4,
        pub arch: ArchVcpuInfo32 = 8,
        pub time: VcpuTimeInfo = 32,
    }
}

guest_struct! {
    /// `struct arch_shared_info`, 64-bit.
    pub struct ArchSharedInfo64, size 48 {
        pub max_pfn: u64 = 0,
        pub pfn_to_mfn_frame_list_list: u64 = 8,
        pub nmi_reason: u64 = 16,
        pub p2m_cr3: u64 = 24,
        pub p2m_vaddr: u64 = 32,
        pub p2m_generation: u64 = 40,
    }
}

guest_struct! {
    /// `struct arch_shared_info`, 32-bit (which also holds `wc_sec_hi`).
    pub struct ArchSharedInfo32, size 28 {
        pub max_pfn: u32 = 0,
        pub pfn_to_mfn_frame_list_list: u32 = 4,
        pub nmi_reason: u32 = 8,
        pub p2m_cr3: u32 = 12,
        pub p2m_vaddr: u32 = 16,
        pub p2m_generation: u32 = 20,
        pub wc_sec_hi: u32 = 24,
    }
}

guest_struct! {
    /// `struct shared_info`, 64-bit.
    pub struct SharedInfo64, size 3136 {
        pub vcpu_info: [VcpuInfo64; 32] = 0,
        /// 2-level event channel bitmaps: 64 words of 64 bits.
        pub evtchn_pending: [u64; 64] = 2048,
        pub evtchn_mask: [u64; 64] = 2560,
        pub wc_version: u32 = 3072,
        pub wc_sec: u32 = 3076,
        pub wc_nsec: u32 = 3080,
        pub wc_sec_hi: u32 = 3084,
        pub arch: ArchSharedInfo64 = 3088,
    }
}

guest_struct! {
    /// `struct shared_info`, 32-bit.
    pub struct SharedInfo32, size 2344 {
        pub vcpu_info: [VcpuInfo32; 32] = 0,
        /// 2-level event channel bitmaps: 32 words of 32 bits.
        pub evtchn_pending: [u32; 32] = 2048,
        pub evtchn_mask: [u32; 32] = 2176,
        pub wc_version: u32 = 2304,
        pub wc_sec: u32 = 2308,
        pub wc_nsec: u32 = 2312,
        pub arch: ArchSharedInfo32 = 2316,
    }
}

/// `XEN_LEGACY_MAX_VCPUS`: vcpu_info slots in shared_info.
pub const LEGACY_MAX_VCPUS: usize = 32;
/// `MAX_GUEST_CMDLINE`.
pub const MAX_GUEST_CMDLINE: usize = 1024;

/// `SIF_*` start_info flags.
pub mod sif {
    pub const PRIVILEGED: u32 = 1 << 0;
    pub const INITDOMAIN: u32 = 1 << 1;
    pub const MULTIBOOT_MOD: u32 = 1 << 2;
    /// `mod_start` is a pfn (the module is not in the initial mapping).
    pub const MOD_START_PFN: u32 = 1 << 3;
    /// The toolstack understands a virtually mapped p2m list (always set by libxc).
    pub const VIRT_P2M_4TOOLS: u32 = 1 << 4;
}

/// Flat selectors in Xen's reserved GDT entries (`FIRST_RESERVED_GDT_ENTRY` = 0xe000 / 8).
pub mod sel {
    /// Byte offset of Xen's reserved entries in every PV GDT (14 guest frames before them).
    pub const FIRST_RESERVED_GDT_BYTE: u64 = 14 * 4096;
    /// GDTR limit Xen loads for PV vCPUs (guest frames + the reserved page).
    pub const GDT_LIMIT: u16 = (15 * 4096 - 1) as u16;

    /// 64-bit guests (xen-x86_64.h): kernel and user share ring 3.
    pub const FLAT_RING3_CS32: u16 = 0xe023;
    pub const FLAT_RING3_CS64: u16 = 0xe033;
    pub const FLAT_RING3_DS32: u16 = 0xe02b;
    /// The null selector: 64-bit data segments need none.
    pub const FLAT_RING3_DS64: u16 = 0;
    pub const FLAT_RING3_SS64: u16 = 0xe02b;
    pub const FLAT_KERNEL_CS64: u16 = FLAT_RING3_CS64;
    pub const FLAT_KERNEL_DS64: u16 = FLAT_RING3_DS64;
    pub const FLAT_KERNEL_SS64: u16 = FLAT_RING3_SS64;

    /// 32-bit guests (xen-x86_32.h): the kernel runs in ring 1.
    pub const FLAT_RING1_CS: u16 = 0xe019;
    pub const FLAT_RING1_DS: u16 = 0xe021;
    pub const FLAT_RING3_CS: u16 = 0xe02b;
    pub const FLAT_RING3_DS: u16 = 0xe033;
    pub const FLAT_KERNEL_CS32: u16 = FLAT_RING1_CS;
    pub const FLAT_KERNEL_DS32: u16 = FLAT_RING1_DS;
    pub const FLAT_KERNEL_SS32: u16 = FLAT_RING1_DS;
}

/// Virtual-address map constants.
pub mod va {
    /// 64-bit: `HYPERVISOR_VIRT_START`..`HYPERVISOR_VIRT_END` (L4 slots 256..=271).
    pub const HYPERVISOR_VIRT_START_64: u64 = 0xffff_8000_0000_0000;
    pub const HYPERVISOR_VIRT_END_64: u64 = 0xffff_8800_0000_0000;
    /// 64-bit: the read-only M2P table, `unsigned long` entries (L4 slot 256).
    pub const MACH2PHYS_VIRT_START_64: u64 = 0xffff_8000_0000_0000;
    pub const MACH2PHYS_VIRT_END_64: u64 = 0xffff_8040_0000_0000;
    /// Xen's per-domain area (L4 slot 260): vCPU 0's GDT (and LDT at +64 KiB) live here.
    pub const PERDOMAIN_VIRT_START: u64 = 0xffff_8200_0000_0000;
    /// 32-bit PAE: the hypervisor hole and the M2P table (u32 entries).
    pub const HYPERVISOR_VIRT_START_PAE: u64 = 0xf580_0000;
    pub const MACH2PHYS_VIRT_START_PAE: u64 = 0xf580_0000;
    pub const MACH2PHYS_VIRT_END_PAE: u64 = 0xf680_0000;
}

/// `INVALID_M2P_ENTRY` for 64-bit (all ones in the entry's width).
pub const INVALID_M2P_ENTRY: u64 = !0;

/// Write `v` at `addr` in guest RAM (bounds-checked, little-endian).
pub fn write_struct<T: Le>(ram: &mut GuestRam, addr: u64, v: &T) -> Result<()> {
    let bytes = v.to_bytes();
    if ram.write(addr, &bytes) {
        Ok(())
    } else {
        Err(BuildError::OutsideRam {
            addr,
            len: bytes.len() as u64,
        })
    }
}

/// Read a `T` at `addr` in guest RAM; None when any byte is outside RAM.
pub fn read_struct<T: Le>(ram: &GuestRam, addr: u64) -> Option<T> {
    ram.slice(addr, T::SIZE).map(T::get)
}

/// A NUL-padded fixed-size string field (strncpy into `N` bytes, last byte NUL).
pub fn c_string<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let s = s.split(|&b| b == 0).next().unwrap_or(&[]);
    let n = s.len().min(N.saturating_sub(1));
    out[..n].copy_from_slice(&s[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let mut si = StartInfo64::zeroed();
        si.magic = c_string(b"xen-3.0-x86_64");
        si.nr_pages = 0x2000;
        si.console.mfn = 0x123;
        si.console.evtchn = 2;
        si.nr_p2m_frames = 7;
        let b = si.to_bytes();
        assert_eq!(b.len(), 1168);
        assert_eq!(&b[..15], b"xen-3.0-x86_64\0");
        assert_eq!(b[32..40], 0x2000u64.to_le_bytes());
        assert_eq!(b[72..80], 0x123u64.to_le_bytes());
        assert_eq!(b[80..84], 2u32.to_le_bytes());
        assert_eq!(b[1160..1168], 7u64.to_le_bytes());
        assert_eq!(StartInfo64::get(&b), si);

        let mut sh = SharedInfo64::zeroed();
        sh.vcpu_info[3].evtchn_upcall_mask = 1;
        sh.vcpu_info[31].time.tsc_shift = -2;
        sh.arch.p2m_generation = 9;
        let b = sh.to_bytes();
        assert_eq!(b[3 * 64 + 1], 1);
        assert_eq!(b[31 * 64 + 32 + 28], 0xfe);
        assert_eq!(b[3128..3136], 9u64.to_le_bytes());
        assert_eq!(SharedInfo64::get(&b), sh);

        let mut s32 = SharedInfo32::zeroed();
        s32.arch.wc_sec_hi = 5;
        s32.evtchn_mask[31] = 0xffff_0000;
        let b = s32.to_bytes();
        assert_eq!(b[2340..2344], 5u32.to_le_bytes());
        assert_eq!(
            b[2176 + 31 * 4..2176 + 32 * 4],
            0xffff_0000u32.to_le_bytes()
        );
        assert_eq!(SharedInfo32::get(&b), s32);
    }

    #[test]
    fn c_strings() {
        assert_eq!(&c_string::<4>(b"abcdef"), b"abc\0");
        assert_eq!(&c_string::<4>(b"a\0bc"), b"a\0\0\0");
        assert_eq!(&c_string::<4>(b""), &[0u8; 4]);
    }
}
