//! xenstore wire format: `struct xsd_sockmsg { u32 type, req_id, tx_id, len; }` followed by
//! `len` bytes of payload (at most XENSTORE_PAYLOAD_MAX = 4096). Strings in payloads are
//! NUL-terminated; errors come back as type XS_ERROR with an errno name ("ENOENT").

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

pub const HEADER_LEN: usize = 16;
pub const PAYLOAD_MAX: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MsgType {
    Control = 0,
    Directory = 1,
    Read = 2,
    GetPerms = 3,
    Watch = 4,
    Unwatch = 5,
    TransactionStart = 6,
    TransactionEnd = 7,
    Introduce = 8,
    Release = 9,
    GetDomainPath = 10,
    Write = 11,
    Mkdir = 12,
    Rm = 13,
    SetPerms = 14,
    WatchEvent = 15,
    Error = 16,
    IsDomainIntroduced = 17,
    Resume = 18,
    SetTarget = 19,
    ResetWatches = 21,
    DirectoryPart = 22,
}

impl MsgType {
    pub fn from_u32(v: u32) -> Option<Self> {
        use MsgType::*;
        Some(match v {
            0 => Control,
            1 => Directory,
            2 => Read,
            3 => GetPerms,
            4 => Watch,
            5 => Unwatch,
            6 => TransactionStart,
            7 => TransactionEnd,
            8 => Introduce,
            9 => Release,
            10 => GetDomainPath,
            11 => Write,
            12 => Mkdir,
            13 => Rm,
            14 => SetPerms,
            15 => WatchEvent,
            16 => Error,
            17 => IsDomainIntroduced,
            18 => Resume,
            19 => SetTarget,
            21 => ResetWatches,
            22 => DirectoryPart,
            _ => return None,
        })
    }
}

/// Everything that can go wrong talking to xenstore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// xenstored answered with an error (errno name, e.g. "ENOENT", "EACCES", "EAGAIN").
    Xs(String),
    /// The reply was malformed: bad type, oversized, wrong shape for the request.
    Protocol(&'static str),
    /// The shared ring's indices are impossible (more in flight than the ring holds).
    RingCorrupt,
    /// A request would exceed the payload limit.
    TooLarge,
    /// A value expected to be text was not UTF-8.
    NotUtf8,
}

