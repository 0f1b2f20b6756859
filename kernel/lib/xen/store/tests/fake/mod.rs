//! An in-memory xenstored that serves the real ring layout, for the client tests.

use bulkhead_xenstore::client::Transport;
use bulkhead_xenstore::ring::{server, Received, Ring, RingMemory, RING_SIZE};
use bulkhead_xenstore::wire::{Decoder, Error, Header, MsgType};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

#[derive(Clone)]
pub struct SharedPage(pub Rc<RefCell<Vec<u8>>>);

impl RingMemory for SharedPage {
    fn load_u32(&self, o: usize) -> u32 {
        u32::from_le_bytes(self.0.borrow()[o..o + 4].try_into().unwrap())
    }
    fn store_u32(&mut self, o: usize, v: u32) {
        self.0.borrow_mut()[o..o + 4].copy_from_slice(&v.to_le_bytes())
    }
    fn load_u8(&self, o: usize) -> u8 {
        self.0.borrow()[o]
    }
    fn store_u8(&mut self, o: usize, v: u8) {
        self.0.borrow_mut()[o] = v
    }
    fn fence(&self) {}
}

#[derive(Default)]
pub struct Server {
    pub tree: BTreeMap<String, String>,
    pub watches: Vec<(String, String)>,
    pub domid: u16,
    next_tx: u32,
    pub fail_next_commits: u32,
    /// Bytes written raw into the response ring on the next request (malformed replies).
    pub inject: Option<Vec<u8>>,
    pub requests_seen: u32,
    /// Event-channel notifications the client sent.
    pub notifies: u32,
    decoder: Decoder,
}

pub struct FakeTransport {
    pub ring: Ring<SharedPage>,
    pub page: SharedPage,
    pub server: Rc<RefCell<Server>>,
}

pub fn new(domid: u16) -> (FakeTransport, Rc<RefCell<Server>>) {
    let page = SharedPage(Rc::new(RefCell::new(vec![0; 4096])));
    let server = Rc::new(RefCell::new(Server {
        domid,
        next_tx: 1,
        ..Default::default()
    }));
    (
        FakeTransport {
            ring: Ring::new(page.clone()),
            page,
            server: server.clone(),
        },
        server,
    )
}

impl Transport for FakeTransport {
    fn send(&mut self, data: &[u8]) -> Result<usize, Error> {
        self.ring.send(data)
    }
    fn recv(&mut self, out: &mut Vec<u8>) -> Result<Received, Error> {
        self.ring.recv(out)
    }
    fn notify(&mut self) {
        self.server.borrow_mut().notifies += 1;
        self.server.borrow_mut().process(&mut self.page);
    }
}

impl Server {
    fn abs(&self, p: &str) -> String {
        if p.starts_with('/') {
            p.to_string()
        } else {
            format!("/local/domain/{}/{}", self.domid, p)
        }
    }

