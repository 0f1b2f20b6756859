//! The network side of bare-QEMU scenarios: what the NIC is plugged into, and a peer the
//! runner controls that talks to Bulkhead's management address.
//!
//! - `Slirp`: QEMU's user network (DHCP server, 10.0.2.0/24) with a host port forwarded
//!   to Bulkhead's TCP port 80; the runner fetches the status page through it.
//! - `Peer`: QEMU's UDP socket netdev, one Ethernet frame per datagram, to a socket the
//!   runner owns; Bulkhead has a static address and the runner speaks ARP and ICMP to
//!   it with frames it builds itself, sends malformed frames, and times an echo flood.
//!
//! Results come back as console-like lines ("[peer] ...") that the scenario's
//! expectations match, and "figure: ..." lines that are printed, never asserted.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    Slirp { nic: &'static str },
    Peer { nic: &'static str },
}

pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const PEER_IP: [u8; 4] = [192, 168, 76, 1];
pub const MGMT_IP: [u8; 4] = [192, 168, 76, 2];
pub const GUEST_MAC: &str = "52:54:00:12:34:56";

/// Starts the peer thread; it reports (when, what) lines on the channel.
pub type StartPeer = Box<dyn FnOnce(Sender<(Instant, String)>) + Send>;

/// What QEMU needs, and what the peer thread needs once the kernel is up.
pub struct Wiring {
    pub qemu_args: Vec<String>,
    /// The console line after which the peer starts.
    pub trigger: crate::qemu::Want,
    pub start: StartPeer,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

pub fn wire(net: Net) -> Result<Wiring, String> {
    match net {
        Net::Slirp { nic } => {
            let port = free_port();
            Ok(Wiring {
                qemu_args: vec![
                    "-netdev".into(),
                    format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:80"),
                    "-device".into(),
                    format!("{nic},netdev=n0,mac={GUEST_MAC}"),
                ],
                trigger: crate::qemu::event(
                    "mgmt-address",
                    &[("addr", "10.0.2.15/24"), ("source", "dhcp")],
                ),
                start: Box::new(move |tx| status_page(port, tx)),
            })
        }
        Net::Peer { nic } => {
            let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("udp: {e}"))?;
            let ours = sock.local_addr().map_err(|e| e.to_string())?.port();
            let theirs = free_port();
            Ok(Wiring {
                qemu_args: vec![
                    "-netdev".into(),
                    format!("socket,id=n0,udp=127.0.0.1:{ours},localaddr=127.0.0.1:{theirs}"),
                    "-device".into(),
                    format!("{nic},netdev=n0,mac={GUEST_MAC}"),
                ],
                trigger: crate::qemu::event(
                    "mgmt-address",
                    &[("addr", "192.168.76.2/24"), ("source", "static")],
                ),
                start: Box::new(move |tx| {
                    let say = |l: String| {
                        let _ = tx.send((Instant::now(), l));
                    };
                    match sock
                        .connect(("127.0.0.1", theirs))
                        .map_err(|e| e.to_string())
                        .and_then(|_| peer(&sock, nic, &say))
                    {
                        Ok(()) => say("[peer] done".into()),
                        Err(e) => say(format!("[peer] FAIL: {e}")),
                    }
                }),
            })
        }
    }
}

fn status_page(port: u16, tx: Sender<(Instant, String)>) {
    let say = |l: String| {
        let _ = tx.send((Instant::now(), l));
    };
    let fetch = || -> Result<String, String> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        s.write_all(b"GET /status HTTP/1.0\r\nHost: bulkhead\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut body = String::new();
        s.read_to_string(&mut body).map_err(|e| e.to_string())?;
        Ok(body)
    };
    // slirp accepts the connection even before the guest listens: retry briefly.
    let mut last = String::new();
    for _ in 0..10 {
        match fetch() {
            Ok(b) if b.starts_with("HTTP/1.0 200 OK") => {
                let lists_nic = b.contains(&format!("MAC {GUEST_MAC} link Up"));
                let lists_mgmt = b.contains("mgmt: 10.0.2.15/24 dhcp");
                for l in b
                    .lines()
                    .filter(|l| l.starts_with("nic ") || l.starts_with("mgmt"))
                {
                    say(format!("[peer] | {l}"));
                }
                if lists_nic && lists_mgmt {
                    say(format!(
                        "[peer] status page: 200 OK, {} bytes, lists the NIC and the DHCP address",
                        b.len()
                    ));
                } else {
                    say(format!(
                        "[peer] FAIL: status page lacks the NIC or address:\n{b}"
                    ));
                }
                return;
            }
            Ok(b) => last = b.lines().next().unwrap_or("").to_string(),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    say(format!("[peer] FAIL: no status page: {last}"));
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn arp_request() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&PEER_IP);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&MGMT_IP);
    f
}

