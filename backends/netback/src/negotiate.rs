//! The xenstore side of a vif, as Linux xen-netback does it: features offered before
//! InitWait ([`Offer::keys`]), the toolstack's settings in the backend directory
//! ([`read_backend`]: `mac`, `rate`), and the frontend's rings and wishes
//! ([`read_frontend`]), all untrusted.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use bulkhead_xen::abi::{GrantRef, Port};
use bulkhead_xenbus::keys::{flag, optional, queue_dir, required, Keys};

use crate::rate::Rate;

/// What the backend offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    pub max_queues: u32,
}

impl Offer {
    pub fn keys(&self) -> Vec<(&'static str, String)> {
        let one = || String::from("1");
        alloc::vec![
            ("feature-sg", one()),
            ("feature-gso-tcpv4", one()),
            ("feature-gso-tcpv6", one()),
            ("feature-ipv6-csum-offload", one()),
            ("feature-rx-copy", one()),
            ("feature-rx-flip", String::from("0")),
            // The backend side of rx-notify: we rely on the frontend's RX notifications
            // (and require them, see `read_frontend`).
            ("feature-rx-notify", one()),
            // Multicast control as negotiated at connect. Not the dynamic variant: it
            // promises to follow `request-multicast-control` changing while connected,
            // which we do not watch (Linux's netfront never uses it).
            ("feature-multicast-control", one()),
            ("feature-split-event-channels", one()),
            ("feature-ctrl-ring", one()),
            ("multi-queue-max-queues", self.max_queues.to_string()),
        ]
    }
}

/// The toolstack's settings for this vif (backend directory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub mac: [u8; 6],
    pub rate: Option<Rate>,
    /// xl's `ip=`: the IPv4 addresses the guest may send from (ARP and IPv4), as Linux's
    /// vif scripts enforce with iptables; absent: any.
    pub ips: Option<Ips>,
}

/// Most addresses one `ip=` may list.
pub const MAX_IPS: usize = 8;

/// The IPv4 addresses a vif may use as a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ips {
    n: usize,
    addrs: [[u8; 4]; MAX_IPS],
}

impl Ips {
    /// `ip` as xl writes it: addresses separated by spaces (or commas).
    pub fn parse(s: &str) -> Option<Ips> {
        let mut ips = Ips {
            n: 0,
            addrs: [[0; 4]; MAX_IPS],
        };
        for a in s
            .trim_end_matches('\0')
            .split([' ', ','])
            .filter(|a| !a.is_empty())
        {
            if ips.n == MAX_IPS {
                return None;
            }
            let mut q = [0u8; 4];
            let mut parts = a.split('.');
            for b in q.iter_mut() {
                *b = parts.next()?.parse().ok()?;
            }
            if parts.next().is_some() {
                return None;
            }
            ips.addrs[ips.n] = q;
            ips.n += 1;
        }
        (ips.n > 0).then_some(ips)
    }

    pub fn contains(&self, a: [u8; 4]) -> bool {
        self.addrs[..self.n].contains(&a)
    }

