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

/// The guest-piece of each op, for reporting which grant failed.
pub fn op_gref(op: &GrantCopy) -> GrantRef {
    if op.flags & abi::GNTCOPY_SOURCE_GREF != 0 {
        op.source.u as GrantRef
    } else {
        op.dest.u as GrantRef
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
