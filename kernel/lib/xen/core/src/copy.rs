//! Moving bytes between another domain's granted pages and our own buffers by grant
//! copy: backends describe guest memory as [`Piece`]s and reach it through
//! [`GuestMemory`]; the kernel implements that with batches built by [`copy_ops`].

use alloc::vec::Vec;

use crate::abi::{self, DomId, GrantCopy, GrantCopyPtr, GrantRef, DOMID_SELF};

const PAGE_SIZE: usize = 4096;

/// A piece of one granted guest page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub gref: GrantRef,
    pub offset: u16,
    pub len: u16,
}

/// Xen refused to copy one of the pieces (bad or revoked grant, read-only page...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantFault {
    pub gref: GrantRef,
    pub status: i16,
}

/// What [`GuestMemory::read_new_and_write`] gives back: the reads' buffers, the writes'
/// outcomes.
pub type ReadsAndWrites = (
    Vec<Result<Vec<u8>, GrantFault>>,
    Vec<Result<(), GrantFault>>,
);

/// A packet moved from this memory's domain straight into another domain's buffers
/// ([`GuestMemory::read_new_and_forward`]): our copy of its head into `head_to`, then
/// each piece of `body` (this domain's) into the piece of `body_to` at the same index
/// (as long). Both domains granted their pages to us, so Xen copies between them in
/// one operation per piece without mapping either.
pub struct Forward<'a> {
    pub to: DomId,
    pub head: &'a [u8],
    pub head_to: Piece,
    pub body: &'a [Piece],
    pub body_to: &'a [Piece],
}

/// The frontend domain's granted pages.
pub trait GuestMemory {
    /// Copy `pieces` of guest memory into `buf`, back to back.
    fn read(&mut self, pieces: &[Piece], buf: &mut [u8]) -> Result<(), GrantFault>;
    /// Copy `buf` into `pieces` of guest memory, back to back.
    fn write(&mut self, pieces: &[Piece], buf: &[u8]) -> Result<(), GrantFault>;
    /// Several reads at once, one result per job in order. The kernel makes one
    /// hypercall of a whole batch of packets (each hypercall is a VM exit).
    fn read_all(&mut self, jobs: &mut [(&[Piece], &mut [u8])]) -> Vec<Result<(), GrantFault>> {
        jobs.iter_mut().map(|(p, b)| self.read(p, b)).collect()
    }
    /// Several reads at once into new buffers, each as long as its pieces together: a
    /// data path's way to take a packet without first zeroing the memory the copy
    /// overwrites (the kernel allocates without zeroing; this default zeroes).
    fn read_new(&mut self, jobs: &[&[Piece]]) -> Vec<Result<Vec<u8>, GrantFault>> {
        let mut bufs: Vec<Vec<u8>> = jobs.iter().map(|p| alloc::vec![0u8; total(p)]).collect();
        let results = {
            let mut js: Vec<(&[Piece], &mut [u8])> = jobs
                .iter()
                .zip(bufs.iter_mut())
                .map(|(p, b)| (*p, b.as_mut_slice()))
                .collect();
            self.read_all(&mut js)
        };
        bufs.into_iter()
            .zip(results)
            .map(|(b, r)| r.map(|()| b))
            .collect()
    }
    /// Reads into new buffers ([`GuestMemory::read_new`]) and writes
    /// ([`GuestMemory::write_all`]) at once: the kernel makes one hypercall of a pass
    /// that moves packets both ways. Results in the jobs' order, reads then writes.
    fn read_new_and_write(
        &mut self,
        reads: &[&[Piece]],
        writes: &[(&[Piece], &[u8])],
    ) -> ReadsAndWrites {
        (self.read_new(reads), self.write_all(writes))
    }
    /// Reads into new buffers ([`GuestMemory::read_new`]) and forwards ([`Forward`]) at
    /// once (one hypercall in the kernel). A memory that cannot reach another domain
    /// fails every forward (the caller then answers both sides with errors), so a
    /// caller forwards only with the kernel's.
    fn read_new_and_forward(&mut self, reads: &[&[Piece]], forwards: &[Forward]) -> ReadsAndWrites {
        let failed = forwards
            .iter()
            .map(|f| {
                Err(GrantFault {
                    gref: f.head_to.gref,
                    status: abi::GNTST_GENERAL_ERROR,
                })
            })
            .collect();
        (self.read_new(reads), failed)
    }
    /// Several writes at once, as [`GuestMemory::read_all`].
    fn write_all(&mut self, jobs: &[(&[Piece], &[u8])]) -> Vec<Result<(), GrantFault>> {
        jobs.iter().map(|(p, b)| self.write(p, b)).collect()
    }
}

