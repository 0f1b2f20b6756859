//! `fuzz blkif SECONDS`: a time-bounded fuzzer for blkback's request path (the
//! stable-toolchain stand-in for cargo-fuzz, which needs nightly). Requests are random
//! bytes or mutations of valid ones, in both ABIs, pushed through the real ring, decoder
//! and data path against an in-memory disk and guest. Checked on every round: no panic,
//! exactly one response per request carrying its id, the ring never reports a broken
//! producer we did not cause, and nothing is written outside the disk.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bulkhead_blkback::abi::*;
use bulkhead_blkback::io::Geometry;
use bulkhead_blkback::queue::Queue;
use bulkhead_blkback::request::{encode, encode_discard, encode_indirect, Limits, Segment};
use bulkhead_blkback::ring::{self, FrontRing, VecRing};
use bulkhead_testsupport::{GrantPages, MemDisk, SharedDisk, XorShift};

/// The random fuzzers' seed: `FUZZ_SEED` (decimal or 0x-hex) when set, to replay a run,
/// otherwise fresh; printed first, so a failure can always be replayed.
fn seed(name: &str, base: u64) -> XorShift {
    let s = std::env::var("FUZZ_SEED").ok().and_then(|v| {
        let v = v.trim();
        match v.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => v.parse().ok(),
        }
    });
    let s = s.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        base ^ t ^ (std::process::id() as u64) << 32
    });
    println!(
        "fuzz {name}: seed {s:#x} (replay: FUZZ_SEED={s:#x} bulkhead-testrun fuzz {name} SECONDS)"
    );
    XorShift::new(s)
}

const DISK_SECTORS: u64 = 512;

fn request(rng: &mut XorShift, p: Protocol, id: u64, grefs: &[u32]) -> Vec<u8> {
    let seg = |rng: &mut XorShift| Segment {
        gref: if rng.below(8) == 0 {
            rng.next_u64() as u32
        } else {
            grefs[rng.below(grefs.len() as u64) as usize]
        },
        first: rng.below(9) as u8,
        last: rng.below(9) as u8,
    };
    let sector = match rng.below(4) {
        0 => rng.next_u64(),
        _ => rng.below(DISK_SECTORS + 16),
    };
    let mut raw = match rng.below(6) {
        0 => {
            let n = rng.below(13) as usize;
            let segs: Vec<Segment> = (0..n).map(|_| seg(rng)).collect();
            encode(p, rng.below(8) as u8, id, sector, &segs)
        }
        1 => {
            let count = rng.below(300) as u16;
            encode_indirect(p, rng.below(3) as u8, id, sector, count, &grefs[..2])
        }
        2 => encode_discard(p, id, sector, rng.below(64), rng.below(2) as u8),
        _ => {
            let n = 1 + rng.below(11) as usize;
            let segs: Vec<Segment> = (0..n).map(|_| seg(rng)).collect();
            encode(p, rng.below(2) as u8, id, sector, &segs)
        }
    };
    // Flip a few bytes (but keep the id, which the check below relies on).
    for _ in 0..rng.below(4) {
        let i = rng.below(raw.len() as u64) as usize;
        if !(p.id_offset()..p.id_offset() + 8).contains(&i) {
            raw[i] = rng.next_u64() as u8;
        }
    }
    raw
}

