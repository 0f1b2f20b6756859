//! PCI logic against a small config-space model: functions with real BAR sizing
//! semantics, capability lists (well-formed and hostile), bridges, multifunction devices.

use super::*;
use alloc::collections::BTreeMap;
use alloc::vec;

#[derive(Clone)]
struct Dev {
    cfg: Vec<u8>,
    /// Size masks per BAR register (0 = unimplemented).
    bar_masks: [u32; 6],
    /// Read-only low bits per BAR register (type/prefetch; 0 for the upper half of a
    /// 64-bit BAR).
    bar_flags: [u32; 6],
    flr_count: u32,
}

impl Dev {
    fn new(vendor: u16, device: u16, class: [u8; 3]) -> Self {
        let mut cfg = vec![0u8; 4096];
        cfg[0..2].copy_from_slice(&vendor.to_le_bytes());
        cfg[2..4].copy_from_slice(&device.to_le_bytes());
        cfg[9] = class[2];
        cfg[10] = class[1];
        cfg[11] = class[0];
        Dev {
            cfg,
            bar_masks: [0; 6],
            bar_flags: [0; 6],
            flr_count: 0,
        }
    }
    fn w32(&mut self, off: usize, v: u32) {
        self.cfg[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    /// BAR register `i`: initial value, size mask, read-only flag bits.
    fn bar(&mut self, i: usize, value: u32, mask: u32, flags: u32) {
        self.w32(0x10 + 4 * i, value);
        self.bar_masks[i] = mask;
        self.bar_flags[i] = flags;
    }
    fn add_cap(&mut self, at: u8, id: u8, body: &[u8]) {
        // Append to the list.
        self.cfg[6] |= 0x10;
        let mut p = 0x34usize;
        while self.cfg[p] != 0 {
            p = self.cfg[p] as usize + 1;
        }
        self.cfg[p] = at;
        self.cfg[at as usize] = id;
        self.cfg[at as usize + 1] = 0;
        self.cfg[at as usize + 2..at as usize + 2 + body.len()].copy_from_slice(body);
    }
}

#[derive(Default)]
struct Model {
    devs: BTreeMap<Bdf, Dev>,
}

impl ConfigSpace for Model {
    fn read32(&mut self, bdf: Bdf, off: u16) -> u32 {
        match self.devs.get(&bdf) {
            Some(d) => {
                u32::from_le_bytes(d.cfg[off as usize..off as usize + 4].try_into().unwrap())
            }
            None => 0xffff_ffff,
        }
    }
    fn write32(&mut self, bdf: Bdf, off: u16, v: u32) {
        let Some(d) = self.devs.get_mut(&bdf) else {
            return;
        };
        let o = off as usize;
        if (0x10..0x28).contains(&o) {
            let i = (o - 0x10) / 4;
            let m = d.bar_masks[i];
            let v = if m == 0 { 0 } else { (v & m) | d.bar_flags[i] };
            d.w32(o, v);
            return;
        }
        if o == 0x78 && v & (1 << 15) != 0 {
            // PCIe DevCtl (cap at 0x70, register at 0x78): bit 15 starts an FLR, which
            // clears the BAR addresses and the command register, as QEMU's model does.
            d.flr_count += 1;
            for bar in 0..6 {
                let flags = d.bar_flags[bar];
                d.w32(0x10 + 4 * bar, flags);
            }
            d.cfg[4] = 0;
            d.cfg[5] = 0;
            return;
        }
        d.w32(o, v);
    }
}

fn nvme_dev() -> Dev {
    let mut d = Dev::new(0x1b36, 0x0010, [0x01, 0x08, 0x02]);
    // BAR0/1: 64-bit 16 KiB memory BAR at 0xfebd0000.
    d.bar(0, 0xfebd_0004, !(0x4000 - 1), 0x4);
    d.bar(1, 0, 0xffff_ffff, 0);
    // BAR4: 32-bit 4 KiB memory BAR.
    d.bar(4, 0xfebd_4000, !(0x1000 - 1), 0);
    // BAR5: I/O BAR of 32 ports.
    d.bar(5, 0xc001, !(32 - 1) & 0xffff, 0x1);
    d.cfg[0x3c] = 11;
    d.cfg[0x3d] = 1;
    // MSI-X: 65 vectors, table in BAR0 at 0x2000, PBA at 0x3000.
    let mut body = vec![0u8; 10];
    body[0..2].copy_from_slice(&64u16.to_le_bytes());
    body[2..6].copy_from_slice(&0x2000u32.to_le_bytes());
    body[6..10].copy_from_slice(&0x3000u32.to_le_bytes());
    d.add_cap(0x40, reg::CAP_MSIX, &body);
    // MSI, 64-bit capable.
    d.add_cap(0x50, reg::CAP_MSI, &[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    // PCIe with FLR in DevCap.
    d.add_cap(0x70, reg::CAP_PCIE, &[0, 0, 0, 0, 0, 0x10]);
    d
}

fn model() -> Model {
    let mut m = Model::default();
    m.devs.insert(
        Bdf::new(0, 0, 0),
        Dev::new(0x8086, 0x29c0, [0x06, 0x00, 0x00]),
    );
    m.devs.insert(Bdf::new(0, 3, 0), nvme_dev());
    // A multifunction device with functions 0 and 2.
    let mut mf = Dev::new(0x8086, 0x2918, [0x06, 0x01, 0x00]);
    mf.cfg[0x0e] = 0x80;
    m.devs.insert(Bdf::new(0, 0x1f, 0), mf);
    m.devs.insert(
        Bdf::new(0, 0x1f, 2),
        Dev::new(0x8086, 0x2922, [0x01, 0x06, 0x01]),
    );
    // A bridge to bus 2 with a NIC behind it.
    let mut br = Dev::new(0x1b36, 0x000c, [0x06, 0x04, 0x00]);
    br.cfg[0x0e] = 0x01;
    br.cfg[0x19] = 2;
    m.devs.insert(Bdf::new(0, 4, 0), br);
    m.devs.insert(
        Bdf::new(2, 0, 0),
        Dev::new(0x8086, 0x10d3, [0x02, 0x00, 0x00]),
    );
    m
}

#[test]
fn enumerates_through_bridges_and_multifunction() {
    let mut m = model();
    let f = enumerate(&mut m);
    let bdfs: Vec<Bdf> = f.iter().map(|f| f.bdf).collect();
    assert_eq!(
        bdfs,
        vec![
            Bdf::new(0, 0, 0),
            Bdf::new(0, 3, 0),
            Bdf::new(0, 4, 0),
            Bdf::new(0, 0x1f, 0),
            Bdf::new(0, 0x1f, 2),
            Bdf::new(2, 0, 0)
        ]
    );
    let nvme = f.iter().find(|f| f.is_nvme()).unwrap();
    assert_eq!(
        (
            nvme.vendor,
            nvme.device,
            nvme.interrupt_pin,
            nvme.interrupt_line
        ),
        (0x1b36, 0x0010, 1, 11)
    );
    assert_eq!(alloc::format!("{}", nvme.bdf), "00:03.0");
}

#[test]
fn bridge_loop_does_not_hang() {
    let mut m = model();
    m.devs.get_mut(&Bdf::new(0, 4, 0)).unwrap().cfg[0x19] = 0; // secondary = our own bus
    let mut br2 = Dev::new(0x1b36, 0x000c, [0x06, 0x04, 0x00]);
    br2.cfg[0x0e] = 0x01;
    br2.cfg[0x19] = 0; // points back to bus 0
    m.devs.insert(Bdf::new(2, 1, 0), br2);
    let f = enumerate(&mut m);
    assert!(f.len() >= 5);
}

#[test]
fn sizes_bars_and_restores_them() {
    let mut m = model();
    let b = bars(&mut m, Bdf::new(0, 3, 0)).unwrap();
    assert_eq!(
        b[0],
        Some(Bar::Memory {
            base: 0xfebd_0000,
            size: 0x4000,
            prefetchable: false,
            is64: true
        })
    );
    assert_eq!(b[1], None, "upper half of a 64-bit BAR");
    assert_eq!(
        b[4],
        Some(Bar::Memory {
            base: 0xfebd_4000,
            size: 0x1000,
            prefetchable: false,
            is64: false
        })
    );
    assert_eq!(
        b[5],
        Some(Bar::Io {
            port: 0xc000,
            size: 32
        })
    );
    // Original values are back.
    assert_eq!(m.read32(Bdf::new(0, 3, 0), 0x10), 0xfebd_0004);
    assert_eq!(m.read32(Bdf::new(0, 3, 0), 0x14), 0);
    assert_eq!(m.read32(Bdf::new(0, 3, 0), 0x20), 0xfebd_4000);
}

#[test]
fn malformed_bars_are_errors() {
    let mut m = model();
    let d = m.devs.get_mut(&Bdf::new(0, 3, 0)).unwrap();
    d.bar(5, 0x4, 0xffff_f000, 0x4); // 64-bit BAR in the last slot
    assert_eq!(
        bars(&mut m, Bdf::new(0, 3, 0)),
        Err(PciError::BadBar {
            bdf: Bdf::new(0, 3, 0),
            index: 5
        })
    );
    let mut m = model();
    m.devs.get_mut(&Bdf::new(0, 3, 0)).unwrap().bar_masks[4] = 0xfff0_1000; // not a power of two
    assert_eq!(
        bars(&mut m, Bdf::new(0, 3, 0)),
        Err(PciError::BadBar {
            bdf: Bdf::new(0, 3, 0),
            index: 4
        })
    );
    assert_eq!(
        bars(&mut m, Bdf::new(0, 9, 0)),
        Err(PciError::Absent(Bdf::new(0, 9, 0)))
    );
}

#[test]
fn capabilities_and_msix() {
    let mut m = model();
    let bdf = Bdf::new(0, 3, 0);
    let caps = capabilities(&mut m, bdf).unwrap();
    assert_eq!(
        caps,
        vec![
            (reg::CAP_MSIX, 0x40),
            (reg::CAP_MSI, 0x50),
            (reg::CAP_PCIE, 0x70)
        ]
    );
    let b = bars(&mut m, bdf).unwrap();
    let x = msix(&mut m, bdf, &b).unwrap().unwrap();
    assert_eq!(
        x,
        MsiX {
            cap: 0x40,
            table_size: 65,
            table_bar: 0,
            table_offset: 0x2000,
            pba_bar: 0,
            pba_offset: 0x3000
        }
    );
    msix_control(&mut m, bdf, &x, true, false);
    assert_eq!(m.read16(bdf, 0x42) & 0xc000, 0x8000);
    msi_enable(&mut m, bdf, 0, 0x40).unwrap();
    assert_eq!(m.read32(bdf, 0x54), 0xfee0_0000);
    assert_eq!(m.read16(bdf, 0x5c), 0x40);
    assert_eq!(m.read16(bdf, 0x52) & 1, 1);
}

#[test]
fn msix_table_outside_its_bar_is_refused() {
    let mut m = model();
    let bdf = Bdf::new(0, 3, 0);
    m.devs.get_mut(&bdf).unwrap().w32(0x44, 0x3ff8); // table at 0x3ff8: 65*16 bytes overrun 16 KiB
    let b = bars(&mut m, bdf).unwrap();
    assert!(msix(&mut m, bdf, &b).is_err());
}

#[test]
fn hostile_capability_lists() {
    let mut m = model();
    let bdf = Bdf::new(0, 3, 0);
    // A loop: the last capability points back to the first.
    m.devs.get_mut(&bdf).unwrap().cfg[0x71] = 0x40;
    assert_eq!(
        capabilities(&mut m, bdf),
        Err(PciError::BadCapabilityList(bdf))
    );
    // A pointer into the standard header.
    let mut m = model();
    m.devs.get_mut(&bdf).unwrap().cfg[0x34] = 0x10;
    assert_eq!(
        capabilities(&mut m, bdf),
        Err(PciError::BadCapabilityList(bdf))
    );
    // No list at all.
    let mut m = model();
    m.devs.get_mut(&bdf).unwrap().cfg[6] = 0;
    assert_eq!(capabilities(&mut m, bdf), Ok(vec![]));
}

#[test]
fn function_level_reset() {
    let mut m = model();
    let bdf = Bdf::new(0, 3, 0);
    let mut slept = 0;
    flr(&mut m, bdf, |ms| slept += ms).unwrap();
    assert_eq!(m.devs[&bdf].flr_count, 1);
    assert!(slept >= 100);
    // Without the DevCap bit FLR is refused.
    assert_eq!(
        flr(&mut m, Bdf::new(0, 0, 0), |_| {}),
        Err(PciError::Unsupported(
            Bdf::new(0, 0, 0),
            "function-level reset"
        ))
    );
}

#[test]
fn enable_sets_memory_bus_master_and_intx() {
    let mut m = model();
    let bdf = Bdf::new(0, 3, 0);
    enable(&mut m, bdf, false);
    let cmd = m.read16(bdf, reg::COMMAND);
    assert_eq!(
        cmd & (reg::CMD_MEMORY | reg::CMD_BUS_MASTER | reg::CMD_INTX_DISABLE),
        reg::CMD_MEMORY | reg::CMD_BUS_MASTER | reg::CMD_INTX_DISABLE
    );
    enable(&mut m, bdf, true);
    assert_eq!(m.read16(bdf, reg::COMMAND) & reg::CMD_INTX_DISABLE, 0);
}

#[test]
fn stop_dma_clears_bus_mastering_only() {
    let mut m = model();
    let bdf = Bdf::new(0, 3, 0);
    enable(&mut m, bdf, false);
    stop_dma(&mut m, bdf);
    let cmd = m.read16(bdf, reg::COMMAND);
    assert_eq!(cmd & reg::CMD_BUS_MASTER, 0);
    assert_eq!(
        cmd & (reg::CMD_MEMORY | reg::CMD_INTX_DISABLE),
        reg::CMD_MEMORY | reg::CMD_INTX_DISABLE
    );
}

#[test]
fn reset_function_restores_bars_and_command() {
    let mut m = model();
    let bdf = Bdf::new(0, 3, 0);
    enable(&mut m, bdf, false);
    let before = bars(&mut m, bdf).unwrap();
    let cmd = m.read16(bdf, reg::COMMAND);
    reset_function(&mut m, bdf, |_| {}).unwrap();
    assert_eq!(m.devs[&bdf].flr_count, 1);
    assert_eq!(
        bars(&mut m, bdf).unwrap(),
        before,
        "BARs restored after FLR"
    );
    assert_eq!(m.read16(bdf, reg::COMMAND), cmd);
    assert_eq!(m.read8(bdf, reg::INTERRUPT_LINE), 11);
    assert_eq!(
        reset_function(&mut m, Bdf::new(0, 9, 0), |_| {}),
        Err(PciError::Absent(Bdf::new(0, 9, 0)))
    );
}

/// Without firmware: the BARs as the host had them (the NVMe's 64-bit BAR above 4 GiB)
/// are given addresses in the window, both halves of the 64-bit one written, the type
/// bits kept, and the device decodes and masters afterwards.
#[test]
fn assigned_bars_are_written_and_decoding_enabled() {
    let mut m = model();
    let bdf = Bdf::new(0, 3, 0);
    {
        let d = m.devs.get_mut(&bdf).unwrap();
        d.w32(0x10, 0x4);
        d.w32(0x14, 0xc0);
    }
    let before = bars(&mut m, bdf).unwrap();
    let w = assign::Window::hvm(32 << 20, 39);
    let plan = assign::plan(&assign::requests(bdf, &before), &w).unwrap();
    assign::program(&mut m, &plan);
    let after = bars(&mut m, bdf).unwrap();
    let base = |b: Option<Bar>| match b {
        Some(Bar::Memory { base, .. }) => base,
        Some(Bar::Io { port, .. }) => port as u64,
        None => panic!("BAR gone"),
    };
    assert_eq!(
        base(after[0]),
        0xf000_0000,
        "64-bit 16 KiB, upper half cleared"
    );
    assert_eq!(base(after[4]), 0xf000_4000);
    assert_eq!(base(after[5]), 0xc000);
    assert!(matches!(after[0], Some(Bar::Memory { is64: true, .. })));
    let cmd = m.read16(bdf, reg::COMMAND);
    let on = reg::CMD_MEMORY | reg::CMD_IO | reg::CMD_BUS_MASTER;
    assert_eq!(cmd & on, on);
}

/// Firmware-less setup of a whole bus: the NVMe placed and decoding, its INTx line set to
/// Xen's GSI for slot 3 INTA, a device whose 32-bit BAR cannot fit named and left with
/// decoding off (the NVMe unaffected), the bridge and what is behind it left as found.
#[test]
fn setup_places_what_fits_and_names_what_does_not() {
    let mut m = model();
    let mut big = Dev::new(0x1234, 0x5678, [0x02, 0x00, 0x00]);
    big.bar(0, 0, !((256u32 << 20) - 1), 0);
    big.cfg[0x3d] = 2;
    big.cfg[0x04] = 0x07;
    m.devs.insert(Bdf::new(0, 5, 0), big);
    m.devs.get_mut(&Bdf::new(0, 4, 0)).unwrap().cfg[0x04] = 0x07;
    let fns = enumerate(&mut m);
    let w = assign::Window::hvm(32 << 20, 39);
    let s = assign::setup(&mut m, &fns, &w);
    let nvme = Bdf::new(0, 3, 0);
    assert!(s.bars.iter().all(|a| a.bdf == nvme), "{:?}", s.bars);
    assert_eq!(s.bars.len(), 3);
    assert_eq!(m.read8(nvme, reg::INTERRUPT_LINE), 28);
    assert!(s.intx.contains(&(nvme, 28)));
    let cmd = m.read16(nvme, reg::COMMAND);
    assert_eq!(cmd & reg::CMD_MEMORY, reg::CMD_MEMORY);
    let failed: Vec<Bdf> = s.failed.iter().map(|(b, _)| *b).collect();
    assert!(failed.contains(&Bdf::new(0, 5, 0)));
    assert!(failed.contains(&Bdf::new(0, 4, 0)), "the bridge");
    let bridge_cmd = 0x07u16;
    assert_eq!(
        m.read16(Bdf::new(0, 4, 0), reg::COMMAND) & bridge_cmd,
        bridge_cmd,
        "the bridge is left decoding, as found"
    );
    assert!(failed.contains(&Bdf::new(2, 0, 0)), "behind the bridge");
    assert!(!failed.contains(&nvme));
    assert_eq!(
        m.read16(Bdf::new(0, 5, 0), reg::COMMAND) & (reg::CMD_MEMORY | reg::CMD_IO),
        0,
        "the device that did not fit does not decode"
    );
    let served: Vec<Bdf> = s.for_drivers(fns.clone()).iter().map(|f| f.bdf).collect();
    assert!(
        !served.contains(&Bdf::new(0, 5, 0)),
        "no driver sees the unset device"
    );
    assert!(served.contains(&nvme) && served.contains(&Bdf::new(2, 0, 0)));
    let nvme_fn = s
        .for_drivers(fns)
        .into_iter()
        .find(|f| f.bdf == nvme)
        .unwrap();
    assert_eq!(nvme_fn.interrupt_line, 28);
    let e = s
        .failed
        .iter()
        .find(|(b, _)| *b == Bdf::new(0, 5, 0))
        .unwrap();
    let msg = alloc::format!("{}", e.1);
    assert!(msg.contains("00:05.0: BAR0"), "{msg}");
}

/// Sizes a device may claim, however absurd, are refused or placed; never an overflow.
#[test]
fn huge_bars_are_refused_without_overflow() {
    let r = |dev: u8, size: u64| assign::Request {
        bdf: Bdf::new(0, dev, 0),
        index: 0,
        size,
        io: false,
        is64: true,
    };
    let w = assign::Window::hvm(32 << 20, 52);
    let e = assign::plan(&[r(3, 1 << 63), r(4, 1 << 63), r(5, 1 << 62)], &w);
    assert!(e.is_err());
}

#[test]
fn xen_intx_gsis_follow_xens_formula() {
    use assign::xen_hvm_intx_gsi as gsi;
    assert_eq!(gsi(3, 0), None);
    assert_eq!(gsi(3, 5), None);
    assert_eq!(gsi(0, 1), Some(16));
    assert_eq!(gsi(3, 1), Some(28));
    assert_eq!(gsi(4, 1), Some(32));
    assert_eq!(gsi(4, 2), Some(33));
    // Slot 8: (32 + 1 + 0) & 31 = 1, wrapping within the 32 PCI pins.
    assert_eq!(gsi(8, 1), Some(17));
    for dev in 0..32 {
        for pin in 1..=4 {
            let g = gsi(dev, pin).unwrap();
            assert!((16..48).contains(&g));
        }
    }
}
