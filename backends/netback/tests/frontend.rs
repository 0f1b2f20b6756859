//! netback against a model of Linux netfront: granted pages in memory, the TX and RX
//! rings driven from the frontend side, every byte checked.

use std::collections::VecDeque;

use bulkhead_netback::abi::*;
use bulkhead_netback::packet::Packet;
use bulkhead_netback::queue::{
    Carrier, RxFeatures, Sent, VifQueue, HEAD_BYTES, RX_LAYOUT, TX_LAYOUT,
};
use bulkhead_netback::rate::Rate;
use bulkhead_netback::rx::{RxRequest, RxResponse};
use bulkhead_netback::tx::{Gso, TxSlot};
use bulkhead_ring::{shared_init, BackRing, FrontRing, RingMemory, VecRing};
use bulkhead_testsupport::{Batches, GrantPages};
use bulkhead_xen::copy::{Forward, GrantFault, GuestMemory, Piece, ReadsAndWrites};

/// A packet as netfront reassembles it: its bytes, the first response's flags and the GSO
/// (size, type) it came with.
type Received = (Vec<u8>, u16, Option<(u16, u8)>);

const MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x01];

/// The guest's granted pages; a copy that leaves its page or does not cover its buffer
/// is a bug of netback's, and panics.
type Pages = GrantPages;

fn pages() -> Pages {
    let mut p = GrantPages::new();
    p.strict = true;
    p
}

/// Two guests' pages, as Xen sees them when we copy between them: the sender's
/// (`from`) is this memory, forwards land in the receiver's (`to`).
struct TwoDomains<'a> {
    from: &'a mut Pages,
    to: &'a mut Pages,
    /// Forward operations made (one per piece on both sides, as in the kernel).
    ops: usize,
}

impl GuestMemory for TwoDomains<'_> {
    fn read(&mut self, pieces: &[Piece], buf: &mut [u8]) -> Result<(), GrantFault> {
        self.from.read(pieces, buf)
    }
    fn write(&mut self, pieces: &[Piece], buf: &[u8]) -> Result<(), GrantFault> {
        self.from.write(pieces, buf)
    }
    fn read_new_and_forward(&mut self, reads: &[&[Piece]], forwards: &[Forward]) -> ReadsAndWrites {
        let r = self.read_new(reads);
        let mut w = Vec::new();
        for f in forwards {
            assert_eq!(f.body.len(), f.body_to.len());
            let mut result = self.to.write(&[f.head_to], f.head);
            self.ops += 1;
            for (p, to) in f.body.iter().zip(f.body_to) {
                if result.is_err() {
                    break;
                }
                self.ops += 1;
                let mut b = vec![0u8; p.len as usize];
                result = self.from.read(&[*p], &mut b).and_then(|()| {
                    assert_eq!(to.len, p.len);
                    self.to.write(&[*to], &b)
                });
            }
            w.push(result);
        }
        (r, w)
    }
}

/// Copy a packet laid straight into `to`'s buffers (`d`) from `from`'s pages as the
/// kernel does: its outcome and the operations it took.
fn forward(
    from: &mut Pages,
    to: &mut Pages,
    head: &Packet,
    body: &[Piece],
    (head_to, body_to): (Piece, &[Piece]),
) -> (Result<(), GrantFault>, usize) {
    let mut m = TwoDomains { from, to, ops: 0 };
    let (_, mut done) = m.read_new_and_forward(
        &[],
        &[Forward {
            to: 2,
            head: &head.data,
            head_to,
            body,
            body_to,
        }],
    );
    (done.pop().unwrap(), m.ops)
}

struct Rig {
    q: VifQueue<VecRing>,
    tx: FrontRing,
    rx: FrontRing,
    pages: Pages,
    next_gref: u32,
}

fn frame(src: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    f[..6].copy_from_slice(&[0x00, 0x16, 0x3e, 0, 0, 2]);
    f[6..12].copy_from_slice(&src);
    f[12] = 0x88;
    f[13] = 0xb5; // local experimental ethertype: no offload work applies
    f
}

impl Rig {
    /// A receiver that offers scatter-gather and nothing else (no GSO, no checksum
    /// offload), with no rate limit.
    fn sg_only() -> Rig {
        let sg = RxFeatures {
            sg: true,
            ..Default::default()
        };
        Rig::new(sg, None)
    }

    fn new(features: RxFeatures, rate: Option<Rate>) -> Rig {
        let fresh = || {
            let mut m = VecRing::new(1);
            shared_init(&mut m);
            m
        };
        let txr = BackRing::attach(fresh(), TX_LAYOUT).unwrap();
        let rxr = BackRing::attach(fresh(), RX_LAYOUT).unwrap();
        let tx = FrontRing::new(txr.memory(), TX_LAYOUT);
        let rx = FrontRing::new(rxr.memory(), RX_LAYOUT);
        Rig {
            q: VifQueue::new("vif7.0".into(), txr, rxr, MAC, features, rate),
            tx,
            rx,
            pages: pages(),
            next_gref: 100,
        }
    }

    fn grant(&mut self, bytes: &[u8], offset: usize) -> u32 {
        let g = self.next_gref;
        self.next_gref += 1;
        let mut page = vec![0u8; 4096];
        page[offset..offset + bytes.len()].copy_from_slice(bytes);
        self.pages.insert(g, page);
        g
    }

    /// Queue a packet as netfront does: data cut at page ends, first slot's size is
    /// the total, optional GSO extra slot.
    fn send(&mut self, f: &[u8], offset: usize, flags: u16, gso: Option<Gso>) -> Vec<u16> {
        let mut layout = Vec::new();
        let mut at = 0;
        let mut off = offset;
        while at < f.len() {
            let n = (4096 - off).min(f.len() - at);
            layout.push((off, n));
            at += n;
            off = 0;
        }
        self.send_laid(f, &layout, flags, gso)
    }

