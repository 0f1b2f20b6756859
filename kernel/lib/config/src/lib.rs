//! Bulkhead's command line (`cmdline=` in xl, `-append` in QEMU) parsed into a typed
//! [`Config`].
//!
//! Options are whitespace-separated `key=value` or bare `key` (a flag set to true). A key
//! given twice keeps the last value, as Linux does. Unknown keys and bad values are
//! collected and returned, never ignored: the kernel prints each one and refuses to run, so
//! a typo in an xl config is seen at once rather than silently changing behaviour.
#![no_std]
#![forbid(unsafe_code)]

use core::fmt;
use log::LevelFilter;

/// Errors kept; any beyond are only counted.
pub const MAX_ERRORS: usize = 8;

/// Every option Bulkhead understands, with its help text. The kernel prints this list when
/// it meets an unknown option.
pub const OPTIONS: &[(&str, &str)] = &[
    ("loglevel", "off|error|warn|info|debug|trace (default info)"),
    (
        "selftest",
        "run the in-kernel self-tests, print one line per check, then power off",
    ),
    (
        "heartbeat",
        "seconds between uptime lines from the event loop, 0 = off (default 0)",
    ),
    (
        "heap",
        "kernel heap size in KiB, or with a K/M suffix (default: auto)",
    ),
    (
        "test-panic",
        "test only: panic right after boot, to check the crash path",
    ),
    (
        "calibrate",
        "test only: run a fixed compute loop, print its time, then power off (the test runners scale their time limits by it)",
    ),
    (
        "test-fault",
        "test only: take a page fault on a guard page, to check fault reporting",
    ),
    (
        "nvme-irq",
        "msix|msi|intx|poll: how NVMe completions are noticed (default msix)",
    ),
    (
        "mgmt",
        "dhcp | A.B.C.D/PREFIX: Bulkhead's own management address on the first NIC (ARP, ping, status page on TCP port 80); off by default",
    ),
    (
        "mgmt-gw",
        "A.B.C.D: default gateway for a static mgmt= address",
    ),
    (
        "bench-storage",
        "SECONDS: before serving, time 4 KiB random and 1 MiB sequential reads on the first NVMe namespace (figures on the console)",
    ),
    (
        "test-storage",
        "test only: NVMe read/verify/write/flush checks on the first controller, then power off",
    ),
    (
        "test-nvme-timeout",
        "test only: with test-storage, lose one command to exercise timeout, abort and reset",
    ),
    (
        "gso-min-size",
        "BYTES: smallest segment size a guest's large send (GSO) may ask for; smaller ones are dropped (default 88, Linux's TCP minimum MSS)",
    ),
    (
        "gso-max-segs",
        "N: most segments one large send may be cut into; more are dropped (default 745: 64 KiB at the minimum segment size)",
    ),
    (
        "vif-queue-bytes",
        "SIZE: bytes of packets waiting for one vif queue (or the wire, or mgmt) before new ones are dropped (default 512K)",
    ),
    (
        "net-queued-bytes",
        "SIZE: bytes of packets waiting for all of them together (default 8M, at most a quarter of the heap)",
    ),
    (
        "vif-rx-stall",
        "SECONDS: a vif that posts no receive buffers while packets wait this long has its carrier turned off (default 60, as Linux)",
    ),
    (
        "vif-mtu",
        "BYTES: largest IP packet a guest may send without GSO (default 1500); raise it for jumbo frames between guests (the wire takes what its NIC takes)",
    ),
    (
        "vif-flood-rate",
        "N: frames a guest may flood (broadcast, multicast, unknown unicast) per second; more are dropped (default 2000)",
    ),
    (
        "grant-cache-per-domain",
        "N: map slots one guest's persistent grants may hold, all its disks together (default: a quarter of the pool); the rest go by grant copy",
    ),
    (
        "test-triggers",
        "test only: obey dom0 writing control/test-trigger: `panic` panics, `nvme-fail` makes the NVMe controllers fail every command",
    ),
    (
        "test-xen-peer",
        "test only: event-channel and grant round trip with this domain id (tests/xen/xen-peer.c)",
    ),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub log_level: LevelFilter,
    pub selftest: bool,
    pub heartbeat_secs: u32,
    /// Heap size in bytes; `None` lets the kernel size it from memory.
    pub heap_bytes: Option<u64>,
    pub test_panic: bool,
    pub test_fault: bool,
    /// Run the fixed calibration loop and power off (test runners time it).
    pub calibrate: bool,
    pub test_xen_peer: Option<u16>,
    pub test_triggers: bool,
    pub nvme_irq: NvmeIrq,
    pub test_storage: bool,
    pub test_nvme_timeout: bool,
    /// Seconds per pattern of the local storage benchmark (0: off).
    pub bench_storage_secs: u32,
    pub mgmt: Mgmt,
    pub mgmt_gw: Option<[u8; 4]>,
    /// Limits on what a guest's packets may cost (None: netback's default).
    pub gso_min_size: Option<u16>,
    pub gso_max_segs: Option<u32>,
    pub vif_queue_bytes: Option<u64>,
    pub net_queued_bytes: Option<u64>,
    pub vif_rx_stall_secs: Option<u32>,
    pub grant_cache_per_domain: Option<u32>,
    pub vif_flood_rate: Option<u32>,
    pub vif_mtu: Option<u32>,
}

