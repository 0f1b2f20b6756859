//! `bulkhead-hostile`: a malicious Xen frontend, run as root in a Linux test guest whose
//! kernel has no blkfront/netfront bound to the devices (tests/xen/linux-init.sh, role
//! `hostile`). It drives the guest's vbd and vif itself through `/dev/xen/gntalloc`,
//! `/dev/xen/evtchn` and xenstore, as a malicious guest kernel would, and attacks the
//! backend. Also the victim's probe (role `victim`).
//!
//!   bulkhead-hostile agent              run the attacks dom0 names in data/attack,
//!                                       answer in data/result ("NAME: ok: ..." or
//!                                       "NAME: fail: ...")
//!   bulkhead-hostile ATTACK [ARGS]      one attack, result on stdout
//!   bulkhead-hostile victim DEV ADDR    disk I/O on DEV and pings to ADDR, per phase
//!
//! Attacks: blk-invalid SECS, blk-ahead, blk-requests, blk-flap SECS, blk-values,
//! blk-notify SECS, blk-pgrants HOLD_SECS, blk-revoke, blk-rw-requests, blk-discard, net-gso SECS, net-jumbo SECS, net-storm SECS, net-norx SECS,
//! net-ctrl SECS, net-chains.

mod blk;
mod net;
mod victim;
mod xen;

use std::time::Duration;

use xen::{Events, Grants, Result, Xs};

/// The hostile guest's disks: xvda read-only, xvdb read-write (tests/xen/scenarios/hostile.sh).
const VBD: u32 = 51712;
const VBD_RW: u32 = 51728;
const VIF: u32 = 0;

fn attack(words: &[&str]) -> Result<String> {
    let mut xs = Xs::open()?;
    let g = Grants::open()?;
    let ev = Events::open()?;
    let secs = |i: usize| -> u64 { words.get(i).and_then(|s| s.parse().ok()).unwrap_or(10) };
    let mac_of = |xs: &mut Xs, key: &str| -> [u8; 6] {
        let mut m = [0xff; 6];
        if let Some(s) = xs.read(key) {
            for (o, p) in m.iter_mut().zip(s.split(':')) {
                *o = u8::from_str_radix(p, 16).unwrap_or(0xff);
            }
        }
        m
    };
    let ip_of = |xs: &mut Xs, key: &str| -> [u8; 4] {
        let mut ip = [0u8; 4];
        if let Some(s) = xs.read(key) {
            for (o, p) in ip.iter_mut().zip(s.split('.')) {
                *o = p.parse().unwrap_or(0);
            }
        }
        ip
    };
    match words.first().copied().unwrap_or("") {
        "blk-invalid" => blk::invalid(&mut xs, &g, &ev, VBD, secs(1)),
        "blk-ahead" => blk::ahead(&mut xs, &g, &ev, VBD),
        "blk-requests" => blk::requests(&mut xs, &g, &ev, VBD),
        "blk-flap" => blk::flap(&mut xs, &g, &ev, VBD, secs(1)),
        "blk-values" => blk::values(&mut xs, &g, &ev, VBD),
        "blk-notify" => blk::notify_loop(&mut xs, &g, &ev, VBD, secs(1)),
        "blk-pgrants" => blk::pgrants(&mut xs, &g, &ev, VBD, 2200, secs(1)),
        "blk-revoke" => blk::revoke(&mut xs, &g, &ev, VBD),
        "blk-rw-requests" => blk::requests(&mut xs, &g, &ev, VBD_RW),
        "blk-discard" => blk::discard(&mut xs, &g, &ev, VBD_RW),
        "net-gso" => {
            let gw = mac_of(&mut xs, "data/gateway-mac");
            net::gso1(&mut xs, &g, &ev, VIF, secs(1), gw)
        }
        "net-jumbo" => net::jumbo(&mut xs, &g, &ev, VIF, secs(1)),
        "net-storm" => {
            let v = mac_of(&mut xs, "data/victim-mac");
            let gw = mac_of(&mut xs, "data/gateway-mac");
            let ip = ip_of(&mut xs, "data/victim-ip");
            net::storm(&mut xs, &g, &ev, VIF, secs(1), v, ip, gw)
        }
        "net-norx" => {
            let v = mac_of(&mut xs, "data/victim-mac");
            let ip = ip_of(&mut xs, "data/victim-ip");
            net::norx(&mut xs, &g, &ev, VIF, secs(1), v, ip)
        }
        "net-ctrl" => net::ctrl(&mut xs, &g, &ev, VIF, secs(1)),
        "net-chains" => net::chains(&mut xs, &g, &ev, VIF),
        other => Err(format!("unknown attack {other:?}")),
    }
}

/// Wait for dom0 to name an attack in data/attack, run it, answer in data/result.
fn agent() -> Result<String> {
    let mut xs = Xs::open()?;
    println!("result: name=hostile step=ready");
    let mut last = String::new();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let Some(a) = xs.read("data/attack") else {
            continue;
        };
        if a.is_empty() || a == last {
            continue;
        }
        last = a.clone();
        if a == "done" {
            return Ok("hostile: done".into());
        }
        println!("hostile: {a}: start");
        let words: Vec<&str> = a.split_whitespace().collect();
        let line = match attack(&words) {
            Ok(s) => format!("{a}: ok: {s}"),
            Err(e) => format!("{a}: fail: {e}"),
        };
        println!("hostile: {line}");
        xs.write_str("data/result", &line)?;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let r = match words.first().copied() {
        Some("agent") => agent(),
        Some("victim") if words.len() == 3 => victim::run(words[1], words[2]),
        Some(_) => attack(&words),
        None => Err("usage: bulkhead-hostile agent | victim DEV ADDR | ATTACK [SECS]".into()),
    };
    match r {
        Ok(s) => println!("{s}"),
        Err(e) => {
            println!("hostile: error: {e}");
            std::process::exit(1);
        }
    }
}
