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

#[derive(Clone, Debug)]
pub enum End {
    /// QEMU must exit by itself with this status.
    Exit(i32),
    /// The scenario is complete once a line holding this text (the network peer's own
    /// output) has appeared this many times; QEMU is then stopped (for runs that never
    /// power off).
    After(&'static str, usize),
    /// The same, once such a structured line has appeared (the heartbeat loop's).
    AfterLine(Want),
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
    /// Substrings that must appear in this order (later ones on the same or later lines):
    /// the banner and the peer's own lines, not the kernel's log sentences.
    pub expect: Vec<String>,
    /// Substrings that must not appear anywhere (a panic, the peer's failure).
    pub forbid: Vec<&'static str>,
    /// Structured lines that must not appear (see [`Want`]): a test that must not run,
    /// an option that must not be offered.
    pub absent: Vec<Want>,
    /// Structured lines (`result:` or `event:` `name=NAME key=value ...`, see [`Want`])
    /// that must appear, in any order, each given as its name and the fields it must
    /// carry. Apart from these, any result line with `pass=0` fails the scenario.
    pub wants: Vec<Want>,
    pub end: End,
    pub timeout: Duration,
    /// A NIC and what it is plugged into (see `netpeer`).
    pub net: Option<crate::netpeer::Net>,
}

/// A structured line a scenario wants (the bulkhead-event format): a `result:` line (a
/// test's verdict) or an `event:` line (what the kernel saw happen), with `name=` and
/// these fields, each equal, or holding the text after a leading `~` (free text such as
/// a panic message, whose addresses differ from run to run).
#[derive(Clone, Debug)]
pub struct Want {
    pub tag: &'static str,
    pub name: &'static str,
    pub fields: Vec<(&'static str, String)>,
}

/// A result line with these fields.
pub fn want(name: &'static str, fields: &[(&'static str, &str)]) -> Want {
    Want {
        tag: bulkhead_event::RESULT,
        name,
        fields: fields.iter().map(|(k, v)| (*k, v.to_string())).collect(),
    }
}

/// An event line with these fields.
pub fn event(name: &'static str, fields: &[(&'static str, &str)]) -> Want {
    Want {
        tag: bulkhead_event::EVENT,
        ..want(name, fields)
    }
}

impl Want {
    /// Whether `line` is such a line.
    pub fn matches(&self, line: &str) -> bool {
        bulkhead_event::fields(line, self.tag).is_some_and(|f| {
            f.get("name") == Some(self.name)
                && self
                    .fields
                    .iter()
                    .all(|(k, v)| match (f.get(k), v.strip_prefix('~')) {
                        (Some(got), Some(part)) => got.contains(part),
                        (got, None) => got == Some(v.as_str()),
                        (None, _) => false,
                    })
        })
    }
}

/// The first of `absent` that one of `lines` is, if any.
pub fn check_absent(lines: &[String], absent: &[Want]) -> Option<String> {
    absent
        .iter()
        .find(|w| lines.iter().any(|l| w.matches(l)))
        .map(|w| {
            format!(
                "a {}line name={} with {:?} is there",
                w.tag, w.name, w.fields
            )
        })
}