    fn children(&self, p: &str) -> Vec<String> {
        let prefix = if p == "/" {
            "/".to_string()
        } else {
            format!("{p}/")
        };
        let mut out: Vec<String> = self
            .tree
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|rest| !rest.is_empty())
            .map(|rest| rest.split('/').next().unwrap().to_string())
            .collect();
        out.dedup();
        out
    }

    fn ensure_parents(&mut self, p: &str) {
        let mut at = String::new();
        for part in p.trim_start_matches('/').split('/') {
            at.push('/');
            at.push_str(part);
            self.tree.entry(at.clone()).or_default();
        }
    }

    /// Watch events fired by a change at `p` (the watch path or any ancestor matches).
    fn fire(&self, p: &str, out: &mut Vec<u8>) {
        for (wp, tok) in &self.watches {
            let wabs = self.abs(wp);
            if p == wabs || p.starts_with(&format!("{wabs}/")) {
                push_msg(
                    out,
                    MsgType::WatchEvent,
                    0,
                    0,
                    format!("{p}\0{tok}\0").as_bytes(),
                );
            }
        }
    }

    pub fn process(&mut self, page: &mut SharedPage) {
        let cons = page.load_u32(server::REQ_CONS);
        let prod = page.load_u32(server::REQ_PROD);
        let mut bytes = Vec::new();
        for i in 0..prod.wrapping_sub(cons) {
            bytes.push(page.load_u8(server::REQ + (cons.wrapping_add(i) % RING_SIZE) as usize));
        }
        page.store_u32(server::REQ_CONS, prod);
        self.decoder.feed(&bytes);
        let mut out = Vec::new();
        while let Some(m) = self
            .decoder
            .next()
            .expect("client sent a malformed request")
        {
            self.requests_seen += 1;
            if let Some(raw) = self.inject.take() {
                out.extend_from_slice(&raw);
                continue;
            }
            self.handle(m, &mut out);
        }
        push_response(page, &out);
    }

    fn handle(&mut self, m: bulkhead_xenstore::wire::Message, out: &mut Vec<u8>) {
        let strs: Vec<String> = m
            .payload
            .split(|&b| b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        let err = |out: &mut Vec<u8>, e: &str| {
            push_msg(
                out,
                MsgType::Error,
                m.req_id,
                m.tx_id,
                format!("{e}\0").as_bytes(),
            )
        };
        match m.kind {
            MsgType::Read => match self.tree.get(&self.abs(&strs[0])) {
                Some(v) => push_msg(out, m.kind, m.req_id, m.tx_id, v.as_bytes()),
                None => err(out, "ENOENT"),
            },
            MsgType::Write => {
                let nul = m.payload.iter().position(|&b| b == 0).unwrap();
                let p = self.abs(&strs[0]);
                self.ensure_parents(&p);
                self.tree.insert(
                    p.clone(),
                    String::from_utf8_lossy(&m.payload[nul + 1..]).into_owned(),
                );
                push_msg(out, m.kind, m.req_id, m.tx_id, b"OK\0");
                self.fire(&p, out);
            }
            MsgType::Mkdir => {
                let p = self.abs(&strs[0]);
                self.ensure_parents(&p);
                push_msg(out, m.kind, m.req_id, m.tx_id, b"OK\0");
                self.fire(&p, out);
            }
            MsgType::Rm => {
                let p = self.abs(&strs[0]);
                if !self.tree.contains_key(&p) {
                    return err(out, "ENOENT");
                }
                self.tree
                    .retain(|k, _| k != &p && !k.starts_with(&format!("{p}/")));
                push_msg(out, m.kind, m.req_id, m.tx_id, b"OK\0");
                self.fire(&p, out);
            }
            MsgType::Directory => {
                let p = self.abs(&strs[0]);
                if !self.tree.contains_key(&p) {
                    return err(out, "ENOENT");
                }
                let mut body = Vec::new();
                for c in self.children(&p) {
                    body.extend_from_slice(c.as_bytes());
                    body.push(0);
                }
                push_msg(out, m.kind, m.req_id, m.tx_id, &body);
            }
            MsgType::GetDomainPath => push_msg(
                out,
                m.kind,
                m.req_id,
                m.tx_id,
                format!("/local/domain/{}\0", strs[0]).as_bytes(),
            ),
            MsgType::Watch => {
                self.watches.push((strs[0].clone(), strs[1].clone()));
                push_msg(out, m.kind, m.req_id, m.tx_id, b"OK\0");
                // xenstored fires a new watch once.
                let p = self.abs(&strs[0]);
                push_msg(
                    out,
                    MsgType::WatchEvent,
                    0,
                    0,
                    format!("{p}\0{}\0", strs[1]).as_bytes(),
                );
            }
            MsgType::Unwatch => {
                self.watches
                    .retain(|(p, t)| !(p == &strs[0] && t == &strs[1]));
                push_msg(out, m.kind, m.req_id, m.tx_id, b"OK\0");
            }
            MsgType::TransactionStart => {
                let id = self.next_tx;
                self.next_tx += 1;
                push_msg(out, m.kind, m.req_id, 0, format!("{id}\0").as_bytes());
            }
            MsgType::TransactionEnd => {
                if strs[0] == "T" && self.fail_next_commits > 0 {
                    self.fail_next_commits -= 1;
                    return err(out, "EAGAIN");
                }
                push_msg(out, m.kind, m.req_id, m.tx_id, b"OK\0");
            }
            MsgType::SetPerms => push_msg(out, m.kind, m.req_id, m.tx_id, b"OK\0"),
            _ => err(out, "EINVAL"),
        }
    }
}

/// Write bytes into the response ring as xenstored does (replies, watch events).
pub fn push_response(page: &mut SharedPage, out: &[u8]) {
    let rprod = page.load_u32(server::RSP_PROD);
    let rcons = page.load_u32(server::RSP_CONS);
    assert!(
        rprod.wrapping_sub(rcons) as usize + out.len() <= RING_SIZE as usize,
        "fake reply overflow"
    );
    for (i, b) in out.iter().enumerate() {
        page.store_u8(
            server::RSP + (rprod.wrapping_add(i as u32) % RING_SIZE) as usize,
            *b,
        );
    }
    page.store_u32(server::RSP_PROD, rprod.wrapping_add(out.len() as u32));
}

pub fn push_msg(out: &mut Vec<u8>, kind: MsgType, req_id: u32, tx_id: u32, payload: &[u8]) {
    out.extend_from_slice(
        &Header {
            kind: kind as u32,
            req_id,
            tx_id,
            len: payload.len() as u32,
        }
        .to_bytes(),
    );
    out.extend_from_slice(payload);
}
