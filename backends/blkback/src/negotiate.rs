//! The xenstore side of a vbd: what the backend publishes, and reading (untrusted) what
//! the frontend published, as Linux's blkback does.
//!
//! Before InitWait the backend offers its transport limits ([`Offer::keys`]); when the
//! frontend is Initialised the backend reads the frontend's rings ([`read_frontend`]),
//! then publishes the disk ([`DiskInfo::keys`]) and goes Connected.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use bulkhead_xen::abi::{GrantRef, Port};
pub use bulkhead_xenbus::keys::Keys;
use bulkhead_xenbus::keys::{optional, queue_dir, required};

use crate::abi::{Protocol, VDISK_CDROM, VDISK_READONLY, VDISK_REMOVABLE};

/// Transport limits the backend offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    pub max_indirect_segments: u32,
    pub max_ring_page_order: u32,
    pub max_queues: u32,
    pub persistent: bool,
}

impl Offer {
    pub fn keys(&self) -> Vec<(&'static str, String)> {
        alloc::vec![
            (
                "feature-max-indirect-segments",
                self.max_indirect_segments.to_string()
            ),
            ("max-ring-page-order", self.max_ring_page_order.to_string()),
            ("multi-queue-max-queues", self.max_queues.to_string()),
            ("feature-persistent", bool01(self.persistent)),
        ]
    }
}

fn bool01(b: bool) -> String {
    String::from(if b { "1" } else { "0" })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Discard {
    pub granularity: u32,
    pub alignment: u32,
    pub secure: bool,
}

/// The disk as the frontend will see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskInfo {
    /// Capacity in 512-byte sectors, as Linux's blkback reports it.
    pub sectors: u64,
    pub sector_size: u32,
    pub physical_sector_size: u32,
    pub read_only: bool,
    pub removable: bool,
    pub cdrom: bool,
    pub flush: bool,
    pub barrier: bool,
    pub discard: Option<Discard>,
}

impl DiskInfo {
    /// The disk a volume of `blocks` blocks of `block_size` bytes with `features` is to
    /// the frontend: exported read-only or not, discard only when the device has it,
    /// the toolstack left it on (`discard-enable`, xl's `discard`/`no-discard`) and the
    /// disk is writable; a flush also serves barriers (both drain what came before). And
    /// the request limits that follow from it, with `max_indirect_segments` offered.
    pub fn for_volume(
        blocks: u64,
        block_size: u32,
        features: bulkhead_block::Features,
        read_only: bool,
        discard_enable: bool,
        max_indirect_segments: usize,
    ) -> (DiskInfo, crate::request::Limits) {
        let disk = DiskInfo {
            sectors: blocks.saturating_mul(block_size as u64 / 512),
            sector_size: block_size,
            physical_sector_size: block_size,
            read_only,
            removable: false,
            cdrom: false,
            flush: features.flush,
            barrier: features.flush,
            discard: (features.discard && discard_enable && !read_only).then_some(Discard {
                granularity: block_size,
                alignment: 0,
                secure: false,
            }),
        };
        let limits = crate::request::Limits {
            max_indirect_segments,
            barrier: disk.barrier,
            flush: disk.flush,
            discard: disk.discard.is_some(),
            secure_discard: false,
        };
        (disk, limits)
    }

    pub fn info(&self) -> u32 {
        let mut i = 0;
        if self.read_only {
            i |= VDISK_READONLY;
        }
        if self.removable {
            i |= VDISK_REMOVABLE;
        }
        if self.cdrom {
            i |= VDISK_CDROM;
        }
        i
    }

    /// Published in one transaction just before Connected.
    pub fn keys(&self, persistent: bool) -> Vec<(&'static str, String)> {
        let mut k = alloc::vec![
            ("feature-flush-cache", bool01(self.flush)),
            ("feature-barrier", bool01(self.barrier)),
            ("feature-discard", bool01(self.discard.is_some())),
            ("feature-persistent", bool01(persistent)),
            ("sectors", self.sectors.to_string()),
            ("info", self.info().to_string()),
            ("sector-size", self.sector_size.to_string()),
            (
                "physical-sector-size",
                self.physical_sector_size.to_string()
            ),
        ];
        if let Some(d) = self.discard {
            k.push(("discard-granularity", d.granularity.to_string()));
            k.push(("discard-alignment", d.alignment.to_string()));
            k.push(("discard-secure", bool01(d.secure)));
        }
        k
    }
}

