//! bzImage wrappers around a synthetic ELF kernel, compressed with every format Xen's loader
//! knows: with pure-Rust encoders always, and with the system compressors (gzip, bzip2,
//! xz, lzma, lz4, zstd, lzop) when installed (the check is skipped with a message if not).

mod common;

use common::*;
use std::io::Write;
use xen_pv::image::*;

fn kernel() -> Vec<u8> {
    linux64_elf(0x30000).build()
}

fn check_roundtrip(payload: Vec<u8>, elf: &[u8], want: Compression) {
    let bz = bzimage(&payload, 0x020f);
    let img = GuestImage::parse(&bz).unwrap_or_else(|e| panic!("{want:?}: {e}"));
    let info = img.container.bzimage.expect("bzImage");
    assert_eq!(info.compression, want);
    assert_eq!(info.protocol, 0x020f);
    assert_eq!(info.payload_offset, 4 * 512 + 0x80);
    assert_eq!(info.payload_length, payload.len() as u64);
    assert!(!img.container.gzip);
    assert!(img.elf_bytes() == elf, "{want:?}: decompressed ELF differs");
    assert_eq!(img.xen.virt_base, LINUX64_VIRT_BASE);
    assert_eq!(img.layout.virt_kstart, LINUX64_TEXT);
}

// ------------------------------------------------------------ pure-Rust encoders

