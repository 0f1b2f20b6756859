//! The switch as the meeting point of everything that carries frames: the uplink NIC,
//! Bulkhead's management interface and every guest vif queue. A source hands a packet to
//! [`Fabric::forward`]; the switch decides where it goes, and the packet lands in each
//! destination's [`Inbox`], whose task is woken to take it.
//!
//! Inboxes are bounded in packets and in bytes, each and all together: a consumer that
//! does not drain (a guest that posts no receive buffers, a queue that died) loses
//! packets, counted, and costs the driver domain no more than its share; the others keep
//! going. A closed inbox (carrier off) holds nothing and drops what comes.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod uplink;

use alloc::collections::{BTreeMap, VecDeque};
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use bulkhead_executor::Notify;
use bulkhead_netback::ctrl::Steering;
use bulkhead_netback::limits::Limits;
use bulkhead_netback::packet::{flow_hash_in, Packet};
use bulkhead_switch::{Decision, PortId, Switch};

/// Packets waiting per inbox before new ones are dropped (whatever their size).
pub const INBOX_PACKETS: usize = 512;
/// How long an address stays learned without traffic (as Linux bridges).
const AGING_NS: u64 = 300_000_000_000;
const TABLE_CAPACITY: usize = 4096;

/// What a queued packet costs: its buffer and its bookkeeping.
pub fn cost(p: &Packet) -> usize {
    p.data.capacity() + core::mem::size_of::<Packet>()
}

/// Bytes queued in every inbox of one fabric, against its limit.
#[derive(Debug)]
pub struct Queued {
    used: Cell<usize>,
    limit: usize,
}

impl Queued {
    pub fn used(&self) -> usize {
        self.used.get()
    }
}

/// What one source (a switch port) has waiting in an inbox.
#[derive(Default)]
struct FromSource {
    packets: VecDeque<Packet>,
    bytes: usize,
}

/// Packets for one consumer task, queued per source and taken round robin between
/// sources: one guest flooding the uplink (or another guest) fills at most its share
/// of the inbox ([`Inbox::share`]) and is served no faster than any other source, so
/// the others' packets still get in and out.
pub struct Inbox {
    sources: RefCell<BTreeMap<u16, FromSource>>,
    /// The source served last (round robin).
    last: Cell<Option<u16>>,
    /// The sources of the packets the last take handed out, in order: what the consumer
    /// puts back goes back to its source's queue, still counted in its share.
    lent: RefCell<VecDeque<u16>>,
    count: Cell<usize>,
    pub notify: Notify,
    /// Packets that could not be queued (full, closed) or were thrown away queued.
    pub dropped: Cell<u64>,
    bytes: Cell<usize>,
    limit: usize,
    closed: Cell<bool>,
    total: Rc<Queued>,
}

/// The source of packets pushed without one.
const ANONYMOUS: u16 = u16::MAX;

impl Inbox {
    /// An inbox holding at most `limit` bytes, counted into `total` too.
    pub fn new(limit: usize, total: Rc<Queued>) -> Rc<Inbox> {
        Rc::new(Inbox {
            sources: RefCell::new(BTreeMap::new()),
            last: Cell::new(None),
            lent: RefCell::new(VecDeque::new()),
            count: Cell::new(0),
            notify: Notify::new(),
            dropped: Cell::new(0),
            bytes: Cell::new(0),
            limit,
            closed: Cell::new(false),
            total,
        })
    }

    /// What one source may have waiting here, in packets and bytes: three quarters, so
    /// a source alone uses most of the inbox and a flooding one leaves a quarter to the
    /// rest.
    pub fn share(&self) -> (usize, usize) {
        (INBOX_PACKETS * 3 / 4, self.limit * 3 / 4)
    }

    pub fn len(&self) -> usize {
        self.count.get()
    }

    pub fn is_empty(&self) -> bool {
        self.count.get() == 0
    }

    /// Bytes queued here.
    pub fn bytes(&self) -> usize {
        self.bytes.get()
    }