fn echo_request(dst: [u8; 6], id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(payload);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let total = (20 + icmp.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 1, 0, 0]);
    ip.extend_from_slice(&PEER_IP);
    ip.extend_from_slice(&MGMT_IP);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = dst.to_vec();
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}

/// (id, seq, payload) of an echo reply to us.
fn parse_reply(f: &[u8]) -> Option<(u16, u16, &[u8])> {
    if f.len() < 42 || f[..6] != PEER_MAC || f[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &f[14..];
    let ihl = (ip[0] & 0xf) as usize * 4;
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if ip[9] != 1 || ip[12..16] != MGMT_IP || total > ip.len() || ihl < 20 || total < ihl + 8 {
        return None;
    }
    let icmp = &ip[ihl..total];
    if icmp[0] != 0 || checksum(icmp) != 0 {
        return None;
    }
    Some((
        u16::from_be_bytes([icmp[4], icmp[5]]),
        u16::from_be_bytes([icmp[6], icmp[7]]),
        &icmp[8..],
    ))
}

fn recv(sock: &UdpSocket, until: Instant, mut want: impl FnMut(&[u8]) -> bool) -> bool {
    let mut buf = [0u8; 2048];
    while Instant::now() < until {
        let left = until
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let _ = sock.set_read_timeout(Some(left));
        if let Ok(n) = sock.recv(&mut buf) {
            if want(&buf[..n]) {
                return true;
            }
        }
    }
    false
}

fn pings(sock: &UdpSocket, mac: [u8; 6], id: u16, n: u16) -> Result<u16, String> {
    let mut ok = 0;
    for seq in 0..n {
        let payload: Vec<u8> = (0..56).map(|i| (i as u8) ^ (seq as u8)).collect();
        sock.send(&echo_request(mac, id, seq, &payload))
            .map_err(|e| e.to_string())?;
        if recv(sock, Instant::now() + Duration::from_secs(2), |f| {
            parse_reply(f) == Some((id, seq, &payload[..]))
        }) {
            ok += 1;
        }
    }
    Ok(ok)
}

fn peer(sock: &UdpSocket, nic: &str, say: &dyn Fn(String)) -> Result<(), String> {
    // ARP: who has 192.168.76.2?
    let mut mac = None;
    for _ in 0..5 {
        sock.send(&arp_request()).map_err(|e| e.to_string())?;
        recv(sock, Instant::now() + Duration::from_secs(1), |f| {
            let reply = f.len() >= 42
                && f[12..14] == [0x08, 0x06]
                && f[20..22] == [0, 2]
                && f[28..32] == MGMT_IP
                && f[32..38] == PEER_MAC;
            if reply {
                mac = Some(<[u8; 6]>::try_from(&f[22..28]).unwrap());
            }
            reply
        });
        if mac.is_some() {
            break;
        }
    }
    let mac = mac.ok_or("no ARP reply for 192.168.76.2")?;
    say(format!(
        "[peer] ARP: 192.168.76.2 is at {}",
        mac.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    ));
    let ok = pings(sock, mac, 0x4242, 20)?;
    say(format!(
        "[peer] ping: {ok}/20 replies with the payload intact"
    ));
    // Malformed frames: a runt, an oversized frame, a truncated IP packet. None may stop
    // Bulkhead from answering.
    let mut big = echo_request(mac, 1, 1, &[0u8; 1600]);
    big.truncate(1600);
    let mut cut = echo_request(mac, 2, 2, &[7u8; 100]);
    cut.truncate(40);
    for f in [vec![0xffu8; 8], big, cut] {
        sock.send(&f).map_err(|e| e.to_string())?;
    }
    let ok = pings(sock, mac, 0x4343, 5)?;
    say(format!("[peer] after bad frames: ping {ok}/5"));
    // Figures: an echo flood with up to 32 requests in flight for 3 s.
    let payload = vec![0x5au8; 1400];
    let (mut sent, mut got, mut seq) = (0u64, 0u64, 0u16);
    let start = Instant::now();
    let end = start + Duration::from_secs(3);
    let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        while sent - got < 32 {
            sock.send(&echo_request(mac, 0x5151, seq, &payload))
                .map_err(|e| e.to_string())?;
            seq = seq.wrapping_add(1);
            sent += 1;
        }
        match sock.recv(&mut buf) {
            Ok(n) if parse_reply(&buf[..n]).is_some_and(|(id, ..)| id == 0x5151) => got += 1,
            Ok(_) => {}
            // A lost reply: let another request go.
            Err(_) => sent = got,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let frame_bits = (14 + 20 + 8 + 1400) as f64 * 8.0;
    say(format!(
        "figure: {nic} echo through Bulkhead (bare QEMU, TCG): {:.0} frames/s each way, {:.1} Mbit/s each way",
        got as f64 / secs,
        got as f64 * frame_bits / secs / 1e6
    ));
    Ok(())
}
