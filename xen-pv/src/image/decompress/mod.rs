//! Payload decompressors, all pure Rust, each capped at a caller-given output size.
//!
//! Linux appends the uncompressed size as a little-endian u32 to every payload format but
//! gzip (which carries its own); like Xen, the loader strips it, decompresses the rest and
//! insists the output has exactly that size. The formats and their magic numbers, tried in
//! Xen's order:
//!
//! | format | magic | decoder |
//! |---|---|---|
//! | gzip | `1f 8b` | flate2 (miniz_oxide backend) |
//! | bzip2 | `BZh` | bzip2 (libbz2-rs-sys, a Rust port of libbzip2) |
//! | xz | `fd 37 7a 58 5a 00` | lzma-rust2 (LZMA2 with the x86 BCJ filter Linux uses) |
//! | zstd | `28 b5 2f fd` | ruzstd |
//! | lzma | `5d 00` | lzma-rust2 (.lzma "alone" format) |
//! | lzo | `89 4c 5a 4f 00` | `lzo.rs` (lzop container, LZO1X) |
//! | lz4 | `02 21` | lz4_flex blocks in the legacy frame (magic 0x184c2102) |
//! | none | `7f 45 4c 46` | an uncompressed ELF (not accepted by Xen; harmless) |
//!
//! Memory: decoders whose window comes from the header (xz, lzma, zstd) are limited to a
//! 256 MiB dictionary (Xen uses the same limit for xz/lzma); outputs never grow beyond the
//! limit; no buffer is sized from a header value beyond the limit.

pub mod lzo;

use super::error::{ImageError, Result};
use std::io::Read;

/// A payload compression format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Lzma,
    Lzo,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
            Compression::Lzma => "lzma",
            Compression::Lzo => "lzo",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Dictionary/window limit for xz, lzma and zstd.
const WINDOW_LIMIT: u64 = 256 << 20;
/// First allocation for an output buffer (it grows as data arrives).
const INITIAL_CAPACITY: usize = 64 << 20;
/// LZ4 legacy frames hold blocks of at most 8 MiB.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;

/// Identify the payload format from its first bytes (Xen's order).
pub fn detect(payload: &[u8]) -> Result<Compression> {
    let m = |magic: &[u8]| payload.starts_with(magic);
    Ok(if m(b"\x1f\x8b") {
        Compression::Gzip
    } else if m(b"BZh") {
        Compression::Bzip2
    } else if m(b"\xfd7zXZ\x00") {
        Compression::Xz
    } else if m(b"\x28\xb5\x2f\xfd") {
        Compression::Zstd
    } else if m(b"\x5d\x00") {
        Compression::Lzma
    } else if m(b"\x89LZO\x00") {
        Compression::Lzo
    } else if m(b"\x02\x21") {
        Compression::Lz4
    } else if m(b"\x7fELF") {
        Compression::None
    } else {
        let mut head = [0u8; 4];
        for (d, s) in head.iter_mut().zip(payload) {
            *d = *s;
        }
        return Err(ImageError::UnsupportedCompression(head));
    })
}

fn corrupt(c: Compression, detail: impl ToString) -> ImageError {
    ImageError::CorruptPayload {
        format: c.name(),
        detail: detail.to_string(),
    }
}

/// Read all of `r`, failing with TooBig past `limit` bytes.
fn read_capped(
    c: Compression,
    mut r: impl Read,
    limit: usize,
    hint: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    out.reserve(hint.min(limit).min(INITIAL_CAPACITY));
    let room = (limit - out.len().min(limit)) as u64;
    let mut taken = (&mut r).take(room + 1);
    taken.read_to_end(out).map_err(|e| corrupt(c, e))?;
    if out.len() > limit {
        return Err(ImageError::TooBig {
            limit: limit as u64,
        });
    }
    Ok(())
}

