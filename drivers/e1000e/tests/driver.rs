//! The e1000e driver against the 82574L model.

mod model;

use bulkhead_e1000e::{quiesce, reg, E1000e, Error, QUIET_AFTER_MASK_US, RING};
use bulkhead_net::testing::receives_in_rounds;
use bulkhead_net::{Checksum, Link, MacAddr, Nic, TxError};
use model::{FakeClock, ModelDma, Regs, Shared};

fn up() -> (Shared, E1000e<Regs, ModelDma<model::State>>) {
    let s = model::new_device();
    let nic = E1000e::new(Regs(s.clone()), ModelDma(s.clone()), &mut FakeClock(0)).unwrap();
    (s, nic)
}

fn frame(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(13) ^ seed).collect()
}

#[test]
fn reset_mac_rings_and_modes() {
    let (s, mut nic) = up();
    assert_eq!(nic.mac(), MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]));
    assert_eq!(nic.mac_source, "EEPROM");
    assert_eq!(nic.link(), Link::Up { mbps: 1000 });
    {
        let st = s.borrow();
        let r = |o| st.regs.get(&o).copied().unwrap_or(0);
        assert_eq!(r(reg::RDLEN), (RING * 16) as u32);
        assert_eq!(r(reg::RDT), (RING - 1) as u32);
        assert_ne!(r(reg::RCTL) & reg::RCTL_EN, 0);
        assert_eq!(r(reg::RCTL) & reg::RCTL_UPE, 0);
        assert_ne!(r(reg::TCTL) & reg::TCTL_EN, 0);
        assert_eq!(r(reg::ITR), bulkhead_e1000e::ITR_INTERVAL);
        assert_ne!(r(reg::IMS) & reg::ICR_RXT0, 0);
        assert_eq!(r(reg::RAH0) & reg::RAH_AV, reg::RAH_AV);
    }
    nic.set_promiscuous(true);
    let rctl = s.borrow().regs[&reg::RCTL];
    assert_eq!(
        rctl & (reg::RCTL_UPE | reg::RCTL_MPE),
        reg::RCTL_UPE | reg::RCTL_MPE
    );
    s.borrow_mut().link_up = false;
    assert_eq!(nic.link(), Link::Down);
}

#[test]
fn msix_routes_every_cause_to_entry_0_and_clears_causes_by_writing_them() {
    let (s, mut nic) = up();
    s.borrow_mut().msix = true;
    let pending = reg::ICR_RXQ0 | reg::ICR_OTHER | reg::ICR_LSC;
    // Read alone does not clear under MSI-X: a driver that only reads would see the
    // same causes for ever (and the device keeps signalling them).
    s.borrow_mut().regs.insert(reg::ICR, pending);
    assert_eq!(nic.ack_interrupt(), pending);
    assert_eq!(s.borrow().regs[&reg::ICR], pending);
    nic.use_msix();
    {
        let st = s.borrow();
        let ivar = st.regs[&reg::IVAR];
        for (shift, what) in [
            (0, "rx 0"),
            (4, "rx 1"),
            (8, "tx 0"),
            (12, "tx 1"),
            (16, "other"),
        ] {
            assert_eq!((ivar >> shift) & 0xf, 0x8, "{what}: entry 0, valid");
        }
        assert_eq!(st.regs[&reg::EITR0], bulkhead_e1000e::ITR_INTERVAL);
        assert_eq!(st.regs[&reg::ITR], 0, "ITR is for MSI/INTx only");
        let ims = st.regs[&reg::IMS];
        for c in [reg::ICR_RXQ0, reg::ICR_TXQ0, reg::ICR_OTHER] {
            assert_ne!(ims & c, 0, "cause {c:#x} enabled");
        }
    }
    assert_eq!(nic.ack_interrupt(), pending);
    assert_eq!(s.borrow().regs[&reg::ICR], 0, "causes cleared");
    assert_eq!(nic.ack_interrupt(), 0);
}

