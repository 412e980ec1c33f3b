//! The back end's side of a blkif shared ring (io/ring.h) over granted pages.
//!
//! The ring lives in one or more granted frames mapped through [`GntOps`]; the entries of a
//! multi-page ring are contiguous across the frames (an entry may straddle two of them).
//! The back end keeps its private indexes (`req_cons`, `rsp_prod_pvt`); everything in the
//! shared page is guest data, re-read when needed and never trusted: a `req_prod` more than
//! a ring ahead of the responses is reported to the caller (RING_REQUEST_PROD_OVERFLOW).

use xen_pv::core::backend::{GntOps, GrantHandle};

use super::abi::{Abi, SRING_HEADER};

pub const PAGE_SIZE: usize = 4096;

const REQ_PROD: usize = 0;
const REQ_EVENT: usize = 4;
const RSP_PROD: usize = 8;
const RSP_EVENT: usize = 12;

/// __CONST_RING_SIZE: the largest power of two of entries fitting after the header.
pub fn ring_size(abi: Abi, pages: usize) -> u32 {
    let n = (pages * PAGE_SIZE).saturating_sub(SRING_HEADER) / abi.entry_size();
    if n == 0 {
        0
    } else {
        1u32 << (usize::BITS - 1 - n.leading_zeros())
    }
}

/// Why a ring access failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// A grant read/write of the ring failed.
    Access,
    /// The guest's req_prod is more than a ring ahead (RING_REQUEST_PROD_OVERFLOW).
    ProdOverflow { req_prod: u32, rsp_prod_pvt: u32 },
}

pub struct BackRing {
    pub pages: Vec<GrantHandle>,
    pub abi: Abi,
    /// Entries (a power of two).
    pub size: u32,
    pub req_cons: u32,
    pub rsp_prod_pvt: u32,
    /// The rsp_prod last published (kept privately: the shared copy is guest-writable).
    rsp_pushed: u32,
}

impl BackRing {
    /// BACK_RING_ATTACH with both private indexes at 0 (a fresh ring).
    pub fn new(pages: Vec<GrantHandle>, abi: Abi) -> BackRing {
        let size = ring_size(abi, pages.len());
        BackRing {
            pages,
            abi,
            size,
            req_cons: 0,
            rsp_prod_pvt: 0,
            rsp_pushed: 0,
        }
    }

    fn access(
        &self,
        ops: &mut dyn GntOps,
        mut off: usize,
        len: usize,
        mut f: impl FnMut(&mut dyn GntOps, GrantHandle, usize, std::ops::Range<usize>) -> bool,
    ) -> bool {
        let mut done = 0;
        while done < len {
            let Some(&h) = self.pages.get(off / PAGE_SIZE) else {
                return false;
            };
            let in_page = off % PAGE_SIZE;
            let n = (PAGE_SIZE - in_page).min(len - done);
            if !f(ops, h, in_page, done..done + n) {
                return false;
            }
            done += n;
            off += n;
        }
        true
    }

    fn read(&self, ops: &mut dyn GntOps, off: usize, buf: &mut [u8]) -> bool {
        let len = buf.len();
        self.access(ops, off, len, |ops, h, o, r| ops.read(h, o, &mut buf[r]))
    }

    fn write(&self, ops: &mut dyn GntOps, off: usize, data: &[u8]) -> bool {
        self.access(ops, off, data.len(), |ops, h, o, r| {
            ops.write(h, o, &data[r])
        })
    }

    fn read_u32(&self, ops: &mut dyn GntOps, off: usize) -> Result<u32, RingError> {
        let mut b = [0u8; 4];
        if self.read(ops, off, &mut b) {
            Ok(u32::from_le_bytes(b))
        } else {
            Err(RingError::Access)
        }
    }

    fn write_u32(&self, ops: &mut dyn GntOps, off: usize, v: u32) -> Result<(), RingError> {
        if self.write(ops, off, &v.to_le_bytes()) {
            Ok(())
        } else {
            Err(RingError::Access)
        }
    }

    fn entry_off(&self, idx: u32) -> usize {
        SRING_HEADER + (idx & (self.size - 1)) as usize * self.abi.entry_size()
    }

    /// The guest's req_prod, checked against RING_REQUEST_PROD_OVERFLOW.
    pub fn req_prod(&self, ops: &mut dyn GntOps) -> Result<u32, RingError> {
        let rp = self.read_u32(ops, REQ_PROD)?;
        if rp.wrapping_sub(self.rsp_prod_pvt) > self.size {
            return Err(RingError::ProdOverflow {
                req_prod: rp,
                rsp_prod_pvt: self.rsp_prod_pvt,
            });
        }
        Ok(rp)
    }

    /// RING_HAS_UNCONSUMED_REQUESTS.
    pub fn unconsumed(&self, ops: &mut dyn GntOps) -> Result<u32, RingError> {
        let rp = self.req_prod(ops)?;
        let unconsumed = rp.wrapping_sub(self.req_cons);
        let room = self
            .size
            .wrapping_sub(self.req_cons.wrapping_sub(self.rsp_prod_pvt));
        Ok(unconsumed.min(room))
    }

    /// RING_REQUEST_CONS_OVERFLOW: no room for the response to one more request.
    pub fn cons_overflow(&self) -> bool {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt) >= self.size
    }

    /// Copy request `idx` out of the ring (RING_COPY_REQUEST).
    pub fn copy_request(&self, ops: &mut dyn GntOps, idx: u32) -> Result<Vec<u8>, RingError> {
        let mut b = vec![0u8; self.abi.entry_size()];
        if self.read(ops, self.entry_off(idx), &mut b) {
            Ok(b)
        } else {
            Err(RingError::Access)
        }
    }

    /// Put a response at rsp_prod_pvt (not yet visible: see `push_responses`).
    pub fn put_response(&mut self, ops: &mut dyn GntOps, resp: &[u8]) -> Result<(), RingError> {
        let off = self.entry_off(self.rsp_prod_pvt);
        if !self.write(ops, off, resp) {
            return Err(RingError::Access);
        }
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// RING_PUSH_RESPONSES_AND_CHECK_NOTIFY: publish rsp_prod; true when the front end
    /// asked to be notified (its rsp_event lies in the newly published range).
    pub fn push_responses(&mut self, ops: &mut dyn GntOps) -> Result<bool, RingError> {
        let old = self.rsp_pushed;
        let new = self.rsp_prod_pvt;
        self.write_u32(ops, RSP_PROD, new)?;
        self.rsp_pushed = new;
        let event = self.read_u32(ops, RSP_EVENT)?;
        Ok(new.wrapping_sub(event) < new.wrapping_sub(old))
    }

    /// RING_FINAL_CHECK_FOR_REQUESTS: if nothing is pending, ask to be notified of the next
    /// request (req_event = req_cons + 1) and look once more.
    pub fn final_check_for_requests(&mut self, ops: &mut dyn GntOps) -> Result<bool, RingError> {
        if self.unconsumed(ops)? != 0 {
            return Ok(true);
        }
        self.write_u32(ops, REQ_EVENT, self.req_cons.wrapping_add(1))?;
        Ok(self.unconsumed(ops)? != 0)
    }
}
