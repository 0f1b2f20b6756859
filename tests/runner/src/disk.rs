//! The NVMe disk image the storage scenarios boot with: every block filled with a known
//! pattern, then a GPT with its partitions written by sfdisk (an independent
//! implementation, so the kernel's GPT parser is checked against a real tool). After QEMU
//! exits the image is checked from the host: the kernel's writes must be there and
//! nothing else may have changed.

use std::path::Path;
use std::process::{Command, Stdio};

pub const BLOCK: usize = 512;
/// Blocks filled with the pattern (partitions 1-3); the guest partitions after them
/// start out zero (sparse).
pub const PATTERN_BLOCKS: u64 = 16384;
pub const BLOCKS: u64 = PATTERN_BLOCKS + 2 * GUEST_PART + 2048;
pub const P1: (u64, u64) = (2048, 2048);
pub const P2: (u64, u64) = (4096, 8192);
/// Scratch partition for other drivers in the Xen tier (the Linux baseline); not checked.
pub const P3: (u64, u64) = (12288, 2048);
/// Two 96 MiB partitions the Xen tier's blkback guests use ("delta", "epsilon").
pub const GUEST_PART: u64 = 196608;
pub const P4: (u64, u64) = (PATTERN_BLOCKS, GUEST_PART);
pub const P5: (u64, u64) = (PATTERN_BLOCKS + GUEST_PART, GUEST_PART);
/// Must match kernel/src/nvme.rs (WRITE_SEED, WRITE_BYTES).
pub const WRITE_SEED: u8 = 0x5a;
pub const WRITE_BYTES: u64 = 256 * 1024;
/// After the written range the kernel zeroes this many blocks, then discards as many
/// (discarded content is unspecified and not checked). Must match kernel/src/nvme.rs.
pub const ZERO_BLOCKS: u64 = 128;
pub const DISCARD_BLOCKS: u64 = 128;

/// Same formula as `nvme::pattern` in the kernel.
pub fn pattern(seed: u8, lba: u64, i: usize) -> u8 {
    ((lba.wrapping_mul(2_654_435_761).wrapping_add(i as u64 * 97) >> 3) as u8) ^ seed
}

pub fn create(path: &Path) -> Result<(), String> {
    let mut img = vec![0u8; (PATTERN_BLOCKS as usize) * BLOCK];
    for (k, b) in img.iter_mut().enumerate() {
        *b = pattern(0, (k / BLOCK) as u64, k % BLOCK);
    }
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    std::fs::write(path, &img).map_err(io)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(BLOCKS * BLOCK as u64))
        .map_err(io)?;
    let script = format!(
        "label: gpt\nstart={}, size={}, name=alpha\nstart={}, size={}, name=beta\nstart={}, size={}, name=gamma\nstart={}, size={}, name=delta\nstart={}, size={}, name=epsilon\n",
        P1.0, P1.1, P2.0, P2.1, P3.0, P3.1, P4.0, P4.1, P5.0, P5.1
    );
    let mut child = Command::new("sfdisk")
        .arg("-q")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("sfdisk (package fdisk): {e}"))?;
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "sfdisk failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// After the Xen tier. With `storage_test` (hvm-nvme ran): the start of partition 2 holds
/// the kernel's pattern, then zeroes. Always: the rest of partition 2, all of partition 1
/// (only ever attached read-only) and the gap between partition 3 and 4 still hold the
/// host's pattern, so a write or discard that strayed out of partition 3 (which the
/// hostile guest discards whole) shows.
pub fn verify(path: &Path, storage_test: bool) -> Result<String, String> {
    let img = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let written = if storage_test {
        WRITE_BYTES / BLOCK as u64
    } else {
        0
    };
    let check = |lba: u64, seed: u8| -> Result<(), String> {
        let o = lba as usize * BLOCK;
        let blk = img.get(o..o + BLOCK).ok_or("image too short")?;
        match (0..BLOCK).find(|&i| blk[i] != pattern(seed, lba, i)) {
            None => Ok(()),
            Some(i) => Err(format!(
                "block {lba} byte {i}: {:#x}, expected {:#x} (seed {seed:#x})",
                blk[i],
                pattern(seed, lba, i)
            )),
        }
    };
    for lba in P2.0..P2.0 + written {
        check(lba, WRITE_SEED)?;
    }
    let mut rest = P2.0..P2.0 + P2.1;
    if storage_test {
        let zeroed = P2.0 + written..P2.0 + written + ZERO_BLOCKS;
        for lba in zeroed.clone() {
            let o = lba as usize * BLOCK;
            if img
                .get(o..o + BLOCK)
                .ok_or("image too short")?
                .iter()
                .any(|b| *b != 0)
            {
                return Err(format!("block {lba} should have been zeroed"));
            }
        }
        rest = zeroed.end + DISCARD_BLOCKS..P2.0 + P2.1;
    }
    for lba in rest.chain(P1.0..P1.0 + P1.1).chain(P3.0 + P3.1..P4.0) {
        check(lba, 0)?;
    }
    Ok(if storage_test {
        format!(
            "image: {} KiB written and {} KiB zeroed by Bulkhead found at partition 2; everything else unchanged",
            WRITE_BYTES / 1024,
            ZERO_BLOCKS * BLOCK as u64 / 1024
        )
    } else {
        "image: partitions 1 and 2 and the gap after partition 3 unchanged".into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_differs_by_seed_block_and_offset() {
        assert_ne!(pattern(0, 1, 0), pattern(WRITE_SEED, 1, 0));
        let b1: Vec<u8> = (0..BLOCK).map(|i| pattern(0, 1, i)).collect();
        let b2: Vec<u8> = (0..BLOCK).map(|i| pattern(0, 2, i)).collect();
        assert_ne!(b1, b2);
        assert!(b1.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn verify_catches_a_missing_write_and_a_stray_one() {
        let dir = std::env::temp_dir().join(format!("bulkhead-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("d.img");
        let mut img: Vec<u8> = (0..PATTERN_BLOCKS as usize * BLOCK)
            .map(|k| pattern(0, (k / BLOCK) as u64, k % BLOCK))
            .collect();
        std::fs::write(&p, &img).unwrap();
        assert!(verify(&p, true).is_err(), "nothing written yet");
        assert!(
            verify(&p, false).is_ok(),
            "nothing written, nothing expected"
        );
        for lba in P2.0..P2.0 + WRITE_BYTES / BLOCK as u64 {
            for i in 0..BLOCK {
                img[lba as usize * BLOCK + i] = pattern(WRITE_SEED, lba, i);
            }
        }
        let z = (P2.0 + WRITE_BYTES / BLOCK as u64) as usize * BLOCK;
        img[z..z + ZERO_BLOCKS as usize * BLOCK].fill(0);
        std::fs::write(&p, &img).unwrap();
        assert!(verify(&p, true).is_ok());
        assert!(verify(&p, false).is_err(), "a write nobody expected");
        let gap = (P3.0 + P3.1) as usize * BLOCK;
        img[gap] ^= 1;
        std::fs::write(&p, &img).unwrap();
        assert!(verify(&p, true).unwrap_err().contains("block 14336"));
        img[gap] ^= 1;
        img[P1.0 as usize * BLOCK + 3] ^= 1;
        std::fs::write(&p, &img).unwrap();
        assert!(verify(&p, true).unwrap_err().contains("block 2048"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
