//! The driver-domain side of xenbus: find the backend devices the toolstack creates under
//! our home (`backend/vbd`, `backend/vif`), and walk each through the xenbus handshake.
//! This replaces `xl devd` of a Linux driver domain.
//!
//! vbds are served by blkback (`super::blkback`), vifs by netback (`super::netback`),
//! both from `Action::Connect`.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::future::Future;
use core::pin::Pin;

use bulkhead_executor::{first, Handle, Notify};
use bulkhead_xenbus::{Action, Backend, DeviceId, Discovery, Event, Kind, State};
use bulkhead_xenstore::client::Tx;
use log::{error, info, warn};

use super::{blkback, netback, XenRef};
use crate::storage::Storage;
use bulkhead_fabric::FabricRef;

const TOKEN: &str = "xenbus-backends";
/// How often device lists and states are re-read without a watch event.
const RECHECK_NS: u64 = 3_000_000_000;
/// Pause between writing Closed and removing the backend directory (see `device`).
const REMOVE_GRACE_NS: u64 = 2_000_000_000;

/// The device tasks alive, so that a shutdown can close them all, and those that ended,
/// so that discovery takes up a device re-created under the same name.
#[derive(Default)]
pub struct Devices {
    next: Cell<u64>,
    live: RefCell<BTreeMap<u64, Rc<Notify>>>,
    stopping: Cell<bool>,
    ended: RefCell<Vec<(DeviceId, bool)>>,
    changed: Notify,
}

impl Devices {
    fn register(self: &Rc<Self>, id: DeviceId) -> Registration {
        let key = self.next.get();
        self.next.set(key + 1);
        let stop = Rc::new(Notify::new());
        self.live.borrow_mut().insert(key, stop.clone());
        Registration {
            devices: self.clone(),
            key,
            stop,
            id,
            served: Cell::new(false),
        }
    }

    /// Ask every device task to close its device (backend Closed, rings released) and
    /// end; no new device is taken on after this.
    pub fn stop_all(&self) {
        self.stopping.set(true);
        for n in self.live.borrow().values() {
            n.notify();
        }
    }

    pub fn live(&self) -> usize {
        self.live.borrow().len()
    }
}

/// A device task's entry in [`Devices`], removed when the task ends however it ends.
struct Registration {
    devices: Rc<Devices>,
    key: u64,
    stop: Rc<Notify>,
    id: DeviceId,
    /// The task took the device on (as opposed to refusing it).
    served: Cell<bool>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.devices.live.borrow_mut().remove(&self.key);
        self.devices
            .ended
            .borrow_mut()
            .push((self.id, self.served.get()));
        self.devices.changed.notify();
    }
}

/// A device's reservation of map slots for its rings, for as long as its task lives.
struct RingReserve(XenRef);

impl RingReserve {
    fn new(xen: &XenRef) -> RingReserve {
        xen.slots.borrow_mut().add_device();
        RingReserve(xen.clone())
    }
}

impl Drop for RingReserve {
    fn drop(&mut self) {
        self.0.slots.borrow_mut().remove_device();
    }
}

