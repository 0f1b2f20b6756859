//! The netif control ring (`feature-ctrl-ring`): a frontend configures how received
//! packets are spread over its queues — a Toeplitz hash over addresses (and TCP ports)
//! with its own key, and a table from hash to queue — as Linux xen-netback implements it.
//! Requests come from the guest; every parameter is checked and a bad one gets
//! `INVALID_PARAMETER`, never a partial change.

use alloc::vec;
use alloc::vec::Vec;

use bulkhead_ring::{BackRing, Layout, RingError, RingMemory};
use bulkhead_xen::abi::GrantRef;
use bulkhead_xen::copy::{GuestMemory, Piece};

use crate::abi::PAGE_SIZE;
use crate::packet::layers_in;

/// `struct xen_netif_ctrl_request` (id u16, type u16, data u32[3]) and
/// `struct xen_netif_ctrl_response` (id u16, type u16, status u32, data u32).
pub const LAYOUT: Layout = Layout {
    request: 16,
    response: 12,
};

pub const TYPE_GET_HASH_FLAGS: u16 = 1;
pub const TYPE_SET_HASH_FLAGS: u16 = 2;
pub const TYPE_SET_HASH_KEY: u16 = 3;
pub const TYPE_GET_HASH_MAPPING_SIZE: u16 = 4;
pub const TYPE_SET_HASH_MAPPING_SIZE: u16 = 5;
pub const TYPE_SET_HASH_MAPPING: u16 = 6;
pub const TYPE_SET_HASH_ALGORITHM: u16 = 7;

pub const STATUS_SUCCESS: u32 = 0;
pub const STATUS_NOT_SUPPORTED: u32 = 1;
pub const STATUS_INVALID_PARAMETER: u32 = 2;

pub const ALGORITHM_NONE: u32 = 0;
pub const ALGORITHM_TOEPLITZ: u32 = 1;

pub const HASH_IPV4: u32 = 1 << 0;
pub const HASH_IPV4_TCP: u32 = 1 << 1;
pub const HASH_IPV6: u32 = 1 << 2;
pub const HASH_IPV6_TCP: u32 = 1 << 3;
const HASH_ALL: u32 = HASH_IPV4 | HASH_IPV4_TCP | HASH_IPV6 | HASH_IPV6_TCP;

/// Limits Linux netback advertises.
pub const MAX_KEY: usize = 40;
pub const MAX_MAPPING: usize = 128;

/// How received packets are spread over a vif's queues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Steering {
    pub queues: u32,
    pub algorithm: u32,
    pub flags: u32,
    pub key: Vec<u8>,
    pub mapping: Vec<u32>,
}

impl Steering {
    pub fn new(queues: u32) -> Steering {
        Steering {
            queues,
            algorithm: ALGORITHM_NONE,
            flags: 0,
            key: Vec::new(),
            mapping: Vec::new(),
        }
    }

    /// The frontend's choice of queue for a frame, when it configured one.
    pub fn queue_for(&self, frame: &[u8]) -> Option<usize> {
        self.queue_for_in(frame, frame.len())
    }

    /// [`Steering::queue_for`] of a packet `len` bytes long of which `frame` holds the
    /// headers.
    pub fn queue_for_in(&self, frame: &[u8], len: usize) -> Option<usize> {
        if self.algorithm != ALGORITHM_TOEPLITZ || self.mapping.is_empty() || self.flags == 0 {
            return None;
        }
        let l = layers_in(frame, len).ok()?;
        let tcp = l.proto == 6 && frame.len() >= l.l4 + 4;
        let (addrs, want_tcp, want_ip) = if l.v6 {
            (&frame[l.l3 + 8..l.l3 + 40], HASH_IPV6_TCP, HASH_IPV6)
        } else {
            (&frame[l.l3 + 12..l.l3 + 20], HASH_IPV4_TCP, HASH_IPV4)
        };
        let mut input: Vec<u8> = addrs.to_vec();
        if tcp && self.flags & want_tcp != 0 {
            input.extend_from_slice(&frame[l.l4..l.l4 + 4]);
        } else if self.flags & want_ip == 0 {
            return None;
        }
        let h = toeplitz(&self.key, &input);
        Some(self.mapping[h as usize % self.mapping.len()] as usize)
    }
}

