//! A blkif frontend that attacks: it connects to the backend as blkfront would, then
//! breaks every rule it can.

use std::time::{Duration, Instant};

use bulkhead_blkback::abi::{Protocol, OP_DISCARD, OP_READ, OP_WRITE, OP_WRITE_BARRIER};
use bulkhead_blkback::request::{encode, encode_discard, encode_indirect, Segment};
use bulkhead_ring::{shared_init, FrontRing, RingMemory, REQ_PROD, RSP_PROD};

use crate::xen::{Events, Granted, Grants, Page, Result, Xs};

const P: Protocol = Protocol::X86_64;

pub struct Blk {
    pub fe: String,
    pub be: String,
    pub ring: Granted,
    pub mem: Page,
    pub front: FrontRing,
    pub port: u32,
    pub data: Granted,
}

/// The backend's state, as a number (0 if unreadable).
pub fn be_state(xs: &mut Xs, be: &str) -> u32 {
    xs.number(&format!("{be}/state")).unwrap_or(0)
}

/// Connect to vbd `devid` as blkfront does: one ring page, one event channel, state
/// Initialised; wait for the backend's Connected.
pub fn connect(xs: &mut Xs, g: &Grants, ev: &Events, devid: u32) -> Result<Blk> {
    let (fe, be, backend) = xs.ends("vbd", devid)?;
    xs.restart(&fe, &be)?;
    let ring = g.alloc(backend, 1, true)?;
    let data = g.alloc(backend, 4, true)?;
    let mut mem = Page(ring.base);
    shared_init(&mut mem);
    let front = FrontRing::new(&mem, P.layout());
    let port = ev.unbound(backend)?;
    xs.write_str(&format!("{fe}/ring-ref"), &ring.grefs[0].to_string())?;
    xs.write_str(&format!("{fe}/event-channel"), &port.to_string())?;
    xs.write_str(&format!("{fe}/protocol"), "x86_64-abi")?;
    xs.write_str(&format!("{fe}/state"), "3")?;
    if !xs.wait(&format!("{be}/state"), 30, |s| s == Some("4")) {
        return Err(format!(
            "backend did not connect (state {})",
            be_state(xs, &be)
        ));
    }
    Ok(Blk {
        fe,
        be,
        ring,
        mem,
        front,
        port,
        data,
    })
}

impl Blk {
    /// Take every response; (id, status) of each.
    pub fn responses(&mut self) -> Vec<(u64, i16)> {
        let mut out = Vec::new();
        while let Some(r) = self.front.get(&self.mem) {
            out.push((
                u64::from_le_bytes(r[..8].try_into().unwrap()),
                i16::from_le_bytes([r[10], r[11]]),
            ));
        }
        out
    }

    /// Put requests, publish, notify.
    pub fn send(&mut self, ev: &Events, reqs: &[Vec<u8>]) {
        for r in reqs {
            self.front.put(&mut self.mem, r);
        }
        self.front.publish(&mut self.mem);
        ev.notify(self.port);
    }

    /// Send each (what, request, should succeed) in turn and check its answer; how many
    /// were checked, or what answered wrong.
    pub fn expect_answers(
        &mut self,
        ev: &Events,
        checks: Vec<(&str, Vec<u8>, bool)>,
    ) -> Result<usize> {
        let n = checks.len();
        for (what, req, ok) in checks {
            let st = self.one(ev, req);
            if st.is_none_or(|s| (s == 0) != ok) {
                return Err(format!(
                    "{what}: answer {st:?}, expected {}",
                    if ok { "success" } else { "an error" }
                ));
            }
        }
        Ok(n)
    }