impl Error {
    pub fn is(&self, errno: &str) -> bool {
        matches!(self, Error::Xs(e) if e == errno)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Xs(e) => write!(f, "xenstore error {e}"),
            Error::Protocol(w) => write!(f, "xenstore protocol error: {w}"),
            Error::RingCorrupt => write!(f, "xenstore ring indices corrupt"),
            Error::TooLarge => write!(f, "xenstore request larger than {PAYLOAD_MAX} bytes"),
            Error::NotUtf8 => write!(f, "xenstore value is not UTF-8"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub len: u32,
}

impl Header {
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.kind.to_le_bytes());
        b[4..8].copy_from_slice(&self.req_id.to_le_bytes());
        b[8..12].copy_from_slice(&self.tx_id.to_le_bytes());
        b[12..16].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; HEADER_LEN]) -> Self {
        let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header {
            kind: w(0),
            req_id: w(4),
            tx_id: w(8),
            len: w(12),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub kind: MsgType,
    pub req_id: u32,
    pub tx_id: u32,
    pub payload: Vec<u8>,
}

impl Message {
    /// The payload as one string, without its trailing NUL if any.
    pub fn text(&self) -> Result<&str, Error> {
        let p = self.payload.strip_suffix(&[0]).unwrap_or(&self.payload);
        core::str::from_utf8(p).map_err(|_| Error::NotUtf8)
    }

    /// NUL-separated strings (DIRECTORY replies, WATCH_EVENT).
    pub fn strings(&self) -> Result<Vec<&str>, Error> {
        let p = self.payload.strip_suffix(&[0]).unwrap_or(&self.payload);
        if p.is_empty() {
            return Ok(Vec::new());
        }
        p.split(|&b| b == 0)
            .map(|s| core::str::from_utf8(s).map_err(|_| Error::NotUtf8))
            .collect()
    }
}

/// Append one request to `out`. `parts` are concatenated; callers include NULs as the
/// protocol needs (paths are NUL-terminated, a WRITE's value is not).
pub fn encode(
    kind: MsgType,
    req_id: u32,
    tx_id: u32,
    parts: &[&[u8]],
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > PAYLOAD_MAX {
        return Err(Error::TooLarge);
    }
    out.extend_from_slice(
        &Header {
            kind: kind as u32,
            req_id,
            tx_id,
            len: len as u32,
        }
        .to_bytes(),
    );
    for p in parts {
        out.extend_from_slice(p);
    }
    Ok(())
}

/// Reassembles messages from ring bytes, which arrive in arbitrary pieces.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` if more bytes are needed. A malformed header
    /// is an error and the stream cannot be resynchronised: the caller must treat the
    /// connection as broken.
    #[allow(clippy::should_implement_trait)] // fallible, and None means "not yet", not "done"
    pub fn next(&mut self) -> Result<Option<Message>, Error> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let h = Header::from_bytes(self.buf[..HEADER_LEN].try_into().unwrap());
        if h.len as usize > PAYLOAD_MAX {
            return Err(Error::Protocol("reply longer than the payload limit"));
        }
        let kind = MsgType::from_u32(h.kind).ok_or(Error::Protocol("unknown message type"))?;
        let total = HEADER_LEN + h.len as usize;
        if self.buf.len() < total {
            return Ok(None);
        }
        let payload = self.buf[HEADER_LEN..total].to_vec();
        self.buf.drain(..total);
        Ok(Some(Message {
            kind,
            req_id: h.req_id,
            tx_id: h.tx_id,
            payload,
        }))
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn header_round_trip() {
        let h = Header {
            kind: 2,
            req_id: 7,
            tx_id: 3,
            len: 12,
        };
        assert_eq!(Header::from_bytes(&h.to_bytes()), h);
    }

    #[test]
    fn encode_and_decode_in_pieces() {
        let mut out = Vec::new();
        encode(
            MsgType::Write,
            5,
            0,
            &[b"device/vbd/51712/state\0", b"4"],
            &mut out,
        )
        .unwrap();
        encode(MsgType::Read, 6, 9, &[b"a\0"], &mut out).unwrap();
        let mut d = Decoder::default();
        for chunk in out.chunks(3) {
            d.feed(chunk);
        }
        let m = d.next().unwrap().unwrap();
        assert_eq!((m.kind, m.req_id, m.tx_id), (MsgType::Write, 5, 0));
        assert_eq!(m.payload, b"device/vbd/51712/state\x004".to_vec());
        let m2 = d.next().unwrap().unwrap();
        assert_eq!((m2.kind, m2.req_id, m2.tx_id), (MsgType::Read, 6, 9));
        assert_eq!(d.next().unwrap(), None);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn partial_header_waits() {
        let mut d = Decoder::default();
        d.feed(&[2, 0, 0]);
        assert_eq!(d.next().unwrap(), None);
    }

    #[test]
    fn oversized_request_refused() {
        let big = vec![b'x'; PAYLOAD_MAX + 1];
        assert_eq!(
            encode(MsgType::Write, 1, 0, &[&big], &mut Vec::new()),
            Err(Error::TooLarge)
        );
    }

    #[test]
    fn malformed_replies_are_errors() {
        let mut d = Decoder::default();
        d.feed(
            &Header {
                kind: 99,
                req_id: 1,
                tx_id: 0,
                len: 0,
            }
            .to_bytes(),
        );
        assert_eq!(d.next(), Err(Error::Protocol("unknown message type")));
        let mut d = Decoder::default();
        d.feed(
            &Header {
                kind: 2,
                req_id: 1,
                tx_id: 0,
                len: 5000,
            }
            .to_bytes(),
        );
        assert_eq!(
            d.next(),
            Err(Error::Protocol("reply longer than the payload limit"))
        );
    }

    #[test]
    fn strings_and_text() {
        let m = Message {
            kind: MsgType::Directory,
            req_id: 0,
            tx_id: 0,
            payload: b"a\0bb\0c\0".to_vec(),
        };
        assert_eq!(m.strings().unwrap(), vec!["a", "bb", "c"]);
        let empty = Message {
            kind: MsgType::Directory,
            req_id: 0,
            tx_id: 0,
            payload: vec![],
        };
        assert!(empty.strings().unwrap().is_empty());
        let t = Message {
            kind: MsgType::Read,
            req_id: 0,
            tx_id: 0,
            payload: b"4".to_vec(),
        };
        assert_eq!(t.text().unwrap(), "4");
        let bad = Message {
            kind: MsgType::Read,
            req_id: 0,
            tx_id: 0,
            payload: vec![0xff, 0xfe],
        };
        assert_eq!(bad.text(), Err(Error::NotUtf8));
    }
}
