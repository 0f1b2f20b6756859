//! The client proper: requests matched to replies by id, watch events queued per token,
//! and futures that the kernel's event loop drives.
//!
//! The transport is pumped explicitly ([`Store::pump`]): the kernel calls it whenever the
//! xenstore event channel fires, and requests pump once when they are sent. Nothing here
//! blocks or spins.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::RefCell;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use crate::ring::Received;
use crate::wire::{encode, Decoder, Error, Message, MsgType};

/// How bytes reach xenstored: the shared ring plus its event channel in the kernel, an
/// in-memory server in tests.
pub trait Transport {
    /// Put as much of `data` as fits into the request ring; the count put.
    fn send(&mut self, data: &[u8]) -> Result<usize, Error>;
    /// Take everything in the response ring.
    fn recv(&mut self, out: &mut Vec<u8>) -> Result<Received, Error>;
    /// Tell the other side the rings moved.
    fn notify(&mut self);
}

/// A transaction id; [`Tx::NONE`] for requests outside a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tx(pub u32);

impl Tx {
    pub const NONE: Tx = Tx(0);
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub path: String,
    pub token: String,
}

/// Counters for the status report.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub requests: u64,
    pub replies: u64,
    pub watch_events: u64,
    /// Replies whose id matched no request (dropped).
    pub stray_replies: u64,
    /// Watch events not queued because their token already had [`WATCH_QUEUE`] waiting.
    pub dropped_events: u64,
}

/// Events kept per watch token. A guest can fire a watch on its own nodes as fast as
/// it writes them; every consumer takes an event as "something under the path changed",
/// drains the queue and re-reads what it needs, so events beyond a full queue carry
/// nothing new and are only counted.
pub const WATCH_QUEUE: usize = 64;

