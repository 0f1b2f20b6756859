//! Decoding and validating one request copied out of the ring.
//!
//! Everything here is guest-controlled. A request that cannot be served becomes a
//! [`Rejected`] carrying the id and operation to echo and the status to answer with; it
//! never becomes a panic, and the ring keeps working.

use alloc::vec::Vec;

use bulkhead_xen::abi::GrantRef;

use crate::abi::*;

/// One page (or part of one) of guest memory named by a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub gref: GrantRef,
    /// First and last 512-byte sector inside the page, inclusive.
    pub first: u8,
    pub last: u8,
}

impl Segment {
    pub fn decode(b: &[u8]) -> Segment {
        Segment {
            gref: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            first: b[4],
            last: b[5],
        }
    }

    pub fn is_valid(&self) -> bool {
        self.first <= self.last && self.last < SECTORS_PER_PAGE
    }

    pub fn sectors(&self) -> u64 {
        (self.last - self.first) as u64 + 1
    }

    pub fn offset(&self) -> usize {
        (self.first as usize) << SECTOR_SHIFT
    }

    pub fn bytes(&self) -> usize {
        (self.sectors() as usize) << SECTOR_SHIFT
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Read or write; segments are direct, or still to be fetched from indirect pages.
    Rw {
        write: bool,
        sector: u64,
        segments: Segments,
    },
    /// A barrier: like a write, with everything before it stable first. Zero segments
    /// means a pure barrier (a flush).
    Barrier {
        sector: u64,
        segments: Vec<Segment>,
    },
    Flush,
    Discard {
        sector: u64,
        sectors: u64,
        secure: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segments {
    Direct(Vec<Segment>),
    /// `count` segments in the pages granted by `pages`, read with [`decode_indirect`].
    Indirect {
        count: usize,
        pages: Vec<GrantRef>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    /// Echoed in the response: for an indirect request, the inner operation (Linux's
    /// blkfront matches responses by that).
    pub operation: u8,
    pub body: Body,
}

/// A request refused before it reached the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub id: u64,
    pub operation: u8,
    pub status: i16,
    pub why: &'static str,
}

/// What a connection negotiated: the limits requests are checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Advertised `feature-max-indirect-segments` (0: indirect not offered).
    pub max_indirect_segments: usize,
    pub barrier: bool,
    pub flush: bool,
    pub discard: bool,
    pub secure_discard: bool,
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

/// Decode a request the ring handed us (`raw` is the private copy, of the protocol's
/// request size).
pub fn decode(raw: &[u8], protocol: Protocol, limits: &Limits) -> Result<Request, Rejected> {
    assert_eq!(
        raw.len(),
        protocol.request_size(),
        "ring copies whole requests"
    );
    let operation = raw[0];
    let id = u64_at(raw, protocol.id_offset());
    let reject = |operation, status, why| Rejected {
        id,
        operation,
        status,
        why,
    };
    let sector = u64_at(raw, protocol.sector_offset());
    let direct = |max_ok_zero: bool| -> Result<Vec<Segment>, Rejected> {
        let n = raw[1] as usize;
        if n > MAX_SEGMENTS_PER_REQUEST || (n == 0 && !max_ok_zero) {
            return Err(reject(operation, RSP_ERROR, "bad segment count"));
        }
        let base = protocol.segments_offset();
        let segs: Vec<Segment> = (0..n)
            .map(|i| Segment::decode(&raw[base + i * SEGMENT_SIZE..]))
            .collect();
        if segs.iter().any(|s| !s.is_valid()) {
            return Err(reject(
                operation,
                RSP_ERROR,
                "segment sectors outside the page",
            ));
        }
        Ok(segs)
    };
    let body = match operation {
        OP_READ | OP_WRITE => Body::Rw {
            write: operation == OP_WRITE,
            sector,
            segments: Segments::Direct(direct(false)?),
        },
        OP_WRITE_BARRIER => {
            if !limits.barrier {
                return Err(reject(operation, RSP_EOPNOTSUPP, "barrier not offered"));
            }
            Body::Barrier {
                sector,
                segments: direct(true)?,
            }
        }
        OP_FLUSH_DISKCACHE => {
            if !limits.flush {
                return Err(reject(operation, RSP_EOPNOTSUPP, "flush not offered"));
            }
            Body::Flush
        }
        OP_DISCARD => {
            if !limits.discard {
                return Err(reject(operation, RSP_EOPNOTSUPP, "discard not offered"));
            }
            let secure = raw[1] & DISCARD_SECURE != 0;
            if secure && !limits.secure_discard {
                return Err(reject(
                    operation,
                    RSP_EOPNOTSUPP,
                    "secure discard not offered",
                ));
            }
            Body::Discard {
                sector,
                sectors: u64_at(raw, protocol.segments_offset()),
                secure,
            }
        }
        OP_INDIRECT => {
            let inner = raw[1];
            if limits.max_indirect_segments == 0 {
                return Err(reject(
                    inner,
                    RSP_EOPNOTSUPP,
                    "indirect requests not offered",
                ));
            }
            if inner != OP_READ && inner != OP_WRITE {
                return Err(reject(
                    inner,
                    RSP_ERROR,
                    "indirect operation is not read or write",
                ));
            }
            let count = u16::from_le_bytes([raw[2], raw[3]]) as usize;
            if count == 0 || count > limits.max_indirect_segments {
                return Err(reject(inner, RSP_ERROR, "bad indirect segment count"));
            }
            let npages = count.div_ceil(SEGMENTS_PER_INDIRECT_PAGE);
            debug_assert!(npages <= MAX_INDIRECT_PAGES_PER_REQUEST);
            let base = protocol.indirect_grefs_offset();
            let pages = (0..npages).map(|i| u32_at(raw, base + 4 * i)).collect();
            return Ok(Request {
                id,
                operation: inner,
                body: Body::Rw {
                    write: inner == OP_WRITE,
                    sector,
                    segments: Segments::Indirect { count, pages },
                },
            });
        }
        _ => return Err(reject(operation, RSP_EOPNOTSUPP, "unknown operation")),
    };
    Ok(Request {
        id,
        operation,
        body,
    })
}

/// The segments of an indirect request, from a private copy of its pages' contents
/// (`pages` holds the bytes of the indirect pages back to back).
pub fn decode_indirect(pages: &[u8], count: usize) -> Result<Vec<Segment>, &'static str> {
    if pages.len() < count * SEGMENT_SIZE {
        return Err("indirect pages shorter than the segment count");
    }
    let segs: Vec<Segment> = (0..count)
        .map(|i| Segment::decode(&pages[i * SEGMENT_SIZE..]))
        .collect();
    if segs.iter().any(|s| !s.is_valid()) {
        return Err("indirect segment sectors outside the page");
    }
    Ok(segs)
}

/// Where a read or write lands on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// First device block.
    pub lba: u64,
    pub bytes: usize,
}

/// Check a transfer of `segments` at 512-byte `sector` against a device of
/// `capacity_sectors` (512-byte units) and `block_size`-byte blocks: sector and every
/// segment must be whole blocks (Linux blkback's rule), and the range must fit.
pub fn place(
    sector: u64,
    segments: &[Segment],
    capacity_sectors: u64,
    block_size: u32,
) -> Result<Placement, &'static str> {
    let per_block = (block_size >> SECTOR_SHIFT).max(1) as u64;
    if !sector.is_multiple_of(per_block) {
        return Err("start sector not aligned to the logical block size");
    }
    let mut sectors = 0u64;
    for s in segments {
        if s.sectors() % per_block != 0 || !(s.first as u64).is_multiple_of(per_block) {
            return Err("segment not a whole number of logical blocks");
        }
        sectors += s.sectors();
    }
    if sectors == 0 {
        return Err("empty transfer");
    }
    match sector.checked_add(sectors) {
        Some(end) if end <= capacity_sectors => {}
        _ => return Err("transfer beyond the end of the device"),
    }
    Ok(Placement {
        lba: sector / per_block,
        bytes: (sectors << SECTOR_SHIFT) as usize,
    })
}

