//! The toolstack's requests to this domain (`control/shutdown`, what `xl shutdown` and
//! `xl reboot` write): close every backend so frontends see Closed, flush and shut down
//! the disks, reset the NICs, then leave through SCHEDOP_shutdown so xl's `on_poweroff`/`on_reboot`
//! apply. Bounded: whatever is not done after the grace period is abandoned, logged.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;

use bulkhead_executor::Handle;
use bulkhead_xenbus::control::Shutdown;
use bulkhead_xenstore::client::Tx;
use log::{error, info, warn};

use super::devices::Devices;
use super::XenRef;
use crate::storage::Storage;
use bulkhead_fabric::FabricRef;

const TOKEN: &str = "control";
/// How long backends get to close (in-flight requests complete) before we go anyway.
const CLOSE_GRACE_NS: u64 = 10_000_000_000;
/// How long the disks get to flush and shut down.
const DISK_GRACE_NS: u64 = 20_000_000_000;
/// How long the network task gets to reset the NICs.
const NIC_GRACE_NS: u64 = 1_000_000_000;

pub async fn run(
    xen: XenRef,
    h: Handle,
    storage: Rc<Storage>,
    devices: Rc<Devices>,
    fabric: FabricRef,
    test_triggers: bool,
) {
    let dir = format!("{}/control", xen.home());
    h.spawn(
        "dump",
        dumps(xen.clone(), h.clone(), format!("{dir}/dump"), fabric),
    );
    h.spawn("mark", marks(xen.clone(), format!("{dir}/mark")));
    #[cfg(feature = "test-hooks")]
    if test_triggers {
        h.spawn(
            "test-triggers",
            triggers(xen.clone(), format!("{dir}/test-trigger"), storage.clone()),
        );
    }
    // Without the test hooks the option is refused at boot: always false here.
    #[cfg(not(feature = "test-hooks"))]
    let _ = test_triggers;
    // Tell the toolstack we act on shutdown requests ourselves.
    for k in ["feature-poweroff", "feature-reboot"] {
        if let Err(e) = xen.store.write(Tx::NONE, &format!("{dir}/{k}"), "1").await {
            warn!("control: cannot write {k}: {e}");
        }
    }
    let node = format!("{dir}/shutdown");
    if let Err(e) = xen.store.watch(&node, TOKEN).await {
        error!("control: cannot watch {node}: {e}; xl shutdown will not be seen");
        return;
    }
    loop {
        if xen.store.next_event(TOKEN).await.is_err() {
            error!("control: watch lost; xl shutdown will not be seen");
            return;
        }
        while xen.store.take_event(TOKEN).is_some() {}
        let req = match xen.store.read_opt(Tx::NONE, &node).await {
            Ok(Some(v)) => v,
            _ => continue,
        };
        let asked = match Shutdown::parse(&req) {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(_unknown) => {
                warn!(
                    "control: ignoring shutdown request {:?}",
                    req.trim_end_matches('\0')
                );
                let _ = xen.store.write(Tx::NONE, &node, "").await;
                continue;
            }
        };
        // Acknowledge (as Linux does): the toolstack sees the request was taken.
        let _ = xen.store.write(Tx::NONE, &node, "").await;
        let t0 = h.now();
        info!(
            "control: {} requested: closing {} backend device(s), then flushing the disks",
            asked.as_str(),
            devices.live()
        );
        devices.stop_all();
        while devices.live() > 0 && h.now() - t0 < CLOSE_GRACE_NS {
            h.sleep(10_000_000).await;
        }
        if devices.live() > 0 {
            warn!(
                "control: {} device(s) did not close within {} s; going anyway",
                devices.live(),
                CLOSE_GRACE_NS / 1_000_000_000
            );
        }
        if h.timeout(DISK_GRACE_NS, storage.shutdown()).await.is_none() {
            warn!(
                "control: disks did not shut down within {} s; going anyway",
                DISK_GRACE_NS / 1_000_000_000
            );
        }
        if !crate::net::shut_down(&h, NIC_GRACE_NS).await {
            warn!("control: the NICs did not reset within 1 s; going anyway");
        }
        // Backends closed, disks flushed and shut down, NICs reset (or their grace ran out,
        // warned above): the domain goes.
        crate::event!(
            "shutdown",
            "ms={} then={}",
            (h.now() - t0) / 1_000_000,
            asked.as_str()
        );
        match asked {
            Shutdown::Reboot => crate::platform::reboot(),
            Shutdown::Poweroff => crate::platform::poweroff(),
        }
    }
}

/// Watch `node` (created empty, read-only for the domain) and hand each value dom0 writes
/// there, trimmed and not empty, to `each`; what it is for names the node in the warning
/// if it cannot be watched. Ends when the watch does.
async fn each_value(
    xen: &XenRef,
    node: &str,
    token: &str,
    what: &str,
    mut each: impl AsyncFnMut(&str),
) {
    let _ = xen.store.write(Tx::NONE, node, "").await;
    if let Err(e) = xen.store.watch(node, token).await {
        warn!("control: cannot watch {node}: {e}; no {what}");
        return;
    }
    loop {
        if xen.store.next_event(token).await.is_err() {
            return;
        }
        while xen.store.take_event(token).is_some() {}
        let v = xen.store.read_opt(Tx::NONE, node).await.ok().flatten();
        let v = v.as_deref().map(|v| v.trim_end_matches('\0').trim());
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            each(v).await;
        }
    }
}