/// The bytes `pieces` hold together.
pub fn total(pieces: &[Piece]) -> usize {
    pieces.iter().map(|p| p.len as usize).sum()
}

/// Grant-copy operations moving `pieces` of `dom`'s memory to or from our buffer at
/// guest-physical address `local`. A copy may not cross a page on either side, so a
/// piece is split where the buffer crosses one of our pages.
pub fn copy_ops(dom: DomId, pieces: &[Piece], local: u64, to_guest: bool) -> Vec<GrantCopy> {
    let mut ops = Vec::with_capacity(pieces.len() + 1);
    let mut at = local;
    for p in pieces {
        let mut done = 0u16;
        while done < p.len {
            let room = (PAGE_SIZE as u64 - (at % PAGE_SIZE as u64)) as u16;
            let len = (p.len - done).min(room);
            let guest = GrantCopyPtr {
                u: p.gref as u64,
                domid: dom,
                offset: p.offset + done,
            };
            let ours = GrantCopyPtr {
                u: at / PAGE_SIZE as u64,
                domid: DOMID_SELF,
                offset: (at % PAGE_SIZE as u64) as u16,
            };
            let (source, dest, flags) = if to_guest {
                (ours, guest, abi::GNTCOPY_DEST_GREF)
            } else {
                (guest, ours, abi::GNTCOPY_SOURCE_GREF)
            };
            ops.push(GrantCopy {
                source,
                dest,
                len,
                flags,
                status: 0,
            });
            done += len;
            at += len as u64;
        }
    }
    ops
}

/// Where in a page-aligned buffer of ours to put the bytes of `pieces` so that the copy
/// takes the fewest operations: an operation may not cross a page on either side, and
/// a guest's large send is a short head (its headers, anywhere in a page) followed by
/// whole pages, so laid from the buffer's start every page of it straddles two of ours
/// and costs two operations. Placed at this offset, the largest piece starts where it
/// starts in its own page, and so do the whole pages after it. 0 when that saves
/// nothing. (Xen's cost per operation under nested TCG is about 16 us, per KiB 0.9 us:
/// moving the bytes down afterwards is cheaper than the operations saved.)
pub fn aligning_pad(pieces: &[Piece]) -> usize {
    let Some((at, big)) = pieces
        .iter()
        .scan(0usize, |cum, p| {
            let at = *cum;
            *cum += p.len as usize;
            Some((at, p))
        })
        .max_by_key(|(at, p)| (p.len, core::cmp::Reverse(*at)))
    else {
        return 0;
    };
    let pad = (big.offset as usize + PAGE_SIZE - at % PAGE_SIZE) % PAGE_SIZE;
    let count = |start: u64| copy_ops(0, pieces, start, false).len();
    if count(pad as u64) < count(0) {
        pad
    } else {
        0
    }
}

/// Grant-copy operations of a [`Forward`] out of domain `from`: the head from our
/// buffer at guest-physical address `head_at` (split where it crosses one of our
/// pages), then one operation per body piece between the two domains' grants.
pub fn forward_ops(from: DomId, f: &Forward, head_at: u64) -> Vec<GrantCopy> {
    let mut ops = copy_ops(f.to, core::slice::from_ref(&f.head_to), head_at, true);
    for (p, to) in f.body.iter().zip(f.body_to) {
        ops.push(GrantCopy {
            source: GrantCopyPtr {
                u: p.gref as u64,
                domid: from,
                offset: p.offset,
            },
            dest: GrantCopyPtr {
                u: to.gref as u64,
                domid: f.to,
                offset: to.offset,
            },
            // As long as `to` by construction; were it not, Xen refuses an operation
            // that would leave either page.
            len: p.len,
            flags: abi::GNTCOPY_SOURCE_GREF | abi::GNTCOPY_DEST_GREF,
            status: 0,
        });
    }
    ops
}

/// A 32-bit ring index to write into a page another domain granted us (its shared
/// ring), as the last operation of a copy batch: after every byte the answers it
/// publishes describe (Xen runs a batch's operations in order, one `memcpy` after
/// another, with no barrier between them: x86 keeps one CPU's stores in order, so the
/// frontend never sees an answer before its data; a port to a weakly ordered
/// architecture could not rely on this).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Publish {
    pub to: DomId,
    pub ring: GrantRef,
    /// Byte offset of the index in the ring page.
    pub offset: u16,
    pub value: u32,
}

