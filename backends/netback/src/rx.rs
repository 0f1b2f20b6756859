//! Laying a packet into the buffers a frontend posted on its RX ring (receive-copy, the
//! only mode modern frontends use): each slot's page is filled from offset 0, the first
//! response carries the checksum flags, a GSO packet's extra-info slot follows the first
//! data slot, and `more_data` chains the slots, as Linux xen-netback writes them.

use alloc::vec::Vec;

use bulkhead_xen::abi::GrantRef;
use bulkhead_xen::copy::Piece;

use crate::abi::*;
use crate::tx::Gso;

/// One buffer the frontend posted (`struct netif_rx_request`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxRequest {
    pub id: u16,
    pub gref: GrantRef,
}

impl RxRequest {
    pub fn decode(b: &[u8]) -> RxRequest {
        RxRequest {
            id: u16::from_le_bytes([b[0], b[1]]),
            gref: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    pub fn encode(&self) -> [u8; RX_REQUEST_SIZE] {
        let mut b = [0u8; RX_REQUEST_SIZE];
        b[..2].copy_from_slice(&self.id.to_le_bytes());
        b[4..].copy_from_slice(&self.gref.to_le_bytes());
        b
    }
}

/// `struct netif_rx_response`; `status` is the byte count of the slot, or an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxResponse {
    pub id: u16,
    pub offset: u16,
    pub flags: u16,
    pub status: i16,
}

impl RxResponse {
    pub fn encode(&self) -> [u8; RX_RESPONSE_SIZE] {
        let mut b = [0u8; RX_RESPONSE_SIZE];
        b[..2].copy_from_slice(&self.id.to_le_bytes());
        b[2..4].copy_from_slice(&self.offset.to_le_bytes());
        b[4..6].copy_from_slice(&self.flags.to_le_bytes());
        b[6..8].copy_from_slice(&self.status.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> RxResponse {
        RxResponse {
            id: u16::from_le_bytes([b[0], b[1]]),
            offset: u16::from_le_bytes([b[2], b[3]]),
            flags: u16::from_le_bytes([b[4], b[5]]),
            status: i16::from_le_bytes([b[6], b[7]]),
        }
    }
}

/// The GSO extra-info slot as an RX response (`struct netif_extra_info`).
pub fn gso_extra(g: Gso) -> [u8; EXTRA_INFO_SIZE] {
    let mut b = [0u8; EXTRA_INFO_SIZE];
    b[0] = EXTRA_TYPE_GSO;
    b[1] = 0;
    b[2..4].copy_from_slice(&g.size.to_le_bytes());
    b[4] = g.kind;
    b
}

/// Slots a packet of `len` bytes takes.
pub fn slots_needed(len: usize, gso: bool) -> usize {
    len.div_ceil(PAGE_SIZE).max(1) + gso as usize
}

/// Where the bytes go and what the frontend is told, in ring order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The packet's bytes, back to back, into these pieces of the posted pages.
    pub pieces: Vec<Piece>,
    /// One encoded response per consumed request (data slots and the GSO slot).
    pub responses: Vec<[u8; RX_RESPONSE_SIZE]>,
}

/// Lay a packet of `len` bytes into `reqs` (exactly [`slots_needed`] of them).
/// `first_flags` are the checksum flags for the first slot.
pub fn place(len: usize, first_flags: u16, gso: Option<Gso>, reqs: &[RxRequest]) -> Placement {
    debug_assert_eq!(reqs.len(), slots_needed(len, gso.is_some()));
    // Each data slot's request and how many bytes it takes: whole pages, then the rest.
    let slots = data_requests(reqs, gso.is_some())
        .zip((0..len.div_ceil(PAGE_SIZE).max(1)).map(|i| (len - i * PAGE_SIZE).min(PAGE_SIZE)));
    let pieces = slots
        .clone()
        .map(|(r, n)| Piece {
            gref: r.gref,
            offset: 0,
            len: n as u16,
        })
        .collect();
    Placement {
        pieces,
        responses: responses(slots, first_flags, gso),
    }
}

/// The requests of a packet's chain that take its bytes: all but the GSO extra-info
/// slot's, which is the second (the frontend ignores its id).
pub fn data_requests(reqs: &[RxRequest], gso: bool) -> impl Iterator<Item = &RxRequest> + Clone {
    reqs.iter()
        .enumerate()
        .filter(move |&(i, _)| !(gso && i == 1))
        .map(|(_, r)| r)
}

/// The responses of a packet laid into its data slots (each slot's request, see
/// [`data_requests`], and the bytes it took), in ring order: MORE_DATA on all but the
/// last, the checksum flags on the first and, with GSO, the extra-info slot right after
/// it.
pub fn responses<'a>(
    slots: impl Iterator<Item = (&'a RxRequest, usize)>,
    first_flags: u16,
    gso: Option<Gso>,
) -> Vec<[u8; RX_RESPONSE_SIZE]> {
    let mut slots = slots.peekable();
    let mut out = Vec::with_capacity(slots.size_hint().1.unwrap_or(0) + gso.is_some() as usize);
    let mut first = true;
    while let Some((r, n)) = slots.next() {
        let mut flags = if slots.peek().is_some() {
            NETRXF_MORE_DATA
        } else {
            0
        };
        if first {
            flags |= first_flags;
            if gso.is_some() {
                flags |= NETRXF_EXTRA_INFO;
            }
        }
        out.push(
            RxResponse {
                id: r.id,
                offset: 0,
                flags,
                status: n as i16,
            }
            .encode(),
        );
        if let (true, Some(g)) = (first, gso) {
            out.push(gso_extra(g));
        }
        first = false;
    }
    out
}

/// Turn a placement's responses into errors (the copy failed): the chain stays intact so
/// the frontend consumes every slot, and drops the packet.
pub fn fail(p: &mut Placement) {
    let gso_at = if p.responses.len() > p.pieces.len() {
        Some(1)
    } else {
        None
    };
    for (i, r) in p.responses.iter_mut().enumerate() {
        if Some(i) == gso_at {
            continue;
        }
        let mut d = RxResponse::decode(r);
        d.status = RSP_ERROR;
        *r = d.encode();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reqs(n: usize) -> Vec<RxRequest> {
        (0..n)
            .map(|i| RxRequest {
                id: 100 + i as u16,
                gref: 500 + i as u32,
            })
            .collect()
    }

    #[test]
    fn small_packet_one_slot() {
        let p = place(60, NETRXF_DATA_VALIDATED, None, &reqs(1));
        assert_eq!(
            p.pieces,
            [Piece {
                gref: 500,
                offset: 0,
                len: 60
            }]
        );
        assert_eq!(
            RxResponse::decode(&p.responses[0]),
            RxResponse {
                id: 100,
                offset: 0,
                flags: NETRXF_DATA_VALIDATED,
                status: 60
            }
        );
    }

    #[test]
    fn gso_packet_chains_with_extra_after_first() {
        let len = 3 * 4096 + 10;
        let g = Gso {
            size: 1448,
            kind: GSO_TYPE_TCPV4,
        };
        assert_eq!(slots_needed(len, true), 5);
        let p = place(
            len,
            NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED,
            Some(g),
            &reqs(5),
        );
        assert_eq!(p.pieces.len(), 4);
        assert_eq!(
            p.pieces.iter().map(|x| x.gref).collect::<Vec<_>>(),
            [500, 502, 503, 504]
        );
        let r0 = RxResponse::decode(&p.responses[0]);
        assert_eq!(
            r0.flags,
            NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED | NETRXF_EXTRA_INFO | NETRXF_MORE_DATA
        );
        assert_eq!(p.responses[1][0], EXTRA_TYPE_GSO);
        assert_eq!(
            u16::from_le_bytes([p.responses[1][2], p.responses[1][3]]),
            1448
        );
        let last = RxResponse::decode(&p.responses[4]);
        assert_eq!((last.id, last.flags, last.status), (104, 0, 10));
        let total: i32 = [0, 2, 3, 4]
            .iter()
            .map(|&i| RxResponse::decode(&p.responses[i]).status as i32)
            .sum();
        assert_eq!(total as usize, len);
    }

    #[test]
    fn failure_keeps_the_chain() {
        let g = Gso {
            size: 1448,
            kind: GSO_TYPE_TCPV6,
        };
        let mut p = place(5000, 0, Some(g), &reqs(3));
        fail(&mut p);
        let r0 = RxResponse::decode(&p.responses[0]);
        assert_eq!(r0.status, RSP_ERROR);
        assert!(r0.flags & NETRXF_MORE_DATA != 0);
        assert_eq!(p.responses[1][0], EXTRA_TYPE_GSO);
        assert_eq!(RxResponse::decode(&p.responses[2]).status, RSP_ERROR);
    }
}