    /// `send` with the frame cut into pieces as `layout` says: (page offset, length).
    fn send_laid(
        &mut self,
        f: &[u8],
        layout: &[(usize, usize)],
        flags: u16,
        gso: Option<Gso>,
    ) -> Vec<u16> {
        let mut slots = Vec::new();
        let mut at = 0;
        for &(off, n) in layout {
            let g = self.grant(&f[at..at + n], off);
            slots.push((g, off as u16, n as u16));
            at += n;
        }
        assert_eq!(at, f.len());
        let mut ids = Vec::new();
        for (i, (g, o, n)) in slots.iter().enumerate() {
            let id = (self.next_gref & 0xff) as u16 + 1000;
            ids.push(id);
            let mut fl = if i + 1 < slots.len() {
                NETTXF_MORE_DATA
            } else {
                0
            };
            if i == 0 {
                fl |= flags;
                if gso.is_some() {
                    fl |= NETTXF_EXTRA_INFO;
                }
            }
            let size = if i == 0 { f.len() as u16 } else { *n };
            let s = TxSlot {
                gref: *g,
                offset: *o,
                flags: fl,
                id,
                size,
            };
            self.tx.put(self.q.rings_mut().0.memory_mut(), &s.encode());
            if i == 0 {
                if let Some(g) = gso {
                    let mut e = [0u8; 12];
                    e[0] = EXTRA_TYPE_GSO;
                    e[2..4].copy_from_slice(&g.size.to_le_bytes());
                    e[4] = g.kind;
                    e[8..10].copy_from_slice(&0xeeeeu16.to_le_bytes());
                    self.tx.put(self.q.rings_mut().0.memory_mut(), &e);
                    ids.push(0xeeee);
                }
            }
        }
        self.tx.publish(self.q.rings_mut().0.memory_mut());
        ids
    }

    fn tx_responses(&mut self) -> Vec<(u16, i16)> {
        let mut out = Vec::new();
        while let Some(r) = self.tx.get(self.q.rings().0.memory()) {
            out.push((
                u16::from_le_bytes([r[0], r[1]]),
                i16::from_le_bytes([r[2], r[3]]),
            ));
        }
        out
    }

    fn transmit(&mut self, now: u64) -> Vec<Packet> {
        let mut out = Vec::new();
        self.q
            .transmit(&mut self.pages, now, 64, &mut out)
            .expect("ring intact");
        out
    }

    /// Post `n` receive buffers.
    fn post(&mut self, n: usize) {
        for _ in 0..n {
            let g = self.grant(&[], 0);
            let r = RxRequest {
                id: (g % 256) as u16,
                gref: g,
            };
            self.rx.put(self.q.rings_mut().1.memory_mut(), &r.encode());
        }
        self.rx.publish(self.q.rings_mut().1.memory_mut());
    }

    /// Collect received packets as netfront reassembles them: (bytes, first flags, gso).
    fn received(&mut self) -> Vec<Received> {
        self.received_or_failed()
            .into_iter()
            .map(|r| r.expect("no error responses"))
            .collect()
    }

    /// As `received`, a packet answered with errors as `Err` (netfront drops it).
    #[allow(clippy::type_complexity)]
    fn received_or_failed(&mut self) -> Vec<Result<Received, ()>> {
        let mut raw = Vec::new();
        while let Some(r) = self.rx.get(self.q.rings().1.memory()) {
            raw.push(r);
        }
        let mut out = Vec::new();
        let mut i = 0;
        while i < raw.len() {
            let first = RxResponse::decode(&raw[i]);
            let mut failed = first.status < 0;
            let at = |r: &RxResponse| {
                // Netfront refuses a slot whose data would leave its page.
                assert!(r.offset as usize + r.status.max(0) as usize <= 4096);
                r.offset as usize..r.offset as usize + r.status.max(0) as usize
            };
            let mut data = if failed {
                Vec::new()
            } else {
                self.page_of(first.id)[at(&first)].to_vec()
            };
            let mut gso = None;
            let mut more = first.flags & NETRXF_MORE_DATA != 0;
            i += 1;
            if first.flags & NETRXF_EXTRA_INFO != 0 {
                let e = &raw[i];
                assert_eq!(e[0], EXTRA_TYPE_GSO);
                gso = Some((u16::from_le_bytes([e[2], e[3]]), e[4]));
                i += 1;
            }
            while more {
                let r = RxResponse::decode(&raw[i]);
                failed |= r.status < 0;
                if !failed {
                    data.extend_from_slice(&self.page_of(r.id)[at(&r)]);
                }
                more = r.flags & NETRXF_MORE_DATA != 0;
                i += 1;
            }
            out.push(if failed {
                Err(())
            } else {
                Ok((data, first.flags, gso))
            });
        }
        out
    }

    fn page_of(&self, id: u16) -> &[u8] {
        // Posted buffers' ids are their gref mod 256 and grefs are unique per test.
        let g = self
            .pages
            .refs()
            .filter(|g| (g % 256) as u16 == id)
            .max()
            .unwrap();
        self.pages.page(g).unwrap()
    }
}

const ALL: RxFeatures = RxFeatures {
    sg: true,
    gso_tcpv4: true,
    gso_tcpv6: true,
    csum_v4: true,
    csum_v6: true,
    multicast_filter: false,
};

#[test]
fn transmit_single_and_multi_slot() {
    let mut r = Rig::new(ALL, None);
    let small = frame(MAC, 60, 1);
    let big = frame(MAC, 1514, 2); // from offset 3000: two slots
    let ids1 = r.send(&small, 100, 0, None);
    let ids2 = r.send(&big, 3000, 0, None);
    let out = r.transmit(0);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].data, small);
    assert_eq!(out[1].data, big);
    let rsp = r.tx_responses();
    let want: Vec<(u16, i16)> = ids1.iter().chain(&ids2).map(|&i| (i, RSP_OKAY)).collect();
    assert_eq!(rsp, want);
    assert_eq!(r.q.stats.tx_packets, 2);
    assert_eq!(r.q.in_flight(), 0);
}

#[test]
fn a_batch_of_packets_is_one_copy_each_way() {
    let mut r = Rig::new(ALL, None);
    let frames: Vec<Vec<u8>> = (0..5).map(|i| frame(MAC, 200 + 300 * i, i as u8)).collect();
    for f in &frames {
        r.send(f, 0, 0, None);
    }
    let mut out = Vec::new();
    r.pages.batches = Batches::default();
    r.q.transmit(&mut r.pages, 0, 64, &mut out).unwrap();
    assert_eq!((r.pages.batches.reads, out.len()), (1, 5));
    assert!(out.iter().zip(&frames).all(|(p, f)| &p.data == f));
    r.post(5);
    let mut pending: VecDeque<Packet> = out.into_iter().collect();
    r.pages.batches = Batches::default();
    r.q.receive(&mut r.pages, &mut pending).unwrap();
    assert_eq!((r.pages.batches.writes, pending.len()), (1, 0));
    let got: Vec<Vec<u8>> = r.received().into_iter().map(|g| g.0).collect();
    assert_eq!(got, frames);
}

