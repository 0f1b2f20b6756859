//! netback's kernel side: xenstore reads and writes, mapping each queue's TX and RX rings,
//! binding its event channels, and the task that serves a queue between the guest and
//! the switch. Parsing, validation, offload work and ring service are
//! `bulkhead-netback`'s; here they meet real grants and the [`Fabric`].

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::future::Future;
use core::pin::Pin;

use bulkhead_executor::{first, yield_now, Handle};
use bulkhead_netback::ctrl::{self, Steering};
use bulkhead_netback::negotiate::{self, Frontend, Offer, Settings};
use bulkhead_netback::pace::{HeadFirst, Heads, Wakeups};
use bulkhead_netback::packet::Packet;
use bulkhead_netback::queue::{
    Body, Carrier, Direct, RxFeatures, Sent, VifQueue, RX_LAYOUT, TX_LAYOUT,
};
use bulkhead_switch::{Decision, PortId};
use bulkhead_xen::abi::{DomId, GrantRef, Port};
use bulkhead_xen::copy::{Forward, GuestMemory as _, Piece, Publish};
use bulkhead_xen::grants::Mapping;
use bulkhead_xen::Hypervisor;
use bulkhead_xenbus::DeviceId;
use bulkhead_xenstore::client::Tx;

use super::grants::GrantCopier;
use super::ring::{self, MappedRing};
use super::store::DirKeys;
use super::task::{Lifeline, Running, Woke};
use super::{Hv, XenRef};
use bulkhead_fabric::{FabricRef, Inbox};

/// Up to 4 queues per vif, as many as blkback: they share the one vCPU, but spare a
/// multi-vCPU guest its lock around one queue.
pub const OFFER: Offer = Offer { max_queues: 4 };

/// Packets taken from a TX ring before the queue looks at its RX side again.
const TX_BUDGET: usize = 64;

/// A vif queue as the other queues' tasks reach it: they lay a large send from their
/// guest straight into its receive buffers when it is idle (`VifQueue::rx_direct`).
/// Every task borrows a queue only within a pass, never across an await, so a failed
/// borrow can only be the sender's own queue (the packet then goes the usual way); a
/// queue leaves the registry before its rings are unmapped.
#[derive(Clone)]
pub struct Peer {
    queue: Rc<RefCell<VifQueue<MappedRing>>>,
    dom: DomId,
    /// Its RX event channel.
    port: Port,
    /// Its RX ring's grant: an index Xen writes after the data (`Publish`).
    rx_ring: GrantRef,
}

/// Served vif queues by switch port and queue index.
pub type Peers = RefCell<BTreeMap<(PortId, usize), Peer>>;

/// A served vif: its switch port and its queue tasks.
pub struct Connection {
    port: PortId,
    queues: Vec<Running>,
    ctrl: Option<Running>,
    /// The frontend's domain (its log budget).
    dom: DomId,
}

/// One queue's rings mapped and channels bound, not yet served.
struct Attached {
    tx: bulkhead_ring::BackRing<MappedRing>,
    rx: bulkhead_ring::BackRing<MappedRing>,
    maps: Vec<Mapping>,
    /// TX and RX event channels (the same port twice without split channels).
    ports: (Port, Port),
}

fn attach(xen: &XenRef, dom: DomId, q: &negotiate::QueueRings) -> Result<Attached, String> {
    let (tx, mut maps) = ring::map(xen, dom, &[q.tx_ref], TX_LAYOUT)?;
    let (rx, rx_maps) = match ring::map(xen, dom, &[q.rx_ref], RX_LAYOUT) {
        Ok(r) => r,
        Err(e) => {
            ring::unmap(xen, &maps);
            return Err(e);
        }
    };
    maps.extend(rx_maps);
    let tx_port = match ring::bind(xen, dom, q.tx_event) {
        Ok(p) => p,
        Err(e) => {
            ring::unmap(xen, &maps);
            return Err(e);
        }
    };
    let rx_port = if q.split() {
        match ring::bind(xen, dom, q.rx_event) {
            Ok(p) => p,
            Err(e) => {
                ring::unbind(xen, tx_port);
                ring::unmap(xen, &maps);
                return Err(e);
            }
        }
    } else {
        tx_port
    };
    Ok(Attached {
        tx,
        rx,
        maps,
        ports: (tx_port, rx_port),
    })
}

