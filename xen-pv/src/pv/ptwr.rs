//! Writable page tables (VMASST_TYPE_writable_pagetables), as Xen's ptwr emulation
//! (xen/arch/x86/pv/ro-page-fault.c): a guest kernel write that faults on a read-only
//! mapping of one of its L1 page tables is decoded and emulated. The new entry is
//! validated exactly as MMU_NORMAL_PT_UPDATE validates it; if it is refused, or the
//! instruction is not one of the forms below, the #PF goes to the guest as it arrived.
//!
//! Emulated forms, with an 8-byte memory destination (a whole PTE): MOV from a register
//! or an immediate, XCHG, (LOCK) CMPXCHG, (LOCK) AND/OR/XOR with a register or an
//! immediate, (LOCK) BTS/BTR/BTC with an immediate or a register. These are what Linux's
//! pte accessors compile to (set_pte, ptep_get_and_clear, ptep_test_and_clear_young...).

use frontend_x86::state::{fl, X86State};
use iced_x86::{Instruction, Mnemonic, OpKind, Register};
use jit::{Engine, GuestFault};

use super::PvDomain;
use crate::core::GuestPhys;

/// PFEC bits.
const PFEC_PRESENT: u32 = 1;
const PFEC_WRITE: u32 = 2;
const PFEC_RSVD: u32 = 8;
const PFEC_INSN: u32 = 16;

fn parity(v: u64) -> u64 {
    if (v as u8).count_ones() % 2 == 0 {
        fl::PF
    } else {
        0
    }
}

/// ZF, SF, PF of a `bits`-wide result (CF = OF = 0, AF undefined: 0).
fn logic_flags_w(r: u64, bits: u32) -> u64 {
    (if r == 0 { fl::ZF } else { 0 })
        | if r >> (bits - 1) & 1 != 0 { fl::SF } else { 0 }
        | parity(r)
}

/// The flags of `a - b` at `bits` wide (operands already masked).
fn sub_flags_w(a: u64, b: u64, bits: u32) -> u64 {
    let mask = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let r = a.wrapping_sub(b) & mask;
    let mut f = logic_flags_w(r, bits);
    if a < b {
        f |= fl::CF;
    }
    if ((a ^ b) & (a ^ r)) >> (bits - 1) & 1 != 0 {
        f |= fl::OF;
    }
    if (a ^ b ^ r) & 0x10 != 0 {
        f |= fl::AF;
    }
    f
}

impl PvDomain {
    /// Try to handle `f` as a write to a page table. True when it was emulated.
    pub(super) fn ptwr_fault(&mut self, e: &mut Engine, f: GuestFault) -> bool {
        const WRITABLE_PAGETABLES: u64 = 1 << 2;
        let Some(code) = f.error_code else {
            return false;
        };
        if f.vector != 14 || !self.kernel_mode || self.vm_assist & WRITABLE_PAGETABLES == 0 {
            return false;
        }
        if code & (PFEC_PRESENT | PFEC_WRITE | PFEC_RSVD | PFEC_INSN) != PFEC_PRESENT | PFEC_WRITE {
            return false;
        }
        // The frame the faulting address maps: it must be an L1 page table.
        let Some(l1e_addr) = self.l1_entry_addr(e, f.addr) else {
            return false;
        };
        let Some(l1e) = GuestPhys::read_u64(e.ram(), l1e_addr) else {
            return false;
        };
        let mfn = (l1e & crate::builder::pagetable::ADDR_MASK) >> 12;
        if self.mmu.tables.get(&mfn).map(|t| t.level) != Some(1) {
            return false;
        }
        let Some(insn) = self.decode_at_rip(e) else {
            return false;
        };
        let size = insn.memory_size().size() as u64;
        // One write within one entry (a narrower write is merged into the entry, as Xen
        // does for a guest clearing a PTE bit with a byte-sized AND).
        if insn.op_count() < 1
            || insn.op_kind(0) != OpKind::Memory
            || !matches!(size, 1 | 2 | 4 | 8)
            || (f.addr & 7) + size > 8
        {
            return false;
        }
        let ptr = (mfn << 12) | (f.addr & 0xff8);
        let Some(entry) = GuestPhys::read_u64(e.ram(), ptr) else {
            return false;
        };
        let shift = (f.addr & 7) * 8;
        let mask = if size == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * size)) - 1
        };
        let old = (entry >> shift) & mask;
        let Some((val, regs, flags)) = emulate(&insn, old, size, e) else {
            return false;
        };
        let new = (entry & !(mask << shift)) | ((val & mask) << shift);
        if new != entry && self.update_entry(e, ptr, new, false, None).is_err() {
            return false;
        }
        let mut s = X86State(&mut e.env);
        for (r, v) in regs {
            s.set_gpr(r, v);
        }
        if let Some((mask, val)) = flags {
            let rf = s.rflags();
            s.set_rflags((rf & !mask) | (val & mask));
        }
        s.set_rip(insn.next_ip());
        e.env.icount += 1;
        // A type change update_entry made may have to be flushed (Xen does it then).
        self.flush_if_dirty(e);
        true
    }
}

