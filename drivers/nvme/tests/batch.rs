//! Many commands in flight on one queue, against the controller model: back-pressure
//! from the DMA pool and the queue, completions out of order, a failed command among
//! many, a reset with commands in flight.

mod model;
mod queue;

use bulkhead_nvme::batch::{Batch, Op};
use bulkhead_nvme::controller::Controller;
use bulkhead_nvme::owners::Owners;
use bulkhead_nvme::pool::Pool;
use bulkhead_nvme::prp::Pages;
use bulkhead_nvme::{Dma, Error};
use model::{Model, ModelDma, BLOCK};
use queue::{reap, submit, up};

fn read_op(lba: u64, blocks: u32) -> Op {
    Op {
        write: false,
        nsid: 1,
        lba,
        blocks,
        bytes: blocks as usize * BLOCK,
        direct: None,
    }
}

/// What the model's disk holds at `lba` (its initial pattern).
fn pattern(lba: u64, bytes: usize) -> Vec<u8> {
    (0..bytes)
        .map(|j| {
            let i = lba as usize * BLOCK + j;
            (i / BLOCK) as u8 ^ (i as u8)
        })
        .collect()
}

/// Run a batch to its end, the way the kernel will: submit what fits, reap, repeat.
fn run(
    c: &mut Controller<Model>,
    dma: &mut ModelDma<model::State>,
    pool: &mut Pool,
    mut batch: Batch,
    owners: &mut Owners,
    data: &mut [Vec<u8>],
) -> (Vec<Result<(), Error>>, usize) {
    let mut most_in_flight = 0;
    let mut rounds = 0;
    while !batch.done() {
        rounds += 1;
        assert!(rounds < 10_000, "the batch never ended");
        let q = &mut c.io[0];
        batch.submit(q, owners, pool, &*dma, &c.mmio, |i, b| {
            dma.write(b.data, &data[i])
        });
        most_in_flight = most_in_flight.max(batch.in_flight());
        batch.reap(q, owners, pool, &*dma, &c.mmio, |i, b| {
            let mut out = vec![0u8; data[i].len()];
            dma.read(b.data, &mut out);
            data[i] = out;
        });
    }
    (batch.results(owners), most_in_flight)
}

#[test]
fn many_reads_in_flight_each_get_their_own_data() {
    let (mut c, mut dma, _clock, m) = up(4096, 64);
    let mut owners = Owners::new();
    let mut pool = Pool::new(&mut dma, 8, 16 * 1024).unwrap();
    m.0.borrow_mut().reverse = true;
    let ops: Vec<Op> = (0..40)
        .map(|k| read_op(k * 97 % 4000, 8 + (k % 3) as u32 * 8))
        .collect();
    let mut data: Vec<Vec<u8>> = ops.iter().map(|o| vec![0u8; o.bytes]).collect();
    let (results, most) = run(
        &mut c,
        &mut dma,
        &mut pool,
        Batch::new(ops.clone(), &mut owners),
        &mut owners,
        &mut data,
    );
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    for (o, d) in ops.iter().zip(&data) {
        assert_eq!(d, &pattern(o.lba, o.bytes), "read of lba {}", o.lba);
    }
    assert_eq!(most, 8, "as many in flight as the pool has buffers");
    assert_eq!(pool.available(), 8, "every buffer came back");
    assert!(
        pool.stats.empty > 0,
        "the pool ran empty: back-pressure, not errors"
    );
}

#[test]
fn writes_then_reads_round_trip_with_completions_out_of_order() {
    let (mut c, mut dma, _clock, m) = up(4096, 16);
    let mut owners = Owners::new();
    let mut pool = Pool::new(&mut dma, 6, 64 * 1024).unwrap();
    m.0.borrow_mut().reverse = true;
    let writes: Vec<Op> = (0..12)
        .map(|k| Op {
            write: true,
            ..read_op(100 + k * 128, 128)
        })
        .collect();
    let mut data: Vec<Vec<u8>> = (0..12)
        .map(|k| (0..128 * BLOCK).map(|j| (j * 7 + k * 13) as u8).collect())
        .collect();
    let want = data.clone();
    let (results, _) = run(
        &mut c,
        &mut dma,
        &mut pool,
        Batch::new(writes.clone(), &mut owners),
        &mut owners,
        &mut data,
    );
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let reads: Vec<Op> = writes
        .iter()
        .map(|w| Op {
            write: false,
            ..w.clone()
        })
        .collect();
    let mut back: Vec<Vec<u8>> = reads.iter().map(|o| vec![0u8; o.bytes]).collect();
    let (results, _) = run(
        &mut c,
        &mut dma,
        &mut pool,
        Batch::new(reads, &mut owners),
        &mut owners,
        &mut back,
    );
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(back, want);
}