#[test]
fn gso_extra_slot_is_answered_null() {
    let mut r = Rig::new(ALL, None);
    let mut f = tcp4(&[7u8; 3000]);
    f[6..12].copy_from_slice(&MAC);
    let g = Gso {
        size: 1448,
        kind: GSO_TYPE_TCPV4,
    };
    let ids = r.send(&f, 0, NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED, Some(g));
    let out = r.transmit(0);
    assert_eq!(out[0].gso, Some(g));
    assert!(out[0].csum_blank);
    let rsp = r.tx_responses();
    assert_eq!(rsp[0], (ids[0], RSP_OKAY));
    assert_eq!(rsp[1].1, RSP_NULL);
}

#[test]
fn spoofed_and_unreadable_packets_are_dropped_and_counted() {
    let mut r = Rig::new(ALL, None);
    let other = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x99];
    r.send(&frame(other, 60, 4), 0, 0, None);
    let ids = r.send(&frame(MAC, 60, 5), 0, 0, None);
    // Revoke the second packet's page.
    let last = r.next_gref - 1;
    r.pages.revoke(last);
    let good = frame(MAC, 70, 6);
    r.send(&good, 0, 0, None);
    let out = r.transmit(0);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].data, good);
    assert_eq!(r.q.stats.tx_spoofed, 1);
    assert_eq!(r.q.stats.tx_errors, 1);
    let rsp = r.tx_responses();
    assert_eq!(rsp.len(), 3);
    assert_eq!(rsp[1], (ids[0], RSP_ERROR));
}

#[test]
fn a_chain_beyond_the_fatal_limit_disconnects() {
    let mut r = Rig::new(ALL, None);
    // 21 slots of 100 bytes, each its own page.
    for i in 0..21u16 {
        let g = r.grant(&[0u8; 100], 0);
        let s = TxSlot {
            gref: g,
            offset: 0,
            flags: if i < 20 { NETTXF_MORE_DATA } else { 0 },
            id: i,
            size: if i == 0 { 2100 } else { 100 },
        };
        r.tx.put(r.q.rings_mut().0.memory_mut(), &s.encode());
    }
    r.tx.publish(r.q.rings_mut().0.memory_mut());
    let mut out = Vec::new();
    assert!(r.q.transmit(&mut r.pages, 0, 64, &mut out).is_err());
}

/// An ARP or IPv4 frame whose sender address is not in the vif's `ip=` list.
fn claim(op: u16, ethertype: u16, ip: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&MAC);
    f[12..14].copy_from_slice(&ethertype.to_be_bytes());
    if ethertype == 0x0806 {
        f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, op as u8]);
        f[22..28].copy_from_slice(&MAC);
        f[28..32].copy_from_slice(&ip);
    } else {
        f[14] = 0x45;
        f[26..30].copy_from_slice(&ip);
    }
    f
}

/// xl's `ip=`: the guest may not claim another address by ARP (gratuitous replies that
/// would poison the gateway's cache) nor send IPv4 from it; its own address and
/// 0.0.0.0 (DHCP, ARP probes) pass, and without `ip=` nothing is filtered.
#[test]
fn a_vif_with_ip_sends_only_from_its_addresses() {
    let own = [10, 0, 2, 99];
    let victim = [10, 0, 2, 15];
    let mut r = Rig::new(ALL, None);
    r.q.ips = bulkhead_netback::negotiate::Ips::parse("10.0.2.99");
    for f in [
        claim(2, 0x0806, victim),
        claim(1, 0x0806, victim),
        claim(0, 0x0800, victim),
        claim(2, 0x0806, own),
        claim(0, 0x0800, own),
        claim(1, 0x0806, [0; 4]),
        claim(0, 0x0800, [0; 4]),
        frame(MAC, 60, 1),
    ] {
        r.send(&f, 0, 0, None);
    }
    let out = r.transmit(0);
    assert_eq!(out.len(), 5, "its own, 0.0.0.0 and non-IP frames pass");
    assert_eq!(r.q.stats.tx_spoofed, 3);
    let mut r = Rig::new(ALL, None);
    r.send(&claim(2, 0x0806, victim), 0, 0, None);
    assert_eq!(
        r.transmit(0).len(),
        1,
        "without ip= nothing is filtered (as Linux)"
    );
}

/// A pass that moves packets both ways copies both at once (one hypercall in the
/// kernel): what the guest sent comes out whole and answered, what waited for it lands
/// in its buffers, and a packet whose send or delivery cannot be copied fails alone.
#[test]
fn a_pass_both_ways_is_one_copy() {
    let mut r = Rig::new(ALL, None);
    let sent: Vec<Vec<u8>> = (0..3).map(|i| frame(MAC, 100 + 600 * i, i as u8)).collect();
    for f in &sent {
        r.send(f, 3000, 0, None); // the third crosses its page: two slots
    }
    // The second send's first page is revoked.
    r.pages.revoke(100 + 1);
    let inbound: Vec<Vec<u8>> = (0..2)
        .map(|i| frame([2, 0, 0, 0, 0, 9], 1514 + 3000 * i, 50 + i as u8))
        .collect();
    let mut pending: VecDeque<Packet> = inbound.iter().cloned().map(Packet::plain).collect();
    r.post(8);
    let taken = r.q.tx_take(0, 64, false).unwrap();
    let placed = r.q.rx_place(&mut pending).unwrap();
    assert!(pending.is_empty());
    r.pages.batches = Batches::default();
    let (read, written) = r.pages.read_new_and_write(&taken.jobs(), &placed.jobs());
    let one_pass = Batches {
        reads: 0,
        writes: 0,
        both: 1,
    };
    assert_eq!(r.pages.batches, one_pass);
    let mut out = Vec::new();
    let pass = r.q.tx_finish(taken, read, &mut out);
    assert!(pass.notify);
    let notify = r.q.rx_finish(placed, written);
    assert!(notify);
    let out: Vec<Vec<u8>> = out
        .into_iter()
        .map(|p| match p {
            Sent::Whole(p) => p.data,
            Sent::Head(..) => panic!("copied whole without heads"),
        })
        .collect();
    assert_eq!(out, vec![sent[0].clone(), sent[2].clone()]);
    let answers = r.tx_responses();
    assert_eq!(answers.iter().filter(|(_, st)| *st == RSP_ERROR).count(), 1);
    // One slot each for the first two, two for the third.
    assert_eq!(answers.iter().filter(|(_, st)| *st == RSP_OKAY).count(), 3);
    assert_eq!(r.q.stats.tx_errors, 1);
    let got: Vec<Vec<u8>> = r.received().into_iter().map(|g| g.0).collect();
    assert_eq!(got, inbound);
}

