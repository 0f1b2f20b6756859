//! The L2 switch between guest vifs and the uplink NIC: MAC learning with aging, flooding
//! of unknown unicast, broadcast and multicast, never back out of the port a frame came
//! in on, per-port counters, and an optional VLAN per port (access-port isolation: a frame
//! only reaches ports of its ingress port's VLAN).
//!
//! Frames come from guests and the wire and are untrusted: runts and frames with a
//! multicast source address are dropped and counted, and the learning table is bounded
//! so a guest spraying source addresses cannot grow it without limit. The switch only
//! decides; moving the bytes is the caller's (netback, NIC driver).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

pub type Mac = [u8; 6];
pub type Nanos = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortId(pub u16);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    pub dropped: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    Runt,
    /// Source address is multicast/broadcast.
    BadSource,
    /// The only place the destination lives is where the frame came from.
    Hairpin,
    /// Ingress port unknown or down.
    NoPort,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Drop(DropReason),
    Unicast(PortId),
    /// To every listed port (possibly none).
    Flood(Vec<PortId>),
}

struct Port {
    vlan: Option<u16>,
    up: bool,
    counters: Counters,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    port: PortId,
    seen: Nanos,
}

pub struct Switch {
    ports: BTreeMap<PortId, Port>,
    next_port: u16,
    table: BTreeMap<(u16, Mac), Entry>,
    aging: Nanos,
    capacity: usize,
    /// Source addresses not learned because the table was full.
    pub learn_overflows: u64,
    /// Addresses that moved from one port to another.
    pub moves: u64,
}

fn is_multicast(m: &Mac) -> bool {
    m[0] & 1 != 0
}

impl Switch {
    /// `aging`: how long an address stays learned without traffic (Linux bridges use 300 s).
    pub fn new(aging: Nanos, capacity: usize) -> Self {
        Switch {
            ports: BTreeMap::new(),
            next_port: 0,
            table: BTreeMap::new(),
            aging,
            capacity,
            learn_overflows: 0,
            moves: 0,
        }
    }

    pub fn add_port(&mut self, vlan: Option<u16>) -> PortId {
        let id = PortId(self.next_port);
        self.next_port = self.next_port.wrapping_add(1);
        self.ports.insert(
            id,
            Port {
                vlan,
                up: true,
                counters: Counters::default(),
            },
        );
        id
    }

    /// Remove a port and forget every address learned on it.
    pub fn remove_port(&mut self, id: PortId) {
        self.ports.remove(&id);
        self.table.retain(|_, e| e.port != id);
    }

    pub fn set_up(&mut self, id: PortId, up: bool) {
        if let Some(p) = self.ports.get_mut(&id) {
            p.up = up;
        }
        if !up {
            self.table.retain(|_, e| e.port != id);
        }
    }

    pub fn counters(&self, id: PortId) -> Option<Counters> {
        self.ports.get(&id).map(|p| p.counters)
    }

    pub fn learned(&self) -> usize {
        self.table.len()
    }

    /// Where a learned address lives (VLAN 0 = untagged).
    pub fn lookup(&self, vlan: u16, mac: &Mac) -> Option<PortId> {
        self.table.get(&(vlan, *mac)).map(|e| e.port)
    }

