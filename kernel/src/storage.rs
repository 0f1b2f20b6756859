//! The disks a driver domain serves from: every NVMe controller found at boot, its
//! namespaces and GPT partitions, shared by all backends. An xl disk line's `target=`
//! names a [`Volume`] here.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;

use bulkhead_block::{Features, Io, Listed, Lookup, Target};
use bulkhead_executor::{Handle, Mutex};
use bulkhead_nvme::gpt::Partition;
use bulkhead_nvme::identify::Namespace;
use log::{info, warn};

use crate::nvme::{self, IrqMode, SharedDisk, Volume};

pub struct Storage {
    h: Handle,
    disks: Vec<SharedDisk>,
    /// Per controller: namespaces and features, read once at probe time so targets
    /// resolve without waiting for a busy disk.
    namespaces: Vec<Vec<Namespace>>,
    features: Vec<Features>,
    /// What `target=` names resolve against (namespaces and their partitions).
    listed: Vec<Listed>,
}

impl Storage {
    /// No disks (another task owns the controllers).
    pub fn none(h: &Handle) -> Rc<Storage> {
        Rc::new(Storage {
            h: h.clone(),
            disks: Vec::new(),
            namespaces: Vec::new(),
            features: Vec::new(),
            listed: Vec::new(),
        })
    }

    /// Bring up every NVMe controller and read its partition tables.
    pub async fn probe(h: &Handle, mode: IrqMode) -> Rc<Storage> {
        let mut s = Rc::into_inner(Storage::none(h)).expect("fresh");
        let mut parts: Vec<(usize, u32, Vec<Partition>)> = Vec::new();
        for (i, mut d) in nvme::probe(h, mode).into_iter().enumerate() {
            let nss = d.namespaces().to_vec();
            for ns in &nss {
                crate::status::set(
                    alloc::format!("disk {}n{}", d.name, ns.nsid),
                    alloc::format!("{} blocks of {} bytes", ns.blocks, ns.block_size),
                );
                match d.partitions(h, ns.nsid).await {
                    Ok(ps) => {
                        for p in &ps {
                            crate::status::set(
                                alloc::format!("disk {}n{}p{}", d.name, ns.nsid, p.number),
                                alloc::format!(
                                    "\"{}\" {} blocks from {}",
                                    p.name,
                                    p.blocks(),
                                    p.first_lba
                                ),
                            );
                            crate::event!(
                                "partition",
                                "part={}n{}p{} label={} blocks={} first={}",
                                d.name,
                                ns.nsid,
                                p.number,
                                bulkhead_event::quoted(&p.name),
                                p.blocks(),
                                p.first_lba
                            );
                        }
                        parts.push((i, ns.nsid, ps));
                    }
                    Err(e) => info!("storage: {}n{}: no GPT ({e})", d.name, ns.nsid),
                }
            }
            s.features.push(d.features());
            s.namespaces.push(nss);
            s.disks.push(Rc::new(Mutex::new(d)));
        }
        if s.disks.is_empty() {
            warn!("storage: no NVMe controller; disks cannot be served");
        }
        s.listed = nvme::listed(&s.namespaces, &parts);
        Rc::new(s)
    }

    /// Flush and shut down every controller (the domain is going away). Waits for the
    /// I/O in progress on each: the disk lock is taken after the current holder.
    pub async fn shutdown(&self) {
        for d in &self.disks {
            let mut disk = d.lock().await;
            match disk.shutdown(&self.h).await {
                Ok(()) => crate::event!("nvme-down", "dev={} why=shutdown flushed=1", disk.name),
                Err(e) => warn!("storage: {}: shutdown failed: {e}", disk.name),
            }
        }
    }

    /// Test trigger: every controller fails from now on, as if it stopped answering.
    #[cfg(feature = "test-hooks")]
    pub async fn fail_all(&self, why: &str) {
        for d in &self.disks {
            d.lock().await.fail(why);
        }
    }

    /// The volume an xl `target=` names, if it names exactly one.
    pub fn volume(&self, target: &Target, read_only: bool) -> Result<Volume, Lookup> {
        let (d, nsid, mut extent) = target.resolve(&self.listed)?;
        extent.read_only = read_only;
        Ok(Volume {
            disk: self.disks.get(d).ok_or(Lookup::NotFound)?.clone(),
            h: self.h.clone(),
            nsid,
            extent,
            features: self.features[d],
        })
    }

