//! The driver against the controller model: bring-up, I/O with PRPs and lists, errors,
//! and a controller that misbehaves.

mod model;

use bulkhead_nvme::cmd::Command;
use bulkhead_nvme::controller::{run_polled, Config, Controller};
use bulkhead_nvme::{prp, Dma, Error, PAGE_SIZE};
use model::{FakeClock, Model, ModelDma, BLOCK};

fn cfg() -> Config {
    Config {
        io_queues: 2,
        io_entries: 64,
        vector: |i| Some(i + 1),
        max_transfer: 2 << 20,
    }
}

fn up(blocks: usize) -> (Controller<Model>, ModelDma<model::State>, FakeClock, Model) {
    let m = Model::new(blocks);
    let mut dma = ModelDma(m.0.clone());
    let mut clock = FakeClock::default();
    let c = Controller::init(m.clone(), &mut dma, &mut clock, &cfg()).expect("bring-up");
    (c, dma, clock, m)
}

/// Read or write through queue 1 with a contiguous buffer, PRP lists as needed.
fn rw(
    c: &mut Controller<Model>,
    dma: &mut ModelDma<model::State>,
    clock: &mut FakeClock,
    write: bool,
    lba: u64,
    data: &mut [u8],
) -> Result<(), Error> {
    let len = data.len();
    let buf = dma.alloc(len)?;
    if write {
        dma.write(buf, data);
    }
    let pages: Vec<u64> = (0..len.div_ceil(PAGE_SIZE) as u64)
        .map(|i| buf + i * 4096)
        .collect();
    let lists: Vec<u64> = (0..prp::list_pages_needed(pages.len()))
        .map(|_| dma.alloc(4096).unwrap())
        .collect();
    let p = prp::build(&pages, 0, len, &lists)?;
    for (addr, entries) in &p.lists {
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        dma.write(*addr, &bytes);
    }
    let cmd = Command::rw(write, 1, lba, (len / BLOCK) as u32, p.prp1, p.prp2);
    let r = run_polled(&mut c.io[0], dma, &c.mmio, clock, cmd, 1_000_000, "I/O")
        .and_then(|x| x.result());
    if !write && r.is_ok() {
        dma.read(buf, data);
    }
    r.map(|_| ())
}

#[test]
fn brings_up_and_identifies() {
    let (c, _, _, m) = up(2048);
    assert_eq!(c.info.model, "Model NVMe");
    assert_eq!(c.info.max_transfer, Some(4096 << 5));
    assert!(c.info.volatile_write_cache && c.info.dsm && c.info.write_zeroes);
    assert_eq!(c.namespaces.len(), 1);
    assert_eq!(
        (c.namespaces[0].blocks, c.namespaces[0].block_size),
        (2048, 512)
    );
    assert_eq!(c.io.len(), 2, "two I/O queue pairs created");
    assert_eq!(c.max_transfer, 128 * 1024);
    // Interrupt vectors were requested as configured.
    let cmds = &m.0.borrow().commands;
    assert!(cmds.iter().any(|c| c.opcode == 0x05 && c.cdw11 >> 16 == 2));
}

#[test]
fn controller_grants_fewer_queues() {
    let m = Model::new(64);
    m.0.borrow_mut().max_queues = 1;
    let mut dma = ModelDma(m.0.clone());
    let c = Controller::init(m.clone(), &mut dma, &mut FakeClock::default(), &cfg()).unwrap();
    assert_eq!(c.io.len(), 1);
}

