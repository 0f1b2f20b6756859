//! Finding ECAM (memory-mapped config space) through ACPI: RSDP -> RSDT/XSDT -> MCFG.
//! Tables come from firmware or the device model: lengths and checksums are checked, and a
//! bad table means "no ECAM" (the caller falls back to port I/O), never a wild read.

/// Read physical memory; false if the range is not readable.
pub trait PhysRead {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ecam {
    pub base: u64,
    pub segment: u16,
    pub bus_start: u8,
    pub bus_end: u8,
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
}

/// Scan `region` (16-byte aligned, as the BIOS area 0xE0000-0xFFFFF is) for a valid RSDP;
/// returns its physical address.
pub fn find_rsdp(region: &[u8], region_base: u64) -> Option<u64> {
    (0..region.len().saturating_sub(20))
        .step_by(16)
        .find_map(|o| {
            (&region[o..o + 8] == b"RSD PTR " && sum(&region[o..o + 20]) == 0)
                .then_some(region_base + o as u64)
        })
}

const MAX_TABLES: usize = 64;
const MAX_TABLE_LEN: u32 = 1 << 20;

fn table_header(mem: &impl PhysRead, addr: u64) -> Option<([u8; 4], u32)> {
    let mut h = [0u8; 36];
    if !mem.read(addr, &mut h) {
        return None;
    }
    let len = u32::from_le_bytes(h[4..8].try_into().unwrap());
    if !(36..=MAX_TABLE_LEN).contains(&len) {
        return None;
    }
    Some((h[0..4].try_into().unwrap(), len))
}

fn read_table(mem: &impl PhysRead, addr: u64) -> Option<alloc::vec::Vec<u8>> {
    let (_, len) = table_header(mem, addr)?;
    let mut t = alloc::vec![0u8; len as usize];
    if !mem.read(addr, &mut t) || sum(&t) != 0 {
        return None;
    }
    Some(t)
}

/// The first MCFG allocation (segment 0) reachable from the RSDP at `rsdp`.
pub fn find_ecam(mem: &impl PhysRead, rsdp: u64) -> Option<Ecam> {
    let mut r = [0u8; 36];
    if !mem.read(rsdp, &mut r[..20]) || &r[0..8] != b"RSD PTR " || sum(&r[..20]) != 0 {
        return None;
    }
    let revision = r[15];
    let (root, entry_size) = if revision >= 2 && mem.read(rsdp, &mut r) && sum(&r) == 0 {
        let xsdt = u64::from_le_bytes(r[24..32].try_into().unwrap());
        if xsdt != 0 {
            (xsdt, 8)
        } else {
            (u32::from_le_bytes(r[16..20].try_into().unwrap()) as u64, 4)
        }
    } else {
        (u32::from_le_bytes(r[16..20].try_into().unwrap()) as u64, 4)
    };
    let root_table = read_table(mem, root)?;
    let entries = &root_table[36..];
    for e in entries.chunks_exact(entry_size).take(MAX_TABLES) {
        let addr = if entry_size == 8 {
            u64::from_le_bytes(e.try_into().unwrap())
        } else {
            u32::from_le_bytes(e.try_into().unwrap()) as u64
        };
        if table_header(mem, addr).map(|h| h.0) != Some(*b"MCFG") {
            continue;
        }
        let t = read_table(mem, addr)?;
        for a in t.get(44..)?.chunks_exact(16) {
            let ecam = Ecam {
                base: u64::from_le_bytes(a[0..8].try_into().unwrap()),
                segment: u16::from_le_bytes([a[8], a[9]]),
                bus_start: a[10],
                bus_end: a[11],
            };
            if ecam.segment == 0 && ecam.base != 0 && ecam.bus_start <= ecam.bus_end {
                return Some(ecam);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;

    struct Mem(BTreeMap<u64, Vec<u8>>);
    impl PhysRead for Mem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            for (&base, bytes) in &self.0 {
                if addr >= base && addr + buf.len() as u64 <= base + bytes.len() as u64 {
                    let o = (addr - base) as usize;
                    buf.copy_from_slice(&bytes[o..o + buf.len()]);
                    return true;
                }
            }
            false
        }
    }

    fn fix_checksum(t: &mut [u8], at: usize) {
        t[at] = 0;
        t[at] = 0u8.wrapping_sub(sum(t));
    }

    fn table(sig: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut t = alloc::vec![0u8; 36];
        t[0..4].copy_from_slice(sig);
        t.extend_from_slice(body);
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        fix_checksum(&mut t, 9);
        t
    }

    fn setup(xsdt: bool) -> Mem {
        let mut mcfg_body = alloc::vec![0u8; 8];
        mcfg_body.extend_from_slice(&0xb000_0000u64.to_le_bytes());
        mcfg_body.extend_from_slice(&[0, 0, 0, 0xff, 0, 0, 0, 0]);
        let mcfg = table(b"MCFG", &mcfg_body);
        let other = table(b"APIC", &[1, 2, 3, 4]);
        let mut m = BTreeMap::new();
        m.insert(0x7000, other);
        m.insert(0x8000, mcfg);
        let mut rsdp = alloc::vec![0u8; 36];
        rsdp[0..8].copy_from_slice(b"RSD PTR ");
        if xsdt {
            let body: Vec<u8> = [0x7000u64, 0x8000]
                .iter()
                .flat_map(|a| a.to_le_bytes())
                .collect();
            m.insert(0x6000, table(b"XSDT", &body));
            rsdp[15] = 2;
            rsdp[20..24].copy_from_slice(&36u32.to_le_bytes());
            rsdp[24..32].copy_from_slice(&0x6000u64.to_le_bytes());
            fix_checksum(&mut rsdp[..20], 8);
            fix_checksum(&mut rsdp, 32);
        } else {
            let body: Vec<u8> = [0x7000u32, 0x8000]
                .iter()
                .flat_map(|a| a.to_le_bytes())
                .collect();
            m.insert(0x6000, table(b"RSDT", &body));
            rsdp[16..20].copy_from_slice(&0x6000u32.to_le_bytes());
            fix_checksum(&mut rsdp[..20], 8);
        }
        m.insert(0xe0000, rsdp);
        Mem(m)
    }

    #[test]
    fn finds_ecam_through_rsdt_and_xsdt() {
        for x in [false, true] {
            let m = setup(x);
            let e = find_ecam(&m, 0xe0000).unwrap();
            assert_eq!(
                e,
                Ecam {
                    base: 0xb000_0000,
                    segment: 0,
                    bus_start: 0,
                    bus_end: 0xff
                }
            );
        }
    }

    #[test]
    fn rsdp_scan() {
        let m = setup(false);
        let mut region = alloc::vec![0u8; 0x100];
        region[0x40..0x40 + 20].copy_from_slice(&m.0[&0xe0000][..20]);
        assert_eq!(find_rsdp(&region, 0xe0000), Some(0xe0040));
        region[0x41] ^= 1;
        assert_eq!(find_rsdp(&region, 0xe0000), None);
    }

    #[test]
    fn corrupt_tables_mean_no_ecam() {
        let mut m = setup(false);
        m.0.get_mut(&0x8000).unwrap()[40] ^= 0xff; // MCFG checksum now wrong
        assert_eq!(find_ecam(&m, 0xe0000), None);
        let mut m = setup(false);
        m.0.get_mut(&0x6000).unwrap()[4..8].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert_eq!(find_ecam(&m, 0xe0000), None);
        let m = setup(false);
        assert_eq!(find_ecam(&m, 0xe0010), None, "no RSDP there");
    }
}
