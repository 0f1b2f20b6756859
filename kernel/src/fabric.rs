//! The switch as the meeting point of everything that carries frames: the uplink NIC,
//! Bulkhead's management interface and every guest vif queue. A source hands a packet to
//! [`Fabric::forward`]; the switch decides where it goes, and the packet lands in each
//! destination's [`Inbox`], whose task is woken to take it. Inboxes are bounded: a port
//! that does not drain loses packets (counted), the others keep going.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use bulkhead_executor::Notify;
use bulkhead_netback::ctrl::Steering;
use bulkhead_netback::limits::Limits;
use bulkhead_netback::packet::{flow_hash, Packet};
use bulkhead_switch::{Decision, PortId, Switch};

/// Packets waiting per inbox before new ones are dropped.
const INBOX_LIMIT: usize = 512;
/// How long an address stays learned without traffic (as Linux bridges).
const AGING_NS: u64 = 300_000_000_000;
const TABLE_CAPACITY: usize = 4096;

/// Packets for one consumer task.
#[derive(Default)]
pub struct Inbox {
    pub packets: RefCell<VecDeque<Packet>>,
    pub notify: Notify,
    pub dropped: Cell<u64>,
}

impl Inbox {
    pub fn new() -> Rc<Inbox> {
        Rc::new(Inbox::default())
    }

    /// Everything waiting, leaving the inbox empty (put back what is not taken with
    /// [`Inbox::put_back`]).
    pub fn take_all(&self) -> VecDeque<Packet> {
        core::mem::take(&mut *self.packets.borrow_mut())
    }

    /// Up to `n` packets from the head, in order.
    pub fn take(&self, n: usize) -> alloc::vec::IntoIter<Packet> {
        let mut q = self.packets.borrow_mut();
        let n = n.min(q.len());
        q.drain(..n).collect::<Vec<_>>().into_iter()
    }

    /// Return packets not consumed, ahead of any that arrived meanwhile.
    pub fn put_back(&self, mut rest: VecDeque<Packet>) {
        let mut q = self.packets.borrow_mut();
        rest.extend(q.drain(..));
        *q = rest;
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
}

pub type FabricRef = Rc<RefCell<Fabric>>;

impl Fabric {
    pub fn new() -> FabricRef {
        Rc::new(RefCell::new(Fabric {
            sw: Switch::new(AGING_NS, TABLE_CAPACITY),
            sinks: BTreeMap::new(),
            limits: Limits::default(),
        }))
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

    /// Remove a port: its learned addresses are forgotten and its inboxes dropped.
    pub fn detach(&mut self, id: PortId) {
        self.sw.remove_port(id);
        self.sinks.remove(&id);
    }

    /// Switch a packet that arrived on `from`.
    pub fn forward(&mut self, now: u64, from: PortId, p: Packet) {
        self.sw.age(now);
        match self.sw.forward(now, from, &p.data) {
            Decision::Drop(_) => {}
            Decision::Unicast(to) => self.deliver(to, p),
            Decision::Flood(to) => {
                if let Some((last, rest)) = to.split_last() {
                    for &t in rest {
                        self.deliver(t, p.clone());
                    }
                    self.deliver(*last, p);
                }
            }
        }
    }

    fn deliver(&mut self, to: PortId, p: Packet) {
        let Some(sink) = self.sinks.get(&to) else {
            return;
        };
        let inbox = match sink.inboxes.len() {
            0 => return,
            1 => &sink.inboxes[0],
            n => {
                let steered = sink
                    .steering
                    .as_ref()
                    .and_then(|s| s.borrow().queue_for(&p.data))
                    .filter(|&q| q < n);
                &sink.inboxes[steered.unwrap_or(flow_hash(&p.data) as usize % n)]
            }
        };
        let mut q = inbox.packets.borrow_mut();
        if q.len() >= INBOX_LIMIT {
            inbox.dropped.set(inbox.dropped.get() + 1);
            return;
        }
        let len = p.data.len();
        q.push_back(p);
        drop(q);
        inbox.notify.notify();
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
        let _ = writeln!(o, "switch: {} addresses learned", self.sw.learned());
    }
}
