//! The xenstore wire protocol (`xen/io/xs_wire.h`): the message header, the message types,
//! the error names, the limits, and the payload helpers xenstored uses to split a payload
//! into NUL-terminated arguments (`get_string`, `get_strings`, `onearg`,
//! `xenstore_count_strings`) and to parse numbers (`atoi`, `strtol(.., 0)`).

/// Message types (`enum xsd_sockmsg_type`).
pub mod msg_type {
    pub const CONTROL: u32 = 0;
    pub const DIRECTORY: u32 = 1;
    pub const READ: u32 = 2;
    pub const GET_PERMS: u32 = 3;
    pub const WATCH: u32 = 4;
    pub const UNWATCH: u32 = 5;
    pub const TRANSACTION_START: u32 = 6;
    pub const TRANSACTION_END: u32 = 7;
    pub const INTRODUCE: u32 = 8;
    pub const RELEASE: u32 = 9;
    pub const GET_DOMAIN_PATH: u32 = 10;
    pub const WRITE: u32 = 11;
    pub const MKDIR: u32 = 12;
    pub const RM: u32 = 13;
    pub const SET_PERMS: u32 = 14;
    pub const WATCH_EVENT: u32 = 15;
    pub const ERROR: u32 = 16;
    pub const IS_DOMAIN_INTRODUCED: u32 = 17;
    pub const RESUME: u32 = 18;
    pub const SET_TARGET: u32 = 19;
    // 20 was XS_RESTRICT (removed).
    pub const RESET_WATCHES: u32 = 21;
    pub const DIRECTORY_PART: u32 = 22;
    /// XS_TYPE_COUNT: number of valid types.
    pub const TYPE_COUNT: u32 = 23;
    /// XS_INVALID: guaranteed to remain invalid.
    pub const INVALID: u32 = 0xffff;
}

/// XENSTORE_ABS_PATH_MAX.
pub const ABS_PATH_MAX: usize = 3072;
/// XENSTORE_REL_PATH_MAX.
pub const REL_PATH_MAX: usize = 2048;
/// XENSTORE_RING_SIZE (bytes of each of the two rings in the shared page).
pub const RING_SIZE: usize = 1024;
/// DOMID_SELF (public/xen.h), as IS_DOMAIN_INTRODUCED understands it.
pub const DOMID_SELF: u32 = 0x7ff0;

/// One xenstore message: `struct xsd_sockmsg` plus its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msg {
    pub ty: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub payload: Vec<u8>,
}

impl Msg {
    /// sizeof(struct xsd_sockmsg).
    pub const HEADER: usize = 16;
    /// XENSTORE_PAYLOAD_MAX.
    pub const MAX_PAYLOAD: usize = 4096;

    pub fn new(ty: u32, req_id: u32, tx_id: u32, payload: impl Into<Vec<u8>>) -> Msg {
        Msg {
            ty,
            req_id,
            tx_id,
            payload: payload.into(),
        }
    }

    /// (type, req_id, tx_id, len) from a little-endian header.
    pub fn parse_header(h: &[u8; 16]) -> (u32, u32, u32, u32) {
        let w = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        (w(0), w(4), w(8), w(12))
    }

    /// Header (little-endian u32s, len = payload length) followed by the payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::HEADER + self.payload.len());
        for w in [self.ty, self.req_id, self.tx_id, self.payload.len() as u32] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v.extend_from_slice(&self.payload);
        v
    }

    /// Decode the message at the front of `b`: `Ok(None)` while incomplete, `Ok(Some((msg,
    /// bytes used)))` once whole, `Err(len)` when the header's length exceeds
    /// [`Msg::MAX_PAYLOAD`] (xenstored then stops talking to the client:
    /// XENSTORE_ERROR_PROTO).
    pub fn decode(b: &[u8]) -> Result<Option<(Msg, usize)>, u32> {
        let Some(h) = b.get(..Self::HEADER) else {
            return Ok(None);
        };
        let mut hdr = [0u8; 16];
        hdr.copy_from_slice(h);
        let (ty, req_id, tx_id, len) = Self::parse_header(&hdr);
        if len as usize > Self::MAX_PAYLOAD {
            return Err(len);
        }
        let end = Self::HEADER + len as usize;
        Ok(b.get(Self::HEADER..end)
            .map(|p| (Msg::new(ty, req_id, tx_id, p), end)))
    }

    /// The error name of an ERROR message ("ENOENT"...), None for other messages.
    pub fn error_name(&self) -> Option<&str> {
        if self.ty != msg_type::ERROR {
            return None;
        }
        std::str::from_utf8(cstr(&self.payload)).ok()
    }
}

