//! The common NIC interface: what every network driver (virtio-net, e1000e) offers to the
//! L2 switch, the management IP stack and netback. A driver moves whole Ethernet frames
//! (no FCS); received frames are handed out from the event loop after the device's
//! interrupt, transmitted frames are gathered from a list of buffers.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

use core::fmt;

/// Largest frame the drivers carry: 1500-byte payload, Ethernet header, one VLAN tag.
pub const MAX_FRAME: usize = 1518;
/// Smallest frame on the wire without FCS (shorter ones are padded by the NIC).
pub const MIN_FRAME: usize = 14;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }

    /// A usable station address: not multicast, not all zeros.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast() && self.0 != [0; 6]
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Down,
    Up { mbps: u32 },
}

impl Link {
    /// The speed, 0 while the link is down (one field of an event line).
    pub fn mbps(self) -> u32 {
        match self {
            Link::Down => 0,
            Link::Up { mbps } => mbps,
        }
    }
}

/// What the device can do for us.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offloads {
    /// The device fills in a TCP/UDP checksum we leave blank ([`Checksum::Partial`]).
    pub tx_checksum: bool,
}

/// Checksum work a transmitted frame asks of the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksum {
    /// The frame is complete.
    None,
    /// Fill in the 16-bit ones'-complement sum of bytes from `start` to the end, at
    /// `start + offset` (the TCP/UDP checksum field, pseudo-header sum already there).
    Partial { start: u16, offset: u16 },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Frames the device reported with errors, or with impossible lengths: dropped.
    pub rx_errors: u64,
    /// Frames dropped for want of room (ours, not the device's).
    pub rx_dropped: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
    /// Frames refused because the transmit ring was full.
    pub tx_dropped: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxError {
    /// No room in the transmit ring now; try after the next interrupt.
    Full,
    /// Shorter than an Ethernet header or longer than [`MAX_FRAME`].
    BadLength(usize),
}

impl fmt::Display for TxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxError::Full => write!(f, "transmit ring full"),
            TxError::BadLength(n) => write!(f, "frame of {n} bytes"),
        }
    }
}

pub trait Nic {
    fn mac(&self) -> MacAddr;
    fn link(&self) -> Link;
    fn offloads(&self) -> Offloads;
    /// Queue one frame gathered from `parts`.
    fn send(&mut self, parts: &[&[u8]], csum: Checksum) -> Result<(), TxError>;
    /// Queue several finished frames and tell the device once (a doorbell write is a
    /// VM exit under a hypervisor); returns how many could not be queued.
    fn send_frames(&mut self, frames: &[&[u8]]) -> usize {
        frames
            .iter()
            .filter(|f| self.send(&[f], Checksum::None).is_err())
            .count()
    }
    /// Hand every frame received so far to `f`, then give the buffers back to the
    /// device; returns how many were delivered. Also reclaims finished transmissions.
    fn receive(&mut self, f: &mut dyn FnMut(&[u8])) -> usize;
    /// Accept frames for every destination (the uplink of a switch) or only ours,
    /// broadcast and multicast.
    fn set_promiscuous(&mut self, on: bool);
    fn counters(&self) -> Counters;
}

/// Checks every NIC driver's tests share (feature `testing`), run against its device
/// model.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    extern crate alloc;

    use alloc::vec::Vec;

    use super::Nic;

    /// `rounds` rounds of `per_round` frames of growing length (60 bytes up), more
    /// frames over the rounds than a ring holds: `offer` gives each round's frames to
    /// the device model, the driver must hand every one back whole and in order, so
    /// its buffers come back to the device. Returns the frames received.
    pub fn receives_in_rounds(
        nic: &mut impl Nic,
        rounds: u8,
        per_round: usize,
        frame: impl Fn(usize, u8) -> Vec<u8>,
        mut offer: impl FnMut(Vec<Vec<u8>>),
    ) -> usize {
        let mut total = 0;
        for round in 0..rounds {
            let want: Vec<Vec<u8>> = (0..per_round)
                .map(|i| frame(60 + i, round ^ i as u8))
                .collect();
            offer(want.clone());
            let mut got = Vec::new();
            nic.receive(&mut |f| got.push(f.to_vec()));
            assert_eq!(got, want, "round {round}");
            total += got.len();
        }
        assert_eq!(nic.counters().rx_frames, total as u64);
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_kinds() {
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]).is_unicast());
        assert!(!MacAddr([0; 6]).is_unicast());
        assert_eq!(
            format!("{}", MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56])),
            "52:54:00:12:34:56"
        );
    }
}