#[test]
fn a_failed_command_among_many_fails_its_operation_only() {
    let (mut c, mut dma, _clock, _m) = up(1024, 64);
    let mut owners = Owners::new();
    let mut pool = Pool::new(&mut dma, 4, 8192).unwrap();
    let mut ops: Vec<Op> = (0..10).map(|k| read_op(k * 16, 16)).collect();
    ops[4] = read_op(5000, 16); // past the end of the disk
    ops[7].bytes = 64 * 1024; // larger than a buffer
    ops[7].blocks = 128;
    let mut data: Vec<Vec<u8>> = ops.iter().map(|o| vec![0u8; o.bytes]).collect();
    let (results, _) = run(
        &mut c,
        &mut dma,
        &mut pool,
        Batch::new(ops.clone(), &mut owners),
        &mut owners,
        &mut data,
    );
    for (k, r) in results.iter().enumerate() {
        match k {
            4 => assert!(matches!(r, Err(Error::Command(_))), "{r:?}"),
            7 => assert!(matches!(r, Err(Error::Invalid(_))), "{r:?}"),
            _ => {
                assert!(r.is_ok(), "op {k}: {r:?}");
                assert_eq!(data[k], pattern(ops[k].lba, ops[k].bytes));
            }
        }
    }
    assert_eq!(pool.available(), 4);
}

#[test]
fn a_small_queue_is_back_pressure_too() {
    // 4 entries: at most 3 commands queued at once, whatever the pool holds.
    let (mut c, mut dma, _clock, _m) = up(1024, 4);
    let mut owners = Owners::new();
    let mut pool = Pool::new(&mut dma, 16, 4096).unwrap();
    let ops: Vec<Op> = (0..30).map(|k| read_op(k * 8, 8)).collect();
    let mut data: Vec<Vec<u8>> = ops.iter().map(|o| vec![0u8; o.bytes]).collect();
    let (results, most) = run(
        &mut c,
        &mut dma,
        &mut pool,
        Batch::new(ops, &mut owners),
        &mut owners,
        &mut data,
    );
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(most, 3);
}

#[test]
fn commands_dropped_by_a_reset_are_submitted_again() {
    let (mut c, mut dma, mut clock, m) = up(1024, 64);
    let mut owners = Owners::new();
    let mut pool = Pool::new(&mut dma, 4, 8192).unwrap();
    let ops: Vec<Op> = (0..6).map(|k| read_op(k * 16, 16)).collect();
    let mut data: Vec<Vec<u8>> = ops.iter().map(|o| vec![0u8; o.bytes]).collect();
    let mut batch = Batch::new(ops.clone(), &mut owners);
    // The controller takes the first four and never answers.
    m.0.borrow_mut().silent = true;
    assert_eq!(submit(&mut batch, &mut c, &mut owners, &mut pool, &dma), 4);
    assert_eq!(reap(&mut batch, &mut c, &mut owners, &mut pool, &dma), 0);
    m.0.borrow_mut().silent = false;
    c.reset(&dma, &mut clock).expect("reset");
    assert_eq!(
        {
            owners.reset();
            batch.catch_up(&owners, &mut pool)
        },
        4
    );
    assert_eq!(pool.available(), 4);
    let (results, _) = run(&mut c, &mut dma, &mut pool, batch, &mut owners, &mut data);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    for (o, d) in ops.iter().zip(&data) {
        assert_eq!(d, &pattern(o.lba, o.bytes));
    }
}

