//! One vif queue served end to end: its TX ring (guest → us: parse, copy, answer every
//! slot) and its RX ring (us → guest: fill posted buffers, answer). The kernel moves
//! packets between queues and the switch; everything a frontend controls is checked here.

use alloc::collections::{BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;

use bulkhead_ring::{BackRing, RingError, RingMemory};
use bulkhead_xen::budget::{self, LogBudget};
use bulkhead_xen::copy::{GuestMemory, Piece};

use crate::abi::*;
use crate::limits::Limits;
use crate::negotiate::Frontend;
use crate::packet::{self, Packet};
use crate::rate::Rate;
use crate::rx::{self, RxRequest};
use crate::tx::{self, TxError, TxSlot};

/// Ring entry sizes of the two netif rings.
pub const TX_LAYOUT: bulkhead_ring::Layout = bulkhead_ring::Layout {
    request: TX_REQUEST_SIZE,
    response: TX_RESPONSE_SIZE,
};
pub const RX_LAYOUT: bulkhead_ring::Layout = bulkhead_ring::Layout {
    request: RX_REQUEST_SIZE,
    response: RX_RESPONSE_SIZE,
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// From the guest.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Of those, large sends for segmentation (GSO).
    pub tx_gso: u64,
    /// Malformed, unreadable (bad grant) or refused packets from the guest.
    pub tx_errors: u64,
    /// Packets whose source MAC was not the vif's.
    pub tx_spoofed: u64,
    /// To the guest.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Packets for the guest that could not be delivered (no room, bad grant, too big).
    pub rx_dropped: u64,
    /// Of `rx_packets`, those copied straight from another guest's pages
    /// ([`VifQueue::rx_direct`]).
    pub rx_direct: u64,
    pub notifies: u64,
}

/// What a frontend can take on receive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxFeatures {
    pub sg: bool,
    pub gso_tcpv4: bool,
    pub gso_tcpv6: bool,
    pub csum_v4: bool,
    pub csum_v6: bool,
    /// Deliver multicast only to addresses the frontend registered.
    pub multicast_filter: bool,
}

impl From<&Frontend> for RxFeatures {
    fn from(f: &Frontend) -> Self {
        RxFeatures {
            sg: f.sg,
            gso_tcpv4: f.gso_tcpv4,
            gso_tcpv6: f.gso_tcpv6,
            csum_v4: f.csum_v4,
            csum_v6: f.csum_v6,
            multicast_filter: f.multicast_control,
        }
    }
}

/// The frontend broke the protocol: stop serving this vif (Linux's fatal error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fatal(pub String);

impl From<RingError> for Fatal {
    fn from(e: RingError) -> Self {
        Fatal(alloc::format!("{e}"))
    }
}

/// Bytes copied out of a guest's TX ring per pass, besides the packet budget: the copies
/// live until the switch has queued them, so this bounds what one pass holds (64 large
/// sends would be 4 MiB of a 16 MiB heap).
pub const TX_BATCH_BYTES: usize = 256 * 1024;

/// The outcome of a pass over the TX ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxPass {
    /// Tell the frontend (its `rsp_event` asked).
    pub notify: bool,
    /// The budget ran out with requests left: call again.
    pub more: bool,
    /// The rate limit holds a packet back until this time.
    pub retry_at: Option<u64>,
}

/// Bytes of a large send copied out of the sender before the switch decides where it
/// goes, when the rest may be copied straight into the receiver ([`Sent::Head`]): every
/// header the switch, `ip=`, the MAC check, the GSO checks, steering and flow hashing
/// read (Ethernet with a VLAN tag 18, IPv4 60 or IPv6 40, TCP 60: 138 at most).
pub const HEAD_BYTES: usize = 256;

/// Most data slots a packet placed straight from a sender's pages may take in the
/// receiver's ring: as many as a 64 KiB packet laid from offset 0 takes (Linux's
/// netback never uses more, and netfront refuses more than `XEN_NETIF_NR_SLOTS_MIN`,
/// 18).
pub const MAX_DIRECT_SLOTS: usize = 17;

/// Packets taken from the TX ring, their bytes not yet copied ([`VifQueue::tx_take`]).
pub struct TxTaken {
    batch: Vec<tx::TxPacket>,
    pieces: Vec<Vec<Piece>>,
    /// Per packet, when only its head is copied now: the pieces after the head.
    bodies: Vec<Option<Vec<Piece>>>,
    pass: TxPass,
}

impl TxTaken {
    /// What to copy out of the guest, one job per packet.
    pub fn jobs(&self) -> Vec<&[Piece]> {
        self.pieces.iter().map(|p| p.as_slice()).collect()
    }
}

