//! LZO1X decompression and the lzop container Linux wraps it in.
//!
//! Written from the format description in Linux's `Documentation/staging/lzo.rst` and lzop's
//! file format (no crates.io LZO decoder is both pure Rust and permissively licensed). Every
//! input read and every back-reference is bounds-checked; the output never grows beyond the
//! length the caller allows.

/// Why an LZO stream was refused.
pub type LzoError = &'static str;

/// Decompress one raw LZO1X block into `out`, appending at most `max` bytes.
/// Returns an error if the stream is malformed, needs more than `max` bytes, or does not end
/// exactly at the end of `input` with the end-of-stream marker.
pub fn decompress_block(input: &[u8], out: &mut Vec<u8>, max: usize) -> Result<(), LzoError> {
    let start = out.len();
    let limit = start.checked_add(max).ok_or("output size overflow")?;
    let mut d = Decoder {
        input,
        ip: 0,
        out,
        start,
        limit,
    };
    d.run()
}

struct Decoder<'i, 'o> {
    input: &'i [u8],
    ip: usize,
    out: &'o mut Vec<u8>,
    /// Back-references may not reach before this output position.
    start: usize,
    limit: usize,
}

impl Decoder<'_, '_> {
    fn byte(&mut self) -> Result<usize, LzoError> {
        let b = *self.input.get(self.ip).ok_or("input overrun")?;
        self.ip += 1;
        Ok(usize::from(b))
    }

    fn le16(&mut self) -> Result<usize, LzoError> {
        let lo = self.byte()?;
        let hi = self.byte()?;
        Ok(lo | hi << 8)
    }

    /// A length whose 0 encoding means "base + 255 per zero byte + the next non-zero byte".
    fn ext_len(&mut self, base: usize) -> Result<usize, LzoError> {
        let mut n = base;
        loop {
            let b = self.byte()?;
            if b != 0 {
                return n.checked_add(b).ok_or("length overflow");
            }
            n = n.checked_add(255).ok_or("length overflow")?;
        }
    }

    fn literals(&mut self, n: usize) -> Result<(), LzoError> {
        let end = self.ip.checked_add(n).ok_or("input overrun")?;
        let src = self.input.get(self.ip..end).ok_or("input overrun")?;
        if self.out.len().checked_add(n).is_none_or(|e| e > self.limit) {
            return Err("output overrun");
        }
        self.out.extend_from_slice(src);
        self.ip = end;
        Ok(())
    }

    fn copy_match(&mut self, dist: usize, len: usize) -> Result<(), LzoError> {
        if dist == 0 || dist > self.out.len() - self.start {
            return Err("look-behind overrun");
        }
        if self
            .out
            .len()
            .checked_add(len)
            .is_none_or(|e| e > self.limit)
        {
            return Err("output overrun");
        }
        let from = self.out.len() - dist;
        if dist >= len {
            self.out.extend_from_within(from..from + len);
        } else {
            // Overlapping copy: byte by byte repeats the pattern.
            for i in 0..len {
                let b = self.out[from + i];
                self.out.push(b);
            }
        }
        Ok(())
    }