/// The Toeplitz hash (as in RSS): for every set input bit, xor in the 32 key bits that
/// start at that bit position. Key bits beyond the key are zero.
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    let bit = |i: usize| -> u32 { key.get(i / 8).map_or(0, |b| (b >> (7 - i % 8)) as u32 & 1) };
    let mut window: u32 = 0;
    for i in 0..32 {
        window = (window << 1) | bit(i);
    }
    let mut h = 0u32;
    for (n, byte) in input.iter().enumerate() {
        for b in 0..8 {
            if byte & (0x80 >> b) != 0 {
                h ^= window;
            }
            window = (window << 1) | bit(n * 8 + b + 32);
        }
    }
    h
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Apply one request; (status, data) for the response.
pub fn handle(req: &[u8], s: &mut Steering, guest: &mut dyn GuestMemory) -> (u32, u32) {
    let ty = u16::from_le_bytes([req[2], req[3]]);
    let d = [u32_at(req, 4), u32_at(req, 8), u32_at(req, 12)];
    let invalid = (STATUS_INVALID_PARAMETER, 0);
    match ty {
        TYPE_GET_HASH_FLAGS => (STATUS_SUCCESS, HASH_ALL),
        TYPE_SET_HASH_FLAGS => {
            if d[0] & !HASH_ALL != 0 || (d[0] != 0 && s.algorithm == ALGORITHM_NONE) {
                return invalid;
            }
            s.flags = d[0];
            (STATUS_SUCCESS, 0)
        }
        TYPE_SET_HASH_KEY => {
            let (gref, len) = (d[0] as GrantRef, d[1] as usize);
            if len > MAX_KEY {
                return invalid;
            }
            let mut key = vec![0u8; len];
            if len > 0 {
                let piece = Piece {
                    gref,
                    offset: 0,
                    len: len as u16,
                };
                if guest.read(&[piece], &mut key).is_err() {
                    return invalid;
                }
            }
            s.key = key;
            (STATUS_SUCCESS, 0)
        }
        TYPE_GET_HASH_MAPPING_SIZE => (STATUS_SUCCESS, MAX_MAPPING as u32),
        TYPE_SET_HASH_MAPPING_SIZE => {
            let n = d[0] as usize;
            if n > MAX_MAPPING {
                return invalid;
            }
            s.mapping = vec![0; n];
            (STATUS_SUCCESS, 0)
        }
        TYPE_SET_HASH_MAPPING => {
            let (gref, off, n) = (d[0] as GrantRef, d[1] as usize, d[2] as usize);
            let Some(end) = off.checked_add(n) else {
                return invalid;
            };
            if end > s.mapping.len() || n * 4 > PAGE_SIZE {
                return invalid;
            }
            let mut raw = vec![0u8; n * 4];
            if n > 0 {
                let piece = Piece {
                    gref,
                    offset: 0,
                    len: (n * 4) as u16,
                };
                if guest.read(&[piece], &mut raw).is_err() {
                    return invalid;
                }
            }
            let entries: Vec<u32> = raw.chunks_exact(4).map(|c| u32_at(c, 0)).collect();
            if entries.iter().any(|&q| q >= s.queues) {
                return invalid;
            }
            s.mapping[off..end].copy_from_slice(&entries);
            (STATUS_SUCCESS, 0)
        }
        TYPE_SET_HASH_ALGORITHM => match d[0] {
            ALGORITHM_NONE => {
                s.algorithm = ALGORITHM_NONE;
                s.flags = 0;
                (STATUS_SUCCESS, 0)
            }
            ALGORITHM_TOEPLITZ => {
                s.algorithm = ALGORITHM_TOEPLITZ;
                (STATUS_SUCCESS, 0)
            }
            _ => invalid,
        },
        _ => (STATUS_NOT_SUPPORTED, 0),
    }
}

