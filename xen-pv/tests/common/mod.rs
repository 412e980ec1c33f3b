//! Test helpers: a tiny ELF32/ELF64 writer, Xen note encoding and a bzImage wrapper.
#![allow(dead_code)]

use xen_pv::image::note;

pub const PT_LOAD: u32 = 1;
pub const PT_NOTE: u32 = 4;
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;
pub const SHT_PROGBITS: u32 = 1;
pub const SHT_SYMTAB: u32 = 2;
pub const SHT_STRTAB: u32 = 3;
pub const SHT_NOTE: u32 = 7;

#[derive(Clone, Debug)]
pub struct Seg {
    pub p_type: u32,
    pub flags: u32,
    pub vaddr: u64,
    pub paddr: u64,
    pub data: Vec<u8>,
    pub memsz: u64,
    /// Override p_offset (for broken images); None = where the data was placed.
    pub offset: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct Sec {
    pub name: String,
    pub sh_type: u32,
    pub data: Vec<u8>,
    pub link: u32,
    pub entsize: u64,
}

#[derive(Clone, Debug)]
pub struct ElfBuilder {
    pub is64: bool,
    pub class: u8,
    pub data_enc: u8,
    pub machine: u16,
    pub entry: u64,
    pub segs: Vec<Seg>,
    pub secs: Vec<Sec>,
    pub phentsize: Option<u16>,
}

fn pad_to(v: &mut Vec<u8>, align: usize) {
    while !v.len().is_multiple_of(align) {
        v.push(0);
    }
}

impl ElfBuilder {
    pub fn new(is64: bool) -> Self {
        ElfBuilder {
            is64,
            class: if is64 { 2 } else { 1 },
            data_enc: 1,
            machine: if is64 { 62 } else { 3 },
            entry: 0,
            segs: Vec::new(),
            secs: Vec::new(),
            phentsize: None,
        }
    }

    pub fn load(mut self, flags: u32, vaddr: u64, paddr: u64, data: Vec<u8>, memsz: u64) -> Self {
        self.segs.push(Seg {
            p_type: PT_LOAD,
            flags,
            vaddr,
            paddr,
            data,
            memsz,
            offset: None,
        });
        self
    }

    pub fn pt_note(mut self, notes: Vec<u8>) -> Self {
        let n = notes.len() as u64;
        self.segs.push(Seg {
            p_type: PT_NOTE,
            flags: PF_R,
            vaddr: 0,
            paddr: 0,
            data: notes,
            memsz: n,
            offset: None,
        });
        self
    }

