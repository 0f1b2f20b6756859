//! Controller bring-up (spec 7.6.1) and the admin commands around it: disable, admin
//! queues, enable, identify controller and namespaces, negotiate and create I/O queues.
//! Everything waits with the controller's own CAP.TO as the limit, and stops at once on
//! CSTS.CFS.

use alloc::vec::Vec;

use crate::cmd::{Command, Completion};
use crate::identify::{self, ControllerInfo, Namespace};
use crate::queue::QueuePair;
use crate::regs::{self, Cap};
use crate::{Clock, Dma, Error, Mmio, PAGE_SIZE};

const ADMIN_ENTRIES: u16 = 32;
/// Admin commands get this long, regardless of CAP.TO (which is about enabling).
const ADMIN_TIMEOUT_US: u64 = 5_000_000;

pub struct Controller<M: Mmio> {
    pub mmio: M,
    pub cap: Cap,
    pub version: u32,
    pub admin: QueuePair,
    pub io: Vec<QueuePair>,
    pub info: ControllerInfo,
    pub namespaces: Vec<Namespace>,
    /// Largest transfer per command, bytes (MDTS, capped by what the driver supports).
    pub max_transfer: usize,
    vector: fn(u16) -> Option<u16>,
    /// Controller resets done since bring-up.
    pub resets: u32,
}

/// What the caller wants from bring-up.
pub struct Config {
    /// I/O queue pairs to ask for (the controller may grant fewer).
    pub io_queues: u16,
    pub io_entries: u16,
    /// Interrupt vector (MSI-X table entry) for I/O queue `i` (0-based), None = polled.
    pub vector: fn(u16) -> Option<u16>,
    /// Upper bound on per-command transfers (the driver's own PRP-list budget).
    pub max_transfer: usize,
}

fn wait_ready<M: Mmio>(
    mmio: &M,
    clock: &mut impl Clock,
    want: bool,
    timeout_ms: u32,
) -> Result<(), Error> {
    let start = clock.now_us();
    loop {
        let csts = mmio.read32(regs::CSTS);
        if csts == 0xffff_ffff {
            return Err(Error::Device(
                "controller registers read all-ones (device gone)",
            ));
        }
        if want && csts & regs::CSTS_CFS != 0 {
            return Err(Error::Fatal);
        }
        if (csts & regs::CSTS_RDY != 0) == want {
            return Ok(());
        }
        if clock.now_us() - start > timeout_ms as u64 * 1000 {
            return Err(Error::Timeout {
                what: if want {
                    "controller ready"
                } else {
                    "controller disable"
                },
            });
        }
        clock.pause(1000);
    }
}

/// Submit on `q` and poll for the completion.
pub fn run_polled<M: Mmio>(
    q: &mut QueuePair,
    dma: &impl Dma,
    mmio: &M,
    clock: &mut impl Clock,
    cmd: Command,
    timeout_us: u64,
    what: &'static str,
) -> Result<Completion, Error> {
    let cid = q.submit(dma, mmio, cmd)?;
    let start = clock.now_us();
    loop {
        let mut got = None;
        q.reap(dma, mmio, |c| {
            if c.cid == cid {
                got = Some(c);
            }
        });
        if let Some(c) = got {
            return Ok(c);
        }
        if mmio.read32(regs::CSTS) & regs::CSTS_CFS != 0 {
            return Err(Error::Fatal);
        }
        if clock.now_us() - start > timeout_us {
            return Err(Error::Timeout { what });
        }
        clock.pause(50);
    }
}

/// An admin command run to completion ([`run_polled`] within the admin timeout): its
/// result (DW0), or the error naming `what`.
fn admin_command<M: Mmio>(
    admin: &mut QueuePair,
    dma: &impl Dma,
    mmio: &M,
    clock: &mut impl Clock,
    cmd: Command,
    what: &'static str,
) -> Result<u32, Error> {
    run_polled(admin, dma, mmio, clock, cmd, ADMIN_TIMEOUT_US, what)?.result()
}

/// Tell the controller about I/O queue pair `q` (its completion queue, interrupting at
/// `vector` or polled, then its submission queue): at bring-up and again after a reset.
fn create_pair<M: Mmio>(
    admin: &mut QueuePair,
    dma: &impl Dma,
    mmio: &M,
    clock: &mut impl Clock,
    q: &QueuePair,
    vector: Option<u16>,
) -> Result<(), Error> {
    let cq = Command::create_cq(q.qid, q.entries, q.cq_base, vector);
    admin_command(admin, dma, mmio, clock, cq, "create I/O CQ")?;
    let sq = Command::create_sq(q.qid, q.entries, q.sq_base, q.qid);
    admin_command(admin, dma, mmio, clock, sq, "create I/O SQ")?;
    Ok(())
}