pub fn blkif(seconds: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut rng = seed("blkif", 0x5eed_b1c1_f00d);
    let (mut rounds, mut requests, mut errors) = (0u64, 0u64, 0u64);
    let limits = Limits {
        max_indirect_segments: 256,
        barrier: true,
        flush: true,
        discard: true,
        secure_discard: false,
    };
    while Instant::now() < deadline {
        for protocol in [Protocol::X86_64, Protocol::X86_32] {
            // Strict: a piece outside its page or not covering its buffer is blkback's bug.
            let mut pages = GrantPages::new();
            pages.strict = true;
            // Two indirect pages of plausible segments, then data pages.
            let grefs: Vec<u32> = (10..30).collect();
            for &g in &grefs {
                let mut page = vec![0u8; 4096];
                for (i, b) in page.iter_mut().enumerate() {
                    *b = if g < 12 && i % 8 < 4 {
                        (grefs[(i / 8) % grefs.len()] >> (8 * (i % 4))) as u8
                    } else if g < 12 && i % 8 == 5 {
                        rng.below(9) as u8
                    } else {
                        rng.next_u64() as u8
                    };
                }
                pages.insert(g, page);
            }
            // Two pages: up to two batches, which go to the device side by side.
            let ring = ring::attach(VecRing::new(2), protocol).map_err(|e| e.to_string())?;
            let mut front = FrontRing::new(ring.memory(), protocol.layout());
            let geo = Geometry {
                sectors: DISK_SECTORS,
                block_size: 512,
            };
            let mut q = Queue::new(
                "fuzz".into(),
                ring,
                protocol,
                limits,
                geo,
                rng.below(4) == 0,
            );
            // Strict: a device call outside the disk is blkback's bug. Shared by two
            // handles, the first slow: batches at it together end out of order.
            let mut mem = MemDisk::new(DISK_SECTORS, 512);
            mem.strict = true;
            let mut disk = SharedDisk::new(mem, rng.below(4) as usize);
            for _ in 0..16 {
                let n = 1 + rng.below(64) as u32;
                let mut ids = Vec::new();
                for k in 0..n {
                    let id = (rounds << 16) | (k as u64) << 1;
                    let raw = request(&mut rng, protocol, id, &grefs);
                    let mem = q.ring_mut().memory_mut();
                    front.put(mem, &raw);
                    front.publish(mem);
                    ids.push(id);
                }
                let served = {
                    let mut f = pin!(q.serve_available(&mut disk, &mut pages, usize::MAX));
                    let mut cx = Context::from_waker(Waker::noop());
                    // The disk keeps a call pending a few polls, never more.
                    (0..1000)
                        .map(|_| f.as_mut().poll(&mut cx))
                        .find(Poll::is_ready)
                        .unwrap_or(Poll::Pending)
                };
                match served {
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(e)) => return Err(format!("ring broke on valid indexes: {e}")),
                    Poll::Pending => return Err("in-memory requests never ended".into()),
                }
                let mem = q.ring_mut().memory_mut();
                let mut got = Vec::new();
                while let Some(r) = front.get(mem) {
                    got.push(u64::from_le_bytes(r[..8].try_into().unwrap()));
                    if i16::from_le_bytes([r[10], r[11]]) != 0 {
                        errors += 1;
                    }
                }
                // In any order (batches end in any order), each exactly once.
                got.sort_unstable();
                if got != ids {
                    return Err(format!("responses {got:x?} for requests {ids:x?}"));
                }
                requests += n as u64;
            }
            rounds += 1;
        }
    }
    println!(
        "fuzz blkif: {requests} requests in {rounds} rounds over {seconds} s ({errors} answered with an error), no panic, every request answered once"
    );
    Ok(())
}

/// `fuzz switch SECONDS`: frames from the wire and from guests are untrusted; the L2
/// switch gets random and mutated frames on random ports (with VLANs, ports going down
/// and away). Checked: no panic, never back out of the ingress port, flood lists hold
/// only live ports of the ingress VLAN, the learning table stays within its bound.
pub fn switch(seconds: u64) -> Result<(), String> {
    use bulkhead_switch::{Decision, PortId, Switch};
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut rng = seed("switch", 0x5317_c4f0_0d15_ea5e);
    let (mut frames, mut rounds) = (0u64, 0u64);
    let macs: Vec<[u8; 6]> = (0..12u8).map(|i| [0x52, 0x54, 0, 0, 0, i]).collect();
    while Instant::now() < deadline {
        const CAP: usize = 64;
        let mut sw = Switch::new(1_000_000, CAP);
        let mut ports: Vec<(PortId, Option<u16>)> = Vec::new();
        for _ in 0..1 + rng.below(6) {
            let vlan = (rng.below(3) == 0).then(|| 1 + rng.below(3) as u16);
            ports.push((sw.add_port(vlan), vlan));
        }
        let mut now = 0u64;
        for _ in 0..2000 {
            now += rng.below(2000);
            match rng.below(50) {
                0 if ports.len() > 1 => {
                    let i = rng.below(ports.len() as u64) as usize;
                    sw.remove_port(ports.remove(i).0);
                    continue;
                }
                1 => {
                    let vlan = (rng.below(3) == 0).then(|| 1 + rng.below(3) as u16);
                    ports.push((sw.add_port(vlan), vlan));
                    continue;
                }
                2 => sw.age(now),
                _ => {}
            }
            let len = match rng.below(4) {
                0 => rng.below(20) as usize,
                _ => 14 + rng.below(1500) as usize,
            };
            let mut f: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if len >= 12 && rng.below(3) != 0 {
                let d = macs[rng.below(macs.len() as u64) as usize];
                let s = macs[rng.below(macs.len() as u64) as usize];
                f[..6].copy_from_slice(&d);
                f[6..12].copy_from_slice(&s);
            }
            let (ingress, vlan) = ports[rng.below(ports.len() as u64) as usize];
            let live: Vec<PortId> = ports.iter().map(|p| p.0).collect();
            match sw.forward(now, ingress, &f) {
                Decision::Unicast(p) => {
                    if p == ingress || !live.contains(&p) {
                        return Err(format!("unicast to {p:?} from {ingress:?}"));
                    }
                }
                Decision::Flood(ps) => {
                    for p in &ps {
                        let same_vlan = ports.iter().any(|(q, v)| q == p && *v == vlan);
                        if *p == ingress || !same_vlan {
                            return Err(format!("flood to {p:?} from {ingress:?} (vlan {vlan:?})"));
                        }
                    }
                }
                Decision::Drop(_) => {}
            }
            if sw.learned() > CAP {
                return Err(format!("{} addresses learned, bound {CAP}", sw.learned()));
            }
            frames += 1;
        }
        rounds += 1;
    }
    println!(
        "fuzz switch: {frames} frames in {rounds} rounds over {seconds} s, no panic, no hairpin, no VLAN leak, table bounded"
    );
    Ok(())
}

