//! What one guest's packets may cost the driver domain. Each limit is a bound on work or
//! memory that the guest controls, chosen so that no real network stack meets it; the
//! kernel takes them from its command line (docs/threat-model.md).

/// Linux's floor for a TCP MSS (`TCP_MIN_MSS`): no real stack asks for smaller segments,
/// and every byte below it only multiplies the headers a large send is cut into.
pub const GSO_MIN_SIZE: u16 = 88;

/// A 64 KiB send at the smallest allowed segment size: the cap never refuses a send a
/// real stack makes with the default minimum.
pub const GSO_MAX_SEGS: u32 = (crate::abi::MAX_TX_SIZE as u32).div_ceil(GSO_MIN_SIZE as u32);

/// Largest frame a guest may send without GSO: an Ethernet frame of MTU 1500 with one
/// VLAN tag. A bigger one could not leave by the wire and is no frame a vif carries (a
/// Linux bridge drops it too).
pub const MAX_FRAME: usize = 1518;

/// Bytes waiting for one consumer (a vif queue, the wire, the management stack). Linux
/// holds `XENVIF_RX_QUEUE_BYTES` (512 KiB, half a ring of pages) and, once that is full,
/// stops the vif's transmit queue, whose 32 packets (`XENVIF_QUEUE_LENGTH`) of up to 64
/// KiB each wait in front of it: up to 2.5 MiB in all before it drops. Here 1 MiB, three
/// quarters of it per source: a burst of large sends from one guest to another (16 of
/// 64 KiB) fits, where 512 KiB (6 per source) dropped packets at the receiving vif in
/// `make bench` (their share in its TCP figures is not measured apart from its UDP flood).
pub const INBOX_BYTES: usize = 1024 * 1024;

/// Bytes waiting in all inboxes together (the kernel lowers it to a quarter of its heap
/// when that is smaller).
pub const QUEUED_BYTES: usize = 8 * 1024 * 1024;

/// Frames a guest may flood (broadcast, multicast, unknown unicast) per second: ARP,
/// DHCP and neighbour discovery stay far below; a storm is cut off at the vif.
pub const FLOOD_PER_SEC: u32 = 2000;

/// Linux's `rx_stall_timeout_msecs`: a frontend that posts no receive buffers while
/// packets wait for this long has its carrier turned off.
pub const RX_STALL_NS: u64 = 60_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Smallest segment size a guest may ask for on a large send (GSO); smaller ones
    /// are dropped with an error response.
    pub gso_min_size: u16,
    /// Most segments one large send may be cut into; more are dropped likewise.
    pub gso_max_segs: u32,
    /// Largest frame without GSO a guest may send; bigger ones are dropped.
    pub max_frame: usize,
    /// Bytes queued for one consumer; packets beyond are dropped (counted).
    pub inbox_bytes: usize,
    /// Bytes queued for all consumers together.
    pub queued_bytes: usize,
    /// How long packets may wait for receive buffers before the vif's carrier goes
    /// off (queued packets dropped, new ones dropped until buffers are posted).
    pub rx_stall_ns: u64,
    /// Frames one guest may flood per second; more are dropped (counted).
    pub flood_per_sec: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            gso_min_size: GSO_MIN_SIZE,
            gso_max_segs: GSO_MAX_SEGS,
            max_frame: MAX_FRAME,
            inbox_bytes: INBOX_BYTES,
            queued_bytes: QUEUED_BYTES,
            rx_stall_ns: RX_STALL_NS,
            flood_per_sec: FLOOD_PER_SEC,
        }
    }
}