impl<M: Mmio> Controller<M> {
    pub fn init(
        mmio: M,
        dma: &mut impl Dma,
        clock: &mut impl Clock,
        cfg: &Config,
    ) -> Result<Self, Error> {
        let cap = Cap::parse(mmio.read64(regs::CAP));
        if mmio.read32(regs::CSTS) == 0xffff_ffff {
            return Err(Error::Device(
                "controller registers read all-ones (device gone)",
            ));
        }
        if !cap.nvm_command_set {
            return Err(Error::Device("controller lacks the NVM command set"));
        }
        if cap.mpsmin != 0 {
            return Err(Error::Device("controller cannot use 4 KiB memory pages"));
        }
        let version = mmio.read32(regs::VS);
        // 7.6.1: disable, wait for RDY to clear.
        let cc = mmio.read32(regs::CC);
        if cc & regs::CC_EN != 0 {
            mmio.write32(regs::CC, cc & !regs::CC_EN);
        }
        wait_ready(&mmio, clock, false, cap.timeout_ms)?;
        let entries = ADMIN_ENTRIES.min(cap.max_queue_entries as u16);
        let mut admin = QueuePair::new(dma, 0, entries, cap.doorbell_stride)?;
        mmio.write32(
            regs::AQA,
            ((entries as u32 - 1) << 16) | (entries as u32 - 1),
        );
        mmio.write64(regs::ASQ, admin.sq_base);
        mmio.write64(regs::ACQ, admin.cq_base);
        mmio.write32(regs::INTMS, 0xffff_ffff);
        mmio.write32(
            regs::CC,
            regs::CC_EN | regs::CC_IOSQES_64 | regs::CC_IOCQES_16,
        );
        if let Err(e) = wait_ready(&mmio, clock, true, cap.timeout_ms) {
            admin.release(dma);
            return Err(e);
        }

        let buf = dma.alloc(PAGE_SIZE)?;
        let r = Self::identify_all(&mut admin, dma, &mmio, clock, buf);
        dma.free(buf, PAGE_SIZE);
        let (info, namespaces) = r?;

        let max_transfer = info
            .max_transfer
            .unwrap_or(usize::MAX)
            .min(cfg.max_transfer);
        let mut c = Controller {
            mmio,
            cap,
            version,
            admin,
            io: Vec::new(),
            info,
            namespaces,
            max_transfer,
            vector: cfg.vector,
            resets: 0,
        };
        c.create_io_queues(dma, clock, cfg)?;
        Ok(c)
    }

    fn identify_all(
        admin: &mut QueuePair,
        dma: &mut impl Dma,
        mmio: &M,
        clock: &mut impl Clock,
        buf: u64,
    ) -> Result<(ControllerInfo, Vec<Namespace>), Error> {
        let mut page = [0u8; 4096];
        admin_command(
            admin,
            dma,
            mmio,
            clock,
            Command::identify(1, 0, buf),
            "identify controller",
        )?;
        dma.read(buf, &mut page);
        let info = identify::controller(&page, PAGE_SIZE);
        dma.write(buf, &[0u8; 4096]);
        admin_command(
            admin,
            dma,
            mmio,
            clock,
            Command::identify(2, 0, buf),
            "namespace list",
        )?;
        dma.read(buf, &mut page);
        let ids = identify::active_namespaces(&page);
        let mut namespaces = Vec::new();
        for nsid in ids
            .into_iter()
            .filter(|n| *n <= info.namespaces.max(1))
            .take(1024)
        {
            admin_command(
                admin,
                dma,
                mmio,
                clock,
                Command::identify(0, nsid, buf),
                "identify namespace",
            )?;
            dma.read(buf, &mut page);
            namespaces.push(identify::namespace(nsid, &page)?);
        }
        Ok((info, namespaces))
    }