/// The operation that writes `p.value`, held in our memory at guest-physical address
/// `local` (4 bytes inside one page), at `p.offset` of the ring page `p.ring`.
pub fn publish_op(p: &Publish, local: u64) -> GrantCopy {
    GrantCopy {
        source: GrantCopyPtr {
            u: local / PAGE_SIZE as u64,
            domid: DOMID_SELF,
            offset: (local % PAGE_SIZE as u64) as u16,
        },
        dest: GrantCopyPtr {
            u: p.ring as u64,
            domid: p.to,
            offset: p.offset,
        },
        len: 4,
        flags: abi::GNTCOPY_DEST_GREF,
        status: 0,
    }
}

/// The guest-piece of each op, for reporting which grant failed.
pub fn op_gref(op: &GrantCopy) -> GrantRef {
    if op.flags & abi::GNTCOPY_SOURCE_GREF != 0 {
        op.source.u as GrantRef
    } else {
        op.dest.u as GrantRef
    }
}

/// Every job's copy operations in one hypercall (`copy`: a Hypervisor's grant_copy, or
/// the machine's own); each job's result from its own
/// operations' statuses (the first that failed names its grant), or, if the hypercall
/// itself fails, every job failed naming its first grant. No jobs with operations: no
/// hypercall (each costs a driver domain under nested TCG about as much as copying 100
/// KiB). Each job: the grant to name if the hypercall fails, and its operations.
pub fn issue(
    copy: impl FnOnce(&mut [GrantCopy]) -> Result<(), crate::Errno>,
    jobs: impl Iterator<Item = (GrantRef, Vec<GrantCopy>)>,
) -> Vec<Result<(), GrantFault>> {
    let mut ops = Vec::new();
    let mut ends = Vec::new();
    let mut first = Vec::new();
    for (gref, job) in jobs {
        first.push(gref);
        ops.extend(job);
        ends.push(ops.len());
    }
    if ops.is_empty() {
        return ends.iter().map(|_| Ok(())).collect();
    }
    if let Err(e) = copy(&mut ops) {
        return first
            .into_iter()
            .map(|gref| {
                Err(GrantFault {
                    gref,
                    status: e.0 as i16,
                })
            })
            .collect();
    }
    let mut start = 0;
    ends.into_iter()
        .map(|end| {
            let r = match ops[start..end].iter().find(|o| o.status != 0) {
                Some(o) => Err(GrantFault {
                    gref: op_gref(o),
                    status: o.status,
                }),
                None => Ok(()),
            };
            start = end;
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Hypervisor;

    /// Our frames 10 and 11 hold "ours"; the guest (domain 3) grants two pages.
    fn xen() -> (crate::fake::FakeXen, GrantRef, GrantRef) {
        let mut x = crate::fake::FakeXen::new(1);
        x.local_frame(10, b"ours");
        x.local_frame(11, b"ours");
        let g1 = x.foreign_grant(3, b"guest page one", false);
        let g2 = x.foreign_grant(3, b"guest page two", false);
        (x, g1, g2)
    }

    fn read(gref: GrantRef, frame: u64) -> Vec<GrantCopy> {
        copy_ops(
            3,
            &[Piece {
                gref,
                offset: 0,
                len: 5,
            }],
            frame * 4096,
            false,
        )
    }

    #[test]
    fn jobs_share_one_hypercall_and_each_gets_its_own_result() {
        let (mut x, g1, g2) = xen();
        x.revoke_foreign(3, g2);
        let r = issue(
            |ops| x.grant_copy(ops),
            [(g1, read(g1, 10)), (g2, read(g2, 11)), (7, Vec::new())].into_iter(),
        );
        assert_eq!(r[0], Ok(()));
        assert_eq!(
            r[1].map_err(|f| f.gref),
            Err(g2),
            "the revoked grant is named"
        );
        assert_eq!(r[2], Ok(()), "a job without operations succeeds");
        assert_eq!(&x.local(10)[..5], b"guest");
        assert_eq!(
            &x.local(11)[..4],
            b"ours",
            "nothing copied from a revoked grant"
        );
    }

    #[test]
    fn a_failed_hypercall_fails_every_job_and_no_operation_makes_none() {
        let (mut x, g1, _) = xen();
        x.fail_next_hypercall = true;
        // No operation at all: no hypercall, so the armed failure is not met.
        assert_eq!(
            issue(|ops| x.grant_copy(ops), [(g1, Vec::new())].into_iter()),
            [Ok(())]
        );
        assert!(x.fail_next_hypercall);
        let r = issue(
            |ops| x.grant_copy(ops),
            [(g1, read(g1, 10)), (9, read(g1, 11))].into_iter(),
        );
        let named: Vec<_> = r.iter().map(|r| r.map_err(|f| f.gref)).collect();
        assert_eq!(named, [Err(g1), Err(9)]);
        assert_eq!(&x.local(10)[..4], b"ours");
    }

    #[test]
    fn a_publication_writes_four_bytes_at_its_offset_after_the_data() {
        let (mut x, g1, _) = xen();
        let ring = x.foreign_grant(3, &[0u8; 16], false);
        // The index (7, little-endian) held at offset 8 of our frame 10.
        x.local_frame(10, &[0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0]);
        let p = Publish {
            to: 3,
            ring,
            offset: 8,
            value: 7,
        };
        let op = publish_op(&p, 10 * 4096 + 8);
        assert_eq!((op.source.u, op.source.offset, op.len), (10, 8, 4));
        let mut write = copy_ops(
            3,
            &[Piece {
                gref: g1,
                offset: 0,
                len: 4,
            }],
            11 * 4096,
            true,
        );
        write.push(op);
        let r = issue(|ops| x.grant_copy(ops), [(g1, write)].into_iter());
        assert_eq!(r, [Ok(())]);
        assert_eq!(&x.foreign_page(3, g1).unwrap()[..4], b"ours");
        let page = x.foreign_page(3, ring).unwrap();
        assert_eq!(&page[8..12], &7u32.to_le_bytes());
        assert_eq!(&page[..8], &[0u8; 8], "nothing else of the ring written");
    }

    #[test]
    fn a_large_send_is_placed_to_take_one_operation_per_page() {
        // A 66-byte head at offset 200, then five whole pages: the frontend's layout.
        let mut pieces = alloc::vec![Piece {
            gref: 1,
            offset: 200,
            len: 66,
        }];
        pieces.extend((0..5).map(|i| Piece {
            gref: 2 + i,
            offset: 0,
            len: 4096,
        }));
        assert_eq!(copy_ops(0, &pieces, 0, false).len(), 11);
        let pad = aligning_pad(&pieces);
        assert_eq!(pad, 4096 - 66);
        assert_eq!(copy_ops(0, &pieces, pad as u64, false).len(), 6);
        // Pages that start mid-page line up too.
        let odd = [
            Piece {
                gref: 1,
                offset: 0,
                len: 100,
            },
            Piece {
                gref: 2,
                offset: 1000,
                len: 3096,
            },
            Piece {
                gref: 3,
                offset: 0,
                len: 4096,
            },
        ];
        let pad = aligning_pad(&odd);
        assert_eq!(copy_ops(0, &odd, pad as u64, false).len(), 3);
        // Nothing to gain: no pad.
        assert_eq!(
            aligning_pad(&[Piece {
                gref: 1,
                offset: 0,
                len: 4096
            }]),
            0
        );
        assert_eq!(aligning_pad(&[]), 0);
        assert_eq!(
            aligning_pad(&[Piece {
                gref: 1,
                offset: 30,
                len: 60
            }]),
            0
        );
    }

    #[test]
    fn copy_ops_split_at_our_page_boundaries() {
        let pieces = [
            Piece {
                gref: 7,
                offset: 512,
                len: 3584,
            },
            Piece {
                gref: 8,
                offset: 0,
                len: 4096,
            },
        ];
        // Buffer starts 1 KiB into one of our pages.
        let ops = copy_ops(3, &pieces, 0x10_0400, false);
        let spans: Vec<(u64, u16, u64, u16, u16)> = ops
            .iter()
            .map(|o| (o.source.u, o.source.offset, o.dest.u, o.dest.offset, o.len))
            .collect();
        assert_eq!(
            spans,
            [
                (7, 512, 0x100, 1024, 3072),
                (7, 3584, 0x101, 0, 512),
                (8, 0, 0x101, 512, 3584),
                (8, 3584, 0x102, 0, 512),
            ]
        );
        assert!(ops.iter().all(|o| o.flags == abi::GNTCOPY_SOURCE_GREF
            && o.source.domid == 3
            && o.dest.domid == DOMID_SELF));
        let back = copy_ops(3, &pieces, 0x10_0000, true);
        // Page-aligned buffer: only the second piece crosses one of our pages.
        assert_eq!(back.len(), 3);
        assert!(back.iter().all(|o| o.flags == abi::GNTCOPY_DEST_GREF));
        assert_eq!(op_gref(&back[1]), 8);
        assert_eq!((back[1].len, back[2].len), (512, 3584));
    }
}
