//! The switch's uplink: a NIC as one port of the fabric, and the hand-over between the
//! switch and a local stack (the management interface). The kernel's `net` task drives
//! both once per turn; what a turn may cost is decided here:
//! - wire to switch: every frame the NIC received since the last turn (its receive ring
//!   bounds them), coalesced into large packets per TCP stream (GRO) for the guests;
//! - switch to wire: at most [`WIRE_PACKETS_PER_TURN`] packets, finished (large sends
//!   cut into frames, blank checksums filled: the drivers take finished frames) and
//!   handed to the NIC in batches of [`WIRE_BATCH`] (one doorbell each); a packet that
//!   cannot be finished, a frame longer than the wire takes and a frame the NIC refuses
//!   are dropped and counted. A guest's large sends (up to 745 segments each) so cost a
//!   bounded amount of work and memory per turn; the rest waits in the inbox.
//! - switch to the local stack: packets only while its receive queue has room, the rest
//!   waits in the inbox; segments beyond the room are dropped and counted.

use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use bulkhead_net::{Nic, MAX_FRAME};
use bulkhead_netback::coalesce::{self, coalesce};
use bulkhead_netback::packet::finish;
use bulkhead_switch::PortId;

use crate::{FabricRef, Inbox};

/// Packets the switch hands to the wire per turn.
pub const WIRE_PACKETS_PER_TURN: usize = 64;
/// Frames handed to the NIC at once.
pub const WIRE_BATCH: usize = 64;

/// The uplink's port on the fabric and what went through it.
pub struct Uplink {
    pub port: PortId,
    /// Packets the switch sends to the wire.
    pub inbox: Rc<Inbox>,
    pub coalesced: coalesce::Stats,
    /// Frames dropped for being longer than the wire takes.
    pub oversized: u64,
}

/// What one turn to the wire did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// Frames the NIC took.
    pub frames: usize,
    /// The lengths of the frames dropped as too long (for the log).
    pub oversized: Vec<usize>,
}

impl Uplink {
    /// Attach the uplink to `fabric` as port `name`.
    pub fn attach(fabric: &FabricRef, name: String) -> Uplink {
        let inbox = fabric.borrow().inbox();
        let port = fabric.borrow_mut().attach(name, vec![inbox.clone()], None);
        Uplink {
            port,
            inbox,
            coalesced: coalesce::Stats::default(),
            oversized: 0,
        }
    }

    /// Wire to switch: every frame `nic` received so far; how many.
    pub fn receive(&mut self, fabric: &FabricRef, nic: &mut impl Nic, now: u64) -> usize {
        let mut inbound: Vec<Vec<u8>> = Vec::new();
        nic.receive(&mut |f| inbound.push(f.to_vec()));
        let n = inbound.len();
        if n > 0 {
            for p in coalesce(inbound, &mut self.coalesced) {
                fabric.borrow_mut().forward(now, self.port, p);
            }
        }
        n
    }

    /// Switch to wire: one turn's packets.
    pub fn transmit(&mut self, nic: &mut impl Nic) -> Sent {
        let mut sent = Sent::default();
        let mut wire: Vec<Vec<u8>> = Vec::with_capacity(WIRE_BATCH);
        for p in self.inbox.take(WIRE_PACKETS_PER_TURN) {
            let Ok(frames) = finish(p) else {
                self.inbox.dropped.set(self.inbox.dropped.get() + 1);
                continue;
            };
            for f in frames {
                if f.len() > MAX_FRAME {
                    self.oversized += 1;
                    sent.oversized.push(f.len());
                    continue;
                }
                wire.push(f);
                if wire.len() == WIRE_BATCH {
                    sent.frames += self.send(nic, &mut wire);
                }
            }
        }
        sent.frames += self.send(nic, &mut wire);
        sent
    }

    /// Hand `wire` to the NIC at once; what it could not take is counted as dropped.
    fn send(&self, nic: &mut impl Nic, wire: &mut Vec<Vec<u8>>) -> usize {
        if wire.is_empty() {
            return 0;
        }
        let refs: Vec<&[u8]> = wire.iter().map(|f| f.as_slice()).collect();
        let failed = nic.send_frames(&refs);
        self.inbox
            .dropped
            .set(self.inbox.dropped.get() + failed as u64);
        let took = wire.len() - failed;
        wire.clear();
        took
    }
}

