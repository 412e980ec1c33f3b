//! Executable memory for the JIT backends: one reserved region that code is appended to and
//! that never moves, so generated code can hold absolute addresses of other generated code.
//!
//! This module is host-neutral; everything that differs between hosts is behind a `cfg` in
//! [`ExecMem::write`] or [`flush_icache`].
//!
//! Host hazards, and how this module (or its callers) deal with them:
//! - **W^X.** No page is writable and executable at the same address. On x86_64 Linux the
//!   region is a memfd mapped twice: an executable view (the addresses code runs at, `PROT_NONE`
//!   beyond the code written so far) and a writable view at another address that code is
//!   copied and patched through, so installing a block or chaining a jump costs no
//!   protection change (two `mprotect`s per block cost about a quarter of the translation
//!   time of a Linux boot, and their TLB shootdowns slowed the generated code too). On
//!   other hosts (whose instruction-cache maintenance through a second view is untested
//!   here, and whose CI runs under qemu-user, which tracks translated code by the address
//!   written), where a memfd cannot be had, or with `XENOLITH_JIT_NO_ALIAS` set, the
//!   region is anonymous memory reserved `PROT_NONE`, and
//!   [`ExecMem::write`] makes the pages it touches `RW`, copies the code, then makes them
//!   `RX`; pages holding older code are then briefly not executable, which is fine because
//!   the engine only compiles when no generated code of this region is running (one region
//!   per vCPU thread).
//! - **macOS (Apple silicon) `MAP_JIT`.** There, `mprotect` between RW and RX is refused for
//!   JIT memory; the region must be mapped with `MAP_JIT` and the *calling thread* toggles
//!   its view with `pthread_jit_write_protect_np(0/1)` around the copy. That hook goes where
//!   the `mprotect` calls are in [`ExecMem::write`]; it is per thread, which matches the one
//!   region per vCPU thread design. Not implemented yet.
//! - **Instruction-cache maintenance.** x86_64 keeps instruction fetch coherent with data
//!   writes, so [`flush_icache`] is a no-op there. aarch64 needs `dc cvau`/`ic ivau`/`isb`
//!   (and `sys_icache_invalidate` on macOS), riscv64 a `fence.i` on every hart that will run
//!   the code (plus the Linux `riscv_flush_icache` syscall for other harts). The hook uses
//!   `dynasmrt::cache_control` on aarch64 and the process-wide `riscv_flush_icache`
//!   syscall on riscv64 Linux.
//! - **Branch ranges.** The region is small (64 MiB by default) so that any two code
//!   addresses in it are within direct-branch range: x86_64 rel32 (±2 GiB) and aarch64 `B`/`BL`
//!   (±128 MiB) always reach; riscv64 `JAL` reaches ±1 MiB only, so a riscv64 backend jumps
//!   between blocks with `auipc`+`jalr` (±2 GiB). Calls out of the region (helpers, slow
//!   paths) are made through a register loaded with the absolute address on every host.
//! - **Page size.** Hosts have 4 KiB, 16 KiB (Apple silicon, some aarch64 Linux) or 64 KiB
//!   pages; the page size comes from `sysconf(_SC_PAGESIZE)` and every protection change is
//!   rounded to it, never to a hard-coded 4 KiB.

use std::io;
use std::ptr;

/// Default size of a code region.
pub const DEFAULT_CODE_SIZE: usize = 64 << 20;
/// [`ExecMem::is_full`] reports full when less than this remains, so that a block never
/// (in practice) runs out of space half way through being written.
pub const FULL_MARGIN: usize = 256 << 10;
/// Alignment of every piece of code written.
pub const CODE_ALIGN: usize = 16;

/// The host page size.
pub fn host_page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p <= 0 {
        4096
    } else {
        p as usize
    }
}

/// Make freshly written code visible to instruction fetch.
#[inline]
pub fn flush_icache(code: &[u8]) {
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    {
        // Instruction fetch is coherent with stores on x86: nothing to do.
        let _ = code;
    }
    #[cfg(all(target_arch = "riscv64", target_os = "linux"))]
    {
        // `riscv_flush_icache(start, end, flags = 0)`. A `fence.i` only orders this hart,
        // and dynasmrt's cache_control passes SYS_RISCV_FLUSH_ICACHE_LOCAL (this thread
        // only); the engine owning the region is `Send`, so ask the kernel to order the
        // new code for every thread of the process instead.
        const SYS_RISCV_FLUSH_ICACHE: libc::c_long = 259;
        let r = code.as_ptr_range();
        // SAFETY: the syscall only performs cache maintenance; it reads no memory.
        let rc =
            unsafe { libc::syscall(SYS_RISCV_FLUSH_ICACHE, r.start, r.end, 0 as libc::c_ulong) };
        assert_eq!(
            rc,
            0,
            "riscv_flush_icache failed: {}",
            io::Error::last_os_error()
        );
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        target_arch = "x86",
        all(target_arch = "riscv64", target_os = "linux")
    )))]
    {
        dynasmrt::cache_control::synchronize_icache(code);
        dynasmrt::cache_control::prepare_for_execution(code);
    }
}

