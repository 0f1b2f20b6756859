//! Parsing one guest transmission from the TX ring.

use alloc::vec::Vec;

use bulkhead_xen::abi::GrantRef;

use crate::abi::*;

/// One TX request slot, decoded from a private copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxSlot {
    pub gref: GrantRef,
    pub offset: u16,
    pub flags: u16,
    pub id: u16,
    pub size: u16,
}

impl TxSlot {
    pub fn decode(b: &[u8; TX_REQUEST_SIZE]) -> TxSlot {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        TxSlot {
            gref: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            offset: u16_at(4),
            flags: u16_at(6),
            id: u16_at(8),
            size: u16_at(10),
        }
    }

    pub fn encode(&self) -> [u8; TX_REQUEST_SIZE] {
        let mut b = [0u8; TX_REQUEST_SIZE];
        b[..4].copy_from_slice(&self.gref.to_le_bytes());
        b[4..6].copy_from_slice(&self.offset.to_le_bytes());
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..10].copy_from_slice(&self.id.to_le_bytes());
        b[10..12].copy_from_slice(&self.size.to_le_bytes());
        b
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gso {
    /// Segment size (MSS).
    pub size: u16,
    /// `GSO_TYPE_TCPV4` or `GSO_TYPE_TCPV6`.
    pub kind: u8,
}

/// A piece of the packet in a guest page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    pub gref: GrantRef,
    pub offset: u16,
    pub len: u16,
}

/// A packet that passed every check: where its bytes are, and what it asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxPacket {
    /// Every slot id consumed, in ring order: each gets a response.
    pub ids: Vec<u16>,
    /// How many of `ids` (the leading ones after the first) were extra-info slots, which
    /// are answered with `RSP_NULL`.
    pub extras: usize,
    pub fragments: Vec<Fragment>,
    pub len: usize,
    pub csum_blank: bool,
    pub data_validated: bool,
    pub gso: Option<Gso>,
    pub mcast_add: Vec<[u8; 6]>,
    pub mcast_del: Vec<[u8; 6]>,
}

/// Why a transmission was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxError {
    /// Drop the packet: answer each consumed slot with `RSP_ERROR` (the `extras`
    /// extra-info slots after the first with `RSP_NULL`), go on.
    Drop {
        ids: Vec<u16>,
        extras: usize,
        why: &'static str,
    },
    /// The frontend broke the ring format: stop serving it (Linux's fatal TX error).
    Fatal(&'static str),
}

fn extra_at(b: &[u8; TX_REQUEST_SIZE]) -> (u8, u8, [u8; 6]) {
    let mut u = [0u8; 6];
    u.copy_from_slice(&b[2..8]);
    (b[0], b[1], u)
}