/// What [`VifQueue::tx_finish`] hands on: a packet copied whole, or a large send of
/// which only the head is copied and whose slots are not answered yet.
pub enum Sent {
    Whole(Packet),
    Head(Packet, Body),
}

/// The part of a large send still in the sender's pages, and its slots, answered by
/// [`VifQueue::tx_body_done`] once the body is copied (into a receiver's buffers or
/// ours) or could not be: the sender may reuse the pages only then.
#[derive(Debug)]
pub struct Body {
    /// The sender's pieces after the head, each within one of its pages.
    pub pieces: Vec<Piece>,
    /// The packet's length.
    pub len: usize,
    ids: Vec<u16>,
    extras: usize,
}

impl Body {
    /// The whole packet from its head as checked and the rest (`pieces`) copied since:
    /// the head is not read again, so a guest changing its pages meanwhile cannot
    /// change what was checked. None if the rest is not as long as the slots said.
    pub fn complete(&self, mut head: Packet, rest: &[u8]) -> Option<Packet> {
        if head.data.len() + rest.len() != self.len {
            return None;
        }
        head.data.extend_from_slice(rest);
        Some(head)
    }
}

/// A large send laid straight into this queue's receive buffers
/// ([`VifQueue::rx_direct`]): the head goes from our buffer into `head_to`, the body
/// piece by piece from the sender's pages into `body_to` (as long, each within one of
/// the receiver's pages).
#[derive(Debug)]
pub struct Direct {
    pub head_to: Piece,
    pub body_to: Vec<Piece>,
    responses: Vec<[u8; RX_RESPONSE_SIZE]>,
    /// Where the GSO extra slot is among the responses (it is never an error).
    extra_at: Option<usize>,
    len: usize,
}

/// Packets laid into receive buffers, their bytes not yet copied ([`VifQueue::rx_place`]).
pub struct RxPlaced {
    placed: Vec<(rx::Placement, Vec<u8>)>,
}

impl RxPlaced {
    /// What to copy into the guest, one job per packet.
    pub fn jobs(&self) -> Vec<(&[Piece], &[u8])> {
        self.placed
            .iter()
            .map(|(pl, d)| (pl.pieces.as_slice(), d.as_slice()))
            .collect()
    }
}

/// A packet in the form one frontend takes, made frame by frame.
struct Shaped {
    frames: packet::Frames,
    flags: u16,
    gso: Option<tx::Gso>,
}

/// Log lines a queue writes on its own before errors are only counted; the kernel
/// replaces this with the domain's budget, shared by all its queues and reconnects.
const LOGGED_ERRORS: u32 = 16;

pub struct VifQueue<M: RingMemory> {
    pub name: String,
    tx: BackRing<M>,
    rx: BackRing<M>,
    pub mac: [u8; 6],
    pub features: RxFeatures,
    rate: Option<Rate>,
    /// A packet's first slot taken from the ring but held back by the rate limit.
    stalled: Option<TxSlot>,
    /// Multicast addresses the frontend registered (multicast control).
    pub multicast: BTreeSet<[u8; 6]>,
    /// Receive buffers the packet at the head of the queue waits for (0: none waits).
    rx_need: u32,
    /// The packet being delivered, in the form this frontend takes: a large send is
    /// cut into segments as buffers come (when the frontend does not take GSO), never
    /// all at once.
    rx_shaped: Option<Shaped>,
    /// The next frame for the frontend, waiting for buffers.
    rx_front: Option<(Vec<u8>, u16, Option<tx::Gso>)>,
    pub limits: Limits,
    /// The IPv4 source addresses the guest may use (xl's `ip=`); None: any.
    pub ips: Option<crate::negotiate::Ips>,
    /// Warning lines this queue may write.
    pub log: LogBudget,
    /// Off after the frontend left packets waiting for buffers longer than
    /// `limits.rx_stall_ns` (Linux's carrier off): nothing is queued for it until it
    /// posts buffers again.
    carrier: bool,
    /// When the receive side last made progress or began to wait.
    rx_progress_at: u64,
    /// Packets waited at the last look (a wait begins when this turns true).
    rx_was_waiting: bool,
    /// `stats.rx_packets` at that time.
    rx_progress_count: u64,
    pub stats: Stats,
}

/// What [`VifQueue::rx_watch`] decided about the carrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carrier {
    Unchanged,
    /// Packets waited too long: drop what is queued for this queue and what comes.
    Off,
    /// The frontend posted buffers again: queue packets for it again.
    On,
}

