//! `bulkhead-testrun`: the project's test runner for tiers that boot the kernel.
//!
//!   bulkhead-testrun qemu <test-elf> <test-pvh-elf> <shipped-elf> [name…]
//!                                                 bare-QEMU scenarios (all, or those named)
//!   bulkhead-testrun calibrate <elf> [parallel]   how fast QEMU runs here (that many loops at
//!                                                 once): the factor every time limit is
//!                                                 multiplied by (see calibrate.rs)
//!   bulkhead-testrun make-disk <img>              NVMe test image: pattern + GPT (sfdisk)
//!   bulkhead-testrun verify-disk <img> [--no-storage-test]  check the storage test's writes, and that nothing else changed
//!   bulkhead-testrun initramfs-overlay <out> <base> <path=file>...
//!                                                 a cpio holding the files, then <base>
//!   bulkhead-testrun fuzz blkif|switch|netif <s>  time-bounded fuzzing: blkback's requests, the L2 switch,
//!                                                 netback's TX parser
//!   bulkhead-testrun bench-report <raw> <outdir> <commit>
//!   bulkhead-testrun bench-ab <raw> <base-commit> <commit>
//!                                                 `make bench`'s table, results.json and chart
//!
//! Environment: QEMU (default qemu-system-x86_64), BULKHEAD_TEST_LOGS (default
//! build/test-logs/qemu).

mod bench;
mod calibrate;
mod disk;
mod fuzz;
mod netpeer;
mod qemu;

use std::path::PathBuf;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: bulkhead-testrun qemu <test-elf> <test-pvh-elf> <shipped-elf> [scenario...] | calibrate <elf> [parallel] | make-disk <img> | verify-disk <img> [--no-storage-test] | initramfs-overlay <out> <base> <path=file>... | fuzz blkif|switch|netif <seconds> | bench-report <raw> <outdir> <commit> | bench-ab <raw> <base-commit> <commit>");
    ExitCode::from(2)
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{path}: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("qemu") if args.len() >= 4 => run_qemu(&args[1], &args[2], &args[3], &args[4..]),
        Some("calibrate") if args.len() == 2 || args.len() == 3 => {
            run_calibrate(&args[1], args.get(2).map(String::as_str))
        }
        Some("make-disk") if args.len() == 2 => disk::create(args[1].as_ref()),
        Some("verify-disk") if args.len() == 2 || args.len() == 3 => {
            let storage_test = args.get(2).map(String::as_str) != Some("--no-storage-test");
            disk::verify(args[1].as_ref(), storage_test).map(|r| println!("{r}"))
        }
        Some("fuzz") if args.len() == 3 => {
            let secs = args[2]
                .parse()
                .map_err(|_| format!("{}: not a number of seconds", args[2]));
            match args[1].as_str() {
                "blkif" => secs.and_then(fuzz::blkif),
                "switch" => secs.and_then(fuzz::switch),
                "netif" => secs.and_then(fuzz::netif),
                t => Err(format!("no fuzz target {t} (blkif, switch, netif)")),
            }
        }
        Some("bench-report") if args.len() == 4 => {
            bench::run(args[1].as_ref(), args[2].as_ref(), &args[3])
        }
        Some("bench-ab") if args.len() == 4 => bench::run_ab(args[1].as_ref(), &args[2], &args[3]),
        Some("initramfs-overlay") if args.len() >= 4 => {
            initramfs_overlay(&args[1], &args[2], &args[3..])
        }
        _ => return usage(),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bulkhead-testrun: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the calibration for scripts (the Xen tier scales its outer limit by it): a line