/// The management interface's addressing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mgmt {
    #[default]
    Off,
    Dhcp,
    Static {
        addr: [u8; 4],
        prefix: u8,
    },
}

fn ipv4(s: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = s.split('.');
    for o in out.iter_mut() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = p.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NvmeIrq {
    MsiX,
    Msi,
    Intx,
    Poll,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log_level: LevelFilter::Info,
            selftest: false,
            heartbeat_secs: 0,
            heap_bytes: None,
            test_panic: false,
            test_fault: false,
            calibrate: false,
            test_xen_peer: None,
            test_triggers: false,
            nvme_irq: NvmeIrq::MsiX,
            test_storage: false,
            test_nvme_timeout: false,
            bench_storage_secs: 0,
            mgmt: Mgmt::Off,
            mgmt_gw: None,
            gso_min_size: None,
            gso_max_segs: None,
            vif_queue_bytes: None,
            net_queued_bytes: None,
            vif_rx_stall_secs: None,
            grant_cache_per_domain: None,
            vif_flood_rate: None,
            vif_mtu: None,
        }
    }
}

/// The options only a test build obeys (the kernel's `test-hooks` feature, which
/// `make test` builds as `build/bulkhead-test.elf`): the shipped image carries none of
/// the code behind them and refuses them like a bad value.
pub const TEST_OPTIONS: &[&str] = &[
    "selftest",
    "test-panic",
    "test-fault",
    "calibrate",
    "test-storage",
    "test-nvme-timeout",
    "test-triggers",
    "test-xen-peer",
];

/// Whether `key` is one of [`TEST_OPTIONS`].
pub fn is_test_option(key: &str) -> bool {
    TEST_OPTIONS.contains(&key)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError<'a> {
    Unknown(&'a str),
    /// A test option given to an image built without the test hooks.
    TestOnly(&'a str),
    BadValue {
        key: &'a str,
        value: &'a str,
        expected: &'static str,
    },
}

impl ConfigError<'_> {
    /// The option the error is about.
    pub fn option(&self) -> &str {
        match self {
            ConfigError::Unknown(k) | ConfigError::TestOnly(k) => k,
            ConfigError::BadValue { key, .. } => key,
        }
    }

    /// What is wrong with it, as one word: `unknown`, `test-only` or `bad-value`.
    pub fn kind(&self) -> &'static str {
        match self {
            ConfigError::Unknown(_) => "unknown",
            ConfigError::TestOnly(_) => "test-only",
            ConfigError::BadValue { .. } => "bad-value",
        }
    }
}