    /// Send one request and wait for its answer (status), up to 10 s.
    pub fn one(&mut self, ev: &Events, req: Vec<u8>) -> Option<i16> {
        self.responses();
        self.send(ev, &[req]);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Some(&(_, st)) = self.responses().first() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Close as a frontend does (Closing, Closed) and wait for the backend to follow.
    pub fn close(self, xs: &mut Xs, g: &Grants) {
        xs.close_frontend(&self.fe, &self.be);
        g.free(self.ring);
        g.free(self.data);
    }
}

/// Keep the ring full of invalid requests for `secs` seconds: as soon as answers come,
/// the slots are filled again. Returns the answers counted.
pub fn invalid(xs: &mut Xs, g: &Grants, ev: &Events, devid: u32, secs: u64) -> Result<String> {
    let mut b = connect(xs, g, ev, devid)?;
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut answered, mut errors, mut id) = (0u64, 0u64, 0u64);
    while Instant::now() < end {
        for (_, st) in b.responses() {
            answered += 1;
            errors += (st != 0) as u64;
        }
        let n = b.front.free();
        let reqs: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                id += 1;
                encode(P, 0xee, id, 0, &[])
            })
            .collect();
        b.send(ev, &reqs);
    }
    let alive = be_state(xs, &b.be) == 4;
    b.close(xs, g);
    Ok(format!(
        "{answered} answers ({errors} errors) to invalid requests in {secs} s; backend still connected: {alive}"
    ))
}

/// A producer index further ahead than the ring holds: the backend must drop this
/// frontend (its state goes Closing), nothing else.
pub fn ahead(xs: &mut Xs, g: &Grants, ev: &Events, devid: u32) -> Result<String> {
    let mut b = connect(xs, g, ev, devid)?;
    let rsp = b.mem.load_u32(RSP_PROD);
    b.mem
        .store_u32(REQ_PROD, rsp.wrapping_add(b.front.entries() + 7));
    ev.notify(b.port);
    let dropped = xs.wait(&format!("{}/state", b.be), 20, |s| s == Some("5"));
    b.close(xs, g);
    Ok(format!(
        "producer index a ring ahead: backend closed the ring: {dropped}"
    ))
}

