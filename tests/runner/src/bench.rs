//! `make bench`'s report: the figures the benchmark's scenarios printed
//! (tests/xen/scenarios/bench-lib.sh, one `bench: side=S run=K metric=M value=V` line
//! each) become medians per side, ratios (always "higher is better for Bulkhead"), the
//! goals of issue 17 read from those ratios, `results.json`, `table.md` and a chart
//! (`ratios.png`, by gnuplot when it is installed). Figures only: nothing here fails a
//! run because a number is low; it fails when figures are missing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Better {
    Higher,
    Lower,
    /// Context for another row (no ratio).
    Neither,
}

/// A goal read from the same run's figures.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Goal {
    /// Bulkhead ÷ Linux (turned so that higher is better) at least this.
    Ratio(f64),
    /// Bulkhead's own figure at least / at most this.
    AtLeast(f64),
    AtMost(f64),
}

struct Metric {
    name: &'static str,
    label: &'static str,
    unit: &'static str,
    better: Better,
    goal: Option<Goal>,
}

const fn m(
    name: &'static str,
    label: &'static str,
    unit: &'static str,
    better: Better,
    goal: Option<Goal>,
) -> Metric {
    Metric {
        name,
        label,
        unit,
        better,
        goal,
    }
}

use Better::{Higher, Lower, Neither};

