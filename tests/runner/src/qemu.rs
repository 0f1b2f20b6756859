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
    pub end: End,
    pub timeout: Duration,
    /// A NIC and what it is plugged into (see `netpeer`).
    pub net: Option<crate::netpeer::Net>,
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
    let mut expect = vec![
        "Bulkhead ".to_string(),
        format!("boot: mode bare (entered via {entered})"),
        "memory: ".to_string(),
        "selftest: starting".to_string(),
    ];
    expect.extend(SELFTEST_CHECKS.iter().map(|c| format!("selftest: {c}: ok")));
    expect.push(format!(
        "selftest: {} passed, 0 failed",
        SELFTEST_CHECKS.len()
    ));
    expect.push("selftest: PASS".into());
    Scenario {
        name,
        machine: "pc",
        nvme_disk: false,
        image,
        cmdline: "selftest",
        mem_mib,
        expect,
        forbid: vec!["PANIC", "FAILED", "ERROR"],
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
    let mut expect: Vec<String> = vec![
        "nvme0 (".to_string(),
        format!("{mode}"),
        format!("nvme0n1: {} blocks of 512 bytes", crate::disk::BLOCKS),
        "storage-test: nvme0n1p1 \"alpha\" blocks 2048-4095".into(),
        "storage-test: nvme0n1p2 \"beta\" blocks 4096-12287".into(),
        "storage-test: read 1024 KiB of nvme0n1p1 and verified the pattern".into(),
        "storage-test: wrote 256 KiB at nvme0n1p2 block 4096, flushed, read back equal".into(),
        "storage-test: read past the end refused by the driver".into(),
        "storage-test: read past the end refused by the controller: LBA out of range".into(),
        "storage-test: device still works after the errors".into(),
        "storage-test: targets nvme0n1p2 and part:beta both resolve to blocks 4096+8192".into(),
        "storage-test: zeroed 64 KiB, discarded 64 KiB, partition bounds enforced".into(),
    ];
    if cmdline.contains("test-nvme-timeout") {
        // A read (one of a batch): reset and re-issue; then a flush: abort, reset, re-issue.
        expect.push("1 command(s) timed out after 2000 ms; resetting the controller".into());
        expect.push("controller reset (1 in flight dropped); re-issuing them".into());
        expect.push("storage-test: lost command timed out, controller reset (1 reset(s)), re-issued, data correct".into());
        expect.push("timed out after 2000 ms; asking the controller to abort it".into());
        expect.push(
            "storage-test: lost flush timed out, controller reset (2 reset(s)), re-issued".into(),
        );
    }
    expect.push(format!("storage-test: completions noticed by {mode}"));
    expect.push("storage-test: PASS".into());
    Scenario {
        name,
        machine,
        nvme_disk: true,
        image: Image::Multiboot,
        cmdline,
        mem_mib: 64,
        expect,
        forbid: vec!["PANIC", "FAIL"],
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
