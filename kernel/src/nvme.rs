//! NVMe controllers on PCI: the kernel side of `bulkhead-nvme` (BAR registers, DMA from
//! the frame allocator, MSI-X/MSI vectors), an async block interface on the event loop,
//! and, in the test build, the storage self-test (`test-storage`, [`test`]).

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{RefCell, RefMut};
use core::future::Future;
use core::ops::DerefMut;

use bulkhead_block::{
    BlockDevice, BlockError, Extent, Features, Io, Listed, ListedPartition, Span,
};
use bulkhead_event::quoted;
use bulkhead_executor::{Broadcast, Handle, Mutex};
use bulkhead_nvme::batch::{self, Batch, Memory, Split, Transfer};
use bulkhead_nvme::cmd::{Command, Completion};
use bulkhead_nvme::controller::{Config, Controller};
use bulkhead_nvme::gpt::{self, Partition};
use bulkhead_nvme::identify::Namespace;
use bulkhead_nvme::owners::{Owners, Ticket};
use bulkhead_nvme::pool::{Buffer, Pool};
use bulkhead_nvme::prp::Pages;
use bulkhead_nvme::recovery;
use bulkhead_nvme::single::{self, Look, Submitted};
use bulkhead_nvme::{Clock, Dma, Error, PAGE_SIZE};
use bulkhead_pci::Function;
use log::{error, info, warn};

use crate::hw::{BarMaps, BarMmio, KernelDma, SpinClock};
use crate::pci;

#[cfg(feature = "test-hooks")]
pub mod test;

/// How completions are noticed. `IrqMode::Poll` trades a CPU for latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqMode {
    MsiX,
    Msi,
    /// Legacy pin interrupt through the I/O APIC.
    Intx,
    Poll,
}

/// The interrupt mode as event lines name it.
fn irq_name(mode: IrqMode) -> &'static str {
    match mode {
        IrqMode::MsiX => "msix",
        IrqMode::Msi => "msi",
        IrqMode::Intx => "intx",
        IrqMode::Poll => "poll",
    }
}

/// Largest transfer the controller is configured for (one PRP list page); commands are
/// at most one pool buffer (`POOL_BUFFER_BYTES`).
const MAX_TRANSFER: usize = 512 * 4096;
/// Each controller's DMA buffers (`bulkhead_nvme::pool`), allocated once at bring-up:
/// one per command in flight, so this is how many commands a controller has in flight
/// at most (4 KiB random reads at queue depth 16 from a guest fill them; a 1 MiB
/// sequential request becomes 8 commands at once). 2 MiB of the domain's memory.
const POOL_BUFFERS: usize = 16;
const POOL_BUFFER_BYTES: usize = 128 * 1024;
const IO_TIMEOUT_NS: u64 = 10_000_000_000;

pub struct Disk {
    pub name: String,
    /// Its PCI function: bus mastering goes off when the driver gives up on commands that
    /// move data in memory it is about to hand back ([`transfer`], direct transfers).
    bdf: bulkhead_pci::Bdf,
    ctrl: Controller<BarMmio>,
    dma: KernelDma,
    pool: Pool,
    mode: IrqMode,
    /// Whose each command in flight on the I/O queue is: several callers (each guest's
    /// vbds, each a batch) have commands at the device at once, and take the queue only
    /// to submit and to reap ([`transfer`]).
    owners: Owners,
    /// Raised at each interrupt (the vector's signal is hooked to it: a signal wakes one
    /// waiter only) and whenever a caller reaped another's completions or reset the
    /// controller: every caller waiting on the device looks again.
    woken: Rc<Broadcast>,
    /// INTx: the I/O APIC pin to unmask after servicing.
    gsi: Option<u8>,
    timeout_ns: u64,
    /// Test only: submit the next command without ringing its doorbell, so it times out.
    #[cfg(feature = "test-hooks")]
    pub lose_next_command: bool,
    /// The controller stopped working (no completion even after a reset, or fatal
    /// status): every command fails at once from now on, so the backends answer their
    /// frontends with errors instead of waiting on a dead device.
    failed: bool,
}

/// Find and bring up every NVMe controller. Failures are logged per device.
pub fn probe(h: &Handle, mode: IrqMode) -> Vec<Disk> {
    let funcs = pci::functions();
    let mut out = Vec::new();
    for f in funcs.iter().filter(|f| f.is_nvme()) {
        let name = format!("nvme{}", out.len());
        // Fall back from the requested interrupt mechanism to the next one the device
        // and platform offer: MSI-X, MSI, INTx, then polling.
        let order = [IrqMode::MsiX, IrqMode::Msi, IrqMode::Intx, IrqMode::Poll];
        let start = order.iter().position(|m| *m == mode).unwrap_or(0);
        let mut last = String::new();
        for m in &order[start..] {
            match bring_up(h, f, &name, *m) {
                Ok(d) => {
                    out.push(d);
                    last.clear();
                    break;
                }
                Err(e) => {
                    crate::event!(
                        "nvme-irq-fallback",
                        "dev={name} bdf={} irq={} why={}",
                        f.bdf,
                        irq_name(*m),
                        quoted(&e)
                    );
                    last = e;
                }
            }
        }
        if !last.is_empty() {
            error!("{name} ({}): not usable: {last}", f.bdf);
        }
    }
    out
}