/// A reserved region of executable memory that code is appended to.
pub struct ExecMem {
    base: *mut u8,
    size: usize,
    page: usize,
    /// Bytes in use from `base`.
    used: usize,
    /// Highest byte ever made accessible (for flush).
    touched: usize,
    /// The writable view of a dual-mapped region (and its memfd), or None when pages are
    /// toggled between RW and RX.
    alias: Option<(*mut u8, libc::c_int)>,
}

// SAFETY: the region is owned exclusively by this value; nothing in it is tied to the thread
// that created it on the hosts supported today (macOS MAP_JIT toggling, when added, is done
// around each write by whichever thread owns the value at that time).
unsafe impl Send for ExecMem {}

fn round_up(x: usize, a: usize) -> usize {
    (x + a - 1) & !(a - 1)
}

impl ExecMem {
    /// Reserve `size` bytes (rounded up to the host page size). No memory is committed
    /// until code is written.
    pub fn new(size: usize) -> io::Result<ExecMem> {
        Self::with_alias(size, std::env::var_os("XENOLITH_JIT_NO_ALIAS").is_none())
    }

    /// `new`, with a writable second view where the host has one when `alias` is true.
    fn with_alias(size: usize, alias: bool) -> io::Result<ExecMem> {
        let page = host_page_size();
        let size = round_up(size.max(page), page);
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing does
        // not alias any existing memory.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                size,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        #[cfg_attr(
            not(all(target_os = "linux", target_arch = "x86_64")),
            allow(unused_mut)
        )]
        let mut m = ExecMem {
            base: p as *mut u8,
            size,
            page,
            used: 0,
            touched: 0,
            alias: None,
        };
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        if alias {
            m.alias = m.dual_map();
        }
        #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
        let _ = alias;
        Ok(m)
    }

    /// Replace the reservation by two views of one memfd: executable at `base` (all
    /// `PROT_NONE` until written), writable elsewhere. None (the reservation kept as is)
    /// when the host refuses any step.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    fn dual_map(&mut self) -> Option<(*mut u8, libc::c_int)> {
        // SAFETY: plain syscalls on a new file descriptor; the executable view is mapped
        // MAP_FIXED over our own reservation [base, base + size) only, which no other
        // mapping shares, and the writable view at an address of the kernel's choosing.
        unsafe {
            // MFD_EXEC: where vm.memfd_noexec makes memfds non-executable by default (Linux
            // 6.3+); older kernels refuse the flag, and then the default is executable.
            const MFD_EXEC: libc::c_uint = 0x10;
            let name = c"xenolith-jit".as_ptr();
            let mut fd = libc::memfd_create(name, libc::MFD_CLOEXEC | MFD_EXEC);
            if fd < 0 {
                fd = libc::memfd_create(name, libc::MFD_CLOEXEC);
            }
            if fd < 0 {
                return None;
            }
            let close = |fd| {
                libc::close(fd);
                None
            };
            if libc::ftruncate(fd, self.size as libc::off_t) != 0 {
                return close(fd);
            }
            let rw = libc::mmap(
                ptr::null_mut(),
                self.size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            if rw == libc::MAP_FAILED {
                return close(fd);
            }
            let x = libc::mmap(
                self.base as *mut libc::c_void,
                self.size,
                libc::PROT_NONE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd,
                0,
            );
            if x != self.base as *mut libc::c_void {
                // MAP_FIXED failed and left the reservation as it was.
                libc::munmap(rw, self.size);
                return close(fd);
            }
            // The executable view must be allowed to become executable (a security policy
            // or a non-executable memfd may refuse): try it on the first page now, and
            // otherwise put the plain reservation back.
            let rx = libc::PROT_READ | libc::PROT_EXEC;
            if libc::mprotect(x, self.page, rx) != 0
                || libc::mprotect(x, self.page, libc::PROT_NONE) != 0
            {
                let anon = libc::mmap(
                    x,
                    self.size,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                    -1,
                    0,
                );
                assert_eq!(anon, x, "execmem: cannot restore the code reservation");
                libc::munmap(rw, self.size);
                return close(fd);
            }
            Some((rw as *mut u8, fd))
        }
    }

    /// Whether code can be changed in place without a protection change
    /// ([`patch`](Self::patch) is cheap).
    pub fn cheap_patch(&self) -> bool {
        self.alias.is_some()
    }

    /// Overwrite bytes of code already written at executable address `addr` (a chained
    /// jump's displacement). Only call when no generated code of this region runs.
    pub fn patch(&mut self, addr: usize, bytes: &[u8]) {
        let off = addr - self.base as usize;
        assert!(
            off + bytes.len() <= self.used,
            "patch outside the written code"
        );
        match self.alias {
            // SAFETY: [off, off + len) is inside the written part of the region, which the
            // writable view maps in full.
            Some((rw, _)) => unsafe {
                ptr::copy_nonoverlapping(bytes.as_ptr(), rw.add(off), bytes.len());
            },
            None => {
                // The pages are briefly RW; no generated code runs meanwhile (this
                // function's contract).
                let pstart = off & !(self.page - 1);
                let pend = round_up(off + bytes.len(), self.page);
                self.protect(pstart, pend, libc::PROT_READ | libc::PROT_WRITE);
                // SAFETY: [off, off + len) is inside the written part of the region,
                // writable now.
                unsafe {
                    ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(off), bytes.len())
                };
                self.protect(pstart, pend, libc::PROT_READ | libc::PROT_EXEC);
            }
        }
        // SAFETY: the range was just written and stays mapped.
        flush_icache(unsafe { std::slice::from_raw_parts(self.base.add(off), bytes.len()) });
    }

    pub fn page_size(&self) -> usize {
        self.page
    }

    pub fn base(&self) -> usize {
        self.base as usize
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Does `addr` lie inside the region?
    pub fn contains(&self, addr: usize) -> bool {
        addr >= self.base as usize && addr < self.base as usize + self.size
    }

    /// Address at which the next [`write`](Self::write) will place its code.
    pub fn next_addr(&self) -> usize {
        self.base as usize + round_up(self.used, CODE_ALIGN)
    }

    /// Bytes still free.
    pub fn remaining(&self) -> usize {
        self.size - round_up(self.used, CODE_ALIGN).min(self.size)
    }

    pub fn is_full(&self) -> bool {
        self.remaining() < FULL_MARGIN
    }

    /// Append `code` at [`next_addr`](Self::next_addr) and make it executable. Returns its
    /// address, or None when it does not fit.
    pub fn write(&mut self, code: &[u8]) -> Option<*const u8> {
        let start = round_up(self.used, CODE_ALIGN);
        let end = start.checked_add(code.len())?;
        if end > self.size {
            return None;
        }
        // The alignment padding [used, start) may lie on the page before `start`.
        let pstart = self.used & !(self.page - 1);
        let pend = round_up(end.max(start + 1), self.page);
        // Dual-mapped: copy through the writable view, and make the pages from `touched` to
        // `pend` executable for the first time (no code runs on them yet). Otherwise: the
        // pages [pstart, pend) become RW for the copy, then RX again; no generated code of
        // this region runs during a write (module contract), so that is harmless.
        let view = match self.alias {
            Some((rw, _)) => rw,
            None => {
                self.protect(pstart, pend, libc::PROT_READ | libc::PROT_WRITE);
                self.base
            }
        };
        // SAFETY: [used, end) lies inside the region (end <= size), which `view` maps in
        // full, writable now.
        unsafe {
            // Pad the alignment gap with int3 (x86) so stray execution traps.
            ptr::write_bytes(view.add(self.used), 0xcc, start - self.used);
            ptr::copy_nonoverlapping(code.as_ptr(), view.add(start), code.len());
        }
        let rx = libc::PROT_READ | libc::PROT_EXEC;
        match self.alias {
            Some(_) if pend > self.touched => self.protect(self.touched, pend, rx),
            Some(_) => {}
            None => self.protect(pstart, pend, rx),
        }
        // SAFETY: the range was just written and is mapped executable.
        flush_icache(unsafe { std::slice::from_raw_parts(self.base.add(start), code.len()) });
        self.used = end;
        self.touched = self.touched.max(pend);
        // SAFETY: start < size, inside the mapping.
        Some(unsafe { self.base.add(start) } as *const u8)
    }

    /// Set the protection of the executable view's pages [from, to) (page offsets).
    fn protect(&self, from: usize, to: usize, prot: libc::c_int) {
        // SAFETY: [from, to) lies inside our own mapping (callers pass page-aligned offsets
        // up to `size`); changing its protection touches no other memory.
        let r =
            unsafe { libc::mprotect(self.base.add(from) as *mut libc::c_void, to - from, prot) };
        if r != 0 {
            panic!(
                "execmem: mprotect {prot:#x} failed: {}",
                io::Error::last_os_error()
            );
        }
    }

    /// Drop all code. Only call when no code of this region is running or will be entered
    /// through a stale pointer.
    pub fn flush(&mut self) {
        if self.touched > 0 {
            // SAFETY: [0, touched) is inside our mapping. Making it inaccessible turns any
            // stale jump into it into a fault instead of running old code; on Linux the
            // pages are also handed back to the kernel.
            unsafe {
                libc::mprotect(
                    self.base as *mut libc::c_void,
                    self.touched,
                    libc::PROT_NONE,
                );
                #[cfg(target_os = "linux")]
                match self.alias {
                    // Give the file's pages back; both views then read zeros.
                    Some((_, fd)) => {
                        libc::fallocate(
                            fd,
                            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                            0,
                            self.touched as libc::off_t,
                        );
                    }
                    None => {
                        libc::madvise(
                            self.base as *mut libc::c_void,
                            self.touched,
                            libc::MADV_DONTNEED,
                        );
                    }
                }
            }
        }
        self.used = 0;
        self.touched = 0;
    }
}

