//! The blkif wire format (xen/include/public/io/blkif.h, io/ring.h) in both x86 ABIs.
//!
//! Every guest-visible struct is declared with its size and field offsets asserted at
//! compile time; the `Wire` encoding reads and writes each field at its asserted offset
//! (little-endian), so nothing here depends on the host's layout or alignment. The x86_32
//! forms use `repr(C, packed(4))`: i386 aligns a 64-bit field to 4 bytes, which is what puts
//! `id` at offset 4 and makes the request 108 bytes and the response 12.

/// BLKIF_OP_* (blkif.h).
pub const BLKIF_OP_READ: u8 = 0;
pub const BLKIF_OP_WRITE: u8 = 1;
pub const BLKIF_OP_WRITE_BARRIER: u8 = 2;
pub const BLKIF_OP_FLUSH_DISKCACHE: u8 = 3;
pub const BLKIF_OP_DISCARD: u8 = 5;
pub const BLKIF_OP_INDIRECT: u8 = 6;

/// BLKIF_RSP_*.
pub const BLKIF_RSP_EOPNOTSUPP: i16 = -2;
pub const BLKIF_RSP_ERROR: i16 = -1;
pub const BLKIF_RSP_OKAY: i16 = 0;

/// BLKIF_DISCARD_SECURE (the discard request's flag).
pub const BLKIF_DISCARD_SECURE: u8 = 1;

/// BLKIF_MAX_SEGMENTS_PER_REQUEST.
pub const BLKIF_MAX_SEGMENTS_PER_REQUEST: usize = 11;
/// BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST.
pub const BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST: usize = 8;
/// Segments held by one indirect page (XEN_PAGE_SIZE / sizeof(struct blkif_request_segment)).
pub const SEGS_PER_INDIRECT_FRAME: usize = 4096 / 8;

/// VDISK_* bits of the back end's `info` node.
pub const VDISK_CDROM: u32 = 1;
pub const VDISK_REMOVABLE: u32 = 2;
pub const VDISK_READONLY: u32 = 4;

/// Offset of the entries in a shared ring (`struct blkif_sring`: four indexes and 48 pad).
pub const SRING_HEADER: usize = 64;

/// The fixed-offset little-endian encoding is xen-pv's guest-ABI one.
pub use xen_pv::builder::abi::Le as Wire;