/// The table's rows, in order. The `pct_` rows are derived (a guest figure as a share of
/// its own side's raw NVMe figure, `CEILINGS`).
const METRICS: &[Metric] = &[
    m(
        "rr4k_qd1_iops",
        "guest 4 KiB random read QD1",
        "IOPS",
        Higher,
        None,
    ),
    m("rr4k_qd1_p50_us", "  latency p50", "us", Lower, None),
    m("rr4k_qd1_p99_us", "  latency p99", "us", Lower, None),
    m(
        "rr4k_qd32_iops",
        "guest 4 KiB random read QD32",
        "IOPS",
        Higher,
        Some(Goal::Ratio(1.5)),
    ),
    m(
        "guest_cpu_busy_rr4k_qd32_pct",
        "  the guest's own vCPU busy during it (its /proc/stat)",
        "%",
        Neither,
        None,
    ),
    m(
        "guest_cpu_idle_rr4k_qd32_pct",
        "  the guest's own vCPU idle (waiting for I/O) during it",
        "%",
        Neither,
        None,
    ),
    m(
        "rw4k_qd32_iops",
        "guest 4 KiB random write QD32",
        "IOPS",
        Higher,
        None,
    ),
    m(
        "seqread_mibs",
        "guest 1 MiB sequential read QD8",
        "MiB/s",
        Higher,
        Some(Goal::Ratio(1.0)),
    ),
    m(
        "seqwrite_mibs",
        "guest 1 MiB sequential write QD8",
        "MiB/s",
        Higher,
        Some(Goal::Ratio(1.0)),
    ),
    m(
        "two_guests_rr4k_qd32_iops",
        "two guests at once, 4 KiB random read QD32 (sum)",
        "IOPS",
        Higher,
        None,
    ),
    m(
        "two_guests_seqread_mibs",
        "two guests at once, 1 MiB sequential read (sum)",
        "MiB/s",
        Higher,
        None,
    ),
    m(
        "raw_rr4k_qd1_iops",
        "driver domain's own NVMe, 4 KiB random read QD1",
        "IOPS",
        Higher,
        None,
    ),
    m(
        "raw_rr4k_qd32_iops",
        "driver domain's own NVMe, 4 KiB random read QD32",
        "IOPS",
        Higher,
        None,
    ),
    m(
        "raw_seqread_mibs",
        "driver domain's own NVMe, 1 MiB sequential read",
        "MiB/s",
        Higher,
        None,
    ),
    m(
        "pct_rr4k_qd1",
        "guest 4 KiB random read QD1, % of own NVMe figure",
        "%",
        Higher,
        Some(Goal::AtLeast(90.0)),
    ),
    m(
        "pct_rr4k_qd32",
        "guest 4 KiB random read QD32, % of own NVMe figure",
        "%",
        Higher,
        Some(Goal::AtLeast(90.0)),
    ),
    m(
        "pct_seqread",
        "guest 1 MiB sequential read, % of own NVMe figure",
        "%",
        Higher,
        None,
    ),
    m(
        "tcp_g2g_1_mbits",
        "TCP guest → guest, 1 stream",
        "Mbit/s",
        Higher,
        Some(Goal::Ratio(1.0)),
    ),
    m(
        "tcp_g2g_3_mbits",
        "TCP guest → guest, 3 streams",
        "Mbit/s",
        Higher,
        Some(Goal::Ratio(1.0)),
    ),
    m(
        "tcp_g2out_1_mbits",
        "TCP guest → outside, 1 stream",
        "Mbit/s",
        Higher,
        Some(Goal::Ratio(1.0)),
    ),
    m(
        "tcp_g2out_3_mbits",
        "TCP guest → outside, 3 streams",
        "Mbit/s",
        Higher,
        Some(Goal::Ratio(1.0)),
    ),
    m(
        "tcp_out2g_1_mbits",
        "TCP outside → guest, 1 stream",
        "Mbit/s",
        Higher,
        Some(Goal::Ratio(1.0)),
    ),
    m(
        "tcp_out2g_3_mbits",
        "TCP outside → guest, 3 streams",
        "Mbit/s",
        Higher,
        Some(Goal::Ratio(1.0)),
    ),
    m(
        "udp64_g2g_pps",
        "UDP 64-byte datagrams guest → guest at no rate limit, received",
        "pkt/s",
        Higher,
        Some(Goal::Ratio(1.0)),
    ),
    m(
        "udp64_g2g_sent_pps",
        "  sent meanwhile (the receiver's socket dropped the rest)",
        "pkt/s",
        Neither,
        None,
    ),
    m(
        "udp64_g2g_under1pct_pps",
        "UDP 64-byte datagrams guest → guest, highest rate received with under 1% lost",
        "pkt/s",
        Higher,
        Some(Goal::Ratio(1.0)),
    ),
    m(
        "ping_g2g_p50_ms",
        "ping guest → guest p50",
        "ms",
        Lower,
        None,
    ),
    m(
        "ping_g2g_p99_ms",
        "ping guest → guest p99",
        "ms",
        Lower,
        None,
    ),
    m(
        "seqread_cpu_s_per_gib",
        "driver domain vCPU per GiB, sequential read",
        "s/GiB",
        Lower,
        None,
    ),
    m(
        "seqwrite_cpu_s_per_gib",
        "driver domain vCPU per GiB, sequential write",
        "s/GiB",
        Lower,
        None,
    ),
    m(
        "tcp_g2g_cpu_s_per_gib",
        "driver domain vCPU per GiB, TCP guest → guest",
        "s/GiB",
        Lower,
        None,
    ),
    m(
        "dd_mem_given_mib",
        "driver domain memory given",
        "MiB",
        Lower,
        Some(Goal::AtMost(32.0)),
    ),
    m(
        "dd_mem_used_kib",
        "driver domain memory used",
        "KiB",
        Lower,
        None,
    ),
    m(
        "dd_xl_create_ms",
        "xl create of the driver domain returns (domain built, device model up, devices attached)",
        "ms",
        Lower,
        None,
    ),
    m(
        "dd_first_line_ms",
        "xl create of the driver domain → its first console line",
        "ms",
        Lower,
        None,
    ),
    m(
        "dd_ready_ms",
        "xl create of the driver domain → serving",
        "ms",
        Lower,
        Some(Goal::Ratio(10.0)),
    ),
    m(
        "guest_disk_connected_ms",
        "xl create of a guest → its disk Connected",
        "ms",
        Lower,
        None,
    ),
    m(
        "mb_xl_create_ms",
        "multiboot fallback: xl create of the driver domain returns",
        "ms",
        Lower,
        None,
    ),
    m(
        "mb_first_line_ms",
        "multiboot fallback: xl create of the driver domain → its first console line",
        "ms",
        Lower,
        None,
    ),
    m(
        "mb_ready_ms",
        "multiboot fallback: xl create of the driver domain → serving",
        "ms",
        Lower,
        None,
    ),
    m(
        "mb_guest_disk_connected_ms",
        "multiboot fallback: xl create of a guest → its disk Connected",
        "ms",
        Lower,
        None,
    ),
];

