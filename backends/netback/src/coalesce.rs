//! Receive coalescing of TCP segments from the wire (what Linux calls GRO, done once in
//! the driver domain instead of in every guest): consecutive segments of one TCP stream
//! received in one batch become one large packet with GSO metadata, as a guest's own
//! large send does. A guest then takes one packet (one notification, one skb, one trip
//! through its stack) for up to 64 KiB instead of one per 1500-byte frame, which is what
//! a Linux driver domain gives its guests (its NIC driver's GRO before netback). A
//! receiver that does not take GSO gets the segments back, cut as they came
//! ([`crate::packet::Segmenter`]).
//!
//! The frames come from the network: untrusted. Only segments whose checksums verify
//! are merged (the merged packet tells the guest they were checked), and only what
//! segmentation gives back exactly: same addresses, ports, IP fields, TCP flags (PSH
//! aside) and options, in-sequence, every segment but the last of the first one's
//! size. Anything else passes through as it came, and a stream's order is kept.

use alloc::vec::Vec;

use crate::abi::{ETH_HLEN, GSO_TYPE_TCPV4, GSO_TYPE_TCPV6, MAX_TX_SIZE};
use crate::packet::{self, be16, Layers, Packet, PROTO_TCP};
use crate::tx::Gso;

/// Streams merged at once within a batch (Linux holds up to 8 per NAPI poll too); a
/// further stream closes the oldest.
pub const MAX_OPEN: usize = 8;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_URG: u8 = 0x20;
const TCP_CWR: u8 = 0x80;

/// A frame that may be merged: a TCP segment with data, checksums right.
#[derive(Clone, Copy)]
struct Segment {
    l: Layers,
    /// Where the payload starts.
    hdr: usize,
    seq: u32,
    flags: u8,
}

impl Segment {
    fn payload(&self) -> usize {
        self.l.end - self.hdr
    }
}

/// The TCP segment `f` carries, if it is one coalescing may take.
fn segment(f: &[u8]) -> Option<Segment> {
    let l = packet::layers(f).ok()?;
    // No VLAN tag, no IPv4 options, no fragment (the first one included).
    if l.proto != PROTO_TCP || l.l3 != ETH_HLEN {
        return None;
    }
    if !l.v6 && (l.l4 - l.l3 != 20 || be16(f, l.l3 + 6) & 0x2000 != 0) {
        return None;
    }
    if l.end < l.l4 + 20 {
        return None;
    }
    let doff = (f[l.l4 + 12] >> 4) as usize * 4;
    let hdr = l.l4 + doff;
    if doff < 20 || hdr >= l.end {
        return None;
    }
    let flags = f[l.l4 + 13];
    if flags & TCP_ACK == 0 || flags & (TCP_FIN | TCP_SYN | TCP_RST | TCP_URG | TCP_CWR) != 0 {
        return None;
    }
    if !packet::checksums_ok(f, &l) {
        return None;
    }
    Some(Segment {
        l,
        hdr,
        seq: u32::from_be_bytes(f[l.l4 + 4..l.l4 + 8].try_into().unwrap()),
        flags,
    })
}

/// The same stream: MAC addresses, IP version and addresses, ports.
fn same_stream(a: &[u8], la: &Layers, b: &[u8], lb: &Layers) -> bool {
    if la.v6 != lb.v6 || a[..12] != b[..12] {
        return false;
    }
    let (from, to) = if la.v6 { (8, 40) } else { (12, 20) };
    a[la.l3 + from..la.l3 + to] == b[lb.l3 + from..lb.l3 + to]
        && a[la.l4..la.l4 + 4] == b[lb.l4..lb.l4 + 4]
}