/// Requests a read-only disk, or any disk, must refuse, and requests rewritten while
/// the backend may be reading them. Each answer is checked; returns a summary, Err on a
/// wrong answer.
pub fn requests(xs: &mut Xs, g: &Grants, ev: &Events, devid: u32) -> Result<String> {
    let mut b = connect(xs, g, ev, devid)?;
    let sectors: u64 = xs.number(&format!("{}/sectors", b.be)).unwrap_or(0);
    let ro = xs.read(&format!("{}/mode", b.be)).as_deref() == Some("r");
    let d = b.data.grefs.clone();
    let seg = |gref| Segment {
        gref,
        first: 0,
        last: 7,
    };
    let mut checks: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "read at capacity-1 (8 sectors)",
            encode(P, OP_READ, 1, sectors.saturating_sub(1), &[seg(d[0])]),
            false,
        ),
        (
            "read near u64::MAX",
            encode(P, OP_READ, 2, u64::MAX - 3, &[seg(d[0])]),
            false,
        ),
        (
            "segment last < first",
            encode(
                P,
                OP_READ,
                3,
                0,
                &[Segment {
                    gref: d[0],
                    first: 5,
                    last: 2,
                }],
            ),
            false,
        ),
        (
            "segment past the page",
            encode(
                P,
                OP_READ,
                4,
                0,
                &[Segment {
                    gref: d[0],
                    first: 0,
                    last: 8,
                }],
            ),
            false,
        ),
        (
            "12 segments (max 11)",
            {
                let mut r = encode(P, OP_READ, 5, 0, &[seg(d[0])]);
                r[1] = 12;
                r
            },
            false,
        ),
        (
            "grant of nobody (ref 0x7fffffff)",
            encode(P, OP_READ, 6, 0, &[seg(0x7fff_ffff)]),
            false,
        ),
        (
            "indirect with 0 pages",
            encode_indirect(P, OP_READ, 7, 0, 0, &[]),
            false,
        ),
        (
            "indirect naming a bad page",
            encode_indirect(P, OP_READ, 8, 0, 4, &[0x7fff_fffe]),
            false,
        ),
        (
            "discard of everything and more",
            encode_discard(P, 9, 0, u64::MAX, 0),
            false,
        ),
        ("a good read", encode(P, OP_READ, 10, 0, &[seg(d[1])]), true),
    ];
    if ro {
        checks.push((
            "write on a read-only disk",
            encode(P, OP_WRITE, 11, 0, &[seg(d[0])]),
            false,
        ));
        checks.push((
            "barrier write on a read-only disk",
            encode(P, OP_WRITE_BARRIER, 12, 0, &[seg(d[0])]),
            false,
        ));
        checks.push((
            "discard on a read-only disk",
            encode_discard(P, 13, 0, 8, 0),
            false,
        ));
        checks.push((
            "indirect write on a read-only disk",
            encode_indirect(P, OP_WRITE, 14, 0, 1, &[d[2]]),
            false,
        ));
    }
    let out = match b.expect_answers(ev, checks) {
        Ok(n) => n,
        Err(e) => {
            b.close(xs, g);
            return Err(e);
        }
    };
    // Rewrite a request in the ring while the backend may be reading it: whatever it
    // answers, it answers once, for the id it read, and stays up.
    let before = b.front.req_prod;
    b.send(ev, &[encode(P, OP_READ, 100, 0, &[seg(d[3])])]);
    let slot = 64 + (before & (b.front.entries() - 1)) as usize * P.layout().slot();
    for i in 0..2000u32 {
        let r = encode(
            P,
            if i % 2 == 0 { OP_DISCARD } else { 0xee },
            200 + i as u64,
            u64::MAX,
            &[],
        );
        b.mem.write(slot, &r);
    }
    std::thread::sleep(Duration::from_millis(500));
    let n = b.responses().len();
    if n != 1 {
        b.close(xs, g);
        return Err(format!(
            "a request rewritten in flight got {n} answers (expected 1)"
        ));
    }
    // An indirect read whose indirect page is rewritten while the backend may be reading
    // it: 8 good segments first, then bad ones (a grant of nobody, last < first, past the
    // page) over and over. The request itself stays put, so its one answer carries its id.
    let ind = 2;
    let put_segments = |page: &mut [u8], gref: u32, first: u8, last: u8| {
        for k in 0..8 {
            page[8 * k..8 * k + 4].copy_from_slice(&gref.to_le_bytes());
            page[8 * k + 4] = first;
            page[8 * k + 5] = last;
        }
    };
    put_segments(b.data.page(ind), d[0], 0, 7);
    b.send(ev, &[encode_indirect(P, OP_READ, 300, 0, 8, &[d[ind]])]);
    for i in 0..2000u32 {
        let (gref, first, last) = match i % 3 {
            0 => (0x7fff_fffd, 0, 7),
            1 => (d[0], 6, 1),
            _ => (d[0], 0, 9),
        };
        put_segments(b.data.page(ind), gref, first, last);
    }
    std::thread::sleep(Duration::from_millis(500));
    let answers = b.responses();
    let alive = be_state(xs, &b.be) == 4;
    b.close(xs, g);
    if answers.len() != 1 || answers[0].0 != 300 {
        return Err(format!(
            "an indirect request whose page was rewritten in flight got {answers:?} (expected one answer, id 300)"
        ));
    }
    Ok(format!(
        "{} hostile requests refused as they must be{}; a request rewritten in flight answered once; an indirect request whose page was rewritten in flight answered once (status {}); backend still connected: {alive}",
        out,
        if ro { " (read-only disk)" } else { "" },
        answers[0].1
    ))
}

