//! Xen grant tables (v1 and v2) of the guest domain, with the semantics of Xen's
//! xen/common/grant_table.c.
//!
//! Design:
//! - The guest-visible state lives in guest memory, at the frames the platform reserved for it
//!   (Xen's heap pages shared with the domain): the shared entries (`grant_entry_v1` or
//!   `grant_entry_v2`) in `max_frames` frames from `shared_mfn`, and for v2 the status words
//!   (`grant_status_t`, u16 per entry) in frames from `status_mfn`. They are always read and
//!   written through [`GuestPhys`], never cached, because the guest changes them behind our back.
//! - The host-side state is here: the version, the frames in use, the active entries (pin
//!   counts per granted reference, Xen's `active_grant_entry`) and, per mapping domain, the
//!   maptrack table whose indexes are the mapping handles.
//! - Domains: the table belongs to the guest (`domid`, [`GUEST_DOMID`]); the back ends in the
//!   emulator act as domain 0 and map the guest's grants through [`Backend`] (the
//!   [`GrantMapper`] trait). The guest may map and copy its own grants too (hypercalls in
//!   `pv/grant.rs`). No other domain has a grant table here, so a reference to another
//!   domain's grants is `GNTST_bad_domain`, and a transitive grant (which names another
//!   domain's grant) can never be acquired: `GNTST_general_error`, as Xen answers for a
//!   transitive grant that names itself or a domain it cannot find.
//! - Frames: the guest's pfn is its mfn. A granted frame must be one of the domain's own frames
//!   (`0..nr_pages`), else `GNTST_bad_page` (Xen's `get_paged_frame`; Xen would also accept the
//!   heap pages it shares with the domain, which nothing here grants). A writable mapping or the
//!   destination of a copy needs the frame to be able to take the writable type; the caller
//!   says which frames cannot (page tables) with a `writable` predicate.
//!
//! Errors on guest input are values: `GNTST_*` status codes (i16) for per-op results and
//! positive errnos for hypercall results, never panics.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};

use super::errno::{EBUSY, EINVAL, ERANGE};
use super::evtchn::{DOMID_SELF, GUEST_DOMID};
use super::GuestPhys;

pub const PAGE_SIZE: usize = 4096;

/// Xen's default `gnttab_max_frames` (opt_max_grant_frames).
pub const MAX_GRANT_FRAMES: u32 = 64;
/// Frames a grant table has from its creation (INITIAL_NR_GRANT_FRAMES).
pub const INITIAL_NR_GRANT_FRAMES: u32 = 1;
/// Entries the toolstack reserves (GNTTAB_NR_RESERVED_ENTRIES): kept across set_version.
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;
pub const GNTTAB_RESERVED_CONSOLE: u32 = 0;
pub const GNTTAB_RESERVED_XENSTORE: u32 = 1;
/// v1 entries per frame (8 bytes each).
pub const V1_PER_FRAME: u32 = (PAGE_SIZE / size_of::<GrantEntryV1>()) as u32;
/// v2 entries per frame (16 bytes each).
pub const V2_PER_FRAME: u32 = (PAGE_SIZE / 16) as u32;
/// Status words per frame.
pub const STATUS_PER_FRAME: u32 = (PAGE_SIZE / 2) as u32;
/// Xen's default `gnttab_max_maptrack_frames` (1024) times the 16-byte `grant_mapping`s a
/// frame holds: the handles one domain can have.
pub const MAX_MAPTRACK: u32 = 1024 * (PAGE_SIZE as u32 / 16);

/// Status frames for `frames` v2 shared frames (grant_to_status_frames).
pub const fn grant_to_status_frames(frames: u32) -> u32 {
    (frames * V2_PER_FRAME).div_ceil(STATUS_PER_FRAME)
}
const _: () = assert!(grant_to_status_frames(MAX_GRANT_FRAMES) == 8);

// GTF_* (grant_entry flags).
pub const GTF_INVALID: u16 = 0;
pub const GTF_PERMIT_ACCESS: u16 = 1;
pub const GTF_ACCEPT_TRANSFER: u16 = 2;
pub const GTF_TRANSITIVE: u16 = 3;
pub const GTF_TYPE_MASK: u16 = 3;
pub const GTF_READONLY: u16 = 1 << 2;
pub const GTF_READING: u16 = 1 << 3;
pub const GTF_WRITING: u16 = 1 << 4;
pub const GTF_PWT: u16 = 1 << 5;
pub const GTF_PCD: u16 = 1 << 6;
pub const GTF_PAT: u16 = 1 << 7;
pub const GTF_SUB_PAGE: u16 = 1 << 8;
pub const GTF_TRANSFER_COMMITTED: u16 = 1 << 2;
pub const GTF_TRANSFER_COMPLETED: u16 = 1 << 3;

// GNTST_* (grant_status).
pub const GNTST_OKAY: i16 = 0;
pub const GNTST_GENERAL_ERROR: i16 = -1;
pub const GNTST_BAD_DOMAIN: i16 = -2;
pub const GNTST_BAD_GNTREF: i16 = -3;
pub const GNTST_BAD_HANDLE: i16 = -4;
pub const GNTST_BAD_VIRT_ADDR: i16 = -5;
pub const GNTST_BAD_DEV_ADDR: i16 = -6;
pub const GNTST_NO_DEVICE_SPACE: i16 = -7;
pub const GNTST_PERMISSION_DENIED: i16 = -8;
pub const GNTST_BAD_PAGE: i16 = -9;
pub const GNTST_BAD_COPY_ARG: i16 = -10;
pub const GNTST_ADDRESS_TOO_BIG: i16 = -11;
pub const GNTST_EAGAIN: i16 = -12;
pub const GNTST_NO_SPACE: i16 = -13;

// GNTMAP_* (map flags).
pub const GNTMAP_DEVICE_MAP: u32 = 1 << 0;
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
pub const GNTMAP_READONLY: u32 = 1 << 2;
pub const GNTMAP_APPLICATION_MAP: u32 = 1 << 3;
pub const GNTMAP_CONTAINS_PTE: u32 = 1 << 4;

// GNTCOPY_* (copy flags).
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;

// Pin counts of an active entry (GNTPIN_*): four 8-bit counters.
const PIN_HSTW: u32 = 1;
const PIN_HSTR: u32 = 1 << 8;
const PIN_DEVW: u32 = 1 << 16;
const PIN_DEVR: u32 = 1 << 24;
const PIN_W_MASK: u32 = 0xff | 0xff << 16;
const PIN_OVERFLOW: u32 = 0x8080_8080;

// ---- Guest-visible layouts (public/grant_table.h). domid_t is u16, grant_ref_t u32. ----

/// grant_entry_v1.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantEntryV1 {
    pub flags: u16,
    pub domid: u16,
    pub frame: u32,
}
const _: () = assert!(size_of::<GrantEntryV1>() == 8);
const _: () = assert!(offset_of!(GrantEntryV1, domid) == 2 && offset_of!(GrantEntryV1, frame) == 4);

/// grant_entry_header (the first 4 bytes of every v2 entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantEntryHeader {
    pub flags: u16,
    pub domid: u16,
}
const _: () = assert!(size_of::<GrantEntryHeader>() == 4);

/// grant_entry_v2.full_page.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantEntryV2FullPage {
    pub hdr: GrantEntryHeader,
    pub pad0: u32,
    pub frame: u64,
}
const _: () = assert!(
    size_of::<GrantEntryV2FullPage>() == 16 && offset_of!(GrantEntryV2FullPage, frame) == 8
);

/// grant_entry_v2.sub_page.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantEntryV2SubPage {
    pub hdr: GrantEntryHeader,
    pub page_off: u16,
    pub length: u16,
    pub frame: u64,
}
const _: () = assert!(size_of::<GrantEntryV2SubPage>() == 16);
const _: () = assert!(
    offset_of!(GrantEntryV2SubPage, page_off) == 4 && offset_of!(GrantEntryV2SubPage, length) == 6
);
const _: () = assert!(offset_of!(GrantEntryV2SubPage, frame) == 8);

/// grant_entry_v2.transitive.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantEntryV2Transitive {
    pub hdr: GrantEntryHeader,
    pub trans_domid: u16,
    pub pad0: u16,
    pub gref: u32,
}
const _: () = assert!(size_of::<GrantEntryV2Transitive>() == 12);
const _: () = assert!(
    offset_of!(GrantEntryV2Transitive, trans_domid) == 4
        && offset_of!(GrantEntryV2Transitive, gref) == 8
);

/// union grant_entry_v2: 16 bytes (`uint32_t __spacer[4]`), kept as its bytes; the variants
/// above are views of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantEntryV2(pub [u8; 16]);
const V2_SIZE: usize = 16;
const _: () = assert!(size_of::<GrantEntryV2>() == V2_SIZE && PAGE_SIZE % V2_SIZE == 0);

impl GrantEntryV2 {
    pub fn hdr(&self) -> GrantEntryHeader {
        GrantEntryHeader {
            flags: u16_at(&self.0, 0),
            domid: u16_at(&self.0, 2),
        }
    }
    pub fn full_page(&self) -> GrantEntryV2FullPage {
        GrantEntryV2FullPage {
            hdr: self.hdr(),
            pad0: u32_at(&self.0, 4),
            frame: u64_at(&self.0, 8),
        }
    }
    pub fn sub_page(&self) -> GrantEntryV2SubPage {
        GrantEntryV2SubPage {
            hdr: self.hdr(),
            page_off: u16_at(&self.0, 4),
            length: u16_at(&self.0, 6),
            frame: u64_at(&self.0, 8),
        }
    }
    pub fn transitive(&self) -> GrantEntryV2Transitive {
        GrantEntryV2Transitive {
            hdr: self.hdr(),
            trans_domid: u16_at(&self.0, 4),
            pad0: u16_at(&self.0, 6),
            gref: u32_at(&self.0, 8),
        }
    }
    pub fn from_full_page(e: &GrantEntryV2FullPage) -> Self {
        let mut b = [0u8; 16];
        b[0..2].copy_from_slice(&e.hdr.flags.to_le_bytes());
        b[2..4].copy_from_slice(&e.hdr.domid.to_le_bytes());
        b[4..8].copy_from_slice(&e.pad0.to_le_bytes());
        b[8..16].copy_from_slice(&e.frame.to_le_bytes());
        GrantEntryV2(b)
    }
}