/// for people, then `factor=F loop_ms=N reference_ms=R`.
fn run_calibrate(image: &str, parallel: Option<&str>) -> Result<(), String> {
    let qemu = std::env::var("QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
    let parallel = match parallel {
        None => 1,
        Some(p) => p
            .parse()
            .map_err(|_| format!("{p}: not a number of parallel loops"))?,
    };
    let cal = calibrate::measure(&qemu, image.as_ref(), 3, parallel)?;
    println!("{}", cal.describe());
    println!(
        "factor={:.2} loop_ms={} reference_ms={}",
        cal.factor,
        cal.loop_ms,
        calibrate::REFERENCE_MS
    );
    Ok(())
}

fn run_qemu(image: &str, pvh: &str, shipped: &str, only: &[String]) -> Result<(), String> {
    let qemu = std::env::var("QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
    let logs = PathBuf::from(
        std::env::var("BULKHEAD_TEST_LOGS").unwrap_or_else(|_| "build/test-logs/qemu".into()),
    );
    let size = |p: &str| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(|e| format!("{p}: {e}"))
    };
    let (size, test_size) = (size(shipped)?, size(image)?);
    let report = bulkhead_image::check(&read(image)?)?;
    println!("bare-QEMU tier: test image: {report}");
    let report = bulkhead_image::check(&read(shipped)?)?;
    println!("bare-QEMU tier: shipped image: {report}");
    // One loop at a time: these scenarios' QEMU runs one vCPU thread.
    let cal = calibrate::measure(&qemu, image.as_ref(), 3, 1)?;
    println!("bare-QEMU tier: {}", cal.describe());
    let all = qemu::scenarios();
    let chosen: Vec<_> = all
        .iter()
        .filter(|s| only.is_empty() || only.iter().any(|o| o == s.name))
        .collect();
    if chosen.is_empty() {
        return Err(format!("no scenario named {only:?}"));
    }
    let mut failed = Vec::new();
    let mut banner_times = Vec::new();
    let mut figures = Vec::new();
    for s in chosen {
        let path = match s.image {
            qemu::Image::Multiboot => image,
            qemu::Image::Pvh => pvh,
            qemu::Image::Shipped => shipped,
        };
        let o = qemu::run(s, &qemu, path.as_ref(), &logs, &cal);
        let banner = o.banner_ms.map_or("no banner".into(), |ms| {
            format!("banner {ms} ms after QEMU start")
        });
        if let Some(ms) = o.banner_ms {
            banner_times.push((s.name, ms));
        }
        figures.extend(
            o.lines
                .iter()
                .filter_map(|l| l.strip_prefix("figure: "))
                .map(String::from),
        );
        if o.ok {
            println!(
                "PASS {:<24} ({banner}, {:.2} s)",
                s.name,
                o.total.as_secs_f64()
            );
        } else {
            println!("FAIL {:<24} {}", s.name, o.why);
            println!(
                "     ---- last console lines ({}/{}.log has all) ----",
                logs.display(),
                s.name
            );
            for l in o
                .lines
                .iter()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                println!("     | {l}");
            }
            failed.push(s.name);
        }
    }
    println!("figures: shipped image {size} bytes on disk, test image {test_size}");
    for (name, ms) in banner_times {
        println!("figures: boot-to-banner {ms} ms ({name}, TCG, includes SeaBIOS)");
    }
    for f in figures {
        println!("figures: {f}");
    }
    if failed.is_empty() {
        println!("bare-QEMU tier: all scenarios passed");
        Ok(())
    } else {
        Err(format!(
            "bare-QEMU tier: {} failed: {}",
            failed.len(),
            failed.join(", ")
        ))
    }
}

/// Prepend a "newc" cpio archive holding `path=file` entries (mode 0755) to `base`: the
/// kernel unpacks concatenated archives in order (the files must not also be in `base`).
/// This lets the Xen tier change scripts in the Linux domUs' initramfs without rebuilding
/// it. Prepending keeps the image from starting with a gzip header, which libxc would
/// otherwise try (and fail) to inflate as a whole.
fn initramfs_overlay(out: &str, base: &str, entries: &[String]) -> Result<(), String> {
    let base = read(base)?;
    let mut cpio = Vec::new();
    let mut push = |name: &str, mode: u32, body: &[u8]| {
        let fields = [
            1u32,
            mode,
            0,
            0,
            1,
            0,
            body.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        cpio.extend_from_slice(b"070701");
        for f in fields {
            cpio.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        cpio.extend_from_slice(name.as_bytes());
        cpio.push(0);
        while cpio.len() % 4 != 0 {
            cpio.push(0);
        }
        cpio.extend_from_slice(body);
        while cpio.len() % 4 != 0 {
            cpio.push(0);
        }
    };
    // The kernel's unpacker does not create parent directories: every directory on the
    // way to a file gets its own entry, once.
    let mut files: Vec<(String, String)> = Vec::new();
    for e in entries {
        let (path, file) = e
            .split_once('=')
            .ok_or(format!("{e}: expected path=file"))?;
        let path = path.trim_start_matches('/').trim_end_matches('/');
        if std::path::Path::new(file).is_dir() {
            // path=DIR: the whole tree under DIR, at path.
            let mut stack = vec![(path.to_string(), std::path::PathBuf::from(file))];
            while let Some((at, dir)) = stack.pop() {
                let mut list: Vec<_> = std::fs::read_dir(&dir)
                    .map_err(|e| format!("{}: {e}", dir.display()))?
                    .filter_map(|d| d.ok())
                    .collect();
                list.sort_by_key(|d| d.file_name());
                for d in list {
                    let name = format!("{at}/{}", d.file_name().to_string_lossy());
                    if d.path().is_dir() {
                        stack.push((name, d.path()));
                    } else {
                        files.push((name, d.path().to_string_lossy().into_owned()));
                    }
                }
            }
        } else {
            files.push((path.to_string(), file.to_string()));
        }
    }
    let mut dirs = std::collections::BTreeSet::new();
    for (path, file) in &files {
        let mut parent = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |p| p.1)
        {
            parent = if parent.is_empty() {
                part.to_string()
            } else {
                format!("{parent}/{part}")
            };
            if dirs.insert(parent.clone()) {
                push(&parent, 0o040755, &[]);
            }
        }
        let body = read(file)?;
        push(path, 0o100755, &body);
    }
    push("TRAILER!!!", 0, &[]);
    // Archives in an initramfs start on 4-byte boundaries (the trailer padding ensures it).
    cpio.extend_from_slice(&base);
    std::fs::write(out, cpio).map_err(|e| format!("{out}: {e}"))
}
