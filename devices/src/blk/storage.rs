//! Disk images behind a virtual block device.
//!
//! [`Storage`] is a byte-addressed disk: every access is bounds-checked against `len()` and
//! fails with an `io::Error` (never a panic) when it reaches past the end. Three back ends:
//!
//! - [`RawFile`]: a raw image file, read-only or read-write. Discard writes zeros (portable,
//!   no hole punching), so a discarded range reads back as zeros.
//! - [`CowOverlay`]: a base image opened read-only (never modified) plus an overlay file
//!   holding the 4 KiB blocks written since. Format below; reopening an overlay sees the
//!   earlier writes.
//! - [`MemStorage`]: a byte vector, for tests.
//!
//! # Overlay format (all integers little-endian)
//!
//! ```text
//! 0      header, one 4 KiB block:
//!          0  magic        b"XNLCOW01"
//!          8  version      u32 = 1
//!         12  block_size   u32 = 4096
//!         16  size         u64  virtual disk size in bytes (= the base's length)
//!         24  nr_blocks    u64  ceil(size / 4096)
//!         32  map_offset   u64 = 4096
//!         40  data_offset  u64  map_offset + nr_blocks * 8, rounded up to 4096
//! 4096   block map: nr_blocks u64 entries, one per virtual block:
//!          0      not in the overlay: read the base
//!          1      discarded: reads as zeros
//!          n >= 2 the data is slot n - 2, at data_offset + (n - 2) * 4096
//! data   data slots, 4096 bytes each, appended as blocks are first written
//! ```
//!
//! A first write to a block copies it up (base contents patched with the write) into a new
//! slot, then records the slot in the map (data before map, so a torn write loses only
//! the new block). Discarding a whole block sets its entry to 1 (its slot, if any, is not
//! reused); a partial block discard writes zeros. The map is kept in memory as well.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A virtual disk's contents.
pub trait Storage {
    /// Size in bytes.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Writes, flushes-with-data and discards fail on a read-only storage.
    fn read_only(&self) -> bool;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Make completed writes durable.
    fn flush(&mut self) -> io::Result<()>;
    /// The range's contents are no longer needed (afterwards it reads as zeros here).
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()>;
}

fn check_range(size: u64, offset: u64, len: u64) -> io::Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "access beyond the end of the disk",
        )),
    }
}

fn check_writable(ro: bool) -> io::Result<()> {
    if ro {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "read-only disk",
        ))
    } else {
        Ok(())
    }
}

/// Zero `len` bytes at `offset` through `write`, in bounded chunks.
fn write_zeros(
    offset: u64,
    len: u64,
    mut write: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    const CHUNK: u64 = 64 * 1024;
    let zeros = vec![0u8; CHUNK.min(len) as usize];
    let mut done = 0;
    while done < len {
        let n = CHUNK.min(len - done);
        write(offset + done, &zeros[..n as usize])?;
        done += n;
    }
    Ok(())
}

/// A raw image file.
pub struct RawFile {
    file: File,
    len: u64,
    ro: bool,
}

impl RawFile {
    pub fn open(path: impl AsRef<Path>, read_only: bool) -> io::Result<RawFile> {
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        let len = file.metadata()?.len();
        Ok(RawFile {
            file,
            len,
            ro: read_only,
        })
    }
}

impl Storage for RawFile {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_only(&self) -> bool {
        self.ro
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(self.len, offset, buf.len() as u64)?;
        self.file.read_exact_at(buf, offset)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_writable(self.ro)?;
        check_range(self.len, offset, data.len() as u64)?;
        self.file.write_all_at(data, offset)
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.ro {
            return Ok(());
        }
        self.file.sync_data()
    }
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        check_writable(self.ro)?;
        check_range(self.len, offset, len)?;
        let file = &self.file;
        write_zeros(offset, len, |o, z| file.write_all_at(z, o))
    }
}

/// An in-memory disk.
pub struct MemStorage {
    pub data: Vec<u8>,
    pub ro: bool,
    /// Flushes seen (for tests).
    pub flushes: u64,
}