/// Switch to a local stack: packets from `inbox`, finished, into `queue` while it holds
/// fewer than `room` frames. A packet is taken only while there is room; its segments
/// beyond the room, and a packet that cannot be finished, are dropped and counted.
pub fn deliver_local(inbox: &Inbox, queue: &mut VecDeque<Vec<u8>>, room: usize) {
    while queue.len() < room {
        let Some(p) = inbox.take(1).next() else {
            return;
        };
        let Ok(frames) = finish(p) else {
            inbox.dropped.set(inbox.dropped.get() + 1);
            continue;
        };
        for f in frames {
            if queue.len() >= room {
                inbox.dropped.set(inbox.dropped.get() + 1);
                break;
            }
            queue.push_back(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fabric;
    use bulkhead_net::{Checksum, Counters, Link, MacAddr, Offloads, TxError};
    use bulkhead_netback::limits::Limits;
    use bulkhead_netback::packet::Packet;

    const BROADCAST: [u8; 6] = [0xff; 6];
    const HOST: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
    const GUEST: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 0xa];

    fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[12] = 0x88;
        f[13] = 0xb5;
        f
    }

    /// A NIC with frames waiting to be received, that takes at most `room` frames.
    #[derive(Default)]
    struct FakeNic {
        rx: Vec<Vec<u8>>,
        sent: Vec<Vec<u8>>,
        room: usize,
        doorbells: usize,
    }

    impl Nic for FakeNic {
        fn mac(&self) -> MacAddr {
            MacAddr(HOST)
        }
        fn link(&self) -> Link {
            Link::Up { mbps: 1000 }
        }
        fn offloads(&self) -> Offloads {
            Offloads::default()
        }
        fn send(&mut self, parts: &[&[u8]], _: Checksum) -> Result<(), TxError> {
            if self.sent.len() >= self.room {
                return Err(TxError::Full);
            }
            self.sent.push(parts.concat());
            Ok(())
        }
        fn send_frames(&mut self, frames: &[&[u8]]) -> usize {
            self.doorbells += 1;
            frames
                .iter()
                .filter(|f| self.send(&[f], Checksum::None).is_err())
                .count()
        }
        fn receive(&mut self, f: &mut dyn FnMut(&[u8])) -> usize {
            let n = self.rx.len();
            self.rx.drain(..).for_each(|x| f(&x));
            n
        }
        fn set_promiscuous(&mut self, _: bool) {}
        fn counters(&self) -> Counters {
            Counters::default()
        }
    }

    fn setup() -> (FabricRef, Uplink, Rc<Inbox>, PortId) {
        let fab = Fabric::new(Limits::default());
        let up = Uplink::attach(&fab, "uplink".into());
        let inbox = fab.borrow().inbox();
        let guest = fab
            .borrow_mut()
            .attach("guest".into(), vec![inbox.clone()], None);
        (fab, up, inbox, guest)
    }

    #[test]
    fn frames_from_the_wire_reach_the_switch() {
        let (fab, mut up, guest_in, _) = setup();
        let mut nic = FakeNic {
            rx: vec![frame(BROADCAST, HOST, 60), frame(BROADCAST, HOST, 100)],
            ..FakeNic::default()
        };
        assert_eq!(up.receive(&fab, &mut nic, 0), 2);
        assert_eq!(guest_in.len(), 2);
        assert_eq!(up.coalesced.frames, 2);
        assert_eq!(up.receive(&fab, &mut nic, 1), 0, "nothing new");
    }

    #[test]
    fn a_turn_to_the_wire_is_bounded_and_what_the_nic_refuses_is_counted() {
        let (fab, mut up, _, guest) = setup();
        for _ in 0..WIRE_PACKETS_PER_TURN + 10 {
            fab.borrow_mut()
                .forward(0, guest, Packet::plain(frame(BROADCAST, GUEST, 60)));
        }
        // The NIC has room for all but 4 of a turn's frames.
        let mut nic = FakeNic {
            room: WIRE_PACKETS_PER_TURN - 4,
            ..FakeNic::default()
        };
        let s = up.transmit(&mut nic);
        assert_eq!(s.frames, WIRE_PACKETS_PER_TURN - 4);
        assert_eq!(nic.sent.len(), WIRE_PACKETS_PER_TURN - 4);
        assert_eq!(nic.doorbells, 1, "one batch, one doorbell");
        assert_eq!(up.inbox.dropped.get(), 4);
        assert_eq!(up.inbox.len(), 10, "the rest waits for the next turn");
        nic.room = usize::MAX;
        assert_eq!(up.transmit(&mut nic).frames, 10);
        assert!(up.inbox.is_empty());
    }

    #[test]
    fn frames_longer_than_the_wire_are_dropped_and_counted() {
        let (fab, mut up, _, guest) = setup();
        let long = MAX_FRAME + 100;
        fab.borrow_mut()
            .forward(0, guest, Packet::plain(frame(BROADCAST, GUEST, long)));
        fab.borrow_mut()
            .forward(0, guest, Packet::plain(frame(BROADCAST, GUEST, 60)));
        let mut nic = FakeNic {
            room: usize::MAX,
            ..FakeNic::default()
        };
        let s = up.transmit(&mut nic);
        assert_eq!(
            s,
            Sent {
                frames: 1,
                oversized: vec![long]
            }
        );
        assert_eq!(up.oversized, 1);
    }

    #[test]
    fn the_local_stack_takes_packets_only_while_it_has_room() {
        let (fab, _, _, guest) = setup();
        let local = fab.borrow().inbox();
        let id = fab
            .borrow_mut()
            .attach("mgmt".into(), vec![local.clone()], None);
        let _ = id;
        for _ in 0..5 {
            fab.borrow_mut()
                .forward(0, guest, Packet::plain(frame(BROADCAST, GUEST, 60)));
        }
        let mut q = VecDeque::new();
        deliver_local(&local, &mut q, 3);
        assert_eq!(q.len(), 3);
        assert_eq!(local.len(), 2, "the rest waits");
        assert_eq!(local.dropped.get(), 0);
        q.clear();
        deliver_local(&local, &mut q, 3);
        assert_eq!((q.len(), local.len()), (2, 0));
    }
}