/// Parse the packet starting with `first` (already taken from the ring); `next` yields
/// the following slots the frontend published, copied out of the ring (None when it
/// published no more).
pub fn parse(
    first: TxSlot,
    mut next: impl FnMut() -> Option<[u8; TX_REQUEST_SIZE]>,
) -> Result<TxPacket, TxError> {
    let mut ids = alloc::vec![first.id];
    let mut p = TxPacket {
        ids: Vec::new(),
        extras: 0,
        fragments: Vec::new(),
        len: first.size as usize,
        csum_blank: first.flags & NETTXF_CSUM_BLANK != 0,
        data_validated: first.flags & NETTXF_DATA_VALIDATED != 0,
        gso: None,
        mcast_add: Vec::new(),
        mcast_del: Vec::new(),
    };
    let mut bad: Option<&'static str> = None;
    // Extra-info slots come right after the first request.
    if first.flags & NETTXF_EXTRA_INFO != 0 {
        loop {
            let raw = next().ok_or(TxError::Fatal("extra info slot missing"))?;
            p.extras += 1;
            if p.extras > EXTRA_TYPE_MAX as usize {
                return Err(TxError::Fatal("too many extra info slots"));
            }
            let (kind, flags, u) = extra_at(&raw);
            // The slot's id position holds extra data: it is answered as a slot anyway,
            // with the id the frontend expects back (Linux answers extras by the id of
            // the request slot they occupy, which netfront ignores).
            ids.push(u16::from_le_bytes([raw[8], raw[9]]));
            match kind {
                EXTRA_TYPE_GSO => {
                    let size = u16::from_le_bytes([u[0], u[1]]);
                    let gso_kind = u[2];
                    if size == 0 {
                        bad = bad.or(Some("GSO size 0"));
                    } else if gso_kind != GSO_TYPE_TCPV4 && gso_kind != GSO_TYPE_TCPV6 {
                        bad = bad.or(Some("unknown GSO type"));
                    } else {
                        p.gso = Some(Gso {
                            size,
                            kind: gso_kind,
                        });
                    }
                }
                EXTRA_TYPE_MCAST_ADD => p.mcast_add.push(u),
                EXTRA_TYPE_MCAST_DEL => p.mcast_del.push(u),
                EXTRA_TYPE_HASH => {}
                _ => return Err(TxError::Fatal("bad extra info type")),
            }
            if flags & EXTRA_FLAG_MORE == 0 {
                break;
            }
        }
    }
    // Data slots: the first carries the total size; each following one its own.
    let mut slots = alloc::vec![first];
    let mut more = first.flags & NETTXF_MORE_DATA != 0;
    while more {
        if slots.len() >= FATAL_SLOTS {
            return Err(TxError::Fatal("packet uses too many slots"));
        }
        let raw = next().ok_or(TxError::Fatal("packet not fully published"))?;
        let s = TxSlot::decode(&raw);
        ids.push(s.id);
        more = s.flags & NETTXF_MORE_DATA != 0;
        slots.push(s);
    }
    // The first slot's `size` is the whole packet; its own share is what the others
    // leave. No slot's data may cross its page (fatal, as in Linux).
    for s in &slots[1..] {
        if s.offset as usize + s.size as usize > PAGE_SIZE {
            return Err(TxError::Fatal("slot crosses a page boundary"));
        }
    }
    let rest: usize = slots[1..].iter().map(|s| s.size as usize).sum();
    if rest > p.len {
        return Err(TxError::Drop {
            ids,
            extras: p.extras,
            why: "slot sizes exceed the packet size",
        });
    }
    if slots.len() > NR_SLOTS_MIN {
        bad = bad.or(Some("more slots than the backend accepts"));
    }
    if p.len < ETH_HLEN {
        bad = bad.or(Some("packet shorter than an Ethernet header"));
    }
    let head = p.len - rest;
    if bad.is_none() && first.offset as usize + head > PAGE_SIZE {
        return Err(TxError::Fatal("first slot crosses a page boundary"));
    }
    if let Some(why) = bad {
        return Err(TxError::Drop {
            ids,
            extras: p.extras,
            why,
        });
    }
    p.fragments.push(Fragment {
        gref: first.gref,
        offset: first.offset,
        len: head as u16,
    });
    for s in &slots[1..] {
        p.fragments.push(Fragment {
            gref: s.gref,
            offset: s.offset,
            len: s.size,
        });
    }
    p.fragments.retain(|f| f.len > 0);
    p.ids = ids;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::VecDeque;

    fn slot(gref: u32, offset: u16, flags: u16, id: u16, size: u16) -> TxSlot {
        TxSlot {
            gref,
            offset,
            flags,
            id,
            size,
        }
    }

    fn extra(kind: u8, flags: u8, u: [u8; 6], id: u16) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[0] = kind;
        b[1] = flags;
        b[2..8].copy_from_slice(&u);
        b[8..10].copy_from_slice(&id.to_le_bytes());
        b
    }

    fn run(first: TxSlot, rest: &[[u8; 12]]) -> Result<TxPacket, TxError> {
        let mut q: VecDeque<[u8; 12]> = rest.iter().copied().collect();
        parse(first, || q.pop_front())
    }

    #[test]
    fn single_slot() {
        let p = run(slot(7, 100, NETTXF_CSUM_BLANK, 1, 60), &[]).unwrap();
        assert_eq!(p.ids, [1]);
        assert_eq!(p.len, 60);
        assert!(p.csum_blank);
        assert_eq!(
            p.fragments,
            [Fragment {
                gref: 7,
                offset: 100,
                len: 60
            }]
        );
    }

    #[test]
    fn multi_slot_with_gso() {
        let first = slot(1, 0, NETTXF_MORE_DATA | NETTXF_EXTRA_INFO, 10, 9000);
        let gso = extra(EXTRA_TYPE_GSO, 0, [0xb4, 0x05, GSO_TYPE_TCPV4, 0, 0, 0], 11);
        let s2 = slot(2, 0, NETTXF_MORE_DATA, 12, 4096).encode();
        let s3 = slot(3, 0, 0, 13, 904).encode();
        let p = run(first, &[gso, s2, s3]).unwrap();
        assert_eq!(p.ids, [10, 11, 12, 13]);
        assert_eq!(p.extras, 1);
        assert_eq!(
            p.gso,
            Some(Gso {
                size: 1460,
                kind: GSO_TYPE_TCPV4
            })
        );
        let lens: Vec<u16> = p.fragments.iter().map(|f| f.len).collect();
        assert_eq!(lens, [4000, 4096, 904]);
    }

    #[test]
    fn malformed_packets_are_dropped_with_every_id() {
        // Shorter than an Ethernet header.
        assert!(matches!(
            run(slot(1, 0, 0, 5, 10), &[]),
            Err(TxError::Drop { ref ids, .. }) if ids == &[5]
        ));
        // Following slots larger than the whole packet.
        let r = run(
            slot(1, 0, NETTXF_MORE_DATA, 5, 100),
            &[slot(2, 0, 0, 6, 200).encode()],
        );
        assert!(matches!(r, Err(TxError::Drop { ref ids, .. }) if ids == &[5, 6]));
        // The first slot's own share fits its page once the others are taken off.
        let r = run(
            slot(1, 4000, NETTXF_MORE_DATA, 5, 150),
            &[slot(2, 0, 0, 6, 100).encode()],
        );
        assert_eq!(r.unwrap().fragments[0].len, 50);
        // Bad GSO.
        let r = run(
            slot(1, 0, NETTXF_EXTRA_INFO, 5, 100),
            &[extra(EXTRA_TYPE_GSO, 0, [0, 0, 1, 0, 0, 0], 6)],
        );
        assert!(matches!(r, Err(TxError::Drop { .. })));
        // 19 slots: more than accepted, not yet fatal.
        let mut rest: Vec<[u8; 12]> = (0..17)
            .map(|i| slot(2, 0, NETTXF_MORE_DATA, 6 + i, 10).encode())
            .collect();
        rest.push(slot(2, 0, 0, 40, 10).encode());
        let r = run(slot(1, 0, NETTXF_MORE_DATA, 5, 1000), &rest);
        assert!(matches!(r, Err(TxError::Drop { ref ids, .. }) if ids.len() == 19));
    }

    #[test]
    fn broken_ring_format_is_fatal() {
        // Slots crossing their page: the first (by its own share), and a later one.
        assert!(matches!(
            run(slot(1, 4090, 0, 5, 60), &[]),
            Err(TxError::Fatal(_))
        ));
        let r = run(
            slot(1, 4000, NETTXF_MORE_DATA, 5, 300),
            &[slot(2, 0, 0, 6, 100).encode()],
        );
        assert!(matches!(r, Err(TxError::Fatal(_))));
        let r = run(
            slot(1, 0, NETTXF_MORE_DATA, 5, 300),
            &[slot(2, 4000, 0, 6, 200).encode()],
        );
        assert!(matches!(r, Err(TxError::Fatal(_))));
        // more_data with nothing published after it.
        assert!(matches!(
            run(slot(1, 0, NETTXF_MORE_DATA, 5, 60), &[]),
            Err(TxError::Fatal(_))
        ));
        // An endless chain.
        let rest: Vec<[u8; 12]> = (0..30)
            .map(|i| slot(2, 0, NETTXF_MORE_DATA, i, 10).encode())
            .collect();
        assert!(matches!(
            run(slot(1, 0, NETTXF_MORE_DATA, 5, 1000), &rest),
            Err(TxError::Fatal(_))
        ));
        // Unknown extra type, and extras that never end.
        assert!(matches!(
            run(
                slot(1, 0, NETTXF_EXTRA_INFO, 5, 60),
                &[extra(9, 0, [0; 6], 6)]
            ),
            Err(TxError::Fatal(_))
        ));
        let more: Vec<[u8; 12]> = (0..10)
            .map(|i| extra(EXTRA_TYPE_HASH, EXTRA_FLAG_MORE, [0; 6], i))
            .collect();
        assert!(matches!(
            run(slot(1, 0, NETTXF_EXTRA_INFO, 5, 60), &more),
            Err(TxError::Fatal(_))
        ));
    }

    #[test]
    fn random_slots_never_panic_and_accepted_packets_are_consistent() {
        let mut rng = bulkhead_testsupport::XorShift::new(0x1234_5678_9abc_def1);
        let mut next = move || rng.next_u64();
        for _ in 0..20000 {
            let n = (next() % 24) as usize;
            let mut rest: Vec<[u8; 12]> = Vec::new();
            for _ in 0..n {
                let mut b = [0u8; 12];
                for x in b.iter_mut() {
                    *x = next() as u8;
                }
                rest.push(b);
            }
            let mut fb = [0u8; 12];
            for x in fb.iter_mut() {
                *x = next() as u8;
            }
            let first = TxSlot::decode(&fb);
            if let Ok(p) = run(first, &rest) {
                let sum: usize = p.fragments.iter().map(|f| f.len as usize).sum();
                assert_eq!(sum, p.len);
                assert!(p.len >= ETH_HLEN);
                assert!(p
                    .fragments
                    .iter()
                    .all(|f| f.offset as usize + f.len as usize <= PAGE_SIZE));
                assert!(p.ids.len() <= FATAL_SLOTS + EXTRA_TYPE_MAX as usize);
            }
        }
    }
}