impl MemStorage {
    pub fn new(data: Vec<u8>, read_only: bool) -> MemStorage {
        MemStorage {
            data,
            ro: read_only,
            flushes: 0,
        }
    }
}

impl Storage for MemStorage {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_only(&self) -> bool {
        self.ro
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(self.len(), offset, buf.len() as u64)?;
        let o = offset as usize;
        buf.copy_from_slice(&self.data[o..o + buf.len()]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_writable(self.ro)?;
        check_range(self.len(), offset, data.len() as u64)?;
        let o = offset as usize;
        self.data[o..o + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.flushes += 1;
        Ok(())
    }
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        check_writable(self.ro)?;
        check_range(self.len(), offset, len)?;
        let o = offset as usize;
        self.data[o..o + len as usize].fill(0);
        Ok(())
    }
}

const COW_MAGIC: &[u8; 8] = b"XNLCOW01";
const COW_VERSION: u32 = 1;
const BLOCK: u64 = 4096;
const MAP_OFFSET: u64 = 4096;
const ENTRY_BASE: u64 = 0;
const ENTRY_ZERO: u64 = 1;
const ENTRY_SLOT0: u64 = 2;

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("overlay: {what}"))
}

/// A read-only base image plus a copy-on-write overlay file (format in the module doc).
pub struct CowOverlay {
    base: File,
    overlay: File,
    size: u64,
    map: Vec<u64>,
    data_offset: u64,
    /// Next free data slot.
    next_slot: u64,
}