/// `control/dump`: anything written there makes the switch, the status lines and every
/// backend queue log their state once (ring indexes, event-channel bits, waiting
/// packets), then an event line `dump` with the resources in use (map slots, ports,
/// heap, memory), for an operator or a test chasing a stall or a leak. The lines are
/// written as the console ring has room (`super::dump`), the event line last.
async fn dumps(xen: XenRef, h: Handle, node: String, fabric: FabricRef) {
    const TARGET: &str = "xen::control";
    each_value(&xen, &node, "dump", "state dumps", async |_| {
        let _ = xen.store.write(Tx::NONE, &node, "").await;
        // Taken first, so the dump's own buffers are not in it.
        let resources = xen.resources();
        super::dump::begin();
        let mut o = String::new();
        fabric.borrow().render(&mut o);
        crate::status::render(&mut o);
        for line in o.lines() {
            super::dump::line(TARGET, format!("dump: {line}"));
        }
        super::dump::line(
            TARGET,
            format!(
                "dump: grant copies: {}; notifications sent {} in {} hypercalls",
                super::grants::COPIES.describe(),
                super::hv::SENDS.load(core::sync::atomic::Ordering::Relaxed),
                super::hv::SEND_CALLS.load(core::sync::atomic::Ordering::Relaxed)
            ),
        );
        // The queue tasks add their lines at their next pass.
        xen.dump.raise();
        let closing = format!("{resources}");
        super::dump::write_out(&h, closing.len() + 64).await;
        crate::event!("dump", "{closing}");
    })
    .await;
}

/// `control/mark`: a name written there ends the event loop's current window and starts
/// one under that name; what the ended window saw is the event line `loop-window`
/// (crate::loopwatch): its length, how long this vCPU ran in it, its longest wait
/// for a physical CPU and its slowest task poll, each with when it ended. A test marks
/// each stretch it measures (the hostile scenarios, one per attack) to tell a stall of
/// Bulkhead's from Xen not running it. The node is not cleared (a mark written while
/// clearing would be lost): each new value is a mark; the same name twice in a row is
/// one.
async fn marks(xen: XenRef, node: String) {
    let mut name = String::from("start");
    each_value(&xen, &node, "mark", "loop windows", async |v| {
        // dom0's bytes as one field of the event line.
        let next = format!("{}", bulkhead_event::word(v, 64));
        if next.is_empty() || next == name {
            return;
        }
        let (w, ran, counts) = crate::loopwatch::take_window();
        let ms = |ns: u64| ns / 1_000_000;
        crate::event!(
            "loop-window",
            "mark={name} length_ms={} running_ms={} cpu_wait_ms={} cpu_wait_end_ms={} slowest_poll_ms={} poll_task={} poll_end_ms={} vectors={} halts={} hypercalls={}",
            ms(crate::time::now_ns().saturating_sub(w.since)),
            ran.map_or(String::from("-"), |r| format!("{}", ms(r))),
            ms(w.longest_wait),
            ms(w.wait_ended),
            ms(w.slowest_poll),
            if w.poll_task.is_empty() { "-" } else { w.poll_task },
            ms(w.poll_ended),
            counts.vectors,
            counts.halts,
            counts.hypercalls
        );
        name = next;
    })
    .await;
}

/// `test-triggers`: faults on demand for the fault-isolation tests (dom0 writes the node;
/// a driver domain in service never has this option).
#[cfg(feature = "test-hooks")]
async fn triggers(xen: XenRef, node: String, storage: Rc<Storage>) {
    const T: &str = "test-trigger";
    // Created empty and writable by nobody else: dom0 (the only other writer) may.
    let _ = xen.store.write(Tx::NONE, &node, "").await;
    if let Err(e) = xen.store.watch(&node, T).await {
        error!("test-triggers: cannot watch {node}: {e}");
        return;
    }
    info!("test-triggers: obeying {node} (panic, nvme-fail)");
    loop {
        if xen.store.next_event(T).await.is_err() {
            return;
        }
        while xen.store.take_event(T).is_some() {}
        let v = xen.store.read_opt(Tx::NONE, &node).await.ok().flatten();
        match v.as_deref().map(|s| s.trim_end_matches('\0')) {
            Some("panic") => panic!("test-trigger: panic requested by dom0"),
            Some("nvme-fail") => {
                let _ = xen.store.write(Tx::NONE, &node, "").await;
                storage
                    .fail_all("test-trigger: nvme-fail requested by dom0")
                    .await;
            }
            Some("") | None => {}
            Some(other) => warn!("test-triggers: unknown trigger {other:?}"),
        }
    }
}