/// One ring the frontend set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueRing {
    pub refs: Vec<GrantRef>,
    pub event_channel: Port,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontend {
    pub protocol: Protocol,
    pub persistent: bool,
    pub ring_page_order: u32,
    pub queues: Vec<QueueRing>,
}

/// Read and check the frontend's transport parameters against what we offered.
pub async fn read_frontend(keys: &mut impl Keys, offer: &Offer) -> Result<Frontend, String> {
    let nq = optional(keys, "multi-queue-num-queues", 1).await?;
    if nq == 0 || nq > offer.max_queues {
        return Err(format!(
            "frontend asked for {nq} queues; at most {} offered",
            offer.max_queues
        ));
    }
    let order = optional(keys, "ring-page-order", 0).await?;
    if order > offer.max_ring_page_order {
        return Err(format!(
            "frontend ring-page-order {order} exceeds the offered {}",
            offer.max_ring_page_order
        ));
    }
    let proto = keys.get("protocol").await;
    let protocol = Protocol::parse(proto.as_deref())
        .ok_or_else(|| format!("unsupported protocol {:?}", proto.unwrap_or_default()))?;
    let persistent = offer.persistent && optional(keys, "feature-persistent", 0).await? == 1;
    let mut queues = Vec::with_capacity(nq as usize);
    for q in 0..nq {
        let dir = queue_dir(nq, q);
        let mut refs = Vec::with_capacity(1 << order);
        if order == 0 {
            refs.push(required(keys, &format!("{dir}ring-ref")).await?);
        } else {
            for i in 0..(1u32 << order) {
                refs.push(required(keys, &format!("{dir}ring-ref{i}")).await?);
            }
        }
        let event_channel = required(keys, &format!("{dir}event-channel")).await?;
        queues.push(QueueRing {
            refs,
            event_channel,
        });
    }
    Ok(Frontend {
        protocol,
        persistent,
        ring_page_order: order,
        queues,
    })
}

/// Whether the toolstack's `mode` node (r or w) makes the disk read-only. Fail closed:
/// without a mode the toolstack's intent is unknown, and guessing read-write could let a
/// guest write a disk meant to be read-only.
pub fn read_only(mode: Option<&str>) -> Result<bool, String> {
    match mode {
        Some("r") | Some("ro") => Ok(true),
        Some("w") | Some("rw") => Ok(false),
        None => Err("no mode node (r or w); refusing to guess read-write".into()),
        Some(m) => Err(format!("mode {m:?} is neither r nor w")),
    }
}

#[cfg(test)]
mod disk_tests {
    use super::*;
    use bulkhead_block::Features;

    fn features(flush: bool, discard: bool) -> Features {
        Features {
            flush,
            discard,
            write_zeroes: false,
            volatile_cache: true,
        }
    }