impl fmt::Display for ConfigError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Unknown(k) => write!(f, "unknown option '{k}'"),
            ConfigError::TestOnly(k) => write!(
                f,
                "option '{k}' is for tests and this image was built without them (make test builds build/bulkhead-test.elf, which has them)"
            ),
            ConfigError::BadValue {
                key,
                value,
                expected,
            } => {
                write!(
                    f,
                    "option '{key}': bad value '{value}', expected {expected}"
                )
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct Parsed<'a> {
    pub config: Config,
    pub errors: heapless::Vec<ConfigError<'a>, MAX_ERRORS>,
    /// Errors that did not fit in `errors`.
    pub more_errors: usize,
}

impl Parsed<'_> {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Parse for a build with the test hooks (every option known).
pub fn parse(cmdline: &str) -> Parsed<'_> {
    parse_for(cmdline, true)
}

/// Parse for a build with or without the test hooks: without them a test option is an
/// error ([`ConfigError::TestOnly`]) and leaves the configuration as it was.
pub fn parse_for(cmdline: &str, test_hooks: bool) -> Parsed<'_> {
    let mut p = Parsed {
        config: Config::default(),
        errors: heapless::Vec::new(),
        more_errors: 0,
    };
    for token in cmdline.split_ascii_whitespace() {
        let (key, value) = match token.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (token, None),
        };
        let applied = if !test_hooks && is_test_option(key) {
            Err(ConfigError::TestOnly(key))
        } else {
            apply(&mut p.config, key, value)
        };
        if let Err(e) = applied {
            if p.errors.push(e).is_err() {
                p.more_errors += 1;
            }
        }
    }
    p
}