#[test]
fn receive_into_posted_buffers() {
    let mut r = Rig::new(ALL, None);
    let mut pending: VecDeque<Packet> = VecDeque::new();
    let a = frame([2, 0, 0, 0, 0, 1], 1514, 7);
    pending.push_back(Packet::plain(a.clone()));
    // No buffers yet: the packet waits (in the queue, at the head of its stream).
    r.q.receive(&mut r.pages, &mut pending).unwrap();
    assert!(pending.is_empty());
    assert!(r.q.rx_waiting());
    assert!(r.q.rx_final_check().is_ok());
    r.post(4);
    let notify = r.q.receive(&mut r.pages, &mut pending).unwrap();
    assert!(pending.is_empty());
    assert!(notify);
    let got = r.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, a);
    assert_eq!(got[0].1, 0);
    assert_eq!(r.q.stats.rx_packets, 1);
}

/// A TCP/IPv4 frame with `payload`, checksums filled, as a guest would build it.
fn tcp4(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 54];
    f[..6].copy_from_slice(&[0x00, 0x16, 0x3e, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12] = 0x08;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[10, 0, 0, 1]);
    f[30..34].copy_from_slice(&[10, 0, 0, 2]);
    f[46] = 5 << 4;
    f[47] = 0x18;
    f.extend_from_slice(payload);
    f
}

#[test]
fn gso_reaches_a_gso_frontend_whole_and_others_segmented() {
    let payload: Vec<u8> = (0..20000u32).map(|i| (i % 251) as u8).collect();
    let f = tcp4(&payload);
    let g = Gso {
        size: 1448,
        kind: GSO_TYPE_TCPV4,
    };
    let p = Packet {
        data: f.clone(),
        csum_blank: true,
        data_validated: true,
        gso: Some(g),
    };
    let mut r = Rig::new(ALL, None);
    r.post(64);
    let mut pending = VecDeque::from([p.clone()]);
    r.q.receive(&mut r.pages, &mut pending).unwrap();
    let got = r.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, f);
    assert_eq!(got[0].2, Some((1448, GSO_TYPE_TCPV4)));
    assert_eq!(
        got[0].1 & (NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED),
        NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED
    );

    let mut r = Rig::sg_only();
    r.post(64);
    let mut pending = VecDeque::from([p]);
    r.q.receive(&mut r.pages, &mut pending).unwrap();
    let got = r.received();
    assert_eq!(got.len(), 14);
    let mut stream = Vec::new();
    for (d, flags, gso) in &got {
        assert!(gso.is_none());
        assert_eq!(flags & NETRXF_CSUM_BLANK, 0);
        assert!(d.len() <= 1502);
        stream.extend_from_slice(&d[54..]);
    }
    assert_eq!(stream, payload);
}

#[test]
fn rate_limit_holds_packets_back_then_lets_them_go() {
    // 3000 bytes per millisecond.
    let mut r = Rig::new(ALL, Some(Rate::new(3000, 1_000_000)));
    for i in 0..4 {
        r.send(&frame(MAC, 1400, i), 0, 0, None);
    }
    let mut out = Vec::new();
    let pass = r.q.transmit(&mut r.pages, 0, 64, &mut out).unwrap();
    assert_eq!(out.len(), 2);
    let at = pass.retry_at.expect("held back");
    assert_eq!(at, 1_000_000);
    assert!(!r.q.tx_final_check().unwrap());
    let pass = r.q.transmit(&mut r.pages, at, 64, &mut out).unwrap();
    assert_eq!(out.len(), 4);
    assert!(pass.retry_at.is_none());
    assert_eq!(r.tx_responses().len(), 4);
}

