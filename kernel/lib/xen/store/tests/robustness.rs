//! Bounded randomized tests ("fuzzing" on stable Rust): whatever xenstored sends, the
//! decoder and the client return errors instead of panicking, and never hang.

use bulkhead_xenstore::client::{Store, Transport, Tx};
use bulkhead_xenstore::ring::Received;
use bulkhead_xenstore::wire::{Decoder, Error, Header, HEADER_LEN};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bulkhead_testsupport::XorShift;

/// A random message that is sometimes well-formed, sometimes not.
fn random_reply(r: &mut XorShift, req_id: u32) -> Vec<u8> {
    let kind = match r.below(4) {
        0 => r.below(30) as u32,
        1 => 16, // XS_ERROR
        _ => 2,  // XS_READ
    };
    let len = match r.below(5) {
        0 => r.below(6000) as u32,
        _ => r.below(64) as u32,
    };
    let id = if r.below(3) == 0 {
        r.next_u64() as u32
    } else {
        req_id
    };
    let mut out = Header {
        kind,
        req_id: id,
        tx_id: r.next_u64() as u32,
        len,
    }
    .to_bytes()
    .to_vec();
    let body = (len as usize).min(200);
    out.extend(r.bytes(body));
    out
}

#[test]
fn decoder_survives_random_streams() {
    let mut r = XorShift::new(0x9e37_79b9_7f4a_7c15);
    for _ in 0..2000 {
        let mut d = Decoder::default();
        let mut stream = Vec::new();
        for _ in 0..r.below(5) {
            stream.extend(random_reply(&mut r, 1));
        }
        let tail = r.below(40) as usize;
        stream.extend(r.bytes(tail));
        let step = 1 + r.below(50) as usize;
        for chunk in stream.chunks(step) {
            d.feed(chunk);
            // Drain until it needs more or reports a broken stream.
            loop {
                match d.next() {
                    Ok(Some(m)) => assert!(m.payload.len() <= 4096),
                    Ok(None) => break,
                    Err(_) => break,
                }
            }
        }
        assert!(d.buffered() <= stream.len() + HEADER_LEN);
    }
}

/// A transport whose "xenstored" answers every request with random bytes.
struct Chaos {
    r: XorShift,
    pending: Vec<u8>,
    next_id: u32,
}

impl Transport for Chaos {
    fn send(&mut self, data: &[u8]) -> Result<usize, Error> {
        if self.r.below(10) == 0 {
            return Err(Error::RingCorrupt);
        }
        self.pending.extend(random_reply(&mut self.r, self.next_id));
        self.next_id += 1;
        Ok(data.len())
    }
    fn recv(&mut self, out: &mut Vec<u8>) -> Result<Received, Error> {
        let n = self.pending.len();
        out.append(&mut self.pending);
        Ok(Received {
            bytes: n,
            freed_full: false,
        })
    }
    fn notify(&mut self) {}
}

fn drive<F: Future>(s: &Store<Chaos>, f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..20 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let _ = s.pump();
    }
    None
}

#[test]
fn client_survives_a_hostile_xenstored() {
    for seed in 1..300u64 {
        let s = Store::new(Chaos {
            r: XorShift::new(seed.wrapping_mul(0x1234_5678_9abc_def1)),
            pending: Vec::new(),
            next_id: 1,
        });
        for _ in 0..8 {
            // Each call either completes (Ok or Err) or stays pending; none may panic.
            let _ = drive(&s, s.read(Tx::NONE, "device/vbd/51712/state"));
            let _ = drive(&s, s.directory(Tx::NONE, "backend/vbd"));
            let _ = drive(&s, s.write(Tx::NONE, "data/x", "1"));
            let _ = drive(&s, s.transaction_start());
        }
        if let Some(e) = s.broken() {
            // A broken connection fails later requests at once.
            assert_eq!(drive(&s, s.read(Tx::NONE, "x")), Some(Err(e)));
        }
    }
}