fn apply<'a>(c: &mut Config, key: &'a str, value: Option<&'a str>) -> Result<(), ConfigError<'a>> {
    let bad = |expected| ConfigError::BadValue {
        key,
        value: value.unwrap_or(""),
        expected,
    };
    match key {
        "loglevel" => {
            let v = value.ok_or(bad("a level"))?;
            c.log_level = v
                .parse()
                .map_err(|_| bad("off|error|warn|info|debug|trace"))?;
        }
        "selftest" => c.selftest = flag(value).ok_or(bad("nothing, 0 or 1"))?,
        "test-panic" => c.test_panic = flag(value).ok_or(bad("nothing, 0 or 1"))?,
        "test-triggers" => c.test_triggers = flag(value).ok_or(bad("nothing, 0 or 1"))?,
        "test-fault" => c.test_fault = flag(value).ok_or(bad("nothing, 0 or 1"))?,
        "calibrate" => c.calibrate = flag(value).ok_or(bad("nothing, 0 or 1"))?,
        "heartbeat" => {
            c.heartbeat_secs = value
                .and_then(|v| v.parse().ok())
                .ok_or(bad("a number of seconds"))?
        }
        "heap" => {
            let bytes = value
                .and_then(size)
                .ok_or(bad("a size like 4096, 512K or 8M"))?;
            if bytes < 64 * 1024 {
                return Err(bad("at least 64K"));
            }
            c.heap_bytes = Some(bytes);
        }
        "nvme-irq" => {
            c.nvme_irq = match value {
                Some("msix") => NvmeIrq::MsiX,
                Some("msi") => NvmeIrq::Msi,
                Some("intx") => NvmeIrq::Intx,
                Some("poll") => NvmeIrq::Poll,
                _ => return Err(bad("msix, msi, intx or poll")),
            }
        }
        "test-storage" => c.test_storage = flag(value).ok_or(bad("nothing, 0 or 1"))?,
        "mgmt" => {
            c.mgmt = match value {
                Some("dhcp") => Mgmt::Dhcp,
                Some("off") => Mgmt::Off,
                Some(v) => {
                    let (a, p) = v
                        .split_once('/')
                        .ok_or(bad("dhcp, off or A.B.C.D/PREFIX"))?;
                    let addr = ipv4(a).ok_or(bad("dhcp, off or A.B.C.D/PREFIX"))?;
                    let prefix = p
                        .parse::<u8>()
                        .ok()
                        .filter(|p| (1..=32).contains(p))
                        .ok_or(bad("a prefix length 1-32"))?;
                    Mgmt::Static { addr, prefix }
                }
                None => return Err(bad("dhcp, off or A.B.C.D/PREFIX")),
            }
        }
        "mgmt-gw" => c.mgmt_gw = Some(value.and_then(ipv4).ok_or(bad("an IPv4 address"))?),
        "bench-storage" => {
            c.bench_storage_secs = value
                .and_then(|v| v.parse().ok())
                .filter(|s| *s <= 600)
                .ok_or(bad("a number of seconds up to 600"))?
        }
        "test-nvme-timeout" => c.test_nvme_timeout = flag(value).ok_or(bad("nothing, 0 or 1"))?,
        "gso-min-size" => {
            let v = value
                .and_then(|v| v.parse::<u16>().ok())
                .filter(|v| *v >= 1);
            c.gso_min_size = Some(v.ok_or(bad("a size in bytes, 1-65535"))?);
        }
        "gso-max-segs" => {
            let v = value
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|v| (1..=65535).contains(v));
            c.gso_max_segs = Some(v.ok_or(bad("a number of segments, 1-65535"))?);
        }
        "vif-queue-bytes" | "net-queued-bytes" => {
            let v = value
                .and_then(size_bytes)
                .filter(|v| *v >= 64 * 1024)
                .ok_or(bad("a size like 512K or 8M, at least 64K"))?;
            if key == "vif-queue-bytes" {
                c.vif_queue_bytes = Some(v);
            } else {
                c.net_queued_bytes = Some(v);
            }
        }
        "vif-mtu" => {
            let v = value
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|v| (68..=65517).contains(v));
            c.vif_mtu = Some(v.ok_or(bad("an MTU in bytes, 68-65517"))?);
        }
        "vif-flood-rate" => {
            let v = value
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|v| *v >= 1);
            c.vif_flood_rate = Some(v.ok_or(bad("frames per second, at least 1"))?);
        }
        "grant-cache-per-domain" => {
            let v = value.and_then(|v| v.parse::<u32>().ok());
            c.grant_cache_per_domain = Some(v.ok_or(bad("a number of map slots"))?);
        }
        "vif-rx-stall" => {
            let v = value
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|v| (1..=3600).contains(v));
            c.vif_rx_stall_secs = Some(v.ok_or(bad("a number of seconds, 1-3600"))?);
        }
        "test-xen-peer" => {
            let d = value
                .and_then(|v| v.parse::<u16>().ok())
                .filter(|d| *d < 0x7ff0);
            c.test_xen_peer = Some(d.ok_or(bad("a domain id"))?);
        }
        _ => return Err(ConfigError::Unknown(key)),
    }
    Ok(())
}

fn flag(value: Option<&str>) -> Option<bool> {
    match value {
        None | Some("1") | Some("on") | Some("yes") | Some("true") => Some(true),
        Some("0") | Some("off") | Some("no") | Some("false") => Some(false),
        Some(_) => None,
    }
}

/// A size in bytes by default, or with a K/M/G suffix.
fn size_bytes(v: &str) -> Option<u64> {
    match v.as_bytes().last()? {
        b'0'..=b'9' => v.parse().ok(),
        _ => size(v),
    }
}

