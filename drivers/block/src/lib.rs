//! What a storage driver offers and blkback consumes: [`BlockDevice`] (whole blocks,
//! async), [`Extent`] (a window onto a device — a namespace or one GPT partition — that
//! checks every range before it reaches the device), and [`Target`] (the names an xl disk
//! line's `target=` may use).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// Outside the device or extent.
    OutOfRange,
    /// Not a whole number of blocks, or empty.
    BadLength,
    /// Writing to a read-only extent.
    ReadOnly,
    /// The device does not support the operation (e.g. discard).
    Unsupported,
    /// The device failed the request (its driver logged why).
    Io,
    /// The device did not complete the request in time and could not be recovered.
    Timeout,
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlockError::OutOfRange => "range outside the device",
            BlockError::BadLength => "length is not a whole number of blocks",
            BlockError::ReadOnly => "device is read-only",
            BlockError::Unsupported => "operation not supported by the device",
            BlockError::Io => "I/O error",
            BlockError::Timeout => "device timed out",
        })
    }
}

/// Capabilities a backend advertises to its frontends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Features {
    pub flush: bool,
    pub discard: bool,
    pub write_zeroes: bool,
    pub volatile_cache: bool,
}

/// A device addressed in blocks. Implementations complete asynchronously on the event
/// loop; buffers are the caller's until the future resolves.
pub trait BlockDevice {
    fn block_size(&self) -> u32;
    fn blocks(&self) -> u64;
    fn features(&self) -> Features;
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> impl Future<Output = Result<(), BlockError>>;
    fn write(&mut self, lba: u64, buf: &[u8]) -> impl Future<Output = Result<(), BlockError>>;
    fn flush(&mut self) -> impl Future<Output = Result<(), BlockError>>;
    fn discard(&mut self, lba: u64, blocks: u64) -> impl Future<Output = Result<(), BlockError>>;

    /// Whether the device can move a transfer straight to or from `spans` (memory it
    /// reaches by DMA, described by address: [`Io::ReadTo`], [`Io::WriteFrom`]), for
    /// every piece the driver may split it into. A caller offers spans only where this
    /// said yes. The default takes none.
    fn takes_spans(&self, _spans: &[Span]) -> bool {
        false
    }

    /// Serve every transfer of `ios`, as many at once as the device can take; one result
    /// per transfer, in the order of `ios`. Nothing orders them among themselves (they
    /// may complete in any order, as requests in flight on a blkif ring do): a caller
    /// that needs order (a flush, a barrier) ends the batch there. The default serves
    /// them one after another; a driver with a queue overrides it.
    fn transfer_all(
        &mut self,
        ios: &mut [Io<'_>],
    ) -> impl Future<Output = Vec<Result<(), BlockError>>> {
        async move {
            let mut out = Vec::with_capacity(ios.len());
            for io in ios.iter_mut() {
                out.push(match io {
                    Io::Read { lba, buf } => self.read(*lba, buf).await,
                    Io::Write { lba, buf } => self.write(*lba, buf).await,
                    Io::ReadTo { .. } | Io::WriteFrom { .. } => Err(BlockError::Unsupported),
                });
            }
            out
        }
    }

    /// Another handle on the same device, for a batch served beside this one's (a
    /// blkif ring keeps several batches at the device at once: requests that arrive
    /// while one is in flight need not wait for all of it). Both see the same blocks and
    /// may have transfers in flight at the same time. The default has none: the device
    /// serves one caller at a time.
    fn lane(&self) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }
}

/// Memory a device reaches by DMA without a copy: `len` bytes at physical address
/// `addr` (in Bulkhead, identity-mapped: a guest's persistently mapped grant, or the
/// kernel's own memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub addr: u64,
    pub len: usize,
}