/// True when `b` may be segment number `k` (from 0) of a merged packet that begins with
/// `a`: segmentation gives it back exactly, because every header field it repeats from
/// the first segment is the same in both, and the IPv4 id is the first one's plus `k`
/// (segmentation numbers them so; Linux's senders do too).
fn mergeable(a: &[u8], sa: &Segment, b: &[u8], sb: &Segment, k: usize) -> bool {
    let (la, lb) = (&sa.l, &sb.l);
    if !same_stream(a, la, b, lb) || sa.hdr - la.l4 != sb.hdr - lb.l4 {
        return false;
    }
    let ip_same = if la.v6 {
        // Version, traffic class, flow label; hop limit.
        a[la.l3..la.l3 + 4] == b[lb.l3..lb.l3 + 4] && a[la.l3 + 7] == b[lb.l3 + 7]
    } else {
        // TOS (ECN included); id; flags and fragment offset; TTL.
        a[la.l3 + 1] == b[lb.l3 + 1]
            && be16(a, la.l3 + 4).wrapping_add(k as u16) == be16(b, lb.l3 + 4)
            && a[la.l3 + 6..la.l3 + 9] == b[lb.l3 + 6..lb.l3 + 9]
    };
    ip_same
        // Acknowledgment, header length, flags (PSH aside), window, urgent pointer,
        // options (timestamps included, as Linux's GRO compares them).
        && a[la.l4 + 8..la.l4 + 13] == b[lb.l4 + 8..lb.l4 + 13]
        && sa.flags & !TCP_PSH == sb.flags & !TCP_PSH
        && a[la.l4 + 14..la.l4 + 16] == b[lb.l4 + 14..lb.l4 + 16]
        && a[la.l4 + 18..sa.hdr] == b[lb.l4 + 18..sb.hdr]
}

/// Segments merged so far into one packet.
struct Run {
    /// Indexes of its frames, in order.
    frames: Vec<usize>,
    /// The first segment's payload size: the GSO segment size.
    mss: usize,
    next_seq: u32,
    /// The merged packet's length so far (first frame's headers and every payload).
    len: usize,
}

/// True when run `r` (its first frame's headers) is of the stream of frame `f`.
fn run_of(
    runs: &[Run],
    frames: &[Vec<u8>],
    segs: &[Option<Segment>],
    r: usize,
    f: &[u8],
    l: &Layers,
) -> bool {
    let h = runs[r].frames[0];
    segs[h].is_some_and(|sh| same_stream(&frames[h], &sh.l, f, l))
}

/// True when frame `f`, parsed or not (a truncated or mangled frame included), starts
/// with the addresses of run `r`'s stream: MAC addresses and type, IP protocol and
/// addresses, ports, at the places they have in the run's first frame.
fn raw_of(runs: &[Run], frames: &[Vec<u8>], segs: &[Option<Segment>], r: usize, f: &[u8]) -> bool {
    let h = runs[r].frames[0];
    let Some(sh) = segs[h] else {
        return false;
    };
    let head = &frames[h];
    let (proto, addrs) = if sh.l.v6 {
        (sh.l.l3 + 6, sh.l.l3 + 8..sh.l.l3 + 40)
    } else {
        (sh.l.l3 + 9, sh.l.l3 + 12..sh.l.l3 + 20)
    };
    let same = |at: core::ops::Range<usize>| f.get(at.clone()) == head.get(at);
    same(0..ETH_HLEN) && same(proto..proto + 1) && same(addrs) && same(sh.l.l4..sh.l.l4 + 4)
}

/// What coalescing did so far (for the driver domain's state dump).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub batches: u64,
    pub frames: u64,
    /// Packets made of several segments, and the segments they hold.
    pub merged: u64,
    pub merged_segments: u64,
}

/// What the batch becomes, in order.
enum Out {
    Frame(usize),
    Run(usize),
}

