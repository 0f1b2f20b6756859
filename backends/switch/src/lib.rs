//! The L2 switch between guest vifs and the uplink NIC: MAC learning with aging, flooding
//! of unknown unicast, broadcast and multicast, never back out of the port a frame came
//! in on, per-port counters, and an optional VLAN per port (access-port isolation: a frame
//! only reaches ports of its ingress port's VLAN).
//!
//! Frames come from guests and the wire and are untrusted: runts and frames with a
//! multicast source address are dropped and counted, and the learning table is bounded
//! so a guest spraying source addresses cannot grow it without limit. A guest port
//! ([`Switch::add_guest_port`]) has its MAC pinned: nothing else can claim that address
//! (a host on the uplink cannot steal a guest's traffic, a full table cannot turn it into
//! floods), the guest cannot send 802.1Q-tagged frames past its port's VLAN, and what it
//! floods (broadcast, multicast, unknown unicast) is rate-limited. Aging runs at most
//! once a second, not per frame. The switch only decides; moving the bytes is the
//! caller's (netback, NIC driver).
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
    /// The source is a guest's pinned address, arriving on another port.
    Spoofed,
    /// An 802.1Q/802.1ad-tagged frame from a guest port.
    Tagged,
    /// The ingress port used up its flood budget.
    FloodLimit,
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
    /// A guest's port: its pinned MAC, and flooding rate-limited.
    guest: Option<Guest>,
}

#[derive(Clone, Copy, Debug)]
struct Guest {
    mac: Mac,
    /// Flood budget: frames per second, and what is left of this second's.
    flood_per_sec: u32,
    flood_left: u32,
    flood_second: Nanos,
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
    /// Pinned guest addresses: (VLAN, MAC) to port, never aged or moved.
    pinned: BTreeMap<(u16, Mac), PortId>,
    last_aged: Nanos,
}