    pub fn section(mut self, name: &str, sh_type: u32, data: Vec<u8>) -> Self {
        self.secs.push(Sec {
            name: name.into(),
            sh_type,
            data,
            link: 0,
            entsize: 0,
        });
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let ehsize = if self.is64 { 64 } else { 52 };
        let phsz = if self.is64 { 56 } else { 32 };
        let shsz = if self.is64 { 64 } else { 40 };
        let phentsize = self.phentsize.unwrap_or(phsz as u16) as usize;
        let mut out = vec![0u8; ehsize + phentsize * self.segs.len()];
        pad_to(&mut out, 16);

        // Segment data.
        let mut seg_off = Vec::new();
        for s in &self.segs {
            pad_to(&mut out, 16);
            seg_off.push(s.offset.unwrap_or(out.len() as u64));
            out.extend_from_slice(&s.data);
        }
        // Section data; section 0 is null, the last is .shstrtab.
        let mut shstrtab = vec![0u8];
        let mut sec_info = Vec::new(); // (name_off, offset, size)
        for s in &self.secs {
            pad_to(&mut out, 8);
            let name_off = shstrtab.len();
            shstrtab.extend_from_slice(s.name.as_bytes());
            shstrtab.push(0);
            sec_info.push((name_off, out.len(), s.data.len()));
            out.extend_from_slice(&s.data);
        }
        let shstr_name = shstrtab.len();
        shstrtab.extend_from_slice(b".shstrtab\0");
        pad_to(&mut out, 8);
        let shstr_off = out.len();
        out.extend_from_slice(&shstrtab);
        pad_to(&mut out, 8);
        let shoff = out.len();
        let shnum = self.secs.len() + 2;
        out.resize(shoff + shnum * shsz, 0);

        // File header.
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = self.class;
        out[5] = self.data_enc;
        out[6] = 1;
        let w16 =
            |o: &mut Vec<u8>, at: usize, v: u16| o[at..at + 2].copy_from_slice(&v.to_le_bytes());
        let w32 =
            |o: &mut Vec<u8>, at: usize, v: u32| o[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let w64 =
            |o: &mut Vec<u8>, at: usize, v: u64| o[at..at + 8].copy_from_slice(&v.to_le_bytes());
        w16(&mut out, 16, 2); // ET_EXEC
        w16(&mut out, 18, self.machine);
        w32(&mut out, 20, 1);
        if self.is64 {
            w64(&mut out, 24, self.entry);
            w64(&mut out, 32, ehsize as u64);
            w64(&mut out, 40, shoff as u64);
            w16(&mut out, 52, ehsize as u16);
            w16(&mut out, 54, phentsize as u16);
            w16(&mut out, 56, self.segs.len() as u16);
            w16(&mut out, 58, shsz as u16);
            w16(&mut out, 60, shnum as u16);
            w16(&mut out, 62, (shnum - 1) as u16);
        } else {
            w32(&mut out, 24, self.entry as u32);
            w32(&mut out, 28, ehsize as u32);
            w32(&mut out, 32, shoff as u32);
            w16(&mut out, 40, ehsize as u16);
            w16(&mut out, 42, phentsize as u16);
            w16(&mut out, 44, self.segs.len() as u16);
            w16(&mut out, 46, shsz as u16);
            w16(&mut out, 48, shnum as u16);
            w16(&mut out, 50, (shnum - 1) as u16);
        }
        // Program headers.
        for (i, s) in self.segs.iter().enumerate() {
            let b = ehsize + i * phentsize;
            let filesz = s.data.len() as u64;
            if self.is64 {
                w32(&mut out, b, s.p_type);
                w32(&mut out, b + 4, s.flags);
                w64(&mut out, b + 8, seg_off[i]);
                w64(&mut out, b + 16, s.vaddr);
                w64(&mut out, b + 24, s.paddr);
                w64(&mut out, b + 32, filesz);
                w64(&mut out, b + 40, s.memsz);
                w64(&mut out, b + 48, 0x1000);
            } else {
                w32(&mut out, b, s.p_type);
                w32(&mut out, b + 4, seg_off[i] as u32);
                w32(&mut out, b + 8, s.vaddr as u32);
                w32(&mut out, b + 12, s.paddr as u32);
                w32(&mut out, b + 16, filesz as u32);
                w32(&mut out, b + 20, s.memsz as u32);
                w32(&mut out, b + 24, s.flags);
                w32(&mut out, b + 28, 0x1000);
            }
        }
        // Section headers (index 0 stays zero).
        let put_sh = |o: &mut Vec<u8>,
                      idx: usize,
                      name: usize,
                      ty: u32,
                      off: usize,
                      size: usize,
                      link: u32,
                      entsize: u64| {
            let b = shoff + idx * shsz;
            if self.is64 {
                w32(o, b, name as u32);
                w32(o, b + 4, ty);
                w64(o, b + 24, off as u64);
                w64(o, b + 32, size as u64);
                w32(o, b + 40, link);
                w64(o, b + 48, 1);
                w64(o, b + 56, entsize);
            } else {
                w32(o, b, name as u32);
                w32(o, b + 4, ty);
                w32(o, b + 16, off as u32);
                w32(o, b + 20, size as u32);
                w32(o, b + 24, link);
                w32(o, b + 32, 1);
                w32(o, b + 36, entsize as u32);
            }
        };
        for (i, s) in self.secs.iter().enumerate() {
            let (name, off, size) = sec_info[i];
            put_sh(
                &mut out,
                i + 1,
                name,
                s.sh_type,
                off,
                size,
                s.link,
                s.entsize,
            );
        }
        put_sh(
            &mut out,
            shnum - 1,
            shstr_name,
            SHT_STRTAB,
            shstr_off,
            shstrtab.len(),
            0,
            0,
        );
        out
    }
}

/// One ELF note, name and desc padded to 4 bytes.
pub fn elf_note(owner: &str, kind: u32, desc: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(owner.len() as u32 + 1).to_le_bytes());
    v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    v.extend_from_slice(&kind.to_le_bytes());
    v.extend_from_slice(owner.as_bytes());
    v.push(0);
    pad_to(&mut v, 4);
    v.extend_from_slice(desc);
    pad_to(&mut v, 4);
    v
}

pub fn xen_str(kind: u32, s: &str) -> Vec<u8> {
    let mut d = s.as_bytes().to_vec();
    d.push(0);
    elf_note("Xen", kind, &d)
}

pub fn xen_num(kind: u32, v: u64, is64: bool) -> Vec<u8> {
    if is64 {
        elf_note("Xen", kind, &v.to_le_bytes())
    } else {
        elf_note("Xen", kind, &(v as u32).to_le_bytes())
    }
}

pub const LINUX64_VIRT_BASE: u64 = 0xffff_ffff_8000_0000;
pub const LINUX64_TEXT: u64 = 0xffff_ffff_8100_0000;
pub const LINUX64_ENTRY: u64 = LINUX64_TEXT + 0x40;
pub const LINUX64_HYPERCALL: u64 = LINUX64_TEXT + 0x1000;

/// The notes a 64-bit Linux PV kernel carries.
pub fn linux64_notes() -> Vec<u8> {
    let mut n = Vec::new();
    n.extend(xen_str(note::GUEST_OS, "linux"));
    n.extend(xen_str(note::GUEST_VERSION, "2.6"));
    n.extend(xen_str(note::XEN_VERSION, "xen-3.0"));
    n.extend(xen_num(note::VIRT_BASE, LINUX64_VIRT_BASE, true));
    n.extend(xen_num(note::INIT_P2M, 0x80_0000_0000, true));
    n.extend(xen_num(note::ENTRY, LINUX64_ENTRY, true));
    n.extend(xen_num(note::HYPERCALL_PAGE, LINUX64_HYPERCALL, true));
    n.extend(xen_str(
        note::FEATURES,
        "!writable_page_tables|pae_pgdir_above_4gb",
    ));
    n.extend(elf_note(
        "Xen",
        note::SUPPORTED_FEATURES,
        &0x8801u32.to_le_bytes(),
    ));
    n.extend(xen_str(note::PAE_MODE, "yes"));
    n.extend(xen_str(note::LOADER, "generic"));
    let mut l1 = Vec::new();
    l1.extend_from_slice(&1u64.to_le_bytes());
    l1.extend_from_slice(&1u64.to_le_bytes());
    n.extend(elf_note("Xen", note::L1_MFN_VALID, &l1));
    n.extend(elf_note("Xen", note::SUSPEND_CANCEL, &1u32.to_le_bytes()));
    n.extend(elf_note("Xen", note::MOD_START_PFN, &1u32.to_le_bytes()));
    n.extend(xen_num(note::HV_START_LOW, 0xffff_8000_0000_0000, true));
    n.extend(xen_num(note::PADDR_OFFSET, 0, true));
    n.extend(elf_note(
        "Xen",
        note::PHYS32_ENTRY,
        &0x0100_0850u32.to_le_bytes(),
    ));
    n
}

/// Deterministic pseudo-random bytes.
pub fn prng_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Code-like text: repeated phrases and x86 call/jmp opcodes with rel32 operands (so the
/// xz BCJ filter has something to convert), compressible but not trivially.
pub fn code_like(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    let noise = prng_bytes(7, n);
    let mut i = 0;
    while v.len() < n {
        match i % 5 {
            0 => v.extend_from_slice(b"\x55\x48\x89\xe5"),
            1 => {
                v.push(0xe8);
                v.extend_from_slice(&((i as u32 * 37) & 0xffff).to_le_bytes());
            }
            2 => v.extend_from_slice(b"mov rax, [rbp-8]; "),
            3 => v.extend_from_slice(&noise[i % (n - 8)..i % (n - 8) + 3]),
            _ => {
                v.push(0xe9);
                v.extend_from_slice(&(0u32.wrapping_sub(i as u32 * 11)).to_le_bytes());
            }
        }
        i += 1;
    }
    v.truncate(n);
    v
}

/// A standard 64-bit Linux-like PV kernel: text (R-X) and data+bss (RW-) segments at
/// paddr 0x1000000, notes in PT_NOTE and in a .notes section.
pub fn linux64_elf(text_len: usize) -> ElfBuilder {
    let text = code_like(text_len);
    let text_mem = (text_len as u64 + 0xfff) & !0xfff;
    let data = prng_bytes(3, 0x800);
    let data_paddr = 0x100_0000 + text_mem;
    let mut b = ElfBuilder::new(true)
        .load(PF_R | PF_X, LINUX64_TEXT, 0x100_0000, text, text_mem)
        .load(
            PF_R | PF_W,
            LINUX64_TEXT + text_mem,
            data_paddr,
            data,
            0x3000,
        )
        .pt_note(linux64_notes())
        .section(".notes", SHT_NOTE, linux64_notes());
    b.entry = LINUX64_ENTRY; // same as the ENTRY note
    b
}

/// Wrap `payload` (already carrying Linux's size trailer where the format needs it) in a
/// minimal bzImage with boot protocol `version`.
pub fn bzimage(payload: &[u8], version: u16) -> Vec<u8> {
    let setup_sects = 3u8;
    let extra = 0x80usize; // payload_offset from the start of the protected-mode code
    let base = (setup_sects as usize + 1) * 512;
    let mut v = vec![0u8; base + extra];
    v[0x1f1] = setup_sects;
    v[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    v[0x202..0x206].copy_from_slice(b"HdrS");
    v[0x206..0x208].copy_from_slice(&version.to_le_bytes());
    v[0x248..0x24c].copy_from_slice(&(extra as u32).to_le_bytes());
    v[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(payload);
    v.extend_from_slice(&[0u8; 64]); // trailing stuff after the payload
    v
}

/// Linux's `size_append`: the uncompressed size as LE u32.
pub fn with_size(mut compressed: Vec<u8>, original_len: usize) -> Vec<u8> {
    compressed.extend_from_slice(&(original_len as u32).to_le_bytes());
    compressed
}

/// Run an external compressor on `input` (stdin -> stdout). None (with a message) if the
/// tool is not installed.
pub fn run_tool(tool: &str, args: &[&str], input: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("SKIP: `{tool}` is not installed (apt-get install it to run this check)");
            return None;
        }
        Err(e) => panic!("spawning {tool}: {e}"),
    };
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&data).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out.stdout)
}
