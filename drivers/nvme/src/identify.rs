//! Identify data (spec 5.15.2): what the driver needs from the controller and namespace
//! structures, range-checked.

use alloc::string::String;
use alloc::vec::Vec;

use crate::Error;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerInfo {
    pub vendor: u16,
    pub serial: String,
    pub model: String,
    pub firmware: String,
    /// Largest transfer in bytes (None: no limit reported).
    pub max_transfer: Option<usize>,
    pub namespaces: u32,
    pub volatile_write_cache: bool,
    pub dsm: bool,
    pub write_zeroes: bool,
}

/// ASCII fields are space-padded; some controllers pad with NULs instead.
fn text(b: &[u8]) -> String {
    let b = &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())];
    let s: String = b
        .iter()
        .map(|&c| {
            if (0x20..0x7f).contains(&c) {
                c as char
            } else {
                '?'
            }
        })
        .collect();
    String::from(s.trim_end())
}

pub fn controller(b: &[u8; 4096], mpsmin_bytes: usize) -> ControllerInfo {
    let mdts = b[77];
    ControllerInfo {
        vendor: u16::from_le_bytes([b[0], b[1]]),
        serial: text(&b[4..24]),
        model: text(&b[24..64]),
        firmware: text(&b[64..72]),
        // 2^MDTS minimum pages; cap the shift so a wild value cannot overflow.
        max_transfer: (mdts != 0).then(|| mpsmin_bytes << mdts.min(20)),
        namespaces: u32::from_le_bytes(b[516..520].try_into().unwrap()),
        dsm: u16::from_le_bytes([b[520], b[521]]) & (1 << 2) != 0,
        write_zeroes: u16::from_le_bytes([b[520], b[521]]) & (1 << 3) != 0,
        volatile_write_cache: b[525] & 1 != 0,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub nsid: u32,
    pub blocks: u64,
    pub block_size: u32,
}

impl Namespace {
    pub fn bytes(&self) -> u64 {
        self.blocks * self.block_size as u64
    }
}

pub fn namespace(nsid: u32, b: &[u8; 4096]) -> Result<Namespace, Error> {
    let blocks = u64::from_le_bytes(b[0..8].try_into().unwrap());
    let nlbaf = b[25] as usize;
    let idx = (b[26] & 0xf) as usize;
    if idx > nlbaf || idx > 15 {
        return Err(Error::Device("namespace LBA format index out of range"));
    }
    let lbaf = u32::from_le_bytes(b[128 + 4 * idx..132 + 4 * idx].try_into().unwrap());
    let lbads = (lbaf >> 16) & 0xff;
    if !(9..=16).contains(&lbads) {
        return Err(Error::Device("namespace block size outside 512 B..64 KiB"));
    }
    if blocks == 0 {
        return Err(Error::Device("namespace has no blocks"));
    }
    Ok(Namespace {
        nsid,
        blocks,
        block_size: 1 << lbads,
    })
}

/// Active namespace list (CNS 02h): ascending ids, zero-terminated.
pub fn active_namespaces(b: &[u8; 4096]) -> Vec<u32> {
    let mut out: Vec<u32> = b
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .take_while(|&n| n != 0)
        .filter(|&n| n != 0xffff_ffff)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_fields() {
        let mut b = [0u8; 4096];
        b[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
        b[4..12].copy_from_slice(b"deadbeef");
        b[12..24].fill(b' ');
        b[24..34].copy_from_slice(b"QEMU NVMe ");
        b[34..64].fill(b' ');
        b[77] = 7;
        b[516..520].copy_from_slice(&256u32.to_le_bytes());
        b[520..522].copy_from_slice(&0x0014u16.to_le_bytes());
        b[525] = 1;
        let c = controller(&b, 4096);
        assert_eq!(c.serial, "deadbeef");
        assert_eq!(c.model, "QEMU NVMe");
        assert_eq!(c.max_transfer, Some(512 * 1024));
        assert_eq!(c.namespaces, 256);
        assert!(c.dsm && !c.write_zeroes && c.volatile_write_cache);
        b[77] = 255;
        assert_eq!(
            controller(&b, 4096).max_transfer,
            Some(4096 << 20),
            "clamped"
        );
    }

    #[test]
    fn namespace_fields_and_bad_ones() {
        let mut b = [0u8; 4096];
        b[0..8].copy_from_slice(&32768u64.to_le_bytes());
        b[25] = 1;
        b[26] = 1;
        b[128..132].copy_from_slice(&(9u32 << 16).to_le_bytes());
        b[132..136].copy_from_slice(&(12u32 << 16).to_le_bytes());
        let n = namespace(1, &b).unwrap();
        assert_eq!(
            (n.blocks, n.block_size, n.bytes()),
            (32768, 4096, 128 << 20)
        );
        b[26] = 2;
        assert!(namespace(1, &b).is_err(), "format index beyond NLBAF");
        b[26] = 1;
        b[132..136].copy_from_slice(&(30u32 << 16).to_le_bytes());
        assert!(namespace(1, &b).is_err(), "absurd block size");
    }

    #[test]
    fn active_list() {
        let mut b = [0u8; 4096];
        for (i, n) in [3u32, 1, 2, 0, 9].iter().enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&n.to_le_bytes());
        }
        assert_eq!(active_namespaces(&b), alloc::vec![1, 2, 3]);
    }
}