#[test]
fn a_device_a_previous_owner_configured_is_set_to_legacy_descriptors_and_no_auto_masking() {
    // As Linux's e1000e leaves the device and QEMU's reset keeps it: extended receive
    // descriptors (ours would never look done), RSS, checksum fields, delays, auto-mask.
    // Each of these must read 0 after bring-up (listed here, not taken from the driver).
    let left = [
        (reg::RFCTL, reg::RFCTL_EXTEN),
        (reg::RXCSUM, 0x2200),
        (reg::MRQC, 0x0033_0001),
        (reg::RDTR, 32),
        (reg::RADV, 8),
        (reg::IAM, 0x01f0_0000),
        (reg::EIAC, 0x01f0_0000),
    ];
    let s = model::new_device();
    {
        let mut st = s.borrow_mut();
        st.reset_mac_only = true;
        for (r, v) in left.into_iter().chain([
            (
                reg::CTRL_EXT,
                reg::CTRL_EXT_IAME | reg::CTRL_EXT_EIAME | 1 << 28,
            ),
            (reg::RCTL, reg::RCTL_EN),
            (reg::TCTL, reg::TCTL_EN),
        ]) {
            st.regs.insert(r, v);
        }
    }
    let mut nic = E1000e::new(Regs(s.clone()), ModelDma(s.clone()), &mut FakeClock(0)).unwrap();
    {
        let st = s.borrow();
        let r = |o| st.regs.get(&o).copied().unwrap_or(0);
        for (o, _) in left {
            assert_eq!(r(o), 0, "register {o:#x}");
        }
        // Only the auto-masking bits go; the rest of CTRL_EXT stays.
        assert_eq!(r(reg::CTRL_EXT), 1 << 28);
    }
    // And it receives.
    s.borrow_mut().inbound.push_back(frame(60, 1));
    s.borrow_mut().deliver();
    let mut got = Vec::new();
    nic.receive(&mut |f| got.push(f.to_vec()));
    assert_eq!(got, vec![frame(60, 1)]);
}

#[test]
fn quiesce_silences_a_device_a_previous_owner_left_running() {
    let (s, nic) = up();
    // The owner is gone (destroyed domain): no shutdown ran, causes are pending.
    core::mem::forget(nic);
    s.borrow_mut()
        .regs
        .insert(reg::ICR, reg::ICR_RXT0 | reg::ICR_LSC);
    quiesce(&Regs(s.clone()));
    let mut st = s.borrow_mut();
    let r = |st: &model::State, o| st.regs.get(&o).copied().unwrap_or(0);
    assert_eq!(r(&st, reg::IMS), 0, "every cause masked");
    assert_eq!(r(&st, reg::ICR), 0, "pending causes cleared");
    assert_eq!(r(&st, reg::RCTL) & reg::RCTL_EN, 0);
    assert_eq!(r(&st, reg::TCTL) & reg::TCTL_EN, 0);
    let rdh = r(&st, reg::RDH);
    st.inbound.push_back(frame(60, 1));
    st.deliver();
    assert_eq!(r(&st, reg::RDH), rdh, "nothing received after quiesce");
}

#[test]
fn shutdown_masks_stops_and_waits_out_a_throttle_interval() {
    let (s, nic) = up();
    let mut clock = FakeClock(0);
    nic.shutdown(&mut clock);
    assert!(clock.0 >= QUIET_AFTER_MASK_US, "waited {} us", clock.0);
    let st = s.borrow();
    assert_eq!(st.regs.get(&reg::IMS).copied().unwrap_or(0), 0);
    assert_eq!(
        st.regs.get(&reg::RCTL).copied().unwrap_or(0) & reg::RCTL_EN,
        0
    );
}

#[test]
fn mac_from_registers_when_the_eeprom_is_silent() {
    let s = model::new_device();
    s.borrow_mut().eeprom_dead = true;
    let nic = E1000e::new(Regs(s.clone()), ModelDma(s.clone()), &mut FakeClock(0)).unwrap();
    assert_eq!(nic.mac_source, "RAL/RAH");
    assert_eq!(nic.mac(), MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]));
}

#[test]
fn reset_that_never_completes_is_an_error() {
    struct Stuck;
    impl bulkhead_hw::Mmio for Stuck {
        fn read32(&self, o: usize) -> u32 {
            if o == reg::CTRL {
                reg::CTRL_RST
            } else {
                0
            }
        }
        fn write32(&self, _: usize, _: u32) {}
    }
    let s = model::new_device();
    let r = E1000e::new(Stuck, ModelDma(s), &mut FakeClock(0));
    assert!(matches!(r, Err(Error::ResetTimeout)));
}

