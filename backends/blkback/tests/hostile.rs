//! blkback against frontends that attack it rather than use it. Each test is a finding
//! of the hostile-guest review (issue 16) and fails on the code before its fix.

mod common;
use common::LIMITS;

use bulkhead_blkback::abi::*;
use bulkhead_blkback::io::{Geometry, GrantFault, GuestMemory, Piece};
use bulkhead_blkback::queue::Queue;
use bulkhead_blkback::request::encode;
use bulkhead_blkback::ring;
use bulkhead_block::{BlockDevice, BlockError, Features};
use bulkhead_ring::Republishing;
use bulkhead_xenbus::keys::fake::run;

/// A disk that is never reached: the attacks below are refused before any I/O.
struct Unreachable;

impl BlockDevice for Unreachable {
    fn block_size(&self) -> u32 {
        512
    }
    fn blocks(&self) -> u64 {
        1 << 20
    }
    fn features(&self) -> Features {
        Features {
            flush: true,
            discard: false,
            write_zeroes: false,
            volatile_cache: true,
        }
    }
    async fn read(&mut self, _: u64, _: &mut [u8]) -> Result<(), BlockError> {
        panic!("an invalid request reached the disk")
    }
    async fn write(&mut self, _: u64, _: &[u8]) -> Result<(), BlockError> {
        panic!("an invalid request reached the disk")
    }
    async fn flush(&mut self) -> Result<(), BlockError> {
        panic!("an invalid request reached the disk")
    }
    async fn discard(&mut self, _: u64, _: u64) -> Result<(), BlockError> {
        panic!("an invalid request reached the disk")
    }
}

/// Guest memory that refuses every grant (as if all were revoked).
struct Revoked;

impl bulkhead_blkback::io::DmaPages for Revoked {}

impl GuestMemory for Revoked {
    fn read(&mut self, p: &[Piece], _: &mut [u8]) -> Result<(), GrantFault> {
        Err(GrantFault {
            gref: p.first().map_or(0, |p| p.gref),
            status: -1,
        })
    }
    fn write(&mut self, p: &[Piece], _: &[u8]) -> Result<(), GrantFault> {
        Err(GrantFault {
            gref: p.first().map_or(0, |p| p.gref),
            status: -1,
        })
    }
}

/// Finding 2 of the hostile-guest review: a frontend that re-publishes invalid requests from inside the backend's
/// ring read (as fast as they are answered) must not keep `serve_available` from
/// returning: the task has to yield to timers, other guests and shutdown.
#[test]
fn a_frontend_that_republishes_for_ever_does_not_hold_the_task() {
    let protocol = Protocol::X86_64;
    // Refills before the fake gives up: far more than any budget, so an unbounded loop
    // is caught by `exhausted()` rather than by a hang.
    let mem = Republishing::new(1, protocol.layout(), 10_000, |n| {
        encode(protocol, 0xee, n as u64, 0, &[])
    });
    let ring = ring::attach(mem, protocol).unwrap();
    let geo = Geometry {
        sectors: 1 << 20,
        block_size: 512,
    };
    let mut q = Queue::new("vbd-9-51712".into(), ring, protocol, LIMITS, geo, false);
    let budget = 64;
    run(q.serve_available(&mut Unreachable, &mut Revoked, budget)).expect("ring intact");
    let served = q.stats.requests;
    assert!(
        !q.ring().memory().exhausted(),
        "serve_available kept going while the frontend re-published"
    );
    assert!(served >= budget as u64, "the budget is served: {served}");
    assert!(
        served <= budget as u64 + 32,
        "at most one batch beyond the budget: {served}"
    );
    assert_eq!(
        q.stats.errors, served,
        "every invalid request answered as an error"
    );
    // The caller's look before sleeping sees more work: it yields, then serves again.
    assert!(q.final_check().unwrap());
    run(q.serve_available(&mut Unreachable, &mut Revoked, budget)).expect("ring intact");
    assert!(q.stats.requests > served);
}
