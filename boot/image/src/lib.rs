//! Checks on the built image that the boot protocols depend on, and the PVH-only variant.
//!
//! The multiboot a.out-kludge loader copies the file linearly from the header's offset, so
//! every PT_LOAD must sit at the same file-offset-to-address distance; the header must be
//! in the first 8 KiB; and the Xen PVH entry note must be reachable through a PT_NOTE.
#![forbid(unsafe_code)]

use std::fmt::Write;

const MB_MAGIC: u32 = 0x1bad_b002;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

fn u16_at(b: &[u8], o: usize) -> Result<u16, String> {
    b.get(o..o + 2)
        .map(|s| u16::from_le_bytes(s.try_into().unwrap()))
        .ok_or(format!("short read at {o:#x}"))
}
fn u32_at(b: &[u8], o: usize) -> Result<u32, String> {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
        .ok_or(format!("short read at {o:#x}"))
}
fn u64_at(b: &[u8], o: usize) -> Result<u64, String> {
    b.get(o..o + 8)
        .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
        .ok_or(format!("short read at {o:#x}"))
}

#[derive(Debug, Clone, Copy)]
pub struct Phdr {
    pub kind: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

pub fn phdrs(b: &[u8]) -> Result<Vec<Phdr>, String> {
    if b.get(0..4) != Some(b"\x7fELF") || b.get(4) != Some(&2) {
        return Err("not an ELF64 file".into());
    }
    if u16_at(b, 0x12)? != 0x3e {
        return Err("not an x86-64 ELF".into());
    }
    let phoff = u64_at(b, 0x20)? as usize;
    let phentsize = u16_at(b, 0x36)? as usize;
    let phnum = u16_at(b, 0x38)? as usize;
    (0..phnum)
        .map(|i| {
            let o = phoff + i * phentsize;
            Ok(Phdr {
                kind: u32_at(b, o)?,
                offset: u64_at(b, o + 8)?,
                vaddr: u64_at(b, o + 16)?,
                filesz: u64_at(b, o + 32)?,
                memsz: u64_at(b, o + 40)?,
            })
        })
        .collect()
}

/// File offset of the multiboot header, if any, in the first 8 KiB.
pub fn multiboot_offset(b: &[u8]) -> Option<usize> {
    (0..8192usize.min(b.len().saturating_sub(32)))
        .step_by(4)
        .find(|&o| u32_at(b, o).ok() == Some(MB_MAGIC))
}

/// Validate the image; returns a short report for the log.
pub fn check(b: &[u8]) -> Result<String, String> {
    let ph = phdrs(b)?;
    let loads: Vec<Phdr> = ph.iter().copied().filter(|p| p.kind == 1).collect();
    if loads.is_empty() {
        return Err("no PT_LOAD segments".into());
    }
    let mb = multiboot_offset(b).ok_or("no multiboot header in the first 8 KiB")?;
    let flags = u32_at(b, mb + 4)?;
    let sum = MB_MAGIC
        .wrapping_add(flags)
        .wrapping_add(u32_at(b, mb + 8)?);
    if sum != 0 {
        return Err(format!("multiboot checksum wrong (sum {sum:#x})"));
    }
    if flags & (1 << 16) == 0 {
        return Err("multiboot header lacks the a.out-kludge flag (bit 16)".into());
    }
    let [header_addr, load_addr, load_end, bss_end, entry] =
        [12, 16, 20, 24, 28].map(|o| u32_at(b, mb + o).unwrap_or(0) as u64);
    let load_offset = mb as u64 - (header_addr - load_addr);
    for p in &loads {
        if p.offset.wrapping_sub(load_offset) != p.vaddr.wrapping_sub(load_addr) {
            return Err(format!(
                "PT_LOAD at {:#x} (file offset {:#x}) breaks the linear layout the multiboot loader needs",
                p.vaddr, p.offset
            ));
        }
    }
    let file_end = loads.iter().map(|p| p.vaddr + p.filesz).max().unwrap();
    let mem_end = loads.iter().map(|p| p.vaddr + p.memsz).max().unwrap();
    let first = loads.iter().map(|p| p.vaddr).min().unwrap();
    if load_addr != first {
        return Err(format!(
            "multiboot load_addr {load_addr:#x} is not the first segment {first:#x}"
        ));
    }
    if load_end < file_end || bss_end < mem_end {
        return Err(format!(
            "multiboot load_end/bss_end {load_end:#x}/{bss_end:#x} short of segments {file_end:#x}/{mem_end:#x}"
        ));
    }
    if !(load_addr..load_end).contains(&entry) {
        return Err(format!(
            "multiboot entry {entry:#x} outside the loaded image"
        ));
    }
    // The PVH note.
    let mut pvh_entry = None;
    for p in ph.iter().filter(|p| p.kind == 4) {
        let mut o = p.offset as usize;
        let end = o + p.filesz as usize;
        while o + 12 <= end {
            let (namesz, descsz, kind) = (
                u32_at(b, o)? as usize,
                u32_at(b, o + 4)? as usize,
                u32_at(b, o + 8)?,
            );
            let name_at = o + 12;
            let desc_at = name_at + namesz.div_ceil(4) * 4;
            if b.get(name_at..name_at + namesz) == Some(b"Xen\0")
                && kind == XEN_ELFNOTE_PHYS32_ENTRY
            {
                pvh_entry = Some(if descsz == 8 {
                    u64_at(b, desc_at)?
                } else {
                    u32_at(b, desc_at)? as u64
                });
            }
            o = desc_at + descsz.div_ceil(4) * 4;
        }
    }
    let pvh = pvh_entry.ok_or("no Xen PHYS32_ENTRY note (type 18) in a PT_NOTE segment")?;
    if !(load_addr..load_end).contains(&pvh) {
        return Err(format!("PVH entry {pvh:#x} outside the loaded image"));
    }
    let mut r = String::new();
    let _ = write!(
        r,
        "image: {} bytes on disk, {} KiB loaded ({} KiB incl. bss); multiboot header at file offset {mb:#x}, entry {entry:#x}; PVH note entry {pvh:#x}",
        b.len(),
        (load_end - load_addr) / 1024,
        (bss_end - load_addr) / 1024
    );
    Ok(r)
}

/// The same image with the multiboot magic cleared, so QEMU takes the PVH note instead.
pub fn pvh_variant(b: &[u8]) -> Result<Vec<u8>, String> {
    let mb = multiboot_offset(b).ok_or("no multiboot header")?;
    let mut out = b.to_vec();
    out[mb..mb + 4].fill(0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with one PT_LOAD and one PT_NOTE, shaped like the real image.
    fn fake_image(linear: bool, note_type: u32) -> Vec<u8> {
        let mut b = vec![0u8; 0x3000];
        b[0..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[0x12..0x14].copy_from_slice(&0x3eu16.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        let ph = |b: &mut Vec<u8>,
                  i: usize,
                  kind: u32,
                  off: u64,
                  vaddr: u64,
                  filesz: u64,
                  memsz: u64| {
            let o = 0x40 + i * 56;
            b[o..o + 4].copy_from_slice(&kind.to_le_bytes());
            b[o + 8..o + 16].copy_from_slice(&off.to_le_bytes());
            b[o + 16..o + 24].copy_from_slice(&vaddr.to_le_bytes());
            b[o + 32..o + 40].copy_from_slice(&filesz.to_le_bytes());
            b[o + 40..o + 48].copy_from_slice(&memsz.to_le_bytes());
        };
        let off = if linear { 0x1000 } else { 0x1800 };
        ph(&mut b, 0, 1, off, 0x100000, 0x1000, 0x2000);
        ph(&mut b, 1, 4, 0x1800, 0x100800, 24, 24);
        let mb = [
            MB_MAGIC,
            0x0001_0003,
            0u32.wrapping_sub(MB_MAGIC + 0x0001_0003),
            0x100000,
            0x100000,
            0x101000,
            0x102000,
            0x100040,
        ];
        for (i, w) in mb.iter().enumerate() {
            b[0x1000 + 4 * i..0x1004 + 4 * i].copy_from_slice(&w.to_le_bytes());
        }
        let note = [4u32, 8, note_type];
        for (i, w) in note.iter().enumerate() {
            b[0x1800 + 4 * i..0x1804 + 4 * i].copy_from_slice(&w.to_le_bytes());
        }
        b[0x180c..0x1810].copy_from_slice(b"Xen\0");
        b[0x1810..0x1818].copy_from_slice(&0x100080u64.to_le_bytes());
        b
    }

    #[test]
    fn good_image_passes() {
        let r = check(&fake_image(true, 18)).unwrap();
        assert!(r.contains("multiboot header at file offset 0x1000"), "{r}");
        assert!(r.contains("PVH note entry 0x100080"), "{r}");
    }

    #[test]
    fn nonlinear_layout_is_caught() {
        assert!(check(&fake_image(false, 18))
            .unwrap_err()
            .contains("linear layout"));
    }

    #[test]
    fn missing_note_is_caught() {
        assert!(check(&fake_image(true, 17))
            .unwrap_err()
            .contains("PHYS32_ENTRY"));
    }

    #[test]
    fn bad_checksum_is_caught() {
        let mut b = fake_image(true, 18);
        b[0x1008] ^= 1;
        assert!(check(&b).unwrap_err().contains("checksum"));
    }

    #[test]
    fn pvh_variant_has_no_multiboot_header() {
        let v = pvh_variant(&fake_image(true, 18)).unwrap();
        assert!(multiboot_offset(&v).is_none());
        assert!(check(&v).unwrap_err().contains("no multiboot header"));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(check(b"hello").is_err());
        assert!(check(&[0u8; 100]).is_err());
    }
}