impl CowOverlay {
    /// Open `base` read-only and the overlay at `overlay` (created when missing or empty).
    /// An existing overlay must have been made for a base of the same size.
    pub fn open(base: impl AsRef<Path>, overlay: impl AsRef<Path>) -> io::Result<CowOverlay> {
        let base = File::open(base)?;
        let size = base.metadata()?.len();
        let overlay = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(overlay)?;
        let nr_blocks = size.div_ceil(BLOCK);
        let data_offset = (MAP_OFFSET + nr_blocks * 8).div_ceil(BLOCK) * BLOCK;
        let file_len = overlay.metadata()?.len();
        if file_len == 0 {
            let mut h = vec![0u8; BLOCK as usize];
            h[0..8].copy_from_slice(COW_MAGIC);
            h[8..12].copy_from_slice(&COW_VERSION.to_le_bytes());
            h[12..16].copy_from_slice(&(BLOCK as u32).to_le_bytes());
            h[16..24].copy_from_slice(&size.to_le_bytes());
            h[24..32].copy_from_slice(&nr_blocks.to_le_bytes());
            h[32..40].copy_from_slice(&MAP_OFFSET.to_le_bytes());
            h[40..48].copy_from_slice(&data_offset.to_le_bytes());
            overlay.set_len(data_offset)?;
            overlay.write_all_at(&h, 0)?;
            overlay.sync_all()?;
            let map = vec![ENTRY_BASE; nr_blocks as usize];
            return Ok(CowOverlay {
                base,
                overlay,
                size,
                map,
                data_offset,
                next_slot: 0,
            });
        }
        let mut h = [0u8; 48];
        overlay
            .read_exact_at(&mut h, 0)
            .map_err(|_| corrupt("short header"))?;
        let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap_or_default());
        let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap_or_default());
        if &h[0..8] != COW_MAGIC || u32_at(8) != COW_VERSION || u32_at(12) != BLOCK as u32 {
            return Err(corrupt("bad magic, version or block size"));
        }
        if u64_at(16) != size {
            return Err(corrupt("made for a base of another size"));
        }
        if u64_at(24) != nr_blocks || u64_at(32) != MAP_OFFSET || u64_at(40) != data_offset {
            return Err(corrupt("inconsistent header"));
        }
        let mut raw = vec![0u8; nr_blocks as usize * 8];
        overlay
            .read_exact_at(&mut raw, MAP_OFFSET)
            .map_err(|_| corrupt("short block map"))?;
        let map: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        let file_slots = file_len.saturating_sub(data_offset).div_ceil(BLOCK);
        let used = map
            .iter()
            .filter(|&&e| e >= ENTRY_SLOT0)
            .map(|&e| e - ENTRY_SLOT0 + 1)
            .max()
            .unwrap_or(0);
        if used > file_slots {
            return Err(corrupt("block map points past the end of the file"));
        }
        Ok(CowOverlay {
            base,
            overlay,
            size,
            map,
            data_offset,
            next_slot: file_slots,
        })
    }

    fn slot_off(&self, slot: u64) -> u64 {
        self.data_offset + slot * BLOCK
    }

    /// The current contents of virtual block `b` (`len` valid bytes at its start).
    fn read_block(&self, b: u64, buf: &mut [u8]) -> io::Result<()> {
        match self.map[b as usize] {
            ENTRY_BASE => self.base.read_exact_at(buf, b * BLOCK),
            ENTRY_ZERO => {
                buf.fill(0);
                Ok(())
            }
            e => self
                .overlay
                .read_exact_at(buf, self.slot_off(e - ENTRY_SLOT0)),
        }
    }

    fn set_entry(&mut self, b: u64, e: u64) -> io::Result<()> {
        self.overlay
            .write_all_at(&e.to_le_bytes(), MAP_OFFSET + b * 8)?;
        self.map[b as usize] = e;
        Ok(())
    }

    /// Bytes of block `b` that lie inside the disk.
    fn block_len(&self, b: u64) -> u64 {
        BLOCK.min(self.size - b * BLOCK)
    }

    /// Write `data` at byte `within` of block `b` (within + data.len() <= block_len).
    fn write_in_block(&mut self, b: u64, within: u64, data: &[u8]) -> io::Result<()> {
        let e = self.map[b as usize];
        if e >= ENTRY_SLOT0 {
            return self
                .overlay
                .write_all_at(data, self.slot_off(e - ENTRY_SLOT0) + within);
        }
        let blen = self.block_len(b);
        let mut blk = vec![0u8; BLOCK as usize];
        if data.len() as u64 != blen {
            self.read_block(b, &mut blk[..blen as usize])?;
        }
        blk[within as usize..within as usize + data.len()].copy_from_slice(data);
        let slot = self.next_slot;
        self.overlay.write_all_at(&blk, self.slot_off(slot))?;
        self.next_slot += 1;
        self.set_entry(b, ENTRY_SLOT0 + slot)
    }

    /// Split [offset, offset+len) into (block, offset within block, length, offset in range).
    fn pieces(offset: u64, len: u64) -> impl Iterator<Item = (u64, u64, u64, u64)> {
        let mut pos = offset;
        let end = offset + len;
        std::iter::from_fn(move || {
            if pos >= end {
                return None;
            }
            let b = pos / BLOCK;
            let within = pos % BLOCK;
            let n = (BLOCK - within).min(end - pos);
            let item = (b, within, n, pos - offset);
            pos += n;
            Some(item)
        })
    }
}

impl Storage for CowOverlay {
    fn len(&self) -> u64 {
        self.size
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        let mut blk = vec![0u8; BLOCK as usize];
        for (b, within, n, at) in Self::pieces(offset, buf.len() as u64) {
            let blen = self.block_len(b) as usize;
            self.read_block(b, &mut blk[..blen])?;
            buf[at as usize..(at + n) as usize]
                .copy_from_slice(&blk[within as usize..(within + n) as usize]);
        }
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_range(self.size, offset, data.len() as u64)?;
        for (b, within, n, at) in Self::pieces(offset, data.len() as u64) {
            self.write_in_block(b, within, &data[at as usize..(at + n) as usize])?;
        }
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.overlay.sync_data()
    }
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        check_range(self.size, offset, len)?;
        for (b, within, n, _) in Self::pieces(offset, len) {
            if within == 0 && n == self.block_len(b) {
                self.set_entry(b, ENTRY_ZERO)?;
            } else if self.map[b as usize] != ENTRY_ZERO {
                let z = vec![0u8; n as usize];
                self.write_in_block(b, within, &z)?;
            }
        }
        Ok(())
    }
}
