//! One ring served end to end: take requests in order, serve each, answer each exactly
//! once, and tell the frontend when its `rsp_event` asks.

use alloc::string::String;

use bulkhead_block::BlockDevice;

use crate::abi::RSP_OKAY;
use crate::io::{execute, Failure, Geometry, GuestMemory};
use crate::request::{decode, Limits};
use crate::ring::{BackRing, RingError, RingMemory};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub errors: u64,
    pub read_bytes: u64,
    pub written_bytes: u64,
    pub notifies: u64,
}

/// Log lines per queue before errors are only counted (a hostile frontend must not be
/// able to flood the console).
const LOGGED_ERRORS: u64 = 32;

pub struct Queue<M: RingMemory> {
    pub name: String,
    ring: BackRing<M>,
    pub limits: Limits,
    pub geometry: Geometry,
    pub read_only: bool,
    pub stats: Stats,
}

impl<M: RingMemory> Queue<M> {
    pub fn new(
        name: String,
        ring: BackRing<M>,
        limits: Limits,
        geometry: Geometry,
        read_only: bool,
    ) -> Self {
        Queue {
            name,
            ring,
            limits,
            geometry,
            read_only,
            stats: Stats::default(),
        }
    }

    pub fn ring(&self) -> &BackRing<M> {
        &self.ring
    }

    pub fn ring_mut(&mut self) -> &mut BackRing<M> {
        &mut self.ring
    }

    pub fn into_ring(self) -> BackRing<M> {
        self.ring
    }

    fn note_error(&mut self, id: u64, status: i16, why: &str) {
        self.stats.errors += 1;
        if self.stats.errors <= LOGGED_ERRORS {
            log::warn!("{}: request {id:#x} failed ({status}): {why}", self.name);
            if self.stats.errors == LOGGED_ERRORS {
                log::warn!("{}: further request errors are only counted", self.name);
            }
        }
    }

    /// Serve every request the frontend has published, in order. Returns whether the
    /// frontend must be notified. A ring error means the frontend broke the ring
    /// protocol: the caller disconnects it.
    pub async fn serve_available<D: BlockDevice, G: GuestMemory + ?Sized>(
        &mut self,
        dev: &mut D,
        guest: &mut G,
    ) -> Result<bool, RingError> {
        let mut notify = false;
        while let Some(raw) = self.ring.take()? {
            self.stats.requests += 1;
            let (id, op, status) = match decode(&raw, self.ring.protocol(), &self.limits) {
                Err(r) => {
                    self.note_error(r.id, r.status, r.why);
                    (r.id, r.operation, r.status)
                }
                Ok(req) => match execute(&req, &self.geometry, self.read_only, dev, guest).await {
                    Ok(done) => {
                        self.stats.read_bytes += done.read;
                        self.stats.written_bytes += done.written;
                        (req.id, req.operation, RSP_OKAY)
                    }
                    Err(Failure { status, why }) => {
                        self.note_error(req.id, status, why);
                        (req.id, req.operation, status)
                    }
                },
            };
            self.ring.respond(id, op, status);
            // Publish as we go: a long batch must not hold back early completions.
            notify |= self.ring.push();
        }
        if notify {
            self.stats.notifies += 1;
        }
        Ok(notify)
    }

    /// Before waiting for the next event: true if requests arrived meanwhile.
    pub fn final_check(&mut self) -> Result<bool, RingError> {
        self.ring.final_check()
    }
}