/// `fuzz netif SECONDS`: random and mutated TX slot chains through netback's packet
/// parser. Checked: no panic; an accepted packet's fragments add up to its length, stay
/// inside their pages, and it used no more slots than the fatal bound.
pub fn netif(seconds: u64) -> Result<(), String> {
    use bulkhead_netback::abi::*;
    use bulkhead_netback::packet::{finish, Packet};
    use bulkhead_netback::tx::{parse, Gso, TxError, TxSlot};
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut rng = seed("netif", 0x0e7f_1f00_d5ee_d5ed);
    let (mut packets, mut ok, mut dropped, mut fatal) = (0u64, 0u64, 0u64, 0u64);
    let (mut frames, mut finished) = (0u64, 0u64);
    while Instant::now() < deadline {
        for _ in 0..1000 {
            // Mostly plausible chains, with random flags, sizes and offsets mixed in.
            let n = rng.below(26) as usize;
            let mut slots: Vec<[u8; 12]> = Vec::with_capacity(n);
            for i in 0..n {
                let mut b = [0u8; 12];
                if rng.below(4) == 0 {
                    for x in b.iter_mut() {
                        *x = rng.next_u64() as u8;
                    }
                } else {
                    let more = if i + 1 < n { NETTXF_MORE_DATA } else { 0 };
                    let s = TxSlot {
                        gref: rng.next_u64() as u32,
                        offset: rng.below(4200) as u16,
                        flags: more | (rng.below(4) as u16),
                        id: i as u16,
                        size: rng.below(2100) as u16,
                    };
                    b = s.encode();
                }
                slots.push(b);
            }
            let first = TxSlot {
                gref: 1,
                offset: rng.below(2048) as u16,
                flags: (if rng.below(4) == 0 {
                    rng.below(16)
                } else {
                    rng.below(4)
                } as u16)
                    | if n > 0 { NETTXF_MORE_DATA } else { 0 },
                id: 999,
                size: rng.below(20000) as u16,
            };
            let mut it = slots.into_iter();
            packets += 1;
            match parse(first, || it.next()) {
                Ok(p) => {
                    ok += 1;
                    let sum: usize = p.fragments.iter().map(|f| f.len as usize).sum();
                    if sum != p.len
                        || p.len < ETH_HLEN
                        || p.fragments
                            .iter()
                            .any(|f| f.offset as usize + f.len as usize > PAGE_SIZE)
                        || p.ids.len() > FATAL_SLOTS + EXTRA_TYPE_MAX as usize
                    {
                        return Err(format!("inconsistent packet accepted: {p:?}"));
                    }
                }
                Err(TxError::Drop { .. }) => dropped += 1,
                Err(TxError::Fatal(_)) => fatal += 1,
            }
            // The offload work runs on guest bytes too: headers that lie about lengths,
            // protocols and options, with checksum and GSO requests.
            let len = 14 + rng.below(3000) as usize;
            let mut f: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if rng.below(4) != 0 {
                f[12..14].copy_from_slice(if rng.below(2) == 0 {
                    &[0x08, 0]
                } else {
                    &[0x86, 0xdd]
                });
                if len > 15 {
                    f[14] = if f[12] == 0x08 { 0x45 } else { 0x60 };
                }
            }
            let gso = (rng.below(2) == 0).then(|| Gso {
                size: rng.below(2000) as u16,
                kind: rng.below(3) as u8,
            });
            let p = Packet {
                data: f,
                csum_blank: rng.below(2) == 0,
                data_validated: false,
                gso,
            };
            frames += 1;
            if let Ok(out) = finish(p.clone()) {
                let out: Vec<Vec<u8>> = out.collect();
                finished += 1;
                let most = p.gso.map_or(1, |g| len / (g.size.max(1) as usize) + 1);
                if out.len() > most || out.iter().any(|s| s.len() > len.max(14 + 60 + 60) + 60) {
                    return Err(format!(
                        "offload work made {} frames of a {len}-byte packet",
                        out.len()
                    ));
                }
            }
        }
    }
    println!(
        "fuzz netif: {packets} TX chains over {seconds} s ({ok} accepted, {dropped} dropped, {fatal} fatal), {frames} frames through checksum/GSO completion ({finished} completed), no panic, accepted packets consistent"
    );
    Ok(())
}