#[test]
fn a_controller_given_up_on_ends_every_operation_once() {
    let (mut c, mut dma, _clock, m) = up(1024, 64);
    let mut owners = Owners::new();
    let mut pool = Pool::new(&mut dma, 2, 8192).unwrap();
    let ops: Vec<Op> = (0..5).map(|k| read_op(k * 16, 16)).collect();
    let mut batch = Batch::new(ops, &mut owners);
    m.0.borrow_mut().silent = true;
    submit(&mut batch, &mut c, &mut owners, &mut pool, &dma);
    batch.fail_rest(&mut pool, Error::Fatal, false);
    assert!(batch.done());
    assert_eq!(
        pool.available(),
        0,
        "buffers the device may still write stay out"
    );
    let results = batch.results(&mut owners);
    assert_eq!(results.len(), 5);
    assert!(results.iter().all(|r| *r == Err(Error::Fatal)));
}

#[test]
fn direct_operations_move_data_in_the_callers_memory_and_leave_the_pool_buffers_alone() {
    let (mut c, mut dma, _clock, m) = up(4096, 16);
    let mut owners = Owners::new();
    let mut pool = Pool::new(&mut dma, 4, 64 * 1024).unwrap();
    m.0.borrow_mut().reverse = true;
    // The caller's memory: a region of the model's physical memory, not page-aligned
    // (dword-aligned: PRP1 takes an offset), each operation its own stretch.
    let mut region = dma.alloc(16 * 64 * 1024 + 4096).unwrap() + 12;
    let mut ops = Vec::new();
    for k in 0..12u64 {
        let blocks = 8 + (k % 4) as u32 * 32; // 4 KiB to 52 KiB: 1 page to a PRP list
        ops.push(Op {
            write: true,
            direct: Some(Pages::contiguous(region, blocks as usize * BLOCK)),
            ..read_op(200 + k * 150, blocks)
        });
        let data: Vec<u8> = (0..blocks as usize * BLOCK)
            .map(|j| (j * 5 + k as usize) as u8)
            .collect();
        dma.write(region, &data);
        region += data.len() as u64 + 4;
    }
    let mut unused: Vec<Vec<u8>> = vec![Vec::new(); ops.len()];
    let fill_never =
        |_: usize, _: &bulkhead_nvme::pool::Buffer| panic!("a direct write was copied");
    let mut batch = Batch::new(ops.clone(), &mut owners);
    while !batch.done() {
        let q = &mut c.io[0];
        batch.submit(q, &mut owners, &mut pool, &dma, &c.mmio, fill_never);
        batch.reap(q, &mut owners, &mut pool, &dma, &c.mmio, |_, _| {
            panic!("a write has nothing to drain")
        });
    }
    assert!(batch.results(&mut owners).iter().all(Result::is_ok));
    // Read them back directly into other memory, and compare with what was written.
    let back_at = dma.alloc(16 * 64 * 1024).unwrap() + 8;
    let mut at = back_at;
    let reads: Vec<Op> = ops
        .iter()
        .map(|o| {
            let r = Op {
                write: false,
                direct: Some(Pages::contiguous(at, o.bytes)),
                ..o.clone()
            };
            at += o.bytes as u64;
            r
        })
        .collect();
    let mut batch = Batch::new(reads.clone(), &mut owners);
    while !batch.done() {
        let q = &mut c.io[0];
        batch.submit(q, &mut owners, &mut pool, &dma, &c.mmio, |_, _| ());
        batch.reap(q, &mut owners, &mut pool, &dma, &c.mmio, |_, _| {
            panic!("a direct read was copied")
        });
    }
    assert!(batch.results(&mut owners).iter().all(Result::is_ok));
    for (w, r) in ops.iter().zip(&reads) {
        let mut a = vec![0u8; w.bytes];
        let mut b = vec![0u8; w.bytes];
        read_pages(&dma, w.direct.as_ref().unwrap(), &mut a);
        read_pages(&dma, r.direct.as_ref().unwrap(), &mut b);
        assert_eq!(a, b, "lba {}", w.lba);
    }
    assert_eq!(pool.available(), 4, "every buffer came back");
    let _ = &mut unused;
}