/// Coalesce a batch of frames received from the wire, in arrival order, into the
/// packets the switch forwards: merged TCP runs (GSO, checksum left partial and
/// vouched for), single verified segments (vouched for), and everything else as it
/// came. Each stream's order is kept; across streams a merged run goes where its first
/// segment was. Work and memory are linear in the batch.
pub fn coalesce(mut frames: Vec<Vec<u8>>, stats: &mut Stats) -> Vec<Packet> {
    stats.batches += 1;
    stats.frames += frames.len() as u64;
    let segs: Vec<Option<Segment>> = frames.iter().map(|f| segment(f)).collect();
    let mut runs: Vec<Run> = Vec::new();
    // Runs segments may still join, oldest first (at most MAX_OPEN); a run leaves when
    // a short or PSH segment ends it, a segment of its stream does not fit, or it is
    // the oldest when a further stream starts.
    let mut open: Vec<usize> = Vec::new();
    let mut out: Vec<Out> = Vec::with_capacity(frames.len());
    for i in 0..frames.len() {
        let Some(s) = segs[i] else {
            // Not for merging. A TCP frame of an open stream (a FIN, a pure ACK, a
            // segment with a bad checksum, one cut short) closes that stream's run:
            // nothing of it may pass it.
            let l = packet::layers(&frames[i])
                .ok()
                .filter(|l| l.proto == PROTO_TCP && l.end >= l.l4 + 4);
            open.retain(|&r| {
                !(raw_of(&runs, &frames, &segs, r, &frames[i])
                    || l.is_some_and(|l| run_of(&runs, &frames, &segs, r, &frames[i], &l)))
            });
            out.push(Out::Frame(i));
            continue;
        };
        // The open run of this stream, if any.
        let mine = open
            .iter()
            .position(|&r| run_of(&runs, &frames, &segs, r, &frames[i], &s.l));
        if let Some(k) = mine {
            let r = open[k];
            let run = &runs[r];
            let h = run.frames[0];
            let fits = s.seq == run.next_seq
                && s.payload() <= run.mss
                // The IPv4 length field (and the IPv6 one, with room to spare).
                && run.len + s.payload() - ETH_HLEN <= MAX_TX_SIZE
                && mergeable(&frames[h], segs[h].as_ref().unwrap(), &frames[i], &s, run.frames.len());
            if fits {
                let run = &mut runs[r];
                run.frames.push(i);
                run.next_seq = s.seq.wrapping_add(s.payload() as u32);
                run.len += s.payload();
                if s.payload() < run.mss || s.flags & TCP_PSH != 0 {
                    open.remove(k);
                }
                continue;
            }
            open.remove(k);
        }
        if open.len() == MAX_OPEN {
            open.remove(0);
        }
        runs.push(Run {
            frames: alloc::vec![i],
            mss: s.payload(),
            next_seq: s.seq.wrapping_add(s.payload() as u32),
            len: s.l.end,
        });
        if s.flags & TCP_PSH == 0 {
            open.push(runs.len() - 1);
        }
        out.push(Out::Run(runs.len() - 1));
    }
    for r in runs.iter().filter(|r| r.frames.len() > 1) {
        stats.merged += 1;
        stats.merged_segments += r.frames.len() as u64;
    }
    out.into_iter()
        .map(|o| match o {
            Out::Frame(i) => Packet::plain(core::mem::take(&mut frames[i])),
            Out::Run(r) => merge(&mut frames, &segs, &runs[r]),
        })
        .collect()
}