    #[test]
    fn the_disk_a_volume_is_to_the_frontend() {
        let (d, l) = DiskInfo::for_volume(1000, 4096, features(true, true), false, true, 256);
        assert_eq!(
            (d.sectors, d.sector_size, d.physical_sector_size),
            (8000, 4096, 4096)
        );
        assert!(d.flush && d.barrier && l.flush && l.barrier);
        assert_eq!(d.discard.map(|x| x.granularity), Some(4096));
        assert!(l.discard && !l.secure_discard);
        assert_eq!(l.max_indirect_segments, 256);
        assert_eq!(d.info(), 0);
        // Read-only: no discard, VDISK_READONLY.
        let (d, l) = DiskInfo::for_volume(1000, 512, features(true, true), true, true, 256);
        assert!(d.discard.is_none() && !l.discard && d.read_only);
        assert_eq!(d.info() & VDISK_READONLY, VDISK_READONLY);
        // The toolstack turned discard off, or the device has none; no flush, no barrier.
        let (d, _) = DiskInfo::for_volume(1000, 512, features(true, true), false, false, 0);
        assert!(d.discard.is_none());
        let (d, l) = DiskInfo::for_volume(1000, 512, features(false, false), false, true, 0);
        assert!(d.discard.is_none() && !d.flush && !d.barrier && !l.flush && !l.barrier);
        // A capacity that would overflow saturates rather than wraps.
        let (d, _) = DiskInfo::for_volume(u64::MAX, 4096, features(false, false), false, true, 0);
        assert_eq!(d.sectors, u64::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use bulkhead_xenbus::keys::fake::{map, run};

    const OFFER: Offer = Offer {
        max_indirect_segments: 256,
        max_ring_page_order: 2,
        max_queues: 4,
        persistent: true,
    };

    #[test]
    fn single_page_single_queue() {
        let f = run(read_frontend(
            &mut map(&[
                ("ring-ref", "8"),
                ("event-channel", "5"),
                ("protocol", "x86_64-abi"),
                ("feature-persistent", "1"),
            ]),
            &OFFER,
        ))
        .unwrap();
        assert_eq!(f.protocol, Protocol::X86_64);
        assert!(f.persistent);
        assert_eq!(
            f.queues,
            [QueueRing {
                refs: alloc::vec![8],
                event_channel: 5
            }]
        );
    }

    #[test]
    fn multi_queue_multi_page() {
        let f = run(read_frontend(
            &mut map(&[
                ("multi-queue-num-queues", "2"),
                ("ring-page-order", "1"),
                ("queue-0/ring-ref0", "10"),
                ("queue-0/ring-ref1", "11"),
                ("queue-0/event-channel", "7"),
                ("queue-1/ring-ref0", "12"),
                ("queue-1/ring-ref1", "13"),
                ("queue-1/event-channel", "8"),
            ]),
            &OFFER,
        ))
        .unwrap();
        assert_eq!(f.queues.len(), 2);
        assert_eq!(f.queues[1].refs, [12, 13]);
        assert!(!f.persistent);
    }

    #[test]
    fn hostile_values_are_refused() {
        let base = [("ring-ref", "8"), ("event-channel", "5")];
        let cases: &[&[(&str, &str)]] = &[
            &[("ring-ref", "8")],
            &[("ring-ref", "-1"), ("event-channel", "5")],
            &[("ring-ref", "8"), ("event-channel", "0x5")],
            &[("ring-ref", "99999999999"), ("event-channel", "5")],
            &[("multi-queue-num-queues", "0")],
            &[("multi-queue-num-queues", "5")],
            &[("ring-page-order", "3")],
            &[("protocol", "arm-abi")],
            &[("multi-queue-num-queues", "2"), ("queue-0/ring-ref", "1")],
        ];
        for c in cases {
            let mut m = map(&base);
            for (k, v) in c.iter() {
                m.0.insert(String::from(*k), String::from(*v));
            }
            if c.len() == 1 && c[0].0 == "ring-ref" {
                m.0.remove("event-channel");
            }
            assert!(run(read_frontend(&mut m, &OFFER)).is_err(), "{c:?}");
        }
    }

    #[test]
    fn disk_keys() {
        let d = DiskInfo {
            sectors: 1000,
            sector_size: 512,
            physical_sector_size: 4096,
            read_only: true,
            removable: false,
            cdrom: false,
            flush: true,
            barrier: false,
            discard: Some(Discard {
                granularity: 4096,
                alignment: 0,
                secure: false,
            }),
        };
        let k = d.keys(true);
        let get = |n: &str| k.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("info"), Some("4"));
        assert_eq!(get("sectors"), Some("1000"));
        assert_eq!(get("feature-discard"), Some("1"));
        assert_eq!(get("discard-granularity"), Some("4096"));
        assert_eq!(get("feature-persistent"), Some("1"));
    }

    /// Finding 6 of the hostile-guest review: a missing `mode` no longer means read-write.
    #[test]
    fn mode_fails_closed() {
        assert_eq!(read_only(Some("r")), Ok(true));
        assert_eq!(read_only(Some("w")), Ok(false));
        assert!(read_only(None).is_err());
        assert!(read_only(Some("rw\0x")).is_err());
    }
}