#[test]
fn multicast_control_filters_what_the_guest_did_not_register() {
    let mut r = Rig::new(
        RxFeatures {
            multicast_filter: true,
            ..ALL
        },
        None,
    );
    // The guest registers 01:00:5e:00:00:fb (mDNS) with an extra slot on a packet.
    let mut e = [0u8; 12];
    e[0] = EXTRA_TYPE_MCAST_ADD;
    e[2..8].copy_from_slice(&[0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
    let f = frame(MAC, 60, 9);
    let g = r.grant(&f, 0);
    let s = TxSlot {
        gref: g,
        offset: 0,
        flags: NETTXF_EXTRA_INFO,
        id: 1,
        size: 60,
    };
    r.tx.put(r.q.rings_mut().0.memory_mut(), &s.encode());
    r.tx.put(r.q.rings_mut().0.memory_mut(), &e);
    r.tx.publish(r.q.rings_mut().0.memory_mut());
    r.transmit(0);
    assert!(r
        .q
        .multicast
        .contains(&[0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]));
    let with_dst = |d: [u8; 6]| {
        let mut f = frame([2, 0, 0, 0, 0, 1], 60, 1);
        f[..6].copy_from_slice(&d);
        Packet::plain(f)
    };
    r.post(8);
    let mut pending = VecDeque::from([
        with_dst([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]),
        with_dst([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]),
        with_dst([0xff; 6]),
        with_dst(MAC),
    ]);
    r.q.receive(&mut r.pages, &mut pending).unwrap();
    let got: Vec<[u8; 6]> = r
        .received()
        .iter()
        .map(|(d, _, _)| d[..6].try_into().unwrap())
        .collect();
    assert_eq!(got, [[0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb], [0xff; 6], MAC]);
}

/// Finding 1 of the hostile-guest review: a large send with segment size 1 (or any
/// size below a real TCP MSS) is refused where the guest sends it, with an error
/// response and a counter; it never reaches the switch to be cut into ~65,000 frames.
/// rate= is for what leaves: a large send cut into small segments repeats its headers in
/// each, and those bytes are charged too (a guest cannot multiply its rate by choosing a
/// small segment size).
#[test]
fn rate_limit_charges_the_headers_every_segment_repeats() {
    // 20 000 bytes per millisecond; a 10 054-byte send of 100-byte segments makes 100
    // segments, 99 more copies of its 54 header bytes: 5 346 bytes beyond its length.
    let mut r = Rig::new(ALL, Some(Rate::new(20_000, 1_000_000)));
    let mut f = tcp4(&vec![7u8; 10_000]);
    f[6..12].copy_from_slice(&MAC);
    let g = Gso {
        size: 100,
        kind: GSO_TYPE_TCPV4,
    };
    r.send(&f, 0, NETTXF_CSUM_BLANK, Some(g));
    assert_eq!(r.transmit(0).len(), 1);
    // Left: 20 000 - 10 054 - 5 346 = 4 600, three 1 500-byte frames and not a fourth
    // of 200. Charging only the length would leave 9 946.
    for i in 0..4 {
        r.send(&frame(MAC, if i < 3 { 1500 } else { 200 }, i), 0, 0, None);
    }
    let mut out = Vec::new();
    let pass = r.q.transmit(&mut r.pages, 1, 64, &mut out).unwrap();
    assert_eq!(
        out.len(),
        3,
        "the credit the segments' headers used is gone"
    );
    assert_eq!(pass.retry_at, Some(1_000_000));
}

/// A pass copies out at most TX_BATCH_BYTES (and the rest waits for the next pass):
/// 64 large sends at once would hold 4 MiB of the driver domain's heap.
#[test]
fn a_pass_copies_a_bounded_number_of_bytes() {
    let mut r = Rig::new(ALL, None);
    let mut f = tcp4(&vec![3u8; 60_000]);
    f[6..12].copy_from_slice(&MAC);
    let g = Gso {
        size: 1448,
        kind: GSO_TYPE_TCPV4,
    };
    for _ in 0..8 {
        r.send(&f, 0, NETTXF_CSUM_BLANK, Some(g));
    }
    let mut out = Vec::new();
    let pass = r.q.transmit(&mut r.pages, 0, 64, &mut out).unwrap();
    let per_pass = bulkhead_netback::queue::TX_BATCH_BYTES.div_ceil(f.len());
    assert_eq!(out.len(), per_pass);
    assert!(pass.more, "the rest waits for the next pass");
    r.q.transmit(&mut r.pages, 0, 64, &mut out).unwrap();
    assert_eq!(out.len(), 8);
}

#[test]
fn a_large_send_with_a_tiny_segment_size_is_refused() {
    let mut r = Rig::new(ALL, None);
    let mut f = tcp4(&vec![1u8; 60000]);
    f[6..12].copy_from_slice(&MAC);
    for size in [1, 87] {
        let g = Gso {
            size,
            kind: GSO_TYPE_TCPV4,
        };
        let ids = r.send(&f, 0, NETTXF_CSUM_BLANK, Some(g));
        assert!(r.transmit(0).is_empty(), "segment size {size} refused");
        let rsp = r.tx_responses();
        assert_eq!(rsp[0], (ids[0], RSP_ERROR));
        assert_eq!(rsp[1].1, RSP_NULL, "the extra slot");
        assert!(rsp[2..].iter().all(|&(_, st)| st == RSP_ERROR));
    }
    assert_eq!(r.q.stats.tx_errors, 2);
    assert_eq!(r.q.stats.tx_packets, 0);
    // The smallest real MSS still goes through.
    let g = Gso {
        size: 88,
        kind: GSO_TYPE_TCPV4,
    };
    r.send(&f, 0, NETTXF_CSUM_BLANK, Some(g));
    assert_eq!(r.transmit(0).len(), 1);
}

/// The cap on segments per large send holds whatever the segment size; a send that
/// does not parse as TCP cannot carry GSO (it would fail later, after being switched).
#[test]
fn segments_per_send_are_capped_and_gso_must_be_tcp() {
    let mut r = Rig::new(ALL, None);
    r.q.limits.gso_max_segs = 10;
    let mut f = tcp4(&vec![1u8; 2000]);
    f[6..12].copy_from_slice(&MAC);
    let g = Gso {
        size: 100,
        kind: GSO_TYPE_TCPV4,
    };
    r.send(&f, 0, NETTXF_CSUM_BLANK, Some(g)); // 20 segments
    assert!(r.transmit(0).is_empty());
    let g = Gso {
        size: 200,
        kind: GSO_TYPE_TCPV4,
    };
    r.send(&f, 0, NETTXF_CSUM_BLANK, Some(g)); // 10 segments
    assert_eq!(r.transmit(0).len(), 1);
    r.send(&frame(MAC, 3000, 1), 0, 0, Some(g)); // not TCP
    assert!(r.transmit(0).is_empty());
    let g6 = Gso {
        size: 200,
        kind: GSO_TYPE_TCPV6,
    };
    r.send(&f, 0, NETTXF_CSUM_BLANK, Some(g6)); // TCPv4 claimed as v6
    assert!(r.transmit(0).is_empty());
    assert_eq!(r.q.stats.tx_errors, 3);
}

/// Segments are made as the frontend's buffers take them, never all up front: a send
/// that would be cut into tens of thousands of frames (one that reached the queue by
/// some other path than a guest's checked TX) costs one frame at a time, and the
/// stream it makes stays whole and in order across calls.
#[test]
fn a_large_send_is_cut_as_buffers_come() {
    let payload: Vec<u8> = (0..60000u32).map(|i| (i % 253) as u8).collect();
    let p = Packet {
        data: tcp4(&payload),
        csum_blank: true,
        data_validated: true,
        gso: Some(Gso {
            size: 1,
            kind: GSO_TYPE_TCPV4,
        }),
    };
    let mut r = Rig::sg_only();
    let mut pending = VecDeque::from([p]);
    let mut stream = Vec::new();
    for _ in 0..3 {
        r.post(8);
        r.q.receive(&mut r.pages, &mut pending).unwrap();
        assert!(pending.is_empty(), "nothing made ahead of the buffers");
        assert!(r.q.rx_waiting());
        let got = r.received();
        assert_eq!(got.len(), 8);
        for (d, _, _) in &got {
            assert_eq!(d.len(), 55);
            stream.extend_from_slice(&d[54..]);
        }
    }
    assert_eq!(stream, payload[..24]);
}

/// Finding 3 of the hostile-guest review: a frame without GSO larger than an Ethernet frame is refused where the
/// guest sends it (it could never leave by the wire, and switched to other vifs it
/// would be 64 KiB per packet in their inboxes).
#[test]
fn a_frame_above_the_mtu_without_gso_is_refused() {
    let mut r = Rig::new(ALL, None);
    let ids = r.send(&frame(MAC, 65000, 1), 0, 0, None);
    assert!(r.transmit(0).is_empty());
    assert_eq!(r.tx_responses()[0], (ids[0], RSP_ERROR));
    r.send(&frame(MAC, 1518, 1), 0, 0, None); // MTU 1500 with a VLAN tag
    assert_eq!(r.transmit(0).len(), 1);
    assert_eq!(r.q.stats.tx_errors, 1);
}

/// Finding 3 of the hostile-guest review: a frontend that posts no receive buffers while packets wait has its
/// carrier turned off after the stall timeout (what waited is dropped, counted), and
/// back on once it posts buffers again.
#[test]
fn a_receive_stall_turns_the_carrier_off_then_buffers_turn_it_on() {
    const S: u64 = 1_000_000_000;
    let mut r = Rig::new(ALL, None);
    let mut pending: VecDeque<Packet> = (0..3)
        .map(|i| Packet::plain(frame([2, 0, 0, 0, 0, 1], 3000, i)))
        .collect();
    r.q.receive(&mut r.pages, &mut pending).unwrap();
    assert_eq!(
        r.q.rx_watch(0, !pending.is_empty()).unwrap(),
        Carrier::Unchanged
    );
    assert_eq!(r.q.rx_stall_at(), 60 * S);
    assert_eq!(r.q.rx_watch(59 * S, true).unwrap(), Carrier::Unchanged);
    // Progress (a packet delivered) restarts the clock.
    r.post(1);
    r.q.receive(&mut r.pages, &mut pending).unwrap();
    assert_eq!(r.received().len(), 1);
    assert_eq!(r.q.rx_watch(59 * S, true).unwrap(), Carrier::Unchanged);
    assert_eq!(r.q.rx_watch(100 * S, true).unwrap(), Carrier::Unchanged);
    assert_eq!(r.q.rx_watch(119 * S, true).unwrap(), Carrier::Off);
    assert!(!r.q.carrier());
    assert!(!r.q.rx_waiting(), "the packet held in the queue is dropped");
    assert_eq!(r.q.stats.rx_dropped, 1);
    // Off, nothing is delivered and an event is asked for the first buffer posted.
    r.q.receive(&mut r.pages, &mut pending).unwrap();
    assert!(pending.is_empty());
    assert_eq!(r.q.stats.rx_dropped, 2);
    assert!(!r.q.rx_final_check().unwrap());
    assert_eq!(r.q.rx_watch(200 * S, false).unwrap(), Carrier::Unchanged);
    r.post(1);
    assert_eq!(r.q.rx_watch(201 * S, false).unwrap(), Carrier::On);
    let mut pending = VecDeque::from([Packet::plain(frame([2, 0, 0, 0, 0, 1], 100, 9))]);
    r.q.receive(&mut r.pages, &mut pending).unwrap();
    assert_eq!(r.received().len(), 1);
}

/// The stall clock starts when packets begin to wait, not at the last turn the queue
/// took: a vif idle for minutes keeps its full grace period.
#[test]
fn an_idle_vif_gets_the_whole_stall_timeout() {
    const S: u64 = 1_000_000_000;
    let mut r = Rig::new(ALL, None);
    assert_eq!(r.q.rx_watch(0, false).unwrap(), Carrier::Unchanged);
    // 100 s of nothing (no turns), then a packet and no buffer.
    let mut pending = VecDeque::from([Packet::plain(frame([2, 0, 0, 0, 0, 1], 100, 1))]);
    r.q.receive(&mut r.pages, &mut pending).unwrap();
    assert_eq!(r.q.rx_watch(100 * S, true).unwrap(), Carrier::Unchanged);
    assert_eq!(r.q.rx_watch(159 * S, true).unwrap(), Carrier::Unchanged);
    assert_eq!(r.q.rx_watch(160 * S, true).unwrap(), Carrier::Off);
}

/// A ring whose request producer index flips back and forth between reads, as a guest
/// vCPU racing the backend can make it.
struct Flipping {
    mem: VecRing,
    armed: std::cell::Cell<bool>,
    odd: std::cell::Cell<bool>,
}

impl RingMemory for Flipping {
    fn len(&self) -> usize {
        self.mem.len()
    }
    fn load_u32(&self, off: usize) -> u32 {
        if off == bulkhead_ring::REQ_PROD && self.armed.get() {
            self.odd.set(!self.odd.get());
            if !self.odd.get() {
                return self.mem.load_u32(bulkhead_ring::RSP_PROD);
            }
        }
        self.mem.load_u32(off)
    }
    fn store_u32(&mut self, off: usize, v: u32) {
        self.mem.store_u32(off, v)
    }
    fn read(&self, off: usize, out: &mut [u8]) {
        self.mem.read(off, out)
    }
    fn write(&mut self, off: usize, data: &[u8]) {
        self.mem.write(off, data)
    }
    fn full_fence(&self) {}
}

/// A producer index that moves backwards between our count and our take is a broken
/// ring (the frontend is disconnected), never a panic of the whole driver domain.
#[test]
fn a_request_producer_moving_backwards_is_fatal_not_a_panic() {
    let fresh = || {
        let mut m = VecRing::new(1);
        shared_init(&mut m);
        Flipping {
            mem: m,
            armed: false.into(),
            odd: false.into(),
        }
    };
    let txr = BackRing::attach(fresh(), TX_LAYOUT).unwrap();
    let mut rxr = BackRing::attach(fresh(), RX_LAYOUT).unwrap();
    let mut front = FrontRing::new(&rxr.memory().mem, RX_LAYOUT);
    for i in 0..4u16 {
        let req = RxRequest { id: i, gref: 100 };
        front.put(&mut rxr.memory_mut().mem, &req.encode());
    }
    front.publish(&mut rxr.memory_mut().mem);
    rxr.memory().armed.set(true);
    let mut q = VifQueue::new("vif9.0".into(), txr, rxr, MAC, ALL, None);
    let mut pending = VecDeque::from([Packet::plain(frame([2, 0, 0, 0, 0, 1], 6000, 1))]);
    let mut pages = pages();
    pages.insert(100, vec![0; 4096]);
    let r = q.receive(&mut pages, &mut pending);
    assert!(r.is_err(), "{r:?}");
}

/// A guest's large send, taken from its ring with only the head copied: (the frame,
/// its slot ids, the head packet, its body).
fn large_send(
    a: &mut Rig,
    offset: usize,
) -> (Vec<u8>, Vec<u16>, Packet, bulkhead_netback::queue::Body) {
    let payload: Vec<u8> = (0..60000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut f = tcp4(&payload);
    f[6..12].copy_from_slice(&MAC);
    let g = Gso {
        size: 1448,
        kind: GSO_TYPE_TCPV4,
    };
    let ids = a.send(
        &f,
        offset,
        NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED,
        Some(g),
    );
    let taken = a.q.tx_take(0, 64, true).unwrap();
    let jobs = taken.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0].iter().map(|p| p.len as usize).sum::<usize>(),
        HEAD_BYTES
    );
    let (read, _) = a.pages.read_new_and_write(&taken.jobs(), &[]);
    let mut out = Vec::new();
    let pass = a.q.tx_finish(taken, read, &mut out);
    assert!(!pass.notify, "nothing answered before the body is copied");
    assert!(a.tx_responses().is_empty());
    assert_eq!(out.len(), 1);
    match out.pop().unwrap() {
        Sent::Head(head, body) => {
            assert_eq!(head.data, f[..HEAD_BYTES]);
            (f, ids, head, body)
        }
        Sent::Whole(_) => panic!("a large send with heads is copied as far as its head"),
    }
}

fn receiver() -> Rig {
    let mut b = Rig::new(ALL, None);
    b.next_gref = 5000;
    b
}

/// Guest to guest in one copy: a large send goes from the sender's pages straight into
/// the buffers an idle receiver posted, one operation per piece of the sender's (each
/// of the receiver's slots at the sender's page offset), and the sender's slots are
/// answered only once it is there.
#[test]
fn a_large_send_goes_straight_into_an_idle_receiver() {
    let mut a = Rig::new(ALL, None);
    let mut b = receiver();
    b.post(32);
    let (f, ids, head, body) = large_send(&mut a, 3000);
    let d =
        b.q.rx_direct(&head, &body)
            .expect("an idle receiver takes it");
    let (done, ops) = forward(
        &mut a.pages,
        &mut b.pages,
        &head,
        &body.pieces,
        (d.head_to, &d.body_to),
    );
    // 60054 bytes from offset 3000: 1096, 14 pages, 1614; the head takes 256 of the
    // first piece: one operation for it and one per remaining piece.
    assert_eq!(ops, 17);
    let ok = done.is_ok();
    assert!(ok);
    a.q.tx_body_done(body, ok);
    assert!(a.q.tx_push());
    b.q.rx_direct_done(d, ok);
    assert!(b.q.rx_push());
    let mut want: Vec<(u16, i16)> = ids.iter().map(|&i| (i, RSP_OKAY)).collect();
    want[1].1 = RSP_NULL;
    assert_eq!(a.tx_responses(), want);
    let got = b.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, f);
    assert_eq!(got[0].2, Some((1448, GSO_TYPE_TCPV4)));
    assert_eq!(
        got[0].1 & (NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED),
        NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED
    );
    assert_eq!((a.q.stats.tx_packets, a.q.stats.tx_gso), (1, 1));
    assert_eq!(
        (b.q.stats.rx_packets, b.q.stats.rx_bytes),
        (1, f.len() as u64)
    );
    assert_eq!(b.q.stats.rx_direct, 1);
    assert_eq!((a.q.in_flight(), b.q.in_flight()), (0, 0));
}