impl<M: RingMemory> VifQueue<M> {
    pub fn new(
        name: String,
        tx: BackRing<M>,
        rx: BackRing<M>,
        mac: [u8; 6],
        features: RxFeatures,
        rate: Option<Rate>,
    ) -> Self {
        VifQueue {
            name,
            tx,
            rx,
            mac,
            features,
            rate,
            stalled: None,
            multicast: BTreeSet::new(),
            rx_need: 0,
            rx_shaped: None,
            rx_front: None,
            limits: Limits::default(),
            ips: None,
            log: budget::fixed(LOGGED_ERRORS),
            carrier: true,
            rx_progress_at: 0,
            rx_was_waiting: false,
            rx_progress_count: 0,
            stats: Stats::default(),
        }
    }

    pub fn rings(&self) -> (&BackRing<M>, &BackRing<M>) {
        (&self.tx, &self.rx)
    }

    pub fn rings_mut(&mut self) -> (&mut BackRing<M>, &mut BackRing<M>) {
        (&mut self.tx, &mut self.rx)
    }

    pub fn into_rings(self) -> (BackRing<M>, BackRing<M>) {
        (self.tx, self.rx)
    }

    fn error(&mut self, why: core::fmt::Arguments) {
        self.stats.tx_errors += 1;
        self.warn(why);
    }

    fn warn(&self, what: core::fmt::Arguments) {
        self.log.warn(format_args!("{}: {what}", self.name));
    }

    fn answer(&mut self, ids: &[u16], extras: usize, status: i16) {
        for (i, &id) in ids.iter().enumerate() {
            let st = if (1..=extras).contains(&i) {
                RSP_NULL
            } else {
                status
            };
            let mut r = [0u8; TX_RESPONSE_SIZE];
            r[..2].copy_from_slice(&id.to_le_bytes());
            r[2..].copy_from_slice(&st.to_le_bytes());
            self.tx.respond(&r);
        }
    }

    /// Take up to `budget` packets the guest transmitted: copy each out of its pages
    /// into `out` and answer its slots. The batch is copied at once (one hypercall).
    pub fn transmit(
        &mut self,
        guest: &mut dyn GuestMemory,
        now: u64,
        budget: usize,
        out: &mut Vec<Packet>,
    ) -> Result<TxPass, Fatal> {
        let taken = self.tx_take(now, budget, false)?;
        let copied = guest.read_new(&taken.jobs());
        let mut sent = Vec::new();
        let pass = self.tx_finish(taken, copied, &mut sent);
        out.extend(sent.into_iter().filter_map(|s| match s {
            Sent::Whole(p) => Some(p),
            Sent::Head(..) => None,
        }));
        Ok(pass)
    }

    /// [`Self::transmit`]'s first half: take the packets from the ring and parse them
    /// (malformed ones are answered with an error here); their bytes are still in the
    /// guest's pages, to be copied by the caller (`TxTaken::jobs`), possibly together
    /// with the same pass's receive copies ([`Self::rx_place`]), then handed to
    /// [`Self::tx_finish`]. With `heads`, a large send (GSO) longer than [`HEAD_BYTES`]
    /// is copied only as far as its head (its body may go straight to a receiver).
    pub fn tx_take(&mut self, now: u64, budget: usize, heads: bool) -> Result<TxTaken, Fatal> {
        let mut pass = TxPass::default();
        let mut done = 0;
        let mut batch: Vec<tx::TxPacket> = Vec::new();
        let mut batch_bytes = 0usize;
        loop {
            if done == budget || batch_bytes >= TX_BATCH_BYTES {
                pass.more = self.stalled.is_some() || self.tx.unconsumed()? > 0;
                break;
            }
            let first = match self.stalled.take() {
                Some(s) => s,
                None => match self.tx.take()? {
                    Some(raw) => TxSlot::decode(raw[..TX_REQUEST_SIZE].try_into().unwrap()),
                    None => break,
                },
            };
            if let Some(rate) = &mut self.rate {
                if let Err(at) = rate.admit(now, first.size as usize) {
                    self.stalled = Some(first);
                    pass.retry_at = Some(at);
                    break;
                }
            }
            done += 1;
            let mut broken = None;
            let tx_ring = &mut self.tx;
            let parsed = tx::parse(first, || match tx_ring.take() {
                Ok(Some(raw)) => Some(raw[..TX_REQUEST_SIZE].try_into().unwrap()),
                Ok(None) => None,
                Err(e) => {
                    broken = Some(e);
                    None
                }
            });
            if let Some(e) = broken {
                return Err(e.into());
            }
            match parsed {
                Ok(p) if p.gso.is_some_and(|g| g.size < self.limits.gso_min_size) => {
                    let (size, min) = (p.gso.map_or(0, |g| g.size), self.limits.gso_min_size);
                    self.error(format_args!(
                        "dropped a large send: segment size {size} below the minimum {min}"
                    ));
                    self.answer(&p.ids, p.extras, RSP_ERROR);
                }
                Ok(p) if p.gso.is_none() && p.len > self.limits.max_frame => {
                    let (len, max) = (p.len, self.limits.max_frame);
                    self.error(format_args!(
                        "dropped a {len}-byte frame without GSO: larger than {max} bytes"
                    ));
                    self.answer(&p.ids, p.extras, RSP_ERROR);
                }
                Ok(p) => {
                    batch_bytes += p.len;
                    batch.push(p)
                }
                Err(TxError::Fatal(why)) => return Err(Fatal(why.into())),
                Err(TxError::Drop { ids, extras, why }) => {
                    self.error(format_args!("dropped a transmitted packet: {why}"));
                    self.answer(&ids, extras, RSP_ERROR);
                }
            }
        }
        let mut pieces: Vec<Vec<Piece>> = Vec::with_capacity(batch.len());
        let mut bodies = Vec::with_capacity(batch.len());
        for p in &batch {
            let all: Vec<Piece> = p
                .fragments
                .iter()
                .map(|f| Piece {
                    gref: f.gref,
                    offset: f.offset,
                    len: f.len,
                })
                .collect();
            if heads && p.gso.is_some() && p.len > HEAD_BYTES {
                let (head, rest) = split_pieces(&all, HEAD_BYTES);
                pieces.push(head);
                bodies.push(Some(rest));
            } else {
                pieces.push(all);
                bodies.push(None);
            }
        }
        Ok(TxTaken {
            batch,
            pieces,
            bodies,
            pass,
        })
    }