    /// Decide where `frame`, received on `ingress` at `now`, goes; learn its source and
    /// update counters (the caller reports transmissions with [`Switch::transmitted`]).
    pub fn forward(&mut self, now: Nanos, ingress: PortId, frame: &[u8]) -> Decision {
        let Some(port) = self.ports.get_mut(&ingress).filter(|p| p.up) else {
            return Decision::Drop(DropReason::NoPort);
        };
        port.counters.rx_frames += 1;
        port.counters.rx_bytes += frame.len() as u64;
        let vlan_opt = port.vlan;
        let vlan = vlan_opt.unwrap_or(0);
        let drop = |s: &mut Self, r| {
            if let Some(p) = s.ports.get_mut(&ingress) {
                p.counters.dropped += 1;
            }
            Decision::Drop(r)
        };
        if frame.len() < 14 {
            return drop(self, DropReason::Runt);
        }
        let dst: Mac = frame[0..6].try_into().unwrap();
        let src: Mac = frame[6..12].try_into().unwrap();
        if is_multicast(&src) {
            return drop(self, DropReason::BadSource);
        }
        self.learn(now, vlan, src, ingress);
        if !is_multicast(&dst) {
            if let Some(e) = self.table.get(&(vlan, dst)).copied() {
                if now.saturating_sub(e.seen) <= self.aging
                    && self.ports.get(&e.port).is_some_and(|p| p.up)
                {
                    if e.port == ingress {
                        return drop(self, DropReason::Hairpin);
                    }
                    return Decision::Unicast(e.port);
                }
            }
        }
        Decision::Flood(
            self.ports
                .iter()
                .filter(|(id, p)| **id != ingress && p.up && p.vlan == vlan_opt)
                .map(|(id, _)| *id)
                .collect(),
        )
    }

    fn learn(&mut self, now: Nanos, vlan: u16, src: Mac, port: PortId) {
        match self.table.get_mut(&(vlan, src)) {
            Some(e) => {
                if e.port != port {
                    self.moves += 1;
                    e.port = port;
                }
                e.seen = now;
            }
            None => {
                if self.table.len() >= self.capacity {
                    self.age(now);
                }
                if self.table.len() >= self.capacity {
                    self.learn_overflows += 1;
                    return;
                }
                self.table.insert((vlan, src), Entry { port, seen: now });
            }
        }
    }

    /// Count a frame the caller sent out of `port`.
    pub fn transmitted(&mut self, port: PortId, bytes: usize) {
        if let Some(p) = self.ports.get_mut(&port) {
            p.counters.tx_frames += 1;
            p.counters.tx_bytes += bytes as u64;
        }
    }