fn bring_up(h: &Handle, f: &Function, name: &str, mode: IrqMode) -> Result<Disk, String> {
    let bdf = f.bdf;
    // Start from a clean device (a previous driver domain may have died mid-I/O).
    let mut clock = SpinClock;
    match pci::with(|cs| bulkhead_pci::reset_function(cs, bdf, |ms| clock.pause(ms as u64 * 1000)))
    {
        Some(Ok(())) => info!("{name} ({bdf}): function-level reset done"),
        Some(Err(bulkhead_pci::PciError::Unsupported(..))) => {}
        Some(Err(e)) => return Err(format!("reset failed: {e}")),
        None => return Err("no PCI access".into()),
    }
    let mut maps = BarMaps::of(bdf)?;
    let bar0 = maps.map(0)?;
    pci::with(|cs| bulkhead_pci::enable(cs, bdf, mode == IrqMode::Intx));
    let mut gsi = None;
    let (vector, signal) = match mode {
        IrqMode::Poll => (None, None),
        IrqMode::Intx => {
            if f.interrupt_pin == 0 || f.interrupt_line == 0 || f.interrupt_line == 0xff {
                return Err("no INTx line assigned by firmware".into());
            }
            let (v, s) =
                crate::arch::interrupts::alloc_vector().ok_or("out of interrupt vectors")?;
            crate::arch::ioapic::route_intx(f.interrupt_line, v, crate::arch::apic::id() as u8)?;
            gsi = Some(f.interrupt_line);
            (Some(v), Some(s))
        }
        IrqMode::MsiX | IrqMode::Msi => {
            // Check the capability first: a vector is never handed back.
            let cap = if mode == IrqMode::MsiX {
                bulkhead_pci::reg::CAP_MSIX
            } else {
                bulkhead_pci::reg::CAP_MSI
            };
            let present = pci::with(|cs| bulkhead_pci::find_capability(cs, bdf, cap))
                .ok_or("no PCI access")?;
            if !matches!(present, Ok(Some(_))) {
                return Err(if mode == IrqMode::MsiX {
                    "MSI-X not available".into()
                } else {
                    "MSI not available".into()
                });
            }
            let (v, s) =
                crate::arch::interrupts::alloc_vector().ok_or("out of interrupt vectors")?;
            let r = if mode == IrqMode::MsiX {
                // Entry 0 (admin queue, polled) stays masked; entry 1 serves I/O queue 1.
                crate::hw::msix_setup(bdf, &mut maps, &[(0, None), (1, Some(v))])
            } else {
                pci::with(|cs| bulkhead_pci::msi_enable(cs, bdf, crate::arch::apic::id() as u8, v))
                    .unwrap_or(Err(bulkhead_pci::PciError::Absent(bdf)))
                    .map_err(|_| String::from("MSI not available"))
            };
            r?;
            (Some(v), Some(s))
        }
    };
    let cfg = Config {
        io_queues: 1,
        io_entries: 256,
        vector: match mode {
            IrqMode::MsiX => |_| Some(1),
            IrqMode::Msi | IrqMode::Intx => |_| Some(0),
            IrqMode::Poll => |_| None,
        },
        max_transfer: MAX_TRANSFER,
    };
    let mut dma = KernelDma;
    let ctrl =
        Controller::init(bar0, &mut dma, &mut SpinClock, &cfg).map_err(|e| format!("{e}"))?;
    let pool = Pool::new(
        &mut dma,
        POOL_BUFFERS,
        ctrl.max_transfer.min(POOL_BUFFER_BYTES),
    )
    .map_err(|e| format!("DMA buffers: {e}"))?;
    if matches!(mode, IrqMode::Msi | IrqMode::Intx) {
        // Bring-up masked vector 0 (INTMS) while the admin queue was polled.
        ctrl.unmask_vector(0);
    }
    let i = &ctrl.info;
    crate::event!(
        "nvme-up",
        "dev={name} bdf={bdf} model={} serial={} fw={} version={}.{} io_queues={} max_transfer_kib={} write_cache={} irq={} vector={:#x} pin={}",
        quoted(&i.model),
        quoted(&i.serial),
        quoted(&i.firmware),
        ctrl.version >> 16,
        (ctrl.version >> 8) & 0xff,
        ctrl.io.len(),
        ctrl.max_transfer / 1024,
        if i.volatile_write_cache { "volatile" } else { "none" },
        irq_name(mode),
        vector.unwrap_or(0),
        gsi.unwrap_or(0),
    );
    for ns in &ctrl.namespaces {
        crate::event!(
            "nvme-namespace",
            "dev={name}n{} blocks={} block_size={} mib={}",
            ns.nsid,
            ns.blocks,
            ns.block_size,
            ns.bytes() >> 20
        );
    }
    let woken = Rc::new(Broadcast::default());
    if let Some(s) = signal {
        // Every caller waiting on the disk looks again, in the same pass of the loop.
        let w = woken.clone();
        h.on_raise("nvme-irq", s, move || w.raise());
    }
    Ok(Disk {
        name: String::from(name),
        bdf,
        ctrl,
        dma,
        pool,
        mode,
        owners: Owners::new(),
        woken,
        gsi,
        timeout_ns: IO_TIMEOUT_NS,
        #[cfg(feature = "test-hooks")]
        lose_next_command: false,
        failed: false,
    })
}