/// On a read-write disk: discards at and past its end must be refused, a discard of the
/// whole disk must be served, and nothing outside the disk may change (the host checks
/// the partitions around it after the run: tests/runner/src/disk.rs).
pub fn discard(xs: &mut Xs, g: &Grants, ev: &Events, devid: u32) -> Result<String> {
    let mut b = connect(xs, g, ev, devid)?;
    let sectors: u64 = xs
        .number(&format!("{}/sectors", b.be))
        .ok_or("no sectors")?;
    if xs.read(&format!("{}/mode", b.be)).as_deref() != Some("w") {
        b.close(xs, g);
        return Err("this attack needs a read-write disk".into());
    }
    let d = b.data.grefs.clone();
    let seg = |gref| Segment {
        gref,
        first: 0,
        last: 7,
    };
    let checks: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "discard one sector past the end",
            encode_discard(P, 1, sectors, 1, 0),
            false,
        ),
        (
            "discard across the end",
            encode_discard(P, 2, sectors - 8, 16, 0),
            false,
        ),
        (
            "discard of the disk and one sector more",
            encode_discard(P, 3, 0, sectors + 1, 0),
            false,
        ),
        (
            "discard wrapping u64",
            encode_discard(P, 4, sectors - 1, u64::MAX, 0),
            false,
        ),
        (
            "secure discard wrapping u64",
            encode_discard(P, 5, 8, u64::MAX - 7, 1),
            false,
        ),
        (
            "write across the end",
            encode(P, OP_WRITE, 6, sectors - 4, &[seg(d[0])]),
            false,
        ),
        (
            "discard of the whole disk",
            encode_discard(P, 7, 0, sectors, 0),
            true,
        ),
        (
            "write of the last 4 KiB",
            encode(P, OP_WRITE, 8, sectors - 8, &[seg(d[0])]),
            true,
        ),
    ];
    let out = match b.expect_answers(ev, checks) {
        Ok(n) => n,
        Err(e) => {
            b.close(xs, g);
            return Err(e);
        }
    };
    let alive = be_state(xs, &b.be) == 4;
    b.close(xs, g);
    Ok(format!(
        "{} requests at and past the end of a {sectors}-sector disk answered as they must be (whole-disk discard served); backend still connected: {alive}",
        out
    ))
}

/// Frontend state flapping with ring details present, for `secs` seconds.
pub fn flap(xs: &mut Xs, g: &Grants, ev: &Events, devid: u32, secs: u64) -> Result<String> {
    let b = connect(xs, g, ev, devid)?;
    let fe = b.fe.clone();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut writes = 0u64;
    let states = ["1", "3", "4", "5", "6", "3", "1", "2", "7", "8", "0", "x"];
    while Instant::now() < end {
        for s in states {
            let _ = xs.write_str(&format!("{fe}/state"), s);
            writes += 1;
        }
    }
    b.close(xs, g);
    Ok(format!("{writes} state writes in {secs} s"))
}

