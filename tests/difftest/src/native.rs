//! Native execution of x86-64 instruction sequences for differential testing.
//!
//! A [`NativeRunner`] owns one persistent, sandboxed child process (forked
//! once, respawned only after a timeout or an unexpected death). The child
//! maps a code area at [`CODE_ADDR`] and a data area at [`DATA_ADDR`] (with
//! unmapped guard pages on both sides), enters seccomp strict mode and then
//! serves requests: it copies the test code and data into place, loads the
//! guest registers, runs the code and reports the final registers, RFLAGS,
//! the data area and the exception (if any) that the code raised.
//!
//! Parent and child share one `MAP_SHARED` anonymous region for request and
//! reply, and synchronise with two pipes carrying one byte each way.
//!
//! Everything that executes code natively is only available on x86_64 Linux;
//! on other hosts the types exist but [`NativeRunner::new`] returns an
//! `Unsupported` error.
//!
//! Things a comparison with the emulator has to allow for:
//! - Only CF PF AF ZF SF DF OF of the initial `rflags` are used
//!   ([`RFLAGS_INPUT_MASK`]); bit 1 is set and TF, AC and the system flags
//!   are cleared. Reported RFLAGS are raw: IF (bit 9) is always set, and for
//!   fault-class exceptions the kernel also reports RF (bit 16).
//! - `NativeException::cr2` is only meaningful for #PF; it is 0 for every
//!   other vector (the kernel would report a stale value there).
//! - The kernel reports user accesses to kernel-half addresses as protection
//!   faults, and non-canonical addresses give #GP (or #SS via rsp/rbp).
//! - The x87/MMX/SSE state is loaded from `RegState::fp` with `fxrstor64`
//!   right before the code runs and captured with `fxsave64` after it (or,
//!   for an exception, from the FXSAVE area of the signal frame). FOP, FIP
//!   and FDP start at 0 and are not reported. `fp.mxcsr` must not have bits
//!   above 15 set (`run` rejects it: `fxrstor` would #GP).
//! - Unmasked SSE exceptions arrive as #XM (vector 19) and unmasked x87
//!   exceptions as #MF (vector 16, at the next waiting x87/MMX instruction),
//!   as the kernel reports them in the signal context's trap number.
//! - Code that executes a system call (`syscall`, `int 0x80`, ...) other than
//!   read/write/exit gets the child killed by seccomp: `run` returns an
//!   `io::Error` and the next `run` uses a fresh child. Code that changes the
//!   FS/GS base or selectors affects later runs in the same child.

/// Test code is placed here (mapped read/write/execute in the child).
pub const CODE_ADDR: u64 = 0x1000_0000;
/// Size of the code area. At most `CODE_SIZE - 64` bytes of test code are
/// accepted; the rest holds the exit sequence.
pub const CODE_SIZE: usize = 0x1_0000;
/// Data area, mapped read/write. The page right before it and the page right
/// after it are not mapped (guard pages), so tests can provoke #PF.
pub const DATA_ADDR: u64 = 0x2000_0000;
/// Size of the data area.
pub const DATA_SIZE: usize = 0x2000;

/// Guest register state. `gpr` is in x86 encoding order:
/// rax rcx rdx rbx rsp rbp rsi rdi r8 .. r15.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RegState {
    pub gpr: [u64; 16],
    pub rflags: u64,
    pub rip: u64,
    /// x87/MMX/SSE state (the default is the state after `fninit` with MXCSR = 0x1F80 and
    /// all vector registers zero).
    pub fp: FpState,
}

/// An x87 register: 64-bit significand (explicit integer bit 63) and sign|exponent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct F80 {
    pub sig: u64,
    /// Sign in bit 15, biased exponent in bits 0..15.
    pub se: u16,
}

/// The x87/MMX/SSE state as FXSAVE shows it (minus FOP/FIP/FDP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FpState {
    pub fcw: u16,
    /// Status word, TOP in bits 11..13.
    pub fsw: u16,
    /// Abridged tag word (FXSAVE form): bit i set = *physical* register Ri is not empty.
    pub ftw: u8,
    pub mxcsr: u32,
    /// ST(0)..ST(7), in stack order (ST(i) is physical register (TOP + i) & 7). MMi is the
    /// significand of physical register i.
    pub st: [F80; 8],
    /// XMM0..15: low quadword, high quadword.
    pub xmm: [[u64; 2]; 16],
}

impl Default for FpState {
    fn default() -> Self {
        FpState {
            fcw: 0x37f,
            fsw: 0,
            ftw: 0,
            mxcsr: 0x1f80,
            st: [F80::default(); 8],
            xmm: [[0; 2]; 16],
        }
    }
}

impl FpState {
    /// FSW.TOP.
    pub fn top(&self) -> u32 {
        (self.fsw as u32 >> 11) & 7
    }
    /// The physical register that ST(i) is.
    pub fn st_phys(&self, i: usize) -> usize {
        (self.top() as usize + i) & 7
    }
    /// Is ST(i) not empty?
    pub fn st_valid(&self, i: usize) -> bool {
        self.ftw >> self.st_phys(i) & 1 != 0
    }
    /// Physical register `r`.
    pub fn phys(&self, r: usize) -> F80 {
        self.st[(r.wrapping_sub(self.top() as usize)) & 7]
    }
    /// Set physical register `r`.
    pub fn set_phys(&mut self, r: usize, v: F80) {
        let i = (r.wrapping_sub(self.top() as usize)) & 7;
        self.st[i] = v;
    }

    /// The 512-byte FXSAVE (64-bit) image of this state; FOP, FIP, FDP and MXCSR_MASK are 0.
    pub fn to_fxsave(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..2].copy_from_slice(&self.fcw.to_le_bytes());
        b[2..4].copy_from_slice(&self.fsw.to_le_bytes());
        b[4] = self.ftw;
        b[24..28].copy_from_slice(&self.mxcsr.to_le_bytes());
        for (i, r) in self.st.iter().enumerate() {
            b[32 + 16 * i..40 + 16 * i].copy_from_slice(&r.sig.to_le_bytes());
            b[40 + 16 * i..42 + 16 * i].copy_from_slice(&r.se.to_le_bytes());
        }
        for (i, x) in self.xmm.iter().enumerate() {
            b[160 + 16 * i..168 + 16 * i].copy_from_slice(&x[0].to_le_bytes());
            b[168 + 16 * i..176 + 16 * i].copy_from_slice(&x[1].to_le_bytes());
        }
        b
    }

    /// Parse an FXSAVE image (at least 416 bytes: up to XMM15).
    pub fn from_fxsave(b: &[u8]) -> FpState {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let mut f = FpState {
            fcw: u16_at(0),
            fsw: u16_at(2),
            ftw: b[4],
            mxcsr: u32::from_le_bytes(b[24..28].try_into().unwrap()),
            ..FpState::default()
        };
        for i in 0..8 {
            f.st[i] = F80 {
                sig: u64_at(32 + 16 * i),
                se: u16_at(40 + 16 * i),
            };
        }
        for i in 0..16 {
            f.xmm[i] = [u64_at(160 + 16 * i), u64_at(168 + 16 * i)];
        }
        f
    }
}

/// An exception raised by the natively executed code, as reported by the
/// kernel in the signal's ucontext.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NativeException {
    /// Exception vector (the kernel's trap number), e.g. 0 #DE, 3 #BP, 6 #UD,
    /// 13 #GP, 14 #PF.
    pub vector: u8,
    /// Error code as reported by the kernel (0 for vectors without one).
    pub error_code: u64,
    /// Faulting linear address for #PF; 0 for every other vector (the kernel
    /// reports a stale value there).
    pub cr2: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NativeOutcome {
    /// Code ran off its end. `regs.rip = CODE_ADDR + code.len()`.
    Completed { regs: RegState, data: Vec<u8> },
    /// A fault/trap: regs are the registers at the fault as the kernel
    /// reports them in the signal's ucontext (for faults: rip = the faulting
    /// instruction), data = data area at that point.
    Exception {
        regs: RegState,
        data: Vec<u8>,
        exc: NativeException,
    },
    /// Did not finish within the timeout (child killed and respawned).
    Timeout,
}