/// Decompress a payload of format `c` to at most `limit` bytes.
pub fn decompress(c: Compression, payload: &[u8], limit: usize) -> Result<Vec<u8>> {
    let too_big = ImageError::TooBig {
        limit: limit as u64,
    };
    match c {
        Compression::None => {
            if payload.len() > limit {
                return Err(too_big);
            }
            return Ok(payload.to_vec());
        }
        Compression::Gzip => {
            let mut out = Vec::new();
            // ISIZE (the size mod 2^32) is a hint for the first allocation only.
            let hint = payload
                .len()
                .checked_sub(4)
                .and_then(|i| payload.get(i..))
                .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
                .unwrap_or(0);
            read_capped(
                c,
                flate2::read::GzDecoder::new(payload),
                limit,
                hint,
                &mut out,
            )?;
            return Ok(out);
        }
        _ => {}
    }

    // Everything else: the Linux size trailer.
    if payload.len() < 8 {
        return Err(corrupt(c, "payload too short"));
    }
    let (body, trailer) = payload.split_at(payload.len() - 4);
    let expected = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]) as usize;
    if expected > limit {
        return Err(too_big);
    }
    let mut out = Vec::new();
    match c {
        Compression::Bzip2 => {
            read_capped(
                c,
                bzip2::read::BzDecoder::new(body),
                limit,
                expected,
                &mut out,
            )?;
        }
        Compression::Xz => {
            let r = lzma_rust2::XzReader::new_mem_limit(body, false, (WINDOW_LIMIT >> 10) as u32);
            read_capped(c, r, limit, expected, &mut out)?;
        }
        Compression::Lzma => {
            let r = lzma_rust2::LzmaReader::new_mem_limit(body, (WINDOW_LIMIT >> 10) as u32, None)
                .map_err(|e| corrupt(c, e))?;
            read_capped(c, r, limit, expected, &mut out)?;
        }
        Compression::Zstd => {
            let mut input = body;
            while !input.is_empty() {
                let r = ruzstd::decoding::StreamingDecoder::new_with_max_window_size(
                    &mut input,
                    WINDOW_LIMIT,
                )
                .map_err(|e| corrupt(c, e))?;
                read_capped(c, r, limit, expected, &mut out)?;
            }
        }
        Compression::Lzo => {
            out = lzo::decompress_lzop(body, limit).map_err(|e| {
                if e == "output too large" {
                    too_big.clone()
                } else {
                    corrupt(c, e)
                }
            })?;
        }
        Compression::Lz4 => lz4_legacy(body, limit, expected, &mut out)?,
        Compression::None | Compression::Gzip => {} // returned above
    }
    if out.len() != expected {
        return Err(corrupt(
            c,
            format!(
                "decompressed to {:#x} bytes, the size trailer says {:#x}",
                out.len(),
                expected
            ),
        ));
    }
    Ok(out)
}

/// The LZ4 legacy frame: magic, then (LE u32 compressed size, LZ4 block) pairs; a repeated
/// magic starts a new frame.
fn lz4_legacy(body: &[u8], limit: usize, hint: usize, out: &mut Vec<u8>) -> Result<()> {
    let c = Compression::Lz4;
    let u32_at = |pos: usize| -> Option<u32> {
        let s = body.get(pos..pos.checked_add(4)?)?;
        Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    if u32_at(0) != Some(LZ4_LEGACY_MAGIC) {
        return Err(corrupt(c, "missing legacy frame magic"));
    }
    out.reserve(hint.min(limit).min(INITIAL_CAPACITY));
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK.min(limit)];
    let mut pos = 4;
    while pos < body.len() {
        let size = u32_at(pos).ok_or_else(|| corrupt(c, "truncated block header"))?;
        pos += 4;
        if size == LZ4_LEGACY_MAGIC {
            continue;
        }
        let size = size as usize;
        let src = body
            .get(pos..pos.saturating_add(size))
            .ok_or_else(|| corrupt(c, "block runs past the end"))?;
        let n = lz4_flex::block::decompress_into(src, &mut block).map_err(|e| match e {
            // The block buffer is only smaller than a legacy block when the limit is.
            lz4_flex::block::DecompressError::OutputTooSmall { .. }
                if block.len() < LZ4_LEGACY_BLOCK =>
            {
                ImageError::TooBig {
                    limit: limit as u64,
                }
            }
            e => corrupt(c, e),
        })?;
        if out.len() + n > limit {
            return Err(ImageError::TooBig {
                limit: limit as u64,
            });
        }
        out.extend_from_slice(&block[..n]);
        pos += size;
    }
    Ok(())
}