fn gzip_rust(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn bzip2_rust(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// xz as Linux makes it: CRC32 check, x86 BCJ then LZMA2.
fn xz_rust(data: &[u8]) -> Vec<u8> {
    let mut opts = lzma_rust2::XzOptions::with_preset(6);
    opts.set_check_sum_type(lzma_rust2::CheckType::Crc32);
    opts.prepend_pre_filter(lzma_rust2::FilterType::BcjX86, 0);
    let mut w = lzma_rust2::XzWriter::new(Vec::new(), opts).unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

/// .lzma ("alone") with unknown size and an end marker, as `lzma -c` writes from a pipe.
fn lzma_rust(data: &[u8]) -> Vec<u8> {
    let opts = lzma_rust2::LzmaOptions::with_preset(6);
    let mut w = lzma_rust2::LzmaWriter::new_use_header(Vec::new(), &opts, None).unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

/// The LZ4 legacy frame, in `chunk`-byte blocks, with a repeated magic in the middle.
fn lz4_legacy_rust(data: &[u8], chunk: usize) -> Vec<u8> {
    let mut v = 0x184c_2102u32.to_le_bytes().to_vec();
    for (i, c) in data.chunks(chunk).enumerate() {
        if i == 1 {
            v.extend_from_slice(&0x184c_2102u32.to_le_bytes());
        }
        let block = lz4_flex::block::compress(c);
        v.extend_from_slice(&(block.len() as u32).to_le_bytes());
        v.extend_from_slice(&block);
    }
    v
}

fn zstd_rust(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

/// A small greedy LZO1X encoder (literal runs and M3 matches only), enough to produce
/// valid streams with real back-references without an external tool.
fn lzo1x_encode(src: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    // Position in `out` of the previous match's LE16 low byte (its S bits), if any.
    let mut last_match_s: Option<usize> = None;
    let mut table = vec![usize::MAX; 1 << 14];
    let hash = |p: &[u8]| {
        ((u32::from(p[0]) << 16 | u32::from(p[1]) << 8 | u32::from(p[2])).wrapping_mul(2654435761)
            >> 18) as usize
    };
    let mut lit_start = 0;
    let mut i = 0;
    let emit_ext = |out: &mut Vec<u8>, mut n: usize| {
        while n > 255 {
            out.push(0);
            n -= 255;
        }
        out.push(n as u8);
    };
    let flush_literals = |out: &mut Vec<u8>, last: &mut Option<usize>, lits: &[u8]| {
        let l = lits.len();
        if l == 0 {
            return;
        }
        match *last {
            None => {
                // Start of stream.
                if l <= 238 {
                    out.push(17 + l as u8);
                } else {
                    out.push(0);
                    emit_ext(out, l - 18);
                }
            }
            Some(s) if l <= 3 => out[s] |= l as u8,
            Some(_) => {
                if l - 3 <= 15 {
                    out.push((l - 3) as u8);
                } else {
                    out.push(0);
                    emit_ext(out, l - 18);
                }
            }
        }
        out.extend_from_slice(lits);
    };
    while i + 3 <= src.len() {
        let h = hash(&src[i..]);
        let cand = table[h];
        table[h] = i;
        if cand != usize::MAX && i - cand <= 16384 && src[cand..cand + 3] == src[i..i + 3] {
            let mut len = 3;
            while i + len < src.len() && src[cand + len] == src[i + len] {
                len += 1;
            }
            flush_literals(&mut out, &mut last_match_s, &src[lit_start..i]);
            // M3: 001LLLLL, length 2 + L (or 33 + extension), LE16 (dist - 1) << 2 | S.
            if len - 2 <= 31 {
                out.push(0x20 | (len - 2) as u8);
            } else {
                out.push(0x20);
                emit_ext(&mut out, len - 33);
            }
            let d = ((i - cand - 1) << 2) as u16;
            last_match_s = Some(out.len());
            out.extend_from_slice(&d.to_le_bytes());
            i += len;
            lit_start = i;
        } else {
            i += 1;
        }
    }
    flush_literals(&mut out, &mut last_match_s, &src[lit_start..]);
    out.extend_from_slice(&[0x11, 0, 0]);
    out
}

/// An lzop file (LZO1X blocks from `lzo1x_encode`, stored when that does not shrink them),
/// with Adler-32 checksums of the data.
fn lzop_rust(data: &[u8]) -> Vec<u8> {
    fn adler32(d: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &x in d {
            a = (a + x as u32) % 65521;
            b = (b + a) % 65521;
        }
        b << 16 | a
    }
    let mut v = vec![0x89, 0x4c, 0x5a, 0x4f, 0x00, 0x0d, 0x0a, 0x1a, 0x0a];
    v.extend_from_slice(&0x1030u16.to_be_bytes()); // version
    v.extend_from_slice(&0x2080u16.to_be_bytes()); // lib version
    v.extend_from_slice(&0x0940u16.to_be_bytes()); // version needed
    v.push(3); // method M_LZO1X_999
    v.push(9); // level
    v.extend_from_slice(&1u32.to_be_bytes()); // flags: F_ADLER32_D
    v.extend_from_slice(&0o100644u32.to_be_bytes()); // mode
    v.extend_from_slice(&0u32.to_be_bytes()); // mtime low
    v.extend_from_slice(&0u32.to_be_bytes()); // mtime high
    v.push(7);
    v.extend_from_slice(b"vmlinux");
    v.extend_from_slice(&0u32.to_be_bytes()); // header checksum (not checked)
    let mut compressed_blocks = 0;
    for c in data.chunks(0x8000) {
        let enc = lzo1x_encode(c);
        let block = if enc.len() < c.len() {
            compressed_blocks += 1;
            enc
        } else {
            c.to_vec()
        };
        v.extend_from_slice(&(c.len() as u32).to_be_bytes());
        v.extend_from_slice(&(block.len() as u32).to_be_bytes());
        v.extend_from_slice(&adler32(c).to_be_bytes());
        v.extend_from_slice(&block);
    }
    assert!(compressed_blocks > 0, "the test data should compress");
    v.extend_from_slice(&0u32.to_be_bytes());
    v
}

#[test]
fn rust_encoders_roundtrip() {
    let elf = kernel();
    check_roundtrip(gzip_rust(&elf), &elf, Compression::Gzip);
    check_roundtrip(
        with_size(bzip2_rust(&elf), elf.len()),
        &elf,
        Compression::Bzip2,
    );
    check_roundtrip(with_size(xz_rust(&elf), elf.len()), &elf, Compression::Xz);
    check_roundtrip(
        with_size(lzma_rust(&elf), elf.len()),
        &elf,
        Compression::Lzma,
    );
    check_roundtrip(
        with_size(lz4_legacy_rust(&elf, 0x10000), elf.len()),
        &elf,
        Compression::Lz4,
    );
    check_roundtrip(
        with_size(zstd_rust(&elf), elf.len()),
        &elf,
        Compression::Zstd,
    );
    check_roundtrip(
        with_size(lzop_rust(&elf), elf.len()),
        &elf,
        Compression::Lzo,
    );
    // An uncompressed ELF payload (Xen refuses it; accepting it costs nothing).
    check_roundtrip(elf.clone(), &elf, Compression::None);
}

#[test]
fn xz_bcj_filter_really_applied() {
    // The BCJ-filtered stream must differ from an unfiltered one, and both must decode.
    let elf = kernel();
    let mut plain = lzma_rust2::XzOptions::with_preset(6);
    plain.set_check_sum_type(lzma_rust2::CheckType::Crc32);
    let mut w = lzma_rust2::XzWriter::new(Vec::new(), plain).unwrap();
    w.write_all(&elf).unwrap();
    let plain = w.finish().unwrap();
    let bcj = xz_rust(&elf);
    assert_ne!(plain, bcj);
    check_roundtrip(with_size(plain, elf.len()), &elf, Compression::Xz);
    check_roundtrip(with_size(bcj, elf.len()), &elf, Compression::Xz);
}

// ------------------------------------------------------------ system compressors

fn system(tool: &str, args: &[&str], trailer: bool, want: Compression) {
    let elf = kernel();
    let Some(out) = run_tool(tool, args, &elf) else {
        return;
    };
    let payload = if trailer {
        with_size(out, elf.len())
    } else {
        out
    };
    check_roundtrip(payload, &elf, want);
}

#[test]
fn system_gzip() {
    system("gzip", &["-9", "-n", "-c"], false, Compression::Gzip);
}

#[test]
fn system_bzip2() {
    system("bzip2", &["-9", "-c"], true, Compression::Bzip2);
}

#[test]
fn system_xz_x86_bcj() {
    // Linux's scripts/xz_wrap.sh for x86.
    system(
        "xz",
        &[
            "--format=xz",
            "--check=crc32",
            "--x86",
            "--lzma2=dict=32MiB",
            "-c",
        ],
        true,
        Compression::Xz,
    );
}

#[test]
fn system_lzma() {
    system("lzma", &["-9", "-c"], true, Compression::Lzma);
}

#[test]
fn system_lz4_legacy() {
    system("lz4", &["-l", "-9", "-c"], true, Compression::Lz4);
}

#[test]
fn system_zstd() {
    system("zstd", &["-19", "-c", "-q"], true, Compression::Zstd);
}

#[test]
fn system_lzop() {
    system("lzop", &["-9", "-c"], true, Compression::Lzo);
    // lzop's fast level (LZO1X-1), and CRC-32 instead of Adler-32 checksums.
    system("lzop", &["-1", "-c"], true, Compression::Lzo);
    system("lzop", &["-3", "--crc32", "-c"], true, Compression::Lzo);
}

// ------------------------------------------------------------ errors

fn err(bytes: &[u8]) -> ImageError {
    let e = GuestImage::parse(bytes).unwrap_err();
    let s = e.to_string();
    assert!(!s.contains('\n'), "{s}");
    e
}

#[test]
fn error_protocol_and_payload_bounds() {
    let elf = kernel();
    let payload = with_size(zstd_rust(&elf), elf.len());
    assert_eq!(
        err(&bzimage(&payload, 0x0207)),
        ImageError::BootProtocolTooOld(0x0207)
    );

    let mut bz = bzimage(&payload, 0x020f);
    let n = bz.len() as u32;
    bz[0x24c..0x250].copy_from_slice(&n.to_le_bytes());
    assert!(matches!(err(&bz), ImageError::BadPayload(_)));
    let mut bz = bzimage(&payload, 0x020f);
    bz[0x248..0x24c].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    assert!(matches!(err(&bz), ImageError::BadPayload(_)));

    // "HdrS" but the header itself is cut short.
    let bz = bzimage(&payload, 0x020f);
    assert!(matches!(err(&bz[..0x220]), ImageError::Truncated { .. }));

    // Decompresses fine but is not an ELF.
    let junk = prng_bytes(5, 5000);
    assert!(matches!(
        err(&bzimage(&gzip_rust(&junk), 0x020f)),
        ImageError::BadPayload(_)
    ));
}

#[test]
fn error_unsupported_compression() {
    let bz = bzimage(b"PK\x03\x04 zip is not a kernel format", 0x020f);
    assert_eq!(err(&bz), ImageError::UnsupportedCompression(*b"PK\x03\x04"));
}

#[test]
fn error_corrupt_payloads() {
    let elf = kernel();
    let cases: Vec<(Compression, Vec<u8>)> = vec![
        (Compression::Gzip, gzip_rust(&elf)),
        (Compression::Bzip2, with_size(bzip2_rust(&elf), elf.len())),
        (Compression::Xz, with_size(xz_rust(&elf), elf.len())),
        (Compression::Lzma, with_size(lzma_rust(&elf), elf.len())),
        (
            Compression::Lz4,
            with_size(lz4_legacy_rust(&elf, 0x10000), elf.len()),
        ),
        (Compression::Zstd, with_size(zstd_rust(&elf), elf.len())),
        (Compression::Lzo, with_size(lzop_rust(&elf), elf.len())),
    ];
    for (c, good) in &cases {
        // A flipped byte in the middle.
        let mut bad = good.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x55;
        bad[mid + 1] ^= 0xa5;
        match GuestImage::parse(&bzimage(&bad, 0x020f)) {
            Err(ImageError::CorruptPayload { format, .. }) => assert_eq!(format, c.name()),
            // lzma and legacy lz4 carry no checksum: a flip may decode to a wrong ELF, which
            // then fails to parse (or even parses): either way no panic.
            Err(e) if matches!(c, Compression::Lzma | Compression::Lz4) => {
                println!("{c:?} flip: {e}")
            }
            Ok(_) if matches!(c, Compression::Lzma | Compression::Lz4) => {
                println!("{c:?} flip decoded to a valid ELF")
            }
            other => panic!("{c:?}: {:?}", other.map(|_| ())),
        }
        // Truncated stream (trailer kept).
        if *c != Compression::Gzip {
            let mut t = good[..good.len() / 2].to_vec();
            t.extend_from_slice(&good[good.len() - 4..]);
            assert!(
                matches!(err(&bzimage(&t, 0x020f)), ImageError::CorruptPayload { .. }),
                "{c:?} truncated"
            );
            // Size trailer that disagrees.
            let mut w = good.clone();
            let n = w.len();
            w[n - 4..].copy_from_slice(&(elf.len() as u32 - 1).to_le_bytes());
            assert!(
                matches!(err(&bzimage(&w, 0x020f)), ImageError::CorruptPayload { .. }),
                "{c:?} wrong trailer"
            );
        }
    }
}

#[test]
fn error_too_big() {
    let elf = kernel();
    let limit = 0x8000; // far below the ELF's size
    let cases: Vec<Vec<u8>> = vec![
        gzip_rust(&elf),
        with_size(bzip2_rust(&elf), elf.len()),
        with_size(xz_rust(&elf), elf.len()),
        with_size(lzma_rust(&elf), elf.len()),
        with_size(lz4_legacy_rust(&elf, 0x10000), elf.len()),
        with_size(zstd_rust(&elf), elf.len()),
        with_size(lzop_rust(&elf), elf.len()),
        elf.clone(),
    ];
    for (i, p) in cases.iter().enumerate() {
        let bz = bzimage(p, 0x020f);
        let e = GuestImage::parse_with_limit(&bz, limit).unwrap_err();
        assert_eq!(
            e,
            ImageError::TooBig {
                limit: limit as u64
            },
            "case {i}"
        );
        // A trailer that lies small: the decoder itself must stop at the limit.
        if i != 0 && i != 7 {
            let mut lie = p.clone();
            let n = lie.len();
            lie[n - 4..].copy_from_slice(&16u32.to_le_bytes());
            let e = GuestImage::parse_with_limit(&bzimage(&lie, 0x020f), limit).unwrap_err();
            assert_eq!(
                e,
                ImageError::TooBig {
                    limit: limit as u64
                },
                "lying case {i}"
            );
        }
    }
    // A gzip bomb: 4 MiB of zeroes is a few KiB compressed.
    let bomb = gzip_rust(&vec![0u8; 4 << 20]);
    assert!(bomb.len() < 64 << 10);
    let e = GuestImage::parse_with_limit(&bzimage(&bomb, 0x020f), 1 << 20).unwrap_err();
    assert_eq!(e, ImageError::TooBig { limit: 1 << 20 });
    // The same bomb as a whole (gzip-compressed kernel file).
    let e = GuestImage::parse_with_limit(&bomb, 1 << 20).unwrap_err();
    assert_eq!(e, ImageError::TooBig { limit: 1 << 20 });
}

#[test]
fn garbage_payloads_never_panic() {
    let magics: [&[u8]; 7] = [
        b"\x1f\x8b\x08\x00",
        b"BZh9",
        b"\xfd7zXZ\x00\x00\x01",
        b"\x28\xb5\x2f\xfd",
        b"\x5d\x00\x00\x80\x00",
        b"\x89LZO\x00\x0d\x0a\x1a\x0a\x10\x30\x20\x80\x09\x40\x03\x09",
        b"\x02\x21\x4c\x18",
    ];
    for (i, m) in magics.iter().enumerate() {
        for n in [0usize, 1, 7, 64, 1000] {
            let mut p = m.to_vec();
            p.extend(prng_bytes(i as u64 * 131 + n as u64, n));
            let _ = GuestImage::parse_with_limit(&bzimage(&p, 0x020f), 1 << 20);
        }
    }
}