fn release(xen: &XenRef, ports: (Port, Port), maps: &[Mapping]) {
    ring::unbind(xen, ports.0);
    if ports.1 != ports.0 {
        ring::unbind(xen, ports.1);
    }
    ring::unmap(xen, maps);
}

fn mac_str(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// Read both sides, map every queue, join the switch and start serving. On error
/// nothing stays mapped or bound.
pub async fn connect(
    xen: &XenRef,
    h: &Handle,
    fabric: &FabricRef,
    id: &DeviceId,
    be: &str,
    fe: &str,
) -> Result<Connection, String> {
    let settings: Settings = negotiate::read_backend(&mut DirKeys { xen, dir: be }).await?;
    let front: Frontend = negotiate::read_frontend(&mut DirKeys { xen, dir: fe }, &OFFER).await?;
    let dom = id.frontend;
    let mut attached = Vec::new();
    for q in &front.queues {
        match attach(xen, dom, q) {
            Ok(a) => attached.push(a),
            Err(e) => {
                for a in &attached {
                    release(xen, a.ports, &a.maps);
                }
                return Err(e);
            }
        }
    }
    let name = format!("vif{}.{}", id.frontend, id.devid);
    let steering = Rc::new(RefCell::new(Steering::new(front.queues.len() as u32)));
    let ctrl = match front.ctrl {
        None => None,
        Some((gref, remote)) => match attach_ctrl(xen, dom, gref, remote) {
            Ok(c) => Some(c),
            Err(e) => {
                for a in &attached {
                    release(xen, a.ports, &a.maps);
                }
                return Err(format!("control ring: {e}"));
            }
        },
    };
    let inboxes: Vec<Rc<Inbox>> = attached.iter().map(|_| fabric.borrow().inbox()).collect();
    let port = fabric.borrow_mut().attach_guest(
        name.clone(),
        settings.mac,
        inboxes.clone(),
        Some(steering.clone()),
    );
    let ctrl = ctrl.map(|(ring, maps, port)| {
        let (running, life) = Running::new(port);
        h.spawn(
            "netback-ctrl",
            serve_ctrl(
                xen.clone(),
                format!("{name}/ctrl"),
                ring,
                maps,
                port,
                steering.clone(),
                GrantCopier { dom },
                life,
                h.clone(),
            ),
        );
        running
    });
    xen.guest_event(dom, "vif-connected", format_args!(
        "dev={id} vif={name} mac={} queues={} channels={} sg={} gso_v4={} gso_v6={} csum_v4={} csum_v6={} ctrl={} rate_bytes={} rate_period_us={} ip_enforced={}",
        mac_str(&settings.mac),
        front.queues.len(),
        if front.queues[0].split() { "split" } else { "shared" },
        u8::from(front.sg),
        u8::from(front.gso_tcpv4),
        u8::from(front.gso_tcpv6),
        u8::from(front.csum_v4),
        u8::from(front.csum_v6),
        u8::from(front.ctrl.is_some()),
        settings.rate.map_or(0, |r| r.bytes),
        settings.rate.map_or(0, |r| r.period_ns / 1000),
        u8::from(settings.ips.is_some()),
    ));
    let _ = xen
        .store
        .write(Tx::NONE, &format!("{be}/hotplug-status"), "connected")
        .await;
    let mut queues = Vec::new();
    for (i, ((a, inbox), rings)) in attached
        .into_iter()
        .zip(inboxes)
        .zip(&front.queues)
        .enumerate()
    {
        let qname = if front.queues.len() == 1 {
            name.clone()
        } else {
            format!("{name}/q{i}")
        };
        let mut q = VifQueue::new(
            qname,
            a.tx,
            a.rx,
            settings.mac,
            RxFeatures::from(&front),
            settings.rate,
        );
        q.limits = fabric.borrow().limits;
        q.ips = settings.ips;
        q.log = xen.guest_log(dom);
        let q = Rc::new(RefCell::new(q));
        xen.vifs.borrow_mut().insert(
            (port, i),
            Peer {
                queue: q.clone(),
                dom,
                port: a.ports.1,
                rx_ring: rings.rx_ref,
            },
        );
        let (running, life) = Running::new(a.ports.0);
        h.spawn(
            "netback-queue",
            serve(
                xen.clone(),
                h.clone(),
                fabric.clone(),
                port,
                (q, i),
                inbox,
                a.ports,
                a.maps,
                GrantCopier { dom },
                life,
            ),
        );
        queues.push(running);
    }
    Ok(Connection {
        port,
        queues,
        ctrl,
        dom,
    })
}

impl Connection {
    /// Stop serving, release the rings and leave the switch.
    pub async fn close(self, xen: &XenRef, fabric: &FabricRef) {
        let tasks: Vec<&Running> = self.queues.iter().chain(&self.ctrl).collect();
        super::task::stop_all(xen, &tasks).await;
        let mut ports = String::new();
        fabric.borrow().render(&mut ports);
        xen.guest_info(
            self.dom,
            format_args!(
                "switch after this vif: {}",
                ports.trim_end().replace('\n', "; ")
            ),
        );
        fabric.borrow_mut().detach(self.port);
    }
}

type CtrlRing = (bulkhead_ring::BackRing<MappedRing>, Vec<Mapping>, Port);

fn attach_ctrl(
    xen: &XenRef,
    dom: DomId,
    gref: bulkhead_xen::abi::GrantRef,
    remote: Port,
) -> Result<CtrlRing, String> {
    let (ring, maps) = ring::map(xen, dom, &[gref], ctrl::LAYOUT)?;
    match ring::bind(xen, dom, remote) {
        Ok(p) => Ok((ring, maps, p)),
        Err(e) => {
            ring::unmap(xen, &maps);
            Err(e)
        }
    }
}

/// Control requests served before the control ring's task lets the others run.
const CTRL_REQUESTS_PER_TURN: usize = 32;

/// The control ring's task: apply the frontend's steering requests as they come.
#[allow(clippy::too_many_arguments)]
async fn serve_ctrl(
    xen: XenRef,
    name: String,
    mut ring: bulkhead_ring::BackRing<MappedRing>,
    maps: Vec<Mapping>,
    port: Port,
    steering: Rc<RefCell<Steering>>,
    mut guest: GrantCopier,
    life: Lifeline,
    h: Handle,
) {
    let mut storm = bulkhead_xen::storm::Storm::new();
    while !life.stopping() {
        let seen = ring.indexes().req_cons;
        let r = ctrl::serve(
            &mut ring,
            &mut steering.borrow_mut(),
            &mut guest,
            CTRL_REQUESTS_PER_TURN,
        );
        match r.and_then(|notify| {
            if notify {
                let _ = Hv.evtchn_send(port);
            }
            ring.final_check()
        }) {
            Ok(true) => {
                // More arrived: serve it after the other tasks had their turn.
                yield_now().await;
                continue;
            }
            Ok(false) => {}
            Err(e) => {
                xen.guest_warn(
                    guest.dom,
                    format_args!("{name}: {e}; no longer serving the control ring"),
                );
                break;
            }
        }
        if life.stopping() {
            break;
        }
        let worked = ring.indexes().req_cons != seen;
        if life
            .next_wake(&xen, &h, port, &mut storm, Some(worked), None)
            .await
            == Woke::Stopping
        {
            break;
        }
    }
    let s = steering.borrow();
    xen.guest_info(
        guest.dom,
        format_args!(
            "{name}: closed (hash algorithm {}, flags {:#x}, {} key bytes, {} mapping entries)",
            s.algorithm,
            s.flags,
            s.key.len(),
            s.mapping.len()
        ),
    );
    release(&xen, (port, port), &maps);
    life.finished();
}

// The queue's `RefCell` borrow is dropped by hand before every await (other queues'
// tasks lay packets into it meanwhile); clippy cannot follow the `drop` through the
// loop's branches.
#[allow(clippy::too_many_arguments, clippy::await_holding_refcell_ref)]
async fn serve(
    xen: XenRef,
    h: Handle,
    fabric: FabricRef,
    port: PortId,
    (queue, index): (Rc<RefCell<VifQueue<MappedRing>>>, usize),
    inbox: Rc<Inbox>,
    ports: (Port, Port),
    maps: Vec<Mapping>,
    mut guest: GrantCopier,
    life: Lifeline,
) {
    let mut out = Vec::new();
    let mut fatal = None;
    let mut dumped = xen.dump.generation();
    // Whether wake-ups find work (the storm back-off), and whether large sends are taken
    // head first: bulkhead_netback::pace decides both.
    let mut wakeups = {
        let q = queue.borrow();
        Wakeups::new(q.stats.moved(), q.rings().1.indexes().req_prod)
    };
    let mut head_first = HeadFirst::default();
    while !life.stopping() {
        // Borrowed for this pass only: other queues' tasks lay packets into this one
        // between passes (`Peer`), so it is given back before every await.
        let mut q = queue.borrow_mut();
        if xen.dump.take_newer(&mut dumped) {
            super::dump::line(
                "xen::netback",
                format!(
                    "{}: state: {}; inbox {} packet(s) ({} dropped); {} empty wake-ups, {} storm backoffs; tx {}, rx {}",
                    q.name,
                    q.describe(),
                    inbox.len(),
                    inbox.dropped.get(),
                    wakeups.storm().spurious,
                    wakeups.storm().backoffs,
                    super::events::describe(&xen, ports.0),
                    super::events::describe(&xen, ports.1),
                ),
            );
        }
        // This pass reads both rings whole: notifications so far are answered by it.
        xen.waiters.clear(ports.0);
        xen.waiters.clear(ports.1);
        let now = crate::time::now_ns();
        // Guest → switch and switch → guest, their copies in one hypercall (each
        // costs a driver domain under nested TCG as much as copying 100 KiB); the
        // bodies of large sends taken head first in a second one (`switch_sent`).
        let taken = match q.tx_take(now, TX_BUDGET, head_first.wanted(now)) {
            Ok(t) => t,
            Err(e) => {
                fatal = Some(e.0);
                break;
            }
        };
        let mut pending = inbox.take_all();
        let placed = q.rx_place(&mut pending);
        let mut waiting = !pending.is_empty() || q.rx_waiting();
        inbox.put_back(pending);
        let placed = match placed {
            Ok(p) => p,
            Err(e) => {
                fatal = Some(e.0);
                break;
            }
        };
        let (read, written) = guest.read_new_and_write(&taken.jobs(), &placed.jobs());
        let mut pass = q.tx_finish(taken, read, &mut out);
        let mut tell = Vec::new();
        let (notify, heads, ahead) = switch_sent(
            &xen, &fabric, port, now, &mut q, &mut guest, &mut out, &mut tell,
        );
        pass.notify |= notify;
        head_first.record(now, heads);
        // The TX answers' notification waits for the RX answers so that both go in
        // one hypercall (with split channels they are two ports), with the receivers'
        // of packets laid straight into their buffers, and with the copies of those
        // answered ahead.
        let rx_notify = q.rx_finish(placed, written);
        let ports_told: Vec<Port> = [(pass.notify, ports.0), (rx_notify, ports.1)]
            .into_iter()
            .filter_map(|(tell, port)| tell.then_some(port))
            .chain(tell)
            .collect();
        ahead.finish(&fabric, &mut guest, &ports_told);
        match q.rx_watch(now, waiting) {
            Ok(Carrier::Unchanged) => {}
            Ok(Carrier::Off) => {
                let dropped = inbox.close();
                waiting = false;
                // Packets waited this long for receive buffers the frontend did not
                // post; the queued ones are dropped, and more until it posts buffers.
                xen.guest_event(
                    guest.dom,
                    "vif-carrier",
                    format_args!(
                        "queue={} carrier=off waited_s={} dropped={dropped}",
                        q.name,
                        q.limits.rx_stall_ns / 1_000_000_000
                    ),
                );
            }
            Ok(Carrier::On) => {
                inbox.open();
                xen.guest_event(
                    guest.dom,
                    "vif-carrier",
                    format_args!("queue={} carrier=on", q.name),
                );
            }
            Err(e) => {
                fatal = Some(e.0);
                break;
            }
        }
        if pass.more {
            // Let the other tasks run before the next batch.
            drop(q);
            yield_now().await;
            continue;
        }
        // Before sleeping: ask for events, then look once more (nothing may slip in
        // between the last look and the request for an event). RX only matters with
        // packets waiting for buffers.
        let recheck = match q.tx_final_check() {
            Ok(false) if waiting || !q.carrier() => q.rx_final_check(),
            r => r,
        };
        match recheck {
            Ok(true) => {
                drop(q);
                yield_now().await;
                continue;
            }
            Ok(false) => {}
            Err(e) => {
                fatal = Some(e.0);
                break;
            }
        }
        if life.stopping() {
            break;
        }
        // An event storm (notifications without packets): keep the ports masked a while;
        // packets for the guest wait in its inbox meanwhile.
        let delay = {
            let rx = q.rings().1;
            wakeups.before_wait(
                q.stats.moved(),
                rx.indexes().req_prod,
                rx.unconsumed().is_ok(),
            )
        };
        let (stall_at, carrier) = (q.rx_stall_at(), q.carrier());
        drop(q);
        if let Some(delay) = delay {
            super::events::mask(ports.0);
            super::events::mask(ports.1);
            // A state dump ends the wait early: a queue held here shows in it.
            first(alloc::vec![
                Box::pin(h.sleep(delay)) as Pin<Box<dyn Future<Output = ()> + '_>>,
                Box::pin(xen.dump.wait(dumped)),
            ])
            .await;
            let _ = super::events::unmask(ports.0);
            if ports.1 != ports.0 {
                let _ = super::events::unmask(ports.1);
            }
            wakeups.backed_off(queue.borrow().stats.moved());
            continue;
        }
        // The guest's ports first: `first` says which woke the task.
        let mut waits: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> =
            alloc::vec![Box::pin(xen.waiters.wait(ports.0))];
        if ports.1 != ports.0 {
            waits.push(Box::pin(xen.waiters.wait(ports.1)));
        }
        let guest_ports = waits.len();
        waits.push(Box::pin(inbox.notify.wait()));
        if let Some(at) = pass.retry_at {
            waits.push(Box::pin(h.sleep_until(at)));
        }
        if waiting && carrier {
            waits.push(Box::pin(h.sleep_until(stall_at)));
        }
        waits.push(Box::pin(xen.dump.wait(dumped)));
        let by_guest = first(waits).await < guest_ports;
        wakeups.woke(by_guest, queue.borrow().stats.moved());
    }
    // No other task may reach this queue once its rings are unmapped below.
    xen.vifs.borrow_mut().remove(&(port, index));
    let q = queue.borrow();
    if let Some(why) = &fatal {
        // As Linux's fatal error: this frontend broke the protocol; stop serving it,
        // leave every other vif alone.
        q.log.warn(format_args!(
            "{}: {why}; no longer serving this queue",
            q.name
        ));
    }
    // Nobody drains this inbox any more: it must not fill and hold its bytes.
    inbox.close();
    release(&xen, ports, &maps);
    let s = q.stats;
    xen.guest_event(guest.dom, "vif-closed", format_args!(
        "queue={} tx_packets={} tx_kib={} tx_gso={} tx_errors={} tx_spoofed={} rx_packets={} rx_kib={} rx_direct={} rx_dropped={} map_slots={} ports={}",
        q.name,
        s.tx_packets,
        s.tx_bytes / 1024,
        s.tx_gso,
        s.tx_errors,
        s.tx_spoofed,
        s.rx_packets,
        s.rx_bytes / 1024,
        s.rx_direct,
        s.rx_dropped + inbox.dropped.get(),
        xen.slots.borrow().in_use(),
        xen.ports.borrow().len(),
    ));
    life.finished();
}

/// Small packets laid straight into receivers' buffers and answered ahead of their copy
/// (`VifQueue::rx_direct_ahead`): their copies, then each receiver's RX index, then the
/// pass's notifications, in one multicall at the end of the pass. Under nested TCG each
/// hypercall of the driver domain is a VM exit of about 130 us, and a 64-byte datagram
/// from one guest to another took three (its copy in, its copy out, the notifications);
/// it takes two this way.
#[derive(Default)]
struct Ahead {
    packets: Vec<AheadPacket>,
    /// Each receiver's index to publish, and the receiver.
    publish: Vec<(Publish, Peer)>,
}

struct AheadPacket {
    packet: Packet,
    head_to: Piece,
    to: PortId,
    peer: Peer,
    len: usize,
}

impl Ahead {
    /// Make the copies, publish the receivers' answers and notify `ports` (one hypercall
    /// with copies, otherwise only the notifications).
    fn finish(self, fabric: &FabricRef, guest: &mut GrantCopier, ports: &[Port]) {
        if self.packets.is_empty() {
            super::hv::evtchn_send_all(ports.iter().copied());
            return;
        }
        let forwards: Vec<Forward> = self
            .packets
            .iter()
            .map(|a| Forward {
                to: a.peer.dom,
                head: &a.packet.data,
                head_to: a.head_to,
                body: &[],
                body_to: &[],
            })
            .collect();
        let publish: Vec<Publish> = self.publish.iter().map(|p| p.0).collect();
        let (done, published) = guest.forward_publish_notify(&forwards, &publish, ports);
        // An index Xen did not write (the receiver revoked its ring, or the call
        // failed): published the usual way, so its buffers do not wait for a next packet.
        for ((_, peer), ok) in self.publish.iter().zip(published) {
            if !ok && peer.queue.borrow_mut().rx_push() {
                let _ = Hv.evtchn_send(peer.port);
            }
        }
        for (i, a) in self.packets.into_iter().enumerate() {
            // (A result missing would be a bug of the copier's: taken as a failure.)
            if done.get(i).is_some_and(|r| r.is_ok()) {
                fabric.borrow_mut().delivered(a.to, a.len);
            } else {
                a.peer.queue.borrow_mut().rx_direct_unwritten(a.len);
            }
        }
    }
}

/// A large send laid straight into a receiver's buffers, its copy not yet made.
struct Straight {
    head: Packet,
    /// None: a small packet copied whole, laid from our buffer.
    body: Option<Body>,
    to: PortId,
    peer: Peer,
    direct: Direct,
}

/// Hand what the guest sent (`sent`, in order) to the switch. A large send whose head
/// alone was copied goes straight into the receiving queue's buffers when the switch
/// sends it to one vif queue that is idle: one copy between the two guests' grants,
/// instead of one into our memory and another out of it. Otherwise the rest of it is
/// copied into our memory (the head as checked is kept: the guest may have changed its
/// pages since) and it is switched as usual; from then on every later packet of the
/// pass waits for that copy too, so none overtakes another. Those copies are one
/// hypercall, the pass's second. The receivers' RX ports to notify go to `tell`.
/// When the pass laid only small packets from our memory straight into receivers and
/// has nothing else to copy, there is no second hypercall here: they are answered
/// ahead and copied with the pass's notifications ([`Ahead`]).
/// Returns whether the sender's TX answers need a notification, what became of the
/// large sends, and the packets answered ahead.
#[allow(clippy::too_many_arguments)]
fn switch_sent(
    xen: &XenRef,
    fabric: &FabricRef,
    from: PortId,
    now: u64,
    q: &mut VifQueue<MappedRing>,
    guest: &mut GrantCopier,
    sent: &mut Vec<Sent>,
    tell: &mut Vec<Port>,
) -> (bool, Heads, Ahead) {
    let mut straight: Vec<Straight> = Vec::new();
    let mut heads = Heads::None;
    // Packets that wait for the copy, with the switch's decision when it was made.
    let mut later: Vec<(Option<Decision>, Packet, Option<Body>)> = Vec::new();
    for s in sent.drain(..) {
        match s {
            Sent::Whole(p) if later.is_empty() => {
                let len = p.data.len();
                let d = fabric.borrow_mut().route(now, from, &p.data, len);
                if let Decision::Unicast(to) = d {
                    if let Some((peer, direct)) = place_small(xen, fabric, to, &p) {
                        straight.push(Straight {
                            head: p,
                            body: None,
                            to,
                            peer,
                            direct,
                        });
                        continue;
                    }
                }
                fabric.borrow_mut().deliver_routed(from, d, p);
            }
            Sent::Whole(p) => later.push((None, p, None)),
            Sent::Head(p, body) if !later.is_empty() => {
                heads = Heads::Missed;
                later.push((None, p, Some(body)))
            }
            Sent::Head(head, body) => {
                let d = fabric.borrow_mut().route(now, from, &head.data, body.len);
                if let Decision::Drop(_) = d {
                    // Nowhere to go (the switch counted it): nothing to copy.
                    q.tx_body_done(body, true);
                    continue;
                }
                if let Decision::Unicast(to) = d {
                    if let Some((peer, direct)) = place_direct(xen, fabric, to, &head, &body) {
                        straight.push(Straight {
                            head,
                            body: Some(body),
                            to,
                            peer,
                            direct,
                        });
                        heads = Heads::Straight;
                        continue;
                    }
                }
                if !matches!(heads, Heads::Straight) {
                    heads = Heads::Missed;
                }
                later.push((Some(d), head, Some(body)));
            }
        }
    }
    let nothing_to_read = later.iter().all(|l| l.2.is_none());
    let mut ahead = Ahead::default();
    if nothing_to_read && straight.iter().all(|s| s.body.is_none()) {
        // Their answers only: the copies wait for the pass's notification hypercall.
        for s in straight.drain(..) {
            let head_to = s.direct.head_to;
            let len = s.peer.queue.borrow_mut().rx_direct_ahead(s.direct);
            ahead.packets.push(AheadPacket {
                packet: s.head,
                head_to,
                to: s.to,
                peer: s.peer,
                len,
            });
        }
        let mut peers: Vec<&Peer> = Vec::new();
        for a in &ahead.packets {
            if !peers.iter().any(|p| Rc::ptr_eq(&p.queue, &a.peer.queue)) {
                peers.push(&a.peer);
            }
        }
        for p in peers {
            if let Some(value) = p.queue.borrow_mut().rx_publish_later() {
                ahead.publish.push((
                    Publish {
                        to: p.dom,
                        ring: p.rx_ring,
                        offset: bulkhead_ring::RSP_PROD as u16,
                        value,
                    },
                    p.clone(),
                ));
                // Told whatever it asked: its event index cannot be checked against an
                // index not yet written.
                tell.push(p.port);
            }
        }
    }
    let (settled, forwarded) = if straight.is_empty() && nothing_to_read {
        (Vec::new(), Vec::new())
    } else {
        let reads: Vec<&[Piece]> = later
            .iter()
            .filter_map(|(_, _, b)| b.as_ref().map(|b| b.pieces.as_slice()))
            .collect();
        let forwards: Vec<Forward> = straight
            .iter()
            .map(|s| Forward {
                to: s.peer.dom,
                head: &s.head.data,
                head_to: s.direct.head_to,
                body: s.body.as_ref().map_or(&[][..], |b| &b.pieces),
                body_to: &s.direct.body_to,
            })
            .collect();
        guest.read_new_and_forward(&reads, &forwards)
    };
    // (A result missing would be a bug of the copier's: taken as a failure, so every
    // slot on both sides is still answered once.)
    let failed = || {
        Err(bulkhead_xen::copy::GrantFault {
            gref: 0,
            status: bulkhead_xen::abi::GNTST_GENERAL_ERROR,
        })
    };
    for (s, r) in straight
        .into_iter()
        .zip(forwarded.into_iter().chain(core::iter::repeat_with(failed)))
    {
        let ok = r.is_ok();
        let len = s.body.as_ref().map_or(s.head.data.len(), |b| b.len);
        // The sender's slots are answered as sent either way: a failed copy cannot say
        // whose grant failed, and a receiver must not be able to make another guest's
        // sends fail (or fill its log). The receiver's buffers carry the error; a
        // sender that revoked what it sent loses only that packet.
        if let Some(body) = s.body {
            q.tx_body_done(body, true);
        }
        // Borrowed by `place_direct` in this same pass, with no await since: free.
        let mut to = s.peer.queue.borrow_mut();
        to.rx_direct_done(s.direct, ok);
        if to.rx_push() {
            tell.push(s.peer.port);
        }
        if ok {
            fabric.borrow_mut().delivered(s.to, len);
        }
    }
    let mut settled = settled.into_iter();
    for (d, p, body) in later {
        let p = match body {
            None => p,
            Some(body) => {
                let whole = settled
                    .next()
                    .and_then(|r| r.ok())
                    .and_then(|rest| body.complete(p, &rest));
                q.tx_body_done(body, whole.is_some());
                match whole {
                    Some(p) => p,
                    None => continue,
                }
            }
        };
        let mut f = fabric.borrow_mut();
        match d {
            Some(d) => f.deliver_routed(from, d, p),
            None => f.forward(now, from, p),
        }
    }
    (q.tx_push(), heads, ahead)
}

/// Lay a small packet copied whole into the buffers of port `to`'s queue for it, if
/// that queue is a vif's that can take it now and has nothing queued ahead of it: the
/// receiver then needs no pass of its own and no hypercall of its own for it. This
/// costs the sender's pass no hypercall either: its copy goes with the pass's
/// notifications ([`Ahead`]), or, when the pass copies large sends' bodies, with those.
/// (Before the copies went with the notifications, only receivers that had sent
/// nothing for 10 ms took packets this way: a TCP sender's ACKs rode its own pass's
/// copy for free, and laying them here cost the ACKing pass a second copy hypercall.)
fn place_small(xen: &XenRef, fabric: &FabricRef, to: PortId, p: &Packet) -> Option<(Peer, Direct)> {
    let (index, inbox) = fabric.borrow().queue_of(to, &p.data, p.data.len())?;
    if !inbox.is_empty() || inbox.is_closed() {
        return None;
    }
    let peer = xen.vifs.borrow().get(&(to, index))?.clone();
    let direct = peer.queue.try_borrow_mut().ok()?.rx_direct_whole(p)?;
    Some((peer, direct))
}

/// Lay `head` + `body` into the buffers of port `to`'s queue for it, if that queue is
/// a vif's that can take it now with nothing queued ahead of it in its inbox.
fn place_direct(
    xen: &XenRef,
    fabric: &FabricRef,
    to: PortId,
    head: &Packet,
    body: &Body,
) -> Option<(Peer, Direct)> {
    let (index, inbox) = fabric.borrow().queue_of(to, &head.data, body.len)?;
    if !inbox.is_empty() || inbox.is_closed() {
        return None;
    }
    let peer = xen.vifs.borrow().get(&(to, index))?.clone();
    let direct = peer.queue.try_borrow_mut().ok()?.rx_direct(head, body)?;
    Some((peer, direct))
}