    fn run(&mut self) -> Result<(), LzoError> {
        // State: how many literals the previous instruction copied (4 = four or more).
        let mut state: usize = 0;
        // The first byte may encode a literal run directly.
        if let Some(&first) = self.input.first() {
            if first > 17 {
                self.ip = 1;
                let n = usize::from(first) - 17;
                self.literals(n)?;
                state = n.min(4);
            }
        }
        loop {
            let inst = self.byte()?;
            let (len, dist, trailing);
            if inst < 16 {
                match state {
                    0 => {
                        // Long literal run: 3 + L, or 18 + extension.
                        let n = if inst != 0 {
                            3 + inst
                        } else {
                            3 + self.ext_len(15)?
                        };
                        self.literals(n)?;
                        state = 4;
                        continue;
                    }
                    1..=3 => {
                        let h = self.byte()?;
                        len = 2;
                        dist = (h << 2) + ((inst >> 2) & 3) + 1;
                    }
                    _ => {
                        let h = self.byte()?;
                        len = 3;
                        dist = (h << 2) + ((inst >> 2) & 3) + 2049;
                    }
                }
                trailing = inst & 3;
            } else if inst < 32 {
                let l = inst & 7;
                len = 2 + if l != 0 { l } else { self.ext_len(7)? };
                let v = self.le16()?;
                dist = 16384 + ((inst & 8) << 11) + (v >> 2);
                trailing = v & 3;
                if dist == 16384 {
                    // End of stream.
                    return if self.ip == self.input.len() {
                        Ok(())
                    } else {
                        Err("input not consumed")
                    };
                }
            } else if inst < 64 {
                let l = inst & 31;
                len = 2 + if l != 0 { l } else { self.ext_len(31)? };
                let v = self.le16()?;
                dist = (v >> 2) + 1;
                trailing = v & 3;
            } else if inst < 128 {
                let h = self.byte()?;
                len = 3 + ((inst >> 5) & 1);
                dist = (h << 3) + ((inst >> 2) & 7) + 1;
                trailing = inst & 3;
            } else {
                let h = self.byte()?;
                len = 5 + ((inst >> 5) & 3);
                dist = (h << 3) + ((inst >> 2) & 7) + 1;
                trailing = inst & 3;
            }
            self.copy_match(dist, len)?;
            self.literals(trailing)?;
            state = trailing;
        }
    }
}

const LZOP_MAGIC: [u8; 9] = [0x89, 0x4c, 0x5a, 0x4f, 0x00, 0x0d, 0x0a, 0x1a, 0x0a];
const F_ADLER32_D: u32 = 0x0000_0001;
const F_ADLER32_C: u32 = 0x0000_0002;
const F_H_EXTRA_FIELD: u32 = 0x0000_0040;
const F_CRC32_D: u32 = 0x0000_0100;
const F_CRC32_C: u32 = 0x0000_0200;
const F_H_FILTER: u32 = 0x0000_0800;
/// Largest block lzop writes (and Xen accepts).
const MAX_BLOCK: usize = 64 << 20;

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LzoError> {
        let end = self.pos.checked_add(n).ok_or("truncated lzop data")?;
        let s = self.data.get(self.pos..end).ok_or("truncated lzop data")?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, LzoError> {
        Ok(self.take(1)?[0])
    }
    fn be16(&mut self) -> Result<u16, LzoError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn be32(&mut self) -> Result<u32, LzoError> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
}

