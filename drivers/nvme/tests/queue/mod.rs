//! What the queue-sharing tests (batch.rs, single.rs) share: the controller model brought
//! up with one I/O queue, and a batch's submit and reap on it moving no data.

use super::model::{self, FakeClock, Model, ModelDma};
use bulkhead_nvme::batch::Batch;
use bulkhead_nvme::controller::{Config, Controller};
use bulkhead_nvme::owners::Owners;
use bulkhead_nvme::pool::Pool;

/// A model of `blocks` blocks, its controller up with one I/O queue of `entries`.
pub fn up(
    blocks: usize,
    entries: u16,
) -> (Controller<Model>, ModelDma<model::State>, FakeClock, Model) {
    let m = Model::new(blocks);
    let mut dma = ModelDma(m.0.clone());
    let mut clock = FakeClock::default();
    let cfg = Config {
        io_queues: 1,
        io_entries: entries,
        vector: |_| None,
        max_transfer: 2 << 20,
    };
    let c = Controller::init(m.clone(), &mut dma, &mut clock, &cfg).expect("bring-up");
    (c, dma, clock, m)
}

/// `batch.submit` on the controller's I/O queue, moving no data.
pub fn submit(
    batch: &mut Batch,
    c: &mut Controller<Model>,
    owners: &mut Owners,
    pool: &mut Pool,
    dma: &ModelDma<model::State>,
) -> usize {
    batch.submit(&mut c.io[0], owners, pool, dma, &c.mmio, |_, _| {})
}

/// `batch.reap` on the controller's I/O queue, moving no data.
pub fn reap(
    batch: &mut Batch,
    c: &mut Controller<Model>,
    owners: &mut Owners,
    pool: &mut Pool,
    dma: &ModelDma<model::State>,
) -> usize {
    batch.reap(&mut c.io[0], owners, pool, dma, &c.mmio, |_, _| {})
}
