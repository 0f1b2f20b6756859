//! A packet inside the backend and the work its offload metadata leaves to us: a guest
//! may send TCP/UDP with the checksum left blank and TCP sends of up to 64 KiB for
//! segmentation (GSO). Whoever cannot take those as they are (the NIC, the management
//! stack, a frontend that did not ask for them) gets them completed here: checksums
//! computed, large sends cut into MSS-sized segments.
//!
//! The bytes come from guests: every header field is checked against the buffer before
//! use, and a packet whose headers do not describe it is refused, never trusted.

use alloc::vec::Vec;

use crate::abi::{ETH_HLEN, GSO_TYPE_TCPV4, GSO_TYPE_TCPV6};
use crate::tx::Gso;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
pub(crate) const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The Ethernet frame, without FCS.
    pub data: Vec<u8>,
    /// The L4 checksum is not filled in (the sender left it to be computed).
    pub csum_blank: bool,
    /// The sender vouches for the checksums (a guest's own stack built the packet).
    pub data_validated: bool,
    /// A TCP send larger than one segment, to be cut at `gso.size` bytes of payload.
    pub gso: Option<Gso>,
}

impl Packet {
    pub fn plain(data: Vec<u8>) -> Packet {
        Packet {
            data,
            csum_blank: false,
            data_validated: false,
            gso: None,
        }
    }

    pub fn src_mac(&self) -> Option<[u8; 6]> {
        self.data.get(6..12).map(|m| m.try_into().unwrap())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketError {
    /// Not IPv4/IPv6 with TCP/UDP, so there is no checksum we know how to fill.
    NotTcpUdp,
    /// A length field points outside the frame.
    Truncated,
    /// GSO asked for something other than TCP, or an MSS of 0.
    BadGso,
}

impl core::fmt::Display for PacketError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            PacketError::NotTcpUdp => "checksum offload on a packet that is not TCP/UDP over IP",
            PacketError::Truncated => "IP or L4 header does not fit the frame",
            PacketError::BadGso => "GSO on a packet that is not TCP, or segment size 0",
        })
    }
}

/// Where the IP and L4 headers sit in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layers {
    pub l3: usize,
    pub v6: bool,
    pub l4: usize,
    pub proto: u8,
    /// End of the IP packet (frames may carry padding after it).
    pub end: usize,
}

pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Find the IP and L4 headers (one VLAN tag allowed; IPv6 extension headers are not
/// walked: such packets do not get checksum offload, as for most NICs).
pub fn layers(f: &[u8]) -> Result<Layers, PacketError> {
    layers_in(f, f.len())
}

/// [`layers`] of a packet `len` bytes long of which `f` holds the start (a large send
/// whose body is still in the sender's pages): the headers must lie in `f`, the lengths
/// they give must fit `len`.
pub fn layers_in(f: &[u8], len: usize) -> Result<Layers, PacketError> {
    let len = len.max(f.len());
    if f.len() < ETH_HLEN {
        return Err(PacketError::Truncated);
    }
    let mut l3 = ETH_HLEN;
    let mut ty = be16(f, 12);
    if ty == ETHERTYPE_VLAN {
        if f.len() < ETH_HLEN + 4 {
            return Err(PacketError::Truncated);
        }
        ty = be16(f, 16);
        l3 += 4;
    }
    match ty {
        ETHERTYPE_IPV4 => {
            if f.len() < l3 + 20 || f[l3] >> 4 != 4 {
                return Err(PacketError::Truncated);
            }
            let ihl = (f[l3] & 0xf) as usize * 4;
            let total = be16(f, l3 + 2) as usize;
            // Fragments after the first carry no L4 header.
            let frag = be16(f, l3 + 6) & 0x1fff;
            if ihl < 20 || total < ihl || l3 + ihl > f.len() || l3 + total > len {
                return Err(PacketError::Truncated);
            }
            let proto = f[l3 + 9];
            if frag != 0 || (proto != PROTO_TCP && proto != PROTO_UDP) {
                return Err(PacketError::NotTcpUdp);
            }
            Ok(Layers {
                l3,
                v6: false,
                l4: l3 + ihl,
                proto,
                end: l3 + total,
            })
        }
        ETHERTYPE_IPV6 => {
            if f.len() < l3 + 40 || f[l3] >> 4 != 6 {
                return Err(PacketError::Truncated);
            }
            let payload = be16(f, l3 + 4) as usize;
            if l3 + 40 + payload > len {
                return Err(PacketError::Truncated);
            }
            let proto = f[l3 + 6];
            if proto != PROTO_TCP && proto != PROTO_UDP {
                return Err(PacketError::NotTcpUdp);
            }
            Ok(Layers {
                l3,
                v6: true,
                l4: l3 + 40,
                proto,
                end: l3 + 40 + payload,
            })
        }
        _ => Err(PacketError::NotTcpUdp),
    }
}

/// Ones'-complement sum of `b` (as big-endian 16-bit words, an odd last byte padded)
/// added to `sum`, folded to 16 bits (callers add a few more words and fold again).
/// Eight bytes a step (two 32-bit words into a 64-bit sum: 2^16 and 2^32 are both 1
/// modulo 0xffff, so the wider words fold to the same 16-bit sum, RFC 1071): a frame's
/// checksum is verified for every TCP segment received from the wire, and QEMU's TCG
/// runs each step of a loop at a cost, so fewer steps matter.
pub(crate) fn sum16(sum: u32, b: &[u8]) -> u32 {
    let mut acc = sum as u64;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes(c.try_into().unwrap());
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut pairs = chunks.remainder().chunks_exact(2);
    for c in &mut pairs {
        acc += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = pairs.remainder() {
        acc += (*last as u64) << 8;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u32
}

pub(crate) fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The offset of the L4 checksum field, and the smallest L4 header.
fn csum_field(proto: u8) -> (usize, usize) {
    if proto == PROTO_TCP {
        (16, 20)
    } else {
        (6, 8)
    }
}

/// Compute and store the TCP/UDP checksum of the packet described by `l`.
pub fn fill_l4_checksum(f: &mut [u8], l: &Layers) -> Result<(), PacketError> {
    let (_, min) = csum_field(l.proto);
    if l.end < l.l4 + min {
        return Err(PacketError::Truncated);
    }
    write_l4_checksum(f, l);
    Ok(())
}

/// The pseudo-header's sum (addresses, protocol, L4 length) of the packet `l` describes.
pub(crate) fn pseudo_sum(f: &[u8], l: &Layers) -> u32 {
    let len = l.end - l.l4;
    if l.v6 {
        let s = sum16(0, &f[l.l3 + 8..l.l3 + 40]);
        sum16(s, &(len as u32).to_be_bytes()) + l.proto as u32
    } else {
        let s = sum16(0, &f[l.l3 + 12..l.l3 + 20]);
        sum16(s, &(len as u32).to_be_bytes()) + l.proto as u32
    }
}

/// True when the IPv4 header's checksum (none for IPv6) and the TCP/UDP checksum of the
/// packet `l` describes are right, as a receiver verifies them.
pub fn checksums_ok(f: &[u8], l: &Layers) -> bool {
    let (_, min) = csum_field(l.proto);
    if l.end < l.l4 + min {
        return false;
    }
    if !l.v6 && fold(sum16(0, &f[l.l3..l.l4])) != 0xffff {
        return false;
    }
    fold(sum16(pseudo_sum(f, l), &f[l.l4..l.end])) == 0xffff
}

/// [`fill_l4_checksum`] for a packet already known to hold its whole L4 header.
fn write_l4_checksum(f: &mut [u8], l: &Layers) {
    let (field, _) = csum_field(l.proto);
    f[l.l4 + field] = 0;
    f[l.l4 + field + 1] = 0;
    let mut sum = pseudo_sum(f, l);
    sum = sum16(sum, &f[l.l4..l.end]);
    let mut c = !fold(sum);
    if c == 0 && l.proto == PROTO_UDP {
        c = 0xffff;
    }
    f[l.l4 + field..l.l4 + field + 2].copy_from_slice(&c.to_be_bytes());
}

pub(crate) fn fill_ipv4_header_checksum(f: &mut [u8], l: &Layers) {
    let ihl = l.l4 - l.l3;
    f[l.l3 + 10] = 0;
    f[l.l3 + 11] = 0;
    let c = !fold(sum16(0, &f[l.l3..l.l3 + ihl]));
    f[l.l3 + 10..l.l3 + 12].copy_from_slice(&c.to_be_bytes());
}

/// The frames of a packet completed for a receiver that takes only finished frames,
/// made one at a time as the receiver takes them: a large send is never cut up front,
/// so what it costs in memory is the packet itself and the one segment being sent.
pub enum Frames {
    One(Option<Vec<u8>>),
    Segments(Segmenter),
}

impl Iterator for Frames {
    type Item = Vec<u8>;
    fn next(&mut self) -> Option<Vec<u8>> {
        match self {
            Frames::One(f) => f.take(),
            Frames::Segments(s) => s.next(),
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Frames::One(f) => (f.is_some() as usize, Some(f.is_some() as usize)),
            Frames::Segments(s) => s.size_hint(),
        }
    }
}

/// Complete what the packet leaves open, for a receiver that takes only finished
/// frames: cut a GSO send into segments and fill in every blank checksum.
pub fn finish(p: Packet) -> Result<Frames, PacketError> {
    if let Some(g) = p.gso {
        return Segmenter::new(p.data, g).map(Frames::Segments);
    }
    let mut data = p.data;
    if p.csum_blank {
        let l = layers(&data)?;
        fill_l4_checksum(&mut data, &l)?;
    }
    Ok(Frames::One(Some(data)))
}

/// Software TCP segmentation of one GSO send, a segment per [`Iterator::next`]: each
/// carries the headers, at most `gso.size` bytes of payload, its own sequence number,
/// IP length and id, and full checksums. FIN and PSH stay on the last segment only,
/// CWR on the first only. Every header is checked when the segmenter is made, so
/// making segments cannot fail.
pub struct Segmenter {
    frame: Vec<u8>,
    l: Layers,
    /// End of the TCP header: where the payload starts.
    hdr: usize,
    mss: usize,
    seq: u32,
    flags: u8,
    id: u16,
    count: usize,
    next: usize,
}

/// Where a GSO send's headers end and how many segments it makes, every header checked.
fn gso_plan(f: &[u8], len: usize, gso: Gso) -> Result<(Layers, usize, usize), PacketError> {
    let l = layers_in(f, len)?;
    let want_v6 = match gso.kind {
        GSO_TYPE_TCPV4 => false,
        GSO_TYPE_TCPV6 => true,
        _ => return Err(PacketError::BadGso),
    };
    if l.proto != PROTO_TCP || l.v6 != want_v6 || gso.size == 0 {
        return Err(PacketError::BadGso);
    }
    if l.end < l.l4 + 20 || f.len() < l.l4 + 20 {
        return Err(PacketError::Truncated);
    }
    let doff = (f[l.l4 + 12] >> 4) as usize * 4;
    if doff < 20 || l.l4 + doff > l.end || l.l4 + doff > f.len() {
        return Err(PacketError::Truncated);
    }
    let hdr = l.l4 + doff;
    Ok((l, hdr, (l.end - hdr).div_ceil(gso.size as usize).max(1)))
}

/// How many segments a GSO send makes, or why it cannot be cut.
pub fn gso_segments(f: &[u8], gso: Gso) -> Result<usize, PacketError> {
    gso_segments_in(f, f.len(), gso)
}

/// [`gso_segments`] of a send `len` bytes long of which `f` holds the headers.
pub fn gso_segments_in(f: &[u8], len: usize, gso: Gso) -> Result<usize, PacketError> {
    gso_plan(f, len, gso).map(|(_, _, n)| n)
}

/// Bytes a GSO send puts on the wire beyond its own length once cut: its headers again
/// in every segment after the first.
pub fn gso_extra_bytes(f: &[u8], gso: Gso) -> Result<usize, PacketError> {
    gso_extra_bytes_in(f, f.len(), gso)
}

/// [`gso_extra_bytes`] of a send `len` bytes long of which `f` holds the headers.
pub fn gso_extra_bytes_in(f: &[u8], len: usize, gso: Gso) -> Result<usize, PacketError> {
    gso_plan(f, len, gso).map(|(_, hdr, n)| (n - 1) * hdr)
}

impl Segmenter {
    pub fn new(frame: Vec<u8>, gso: Gso) -> Result<Segmenter, PacketError> {
        let (l, hdr, count) = gso_plan(&frame, frame.len(), gso)?;
        Ok(Segmenter {
            seq: u32::from_be_bytes(frame[l.l4 + 4..l.l4 + 8].try_into().unwrap()),
            flags: frame[l.l4 + 13],
            id: if l.v6 { 0 } else { be16(&frame, l.l3 + 4) },
            count,
            next: 0,
            frame,
            l,
            hdr,
            mss: gso.size as usize,
        })
    }

    /// Segments the whole send makes.
    pub fn count(&self) -> usize {
        self.count
    }
}

impl Iterator for Segmenter {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        let i = self.next;
        if i >= self.count {
            return None;
        }
        self.next += 1;
        let (f, l, hdr, mss) = (&self.frame, self.l, self.hdr, self.mss);
        let payload = &f[hdr..l.end];
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let mut s = Vec::with_capacity(hdr + chunk.len());
        s.extend_from_slice(&f[..hdr]);
        s.extend_from_slice(chunk);
        let ip_len = s.len() - l.l3;
        if l.v6 {
            s[l.l3 + 4..l.l3 + 6].copy_from_slice(&((ip_len - 40) as u16).to_be_bytes());
        } else {
            s[l.l3 + 2..l.l3 + 4].copy_from_slice(&(ip_len as u16).to_be_bytes());
            s[l.l3 + 4..l.l3 + 6].copy_from_slice(&self.id.wrapping_add(i as u16).to_be_bytes());
        }
        let sl = Layers { end: s.len(), ..l };
        if !l.v6 {
            fill_ipv4_header_checksum(&mut s, &sl);
        }
        s[l.l4 + 4..l.l4 + 8]
            .copy_from_slice(&self.seq.wrapping_add((i * mss) as u32).to_be_bytes());
        let mut fl = self.flags;
        if i + 1 < self.count {
            fl &= !(0x01 | 0x08); // FIN, PSH
        }
        if i > 0 {
            fl &= !0x80; // CWR
        }
        s[l.l4 + 13] = fl;
        write_l4_checksum(&mut s, &sl);
        Some(s)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.count - self.next;
        (left, Some(left))
    }
}

/// Every segment of a GSO send at once (for tests and small sends; the data paths use
/// [`Segmenter`] to make them as they leave).
pub fn segment(f: &[u8], gso: Gso) -> Result<Vec<Vec<u8>>, PacketError> {
    Ok(Segmenter::new(f.to_vec(), gso)?.collect())
}

/// A flow hash (addresses and ports) to spread received packets over a vif's queues
/// while keeping each flow on one queue.
pub fn flow_hash(f: &[u8]) -> u32 {
    flow_hash_in(f, f.len())
}

/// [`flow_hash`] of a packet `len` bytes long of which `f` holds the headers (the same
/// hash as of the whole packet).
pub fn flow_hash_in(f: &[u8], len: usize) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut mix = |b: &[u8]| {
        for &x in b {
            h = (h ^ x as u32).wrapping_mul(0x0100_0193);
        }
    };
    match layers_in(f, len) {
        Ok(l) => {
            let (a, b) = if l.v6 { (8, 40) } else { (12, 20) };
            mix(&f[l.l3 + a..l.l3 + b]);
            mix(&[l.proto]);
            if let Some(ports) = f.get(l.l4..l.l4 + 4) {
                mix(ports);
            }
        }
        Err(_) => mix(f.get(..12).unwrap_or(f)),
    }
    h
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec;

    /// An Ethernet + IPv4 + TCP frame with `payload`, checksums filled.
    pub fn tcp4(payload: &[u8], flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[..6].copy_from_slice(&[0x00, 0x16, 0x3e, 0, 0, 2]);
        f[6..12].copy_from_slice(&[0x00, 0x16, 0x3e, 0, 0, 1]);
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
        f[18..20].copy_from_slice(&0x1234u16.to_be_bytes());
        f[22] = 64;
        f[23] = PROTO_TCP;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&5001u16.to_be_bytes());
        f[38..42].copy_from_slice(&1000u32.to_be_bytes());
        f[46] = 5 << 4;
        f[47] = flags;
        f.extend_from_slice(payload);
        let l = layers(&f).unwrap();
        fill_ipv4_header_checksum(&mut f, &l);
        fill_l4_checksum(&mut f, &l).unwrap();
        f
    }

    /// Verify a frame's IPv4 header and L4 checksums the way a receiver does.
    pub fn checksums_ok(f: &[u8]) -> bool {
        let Ok(l) = layers(f) else { return false };
        super::checksums_ok(f, &l)
    }

    /// The checksum the old two-bytes-a-step sum gives, for comparison.
    fn slow_sum(b: &[u8]) -> u16 {
        let mut sum: u64 = 0;
        for c in b.chunks(2) {
            sum += (c[0] as u64) << 8 | c.get(1).map_or(0, |&x| x as u64);
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn the_wide_sum_equals_the_word_sum() {
        let mut rng = bulkhead_testsupport::XorShift::new(7);
        for n in 0..600 {
            let b: Vec<u8> = (0..n)
                .map(|i| {
                    let x = rng.next_u64();
                    // Runs of 0xff push the sum through every fold.
                    if n % 3 == 0 {
                        0xff
                    } else {
                        (x >> (i % 24)) as u8
                    }
                })
                .collect();
            assert_eq!(fold(sum16(0, &b)), slow_sum(&b), "{n} bytes");
            assert_eq!(fold(sum16(0xffff, &b)), fold(slow_sum(&b) as u32 + 0xffff));
        }
    }

    #[test]
    fn a_known_udp_checksum() {
        // IPv4 UDP 10.0.0.1:1234 -> 10.0.0.2:5678, payload "hi".
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&30u16.to_be_bytes());
        f[23] = PROTO_UDP;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&1234u16.to_be_bytes());
        f[36..38].copy_from_slice(&5678u16.to_be_bytes());
        f[38..40].copy_from_slice(&10u16.to_be_bytes());
        f.extend_from_slice(b"hi");
        let l = layers(&f).unwrap();
        fill_l4_checksum(&mut f, &l).unwrap();
        // By hand: pseudo 0a00+0001+0a00+0002+0011+000a, UDP 04d2+162e+000a+0000,
        // data 6869: 0x9791, complemented 0x686e.
        assert_eq!(be16(&f, 40), 0x686e);
        fill_ipv4_header_checksum(&mut f, &l);
        assert!(checksums_ok(&f));
    }

    #[test]
    fn blank_checksums_are_filled() {
        let mut f = tcp4(b"hello world", 0x18);
        assert!(checksums_ok(&f));
        f[50] ^= 0x55;
        f[51] ^= 0x55;
        assert!(!checksums_ok(&f));
        let out = finish(Packet {
            data: f,
            csum_blank: true,
            data_validated: true,
            gso: None,
        })
        .unwrap()
        .collect::<Vec<_>>();
        assert_eq!(out.len(), 1);
        assert!(checksums_ok(&out[0]));
    }

    #[test]
    fn segmentation_cuts_at_mss_and_keeps_the_stream() {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let f = tcp4(&payload, 0x19); // FIN|PSH|ACK... (0x19 = FIN, PSH, ACK)
        let segs = segment(
            &f,
            Gso {
                size: 1448,
                kind: GSO_TYPE_TCPV4,
            },
        )
        .unwrap();
        assert_eq!(segs.len(), 4);
        let mut stream = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert!(checksums_ok(s), "segment {i}");
            let seq = u32::from_be_bytes(s[38..42].try_into().unwrap());
            assert_eq!(seq, 1000 + (i * 1448) as u32);
            assert_eq!(be16(s, 18), 0x1234 + i as u16);
            let fl = s[47];
            assert_eq!(fl & 0x09 != 0, i == 3, "FIN/PSH only on the last");
            assert!(s.len() <= 14 + 40 + 1448);
            stream.extend_from_slice(&s[54..]);
        }
        assert_eq!(stream, payload);
    }

    /// An Ethernet + IPv6 + TCP frame with `payload` and a 12-byte option block.
    fn tcp6(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40 + 32];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        f[14] = 0x60;
        f[18..20].copy_from_slice(&((32 + payload.len()) as u16).to_be_bytes());
        f[20] = PROTO_TCP;
        f[21] = 64;
        f[22..38].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x17]);
        f[38..54].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20]);
        f[54..56].copy_from_slice(&40000u16.to_be_bytes());
        f[56..58].copy_from_slice(&5003u16.to_be_bytes());
        f[58..62].copy_from_slice(&7u32.to_be_bytes());
        f[66] = 8 << 4;
        f[67] = 0x18;
        f[74..86].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn ipv6_segmentation_and_checksums() {
        let payload: Vec<u8> = (0..4000u32).map(|i| (i * 13) as u8).collect();
        let f = tcp6(&payload);
        let segs = segment(
            &f,
            Gso {
                size: 1428,
                kind: GSO_TYPE_TCPV6,
            },
        )
        .unwrap();
        assert_eq!(segs.len(), 3);
        let mut stream = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert!(checksums_ok(s), "segment {i}");
            assert!(s.len() <= 1514);
            assert_eq!(be16(s, 18) as usize, s.len() - 54);
            let seq = u32::from_be_bytes(s[58..62].try_into().unwrap());
            assert_eq!(seq, 7 + (i * 1428) as u32);
            stream.extend_from_slice(&s[86..]);
        }
        assert_eq!(stream, payload);
        let out = finish(Packet {
            data: tcp6(b"small"),
            csum_blank: true,
            data_validated: true,
            gso: None,
        })
        .unwrap()
        .collect::<Vec<_>>();
        assert!(checksums_ok(&out[0]));
    }

    #[test]
    fn lies_in_headers_are_refused() {
        let mut f = tcp4(b"x", 0x10);
        f[16..18].copy_from_slice(&2000u16.to_be_bytes()); // IP length beyond the frame
        assert_eq!(layers(&f), Err(PacketError::Truncated));
        let mut f = tcp4(b"x", 0x10);
        f[46] = 15 << 4; // TCP header longer than the packet
        let g = Gso {
            size: 100,
            kind: GSO_TYPE_TCPV4,
        };
        assert_eq!(segment(&f, g), Err(PacketError::Truncated));
        let f = tcp4(b"x", 0x10);
        assert_eq!(
            segment(
                &f,
                Gso {
                    size: 0,
                    kind: GSO_TYPE_TCPV4
                }
            ),
            Err(PacketError::BadGso)
        );
        assert_eq!(
            segment(
                &f,
                Gso {
                    size: 100,
                    kind: GSO_TYPE_TCPV6
                }
            ),
            Err(PacketError::BadGso)
        );
        let arp = vec![0xffu8; 42];
        assert_eq!(layers(&arp), Err(PacketError::NotTcpUdp));
        // Arbitrary bytes never panic.
        let mut rng = bulkhead_testsupport::XorShift::new(99);
        for n in 0..2000 {
            let mut f: Vec<u8> = rng.bytes(n % 120);
            if f.len() > 14 {
                f[12] = 0x08;
                f[13] = 0;
                f[14] = 0x45;
            }
            let _ = finish(Packet {
                data: f.clone(),
                csum_blank: true,
                data_validated: false,
                gso: None,
            });
            let _ = segment(
                &f,
                Gso {
                    size: 1 + (n % 50) as u16,
                    kind: GSO_TYPE_TCPV4,
                },
            );
            let _ = flow_hash(&f);
        }
    }
}
