//! QEMU's firmware configuration device (fw_cfg), as the command line's carrier for an
//! HVM driver domain started without firmware.
//!
//! Such a domain (`firmware=` naming Bulkhead in its xl config) is entered at its PVH
//! note, but Xen's domain builder writes no command line into `hvm_start_info` when a
//! device model runs, and xl refuses `cmdline=` without `kernel=`. QEMU, the device
//! model, takes `-fw_cfg name=opt/bulkhead/cmdline,string=...` from the config's
//! `device_model_args_hvm`; under Xen it creates the fw_cfg device only for a direct
//! kernel boot, so the config names the image as `kernel=` too (QEMU prepares the
//! multiboot load, which nothing runs). Access is the legacy port interface: a 16-bit
//! key to the selector port, then the item's bytes one at a time from the data port
//! (Xen's QEMU has no DMA interface). The data are the device model's (dom0's) and
//! still bounded here: the directory's length, the item's size, valid UTF-8.

/// Selector port (16-bit writes) and data port (8-bit reads).
pub const PORT_SELECTOR: u16 = 0x510;
pub const PORT_DATA: u16 = 0x511;
/// Item 0: the four bytes "QEMU".
pub const KEY_SIGNATURE: u16 = 0x0000;
/// Item 0x19: the file directory (big-endian count, then 64-byte entries).
pub const KEY_FILE_DIR: u16 = 0x0019;
/// Where the xl config puts Bulkhead's command line.
pub const CMDLINE_FILE: &str = "opt/bulkhead/cmdline";
/// Directory entries looked at before giving up (QEMU's own limit is a few hundred).
pub const MAX_FILES: u32 = 1024;

/// The device's two ports.
pub trait Ports {
    fn select(&mut self, key: u16);
    /// Fill `buf` with the next bytes of the selected item (past its end: zeros).
    fn read(&mut self, buf: &mut [u8]);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FwCfgError {
    /// No fw_cfg device answers (no signature).
    Absent,
    /// The directory has no such file.
    NotFound,
    /// The directory claims more files than [`MAX_FILES`].
    BadDirectory(u32),
    /// The file is larger than the caller's buffer.
    TooLong(u32),
    /// The file's bytes are not UTF-8.
    NotUtf8,
}

impl core::fmt::Display for FwCfgError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FwCfgError::Absent => write!(f, "no fw_cfg device"),
            FwCfgError::NotFound => write!(f, "no such fw_cfg file"),
            FwCfgError::BadDirectory(n) => {
                write!(
                    f,
                    "fw_cfg directory claims {n} files (at most {MAX_FILES} read)"
                )
            }
            FwCfgError::TooLong(n) => write!(f, "fw_cfg file of {n} bytes is too long"),
            FwCfgError::NotUtf8 => write!(f, "fw_cfg file is not UTF-8"),
        }
    }
}

/// Whether a fw_cfg device answers.
pub fn present(p: &mut impl Ports) -> bool {
    p.select(KEY_SIGNATURE);
    let mut sig = [0u8; 4];
    p.read(&mut sig);
    &sig == b"QEMU"
}

/// The key and size of file `name`.
pub fn find(p: &mut impl Ports, name: &str) -> Result<(u16, u32), FwCfgError> {
    if !present(p) {
        return Err(FwCfgError::Absent);
    }
    p.select(KEY_FILE_DIR);
    let mut count = [0u8; 4];
    p.read(&mut count);
    let count = u32::from_be_bytes(count);
    if count > MAX_FILES {
        return Err(FwCfgError::BadDirectory(count));
    }
    for _ in 0..count {
        // size (BE32), select (BE16), reserved (16), name (56 bytes, NUL-padded)
        let mut e = [0u8; 64];
        p.read(&mut e);
        let n = &e[8..];
        let len = n.iter().position(|&b| b == 0).unwrap_or(n.len());
        if &n[..len] == name.as_bytes() {
            let size = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            return Ok((u16::from_be_bytes([e[4], e[5]]), size));
        }
    }
    Err(FwCfgError::NotFound)
}