#[test]
fn transmits_with_and_without_checksum_offload_and_wraps() {
    let (s, mut nic) = up();
    for i in 0..(3 * RING) {
        let f = frame(60 + i % 100, i as u8);
        nic.send(&[&f[..20], &f[20..]], Checksum::None).unwrap();
    }
    nic.send(
        &[&frame(80, 1)],
        Checksum::Partial {
            start: 34,
            offset: 16,
        },
    )
    .unwrap();
    let st = s.borrow();
    assert_eq!(st.sent.len(), 3 * RING + 1);
    assert_eq!(st.sent[5].0, frame(65, 5));
    let (ref f, cso, cmd, css) = st.sent[3 * RING];
    assert_eq!(f.len(), 80);
    assert_eq!((cso, css), (50, 34));
    assert_eq!(cmd & 0x0f, 0x0f, "EOP, IFCS, IC, RS");
}

#[test]
fn a_batch_of_frames_rings_the_doorbell_once() {
    let (s, mut nic) = up();
    let frames: Vec<Vec<u8>> = (0..5).map(|i| frame(60 + 100 * i, i as u8)).collect();
    let before = s.borrow().doorbells;
    let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
    assert_eq!(nic.send_frames(&refs), 0);
    let st = s.borrow();
    assert_eq!(st.doorbells - before, 1);
    let sent: Vec<Vec<u8>> = st.sent.iter().map(|x| x.0.clone()).collect();
    assert_eq!(sent, frames);
    drop(st);
    // More frames than the ring holds: the doorbell rings as it fills, nothing is lost.
    let many: Vec<Vec<u8>> = (0..3 * RING).map(|i| frame(60 + i % 50, i as u8)).collect();
    let refs: Vec<&[u8]> = many.iter().map(|f| f.as_slice()).collect();
    assert_eq!(nic.send_frames(&refs), 0);
    let st = s.borrow();
    assert_eq!(st.sent.len(), 5 + 3 * RING);
    assert!(
        st.doorbells - before <= 5,
        "{} doorbells",
        st.doorbells - before
    );
}

#[test]
fn full_ring_and_bad_lengths() {
    let (s, mut nic) = up();
    assert_eq!(
        nic.send(&[&[0u8; 5]], Checksum::None),
        Err(TxError::BadLength(5))
    );
    assert_eq!(
        nic.send(
            &[&frame(80, 0)],
            Checksum::Partial {
                start: 300,
                offset: 16
            }
        ),
        Err(TxError::BadLength(80))
    );
    // The device takes frames but never reports them done (DD cleared after each send):
    // the ring fills, and the driver says so instead of overwriting descriptors.
    let sent_before = s.borrow().sent.len();
    {
        let mut sent = 0;
        loop {
            let r = nic.send(&[&frame(64, 0)], Checksum::None);
            let mut st = s.borrow_mut();
            let base = st.regs[&reg::TDBAL] as u64;
            for i in 0..RING {
                let at = base + (i * 16) as u64 + 12;
                st.write(at, &[0]);
            }
            if r.is_err() {
                assert_eq!(r, Err(TxError::Full));
                break;
            }
            sent += 1;
            assert!(sent < RING);
        }
        assert_eq!(sent, RING - 1);
    }
    assert_eq!(nic.counters().tx_dropped, 1);
    assert!(s.borrow().sent.len() > sent_before);
}

#[test]
fn receives_and_recycles_across_many_rings() {
    let (s, mut nic) = up();
    receives_in_rounds(&mut nic, 4, 200, frame, |frames| {
        let mut m = s.borrow_mut();
        m.inbound.extend(frames);
        m.deliver();
    });
}

#[test]
fn errored_split_and_impossible_frames_are_dropped_and_counted() {
    let (s, mut nic) = up();
    {
        let mut st = s.borrow_mut();
        st.rx_error_next = 0x01; // CRC error
        st.inbound.push_back(frame(100, 1));
        st.inbound.push_back(frame(100, 2));
        st.deliver();
        st.rx_split = Some(1000);
        st.inbound.push_back(frame(1500, 3)); // spans two descriptors
        st.deliver();
        st.rx_split = None;
        st.deliver_raw(4000, 3, 0); // longer than the buffer
        st.deliver_raw(6, 3, 0); // runt
        st.inbound.push_back(frame(60, 4));
        st.deliver();
    }
    let mut got = Vec::new();
    nic.receive(&mut |f| got.push(f.to_vec()));
    assert_eq!(got, vec![frame(100, 2), frame(60, 4)]);
    assert_eq!(nic.counters().rx_errors, 4);
    assert!(nic.last_error.is_some());
}