#[test]
fn a_direct_operation_larger_than_its_buffer_fails_alone() {
    let (mut c, mut dma, _clock, _m) = up(1024, 16);
    let mut owners = Owners::new();
    let mut pool = Pool::new(&mut dma, 2, 8192).unwrap();
    let at = dma.alloc(64 * 1024).unwrap();
    let ops = vec![
        Op {
            direct: Some(Pages::contiguous(at, 16 * BLOCK)),
            ..read_op(0, 16)
        },
        Op {
            direct: Some(Pages::contiguous(at + 8192, 64 * BLOCK)),
            ..read_op(16, 64)
        }, // 32 KiB > 8 KiB buffers
        Op {
            direct: Some(Pages::contiguous(at + 2, 8 * BLOCK)),
            ..read_op(32, 8)
        }, // not dword-aligned
    ];
    let mut batch = Batch::new(ops, &mut owners);
    while !batch.done() {
        let q = &mut c.io[0];
        batch.submit(q, &mut owners, &mut pool, &dma, &c.mmio, |_, _| ());
        batch.reap(q, &mut owners, &mut pool, &dma, &c.mmio, |_, _| ());
    }
    let r = batch.results(&mut owners);
    assert!(r[0].is_ok(), "{r:?}");
    assert!(r[1].is_err() && r[2].is_err(), "{r:?}");
    assert_eq!(pool.available(), 2);
}

/// Bytes of `len` from memory in PRP form.
fn read_pages(dma: &impl Dma, mem: &Pages, out: &mut [u8]) {
    let mut at = 0;
    let mut offset = mem.offset;
    for &p in &mem.pages {
        let n = (4096 - offset).min(out.len() - at);
        dma.read(p + offset as u64, &mut out[at..at + n]);
        at += n;
        offset = 0;
        if at == out.len() {
            break;
        }
    }
}

#[test]
fn direct_operations_reach_scattered_pages_in_the_order_given() {
    // A guest's pages: anywhere, in any order. What is written through them in one
    // order reads back through a contiguous buffer in that order.
    let (mut c, mut dma, _clock, _m) = up(1024, 16);
    let mut owners = Owners::new();
    let mut pool = Pool::new(&mut dma, 2, 64 * 1024).unwrap();
    let base = dma.alloc(16 * 4096).unwrap();
    let pages: Vec<u64> = [9u64, 2, 14, 5, 0, 11]
        .iter()
        .map(|i| base + i * 4096)
        .collect();
    for (k, &p) in pages.iter().enumerate() {
        dma.write(p, &vec![k as u8 + 1; 4096]);
    }
    let write = Op {
        write: true,
        direct: Some(Pages {
            offset: 0,
            pages: pages.clone(),
        }),
        ..read_op(40, 48)
    };
    let back = dma.alloc(6 * 4096).unwrap();
    let read = Op {
        direct: Some(Pages::contiguous(back, 6 * 4096)),
        ..read_op(40, 48)
    };
    for op in [write, read] {
        let mut batch = Batch::new(vec![op], &mut owners);
        while !batch.done() {
            let q = &mut c.io[0];
            batch.submit(q, &mut owners, &mut pool, &dma, &c.mmio, |_, _| {
                panic!("copied")
            });
            batch.reap(q, &mut owners, &mut pool, &dma, &c.mmio, |_, _| {
                panic!("copied")
            });
        }
        assert!(batch.results(&mut owners).iter().all(Result::is_ok));
    }
    let mut got = vec![0u8; 6 * 4096];
    dma.read(back, &mut got);
    for k in 0..6 {
        assert!(
            got[k * 4096..(k + 1) * 4096]
                .iter()
                .all(|&b| b == k as u8 + 1),
            "page {k}"
        );
    }
}