impl GrantEntryV1 {
    pub fn from_bytes(b: &[u8; 8]) -> Self {
        GrantEntryV1 {
            flags: u16_at(b, 0),
            domid: u16_at(b, 2),
            frame: u32_at(b, 4),
        }
    }
    pub fn to_bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0..2].copy_from_slice(&self.flags.to_le_bytes());
        b[2..4].copy_from_slice(&self.domid.to_le_bytes());
        b[4..8].copy_from_slice(&self.frame.to_le_bytes());
        b
    }
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u32_at(b, o) as u64 | (u32_at(b, o + 4) as u64) << 32
}

// ---- Hypercall argument layouts. Native (64-bit guest) and compat (32-bit guest) forms
// where they differ (xen_pfn_t and guest handles are 4 bytes in compat; uint64_t is 4-byte
// aligned on i386, which changes no layout below). ----

/// gnttab_map_grant_ref (same layout for both widths).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabMapGrantRef {
    pub host_addr: u64,
    pub flags: u32,
    pub gref: u32,
    pub dom: u16,
    pub status: i16,
    pub handle: u32,
    pub dev_bus_addr: u64,
}
const _: () = assert!(size_of::<GnttabMapGrantRef>() == 32);
const _: () =
    assert!(offset_of!(GnttabMapGrantRef, flags) == 8 && offset_of!(GnttabMapGrantRef, gref) == 12);
const _: () = assert!(
    offset_of!(GnttabMapGrantRef, dom) == 16 && offset_of!(GnttabMapGrantRef, status) == 18
);
const _: () = assert!(
    offset_of!(GnttabMapGrantRef, handle) == 20
        && offset_of!(GnttabMapGrantRef, dev_bus_addr) == 24
);

/// gnttab_unmap_grant_ref (same layout for both widths: 22 bytes padded to 24).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabUnmapGrantRef {
    pub host_addr: u64,
    pub dev_bus_addr: u64,
    pub handle: u32,
    pub status: i16,
}
const _: () = assert!(size_of::<GnttabUnmapGrantRef>() == 24);
const _: () = assert!(
    offset_of!(GnttabUnmapGrantRef, handle) == 16 && offset_of!(GnttabUnmapGrantRef, status) == 20
);

/// gnttab_unmap_and_replace (same layout for both widths).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabUnmapAndReplace {
    pub host_addr: u64,
    pub new_addr: u64,
    pub handle: u32,
    pub status: i16,
}
const _: () = assert!(size_of::<GnttabUnmapAndReplace>() == 24);
const _: () = assert!(
    offset_of!(GnttabUnmapAndReplace, handle) == 16
        && offset_of!(GnttabUnmapAndReplace, status) == 20
);

/// gnttab_setup_table, native: frame_list is XEN_GUEST_HANDLE(xen_pfn_t) (u64 entries).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabSetupTable {
    pub dom: u16,
    pub nr_frames: u32,
    pub status: i16,
    pub frame_list: u64,
}
const _: () = assert!(size_of::<GnttabSetupTable>() == 24);
const _: () = assert!(
    offset_of!(GnttabSetupTable, nr_frames) == 4 && offset_of!(GnttabSetupTable, status) == 8
);
const _: () = assert!(offset_of!(GnttabSetupTable, frame_list) == 16);

/// gnttab_setup_table, compat: a 32-bit handle to 32-bit frame numbers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CompatGnttabSetupTable {
    pub dom: u16,
    pub nr_frames: u32,
    pub status: i16,
    pub frame_list: u32,
}
const _: () = assert!(size_of::<CompatGnttabSetupTable>() == 16);
const _: () = assert!(
    offset_of!(CompatGnttabSetupTable, status) == 8
        && offset_of!(CompatGnttabSetupTable, frame_list) == 12
);

/// gnttab_dump_table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabDumpTable {
    pub dom: u16,
    pub status: i16,
}
const _: () = assert!(size_of::<GnttabDumpTable>() == 4);

/// gnttab_transfer, native.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabTransfer {
    pub mfn: u64,
    pub domid: u16,
    pub gref: u32,
    pub status: i16,
}
const _: () = assert!(size_of::<GnttabTransfer>() == 24);
const _: () =
    assert!(offset_of!(GnttabTransfer, domid) == 8 && offset_of!(GnttabTransfer, gref) == 12);
const _: () = assert!(offset_of!(GnttabTransfer, status) == 16);

/// gnttab_transfer, compat.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CompatGnttabTransfer {
    pub mfn: u32,
    pub domid: u16,
    pub gref: u32,
    pub status: i16,
}
const _: () = assert!(
    size_of::<CompatGnttabTransfer>() == 16 && offset_of!(CompatGnttabTransfer, status) == 12
);

/// gnttab_copy_ptr, native: `union { grant_ref_t ref; xen_pfn_t gmfn; } u` is 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabCopyPtr {
    /// The grant reference (low 32 bits) or the gmfn.
    pub u: u64,
    pub domid: u16,
    pub offset: u16,
}
const _: () = assert!(size_of::<GnttabCopyPtr>() == 16 && offset_of!(GnttabCopyPtr, domid) == 8);
const _: () = assert!(offset_of!(GnttabCopyPtr, offset) == 10);

/// gnttab_copy, native.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabCopy {
    pub source: GnttabCopyPtr,
    pub dest: GnttabCopyPtr,
    pub len: u16,
    pub flags: u16,
    pub status: i16,
}
const _: () = assert!(size_of::<GnttabCopy>() == 40 && offset_of!(GnttabCopy, dest) == 16);
const _: () = assert!(offset_of!(GnttabCopy, len) == 32 && offset_of!(GnttabCopy, flags) == 34);
const _: () = assert!(offset_of!(GnttabCopy, status) == 36);

/// gnttab_copy_ptr, compat: the union is 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CompatGnttabCopyPtr {
    pub u: u32,
    pub domid: u16,
    pub offset: u16,
}
const _: () = assert!(size_of::<CompatGnttabCopyPtr>() == 8);

/// gnttab_copy, compat.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CompatGnttabCopy {
    pub source: CompatGnttabCopyPtr,
    pub dest: CompatGnttabCopyPtr,
    pub len: u16,
    pub flags: u16,
    pub status: i16,
}
const _: () =
    assert!(size_of::<CompatGnttabCopy>() == 24 && offset_of!(CompatGnttabCopy, len) == 16);
const _: () = assert!(offset_of!(CompatGnttabCopy, status) == 20);

/// gnttab_query_size (same layout for both widths).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabQuerySize {
    pub dom: u16,
    pub nr_frames: u32,
    pub max_nr_frames: u32,
    pub status: i16,
}
const _: () =
    assert!(size_of::<GnttabQuerySize>() == 16 && offset_of!(GnttabQuerySize, status) == 12);

/// gnttab_set_version.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabSetVersion {
    pub version: u32,
}
const _: () = assert!(size_of::<GnttabSetVersion>() == 4);

/// gnttab_get_status_frames, native: frame_list is XEN_GUEST_HANDLE(uint64_t).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabGetStatusFrames {
    pub nr_frames: u32,
    pub dom: u16,
    pub status: i16,
    pub frame_list: u64,
}
const _: () = assert!(
    size_of::<GnttabGetStatusFrames>() == 16 && offset_of!(GnttabGetStatusFrames, frame_list) == 8
);
const _: () = assert!(
    offset_of!(GnttabGetStatusFrames, dom) == 4 && offset_of!(GnttabGetStatusFrames, status) == 6
);

/// gnttab_get_status_frames, compat: a 32-bit handle (to uint64_t entries).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CompatGnttabGetStatusFrames {
    pub nr_frames: u32,
    pub dom: u16,
    pub status: i16,
    pub frame_list: u32,
}
const _: () = assert!(size_of::<CompatGnttabGetStatusFrames>() == 12);

/// gnttab_get_version.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabGetVersion {
    pub dom: u16,
    pub pad: u16,
    pub version: u32,
}
const _: () =
    assert!(size_of::<GnttabGetVersion>() == 8 && offset_of!(GnttabGetVersion, version) == 4);

/// gnttab_swap_grant_ref.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabSwapGrantRef {
    pub ref_a: u32,
    pub ref_b: u32,
    pub status: i16,
}
const _: () =
    assert!(size_of::<GnttabSwapGrantRef>() == 12 && offset_of!(GnttabSwapGrantRef, status) == 8);

/// gnttab_cache_flush (same layout for both widths).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabCacheFlush {
    /// `union { uint64_t dev_bus_addr; grant_ref_t ref; } a`.
    pub a: u64,
    pub offset: u16,
    pub length: u16,
    pub op: u32,
}
const _: () =
    assert!(size_of::<GnttabCacheFlush>() == 16 && offset_of!(GnttabCacheFlush, op) == 12);
pub const GNTTAB_CACHE_CLEAN: u32 = 1 << 0;
pub const GNTTAB_CACHE_INVAL: u32 = 1 << 1;
pub const GNTTAB_CACHE_SOURCE_GREF: u32 = 1 << 31;

// ---- Host-side state. ----

/// An active (pinned) grant entry: Xen's active_grant_entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Active {
    /// GNTPIN_* counters: host writable, host read-only, device writable, device read-only.
    pub pin: u32,
    /// The domain the entry is pinned for.
    pub domid: u16,
    pub frame: u64,
    /// The granted byte range of the frame (a whole page but for v2 sub-page grants).
    pub start: u32,
    pub length: u32,
    pub sub_page: bool,
}

/// One mapping (Xen's grant_mapping): the reference and the GNTMAP_* flags still held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub gref: u32,
    pub flags: u32,
    pub frame: u64,
}

#[derive(Clone, Debug, Default)]
struct Maptrack {
    entries: Vec<Option<Mapping>>,
    free: Vec<u32>,
}

impl Maptrack {
    fn alloc(&mut self, m: Mapping) -> Option<u32> {
        if let Some(h) = self.free.pop() {
            self.entries[h as usize] = Some(m);
            return Some(h);
        }
        if self.entries.len() as u32 >= MAX_MAPTRACK {
            return None;
        }
        self.entries.push(Some(m));
        Some(self.entries.len() as u32 - 1)
    }
    fn get(&self, h: u32) -> Option<Mapping> {
        self.entries.get(h as usize).copied().flatten()
    }
    fn release(&mut self, h: u32) {
        if let Some(e) = self.entries.get_mut(h as usize) {
            if e.take().is_some() {
                self.free.push(h);
            }
        }
    }
}