fn gpr(r: Register) -> Option<usize> {
    r.is_gpr()
        .then(|| r.full_register().number() - Register::RAX.number())
}

/// The new PTE value, register writes (index, value) and flag changes (mask, value).
#[allow(clippy::type_complexity)]
fn emulate(
    i: &Instruction,
    old: u64,
    size: u64,
    e: &mut Engine,
) -> Option<(u64, Vec<(usize, u64)>, Option<(u64, u64)>)> {
    let s = X86State(&mut e.env);
    let mask = if size == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * size)) - 1
    };
    let bits = 8 * size as u32;
    // Register operands of the operation's width (8-bit high registers are not PTE code).
    let src = |k: u32| -> Option<u64> {
        match i.op_kind(k) {
            OpKind::Register => {
                let r = i.op_register(k);
                if matches!(r, Register::AH | Register::BH | Register::CH | Register::DH) {
                    return None;
                }
                Some(s.gpr(gpr(r)?) & mask)
            }
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => Some(i.immediate(k) & mask),
            _ => None,
        }
    };
    // Flags of a result of this width.
    let logic_flags = |r: u64| -> u64 { logic_flags_w(r & mask, bits) };
    let sub_flags = |a: u64, b: u64| -> u64 { sub_flags_w(a & mask, b & mask, bits) };
    // A register written with the old value: whole register for 64/32-bit (zero-extended),
    // merged for 16/8-bit.
    let write_reg = |r: Register, v: u64| -> Option<(usize, u64)> {
        let n = gpr(r)?;
        let cur = s.gpr(n);
        Some((
            n,
            if size >= 4 {
                v & mask
            } else {
                (cur & !mask) | (v & mask)
            },
        ))
    };
    const ARITH: u64 = fl::ARITH;
    Some(match i.mnemonic() {
        Mnemonic::Mov => (src(1)?, vec![], None),
        Mnemonic::Xchg => {
            let r = i.op_register(1);
            (src(1)?, vec![write_reg(r, old)?], None)
        }
        Mnemonic::Cmpxchg => {
            let rax = s.gpr(0) & mask;
            let f = sub_flags(rax, old);
            if rax == old {
                (src(1)?, vec![], Some((ARITH, f)))
            } else {
                let acc = match size {
                    8 => Register::RAX,
                    4 => Register::EAX,
                    2 => Register::AX,
                    _ => Register::AL,
                };
                (old, vec![write_reg(acc, old)?], Some((ARITH, f)))
            }
        }
        Mnemonic::And | Mnemonic::Or | Mnemonic::Xor => {
            let v = src(1)?;
            let n = match i.mnemonic() {
                Mnemonic::And => old & v,
                Mnemonic::Or => old | v,
                _ => old ^ v,
            };
            (n, vec![], Some((ARITH, logic_flags(n))))
        }
        Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc => {
            // A register bit offset outside the operand addresses other memory.
            let bit = src(1)?;
            if bit >= bits as u64 {
                return None;
            }
            let m = 1u64 << bit;
            let n = match i.mnemonic() {
                Mnemonic::Bts => old | m,
                Mnemonic::Btr => old & !m,
                _ => old ^ m,
            };
            (
                n,
                vec![],
                Some((fl::CF, if old & m != 0 { fl::CF } else { 0 })),
            )
        }
        _ => return None,
    })
}