impl Disk {
    pub fn namespaces(&self) -> &[Namespace] {
        &self.ctrl.namespaces
    }

    /// Reset the controller (every command in flight is dropped and its buffers are ours
    /// again); returns how many were in flight.
    /// A reset that fails fails the controller (its DMA stopped first): it may never
    /// have been disabled, and other callers must not take back memory its commands
    /// point into as if they had been dropped.
    fn reset_controller(&mut self) -> Result<usize, Error> {
        let lost = match self.ctrl.reset(&self.dma, &mut SpinClock) {
            Ok(lost) => lost,
            Err(e) => {
                self.fail(&format!("controller reset failed: {e}"));
                return Err(e);
            }
        };
        // Every caller's commands are gone: each submits its own again at its next
        // look (`Batch::catch_up`), woken now.
        self.owners.reset();
        self.woken.raise();
        if matches!(self.mode, IrqMode::Msi | IrqMode::Intx) {
            // Reset masked vector 0 (INTMS) again.
            self.ctrl.unmask_vector(0);
        }
        Ok(lost.iter().map(Vec::len).sum())
    }

    /// Bus mastering off: whatever the controller still holds, it reads and writes no
    /// memory any more (a given-up batch's direct transfers point into its caller's).
    fn stop_dma(&self) {
        let bdf = self.bdf;
        if pci::with(|cs| bulkhead_pci::stop_dma(cs, bdf)).is_none() {
            error!("{}: no PCI access to stop its DMA", self.name);
        } else {
            warn!("{} ({bdf}): bus mastering off", self.name);
        }
    }

    /// Give up on the controller (see `failed`). Its DMA stops first: other callers'
    /// commands still out may point into memory they hand back once they see it failed.
    pub fn fail(&mut self, why: &str) {
        if !self.failed {
            self.stop_dma();
            // Its disks answer every request with an error from here on.
            error!("{}: {why}; the controller is failed", self.name);
            crate::event!("nvme-failed", "dev={} why={}", self.name, quoted(why));
            self.woken.raise();
        }
        self.failed = true;
    }

    /// Test only: whether to lose the command about to be submitted (once).
    fn take_lost(&mut self) -> bool {
        #[cfg(feature = "test-hooks")]
        return core::mem::take(&mut self.lose_next_command);
        #[cfg(not(feature = "test-hooks"))]
        false
    }

    /// [`command`] with this caller alone on the disk (shutdown, the self-test).
    async fn run(&mut self, h: &Handle, cmd: Command, what: &'static str) -> Result<u32, Error> {
        let cell = RefCell::new(self);
        let lock = || core::future::ready(RefMut::map(cell.borrow_mut(), |d| &mut **d));
        command(lock, h, cmd, what).await
    }

    #[cfg(feature = "test-hooks")] // the storage test's
    pub fn resets(&self) -> u32 {
        self.ctrl.resets
    }

    /// Read or write whole blocks of namespace `nsid` (one transfer of [`Disk::rw_all`]).
    /// `check` refuses ranges past the end before the controller sees them.
    pub async fn rw(
        &mut self,
        h: &Handle,
        write: bool,
        nsid: u32,
        lba: u64,
        buf: &mut [u8],
        check: bool,
    ) -> Result<(), Error> {
        let io = if write {
            Io::Write { lba, buf }
        } else {
            Io::Read { lba, buf }
        };
        let mut r = self.rw_all(h, nsid, &mut [io], check).await;
        r.pop().unwrap_or(Err(Error::Invalid("no result")))
    }

