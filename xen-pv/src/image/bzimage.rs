//! Linux bzImage: the x86 boot protocol setup header and its compressed ELF payload, as
//! Xen's `xg_dom_bzimageloader.c` reads them (boot protocol >= 2.08, payload_offset and
//! payload_length from the setup header, the format chosen by the payload's magic number).

use super::decompress::{self, Compression};
use super::elf::Bytes;
use super::error::{ImageError, Result};
use std::mem::{offset_of, size_of};

/// The part of the boot-protocol setup header the loader reads (Documentation/arch/x86/
/// boot.rst), at its file offset 0x1f1. Packed in the file; this struct only provides the
/// offsets (it is `repr(C, packed)` so that they match the file byte for byte).
#[repr(C, packed)]
#[allow(dead_code)]
pub struct SetupHeader {
    pub setup_sects: u8,
    pub root_flags: u16,
    pub syssize: u32,
    pub ram_size: u16,
    pub vid_mode: u16,
    pub root_dev: u16,
    pub boot_flag: u16,
    pub jump: u16,
    pub header: [u8; 4],
    pub version: u16,
    pub realmode_swtch: u32,
    pub start_sys_seg: u16,
    pub kernel_version: u16,
    pub type_of_loader: u8,
    pub loadflags: u8,
    pub setup_move_size: u16,
    pub code32_start: u32,
    pub ramdisk_image: u32,
    pub ramdisk_size: u32,
    pub bootsect_kludge: u32,
    pub heap_end_ptr: u16,
    pub ext_loader_ver: u8,
    pub ext_loader_type: u8,
    pub cmd_line_ptr: u32,
    pub initrd_addr_max: u32,
    pub kernel_alignment: u32,
    pub relocatable_kernel: u8,
    pub min_alignment: u8,
    pub xloadflags: u16,
    pub cmdline_size: u32,
    pub hardware_subarch: u32,
    pub hardware_subarch_data: u64,
    pub payload_offset: u32,
    pub payload_length: u32,
}

/// File offset of the setup header.
pub const SETUP_HEADER_OFFSET: u64 = 0x1f1;
/// "HdrS".
pub const HDR_MAGIC: [u8; 4] = *b"HdrS";
/// Boot protocol 2.08: the first with payload_offset/payload_length.
pub const MIN_PROTOCOL: u16 = 0x0208;

const _: () = {
    // File offsets from boot.rst, minus 0x1f1.
    assert!(offset_of!(SetupHeader, setup_sects) == 0);
    assert!(offset_of!(SetupHeader, root_flags) == 0x1f2 - 0x1f1);
    assert!(offset_of!(SetupHeader, syssize) == 0x1f4 - 0x1f1);
    assert!(offset_of!(SetupHeader, ram_size) == 0x1f8 - 0x1f1);
    assert!(offset_of!(SetupHeader, vid_mode) == 0x1fa - 0x1f1);
    assert!(offset_of!(SetupHeader, root_dev) == 0x1fc - 0x1f1);
    assert!(offset_of!(SetupHeader, boot_flag) == 0x1fe - 0x1f1);
    assert!(offset_of!(SetupHeader, jump) == 0x200 - 0x1f1);
    assert!(offset_of!(SetupHeader, header) == 0x202 - 0x1f1);
    assert!(offset_of!(SetupHeader, version) == 0x206 - 0x1f1);
    assert!(offset_of!(SetupHeader, realmode_swtch) == 0x208 - 0x1f1);
    assert!(offset_of!(SetupHeader, start_sys_seg) == 0x20c - 0x1f1);
    assert!(offset_of!(SetupHeader, kernel_version) == 0x20e - 0x1f1);
    assert!(offset_of!(SetupHeader, type_of_loader) == 0x210 - 0x1f1);
    assert!(offset_of!(SetupHeader, loadflags) == 0x211 - 0x1f1);
    assert!(offset_of!(SetupHeader, setup_move_size) == 0x212 - 0x1f1);
    assert!(offset_of!(SetupHeader, code32_start) == 0x214 - 0x1f1);
    assert!(offset_of!(SetupHeader, ramdisk_image) == 0x218 - 0x1f1);
    assert!(offset_of!(SetupHeader, ramdisk_size) == 0x21c - 0x1f1);
    assert!(offset_of!(SetupHeader, bootsect_kludge) == 0x220 - 0x1f1);
    assert!(offset_of!(SetupHeader, heap_end_ptr) == 0x224 - 0x1f1);
    assert!(offset_of!(SetupHeader, ext_loader_ver) == 0x226 - 0x1f1);
    assert!(offset_of!(SetupHeader, ext_loader_type) == 0x227 - 0x1f1);
    assert!(offset_of!(SetupHeader, cmd_line_ptr) == 0x228 - 0x1f1);
    assert!(offset_of!(SetupHeader, initrd_addr_max) == 0x22c - 0x1f1);
    assert!(offset_of!(SetupHeader, kernel_alignment) == 0x230 - 0x1f1);
    assert!(offset_of!(SetupHeader, relocatable_kernel) == 0x234 - 0x1f1);
    assert!(offset_of!(SetupHeader, min_alignment) == 0x235 - 0x1f1);
    assert!(offset_of!(SetupHeader, xloadflags) == 0x236 - 0x1f1);
    assert!(offset_of!(SetupHeader, cmdline_size) == 0x238 - 0x1f1);
    assert!(offset_of!(SetupHeader, hardware_subarch) == 0x23c - 0x1f1);
    assert!(offset_of!(SetupHeader, hardware_subarch_data) == 0x240 - 0x1f1);
    assert!(offset_of!(SetupHeader, payload_offset) == 0x248 - 0x1f1);
    assert!(offset_of!(SetupHeader, payload_length) == 0x24c - 0x1f1);
    assert!(size_of::<SetupHeader>() == 0x250 - 0x1f1);
};