    /// `bench-storage`: the local ceiling blkback is compared against (`make bench`) — 4
    /// KiB random reads one at a time and 32 at once, then 1 MiB sequential reads, straight
    /// on the first namespace through the same driver, lock and batches the backends use,
    /// `secs` seconds each. Reads only. One `bench-storage` event with the figures, or
    /// with `error=` why there are none: the benchmark's scenario reads it. Each figure
    /// also has what it cost (`Cost`): divided by the reads, counts that drift less
    /// with the machine's speed than the figures do.
    pub async fn bench(&self, secs: u32) {
        let (Some(disk), Some(ns)) = (
            self.disks.first(),
            self.namespaces.first().and_then(|n| n.first()),
        ) else {
            crate::event!("bench-storage", "error=no-namespace");
            return;
        };
        let name = disk.lock().await.name.clone();
        let bs = ns.block_size as u64;
        let span = secs as u64 * 1_000_000_000;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let per = 4096 / bs;
        let slots = (ns.blocks / per).max(1);
        let mut random_lba = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % slots) * per
        };
        let mut iops = [0u64; 2];
        let mut costs = [String::new(), String::new(), String::new()];
        for ((figure, cost), depth) in iops.iter_mut().zip(&mut costs).zip([1usize, 32]) {
            let mut buf = alloc::vec![0u8; 4096 * depth];
            let c0 = Cost::now();
            let (start, mut n) = (self.h.now(), 0u64);
            while self.h.now() - start < span {
                let mut ios: Vec<Io> = buf
                    .chunks_mut(4096)
                    .map(|b| Io::Read {
                        lba: random_lba(),
                        buf: b,
                    })
                    .collect();
                let results = disk
                    .lock()
                    .await
                    .rw_all(&self.h, ns.nsid, &mut ios, true)
                    .await;
                if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
                    bench_failed(&e);
                    return;
                }
                n += depth as u64;
            }
            *figure = n * 1_000_000_000 / (self.h.now() - start).max(1);
            *cost = c0.since(&format!("qd{depth}"), n);
        }
        let mut big = alloc::vec![0u8; 1 << 20];
        let chunk = (1 << 20) / bs;
        let (start, mut bytes, mut lba) = (self.h.now(), 0u64, 0u64);
        let c0 = Cost::now();
        while self.h.now() - start < span {
            if lba + chunk > ns.blocks {
                lba = 0;
            }
            if let Err(e) = disk
                .lock()
                .await
                .rw(&self.h, false, ns.nsid, lba, &mut big, true)
                .await
            {
                bench_failed(&e);
                return;
            }
            lba += chunk;
            bytes += 1 << 20;
        }
        let mibs = (bytes * 1_000_000_000 / (self.h.now() - start).max(1)) >> 20;
        costs[2] = c0.since("seq", bytes >> 20);
        crate::event!(
            "bench-storage",
            "disk={name}n{} rr4k_qd1_iops={} rr4k_qd32_iops={} seqread_mibs={mibs} {} {} {}",
            ns.nsid,
            iops[0],
            iops[1],
            costs[0],
            costs[1],
            costs[2]
        );
    }
}

/// What a stretch of the storage bench cost: this vCPU's running time (from Xen's
/// runstate) and the interrupts, halts and hypercalls taken (the flight recorder's
/// counts), each a VM exit or the cause of one.
struct Cost {
    counts: crate::machine::trace::Counts,
    running: Option<u64>,
}

impl Cost {
    fn now() -> Cost {
        Cost {
            counts: crate::machine::trace::counts(),
            running: crate::machine::runstate::running_ns(),
        }
    }

    /// The fields `P_units= P_running_us= P_vectors= P_halts= P_hypercalls=` for the
    /// stretch since `self`, in which `units` reads (or MiB) were done.
    fn since(&self, p: &str, units: u64) -> String {
        let end = Cost::now();
        let c = end.counts.since(self.counts);
        let running = match (end.running, self.running) {
            (Some(e), Some(b)) => format!("{}", e.saturating_sub(b) / 1000),
            _ => String::from("-"),
        };
        format!(
            "{p}_units={units} {p}_running_us={running} {p}_vectors={} {p}_halts={} {p}_hypercalls={}",
            c.vectors, c.halts, c.hypercalls
        )
    }
}

fn bench_failed(e: &dyn core::fmt::Display) {
    crate::event!(
        "bench-storage",
        "error=read-failed why={}",
        bulkhead_event::quoted(e)
    );
}
