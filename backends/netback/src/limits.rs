//! What one guest's packets may cost the driver domain. Each limit is a bound on work or
//! memory that the guest controls, chosen so that no real network stack meets it; the
//! kernel takes them from its command line (README, "Threat model").

/// Linux's floor for a TCP MSS (`TCP_MIN_MSS`): no real stack asks for smaller segments,
/// and every byte below it only multiplies the headers a large send is cut into.
pub const GSO_MIN_SIZE: u16 = 88;

/// A 64 KiB send at the smallest allowed segment size: the cap never refuses a send a
/// real stack makes with the default minimum.
pub const GSO_MAX_SEGS: u32 = (crate::abi::MAX_TX_SIZE as u32).div_ceil(GSO_MIN_SIZE as u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Smallest segment size a guest may ask for on a large send (GSO); smaller ones
    /// are dropped with an error response.
    pub gso_min_size: u16,
    /// Most segments one large send may be cut into; more are dropped likewise.
    pub gso_max_segs: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            gso_min_size: GSO_MIN_SIZE,
            gso_max_segs: GSO_MAX_SEGS,
        }
    }
}
