//! `test-storage` (the test build only): the storage checks the bare-QEMU tier and the
//! Xen tier's hvm-nvme run against an NVMe image the host filled with a known pattern
//! and checks afterwards (tests/runner/src/disk.rs).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use bulkhead_block::Target;
use bulkhead_executor::Handle;

use super::*;

/// The byte the storage test expects at byte `i` of block `lba` (same formula as
/// tests/runner/src/disk.rs, which writes and checks the image from the host).
pub fn pattern(seed: u8, lba: u64, i: usize) -> u8 {
    ((lba.wrapping_mul(2_654_435_761).wrapping_add(i as u64 * 97) >> 3) as u8) ^ seed
}

pub const WRITE_SEED: u8 = 0x5a;
pub const WRITE_BYTES: usize = 256 * 1024;
/// After the written range: this many blocks zeroed, then this many discarded.
pub const ZERO_BLOCKS: u64 = 128;
pub const DISCARD_BLOCKS: u64 = 128;

/// `test-storage`: bring up NVMe, list partitions, verify partition 1 holds the host's
/// pattern, write a new pattern at the start of partition 2, flush, read it back, and
/// check that out-of-range requests fail cleanly while the device keeps working.
pub async fn self_test(h: Handle, mode: IrqMode, lose_one: bool) {
    let ok = match storage_steps(&h, mode, lose_one).await {
        Ok(()) => {
            crate::println!("result: name=storage-test pass=1");
            true
        }
        Err(e) => {
            crate::println!(
                "result: name=storage-test pass=0 why=\"{}\"",
                e.replace('"', "'")
            );
            false
        }
    };
    if ok {
        crate::platform::poweroff()
    } else {
        crate::platform::crash()
    }
}