/// The `xenbus` task.
pub async fn run(
    xen: XenRef,
    h: Handle,
    storage: Rc<Storage>,
    fabric: FabricRef,
    devices: Rc<Devices>,
) {
    for kind in Kind::ALL {
        let path = format!("{}/backend/{}", xen.home(), kind.as_str());
        if let Err(e) = xen.store.watch(&path, TOKEN).await {
            error!("cannot watch {path}: {e}; no backends will be served");
            return;
        }
    }
    crate::event!("backend-watch", "home={} kinds=vbd,vif", xen.home());
    let mut discovery = Discovery::default();
    loop {
        // Also look every few seconds without an event: xenstored drops watch events for
        // a domain that has too many undelivered (its per-domain quota), and a missed
        // "device created" would otherwise wait forever.
        // A device task that ended may leave a successor waiting under the same name.
        let lost = Cell::new(None);
        {
            let waits: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> = alloc::vec![
                Box::pin(async {
                    if let Some(Err(e)) = h.timeout(RECHECK_NS, xen.store.next_event(TOKEN)).await {
                        lost.set(Some(e));
                    }
                }),
                Box::pin(devices.changed.wait()),
            ];
            first(waits).await;
        }
        if let Some(e) = lost.take() {
            error!("xenstore watch lost: {e}");
            return;
        }
        while xen.store.take_event(TOKEN).is_some() {}
        for (id, served) in devices.ended.borrow_mut().drain(..) {
            discovery.ended(id, served);
        }
        let listing = match list(&xen).await {
            Ok(l) => l,
            Err(e) => {
                warn!("cannot list backend devices: {e}");
                continue;
            }
        };
        let borrowed: Vec<(Kind, &str, Vec<&str>)> = listing
            .iter()
            .map(|(k, fe, devs)| (*k, fe.as_str(), devs.iter().map(String::as_str).collect()))
            .collect();
        let view: Vec<(Kind, &str, &[&str])> = borrowed
            .iter()
            .map(|(k, fe, d)| (*k, *fe, d.as_slice()))
            .collect();
        let changes = discovery.update(&view);
        if devices.stopping.get() {
            return;
        }
        for id in changes.added {
            crate::event!("device-new", "dev={id}");
            h.spawn(
                "xenbus-device",
                device(
                    xen.clone(),
                    h.clone(),
                    storage.clone(),
                    fabric.clone(),
                    devices.register(id),
                    id,
                ),
            );
        }
        for id in changes.removed {
            info!("{id}: backend directory removed");
        }
    }
}

async fn list(xen: &XenRef) -> Result<Vec<(Kind, String, Vec<String>)>, bulkhead_xenstore::Error> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        let base = format!("{}/backend/{}", xen.home(), kind.as_str());
        for fe in xen.store.directory_opt(Tx::NONE, &base).await? {
            let devs = xen
                .store
                .directory_opt(Tx::NONE, &format!("{base}/{fe}"))
                .await?;
            out.push((kind, fe, devs));
        }
    }
    Ok(out)
}

/// What one device task carries between events.
struct Device {
    xen: XenRef,
    h: Handle,
    storage: Rc<Storage>,
    fabric: FabricRef,
    be: String,
    frontend: String,
    b: Backend,
    vbd: Option<blkback::Connection>,
    vif: Option<netback::Connection>,
    /// How often this device may connect (a flapping frontend waits).
    pace: bulkhead_xenbus::pace::Pace,
}

