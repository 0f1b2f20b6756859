//! Finding the modern transport's structures through vendor-specific PCI capabilities
//! (virtio 1.1, 4.1.4).

use bulkhead_pci::{Bar, Bdf, ConfigSpace, PciError};

pub const VENDOR_REDHAT: u16 = 0x1af4;
/// Modern virtio-net (0x1040 + device type 1); 0x1000 is the transitional id.
pub const DEVICE_NET_MODERN: u16 = 0x1041;
pub const DEVICE_NET_TRANSITIONAL: u16 = 0x1000;

const CAP_VENDOR: u8 = 0x09;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;

/// A structure inside a memory BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub bar: u8,
    pub offset: u32,
    pub length: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    pub common: Region,
    pub notify: Region,
    pub notify_multiplier: u32,
    pub isr: Region,
    pub device: Option<Region>,
}

/// Whether a function is a virtio-net device we can drive.
pub fn is_net(vendor: u16, device: u16) -> bool {
    vendor == VENDOR_REDHAT && (device == DEVICE_NET_MODERN || device == DEVICE_NET_TRANSITIONAL)
}

/// Read the virtio capabilities and check each region lies inside its (memory) BAR. The
/// first capability of each type wins, as the specification asks.
pub fn caps(
    cs: &mut (impl ConfigSpace + ?Sized),
    bdf: Bdf,
    bars: &[Option<Bar>; 6],
) -> Result<Caps, &'static str> {
    let list = bulkhead_pci::capabilities(cs, bdf).map_err(|e| match e {
        PciError::Absent(_) => "device absent",
        _ => "bad capability list",
    })?;
    let (mut common, mut notify, mut isr, mut device) = (None, None, None, None);
    let mut mult = 0;
    for (id, off) in list {
        if id != CAP_VENDOR {
            continue;
        }
        let w0 = cs.read32(bdf, off);
        let cap_len = (w0 >> 16) as u8;
        let cfg_type = (w0 >> 24) as u8;
        if cap_len < 16 {
            continue;
        }
        let bar = cs.read8(bdf, off + 4);
        let offset = cs.read32(bdf, off + 8);
        let length = cs.read32(bdf, off + 12);
        if bar > 5 {
            continue;
        }
        let inside = match bars[bar as usize] {
            Some(Bar::Memory { size, .. }) => (offset as u64 + length as u64) <= size,
            _ => false,
        };
        if !inside {
            continue;
        }
        let r = Region {
            bar,
            offset,
            length,
        };
        match cfg_type {
            CFG_COMMON if common.is_none() && length >= 0x38 => common = Some(r),
            CFG_NOTIFY if notify.is_none() && cap_len >= 20 => {
                notify = Some(r);
                mult = cs.read32(bdf, off + 16);
            }
            CFG_ISR if isr.is_none() && length >= 1 => isr = Some(r),
            CFG_DEVICE if device.is_none() => device = Some(r),
            _ => {}
        }
    }
    Ok(Caps {
        common: common.ok_or("no common configuration capability (not a modern device)")?,
        notify: notify.ok_or("no notification capability")?,
        notify_multiplier: mult,
        isr: isr.ok_or("no ISR capability")?,
        device,
    })
}