    /// [`Self::transmit`]'s second half: with the bytes of what [`Self::tx_take`] took
    /// (`copied`, one result per job), check each packet, answer its slots and put the
    /// accepted ones in `out`. A packet of which only the head was copied goes out as
    /// [`Sent::Head`], its slots answered later ([`Self::tx_body_done`]).
    pub fn tx_finish(
        &mut self,
        taken: TxTaken,
        copied: Vec<Result<Vec<u8>, bulkhead_xen::copy::GrantFault>>,
        out: &mut Vec<Sent>,
    ) -> TxPass {
        let TxTaken {
            batch,
            mut pass,
            bodies,
            ..
        } = taken;
        for ((p, r), body) in batch.into_iter().zip(copied).zip(bodies) {
            let data = match r {
                Ok(d) => d,
                Err(e) => {
                    self.error(format_args!(
                        "cannot copy a transmitted packet: grant {} status {}",
                        e.gref, e.status
                    ));
                    self.answer(&p.ids, p.extras, RSP_ERROR);
                    continue;
                }
            };
            if let Some(g) = p.gso {
                // Check a large send here, once: what it is cut into later must not be
                // able to fail or to cost more than the limit.
                let refused = match packet::gso_segments_in(&data, p.len, g) {
                    Err(e) => Some(alloc::format!("{e}")),
                    Ok(n) if n > self.limits.gso_max_segs as usize => Some(alloc::format!(
                        "{n} segments, more than the limit {}",
                        self.limits.gso_max_segs
                    )),
                    Ok(_) => None,
                };
                if let Some(why) = refused {
                    self.error(format_args!("dropped a large send: {why}"));
                    self.answer(&p.ids, p.extras, RSP_ERROR);
                    continue;
                }
                // rate= holds for what leaves: the headers every segment repeats count.
                if let (Some(rate), Ok(extra)) =
                    (&mut self.rate, packet::gso_extra_bytes_in(&data, p.len, g))
                {
                    rate.charge(extra as u64);
                }
            }
            for m in &p.mcast_add {
                if self.multicast.len() < 64 {
                    self.multicast.insert(*m);
                }
            }
            for m in &p.mcast_del {
                self.multicast.remove(m);
            }
            let spoofed = data[6..12] != self.mac;
            let outside_ips = !spoofed && self.ips.is_some_and(|ips| !ips.allows(&data));
            if let Some(rest) = body.filter(|_| !spoofed && !outside_ips) {
                // The slots stay unanswered until the body is copied.
                out.push(Sent::Head(
                    Packet {
                        data,
                        csum_blank: p.csum_blank,
                        data_validated: p.data_validated || p.csum_blank,
                        gso: p.gso,
                    },
                    Body {
                        pieces: rest,
                        len: p.len,
                        ids: p.ids,
                        extras: p.extras,
                    },
                ));
                continue;
            }
            self.answer(&p.ids, p.extras, RSP_OKAY);
            if spoofed {
                self.stats.tx_spoofed += 1;
                self.warn(format_args!(
                    "dropped a packet from source MAC {:02x?}, not the vif's",
                    &data[6..12]
                ));
                continue;
            }
            if outside_ips {
                self.stats.tx_spoofed += 1;
                self.warn(format_args!(
                    "dropped an ARP or IPv4 packet from an address not in the vif's ip="
                ));
                continue;
            }
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += p.len as u64;
            self.stats.tx_gso += p.gso.is_some() as u64;
            out.push(Sent::Whole(Packet {
                data,
                csum_blank: p.csum_blank,
                data_validated: p.data_validated || p.csum_blank,
                gso: p.gso,
            }));
        }
        pass.notify = self.tx_push();
        pass
    }

