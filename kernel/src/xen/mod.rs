//! Running under Xen: detection, the hypercall page, and the Xen core the backends stand
//! on — event channels (callback vector), grant tables, xenstore, xenbus. ABI definitions
//! and the bookkeeping live in the host-tested `bulkhead-xen`, `bulkhead-xenstore` and
//! `bulkhead-xenbus` crates; this module supplies the hypercalls, pages and interrupts.

pub mod blkback;
pub mod control;
pub mod devices;
pub mod dump;
pub mod events;
pub mod netback;
#[cfg(feature = "test-hooks")]
pub mod peertest;
pub mod ring;
pub mod store;
pub mod task;

use alloc::rc::Rc;
use alloc::string::String;
use core::cell::{OnceCell, RefCell};

use bulkhead_xen::abi::Port;
use bulkhead_xen::events::Ports;
use bulkhead_xen::grants::{GrantTable, MapSlots};
use bulkhead_xen::Errno;

pub use crate::machine::grants;
use crate::machine::hv;
pub use crate::machine::hv::detect;

pub use hv::Hv;

/// Ask Xen to fill the hypercall page. Must run before any hypercall.
pub fn init_hypercalls() {
    if let Some(x) = detect() {
        x.install_hypercalls();
    }
}

pub fn evtchn_send(port: Port) -> Result<(), Errno> {
    use bulkhead_xen::Hypervisor;
    Hv.evtchn_send(port)
}

/// Everything the Xen core set up, shared by the tasks that use it.
pub struct Xen {
    /// Our domain id and xenstore home (`/local/domain/<domid>`), known once xenstore
    /// answers.
    ident: OnceCell<(u16, String)>,
    pub ports: RefCell<Ports>,
    /// Our own grant table (pages we grant others): only the peer test grants any today.
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub grants: RefCell<GrantTable<grants::TableMemory>>,
    pub slots: RefCell<MapSlots>,
    pub store: store::XenStore,
    pub waiters: events::Waiters,
    /// Raised by `control/dump`: every backend queue logs its state once.
    pub dump: bulkhead_executor::Broadcast,
    /// Warning lines each guest may cause, for all its devices and reconnects.
    guest_logs: RefCell<alloc::collections::BTreeMap<u16, bulkhead_xen::budget::LogBudget>>,
    /// Information lines each guest may cause (its devices' states and connections).
    guest_infos: RefCell<alloc::collections::BTreeMap<u16, bulkhead_xen::budget::LogBudget>>,
    /// Every served vif queue by switch port and queue index: another queue's task
    /// copies a large send straight into it (see `netback::Peer`).
    pub vifs: netback::Peers,
}

/// A guest's warning lines: 32 at once, then one every 10 s; the rest are counted.
const GUEST_LOG_BURST: u32 = 32;
const GUEST_LOG_REFILL_NS: u64 = 10_000_000_000;
/// A guest's information lines (its devices' state changes, connections made and
/// closed): 256 at once, then ten a second, far more than a toolstack's attach and
/// detach cycles make and far less than a frontend flapping its state in a loop.
const GUEST_INFO_BURST: u32 = 256;
const GUEST_INFO_REFILL_NS: u64 = 100_000_000;
/// Domains whose budgets are remembered (guests come and go; ids are reused only after
/// wrapping, and a forgotten budget only starts full again).
const GUEST_LOGS_KEPT: usize = 256;

pub type XenRef = Rc<Xen>;

/// See [`Xen::resources`].
pub struct Resources {
    map_slots: usize,
    persistent_slots: usize,
    ports: usize,
    heap_b: usize,
    memory_kib: usize,
}

impl core::fmt::Display for Resources {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "map_slots={} persistent_slots={} ports={} heap_b={} memory_kib={}",
            self.map_slots, self.persistent_slots, self.ports, self.heap_b, self.memory_kib
        )
    }
}

fn budget_of(
    map: &RefCell<alloc::collections::BTreeMap<u16, bulkhead_xen::budget::LogBudget>>,
    dom: u16,
    burst: u32,
    refill_ns: u64,
) -> bulkhead_xen::budget::LogBudget {
    let mut logs = map.borrow_mut();
    if !logs.contains_key(&dom) && logs.len() >= GUEST_LOGS_KEPT {
        logs.pop_first();
    }
    logs.entry(dom)
        .or_insert_with(|| {
            bulkhead_xen::budget::LogBudget::new(burst, refill_ns, crate::time::now_ns)
        })
        .clone()
}