/// Where the table's frames are (contiguous runs of machine frames).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantFrames {
    pub shared_mfn: u64,
    pub shared_frames: u32,
    pub status_mfn: u64,
    pub status_frames: u32,
}

/// A machine frame of the table, as [`GrantTable::table_frame`] finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableFrame {
    Shared(u32),
    Status(u32),
}

/// The grant table of one domain.
#[derive(Clone, Debug)]
pub struct GrantTable {
    domid: u16,
    nr_pages: u64,
    frames: GrantFrames,
    max_frames: u32,
    version: u32,
    nr_frames: u32,
    nr_status_frames: u32,
    active: HashMap<u32, Active>,
    /// By mapping domain.
    maptrack: HashMap<u16, Maptrack>,
}

impl GrantTable {
    /// The table of domain `domid`, whose own frames are `0..nr_pages`. Starts as Xen's
    /// grant_table_init leaves it: version 1, INITIAL_NR_GRANT_FRAMES frames. The frames must
    /// be zero (the domain builder zeroes the platform frames).
    pub fn new(domid: u16, nr_pages: u64, frames: GrantFrames) -> Self {
        let max_frames = frames
            .shared_frames
            .min(MAX_GRANT_FRAMES)
            .min(frames.status_frames.saturating_mul(STATUS_PER_FRAME) / V2_PER_FRAME);
        GrantTable {
            domid,
            nr_pages,
            frames,
            max_frames,
            version: 1,
            nr_frames: INITIAL_NR_GRANT_FRAMES.min(max_frames),
            nr_status_frames: 0,
            active: HashMap::new(),
            maptrack: HashMap::new(),
        }
    }

    pub fn domid(&self) -> u16 {
        self.domid
    }
    pub fn version(&self) -> u32 {
        self.version
    }
    /// Shared frames in use.
    pub fn nr_frames(&self) -> u32 {
        self.nr_frames
    }
    pub fn max_frames(&self) -> u32 {
        self.max_frames
    }
    pub fn nr_status_frames(&self) -> u32 {
        self.nr_status_frames
    }
    /// Entries of the table at its version and size.
    pub fn nr_entries(&self) -> u32 {
        self.nr_frames
            * if self.version == 1 {
                V1_PER_FRAME
            } else {
                V2_PER_FRAME
            }
    }
    /// The active entry of `gref`, if pinned.
    pub fn active(&self, gref: u32) -> Option<Active> {
        self.active.get(&gref).copied().filter(|a| a.pin != 0)
    }
    /// Whether machine frame `mfn` is a frame of the table currently shared with the domain.
    /// Xen shares both kinds read-write (SHARE_rw).
    pub fn table_frame(&self, mfn: u64) -> Option<TableFrame> {
        let f = &self.frames;
        if mfn >= f.shared_mfn && mfn - f.shared_mfn < self.nr_frames as u64 {
            return Some(TableFrame::Shared((mfn - f.shared_mfn) as u32));
        }
        if mfn >= f.status_mfn && mfn - f.status_mfn < self.nr_status_frames as u64 {
            return Some(TableFrame::Status((mfn - f.status_mfn) as u32));
        }
        None
    }

    fn shared_gpa(&self, gref: u32) -> u64 {
        let (per, size) = if self.version == 1 {
            (V1_PER_FRAME, 8)
        } else {
            (V2_PER_FRAME, 16)
        };
        ((self.frames.shared_mfn + (gref / per) as u64) << 12) + (gref % per) as u64 * size
    }
    fn status_gpa(&self, gref: u32) -> u64 {
        ((self.frames.status_mfn + (gref / STATUS_PER_FRAME) as u64) << 12)
            + (gref % STATUS_PER_FRAME) as u64 * 2
    }
    fn read16(mem: &dyn GuestPhys, gpa: u64) -> u16 {
        let mut b = [0u8; 2];
        if mem.read(gpa, &mut b) {
            u16::from_le_bytes(b)
        } else {
            0
        }
    }
    /// The entry's header (flags, domid) in either version.
    fn header(&self, mem: &dyn GuestPhys, gref: u32) -> GrantEntryHeader {
        let a = self.shared_gpa(gref);
        GrantEntryHeader {
            flags: Self::read16(mem, a),
            domid: Self::read16(mem, a + 2),
        }
    }
    /// The frame a v1 entry or a v2 full_page / sub_page entry names.
    fn entry_frame(&self, mem: &dyn GuestPhys, gref: u32) -> u64 {
        let a = self.shared_gpa(gref);
        if self.version == 1 {
            mem.read_u32(a + 4).unwrap_or(u32::MAX) as u64
        } else {
            mem.read_u64(a + 8).unwrap_or(u64::MAX)
        }
    }
    /// Address of the word holding GTF_reading / GTF_writing for `gref`.
    fn status_word(&self, gref: u32) -> u64 {
        if self.version == 1 {
            self.shared_gpa(gref)
        } else {
            self.status_gpa(gref)
        }
    }
    fn set_flags(&self, mem: &mut dyn GuestPhys, gref: u32, set: u16) {
        let a = self.status_word(gref);
        let v = Self::read16(mem, a) | set;
        mem.write(a, &v.to_le_bytes());
    }
    fn clear_flags(&self, mem: &mut dyn GuestPhys, gref: u32, clear: u16) {
        let a = self.status_word(gref);
        let v = Self::read16(mem, a) & !clear;
        mem.write(a, &v.to_le_bytes());
    }

    /// Grow to `req` shared frames (and the status frames v2 needs): Xen's gnttab_grow_table.
    fn grow(&mut self, mem: &mut dyn GuestPhys, req: u32) {
        let req = req.max(INITIAL_NR_GRANT_FRAMES).min(self.max_frames);
        for i in self.nr_frames..req {
            mem.write((self.frames.shared_mfn + i as u64) << 12, &[0u8; PAGE_SIZE]);
        }
        self.nr_frames = self.nr_frames.max(req);
        if self.version == 2 {
            self.populate_status(mem);
        }
    }
    fn populate_status(&mut self, mem: &mut dyn GuestPhys) {
        let want = grant_to_status_frames(self.nr_frames).min(self.frames.status_frames);
        for i in self.nr_status_frames..want {
            mem.write((self.frames.status_mfn + i as u64) << 12, &[0u8; PAGE_SIZE]);
        }
        self.nr_status_frames = self.nr_status_frames.max(want);
    }

    /// Write a reserved entry as the toolstack does before the domain starts
    /// (xc_dom_gnttab_seed): GTF_permit_access for `domid` to `frame`, in the v1 layout.
    pub fn seed(&mut self, mem: &mut dyn GuestPhys, gref: u32, domid: u16, frame: u32) -> bool {
        if self.version != 1 || gref >= GNTTAB_NR_RESERVED_ENTRIES {
            return false;
        }
        let e = GrantEntryV1 {
            flags: GTF_PERMIT_ACCESS,
            domid,
            frame,
        };
        mem.write(self.shared_gpa(gref), &e.to_bytes())
    }

    /// GNTTABOP_setup_table for `nr` frames: grows the table (never shrinks) and returns the
    /// machine frames of the first `nr` shared frames.
    pub fn setup(&mut self, mem: &mut dyn GuestPhys, nr: u32) -> Result<Vec<u64>, i16> {
        if nr > self.max_frames {
            return Err(GNTST_GENERAL_ERROR);
        }
        if nr > self.nr_frames
            || (self.version == 2 && grant_to_status_frames(nr) > self.nr_status_frames)
        {
            self.grow(mem, nr);
        }
        Ok((0..nr as u64).map(|i| self.frames.shared_mfn + i).collect())
    }

    /// GNTTABOP_query_size: (nr_frames, max_nr_frames).
    pub fn query_size(&self) -> (u32, u32) {
        (self.nr_frames, self.max_frames)
    }

    /// GNTTABOP_get_status_frames for `nr` frames.
    pub fn status_frames(&self, nr: u32) -> Result<Vec<u64>, i16> {
        if nr > self.nr_status_frames {
            return Err(GNTST_GENERAL_ERROR);
        }
        Ok((0..nr as u64).map(|i| self.frames.status_mfn + i).collect())
    }

    /// GNTTABOP_set_version. Returns the version afterwards (what Xen writes back) and the
    /// result (Err: positive errno). Entries other than the 8 reserved ones must not be in
    /// use (-EBUSY); the reserved ones are converted, all others cleared (Xen's semantics).
    pub fn set_version(&mut self, mem: &mut dyn GuestPhys, v: u32) -> (u32, Result<(), i64>) {
        let r = self.set_version_inner(mem, v);
        (self.version, r)
    }

    fn set_version_inner(&mut self, mem: &mut dyn GuestPhys, v: u32) -> Result<(), i64> {
        if v != 1 && v != 2 {
            return Err(EINVAL);
        }
        if v == self.version {
            return Ok(());
        }
        if self
            .active
            .iter()
            .any(|(&g, a)| g >= GNTTAB_NR_RESERVED_ENTRIES && g < self.nr_entries() && a.pin != 0)
        {
            return Err(EBUSY);
        }
        let mut reserved = [GrantEntryV1::default(); GNTTAB_NR_RESERVED_ENTRIES as usize];
        if self.version == 2 {
            for (i, r) in reserved.iter_mut().enumerate() {
                let e = self.read_v2(mem, i as u32);
                let t = e.hdr().flags & GTF_TYPE_MASK;
                if t == GTF_TRANSITIVE || (t == GTF_PERMIT_ACCESS && e.full_page().frame >> 32 != 0)
                {
                    return Err(ERANGE);
                }
                if t == GTF_PERMIT_ACCESS {
                    let fp = e.full_page();
                    let st = Self::read16(mem, self.status_gpa(i as u32));
                    *r = GrantEntryV1 {
                        flags: fp.hdr.flags | st,
                        domid: fp.hdr.domid,
                        frame: fp.frame as u32,
                    };
                }
            }
        } else {
            for (i, r) in reserved.iter_mut().enumerate() {
                let mut b = [0u8; 8];
                mem.read(self.shared_gpa(i as u32), &mut b);
                *r = GrantEntryV1::from_bytes(&b);
            }
        }
        match v {
            2 => {
                self.version = 2;
                self.populate_status(mem);
            }
            _ => {
                // The status frames go back to Xen. (Xen refuses with -EBUSY while the guest
                // still maps one; mappings are not counted here.)
                self.version = 1;
                self.nr_status_frames = 0;
            }
        }
        for i in 0..self.nr_frames as u64 {
            mem.write((self.frames.shared_mfn + i) << 12, &[0u8; PAGE_SIZE]);
        }
        for (i, r) in reserved.iter().enumerate() {
            let g = i as u32;
            if v == 1 {
                mem.write(self.shared_gpa(g), &r.to_bytes());
            } else {
                let st = r.flags & (GTF_READING | GTF_WRITING);
                mem.write(self.status_gpa(g), &st.to_le_bytes());
                let fp = GrantEntryV2FullPage {
                    hdr: GrantEntryHeader {
                        flags: r.flags & !(GTF_READING | GTF_WRITING),
                        domid: r.domid,
                    },
                    pad0: 0,
                    frame: r.frame as u64,
                };
                mem.write(self.shared_gpa(g), &GrantEntryV2::from_full_page(&fp).0);
            }
        }
        Ok(())
    }