/// Declare a guest struct: its repr, size and field offsets asserted at compile time, and
/// a [`Wire`] encoding placing each field at its asserted offset.
macro_rules! wire_struct {
    (
        $(#[$m:meta])*
        pub struct $name:ident, repr($($repr:tt)*), size $size:literal {
            $( $(#[$fm:meta])* pub $f:ident : $t:ty = $off:literal, )*
        }
    ) => {
        $(#[$m])*
        #[repr($($repr)*)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name { $( $(#[$fm])* pub $f: $t, )* }

        const _: () = assert!(std::mem::size_of::<$name>() == $size);
        $( const _: () = assert!(std::mem::offset_of!($name, $f) == $off); )*

        impl Wire for $name {
            const SIZE: usize = $size;
            fn get(b: &[u8]) -> Self {
                Self { $( $f: <$t as Wire>::get(&b[$off..]), )* }
            }
            fn put(&self, out: &mut [u8]) {
                $( Wire::put(&{ self.$f }, &mut out[$off..]); )*
            }
        }
    };
}

wire_struct! {
    /// `struct blkif_request_segment` (same in both ABIs; also the indirect page entry).
    pub struct Segment, repr(C), size 8 {
        pub gref: u32 = 0,
        /// First and last 512-byte sector of the 4 KiB frame to transfer (inclusive).
        pub first_sect: u8 = 4,
        pub last_sect: u8 = 5,
        pub _pad: u16 = 6,
    }
}

wire_struct! {
    /// The indexes at the start of `struct blkif_sring`, then 48 bytes of padding.
    pub struct SringHeader, repr(C), size 64 {
        pub req_prod: u32 = 0,
        pub req_event: u32 = 4,
        pub rsp_prod: u32 = 8,
        pub rsp_event: u32 = 12,
        pub _pad: [u32; 12] = 16,
    }
}

wire_struct! {
    /// `blkif_x86_64_request` with the `rw` member (READ, WRITE, WRITE_BARRIER, FLUSH).
    pub struct RwReq64, repr(C), size 112 {
        pub operation: u8 = 0,
        pub nr_segments: u8 = 1,
        pub handle: u16 = 2,
        pub _pad1: u32 = 4,
        pub id: u64 = 8,
        pub sector_number: u64 = 16,
        pub seg: [Segment; 11] = 24,
    }
}

wire_struct! {
    /// `blkif_x86_32_request` with the `rw` member.
    pub struct RwReq32, repr(C, packed(4)), size 108 {
        pub operation: u8 = 0,
        pub nr_segments: u8 = 1,
        pub handle: u16 = 2,
        pub id: u64 = 4,
        pub sector_number: u64 = 12,
        pub seg: [Segment; 11] = 20,
    }
}

wire_struct! {
    /// `blkif_x86_64_request` with the `discard` member (the rest of the 112 bytes unused).
    pub struct DiscardReq64, repr(C), size 32 {
        pub operation: u8 = 0,
        pub flag: u8 = 1,
        pub _pad1: u16 = 2,
        pub _pad2: u32 = 4,
        pub id: u64 = 8,
        pub sector_number: u64 = 16,
        pub nr_sectors: u64 = 24,
    }
}

wire_struct! {
    /// `blkif_x86_32_request` with the `discard` member.
    pub struct DiscardReq32, repr(C, packed(4)), size 28 {
        pub operation: u8 = 0,
        pub flag: u8 = 1,
        pub _pad1: u16 = 2,
        pub id: u64 = 4,
        pub sector_number: u64 = 12,
        pub nr_sectors: u64 = 20,
    }
}

wire_struct! {
    /// `blkif_x86_64_request` with the `indirect` member.
    pub struct IndirectReq64, repr(C), size 64 {
        pub operation: u8 = 0,
        pub indirect_op: u8 = 1,
        pub nr_segments: u16 = 2,
        pub _pad1: u32 = 4,
        pub id: u64 = 8,
        pub sector_number: u64 = 16,
        pub handle: u16 = 24,
        pub _pad2: u16 = 26,
        pub indirect_grefs: [u32; 8] = 28,
        pub _pad3: u32 = 60,
    }
}

wire_struct! {
    /// `blkif_x86_32_request` with the `indirect` member.
    pub struct IndirectReq32, repr(C, packed(4)), size 64 {
        pub operation: u8 = 0,
        pub indirect_op: u8 = 1,
        pub nr_segments: u16 = 2,
        pub id: u64 = 4,
        pub sector_number: u64 = 12,
        pub handle: u16 = 20,
        pub _pad1: u16 = 22,
        pub indirect_grefs: [u32; 8] = 24,
        pub _pad2: u64 = 56,
    }
}

wire_struct! {
    /// `blkif_x86_64_response`.
    pub struct Resp64, repr(C), size 16 {
        pub id: u64 = 0,
        pub operation: u8 = 8,
        pub _pad: u8 = 9,
        pub status: i16 = 10,
        pub _pad2: u32 = 12,
    }
}

wire_struct! {
    /// `blkif_x86_32_response`.
    pub struct Resp32, repr(C, packed(4)), size 12 {
        pub id: u64 = 0,
        pub operation: u8 = 8,
        pub _pad: u8 = 9,
        pub status: i16 = 10,
    }
}

/// The guest ABI of a ring (the front end's `protocol` node).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abi {
    X86_64,
    X86_32,
}

impl Abi {
    /// XEN_IO_PROTO_ABI_* strings.
    pub fn from_protocol(s: &str) -> Option<Abi> {
        match s {
            "x86_64-abi" => Some(Abi::X86_64),
            "x86_32-abi" => Some(Abi::X86_32),
            _ => None,
        }
    }
    pub fn protocol(self) -> &'static str {
        match self {
            Abi::X86_64 => "x86_64-abi",
            Abi::X86_32 => "x86_32-abi",
        }
    }
    /// Size of one ring entry (the request/response union).
    pub fn entry_size(self) -> usize {
        match self {
            Abi::X86_64 => RwReq64::SIZE,
            Abi::X86_32 => RwReq32::SIZE,
        }
    }
    pub fn response_size(self) -> usize {
        match self {
            Abi::X86_64 => Resp64::SIZE,
            Abi::X86_32 => Resp32::SIZE,
        }
    }
}

const _: () = assert!(RwReq64::SIZE >= Resp64::SIZE && RwReq64::SIZE >= IndirectReq64::SIZE);
const _: () = assert!(RwReq32::SIZE >= Resp32::SIZE && RwReq32::SIZE >= IndirectReq32::SIZE);
const _: () = assert!(RwReq64::SIZE >= DiscardReq64::SIZE && RwReq32::SIZE >= DiscardReq32::SIZE);

/// A request copied out of the ring (RING_COPY_REQUEST), ABI-independent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// READ, WRITE, WRITE_BARRIER, FLUSH_DISKCACHE. `seg` holds all 11 slots; only the
    /// first `nr_segments` are meaningful (and `nr_segments` is unchecked guest data).
    Rw {
        operation: u8,
        nr_segments: u8,
        id: u64,
        sector_number: u64,
        seg: [Segment; 11],
    },
    Discard {
        id: u64,
        flag: u8,
        sector_number: u64,
        nr_sectors: u64,
    },
    Indirect {
        indirect_op: u8,
        nr_segments: u16,
        id: u64,
        sector_number: u64,
        indirect_grefs: [u32; 8],
    },
    /// Any other operation: only the id is read (`u.other.id`, at the same offset as `rw.id`).
    Other { operation: u8, id: u64 },
}

impl Request {
    /// Decode one ring entry (`b` is `abi.entry_size()` bytes).
    pub fn decode(abi: Abi, b: &[u8]) -> Option<Request> {
        let op = *b.first()?;
        Some(match (abi, op) {
            (Abi::X86_64, BLKIF_OP_READ..=BLKIF_OP_FLUSH_DISKCACHE) => {
                let r = RwReq64::decode(b)?;
                Request::Rw {
                    operation: op,
                    nr_segments: r.nr_segments,
                    id: r.id,
                    sector_number: r.sector_number,
                    seg: r.seg,
                }
            }
            (Abi::X86_32, BLKIF_OP_READ..=BLKIF_OP_FLUSH_DISKCACHE) => {
                let r = RwReq32::decode(b)?;
                Request::Rw {
                    operation: op,
                    nr_segments: r.nr_segments,
                    id: r.id,
                    sector_number: r.sector_number,
                    seg: r.seg,
                }
            }
            (Abi::X86_64, BLKIF_OP_DISCARD) => {
                let r = DiscardReq64::decode(b)?;
                Request::Discard {
                    id: r.id,
                    flag: r.flag,
                    sector_number: r.sector_number,
                    nr_sectors: r.nr_sectors,
                }
            }
            (Abi::X86_32, BLKIF_OP_DISCARD) => {
                let r = DiscardReq32::decode(b)?;
                Request::Discard {
                    id: r.id,
                    flag: r.flag,
                    sector_number: r.sector_number,
                    nr_sectors: r.nr_sectors,
                }
            }
            (Abi::X86_64, BLKIF_OP_INDIRECT) => {
                let r = IndirectReq64::decode(b)?;
                Request::Indirect {
                    indirect_op: r.indirect_op,
                    nr_segments: r.nr_segments,
                    id: r.id,
                    sector_number: r.sector_number,
                    indirect_grefs: r.indirect_grefs,
                }
            }
            (Abi::X86_32, BLKIF_OP_INDIRECT) => {
                let r = IndirectReq32::decode(b)?;
                Request::Indirect {
                    indirect_op: r.indirect_op,
                    nr_segments: r.nr_segments,
                    id: r.id,
                    sector_number: r.sector_number,
                    indirect_grefs: r.indirect_grefs,
                }
            }
            (Abi::X86_64, _) => Request::Other {
                operation: op,
                id: RwReq64::decode(b)?.id,
            },
            (Abi::X86_32, _) => Request::Other {
                operation: op,
                id: RwReq32::decode(b)?.id,
            },
        })
    }
}

/// Encode a response for `abi` (`operation` echoes the request's, `indirect_op` for INDIRECT).
pub fn encode_response(abi: Abi, id: u64, operation: u8, status: i16) -> Vec<u8> {
    match abi {
        Abi::X86_64 => Resp64 {
            id,
            operation,
            status,
            ..Default::default()
        }
        .to_bytes(),
        Abi::X86_32 => Resp32 {
            id,
            operation,
            status,
            ..Default::default()
        }
        .to_bytes(),
    }
}