/// Hostile values in the frontend's nodes: for each, the backend must refuse to
/// connect (state Closing or stays InitWait), never crash.
pub fn values(xs: &mut Xs, g: &Grants, ev: &Events, devid: u32) -> Result<String> {
    let (fe, be, backend) = xs.ends("vbd", devid)?;
    let ring = g.alloc(backend, 1, true)?;
    let port = ev.unbound(backend)?;
    let big = vec![b'7'; 2000];
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("ring-ref -1", "ring-ref", b"-1".to_vec()),
        (
            "ring-ref of 2000 digits (xenstored refuses longer)",
            "ring-ref",
            big.clone(),
        ),
        ("ring-ref not UTF-8", "ring-ref", vec![0xff, 0xfe, 0x31]),
        ("ring-page-order 31", "ring-page-order", b"31".to_vec()),
        ("1000 queues", "multi-queue-num-queues", b"1000".to_vec()),
        ("event-channel -1", "event-channel", b"-1".to_vec()),
        ("protocol nonsense", "protocol", b"x86_99-abi".to_vec()),
        ("no ring-ref", "ring-ref", Vec::new()),
    ];
    let mut refused = 0;
    for (what, key, value) in &cases {
        xs.write_str(&format!("{fe}/state"), "6")?;
        xs.wait(&format!("{be}/state"), 20, |s| {
            matches!(s, Some("6") | Some("2"))
        });
        xs.write_str(&format!("{fe}/state"), "1")?;
        if !xs.wait(&format!("{be}/state"), 20, |s| s == Some("2")) {
            return Err(format!("{what}: backend did not return to InitWait"));
        }
        for k in ["ring-page-order", "multi-queue-num-queues", "protocol"] {
            xs.rm(&format!("{fe}/{k}"));
        }
        xs.write_str(&format!("{fe}/ring-ref"), &ring.grefs[0].to_string())?;
        xs.write_str(&format!("{fe}/event-channel"), &port.to_string())?;
        if value.is_empty() {
            xs.rm(&format!("{fe}/{key}"));
        } else {
            xs.write(&format!("{fe}/{key}"), value)?;
        }
        xs.write_str(&format!("{fe}/state"), "3")?;
        // Refused: Closing. A value the backend may take (none here) would connect.
        if xs.wait(&format!("{be}/state"), 20, |s| s == Some("5")) {
            refused += 1;
        } else {
            return Err(format!(
                "{what}: backend state {} (expected Closing)",
                be_state(xs, &be)
            ));
        }
    }
    // A ring-ref that is the victim's own ring grant (dom0 wrote the number into
    // data/victim-ring-ref): Xen resolves grant references in the granting domain's
    // table, so the backend can only map this guest's own entry of that number (or
    // fail); the victim's ring stays the victim's. Either outcome is allowed here; the
    // victim's figures show it was not touched.
    let mut other = String::from("not tried (no data/victim-ring-ref)");
    if let Some(victim_ref) = xs.read("data/victim-ring-ref") {
        xs.write_str(&format!("{fe}/state"), "6")?;
        xs.wait(&format!("{be}/state"), 20, |s| {
            matches!(s, Some("6") | Some("2"))
        });
        xs.write_str(&format!("{fe}/state"), "1")?;
        if !xs.wait(&format!("{be}/state"), 20, |s| s == Some("2")) {
            return Err(
                "before the other domain's ring-ref: backend did not return to InitWait".into(),
            );
        }
        xs.write_str(&format!("{fe}/ring-ref"), &victim_ref)?;
        xs.write_str(&format!("{fe}/event-channel"), &port.to_string())?;
        xs.write_str(&format!("{fe}/state"), "3")?;
        xs.wait(&format!("{be}/state"), 20, |s| {
            matches!(s, Some("4") | Some("5"))
        });
        other = format!(
            "the victim's ring-ref {victim_ref} as this guest's: backend state {}",
            be_state(xs, &be)
        );
    }
    let _ = xs.write_str(&format!("{fe}/state"), "6");
    xs.wait(&format!("{be}/state"), 20, |s| s == Some("6"));
    g.free(ring);
    Ok(format!(
        "{refused} of {} hostile node values refused; {other}",
        cases.len()
    ))
}

/// Event-channel notifications in a tight loop for `secs` seconds.
pub fn notify_loop(xs: &mut Xs, g: &Grants, ev: &Events, devid: u32, secs: u64) -> Result<String> {
    let b = connect(xs, g, ev, devid)?;
    let end = Instant::now() + Duration::from_secs(secs);
    let mut n = 0u64;
    while Instant::now() < end {
        for _ in 0..1000 {
            ev.notify(b.port);
        }
        n += 1000;
    }
    let alive = be_state(xs, &b.be) == 4;
    b.close(xs, g);
    Ok(format!(
        "{n} notifications in {secs} s; backend still connected: {alive}"
    ))
}