    fn create_io_queues(
        &mut self,
        dma: &mut impl Dma,
        clock: &mut impl Clock,
        cfg: &Config,
    ) -> Result<(), Error> {
        let want = cfg.io_queues.max(1);
        let granted = admin_command(
            &mut self.admin,
            dma,
            &self.mmio,
            clock,
            Command::set_queue_count(want),
            "set features: number of queues",
        )?;
        let nsq = (granted & 0xffff) as u16 + 1;
        let ncq = (granted >> 16) as u16 + 1;
        let n = want.min(nsq).min(ncq);
        let entries = cfg.io_entries.min(self.cap.max_queue_entries as u16);
        for i in 0..n {
            let qid = i + 1;
            let q = QueuePair::new(dma, qid, entries, self.cap.doorbell_stride)?;
            let r = create_pair(&mut self.admin, dma, &self.mmio, clock, &q, (cfg.vector)(i));
            if let Err(e) = r {
                q.release(dma);
                if self.io.is_empty() {
                    return Err(e);
                }
                break;
            }
            self.io.push(q);
        }
        Ok(())
    }

    /// Controller-level reset (CC.EN 1 -> 0 -> 1) keeping every queue's memory: the admin
    /// and I/O queues are set up again empty. Returns, per I/O queue, the command ids that
    /// were in flight: the caller re-issues them (their data buffers are still its own).
    pub fn reset(
        &mut self,
        dma: &impl Dma,
        clock: &mut impl Clock,
    ) -> Result<Vec<Vec<u16>>, Error> {
        self.resets += 1;
        let cc = self.mmio.read32(regs::CC);
        self.mmio.write32(regs::CC, cc & !regs::CC_EN);
        wait_ready(&self.mmio, clock, false, self.cap.timeout_ms)?;
        self.admin.reset(dma);
        let lost: Vec<Vec<u16>> = self.io.iter_mut().map(|q| q.reset(dma)).collect();
        let e = self.admin.entries as u32;
        self.mmio.write32(regs::AQA, ((e - 1) << 16) | (e - 1));
        self.mmio.write64(regs::ASQ, self.admin.sq_base);
        self.mmio.write64(regs::ACQ, self.admin.cq_base);
        self.mmio.write32(regs::INTMS, 0xffff_ffff);
        self.mmio.write32(
            regs::CC,
            regs::CC_EN | regs::CC_IOSQES_64 | regs::CC_IOCQES_16,
        );
        wait_ready(&self.mmio, clock, true, self.cap.timeout_ms)?;
        let n = self.io.len() as u16;
        admin_command(
            &mut self.admin,
            dma,
            &self.mmio,
            clock,
            Command::set_queue_count(n),
            "set features: number of queues",
        )?;
        for (i, q) in self.io.iter().enumerate() {
            let vector = (self.vector)(i as u16);
            create_pair(&mut self.admin, dma, &self.mmio, clock, q, vector)?;
        }
        Ok(lost)
    }

    /// Ask the controller to abort command `cid` on queue `sqid`; true if it says it did.
    pub fn abort(
        &mut self,
        dma: &impl Dma,
        clock: &mut impl Clock,
        sqid: u16,
        cid: u16,
    ) -> Result<bool, Error> {
        let c = run_polled(
            &mut self.admin,
            dma,
            &self.mmio,
            clock,
            Command::abort(sqid, cid),
            ADMIN_TIMEOUT_US,
            "abort",
        )?;
        // DW0 bit 0 set: the command was not aborted.
        Ok(c.result()? & 1 == 0)
    }

    /// Re-enable an MSI/INTx vector masked through INTMS (bring-up masks them all while
    /// the admin queue is polled; meaningless for MSI-X, which masks in its table).
    pub fn unmask_vector(&self, v: u32) {
        if v < 32 {
            self.mmio.write32(regs::INTMC, 1 << v);
        }
    }

    pub fn namespace(&self, nsid: u32) -> Option<&Namespace> {
        self.namespaces.iter().find(|n| n.nsid == nsid)
    }

    /// Normal shutdown (CC.SHN), waiting for CSTS.SHST = complete: flushes the volatile
    /// write cache on the way.
    pub fn shutdown(&self, clock: &mut impl Clock) -> Result<(), Error> {
        let cc = self.mmio.read32(regs::CC);
        self.mmio
            .write32(regs::CC, (cc & !(3 << 14)) | regs::CC_SHN_NORMAL);
        let start = clock.now_us();
        while self.mmio.read32(regs::CSTS) & regs::CSTS_SHST_MASK != regs::CSTS_SHST_DONE {
            if clock.now_us() - start > self.cap.timeout_ms as u64 * 1000 {
                return Err(Error::Timeout { what: "shutdown" });
            }
            clock.pause(1000);
        }
        Ok(())
    }
}
