//! netif ring entries, from Xen's `public/io/netif.h`. Same layout for every x86 ABI (no
//! 64-bit fields).

/// `struct netif_tx_request`: gref u32, offset u16, flags u16, id u16, size u16.
pub const TX_REQUEST_SIZE: usize = 12;
/// `struct netif_tx_response`: id u16, status i16.
pub const TX_RESPONSE_SIZE: usize = 4;
/// `struct netif_extra_info` (carried in a TX request slot): type u8, flags u8, 6 bytes.
pub const EXTRA_INFO_SIZE: usize = 8;
/// `struct netif_rx_request`: id u16, pad u16, gref u32.
pub const RX_REQUEST_SIZE: usize = 8;
/// `struct netif_rx_response`: id u16, offset u16, flags u16, status i16.
pub const RX_RESPONSE_SIZE: usize = 8;

pub const NETTXF_CSUM_BLANK: u16 = 1 << 0;
pub const NETTXF_DATA_VALIDATED: u16 = 1 << 1;
pub const NETTXF_MORE_DATA: u16 = 1 << 2;
pub const NETTXF_EXTRA_INFO: u16 = 1 << 3;

pub const NETRXF_DATA_VALIDATED: u16 = 1 << 0;
pub const NETRXF_CSUM_BLANK: u16 = 1 << 1;
pub const NETRXF_MORE_DATA: u16 = 1 << 2;
pub const NETRXF_EXTRA_INFO: u16 = 1 << 3;
pub const NETRXF_GSO_PREFIX: u16 = 1 << 4;

pub const EXTRA_TYPE_GSO: u8 = 1;
pub const EXTRA_TYPE_MCAST_ADD: u8 = 2;
pub const EXTRA_TYPE_MCAST_DEL: u8 = 3;
pub const EXTRA_TYPE_HASH: u8 = 4;
pub const EXTRA_TYPE_MAX: u8 = 5;
pub const EXTRA_FLAG_MORE: u8 = 1 << 0;

pub const GSO_TYPE_NONE: u8 = 0;
pub const GSO_TYPE_TCPV4: u8 = 1;
pub const GSO_TYPE_TCPV6: u8 = 2;

pub const RSP_DROPPED: i16 = -2;
pub const RSP_ERROR: i16 = -1;
pub const RSP_OKAY: i16 = 0;
/// A response for a slot that carried no packet data (extra info).
pub const RSP_NULL: i16 = 1;

/// Slots a frontend may use for one packet and expect it to be accepted
/// (`XEN_NETIF_NR_SLOTS_MIN`, what Linux netback accepts by default).
pub const NR_SLOTS_MIN: usize = 18;
/// Beyond this many slots the frontend is broken or hostile: disconnect (Linux's
/// `fatal_skb_slots` default).
pub const FATAL_SLOTS: usize = 20;
/// `XEN_NETIF_MAX_TX_SIZE`: the size field is 16 bits.
pub const MAX_TX_SIZE: usize = 0xffff;
pub const ETH_HLEN: usize = 14;
pub const PAGE_SIZE: usize = 4096;