/// A receiver that cannot take the send as it is now (no buffers, no GSO, a packet of
/// its own waiting) is not given it directly: the body is copied into a buffer of ours
/// and the packet goes the usual way, whole and in order.
#[test]
fn a_receiver_that_cannot_take_it_now_gets_it_the_usual_way() {
    let mut a = Rig::new(ALL, None);
    let (f, _, head, body) = large_send(&mut a, 0);
    let mut empty = receiver();
    assert!(
        empty.q.rx_direct(&head, &body).is_none(),
        "no buffers posted"
    );
    let mut no_gso = Rig::sg_only();
    no_gso.post(64);
    assert!(no_gso.q.rx_direct(&head, &body).is_none(), "must be cut");
    let mut busy = receiver();
    let mut pending = VecDeque::from([Packet::plain(frame([2, 0, 0, 0, 0, 9], 9000, 1))]);
    busy.q.receive(&mut busy.pages, &mut pending).unwrap();
    busy.post(32);
    assert!(busy.q.rx_waiting());
    assert!(busy.q.rx_direct(&head, &body).is_none(), "would overtake");
    assert_eq!((empty.q.in_flight(), no_gso.q.in_flight()), (0, 0));
    // The guest rewrites its source MAC after the head was checked: the rest is copied
    // after the head as checked, never the head again.
    let first_page = a.pages.refs().min().unwrap();
    a.pages.page_mut(first_page).unwrap()[6..12].copy_from_slice(&[9; 6]);
    let (mut read, _) = a.pages.read_new_and_write(&[&body.pieces], &[]);
    let rest = read.pop().unwrap().unwrap();
    assert!(body.complete(head.clone(), &rest[1..]).is_none(), "short");
    let p = body.complete(head, &rest).unwrap();
    assert_eq!(p.data, f);
    a.q.tx_body_done(body, true);
    a.q.tx_push();
    assert!(a.tx_responses().iter().all(|&(_, st)| st != RSP_ERROR));
    // It reaches the frontend without GSO as segments.
    let mut pending = VecDeque::from([p]);
    no_gso.q.receive(&mut no_gso.pages, &mut pending).unwrap();
    let mut stream = Vec::new();
    for (d, _, gso) in no_gso.received() {
        assert!(gso.is_none());
        stream.extend_from_slice(&d[54..]);
    }
    assert_eq!(stream, f[54..]);
}