    /// Whether a frame the guest sends may leave: ARP and IPv4 only from a listed
    /// address (or 0.0.0.0, a guest asking DHCP or probing with ARP); everything else
    /// is not about IPv4 addresses and is left to the other checks.
    pub fn allows(&self, f: &[u8]) -> bool {
        let src = match f.get(12..14) {
            Some([0x08, 0x06]) => f.get(28..32),
            Some([0x08, 0x00]) => f.get(26..30),
            _ => return true,
        };
        match src {
            Some(a) => {
                let a = [a[0], a[1], a[2], a[3]];
                a == [0; 4] || self.contains(a)
            }
            None => false,
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`, unicast.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let s = s.trim_end_matches('\0').trim();
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in m.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    if parts.next().is_some() || m[0] & 1 != 0 {
        return None;
    }
    Some(m)
}

/// `rate` is "BYTES,USECS" as xl writes it (credit per period); absent: unlimited.
pub fn parse_rate(s: &str) -> Option<Rate> {
    let s = s.trim_end_matches('\0').trim();
    let (b, u) = s.split_once(',')?;
    let bytes: u64 = b.trim().parse().ok()?;
    let usecs: u64 = u.trim().parse().ok()?;
    if bytes == 0 || usecs == 0 || usecs > 3_600_000_000 {
        return None;
    }
    Some(Rate::new(bytes, usecs * 1000))
}

pub async fn read_backend(keys: &mut impl Keys) -> Result<Settings, String> {
    let mac = keys
        .get("mac")
        .await
        .ok_or_else(|| String::from("toolstack wrote no mac"))?;
    let mac = parse_mac(&mac).ok_or_else(|| format!("mac is not a unicast address: {mac:?}"))?;
    let rate = match keys.get("rate").await {
        None => None,
        Some(r) => Some(parse_rate(&r).ok_or_else(|| format!("rate is not BYTES,USECS: {r:?}"))?),
    };
    let ips = match keys.get("ip").await {
        None => None,
        Some(i) if i.trim_end_matches('\0').trim().is_empty() => None,
        Some(i) => Some(Ips::parse(&i).ok_or_else(|| {
            format!("ip is not a list of at most {MAX_IPS} IPv4 addresses: {i:?}")
        })?),
    };
    Ok(Settings { mac, rate, ips })
}

/// One queue's rings and event channels (the same port twice without split channels).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueRings {
    pub tx_ref: GrantRef,
    pub rx_ref: GrantRef,
    pub tx_event: Port,
    pub rx_event: Port,
}

impl QueueRings {
    pub fn split(&self) -> bool {
        self.tx_event != self.rx_event
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontend {
    pub queues: Vec<QueueRings>,
    /// The frontend takes scatter-gather (multi-slot) receives.
    pub sg: bool,
    pub gso_tcpv4: bool,
    pub gso_tcpv6: bool,
    /// The frontend accepts packets with a blank checksum (IPv4 / IPv6).
    pub csum_v4: bool,
    pub csum_v6: bool,
    /// The frontend filters multicast and sends us its addresses.
    pub multicast_control: bool,
    /// The control ring (hash steering), when the frontend set one up.
    pub ctrl: Option<(GrantRef, Port)>,
}

/// Read and check the frontend's parameters. Like Linux, refuse frontends that do not
/// use receive-copy or rx-notify (the flipping protocol and polled receive are gone).
pub async fn read_frontend(keys: &mut impl Keys, offer: &Offer) -> Result<Frontend, String> {
    if !flag(keys, "request-rx-copy", false).await? {
        return Err(String::from(
            "frontend does not request rx-copy (page flipping is not supported)",
        ));
    }
    if !flag(keys, "feature-rx-notify", false).await? {
        return Err(String::from("frontend lacks feature-rx-notify (mandatory)"));
    }
    if flag(keys, "feature-gso-tcpv4-prefix", false).await?
        || flag(keys, "feature-gso-tcpv6-prefix", false).await?
    {
        return Err(String::from("GSO prefix descriptors are not supported"));
    }
    let nq = optional(keys, "multi-queue-num-queues", 1).await?;
    if nq == 0 || nq > offer.max_queues {
        return Err(format!(
            "frontend asked for {nq} queues; at most {} offered",
            offer.max_queues
        ));
    }
    let mut queues = Vec::with_capacity(nq as usize);
    for q in 0..nq {
        let dir = queue_dir(nq, q);
        let tx_ref = required(keys, &format!("{dir}tx-ring-ref")).await?;
        let rx_ref = required(keys, &format!("{dir}rx-ring-ref")).await?;
        let (tx_event, rx_event) = match keys.get(&format!("{dir}event-channel-tx")).await {
            Some(_) => (
                required(keys, &format!("{dir}event-channel-tx")).await?,
                required(keys, &format!("{dir}event-channel-rx")).await?,
            ),
            None => {
                let e = required(keys, &format!("{dir}event-channel")).await?;
                (e, e)
            }
        };
        queues.push(QueueRings {
            tx_ref,
            rx_ref,
            tx_event,
            rx_event,
        });
    }
    let sg = flag(keys, "feature-sg", false).await?;
    let ctrl = match keys.get("ctrl-ring-ref").await {
        None => None,
        Some(_) => Some((
            required(keys, "ctrl-ring-ref").await?,
            required(keys, "event-channel-ctrl").await?,
        )),
    };
    Ok(Frontend {
        ctrl,
        queues,
        sg,
        // GSO packets span several slots: only with scatter-gather.
        gso_tcpv4: sg && flag(keys, "feature-gso-tcpv4", false).await?,
        gso_tcpv6: sg && flag(keys, "feature-gso-tcpv6", false).await?,
        csum_v4: !flag(keys, "feature-no-csum-offload", false).await?,
        csum_v6: flag(keys, "feature-ipv6-csum-offload", false).await?,
        multicast_control: flag(keys, "request-multicast-control", false).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use bulkhead_xenbus::keys::fake::{map, run};

    const OFFER: Offer = Offer { max_queues: 4 };

    /// What Linux netfront writes for one queue with split event channels.
    const NETFRONT: &[(&str, &str)] = &[
        ("tx-ring-ref", "8"),
        ("rx-ring-ref", "9"),
        ("event-channel-tx", "5"),
        ("event-channel-rx", "6"),
        ("request-rx-copy", "1"),
        ("feature-rx-notify", "1"),
        ("feature-sg", "1"),
        ("feature-gso-tcpv4", "1"),
        ("feature-gso-tcpv6", "1"),
        ("feature-ipv6-csum-offload", "1"),
    ];

    #[test]
    fn linux_netfront_single_queue() {
        let f = run(read_frontend(&mut map(NETFRONT), &OFFER)).unwrap();
        assert_eq!(
            f.queues,
            [QueueRings {
                tx_ref: 8,
                rx_ref: 9,
                tx_event: 5,
                rx_event: 6
            }]
        );
        assert!(f.sg && f.gso_tcpv4 && f.gso_tcpv6 && f.csum_v4 && f.csum_v6);
        assert!(f.queues[0].split());
        assert_eq!(f.ctrl, None);
        let mut m = map(NETFRONT);
        m.0.insert("ctrl-ring-ref".into(), "30".into());
        assert!(run(read_frontend(&mut m, &OFFER)).is_err());
        m.0.insert("event-channel-ctrl".into(), "11".into());
        assert_eq!(
            run(read_frontend(&mut m, &OFFER)).unwrap().ctrl,
            Some((30, 11))
        );
    }

    #[test]
    fn multi_queue_and_one_channel() {
        let m = map(&[
            ("multi-queue-num-queues", "2"),
            ("queue-0/tx-ring-ref", "10"),
            ("queue-0/rx-ring-ref", "11"),
            ("queue-0/event-channel", "7"),
            ("queue-1/tx-ring-ref", "12"),
            ("queue-1/rx-ring-ref", "13"),
            ("queue-1/event-channel", "8"),
            ("request-rx-copy", "1"),
            ("feature-rx-notify", "1"),
            ("feature-no-csum-offload", "1"),
        ]);
        let f = run(read_frontend(&mut { m }, &OFFER)).unwrap();
        assert_eq!(f.queues.len(), 2);
        assert_eq!(f.queues[1].tx_ref, 12);
        assert!(!f.queues[1].split());
        assert!(!f.sg && !f.gso_tcpv4 && !f.csum_v4);
    }

    #[test]
    fn ip_lists() {
        let i = Ips::parse("10.0.2.99 192.168.1.5").unwrap();
        assert!(i.contains([10, 0, 2, 99]) && i.contains([192, 168, 1, 5]));
        assert!(!i.contains([10, 0, 2, 98]));
        assert!(Ips::parse("10.0.2.99,10.0.2.100\0").is_some());
        for bad in [
            "",
            "10.0.2",
            "10.0.2.256",
            "10.0.2.1.5",
            "a.b.c.d",
            "1.1.1.1 2.2.2.2 3.3.3.3 4.4.4.4 5.5.5.5 6.6.6.6 7.7.7.7 8.8.8.8 9.9.9.9",
        ] {
            assert_eq!(Ips::parse(bad), None, "{bad:?}");
        }
        let backend = |ip: Option<&str>| {
            let mut m = map(&[("mac", "00:16:3e:00:00:01")]);
            if let Some(ip) = ip {
                m.0.insert("ip".into(), ip.into());
            }
            run(read_backend(&mut m))
        };
        assert_eq!(backend(None).unwrap().ips, None);
        assert_eq!(backend(Some("")).unwrap().ips, None);
        assert!(backend(Some("10.0.2.99")).unwrap().ips.is_some());
        assert!(
            backend(Some("10.0.2.999")).is_err(),
            "a bad ip= refuses the vif"
        );
    }

    #[test]
    fn refusals() {
        let without = |k: &str| {
            let mut m = map(NETFRONT);
            m.0.remove(k);
            run(read_frontend(&mut m, &OFFER))
        };
        assert!(without("request-rx-copy").is_err());
        assert!(without("feature-rx-notify").is_err());
        assert!(without("tx-ring-ref").is_err());
        assert!(without("event-channel-rx").is_err());
        let with = |k: &str, v: &str| {
            let mut m = map(NETFRONT);
            m.0.insert(k.into(), v.into());
            run(read_frontend(&mut m, &OFFER))
        };
        assert!(with("multi-queue-num-queues", "5").is_err());
        assert!(with("multi-queue-num-queues", "0").is_err());
        assert!(with("feature-sg", "2").is_err());
        assert!(with("tx-ring-ref", "-1").is_err());
        assert!(with("feature-gso-tcpv4-prefix", "1").is_err());
    }

    /// Finding 6 of the hostile-guest review: we do not watch `request-multicast-control` while connected, so we
    /// must not promise to (a frontend relying on it would filter wrongly).
    #[test]
    fn only_what_is_implemented_is_offered() {
        let keys = OFFER.keys();
        assert!(keys.iter().any(|(k, _)| *k == "feature-multicast-control"));
        assert!(!keys
            .iter()
            .any(|(k, _)| *k == "feature-dynamic-multicast-control"));
    }

    #[test]
    fn backend_settings() {
        let s = run(read_backend(&mut map(&[
            ("mac", "00:16:3e:aa:bb:01"),
            ("rate", "125000,50000"),
        ])))
        .unwrap();
        assert_eq!(s.mac, [0x00, 0x16, 0x3e, 0xaa, 0xbb, 0x01]);
        assert!(s.rate.is_some());
        for bad in [
            "01:16:3e:aa:bb:01",
            "00:16:3e:aa:bb",
            "00:16:3e:aa:bb:01:02",
            "zz:16:3e:aa:bb:01",
        ] {
            assert!(
                run(read_backend(&mut map(&[("mac", bad)]))).is_err(),
                "{bad}"
            );
        }
        assert!(run(read_backend(&mut map(&[
            ("mac", "00:16:3e:aa:bb:01"),
            ("rate", "5")
        ])))
        .is_err());
        assert!(run(read_backend(&mut map(&[]))).is_err());
    }
}