    fn read_v2(&self, mem: &dyn GuestPhys, gref: u32) -> GrantEntryV2 {
        let mut b = [0u8; 16];
        mem.read(self.shared_gpa(gref), &mut b);
        GrantEntryV2(b)
    }

    /// Xen's _set_status: check the entry for `ldom` and set GTF_reading (and GTF_writing)
    /// in the shared entry (v1) or the status word (v2).
    fn set_status(
        &self,
        mem: &mut dyn GuestPhys,
        gref: u32,
        pinned: bool,
        readonly: bool,
        mapflag: bool,
        ldom: u16,
    ) -> Result<(), i16> {
        let h = self.header(mem, gref);
        let mask = GTF_TYPE_MASK | if mapflag { GTF_SUB_PAGE } else { 0 };
        let t = h.flags & mask;
        let type_ok = t == GTF_PERMIT_ACCESS || (self.version == 2 && t == GTF_TRANSITIVE);
        if !pinned && (!type_ok || h.domid != ldom) {
            return Err(GNTST_GENERAL_ERROR);
        }
        if !readonly && h.flags & GTF_READONLY != 0 {
            return Err(GNTST_GENERAL_ERROR);
        }
        self.set_flags(
            mem,
            gref,
            if readonly {
                GTF_READING
            } else {
                GTF_READING | GTF_WRITING
            },
        );
        Ok(())
    }

    /// Drop GTF_writing when no writable pin is left (after a writable use) and GTF_reading
    /// when no pin is left.
    fn clear_after(&self, mem: &mut dyn GuestPhys, gref: u32, pin: u32, readonly: bool) {
        let mut c = 0;
        if !readonly && pin & PIN_W_MASK == 0 {
            c |= GTF_WRITING;
        }
        if pin == 0 {
            c |= GTF_READING;
        }
        if c != 0 {
            self.clear_flags(mem, gref, c);
        }
    }

    fn pin_of(&self, gref: u32) -> Active {
        self.active.get(&gref).copied().unwrap_or_default()
    }
    fn put_active(&mut self, gref: u32, a: Active) {
        if a.pin == 0 {
            self.active.remove(&gref);
        } else {
            self.active.insert(gref, a);
        }
    }

    /// GNTTABOP_map_grant_ref of `gref` by domain `ld` with GNTMAP_* `flags`: checks and pins
    /// the entry, takes a maptrack handle. `writable(frame)`: whether the frame can take the
    /// writable type (false for page tables). Returns (handle, frame).
    pub fn map(
        &mut self,
        mem: &mut dyn GuestPhys,
        ld: u16,
        gref: u32,
        flags: u32,
        writable: &dyn Fn(u64) -> bool,
    ) -> Result<(u32, u64), i16> {
        if flags & (GNTMAP_DEVICE_MAP | GNTMAP_HOST_MAP) == 0 {
            return Err(GNTST_BAD_GNTREF);
        }
        let mt = self.maptrack.entry(ld).or_default();
        if mt.free.is_empty() && mt.entries.len() as u32 >= MAX_MAPTRACK {
            return Err(GNTST_NO_DEVICE_SPACE);
        }
        if gref >= self.nr_entries() {
            return Err(GNTST_BAD_GNTREF);
        }
        let ro = flags & GNTMAP_READONLY != 0;
        let mut act = self.pin_of(gref);
        if act.pin != 0 && (act.domid != ld || act.pin & PIN_OVERFLOW != 0 || act.sub_page) {
            return Err(GNTST_GENERAL_ERROR);
        }
        if act.pin == 0 || (!ro && act.pin & PIN_W_MASK == 0) {
            if self.version == 2
                && act.pin == 0
                && self.header(mem, gref).flags & GTF_TYPE_MASK == GTF_TRANSITIVE
            {
                // Transitive grants cannot be mapped.
                return Err(GNTST_GENERAL_ERROR);
            }
            self.set_status(mem, gref, act.pin != 0, ro, true, ld)?;
            if act.pin == 0 {
                let frame = self.entry_frame(mem, gref);
                if frame >= self.nr_pages {
                    self.clear_after(mem, gref, 0, ro);
                    return Err(GNTST_BAD_PAGE);
                }
                act = Active {
                    pin: 0,
                    domid: ld,
                    frame,
                    start: 0,
                    length: PAGE_SIZE as u32,
                    sub_page: false,
                };
            }
        }
        let inc = pin_inc(flags);
        let old = act.pin;
        act.pin += inc;
        if !ro && !writable(act.frame) {
            act.pin = old;
            self.clear_after(mem, gref, act.pin, ro);
            self.put_active(gref, act);
            return Err(GNTST_GENERAL_ERROR);
        }
        let frame = act.frame;
        self.put_active(gref, act);
        let m = Mapping {
            gref,
            flags: flags & 0x1f,
            frame,
        };
        let h = self
            .maptrack
            .entry(ld)
            .or_default()
            .alloc(m)
            .ok_or(GNTST_NO_DEVICE_SPACE)?;
        Ok((h, frame))
    }

    /// The cache attributes (GTF_PWT / GTF_PCD / GTF_PAT) of entry `gref`, for a host mapping.
    pub fn map_cache_flags(&self, mem: &dyn GuestPhys, gref: u32) -> u16 {
        if gref >= self.nr_entries() {
            return 0;
        }
        self.header(mem, gref).flags & (GTF_PWT | GTF_PCD | GTF_PAT)
    }

    /// The mapping `handle` of domain `ld`.
    pub fn mapping(&self, ld: u16, handle: u32) -> Result<Mapping, i16> {
        self.maptrack
            .get(&ld)
            .and_then(|m| m.get(handle))
            .filter(|m| m.flags & (GNTMAP_HOST_MAP | GNTMAP_DEVICE_MAP) != 0)
            .ok_or(GNTST_BAD_HANDLE)
    }

    /// The checks of an unmap before anything changes (Xen's unmap_common): the handle, and a
    /// non-zero `dev_bus_addr` must be the frame's address.
    pub fn check_unmap(&self, ld: u16, handle: u32, dev_bus_addr: u64) -> Result<Mapping, i16> {
        let m = self.mapping(ld, handle)?;
        if dev_bus_addr != 0 && dev_bus_addr != m.frame << 12 {
            return Err(GNTST_GENERAL_ERROR);
        }
        Ok(m)
    }

    /// GNTTABOP_unmap_grant_ref of `handle` by `ld`: drops the host mapping when `host` (the
    /// caller removed it) and the device mapping when `dev_bus_addr` is non-zero; the handle
    /// goes when neither is left. Pins drop, and GTF_writing / GTF_reading are cleared when
    /// the last writable / any pin goes (unmap_common_complete).
    pub fn unmap(
        &mut self,
        mem: &mut dyn GuestPhys,
        ld: u16,
        handle: u32,
        host: bool,
        dev_bus_addr: u64,
    ) -> Result<(), i16> {
        let m = self.check_unmap(ld, handle, dev_bus_addr)?;
        let mut done = 0;
        if host && m.flags & GNTMAP_HOST_MAP != 0 {
            done |= GNTMAP_HOST_MAP;
        }
        if dev_bus_addr != 0 && m.flags & GNTMAP_DEVICE_MAP != 0 {
            done |= GNTMAP_DEVICE_MAP;
        }
        if done == 0 {
            return Ok(());
        }
        let left = m.flags & !done;
        let mt = self.maptrack.entry(ld).or_default();
        if left & (GNTMAP_HOST_MAP | GNTMAP_DEVICE_MAP) == 0 {
            mt.release(handle);
        } else if let Some(Some(e)) = mt.entries.get_mut(handle as usize) {
            e.flags = left;
        }
        let ro = m.flags & GNTMAP_READONLY != 0;
        let mut act = self.pin_of(m.gref);
        act.pin = act
            .pin
            .saturating_sub(pin_inc(done | (m.flags & GNTMAP_READONLY)));
        self.clear_after(mem, m.gref, act.pin, ro);
        self.put_active(m.gref, act);
        Ok(())
    }

    /// Xen's acquire_grant_for_copy: pin `gref` for a copy by `ldom`. Returns (frame, start,
    /// length) of the granted range.
    fn acquire_for_copy(
        &mut self,
        mem: &mut dyn GuestPhys,
        gref: u32,
        ldom: u16,
        ro: bool,
    ) -> Result<(u64, u32, u32), i16> {
        if gref >= self.nr_entries() {
            return Err(GNTST_BAD_GNTREF);
        }
        let mut act = self.pin_of(gref);
        if act.pin != 0 && (act.domid != ldom || act.pin & PIN_OVERFLOW != 0) {
            return Err(GNTST_GENERAL_ERROR);
        }
        if self.version == 2
            && act.pin == 0
            && self.header(mem, gref).flags & GTF_TYPE_MASK == GTF_TRANSITIVE
        {
            // The referenced grant is another domain's (none here) or our own (refused as
            // self-referential): set_status' checks first, then the failure.
            self.set_status(mem, gref, false, ro, false, ldom)?;
            self.clear_after(mem, gref, 0, ro);
            return Err(GNTST_GENERAL_ERROR);
        }
        if act.pin == 0 || (!ro && act.pin & PIN_W_MASK == 0) {
            self.set_status(mem, gref, act.pin != 0, ro, false, ldom)?;
            if act.pin == 0 {
                let (frame, start, length, sub) = if self.version == 1 {
                    (self.entry_frame(mem, gref), 0, PAGE_SIZE as u32, false)
                } else {
                    let e = self.read_v2(mem, gref);
                    if e.hdr().flags & GTF_SUB_PAGE != 0 {
                        let s = e.sub_page();
                        (s.frame, s.page_off as u32, s.length as u32, true)
                    } else {
                        (e.full_page().frame, 0, PAGE_SIZE as u32, false)
                    }
                };
                if frame >= self.nr_pages {
                    self.clear_after(mem, gref, 0, ro);
                    return Err(GNTST_BAD_PAGE);
                }
                act = Active {
                    pin: 0,
                    domid: ldom,
                    frame,
                    start,
                    length,
                    sub_page: sub,
                };
            }
        }
        act.pin += if ro { PIN_HSTR } else { PIN_HSTW };
        let r = (act.frame, act.start, act.length);
        self.put_active(gref, act);
        Ok(r)
    }

