//! A round trip with another domain through event channels and grants, for the Xen test
//! tier (`test-xen-peer=<domid>` on the command line; the peer is `tests/xen/xen-peer.c`
//! in dom0). It proves what backends rely on: binding and notifying a channel both ways,
//! granting a page the peer maps and writes, and mapping, writing and unmapping a page the
//! peer granted, then revoking our grant once the peer let go.
//!
//! Keys under `<home>/data/peer-test`: we write `gref`, `evtchn`, `ready`; the peer writes
//! `peer-gref` and, when done, `peer-done`.

use alloc::format;

use bulkhead_executor::Handle;
use bulkhead_xen::abi::DomId;
use bulkhead_xenstore::client::Tx;
use log::{error, info};

use super::XenRef;
use crate::machine::shared::SharedPage;

const TIMEOUT_NS: u64 = 180_000_000_000;

pub async fn run(xen: XenRef, h: Handle, peer: DomId) {
    match steps(&xen, &h, peer).await {
        Ok(()) => info!("result: name=peer-test pass=1"),
        Err(why) => error!(
            "result: name=peer-test pass=0 why=\"{}\"",
            why.replace('"', "'")
        ),
    }
}

async fn steps(xen: &XenRef, h: &Handle, peer: DomId) -> Result<(), alloc::string::String> {
    let base = format!("{}/data/peer-test", xen.home());
    let store = &xen.store;
    let page = SharedPage::alloc()?;
    let hello = format!("bulkhead-grant:{}", xen.domid());
    page.write_bytes(0, hello.as_bytes());
    let gref = xen
        .grants
        .borrow_mut()
        .grant_access(peer, page.frame(), false)
        .map_err(|e| format!("grant: {e}"))?;
    let port = xen
        .with_ports(|p, hv| p.alloc_unbound(hv, peer))
        .map_err(|e| format!("alloc_unbound: {}", e.0))?;
    xen.waiters.track(port);
    for (k, v) in [
        ("gref", format!("{gref}")),
        ("evtchn", format!("{port}")),
        ("ready", "1".into()),
    ] {
        store
            .write(Tx::NONE, &format!("{base}/{k}"), &v)
            .await
            .map_err(|e| format!("write {k}: {e}"))?;
    }
    info!("peer-test: offered grant {gref} and unbound event channel {port} to domain {peer} under {base}");

    // Masked, the peer's notification must only set the pending bit; unmasking must then
    // deliver it.
    super::events::mask(port);
    let pending = h
        .timeout(TIMEOUT_NS, async {
            while !super::events::is_pending(port) {
                h.sleep(20_000_000).await;
            }
        })
        .await;
    pending.ok_or("no notification from the peer (pending bit never set)")?;
    if xen.waiters.has_fired(port) {
        return Err(format!("port {port} was delivered while masked"));
    }
    super::events::unmask(port).map_err(|e| format!("unmask: {}", e.0))?;
    h.timeout(10_000_000_000, xen.waiters.wait(port))
        .await
        .ok_or("unmasking did not deliver the pending event")?;
    info!("result: name=peer-test step=event-channel peer={peer} masked-held=1 pass=1");
    let mut seen = [0u8; 13];
    page.read_bytes(128, &mut seen);
    if &seen != b"peer-was-here" {
        return Err(format!(
            "peer did not write our granted page (found {seen:?})"
        ));
    }
    info!("result: name=peer-test step=peer-wrote-our-grant peer={peer} gref={gref} pass=1");

    let peer_gref: u32 = store
        .read(Tx::NONE, &format!("{base}/peer-gref"))
        .await
        .map_err(|e| format!("read peer-gref: {e}"))?
        .trim()
        .parse()
        .map_err(|_| "peer-gref is not a number")?;
    let mapped = {
        let mut slots = xen.slots.borrow_mut();
        slots
            .map(&mut super::Hv, &[(peer, peer_gref, false)])
            .remove(0)
    }
    .map_err(|e| format!("map peer grant {peer_gref}: {e}"))?;
    let want = format!("dom0-grant:{}", xen.domid());
    let mut got = alloc::vec![0u8; want.len()];
    crate::machine::grants::copy_from_slot(&mapped, 0, &mut got);
    if got != want.as_bytes() {
        return Err(format!("peer page holds {got:?}, expected {want:?}"));
    }
    // Grant copy of the same page into a buffer of ours must see the same bytes.
    let mut via_copy = alloc::vec![0u8; want.len()];
    let copied = {
        use bulkhead_xen::copy::{GuestMemory, Piece};
        crate::machine::grants::GrantCopier { dom: peer }.read(
            &[Piece {
                gref: peer_gref,
                offset: 0,
                len: want.len() as u16,
            }],
            &mut via_copy,
        )
    };
    copied.map_err(|e| format!("grant copy from {peer}'s grant {peer_gref}: {e:?}"))?;
    if via_copy != want.as_bytes() {
        return Err(format!(
            "grant copy delivered {via_copy:?}, expected {want:?}"
        ));
    }
    info!("result: name=peer-test step=grant-copy peer={peer} gref={peer_gref} pass=1");
    crate::machine::grants::copy_to_slot(&mapped, 64, b"bulkhead-mapped");
    let unmapped = xen
        .slots
        .borrow_mut()
        .unmap(&mut super::Hv, &[mapped])
        .remove(0);
    unmapped.map_err(|e| format!("unmap: {e}"))?;
    info!("result: name=peer-test step=grant-map-unmap peer={peer} gref={peer_gref} pass=1");

    super::evtchn_send(port).map_err(|e| format!("notify: {}", e.0))?;
    // Wait for the peer to finish and unmap our grant, then revoke it.
    let done = format!("{base}/peer-done");
    store
        .watch(&done, "peer-test")
        .await
        .map_err(|e| format!("watch: {e}"))?;
    let finished = h
        .timeout(TIMEOUT_NS, async {
            loop {
                if store
                    .read_opt(Tx::NONE, &done)
                    .await
                    .ok()
                    .flatten()
                    .is_some()
                {
                    return;
                }
                if store.next_event("peer-test").await.is_err() {
                    return;
                }
            }
        })
        .await;
    let _ = store.unwatch(&done, "peer-test").await;
    finished.ok_or("peer never reported done")?;
    xen.grants
        .borrow_mut()
        .end_access(gref)
        .map_err(|e| format!("revoke grant {gref}: {e}"))?;
    xen.with_ports(|p, hv| p.close(hv, port))
        .map_err(|e| format!("close port: {}", e.0))?;
    xen.waiters.forget(port);
    info!("result: name=peer-test step=revoke gref={gref} pass=1");
    Ok(())
}