/// A size in KiB by default, or with a K/M/G suffix.
fn size(v: &str) -> Option<u64> {
    let (digits, mult) = match v.as_bytes().last()? {
        b'K' | b'k' => (&v[..v.len() - 1], 1u64 << 10),
        b'M' | b'm' => (&v[..v.len() - 1], 1 << 20),
        b'G' | b'g' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1 << 10),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_line_gives_defaults() {
        let p = parse("");
        assert!(p.is_ok());
        assert_eq!(p.config, Config::default());
        assert!(parse("   \t ").is_ok());
    }

    #[test]
    fn all_options() {
        let p = parse(
            "loglevel=debug selftest heartbeat=5 heap=2M test-panic=1 test-fault=0 calibrate test-xen-peer=0",
        );
        assert!(p.is_ok(), "{:?}", p.errors);
        assert_eq!(
            p.config,
            Config {
                log_level: LevelFilter::Debug,
                selftest: true,
                heartbeat_secs: 5,
                heap_bytes: Some(2 << 20),
                test_panic: true,
                test_fault: false,
                calibrate: true,
                test_xen_peer: Some(0),
                ..Config::default()
            }
        );
    }

    #[test]
    fn last_value_wins() {
        let p = parse("loglevel=debug loglevel=warn selftest selftest=0");
        assert_eq!(p.config.log_level, LevelFilter::Warn);
        assert!(!p.config.selftest);
    }

    #[test]
    fn unknown_option_is_reported() {
        let p = parse("loglevel=info bogus=1 selftest frob");
        assert_eq!(
            p.errors.as_slice(),
            &[ConfigError::Unknown("bogus"), ConfigError::Unknown("frob")]
        );
        // Known options around it still apply.
        assert!(p.config.selftest);
    }

    #[test]
    fn bad_values_are_reported() {
        let p = parse("loglevel=loud heartbeat=-1 heap=12Q selftest=maybe loglevel heap=1K");
        assert!(!parse("test-xen-peer=32752").is_ok());
        assert!(!parse("test-xen-peer").is_ok());
        let keys: heapless::Vec<&str, 8> = p.errors.iter().map(|e| e.option()).collect();
        assert!(p.errors.iter().all(|e| e.kind() == "bad-value"));
        assert_eq!(
            keys.as_slice(),
            &[
                "loglevel",
                "heartbeat",
                "heap",
                "selftest",
                "loglevel",
                "heap"
            ]
        );
        assert_eq!(p.config, Config::default());
    }

    #[test]
    fn error_messages_are_clear() {
        let p = parse("nosuch loglevel=loud");
        let mut s = heapless::String::<200>::new();
        use core::fmt::Write;
        write!(s, "{}; {}", p.errors[0], p.errors[1]).unwrap();
        assert_eq!(
            s.as_str(),
            "unknown option 'nosuch'; option 'loglevel': bad value 'loud', expected off|error|warn|info|debug|trace"
        );
    }

    #[test]
    fn errors_name_their_option_and_kind() {
        let p = parse("nosuch loglevel=loud");
        assert_eq!(
            (p.errors[0].option(), p.errors[0].kind()),
            ("nosuch", "unknown")
        );
        assert_eq!(
            (p.errors[1].option(), p.errors[1].kind()),
            ("loglevel", "bad-value")
        );
        let t = ConfigError::TestOnly("test-storage");
        assert_eq!((t.option(), t.kind()), ("test-storage", "test-only"));
    }

    #[test]
    fn too_many_errors_are_counted() {
        let p = parse("a b c d e f g h i j");
        assert_eq!(p.errors.len(), MAX_ERRORS);
        assert_eq!(p.more_errors, 2);
    }

    #[test]
    fn sizes() {
        assert_eq!(size("64"), Some(64 << 10));
        assert_eq!(size("512K"), Some(512 << 10));
        assert_eq!(size("3m"), Some(3 << 20));
        assert_eq!(size("1G"), Some(1 << 30));
        assert_eq!(size("99999999999999999G"), None);
        assert_eq!(size(""), None);
        assert_eq!(size("M"), None);
    }

    #[test]
    fn a_build_without_test_hooks_refuses_test_options() {
        let p = parse_for("loglevel=debug selftest test-xen-peer=0 heartbeat=5", false);
        assert_eq!(
            p.errors.as_slice(),
            &[
                ConfigError::TestOnly("selftest"),
                ConfigError::TestOnly("test-xen-peer")
            ]
        );
        assert!(!p.config.selftest && p.config.test_xen_peer.is_none());
        assert_eq!(p.config.log_level, LevelFilter::Debug);
        assert_eq!(p.config.heartbeat_secs, 5);
        // Even a test option's "off" value: the shipped image knows nothing of it.
        assert!(!parse_for("selftest=0", false).is_ok());
        // The product's own options pass; a test build takes the test options.
        assert!(parse_for("mgmt=dhcp bench-storage=2 nvme-irq=intx", false).is_ok());
        assert!(parse_for("selftest test-storage test-nvme-timeout calibrate", true).is_ok());
        // Every test option is documented, and is refused without the hooks.
        for key in TEST_OPTIONS {
            assert!(OPTIONS.iter().any(|(k, _)| k == key), "{key} undocumented");
            assert_eq!(
                parse_for(key, false).errors.as_slice(),
                &[ConfigError::TestOnly(key)]
            );
        }
    }

    #[test]
    fn every_documented_option_parses() {
        for (key, _) in OPTIONS {
            let p = parse(key);
            assert!(
                !p.errors
                    .iter()
                    .any(|e| matches!(e, ConfigError::Unknown(_))),
                "{key}"
            );
        }
    }
}

