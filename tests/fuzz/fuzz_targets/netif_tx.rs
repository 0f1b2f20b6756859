//! The netif data path: a TX ring whose slots and producer index come from the input,
//! read through `VifQueue::transmit` (parser, extra-info slots, grant copies, GSO and
//! frame checks), then the packets it accepted, and a few the input makes, delivered to
//! an RX ring with input-chosen features and buffers (segmentation, checksums, slot
//! layout). With the input's say, large sends are taken head first and laid straight
//! into the RX ring from the "sender's" pages (`rx_direct`, as netback does between two
//! guests) or copied whole when they cannot be. No input may panic; every slot taken is
//! answered.
#![no_main]

use std::collections::VecDeque;

use bulkhead_netback::packet::Packet;
use bulkhead_netback::queue::{RxFeatures, Sent, VifQueue, RX_LAYOUT, TX_LAYOUT};
use bulkhead_netback::tx::Gso;
use bulkhead_ring::{shared_init, BackRing, RingMemory, VecRing};
use bulkhead_xen::copy::GuestMemory;
use bulkhead_testsupport::GrantPages;
use libfuzzer_sys::fuzz_target;

const MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 1];

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let f = data[0];
    let features = RxFeatures {
        sg: f & 1 != 0,
        gso_tcpv4: f & 2 != 0,
        gso_tcpv6: f & 4 != 0,
        csum_v4: f & 8 != 0,
        csum_v6: f & 16 != 0,
        multicast_filter: f & 32 != 0,
    };
    let mut txm = VecRing::new(1);
    shared_init(&mut txm);
    let body = &data[16..];
    // The TX ring's slots from the input.
    let n = body.len().min(4096 - 64);
    txm.write(64, &body[..n]);
    txm.store_u32(0, u32::from(data[1]) % 300);
    let mut rxm = VecRing::new(1);
    shared_init(&mut rxm);
    // RX requests: ids and grants 1..=32, as many as the input says.
    let posted = u32::from(data[2]) % 260;
    for i in 0..posted.min(256) {
        let mut r = [0u8; 8];
        r[..2].copy_from_slice(&(i as u16).to_le_bytes());
        r[4..].copy_from_slice(&(1 + i % 8).to_le_bytes());
        rxm.write(64 + (i as usize % 256) * 8, &r);
    }
    rxm.store_u32(0, posted);
    let (Ok(tx), Ok(rx)) = (
        BackRing::attach(txm, TX_LAYOUT),
        BackRing::attach(rxm, RX_LAYOUT),
    ) else {
        return;
    };
    let mut q = VifQueue::new("fuzz".into(), tx, rx, MAC, features, None);
    q.limits.gso_min_size = 1 + u16::from(data[3]);
    // Guest pages: the input's bytes again, from an offset it picks, with our MAC as
    // the source of the first frame so that some packets pass the spoofing check.
    // Grants 1..=8 are pages holding bytes from the input; others fault.
    let mut pages = GrantPages::numbered(8);
    for i in 0..8usize {
        let p = pages.page_mut(i as u32 + 1).expect("numbered");
        let from = (usize::from(data[4]) * 7 + i * 131) % body.len().max(1);
        let src = &body[from..];
        let n = src.len().min(4096);
        p[..n].copy_from_slice(&src[..n]);
        p[6..12].copy_from_slice(&MAC);
    }
    let mut out = Vec::new();
    if data[5] & 8 == 0 {
        if q.transmit(&mut pages, 0, 64, &mut out).is_ok() {
            assert_eq!(
                q.rings().0.in_flight(),
                0,
                "a TX slot taken and not answered"
            );
        }
    } else if let Ok(taken) = q.tx_take(0, 64, true) {
        let copied = pages.read_new(&taken.jobs());
        let mut sent = Vec::new();
        q.tx_finish(taken, copied, &mut sent);
        for s in sent {
            match s {
                Sent::Whole(p) => out.push(p),
                Sent::Head(mut head, body) => match q.rx_direct(&head, &body) {
                    Some(d) => {
                        // The copy as Xen makes it: the head into the first buffer,
                        // each piece where the placement says.
                        let mut ok = pages.write(&[d.head_to], &head.data).is_ok();
                        for (p, to) in body.pieces.iter().zip(&d.body_to) {
                            let mut b = vec![0u8; p.len as usize];
                            ok = ok
                                && pages.read(&[*p], &mut b).is_ok()
                                && pages.write(&[*to], &b).is_ok();
                        }
                        q.rx_direct_done(d, ok);
                        q.tx_body_done(body, ok);
                    }
                    None => match pages.read_new(&[&body.pieces]).pop() {
                        Some(Ok(rest)) => {
                            head.data.extend_from_slice(&rest);
                            out.push(head);
                            q.tx_body_done(body, true);
                        }
                        _ => q.tx_body_done(body, false),
                    },
                },
            }
        }
        q.tx_push();
        q.rx_push();
        assert_eq!(
            q.rings().0.in_flight(),
            0,
            "a TX slot taken and not answered"
        );
    }
    // Whatever was accepted, and a packet made of the input with offload flags it
    // chooses, go to the receive side.
    let mut pending: VecDeque<Packet> = out.into_iter().collect();
    pending.push_back(Packet {
        data: body.to_vec(),
        csum_blank: data[5] & 1 != 0,
        data_validated: data[5] & 2 != 0,
        gso: (data[5] & 4 != 0).then(|| Gso {
            size: u16::from_le_bytes([data[6], data[7]]),
            kind: data[8] % 3,
        }),
    });
    let _ = q.receive(&mut pages, &mut pending);
    let _ = q.rx_watch(u64::from(data[9]) << 32, data[10] & 1 != 0);
    let _ = q.receive(&mut pages, &mut pending);
});