async fn storage_steps(h: &Handle, mode: IrqMode, lose_one: bool) -> Result<(), String> {
    let mut disks = probe(h, mode);
    let d = disks.first_mut().ok_or("no usable NVMe controller")?;
    let ns = d.namespaces().first().cloned().ok_or("no namespace")?;
    let bs = ns.block_size as usize;
    let parts = d
        .partitions(h, ns.nsid)
        .await
        .map_err(|e| format!("partition table: {e}"))?;
    for p in &parts {
        crate::println!(
            "result: name=storage-test step=partition part={}n{}p{} label={} first={} last={} kib={}",
            d.name,
            ns.nsid,
            p.number,
            p.name,
            p.first_lba,
            p.last_lba,
            p.blocks() * bs as u64 / 1024
        );
    }
    let [p1, p2, ..] = parts.as_slice() else {
        return Err("expected two partitions".into());
    };

    // Partition 1 holds the host's pattern (seed 0).
    let mut buf = alloc::vec![0u8; (p1.blocks() as usize * bs).min(1 << 20)];
    d.rw(h, false, ns.nsid, p1.first_lba, &mut buf, true)
        .await
        .map_err(|e| format!("read p1: {e}"))?;
    for (k, block) in buf.chunks(bs).enumerate() {
        let lba = p1.first_lba + k as u64;
        if let Some(i) = (0..bs).find(|&i| block[i] != pattern(0, lba, i)) {
            return Err(format!(
                "p1 block {lba} byte {i} is {:#x}, expected {:#x}",
                block[i],
                pattern(0, lba, i)
            ));
        }
    }
    crate::println!(
        "result: name=storage-test step=pattern-read part={}n{}p1 kib={} pass=1",
        d.name,
        ns.nsid,
        buf.len() / 1024
    );

    // Write a new pattern to the start of partition 2, flush, read back.
    let mut w: Vec<u8> = (0..WRITE_BYTES)
        .map(|o| pattern(WRITE_SEED, p2.first_lba + (o / bs) as u64, o % bs))
        .collect();
    d.rw(h, true, ns.nsid, p2.first_lba, &mut w, true)
        .await
        .map_err(|e| format!("write p2: {e}"))?;
    d.flush(h, ns.nsid)
        .await
        .map_err(|e| format!("flush: {e}"))?;
    let mut r = alloc::vec![0u8; WRITE_BYTES];
    d.rw(h, false, ns.nsid, p2.first_lba, &mut r, true)
        .await
        .map_err(|e| format!("read back p2: {e}"))?;
    if r != w {
        return Err("data read back from p2 differs from what was written".into());
    }
    crate::println!(
        "result: name=storage-test step=write-flush-read part={}n{}p2 block={} kib={} pass=1",
        d.name,
        ns.nsid,
        p2.first_lba,
        WRITE_BYTES / 1024
    );

    // Past the end: refused by the driver, and by the controller when sent anyway.
    let mut one = alloc::vec![0u8; bs];
    match d.rw(h, false, ns.nsid, ns.blocks, &mut one, true).await {
        Err(_) => crate::println!("result: name=storage-test step=past-end-driver pass=1"),
        Ok(()) => return Err("read past the end succeeded".into()),
    }
    match d.rw(h, false, ns.nsid, ns.blocks, &mut one, false).await {
        Err(Error::Command(s)) => crate::println!(
            "result: name=storage-test step=past-end-controller sct={:#x} sc={:#x} pass=1",
            s.sct,
            s.sc
        ),
        Err(e) => return Err(format!("past-the-end read failed oddly: {e}")),
        Ok(()) => return Err("controller accepted a read past the end".into()),
    }
    d.rw(h, false, ns.nsid, 0, &mut one, true)
        .await
        .map_err(|e| format!("read after the error: {e}"))?;
    crate::println!("result: name=storage-test step=works-after-errors pass=1");

    // Partition 2 by number and by name through the block-device interface.
    let all_parts = alloc::vec![(0usize, ns.nsid, parts.clone())];
    let all_ns: Vec<Vec<Namespace>> = disks.iter().map(|d| d.namespaces().to_vec()).collect();
    let listed = listed(&all_ns, &all_parts);
    let by_number = Target::parse("nvme0n1p2")
        .ok_or("target syntax")?
        .resolve(&listed)
        .map_err(|_| "nvme0n1p2 not found")?;
    let by_name = Target::parse("part:beta")
        .ok_or("target syntax")?
        .resolve(&listed)
        .map_err(|_| "part:beta not found")?;
    if by_number != by_name {
        return Err(format!(
            "nvme0n1p2 and part:beta differ: {by_number:?} vs {by_name:?}"
        ));
    }
    let d = &mut disks[0];
    let features = d.features();
    let extent = by_name.2;
    crate::println!(
        "result: name=storage-test step=targets first={} blocks={} pass=1",
        extent.first,
        extent.blocks
    );
    let zeroed = (WRITE_BYTES / bs) as u64;
    d.write_zeroes(h, ns.nsid, extent.first + zeroed, ZERO_BLOCKS)
        .await
        .map_err(|e| format!("write zeroes: {e}"))?;
    let shared: SharedDisk = Rc::new(Mutex::new(disks.remove(0)));
    let mut view = Volume {
        disk: shared.clone(),
        h: h.clone(),
        nsid: ns.nsid,
        extent,
        features,
    };
    let mut z = alloc::vec![0xffu8; ZERO_BLOCKS as usize * bs];
    view.read(zeroed, &mut z)
        .await
        .map_err(|e| format!("read zeroed range: {e}"))?;
    if z.iter().any(|b| *b != 0) {
        return Err("write zeroes left non-zero data".into());
    }
    view.discard(zeroed + ZERO_BLOCKS, DISCARD_BLOCKS)
        .await
        .map_err(|e| format!("discard: {e}"))?;
    let mut one = alloc::vec![0u8; bs];
    match view.read(extent.blocks, &mut one).await {
        Err(BlockError::OutOfRange) => {}
        other => return Err(format!("read past the partition end gave {other:?}")),
    }
    match view
        .write(extent.blocks - 1, &alloc::vec![0u8; 2 * bs])
        .await
    {
        Err(BlockError::OutOfRange) => {}
        other => return Err(format!("write across the partition end gave {other:?}")),
    }
    view.flush().await.map_err(|e| format!("flush: {e}"))?;
    crate::println!(
        "result: name=storage-test step=zero-discard-bounds zeroed_kib={} discarded_kib={} pass=1",
        ZERO_BLOCKS as usize * bs / 1024,
        DISCARD_BLOCKS as usize * bs / 1024
    );
    drop(view);
    let mut d = shared.try_lock().ok_or("disk still in use")?;
    if lose_one {
        // A command the controller never sees: timeout, abort attempt, reset, re-issue.
        d.timeout_ns = 2_000_000_000;
        d.lose_next_command = true;
        let mut again = alloc::vec![0u8; 64 * 1024];
        d.rw(h, false, ns.nsid, p2.first_lba, &mut again, true)
            .await
            .map_err(|e| format!("read after a lost command: {e}"))?;
        if again[..] != w[..again.len()] {
            return Err("data read after the controller reset differs".into());
        }
        crate::println!(
            "result: name=storage-test step=lost-command resets={} pass=1",
            d.resets()
        );
        // A single command (a flush) lost: the driver asks the controller to abort it
        // before it resets.
        d.lose_next_command = true;
        d.flush(h, ns.nsid)
            .await
            .map_err(|e| format!("flush after a lost command: {e}"))?;
        crate::println!(
            "result: name=storage-test step=lost-flush resets={} pass=1",
            d.resets()
        );
        d.timeout_ns = IO_TIMEOUT_NS;
    }
    let interrupts: u64 = (0x40..0x60)
        .map(|v| crate::arch::interrupts::COUNT[v].load(Ordering::Relaxed))
        .sum();
    let noticed = d.mode == IrqMode::Poll || interrupts > 0;
    crate::println!(
        "result: name=storage-test step=completions mode={:?} interrupts={interrupts} pass={}",
        d.mode,
        u8::from(noticed)
    );
    if !noticed {
        return Err("interrupt mode but no device interrupt was taken".into());
    }
    Ok(())
}