    /// Xen's release_grant_for_copy.
    fn release_for_copy(&mut self, mem: &mut dyn GuestPhys, gref: u32, ro: bool) {
        let mut act = self.pin_of(gref);
        act.pin = act.pin.saturating_sub(if ro { PIN_HSTR } else { PIN_HSTW });
        self.clear_after(mem, gref, act.pin, ro);
        self.put_active(gref, act);
    }

    /// Resolve one side of a copy by `ld`: a grant of this table or a frame of DOMID_SELF.
    /// Returns (frame, granted start, granted length in bytes, held grant ref).
    fn claim(
        &mut self,
        mem: &mut dyn GuestPhys,
        ld: u16,
        p: &GnttabCopyPtr,
        is_gref: bool,
        ro: bool,
        writable: &dyn Fn(u64) -> bool,
    ) -> Result<(u64, usize, usize, Option<u32>), i16> {
        let (frame, start, len, held) = if is_gref {
            let gref = p.u as u32;
            let (f, s, l) = self.acquire_for_copy(mem, gref, ld, ro)?;
            (f, s as usize, l as usize, Some(gref))
        } else {
            if p.u >= self.nr_pages {
                return Err(GNTST_BAD_PAGE);
            }
            (p.u, 0, PAGE_SIZE, None)
        };
        if !ro && !writable(frame) {
            if let Some(g) = held {
                self.release_for_copy(mem, g, ro);
            }
            return Err(GNTST_GENERAL_ERROR);
        }
        Ok((frame, start, len, held))
    }

    /// The domain a copy side names, for copier `ld`: only this table's domain has memory here.
    fn copy_domain(&self, ld: u16, domid: u16, is_gref: bool) -> Result<(), i16> {
        if domid != DOMID_SELF && !is_gref {
            return Err(GNTST_PERMISSION_DENIED);
        }
        let d = if domid == DOMID_SELF { ld } else { domid };
        if d != self.domid {
            return Err(GNTST_BAD_DOMAIN);
        }
        Ok(())
    }

    /// One GNTTABOP_copy by domain `ld`; returns the op's status.
    pub fn copy(
        &mut self,
        mem: &mut dyn GuestPhys,
        ld: u16,
        op: &GnttabCopy,
        writable: &dyn Fn(u64) -> bool,
    ) -> i16 {
        let sg = op.flags & GNTCOPY_SOURCE_GREF != 0;
        let dg = op.flags & GNTCOPY_DEST_GREF != 0;
        if let Err(e) = self
            .copy_domain(ld, op.source.domid, sg)
            .and_then(|_| self.copy_domain(ld, op.dest.domid, dg))
        {
            return e;
        }
        let src = match self.claim(mem, ld, &op.source, sg, true, writable) {
            Ok(s) => s,
            Err(e) => return e,
        };
        let dst = match self.claim(mem, ld, &op.dest, dg, false, writable) {
            Ok(d) => d,
            Err(e) => {
                if let Some(g) = src.3 {
                    self.release_for_copy(mem, g, true);
                }
                return e;
            }
        };
        let (len, so, dof) = (
            op.len as usize,
            op.source.offset as usize,
            op.dest.offset as usize,
        );
        let rc = if so + len > PAGE_SIZE || dof + len > PAGE_SIZE {
            GNTST_BAD_COPY_ARG
        } else if so < src.1 || so + len > src.1 + src.2 || dof < dst.1 || dof + len > dst.1 + dst.2
        {
            GNTST_GENERAL_ERROR
        } else {
            let mut buf = vec![0u8; len];
            if mem.read((src.0 << 12) + so as u64, &mut buf)
                && mem.write((dst.0 << 12) + dof as u64, &buf)
            {
                GNTST_OKAY
            } else {
                GNTST_GENERAL_ERROR
            }
        };
        if let Some(g) = dst.3 {
            self.release_for_copy(mem, g, false);
        }
        if let Some(g) = src.3 {
            self.release_for_copy(mem, g, true);
        }
        rc
    }

    /// A back end's copy between a grant of this table and its own buffer (Xen's gnttab_copy
    /// with a local frame on one side): reads the granted range at `offset` into `buf`
    /// (`to_grant` false) or writes `buf` there.
    fn copy_local(
        &mut self,
        mem: &mut dyn GuestPhys,
        ld: u16,
        gref: u32,
        offset: u16,
        buf: &mut [u8],
        to_grant: bool,
        writable: &dyn Fn(u64) -> bool,
    ) -> i16 {
        let ro = !to_grant;
        let p = GnttabCopyPtr {
            u: gref as u64,
            domid: self.domid,
            offset,
        };
        let (frame, start, glen, held) = match self.claim(mem, ld, &p, true, ro, writable) {
            Ok(c) => c,
            Err(e) => return e,
        };
        let (o, len) = (offset as usize, buf.len());
        let rc = if len > PAGE_SIZE || o + len > PAGE_SIZE {
            GNTST_BAD_COPY_ARG
        } else if o < start || o + len > start + glen {
            GNTST_GENERAL_ERROR
        } else {
            let a = (frame << 12) + o as u64;
            let ok = if to_grant {
                mem.write(a, buf)
            } else {
                mem.read(a, buf)
            };
            if ok {
                GNTST_OKAY
            } else {
                GNTST_GENERAL_ERROR
            }
        };
        if let Some(g) = held {
            self.release_for_copy(mem, g, ro);
        }
        rc
    }

    /// GNTTABOP_swap_grant_ref: swap two entries (and their status words) that are not in use.
    pub fn swap(&mut self, mem: &mut dyn GuestPhys, a: u32, b: u32) -> i16 {
        if a >= self.nr_entries() || b >= self.nr_entries() {
            return GNTST_BAD_GNTREF;
        }
        if a == b {
            return GNTST_OKAY;
        }
        if self.active(a).is_some() || self.active(b).is_some() {
            return GNTST_EAGAIN;
        }
        let n = if self.version == 1 { 8 } else { 16 };
        let (pa, pb) = (self.shared_gpa(a), self.shared_gpa(b));
        let (mut ea, mut eb) = ([0u8; 16], [0u8; 16]);
        mem.read(pa, &mut ea[..n]);
        mem.read(pb, &mut eb[..n]);
        mem.write(pa, &eb[..n]);
        mem.write(pb, &ea[..n]);
        if self.version == 2 {
            let (sa, sb) = (self.status_gpa(a), self.status_gpa(b));
            let (va, vb) = (Self::read16(mem, sa), Self::read16(mem, sb));
            mem.write(sa, &vb.to_le_bytes());
            mem.write(sb, &va.to_le_bytes());
        }
        GNTST_OKAY
    }

    /// Whether domain `ld` has a grant mapping of `frame` (Xen's grant_map_exists, for
    /// cache_flush on a foreign frame).
    pub fn frame_mapped_by(&self, ld: u16, frame: u64) -> bool {
        self.active
            .values()
            .any(|a| a.pin != 0 && a.domid == ld && a.frame == frame)
    }

    /// Data access through a mapping: `offset..offset + len` inside the page.
    fn mapped_range(
        &self,
        ld: u16,
        handle: u32,
        offset: usize,
        len: usize,
        write: bool,
    ) -> Result<u64, i16> {
        let m = self.mapping(ld, handle)?;
        if write && m.flags & GNTMAP_READONLY != 0 {
            return Err(GNTST_PERMISSION_DENIED);
        }
        if offset > PAGE_SIZE || len > PAGE_SIZE - offset {
            return Err(GNTST_BAD_COPY_ARG);
        }
        Ok((m.frame << 12) + offset as u64)
    }
}

fn pin_inc(flags: u32) -> u32 {
    let ro = flags & GNTMAP_READONLY != 0;
    let mut inc = 0;
    if flags & GNTMAP_DEVICE_MAP != 0 {
        inc += if ro { PIN_DEVR } else { PIN_DEVW };
    }
    if flags & GNTMAP_HOST_MAP != 0 {
        inc += if ro { PIN_HSTR } else { PIN_HSTW };
    }
    inc
}

/// A mapping handle (grant_handle_t).
pub type GrantHandle = u32;

/// One segment of [`GrantMapper::copy`]: a range of a grant of domain `dom` and a local buffer.
#[derive(Debug)]
pub struct CopySeg<'a> {
    pub dom: u16,
    pub gref: u32,
    pub offset: u16,
    pub data: CopyData<'a>,
    /// GNTST_* result.
    pub status: i16,
}