/// Check a discard range the same way; returns (first block, blocks).
pub fn place_discard(
    sector: u64,
    sectors: u64,
    capacity_sectors: u64,
    block_size: u32,
) -> Result<(u64, u64), &'static str> {
    let per_block = (block_size >> SECTOR_SHIFT).max(1) as u64;
    if !sector.is_multiple_of(per_block) || !sectors.is_multiple_of(per_block) || sectors == 0 {
        return Err("discard range not whole logical blocks");
    }
    match sector.checked_add(sectors) {
        Some(end) if end <= capacity_sectors => Ok((sector / per_block, sectors / per_block)),
        _ => Err("discard beyond the end of the device"),
    }
}

/// Encode a request (the frontend's side), for tests and the frontend model.
pub fn encode(
    protocol: Protocol,
    operation: u8,
    id: u64,
    sector: u64,
    segs: &[Segment],
) -> Vec<u8> {
    let mut raw = alloc::vec![0u8; protocol.request_size()];
    raw[0] = operation;
    raw[1] = segs.len() as u8;
    raw[protocol.id_offset()..][..8].copy_from_slice(&id.to_le_bytes());
    raw[protocol.sector_offset()..][..8].copy_from_slice(&sector.to_le_bytes());
    for (i, s) in segs.iter().enumerate().take(MAX_SEGMENTS_PER_REQUEST) {
        let o = protocol.segments_offset() + i * SEGMENT_SIZE;
        raw[o..o + 4].copy_from_slice(&s.gref.to_le_bytes());
        raw[o + 4] = s.first;
        raw[o + 5] = s.last;
    }
    raw
}