    /// Answer the slots of a large send whose body was copied (`ok`) or could not be
    /// (an unreadable grant of the sender's, or one of the receiver's). Call
    /// [`Self::tx_push`] after the pass's last.
    pub fn tx_body_done(&mut self, body: Body, ok: bool) {
        if ok {
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += body.len as u64;
            self.stats.tx_gso += 1;
            self.answer(&body.ids, body.extras, RSP_OKAY);
        } else {
            self.error(format_args!(
                "cannot copy a transmitted packet of {} bytes: a grant could not be copied",
                body.len
            ));
            self.answer(&body.ids, body.extras, RSP_ERROR);
        }
    }

    /// Publish the TX answers given so far; true when the frontend must be told.
    pub fn tx_push(&mut self) -> bool {
        let notify = self.tx.push();
        if notify {
            self.stats.notifies += 1;
        }
        notify
    }

    /// Before sleeping on the TX event: true if requests arrived meanwhile.
    pub fn tx_final_check(&mut self) -> Result<bool, Fatal> {
        if self.stalled.is_some() {
            return Ok(false);
        }
        Ok(self.tx.final_check()?)
    }

    /// The forms a packet reaches this frontend in: as it is when the frontend takes
    /// its offloads, completed here otherwise (segments made one at a time), with the
    /// first-slot flags and GSO of each.
    fn shape(&self, p: Packet) -> Result<Shaped, packet::PacketError> {
        if let Some(flags) = self.as_is(&p, p.data.len()) {
            let gso = p.gso;
            return Ok(Shaped {
                frames: packet::Frames::One(Some(p.data)),
                flags,
                gso,
            });
        }
        let validated = if p.data_validated {
            NETRXF_DATA_VALIDATED
        } else {
            0
        };
        Ok(Shaped {
            frames: packet::finish(p)?,
            flags: validated,
            gso: None,
        })
    }

    /// The first slot's flags when this frontend takes packet `p` (`len` bytes long,
    /// `p.data` its start) as it is: its features cover the packet's GSO and checksum
    /// state. None when it must be completed here first.
    fn as_is(&self, p: &Packet, len: usize) -> Option<u16> {
        let f = self.features;
        let v6 = packet::layers_in(&p.data, len).map(|l| l.v6);
        let csum_ok = match v6 {
            Ok(false) => f.csum_v4,
            Ok(true) => f.csum_v6,
            Err(_) => false,
        };
        let gso_ok = match p.gso {
            Some(g) if g.kind == GSO_TYPE_TCPV4 => f.gso_tcpv4 && csum_ok,
            Some(g) if g.kind == GSO_TYPE_TCPV6 => f.gso_tcpv6 && csum_ok,
            _ => false,
        };
        let validated = if p.data_validated {
            NETRXF_DATA_VALIDATED
        } else {
            0
        };
        if (p.gso.is_none() || gso_ok) && (!p.csum_blank || csum_ok) {
            return Some(if p.csum_blank {
                NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED
            } else {
                validated
            });
        }
        None
    }

    /// Lay a large send whose body is still in the sender's pages ([`Sent::Head`])
    /// straight into the buffers this frontend posted, if it can take it now and as it
    /// is: the carrier on, nothing waiting here, the packet's offloads among its
    /// features, buffers for every slot posted. Each of the sender's pieces (within one
    /// of its pages) lands whole in one of the receiver's pages, so the copy is one
    /// operation per piece: the head, then as many pieces as fit back to back in each
    /// buffer from offset 0. None: the caller copies the body into a buffer of ours and
    /// queues the packet as usual. The caller must not let another packet for this
    /// queue through its inbox first: that one would be overtaken.
    pub fn rx_direct(&mut self, head: &Packet, body: &Body) -> Option<Direct> {
        self.lay_direct(head, &body.pieces, body.len)
    }

    /// [`Self::rx_direct`] of a packet copied whole (at most a page: one slot), laid
    /// from our buffer.
    pub fn rx_direct_whole(&mut self, p: &Packet) -> Option<Direct> {
        self.lay_direct(p, &[], p.data.len())
    }