#[test]
fn read_write_round_trip_with_prp_lists() {
    let (mut c, mut dma, mut clock, m) = up(4096);
    // Reads return what the disk holds, across 1, 2 and many pages.
    for len in [512usize, 4096, 8192, 64 * 1024, 128 * 1024] {
        let mut buf = vec![0u8; len];
        rw(&mut c, &mut dma, &mut clock, false, 7, &mut buf).unwrap();
        assert_eq!(
            buf,
            m.0.borrow().disk[7 * BLOCK..7 * BLOCK + len],
            "read of {len} bytes"
        );
    }
    let mut data: Vec<u8> = (0..96 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    rw(&mut c, &mut dma, &mut clock, true, 100, &mut data).unwrap();
    assert_eq!(
        &m.0.borrow().disk[100 * BLOCK..100 * BLOCK + data.len()],
        &data[..]
    );
    let mut back = vec![0u8; data.len()];
    rw(&mut c, &mut dma, &mut clock, false, 100, &mut back).unwrap();
    assert_eq!(back, data);
    let f = run_polled(
        &mut c.io[0],
        &dma,
        &c.mmio,
        &mut clock,
        Command::flush(1),
        1_000_000,
        "flush",
    )
    .unwrap();
    assert!(f.result().is_ok());
    assert_eq!(m.0.borrow().flushes, 1);
}

#[test]
fn out_of_range_is_an_error_and_the_queue_keeps_working() {
    let (mut c, mut dma, mut clock, _) = up(1024);
    let mut buf = vec![0u8; 4096];
    let e = rw(&mut c, &mut dma, &mut clock, false, 1020, &mut buf).unwrap_err();
    assert!(matches!(e, Error::Command(s) if s.sc == 0x80), "{e:?}");
    assert_eq!(
        format!("{e}"),
        "LBA out of range (sct 0x0, sc 0x80, do not retry)"
    );
    rw(&mut c, &mut dma, &mut clock, false, 0, &mut buf).unwrap();
}

#[test]
fn queue_wraps_many_times_with_correct_phase() {
    let (mut c, mut dma, mut clock, m) = up(256);
    for i in 0..300u64 {
        let mut buf = vec![0u8; 512];
        rw(&mut c, &mut dma, &mut clock, false, i % 256, &mut buf).unwrap();
        assert_eq!(buf, m.0.borrow().disk[(i % 256) as usize * BLOCK..][..512]);
    }
    assert_eq!(c.io[0].in_flight(), 0);
}

#[test]
fn queue_full_is_reported() {
    let (mut c, dma, _, m) = up(64);
    m.0.borrow_mut().silent = true;
    let mut n = 0;
    loop {
        match c.io[0].submit(&dma, &c.mmio, Command::flush(1)) {
            Ok(_) => n += 1,
            Err(Error::QueueFull) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(n, 63, "one slot stays empty to tell full from empty");
}

#[test]
fn silent_controller_times_out() {
    let (mut c, dma, mut clock, m) = up(64);
    m.0.borrow_mut().silent = true;
    let r = run_polled(
        &mut c.io[0],
        &dma,
        &c.mmio,
        &mut clock,
        Command::flush(1),
        2_000_000,
        "flush",
    );
    assert_eq!(r, Err(Error::Timeout { what: "flush" }));
    assert!(clock.0 >= 2_000_000);
    assert_eq!(c.io[0].abandon_all().len(), 1);
}

#[test]
fn bogus_completion_is_dropped() {
    let (mut c, mut dma, mut clock, m) = up(64);
    m.0.borrow_mut().bogus_completion = true;
    let mut buf = vec![0u8; 512];
    rw(&mut c, &mut dma, &mut clock, false, 3, &mut buf).unwrap();
    assert_eq!(c.io[0].bogus, 1);
    assert_eq!(buf, m.0.borrow().disk[3 * BLOCK..4 * BLOCK]);
}

#[test]
fn fatal_and_missing_controllers() {
    let m = Model::new(64);
    m.0.borrow_mut().fatal = true;
    let r = Controller::init(
        m.clone(),
        &mut ModelDma(m.0.clone()),
        &mut FakeClock::default(),
        &cfg(),
    );
    assert_eq!(r.err(), Some(Error::Fatal));
    let m = Model::new(64);
    m.0.borrow_mut().gone = true;
    let r = Controller::init(
        m.clone(),
        &mut ModelDma(m.0.clone()),
        &mut FakeClock::default(),
        &cfg(),
    );
    assert!(matches!(r.err(), Some(Error::Device(_))));
}

#[test]
fn shutdown_completes() {
    let (c, _, mut clock, _) = up(64);
    c.shutdown(&mut clock).unwrap();
}

#[test]
fn gpt_through_the_driver() {
    let (mut c, mut dma, mut clock, m) = up(4096);
    // Put a GPT made by the parser's own test builder logic on the model's disk.
    let img = {
        let mut d = m.0.borrow().disk.clone();
        // Minimal: reuse the crate's parser on a table written here.
        let parts = [(2048u64, 2559u64, "alpha"), (2560, 4000, "beta")];
        write_gpt(&mut d, 4096, &parts);
        d
    };
    m.0.borrow_mut().disk = img;
    let parts = bulkhead_nvme::gpt::parse(512, 4096, |lba, buf| {
        rw(&mut c, &mut dma, &mut clock, false, lba, buf).map_err(|_| ())
    })
    .unwrap();
    assert_eq!(
        parts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        vec!["alpha", "beta"]
    );
}

fn write_gpt(d: &mut [u8], blocks: u64, parts: &[(u64, u64, &str)]) {
    let mut entries = vec![0u8; 128 * 128];
    for (i, (first, last, name)) in parts.iter().enumerate() {
        let e = &mut entries[i * 128..(i + 1) * 128];
        e[0] = 0xaf;
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
        for (j, u) in name.encode_utf16().enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
        }
    }
    d[1024..1024 + entries.len()].copy_from_slice(&entries);
    let mut h = vec![0u8; 92];
    h[0..8].copy_from_slice(b"EFI PART");
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[40..48].copy_from_slice(&34u64.to_le_bytes());
    h[48..56].copy_from_slice(&(blocks - 34).to_le_bytes());
    h[72..80].copy_from_slice(&2u64.to_le_bytes());
    h[80..84].copy_from_slice(&128u32.to_le_bytes());
    h[84..88].copy_from_slice(&128u32.to_le_bytes());
    h[88..92].copy_from_slice(&crc32(&entries).to_le_bytes());
    let crc = crc32(&h);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    d[512..604].copy_from_slice(&h);
}

/// An independent bitwise CRC-32 (IEEE), so the test does not trust the crate's choice.
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn lost_command_times_out_then_reset_and_reissue() {
    let (mut c, mut dma, mut clock, m) = up(256);
    // The controller goes silent: the read is never completed.
    let buf = dma.alloc(4096).unwrap();
    let cmd = Command::rw(false, 1, 9, 8, buf, 0);
    m.0.borrow_mut().silent = true;
    let lost = c.io[0].submit(&dma, &c.mmio, cmd).unwrap();
    let mut got = false;
    let start = clock.0;
    while clock.0 - start < 500_000 {
        c.io[0].reap(&dma, &c.mmio, |x| got |= x.cid == lost);
        clock.0 += 1000;
    }
    assert!(!got, "a silent controller completed nothing");
    assert!(
        !c.abort(&dma, &mut clock, 1, lost).unwrap_or(false),
        "abort cannot help a silent controller"
    );
    m.0.borrow_mut().silent = false;
    let in_flight = c.reset(&dma, &mut clock).unwrap();
    assert_eq!(in_flight[0], vec![lost]);
    assert!(in_flight[1..].iter().all(|q| q.is_empty()));
    assert_eq!(c.resets, 1);
    // Re-issue: the queue works again from a clean state.
    let done = run_polled(
        &mut c.io[0],
        &dma,
        &c.mmio,
        &mut clock,
        cmd,
        1_000_000,
        "read",
    )
    .unwrap();
    assert!(done.result().is_ok());
    let mut data = vec![0u8; 4096];
    dma.read(buf, &mut data);
    assert_eq!(data, m.0.borrow().disk[9 * BLOCK..9 * BLOCK + 4096]);
    // And keeps working across many more commands (phase restarted correctly).
    for i in 0..100 {
        let mut b = vec![0u8; 512];
        rw(&mut c, &mut dma, &mut clock, false, i, &mut b).unwrap();
    }
}

#[test]
fn write_zeroes_and_deallocate() {
    let (mut c, mut dma, mut clock, m) = up(256);
    let r = run_polled(
        &mut c.io[0],
        &dma,
        &c.mmio,
        &mut clock,
        Command::write_zeroes(1, 10, 4),
        1_000_000,
        "wz",
    )
    .unwrap();
    assert!(r.result().is_ok());
    assert!(m.0.borrow().disk[10 * BLOCK..14 * BLOCK]
        .iter()
        .all(|b| *b == 0));
    assert!(m.0.borrow().disk[14 * BLOCK..15 * BLOCK]
        .iter()
        .any(|b| *b != 0));
    let list = dma.alloc(4096).unwrap();
    let mut ranges = Vec::new();
    for (slba, nlb) in [(20u64, 2u32), (40, 3)] {
        ranges.extend_from_slice(&0u32.to_le_bytes());
        ranges.extend_from_slice(&nlb.to_le_bytes());
        ranges.extend_from_slice(&slba.to_le_bytes());
    }
    dma.write(list, &ranges);
    let r = run_polled(
        &mut c.io[0],
        &dma,
        &c.mmio,
        &mut clock,
        Command::deallocate(1, 2, list),
        1_000_000,
        "dsm",
    )
    .unwrap();
    assert!(r.result().is_ok());
    assert!(m.0.borrow().disk[40 * BLOCK..43 * BLOCK]
        .iter()
        .all(|b| *b == 0));
    let bad = run_polled(
        &mut c.io[0],
        &dma,
        &c.mmio,
        &mut clock,
        Command::write_zeroes(1, 250, 10),
        1_000_000,
        "wz",
    )
    .unwrap();
    assert!(bad.result().is_err());
}