/// One transfer of a batch ([`BlockDevice::transfer_all`]): whole blocks from `lba`,
/// into or out of a buffer, or straight to or from memory given by address (only where
/// [`BlockDevice::takes_spans`] said yes).
#[derive(Debug)]
pub enum Io<'a> {
    Read { lba: u64, buf: &'a mut [u8] },
    Write { lba: u64, buf: &'a [u8] },
    ReadTo { lba: u64, spans: &'a [Span] },
    WriteFrom { lba: u64, spans: &'a [Span] },
}

impl Io<'_> {
    pub fn lba(&self) -> u64 {
        match self {
            Io::Read { lba, .. }
            | Io::Write { lba, .. }
            | Io::ReadTo { lba, .. }
            | Io::WriteFrom { lba, .. } => *lba,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Io::Read { buf, .. } => buf.len(),
            Io::Write { buf, .. } => buf.len(),
            Io::ReadTo { spans, .. } | Io::WriteFrom { spans, .. } => {
                spans.iter().map(|s| s.len).sum()
            }
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Where the buffer is in memory (a driver that can give a device the caller's own
    /// memory, identity-mapped, moves it without a copy); None for spans.
    pub fn as_ptr(&self) -> Option<*const u8> {
        match self {
            Io::Read { buf, .. } => Some(buf.as_ptr()),
            Io::Write { buf, .. } => Some(buf.as_ptr()),
            Io::ReadTo { .. } | Io::WriteFrom { .. } => None,
        }
    }
    /// The memory given by address, if the transfer has no buffer.
    pub fn spans(&self) -> Option<&[Span]> {
        match self {
            Io::ReadTo { spans, .. } | Io::WriteFrom { spans, .. } => Some(spans),
            Io::Read { .. } | Io::Write { .. } => None,
        }
    }
    /// The same transfer, borrowed again, at another block address (a window onto a
    /// device mapping its addresses to the device's own).
    pub fn at(&mut self, lba: u64) -> Io<'_> {
        match self {
            Io::Read { buf, .. } => Io::Read { lba, buf },
            Io::Write { buf, .. } => Io::Write { lba, buf },
            Io::ReadTo { spans, .. } => Io::ReadTo { lba, spans },
            Io::WriteFrom { spans, .. } => Io::WriteFrom { lba, spans },
        }
    }

    pub fn is_write(&self) -> bool {
        matches!(self, Io::Write { .. } | Io::WriteFrom { .. })
    }
}

/// A contiguous range of a device's blocks exposed as a device of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub first: u64,
    pub blocks: u64,
    pub block_size: u32,
    pub read_only: bool,
}

impl Extent {
    /// Map a request on the extent to device blocks, refusing anything that would leave
    /// it (including arithmetic overflow from hostile values).
    pub fn map(&self, lba: u64, bytes: usize, write: bool) -> Result<u64, BlockError> {
        if write && self.read_only {
            return Err(BlockError::ReadOnly);
        }
        let bs = self.block_size as usize;
        if bytes == 0 || !bytes.is_multiple_of(bs) {
            return Err(BlockError::BadLength);
        }
        let n = (bytes / bs) as u64;
        let end = lba.checked_add(n).ok_or(BlockError::OutOfRange)?;
        if end > self.blocks {
            return Err(BlockError::OutOfRange);
        }
        self.first.checked_add(lba).ok_or(BlockError::OutOfRange)
    }

    pub fn map_blocks(&self, lba: u64, blocks: u64, write: bool) -> Result<u64, BlockError> {
        if write && self.read_only {
            return Err(BlockError::ReadOnly);
        }
        if blocks == 0 || lba.checked_add(blocks).is_none_or(|e| e > self.blocks) {
            return Err(BlockError::OutOfRange);
        }
        Ok(self.first + lba)
    }
}

/// Why a target names no single device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    NotFound,
    /// A `part:NAME` that several partitions carry (on different disks or namespaces):
    /// refused, never the first one found — the operator must say which.
    Ambiguous(usize),
}

impl fmt::Display for Lookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lookup::NotFound => f.write_str("does not exist"),
            Lookup::Ambiguous(n) => write!(
                f,
                "is ambiguous: {n} partitions carry that name (name it as nvmeXnYpZ)"
            ),
        }
    }
}