struct Slot {
    kind: MsgType,
    reply: Option<Result<Message, Error>>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct WatchQueue {
    events: VecDeque<WatchEvent>,
    waker: Option<Waker>,
}

struct Inner<T: Transport> {
    transport: T,
    out: Vec<u8>,
    decoder: Decoder,
    next_id: u32,
    slots: BTreeMap<u32, Slot>,
    watches: BTreeMap<String, WatchQueue>,
    /// Once the stream is broken every request fails with this error.
    broken: Option<Error>,
    stats: Stats,
}

/// A shared handle to one xenstore connection.
pub struct Store<T: Transport> {
    inner: Rc<RefCell<Inner<T>>>,
}

impl<T: Transport> Clone for Store<T> {
    fn clone(&self) -> Self {
        Store {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Transport> Store<T> {
    pub fn new(transport: T) -> Self {
        Store {
            inner: Rc::new(RefCell::new(Inner {
                transport,
                out: Vec::new(),
                decoder: Decoder::default(),
                next_id: 1,
                slots: BTreeMap::new(),
                watches: BTreeMap::new(),
                broken: None,
                stats: Stats::default(),
            })),
        }
    }

    pub fn stats(&self) -> Stats {
        self.inner.borrow().stats
    }

    /// The connection's fatal error, if the stream broke.
    pub fn broken(&self) -> Option<Error> {
        self.inner.borrow().broken.clone()
    }

    /// Run `f` on the transport (the kernel uses it to reach the ring for diagnostics).
    pub fn with_transport<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.inner.borrow_mut().transport)
    }

    /// Move bytes both ways and deliver what arrived. Safe to call at any time.
    pub fn pump(&self) -> Result<(), Error> {
        let mut wake = Vec::new();
        let r = self.inner.borrow_mut().pump(&mut wake);
        for w in wake {
            w.wake();
        }
        r
    }

    fn request(&self, kind: MsgType, tx: Tx, parts: &[&[u8]]) -> Request<T> {
        let mut inner = self.inner.borrow_mut();
        let id = inner.next_id;
        inner.next_id = inner.next_id.wrapping_add(1).max(1);
        let start = inner.out.len();
        let res = encode(kind, id, tx.0, parts, &mut inner.out);
        let broken = inner.broken.clone();
        let error = match (broken, res) {
            (Some(e), _) => {
                inner.out.truncate(start);
                Some(e)
            }
            (None, Err(e)) => Some(e),
            (None, Ok(())) => {
                inner.slots.insert(
                    id,
                    Slot {
                        kind,
                        reply: None,
                        waker: None,
                    },
                );
                inner.stats.requests += 1;
                None
            }
        };
        drop(inner);
        Request {
            store: self.clone(),
            id,
            error,
            pumped: false,
        }
    }

    async fn call(&self, kind: MsgType, tx: Tx, parts: &[&[u8]]) -> Result<Message, Error> {
        self.request(kind, tx, parts).await
    }

    pub async fn read(&self, tx: Tx, path: &str) -> Result<String, Error> {
        let m = self
            .call(MsgType::Read, tx, &[path.as_bytes(), b"\0"])
            .await?;
        // A value is raw bytes; Bulkhead's callers want text and refuse anything else.
        core::str::from_utf8(&m.payload)
            .map(|s| s.to_string())
            .map_err(|_| Error::NotUtf8)
    }

    /// Read, mapping "does not exist" to `None`.
    pub async fn read_opt(&self, tx: Tx, path: &str) -> Result<Option<String>, Error> {
        match self.read(tx, path).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is("ENOENT") => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn write(&self, tx: Tx, path: &str, value: &str) -> Result<(), Error> {
        self.call(
            MsgType::Write,
            tx,
            &[path.as_bytes(), b"\0", value.as_bytes()],
        )
        .await
        .map(|_| ())
    }

    pub async fn mkdir(&self, tx: Tx, path: &str) -> Result<(), Error> {
        self.call(MsgType::Mkdir, tx, &[path.as_bytes(), b"\0"])
            .await
            .map(|_| ())
    }

    pub async fn rm(&self, tx: Tx, path: &str) -> Result<(), Error> {
        self.call(MsgType::Rm, tx, &[path.as_bytes(), b"\0"])
            .await
            .map(|_| ())
    }

    pub async fn directory(&self, tx: Tx, path: &str) -> Result<Vec<String>, Error> {
        let m = self
            .call(MsgType::Directory, tx, &[path.as_bytes(), b"\0"])
            .await?;
        Ok(m.strings()?.into_iter().map(|s| s.to_string()).collect())
    }

    /// Directory listing, mapping "does not exist" to an empty list.
    pub async fn directory_opt(&self, tx: Tx, path: &str) -> Result<Vec<String>, Error> {
        match self.directory(tx, path).await {
            Err(e) if e.is("ENOENT") => Ok(Vec::new()),
            r => r,
        }
    }

    pub async fn get_domain_path(&self, domid: u16) -> Result<String, Error> {
        let id = format!("{domid}");
        let m = self
            .call(MsgType::GetDomainPath, Tx::NONE, &[id.as_bytes(), b"\0"])
            .await?;
        Ok(m.text()?.to_string())
    }

    /// Permissions as xenstore spells them: first entry is the owner plus the default for
    /// everyone else, e.g. ["n5", "r0"] (owner 5, nobody else; dom0 may read).
    pub async fn set_perms(&self, tx: Tx, path: &str, perms: &[&str]) -> Result<(), Error> {
        let mut parts: Vec<&[u8]> = alloc::vec![path.as_bytes(), b"\0"];
        for p in perms {
            parts.push(p.as_bytes());
            parts.push(b"\0");
        }
        self.call(MsgType::SetPerms, tx, &parts).await.map(|_| ())
    }

    pub async fn get_perms(&self, tx: Tx, path: &str) -> Result<Vec<String>, Error> {
        let m = self
            .call(MsgType::GetPerms, tx, &[path.as_bytes(), b"\0"])
            .await?;
        Ok(m.strings()?.into_iter().map(|s| s.to_string()).collect())
    }

    /// Register a watch; events arrive through [`Store::next_event`] with the same token.
    /// xenstored fires every new watch once straight away.
    pub async fn watch(&self, path: &str, token: &str) -> Result<(), Error> {
        self.inner
            .borrow_mut()
            .watches
            .entry(token.to_string())
            .or_default();
        let r = self
            .call(
                MsgType::Watch,
                Tx::NONE,
                &[path.as_bytes(), b"\0", token.as_bytes(), b"\0"],
            )
            .await;
        if r.is_err() {
            self.inner.borrow_mut().watches.remove(token);
        }
        r.map(|_| ())
    }

    pub async fn unwatch(&self, path: &str, token: &str) -> Result<(), Error> {
        let r = self
            .call(
                MsgType::Unwatch,
                Tx::NONE,
                &[path.as_bytes(), b"\0", token.as_bytes(), b"\0"],
            )
            .await;
        self.inner.borrow_mut().watches.remove(token);
        r.map(|_| ())
    }

    /// The next event for `token` (an unknown token waits until the stream breaks).
    pub fn next_event<'a>(&'a self, token: &'a str) -> NextEvent<'a, T> {
        NextEvent { store: self, token }
    }

    /// Pending events for `token` without waiting.
    pub fn take_event(&self, token: &str) -> Option<WatchEvent> {
        self.inner
            .borrow_mut()
            .watches
            .get_mut(token)?
            .events
            .pop_front()
    }

    pub async fn transaction_start(&self) -> Result<Tx, Error> {
        let m = self
            .call(MsgType::TransactionStart, Tx::NONE, &[b"\0"])
            .await?;
        m.text()?
            .parse()
            .map(Tx)
            .map_err(|_| Error::Protocol("transaction id is not a number"))
    }

    /// End a transaction. `Ok(false)` means xenstored refused to commit because of a
    /// conflict (EAGAIN): the caller redoes the transaction.
    pub async fn transaction_end(&self, tx: Tx, commit: bool) -> Result<bool, Error> {
        let flag: &[u8] = if commit { b"T\0" } else { b"F\0" };
        match self.call(MsgType::TransactionEnd, tx, &[flag]).await {
            Ok(_) => Ok(true),
            Err(e) if e.is("EAGAIN") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Write `keys` under `dir` (in `tx`), one after another; the first failure stops
    /// it, with the key it failed on.
    pub async fn write_each<'k>(
        &self,
        tx: Tx,
        dir: &str,
        keys: &'k [(&str, String)],
    ) -> Result<(), (&'k str, Error)> {
        for (k, v) in keys {
            self.write(tx, &format!("{dir}/{k}"), v)
                .await
                .map_err(|e| (*k, e))?;
        }
        Ok(())
    }

    /// Write `keys` under `dir` in one transaction, so that a peer sees all of them or
    /// none (a frontend reading a disk's size and sector size); started again while
    /// xenstored reports a conflict (another transaction got in first), `attempts` times
    /// at most, then `Err(Xs("EAGAIN"))`. A failed write aborts the transaction.
    pub async fn write_all(
        &self,
        dir: &str,
        keys: &[(&str, String)],
        attempts: usize,
    ) -> Result<(), Error> {
        for _ in 0..attempts {
            let tx = self.transaction_start().await?;
            if let Err((_, e)) = self.write_each(tx, dir, keys).await {
                let _ = self.transaction_end(tx, false).await;
                return Err(e);
            }
            if self.transaction_end(tx, true).await? {
                return Ok(());
            }
        }
        Err(Error::Xs("EAGAIN".into()))
    }
}

impl<T: Transport> Inner<T> {
    fn fail_all(&mut self, e: Error, wake: &mut Vec<Waker>) {
        self.broken = Some(e.clone());
        for s in self.slots.values_mut() {
            if s.reply.is_none() {
                s.reply = Some(Err(e.clone()));
                wake.extend(s.waker.take());
            }
        }
        for q in self.watches.values_mut() {
            wake.extend(q.waker.take());
        }
    }

    fn pump(&mut self, wake: &mut Vec<Waker>) -> Result<(), Error> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        let r = self.pump_inner(wake);
        if let Err(e) = &r {
            self.fail_all(e.clone(), wake);
        }
        r
    }

    fn pump_inner(&mut self, wake: &mut Vec<Waker>) -> Result<(), Error> {
        // xenstored is told when there is a request for it, and when a read freed a
        // response ring it had filled (it may be waiting for room: `Received`); not
        // after every reply or watch event it wrote into a ring with room left, which
        // it is not waiting on. Linux's xenbus notifies on the same two conditions.
        // Each notification is a hypercall: a guest flapping its state sends Bulkhead
        // a watch event per write.
        let mut notify = false;
        if !self.out.is_empty() {
            let n = self.transport.send(&self.out)?;
            self.out.drain(..n);
            notify |= n > 0;
        }
        let mut bytes = Vec::new();
        notify |= self.transport.recv(&mut bytes)?.freed_full;
        self.decoder.feed(&bytes);
        while let Some(m) = self.decoder.next()? {
            self.deliver(m, wake)?;
        }
        if notify {
            self.transport.notify();
        }
        Ok(())
    }

    fn deliver(&mut self, m: Message, wake: &mut Vec<Waker>) -> Result<(), Error> {
        if m.kind == MsgType::WatchEvent {
            let strings = m.strings()?;
            let [path, token] = strings.as_slice() else {
                return Err(Error::Protocol("watch event without path and token"));
            };
            self.stats.watch_events += 1;
            if let Some(q) = self.watches.get_mut(*token) {
                if q.events.len() >= WATCH_QUEUE {
                    self.stats.dropped_events += 1;
                    wake.extend(q.waker.take());
                    return Ok(());
                }
                q.events.push_back(WatchEvent {
                    path: path.to_string(),
                    token: token.to_string(),
                });
                wake.extend(q.waker.take());
            }
            return Ok(());
        }
        let Some(slot) = self.slots.get_mut(&m.req_id) else {
            self.stats.stray_replies += 1;
            return Ok(());
        };
        self.stats.replies += 1;
        let result = if m.kind == MsgType::Error {
            Err(Error::Xs(m.text().unwrap_or("EINVAL").to_string()))
        } else if m.kind != slot.kind {
            Err(Error::Protocol("reply type does not match the request"))
        } else {
            Ok(m)
        };
        slot.reply = Some(result);
        wake.extend(slot.waker.take());
        Ok(())
    }
}

/// A request in flight.
pub struct Request<T: Transport> {
    store: Store<T>,
    id: u32,
    error: Option<Error>,
    pumped: bool,
}

impl<T: Transport> Future for Request<T> {
    type Output = Result<Message, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(e) = self.error.take() {
            return Poll::Ready(Err(e));
        }
        if !self.pumped {
            self.pumped = true;
            // Send now; a failure here is recorded in the slot by fail_all.
            let _ = self.store.pump();
        }
        let mut inner = self.store.inner.borrow_mut();
        let id = self.id;
        let slot = inner.slots.get_mut(&id).expect("request slot");
        match slot.reply.take() {
            Some(r) => {
                inner.slots.remove(&id);
                Poll::Ready(r)
            }
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<T: Transport> Drop for Request<T> {
    fn drop(&mut self) {
        // A request abandoned before its reply: forget the slot; a late reply is then a
        // stray and is dropped.
        if let Ok(mut inner) = self.store.inner.try_borrow_mut() {
            inner.slots.remove(&self.id);
        }
    }
}

pub struct NextEvent<'a, T: Transport> {
    store: &'a Store<T>,
    token: &'a str,
}

impl<T: Transport> Future for NextEvent<'_, T> {
    type Output = Result<WatchEvent, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut inner = self.store.inner.borrow_mut();
        let broken = inner.broken.clone();
        let q = inner.watches.entry(self.token.to_string()).or_default();
        if let Some(ev) = q.events.pop_front() {
            return Poll::Ready(Ok(ev));
        }
        if let Some(e) = broken {
            return Poll::Ready(Err(e));
        }
        q.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
