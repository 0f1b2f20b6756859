//! The xenstore connection: the ring page and event channel the toolstack set up
//! (HVM_PARAM_STORE_PFN/EVTCHN), driven by the `xenstore` task.

use core::sync::atomic::{fence, Ordering};

use bulkhead_xen::abi::{self, Port};
use bulkhead_xenstore::client::Transport;
use bulkhead_xenstore::ring::{Received, Ring, RingMemory};
use bulkhead_xenstore::{Error, Store};

use super::{hv, XenRef};
use crate::machine::shared::{HvmPage, SharedPage};

/// The xenstore ring page (HVM_PARAM_STORE_PFN), shared with xenstored.
pub struct Page(SharedPage);

impl RingMemory for Page {
    fn load_u32(&self, o: usize) -> u32 {
        self.0.read_u32(o)
    }
    fn store_u32(&mut self, o: usize, v: u32) {
        self.0.write_u32(o, v)
    }
    fn load_u8(&self, o: usize) -> u8 {
        self.0.read_u8(o)
    }
    fn store_u8(&mut self, o: usize, v: u8) {
        self.0.write_u8(o, v)
    }
    fn fence(&self) {
        fence(Ordering::SeqCst);
    }
}

pub struct XsTransport {
    ring: Ring<Page>,
    port: Port,
}

impl Transport for XsTransport {
    fn send(&mut self, data: &[u8]) -> Result<usize, Error> {
        self.ring.send(data)
    }
    fn recv(&mut self, out: &mut alloc::vec::Vec<u8>) -> Result<Received, Error> {
        self.ring.recv(out)
    }
    fn notify(&mut self) {
        let _ = super::evtchn_send(self.port);
    }
}

pub type XenStore = Store<XsTransport>;

pub fn connect() -> Result<(XenStore, Port), &'static str> {
    let port = hv::hvm_get_param(abi::HVM_PARAM_STORE_EVTCHN)
        .map_err(|_| "HVM_PARAM_STORE_EVTCHN unavailable")? as Port;
    let page = SharedPage::from_hvm_param(HvmPage::Store)?;
    log::info!("xenstore ring mapped, event channel {port}");
    Ok((
        Store::new(XsTransport {
            ring: Ring::new(Page(page)),
            port,
        }),
        port,
    ))
}

/// How long the xenstore task waits for xenstored's event before looking at the ring
/// anyway.
const PUMP_FALLBACK_NS: u64 = 1_000_000_000;

/// The `xenstore` task: move bytes whenever xenstored signals, and at least once a
/// second: under nested TCG an event-channel notification was seen lost (a reply sat in
/// the ring for a minute, until the next event), and every backend waits on xenstore.
/// What a look without an event finds is counted and said.
pub async fn pump(xen: XenRef, h: bulkhead_executor::Handle, port: Port) {
    let mut silent = 0u64;
    let mut by_timer = false;
    loop {
        let seen = xen.store.stats();
        if let Err(e) = xen.store.pump() {
            log::error!("xenstore connection broken: {e}; xenstore-dependent services stop");
            return;
        }
        let now = xen.store.stats();
        if by_timer && (now.replies, now.watch_events) != (seen.replies, seen.watch_events) {
            silent += 1;
            if silent <= 8 || silent.is_power_of_two() {
                log::warn!(
                    "xenstore: a reply or watch event waited in the ring without an event-channel notification ({silent} so far)"
                );
            }
        }
        let fired = core::cell::Cell::new(false);
        let waits: alloc::vec::Vec<
            core::pin::Pin<alloc::boxed::Box<dyn core::future::Future<Output = ()> + '_>>,
        > = alloc::vec![
            alloc::boxed::Box::pin(async {
                xen.waiters.wait(port).await;
                fired.set(true);
            }),
            alloc::boxed::Box::pin(h.sleep(PUMP_FALLBACK_NS)),
        ];
        bulkhead_executor::first(waits).await;
        by_timer = !fired.get();
    }
}

/// Another domain's xenstore directory, read key by key (relative names) for the
/// backends' negotiation code; a key that is absent or unreadable is `None`.
pub struct DirKeys<'a> {
    pub xen: &'a XenRef,
    pub dir: &'a str,
}

impl bulkhead_xenbus::keys::Keys for DirKeys<'_> {
    async fn get(&mut self, key: &str) -> Option<alloc::string::String> {
        self.xen
            .store
            .read_opt(
                bulkhead_xenstore::client::Tx::NONE,
                &alloc::format!("{}/{key}", self.dir),
            )
            .await
            .ok()
            .flatten()
    }
}