/// The one item `matches` yields, or why there is not exactly one.
pub fn unique<T>(mut matches: impl Iterator<Item = T>) -> Result<T, Lookup> {
    let first = matches.next().ok_or(Lookup::NotFound)?;
    match matches.count() {
        0 => Ok(first),
        more => Err(Lookup::Ambiguous(more + 1)),
    }
}

/// A namespace as the storage drivers listed it at start, as `target=` names see it:
/// its controller's index (in PCI order), its id, its size and its GPT partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub controller: usize,
    pub nsid: u32,
    pub blocks: u64,
    pub block_size: u32,
    pub partitions: Vec<ListedPartition>,
}

/// A GPT partition of a [`Listed`] namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedPartition {
    /// 1-based, as in `nvme0n1p2`.
    pub number: u32,
    pub name: String,
    pub first: u64,
    pub blocks: u64,
}

/// What an xl disk line's `target=` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `nvme0n1`: a whole namespace.
    Namespace { controller: u32, nsid: u32 },
    /// `nvme0n1p2`: a GPT partition by number.
    Partition {
        controller: u32,
        nsid: u32,
        number: u32,
    },
    /// `part:NAME`: a GPT partition by name, on any controller.
    PartitionName(String),
}

impl Target {
    /// The namespace (controller index, namespace id) and the extent on it this target
    /// names among `listed`: a whole namespace, a partition by number, or the one
    /// partition of that name on any controller (none, or more than one, is an error).
    /// The extent is writable; the caller applies `access=`.
    pub fn resolve(&self, listed: &[Listed]) -> Result<(usize, u32, Extent), Lookup> {
        let ns = |c: u32, nsid: u32| {
            listed
                .iter()
                .find(|n| n.controller == c as usize && n.nsid == nsid)
                .ok_or(Lookup::NotFound)
        };
        let part = |n: &Listed, p: &ListedPartition| {
            (
                n.controller,
                n.nsid,
                Extent {
                    first: p.first,
                    blocks: p.blocks,
                    block_size: n.block_size,
                    read_only: false,
                },
            )
        };
        match self {
            Target::Namespace { controller, nsid } => {
                let n = ns(*controller, *nsid)?;
                Ok((
                    n.controller,
                    n.nsid,
                    Extent {
                        first: 0,
                        blocks: n.blocks,
                        block_size: n.block_size,
                        read_only: false,
                    },
                ))
            }
            Target::Partition {
                controller,
                nsid,
                number,
            } => {
                let n = ns(*controller, *nsid)?;
                let p = n
                    .partitions
                    .iter()
                    .find(|p| p.number == *number)
                    .ok_or(Lookup::NotFound)?;
                Ok(part(n, p))
            }
            Target::PartitionName(name) => unique(listed.iter().flat_map(|n| {
                n.partitions
                    .iter()
                    .filter(|p| &p.name == name)
                    .map(move |p| part(n, p))
            })),
        }
    }

    pub fn parse(s: &str) -> Option<Target> {
        if let Some(name) = s.strip_prefix("part:") {
            return (!name.is_empty() && name.len() <= 36)
                .then(|| Target::PartitionName(String::from(name)));
        }
        let rest = s.strip_prefix("nvme")?;
        let (ctrl, rest) = split_number(rest)?;
        let rest = rest.strip_prefix('n')?;
        let (nsid, rest) = split_number(rest)?;
        if nsid == 0 {
            return None;
        }
        if rest.is_empty() {
            return Some(Target::Namespace {
                controller: ctrl,
                nsid,
            });
        }
        let (number, rest) = split_number(rest.strip_prefix('p')?)?;
        (rest.is_empty() && number > 0).then_some(Target::Partition {
            controller: ctrl,
            nsid,
            number,
        })
    }
}