#[derive(Debug)]
pub enum InitError {
    Events(Errno),
    Grants(grants::SetupError),
    Store(&'static str),
    Xenstore(bulkhead_xenstore::Error),
}

impl core::fmt::Display for InitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InitError::Events(e) => write!(f, "event channel setup failed ({})", e.0),
            InitError::Grants(e) => write!(f, "grant table setup failed: {e}"),
            InitError::Store(w) => write!(f, "xenstore ring unavailable: {w}"),
            InitError::Xenstore(e) => write!(f, "{e}"),
        }
    }
}

/// Bring up event channels, grant tables and xenstore; spawn the tasks that keep them
/// running. Returns once our domain id and home path are known.
pub async fn init(h: &bulkhead_executor::Handle) -> Result<XenRef, InitError> {
    events::init().map_err(InitError::Events)?;
    let (grants, slots) = grants::init().map_err(InitError::Grants)?;
    let (store, store_port) = store::connect().map_err(InitError::Store)?;
    let mut ports = Ports::default();
    ports.adopt(store_port);
    let waiters = events::Waiters::default();
    let xen = Rc::new(Xen {
        ident: OnceCell::new(),
        ports: RefCell::new(ports),
        grants: RefCell::new(grants),
        slots: RefCell::new(slots),
        store,
        waiters,
        dump: Default::default(),
        guest_logs: RefCell::new(alloc::collections::BTreeMap::new()),
        guest_infos: RefCell::new(alloc::collections::BTreeMap::new()),
        vifs: Default::default(),
    });
    let x = xen.clone();
    h.on_raise("xen-events", &events::EVENTS, move || events::dispatch(&x));
    h.spawn("xenstore", store::pump(xen.clone(), h.clone(), store_port));
    let domid: u16 = xen
        .store
        .read(bulkhead_xenstore::client::Tx::NONE, "domid")
        .await
        .map_err(InitError::Xenstore)?
        .trim()
        .parse()
        .map_err(|_| InitError::Store("domid is not a number"))?;
    let home = xen
        .store
        .get_domain_path(domid)
        .await
        .map_err(InitError::Xenstore)?;
    let _ = xen.ident.set((domid, home));
    Ok(xen)
}

impl Xen {
    /// Log a warning guest `dom` caused, within its budget (see [`Xen::guest_log`]).
    pub fn guest_warn(&self, dom: u16, what: core::fmt::Arguments) {
        self.guest_log(dom).warn(what);
    }

    /// The log budget of domain `dom` (the same one every time it is asked for).
    pub fn guest_log(&self, dom: u16) -> bulkhead_xen::budget::LogBudget {
        budget_of(&self.guest_logs, dom, GUEST_LOG_BURST, GUEST_LOG_REFILL_NS)
    }

    /// The budget of domain `dom` for information lines (its own, apart from warnings).
    fn guest_infos(&self, dom: u16) -> bulkhead_xen::budget::LogBudget {
        budget_of(
            &self.guest_infos,
            dom,
            GUEST_INFO_BURST,
            GUEST_INFO_REFILL_NS,
        )
    }

    /// Log an information line guest `dom` caused, within its own budget for those.
    pub fn guest_info(&self, dom: u16, what: core::fmt::Arguments) {
        self.guest_infos(dom).info(what);
    }

    /// Print an event line (`event!`) guest `dom` caused, within the same budget as its
    /// information lines.
    pub fn guest_event(&self, dom: u16, name: &str, fields: core::fmt::Arguments) {
        self.guest_infos(dom)
            .write(|| crate::console::logger::event(name, fields));
    }

    /// What this domain holds now, as the fields `map_slots`, `persistent_slots`
    /// (of them, persistent grants kept mapped), `ports`, `heap_b` and `memory_kib` (all
    /// memory in use by Bulkhead's own count): the same figures
    /// for a device's `device-released` event and a state dump's `dump` (a test compares
    /// the two).
    pub fn resources(&self) -> Resources {
        let slots = self.slots.borrow();
        let u = crate::mem::usage();
        Resources {
            map_slots: slots.in_use(),
            persistent_slots: slots.cached_total(),
            ports: self.ports.borrow().len(),
            heap_b: u.heap_used,
            memory_kib: u.in_use_bytes() / 1024,
        }
    }

    pub fn domid(&self) -> u16 {
        self.ident.get().map_or(0, |i| i.0)
    }

    pub fn home(&self) -> &str {
        self.ident.get().map_or("", |i| i.1.as_str())
    }

    /// Run a hypervisor call with the bookkeeping of our ports.
    pub fn with_ports<R>(&self, f: impl FnOnce(&mut Ports, &mut Hv) -> R) -> R {
        f(&mut self.ports.borrow_mut(), &mut Hv)
    }
}
