//! A disk in memory behind `BlockDevice`, for backends' tests and fuzzers.

use bulkhead_block::{BlockDevice, BlockError, Features};

/// `blocks` blocks of `block_size` bytes in memory. A device call outside the disk is an
/// `OutOfRange` error, or, when `strict`, a panic: for a fuzzer whose oracle is that the
/// backend checks every range before the device sees it. Counts its calls.
#[derive(Clone, Debug)]
pub struct MemDisk {
    pub data: Vec<u8>,
    pub block_size: u32,
    pub features: Features,
    pub strict: bool,
    /// Every call fails with `Io` (a dead device).
    pub fail_io: bool,
    pub reads: u32,
    pub writes: u32,
    pub flushes: u32,
    pub discards: u32,
}

impl MemDisk {
    /// Zeroed, with flush and discard and a volatile cache.
    pub fn new(blocks: u64, block_size: u32) -> MemDisk {
        MemDisk {
            data: vec![0; (blocks * block_size as u64) as usize],
            block_size,
            features: Features {
                flush: true,
                discard: true,
                write_zeroes: false,
                volatile_cache: true,
            },
            strict: false,
            fail_io: false,
            reads: 0,
            writes: 0,
            flushes: 0,
            discards: 0,
        }
    }

    /// The byte range of `len` bytes from block `lba`, if inside the disk.
    fn range(
        &self,
        lba: u64,
        len: usize,
        what: &str,
    ) -> Result<core::ops::Range<usize>, BlockError> {
        let r = (lba as usize)
            .checked_mul(self.block_size as usize)
            .and_then(|o| Some(o..o.checked_add(len)?))
            .filter(|r| r.end <= self.data.len());
        match r {
            Some(r) => Ok(r),
            None => {
                assert!(
                    !self.strict,
                    "{what} past the disk reached the device (block {lba}, {len} bytes)"
                );
                Err(BlockError::OutOfRange)
            }
        }
    }
}

impl BlockDevice for MemDisk {
    fn block_size(&self) -> u32 {
        self.block_size
    }
    fn blocks(&self) -> u64 {
        (self.data.len() / self.block_size as usize) as u64
    }
    fn features(&self) -> Features {
        self.features
    }
    async fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.reads += 1;
        let r = self.range(lba, buf.len(), "read")?;
        if self.fail_io {
            return Err(BlockError::Io);
        }
        buf.copy_from_slice(&self.data[r]);
        Ok(())
    }
    async fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), BlockError> {
        self.writes += 1;
        let r = self.range(lba, buf.len(), "write")?;
        if self.fail_io {
            return Err(BlockError::Io);
        }
        self.data[r].copy_from_slice(buf);
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), BlockError> {
        self.flushes += 1;
        if self.fail_io {
            return Err(BlockError::Io);
        }
        Ok(())
    }
    async fn discard(&mut self, lba: u64, blocks: u64) -> Result<(), BlockError> {
        self.discards += 1;
        let len = blocks
            .checked_mul(self.block_size as u64)
            .and_then(|l| usize::try_from(l).ok())
            .ok_or(BlockError::OutOfRange)?;
        self.range(lba, len, "discard")?;
        if self.fail_io {
            return Err(BlockError::Io);
        }
        Ok(())
    }
}