/// What the setup header says about the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BzImageInfo {
    /// Boot protocol version (major << 8 | minor).
    pub protocol: u16,
    /// File offset of the payload: (setup_sects + 1) * 512 + payload_offset.
    pub payload_offset: u64,
    pub payload_length: u64,
    pub compression: Compression,
}

/// Whether `data` carries the bzImage "HdrS" magic.
pub fn is_bzimage(data: &[u8]) -> bool {
    let at = (SETUP_HEADER_OFFSET as usize) + offset_of!(SetupHeader, header);
    data.get(at..at + 4) == Some(&HDR_MAGIC[..])
}

/// Read the setup header and locate the payload (no decompression).
pub fn probe(data: &[u8]) -> Result<BzImageInfo> {
    let b = Bytes::new(data, "bzImage setup header");
    let base = SETUP_HEADER_OFFSET;
    b.slice(0, base + size_of::<SetupHeader>() as u64)?;
    if b.array::<4>(base + offset_of!(SetupHeader, header) as u64)? != HDR_MAGIC {
        return Err(ImageError::UnknownFormat);
    }
    let protocol = b.u16(base + offset_of!(SetupHeader, version) as u64)?;
    if protocol < MIN_PROTOCOL {
        return Err(ImageError::BootProtocolTooOld(protocol));
    }
    let setup_sects = u64::from(b.u8(base + offset_of!(SetupHeader, setup_sects) as u64)?);
    let payload_offset = (setup_sects + 1) * 512
        + u64::from(b.u32(base + offset_of!(SetupHeader, payload_offset) as u64)?);
    let payload_length = u64::from(b.u32(base + offset_of!(SetupHeader, payload_length) as u64)?);
    if payload_offset >= b.len() {
        return Err(ImageError::BadPayload(
            "payload offset beyond the end of the file",
        ));
    }
    if payload_offset + payload_length > b.len() {
        return Err(ImageError::BadPayload(
            "payload runs past the end of the file",
        ));
    }
    let payload = b.slice(payload_offset, payload_length)?;
    let compression = decompress::detect(payload)?;
    Ok(BzImageInfo {
        protocol,
        payload_offset,
        payload_length,
        compression,
    })
}

/// Locate and decompress the payload of a bzImage: returns the ELF bytes.
pub fn extract(data: &[u8], limit: usize) -> Result<(BzImageInfo, Vec<u8>)> {
    let info = probe(data)?;
    let payload =
        Bytes::new(data, "bzImage payload").slice(info.payload_offset, info.payload_length)?;
    let elf = decompress::decompress(info.compression, payload, limit)?;
    Ok((info, elf))
}
