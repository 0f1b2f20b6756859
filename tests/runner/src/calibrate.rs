//! How fast this machine runs QEMU (TCG), so that every time limit of the tiers that boot
//! the kernel follows it instead of the speed of the machine the limits were written on.
//!
//! The kernel's `calibrate` option runs a fixed loop between two console lines; the runner
//! times it from outside (the gap between the lines as they arrive, so QEMU's own start-up
//! does not count) and divides by what the same loop took on the development machine.
//! Limits are multiplied by that factor, never by less than 1: a faster machine keeps the
//! written limits, a slower one gets proportionally more time.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The loop's wall time on the development machine (2 cores, QEMU 7.2 TCG, idle), in ms.
/// Runs there ranged 0.7-2.0 s for the same loop (TCG and a shared host vary that much):
/// this is the fast end, so the written limits must already hold at the slow end.
pub const REFERENCE_MS: u64 = 1000;
/// A loop that takes longer than this is not a slow machine but a broken run.
const GIVE_UP: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug)]
pub struct Calibration {
    /// The loop's wall time here (the median of the runs), in ms.
    pub loop_ms: u64,
    /// What every time limit is multiplied by (>= 1).
    pub factor: f64,
}

impl Calibration {
    pub fn from_loop_ms(loop_ms: u64) -> Self {
        Calibration {
            loop_ms,
            factor: (loop_ms as f64 / REFERENCE_MS as f64).max(1.0),
        }
    }

    /// `limit` scaled to this machine.
    pub fn scale(&self, limit: Duration) -> Duration {
        limit.mul_f64(self.factor)
    }

    /// One line for logs: what was measured and what it does to the limits.
    pub fn describe(&self) -> String {
        format!(
            "calibration: loop {} ms here, {} ms on the development machine: time limits x{:.2}",
            self.loop_ms, REFERENCE_MS, self.factor
        )
    }
}

/// Boots `image` with `calibrate` `runs` times and keeps the median loop time (one run
/// varies by half either way on an idle machine; a steadily slow machine is slow in most).
/// Each time `parallel` QEMUs run the loop at once and the slowest counts: a tier whose
/// QEMU runs that many vCPU threads needs that many CPUs, and a machine with fewer (or
/// shared ones) is slower for it even when one thread alone runs at full speed.
pub fn measure(
    qemu: &str,
    image: &Path,
    runs: usize,
    parallel: usize,
) -> Result<Calibration, String> {
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let all: Vec<Result<u64, String>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..parallel.max(1))
                .map(|_| s.spawn(|| loop_once(qemu, image)))
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("calibration thread panicked".into()))
                })
                .collect()
        });
        let mut slowest = 0;
        for t in all {
            slowest = slowest.max(t?);
        }
        times.push(slowest);
    }
    times.sort_unstable();
    Ok(Calibration::from_loop_ms(times[times.len() / 2]))
}

fn loop_once(qemu: &str, image: &Path) -> Result<u64, String> {
    let mut child = Command::new(qemu)
        .arg("-kernel")
        .arg(image)
        .args(["-append", "calibrate loglevel=warn", "-m", "32", "-M", "pc"])
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
        .args(["-no-reboot", "-nic", "none"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {qemu}: {e}"))?;
    let out = child.stdout.take().expect("piped stdout");
    // The reader thread ends with QEMU; a hung QEMU is killed after GIVE_UP.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + GIVE_UP;
    let mut start = None;
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((at, line)) if line.starts_with("calibrate: start") => start = Some(at),
            Ok((at, line)) if line.starts_with("calibrate: done") => match start {
                Some(s) => break Ok((at - s).as_millis() as u64),
                None => break Err("calibration: 'done' without 'start'".to_string()),
            },
            Ok(_) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                break Err(format!(
                    "calibration: {qemu} ended before the loop finished (run it by hand: -kernel IMAGE -append calibrate)"
                ))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                break Err(format!(
                    "calibration: the loop did not finish within {GIVE_UP:?}"
                ))
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_faster_machine_keeps_the_written_limits() {
        let c = Calibration::from_loop_ms(REFERENCE_MS / 2);
        assert_eq!(c.factor, 1.0);
        assert_eq!(c.scale(Duration::from_secs(60)), Duration::from_secs(60));
    }

    #[test]
    fn a_slower_machine_gets_proportionally_more_time() {
        let c = Calibration::from_loop_ms(REFERENCE_MS * 3);
        assert!((c.factor - 3.0).abs() < 1e-9);
        assert_eq!(c.scale(Duration::from_secs(60)), Duration::from_secs(180));
        assert!(c.describe().contains("x3.00"));
    }
}