    fn lay_direct(&mut self, head: &Packet, pieces: &[Piece], len: usize) -> Option<Direct> {
        if !self.carrier
            || self.rx_waiting()
            || (!self.features.sg && !pieces.is_empty())
            || !self.wanted(&head.data)
        {
            return None;
        }
        let first_flags = self.as_is(head, len)?;
        if head.data.is_empty()
            || head.data.len() > PAGE_SIZE
            || head.data.len() + bulkhead_xen::copy::total(pieces) != len
            || len > MAX_TX_SIZE + ETH_HLEN
            || pieces
                .iter()
                .any(|p| p.len == 0 || p.len as usize > PAGE_SIZE)
        {
            return None;
        }
        // Slot of each piece and where in it; slot lengths.
        let mut lens: Vec<usize> = alloc::vec![head.data.len()];
        let mut at = Vec::with_capacity(pieces.len());
        for p in pieces {
            let last = lens.len() - 1;
            if lens[last] + p.len as usize <= PAGE_SIZE {
                at.push((last, lens[last]));
                lens[last] += p.len as usize;
            } else {
                at.push((lens.len(), 0));
                lens.push(p.len as usize);
            }
        }
        let gso = head.gso;
        let need = lens.len() + gso.is_some() as usize;
        if lens.len() > MAX_DIRECT_SLOTS
            || need > self.rx.entries() as usize
            || (self.rx.unconsumed().ok()? as usize) < need
        {
            return None;
        }
        let mut reqs = Vec::with_capacity(need);
        for _ in 0..need {
            match self.rx.take() {
                Ok(Some(raw)) => reqs.push(RxRequest::decode(&raw)),
                // The producer moved back since it was counted: the frontend broke the
                // ring; its own task finds out on its next look. What was taken is
                // answered (as errors) so the ring stays whole.
                _ => {
                    for r in &reqs {
                        let e = rx::RxResponse {
                            id: r.id,
                            offset: 0,
                            flags: 0,
                            status: RSP_ERROR,
                        };
                        self.rx.respond(&e.encode());
                    }
                    return None;
                }
            }
        }
        let data_reqs: Vec<RxRequest> = rx::data_requests(&reqs, gso.is_some()).copied().collect();
        let responses = rx::responses(data_reqs.iter().zip(lens.iter().copied()), first_flags, gso);
        let body_to = pieces
            .iter()
            .zip(at)
            .map(|(p, (slot, offset))| Piece {
                gref: data_reqs[slot].gref,
                offset: offset as u16,
                len: p.len,
            })
            .collect();
        Some(Direct {
            head_to: Piece {
                gref: data_reqs[0].gref,
                offset: 0,
                len: head.data.len() as u16,
            },
            body_to,
            responses,
            // The extra-info response follows the first data slot's.
            extra_at: gso.map(|_| 1),
            len,
        })
    }

    /// Answer the buffers of what [`Self::rx_direct`] laid, `ok` when its copy
    /// succeeded (else the frontend gets the slots as errors and drops the packet). Call
    /// [`Self::rx_push`] after the pass's last.
    pub fn rx_direct_done(&mut self, d: Direct, ok: bool) {
        if ok {
            self.stats.rx_packets += 1;
            self.stats.rx_direct += 1;
            self.stats.rx_bytes += d.len as u64;
        } else {
            self.stats.rx_dropped += 1;
        }
        for (i, r) in d.responses.iter().enumerate() {
            if ok || Some(i) == d.extra_at {
                self.rx.respond(r);
            } else {
                let mut e = rx::RxResponse::decode(r);
                e.status = RSP_ERROR;
                self.rx.respond(&e.encode());
            }
        }
    }

    /// [`Self::rx_direct_done`] ahead of the copy, as if it succeeded, for a packet laid
    /// from our memory ([`Self::rx_direct_whole`]): the only guest pages its copy
    /// touches are this receiver's own buffers. The answers are then published by the
    /// same hypercall as the copy, after the bytes ([`Self::rx_publish_later`]), and the
    /// notification goes in it too: one VM exit instead of two. Should the copy fail,
    /// the receiver is told a packet is there and finds what its own pages held
    /// (nobody else's bytes), and [`Self::rx_direct_unwritten`] counts the packet as
    /// dropped. A copy into a guest's granted page fails when that guest revoked or
    /// broke the grant, or when dom0 paged or shared that page out (`GNTST_eagain`;
    /// not a setup a driver domain serves): the receiver's own doing or its host's,
    /// never the sender's. Returns its length.
    pub fn rx_direct_ahead(&mut self, d: Direct) -> usize {
        let len = d.len;
        self.rx_direct_done(d, true);
        len
    }

    /// A packet answered by [`Self::rx_direct_ahead`] whose copy failed: dropped, not
    /// received.
    pub fn rx_direct_unwritten(&mut self, len: usize) {
        self.stats.rx_packets -= 1;
        self.stats.rx_direct -= 1;
        self.stats.rx_bytes -= len as u64;
        self.stats.rx_dropped += 1;
    }