/// A grant revoked under a direct copy (a receiver's buffer here) fails the packet
/// once: the receiver's buffers answered with errors (netfront drops the packet), the
/// sender's slots as sent (as the kernel answers them: a failed copy does not say
/// whose grant failed, and a receiver must not make another guest's sends fail), both
/// rings whole, the next send unaffected.
#[test]
fn a_revoked_grant_fails_a_direct_copy_once() {
    let mut a = Rig::new(ALL, None);
    let mut b = receiver();
    b.post(64);
    let (_, ids, head, body) = large_send(&mut a, 100);
    let d = b.q.rx_direct(&head, &body).unwrap();
    b.pages.revoke(d.body_to[5].gref);
    let (done, _) = forward(
        &mut a.pages,
        &mut b.pages,
        &head,
        &body.pieces,
        (d.head_to, &d.body_to),
    );
    assert!(done.is_err());
    a.q.tx_body_done(body, true);
    a.q.tx_push();
    b.q.rx_direct_done(d, false);
    b.q.rx_push();
    let rsp = a.tx_responses();
    assert_eq!(rsp.len(), ids.len());
    assert_eq!(rsp[0], (ids[0], RSP_OKAY));
    assert_eq!(rsp[1].1, RSP_NULL);
    assert_eq!(b.received_or_failed(), vec![Err(())]);
    assert_eq!((a.q.stats.tx_errors, a.q.stats.tx_packets), (0, 1));
    assert_eq!((b.q.stats.rx_dropped, b.q.stats.rx_packets), (1, 0));
    assert_eq!((a.q.in_flight(), b.q.in_flight()), (0, 0));
    // The next send from the same guest goes straight through.
    let (f, _, head, body) = large_send(&mut a, 0);
    let d = b.q.rx_direct(&head, &body).unwrap();
    let (done, _) = forward(
        &mut a.pages,
        &mut b.pages,
        &head,
        &body.pieces,
        (d.head_to, &d.body_to),
    );
    b.q.rx_direct_done(d, done.is_ok());
    b.q.rx_push();
    assert_eq!(b.received()[0].0, f);
}