/// Aging is a scan of the table: at most this often.
const AGING_INTERVAL: Nanos = 1_000_000_000;

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
            pinned: BTreeMap::new(),
            last_aged: 0,
        }
    }

    pub fn add_port(&mut self, vlan: Option<u16>) -> PortId {
        self.insert_port(vlan, None)
    }

    /// A guest's port: `mac` is pinned to it (frames with that source from anywhere
    /// else are dropped), tagged frames from it are dropped, and it may flood at most
    /// `flood_per_sec` frames a second.
    pub fn add_guest_port(&mut self, vlan: Option<u16>, mac: Mac, flood_per_sec: u32) -> PortId {
        let id = self.insert_port(
            vlan,
            Some(Guest {
                mac,
                flood_per_sec,
                flood_left: flood_per_sec,
                flood_second: 0,
            }),
        );
        let key = (vlan.unwrap_or(0), mac);
        self.table.remove(&key);
        self.pinned.insert(key, id);
        id
    }

    fn insert_port(&mut self, vlan: Option<u16>, guest: Option<Guest>) -> PortId {
        // Skip ids still in use (after 65536 ports added, ids wrap).
        while self.ports.contains_key(&PortId(self.next_port)) {
            self.next_port = self.next_port.wrapping_add(1);
        }
        let id = PortId(self.next_port);
        self.next_port = self.next_port.wrapping_add(1);
        self.ports.insert(
            id,
            Port {
                vlan,
                up: true,
                counters: Counters::default(),
                guest,
            },
        );
        id
    }

    /// Remove a port and forget every address learned or pinned on it.
    pub fn remove_port(&mut self, id: PortId) {
        self.ports.remove(&id);
        self.table.retain(|_, e| e.port != id);
        self.pinned.retain(|_, p| *p != id);
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

    /// Where an address lives, pinned or learned (VLAN 0 = untagged).
    pub fn lookup(&self, vlan: u16, mac: &Mac) -> Option<PortId> {
        self.pinned
            .get(&(vlan, *mac))
            .copied()
            .or_else(|| self.table.get(&(vlan, *mac)).map(|e| e.port))
    }

    /// Decide where `frame`, received on `ingress` at `now`, goes; learn its source and
    /// update counters (the caller reports transmissions with [`Switch::transmitted`]).
    pub fn forward(&mut self, now: Nanos, ingress: PortId, frame: &[u8]) -> Decision {
        self.forward_sized(now, ingress, frame, frame.len())
    }

    /// [`Switch::forward`] of a frame `len` bytes long of which `frame` holds the start
    /// (its addresses are all the switch reads; `len` is what the counters count).
    pub fn forward_sized(
        &mut self,
        now: Nanos,
        ingress: PortId,
        frame: &[u8],
        len: usize,
    ) -> Decision {
        let Some(port) = self.ports.get_mut(&ingress).filter(|p| p.up) else {
            return Decision::Drop(DropReason::NoPort);
        };
        port.counters.rx_frames += 1;
        port.counters.rx_bytes += len.max(frame.len()) as u64;
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
        let guest = self
            .ports
            .get(&ingress)
            .and_then(|p| p.guest.is_some().then_some(()));
        if guest.is_some() && matches!(u16::from_be_bytes([frame[12], frame[13]]), 0x8100 | 0x88a8)
        {
            return drop(self, DropReason::Tagged);
        }
        match self.pinned.get(&(vlan, src)) {
            Some(&owner) if owner != ingress => return drop(self, DropReason::Spoofed),
            Some(_) => {}
            None => self.learn(now, vlan, src, ingress),
        }
        if !is_multicast(&dst) {
            if let Some(&to) = self.pinned.get(&(vlan, dst)) {
                if to == ingress {
                    return drop(self, DropReason::Hairpin);
                }
                if self.ports.get(&to).is_some_and(|p| p.up) {
                    return Decision::Unicast(to);
                }
            }
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
        if let Some(g) = self.ports.get_mut(&ingress).and_then(|p| p.guest.as_mut()) {
            let second = now / 1_000_000_000;
            if second != g.flood_second {
                g.flood_second = second;
                g.flood_left = g.flood_per_sec;
            }
            if g.flood_left == 0 {
                return drop(self, DropReason::FloodLimit);
            }
            g.flood_left -= 1;
        }
        Decision::Flood(
            self.ports
                .iter()
                .filter(|(id, p)| **id != ingress && p.up && p.vlan == vlan_opt)
                .map(|(id, _)| *id)
                .collect(),
        )
    }

    /// The MAC pinned to a guest port.
    pub fn pinned_mac(&self, id: PortId) -> Option<Mac> {
        self.ports.get(&id)?.guest.map(|g| g.mac)
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
                    self.age_now(now);
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

    /// Forget addresses not seen for longer than the aging time. Called per frame, it
    /// scans the table at most once a second (a lookup checks an entry's age anyway).
    pub fn age(&mut self, now: Nanos) {
        if now.saturating_sub(self.last_aged) < AGING_INTERVAL && now >= self.last_aged {
            return;
        }
        self.age_now(now);
    }

    fn age_now(&mut self, now: Nanos) {
        self.last_aged = now;
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

    /// Finding 5 of the hostile-guest review: a host on the uplink (or another guest)
    /// cannot claim a guest's pinned address, and a table filled with junk addresses
    /// does not turn traffic for a guest into floods.
    #[test]
    fn a_pinned_guest_address_cannot_be_stolen_or_crowded_out() {
        let mut s = Switch::new(300 * S, 16);
        let up = s.add_port(None);
        let g = s.add_guest_port(None, A, 1000);
        let h = s.add_guest_port(None, B, 1000);
        assert_eq!(
            s.forward(S, up, &frame(BCAST, A)),
            Decision::Drop(DropReason::Spoofed)
        );
        assert_eq!(
            s.forward(S, h, &frame(C, A)),
            Decision::Drop(DropReason::Spoofed)
        );
        assert_eq!(s.lookup(0, &A), Some(g));
        assert_eq!(s.forward(S, up, &frame(A, C)), Decision::Unicast(g));
        // The uplink sprays source addresses until the table is full.
        for i in 0..100u8 {
            s.forward(S, up, &frame(BCAST, [0x02, 0, 0, 0, 1, i]));
        }
        assert_eq!(s.learned(), 16);
        assert_eq!(s.forward(S, up, &frame(A, C)), Decision::Unicast(g));
        assert_eq!(s.forward(S, g, &frame(B, A)), Decision::Unicast(h));
        assert_eq!(s.pinned_mac(g), Some(A));
        s.remove_port(g);
        assert_eq!(s.lookup(0, &A), None);
    }

    #[test]
    fn guests_cannot_send_tagged_frames() {
        let mut s = Switch::new(300 * S, 16);
        let up = s.add_port(None);
        let g = s.add_guest_port(None, A, 1000);
        for tpid in [[0x81, 0x00], [0x88, 0xa8]] {
            let mut f = frame(C, A);
            f[12..14].copy_from_slice(&tpid);
            assert_eq!(s.forward(S, g, &f), Decision::Drop(DropReason::Tagged));
        }
        let mut f = frame(A, C);
        f[12..14].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(s.forward(S, up, &f), Decision::Unicast(g), "the wire may");
    }

    #[test]
    fn a_guest_floods_at_most_its_budget_per_second() {
        let mut s = Switch::new(300 * S, 16);
        let up = s.add_port(None);
        let g = s.add_guest_port(None, A, 100);
        let mut floods = 0;
        for i in 0..1000u64 {
            if let Decision::Flood(_) = s.forward(5 * S + i * 1000, g, &frame(BCAST, A)) {
                floods += 1;
            }
        }
        assert_eq!(floods, 100);
        assert_eq!(s.counters(g).unwrap().dropped, 900);
        // Unicast to a known address is not a flood and is not limited.
        s.forward(5 * S, up, &frame(BCAST, C));
        assert_eq!(s.forward(5 * S, g, &frame(C, A)), Decision::Unicast(up));
        // The next second has a fresh budget; the uplink has none to use up.
        assert!(matches!(
            s.forward(6 * S, g, &frame(BCAST, A)),
            Decision::Flood(_)
        ));
        for _ in 0..1000 {
            assert!(matches!(
                s.forward(6 * S, up, &frame(BCAST, C)),
                Decision::Flood(_)
            ));
        }
    }

    /// Aging scans the table at most once a second however many frames pass.
    #[test]
    fn aging_is_not_a_scan_per_frame() {
        let mut s = Switch::new(10 * S, 64);
        let up = s.add_port(None);
        s.forward(0, up, &frame(BCAST, C));
        s.age(9 * S + S / 2); // a scan: C is fresh
        assert_eq!(s.learned(), 1);
        // C is stale from 10 s on, but within a second of the last scan nothing scans
        // (a lookup still treats it as gone).
        s.age(10 * S + S / 5);
        assert_eq!(s.learned(), 1);
        let b = s.add_port(None);
        assert_eq!(
            s.forward(10 * S + S / 5, b, &frame(C, B)),
            Decision::Flood(vec![up])
        );
        s.age(10 * S + S * 6 / 10);
        assert_eq!(s.learned(), 1, "C gone, B learned");
        assert_eq!(s.lookup(0, &C), None);
    }
}