    /// The RX ring's producer index covering the answers given so far, for the caller
    /// to have written after the copies they describe (`BackRing::publish_later`); the
    /// frontend must then be told whatever it asked for (counted here). None: nothing
    /// new to publish.
    pub fn rx_publish_later(&mut self) -> Option<u32> {
        let v = self.rx.publish_later()?;
        self.stats.notifies += 1;
        Some(v)
    }

    /// Publish the RX answers given so far; true when the frontend must be told.
    pub fn rx_push(&mut self) -> bool {
        let notify = self.rx.push();
        if notify {
            self.stats.notifies += 1;
        }
        notify
    }

    /// With multicast control, multicast reaches the guest only for the addresses it
    /// registered (broadcast always does).
    fn wanted(&self, frame: &[u8]) -> bool {
        let Some(dst) = frame.get(..6) else {
            return false;
        };
        if !self.features.multicast_filter || dst[0] & 1 == 0 || dst == [0xff; 6] {
            return true;
        }
        self.multicast.contains(<&[u8; 6]>::try_from(dst).unwrap())
    }

    /// Deliver packets from `pending` into the buffers the frontend posted, as far as
    /// they go; a packet (or what is left of a large send being cut for this frontend)
    /// waits in the queue until enough buffers are posted. True when the frontend must
    /// be told.
    pub fn receive(
        &mut self,
        guest: &mut dyn GuestMemory,
        pending: &mut VecDeque<Packet>,
    ) -> Result<bool, Fatal> {
        let placed = self.rx_place(pending)?;
        let copied = guest.write_all(&placed.jobs());
        Ok(self.rx_finish(placed, copied))
    }

    /// [`Self::receive`]'s first half: take buffers for the packets of `pending` that
    /// fit the ones posted; the copies are the caller's to make (`RxPlaced::jobs`),
    /// then [`Self::rx_finish`] answers the buffers.
    pub fn rx_place(&mut self, pending: &mut VecDeque<Packet>) -> Result<RxPlaced, Fatal> {
        if !self.carrier {
            // Carrier off: nothing is delivered (the caller's inbox is closed too).
            self.stats.rx_dropped += pending.len() as u64;
            pending.clear();
            return Ok(RxPlaced { placed: Vec::new() });
        }
        let mut placed: Vec<(rx::Placement, Vec<u8>)> = Vec::new();
        self.rx_need = 0;
        loop {
            let next = self.rx_front.take().or_else(|| {
                let s = self.rx_shaped.as_mut()?;
                s.frames.next().map(|d| (d, s.flags, s.gso))
            });
            let Some((data, flags, gso)) = next else {
                self.rx_shaped = None;
                let Some(p) = pending.pop_front() else { break };
                if !self.wanted(&p.data) {
                    continue;
                }
                match self.shape(p) {
                    Ok(s) => self.rx_shaped = Some(s),
                    Err(_) => self.stats.rx_dropped += 1,
                }
                continue;
            };
            let need = rx::slots_needed(data.len(), gso.is_some());
            if need > self.rx.entries() as usize
                || (!self.features.sg && need > 1)
                || data.len() > MAX_TX_SIZE + ETH_HLEN
            {
                self.stats.rx_dropped += 1;
                continue;
            }
            if (self.rx.unconsumed()? as usize) < need {
                self.rx_need = need as u32;
                self.rx_front = Some((data, flags, gso));
                break;
            }
            let mut reqs = Vec::with_capacity(need);
            for _ in 0..need {
                // Each take reads the producer index again: a frontend that moved it
                // back since it was counted broke the ring protocol.
                let Some(raw) = self.rx.take()? else {
                    return Err(Fatal("RX request producer moved backwards".into()));
                };
                reqs.push(RxRequest::decode(&raw));
            }
            placed.push((rx::place(data.len(), flags, gso, &reqs), data));
        }
        Ok(RxPlaced { placed })
    }

    /// [`Self::receive`]'s second half: answer the buffers of what [`Self::rx_place`]
    /// placed, `copied` holding each packet's copy outcome; true when the frontend must
    /// be told. Responses go in the order the requests came (netfront pairs them by
    /// ring position).
    pub fn rx_finish(
        &mut self,
        placed: RxPlaced,
        copied: Vec<Result<(), bulkhead_xen::copy::GrantFault>>,
    ) -> bool {
        for ((mut placement, data), r) in placed.placed.into_iter().zip(copied) {
            if r.is_err() {
                rx::fail(&mut placement);
                self.stats.rx_dropped += 1;
            } else {
                self.stats.rx_packets += 1;
                self.stats.rx_bytes += data.len() as u64;
            }
            for r in &placement.responses {
                self.rx.respond(r);
            }
        }
        self.rx_push()
    }