    fn charge(&self, n: usize) {
        self.bytes.set(self.bytes.get() + n);
        self.total.used.set(self.total.used.get() + n);
    }

    fn release(&self, n: usize) {
        self.bytes.set(self.bytes.get() - n);
        self.total.used.set(self.total.used.get() - n);
    }

    fn drop_one(&self) {
        self.dropped.set(self.dropped.get() + 1);
    }

    /// Queue a packet from no particular source (see [`Inbox::push_from`]).
    pub fn push(&self, p: Packet) -> bool {
        self.push_from(ANONYMOUS, p)
    }

    /// Queue a packet from switch port `source` if this inbox, the source's share of it
    /// and the fabric have room; false if it was dropped.
    pub fn push_from(&self, source: u16, p: Packet) -> bool {
        let c = cost(&p);
        let (share_packets, share_bytes) = self.share();
        let mut sources = self.sources.borrow_mut();
        let from = sources.get(&source);
        let (from_packets, from_bytes) = from.map_or((0, 0), |f| (f.packets.len(), f.bytes));
        if self.closed.get()
            || self.count.get() >= INBOX_PACKETS
            || self.bytes.get() + c > self.limit
            || from_packets >= share_packets
            || from_bytes + c > share_bytes
            || self.total.used.get() + c > self.total.limit
        {
            drop(sources);
            self.drop_one();
            return false;
        }
        let from = sources.entry(source).or_default();
        from.packets.push_back(p);
        from.bytes += c;
        drop(sources);
        self.count.set(self.count.get() + 1);
        self.charge(c);
        self.notify.notify();
        true
    }

    /// The next packet: the next source's after the one served last.
    fn pop(&self) -> Option<(u16, Packet)> {
        use core::ops::Bound::{Excluded, Unbounded};
        let mut sources = self.sources.borrow_mut();
        let after = match self.last.get() {
            Some(l) => sources.range((Excluded(l), Unbounded)).next(),
            None => None,
        };
        let next = after.or_else(|| sources.iter().next()).map(|(&k, _)| k)?;
        let from = sources.get_mut(&next)?;
        let p = from.packets.pop_front()?;
        let c = cost(&p);
        from.bytes -= c;
        if from.packets.is_empty() {
            sources.remove(&next);
        }
        drop(sources);
        self.last.set(Some(next));
        self.count.set(self.count.get() - 1);
        self.release(c);
        Some((next, p))
    }

    /// Up to `n` packets, round robin between sources, each source's in order; their
    /// sources are remembered for [`Inbox::put_back`].
    fn take_up_to(&self, n: usize) -> VecDeque<Packet> {
        let mut out = VecDeque::with_capacity(n.min(self.count.get()));
        let mut lent = self.lent.borrow_mut();
        lent.clear();
        while out.len() < n {
            match self.pop() {
                Some((source, p)) => {
                    lent.push_back(source);
                    out.push_back(p);
                }
                None => break,
            }
        }
        out
    }

    /// Everything waiting, leaving the inbox empty (put back what is not taken with
    /// [`Inbox::put_back`]).
    pub fn take_all(&self) -> VecDeque<Packet> {
        self.take_up_to(usize::MAX)
    }

    /// Up to `n` packets, round robin between sources, each source's in order.
    pub fn take(&self, n: usize) -> alloc::collections::vec_deque::IntoIter<Packet> {
        self.take_up_to(n).into_iter()
    }

    /// Return the tail of what the last take handed out, not consumed: each packet goes
    /// back to the head of its source's queue, counted in its share again. They were
    /// queued once: they go back even if the limits filled up meanwhile (the limits
    /// hold again as soon as the consumer drains), unless the inbox was closed.
    pub fn put_back(&self, rest: VecDeque<Packet>) {
        let mut lent = core::mem::take(&mut *self.lent.borrow_mut());
        if self.closed.get() {
            self.dropped.set(self.dropped.get() + rest.len() as u64);
            return;
        }
        let n = rest.len();
        let mut sources = self.sources.borrow_mut();
        for p in rest.into_iter().rev() {
            let source = lent.pop_back().unwrap_or(ANONYMOUS);
            let c = cost(&p);
            let from = sources.entry(source).or_default();
            from.packets.push_front(p);
            from.bytes += c;
            self.charge(c);
        }
        drop(sources);
        self.count.set(self.count.get() + n);
    }