/// Two callers' batches on one queue, each looking in turn (the kernel's vbds of two
/// guests): what one reaps for the other waits in the other's stash.
fn run_two(
    c: &mut Controller<Model>,
    dma: &mut ModelDma<model::State>,
    pool: &mut Pool,
    owners: &mut Owners,
    batches: [Batch; 2],
    data: &mut [Vec<Vec<u8>>; 2],
) -> ([Vec<Result<(), Error>>; 2], bool) {
    let [mut a, mut b] = batches;
    let mut handed = false;
    let mut rounds = 0;
    while !(a.done() && b.done()) {
        rounds += 1;
        assert!(rounds < 10_000, "the batches never ended");
        // Both submit, then both reap: the first to reap finds the other's completions.
        for (k, batch) in [&mut a, &mut b].into_iter().enumerate() {
            let d = &data[k];
            batch.submit(&mut c.io[0], owners, pool, &*dma, &c.mmio, |i, buf| {
                dma.write(buf.data, &d[i])
            });
        }
        for (k, batch) in [&mut a, &mut b].into_iter().enumerate() {
            let d = &mut data[k];
            batch.reap(&mut c.io[0], owners, pool, &*dma, &c.mmio, |i, buf| {
                let mut out = vec![0u8; d[i].len()];
                dma.read(buf.data, &mut out);
                d[i] = out;
            });
            handed |= owners.take_handed();
        }
    }
    ([a.results(owners), b.results(owners)], handed)
}

#[test]
fn two_batches_on_one_queue_each_end_only_with_their_own_completions() {
    let (mut c, mut dma, _clock, m) = up(4096, 64);
    let mut owners = Owners::new();
    let mut pool = Pool::new(&mut dma, 8, 16 * 1024).unwrap();
    m.0.borrow_mut().reverse = true;
    let a: Vec<Op> = (0..20).map(|k| read_op(k * 16, 8)).collect();
    let b: Vec<Op> = (0..20).map(|k| read_op(2000 + k * 24, 16)).collect();
    let mut data = [
        a.iter().map(|o| vec![0u8; o.bytes]).collect(),
        b.iter().map(|o| vec![0u8; o.bytes]).collect(),
    ];
    let batches = [
        Batch::new(a.clone(), &mut owners),
        Batch::new(b.clone(), &mut owners),
    ];
    let (results, handed) = run_two(&mut c, &mut dma, &mut pool, &mut owners, batches, &mut data);
    assert!(handed, "one batch reaped the other's completions");
    for (k, ops) in [a, b].iter().enumerate() {
        assert!(results[k].iter().all(Result::is_ok), "{:?}", results[k]);
        for (o, d) in ops.iter().zip(&data[k]) {
            assert_eq!(d, &pattern(o.lba, o.bytes), "batch {k}, lba {}", o.lba);
        }
    }
    assert_eq!(owners.in_flight(), 0);
    assert_eq!(pool.available(), 8, "every buffer came back");
}

#[test]
fn a_reset_one_caller_asks_for_makes_every_caller_submit_again() {
    let (mut c, mut dma, mut clock, m) = up(1024, 64);
    let mut owners = Owners::new();
    let mut pool = Pool::new(&mut dma, 6, 8192).unwrap();
    let a: Vec<Op> = (0..5).map(|k| read_op(k * 16, 16)).collect();
    let b: Vec<Op> = (0..5).map(|k| read_op(500 + k * 16, 16)).collect();
    let mut ba = Batch::new(a.clone(), &mut owners);
    let mut bb = Batch::new(b.clone(), &mut owners);
    // Both have commands at a controller that never answers (B one: the pool is empty).
    m.0.borrow_mut().silent = true;
    assert_eq!(submit(&mut ba, &mut c, &mut owners, &mut pool, &dma), 5);
    assert_eq!(submit(&mut bb, &mut c, &mut owners, &mut pool, &dma), 1);
    assert_eq!(pool.available(), 0);
    // The first caller's watch gives up waiting and resets the controller.
    m.0.borrow_mut().silent = false;
    c.reset(&dma, &mut clock).expect("reset");
    owners.reset();
    assert_eq!(ba.catch_up(&owners, &mut pool), 5);
    // The second finds out at its next look, before it submits anything new.
    let mut data = [
        a.iter().map(|o| vec![0u8; o.bytes]).collect(),
        b.iter().map(|o| vec![0u8; o.bytes]).collect(),
    ];
    let (results, _) = run_two(
        &mut c,
        &mut dma,
        &mut pool,
        &mut owners,
        [ba, bb],
        &mut data,
    );
    for (k, ops) in [a, b].iter().enumerate() {
        assert!(results[k].iter().all(Result::is_ok), "{:?}", results[k]);
        for (o, d) in ops.iter().zip(&data[k]) {
            assert_eq!(d, &pattern(o.lba, o.bytes), "batch {k}, lba {}", o.lba);
        }
    }
    assert_eq!(pool.available(), 6, "every buffer came back");
}