    /// Watch the receive side for a stall, once per turn, `waiting` when packets wait
    /// for this queue outside it (Linux's `rx_stall_timeout`): a frontend that leaves
    /// packets waiting for buffers longer than the limit gets its carrier turned off,
    /// what waits here is dropped (counted), and it comes back on when the frontend
    /// posts a buffer again.
    pub fn rx_watch(&mut self, now: u64, waiting: bool) -> Result<Carrier, Fatal> {
        if !self.carrier {
            if self.rx.unconsumed()? >= self.rx_need.max(1) {
                self.carrier = true;
                self.rx_need = 0;
                self.rx_progress_at = now;
                return Ok(Carrier::On);
            }
            return Ok(Carrier::Unchanged);
        }
        let waiting = waiting || self.rx_waiting();
        let began = waiting && !self.rx_was_waiting;
        self.rx_was_waiting = waiting;
        // The clock runs from when packets began to wait (an idle vif takes no turns,
        // so the last turn may be long ago) or from the last packet delivered.
        if !waiting || began || self.stats.rx_packets != self.rx_progress_count {
            self.rx_progress_at = now;
            self.rx_progress_count = self.stats.rx_packets;
            return Ok(Carrier::Unchanged);
        }
        if now.saturating_sub(self.rx_progress_at) < self.limits.rx_stall_ns {
            return Ok(Carrier::Unchanged);
        }
        self.carrier = false;
        let held = self.rx_front.take().is_some() as u64
            + self
                .rx_shaped
                .take()
                .map_or(0, |s| s.frames.size_hint().0 as u64);
        self.stats.rx_dropped += held;
        self.rx_was_waiting = false;
        // The packet it stalled on is gone: one posted buffer turns the carrier back
        // on (as Linux's xenvif_rx_queue_ready), and asks for an event for it.
        self.rx_need = 1;
        Ok(Carrier::Off)
    }

    pub fn carrier(&self) -> bool {
        self.carrier
    }

    /// When waiting packets would turn the carrier off, if nothing moves before.
    pub fn rx_stall_at(&self) -> u64 {
        self.rx_progress_at.saturating_add(self.limits.rx_stall_ns)
    }

    /// True while part of a packet waits in the queue for receive buffers.
    pub fn rx_waiting(&self) -> bool {
        self.rx_front.is_some() || self.rx_shaped.is_some()
    }

    /// Before sleeping with packets waiting: ask for an event when the frontend has
    /// posted as many buffers as the next packet needs; true if it already has. (Not
    /// "any buffer": a packet needing three must not wake us for each one.)
    pub fn rx_final_check(&mut self) -> Result<bool, Fatal> {
        if self.rx_need == 0 {
            return Ok(false);
        }
        Ok(self.rx.final_check_for(self.rx_need)?)
    }

    /// One line of state for a dump: both rings' indexes, what waits, the counters.
    pub fn describe(&self) -> String {
        let s = &self.stats;
        alloc::format!(
            "tx ring {}; rx ring {}; rx waits for {} buffer(s){}; tx {}; from guest {} packets {} KiB ({} gso, {} errors), to guest {} packets {} KiB ({} straight from another guest, {} dropped), {} notifies",
            self.tx.indexes(),
            self.rx.indexes(),
            self.rx_need,
            if self.carrier { "" } else { ", carrier off" },
            if self.stalled.is_some() { "held by the rate limit" } else { "flowing" },
            s.tx_packets,
            s.tx_bytes / 1024,
            s.tx_gso,
            s.tx_errors,
            s.rx_packets,
            s.rx_bytes / 1024,
            s.rx_direct,
            s.rx_dropped,
            s.notifies
        )
    }

    /// Requests taken and not answered (zero when the queue can be released cleanly).
    pub fn in_flight(&self) -> u32 {
        self.tx.in_flight() + self.rx.in_flight()
    }
}

/// `pieces` cut after their first `at` bytes: the head's pieces and the rest's.
fn split_pieces(pieces: &[Piece], at: usize) -> (Vec<Piece>, Vec<Piece>) {
    let mut head = Vec::new();
    let mut rest = Vec::new();
    let mut left = at;
    for p in pieces {
        let n = (p.len as usize).min(left);
        if n > 0 {
            head.push(Piece {
                len: n as u16,
                ..*p
            });
        }
        if n < p.len as usize {
            rest.push(Piece {
                gref: p.gref,
                offset: p.offset + n as u16,
                len: p.len - n as u16,
            });
        }
        left -= n;
    }
    (head, rest)
}
