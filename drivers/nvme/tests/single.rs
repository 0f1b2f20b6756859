//! One command (a flush) on the I/O queue beside other callers' batches, against the
//! controller model: its completion reaches it whoever reaps it, a reset drops it and
//! says so, a queue full of others' commands is waited out.

mod model;
mod queue;

use bulkhead_nvme::batch::{Batch, Op};
use bulkhead_nvme::cmd::Command;
use bulkhead_nvme::controller::Controller;
use bulkhead_nvme::owners::{Owners, Ticket};
use bulkhead_nvme::pool::Pool;
use bulkhead_nvme::single::{self, Look, Submitted};
use bulkhead_nvme::Error;
use model::{Model, ModelDma, BLOCK};
use queue::{reap, submit, up};

fn reads(n: u64) -> Vec<Op> {
    (0..n)
        .map(|k| Op {
            write: false,
            nsid: 1,
            lba: k * 8,
            blocks: 8,
            bytes: 8 * BLOCK,
            direct: None,
        })
        .collect()
}

/// `single::submit` of a flush on the controller's I/O queue.
fn flush(
    c: &mut Controller<Model>,
    owners: &mut Owners,
    t: &mut Ticket,
    dma: &ModelDma<model::State>,
) -> Result<Submitted, Error> {
    single::submit(
        &mut c.io[0],
        owners,
        t,
        dma,
        &c.mmio,
        Command::flush(1),
        false,
    )
}

/// A flush submitted; its command id.
fn flush_cid(
    c: &mut Controller<Model>,
    owners: &mut Owners,
    t: &mut Ticket,
    dma: &ModelDma<model::State>,
) -> u16 {
    match flush(c, owners, t, dma) {
        Ok(Submitted::Cid(cid)) => cid,
        other => panic!("the flush was not submitted: {other:?}"),
    }
}

/// `single::look` on the controller's I/O queue.
fn look(
    c: &mut Controller<Model>,
    owners: &mut Owners,
    t: &mut Ticket,
    dma: &ModelDma<model::State>,
    cid: u16,
) -> Look {
    single::look(&mut c.io[0], owners, t, dma, &c.mmio, cid)
}

#[test]
fn a_flush_beside_a_batch_gets_its_completion_whoever_reaps_it() {
    let (mut c, mut dma, _clock, m) = up(1024, 64);
    m.0.borrow_mut().reverse = true;
    let mut owners = Owners::new();
    let mut pool = Pool::new(&mut dma, 8, 8192).unwrap();
    let mut batch = Batch::new(reads(6), &mut owners);
    let mut t = owners.join();
    assert_eq!(submit(&mut batch, &mut c, &mut owners, &mut pool, &dma), 6);
    let cid = flush_cid(&mut c, &mut owners, &mut t, &dma);
    // The batch reaps first: it finds the flush's completion and hands it over.
    reap(&mut batch, &mut c, &mut owners, &mut pool, &dma);
    assert!(batch.done());
    assert!(
        owners.take_handed(),
        "the batch reaped the flush's completion"
    );
    match look(&mut c, &mut owners, &mut t, &dma, cid) {
        Look::Completed(done) => assert_eq!(done.result(), Ok(0)),
        other => panic!("the flush's completion was lost: {other:?}"),
    }
    assert_eq!(m.0.borrow().flushes, 1);
    assert!(batch.results(&mut owners).iter().all(Result::is_ok));
    owners.leave(t);
    assert_eq!(owners.in_flight(), 0);
}

#[test]
fn a_reset_drops_the_command_and_the_next_look_says_so() {
    let (mut c, dma, mut clock, m) = up(1024, 64);
    let mut owners = Owners::new();
    let mut t = owners.join();
    m.0.borrow_mut().silent = true;
    let cid = flush_cid(&mut c, &mut owners, &mut t, &dma);
    assert_eq!(look(&mut c, &mut owners, &mut t, &dma, cid), Look::Pending);
    // Another caller's watch resets the controller.
    m.0.borrow_mut().silent = false;
    c.reset(&dma, &mut clock).expect("reset");
    owners.reset();
    assert_eq!(look(&mut c, &mut owners, &mut t, &dma, cid), Look::Dropped);
    // Submitted again, it completes.
    let cid = flush_cid(&mut c, &mut owners, &mut t, &dma);
    assert!(matches!(
        look(&mut c, &mut owners, &mut t, &dma, cid),
        Look::Completed(_)
    ));
}

#[test]
fn a_queue_full_of_others_commands_is_waited_out() {
    // 8 entries: 7 commands at most on the queue.
    let (mut c, mut dma, _clock, _m) = up(1024, 8);
    let mut owners = Owners::new();
    let mut pool = Pool::new(&mut dma, 16, 8192).unwrap();
    let mut batch = Batch::new(reads(7), &mut owners);
    let mut t = owners.join();
    assert_eq!(submit(&mut batch, &mut c, &mut owners, &mut pool, &dma), 7);
    // Their completions are posted, but their slots are free only once reaped.
    assert_eq!(
        flush(&mut c, &mut owners, &mut t, &dma),
        Ok(Submitted::Full)
    );
    reap(&mut batch, &mut c, &mut owners, &mut pool, &dma);
    assert!(matches!(
        flush(&mut c, &mut owners, &mut t, &dma),
        Ok(Submitted::Cid(_))
    ));
}

#[test]
fn a_full_queue_with_no_other_callers_commands_out_is_an_error() {
    // Nothing of anyone's recorded in flight would ever free a slot: waiting would be
    // for ever.
    let (mut c, dma, _clock, m) = up(1024, 8);
    m.0.borrow_mut().silent = true;
    let mut owners = Owners::new();
    let mut t = owners.join();
    let q = &mut c.io[0];
    while q.submit(&dma, &c.mmio, Command::flush(1)).is_ok() {}
    assert_eq!(
        flush(&mut c, &mut owners, &mut t, &dma),
        Err(Error::QueueFull)
    );
}