/// Adler-32 (lzop's default checksum of the uncompressed data).
fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// Decompress an lzop file (header, blocks, zero terminator), at most `limit` bytes.
/// Adler-32 block checksums are verified; CRC-32 ones are skipped.
pub fn decompress_lzop(data: &[u8], limit: usize) -> Result<Vec<u8>, LzoError> {
    let mut c = Cursor { data, pos: 0 };
    if c.take(9)? != LZOP_MAGIC {
        return Err("bad lzop magic");
    }
    let version = c.be16()?;
    let _lib_version = c.be16()?;
    if version >= 0x0940 {
        let _version_needed = c.be16()?;
    }
    let method = c.u8()?;
    if !(1..=3).contains(&method) {
        return Err("not an LZO1X lzop file");
    }
    if version >= 0x0940 {
        let _level = c.u8()?;
    }
    let flags = c.be32()?;
    if flags & F_H_FILTER != 0 {
        return Err("lzop filters are not supported");
    }
    let _mode = c.be32()?;
    let _mtime_low = c.be32()?;
    if version >= 0x0940 {
        let _mtime_high = c.be32()?;
    }
    let name_len = c.u8()?;
    c.take(name_len.into())?;
    let _header_checksum = c.be32()?;
    if flags & F_H_EXTRA_FIELD != 0 {
        let n = c.be32()?;
        c.take(usize::try_from(n).map_err(|_| "truncated lzop data")?)?;
        c.be32()?;
    }

    let mut out = Vec::new();
    loop {
        let dst_len = c.be32()? as usize;
        if dst_len == 0 {
            return if c.pos == data.len() {
                Ok(out)
            } else {
                Err("data after the lzop end marker")
            };
        }
        if dst_len > MAX_BLOCK {
            return Err("lzop block too large");
        }
        let src_len = c.be32()? as usize;
        if src_len == 0 || src_len > dst_len {
            return Err("bad lzop block length");
        }
        let d_adler = if flags & F_ADLER32_D != 0 {
            Some(c.be32()?)
        } else {
            None
        };
        if flags & F_CRC32_D != 0 {
            c.be32()?;
        }
        if src_len < dst_len && flags & (F_ADLER32_C | F_CRC32_C) != 0 {
            if flags & F_ADLER32_C != 0 {
                c.be32()?;
            }
            if flags & F_CRC32_C != 0 {
                c.be32()?;
            }
        }
        if out.len() + dst_len > limit {
            return Err("output too large");
        }
        let block = c.take(src_len)?;
        let before = out.len();
        if src_len == dst_len {
            out.extend_from_slice(block); // stored uncompressed
        } else {
            decompress_block(block, &mut out, dst_len)?;
            if out.len() - before != dst_len {
                return Err("lzo block decompressed to the wrong size");
            }
        }
        if let Some(want) = d_adler {
            if adler32(&out[before..]) != want {
                return Err("lzop block checksum mismatch");
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A literal-only LZO1X encoder: valid streams that exercise the literal paths.
    pub(crate) fn encode_literals(data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        if data.is_empty() {
            v.extend_from_slice(&[0x11, 0, 0]);
            return v;
        }
        if data.len() <= 238 {
            v.push(17 + data.len() as u8);
        } else {
            // 0000LLLL with L = 0: 18 + 255 * zeros + last byte.
            let mut rest = data.len() - 18;
            v.push(0);
            while rest > 255 {
                v.push(0);
                rest -= 255;
            }
            v.push(rest as u8);
        }
        v.extend_from_slice(data);
        v.extend_from_slice(&[0x11, 0, 0]);
        v
    }

    #[test]
    fn literal_runs() {
        for n in [
            0usize, 1, 3, 4, 5, 200, 238, 239, 255, 273, 274, 1000, 70000,
        ] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
            let enc = encode_literals(&data);
            let mut out = Vec::new();
            decompress_block(&enc, &mut out, n).unwrap_or_else(|e| panic!("{n}: {e}"));
            assert_eq!(out, data, "{n}");
        }
    }

    #[test]
    fn matches() {
        // "abcd" literal (first byte 21 = 4 literals), then M2 (64..127): len 3 + L,
        // distance (H << 3) + D + 1 = 4, no trailing literals; then end.
        let inst = 0b0100_0000 | (1 << 5) | (3 << 2); // L=1 (len 4), D=3 -> dist 4
        let enc = [21, b'a', b'b', b'c', b'd', inst, 0, 0x11, 0, 0];
        let mut out = Vec::new();
        decompress_block(&enc, &mut out, 8).unwrap();
        assert_eq!(out, b"abcdabcd");
        // Overlapping M3 (32..63): len 2 + 7 = 9 at distance 1 -> run of 'z'.
        let enc = [18, b'z', 0b0010_0111, 0, 0, 0x11, 0, 0];
        let mut out = Vec::new();
        decompress_block(&enc, &mut out, 10).unwrap();
        assert_eq!(out, b"zzzzzzzzzz");
        // Too little room.
        let mut out = Vec::new();
        assert_eq!(decompress_block(&enc, &mut out, 9), Err("output overrun"));
        // A back-reference before the start.
        let enc = [18, b'z', 0b0010_0111, 4, 0, 0x11, 0, 0];
        assert_eq!(
            decompress_block(&enc, &mut Vec::new(), 100),
            Err("look-behind overrun")
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u32 = 0x1234_5678;
        for len in 0..400 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let mut out = Vec::new();
            let _ = decompress_block(&data, &mut out, 1 << 16);
            assert!(out.len() <= 1 << 16);
            let _ = decompress_lzop(&data, 1 << 16);
        }
    }

    #[test]
    fn adler() {
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        assert_eq!(adler32(b""), 1);
    }
}