/// The local side of a copy segment and its direction.
#[derive(Debug)]
pub enum CopyData<'a> {
    /// Copy from the grant into the buffer.
    FromGrant(&'a mut [u8]),
    /// Copy the buffer into the grant.
    ToGrant(&'a [u8]),
}

/// The grant operations a back end (in the emulator, domain 0) uses, in the spirit of QEMU's
/// `xen_gnttab_ops`. Granted memory is reached only through `read` / `write` on a mapping, or
/// `copy`: never through pointers.
pub trait GrantMapper {
    /// Map grant `gref` of domain `dom` with GNTMAP_* `flags` (GNTMAP_host_map and/or
    /// GNTMAP_device_map, optionally GNTMAP_readonly).
    fn map(&mut self, dom: u16, gref: u32, flags: u32) -> Result<GrantHandle, i16>;
    /// Map several grants of `dom`; one result per reference.
    fn map_batch(&mut self, dom: u16, refs: &[u32], flags: u32) -> Vec<Result<GrantHandle, i16>> {
        refs.iter().map(|&r| self.map(dom, r, flags)).collect()
    }
    /// Drop a mapping (all of its host and device parts).
    fn unmap(&mut self, handle: GrantHandle) -> Result<(), i16>;
    /// Read `buf.len()` bytes at `offset` of a mapped page.
    fn read(&self, handle: GrantHandle, offset: usize, buf: &mut [u8]) -> Result<(), i16>;
    /// Write `data` at `offset` of a page mapped writable.
    fn write(&mut self, handle: GrantHandle, offset: usize, data: &[u8]) -> Result<(), i16>;
    /// GNTTABOP_copy between grants and local buffers; sets each segment's status.
    fn copy(&mut self, segs: &mut [CopySeg<'_>]);
}

/// The back ends' view of the guest's grant table: domain `domid` (0) mapping through the
/// guest's memory.
pub struct Backend<'a> {
    pub table: &'a mut GrantTable,
    pub mem: &'a mut dyn GuestPhys,
    pub domid: u16,
    /// Whether a guest frame can take the writable type (false for its page tables).
    pub writable: &'a dyn Fn(u64) -> bool,
}

impl Backend<'_> {
    fn check_dom(&self, dom: u16) -> Result<(), i16> {
        if dom == self.table.domid() {
            Ok(())
        } else {
            Err(GNTST_BAD_DOMAIN)
        }
    }
}

impl GrantMapper for Backend<'_> {
    fn map(&mut self, dom: u16, gref: u32, flags: u32) -> Result<GrantHandle, i16> {
        self.check_dom(dom)?;
        if flags & GNTMAP_CONTAINS_PTE != 0 {
            // A back end in the emulator has no page tables for Xen to update.
            return Err(GNTST_GENERAL_ERROR);
        }
        self.table
            .map(self.mem, self.domid, gref, flags, self.writable)
            .map(|(h, _)| h)
    }
    fn unmap(&mut self, handle: GrantHandle) -> Result<(), i16> {
        let m = self.table.mapping(self.domid, handle)?;
        self.table
            .unmap(self.mem, self.domid, handle, true, m.frame << 12)
    }
    fn read(&self, handle: GrantHandle, offset: usize, buf: &mut [u8]) -> Result<(), i16> {
        let a = self
            .table
            .mapped_range(self.domid, handle, offset, buf.len(), false)?;
        self.mem
            .read(a, buf)
            .then_some(())
            .ok_or(GNTST_GENERAL_ERROR)
    }
    fn write(&mut self, handle: GrantHandle, offset: usize, data: &[u8]) -> Result<(), i16> {
        let a = self
            .table
            .mapped_range(self.domid, handle, offset, data.len(), true)?;
        self.mem
            .write(a, data)
            .then_some(())
            .ok_or(GNTST_GENERAL_ERROR)
    }
    fn copy(&mut self, segs: &mut [CopySeg<'_>]) {
        for s in segs.iter_mut() {
            s.status = match self.check_dom(s.dom) {
                Err(e) => e,
                Ok(()) => match &mut s.data {
                    CopyData::FromGrant(b) => self.table.copy_local(
                        self.mem,
                        self.domid,
                        s.gref,
                        s.offset,
                        b,
                        false,
                        self.writable,
                    ),
                    CopyData::ToGrant(b) => {
                        let mut v = b.to_vec();
                        self.table.copy_local(
                            self.mem,
                            self.domid,
                            s.gref,
                            s.offset,
                            &mut v,
                            true,
                            self.writable,
                        )
                    }
                },
            };
        }
    }
}

/// The guest's table at the platform's frames.
pub fn guest_table(nr_pages: u64, frames: GrantFrames) -> GrantTable {
    GrantTable::new(GUEST_DOMID, nr_pages, frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NR: u64 = 64;
    const SH: u64 = 100;
    const ST: u64 = 200;
    const DOM0: u16 = 0;
    const G: u16 = GUEST_DOMID;

    fn setup() -> (Vec<u8>, GrantTable) {
        let mem = vec![0u8; 256 * PAGE_SIZE];
        let t = guest_table(
            NR,
            GrantFrames {
                shared_mfn: SH,
                shared_frames: 64,
                status_mfn: ST,
                status_frames: 8,
            },
        );
        (mem, t)
    }
    fn all(_: u64) -> bool {
        true
    }
    fn v1(mem: &mut Vec<u8>, gref: u32, flags: u16, domid: u16, frame: u32) {
        let e = GrantEntryV1 {
            flags,
            domid,
            frame,
        };
        mem.write((SH << 12) + gref as u64 * 8, &e.to_bytes());
    }
    fn v1_flags(mem: &Vec<u8>, gref: u32) -> u16 {
        GrantTable::read16(mem, (SH << 12) + gref as u64 * 8)
    }
    fn v2(mem: &mut Vec<u8>, gref: u32, flags: u16, domid: u16, frame: u64) {
        let e = GrantEntryV2FullPage {
            hdr: GrantEntryHeader { flags, domid },
            pad0: 0,
            frame,
        };
        mem.write(
            (SH << 12) + gref as u64 * 16,
            &GrantEntryV2::from_full_page(&e).0,
        );
    }
    fn v2_sub(mem: &mut Vec<u8>, gref: u32, domid: u16, frame: u64, off: u16, len: u16) {
        let a = (SH << 12) + gref as u64 * 16;
        mem.write(a, &(GTF_PERMIT_ACCESS | GTF_SUB_PAGE).to_le_bytes());
        mem.write(a + 2, &domid.to_le_bytes());
        mem.write(a + 4, &off.to_le_bytes());
        mem.write(a + 6, &len.to_le_bytes());
        mem.write_u64(a + 8, frame);
    }
    fn status(mem: &Vec<u8>, gref: u32) -> u16 {
        GrantTable::read16(mem, (ST << 12) + gref as u64 * 2)
    }
    fn backend<'a>(t: &'a mut GrantTable, mem: &'a mut Vec<u8>) -> Backend<'a> {
        Backend {
            table: t,
            mem,
            domid: DOM0,
            writable: &all,
        }
    }

    #[test]
    fn new_table_is_v1_with_one_frame() {
        let (_, t) = setup();
        assert_eq!(
            (t.version(), t.nr_frames(), t.max_frames(), t.nr_entries()),
            (1, 1, 64, 512)
        );
        assert_eq!(t.query_size(), (1, 64));
        assert_eq!(t.table_frame(SH), Some(TableFrame::Shared(0)));
        assert_eq!(t.table_frame(SH + 1), None);
        assert_eq!(t.table_frame(ST), None);
    }

    #[test]
    fn setup_grows_never_shrinks_and_limits() {
        let (mut mem, mut t) = setup();
        assert_eq!(
            t.setup(&mut mem, 4).unwrap(),
            vec![SH, SH + 1, SH + 2, SH + 3]
        );
        assert_eq!(t.nr_frames(), 4);
        assert_eq!(t.setup(&mut mem, 2).unwrap(), vec![SH, SH + 1]);
        assert_eq!(t.nr_frames(), 4);
        assert_eq!(t.setup(&mut mem, 0).unwrap(), vec![]);
        assert_eq!(t.setup(&mut mem, 65), Err(GNTST_GENERAL_ERROR));
        assert_eq!(t.setup(&mut mem, 64).unwrap().len(), 64);
        assert_eq!(t.query_size(), (64, 64));
        assert_eq!(t.table_frame(SH + 63), Some(TableFrame::Shared(63)));
    }

    #[test]
    fn v1_map_sets_flags_and_unmap_clears_them() {
        let (mut mem, mut t) = setup();
        v1(&mut mem, 10, GTF_PERMIT_ACCESS, DOM0, 5);
        let mut b = backend(&mut t, &mut mem);
        let h = b.map(G, 10, GNTMAP_HOST_MAP).unwrap();
        b.write(h, 100, b"hello").unwrap();
        let mut r = [0u8; 5];
        b.read(h, 100, &mut r).unwrap();
        assert_eq!(&r, b"hello");
        assert_eq!(&mem[5 * PAGE_SIZE + 100..5 * PAGE_SIZE + 105], b"hello");
        assert_eq!(
            v1_flags(&mem, 10),
            GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING
        );
        assert_eq!(t.active(10).unwrap().pin, PIN_HSTW);
        let mut b = backend(&mut t, &mut mem);
        // A second, read-only mapping: two pins, one handle each.
        let h2 = b.map(G, 10, GNTMAP_HOST_MAP | GNTMAP_READONLY).unwrap();
        assert_ne!(h, h2);
        assert_eq!(b.write(h2, 0, b"x"), Err(GNTST_PERMISSION_DENIED));
        b.unmap(h).unwrap();
        assert_eq!(b.unmap(h), Err(GNTST_BAD_HANDLE));
        assert_eq!(v1_flags(&mem, 10), GTF_PERMIT_ACCESS | GTF_READING);
        let mut b = backend(&mut t, &mut mem);
        b.unmap(h2).unwrap();
        assert_eq!(v1_flags(&mem, 10), GTF_PERMIT_ACCESS);
        assert_eq!(t.active(10), None);
    }

    #[test]
    fn map_errors() {
        let (mut mem, mut t) = setup();
        v1(&mut mem, 1, GTF_PERMIT_ACCESS, 7, 5); // granted to another domain
        v1(&mut mem, 2, GTF_ACCEPT_TRANSFER, DOM0, 5); // not an access grant
        v1(&mut mem, 3, GTF_PERMIT_ACCESS | GTF_READONLY, DOM0, 5);
        v1(&mut mem, 4, GTF_PERMIT_ACCESS, DOM0, NR as u32); // not the domain's frame
        v1(&mut mem, 5, GTF_INVALID, DOM0, 5);
        let mut b = backend(&mut t, &mut mem);
        assert_eq!(b.map(G, 1, GNTMAP_HOST_MAP), Err(GNTST_GENERAL_ERROR));
        assert_eq!(b.map(G, 2, GNTMAP_HOST_MAP), Err(GNTST_GENERAL_ERROR));
        assert_eq!(b.map(G, 3, GNTMAP_HOST_MAP), Err(GNTST_GENERAL_ERROR));
        assert_eq!(b.map(G, 4, GNTMAP_HOST_MAP), Err(GNTST_BAD_PAGE));
        assert_eq!(b.map(G, 5, GNTMAP_HOST_MAP), Err(GNTST_GENERAL_ERROR));
        assert_eq!(b.map(G, 512, GNTMAP_HOST_MAP), Err(GNTST_BAD_GNTREF));
        assert_eq!(b.map(G, 1, 0), Err(GNTST_BAD_GNTREF));
        assert_eq!(b.map(3, 1, GNTMAP_HOST_MAP), Err(GNTST_BAD_DOMAIN));
        assert_eq!(
            b.map(G, 3, GNTMAP_HOST_MAP | GNTMAP_CONTAINS_PTE),
            Err(GNTST_GENERAL_ERROR)
        );
        // Read-only request of a read-only grant works.
        let h = b.map(G, 3, GNTMAP_HOST_MAP | GNTMAP_READONLY).unwrap();
        assert_eq!(
            v1_flags(&mem, 3),
            GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING
        );
        // Failed maps left no flags behind.
        assert_eq!(v1_flags(&mem, 4), GTF_PERMIT_ACCESS);
        // Pinned for domain 0: the guest itself cannot map it, even though the entry is
        // checked only on the first pin.
        assert_eq!(
            t.map(&mut mem, G, 3, GNTMAP_HOST_MAP | GNTMAP_READONLY, &all),
            Err(GNTST_GENERAL_ERROR)
        );
        let mut b2 = backend(&mut t, &mut mem);
        b2.unmap(h).unwrap();
    }

    #[test]
    fn writable_map_of_a_page_table_fails_and_undoes() {
        let (mut mem, mut t) = setup();
        v1(&mut mem, 9, GTF_PERMIT_ACCESS, DOM0, 6);
        let not6 = |f: u64| f != 6;
        let mut b = Backend {
            table: &mut t,
            mem: &mut mem,
            domid: DOM0,
            writable: &not6,
        };
        assert_eq!(b.map(G, 9, GNTMAP_HOST_MAP), Err(GNTST_GENERAL_ERROR));
        let h = b.map(G, 9, GNTMAP_HOST_MAP | GNTMAP_READONLY).unwrap();
        assert_eq!(v1_flags(&mem, 9), GTF_PERMIT_ACCESS | GTF_READING);
        assert_eq!(t.active(9).unwrap().pin, PIN_HSTR);
        let mut b = backend(&mut t, &mut mem);
        b.unmap(h).unwrap();
    }

    #[test]
    fn device_and_host_pins_and_partial_unmap() {
        let (mut mem, mut t) = setup();
        v1(&mut mem, 8, GTF_PERMIT_ACCESS, DOM0, 7);
        let (h, f) = t
            .map(&mut mem, DOM0, 8, GNTMAP_HOST_MAP | GNTMAP_DEVICE_MAP, &all)
            .unwrap();
        assert_eq!(f, 7);
        assert_eq!(t.active(8).unwrap().pin, PIN_HSTW | PIN_DEVW);
        assert_eq!(
            t.unmap(&mut mem, DOM0, h, false, 0x1000),
            Err(GNTST_GENERAL_ERROR)
        );
        t.unmap(&mut mem, DOM0, h, true, 0).unwrap();
        assert_eq!(t.active(8).unwrap().pin, PIN_DEVW);
        assert_eq!(t.mapping(DOM0, h).unwrap().flags, GNTMAP_DEVICE_MAP);
        t.unmap(&mut mem, DOM0, h, false, 7 << 12).unwrap();
        assert_eq!(t.mapping(DOM0, h), Err(GNTST_BAD_HANDLE));
        assert_eq!(v1_flags(&mem, 8), GTF_PERMIT_ACCESS);
    }

    #[test]
    fn batch_map_and_handles_are_reused() {
        let (mut mem, mut t) = setup();
        for g in 10..14 {
            v1(&mut mem, g, GTF_PERMIT_ACCESS, DOM0, g);
        }
        let mut b = backend(&mut t, &mut mem);
        let r = b.map_batch(G, &[10, 11, 12, 13, 600], GNTMAP_HOST_MAP);
        assert_eq!(r[4], Err(GNTST_BAD_GNTREF));
        let hs: Vec<u32> = r[..4].iter().map(|x| x.unwrap()).collect();
        assert_eq!(hs, vec![0, 1, 2, 3]);
        b.unmap(1).unwrap();
        assert_eq!(b.map(G, 11, GNTMAP_HOST_MAP), Ok(1));
        assert_eq!(b.write(2, 4090, b"123456"), Ok(()));
        assert_eq!(b.write(2, 4091, b"123456"), Err(GNTST_BAD_COPY_ARG));
        assert_eq!(b.read(3, 4096, &mut []), Ok(()));
        assert_eq!(b.read(3, 4097, &mut []), Err(GNTST_BAD_COPY_ARG));
        assert_eq!(b.read(99, 0, &mut [0]), Err(GNTST_BAD_HANDLE));
    }

    #[test]
    fn v2_map_uses_status_frames() {
        let (mut mem, mut t) = setup();
        assert_eq!(t.set_version(&mut mem, 2), (2, Ok(())));
        assert_eq!(t.nr_status_frames(), 1);
        assert_eq!(t.nr_entries(), 256);
        assert_eq!(t.status_frames(1).unwrap(), vec![ST]);
        assert_eq!(t.status_frames(2), Err(GNTST_GENERAL_ERROR));
        assert_eq!(t.table_frame(ST), Some(TableFrame::Status(0)));
        v2(&mut mem, 20, GTF_PERMIT_ACCESS, DOM0, 9);
        v2(&mut mem, 21, GTF_PERMIT_ACCESS | GTF_READONLY, DOM0, 9);
        v2_sub(&mut mem, 22, DOM0, 9, 16, 32);
        v2(&mut mem, 23, GTF_TRANSITIVE, DOM0, 0);
        let mut b = backend(&mut t, &mut mem);
        let h = b.map(G, 20, GNTMAP_HOST_MAP).unwrap();
        assert_eq!(b.map(G, 21, GNTMAP_HOST_MAP), Err(GNTST_GENERAL_ERROR));
        assert_eq!(
            b.map(G, 22, GNTMAP_HOST_MAP),
            Err(GNTST_GENERAL_ERROR),
            "sub-page grants cannot be mapped"
        );
        assert_eq!(
            b.map(G, 23, GNTMAP_HOST_MAP),
            Err(GNTST_GENERAL_ERROR),
            "transitive grants cannot be mapped"
        );
        assert_eq!(status(&mem, 20), GTF_READING | GTF_WRITING);
        // The shared entry's flags are not touched in v2.
        assert_eq!(
            GrantTable::read16(&mem, (SH << 12) + 20 * 16),
            GTF_PERMIT_ACCESS
        );
        assert_eq!(status(&mem, 21), 0);
        let mut b = backend(&mut t, &mut mem);
        b.unmap(h).unwrap();
        assert_eq!(status(&mem, 20), 0);
        // Growing a v2 table grows its status frames.
        t.setup(&mut mem, 9).unwrap();
        assert_eq!(t.nr_status_frames(), 2);
        t.setup(&mut mem, 64).unwrap();
        assert_eq!(t.nr_status_frames(), 8);
    }

    #[test]
    fn set_version_busy_converts_reserved_and_clears_others() {
        let (mut mem, mut t) = setup();
        assert_eq!(t.set_version(&mut mem, 3), (1, Err(EINVAL)));
        assert_eq!(t.set_version(&mut mem, 1), (1, Ok(())));
        v1(
            &mut mem,
            GNTTAB_RESERVED_CONSOLE,
            GTF_PERMIT_ACCESS,
            DOM0,
            33,
        );
        v1(&mut mem, 8, GTF_PERMIT_ACCESS, DOM0, 34);
        let (h, _) = t.map(&mut mem, DOM0, 8, GNTMAP_HOST_MAP, &all).unwrap();
        assert_eq!(t.set_version(&mut mem, 2), (1, Err(EBUSY)));
        t.unmap(&mut mem, DOM0, h, true, 0).unwrap();
        // A pinned reserved entry does not block, and keeps its flags across the switch.
        let (h0, _) = t
            .map(&mut mem, DOM0, 0, GNTMAP_HOST_MAP | GNTMAP_READONLY, &all)
            .unwrap();
        assert_eq!(t.set_version(&mut mem, 2), (2, Ok(())));
        let e = t.read_v2(&mem, 0).full_page();
        assert_eq!(
            (e.hdr.flags, e.hdr.domid, e.frame),
            (GTF_PERMIT_ACCESS, DOM0, 33)
        );
        assert_eq!(status(&mem, 0), GTF_READING);
        assert_eq!(
            t.read_v2(&mem, 8),
            GrantEntryV2::default(),
            "non-reserved entries are cleared"
        );
        t.unmap(&mut mem, DOM0, h0, true, 0).unwrap();
        assert_eq!(status(&mem, 0), 0);
        // Back to v1: a frame above 4G or a transitive reserved entry cannot be represented.
        v2(&mut mem, 1, GTF_PERMIT_ACCESS, DOM0, 1 << 32);
        assert_eq!(t.set_version(&mut mem, 1), (2, Err(ERANGE)));
        v2(&mut mem, 1, GTF_TRANSITIVE, DOM0, 0);
        assert_eq!(t.set_version(&mut mem, 1), (2, Err(ERANGE)));
        v2(&mut mem, 1, GTF_PERMIT_ACCESS | GTF_READONLY, 5, 44);
        mem.write((ST << 12) + 2, &GTF_READING.to_le_bytes());
        assert_eq!(t.set_version(&mut mem, 1), (1, Ok(())));
        assert_eq!(t.nr_status_frames(), 0);
        assert_eq!(t.table_frame(ST), None);
        let mut b = [0u8; 8];
        mem.read(SH << 12, &mut b);
        assert_eq!(
            GrantEntryV1::from_bytes(&b),
            GrantEntryV1 {
                flags: GTF_PERMIT_ACCESS,
                domid: DOM0,
                frame: 33
            }
        );
        mem.read((SH << 12) + 8, &mut b);
        assert_eq!(
            GrantEntryV1::from_bytes(&b),
            GrantEntryV1 {
                flags: GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING,
                domid: 5,
                frame: 44
            }
        );
    }

    #[test]
    fn copy_between_grants_and_frames() {
        let (mut mem, mut t) = setup();
        mem.write(3 << 12, b"source data");
        v1(&mut mem, 30, GTF_PERMIT_ACCESS, G, 3);
        v1(&mut mem, 31, GTF_PERMIT_ACCESS, G, 4);
        v1(&mut mem, 32, GTF_PERMIT_ACCESS | GTF_READONLY, G, 4);
        let ptr = |u: u64, domid: u16, offset: u16| GnttabCopyPtr { u, domid, offset };
        let mut op = GnttabCopy {
            source: ptr(30, DOMID_SELF, 0),
            dest: ptr(31, G, 8),
            len: 11,
            flags: GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF,
            status: 0,
        };
        assert_eq!(t.copy(&mut mem, G, &op, &all), GNTST_OKAY);
        assert_eq!(&mem[(4 << 12) + 8..(4 << 12) + 19], b"source data");
        // Pins and flags are gone after the copy.
        assert_eq!((t.active(30), t.active(31)), (None, None));
        assert_eq!(
            (v1_flags(&mem, 30), v1_flags(&mem, 31)),
            (GTF_PERMIT_ACCESS, GTF_PERMIT_ACCESS)
        );
        // gmfn to gmfn (DOMID_SELF only).
        op = GnttabCopy {
            source: ptr(3, DOMID_SELF, 0),
            dest: ptr(5, DOMID_SELF, 4090),
            len: 6,
            flags: 0,
            status: 0,
        };
        assert_eq!(t.copy(&mut mem, G, &op, &all), GNTST_OKAY);
        assert_eq!(&mem[(5 << 12) + 4090..(5 << 12) + 4096], b"source");
        op.len = 7;
        assert_eq!(t.copy(&mut mem, G, &op, &all), GNTST_BAD_COPY_ARG);
        op.dest.domid = G;
        assert_eq!(t.copy(&mut mem, G, &op, &all), GNTST_PERMISSION_DENIED);
        op.dest = ptr(NR, DOMID_SELF, 0);
        op.len = 1;
        assert_eq!(t.copy(&mut mem, G, &op, &all), GNTST_BAD_PAGE);
        op.dest = ptr(5, DOMID_SELF, 0);
        assert_eq!(
            t.copy(&mut mem, G, &op, &|f| f != 5),
            GNTST_GENERAL_ERROR,
            "destination is a page table"
        );
        // Read-only grant as destination; bad refs; other domains.
        op = GnttabCopy {
            source: ptr(3, DOMID_SELF, 0),
            dest: ptr(32, G, 0),
            len: 1,
            flags: GNTCOPY_DEST_GREF,
            status: 0,
        };
        assert_eq!(t.copy(&mut mem, G, &op, &all), GNTST_GENERAL_ERROR);
        op.dest = ptr(32, G, 0);
        op.flags = GNTCOPY_SOURCE_GREF;
        op.source = ptr(32, G, 0);
        op.dest = ptr(5, DOMID_SELF, 0);
        assert_eq!(
            t.copy(&mut mem, G, &op, &all),
            GNTST_OKAY,
            "read-only grant as source"
        );
        op.source = ptr(512, G, 0);
        assert_eq!(t.copy(&mut mem, G, &op, &all), GNTST_BAD_GNTREF);
        op.source = ptr(30, 0, 0);
        assert_eq!(t.copy(&mut mem, G, &op, &all), GNTST_BAD_DOMAIN);
        op.source = ptr(30, 9, 0);
        assert_eq!(t.copy(&mut mem, G, &op, &all), GNTST_BAD_DOMAIN);
        // Entry granted to us, not to domain 0.
        op.source = ptr(30, G, 0);
        assert_eq!(
            t.copy(&mut mem, DOM0, &op, &all),
            GNTST_BAD_DOMAIN,
            "domain 0 has no frames here"
        );
        assert!(t.active.is_empty());
    }

    #[test]
    fn copy_respects_v2_sub_page_bounds_and_transitive() {
        let (mut mem, mut t) = setup();
        t.set_version(&mut mem, 2).1.unwrap();
        mem.write((6 << 12) + 100, b"abcdefgh");
        v2_sub(&mut mem, 40, DOM0, 6, 100, 8);
        v2(&mut mem, 41, GTF_TRANSITIVE, DOM0, 0);
        let mut out = [0u8; 8];
        let mut b = backend(&mut t, &mut mem);
        let mut segs = [CopySeg {
            dom: G,
            gref: 40,
            offset: 100,
            data: CopyData::FromGrant(&mut out),
            status: 1,
        }];
        b.copy(&mut segs);
        assert_eq!(segs[0].status, GNTST_OKAY);
        assert_eq!(&out, b"abcdefgh");
        let mut seven = [0u8; 7];
        let mut segs = [
            CopySeg {
                dom: G,
                gref: 40,
                offset: 99,
                data: CopyData::FromGrant(&mut seven),
                status: 1,
            },
            CopySeg {
                dom: G,
                gref: 40,
                offset: 102,
                data: CopyData::ToGrant(b"0123456"),
                status: 1,
            },
            CopySeg {
                dom: G,
                gref: 40,
                offset: 101,
                data: CopyData::ToGrant(b"XY"),
                status: 1,
            },
            CopySeg {
                dom: G,
                gref: 41,
                offset: 0,
                data: CopyData::ToGrant(b"X"),
                status: 1,
            },
            CopySeg {
                dom: 5,
                gref: 40,
                offset: 0,
                data: CopyData::ToGrant(b"X"),
                status: 1,
            },
            CopySeg {
                dom: G,
                gref: 40,
                offset: 4095,
                data: CopyData::ToGrant(b"XY"),
                status: 1,
            },
        ];
        b.copy(&mut segs);
        let st: Vec<i16> = segs.iter().map(|s| s.status).collect();
        assert_eq!(
            st,
            vec![
                GNTST_GENERAL_ERROR,
                GNTST_GENERAL_ERROR,
                GNTST_OKAY,
                GNTST_GENERAL_ERROR,
                GNTST_BAD_DOMAIN,
                GNTST_BAD_COPY_ARG
            ]
        );
        assert_eq!(&mem[(6 << 12) + 100..(6 << 12) + 108], b"aXYdefgh");
        assert_eq!((status(&mem, 40), status(&mem, 41)), (0, 0));
        assert!(t.active.is_empty());
    }

    #[test]
    fn copy_while_mapped_shares_the_pin() {
        let (mut mem, mut t) = setup();
        v1(&mut mem, 50, GTF_PERMIT_ACCESS, DOM0, 7);
        let mut b = backend(&mut t, &mut mem);
        let h = b.map(G, 50, GNTMAP_HOST_MAP | GNTMAP_READONLY).unwrap();
        let mut segs = [CopySeg {
            dom: G,
            gref: 50,
            offset: 0,
            data: CopyData::ToGrant(b"w"),
            status: 1,
        }];
        b.copy(&mut segs);
        assert_eq!(segs[0].status, GNTST_OKAY);
        // The write pin of the copy is gone, the read pin of the mapping stays.
        assert_eq!(v1_flags(&mem, 50), GTF_PERMIT_ACCESS | GTF_READING);
        assert_eq!(t.active(50).unwrap().pin, PIN_HSTR);
        // The guest cannot copy with an entry pinned for domain 0.
        let op = GnttabCopy {
            source: GnttabCopyPtr {
                u: 50,
                domid: G,
                offset: 0,
            },
            dest: GnttabCopyPtr {
                u: 1,
                domid: DOMID_SELF,
                offset: 0,
            },
            len: 1,
            flags: GNTCOPY_SOURCE_GREF,
            status: 0,
        };
        assert_eq!(t.copy(&mut mem, G, &op, &all), GNTST_GENERAL_ERROR);
        let mut b = backend(&mut t, &mut mem);
        b.unmap(h).unwrap();
    }

    #[test]
    fn swap_entries() {
        let (mut mem, mut t) = setup();
        v1(&mut mem, 60, GTF_PERMIT_ACCESS, DOM0, 1);
        v1(&mut mem, 61, GTF_PERMIT_ACCESS | GTF_READONLY, 3, 2);
        assert_eq!(t.swap(&mut mem, 60, 61), GNTST_OKAY);
        assert_eq!(v1_flags(&mem, 60), GTF_PERMIT_ACCESS | GTF_READONLY);
        assert_eq!(t.swap(&mut mem, 60, 60), GNTST_OKAY);
        assert_eq!(t.swap(&mut mem, 60, 512), GNTST_BAD_GNTREF);
        let (h, _) = t.map(&mut mem, DOM0, 61, GNTMAP_HOST_MAP, &all).unwrap();
        assert_eq!(t.swap(&mut mem, 60, 61), GNTST_EAGAIN);
        t.unmap(&mut mem, DOM0, h, true, 0).unwrap();
        t.set_version(&mut mem, 2).1.unwrap();
        v2(&mut mem, 70, GTF_PERMIT_ACCESS, DOM0, 1);
        mem.write((ST << 12) + 70 * 2, &GTF_READING.to_le_bytes());
        assert_eq!(t.swap(&mut mem, 70, 71), GNTST_OKAY);
        assert_eq!((status(&mem, 70), status(&mem, 71)), (0, GTF_READING));
        assert_eq!(t.read_v2(&mem, 71).full_page().frame, 1);
    }

    #[test]
    fn seed_writes_reserved_v1_entries() {
        let (mut mem, mut t) = setup();
        assert!(t.seed(&mut mem, GNTTAB_RESERVED_XENSTORE, 0, 0x22));
        assert!(!t.seed(&mut mem, 8, 0, 0x22));
        let mut b = [0u8; 8];
        mem.read((SH << 12) + 8, &mut b);
        assert_eq!(
            GrantEntryV1::from_bytes(&b),
            GrantEntryV1 {
                flags: GTF_PERMIT_ACCESS,
                domid: 0,
                frame: 0x22
            }
        );
    }

    #[test]
    fn guest_maps_its_own_grant() {
        let (mut mem, mut t) = setup();
        v1(&mut mem, 12, GTF_PERMIT_ACCESS, G, 2);
        let (h, f) = t.map(&mut mem, G, 12, GNTMAP_HOST_MAP, &all).unwrap();
        assert_eq!((h, f), (0, 2));
        // Domain 0's handles are separate.
        assert_eq!(t.mapping(DOM0, 0), Err(GNTST_BAD_HANDLE));
        assert!(t.frame_mapped_by(G, 2));
        t.unmap(&mut mem, G, h, true, 0).unwrap();
        assert!(!t.frame_mapped_by(G, 2));
    }
}