    /// Carrier off: drop everything queued (counted) and every packet that comes,
    /// until [`Inbox::open`]. Returns how many queued packets were dropped.
    pub fn close(&self) -> usize {
        self.closed.set(true);
        let n = self.take_all().len();
        self.dropped.set(self.dropped.get() + n as u64);
        n
    }

    pub fn open(&self) {
        self.closed.set(false);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.release(self.bytes.get());
    }
}

struct Sink {
    name: String,
    /// One per queue of the port; a flow always goes to the same one.
    inboxes: Vec<Rc<Inbox>>,
    /// The frontend's own choice of queue per flow (netif control ring), if it made one.
    steering: Option<Rc<RefCell<Steering>>>,
}

pub struct Fabric {
    sw: Switch,
    sinks: BTreeMap<PortId, Sink>,
    /// What each guest's packets may cost (from the command line), for every vif.
    pub limits: Limits,
    queued: Rc<Queued>,
}

pub type FabricRef = Rc<RefCell<Fabric>>;

impl Fabric {
    pub fn new(limits: Limits) -> FabricRef {
        Rc::new(RefCell::new(Fabric {
            sw: Switch::new(AGING_NS, TABLE_CAPACITY),
            sinks: BTreeMap::new(),
            limits,
            queued: Rc::new(Queued {
                used: Cell::new(0),
                limit: limits.queued_bytes,
            }),
        }))
    }

    /// A fresh inbox under this fabric's limits.
    pub fn inbox(&self) -> Rc<Inbox> {
        Inbox::new(self.limits.inbox_bytes, self.queued.clone())
    }

    /// Bytes queued in all inboxes.
    pub fn queued_bytes(&self) -> usize {
        self.queued.used()
    }

    pub fn attach(
        &mut self,
        name: String,
        inboxes: Vec<Rc<Inbox>>,
        steering: Option<Rc<RefCell<Steering>>>,
    ) -> PortId {
        let id = self.sw.add_port(None);
        self.sinks.insert(
            id,
            Sink {
                name,
                inboxes,
                steering,
            },
        );
        id
    }

    /// A guest's vif: its MAC is pinned to the port (nothing else may claim it), it
    /// cannot send tagged frames, and its floods are rate-limited (`limits`).
    pub fn attach_guest(
        &mut self,
        name: String,
        mac: [u8; 6],
        inboxes: Vec<Rc<Inbox>>,
        steering: Option<Rc<RefCell<Steering>>>,
    ) -> PortId {
        let id = self.sw.add_guest_port(None, mac, self.limits.flood_per_sec);
        self.sinks.insert(
            id,
            Sink {
                name,
                inboxes,
                steering,
            },
        );
        id
    }

    /// Remove a port: its learned addresses are forgotten and its inboxes dropped.
    pub fn detach(&mut self, id: PortId) {
        self.sw.remove_port(id);
        self.sinks.remove(&id);
    }

    /// Switch a packet that arrived on `from`.
    pub fn forward(&mut self, now: u64, from: PortId, p: Packet) {
        let d = self.route(now, from, &p.data, p.data.len());
        self.deliver_routed(from, d, p);
    }

    /// Where a frame `len` bytes long that arrived on `from` goes (the switch learns its
    /// source; `frame` may be its start only), for [`Fabric::deliver_routed`] or a
    /// delivery of the caller's.
    pub fn route(&mut self, now: u64, from: PortId, frame: &[u8], len: usize) -> Decision {
        self.sw.age(now);
        self.sw.forward_sized(now, from, frame, len)
    }