async fn device(
    xen: XenRef,
    h: Handle,
    storage: Rc<Storage>,
    fabric: FabricRef,
    reg: Registration,
    id: DeviceId,
) {
    let be = format!("{}/{}", xen.home(), id.rel_path());
    // While the toolstack has this device, room for its rings stays reserved in the
    // map-slot pool (no guest's persistent grants can take it).
    let _rings = RingReserve::new(&xen);
    let store = &xen.store;
    // What the toolstack wrote must name this very device (bulkhead_xenbus checks it).
    let read = |k: &'static str| {
        let p = format!("{be}/{k}");
        async move { store.read_opt(Tx::NONE, &p).await }
    };
    let (fe, fe_id) = match (read("frontend").await, read("frontend-id").await) {
        (Ok(fe), Ok(fe_id)) => (fe, fe_id),
        (Err(e), _) | (_, Err(e)) => {
            warn!("{id}: cannot read the frontend nodes: {e}");
            return;
        }
    };
    let frontend = match id.check_toolstack(fe.as_deref(), fe_id.as_deref()) {
        Ok(f) => f,
        Err(why) => {
            warn!("{id}: {why}; ignoring the device");
            return;
        }
    };

    // The transport's limits, before InitWait.
    let keys = match id.kind {
        Kind::Vbd => blkback::OFFER.keys(),
        Kind::Vif => netback::OFFER.keys(),
    };
    let offered = xen
        .store
        .write_each(Tx::NONE, &be, &keys)
        .await
        .map_err(|(k, e)| format!("write {k}: {e}"));
    if let Err(e) = offered {
        warn!("{id}: cannot publish the device's features: {e}");
        return;
    }
    // Unique per device task: a re-created device (detach then attach of the same vdev)
    // must not share watch events with the task still tearing the old one down.
    static NEXT_TOKEN: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
    let token = format!(
        "{id}#{}",
        NEXT_TOKEN.fetch_add(1, core::sync::atomic::Ordering::Relaxed)
    );
    let fe_state = format!("{frontend}/state");
    let mut dev = Device {
        xen: xen.clone(),
        h,
        storage,
        fabric,
        be: be.clone(),
        frontend,
        b: Backend::new(id),
        vbd: None,
        vif: None,
        pace: bulkhead_xenbus::pace::Pace::new(
            bulkhead_xenbus::pace::CONNECT_BURST,
            bulkhead_xenbus::pace::CONNECT_INTERVAL_NS,
            crate::time::now_ns(),
        ),
    };
    reg.served.set(true);
    let mut look_pace = bulkhead_xenbus::pace::Pace::new(
        bulkhead_xenbus::pace::LOOK_BURST,
        bulkhead_xenbus::pace::LOOK_INTERVAL_NS,
        crate::time::now_ns(),
    );
    if !dev.apply(Event::Created).await {
        return;
    }
    for path in [be.as_str(), fe_state.as_str()] {
        if let Err(e) = store.watch(path, &token).await {
            warn!("{id}: cannot watch {path}: {e}");
            return;
        }
    }
    loop {
        // Re-read the states now and then even without an event (see `run`).
        let lost = Cell::new(false);
        {
            let h = &dev.h;
            let waits: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> = alloc::vec![
                Box::pin(async {
                    if let Some(Err(_)) = h.timeout(RECHECK_NS, store.next_event(&token)).await {
                        lost.set(true);
                    }
                }),
                Box::pin(reg.stop.wait()),
            ];
            first(waits).await;
        }
        if lost.get() {
            return;
        }
        if reg.devices.stopping.get() {
            let _ = store.unwatch(&be, &token).await;
            let _ = store.unwatch(&fe_state, &token).await;
            dev.stop().await;
            return;
        }
        // A frontend flapping its state: look at most LOOK_INTERVAL apart once past the
        // burst; what changed meanwhile is read together.
        let wait = look_pace.take(crate::time::now_ns());
        if wait > 0 {
            dev.h.sleep(wait).await;
        }
        while store.take_event(&token).is_some() {}
        // Removal: the toolstack deletes the backend directory (or sets online=0 and
        // closes the frontend, for `xl block-detach`).
        let state = store
            .read_opt(Tx::NONE, &format!("{be}/state"))
            .await
            .ok()
            .flatten();
        let online = store
            .read_opt(Tx::NONE, &format!("{be}/online"))
            .await
            .ok()
            .flatten();
        let fs = store
            .read_opt(Tx::NONE, &fe_state)
            .await
            .ok()
            .flatten()
            .and_then(|s| State::parse(&s));
        let event = Event::after_look(state.as_deref(), online.as_deref(), fs);
        if !dev.apply(event).await {
            let _ = store.unwatch(&be, &token).await;
            let _ = store.unwatch(&fe_state, &token).await;
            // Taken offline (detach, or the guest is gone): as `xl devd` in a Linux driver
            // domain, the backend directory is ours to remove, and libxl in dom0 waits
            // (10 s) for that. It first waits to see Closed: give it a moment to read
            // the state before the node disappears (devd's hotplug script run makes the
            // same pause).
            if state.is_some() {
                dev.h.sleep(REMOVE_GRACE_NS).await;
                if let Err(e) = store.rm(Tx::NONE, &be).await {
                    if !e.is("ENOENT") {
                        warn!("{id}: cannot remove {be}: {e}");
                    }
                }
            }
            crate::status::remove(&format!("{id}"));
            crate::event!(
                "device-released",
                "dev={id} domain={} domain_persistent={} {}",
                id.frontend,
                xen.slots.borrow().cached(id.frontend),
                xen.resources()
            );
            return;
        }
    }
}