    /// Forget addresses not seen for longer than the aging time.
    pub fn age(&mut self, now: Nanos) {
        let aging = self.aging;
        self.table
            .retain(|_, e| now.saturating_sub(e.seen) <= aging);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const S: Nanos = 1_000_000_000;

    fn frame(dst: Mac, src: Mac) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[0..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f
    }

    const A: Mac = [0x00, 0x16, 0x3e, 0, 0, 1];
    const B: Mac = [0x00, 0x16, 0x3e, 0, 0, 2];
    const C: Mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const BCAST: Mac = [0xff; 6];

    fn three() -> (Switch, PortId, PortId, PortId) {
        let mut s = Switch::new(300 * S, 1024);
        let up = s.add_port(None);
        let a = s.add_port(None);
        let b = s.add_port(None);
        (s, up, a, b)
    }

    #[test]
    fn learns_and_forwards() {
        let (mut s, up, a, b) = three();
        // Unknown destination floods everywhere but the ingress.
        assert_eq!(s.forward(0, a, &frame(B, A)), Decision::Flood(vec![up, b]));
        assert_eq!(s.lookup(0, &A), Some(a));
        // B answers: A is known now.
        assert_eq!(s.forward(1, b, &frame(A, B)), Decision::Unicast(a));
        assert_eq!(s.forward(2, a, &frame(B, A)), Decision::Unicast(b));
        let ca = s.counters(a).unwrap();
        assert_eq!((ca.rx_frames, ca.rx_bytes), (2, 120));
        s.transmitted(b, 60);
        assert_eq!(s.counters(b).unwrap().tx_frames, 1);
    }

    #[test]
    fn broadcast_and_multicast_flood() {
        let (mut s, up, a, b) = three();
        s.forward(0, b, &frame(A, B));
        assert_eq!(
            s.forward(1, a, &frame(BCAST, A)),
            Decision::Flood(vec![up, b])
        );
        let mcast = [0x01, 0x00, 0x5e, 0, 0, 1];
        assert_eq!(
            s.forward(2, up, &frame(mcast, C)),
            Decision::Flood(vec![a, b])
        );
    }

    #[test]
    fn never_back_to_the_ingress_port() {
        let (mut s, _, a, _) = three();
        s.forward(0, a, &frame(BCAST, A));
        s.forward(0, a, &frame(BCAST, B)); // B learned on a too (e.g. behind a bridge)
        assert_eq!(
            s.forward(1, a, &frame(B, A)),
            Decision::Drop(DropReason::Hairpin)
        );
        assert_eq!(s.counters(a).unwrap().dropped, 1);
    }

    #[test]
    fn aging_forgets_and_floods_again() {
        let (mut s, up, a, b) = three();
        s.forward(0, b, &frame(BCAST, B));
        assert_eq!(s.forward(10 * S, a, &frame(B, A)), Decision::Unicast(b));
        // 300 s later B is stale: flood, and an explicit age() drops the entry.
        assert_eq!(
            s.forward(400 * S, a, &frame(B, A)),
            Decision::Flood(vec![up, b])
        );
        s.age(400 * S);
        assert_eq!(s.lookup(0, &B), None);
        assert_eq!(s.lookup(0, &A), Some(a), "A was refreshed at 400 s");
    }

    #[test]
    fn station_moves_between_ports() {
        let (mut s, up, a, b) = three();
        s.forward(0, a, &frame(BCAST, C));
        s.forward(1, up, &frame(BCAST, C));
        assert_eq!(s.lookup(0, &C), Some(up));
        assert_eq!(s.moves, 1);
        assert_eq!(s.forward(2, b, &frame(C, B)), Decision::Unicast(up));
    }

    #[test]
    fn vlans_isolate() {
        let mut s = Switch::new(300 * S, 1024);
        let red1 = s.add_port(Some(10));
        let red2 = s.add_port(Some(10));
        let blue = s.add_port(Some(20));
        assert_eq!(
            s.forward(0, red1, &frame(BCAST, A)),
            Decision::Flood(vec![red2])
        );
        // The same MAC on another VLAN is a different station.
        s.forward(1, blue, &frame(BCAST, A));
        assert_eq!(s.lookup(10, &A), Some(red1));
        assert_eq!(s.lookup(20, &A), Some(blue));
        assert_eq!(s.forward(2, red2, &frame(A, B)), Decision::Unicast(red1));
    }

    #[test]
    fn hostile_frames_are_dropped() {
        let (mut s, _, a, _) = three();
        assert_eq!(
            s.forward(0, a, &[0u8; 10]),
            Decision::Drop(DropReason::Runt)
        );
        assert_eq!(
            s.forward(0, a, &frame(B, BCAST)),
            Decision::Drop(DropReason::BadSource)
        );
        assert_eq!(s.learned(), 0);
        assert_eq!(
            s.forward(0, PortId(99), &frame(B, A)),
            Decision::Drop(DropReason::NoPort)
        );
        assert_eq!(s.counters(a).unwrap().dropped, 2);
    }

    #[test]
    fn table_is_bounded() {
        let mut s = Switch::new(300 * S, 16);
        let a = s.add_port(None);
        let _b = s.add_port(None);
        for i in 0..100u8 {
            s.forward(1, a, &frame(BCAST, [0x02, 0, 0, 0, 0, i]));
        }
        assert_eq!(s.learned(), 16);
        assert_eq!(s.learn_overflows, 84);
        // Once entries age out, learning resumes.
        s.forward(400 * S, a, &frame(BCAST, [0x02, 0, 0, 0, 1, 1]));
        assert_eq!(s.learned(), 1);
    }

    #[test]
    fn removed_or_down_ports_are_forgotten() {
        let (mut s, up, a, b) = three();
        s.forward(0, b, &frame(BCAST, B));
        s.set_up(b, false);
        assert_eq!(s.forward(1, a, &frame(B, A)), Decision::Flood(vec![up]));
        s.set_up(b, true);
        s.forward(2, b, &frame(BCAST, B));
        s.remove_port(b);
        assert_eq!(s.lookup(0, &B), None);
        assert_eq!(s.forward(3, a, &frame(B, A)), Decision::Flood(vec![up]));
    }
}