    /// Queue a packet where [`Fabric::route`] said.
    pub fn deliver_routed(&mut self, from: PortId, d: Decision, p: Packet) {
        match d {
            Decision::Drop(_) => {}
            Decision::Unicast(to) => self.deliver(from, to, p),
            Decision::Flood(to) => {
                if let Some((last, rest)) = to.split_last() {
                    for &t in rest {
                        self.deliver(from, t, p.clone());
                    }
                    self.deliver(from, *last, p);
                }
            }
        }
    }

    fn deliver(&mut self, from: PortId, to: PortId, p: Packet) {
        let Some((_, inbox)) = self.queue_of(to, &p.data, p.data.len()) else {
            return;
        };
        let len = p.data.len();
        if inbox.push_from(from.0, p) {
            self.sw.transmitted(to, len);
        }
    }

    /// Which of port `to`'s queues takes a frame `len` bytes long (`frame`: its start,
    /// headers included): the frontend's steering, else the flow's hash; and its inbox.
    /// The same queue for the headers alone as for the whole frame.
    pub fn queue_of(&self, to: PortId, frame: &[u8], len: usize) -> Option<(usize, Rc<Inbox>)> {
        let sink = self.sinks.get(&to)?;
        let i = match sink.inboxes.len() {
            0 => return None,
            1 => 0,
            n => {
                let steered = sink
                    .steering
                    .as_ref()
                    .and_then(|s| s.borrow().queue_for_in(frame, len))
                    .filter(|&q| q < n);
                steered.unwrap_or(flow_hash_in(frame, len) as usize % n)
            }
        };
        Some((i, sink.inboxes[i].clone()))
    }

    /// Count a packet of `len` bytes the caller delivered to port `to` itself, not
    /// through its inbox (netback's copy straight from one guest to another).
    pub fn delivered(&mut self, to: PortId, len: usize) {
        self.sw.transmitted(to, len);
    }