/// Why `lines` do not satisfy `wants`, if they do not: a wanted line missing, or any
/// result line saying `pass=0`.
pub fn check_wants(lines: &[String], wants: &[Want]) -> Option<String> {
    if let Some(l) = lines.iter().find(|l| {
        bulkhead_event::fields(l, bulkhead_event::RESULT)
            .is_some_and(|f| f.get("pass") == Some("0"))
    }) {
        return Some(format!("a result says it failed: {l}"));
    }
    wants
        .iter()
        .find(|w| !lines.iter().any(|l| w.matches(l)))
        .map(|w| format!("no {}line name={} with {:?}", w.tag, w.name, w.fields))
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

fn selftest(name: &'static str, image: Image, mem_mib: u32, entered: &'static str) -> Scenario {
    let mut wants: Vec<Want> = SELFTEST_CHECKS
        .iter()
        .map(|c| want("selftest", &[("check", c), ("pass", "1")]))
        .collect();
    wants.push(want(
        "selftest",
        &[
            ("checks", &SELFTEST_CHECKS.len().to_string()),
            ("failed", "0"),
            ("pass", "1"),
        ],
    ));
    wants.push(event("boot", &[("mode", "bare"), ("entry", entered)]));
    wants.push(event("stop", &[("reason", "poweroff")]));
    Scenario {
        name,
        machine: "pc",
        nvme_disk: false,
        image,
        cmdline: "selftest",
        mem_mib,
        expect: vec!["Bulkhead ".to_string()],
        forbid: vec!["PANIC", "ERROR"],
        absent: vec![],
        wants,
        end: End::Exit(EXIT_POWEROFF),
        timeout: Duration::from_secs(60),
        net: None,
    }
}

fn storage(
    name: &'static str,
    machine: &'static str,
    cmdline: &'static str,
    irq: &'static str,
) -> Scenario {
    // The driver's bring-up and (with test-nvme-timeout) its recovery as event lines; the
    // storage test's verdicts as result lines.
    let blocks = crate::disk::BLOCKS.to_string();
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
    let mode = match irq {
        "msix" => "MsiX",
        "intx" => "Intx",
        _ => "Poll",
    };
    let mut wants = vec![
        event("nvme-up", &[("dev", "nvme0"), ("irq", irq)]),
        event(
            "nvme-namespace",
            &[
                ("dev", "nvme0n1"),
                ("blocks", &blocks),
                ("block_size", "512"),
            ],
        ),
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
        // A read (one of a batch): reset and re-issue; then a flush: abort, which the
        // controller does not complete (the command is lost), reset, re-issue.
        let nvme = |name, f: &[(&'static str, &str)]| {
            let mut all = vec![("dev", "nvme0")];
            all.extend_from_slice(f);
            event(name, &all)
        };
        wants.push(nvme(
            "nvme-timeout",
            &[
                ("what", "batch"),
                ("commands", "1"),
                ("timeout_ms", "2000"),
                ("action", "reset"),
            ],
        ));
        wants.push(nvme("nvme-reset", &[("dropped", "1")]));
        wants.push(nvme(
            "nvme-reissue",
            &[("what", "batch"), ("after", "reset")],
        ));
        wants.push(nvme(
            "nvme-timeout",
            &[
                ("what", "flush"),
                ("timeout_ms", "2000"),
                ("action", "abort"),
            ],
        ));
        wants.push(nvme(
            "nvme-reissue",
            &[("what", "flush"), ("after", "reset")],
        ));
        wants.push(step("lost-command", &[("resets", "1")]));
        wants.push(step("lost-flush", &[("resets", "2")]));
    }
    wants.push(want("storage-test", &[("pass", "1")]));
    Scenario {
        name,
        machine,
        nvme_disk: true,
        image: Image::Multiboot,
        cmdline,
        mem_mib: 64,
        expect: vec![],
        forbid: vec!["PANIC"],
        absent: vec![],
        wants,
        end: End::Exit(EXIT_POWEROFF),
        timeout: Duration::from_secs(90),
        net: None,
    }
}

fn network(
    name: &'static str,
    net: crate::netpeer::Net,
    driver: &'static str,
    irq: &'static str,
) -> Scenario {
    use crate::netpeer::{Net, GUEST_MAC};
    let (cmdline, expect, done, mgmt) = match net {
        Net::Slirp { .. } => (
            "mgmt=dhcp",
            vec!["[peer] status page: 200 OK".into()],
            "[peer] status page",
            event(
                "mgmt-address",
                &[
                    ("addr", "10.0.2.15/24"),
                    ("source", "dhcp"),
                    ("dev", "net0"),
                ],
            ),
        ),
        Net::Peer { .. } => (
            "mgmt=192.168.76.2/24",
            vec![
                "[peer] ARP: 192.168.76.2 is at 52:54:00:12:34:56".into(),
                "[peer] ping: 20/20 replies with the payload intact".into(),
                "[peer] after bad frames: ping 5/5".into(),
                "figure: ".into(),
                "[peer] done".into(),
            ],
            "[peer] done",
            event(
                "mgmt-address",
                &[
                    ("addr", "192.168.76.2/24"),
                    ("source", "static"),
                    ("dev", "net0"),
                ],
            ),
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
        absent: vec![],
        wants: vec![
            event(
                "nic-up",
                &[
                    ("dev", "net0"),
                    ("driver", driver),
                    ("mac", GUEST_MAC),
                    ("irq", irq),
                ],
            ),
            mgmt,
        ],
        end: End::After(done, 1),
        timeout: Duration::from_secs(60),
        net: Some(net),
    }
}

/// A scenario that must end with the domain crashed (`stop reason=crashed`, QEMU's
/// status 3), on a `pc` with 32 MiB and no devices.
fn crashes(
    name: &'static str,
    image: Image,
    cmdline: &'static str,
    forbid: Vec<&'static str>,
    mut wants: Vec<Want>,
    absent: Vec<Want>,
) -> Scenario {
    wants.push(event("stop", &[("reason", "crashed")]));
    Scenario {
        name,
        machine: "pc",
        nvme_disk: false,
        image,
        cmdline,
        mem_mib: 32,
        expect: vec![],
        forbid,
        absent,
        wants,
        end: End::Exit(EXIT_CRASH),
        timeout: Duration::from_secs(60),
        net: None,
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
            "msix",
        ),
        network(
            "net-virtio-peer",
            Net::Peer {
                nic: "virtio-net-pci",
            },
            "virtio-net",
            "msix",
        ),
        {
            // No MSI-X vectors: the driver must fall back to INTx (and read the ISR).
            let mut s = network(
                "net-virtio-intx-peer",
                Net::Peer {
                    nic: "virtio-net-pci,vectors=0",
                },
                "virtio-net",
                "intx",
            );
            s.machine = "pc";
            s
        },
        network(
            "net-e1000e-dhcp-status",
            Net::Slirp { nic: "e1000e" },
            "e1000e",
            "msix",
        ),
        // MSI-X, not the 82574's unmaskable MSI (see kernel/src/net.rs).
        network(
            "net-e1000e-peer",
            Net::Peer { nic: "e1000e" },
            "e1000e",
            "msix",
        ),
        storage("storage-nvme-msix-q35", "q35", "test-storage", "msix"),
        storage(
            "storage-nvme-intx-pc",
            "pc",
            "test-storage nvme-irq=intx test-nvme-timeout",
            "intx",
        ),
        storage(
            "storage-nvme-poll-pc",
            "pc",
            "test-storage nvme-irq=poll",
            "poll",
        ),
        {
            // QEMU's NVMe has no plain MSI: the driver must fall back to INTx by itself.
            let mut s = storage(
                "storage-nvme-msi-fallback-pc",
                "pc",
                "test-storage nvme-irq=msi",
                "intx",
            );
            s.wants.push(event(
                "nvme-irq-fallback",
                &[
                    ("dev", "nvme0"),
                    ("irq", "msi"),
                    ("why", "MSI not available"),
                ],
            ));
            s
        },
        selftest("selftest-multiboot-32m", Image::Multiboot, 32, "multiboot"),
        selftest("selftest-pvh-32m", Image::Pvh, 32, "pvh"),
        selftest("selftest-multiboot-1g", Image::Multiboot, 1024, "multiboot"),
        crashes(
            "unknown-option",
            Image::Multiboot,
            "selftest frobnicate=1 loglevel=loud",
            vec!["PANIC"],
            vec![
                event(
                    "config-error",
                    &[("option", "frobnicate"), ("kind", "unknown")],
                ),
                event(
                    "config-error",
                    &[("option", "loglevel"), ("kind", "bad-value")],
                ),
                // What it would have taken, listed.
                event("config-option", &[("option", "loglevel")]),
            ],
            vec![want("selftest", &[])],
        ),
        crashes(
            "forced-panic",
            Image::Multiboot,
            "test-panic",
            vec![],
            vec![
                event("ready", &[]),
                event(
                    "panic",
                    &[("message", "test-panic requested on the command line")],
                ),
            ],
            vec![],
        ),
        crashes(
            "guard-page-fault",
            Image::Pvh,
            "test-fault",
            vec!["returned"],
            // The fault handler's panic names the guard page it hit.
            vec![event(
                "panic",
                &[("message", "~hit the guard page below the boot stack")],
            )],
            vec![],
        ),
        // The shipped image has none of the test hooks and refuses their options as it
        // refuses a bad value.
        crashes(
            "shipped-refuses-test-options",
            Image::Shipped,
            "selftest test-storage",
            vec!["PANIC"],
            vec![
                event(
                    "config-error",
                    &[("option", "selftest"), ("kind", "test-only")],
                ),
                event(
                    "config-error",
                    &[("option", "test-storage"), ("kind", "test-only")],
                ),
            ],
            vec![
                want("selftest", &[]),
                want("storage-test", &[]),
                event("config-option", &[("option", "selftest")]),
            ],
        ),
        Scenario {
            name: "event-loop-heartbeat",
            machine: "pc",
            nvme_disk: false,
            image: Image::Shipped,
            cmdline: "heartbeat=1 loglevel=debug",
            mem_mib: 32,
            expect: vec![],
            forbid: vec!["PANIC", "ERROR"],
            absent: vec![],
            wants: vec![
                event("ready", &[]),
                event("heartbeat", &[("up_s", "1")]),
                event("heartbeat", &[("up_s", "2")]),
            ],
            end: End::AfterLine(event("heartbeat", &[("up_s", "3")])),
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
                if wiring.as_ref().is_some_and(|w| w.trigger.matches(&line)) {
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
                let done = match &s.end {
                    End::After(pat, n) => {
                        if line.contains(pat) {
                            after_count += 1;
                        }
                        after_count >= *n && next == s.expect.len()
                    }
                    End::AfterLine(w) => w.matches(&line) && next == s.expect.len(),
                    End::Exit(_) => false,
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
    } else if let Some(why) = check_wants(&lines, &s.wants) {
        why
    } else if let Some(why) = check_absent(&lines, &s.absent) {
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
            End::After(..) | End::AfterLine(_) if !stopped_by_us => {
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
    fn structured_lines_are_checked_by_their_fields() {
        let lines: Vec<String> = [
            "[    1.234] INFO  result: name=storage-test step=targets first=4096 pass=1",
            "result: name=storage-test pass=1",
            r#"[    2.000000] event: name=panic at=kernel/src/a.rs:3 message="page fault at 0x1000: hit the guard page""#,
            "[    3.000000] INFO  nvme0: some prose with event: in it",
        ]
        .map(String::from)
        .to_vec();
        let targets = want("storage-test", &[("step", "targets"), ("first", "4096")]);
        assert_eq!(check_wants(&lines, std::slice::from_ref(&targets)), None);
        assert!(check_wants(&lines, &[want("storage-test", &[("first", "8192")])]).is_some());
        // A result is not an event, nor the other way round.
        assert!(check_wants(&lines, &[event("storage-test", &[])]).is_some());
        assert!(check_wants(&lines, &[want("panic", &[])]).is_some());
        // Free text: `~` asks for a part of it.
        assert_eq!(
            check_wants(
                &lines,
                &[event("panic", &[("message", "~hit the guard page")])]
            ),
            None
        );
        assert!(check_wants(
            &lines,
            &[event("panic", &[("message", "hit the guard page")])]
        )
        .is_some());
        assert!(check_wants(&lines, &[event("panic", &[("nosuch", "~")])]).is_some());
        // Absent lines: any line that is one fails, text that merely holds it does not.
        assert!(check_absent(&lines, &[event("panic", &[])]).is_some());
        assert_eq!(check_absent(&lines, &[event("nvme0", &[])]), None);
        assert_eq!(check_absent(&lines, &[want("panic", &[])]), None);
        let mut failing = lines.clone();
        failing.push("result: name=selftest check=heap pass=0".into());
        assert!(check_wants(&failing, &[targets])
            .unwrap()
            .contains("failed"));
    }
}
