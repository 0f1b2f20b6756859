//! GUID partition tables (UEFI 2.x, chapter 5): partitions addressable by number and by
//! name. The disk's contents are untrusted: the header and entry array CRCs must match,
//! sizes must be sane, and each partition must lie inside the usable area; otherwise the
//! table is refused (and the whole namespace stays addressable).

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as in `nvme0n1p1`.
    pub number: u32,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    pub name: String,
    pub type_guid: [u8; 16],
}

impl Partition {
    pub fn blocks(&self) -> u64 {
        self.last_lba - self.first_lba + 1
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GptError {
    NoSignature,
    BadHeader(&'static str),
    BadEntries(&'static str),
    Io,
}

impl core::fmt::Display for GptError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GptError::NoSignature => write!(f, "no GPT signature"),
            GptError::BadHeader(w) => write!(f, "GPT header invalid: {w}"),
            GptError::BadEntries(w) => write!(f, "GPT entries invalid: {w}"),
            GptError::Io => write!(f, "reading the GPT failed"),
        }
    }
}

const MAX_ENTRIES: u32 = 1024;

/// Parse the primary GPT. `read(lba, buf)` fills `buf` (a multiple of `block_size`).
pub fn parse(
    block_size: u32,
    blocks: u64,
    mut read: impl FnMut(u64, &mut [u8]) -> Result<(), ()>,
) -> Result<Vec<Partition>, GptError> {
    let bs = block_size as usize;
    let mut hdr = vec![0u8; bs];
    read(1, &mut hdr).map_err(|_| GptError::Io)?;
    if &hdr[0..8] != b"EFI PART" {
        return Err(GptError::NoSignature);
    }
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let hsize = u32_at(&hdr, 12) as usize;
    if !(92..=bs).contains(&hsize) {
        return Err(GptError::BadHeader("header size"));
    }
    let mut h = hdr[..hsize].to_vec();
    let want_crc = u32_at(&h, 16);
    h[16..20].fill(0);
    if crc32fast::hash(&h) != want_crc {
        return Err(GptError::BadHeader("header CRC"));
    }
    let first_usable = u64_at(&hdr, 40);
    let last_usable = u64_at(&hdr, 48);
    if first_usable > last_usable || last_usable >= blocks {
        return Err(GptError::BadHeader("usable range outside the disk"));
    }
    let entries_lba = u64_at(&hdr, 72);
    let count = u32_at(&hdr, 80);
    let esize = u32_at(&hdr, 84) as usize;
    if count > MAX_ENTRIES || !(128..=1024).contains(&esize) || !esize.is_multiple_of(8) {
        return Err(GptError::BadEntries("entry count or size"));
    }
    let bytes = count as usize * esize;
    let nblocks = bytes.div_ceil(bs);
    if entries_lba < 2 || entries_lba.saturating_add(nblocks as u64) > first_usable {
        return Err(GptError::BadEntries("entry array overlaps the usable area"));
    }
    let mut arr = vec![0u8; nblocks * bs];
    read(entries_lba, &mut arr).map_err(|_| GptError::Io)?;
    if crc32fast::hash(&arr[..bytes]) != u32_at(&hdr, 88) {
        return Err(GptError::BadEntries("entry array CRC"));
    }
    let mut out = Vec::new();
    for (i, e) in arr[..bytes].chunks_exact(esize).enumerate() {
        let type_guid: [u8; 16] = e[0..16].try_into().unwrap();
        if type_guid == [0; 16] {
            continue;
        }
        let first = u64_at(e, 32);
        let last = u64_at(e, 40);
        if first < first_usable || last > last_usable || first > last {
            return Err(GptError::BadEntries("partition outside the usable area"));
        }
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let name = char::decode_utf16(units)
            .map(|c| c.unwrap_or('?'))
            .collect();
        out.push(Partition {
            number: i as u32 + 1,
            first_lba: first,
            last_lba: last,
            name,
            type_guid,
        });
    }
    for (i, a) in out.iter().enumerate() {
        if out[i + 1..]
            .iter()
            .any(|b| a.first_lba <= b.last_lba && b.first_lba <= a.last_lba)
        {
            return Err(GptError::BadEntries("partitions overlap"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build a GPT image the way the spec lays it out (the bare-QEMU tier checks the parser
    /// against sfdisk's tables too).
    pub fn image(blocks: u64, parts: &[(u64, u64, &str)]) -> Vec<u8> {
        let bs = 512usize;
        let mut d = vec![0u8; blocks as usize * bs];
        let mut entries = vec![0u8; 128 * 128];
        for (i, (first, last, name)) in parts.iter().enumerate() {
            let e = &mut entries[i * 128..(i + 1) * 128];
            e[0..16].copy_from_slice(&[
                0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47,
                0x7d, 0xe4,
            ]);
            e[16] = i as u8 + 1;
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
            for (j, u) in name.encode_utf16().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
            }
        }
        d[2 * bs..2 * bs + entries.len()].copy_from_slice(&entries);
        let mut h = vec![0u8; 92];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[32..40].copy_from_slice(&(blocks - 1).to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&(blocks - 34).to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32fast::hash(&entries).to_le_bytes());
        let crc = crc32fast::hash(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        d[bs..bs + 92].copy_from_slice(&h);
        d
    }

    fn reader(d: &[u8]) -> impl FnMut(u64, &mut [u8]) -> Result<(), ()> + '_ {
        move |lba, buf| {
            let o = lba as usize * 512;
            buf.copy_from_slice(d.get(o..o + buf.len()).ok_or(())?);
            Ok(())
        }
    }

    #[test]
    fn parses_partitions() {
        let d = image(4096, &[(2048, 2559, "alpha"), (2560, 4000, "beta")]);
        let p = parse(512, 4096, reader(&d)).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            (
                p[0].number,
                p[0].first_lba,
                p[0].last_lba,
                p[0].name.as_str()
            ),
            (1, 2048, 2559, "alpha")
        );
        assert_eq!(
            (p[1].number, p[1].name.as_str(), p[1].blocks()),
            (2, "beta", 1441)
        );
    }

    #[test]
    fn refuses_corruption() {
        let d = image(4096, &[(2048, 2559, "alpha")]);
        assert_eq!(
            parse(512, 4096, reader(&vec![0u8; 4096 * 512])),
            Err(GptError::NoSignature)
        );
        let mut bad = d.clone();
        bad[512 + 40] ^= 1;
        assert_eq!(
            parse(512, 4096, reader(&bad)),
            Err(GptError::BadHeader("header CRC"))
        );
        let mut bad = d.clone();
        bad[2 * 512 + 32] ^= 1;
        assert_eq!(
            parse(512, 4096, reader(&bad)),
            Err(GptError::BadEntries("entry array CRC"))
        );
        // A table written for a bigger disk.
        assert_eq!(
            parse(512, 2000, reader(&d[..2000 * 512])),
            Err(GptError::BadHeader("usable range outside the disk"))
        );
        // Overlapping and out-of-range partitions.
        let o = image(4096, &[(2048, 3000, "a"), (2900, 3500, "b")]);
        assert_eq!(
            parse(512, 4096, reader(&o)),
            Err(GptError::BadEntries("partitions overlap"))
        );
        let r = image(4096, &[(10, 100, "early")]);
        assert_eq!(
            parse(512, 4096, reader(&r)),
            Err(GptError::BadEntries("partition outside the usable area"))
        );
        assert_eq!(parse(512, 4096, |_, _| Err(())), Err(GptError::Io));
    }
}