    /// One line per port and the table size, for the status page.
    pub fn render(&self, o: &mut String) {
        use core::fmt::Write;
        for (id, s) in &self.sinks {
            if let Some(c) = self.sw.counters(*id) {
                let dropped: u64 = s.inboxes.iter().map(|i| i.dropped.get()).sum();
                let _ = writeln!(
                    o,
                    "switch port {}: rx {} frames {} bytes, tx {} frames {} bytes, {} dropped",
                    s.name,
                    c.rx_frames,
                    c.rx_bytes,
                    c.tx_frames,
                    c.tx_bytes,
                    c.dropped + dropped
                );
            }
        }
        let _ = writeln!(
            o,
            "switch: {} addresses learned, {} bytes queued",
            self.sw.learned(),
            self.queued.used()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const GUEST_A: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 0xa];
    const GUEST_B: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 0xb];
    const HOST: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];

    fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Packet {
        let mut f = vec![0u8; len];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[12] = 0x88;
        f[13] = 0xb5;
        Packet::plain(f)
    }

    struct Net {
        fab: FabricRef,
        ports: Vec<(PortId, Rc<Inbox>)>,
    }

    fn net(limits: Limits, n: usize) -> Net {
        let fab = Fabric::new(limits);
        let ports = (0..n)
            .map(|i| {
                let inbox = fab.borrow().inbox();
                let id = fab
                    .borrow_mut()
                    .attach(alloc::format!("p{i}"), vec![inbox.clone()], None);
                (id, inbox)
            })
            .collect();
        Net { fab, ports }
    }

    /// Finding 3 of the hostile-guest review: a vif that never drains holds at most its
    /// byte limit, however big the packets sent to it (512 packets of 64 KiB were 32 MiB
    /// before), and the others keep receiving.
    #[test]
    fn an_inbox_that_never_drains_holds_its_byte_limit_and_no_more() {
        let limits = Limits::default();
        let n = net(limits, 3);
        let (up, a, b) = (n.ports[0].0, &n.ports[1].1, &n.ports[2].1);
        // Teach the switch where the guests are.
        n.fab
            .borrow_mut()
            .forward(0, n.ports[1].0, frame(HOST, GUEST_A, 60));
        n.fab
            .borrow_mut()
            .forward(0, n.ports[2].0, frame(HOST, GUEST_B, 60));
        for (_, i) in &n.ports {
            i.take_all();
        }
        for _ in 0..600 {
            n.fab
                .borrow_mut()
                .forward(1, up, frame(GUEST_A, HOST, 65535));
        }
        assert!(
            a.bytes() <= limits.inbox_bytes,
            "{} bytes queued",
            a.bytes()
        );
        // One source (the uplink) fills its share of the inbox: 3/4 of 512 KiB.
        assert!(a.len() >= 5, "it took what fits: {}", a.len());
        assert!(a.bytes() <= a.share().1);
        assert_eq!(a.dropped.get() as usize, 600 - a.len());
        n.fab
            .borrow_mut()
            .forward(2, up, frame(GUEST_B, HOST, 1514));
        assert_eq!(b.len(), 1, "the neighbour still receives");
        assert_eq!(n.fab.borrow().queued_bytes(), a.bytes() + b.bytes());
    }

    /// One guest flooding the uplink (its packets waiting there up to its share) does
    /// not keep another guest's packets out, nor behind all of its own: the uplink
    /// takes from each source in turn.
    #[test]
    fn a_flooding_guest_leaves_room_and_turns_to_the_others() {
        let n = net(Limits::default(), 3);
        let (up, a, b) = (n.ports[0].0, n.ports[1].0, n.ports[2].0);
        let uplink = &n.ports[0].1;
        n.fab.borrow_mut().forward(0, up, frame(GUEST_A, HOST, 60));
        for _ in 0..2000 {
            n.fab.borrow_mut().forward(1, a, frame(HOST, GUEST_A, 1514));
        }
        let flood = uplink.len();
        assert!(flood <= uplink.share().0, "{flood} packets of one source");
        assert!(uplink.dropped.get() >= 2000 - flood as u64);
        for _ in 0..10 {
            n.fab.borrow_mut().forward(2, b, frame(HOST, GUEST_B, 1514));
        }
        assert_eq!(uplink.len(), flood + 10, "the other guest's packets got in");
        // Served in turn: B's ten come within the first twenty taken.
        let first: Vec<Packet> = uplink.take(20).collect();
        let from_b = first.iter().filter(|p| p.data[6..12] == GUEST_B).count();
        assert_eq!(from_b, 10);
        assert_eq!(
            n.fab.borrow().queued_bytes(),
            uplink.bytes() + n.ports[1].1.bytes() + n.ports[2].1.bytes()
        );
    }

    /// A consumer that takes everything and puts back what it could not deliver (a vif
    /// whose guest has no receive buffers) keeps each source in its share: the flooder
    /// does not get a fresh share after every pass, and the other source's packets are
    /// still served in turn.
    #[test]
    fn put_back_keeps_each_source_in_its_share() {
        let n = net(Limits::default(), 3);
        let (a, c, v) = (n.ports[0].0, n.ports[1].0, n.ports[2].0);
        let victim = &n.ports[2].1;
        n.fab.borrow_mut().forward(0, v, frame(HOST, GUEST_B, 60));
        for _ in 0..3 {
            for _ in 0..1000 {
                n.fab
                    .borrow_mut()
                    .forward(1, a, frame(GUEST_B, GUEST_A, 1514));
            }
            // The consumer's pass: nothing delivered, everything back.
            let all = victim.take_all();
            victim.put_back(all);
        }
        assert!(
            victim.bytes() <= victim.share().1,
            "{} bytes of one source",
            victim.bytes()
        );
        for _ in 0..10 {
            n.fab.borrow_mut().forward(2, c, frame(GUEST_B, HOST, 1514));
        }
        let all = victim.take_all();
        assert_eq!(
            all.iter()
                .take(20)
                .filter(|p| p.data[6..12] == HOST)
                .count(),
            10
        );
        victim.put_back(all);
        assert_eq!(
            n.fab.borrow().queued_bytes(),
            victim.bytes() + n.ports[0].1.bytes() + n.ports[1].1.bytes()
        );
    }

    /// All inboxes together hold at most the fabric's limit: many stalled guests cannot
    /// add up to the whole heap.
    #[test]
    fn all_inboxes_together_hold_the_total_limit() {
        let limits = Limits {
            queued_bytes: 1024 * 1024,
            ..Limits::default()
        };
        let n = net(limits, 9);
        for _ in 0..100 {
            // Broadcast from port 0: a copy into every other inbox.
            n.fab
                .borrow_mut()
                .forward(0, n.ports[0].0, frame([0xff; 6], HOST, 9000));
        }
        let total: usize = n.ports.iter().map(|p| p.1.bytes()).sum();
        assert!(total <= limits.queued_bytes, "{total}");
        assert_eq!(n.fab.borrow().queued_bytes(), total);
        assert!(
            total > limits.queued_bytes - 2 * 9200,
            "the limit is used: {total}"
        );
        // Draining one inbox makes room again.
        let freed = n.ports[1].1.take_all();
        assert!(!freed.is_empty());
        assert_eq!(
            n.fab.borrow().queued_bytes(),
            total - freed.iter().map(cost).sum::<usize>()
        );
        drop(n.ports);
    }

    /// A closed inbox (a dead queue, a stalled carrier) drops what it held and what
    /// comes, counted, and releases its bytes; opened again, it queues again.
    #[test]
    fn a_closed_inbox_drops_and_releases() {
        let n = net(Limits::default(), 2);
        let (from, inbox) = (n.ports[0].0, &n.ports[1].1);
        for _ in 0..5 {
            n.fab
                .borrow_mut()
                .forward(0, from, frame([0xff; 6], HOST, 1000));
        }
        assert_eq!(inbox.len(), 5);
        assert_eq!(inbox.close(), 5);
        assert_eq!((inbox.bytes(), n.fab.borrow().queued_bytes()), (0, 0));
        n.fab
            .borrow_mut()
            .forward(0, from, frame([0xff; 6], HOST, 1000));
        assert_eq!((inbox.len(), inbox.dropped.get()), (0, 6));
        let mut back = VecDeque::new();
        back.push_back(frame([0xff; 6], HOST, 100));
        inbox.put_back(back);
        assert_eq!(inbox.len(), 0, "nothing goes back into a closed inbox");
        inbox.open();
        n.fab
            .borrow_mut()
            .forward(0, from, frame([0xff; 6], HOST, 1000));
        assert_eq!(inbox.len(), 1);
    }

    /// Taking and putting back keeps the accounting exact, and a dropped inbox gives its
    /// bytes back to the fabric.
    #[test]
    fn accounting_follows_take_put_back_and_drop() {
        let n = net(Limits::default(), 2);
        let (from, inbox) = (n.ports[0].0, n.ports[1].1.clone());
        for len in [60, 1514, 9000, 65535] {
            n.fab
                .borrow_mut()
                .forward(0, from, frame([0xff; 6], HOST, len));
        }
        let all = inbox.bytes();
        let mut got: VecDeque<Packet> = inbox.take(2).collect();
        assert_eq!(inbox.len(), 2);
        got.pop_front();
        inbox.put_back(got);
        assert_eq!(inbox.len(), 3);
        assert_eq!(inbox.bytes(), all - (60 + core::mem::size_of::<Packet>()));
        assert_eq!(n.fab.borrow().queued_bytes(), inbox.bytes());
        let fab = n.fab.clone();
        fab.borrow_mut().detach(n.ports[1].0);
        drop(n);
        drop(inbox);
        assert_eq!(fab.borrow().queued_bytes(), 0);
    }
}