impl Drop for ExecMem {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mappings created in `new` (both views of a
        // dual-mapped region) and closing its memfd; no code runs from it once its owner
        // is dropped.
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.size);
            if let Some((rw, fd)) = self.alias {
                libc::munmap(rw as *mut libc::c_void, self.size);
                libc::close(fd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_run_flush() {
        let mut m = ExecMem::new(1 << 20).unwrap();
        assert!(m.page_size().is_power_of_two());
        let a = m.next_addr();
        // x86_64: mov eax, 42; ret
        #[cfg(target_arch = "x86_64")]
        {
            let p = m.write(&[0xb8, 42, 0, 0, 0, 0xc3]).unwrap();
            assert_eq!(p as usize, a);
            // SAFETY: p points at the 6 bytes just written: a valid `extern "C" fn() -> u32`.
            let f: extern "C" fn() -> u32 = unsafe { std::mem::transmute(p) };
            assert_eq!(f(), 42);
            let q = m.write(&[0xb8, 7, 0, 0, 0, 0xc3]).unwrap();
            assert_eq!(q as usize % CODE_ALIGN, 0);
            // SAFETY: as above.
            let g: extern "C" fn() -> u32 = unsafe { std::mem::transmute(q) };
            assert_eq!(g(), 7);
            assert_eq!(f(), 42);
        }
        assert!(!m.is_full());
        m.flush();
        assert_eq!(m.next_addr(), a);
        assert!(m.write(&vec![0x90; 2 << 20]).is_none());
    }

    #[test]
    fn patch_in_place_with_and_without_a_writable_view() {
        for alias in [true, false] {
            let m = ExecMem::with_alias(1 << 20, alias).unwrap();
            #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
            assert_eq!(m.cheap_patch(), alias);
            #[cfg(not(target_arch = "x86_64"))]
            drop(m);
            #[cfg(target_arch = "x86_64")]
            {
                let mut m = m;
                let p = m.write(&[0xb8, 42, 0, 0, 0, 0xc3]).unwrap();
                // SAFETY: p points at `mov eax, imm32; ret`.
                let f: extern "C" fn() -> u32 = unsafe { std::mem::transmute(p) };
                assert_eq!(f(), 42);
                m.patch(p as usize + 1, &[7, 1]);
                assert_eq!(f(), 0x107);
                m.flush();
                // The flushed region reads back as new code only.
                let q = m.write(&[0xb8, 9, 0, 0, 0, 0xc3]).unwrap();
                assert_eq!(q, p);
                // SAFETY: as above, new code at the same address.
                let g: extern "C" fn() -> u32 = unsafe { std::mem::transmute(q) };
                assert_eq!(g(), 9);
            }
        }
    }
}
