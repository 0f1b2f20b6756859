//! The driver-domain side of xenbus: find the backend devices the toolstack creates under
//! our home (`backend/vbd`, `backend/vif`), and walk each through the xenbus handshake.
//! This replaces `xl devd` of a Linux driver domain.
//!
//! Serving a device (blkback, netback) plugs in at `Action::Connect`; until a class has a
//! server the device stays in InitWait, which is as far as the toolstack needs to create
//! the guest.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use bulkhead_executor::Handle;
use bulkhead_xenbus::{Action, Backend, DeviceId, Discovery, Event, Kind, State};
use bulkhead_xenstore::client::Tx;
use log::{error, info, warn};

use super::XenRef;

const TOKEN: &str = "xenbus-backends";

/// The `xenbus` task.
pub async fn run(xen: XenRef, h: Handle) {
    for kind in Kind::ALL {
        let path = format!("{}/backend/{}", xen.home(), kind.as_str());
        if let Err(e) = xen.store.watch(&path, TOKEN).await {
            error!("cannot watch {path}: {e}; no backends will be served");
            return;
        }
    }
    info!("watching {}/backend/{{vbd,vif}} for devices", xen.home());
    let mut discovery = Discovery::default();
    loop {
        if let Err(e) = xen.store.next_event(TOKEN).await {
            error!("xenstore watch lost: {e}");
            return;
        }
        while xen.store.take_event(TOKEN).is_some() {}
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
        for id in changes.added {
            info!("{id}: new backend device");
            h.spawn("xenbus-device", device(xen.clone(), id));
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

/// The frontend path the toolstack must have written for this device; anything else is
/// refused (a backend never follows a path it did not expect).
fn expected_frontend(id: &DeviceId) -> String {
    format!(
        "/local/domain/{}/device/{}/{}",
        id.frontend,
        id.kind.as_str(),
        id.devid
    )
}

async fn device(xen: XenRef, id: DeviceId) {
    let be = format!("{}/{}", xen.home(), id.rel_path());
    let store = &xen.store;
    let frontend = match store.read_opt(Tx::NONE, &format!("{be}/frontend")).await {
        Ok(Some(f)) if f == expected_frontend(&id) => f,
        Ok(Some(f)) => {
            warn!(
                "{id}: frontend path {f:?} is not {:?}; ignoring the device",
                expected_frontend(&id)
            );
            return;
        }
        Ok(None) => {
            warn!("{id}: no frontend node; ignoring the device");
            return;
        }
        Err(e) => {
            warn!("{id}: cannot read the frontend node: {e}");
            return;
        }
    };
    let fe_id = store
        .read_opt(Tx::NONE, &format!("{be}/frontend-id"))
        .await
        .ok()
        .flatten();
    if fe_id.as_deref() != Some(format!("{}", id.frontend).as_str()) {
        warn!("{id}: frontend-id {fe_id:?} does not match the directory; ignoring the device");
        return;
    }

    let mut b = Backend::new(id);
    let token = format!("{id}");
    let fe_state = format!("{frontend}/state");
    if !apply(&xen, &be, &mut b, Event::Created).await {
        return;
    }
    for path in [be.as_str(), fe_state.as_str()] {
        if let Err(e) = store.watch(path, &token).await {
            warn!("{id}: cannot watch {path}: {e}");
            return;
        }
    }
    loop {
        if store.next_event(&token).await.is_err() {
            return;
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
        let event = if state.is_none() {
            Event::Removed
        } else if online.as_deref() == Some("0") && matches!(fs, Some(State::Closed) | None) {
            Event::Removed
        } else {
            Event::Frontend(fs)
        };
        if !apply(&xen, &be, &mut b, event).await {
            let _ = store.unwatch(&be, &token).await;
            let _ = store.unwatch(&fe_state, &token).await;
            info!("{id}: released");
            return;
        }
    }
}

/// Feed one event to the state machine and carry out its actions; false once the device
/// is gone.
async fn apply(xen: &XenRef, be: &str, b: &mut Backend, ev: Event) -> bool {
    let mut alive = true;
    for a in b.on(ev) {
        match a {
            Action::SetState(s) => {
                if let Err(e) = xen
                    .store
                    .write(Tx::NONE, &format!("{be}/state"), s.as_str())
                    .await
                {
                    if !e.is("ENOENT") {
                        warn!("{}: cannot write state {s}: {e}", b.id);
                    }
                }
                info!("{}: backend {s} (frontend {})", b.id, b.frontend_state());
            }
            Action::Connect => {
                // No class has a server yet: the device stays offered (InitWait).
                info!(
                    "{}: frontend is ready, but {} devices are not served yet",
                    b.id,
                    b.id.kind.as_str()
                );
            }
            Action::Disconnect => {}
            Action::Destroy => alive = false,
        }
    }
    alive
}