/// File `name` as text, with trailing NULs and white space removed, into `out`.
pub fn read_text<const N: usize>(
    p: &mut impl Ports,
    name: &str,
    out: &mut heapless::String<N>,
) -> Result<(), FwCfgError> {
    let (key, size) = find(p, name)?;
    if size as usize > N {
        return Err(FwCfgError::TooLong(size));
    }
    let mut buf = [0u8; N];
    let buf = &mut buf[..size as usize];
    p.select(key);
    p.read(buf);
    let s = core::str::from_utf8(buf).map_err(|_| FwCfgError::NotUtf8)?;
    out.clear();
    // Fits: at most N bytes.
    let _ = out.push_str(s.trim_end_matches(|c: char| c == '\0' || c.is_whitespace()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    /// A fw_cfg device: items by key, a read position in the selected one.
    struct Model {
        items: Vec<(u16, Vec<u8>)>,
        selected: Option<usize>,
        pos: usize,
        reads: usize,
    }

    impl Model {
        fn new(files: &[(&str, &[u8])]) -> Model {
            let mut items = std::vec![(KEY_SIGNATURE, b"QEMU".to_vec())];
            let mut dir = (files.len() as u32).to_be_bytes().to_vec();
            for (i, (name, data)) in files.iter().enumerate() {
                let key = 0x20 + i as u16;
                dir.extend((data.len() as u32).to_be_bytes());
                dir.extend(key.to_be_bytes());
                dir.extend([0, 0]);
                let mut n = [0u8; 56];
                n[..name.len()].copy_from_slice(name.as_bytes());
                dir.extend(n);
                items.push((key, data.to_vec()));
            }
            items.push((KEY_FILE_DIR, dir));
            Model {
                items,
                selected: None,
                pos: 0,
                reads: 0,
            }
        }
    }

    impl Ports for Model {
        fn select(&mut self, key: u16) {
            self.selected = self.items.iter().position(|(k, _)| *k == key);
            self.pos = 0;
        }
        fn read(&mut self, buf: &mut [u8]) {
            for b in buf {
                self.reads += 1;
                *b = self
                    .selected
                    .and_then(|i| self.items[i].1.get(self.pos).copied())
                    .unwrap_or(0);
                self.pos += 1;
            }
        }
    }

    /// No device: the ports read as all-ones.
    struct Nothing;
    impl Ports for Nothing {
        fn select(&mut self, _: u16) {}
        fn read(&mut self, buf: &mut [u8]) {
            buf.fill(0xff);
        }
    }

    #[test]
    fn reads_the_command_line_among_other_files() {
        let mut m = Model::new(&[
            ("genroms/multiboot_dma.bin", &[0x55, 0xaa, 1, 2]),
            (CMDLINE_FILE, b"mgmt=dhcp vif-rx-stall=15\n"),
            ("etc/boot-fail-wait", &[0; 4]),
        ]);
        let mut s = heapless::String::<64>::new();
        read_text(&mut m, CMDLINE_FILE, &mut s).unwrap();
        assert_eq!(s.as_str(), "mgmt=dhcp vif-rx-stall=15");
    }

    #[test]
    fn absent_device_and_missing_file_are_told_apart() {
        let mut s = heapless::String::<64>::new();
        assert_eq!(
            read_text(&mut Nothing, CMDLINE_FILE, &mut s),
            Err(FwCfgError::Absent)
        );
        let mut m = Model::new(&[("etc/other", b"x")]);
        assert_eq!(
            read_text(&mut m, CMDLINE_FILE, &mut s),
            Err(FwCfgError::NotFound)
        );
        // A name that only starts like ours is another file.
        let mut m = Model::new(&[("opt/bulkhead/cmdline2", b"x")]);
        assert_eq!(
            read_text(&mut m, CMDLINE_FILE, &mut s),
            Err(FwCfgError::NotFound)
        );
    }

    #[test]
    fn too_long_non_utf8_and_huge_directories_are_refused() {
        let mut s = heapless::String::<8>::new();
        let mut m = Model::new(&[(CMDLINE_FILE, b"0123456789")]);
        assert_eq!(
            read_text(&mut m, CMDLINE_FILE, &mut s),
            Err(FwCfgError::TooLong(10))
        );
        let mut m = Model::new(&[(CMDLINE_FILE, &[0xff, 0xfe])]);
        assert_eq!(
            read_text(&mut m, CMDLINE_FILE, &mut s),
            Err(FwCfgError::NotUtf8)
        );
        let mut m = Model::new(&[]);
        let dir = m
            .items
            .iter_mut()
            .find(|(k, _)| *k == KEY_FILE_DIR)
            .unwrap();
        dir.1 = 0xffff_ffffu32.to_be_bytes().to_vec();
        assert_eq!(
            read_text(&mut m, CMDLINE_FILE, &mut s),
            Err(FwCfgError::BadDirectory(0xffff_ffff))
        );
        // Nothing past the count was read.
        assert!(m.reads < 16, "{} reads", m.reads);
    }

    #[test]
    fn an_empty_file_is_an_empty_line() {
        let mut s = heapless::String::<8>::new();
        let _ = s.push_str("old");
        let mut m = Model::new(&[(CMDLINE_FILE, b"")]);
        read_text(&mut m, CMDLINE_FILE, &mut s).unwrap();
        assert_eq!(s.as_str(), "");
    }
}