/// Serve up to `budget` requests on the control ring; true when the frontend must be
/// told. The caller looks again (`final_check`) after letting other tasks run, so a
/// frontend that re-publishes as fast as it is answered cannot hold the task.
pub fn serve<M: RingMemory>(
    ring: &mut BackRing<M>,
    s: &mut Steering,
    guest: &mut dyn GuestMemory,
    budget: usize,
) -> Result<bool, RingError> {
    let mut served = 0;
    while served < budget.max(1) {
        let Some(req) = ring.take()? else { break };
        served += 1;
        let (status, data) = handle(&req, s, guest);
        let mut r = [0u8; 12];
        r[..4].copy_from_slice(&req[..4]); // id and type echoed
        r[4..8].copy_from_slice(&status.to_le_bytes());
        r[8..12].copy_from_slice(&data.to_le_bytes());
        ring.respond(&r);
    }
    Ok(ring.push())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_ring::{shared_init, FrontRing, VecRing};
    use bulkhead_xen::copy::GrantFault;

    /// The RSS verification key and vectors from Microsoft's RSS documentation.
    const KEY: [u8; 40] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f,
        0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
        0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];

    #[test]
    fn toeplitz_matches_the_rss_verification_vectors() {
        // 66.9.149.187:2794 -> 161.142.100.80:1766: IPv4 0x323e8fc2, with TCP 0x51ccc178.
        let ip = [161, 142, 100, 80, 66, 9, 149, 187];
        // (The RSS input is source address then destination.)
        let src_dst = [66, 9, 149, 187, 161, 142, 100, 80];
        assert_eq!(toeplitz(&KEY, &src_dst), 0x323e8fc2);
        let mut tcp = src_dst.to_vec();
        tcp.extend_from_slice(&2794u16.to_be_bytes());
        tcp.extend_from_slice(&1766u16.to_be_bytes());
        assert_eq!(toeplitz(&KEY, &tcp), 0x51ccc178);
        assert_ne!(toeplitz(&KEY, &ip), 0x323e8fc2);
    }

    struct Page(Vec<u8>);
    impl GuestMemory for Page {
        fn read(&mut self, p: &[Piece], buf: &mut [u8]) -> Result<(), GrantFault> {
            if p[0].gref != 9 {
                return Err(GrantFault {
                    gref: p[0].gref,
                    status: -4,
                });
            }
            buf.copy_from_slice(&self.0[..buf.len()]);
            Ok(())
        }
        fn write(&mut self, _: &[Piece], _: &[u8]) -> Result<(), GrantFault> {
            unreachable!()
        }
    }

    fn req(ty: u16, d: [u32; 3]) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..2].copy_from_slice(&77u16.to_le_bytes());
        b[2..4].copy_from_slice(&ty.to_le_bytes());
        for (i, x) in d.iter().enumerate() {
            b[4 + 4 * i..8 + 4 * i].copy_from_slice(&x.to_le_bytes());
        }
        b
    }

    #[test]
    fn configure_over_the_ring_then_steer() {
        let mut mem = VecRing::new(1);
        shared_init(&mut mem);
        let mut front = FrontRing::new(&mem, LAYOUT);
        let mut back = BackRing::attach(mem, LAYOUT).unwrap();
        let mut s = Steering::new(2);
        let mut key_page = KEY.to_vec();
        key_page.resize(4096, 0);
        let mut g = Page(key_page);
        let script = [
            (
                req(TYPE_SET_HASH_FLAGS, [HASH_IPV4, 0, 0]),
                STATUS_INVALID_PARAMETER,
            ),
            (
                req(TYPE_SET_HASH_ALGORITHM, [ALGORITHM_TOEPLITZ, 0, 0]),
                STATUS_SUCCESS,
            ),
            (
                req(TYPE_SET_HASH_FLAGS, [HASH_IPV4 | HASH_IPV4_TCP, 0, 0]),
                STATUS_SUCCESS,
            ),
            (
                req(TYPE_SET_HASH_FLAGS, [1 << 9, 0, 0]),
                STATUS_INVALID_PARAMETER,
            ),
            (req(TYPE_SET_HASH_KEY, [9, 41, 0]), STATUS_INVALID_PARAMETER),
            (req(TYPE_SET_HASH_KEY, [5, 40, 0]), STATUS_INVALID_PARAMETER),
            (req(TYPE_SET_HASH_KEY, [9, 40, 0]), STATUS_SUCCESS),
            (
                req(TYPE_SET_HASH_MAPPING_SIZE, [129, 0, 0]),
                STATUS_INVALID_PARAMETER,
            ),
            (req(TYPE_SET_HASH_MAPPING_SIZE, [2, 0, 0]), STATUS_SUCCESS),
            (
                req(TYPE_SET_HASH_MAPPING, [9, 1, 2]),
                STATUS_INVALID_PARAMETER,
            ),
            (
                req(TYPE_SET_HASH_MAPPING, [9, u32::MAX, 2]),
                STATUS_INVALID_PARAMETER,
            ),
            (req(10, [0, 0, 0]), STATUS_NOT_SUPPORTED),
        ];
        for (r, _) in &script {
            front.put(back.memory_mut(), r);
        }
        front.publish(back.memory_mut());
        assert!(serve(&mut back, &mut s, &mut g, usize::MAX).unwrap());
        for (i, (_, want)) in script.iter().enumerate() {
            let r = front.get(back.memory()).unwrap();
            assert_eq!(&r[..2], &77u16.to_le_bytes());
            assert_eq!(u32_at(&r, 4), *want, "request {i}");
        }
        // Mapping [1, 0] from the guest page; queue numbers must be < 2.
        g.0[..8].copy_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            handle(&req(TYPE_SET_HASH_MAPPING, [9, 0, 2]), &mut s, &mut g).0,
            STATUS_SUCCESS
        );
        g.0[..4].copy_from_slice(&[2, 0, 0, 0]);
        assert_eq!(
            handle(&req(TYPE_SET_HASH_MAPPING, [9, 0, 1]), &mut s, &mut g).0,
            STATUS_INVALID_PARAMETER
        );
        assert_eq!(s.mapping, [1, 0]);
        // A TCP/IPv4 frame 66.9.149.187:2794 -> 161.142.100.80:1766 hashes to 0x51ccc178,
        // which is even: mapping[0] = queue 1.
        let mut f = vec![0u8; 54];
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[23] = 6;
        f[26..30].copy_from_slice(&[66, 9, 149, 187]);
        f[30..34].copy_from_slice(&[161, 142, 100, 80]);
        f[34..36].copy_from_slice(&2794u16.to_be_bytes());
        f[36..38].copy_from_slice(&1766u16.to_be_bytes());
        assert_eq!(s.queue_for(&f), Some(1));
        // Not IP: no opinion (the backend's own spreading applies).
        assert_eq!(s.queue_for(&[0u8; 60]), None);
    }

    /// Finding 2 of the hostile-guest review: a frontend that re-publishes control
    /// requests from inside our ring read must not keep the control task busy: each
    /// call serves its budget (not the whole ring, not for ever), and the caller yields
    /// before it looks again.
    #[test]
    fn a_frontend_that_republishes_for_ever_does_not_hold_the_task() {
        let mem = bulkhead_ring::Republishing::new(1, LAYOUT, 10_000, |_| {
            req(TYPE_SET_HASH_FLAGS, [u32::MAX, 0, 0]).to_vec()
        });
        let mut back = BackRing::attach(mem, LAYOUT).unwrap();
        let mut s = Steering::new(2);
        let mut g = Page(alloc::vec![0; 4096]);
        for turn in 1..=3u32 {
            serve(&mut back, &mut s, &mut g, 16).unwrap();
            assert!(!back.memory().exhausted());
            assert_eq!(back.in_flight(), 0, "everything taken was answered");
            assert_eq!(back.indexes().rsp_prod, 16 * turn, "one budget per turn");
            assert!(
                back.final_check().unwrap(),
                "the caller sees more and comes back"
            );
        }
    }
}