/// The errors xenstored can send (`xsd_errors[]`, in that order), by errno name.
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum XsError {
    EINVAL,
    EACCES,
    EEXIST,
    EISDIR,
    ENOENT,
    ENOMEM,
    ENOSPC,
    EIO,
    ENOTEMPTY,
    ENOSYS,
    EROFS,
    EBUSY,
    EAGAIN,
    EISCONN,
    E2BIG,
    EPERM,
}

impl XsError {
    pub const ALL: [XsError; 16] = [
        XsError::EINVAL,
        XsError::EACCES,
        XsError::EEXIST,
        XsError::EISDIR,
        XsError::ENOENT,
        XsError::ENOMEM,
        XsError::ENOSPC,
        XsError::EIO,
        XsError::ENOTEMPTY,
        XsError::ENOSYS,
        XsError::EROFS,
        XsError::EBUSY,
        XsError::EAGAIN,
        XsError::EISCONN,
        XsError::E2BIG,
        XsError::EPERM,
    ];

    /// The name sent on the wire.
    pub fn name(self) -> &'static str {
        match self {
            XsError::EINVAL => "EINVAL",
            XsError::EACCES => "EACCES",
            XsError::EEXIST => "EEXIST",
            XsError::EISDIR => "EISDIR",
            XsError::ENOENT => "ENOENT",
            XsError::ENOMEM => "ENOMEM",
            XsError::ENOSPC => "ENOSPC",
            XsError::EIO => "EIO",
            XsError::ENOTEMPTY => "ENOTEMPTY",
            XsError::ENOSYS => "ENOSYS",
            XsError::EROFS => "EROFS",
            XsError::EBUSY => "EBUSY",
            XsError::EAGAIN => "EAGAIN",
            XsError::EISCONN => "EISCONN",
            XsError::E2BIG => "E2BIG",
            XsError::EPERM => "EPERM",
        }
    }

    pub fn from_name(s: &str) -> Option<XsError> {
        Self::ALL.into_iter().find(|e| e.name() == s)
    }

    /// The ERROR reply for a request: type ERROR, req_id and tx_id copied, payload the
    /// NUL-terminated name.
    pub fn reply(self, req_id: u32, tx_id: u32) -> Msg {
        let mut p = self.name().as_bytes().to_vec();
        p.push(0);
        Msg::new(msg_type::ERROR, req_id, tx_id, p)
    }
}

impl std::fmt::Display for XsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The bytes of `b` up to (not including) the first NUL, or all of `b`.
pub(super) fn cstr(b: &[u8]) -> &[u8] {
    b.iter().position(|&c| c == 0).map_or(b, |n| &b[..n])
}

/// xenstored's get_string: length (including the NUL) of the string at `off`, 0 when there
/// is no NUL after `off`.
pub(super) fn get_string(b: &[u8], off: usize) -> usize {
    b.get(off..)
        .and_then(|s| s.iter().position(|&c| c == 0))
        .map_or(0, |n| n + 1)
}

/// xenstored's get_strings: every NUL-terminated string of the payload (without its NUL);
/// bytes after the last NUL are not a string.
pub(super) fn get_strings(b: &[u8]) -> Vec<&[u8]> {
    let mut v = Vec::new();
    let mut off = 0;
    loop {
        let len = get_string(b, off);
        if len == 0 {
            return v;
        }
        v.push(&b[off..off + len - 1]);
        off += len;
    }
}

/// xenstore_count_strings: the number of NULs in the payload.
pub(super) fn count_strings(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == 0).count()
}

/// xenstored's onearg: the payload must be exactly one string with its NUL at the end.
pub(super) fn onearg(b: &[u8]) -> Option<&[u8]> {
    (!b.is_empty() && get_string(b, 0) == b.len()).then(|| &b[..b.len() - 1])
}