/// RFLAGS bits taken from `RegState::rflags` on entry: CF PF AF ZF SF DF OF.
/// TF, AC and all system flags are cleared; bit 1 is always set.
pub const RFLAGS_INPUT_MASK: u64 = 0x0CD5;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub use imp::NativeRunner;

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
pub use unsupported::NativeRunner;

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod unsupported {
    use super::{NativeOutcome, RegState};

    /// Stand-in on hosts that cannot run x86-64 code natively.
    pub struct NativeRunner {
        _private: (),
    }

    impl NativeRunner {
        pub fn new() -> std::io::Result<Self> {
            Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "native execution needs an x86_64 Linux host",
            ))
        }

        pub fn run(
            &mut self,
            _code: &[u8],
            _init: &RegState,
            _data: &[u8],
        ) -> std::io::Result<NativeOutcome> {
            Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "native execution needs an x86_64 Linux host",
            ))
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use super::*;
    use core::ffi::{c_int, c_void};
    use std::io;
    use std::mem::{size_of, MaybeUninit};
    use std::ptr::{self, addr_of, addr_of_mut};
    use std::sync::atomic::{fence, Ordering};
    use std::time::{Duration, Instant};

    /// How long the parent waits for one run.
    pub(super) const RUN_TIMEOUT: Duration = Duration::from_secs(5);
    /// How long the parent waits for a freshly forked child to report ready.
    const SPAWN_TIMEOUT: Duration = Duration::from_secs(5);

    /// Largest accepted code length (the rest of the area is for the exit stub).
    const MAX_CODE: usize = CODE_SIZE - 64;

    // ---- child-private scratch region (fixed address below 2 GiB) ----
    //
    // The trampolines address it with absolute 32-bit displacements, so no
    // register is needed to reach it.
    const SCR: u64 = 0x3000_0000;
    const SCR_SIZE: usize = 0x1_0000;
    /// Top of the private stack used by the trampolines (in the scratch region).
    const SCR_STACK_TOP: u64 = SCR + SCR_SIZE as u64;
    // Offsets into the scratch page.
    const OFF_OUT_GPR: u64 = 0x000; // 16 x u64
    const OFF_OUT_RFLAGS: u64 = 0x080;
    const OFF_OUT_RIP: u64 = 0x088;
    const OFF_EXC_VECTOR: u64 = 0x090;
    const OFF_EXC_ERR: u64 = 0x098;
    const OFF_EXC_CR2: u64 = 0x0A0;
    const OFF_IN_GUEST: u64 = 0x0A8;
    const OFF_HOST_RSP: u64 = 0x0B0;
    const OFF_JMP_TARGET: u64 = 0x0B8;
    const OFF_MXCSR: u64 = 0x0C0;
    const OFF_IN_GPR: u64 = 0x100; // 16 x u64
    const OFF_IN_RFLAGS: u64 = 0x180;
    /// FXSAVE image loaded before the code (16-byte aligned, 512 bytes).
    const OFF_IN_FX: u64 = 0x400;
    /// FXSAVE image captured after the code or from the signal frame (512 bytes).
    const OFF_OUT_FX: u64 = 0x600;

    /// Size of the signal alternate stack.
    const ALTSTACK_SIZE: usize = 0x4_0000;

    // Protocol bytes.
    const MSG_READY: u8 = b'S';
    const MSG_RUN: u8 = b'R';
    const MSG_DONE: u8 = b'D';

    // Child exit codes for setup failures (reported by the parent).
    const EXIT_MAP_CODE: i32 = 10;
    const EXIT_MAP_DATA: i32 = 11;
    const EXIT_MAP_SCRATCH: i32 = 12;
    const EXIT_ALTSTACK: i32 = 13;
    const EXIT_SIGACTION: i32 = 14;
    const EXIT_SECCOMP: i32 = 15;
    const EXIT_SIGNAL_OUTSIDE_GUEST: i32 = 64; // + signal number

    fn setup_step_name(code: i32) -> &'static str {
        match code {
            EXIT_MAP_CODE => "mapping the code area",
            EXIT_MAP_DATA => "mapping the data area and guard pages",
            EXIT_MAP_SCRATCH => "mapping the scratch region",
            EXIT_ALTSTACK => "setting up the signal stack",
            EXIT_SIGACTION => "installing signal handlers",
            EXIT_SECCOMP => "entering seccomp strict mode",
            _ => "unknown step",
        }
    }

    /// Request and reply, in a `MAP_SHARED` anonymous mapping.
    #[repr(C)]
    struct Shared {
        // request
        code_len: u64,
        init_gpr: [u64; 16],
        init_rflags: u64,
        init_fx: [u8; 512],
        code: [u8; CODE_SIZE],
        data_in: [u8; DATA_SIZE],
        // reply
        status: u64, // 0 = completed, 1 = exception
        out_gpr: [u64; 16],
        out_rflags: u64,
        out_rip: u64,
        exc_vector: u64,
        exc_err: u64,
        exc_cr2: u64,
        out_fx: [u8; 512],
        data_out: [u8; DATA_SIZE],
    }

    // ---- trampolines ----
    //
    // enter: called from Rust as `extern "C" fn() -> u64`. Saves the host
    //   callee-saved registers on the host stack and the host rsp in the
    //   scratch page, loads the guest x87/SSE state (fxrstor64), RFLAGS (on the
    //   scratch stack) and all 16 guest GPRs (rsp last) and jumps to CODE_ADDR.
    // exit: reached by `jmp [rip+0]` appended after the test code. Stores all
    //   16 GPRs with absolute-address moves before touching the stack, then
    //   switches to the scratch stack, captures RFLAGS with pushfq, clears all
    //   flags (DF, TF, AC included), captures the x87/SSE state (fxsave64, which
    //   does not check for pending x87 exceptions), resets it (fninit, MXCSR)
    //   and returns 0 to the Rust caller.
    // recover: where the signal handler makes the kernel resume (with rsp =
    //   host rsp and DF/TF/AC cleared); returns 1 to the Rust caller.
    core::arch::global_asm!(
        ".pushsection .text.xenolith_difftest_native,\"ax\",@progbits",
        ".p2align 4",
        ".globl xenolith_difftest_native_enter",
        ".type xenolith_difftest_native_enter,@function",
        "xenolith_difftest_native_enter:",
        "push rbx",
        "push rbp",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "mov qword ptr [{scr} + {host_rsp}], rsp",
        "fxrstor64 [{scr} + {in_fx}]",
        "mov qword ptr [{scr} + {in_guest}], 1",
        "mov rsp, {stack_top}",
        "push qword ptr [{scr} + {in_rflags}]",
        "popfq",
        "mov rax, qword ptr [{scr} + {in_gpr} + 0]",
        "mov rcx, qword ptr [{scr} + {in_gpr} + 8]",
        "mov rdx, qword ptr [{scr} + {in_gpr} + 16]",
        "mov rbx, qword ptr [{scr} + {in_gpr} + 24]",
        "mov rbp, qword ptr [{scr} + {in_gpr} + 40]",
        "mov rsi, qword ptr [{scr} + {in_gpr} + 48]",
        "mov rdi, qword ptr [{scr} + {in_gpr} + 56]",
        "mov r8,  qword ptr [{scr} + {in_gpr} + 64]",
        "mov r9,  qword ptr [{scr} + {in_gpr} + 72]",
        "mov r10, qword ptr [{scr} + {in_gpr} + 80]",
        "mov r11, qword ptr [{scr} + {in_gpr} + 88]",
        "mov r12, qword ptr [{scr} + {in_gpr} + 96]",
        "mov r13, qword ptr [{scr} + {in_gpr} + 104]",
        "mov r14, qword ptr [{scr} + {in_gpr} + 112]",
        "mov r15, qword ptr [{scr} + {in_gpr} + 120]",
        "mov rsp, qword ptr [{scr} + {in_gpr} + 32]",
        "jmp qword ptr [{scr} + {jmp_target}]",
        ".size xenolith_difftest_native_enter, . - xenolith_difftest_native_enter",
        "",
        ".p2align 4",
        ".globl xenolith_difftest_native_exit",
        ".type xenolith_difftest_native_exit,@function",
        "xenolith_difftest_native_exit:",
        "mov qword ptr [{scr} + {out_gpr} + 0], rax",
        "mov qword ptr [{scr} + {out_gpr} + 8], rcx",
        "mov qword ptr [{scr} + {out_gpr} + 16], rdx",
        "mov qword ptr [{scr} + {out_gpr} + 24], rbx",
        "mov qword ptr [{scr} + {out_gpr} + 32], rsp",
        "mov qword ptr [{scr} + {out_gpr} + 40], rbp",
        "mov qword ptr [{scr} + {out_gpr} + 48], rsi",
        "mov qword ptr [{scr} + {out_gpr} + 56], rdi",
        "mov qword ptr [{scr} + {out_gpr} + 64], r8",
        "mov qword ptr [{scr} + {out_gpr} + 72], r9",
        "mov qword ptr [{scr} + {out_gpr} + 80], r10",
        "mov qword ptr [{scr} + {out_gpr} + 88], r11",
        "mov qword ptr [{scr} + {out_gpr} + 96], r12",
        "mov qword ptr [{scr} + {out_gpr} + 104], r13",
        "mov qword ptr [{scr} + {out_gpr} + 112], r14",
        "mov qword ptr [{scr} + {out_gpr} + 120], r15",
        "mov rsp, {stack_top}",
        "pushfq",
        "pop qword ptr [{scr} + {out_rflags}]",
        "push 2",
        "popfq",
        "mov qword ptr [{scr} + {in_guest}], 0",
        "fxsave64 [{scr} + {out_fx}]",
        "fninit",
        "ldmxcsr dword ptr [{scr} + {mxcsr}]",
        "xor eax, eax",
        "jmp 2f",
        ".size xenolith_difftest_native_exit, . - xenolith_difftest_native_exit",
        "",
        ".p2align 4",
        ".globl xenolith_difftest_native_recover",
        ".type xenolith_difftest_native_recover,@function",
        "xenolith_difftest_native_recover:",
        "cld",
        "mov qword ptr [{scr} + {in_guest}], 0",
        "fninit",
        "ldmxcsr dword ptr [{scr} + {mxcsr}]",
        "mov eax, 1",
        "2:",
        "mov rsp, qword ptr [{scr} + {host_rsp}]",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbp",
        "pop rbx",
        "ret",
        ".size xenolith_difftest_native_recover, . - xenolith_difftest_native_recover",
        ".popsection",
        scr = const SCR,
        stack_top = const SCR_STACK_TOP,
        host_rsp = const OFF_HOST_RSP,
        mxcsr = const OFF_MXCSR,
        in_guest = const OFF_IN_GUEST,
        in_rflags = const OFF_IN_RFLAGS,
        in_gpr = const OFF_IN_GPR,
        out_gpr = const OFF_OUT_GPR,
        out_rflags = const OFF_OUT_RFLAGS,
        jmp_target = const OFF_JMP_TARGET,
        in_fx = const OFF_IN_FX,
        out_fx = const OFF_OUT_FX,
    );

    extern "C" {
        fn xenolith_difftest_native_enter() -> u64;
        fn xenolith_difftest_native_exit();
        fn xenolith_difftest_native_recover();
    }

    // ---- raw syscalls (no libc wrappers, no errno/TLS; usable after seccomp) ----

    /// # Safety
    /// The caller must pass arguments valid for syscall `nr`.
    #[inline(always)]
    unsafe fn raw_syscall3(nr: i64, a1: u64, a2: u64, a3: u64) -> i64 {
        let ret: i64;
        // SAFETY: the `syscall` instruction only clobbers rax (result), rcx and
        // r11, which are declared; memory effects are covered by not using
        // `nomem`. Argument validity is the caller's obligation.
        unsafe {
            core::arch::asm!(
                "syscall",
                inlateout("rax") nr => ret,
                in("rdi") a1,
                in("rsi") a2,
                in("rdx") a3,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    fn raw_read_byte(fd: c_int) -> i64 {
        let mut b = 0u8;
        // SAFETY: reads at most one byte into a live local.
        let n = unsafe { raw_syscall3(libc::SYS_read, fd as u64, addr_of_mut!(b) as u64, 1) };
        if n == 1 {
            b as i64
        } else {
            n.min(-1)
        }
    }

    fn raw_write_byte(fd: c_int, b: u8) -> i64 {
        // SAFETY: writes one byte from a live local.
        unsafe { raw_syscall3(libc::SYS_write, fd as u64, addr_of!(b) as u64, 1) }
    }

    fn raw_exit(code: i32) -> ! {
        loop {
            // SAFETY: SYS_exit takes one integer and does not return.
            unsafe {
                raw_syscall3(libc::SYS_exit, code as u64, 0, 0);
            }
        }
    }

    // ---- signal handler (child) ----

    /// Handler for SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGTRAP in the child.
    /// Only plain memory accesses and (on a host bug) the raw exit syscall.
    extern "C" fn on_signal(sig: c_int, _info: *mut libc::siginfo_t, ctx: *mut c_void) {
        let scr = SCR as *mut u64;
        // SAFETY: the scratch region is mapped RW in the child before the
        // handlers are installed; `ctx` is the kernel-provided ucontext_t,
        // valid for the duration of the handler. All gregs indices are
        // constants below the array length (23).
        unsafe {
            if ptr::read_volatile(scr.add((OFF_IN_GUEST / 8) as usize)) == 0 {
                // A fault in the child's own code: die, the parent respawns.
                raw_exit(EXIT_SIGNAL_OUTSIDE_GUEST + sig);
            }
            let uc = ctx as *mut libc::ucontext_t;
            let g = &mut (*uc).uc_mcontext.gregs;
            const ORDER: [c_int; 16] = [
                libc::REG_RAX,
                libc::REG_RCX,
                libc::REG_RDX,
                libc::REG_RBX,
                libc::REG_RSP,
                libc::REG_RBP,
                libc::REG_RSI,
                libc::REG_RDI,
                libc::REG_R8,
                libc::REG_R9,
                libc::REG_R10,
                libc::REG_R11,
                libc::REG_R12,
                libc::REG_R13,
                libc::REG_R14,
                libc::REG_R15,
            ];
            let out = scr.add((OFF_OUT_GPR / 8) as usize);
            let mut i = 0;
            while i < 16 {
                ptr::write_volatile(out.add(i), g[ORDER[i] as usize] as u64);
                i += 1;
            }
            let vector = g[libc::REG_TRAPNO as usize] as u64;
            ptr::write_volatile(
                scr.add((OFF_OUT_RFLAGS / 8) as usize),
                g[libc::REG_EFL as usize] as u64,
            );
            ptr::write_volatile(
                scr.add((OFF_OUT_RIP / 8) as usize),
                g[libc::REG_RIP as usize] as u64,
            );
            ptr::write_volatile(scr.add((OFF_EXC_VECTOR / 8) as usize), vector);
            ptr::write_volatile(
                scr.add((OFF_EXC_ERR / 8) as usize),
                g[libc::REG_ERR as usize] as u64,
            );
            let cr2 = if vector == 14 {
                g[libc::REG_CR2 as usize] as u64
            } else {
                0
            };
            ptr::write_volatile(scr.add((OFF_EXC_CR2 / 8) as usize), cr2);
            save_sigframe_fpstate((*uc).uc_mcontext.fpregs as *const u8);

            // Resume in the recovery stub on the host stack with DF/TF/AC clear.
            let host_rsp = ptr::read_volatile(scr.add((OFF_HOST_RSP / 8) as usize));
            g[libc::REG_RSP as usize] = host_rsp as i64;
            g[libc::REG_RIP as usize] =
                xenolith_difftest_native_recover as *const () as usize as i64;
            g[libc::REG_EFL as usize] &= !((1 << 8) | (1 << 10) | (1 << 18));
            // A fault in compatibility-mode code: resume the recovery stub in 64-bit mode.
            let csgsfs = g[libc::REG_CSGSFS as usize] as u64;
            g[libc::REG_CSGSFS as usize] = ((csgsfs & !0xffff) | 0x33) as i64;
        }
    }

    /// Copies the x87/SSE state at the fault from the signal frame's FXSAVE-format area to
    /// the scratch page's output image. With an XSAVE frame, components whose XSTATE_BV bit
    /// is clear are in their initial configuration (their legacy-area bytes may be stale).
    ///
    /// # Safety
    /// Called from the signal handler with the kernel's `fpregs` pointer (or null); the
    /// scratch region must be mapped.
    unsafe fn save_sigframe_fpstate(fx: *const u8) {
        const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
        let out = (SCR + OFF_OUT_FX) as *mut u64;
        // SAFETY: see the function's contract; all offsets are within the 512-byte legacy
        // area (plus the XSAVE header at 512 when the frame's magic says it is there).
        unsafe {
            if fx.is_null() {
                // No FP state in the frame: report the initial state.
                let mut i = 0;
                while i < 64 {
                    ptr::write_volatile(out.add(i), 0);
                    i += 1;
                }
                ptr::write_volatile(out, 0x37f);
                ptr::write_volatile(out.add(3), 0x1f80);
                return;
            }
            let src = fx as *const u64;
            let mut i = 0;
            while i < 64 {
                ptr::write_volatile(out.add(i), ptr::read_volatile(src.add(i)));
                i += 1;
            }
            // struct _fpx_sw_bytes at offset 464: magic1, extended_size, xfeatures, ...
            let magic1 = ptr::read_volatile(fx.add(464) as *const u32);
            if magic1 == FP_XSTATE_MAGIC1 {
                let xstate_bv = ptr::read_volatile(fx.add(512) as *const u64);
                if xstate_bv & 1 == 0 {
                    // x87 in its initial state: FCW 0x37F, FSW 0, FTW empty, FOP/FIP/FDP
                    // 0, registers 0 (bytes 0..24 and 32..160; MXCSR stays).
                    ptr::write_volatile(out, 0x37f);
                    ptr::write_volatile(out.add(1), 0);
                    ptr::write_volatile(out.add(2), 0);
                    let mut i = 4;
                    while i < 20 {
                        ptr::write_volatile(out.add(i), 0);
                        i += 1;
                    }
                }
                if xstate_bv & 2 == 0 {
                    // SSE in its initial state: XMM registers 0 (MXCSR is saved anyway).
                    let mut i = 20;
                    while i < 52 {
                        ptr::write_volatile(out.add(i), 0);
                        i += 1;
                    }
                }
            }
        }
    }

    // ---- child ----

    /// Maps `len` bytes at exactly `addr` without replacing anything.
    ///
    /// # Safety
    /// Only creates a new mapping; must be called in the child.
    unsafe fn map_fixed(addr: u64, len: usize, prot: c_int) -> bool {
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; on
        // kernels that ignore the flag, a result elsewhere is unmapped again.
        unsafe {
            let p = libc::mmap(
                addr as *mut c_void,
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return false;
            }
            if p as u64 != addr {
                libc::munmap(p, len);
                return false;
            }
            true
        }
    }

    /// Closes every descriptor >= 3 except `keep_a` and `keep_b` (both >= 3).
    fn close_other_fds(keep_a: c_int, keep_b: c_int) {
        let (lo, hi) = if keep_a < keep_b {
            (keep_a as u32, keep_b as u32)
        } else {
            (keep_b as u32, keep_a as u32)
        };
        // lo >= 3, so none of these bounds wraps.
        let ranges = [(3u32, lo - 1), (lo + 1, hi - 1), (hi + 1, u32::MAX)];
        for (first, last) in ranges {
            if first > last {
                continue;
            }
            // SAFETY: close_range only closes descriptors; the child owns its
            // copies of the inherited descriptors.
            let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
            if r != 0 {
                // Old kernel: close a bounded range by hand.
                let end = last.min(4095);
                let mut fd = first;
                while fd <= end {
                    // SAFETY: as above.
                    unsafe { libc::close(fd as c_int) };
                    fd += 1;
                }
            }
        }
    }

    /// Body of the forked child. Never returns. Must not allocate (the parent
    /// may be multi-threaded) and, after seccomp, only uses raw read/write/exit.
    extern "C" fn child_main(req_r: c_int, rep_w: c_int, shared: *mut Shared, exit_addr: u64) -> ! {
        close_other_fds(req_r, rep_w);

        // SAFETY: all calls below are thin system-call wrappers operating on
        // memory the child owns: fresh fixed mappings (never replacing any
        // existing mapping), the inherited shared region, and stack locals.
        unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );

            // Code area, filled with int3.
            if !map_fixed(
                CODE_ADDR,
                CODE_SIZE,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            ) {
                raw_exit(EXIT_MAP_CODE);
            }
            ptr::write_bytes(CODE_ADDR as *mut u8, 0xCC, CODE_SIZE);

            // Data area plus guard pages: reserve all, then unmap the guards,
            // so nothing else can sit there.
            let guard_lo = DATA_ADDR - 4096;
            let guard_hi = DATA_ADDR + DATA_SIZE as u64;
            if !map_fixed(
                guard_lo,
                DATA_SIZE + 2 * 4096,
                libc::PROT_READ | libc::PROT_WRITE,
            ) {
                raw_exit(EXIT_MAP_DATA);
            }
            if libc::munmap(guard_lo as *mut c_void, 4096) != 0
                || libc::munmap(guard_hi as *mut c_void, 4096) != 0
            {
                raw_exit(EXIT_MAP_DATA);
            }

            // Scratch region for the trampolines.
            if !map_fixed(SCR, SCR_SIZE, libc::PROT_READ | libc::PROT_WRITE) {
                raw_exit(EXIT_MAP_SCRATCH);
            }
            let scr = SCR as *mut u64;
            ptr::write_volatile(scr.add((OFF_JMP_TARGET / 8) as usize), CODE_ADDR);
            ptr::write_volatile(scr.add((OFF_MXCSR / 8) as usize), 0x1F80);

            // Alternate signal stack.
            let alt = libc::mmap(
                ptr::null_mut(),
                ALTSTACK_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if alt == libc::MAP_FAILED {
                raw_exit(EXIT_ALTSTACK);
            }
            let ss = libc::stack_t {
                ss_sp: alt,
                ss_flags: 0,
                ss_size: ALTSTACK_SIZE,
            };
            if libc::sigaltstack(&ss, ptr::null_mut()) != 0 {
                raw_exit(EXIT_ALTSTACK);
            }

            // Signal handlers.
            let mut sa: libc::sigaction = MaybeUninit::zeroed().assume_init();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigfillset(&mut sa.sa_mask);
            for sig in [
                libc::SIGSEGV,
                libc::SIGBUS,
                libc::SIGFPE,
                libc::SIGILL,
                libc::SIGTRAP,
            ] {
                if libc::sigaction(sig, &sa, ptr::null_mut()) != 0 {
                    raw_exit(EXIT_SIGACTION);
                }
            }
            let mut empty: libc::sigset_t = MaybeUninit::zeroed().assume_init();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, ptr::null_mut());

            // Sandbox: from here on only read, write, exit and rt_sigreturn.
            if libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_STRICT as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                raw_exit(EXIT_SECCOMP);
            }
        }

        if raw_write_byte(rep_w, MSG_READY) != 1 {
            raw_exit(1);
        }

        let exit_stub: [u8; 14] = {
            let a = exit_addr.to_le_bytes();
            // jmp qword ptr [rip+0]; dq exit_addr
            [
                0xFF, 0x25, 0, 0, 0, 0, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7],
            ]
        };
        let mut prev_end = 0usize;
        loop {
            let b = raw_read_byte(req_r);
            if b == -(libc::EINTR as i64) {
                continue;
            }
            if b != MSG_RUN as i64 {
                raw_exit(0); // EOF or error: the parent is gone.
            }
            // SAFETY: `shared` is the inherited MAP_SHARED region of type
            // `Shared`, which the parent does not touch between sending the
            // request byte and receiving the reply byte. CODE_ADDR, DATA_ADDR
            // and SCR are mapped above; all copies are bounded by the sizes of
            // those areas (`len <= MAX_CODE`, so `len + 14 <= CODE_SIZE`).
            unsafe {
                fence(Ordering::SeqCst);
                let len = ((*shared).code_len as usize).min(MAX_CODE);
                let code = CODE_ADDR as *mut u8;
                ptr::copy_nonoverlapping(addr_of!((*shared).code) as *const u8, code, len);
                ptr::copy_nonoverlapping(exit_stub.as_ptr(), code.add(len), exit_stub.len());
                let end = len + exit_stub.len();
                if prev_end > end {
                    ptr::write_bytes(code.add(end), 0xCC, prev_end - end);
                }
                prev_end = end;
                ptr::copy_nonoverlapping(
                    addr_of!((*shared).data_in) as *const u8,
                    DATA_ADDR as *mut u8,
                    DATA_SIZE,
                );
                let scr = SCR as *mut u64;
                let in_gpr = scr.add((OFF_IN_GPR / 8) as usize);
                for i in 0..16 {
                    ptr::write_volatile(in_gpr.add(i), (*shared).init_gpr[i]);
                }
                let rflags = ((*shared).init_rflags & RFLAGS_INPUT_MASK) | 2;
                ptr::write_volatile(scr.add((OFF_IN_RFLAGS / 8) as usize), rflags);
                ptr::copy_nonoverlapping(
                    addr_of!((*shared).init_fx) as *const u8,
                    (SCR + OFF_IN_FX) as *mut u8,
                    512,
                );

                let status = xenolith_difftest_native_enter();

                let out_gpr = scr.add((OFF_OUT_GPR / 8) as usize);
                for i in 0..16 {
                    (*shared).out_gpr[i] = ptr::read_volatile(out_gpr.add(i));
                }
                (*shared).out_rflags = ptr::read_volatile(scr.add((OFF_OUT_RFLAGS / 8) as usize));
                ptr::copy_nonoverlapping(
                    (SCR + OFF_OUT_FX) as *const u8,
                    addr_of_mut!((*shared).out_fx) as *mut u8,
                    512,
                );
                (*shared).status = status;
                if status == 0 {
                    (*shared).out_rip = CODE_ADDR + len as u64;
                    (*shared).exc_vector = 0;
                    (*shared).exc_err = 0;
                    (*shared).exc_cr2 = 0;
                } else {
                    (*shared).out_rip = ptr::read_volatile(scr.add((OFF_OUT_RIP / 8) as usize));
                    (*shared).exc_vector =
                        ptr::read_volatile(scr.add((OFF_EXC_VECTOR / 8) as usize));
                    (*shared).exc_err = ptr::read_volatile(scr.add((OFF_EXC_ERR / 8) as usize));
                    (*shared).exc_cr2 = ptr::read_volatile(scr.add((OFF_EXC_CR2 / 8) as usize));
                }
                ptr::copy_nonoverlapping(
                    DATA_ADDR as *const u8,
                    addr_of_mut!((*shared).data_out) as *mut u8,
                    DATA_SIZE,
                );
                fence(Ordering::SeqCst);
            }
            if raw_write_byte(rep_w, MSG_DONE) != 1 {
                raw_exit(0);
            }
        }
    }

    // ---- parent ----

    struct Child {
        pid: libc::pid_t,
        /// Write end of the request pipe.
        req_w: c_int,
        /// The parent keeps the read end of the request pipe open too, so a
        /// write never raises SIGPIPE even if the child has died.
        req_r: c_int,
        /// Read end of the reply pipe.
        rep_r: c_int,
    }

    impl Child {
        /// Kills (SIGKILL) and reaps the child, closes the pipes. Returns the
        /// wait status.
        fn kill_and_reap(self) -> c_int {
            let mut status = 0;
            // SAFETY: `pid` is our own child that has not been reaped yet (it
            // is reaped only here, and `self` is consumed); the fds are ours.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                while libc::waitpid(self.pid, &mut status, 0) < 0
                    && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
                {
                }
                libc::close(self.req_w);
                libc::close(self.req_r);
                libc::close(self.rep_r);
            }
            status
        }
    }

    fn describe_status(status: c_int) -> String {
        if libc::WIFEXITED(status) {
            let code = libc::WEXITSTATUS(status);
            if code >= EXIT_SIGNAL_OUTSIDE_GUEST {
                format!(
                    "exited with code {code} (signal {} outside the guest code)",
                    code - EXIT_SIGNAL_OUTSIDE_GUEST
                )
            } else {
                format!("exited with code {code}")
            }
        } else if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            if sig == libc::SIGKILL {
                "was killed by SIGKILL (seccomp violation: did the code execute a system call?)"
                    .to_string()
            } else {
                format!("was killed by signal {sig}")
            }
        } else {
            format!("ended with wait status {status:#x}")
        }
    }

    enum Wait {
        Byte(u8),
        Eof,
        Timeout,
    }

    /// Waits up to `timeout` for one byte on `fd`.
    fn wait_byte(fd: c_int, timeout: Duration) -> io::Result<Wait> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(Wait::Timeout);
            }
            let ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as c_int;
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is a valid pollfd array of length 1.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if r == 0 {
                continue; // re-checks the deadline
            }
            let mut b = 0u8;
            // SAFETY: reads at most one byte into a live local.
            let n = unsafe { libc::read(fd, addr_of_mut!(b) as *mut c_void, 1) };
            if n == 1 {
                return Ok(Wait::Byte(b));
            }
            if n == 0 {
                return Ok(Wait::Eof);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted && e.kind() != io::ErrorKind::WouldBlock {
                return Err(e);
            }
        }
    }

    fn pipe() -> io::Result<(c_int, c_int)> {
        let mut fds = [0 as c_int; 2];
        // SAFETY: `fds` is a valid array of two ints.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((fds[0], fds[1]))
    }

    fn close_fds(fds: &[c_int]) {
        for &fd in fds {
            // SAFETY: closes descriptors this module created and owns.
            unsafe { libc::close(fd) };
        }
    }

    /// Runs generated x86-64 code natively in a sandboxed child process.
    pub struct NativeRunner {
        shared: *mut Shared,
        shared_len: usize,
        child: Option<Child>,
    }

    // SAFETY: the shared mapping is owned exclusively by this runner (and its
    // child); nothing in it is tied to the creating thread, and all access
    // goes through `&mut self`.
    unsafe impl Send for NativeRunner {}

    impl NativeRunner {
        pub fn new() -> io::Result<Self> {
            let shared_len = size_of::<Shared>().next_multiple_of(4096);
            // SAFETY: a fresh anonymous shared mapping; zero-filled, which is a
            // valid `Shared` (plain integers and byte arrays).
            let p = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    shared_len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let mut runner = NativeRunner {
                shared: p as *mut Shared,
                shared_len,
                child: None,
            };
            runner.spawn()?;
            Ok(runner)
        }

        fn spawn(&mut self) -> io::Result<()> {
            debug_assert!(self.child.is_none());
            let (req_r, req_w) = pipe()?;
            let (rep_r, rep_w) = match pipe() {
                Ok(p) => p,
                Err(e) => {
                    close_fds(&[req_r, req_w]);
                    return Err(e);
                }
            };
            let exit_addr = xenolith_difftest_native_exit as *const () as usize as u64;
            // SAFETY: fork() itself is sound; the child only runs `child_main`,
            // which performs no allocation and no locking (so it is safe even
            // if other threads of the parent held locks at fork time) and never
            // returns or unwinds (`extern "C"` + `-> !`).
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                let e = io::Error::last_os_error();
                close_fds(&[req_r, req_w, rep_r, rep_w]);
                return Err(e);
            }
            if pid == 0 {
                child_main(req_r, rep_w, self.shared, exit_addr);
            }
            close_fds(&[rep_w]);
            let child = Child {
                pid,
                req_w,
                req_r,
                rep_r,
            };
            match wait_byte(rep_r, SPAWN_TIMEOUT) {
                Ok(Wait::Byte(MSG_READY)) => {
                    self.child = Some(child);
                    Ok(())
                }
                Ok(Wait::Byte(b)) => {
                    child.kill_and_reap();
                    Err(io::Error::other(format!(
                        "native child sent unexpected byte {b:#x} during setup"
                    )))
                }
                Ok(Wait::Eof) => {
                    let status = child.kill_and_reap();
                    let detail = if libc::WIFEXITED(status) {
                        format!(" during {}", setup_step_name(libc::WEXITSTATUS(status)))
                    } else {
                        String::new()
                    };
                    Err(io::Error::other(format!(
                        "native child failed to start: it {}{detail}",
                        describe_status(status)
                    )))
                }
                Ok(Wait::Timeout) => {
                    child.kill_and_reap();
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "native child did not become ready",
                    ))
                }
                Err(e) => {
                    child.kill_and_reap();
                    Err(e)
                }
            }
        }

        /// Kills the current child (if any) and starts a new one.
        fn respawn(&mut self) -> io::Result<c_int> {
            let status = self.child.take().map_or(0, Child::kill_and_reap);
            self.spawn()?;
            Ok(status)
        }

        /// Runs `code` (<= CODE_SIZE - 64 bytes) at CODE_ADDR with the given
        /// initial registers (`init.rip` ignored: execution starts at
        /// CODE_ADDR; only CF PF AF ZF SF DF OF of `init.rflags` are used) and
        /// the initial data area contents (`data.len() == DATA_SIZE`).
        pub fn run(
            &mut self,
            code: &[u8],
            init: &RegState,
            data: &[u8],
        ) -> io::Result<NativeOutcome> {
            if code.len() > MAX_CODE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("code is {} bytes, at most {MAX_CODE} allowed", code.len()),
                ));
            }
            if data.len() != DATA_SIZE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("data is {} bytes, must be {DATA_SIZE}", data.len()),
                ));
            }
            if init.fp.mxcsr & !0xffff != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("MXCSR {:#x} has reserved bits set", init.fp.mxcsr),
                ));
            }
            if self.child.is_none() {
                self.spawn()?;
            }
            let fx = init.fp.to_fxsave();
            let sh = self.shared;
            // SAFETY: `sh` points to our live shared mapping of type `Shared`;
            // the child only touches it between our request byte and its reply
            // byte, and no request is outstanding now.
            unsafe {
                (*sh).code_len = code.len() as u64;
                (*sh).init_gpr = init.gpr;
                (*sh).init_rflags = init.rflags;
                (*sh).init_fx = fx;
                ptr::copy_nonoverlapping(
                    code.as_ptr(),
                    addr_of_mut!((*sh).code) as *mut u8,
                    code.len(),
                );
                ptr::copy_nonoverlapping(
                    data.as_ptr(),
                    addr_of_mut!((*sh).data_in) as *mut u8,
                    DATA_SIZE,
                );
            }
            fence(Ordering::SeqCst);

            let (req_w, rep_r) = {
                let c = self.child.as_ref().expect("child present");
                (c.req_w, c.rep_r)
            };
            loop {
                let b = MSG_RUN;
                // SAFETY: writes one byte from a live local to our pipe. The
                // parent also holds the pipe's read end, so this cannot SIGPIPE.
                let n = unsafe { libc::write(req_w, addr_of!(b) as *const c_void, 1) };
                if n == 1 {
                    break;
                }
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    let _ = self.respawn();
                    return Err(e);
                }
            }

            match wait_byte(rep_r, RUN_TIMEOUT) {
                Ok(Wait::Byte(MSG_DONE)) => {}
                Ok(Wait::Timeout) => {
                    self.respawn()?;
                    return Ok(NativeOutcome::Timeout);
                }
                Ok(Wait::Eof) => {
                    let status = self.respawn()?;
                    return Err(io::Error::other(format!(
                        "native child died unexpectedly: it {}",
                        describe_status(status)
                    )));
                }
                Ok(Wait::Byte(b)) => {
                    let _ = self.respawn();
                    return Err(io::Error::other(format!(
                        "native child sent unexpected byte {b:#x}"
                    )));
                }
                Err(e) => {
                    let _ = self.respawn();
                    return Err(e);
                }
            }
            fence(Ordering::SeqCst);

            // SAFETY: the child has written the reply and is now blocked
            // waiting for the next request; the mapping is live.
            unsafe {
                let out_fx = (*sh).out_fx;
                let regs = RegState {
                    gpr: (*sh).out_gpr,
                    rflags: (*sh).out_rflags,
                    rip: (*sh).out_rip,
                    fp: FpState::from_fxsave(&out_fx),
                };
                let data = (*sh).data_out.to_vec();
                if (*sh).status == 0 {
                    Ok(NativeOutcome::Completed { regs, data })
                } else {
                    Ok(NativeOutcome::Exception {
                        regs,
                        data,
                        exc: NativeException {
                            vector: (*sh).exc_vector as u8,
                            error_code: (*sh).exc_err,
                            cr2: (*sh).exc_cr2,
                        },
                    })
                }
            }
        }
    }

    impl Drop for NativeRunner {
        fn drop(&mut self) {
            if let Some(child) = self.child.take() {
                child.kill_and_reap();
            }
            // SAFETY: unmaps the region mapped in `new`; no child uses it any
            // more (killed and reaped above) and no references into it remain.
            unsafe {
                libc::munmap(self.shared as *mut c_void, self.shared_len);
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64", target_os = "linux"))]
mod tests {
    use super::*;
    use iced_x86::code_asm::*;
    use std::time::Instant;

    const RAX: usize = 0;
    const RCX: usize = 1;
    const RDX: usize = 2;
    const RSP: usize = 4;
    const RSI: usize = 6;
    const RDI: usize = 7;

    const CF: u64 = 1 << 0;
    const PF: u64 = 1 << 2;
    const AF: u64 = 1 << 4;
    const ZF: u64 = 1 << 6;
    const SF: u64 = 1 << 7;
    const OF: u64 = 1 << 11;

    fn assemble(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
        let mut a = CodeAssembler::new(64).unwrap();
        f(&mut a).unwrap();
        a.assemble(CODE_ADDR).unwrap()
    }

    /// Distinct, recognisable register values; rsp points into the data area.
    fn init_regs() -> RegState {
        let mut r = RegState::default();
        for (i, g) in r.gpr.iter_mut().enumerate() {
            *g = 0x1111_0000_0000_0000u64.wrapping_mul(i as u64 + 1) + i as u64;
        }
        r.gpr[RSP] = DATA_ADDR + 0x1000;
        r.rflags = 0x2;
        r
    }

    fn data() -> Vec<u8> {
        (0..DATA_SIZE).map(|i| (i * 7 + 3) as u8).collect()
    }

    fn expect_exception(out: NativeOutcome) -> (RegState, Vec<u8>, NativeException) {
        match out {
            NativeOutcome::Exception { regs, data, exc } => (regs, data, exc),
            other => panic!("expected an exception, got {other:?}"),
        }
    }

    #[test]
    fn native_add_completes() {
        let mut r = NativeRunner::new().unwrap();
        let code = assemble(|a| a.add(rax, rbx));
        let mut init = init_regs();
        init.gpr[RAX] = 5;
        init.gpr[3] = 7;
        init.rflags = 0x2 | CF | ZF | SF | OF | AF; // all cleared by the add
        let d = data();
        match r.run(&code, &init, &d).unwrap() {
            NativeOutcome::Completed { regs, data } => {
                assert_eq!(regs.rip, CODE_ADDR + code.len() as u64);
                assert_eq!(regs.gpr[RAX], 12);
                for i in 1..16 {
                    assert_eq!(regs.gpr[i], init.gpr[i], "gpr {i} changed");
                }
                assert_eq!(regs.rflags & (CF | PF | AF | ZF | SF | OF), PF);
                assert_ne!(regs.rflags & 2, 0);
                assert_eq!(regs.rflags & (1 << 8 | 1 << 10 | 1 << 18), 0);
                assert_eq!(data, d);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn native_store_to_data() {
        let mut r = NativeRunner::new().unwrap();
        let code = assemble(|a| a.mov(qword_ptr(rsi + 8), rdi));
        let mut init = init_regs();
        init.gpr[RSI] = DATA_ADDR;
        init.gpr[RDI] = 0x0123_4567_89AB_CDEF;
        let d = data();
        match r.run(&code, &init, &d).unwrap() {
            NativeOutcome::Completed { regs, data } => {
                assert_eq!(&data[8..16], &0x0123_4567_89AB_CDEFu64.to_le_bytes());
                assert_eq!(&data[..8], &d[..8]);
                assert_eq!(&data[16..], &d[16..]);
                assert_eq!(regs.gpr, init.gpr);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn native_ud2() {
        let mut r = NativeRunner::new().unwrap();
        let code = assemble(|a| a.ud2());
        let init = init_regs();
        let (regs, _, exc) = expect_exception(r.run(&code, &init, &data()).unwrap());
        assert_eq!(exc.vector, 6);
        assert_eq!(regs.rip, CODE_ADDR);
        assert_eq!(regs.gpr, init.gpr);
    }

    #[test]
    fn native_divide_error() {
        let mut r = NativeRunner::new().unwrap();
        let code = assemble(|a| {
            a.xor(edx, edx)?;
            a.div(rcx)
        });
        let mut init = init_regs();
        init.gpr[RCX] = 0;
        let (regs, _, exc) = expect_exception(r.run(&code, &init, &data()).unwrap());
        assert_eq!(exc.vector, 0);
        assert_eq!(regs.rip, CODE_ADDR + 2); // xor edx, edx is 2 bytes
        assert_eq!(regs.gpr[RDX], 0);
        assert_eq!(regs.gpr[RAX], init.gpr[RAX]);
    }

    #[test]
    fn native_page_faults() {
        let mut r = NativeRunner::new().unwrap();
        let d = data();
        let mut init = init_regs();

        // Read from the guard page after the data area.
        let addr = DATA_ADDR + DATA_SIZE as u64;
        init.gpr[RSI] = addr;
        let load = assemble(|a| a.mov(rax, qword_ptr(rsi)));
        let (regs, _, exc) = expect_exception(r.run(&load, &init, &d).unwrap());
        assert_eq!(
            exc,
            NativeException {
                vector: 14,
                error_code: 4,
                cr2: addr
            }
        );
        assert_eq!(regs.rip, CODE_ADDR);

        // Write to it.
        let store = assemble(|a| a.mov(qword_ptr(rsi), rax));
        let (_, _, exc) = expect_exception(r.run(&store, &init, &d).unwrap());
        assert_eq!(
            exc,
            NativeException {
                vector: 14,
                error_code: 6,
                cr2: addr
            }
        );

        // The guard page before the data area; the data written before the
        // fault is reported.
        let addr = DATA_ADDR - 8;
        init.gpr[RSI] = addr;
        let code = assemble(|a| {
            a.mov(qword_ptr(rsi + 16), rax)?;
            a.mov(qword_ptr(rsi), rax)
        });
        let (regs, data, exc) = expect_exception(r.run(&code, &init, &d).unwrap());
        assert_eq!(
            exc,
            NativeException {
                vector: 14,
                error_code: 6,
                cr2: addr
            }
        );
        assert_eq!(regs.rip, CODE_ADDR + 4);
        assert_eq!(&data[8..16], &init.gpr[RAX].to_le_bytes());
    }

    #[test]
    fn native_non_canonical() {
        let mut r = NativeRunner::new().unwrap();
        let mut init = init_regs();
        init.gpr[RSI] = 0x8000_0000_0000_0000;
        let code = assemble(|a| a.mov(rax, qword_ptr(rsi)));
        let (regs, _, exc) = expect_exception(r.run(&code, &init, &data()).unwrap());
        assert_eq!(exc.vector, 13);
        assert_eq!(exc.error_code, 0);
        assert_eq!(regs.rip, CODE_ADDR);
    }

    #[test]
    fn native_int3() {
        let mut r = NativeRunner::new().unwrap();
        let code = assemble(|a| {
            a.nop()?;
            a.int3()
        });
        let init = init_regs();
        let (regs, _, exc) = expect_exception(r.run(&code, &init, &data()).unwrap());
        assert_eq!(exc.vector, 3);
        assert_eq!(regs.rip, CODE_ADDR + 2); // a trap: rip after the int3
    }

    #[test]
    fn native_many_runs() {
        let mut r = NativeRunner::new().unwrap();
        let code = assemble(|a| {
            a.add(rax, rbx)?;
            a.mov(qword_ptr(rsi), rax)?;
            a.inc(rcx)
        });
        let mut init = init_regs();
        init.gpr[RSI] = DATA_ADDR;
        let d = data();
        const N: u64 = 10_000;
        let t = Instant::now();
        for i in 0..N {
            init.gpr[RAX] = i;
            match r.run(&code, &init, &d).unwrap() {
                NativeOutcome::Completed { regs, .. } => {
                    assert_eq!(regs.gpr[RAX], i.wrapping_add(init.gpr[3]))
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "native runner: {N} runs in {secs:.3} s = {:.0} runs/s",
            N as f64 / secs
        );
    }

    #[test]
    fn native_timeout_then_recovers() {
        let mut r = NativeRunner::new().unwrap();
        let code = assemble(|a| {
            let mut l = a.create_label();
            a.set_label(&mut l)?;
            a.jmp(l)
        });
        let init = init_regs();
        let d = data();
        let t = Instant::now();
        assert_eq!(r.run(&code, &init, &d).unwrap(), NativeOutcome::Timeout);
        assert!(t.elapsed().as_secs_f64() < imp::RUN_TIMEOUT.as_secs_f64() + 5.0);
        let code = assemble(|a| a.add(rax, rbx));
        match r.run(&code, &init, &d).unwrap() {
            NativeOutcome::Completed { regs, .. } => {
                assert_eq!(regs.gpr[RAX], init.gpr[RAX].wrapping_add(init.gpr[3]))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn native_syscall_kills_child_and_recovers() {
        let mut r = NativeRunner::new().unwrap();
        let mut init = init_regs();
        init.gpr[RAX] = 39; // getpid: not allowed in seccomp strict mode
        let code = assemble(|a| a.syscall());
        assert!(r.run(&code, &init, &data()).is_err());
        let code = assemble(|a| a.ud2());
        let (_, _, exc) = expect_exception(r.run(&code, &init, &data()).unwrap());
        assert_eq!(exc.vector, 6);
    }

    fn expect_completed(out: NativeOutcome) -> (RegState, Vec<u8>) {
        match out {
            NativeOutcome::Completed { regs, data } => (regs, data),
            other => panic!("expected completion, got {other:?}"),
        }
    }

    /// A state with every field non-default (TOP 5, three registers valid).
    fn some_fp_state() -> FpState {
        let mut fp = FpState {
            fcw: 0x0a7f & !0x3,
            fsw: 5 << 11 | 0x4500 | 0x20,
            ftw: 0b1010_0001,
            mxcsr: 0x7f80 | 0x40 | 0x21,
            ..FpState::default()
        };
        for i in 0..8 {
            fp.st[i] = F80 {
                sig: 0x8000_0000_0000_0000 | (i as u64 * 0x0123_4567_89ab),
                se: 0x3fff + i as u16,
            };
        }
        for i in 0..16 {
            fp.xmm[i] = [
                0x1111_1111_1111_1111 * i as u64,
                !(0x0101_0101_0101_0101 * i as u64),
            ];
        }
        fp
    }

    #[test]
    fn native_fp_state_round_trip() {
        let mut r = NativeRunner::new().unwrap();
        let mut init = init_regs();
        init.fp = some_fp_state();
        let code = assemble(|a| a.nop());
        let (regs, _) = expect_completed(r.run(&code, &init, &data()).unwrap());
        assert_eq!(regs.fp, init.fp);
        // The exception path (state from the signal frame) reports the same.
        let code = assemble(|a| a.ud2());
        let (regs, _, exc) = expect_exception(r.run(&code, &init, &data()).unwrap());
        assert_eq!(exc.vector, 6);
        assert_eq!(regs.fp, init.fp);
        // And the next run starts from its own state again.
        let init = init_regs();
        let code = assemble(|a| a.nop());
        let (regs, _) = expect_completed(r.run(&code, &init, &data()).unwrap());
        assert_eq!(regs.fp, FpState::default());
        let mut bad = init_regs();
        bad.fp.mxcsr = 0x1_1f80;
        assert!(r.run(&code, &bad, &data()).is_err());
    }

    #[test]
    fn native_addps() {
        let mut r = NativeRunner::new().unwrap();
        let mut init = init_regs();
        let f = |a: [f32; 4]| {
            [
                (a[0].to_bits() as u64) | (a[1].to_bits() as u64) << 32,
                (a[2].to_bits() as u64) | (a[3].to_bits() as u64) << 32,
            ]
        };
        init.fp.xmm[0] = f([1.0, 2.5, -3.0, 1.0]);
        init.fp.xmm[1] = f([0.5, 0.25, 3.0, 1e-10]);
        let code = assemble(|a| a.addps(xmm0, xmm1));
        let (regs, _) = expect_completed(r.run(&code, &init, &data()).unwrap());
        assert_eq!(regs.fp.xmm[0], f([1.5, 2.75, 0.0, 1.0]));
        assert_eq!(regs.fp.xmm[1], init.fp.xmm[1]);
        // 1 + 1e-10 is inexact in f32: PE set.
        assert_eq!(regs.fp.mxcsr, 0x1f80 | 0x20);
        // The same with an SNaN and the invalid exception unmasked: #XM, nothing written,
        // IE recorded in MXCSR.
        init.fp.xmm[1][0] = 0x7f80_0001;
        init.fp.mxcsr = 0x1f80 & !0x80;
        let (regs, _, exc) = expect_exception(r.run(&code, &init, &data()).unwrap());
        assert_eq!((exc.vector, exc.error_code), (19, 0));
        assert_eq!(regs.rip, CODE_ADDR);
        assert_eq!(regs.fp.xmm[0], init.fp.xmm[0]);
        assert_eq!(regs.fp.mxcsr & 0x3f, 0x01);
        assert_eq!(regs.fp.mxcsr & !0x3f, 0x1f80 & !0x80);
    }

    #[test]
    fn native_x87_fld1_fadd() {
        let mut r = NativeRunner::new().unwrap();
        let init = init_regs();
        let code = assemble(|a| {
            a.fld1()?;
            a.fadd_2(st0, st0)
        });
        let (regs, _) = expect_completed(r.run(&code, &init, &data()).unwrap());
        assert_eq!(regs.fp.top(), 7);
        assert_eq!(regs.fp.ftw, 0x80);
        assert_eq!(
            regs.fp.st[0],
            F80 {
                sig: 1 << 63,
                se: 0x4000
            }
        ); // 2.0
        assert_eq!(regs.fp.fcw, 0x37f);
        assert_eq!(regs.fp.fsw & !0x4700, 7 << 11);
        assert_eq!(regs.fp.mxcsr, 0x1f80);
    }

    #[test]
    fn native_x87_unmasked_exception_is_mf_at_next_insn() {
        let mut r = NativeRunner::new().unwrap();
        let mut init = init_regs();
        init.fp.fcw = 0x37f & !0x4; // ZE unmasked
        let code = assemble(|a| {
            a.fld1()?; // 2 bytes
            a.fldz()?; // 2 bytes
            a.fdivp(st1, st0)?; // 2 bytes: 1/0, pending
            a.nop()?; // 1 byte: not an x87 instruction
            a.fld1()
        });
        let (regs, _, exc) = expect_exception(r.run(&code, &init, &data()).unwrap());
        assert_eq!((exc.vector, exc.error_code), (16, 0));
        assert_eq!(regs.rip, CODE_ADDR + 7);
        // ZE, ES and B set; with the exception unmasked the fdivp wrote nothing and did
        // not pop (TOP = 6, ST0 = 0, ST1 = 1).
        assert_eq!(regs.fp.fsw & 0x80ff, 0x8084);
        assert_eq!(regs.fp.top(), 6);
        assert_eq!(regs.fp.ftw, 0xc0);
        assert_eq!(regs.fp.st[0], F80::default());
        assert_eq!(
            regs.fp.st[1],
            F80 {
                sig: 1 << 63,
                se: 0x3fff
            }
        );
        // Without the trailing x87 instruction the run completes with the exception pending.
        let code = assemble(|a| {
            a.fld1()?;
            a.fldz()?;
            a.fdivp(st1, st0)
        });
        let (regs, _) = expect_completed(r.run(&code, &init, &data()).unwrap());
        assert_eq!(regs.fp.fsw & 0x80ff, 0x8084);
    }

    #[test]
    fn native_flags_in_and_out() {
        // TF/AC in the input are ignored; DF set by the guest does not leak
        // into the runner; popf setting TF gives a single-step trap.
        let mut r = NativeRunner::new().unwrap();
        let mut init = init_regs();
        init.rflags = 0x2 | (1 << 8) | (1 << 18) | CF | (1 << 10);
        let code = assemble(|a| a.nop());
        match r.run(&code, &init, &data()).unwrap() {
            NativeOutcome::Completed { regs, .. } => {
                assert_eq!(regs.rflags & (1 << 8 | 1 << 18), 0);
                assert_eq!(regs.rflags & (CF | 1 << 10), CF | 1 << 10);
            }
            other => panic!("unexpected {other:?}"),
        }
        let code = assemble(|a| {
            a.pushfq()?;
            a.or(qword_ptr(rsp), 0x100)?;
            a.popfq()?;
            a.nop()?;
            a.nop()
        });
        let (regs, _, exc) = expect_exception(r.run(&code, &init, &data()).unwrap());
        assert_eq!(exc.vector, 1);
        assert!(regs.rip > CODE_ADDR && regs.rip < CODE_ADDR + code.len() as u64);
        // Still healthy afterwards.
        let code = assemble(|a| a.std());
        assert!(matches!(
            r.run(&code, &init, &data()).unwrap(),
            NativeOutcome::Completed { .. }
        ));
    }
}
