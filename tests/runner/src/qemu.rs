//! The bare-QEMU tier: boot the image with `-kernel`, read the serial console, and judge
//! each scenario by what the kernel printed and how QEMU exited.
//!
//! Exit status: the kernel leaves through isa-debug-exit, which makes QEMU exit with
//! (code << 1) | 1: 1 = clean poweroff, 3 = crash. A hang is caught by the per-scenario
//! timeout, a panic by its console line.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const EXIT_POWEROFF: i32 = 1;
pub const EXIT_CRASH: i32 = 3;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Image {
    /// The test image (the kernel's test hooks built in): QEMU takes the multiboot header.
    Multiboot,
    /// Its copy without a multiboot header: QEMU takes the Xen PVH note.
    Pvh,
    /// The shipped image (no test hooks), by its multiboot header: for what needs none.
    Shipped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// QEMU must exit by itself with this status.
    Exit(i32),
    /// The scenario is complete once this line has appeared this many times; QEMU is then
    /// stopped (for runs that never power off, like the heartbeat loop).
    After(&'static str, usize),
}

pub struct Scenario {
    pub name: &'static str,
    /// QEMU machine type ("pc" is i440fx with port-I/O config space; "q35" has ECAM).
    pub machine: &'static str,
    /// Boot with an NVMe disk prepared by `disk::create` and checked by `disk::verify`.
    pub nvme_disk: bool,
    pub image: Image,
    pub cmdline: &'static str,
    pub mem_mib: u32,
    /// Substrings that must appear in this order (later ones on the same or later lines).
    pub expect: Vec<String>,
    /// Substrings that must not appear anywhere.
    pub forbid: Vec<&'static str>,
    /// Structured result lines (`result: name=NAME key=value ...`, see [`parse_result`])
    /// that must appear, each given as its name and the fields it must carry. Apart from
    /// these, any result line with `pass=0` fails the scenario.
    pub results: Vec<Want>,
    pub end: End,
    pub timeout: Duration,
    /// A NIC and what it is plugged into (see `netpeer`).
    pub net: Option<crate::netpeer::Net>,
}

/// A result line a scenario wants: `name=` and these fields, each equal.
#[derive(Clone, Debug)]
pub struct Want {
    pub name: &'static str,
    pub fields: Vec<(&'static str, String)>,
}

pub fn want(name: &'static str, fields: &[(&'static str, &str)]) -> Want {
    Want {
        name,
        fields: fields.iter().map(|(k, v)| (*k, v.to_string())).collect(),
    }
}

/// The fields of a structured result line, `result: name=storage-test step=targets
/// first=4096 pass=1 detail="..."` (a value in quotes may hold spaces), wherever it stands
/// on the line (the kernel's log prefix comes first); None for any other line.
pub fn parse_result(line: &str) -> Option<Vec<(String, String)>> {
    let mut rest = &line[line.find("result: ")? + "result: ".len()..];
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        let (key, after) = rest.split_once('=')?;
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"')?,
            None => after.split_once(' ').unwrap_or((after, "")),
        };
        out.push((key.to_string(), value.to_string()));
        rest = next;
    }
    out.iter().any(|(k, _)| k == "name").then_some(out)
}

/// Why the result lines of `lines` do not satisfy `wants`, if they do not: a wanted one
/// missing, or any one saying `pass=0`.
pub fn check_results(lines: &[String], wants: &[Want]) -> Option<String> {
    let results: Vec<Vec<(String, String)>> =
        lines.iter().filter_map(|l| parse_result(l)).collect();
    let get =
        |r: &[(String, String)], k: &str| r.iter().find(|(rk, _)| rk == k).map(|(_, v)| v.clone());
    if let Some(r) = results
        .iter()
        .find(|r| get(r, "pass").as_deref() == Some("0"))
    {
        return Some(format!("a result says it failed: {r:?}"));
    }
    for w in wants {
        let found = results.iter().any(|r| {
            get(r, "name").as_deref() == Some(w.name)
                && w.fields
                    .iter()
                    .all(|(k, v)| get(r, k).as_deref() == Some(v.as_str()))
        });
        if !found {
            return Some(format!(
                "no result line name={} with {:?}",
                w.name, w.fields
            ));
        }
    }
    None
}

pub const SELFTEST_CHECKS: [&str; 10] = [
    "frames",
    "heap",
    "paging-map-unmap",
    "paging-permissions",
    "mmio-uncached",
    "interrupt-return",
    "timer-interrupt",
    "timer-sleep",
    "event-loop",
    "clock",
];