/// Rows of Bulkhead's other start-up path (`driverdomain-multiboot.cfg`, a short extra
/// boot in each Bulkhead run), set against the Linux driver domain's same figure.
const LINUX_AS: &[(&str, &str)] = &[
    ("mb_xl_create_ms", "dd_xl_create_ms"),
    ("mb_first_line_ms", "dd_first_line_ms"),
    ("mb_ready_ms", "dd_ready_ms"),
    ("mb_guest_disk_connected_ms", "guest_disk_connected_ms"),
];

/// `pct_X` = guest figure ÷ raw figure × 100, per side and run.
const CEILINGS: &[(&str, &str, &str)] = &[
    ("pct_rr4k_qd1", "rr4k_qd1_iops", "raw_rr4k_qd1_iops"),
    ("pct_rr4k_qd32", "rr4k_qd32_iops", "raw_rr4k_qd32_iops"),
    ("pct_seqread", "seqread_mibs", "raw_seqread_mibs"),
];

/// Figures by (side, metric): the runs' values in run order; and the errors reported.
#[derive(Default, Debug)]
pub struct Figures {
    values: BTreeMap<(String, String), Vec<(u32, f64)>>,
    pub errors: Vec<String>,
}

impl Figures {
    pub fn parse(text: &str) -> Figures {
        let mut f = Figures::default();
        for line in text.lines() {
            let Some(rest) = line.trim().strip_prefix("bench: ") else {
                continue;
            };
            let kv: BTreeMap<&str, &str> = rest
                .split_whitespace()
                .filter_map(|w| w.split_once('='))
                .collect();
            let (Some(side), Some(run), Some(metric)) =
                (kv.get("side"), kv.get("run"), kv.get("metric"))
            else {
                f.errors.push(format!("unreadable: {line}"));
                continue;
            };
            let run: u32 = run.parse().unwrap_or(0);
            match kv.get("value").map(|v| v.parse::<f64>()) {
                Some(Ok(v)) if v.is_finite() => f
                    .values
                    .entry((side.to_string(), metric.to_string()))
                    .or_default()
                    .push((run, v)),
                _ => f.errors.push(format!(
                    "{side} run {run} {metric}: {}",
                    kv.get("error").or(kv.get("value")).unwrap_or(&"no value")
                )),
            }
        }
        // Every side's (an A/B run's "base" too, `ab`).
        let sides: BTreeSet<String> = f.values.keys().map(|(s, _)| s.clone()).collect();
        for (pct, guest, raw) in CEILINGS {
            for side in sides.iter().map(String::as_str) {
                let (Some(g), Some(r)) = (f.get(side, guest), f.get(side, raw)) else {
                    continue;
                };
                let derived: Vec<(u32, f64)> = g
                    .iter()
                    .filter_map(|(run, gv)| {
                        let (_, rv) = r.iter().find(|(k, _)| k == run)?;
                        (*rv > 0.0).then(|| (*run, gv / rv * 100.0))
                    })
                    .collect();
                if !derived.is_empty() {
                    f.values
                        .insert((side.to_string(), pct.to_string()), derived);
                }
            }
        }
        for (row, linux) in LINUX_AS {
            if let Some(v) = f.get("linux", linux).cloned() {
                f.values.insert(("linux".to_string(), row.to_string()), v);
            }
        }
        f
    }

    fn get(&self, side: &str, metric: &str) -> Option<&Vec<(u32, f64)>> {
        self.values.get(&(side.to_string(), metric.to_string()))
    }

    pub fn median(&self, side: &str, metric: &str) -> Option<f64> {
        let mut v: Vec<f64> = self.get(side, metric)?.iter().map(|(_, x)| *x).collect();
        median(&mut v)
    }

    /// How many runs each side has figures for (the most of any metric).
    pub fn runs(&self, side: &str) -> usize {
        self.values
            .iter()
            .filter(|((s, _), _)| s == side)
            .map(|(_, v)| v.len())
            .max()
            .unwrap_or(0)
    }
}

pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Bulkhead against Linux, turned so that higher is better for Bulkhead.
fn ratio(better: Better, linux: f64, bulkhead: f64) -> Option<f64> {
    let (num, den) = match better {
        Higher => (bulkhead, linux),
        Lower => (linux, bulkhead),
        Neither => return None,
    };
    (den > 0.0 && num.is_finite()).then(|| num / den)
}

/// The goal's verdict, as the table says it.
fn verdict(goal: Goal, bulkhead: Option<f64>, ratio: Option<f64>) -> String {
    let (met, what) = match goal {
        Goal::Ratio(r) => (ratio.map(|x| x >= r), format!("ratio ≥ {r}")),
        Goal::AtLeast(v) => (bulkhead.map(|x| x >= v), format!("Bulkhead ≥ {v}")),
        Goal::AtMost(v) => (bulkhead.map(|x| x <= v), format!("Bulkhead ≤ {v}")),
    };
    match met {
        Some(true) => format!("{what}: met"),
        Some(false) => format!("{what}: MISSED"),
        None => format!("{what}: no figure"),
    }
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
}

fn json_num(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map_or("null".into(), |x| format!("{x}"))
}

fn json_str(s: &str) -> String {
    let mut o = String::from('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

pub struct Report {
    pub table: String,
    pub json: String,
    /// gnuplot's data: index, ratio, label (rows with a ratio only).
    pub chart_data: String,
    pub missing: Vec<&'static str>,
}

/// One row of a table (the report's, the A/B's): the metric, its two sides' figures,
/// their ratio, and the last column.
fn row(out: &mut String, mt: &Metric, a: Option<f64>, b: Option<f64>, r: Option<f64>, last: &str) {
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {last} |",
        mt.label.trim(),
        mt.unit,
        fmt(a),
        fmt(b),
        r.map_or("-".into(), |r| format!("{r:.2}×")),
    );
}

pub fn report(f: &Figures, date: &str, commit: &str) -> Report {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "Emulated hardware under TCG (Xen in QEMU, no KVM), {date}, commit {commit}; medians of {} Linux and {} Bulkhead runs. Ratio: Bulkhead ÷ Linux, turned so that higher is better for Bulkhead.\n",
        f.runs("linux"),
        f.runs("bulkhead")
    );
    table.push_str(
        "| metric | unit | Linux DD | Bulkhead | ratio | goal |\n|---|---|---:|---:|---:|---|\n",
    );
    let mut raw = String::from("\nRuns (Linux; Bulkhead), in run order:\n\n");
    let mut json = format!(
        "{{\n  \"date\": {},\n  \"commit\": {},\n  \"hardware\": \"emulated hardware under TCG (Xen in QEMU, no KVM)\",\n  \"ratio\": \"Bulkhead / Linux, turned so that higher is better for Bulkhead\",\n  \"metrics\": [\n",
        json_str(date),
        json_str(commit)
    );
    let mut chart = String::new();
    let mut missing = Vec::new();
    for (i, mt) in METRICS.iter().enumerate() {
        let l = f.median("linux", mt.name);
        let b = f.median("bulkhead", mt.name);
        if l.is_none() || b.is_none() {
            missing.push(mt.name);
        }
        let r = l.zip(b).and_then(|(l, b)| ratio(mt.better, l, b));
        let goal = mt.goal.map(|g| verdict(g, b, r));
        row(&mut table, mt, l, b, r, goal.as_deref().unwrap_or_default());
        let runs = |side: &str| {
            f.get(side, mt.name)
                .map(|v| {
                    v.iter()
                        .map(|(_, x)| fmt(Some(*x)))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            raw,
            "- {}: {}; {}",
            mt.name,
            runs("linux"),
            runs("bulkhead")
        );
        let side_json = |side: &str| {
            let v = f
                .get(side, mt.name)
                .map(|v| {
                    v.iter()
                        .map(|(_, x)| json_num(Some(*x)))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            format!(
                "{{\"median\": {}, \"runs\": [{v}]}}",
                json_num(f.median(side, mt.name))
            )
        };
        let _ = writeln!(
            json,
            "    {{\"name\": {}, \"label\": {}, \"unit\": {}, \"higher_is_better\": {}, \"linux\": {}, \"bulkhead\": {}, \"ratio\": {}, \"goal\": {}}}{}",
            json_str(mt.name),
            json_str(mt.label.trim()),
            json_str(mt.unit),
            mt.better == Higher,
            side_json("linux"),
            side_json("bulkhead"),
            json_num(r),
            goal.map_or("null".into(), |g| json_str(&g)),
            if i + 1 < METRICS.len() { "," } else { "" }
        );
        if let Some(r) = r {
            let _ = writeln!(chart, "{i} {r:.4} {}", json_str(mt.name));
        }
    }
    json.push_str("  ],\n  \"errors\": [");
    json.push_str(
        &f.errors
            .iter()
            .map(|e| json_str(e))
            .collect::<Vec<_>>()
            .join(", "),
    );
    json.push_str("]\n}\n");
    table.push_str(&raw);
    if !f.errors.is_empty() {
        table.push_str("\nErrors reported by the runs:\n\n");
        for e in &f.errors {
            let _ = writeln!(table, "- {e}");
        }
    }
    Report {
        table,
        json,
        chart_data: chart,
        missing,
    }
}

// Bars from 1 (equal) on a log scale: right and green where Bulkhead is better, left and
// red where it is worse, so a 20× memory figure does not flatten the rest.
const CHART: &str = r#"set terminal pngcairo size 1100,820 noenhanced
set output OUT
set title TITLE
set style fill solid 0.75
set logscale x 2
set yrange [-1:*] reverse
set ytics nomirror
set xlabel "Bulkhead ÷ Linux driver domain, log scale (right of 1: better for Bulkhead)"
set arrow from 1, graph 0 to 1, graph 1 nohead lw 2
set grid xtics
unset key
plot DATA using 2:0:(1):2:($0 - 0.35):($0 + 0.35):($2 >= 1 ? 0x2e8b57 : 0xc0392b):ytic(3) with boxxyerror lc rgb variable
"#;

/// The figures of the raw `bench:` lines in `raw`.
fn read(raw: &Path) -> Result<Figures, String> {
    let text = std::fs::read_to_string(raw).map_err(|e| format!("{}: {e}", raw.display()))?;
    Ok(Figures::parse(&text))
}

/// The A/B report (tests/xen/run.sh --ab): Bulkhead at this tree's commit against
/// Bulkhead at another (side "base"), run in one boot in the order A B B A ...: each
/// metric's medians, their ratio (turned so that higher is better for this tree's), and
/// the ratio of each pair of runs with the same number, which ran back to back. A
/// Markdown table; figures only, no verdict.
pub fn ab(f: &Figures, base: &str, head: &str) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "A/B on emulated hardware under TCG: Bulkhead at {head} against Bulkhead at {base} (base), {} and {} runs in one boot. Ratio: {head} ÷ {base}, turned so that higher is better for {head}; each pair's ran back to back.\n",
        f.runs("base"),
        f.runs("bulkhead")
    );
    let _ = writeln!(
        t,
        "| metric | unit | {base} | {head} | ratio | pairs (runs) |\n|---|---|---:|---:|---:|---|"
    );
    for mt in METRICS {
        let (a, b) = (f.median("base", mt.name), f.median("bulkhead", mt.name));
        if a.is_none() && b.is_none() {
            continue;
        }
        let r = a.zip(b).and_then(|(a, b)| ratio(mt.better, a, b));
        let pairs: Vec<String> = f
            .get("bulkhead", mt.name)
            .into_iter()
            .flatten()
            .filter_map(|(run, hv)| {
                let (_, bv) = f.get("base", mt.name)?.iter().find(|(k, _)| k == run)?;
                let p = ratio(mt.better, *bv, *hv)?;
                Some(format!(
                    "{run}: {p:.2}× ({} → {})",
                    fmt(Some(*bv)),
                    fmt(Some(*hv))
                ))
            })
            .collect();
        row(&mut t, mt, a, b, r, &pairs.join("; "));
    }
    for e in &f.errors {
        let _ = writeln!(t, "\nerror: {e}");
    }
    t
}

/// `bulkhead-testrun bench-ab RAW BASE HEAD`: the A/B report of RAW's figures.
pub fn run_ab(raw: &Path, base: &str, head: &str) -> Result<(), String> {
    let f = read(raw)?;
    print!("{}", ab(&f, base, head));
    if f.runs("base") == 0 || f.runs("bulkhead") == 0 {
        return Err("no figures from one of the two sides".into());
    }
    Ok(())
}

/// `bulkhead-testrun bench-report RAW OUTDIR COMMIT`.
pub fn run(raw: &Path, out: &Path, commit: &str) -> Result<(), String> {
    let f = read(raw)?;
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let r = report(&f, &date, commit);
    let write = |name: &str, s: &str| {
        let p = out.join(name);
        std::fs::write(&p, s).map_err(|e| format!("{}: {e}", p.display()))
    };
    write("results.json", &r.json)?;
    write("table.md", &r.table)?;
    write("ratios.dat", &r.chart_data)?;
    print!("{}", r.table);
    let png = out.join("ratios.png");
    let gp = std::process::Command::new("gnuplot")
        .arg("-e")
        .arg(format!(
            "OUT='{}'; DATA='{}'; TITLE='Bulkhead vs a Linux driver domain, {date}, {commit} (emulated hardware under TCG)'",
            png.display(),
            out.join("ratios.dat").display()
        ))
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("piped").write_all(CHART.as_bytes())?;
            c.wait()
        });
    match gp {
        Ok(s) if s.success() => println!("bench: chart {}", png.display()),
        Ok(s) => println!("bench: gnuplot failed ({s}); no chart"),
        Err(e) => {
            println!("bench: no gnuplot ({e}; tests/install-deps.sh --xen installs it); no chart")
        }
    }
    println!("bench: results {}", out.join("results.json").display());
    if r.missing.is_empty() && f.errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "figures missing for {} and {} error(s) reported: see the table",
            if r.missing.is_empty() {
                "no metric".to_string()
            } else {
                r.missing.join(", ")
            },
            f.errors.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &str = "\
bench: side=linux run=1 metric=rr4k_qd32_iops value=1000
bench: side=linux run=2 metric=rr4k_qd32_iops value=3000
bench: side=linux run=3 metric=rr4k_qd32_iops value=2000
bench: side=bulkhead run=1 metric=rr4k_qd32_iops value=3000
bench: side=bulkhead run=2 metric=rr4k_qd32_iops value=3500
bench: side=linux run=1 metric=raw_rr4k_qd32_iops value=4000
bench: side=bulkhead run=1 metric=raw_rr4k_qd32_iops value=3000
bench: side=bulkhead run=2 metric=raw_rr4k_qd32_iops value=5000
bench: side=linux run=1 metric=ping_g2g_p50_ms value=2
bench: side=bulkhead run=1 metric=ping_g2g_p50_ms value=1
bench: side=bulkhead run=1 metric=dd_mem_given_mib value=33
bench: side=linux run=1 metric=dd_mem_given_mib value=512
bench: side=bulkhead run=2 metric=tcp_g2g_1_mbits error=iperf3:unable_to_connect
noise that is not a figure
";

    #[test]
    fn medians_take_the_middle_or_the_mean_of_the_two_middles() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
        let f = Figures::parse(RAW);
        assert_eq!(f.median("linux", "rr4k_qd32_iops"), Some(2000.0));
        assert_eq!(f.median("bulkhead", "rr4k_qd32_iops"), Some(3250.0));
        assert_eq!(f.runs("linux"), 3);
    }

    #[test]
    fn the_multiboot_rows_set_bulkheads_other_path_against_the_same_linux_figure() {
        let f = Figures::parse(
            "bench: side=linux run=1 metric=dd_ready_ms value=12000
bench: side=bulkhead run=1 metric=dd_ready_ms value=1200
bench: side=bulkhead run=1 metric=mb_ready_ms value=8000
",
        );
        assert_eq!(f.median("linux", "mb_ready_ms"), Some(12000.0));
        let r = report(&f, "today", "abc");
        let line = |start: &str| {
            r.table
                .lines()
                .find(|l| l.starts_with(start))
                .unwrap()
                .to_string()
        };
        let fw = line("| xl create of the driver domain → serving |");
        assert!(
            fw.contains("10.00×") && fw.contains("ratio ≥ 10: met"),
            "{fw}"
        );
        let mb = line("| multiboot fallback: xl create of the driver domain → serving |");
        assert!(mb.contains("1.50×"), "{mb}");
    }

    #[test]
    fn the_ab_report_compares_two_images_run_by_run() {
        let f = Figures::parse(
            "bench: side=base run=1 metric=rr4k_qd32_iops value=1000
bench: side=bulkhead run=1 metric=rr4k_qd32_iops value=1500
bench: side=bulkhead run=2 metric=rr4k_qd32_iops value=800
bench: side=base run=2 metric=rr4k_qd32_iops value=400
bench: side=base run=1 metric=ping_g2g_p50_ms value=4
bench: side=bulkhead run=1 metric=ping_g2g_p50_ms value=8
bench: side=base run=1 metric=raw_rr4k_qd32_iops value=10000
",
        );
        let t = ab(&f, "old", "new");
        let line = |start: &str| {
            t.lines()
                .find(|l| l.starts_with(start))
                .unwrap()
                .to_string()
        };
        // Medians 700 and 1150; the pairs 1.5× and 2×, by run number, not by order.
        let qd32 = line("| guest 4 KiB random read QD32 |");
        assert!(
            qd32.contains("| 700 | 1150 | 1.64× | 1: 1.50× (1000 → 1500); 2: 2.00× (400 → 800) |"),
            "{qd32}"
        );
        // Lower is better: twice the latency is half as good.
        assert!(line("| ping guest → guest p50 |").contains("| 0.50× |"));
        // The base side's share of its own NVMe is derived too (10%).
        assert!(
            line("| guest 4 KiB random read QD32, % of own NVMe figure |").contains("| 10.0 | - |")
        );
        // Rows with no figure on either side are left out.
        assert!(!t.contains("sequential write"));
    }

    #[test]
    fn ratios_are_turned_so_that_higher_is_better_for_bulkhead() {
        assert_eq!(ratio(Higher, 2000.0, 3000.0), Some(1.5));
        assert_eq!(ratio(Lower, 2.0, 1.0), Some(2.0));
        assert_eq!(ratio(Higher, 0.0, 3.0), None);
    }

    #[test]
    fn shares_of_the_ceiling_pair_each_run_with_its_own_raw_figure() {
        let f = Figures::parse(RAW);
        // Bulkhead: 3000/3000 and 3500/5000 → 100 % and 70 %, median 85 %.
        assert_eq!(f.median("bulkhead", "pct_rr4k_qd32"), Some(85.0));
        assert_eq!(f.median("linux", "pct_rr4k_qd32"), Some(25.0));
    }

    #[test]
    fn the_report_says_which_goals_are_met_missed_or_without_a_figure() {
        let f = Figures::parse(RAW);
        let r = report(&f, "today", "abc");
        let row = |name: &str| {
            let label = METRICS
                .iter()
                .find(|m| m.name == name)
                .unwrap()
                .label
                .trim();
            r.table
                .lines()
                .find(|l| l.starts_with(&format!("| {label} |")))
                .unwrap()
                .to_string()
        };
        assert!(
            row("rr4k_qd32_iops").contains("1.62×"),
            "{}",
            row("rr4k_qd32_iops")
        );
        assert!(row("rr4k_qd32_iops").contains("ratio ≥ 1.5: met"));
        assert!(row("pct_rr4k_qd32").contains("Bulkhead ≥ 90: MISSED"));
        assert!(row("dd_mem_given_mib").contains("Bulkhead ≤ 32: MISSED"));
        assert!(row("ping_g2g_p50_ms").contains("2.00×"));
        assert!(row("seqread_mibs").contains("no figure"));
        assert!(r.missing.contains(&"seqread_mibs"));
        assert_eq!(
            f.errors,
            vec!["bulkhead run 2 tcp_g2g_1_mbits: iperf3:unable_to_connect"]
        );
        assert!(r.json.contains("\"name\": \"rr4k_qd32_iops\""));
        assert!(r.json.contains("\"runs\": [1000, 3000, 2000]"));
        assert!(r
            .chart_data
            .lines()
            .any(|l| l.ends_with("\"rr4k_qd32_iops\"")));
    }
}