/// Encode an indirect request (the frontend's side).
pub fn encode_indirect(
    protocol: Protocol,
    inner: u8,
    id: u64,
    sector: u64,
    count: u16,
    pages: &[GrantRef],
) -> Vec<u8> {
    let mut raw = alloc::vec![0u8; protocol.request_size()];
    raw[0] = OP_INDIRECT;
    raw[1] = inner;
    raw[2..4].copy_from_slice(&count.to_le_bytes());
    raw[protocol.id_offset()..][..8].copy_from_slice(&id.to_le_bytes());
    raw[protocol.sector_offset()..][..8].copy_from_slice(&sector.to_le_bytes());
    for (i, g) in pages
        .iter()
        .enumerate()
        .take(MAX_INDIRECT_PAGES_PER_REQUEST)
    {
        let o = protocol.indirect_grefs_offset() + 4 * i;
        raw[o..o + 4].copy_from_slice(&g.to_le_bytes());
    }
    raw
}

/// Encode a discard request (the frontend's side).
pub fn encode_discard(protocol: Protocol, id: u64, sector: u64, sectors: u64, flag: u8) -> Vec<u8> {
    let mut raw = encode(protocol, OP_DISCARD, id, sector, &[]);
    raw[1] = flag;
    raw[protocol.segments_offset()..][..8].copy_from_slice(&sectors.to_le_bytes());
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Limits = Limits {
        max_indirect_segments: 256,
        barrier: true,
        flush: true,
        discard: true,
        secure_discard: false,
    };

    fn seg(gref: u32, first: u8, last: u8) -> Segment {
        Segment { gref, first, last }
    }

    #[test]
    fn read_write_both_abis() {
        for p in [Protocol::X86_64, Protocol::X86_32] {
            let raw = encode(p, OP_WRITE, 0xabc, 96, &[seg(9, 0, 7), seg(10, 2, 3)]);
            let r = decode(&raw, p, &ALL).unwrap();
            assert_eq!(r.id, 0xabc);
            assert_eq!(r.operation, OP_WRITE);
            assert_eq!(
                r.body,
                Body::Rw {
                    write: true,
                    sector: 96,
                    segments: Segments::Direct(alloc::vec![seg(9, 0, 7), seg(10, 2, 3)])
                }
            );
        }
    }

    #[test]
    fn every_malformed_field_is_rejected_with_its_id() {
        let p = Protocol::X86_64;
        let bad = [
            (encode(p, OP_READ, 1, 0, &[]), RSP_ERROR),
            (encode(p, OP_READ, 2, 0, &[seg(1, 5, 4)]), RSP_ERROR),
            (encode(p, OP_READ, 3, 0, &[seg(1, 0, 8)]), RSP_ERROR),
            (encode(p, 4, 4, 0, &[]), RSP_EOPNOTSUPP),
            (encode(p, 0xff, 5, 0, &[]), RSP_EOPNOTSUPP),
            (encode_indirect(p, OP_READ, 6, 0, 0, &[1]), RSP_ERROR),
            (encode_indirect(p, OP_READ, 7, 0, 257, &[1]), RSP_ERROR),
            (encode_indirect(p, OP_DISCARD, 8, 0, 1, &[1]), RSP_ERROR),
            (encode_discard(p, 9, 0, 8, DISCARD_SECURE), RSP_EOPNOTSUPP),
        ];
        for (raw, status) in bad {
            let want_id = u64_at(&raw, 8);
            let e = decode(&raw, p, &ALL).unwrap_err();
            assert_eq!((e.id, e.status), (want_id, status), "{}", e.why);
        }
        let mut raw = encode(p, OP_READ, 10, 0, &[seg(1, 0, 7)]);
        raw[1] = 12;
        assert_eq!(decode(&raw, p, &ALL).unwrap_err().status, RSP_ERROR);
    }

    #[test]
    fn features_not_offered_are_eopnotsupp() {
        let p = Protocol::X86_64;
        let none = Limits {
            max_indirect_segments: 0,
            barrier: false,
            flush: false,
            discard: false,
            secure_discard: false,
        };
        for raw in [
            encode(p, OP_WRITE_BARRIER, 1, 0, &[]),
            encode(p, OP_FLUSH_DISKCACHE, 1, 0, &[]),
            encode_discard(p, 1, 0, 8, 0),
        ] {
            assert_eq!(decode(&raw, p, &none).unwrap_err().status, RSP_EOPNOTSUPP);
        }
        let e = decode(&encode_indirect(p, OP_WRITE, 1, 0, 4, &[1]), p, &none).unwrap_err();
        assert_eq!((e.operation, e.status), (OP_WRITE, RSP_EOPNOTSUPP));
    }

    #[test]
    fn indirect_answers_with_the_inner_operation() {
        for p in [Protocol::X86_64, Protocol::X86_32] {
            let raw = encode_indirect(p, OP_WRITE, 77, 8, 513, &[5, 6, 7]);
            let r = decode(&raw, p, &ALL);
            // 513 > 256 advertised
            assert!(r.is_err());
            let raw = encode_indirect(p, OP_WRITE, 77, 8, 200, &[5, 6, 7]);
            let r = decode(&raw, p, &ALL).unwrap();
            assert_eq!(r.operation, OP_WRITE);
            assert_eq!(
                r.body,
                Body::Rw {
                    write: true,
                    sector: 8,
                    segments: Segments::Indirect {
                        count: 200,
                        pages: alloc::vec![5]
                    }
                }
            );
        }
    }

    #[test]
    fn indirect_pages_are_validated() {
        let mut page = alloc::vec![0u8; 4096];
        page[4] = 0;
        page[5] = 7;
        page[8 + 4] = 3;
        page[8 + 5] = 2;
        assert!(decode_indirect(&page, 1).is_ok());
        assert!(decode_indirect(&page, 2).is_err());
        assert!(decode_indirect(&page, 513).is_err());
    }

    #[test]
    fn placement_checks_alignment_and_capacity() {
        let full = [seg(1, 0, 7)];
        assert_eq!(
            place(8, &full, 16, 512),
            Ok(Placement {
                lba: 8,
                bytes: 4096
            })
        );
        assert!(place(9, &full, 16, 512).is_err());
        assert!(place(u64::MAX - 3, &full, u64::MAX, 512).is_err());
        // 4 KiB logical blocks: sector and segments must be whole blocks.
        assert_eq!(
            place(8, &full, 64, 4096),
            Ok(Placement {
                lba: 1,
                bytes: 4096
            })
        );
        assert!(place(4, &full, 64, 4096).is_err());
        assert!(place(8, &[seg(1, 0, 3)], 64, 4096).is_err());
        assert!(place(0, &[], 64, 512).is_err());
        assert_eq!(place_discard(8, 8, 16, 512), Ok((8, 8)));
        assert!(place_discard(8, 9, 16, 512).is_err());
        assert!(place_discard(u64::MAX, 2, u64::MAX, 512).is_err());
        assert!(place_discard(0, 0, 16, 512).is_err());
    }
}