fn split_number(s: &str) -> Option<(u32, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let digits = &s[..end];
    if digits.is_empty() || digits.len() > 9 || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    Some((digits.parse().ok()?, &s[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn a_name_must_match_exactly_one() {
        assert_eq!(unique([7].into_iter()), Ok(7));
        assert_eq!(unique(core::iter::empty::<u8>()), Err(Lookup::NotFound));
        assert_eq!(unique([1, 2, 3].into_iter()), Err(Lookup::Ambiguous(3)));
    }

    #[test]
    fn targets_resolve_to_one_extent_or_say_why_not() {
        let p = |number, name: &str, first, blocks| ListedPartition {
            number,
            name: String::from(name),
            first,
            blocks,
        };
        let listed = vec![
            Listed {
                controller: 0,
                nsid: 1,
                blocks: 1000,
                block_size: 512,
                partitions: vec![p(1, "alpha", 34, 100), p(2, "beta", 134, 200)],
            },
            Listed {
                controller: 1,
                nsid: 1,
                blocks: 50,
                block_size: 4096,
                partitions: vec![p(1, "beta", 6, 10), p(2, "gamma", 16, 20)],
            },
        ];
        let t = |s: &str| Target::parse(s).unwrap().resolve(&listed);
        let (d, n, e) = t("nvme1n1").unwrap();
        assert_eq!((d, n, e.first, e.blocks, e.block_size), (1, 1, 0, 50, 4096));
        let (d, _, e) = t("nvme0n1p2").unwrap();
        assert_eq!(
            (d, e.first, e.blocks, e.block_size, e.read_only),
            (0, 134, 200, 512, false)
        );
        let (d, _, e) = t("part:gamma").unwrap();
        assert_eq!((d, e.first, e.blocks, e.block_size), (1, 16, 20, 4096));
        assert_eq!(t("part:beta").unwrap_err(), Lookup::Ambiguous(2));
        assert_eq!(t("part:delta").unwrap_err(), Lookup::NotFound);
        assert_eq!(t("nvme0n1p3").unwrap_err(), Lookup::NotFound);
        assert_eq!(t("nvme2n1").unwrap_err(), Lookup::NotFound);
        assert_eq!(t("nvme0n2p1").unwrap_err(), Lookup::NotFound);
    }

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("nvme0n1"),
            Some(Target::Namespace {
                controller: 0,
                nsid: 1
            })
        );
        assert_eq!(
            Target::parse("nvme1n2p13"),
            Some(Target::Partition {
                controller: 1,
                nsid: 2,
                number: 13
            })
        );
        assert_eq!(
            Target::parse("part:alpha"),
            Some(Target::PartitionName("alpha".into()))
        );
        for bad in [
            "",
            "nvme",
            "nvme0",
            "nvme0n",
            "nvme0n0",
            "nvme0n1p",
            "nvme0n1p0",
            "nvme01n1",
            "nvme0n1p2x",
            "sda1",
            "part:",
            "/dev/nvme0n1",
            "nvme0n1p99999999999",
        ] {
            assert_eq!(Target::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn extents_check_ranges() {
        let e = Extent {
            first: 2048,
            blocks: 100,
            block_size: 512,
            read_only: false,
        };
        assert_eq!(e.map(0, 512, false), Ok(2048));
        assert_eq!(e.map(99, 512, true), Ok(2147));
        assert_eq!(e.map(99, 1024, false), Err(BlockError::OutOfRange));
        assert_eq!(e.map(100, 512, false), Err(BlockError::OutOfRange));
        assert_eq!(e.map(u64::MAX, 512, false), Err(BlockError::OutOfRange));
        assert_eq!(e.map(0, 0, false), Err(BlockError::BadLength));
        assert_eq!(e.map(0, 100, false), Err(BlockError::BadLength));
        let ro = Extent {
            read_only: true,
            ..e
        };
        assert_eq!(ro.map(0, 512, true), Err(BlockError::ReadOnly));
        assert_eq!(ro.map(0, 512, false), Ok(2048));
        assert_eq!(e.map_blocks(90, 10, true), Ok(2138));
        assert_eq!(e.map_blocks(90, 11, true), Err(BlockError::OutOfRange));
        assert_eq!(e.map_blocks(0, 0, true), Err(BlockError::OutOfRange));
    }
}
