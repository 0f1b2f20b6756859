//! The disks a driver domain serves from: every NVMe controller found at boot, its
//! namespaces and GPT partitions, shared by all backends. An xl disk line's `target=`
//! names a [`Volume`] here.

use alloc::rc::Rc;
use alloc::vec::Vec;

use bulkhead_block::{Features, Target};
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
    parts: Vec<(usize, u32, Vec<Partition>)>,
}

impl Storage {
    /// No disks (another task owns the controllers).
    pub fn none(h: &Handle) -> Rc<Storage> {
        Rc::new(Storage {
            h: h.clone(),
            disks: Vec::new(),
            namespaces: Vec::new(),
            features: Vec::new(),
            parts: Vec::new(),
        })
    }

    /// Bring up every NVMe controller and read its partition tables.
    pub async fn probe(h: &Handle, mode: IrqMode) -> Rc<Storage> {
        let mut s = Rc::into_inner(Storage::none(h)).expect("fresh");
        for (i, mut d) in nvme::probe(h, mode).into_iter().enumerate() {
            let nss = d.namespaces().to_vec();
            for ns in &nss {
                match d.partitions(h, ns.nsid).await {
                    Ok(ps) => {
                        for p in &ps {
                            info!(
                                "storage: {}n{}p{} \"{}\": {} blocks from {}",
                                d.name,
                                ns.nsid,
                                p.number,
                                p.name,
                                p.blocks(),
                                p.first_lba
                            );
                        }
                        s.parts.push((i, ns.nsid, ps));
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
        Rc::new(s)
    }

    /// The volume an xl `target=` names, if it exists.
    pub fn volume(&self, target: &Target, read_only: bool) -> Option<Volume> {
        let (d, nsid, mut extent) = nvme::resolve(&self.namespaces, &self.parts, target)?;
        extent.read_only = read_only;
        Some(Volume {
            disk: self.disks.get(d)?.clone(),
            h: self.h.clone(),
            nsid,
            extent,
            features: self.features[d],
        })
    }
}