/// One run as a packet: a single segment as it came (its checksum verified), several as
/// the first one's headers followed by every payload, with the IP length and the IPv4
/// header checksum redone, PSH if the last had it, and the TCP checksum field holding
/// the pseudo-header's sum, as a guest's own large send leaves it.
fn merge(frames: &mut [Vec<u8>], segs: &[Option<Segment>], run: &Run) -> Packet {
    let h = run.frames[0];
    let first = segs[h].unwrap();
    let mut data = core::mem::take(&mut frames[h]);
    if run.frames.len() == 1 {
        return Packet {
            data,
            csum_blank: false,
            data_validated: true,
            gso: None,
        };
    }
    data.truncate(first.l.end);
    data.reserve_exact(run.len - data.len());
    let mut last_flags = first.flags;
    for &i in &run.frames[1..] {
        let s = segs[i].unwrap();
        data.extend_from_slice(&frames[i][s.hdr..s.l.end]);
        last_flags = s.flags;
        frames[i] = Vec::new();
    }
    let l = Layers {
        end: data.len(),
        ..first.l
    };
    let ip_len = data.len() - l.l3;
    if l.v6 {
        data[l.l3 + 4..l.l3 + 6].copy_from_slice(&((ip_len - 40) as u16).to_be_bytes());
    } else {
        data[l.l3 + 2..l.l3 + 4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        packet::fill_ipv4_header_checksum(&mut data, &l);
    }
    data[l.l4 + 13] |= last_flags & TCP_PSH;
    let pseudo = packet::fold(packet::pseudo_sum(&data, &l));
    data[l.l4 + 16..l.l4 + 18].copy_from_slice(&pseudo.to_be_bytes());
    Packet {
        data,
        csum_blank: true,
        data_validated: true,
        gso: Some(Gso {
            size: run.mss as u16,
            kind: if l.v6 { GSO_TYPE_TCPV6 } else { GSO_TYPE_TCPV4 },
        }),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::packet::{fill_ipv4_header_checksum, fill_l4_checksum, layers, segment};
    use alloc::vec;

    /// What a TCP segment from the wire looks like here.
    #[derive(Clone, Copy)]
    struct Seg {
        v6: bool,
        /// Which stream (the source port).
        stream: u16,
        seq: u32,
        id: u16,
        len: usize,
        flags: u8,
        window: u16,
        /// The timestamp option's value.
        ts: u32,
    }

    fn seg(stream: u16, seq: u32, id: u16, len: usize) -> Seg {
        Seg {
            v6: false,
            stream,
            seq,
            id,
            len,
            flags: TCP_ACK,
            window: 500,
            ts: 77,
        }
    }

    /// The frame of `s`, checksums filled, payload bytes made from the sequence number
    /// (so a stream's bytes say where they belong).
    fn frame(s: &Seg) -> Vec<u8> {
        let l3 = 14;
        let ip = if s.v6 { 40 } else { 20 };
        let l4 = l3 + ip;
        let tcp = 32; // 12 bytes of options: NOP, NOP, timestamps
        let mut f = vec![0u8; l4 + tcp];
        f[..6].copy_from_slice(&[0x00, 0x16, 0x3e, 0, 0, 2]);
        f[6..12].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 1]);
        if s.v6 {
            f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            f[l3] = 0x60;
            f[l3 + 4..l3 + 6].copy_from_slice(&((tcp + s.len) as u16).to_be_bytes());
            f[l3 + 6] = PROTO_TCP;
            f[l3 + 7] = 64;
            f[l3 + 8] = 0xfd;
            f[l3 + 23] = 0x01;
            f[l3 + 24] = 0xfd;
            f[l3 + 39] = 0x02;
        } else {
            f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            f[l3] = 0x45;
            f[l3 + 2..l3 + 4].copy_from_slice(&((ip + tcp + s.len) as u16).to_be_bytes());
            f[l3 + 4..l3 + 6].copy_from_slice(&s.id.to_be_bytes());
            f[l3 + 6] = 0x40; // DF
            f[l3 + 8] = 64;
            f[l3 + 9] = PROTO_TCP;
            f[l3 + 12..l3 + 16].copy_from_slice(&[10, 0, 0, 1]);
            f[l3 + 16..l3 + 20].copy_from_slice(&[10, 0, 0, 2]);
        }
        f[l4..l4 + 2].copy_from_slice(&s.stream.to_be_bytes());
        f[l4 + 2..l4 + 4].copy_from_slice(&5201u16.to_be_bytes());
        f[l4 + 4..l4 + 8].copy_from_slice(&s.seq.to_be_bytes());
        f[l4 + 8..l4 + 12].copy_from_slice(&9u32.to_be_bytes());
        f[l4 + 12] = (tcp as u8 / 4) << 4;
        f[l4 + 13] = s.flags;
        f[l4 + 14..l4 + 16].copy_from_slice(&s.window.to_be_bytes());
        f[l4 + 20..l4 + 24].copy_from_slice(&[1, 1, 8, 10]);
        f[l4 + 24..l4 + 28].copy_from_slice(&s.ts.to_be_bytes());
        f.extend((0..s.len).map(|i| (s.seq as usize + i) as u8 ^ s.stream as u8));
        let l = layers(&f).unwrap();
        if !s.v6 {
            fill_ipv4_header_checksum(&mut f, &l);
        }
        fill_l4_checksum(&mut f, &l).unwrap();
        f
    }

    /// A stream of `n` segments of `mss` bytes from `seq`.
    fn stream(stream: u16, seq: u32, n: usize, mss: usize) -> Vec<Seg> {
        (0..n)
            .map(|i| seg(stream, seq + (i * mss) as u32, 100 + i as u16, mss))
            .collect()
    }

    /// The frames a packet stands for: a merged one cut again, any other as it is.
    fn expand(p: &Packet) -> Vec<Vec<u8>> {
        match p.gso {
            Some(g) => segment(&p.data, g).unwrap(),
            None => vec![p.data.clone()],
        }
    }

    #[test]
    fn a_stream_becomes_one_packet_that_cuts_back_into_the_same_frames() {
        for v6 in [false, true] {
            let mut segs = stream(40000, 1000, 10, 1448);
            segs[9].flags |= TCP_PSH;
            segs[9].len = 700;
            for s in &mut segs {
                s.v6 = v6;
            }
            let frames: Vec<Vec<u8>> = segs.iter().map(frame).collect();
            let out = coalesce(frames.clone(), &mut Stats::default());
            assert_eq!(out.len(), 1, "v6 {v6}");
            let p = &out[0];
            assert_eq!(
                p.gso,
                Some(Gso {
                    size: 1448,
                    kind: if v6 { GSO_TYPE_TCPV6 } else { GSO_TYPE_TCPV4 }
                })
            );
            assert!(p.csum_blank && p.data_validated);
            assert_eq!(p.data.len(), frames[0].len() + 9 * 1448 + 700 - 1448);
            // The flags of the whole: PSH from the last segment.
            let l = layers(&p.data).unwrap();
            assert_eq!(p.data[l.l4 + 13], TCP_ACK | TCP_PSH);
            assert_eq!(expand(p), frames, "v6 {v6}");
            // What the guest is told holds: the partial checksum completes to a right one.
            let done: Vec<Vec<u8>> = packet::finish(p.clone()).unwrap().collect();
            assert_eq!(done, frames);
        }
    }

    #[test]
    fn interleaved_streams_merge_apart_and_keep_their_order() {
        let a = stream(1, 0, 12, 1448);
        let b = stream(2, 5000, 12, 1448);
        let c = stream(3, 9, 12, 1448);
        let mut segs = Vec::new();
        for i in 0..12 {
            segs.push(a[i]);
            segs.push(b[i]);
            segs.push(c[i]);
        }
        let frames: Vec<Vec<u8>> = segs.iter().map(frame).collect();
        let out = coalesce(frames.clone(), &mut Stats::default());
        assert_eq!(out.len(), 3);
        for (p, s) in out.iter().zip([&a, &b, &c]) {
            let want: Vec<Vec<u8>> = s.iter().map(frame).collect();
            assert_eq!(expand(p), want);
        }
    }

    #[test]
    fn what_may_not_merge_passes_in_place() {
        let mut segs = stream(7, 0, 8, 1000);
        // A gap (a lost segment): a new run after it.
        segs[3].seq += 1000;
        for s in &mut segs[4..] {
            s.seq += 1000;
        }
        // A changed timestamp: a new run.
        segs[6].ts += 1;
        segs[7].ts += 1;
        let mut frames: Vec<Vec<u8>> = segs.iter().map(frame).collect();
        // A corrupted segment in the middle: passed through as it came, unvouched.
        let bad = {
            let mut f = frame(&seg(7, 8000, 200, 1000));
            let n = f.len();
            f[n - 1] ^= 1;
            f
        };
        frames.insert(5, bad.clone());
        // Neither TCP nor IP: as it came.
        let arp = vec![0xffu8; 60];
        frames.insert(1, arp.clone());
        let out = coalesce(frames.clone(), &mut Stats::default());
        let kinds: Vec<(usize, bool)> = out
            .iter()
            .map(|p| (expand(p).len(), p.data_validated))
            .collect();
        // [0..3) run, arp, [3, 4] run (cut by the bad one), bad, [5] alone, [6, 7] run.
        assert_eq!(
            kinds,
            vec![
                (3, true),
                (1, false),
                (2, true),
                (1, false),
                (1, true),
                (2, true)
            ]
        );
        assert_eq!(out[1].data, arp);
        assert_eq!(out[3].data, bad);
        assert!(out[4].gso.is_none() && !out[4].csum_blank);
        // Across streams a run goes where its first segment was (the ARP frame came
        // in the middle of the first run); within the stream nothing moved.
        let tcp = |fs: &[Vec<u8>]| -> Vec<Vec<u8>> {
            fs.iter().filter(|f| f.len() > 60).cloned().collect()
        };
        let back: Vec<Vec<u8>> = out.iter().flat_map(expand).collect();
        assert_eq!(tcp(&back), tcp(&frames));
    }

    #[test]
    fn a_packet_never_outgrows_the_ip_length() {
        let segs = stream(9, 0, 100, 1448);
        let frames: Vec<Vec<u8>> = segs.iter().map(frame).collect();
        let out = coalesce(frames.clone(), &mut Stats::default());
        assert_eq!(out.len(), 3); // 45 + 45 + 10 segments
        for p in &out {
            assert!(p.data.len() - ETH_HLEN <= 0xffff);
            let l = layers(&p.data).unwrap();
            assert_eq!(l.end, p.data.len());
        }
        let back: Vec<Vec<u8>> = out.iter().flat_map(expand).collect();
        assert_eq!(back, frames);
    }

    #[test]
    fn as_many_streams_as_held_all_merge() {
        let streams: Vec<Vec<Seg>> = (0..MAX_OPEN as u16)
            .map(|k| stream(100 + k, 0, 4, 500))
            .collect();
        let mut frames = Vec::new();
        for i in 0..4 {
            for s in &streams {
                frames.push(frame(&s[i]));
            }
        }
        let out = coalesce(frames, &mut Stats::default());
        assert_eq!(out.len(), MAX_OPEN);
        for (p, s) in out.iter().zip(&streams) {
            assert_eq!(expand(p), s.iter().map(frame).collect::<Vec<_>>());
        }
    }

    #[test]
    fn more_streams_than_held_still_come_out_whole() {
        // 10 streams, round robin: the oldest open run is closed for the 9th.
        let streams: Vec<Vec<Seg>> = (0..10).map(|k| stream(100 + k, 0, 4, 500)).collect();
        let mut frames = Vec::new();
        for i in 0..4 {
            for s in &streams {
                frames.push(frame(&s[i]));
            }
        }
        // More streams at once than runs held open, in turn: each evicts the next one
        // due (as in Linux), nothing merges, nothing is lost or reordered.
        let out = coalesce(frames.clone(), &mut Stats::default());
        assert_eq!(out.len(), frames.len());
        for (k, s) in streams.iter().enumerate() {
            let want: Vec<Vec<u8>> = s.iter().map(frame).collect();
            let got: Vec<Vec<u8>> = out
                .iter()
                .flat_map(expand)
                .filter(|f| f[34..36] == (100 + k as u16).to_be_bytes())
                .collect();
            assert_eq!(got, want, "stream {k}");
        }
    }

    /// Any batch, however mangled, comes out as the same frames in each stream's order
    /// (merged packets cut back exactly), and never panics.
    #[test]
    fn mangled_batches_come_back_whole() {
        let mut rng = bulkhead_testsupport::XorShift::new(12345);
        let mut rnd = |n: u32| rng.below(n as u64) as u32;
        let mut merged = 0;
        for round in 0..300 {
            let mut segs: Vec<Seg> = Vec::new();
            let mut next = [0u32; 3];
            let mut ids = [0u16; 3];
            for _ in 0..rnd(60) {
                let k = rnd(3) as usize;
                let mut s = seg(k as u16 + 1, next[k], ids[k], 1 + rnd(3) as usize * 600);
                s.v6 = round % 2 == 1;
                match rnd(20) {
                    0 => s.seq = s.seq.wrapping_sub(600), // a retransmission
                    1 => s.flags |= TCP_PSH,
                    2 => s.flags |= TCP_FIN,
                    3 => s.window += 1,
                    4 => s.ts += 1,
                    5 => s.len = 0,
                    _ => {}
                }
                next[k] = s.seq.wrapping_add(s.len as u32);
                ids[k] = ids[k].wrapping_add(1 + (rnd(10) == 0) as u16);
                segs.push(s);
            }
            let mut frames: Vec<Vec<u8>> = segs.iter().map(frame).collect();
            for f in &mut frames {
                match rnd(30) {
                    0 => {
                        let at = rnd(f.len() as u32) as usize;
                        f[at] ^= 1 << rnd(8);
                    }
                    1 => f.truncate(rnd(f.len() as u32) as usize),
                    _ => {}
                }
            }
            let out = coalesce(frames.clone(), &mut Stats::default());
            // Each stream's frames in order; a stream as the coalescer tells them apart
            // (MAC addresses and type, IP protocol and addresses, ports), so a mangled
            // MAC, protocol or address makes another one.
            let key = |f: &Vec<u8>| -> Vec<u8> {
                let (proto, addrs, l4) = if f.get(12) == Some(&0x86) {
                    (20, 22..54, 54)
                } else {
                    (23, 26..34, 34)
                };
                let mut k = f.get(..14).unwrap_or(f).to_vec();
                k.extend(f.get(proto..proto + 1).unwrap_or(&[]));
                k.extend(f.get(addrs).unwrap_or(&[]));
                k.extend(f.get(l4..l4 + 4).unwrap_or(&[]));
                k
            };
            let back: Vec<Vec<u8>> = out.iter().flat_map(expand).collect();
            assert_eq!(back.len(), frames.len(), "round {round}");
            let mut keys: Vec<Vec<u8>> = frames.iter().map(key).collect();
            keys.sort();
            keys.dedup();
            for k in &keys {
                let of = |fs: &[Vec<u8>]| -> Vec<Vec<u8>> {
                    fs.iter().filter(|f| key(f) == *k).cloned().collect()
                };
                assert_eq!(of(&back), of(&frames), "round {round} stream {k:?}");
            }
            for p in &out {
                if let Some(g) = p.gso {
                    merged += 1;
                    assert!(packet::gso_segments(&p.data, g).unwrap() >= 2);
                    assert!(p.data.len() - ETH_HLEN <= 0xffff);
                }
            }
        }
        // Not vacuous: the batches did merge.
        assert!(merged > 300, "{merged} merged packets");
    }
}