    /// [`transfer`] with this caller alone on the disk (the self-test, the storage
    /// bench, a partition table's read at bring-up).
    pub async fn rw_all(
        &mut self,
        h: &Handle,
        nsid: u32,
        ios: &mut [Io<'_>],
        check: bool,
    ) -> Vec<Result<(), Error>> {
        let cell = RefCell::new(self);
        let lock = || core::future::ready(RefMut::map(cell.borrow_mut(), |d| &mut **d));
        transfer(lock, h, nsid, ios, check).await
    }

    /// Before the domain goes: flush every namespace's volatile cache, then a normal
    /// controller shutdown (CC.SHN), after which the controller takes no commands.
    pub async fn shutdown(&mut self, h: &Handle) -> Result<(), Error> {
        let nsids: Vec<u32> = self.namespaces().iter().map(|n| n.nsid).collect();
        for nsid in nsids {
            self.flush(h, nsid).await?;
        }
        self.ctrl.shutdown(&mut crate::hw::SpinClock)
    }

    pub async fn flush(&mut self, h: &Handle, nsid: u32) -> Result<(), Error> {
        self.run(h, Command::flush(nsid), "flush").await.map(|_| ())
    }

    /// Write Zeroes, when the controller has it (ONCS bit 3); in chunks of 65536 blocks.
    /// (The storage test's: blkif has no such request.)
    #[cfg(feature = "test-hooks")]
    pub async fn write_zeroes(
        &mut self,
        h: &Handle,
        nsid: u32,
        mut lba: u64,
        mut blocks: u64,
    ) -> Result<(), Error> {
        if !self.ctrl.info.write_zeroes {
            return Err(Error::Invalid("write zeroes not supported"));
        }
        while blocks > 0 {
            let n = blocks.min(65536);
            self.run(
                h,
                Command::write_zeroes(nsid, lba, n as u32),
                "write zeroes",
            )
            .await?;
            lba += n;
            blocks -= n;
        }
        Ok(())
    }

    pub fn features(&self) -> Features {
        let i = &self.ctrl.info;
        Features {
            flush: true,
            discard: i.dsm,
            write_zeroes: i.write_zeroes,
            volatile_cache: i.volatile_write_cache,
        }
    }

    pub async fn partitions(
        &mut self,
        h: &Handle,
        nsid: u32,
    ) -> Result<Vec<Partition>, gpt::GptError> {
        let ns = self
            .ctrl
            .namespace(nsid)
            .cloned()
            .ok_or(gpt::GptError::Io)?;
        // Read the header and the largest entry array the parser accepts up front, then
        // parse from memory (the parser's reader is synchronous).
        let bs = ns.block_size as usize;
        let span = (2 + 1024 * 1024usize.div_ceil(bs) + 34)
            .min(ns.blocks as usize)
            .min(64 * 1024 / bs + 2);
        let mut head = alloc::vec![0u8; span * bs];
        self.rw(h, false, nsid, 0, &mut head, true)
            .await
            .map_err(|_| gpt::GptError::Io)?;
        gpt::parse(ns.block_size, ns.blocks, |lba, buf| {
            let o = lba as usize * bs;
            buf.copy_from_slice(head.get(o..o + buf.len()).ok_or(())?);
            Ok(())
        })
    }
}

/// Dataset Management / deallocate (discard) of `blocks` from `lba` on namespace `nsid`,
/// when the controller has it (ONCS bit 2): one [`command`], its range list in a DMA
/// page of its own until the command is done.
pub async fn deallocate<G, F>(
    lock: impl Fn() -> F,
    h: &Handle,
    nsid: u32,
    lba: u64,
    blocks: u64,
) -> Result<(), Error>
where
    F: Future<Output = G>,
    G: DerefMut<Target = Disk>,
{
    let list = {
        let mut d = lock().await;
        if !d.ctrl.info.dsm {
            return Err(Error::Invalid("deallocate not supported"));
        }
        d.dma.alloc(PAGE_SIZE)?
    };
    let mut ranges = Vec::new();
    let (mut l, mut left) = (lba, blocks);
    while left > 0 && ranges.len() < 256 * 16 {
        let n = left.min(u32::MAX as u64);
        ranges.extend_from_slice(&0u32.to_le_bytes());
        ranges.extend_from_slice(&(n as u32).to_le_bytes());
        ranges.extend_from_slice(&l.to_le_bytes());
        l += n;
        left -= n;
    }
    lock().await.dma.write(list, &ranges);
    let cmd = Command::deallocate(nsid, (ranges.len() / 16) as u16, list);
    let r = command(&lock, h, cmd, "deallocate").await;
    // Done, or given up on with the controller failed (its DMA stopped): either way the
    // device no longer reads the list.
    lock().await.dma.free(list, PAGE_SIZE);
    r.map(|_| ())
}

/// One command that moves no data of a caller's (flush, write zeroes, deallocate; reads
/// and writes go in batches, [`transfer`]) on the disk `lock` gives. Like [`transfer`] it
/// holds the disk only to submit, to reap, to abort and to reset, never while waiting:
/// one guest's slow flush does not hold up the batches of the others. A command that
/// times out is aborted; if the controller cannot abort it, the controller is reset.
/// Either way it is issued again once, and only a second timeout reaches the caller
/// (the controller is then failed). A reset another caller made drops it too: it is
/// issued again at once, which is not its failure. A full queue (other callers'
/// commands in every slot) is waited out.
pub async fn command<G, F>(
    lock: impl Fn() -> F,
    h: &Handle,
    cmd: Command,
    what: &'static str,
) -> Result<u32, Error>
where
    F: Future<Output = G>,
    G: DerefMut<Target = Disk>,
{
    let (mut t, waits) = {
        let mut d = lock().await;
        if d.failed {
            return Err(Error::Fatal);
        }
        (d.owners.join(), Waits::of(h, &d))
    };
    let r = command_ticket(&lock, &waits, &mut t, cmd, what).await;
    let mut d = lock().await;
    d.owners.leave(t);
    if let Err(e @ Error::Timeout { .. }) = &r {
        d.fail(&format!("{what}: {e} after abort and reset"));
    }
    r
}

/// How a caller waits on the disk (the disk's, copied out so the caller need not hold
/// it to wait).
struct Waits<'a> {
    h: &'a Handle,
    woken: Rc<Broadcast>,
    mode: IrqMode,
    timeout_ns: u64,
}