#[test]
fn a_completion_stashed_before_a_reset_never_ends_the_command_that_reuses_its_id() {
    let (mut c, mut dma, mut clock, m) = up(1024, 8);
    let mut owners = Owners::new();
    let mut pool = Pool::new(&mut dma, 8, 8192).unwrap();
    let mut ba = Batch::new(vec![read_op(0, 16)], &mut owners);
    let mut bb = Batch::new(vec![read_op(100, 16), read_op(200, 16)], &mut owners);
    submit(&mut ba, &mut c, &mut owners, &mut pool, &dma);
    submit(&mut bb, &mut c, &mut owners, &mut pool, &dma);
    // A reaps all three completions: B's wait in its stash...
    assert_eq!(reap(&mut ba, &mut c, &mut owners, &mut pool, &dma), 1);
    assert!(owners.take_handed());
    // ...when another caller resets the controller. The ids are free again; B submits
    // its commands anew (they take the same ids) at a controller that does not answer.
    c.reset(&dma, &mut clock).expect("reset");
    owners.reset();
    m.0.borrow_mut().silent = true;
    // A third caller takes the ids after the old ones, so that B's wrap round to them.
    let mut bc = Batch::new(
        (0..5).map(|k| read_op(300 + k * 16, 16)).collect(),
        &mut owners,
    );
    assert_eq!(submit(&mut bc, &mut c, &mut owners, &mut pool, &dma), 5);
    assert_eq!(submit(&mut bb, &mut c, &mut owners, &mut pool, &dma), 2);
    assert_eq!(
        reap(&mut bb, &mut c, &mut owners, &mut pool, &dma),
        0,
        "nothing completed since the reset"
    );
    assert!(!bb.done());
}

#[test]
fn a_caller_that_leaves_with_commands_out_leaves_nothing_behind() {
    let (mut c, mut dma, _clock, m) = up(1024, 64);
    let mut owners = Owners::new();
    let mut pool = Pool::new(&mut dma, 4, 8192).unwrap();
    let mut ba = Batch::new((0..4).map(|k| read_op(k * 16, 16)).collect(), &mut owners);
    m.0.borrow_mut().silent = true;
    submit(&mut ba, &mut c, &mut owners, &mut pool, &dma);
    assert_eq!(owners.in_flight(), 4);
    ba.fail_rest(&mut pool, Error::Fatal, false);
    assert!(ba
        .results(&mut owners)
        .iter()
        .all(|r| *r == Err(Error::Fatal)));
    assert_eq!(owners.in_flight(), 0, "its ids are no one's");
}

#[test]
fn a_batch_submits_nothing_while_a_completion_reaped_for_it_waits() {
    // The queue frees a command id when anyone reaps its completion; the owner must
    // take that completion before its next command can take the id.
    let (mut c, mut dma, _clock, _m) = up(1024, 64);
    let mut owners = Owners::new();
    let mut pool = Pool::new(&mut dma, 8, 8192).unwrap();
    let mut ba = Batch::new((0..3).map(|k| read_op(k * 16, 16)).collect(), &mut owners);
    let mut bb = Batch::new(vec![read_op(500, 16)], &mut owners);
    // Two buffers left: B takes one, A the other (one command of its three).
    let mut spare: Vec<_> = (0..6).map(|_| pool.take().unwrap()).collect();
    assert_eq!(submit(&mut bb, &mut c, &mut owners, &mut pool, &dma), 1);
    assert_eq!(submit(&mut ba, &mut c, &mut owners, &mut pool, &dma), 1);
    assert_eq!(reap(&mut bb, &mut c, &mut owners, &mut pool, &dma), 1);
    assert!(owners.take_handed(), "B reaped A's completion for it");
    pool.give(spare.pop().unwrap());
    assert_eq!(
        submit(&mut ba, &mut c, &mut owners, &mut pool, &dma),
        0,
        "not while its completion waits"
    );
    assert_eq!(reap(&mut ba, &mut c, &mut owners, &mut pool, &dma), 1);
    assert!(submit(&mut ba, &mut c, &mut owners, &mut pool, &dma) > 0);
    for b in spare {
        pool.give(b);
    }
}