impl Device {
    /// Our domain is shutting down: release the device and tell the frontend (Closed).
    /// The backend directory stays: it is the toolstack's record of the device, and what
    /// a driver domain started later finds.
    async fn stop(&mut self) {
        if let Some(c) = self.vbd.take() {
            c.close(&self.xen).await;
        }
        if let Some(c) = self.vif.take() {
            c.close(&self.xen, &self.fabric).await;
        }
        self.set_state(State::Closed).await;
        crate::status::remove(&format!("{}", self.b.id));
    }

    /// Feed one event to the state machine and carry out its actions; false once the
    /// device is gone.
    async fn apply(&mut self, ev: Event) -> bool {
        let mut alive = true;
        let mut todo: VecDeque<Action> = self.b.on(ev).into();
        while let Some(a) = todo.pop_front() {
            match a {
                Action::SetState(s) => self.set_state(s).await,
                Action::Connect => {
                    let wait = self.pace.take(crate::time::now_ns());
                    if wait > 0 {
                        self.h.sleep(wait).await;
                        // The frontend may have moved on meanwhile (it flaps): connect
                        // only if it still asks; its next state change comes as an event.
                        if !self.frontend_wants_connection().await {
                            continue;
                        }
                    }
                    let next = match self.connect().await {
                        Ok(true) => self.b.connected(),
                        Ok(false) => Vec::new(),
                        Err(e) => {
                            let id = self.b.id;
                            self.xen
                                .guest_warn(id.frontend, format_args!("{id}: cannot connect: {e}"));
                            self.b.connect_failed()
                        }
                    };
                    todo.extend(next);
                }
                Action::Disconnect => {
                    if let Some(c) = self.vbd.take() {
                        c.close(&self.xen).await;
                    }
                    if let Some(c) = self.vif.take() {
                        c.close(&self.xen, &self.fabric).await;
                    }
                }
                Action::Destroy => alive = false,
            }
        }
        // The frontend's state may have changed without ours (it went from Initialised
        // to Connected after we connected): the status page follows it.
        if alive {
            self.show_status();
        }
        alive
    }

    fn show_status(&self) {
        crate::status::set(
            format!("{}", self.b.id),
            format!(
                "backend {}, frontend {}",
                self.b.state(),
                self.b.frontend_state()
            ),
        );
    }

    /// Whether the frontend's state is still Initialised or Connected (read now).
    async fn frontend_wants_connection(&self) -> bool {
        matches!(
            self.xen
                .store
                .read_opt(Tx::NONE, &format!("{}/state", self.frontend))
                .await
                .ok()
                .flatten()
                .as_deref()
                .and_then(State::parse),
            Some(State::Initialised | State::Connected)
        )
    }

    /// Start serving; `Ok(false)` when the class has no server (the device stays
    /// offered).
    async fn connect(&mut self) -> Result<bool, String> {
        match self.b.id.kind {
            Kind::Vbd => {
                let c = blkback::connect(
                    &self.xen,
                    &self.h,
                    &self.storage,
                    &self.b.id,
                    &self.be,
                    &self.frontend,
                )
                .await?;
                self.vbd = Some(c);
                Ok(true)
            }
            Kind::Vif => {
                let c = netback::connect(
                    &self.xen,
                    &self.h,
                    &self.fabric,
                    &self.b.id,
                    &self.be,
                    &self.frontend,
                )
                .await?;
                self.vif = Some(c);
                Ok(true)
            }
        }
    }

    async fn set_state(&mut self, s: State) {
        if let Err(e) = self
            .xen
            .store
            .write(Tx::NONE, &format!("{}/state", self.be), s.as_str())
            .await
        {
            if !e.is("ENOENT") {
                warn!("{}: cannot write state {s}: {e}", self.b.id);
            }
        }
        self.xen.guest_event(
            self.b.id.frontend,
            "device-state",
            format_args!(
                "dev={} backend={s} frontend={}",
                self.b.id,
                self.b.frontend_state()
            ),
        );
        self.show_status();
    }
}