fn selftest(name: &'static str, image: Image, mem_mib: u32, entered: &str) -> Scenario {
    let expect = vec![
        "Bulkhead ".to_string(),
        format!("boot: mode bare (entered via {entered})"),
        "memory: ".to_string(),
        "selftest: starting".to_string(),
    ];
    let mut results: Vec<Want> = SELFTEST_CHECKS
        .iter()
        .map(|c| want("selftest", &[("check", c), ("pass", "1")]))
        .collect();
    results.push(want(
        "selftest",
        &[
            ("checks", &SELFTEST_CHECKS.len().to_string()),
            ("failed", "0"),
            ("pass", "1"),
        ],
    ));
    Scenario {
        name,
        machine: "pc",
        nvme_disk: false,
        image,
        cmdline: "selftest",
        mem_mib,
        expect,
        forbid: vec!["PANIC", "ERROR"],
        results,
        end: End::Exit(EXIT_POWEROFF),
        timeout: Duration::from_secs(60),
        net: None,
    }
}

fn storage(
    name: &'static str,
    machine: &'static str,
    cmdline: &'static str,
    mode: &str,
) -> Scenario {
    // The driver's own log (bring-up, and with test-nvme-timeout its recovery) in order;
    // the storage test's verdicts as result lines.
    let mut expect: Vec<String> = vec![
        "nvme0 (".to_string(),
        format!("{mode}"),
        format!("nvme0n1: {} blocks of 512 bytes", crate::disk::BLOCKS),
    ];
    let part = |n: &str, label: &str, first: &str, last: &str| {
        want(
            "storage-test",
            &[
                ("step", "partition"),
                ("part", n),
                ("label", label),
                ("first", first),
                ("last", last),
            ],
        )
    };
    let step = |s: &str, more: &[(&'static str, &str)]| {
        let mut f = vec![("step", s), ("pass", "1")];
        f.extend_from_slice(more);
        want("storage-test", &f)
    };
    let mut results = vec![
        part("nvme0n1p1", "alpha", "2048", "4095"),
        part("nvme0n1p2", "beta", "4096", "12287"),
        step("pattern-read", &[("part", "nvme0n1p1"), ("kib", "1024")]),
        step(
            "write-flush-read",
            &[("part", "nvme0n1p2"), ("block", "4096"), ("kib", "256")],
        ),
        step("past-end-driver", &[]),
        // NVMe's LBA Out of Range: generic status (0), code 0x80.
        step("past-end-controller", &[("sct", "0x0"), ("sc", "0x80")]),
        step("works-after-errors", &[]),
        step("targets", &[("first", "4096"), ("blocks", "8192")]),
        step(
            "zero-discard-bounds",
            &[("zeroed_kib", "64"), ("discarded_kib", "64")],
        ),
        step("completions", &[("mode", mode)]),
    ];
    if cmdline.contains("test-nvme-timeout") {
        // A read (one of a batch): reset and re-issue; then a flush: abort, reset, re-issue.
        expect.push("1 command(s) timed out after 2000 ms; resetting the controller".into());
        expect.push("controller reset (1 in flight dropped); re-issuing them".into());
        expect.push("timed out after 2000 ms; asking the controller to abort it".into());
        results.push(step("lost-command", &[("resets", "1")]));
        results.push(step("lost-flush", &[("resets", "2")]));
    }
    results.push(want("storage-test", &[("pass", "1")]));
    Scenario {
        name,
        machine,
        nvme_disk: true,
        image: Image::Multiboot,
        cmdline,
        mem_mib: 64,
        expect,
        forbid: vec!["PANIC"],
        results,
        end: End::Exit(EXIT_POWEROFF),
        timeout: Duration::from_secs(90),
        net: None,
    }
}

fn network(name: &'static str, net: crate::netpeer::Net, kind: &str) -> Scenario {
    use crate::netpeer::Net;
    let (cmdline, expect, done) = match net {
        Net::Slirp { .. } => (
            "mgmt=dhcp",
            vec![
                format!("net0 ("),
                format!("{kind}, MAC 52:54:00:12:34:56"),
                "mgmt: 10.0.2.15/24 (dhcp)".into(),
                "[peer] status page: 200 OK".into(),
            ],
            "[peer] status page",
        ),
        Net::Peer { .. } => (
            "mgmt=192.168.76.2/24",
            vec![
                format!("{kind}, MAC 52:54:00:12:34:56"),
                "mgmt: 192.168.76.2/24 (static)".into(),
                "[peer] ARP: 192.168.76.2 is at 52:54:00:12:34:56".into(),
                "[peer] ping: 20/20 replies with the payload intact".into(),
                "[peer] after bad frames: ping 5/5".into(),
                "figure: ".into(),
                "[peer] done".into(),
            ],
            "[peer] done",
        ),
    };
    Scenario {
        name,
        machine: "q35",
        nvme_disk: false,
        image: Image::Shipped,
        cmdline,
        mem_mib: 64,
        expect,
        forbid: vec!["PANIC", "[peer] FAIL"],
        results: vec![],
        end: End::After(done, 1),
        timeout: Duration::from_secs(60),
        net: Some(net),
    }
}

pub fn scenarios() -> Vec<Scenario> {
    use crate::netpeer::Net;
    vec![
        network(
            "net-virtio-dhcp-status",
            Net::Slirp {
                nic: "virtio-net-pci",
            },
            "virtio-net",
        ),
        network(
            "net-virtio-peer",
            Net::Peer {
                nic: "virtio-net-pci",
            },
            "virtio-net",
        ),
        {
            // No MSI-X vectors: the driver must fall back to INTx (and read the ISR).
            let mut s = network(
                "net-virtio-intx-peer",
                Net::Peer {
                    nic: "virtio-net-pci,vectors=0",
                },
                "virtio-net",
            );
            s.machine = "pc";
            s.expect.insert(1, "INTx pin".into());
            s
        },
        network(
            "net-e1000e-dhcp-status",
            Net::Slirp { nic: "e1000e" },
            "e1000e (82574L)",
        ),
        {
            // MSI-X, not the 82574's unmaskable MSI (see kernel/src/net.rs).
            let mut s = network(
                "net-e1000e-peer",
                Net::Peer { nic: "e1000e" },
                "e1000e (82574L)",
            );
            s.expect.insert(1, "MSI-X vector".into());
            s
        },
        storage("storage-nvme-msix-q35", "q35", "test-storage", "MsiX"),
        storage(
            "storage-nvme-intx-pc",
            "pc",
            "test-storage nvme-irq=intx test-nvme-timeout",
            "Intx",
        ),
        storage(
            "storage-nvme-poll-pc",
            "pc",
            "test-storage nvme-irq=poll",
            "Poll",
        ),
        {
            // QEMU's NVMe has no plain MSI: the driver must fall back to INTx by itself.
            let mut s = storage(
                "storage-nvme-msi-fallback-pc",
                "pc",
                "test-storage nvme-irq=msi",
                "Intx",
            );
            s.expect.insert(0, "Msi failed: MSI not available".into());
            s
        },
        selftest("selftest-multiboot-32m", Image::Multiboot, 32, "multiboot"),
        selftest("selftest-pvh-32m", Image::Pvh, 32, "pvh"),
        selftest("selftest-multiboot-1g", Image::Multiboot, 1024, "multiboot"),
        Scenario {
            name: "unknown-option",
            machine: "pc",
            nvme_disk: false,
            image: Image::Multiboot,
            cmdline: "selftest frobnicate=1 loglevel=loud",
            mem_mib: 32,
            expect: vec![
                "config: unknown option 'frobnicate'".into(),
                "config: option 'loglevel': bad value 'loud'".into(),
                "config: known option loglevel".into(),
                "config: refusing to run with an invalid command line".into(),
            ],
            forbid: vec!["selftest: starting", "PANIC"],
            results: vec![],
            end: End::Exit(EXIT_CRASH),
            timeout: Duration::from_secs(60),
            net: None,
        },
        Scenario {
            name: "forced-panic",
            machine: "pc",
            nvme_disk: false,
            image: Image::Multiboot,
            cmdline: "test-panic",
            mem_mib: 32,
            expect: vec![
                "boot: ready".into(),
                "PANIC at kernel/src/main.rs".into(),
                "test-panic requested on the command line".into(),
                "bulkhead: stopping as crashed".into(),
            ],
            forbid: vec![],
            results: vec![],
            end: End::Exit(EXIT_CRASH),
            timeout: Duration::from_secs(60),
            net: None,
        },
        Scenario {
            name: "guard-page-fault",
            machine: "pc",
            nvme_disk: false,
            image: Image::Pvh,
            cmdline: "test-fault",
            mem_mib: 32,
            expect: vec![
                "test-fault: reading the boot stack guard page".into(),
                "page fault: read of".into(),
                "hit the guard page below the boot stack".into(),
                "bulkhead: stopping as crashed".into(),
            ],
            forbid: vec!["returned"],
            results: vec![],
            end: End::Exit(EXIT_CRASH),
            timeout: Duration::from_secs(60),
            net: None,
        },
        Scenario {
            // The shipped image has none of the test hooks and refuses their options
            // as it refuses a bad value.
            name: "shipped-refuses-test-options",
            machine: "pc",
            nvme_disk: false,
            image: Image::Shipped,
            cmdline: "selftest test-storage",
            mem_mib: 32,
            expect: vec![
                "config: option 'selftest' is for tests and this image was built without them"
                    .into(),
                "config: option 'test-storage' is for tests".into(),
                "config: refusing to run with an invalid command line".into(),
            ],
            forbid: vec![
                "selftest: starting",
                "storage-test",
                "known option selftest",
                "PANIC",
            ],
            results: vec![],
            end: End::Exit(EXIT_CRASH),
            timeout: Duration::from_secs(60),
            net: None,
        },
        Scenario {
            name: "event-loop-heartbeat",
            machine: "pc",
            nvme_disk: false,
            image: Image::Shipped,
            cmdline: "heartbeat=1 loglevel=debug",
            mem_mib: 32,
            expect: vec![
                "boot: ready".into(),
                "heartbeat: up 1 s".into(),
                "heartbeat: up 2 s".into(),
            ],
            forbid: vec!["PANIC", "ERROR"],
            results: vec![],
            end: End::After("heartbeat: up 3 s", 1),
            timeout: Duration::from_secs(60),
            net: None,
        },
    ]
}

pub struct Outcome {
    pub ok: bool,
    pub why: String,
    pub banner_ms: Option<u128>,
    pub total: Duration,
    pub lines: Vec<String>,
}

pub fn run(
    s: &Scenario,
    qemu: &str,
    image: &Path,
    log_dir: &Path,
    cal: &crate::calibrate::Calibration,
) -> Outcome {
    let limit = cal.scale(s.timeout);
    let _ = std::fs::create_dir_all(log_dir);
    let disk = log_dir.join(format!("{}.img", s.name));
    let mut extra: Vec<String> = vec!["-M".into(), s.machine.into()];
    if s.nvme_disk {
        if let Err(e) = crate::disk::create(&disk) {
            return Outcome {
                ok: false,
                why: format!("disk image: {e}"),
                banner_ms: None,
                total: Duration::ZERO,
                lines: vec![],
            };
        }
        extra.extend(
            [
                "-drive",
                &format!("file={},if=none,id=nvm,format=raw", disk.display()),
                "-device",
                "nvme,serial=bulkhead0,drive=nvm",
            ]
            .map(String::from),
        );
    }
    let mut wiring = match s.net.map(crate::netpeer::wire).transpose() {
        Ok(w) => w,
        Err(e) => {
            return Outcome {
                ok: false,
                why: format!("network peer: {e}"),
                banner_ms: None,
                total: Duration::ZERO,
                lines: vec![],
            }
        }
    };
    if let Some(w) = &wiring {
        extra.extend(w.qemu_args.iter().cloned());
    } else {
        extra.extend(["-nic".to_string(), "none".to_string()]);
    }
    let start = Instant::now();
    let mut child = match Command::new(qemu)
        .args(&extra)
        .args(["-kernel"])
        .arg(image)
        .args(["-append", s.cmdline, "-m", &s.mem_mib.to_string()])
        .args([
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
        ])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                ok: false,
                why: format!("cannot start {qemu}: {e}"),
                banner_ms: None,
                total: Duration::ZERO,
                lines: vec![],
            }
        }
    };
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    // Only while a peer is still to start: the loop ends when every sender is gone.
    let mut peer_tx = wiring.as_ref().map(|_| tx.clone());
    let out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut buf = Vec::new();
        while r
            .read_until(b'\n', &mut buf)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            let line = String::from_utf8_lossy(&buf)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
            buf.clear();
        }
    });

    let mut lines = Vec::new();
    let mut banner_ms = None;
    let mut next = 0usize;
    let mut after_count = 0usize;
    let mut stopped_by_us = false;
    let deadline = start + limit;
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((at, line)) => {
                if banner_ms.is_none() && line.contains("Bulkhead ") {
                    banner_ms = Some((at - start).as_millis());
                }
                if wiring.as_ref().is_some_and(|w| line.contains(w.trigger)) {
                    if let (Some(w), Some(t)) = (wiring.take(), peer_tx.take()) {
                        std::thread::spawn(move || (w.start)(t));
                    }
                }
                // Several expectations may be met by one line, in order.
                let mut from = 0;
                while next < s.expect.len() {
                    match line[from..].find(&s.expect[next]) {
                        Some(i) => {
                            from += i + s.expect[next].len();
                            next += 1;
                        }
                        None => break,
                    }
                }
                let done = if let End::After(pat, n) = s.end {
                    if line.contains(pat) {
                        after_count += 1;
                    }
                    after_count >= n && next == s.expect.len()
                } else {
                    false
                };
                lines.push(line);
                if done {
                    stopped_by_us = true;
                    let _ = child.kill();
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                let _ = child.kill();
                break;
            }
        }
    }
    let status = child.wait().ok();
    let _ = reader.join();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    let total = start.elapsed();

    let code = status.and_then(|st| st.code());
    let why = if timed_out {
        format!(
            "timed out after {:.0} s ({} s written x{:.2} calibration); got {} of {} expected lines, next {:?}; last console line {:?}",
            limit.as_secs_f64(),
            s.timeout.as_secs(),
            cal.factor,
            next,
            s.expect.len(),
            s.expect.get(next),
            lines.last()
        )
    } else if next < s.expect.len() {
        format!("missing expected line containing {:?}", s.expect[next])
    } else if let Some(why) = check_results(&lines, &s.results) {
        why
    } else if let Some(f) = s
        .forbid
        .iter()
        .find(|f| lines.iter().any(|l| l.contains(*f)))
    {
        format!("console shows forbidden {f:?}")
    } else {
        match s.end {
            End::Exit(want) if code != Some(want) => {
                format!(
                    "QEMU exited with {code:?}, expected {want}{}",
                    if stderr.is_empty() {
                        String::new()
                    } else {
                        format!(" (stderr: {})", stderr.trim())
                    }
                )
            }
            End::After(..) if !stopped_by_us => {
                format!("QEMU exited by itself with {code:?} before the scenario completed")
            }
            _ => String::new(),
        }
    };
    let why = if why.is_empty() && s.nvme_disk {
        match crate::disk::verify(&disk, true) {
            Ok(report) => {
                lines.push(format!("[runner] {report}"));
                String::new()
            }
            Err(e) => format!("disk image check: {e}"),
        }
    } else {
        why
    };
    if s.nvme_disk {
        let _ = std::fs::remove_file(&disk);
    }
    let _ = std::fs::create_dir_all(log_dir);
    if let Ok(mut f) = std::fs::File::create(log_dir.join(format!("{}.log", s.name))) {
        for l in &lines {
            let _ = writeln!(f, "{l}");
        }
        if !stderr.is_empty() {
            let _ = writeln!(f, "--- qemu stderr ---\n{stderr}");
        }
    }

    Outcome {
        ok: why.is_empty(),
        why,
        banner_ms,
        total,
        lines,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_parse_and_check() {
        let l = r#"[    1.234] INFO  result: name=selftest check=clock pass=1 detail="TSC 2000000 kHz""#;
        let r = parse_result(l).unwrap();
        assert_eq!(r[0], ("name".into(), "selftest".into()));
        assert_eq!(r[3], ("detail".into(), "TSC 2000000 kHz".into()));
        assert!(parse_result("selftest: clock: ok").is_none());
        assert!(
            parse_result("result: pass=1").is_none(),
            "a result names itself"
        );
        assert!(parse_result(r#"result: name=x detail="unterminated"#).is_none());
        let lines = vec![
            "result: name=storage-test step=targets first=4096 pass=1".to_string(),
            "result: name=storage-test pass=1".to_string(),
        ];
        assert_eq!(
            check_results(
                &lines,
                &[want(
                    "storage-test",
                    &[("step", "targets"), ("first", "4096")]
                )]
            ),
            None
        );
        assert!(check_results(&lines, &[want("storage-test", &[("first", "8192")])]).is_some());
        let mut failing = lines.clone();
        failing.push("result: name=selftest check=heap pass=0".into());
        assert!(check_results(&failing, &[]).unwrap().contains("failed"));
    }
}