/// Persistent grants over thousands of distinct pages on 4 queues: every read names
/// pages never used before, so the backend would keep mapping until its pool ran out.
/// Then the connection is held (data/holding = 1) while dom0 attaches another guest's
/// disk, which must connect, until dom0 writes data/release = 1 (at most `hold` s).
pub fn pgrants(
    xs: &mut Xs,
    g: &Grants,
    ev: &Events,
    devid: u32,
    pages: usize,
    hold: u64,
) -> Result<String> {
    let (fe, be, backend) = xs.ends("vbd", devid)?;
    xs.restart(&fe, &be)?;
    let mut rings = g.alloc(backend, 4, true)?;
    let data = g.alloc(backend, pages, true)?;
    let mut qs = Vec::new();
    for q in 0..4 {
        let mut mem = Page(rings.page(q).as_mut_ptr());
        shared_init(&mut mem);
        let front = FrontRing::new(&mem, P.layout());
        let port = ev.unbound(backend)?;
        xs.write_str(
            &format!("{fe}/queue-{q}/ring-ref"),
            &rings.grefs[q].to_string(),
        )?;
        xs.write_str(&format!("{fe}/queue-{q}/event-channel"), &port.to_string())?;
        qs.push((mem, front, port));
    }
    xs.write_str(&format!("{fe}/multi-queue-num-queues"), "4")?;
    xs.write_str(&format!("{fe}/feature-persistent"), "1")?;
    xs.write_str(&format!("{fe}/protocol"), "x86_64-abi")?;
    xs.write_str(&format!("{fe}/state"), "3")?;
    if !xs.wait(&format!("{be}/state"), 30, |s| s == Some("4")) {
        return Err("backend did not connect 4 queues".into());
    }
    // Reads of 11 fresh pages each, round robin over the queues, until every page was
    // named once.
    let (mut sent, mut answered, mut id) = (0usize, 0usize, 0u64);
    let mut next_page = 0usize;
    let end = Instant::now() + Duration::from_secs(120);
    while (next_page < pages || answered < sent) && Instant::now() < end {
        for (mem, front, port) in qs.iter_mut() {
            while front.get(&*mem).is_some() {
                answered += 1;
            }
            let mut put = false;
            while front.free() > 0 && next_page < pages {
                let segs: Vec<Segment> = (0..11)
                    .map(|k| Segment {
                        gref: data.grefs[(next_page + k) % pages],
                        first: 0,
                        last: 7,
                    })
                    .collect();
                next_page += 11;
                id += 1;
                front.put(mem, &encode(P, OP_READ, id, 0, &segs));
                sent += 1;
                put = true;
            }
            if put {
                front.publish(mem);
                ev.notify(*port);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // Held until dom0 says the other guest's disk came and went (data/release), at most
    // `hold` seconds.
    xs.write_str("data/release", "0")?;
    xs.write_str("data/holding", "1")?;
    xs.wait("data/release", hold, |s| s == Some("1"));
    let _ = xs.write_str("data/holding", "0");
    let alive = be_state(xs, &be) == 4;
    xs.close_frontend(&fe, &be);
    for k in ["multi-queue-num-queues", "feature-persistent"] {
        xs.rm(&format!("{fe}/{k}"));
    }
    for q in 0..4 {
        xs.rm(&format!("{fe}/queue-{q}"));
    }
    g.free(rings);
    g.free(data);
    Ok(format!(
        "{sent} reads over {pages} distinct pages on 4 queues with persistent grants, {answered} answered; backend still connected: {alive}"
    ))
}

/// Grants revoked or read-only where the backend must write: a read into a page granted
/// read-only, a read into a page whose grant was just taken back. Each must get an error
/// answer (and nothing else happen).
pub fn revoke(xs: &mut Xs, g: &Grants, ev: &Events, devid: u32) -> Result<String> {
    let mut b = connect(xs, g, ev, devid)?;
    let (_, _, backend) = xs.ends("vbd", devid)?;
    let ro = g.alloc(backend, 1, false)?;
    let seg = |gref| Segment {
        gref,
        first: 0,
        last: 7,
    };
    let st_ro = b.one(ev, encode(P, OP_READ, 1, 0, &[seg(ro.grefs[0])]));
    let gone = g.alloc(backend, 1, true)?;
    let gref = gone.grefs[0];
    g.free(gone);
    let st_gone = b.one(ev, encode(P, OP_READ, 2, 0, &[seg(gref)]));
    // Revoked while the request is in flight: answered once, whatever the outcome.
    let late = g.alloc(backend, 1, true)?;
    let lref = late.grefs[0];
    b.send(ev, &[encode(P, OP_READ, 3, 0, &[seg(lref)])]);
    g.free(late);
    std::thread::sleep(Duration::from_millis(500));
    let late_answers = b.responses().len();
    g.free(ro);
    let alive = be_state(xs, &b.be) == 4;
    b.close(xs, g);
    if st_ro.is_none_or(|s| s == 0) || st_gone.is_none_or(|s| s == 0) {
        return Err(format!("read into a read-only grant: {st_ro:?}, into a revoked one: {st_gone:?} (expected errors)"));
    }
    Ok(format!(
        "read into a read-only grant refused ({st_ro:?}), into a revoked grant refused ({st_gone:?}), a grant revoked in flight answered {late_answers} time(s); backend still connected: {alive}"
    ))
}