#[cfg(test)]
mod mgmt_tests {
    use super::*;

    #[test]
    fn management_addresses() {
        assert_eq!(parse("mgmt=dhcp").config.mgmt, Mgmt::Dhcp);
        let c = parse("mgmt=192.168.76.2/24 mgmt-gw=192.168.76.1").config;
        assert_eq!(
            c.mgmt,
            Mgmt::Static {
                addr: [192, 168, 76, 2],
                prefix: 24
            }
        );
        assert_eq!(c.mgmt_gw, Some([192, 168, 76, 1]));
        let c = parse("gso-min-size=536 gso-max-segs=128").config;
        assert_eq!((c.gso_min_size, c.gso_max_segs), (Some(536), Some(128)));
        let c = parse("vif-queue-bytes=256K net-queued-bytes=4194304 vif-rx-stall=5").config;
        assert_eq!(c.vif_queue_bytes, Some(256 << 10));
        assert_eq!(c.net_queued_bytes, Some(4 << 20));
        assert_eq!(c.vif_rx_stall_secs, Some(5));
        assert_eq!(parse("vif-flood-rate=50").config.vif_flood_rate, Some(50));
        assert_eq!(parse("vif-mtu=9000").config.vif_mtu, Some(9000));
        assert!(!parse("vif-mtu=70000").is_ok());
        assert!(!parse("vif-flood-rate=0").is_ok());
        assert_eq!(
            parse("grant-cache-per-domain=0")
                .config
                .grant_cache_per_domain,
            Some(0)
        );
        for bad in ["vif-queue-bytes=1K", "net-queued-bytes=x", "vif-rx-stall=0"] {
            assert!(!parse(bad).errors.is_empty(), "{bad}");
        }
        for bad in [
            "gso-min-size=0",
            "gso-min-size=70000",
            "gso-max-segs=0",
            "gso-max-segs",
        ] {
            assert!(!parse(bad).errors.is_empty(), "{bad}");
        }
        for bad in [
            "mgmt",
            "mgmt=1.2.3/24",
            "mgmt=1.2.3.4",
            "mgmt=1.2.3.4/33",
            "mgmt=256.1.1.1/8",
            "mgmt=1.2.3.4.5/8",
            "mgmt-gw=x",
        ] {
            assert!(!parse(bad).errors.is_empty(), "{bad}");
        }
    }
}
