//! What blkback's integration tests share.

use bulkhead_blkback::request::Limits;

/// A connection that negotiated everything Bulkhead offers: 256 indirect segments,
/// barriers, flushes and discard (not secure discard, which it never offers).
pub const LIMITS: Limits = Limits {
    max_indirect_segments: 256,
    barrier: true,
    flush: true,
    discard: true,
    secure_discard: false,
};