/// Linux netfront's layout of a 64 KiB send: its 66 bytes of headers in one slot, the
/// payload from wherever TCP's page fragment was, 18 slots in all. Laid straight into
/// the receiver it takes 17 data slots (what netfront takes, and a 64 KiB packet from
/// offset 0 takes), the head and the rest of the first payload page sharing the first.
#[test]
fn a_netfront_sized_send_fits_the_receivers_slot_limit() {
    let mut a = Rig::new(ALL, None);
    let mut b = receiver();
    b.post(64);
    let payload: Vec<u8> = (0..65160u32).map(|i| (i * 13 % 241) as u8).collect();
    let mut f = tcp4(&payload);
    f[6..12].copy_from_slice(&MAC);
    let mut layout = vec![(200, 54), (1000, 3096)];
    let mut left = f.len() - 54 - 3096;
    while left > 0 {
        layout.push((0, left.min(4096)));
        left -= left.min(4096);
    }
    assert_eq!(layout.len(), 18);
    let g = Gso {
        size: 1448,
        kind: GSO_TYPE_TCPV4,
    };
    a.send_laid(
        &f,
        &layout,
        NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED,
        Some(g),
    );
    let taken = a.q.tx_take(0, 64, true).unwrap();
    let (read, _) = a.pages.read_new_and_write(&taken.jobs(), &[]);
    let mut out = Vec::new();
    a.q.tx_finish(taken, read, &mut out);
    let Some(Sent::Head(head, body)) = out.pop() else {
        panic!("a large send is taken head first")
    };
    let d = b.q.rx_direct(&head, &body).expect("fits");
    let (done, ops) = forward(
        &mut a.pages,
        &mut b.pages,
        &head,
        &body.pieces,
        (d.head_to, &d.body_to),
    );
    assert_eq!(ops, 18, "one operation per piece, the head's included");
    b.q.rx_direct_done(d, done.is_ok());
    b.q.rx_push();
    // 17 data slots and the GSO slot.
    assert_eq!(b.q.rings().1.indexes().rsp_prod, 18);
    assert_eq!(b.received()[0].0, f);
}

/// A small packet laid from our memory is answered ahead of its copy: the answer stays
/// invisible until the producer index the caller writes after the bytes (Xen's copy in
/// the kernel), and a copy that then fails counts the packet dropped, not received.
#[test]
fn a_small_packet_answered_ahead_shows_only_once_its_index_is_written() {
    use bulkhead_ring::{RingMemory, RSP_PROD};
    let mut b = receiver();
    b.post(4);
    let f = frame([2, 0, 0, 0, 0, 9], 90, 3);
    let p = Packet::plain(f.clone());
    let d = b.q.rx_direct_whole(&p).expect("an idle receiver takes it");
    let head_to = d.head_to;
    assert_eq!(b.q.rx_direct_ahead(d), f.len());
    let index = b.q.rx_publish_later().expect("an answer to publish");
    assert_eq!(index, 1);
    // Answered, not yet published: the frontend sees nothing (the bytes are not there
    // yet either).
    assert!(b.received().is_empty());
    let (done, _) = forward(&mut pages(), &mut b.pages, &p, &[], (head_to, &[]));
    assert!(done.is_ok());
    // Xen writes the index after the bytes.
    b.q.rings_mut().1.memory_mut().store_u32(RSP_PROD, index);
    assert_eq!(b.received(), vec![(f.clone(), 0, None)]);
    assert_eq!(b.q.rx_publish_later(), None, "nothing new");
    assert!(!b.q.rx_push(), "published already");
    assert_eq!((b.q.stats.rx_packets, b.q.stats.rx_direct), (1, 1));
    // A second one whose copy fails (the receiver revoked its buffer): dropped.
    let d = b.q.rx_direct_whole(&p).expect("room for another");
    let len = b.q.rx_direct_ahead(d);
    b.q.rx_direct_unwritten(len);
    assert_eq!(
        (
            b.q.stats.rx_packets,
            b.q.stats.rx_direct,
            b.q.stats.rx_dropped
        ),
        (1, 1, 1)
    );
    assert_eq!(b.q.stats.rx_bytes, f.len() as u64);
    // Its index was never written: a later push publishes it.
    assert_eq!(b.q.rx_publish_later(), Some(2));
    b.q.rx_push();
    assert_eq!(b.q.rings().1.indexes().rsp_prod, 2);
}

/// A small packet copied whole goes straight into an idle receiver's buffer in one
/// slot (one operation from our buffer).
#[test]
fn a_small_packet_goes_straight_into_a_quiet_receiver() {
    let mut b = receiver();
    b.post(4);
    let f = frame([2, 0, 0, 0, 0, 9], 90, 3);
    let p = Packet::plain(f.clone());
    let d = b.q.rx_direct_whole(&p).expect("an idle receiver takes it");
    assert!(d.body_to.is_empty());
    let (done, ops) = forward(&mut pages(), &mut b.pages, &p, &[], (d.head_to, &d.body_to));
    assert_eq!(ops, 1);
    b.q.rx_direct_done(d, done.is_ok());
    assert!(b.q.rx_push());
    assert_eq!(b.received(), vec![(f, 0, None)]);
    assert_eq!(b.q.stats.rx_direct, 1);
    // A frame larger than a page is not laid whole.
    b.post(4);
    assert!(b
        .q
        .rx_direct_whole(&Packet::plain(frame([2, 0, 0, 0, 0, 9], 5000, 1)))
        .is_none());
}