/// C isspace() in the C locale.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// C strtol(s, &end, base) for base 0 or 10 on a NUL-free string: (value, bytes consumed);
/// consumed is 0 when no digits were found. Overflow saturates as glibc does.
pub(super) fn strtol(s: &[u8], base0: bool) -> (i64, usize) {
    let mut i = 0;
    while i < s.len() && is_space(s[i]) {
        i += 1;
    }
    let mut neg = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        neg = s[i] == b'-';
        i += 1;
    }
    let mut radix = 10u32;
    if base0 && s.get(i) == Some(&b'0') {
        if matches!(s.get(i + 1), Some(b'x' | b'X'))
            && s.get(i + 2).is_some_and(|c| c.is_ascii_hexdigit())
        {
            radix = 16;
            i += 2;
        } else {
            radix = 8;
        }
    }
    let start = i;
    let mut mag: u64 = 0;
    let mut overflow = false;
    while let Some(d) = s.get(i).and_then(|&c| (c as char).to_digit(radix)) {
        match mag
            .checked_mul(radix as u64)
            .and_then(|m| m.checked_add(d as u64))
        {
            Some(m) => mag = m,
            None => overflow = true,
        }
        i += 1;
    }
    if i == start {
        return (0, 0);
    }
    let v = if neg {
        if overflow || mag > i64::MAX as u64 + 1 {
            i64::MIN
        } else {
            (mag as i64).wrapping_neg()
        }
    } else if overflow || mag > i64::MAX as u64 {
        i64::MAX
    } else {
        mag as i64
    };
    (v, i)
}

/// C atoi (glibc: `(int) strtol(s, NULL, 10)`), on the string up to the first NUL.
pub(super) fn atoi(s: &[u8]) -> i32 {
    strtol(cstr(s), false).0 as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_decode() {
        let m = Msg::new(msg_type::WRITE, 7, 3, &b"a\0b"[..]);
        let e = m.encode();
        assert_eq!(e.len(), 19);
        let mut h = [0u8; 16];
        h.copy_from_slice(&e[..16]);
        assert_eq!(Msg::parse_header(&h), (11, 7, 3, 3));
        assert_eq!(Msg::decode(&e[..18]), Ok(None));
        assert_eq!(Msg::decode(&e), Ok(Some((m, 19))));
        let mut big = e.clone();
        big[12..16].copy_from_slice(&4097u32.to_le_bytes());
        assert_eq!(Msg::decode(&big), Err(4097));
    }

    #[test]
    fn error_names() {
        for e in XsError::ALL {
            assert_eq!(XsError::from_name(e.name()), Some(e));
            assert_eq!(e.reply(1, 2).error_name(), Some(e.name()));
        }
        // C xenstored has no EQUOTA (that is oxenstored's name).
        assert_eq!(XsError::from_name("EQUOTA"), None);
    }

    #[test]
    fn payload_helpers() {
        assert_eq!(get_strings(b"a\0bc\0x"), vec![&b"a"[..], &b"bc"[..]]);
        assert_eq!(count_strings(b"a\0\0x\0"), 3);
        assert_eq!(onearg(b"abc\0"), Some(&b"abc"[..]));
        assert_eq!(onearg(b"abc"), None);
        assert_eq!(onearg(b"a\0b\0"), None);
        assert_eq!(onearg(b""), None);
        assert_eq!(onearg(b"\0"), Some(&b""[..]));
    }

    #[test]
    fn c_numbers() {
        assert_eq!(atoi(b"12"), 12);
        assert_eq!(atoi(b"  -3x"), -3);
        assert_eq!(atoi(b"x"), 0);
        assert_eq!(atoi(b"4294967295"), -1);
        assert_eq!(atoi(b"99999999999999999999999"), -1); // LONG_MAX truncated
        assert_eq!(strtol(b"0x10", true), (16, 4));
        assert_eq!(strtol(b"010", true), (8, 3));
        assert_eq!(strtol(b"08", true), (0, 1));
        assert_eq!(strtol(b"0x", true), (0, 1));
        assert_eq!(strtol(b"-1", true), (-1, 2));
        assert_eq!(strtol(b"", true), (0, 0));
        assert_eq!(strtol(b" ", true), (0, 0));
    }
}
