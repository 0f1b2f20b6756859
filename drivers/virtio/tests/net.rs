//! The virtio-net driver against the device model.

mod model;

use bulkhead_net::testing::receives_in_rounds;
use bulkhead_net::{Checksum, Link, MacAddr, Nic, TxError};
use bulkhead_virtio::net::VirtioNet;
use bulkhead_virtio::transport::{status, Transport};
use bulkhead_virtio::Error;
use model::{FakeClock, Kind, ModelDma, Region, Shared};

fn transport(s: &Shared) -> Transport<Region> {
    let r = |kind| Region { s: s.clone(), kind };
    Transport {
        common: r(Kind::Common),
        notify: r(Kind::Notify),
        notify_multiplier: 4,
        isr: r(Kind::Isr),
        device: r(Kind::Device),
    }
}

fn up() -> (Shared, VirtioNet<Region, ModelDma<model::State>>) {
    let s = model::new_device();
    let nic = VirtioNet::new(transport(&s), ModelDma(s.clone()), &mut FakeClock(0), None).unwrap();
    (s, nic)
}

fn frame(n: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect();
    f[..6].copy_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    f
}

#[test]
fn brings_the_device_up() {
    let (s, nic) = up();
    assert_eq!(nic.mac(), MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
    assert_eq!(nic.link(), Link::Up { mbps: 10_000 });
    assert!(nic.offloads().tx_checksum);
    s.borrow_mut().link_up = false;
    assert_eq!(nic.link(), Link::Down);
    let st = s.borrow();
    assert_eq!(
        st.status,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK
    );
    assert_eq!(st.driver_features, model::NET_FEATURES);
    assert!(st.queues.iter().all(|q| q.enable == 1 && q.size == 128));
    // Every receive buffer was offered.
    let avail = {
        let mut b = [0u8; 2];
        st.read(st.queues[0].driver + 2, &mut b);
        u16::from_le_bytes(b)
    };
    assert_eq!(avail, 128);
}

#[test]
fn sends_frames_with_and_without_checksum_offload() {
    let (s, mut nic) = up();
    let f = frame(60, 1);
    nic.send(&[&f[..14], &f[14..]], Checksum::None).unwrap();
    nic.send(
        &[&f],
        Checksum::Partial {
            start: 34,
            offset: 16,
        },
    )
    .unwrap();
    let st = s.borrow();
    assert_eq!(st.sent.len(), 2);
    assert_eq!(st.sent[0].1, f);
    assert_eq!(st.sent[0].0, vec![0; 12]);
    assert_eq!(st.sent[1].0[0], 1, "NEEDS_CSUM");
    assert_eq!(&st.sent[1].0[6..10], &[34, 0, 16, 0]);
    assert_eq!(nic.counters().tx_frames, 2);
}

#[test]
fn refuses_bad_lengths_and_reports_a_full_ring() {
    let (s, mut nic) = up();
    assert_eq!(
        nic.send(&[&[0u8; 10]], Checksum::None),
        Err(TxError::BadLength(10))
    );
    assert_eq!(
        nic.send(&[&vec![0u8; 1519]], Checksum::None),
        Err(TxError::BadLength(1519))
    );
    s.borrow_mut().tx_stall = true;
    let f = frame(64, 2);
    let mut sent = 0;
    while nic.send(&[&f], Checksum::None).is_ok() {
        sent += 1;
        assert!(sent <= 128);
    }
    assert_eq!(sent, 128);
    assert_eq!(nic.send(&[&f], Checksum::None), Err(TxError::Full));
    // The device catches up: buffers come back and sending works again.
    s.borrow_mut().resume_tx();
    assert!(nic.send(&[&f], Checksum::None).is_ok());
    assert_eq!(s.borrow().sent.len(), 129);
}

#[test]
fn receives_in_order_and_recycles_buffers() {
    let (s, mut nic) = up();
    // 500 frames over the rounds, more than its buffers: they must come back.
    receives_in_rounds(&mut nic, 5, 100, frame, |frames| {
        let mut m = s.borrow_mut();
        m.inbound.extend(frames);
        m.deliver();
    });
}

#[test]
fn merges_mergeable_buffers() {
    let (s, mut nic) = up();
    s.borrow_mut().rx_split = Some(700);
    let f = frame(1514, 9);
    s.borrow_mut().inbound.push_back(f.clone());
    s.borrow_mut().deliver();
    let mut got = Vec::new();
    nic.receive(&mut |x| got.push(x.to_vec()));
    assert_eq!(got, vec![f]);
}

#[test]
fn device_errors_are_counted_not_followed() {
    let (s, mut nic) = up();
    // A used entry naming a descriptor that was never handed out, and impossible lengths.
    s.borrow_mut().push_used(0, 4000, 60);
    let mut n = 0;
    nic.receive(&mut |_| n += 1);
    assert_eq!(n, 0);
    assert!(matches!(nic.last_error, Some(Error::Device(_))));
    assert_eq!(nic.counters().rx_errors, 1);
}

#[test]
fn short_or_long_frames_from_the_device_are_dropped() {
    let (s, mut nic) = up();
    s.borrow_mut().inbound.push_back(vec![1, 2, 3]);
    s.borrow_mut().inbound.push_back(frame(60, 3));
    s.borrow_mut().deliver();
    let mut got = Vec::new();
    nic.receive(&mut |x| got.push(x.to_vec()));
    assert_eq!(got, vec![frame(60, 3)]);
    assert_eq!(nic.counters().rx_errors, 1);
}

#[test]
fn legacy_or_refusing_devices_are_not_driven() {
    let s = model::new_device();
    s.borrow_mut().offered &= !(1 << 32);
    let r = VirtioNet::new(transport(&s), ModelDma(s.clone()), &mut FakeClock(0), None);
    assert!(matches!(r, Err(Error::Unsupported(_))));
    assert_ne!(s.borrow().status & status::FAILED, 0);
    let s = model::new_device();
    s.borrow_mut().refuse_features = true;
    let r = VirtioNet::new(transport(&s), ModelDma(s.clone()), &mut FakeClock(0), None);
    assert!(matches!(r, Err(Error::FeaturesRefused)));
}