impl<'a> Waits<'a> {
    fn of(h: &'a Handle, d: &Disk) -> Waits<'a> {
        Waits {
            h,
            woken: d.woken.clone(),
            mode: d.mode,
            timeout_ns: d.timeout_ns,
        }
    }

    /// Between two looks at the completion queue: until the disk's waiters are woken (an
    /// interrupt, another caller's reaping or reset; see `Disk::woken`) after `seen`, or
    /// a moment when polled. The timeout bounds a lost interrupt.
    async fn until_woken(&self, seen: u64) {
        if self.mode == IrqMode::Poll {
            self.h.sleep(20_000).await;
        } else {
            let _ = self.h.timeout(100_000_000, self.woken.wait(seen)).await;
        }
    }
}

/// What became of one command while its caller waited.
enum Outcome {
    Completed(Completion),
    /// A controller reset (another caller's) dropped it.
    Dropped,
    TimedOut,
    /// The controller was failed meanwhile.
    Failed,
}

async fn command_ticket<G, F>(
    lock: &impl Fn() -> F,
    w: &Waits<'_>,
    t: &mut Ticket,
    cmd: Command,
    what: &'static str,
) -> Result<u32, Error>
where
    F: Future<Output = G>,
    G: DerefMut<Target = Disk>,
{
    // The policy is bulkhead_nvme::recovery's; this follows it.
    let mut recovery = recovery::Command::new();
    loop {
        let cid = submit_one(lock, w, t, cmd).await?;
        match completion(lock, w, t, cid).await {
            Outcome::Completed(c) => return c.result(),
            Outcome::Dropped => continue,
            Outcome::Failed => return Err(Error::Fatal),
            Outcome::TimedOut => {}
        }
        let e = Error::Timeout { what };
        if recovery.timed_out() == recovery::OnTimeout::Fail {
            return Err(e);
        }
        // Ask the controller to abort it; re-issue it if that completes it, else reset
        // the controller first (recovery::Policy decides). Each step looks first at
        // what changed while this caller waited for the disk: the command may have
        // completed after all (its id then free, perhaps another caller's by now: not
        // to be aborted), another caller's reset may have dropped it, or the controller
        // may have been failed.
        let aborted = {
            let mut guard = lock().await;
            let d: &mut Disk = &mut guard;
            if d.failed {
                return Err(Error::Fatal);
            }
            match look(d, t, cid) {
                Look::Completed(c) => return c.result(),
                Look::Dropped => continue,
                Look::Pending => {}
            }
            crate::event!(
                "nvme-timeout",
                "dev={} what={what} cid={cid} commands=1 timeout_ms={} action=abort",
                d.name,
                d.timeout_ns / 1_000_000
            );
            d.ctrl
                .abort(&d.dma, &mut SpinClock, 1, cid)
                .unwrap_or(false)
        };
        let completed = aborted
            && match completion(lock, w, t, cid).await {
                Outcome::Completed(_) => true,
                Outcome::Failed => return Err(Error::Fatal),
                Outcome::Dropped => continue,
                Outcome::TimedOut => false,
            };
        let mut d = lock().await;
        if d.failed {
            return Err(Error::Fatal);
        }
        match recovery.abort_result(completed) {
            recovery::AfterAbort::Reissue => {
                crate::event!("nvme-reissue", "dev={} what={what} after=abort", d.name);
            }
            recovery::AfterAbort::ResetThenReissue if d.owners.catch_up(t) => {
                // Another caller reset the controller meanwhile: the command is gone
                // already, and a second reset would drop every caller's again.
                crate::event!("nvme-reissue", "dev={} what={what} after=reset", d.name);
            }
            recovery::AfterAbort::ResetThenReissue => {
                // The abort did not complete the command.
                let lost = d.reset_controller()?;
                // This caller's own command is among those dropped: issued again below.
                d.owners.catch_up(t);
                crate::event!("nvme-reset", "dev={} dropped={lost}", d.name);
                crate::event!("nvme-reissue", "dev={} what={what} after=reset", d.name);
            }
        }
    }
}

/// Submit `cmd` for `t` (waiting while other callers' commands fill the queue); its
/// command id.
async fn submit_one<G, F>(
    lock: &impl Fn() -> F,
    w: &Waits<'_>,
    t: &mut Ticket,
    cmd: Command,
) -> Result<u16, Error>
where
    F: Future<Output = G>,
    G: DerefMut<Target = Disk>,
{
    loop {
        let seen = w.woken.generation();
        {
            let mut guard = lock().await;
            let d: &mut Disk = &mut guard;
            if d.failed {
                return Err(Error::Fatal);
            }
            let quiet = d.take_lost();
            match single::submit(
                &mut d.ctrl.io[0],
                &mut d.owners,
                t,
                &d.dma,
                &d.ctrl.mmio,
                cmd,
                quiet,
            )? {
                Submitted::Cid(cid) => return Ok(cid),
                Submitted::Full => {}
            }
        }
        w.until_woken(seen).await;
    }
}

/// Wait for command `cid` of `t` to complete, for at most the disk's timeout; the disk is
/// held only to reap.
async fn completion<G, F>(lock: &impl Fn() -> F, w: &Waits<'_>, t: &mut Ticket, cid: u16) -> Outcome
where
    F: Future<Output = G>,
    G: DerefMut<Target = Disk>,
{
    let deadline = w.h.now() + w.timeout_ns;
    loop {
        let seen = w.woken.generation();
        {
            let mut guard = lock().await;
            let d: &mut Disk = &mut guard;
            if d.failed {
                return Outcome::Failed;
            }
            match look(d, t, cid) {
                Look::Completed(c) => return Outcome::Completed(c),
                Look::Dropped => return Outcome::Dropped,
                Look::Pending => {}
            }
        }
        if w.h.now() > deadline {
            return Outcome::TimedOut;
        }
        w.until_woken(seen).await;
    }
}

/// One look for the completion of `t`'s command `cid` (`single::look`), then what every
/// reap is followed by.
fn look(d: &mut Disk, t: &mut Ticket, cid: u16) -> Look {
    let Disk {
        ctrl,
        dma,
        owners,
        woken,
        gsi,
        ..
    } = d;
    let found = single::look(&mut ctrl.io[0], owners, t, dma, &ctrl.mmio, cid);
    after_reap(owners, woken, *gsi);
    found
}

/// After any caller reaped the I/O queue: the other callers whose completions it took
/// look again, and the INTx pin (masked while the controller asserts it) is open again.
fn after_reap(owners: &mut Owners, woken: &Broadcast, gsi: Option<u8>) {
    if owners.take_handed() {
        woken.raise();
    }
    if let Some(g) = gsi {
        crate::arch::ioapic::unmask(g);
    }
}

/// Serve every transfer of `ios` on namespace `nsid` of the disk `lock` gives, with as
/// many commands in flight as the I/O queue and the DMA pool allow
/// (`bulkhead_nvme::batch`), each transfer split into commands of at most one pool
/// buffer; one result per transfer. The disk is held only to submit and to reap, never
/// while waiting, so other callers' batches are at the device at the same time
/// (`bulkhead_nvme::owners`). If the controller stops answering this batch for
/// `timeout_ns`, it is reset and what was in flight is issued again (every caller's);
/// a second time, the controller is failed.
pub async fn transfer<G, F>(
    lock: impl Fn() -> F,
    h: &Handle,
    nsid: u32,
    ios: &mut [Io<'_>],
    check: bool,
) -> Vec<Result<(), Error>>
where
    F: Future<Output = G>,
    G: DerefMut<Target = Disk>,
{
    let mut out: Vec<Result<(), Error>> = alloc::vec![Ok(()); ios.len()];
    let (ns, buffer_bytes, w) = {
        let d = lock().await;
        if d.failed {
            out.iter_mut().for_each(|r| *r = Err(Error::Fatal));
            return out;
        }
        let Some(ns) = d.ctrl.namespace(nsid).cloned() else {
            out.iter_mut()
                .for_each(|r| *r = Err(Error::Invalid("no such namespace")));
            return out;
        };
        (ns, d.pool.buffer_bytes(), Waits::of(h, &d))
    };
    // The caller's memory is identity-mapped RAM (all of the kernel's is: heap, image,
    // stacks; so are the grants it maps), so its address is what the device is given
    // (batch::split decides where it cannot be).
    let pieces: Vec<Option<Vec<(u64, usize)>>> =
        ios.iter().map(|io| io.spans().map(prp_pieces)).collect();
    let transfers: Vec<Transfer> = ios
        .iter()
        .zip(&pieces)
        .map(|(io, p)| Transfer {
            write: io.is_write(),
            lba: io.lba(),
            len: io.len(),
            memory: match (p, io.as_ptr()) {
                (Some(p), _) => Memory::Pieces(p),
                (None, Some(at)) => Memory::Buffer(at as u64),
                (None, None) => Memory::Copied,
            },
        })
        .collect();
    let Split {
        ops,
        owner,
        refused,
    } = batch::split(
        &transfers,
        nsid,
        ns.blocks,
        ns.block_size,
        buffer_bytes,
        check,
    );
    for (r, e) in out.iter_mut().zip(refused) {
        if let Some(e) = e {
            *r = Err(e);
        }
    }
    let mut batch = Batch::new(ops, &mut lock().await.owners);
    // Started at the first look that holds the disk: waiting for the lock (another
    // caller's abort or reset holds it while it spins on the admin queue) is not this
    // batch stalling.
    let mut watch: Option<recovery::BatchWatch> = None;
    loop {
        let (seen, ended) = {
            let mut guard = lock().await;
            let d: &mut Disk = &mut guard;
            if d.failed {
                // Another caller gave up on the controller (its DMA is stopped).
                batch.fail_rest(&mut d.pool, Error::Fatal, false);
                break;
            }
            let now = h.now();
            let watch = watch.get_or_insert_with(|| recovery::BatchWatch::new(now, w.timeout_ns));
            if batch.catch_up(&d.owners, &mut d.pool) > 0 {
                // Another caller's reset: this batch's commands go again.
                watch.restart(now);
            }
            let seen = d.woken.generation();
            let lose = d.take_lost();
            let Disk {
                ctrl,
                dma,
                pool,
                owners,
                woken,
                gsi,
                ..
            } = d;
            let q = &mut ctrl.io[0];
            // Reap first: a completion another caller reaped for this batch must end
            // its operation before the command id is used again (`Batch::submit`).
            let ended = batch.reap(q, owners, pool, dma, &ctrl.mmio, |i, b| {
                let (k, at, l) = owner[i];
                if let Io::Read { buf, .. } = &mut ios[k] {
                    dma.read(b.data, &mut buf[at..at + l]);
                }
            });
            after_reap(owners, woken, *gsi);
            if batch.done() {
                break;
            }
            let fill = |i: usize, b: &Buffer| {
                let (k, at, l) = owner[i];
                if let Io::Write { buf, .. } = &ios[k] {
                    dma.write(b.data, &buf[at..at + l]);
                }
            };
            // Test only: the commands queued here stay unseen until the next doorbell,
            // so this loses a command only if the batch fits in this one submission
            // (the self-test's single 64 KiB read does).
            if lose {
                batch.queue_up(q, owners, pool, dma, fill);
            } else {
                batch.submit(q, owners, pool, dma, &ctrl.mmio, fill);
            }
            if batch.done() {
                // Every operation left was refused before any command.
                break;
            }
            if batch.in_flight() == 0 && owners.in_flight() > 0 {
                // Nothing of its own out: it waits for buffers or queue slots others
                // hold, whose own watches judge them.
                watch.restart(now);
            }
            match watch.look(now, ended, batch.in_flight()) {
                recovery::Verdict::Wait => {}
                recovery::Verdict::GiveUp(why) => {
                    // Commands still out may point into the caller's memory, which it
                    // takes back when this returns: `fail` stops the device's DMA.
                    d.fail(&match why {
                        // Nothing in flight anywhere and nothing submitted: the DMA pool
                        // lost its buffers to commands given up on earlier.
                        recovery::GiveUp::NoBuffers => {
                            String::from("no DMA buffer left for a command")
                        }
                        recovery::GiveUp::TimedOutAfterReset { stuck } => {
                            format!("{stuck} command(s) timed out again after a controller reset")
                        }
                    });
                    batch.fail_rest(
                        &mut d.pool,
                        Error::Timeout {
                            what: "read or write",
                        },
                        false,
                    );
                    break;
                }
                recovery::Verdict::Reset { stuck } => {
                    crate::event!(
                        "nvme-timeout",
                        "dev={} what=batch commands={stuck} timeout_ms={} action=reset",
                        d.name,
                        d.timeout_ns / 1_000_000
                    );
                    // A reset that fails has failed the controller: the next look ends
                    // the batch.
                    if d.reset_controller().is_ok() {
                        let n = batch.catch_up(&d.owners, &mut d.pool);
                        crate::event!("nvme-reset", "dev={} dropped={n}", d.name);
                        crate::event!("nvme-reissue", "dev={} what=batch after=reset", d.name);
                    }
                    watch.reset_done(now);
                    continue;
                }
            }
            (seen, ended)
        };
        if ended > 0 {
            // Progress: look again at once, but after every other task had its turn
            // (another caller may be waiting for the disk, or for buffers).
            bulkhead_executor::yield_now().await;
            continue;
        }
        w.until_woken(seen).await;
    }
    let mut results = batch.results(&mut lock().await.owners).into_iter();
    for (k, _, _) in owner {
        let r = results.next().unwrap_or(Err(Error::Invalid("no result")));
        if out[k].is_ok() {
            out[k] = r;
        }
    }
    out
}

fn block_error(e: Error) -> BlockError {
    match e {
        Error::Invalid(_) => BlockError::OutOfRange,
        Error::Timeout { .. } => BlockError::Timeout,
        _ => BlockError::Io,
    }
}

/// A disk shared by everything that serves from it (each backend's vbds, the self-test):
/// one caller at a time goes through the lock (a batch of commands, or one command).
pub type SharedDisk = Rc<Mutex<Disk>>;

/// One namespace, or one partition of it, as a block device: every range is checked
/// against the extent before the controller sees it.
#[derive(Clone)]
pub struct Volume {
    pub disk: SharedDisk,
    pub h: Handle,
    pub nsid: u32,
    pub extent: Extent,
    pub features: Features,
}

impl BlockDevice for Volume {
    fn block_size(&self) -> u32 {
        self.extent.block_size
    }
    fn blocks(&self) -> u64 {
        self.extent.blocks
    }
    fn features(&self) -> Features {
        self.features
    }
    async fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let mut ios = [Io::Read { lba, buf }];
        self.transfer_all(&mut ios)
            .await
            .pop()
            .unwrap_or(Err(BlockError::Io))
    }
    async fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), BlockError> {
        let mut ios = [Io::Write { lba, buf }];
        self.transfer_all(&mut ios)
            .await
            .pop()
            .unwrap_or(Err(BlockError::Io))
    }
    /// Every transfer checked against the extent, then all of them in flight at once on
    /// the controller (one lock for the batch).
    async fn transfer_all(&mut self, ios: &mut [Io<'_>]) -> Vec<Result<(), BlockError>> {
        let mut out: Vec<Result<(), BlockError>> = alloc::vec![Ok(()); ios.len()];
        let mut mapped: Vec<Io<'_>> = Vec::with_capacity(ios.len());
        let mut owner: Vec<usize> = Vec::with_capacity(ios.len());
        for (k, io) in ios.iter_mut().enumerate() {
            match self.extent.map(io.lba(), io.len(), io.is_write()) {
                Ok(dev) => {
                    mapped.push(io.at(dev));
                    owner.push(k);
                }
                Err(e) => out[k] = Err(e),
            }
        }
        let disk = &self.disk;
        let results = transfer(|| disk.lock(), &self.h, self.nsid, &mut mapped, true).await;
        for (k, r) in owner.into_iter().zip(results) {
            out[k] = r.map_err(block_error);
        }
        out
    }
    /// Every clone reaches the same disk, whose lock is held only to submit and reap.
    fn lane(&self) -> Option<Self> {
        Some(self.clone())
    }
    /// Any memory PRPs describe (the commands a transfer is split into are sub-ranges,
    /// which PRPs then describe too).
    fn takes_spans(&self, spans: &[Span]) -> bool {
        let pieces = prp_pieces(spans);
        let len = pieces.iter().map(|p| p.1).sum();
        Pages::of_pieces(&pieces, 0, len).is_some()
    }
    async fn flush(&mut self) -> Result<(), BlockError> {
        let disk = &self.disk;
        command(|| disk.lock(), &self.h, Command::flush(self.nsid), "flush")
            .await
            .map(|_| ())
            .map_err(block_error)
    }
    async fn discard(&mut self, lba: u64, blocks: u64) -> Result<(), BlockError> {
        let dev = self.extent.map_blocks(lba, blocks, true)?;
        if !self.features.discard {
            return Err(BlockError::Unsupported);
        }
        let disk = &self.disk;
        deallocate(|| disk.lock(), &self.h, self.nsid, dev, blocks)
            .await
            .map_err(block_error)
    }
}

/// Spans as `prp::Pages::of_pieces` takes them.
fn prp_pieces(spans: &[Span]) -> Vec<(u64, usize)> {
    spans.iter().map(|s| (s.addr, s.len)).collect()
}

/// The namespaces and partitions found, as `target=` names see them (bulkhead_block's
/// `Listed`, where the names are resolved).
pub fn listed(
    namespaces: &[Vec<Namespace>],
    parts: &[(usize, u32, Vec<Partition>)],
) -> Vec<Listed> {
    namespaces
        .iter()
        .enumerate()
        .flat_map(|(d, nss)| {
            nss.iter().map(move |n| Listed {
                controller: d,
                nsid: n.nsid,
                blocks: n.blocks,
                block_size: n.block_size,
                partitions: parts
                    .iter()
                    .filter(|(pd, pn, _)| *pd == d && *pn == n.nsid)
                    .flat_map(|(_, _, ps)| ps.iter())
                    .map(|p| ListedPartition {
                        number: p.number,
                        name: p.name.clone(),
                        first: p.first_lba,
                        blocks: p.blocks(),
                    })
                    .collect(),
            })
        })
        .collect()
}
