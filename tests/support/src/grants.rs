//! A guest's pages as a backend reaches them through grant copies: grant references
//! name pages, and a copy names pieces of them.

use std::collections::HashMap;

use bulkhead_xen::copy::{GrantFault, GuestMemory, Piece, ReadsAndWrites};

pub const PAGE: usize = 4096;

/// Xen's GNTST_bad_gntref and GNTST_general_error, as a copy of an unknown grant or of
/// a piece outside its page reports them.
const BAD_GNTREF: i16 = -4;
const GENERAL_ERROR: i16 = -1;

/// Pages by grant reference. A reference that names no page, or a piece that leaves its
/// page or the buffer, fails the copy as Xen would, or, when `strict`, panics: for a
/// fuzzer whose oracle is that the code under test never asks for such a copy.
#[derive(Clone, Debug, Default)]
pub struct GrantPages {
    pages: HashMap<u32, Vec<u8>>,
    /// Panic on a piece outside its page or pieces that do not cover the buffer.
    pub strict: bool,
    /// The status a copy of an unknown reference fails with.
    pub unknown_status: i16,
    /// Batched copies made so far: each is one grant-copy hypercall in the kernel.
    pub batches: Batches,
}

/// Batched copy calls by kind: reads ([`GuestMemory::read_all`], also behind
/// `read_new`), writes ([`GuestMemory::write_all`]) and both ways at once
/// ([`GuestMemory::read_new_and_write`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Batches {
    pub reads: usize,
    pub writes: usize,
    pub both: usize,
}

impl GrantPages {
    pub fn new() -> GrantPages {
        GrantPages {
            pages: HashMap::new(),
            strict: false,
            unknown_status: BAD_GNTREF,
            batches: Batches::default(),
        }
    }

    /// Grants `1..=n`, zeroed pages.
    pub fn numbered(n: u32) -> GrantPages {
        let mut g = GrantPages::new();
        for r in 1..=n {
            g.insert(r, vec![0; PAGE]);
        }
        g
    }

    /// Grant `gref` names `page` (padded or cut to a page).
    pub fn insert(&mut self, gref: u32, mut page: Vec<u8>) {
        page.resize(PAGE, 0);
        self.pages.insert(gref, page);
    }

    /// The guest revokes `gref`: copies of it fail from now on.
    pub fn revoke(&mut self, gref: u32) {
        self.pages.remove(&gref);
    }

    /// The references that name a page, in no order.
    pub fn refs(&self) -> impl Iterator<Item = u32> + '_ {
        self.pages.keys().copied()
    }

    pub fn page(&self, gref: u32) -> Option<&[u8]> {
        self.pages.get(&gref).map(Vec::as_slice)
    }

    pub fn page_mut(&mut self, gref: u32) -> Option<&mut [u8]> {
        self.pages.get_mut(&gref).map(Vec::as_mut_slice)
    }

    fn fault(&self, gref: u32, what: &str, status: i16) -> GrantFault {
        assert!(!self.strict, "grant {gref}: {what}");
        GrantFault { gref, status }
    }

    /// Each piece's place in its page and in the buffer (`len` bytes).
    fn ranges(
        &self,
        pieces: &[Piece],
        len: usize,
    ) -> Result<Vec<(u32, usize, usize, usize)>, GrantFault> {
        let mut at = 0;
        let mut out = Vec::with_capacity(pieces.len());
        for p in pieces {
            if !self.pages.contains_key(&p.gref) {
                return Err(GrantFault {
                    gref: p.gref,
                    status: self.unknown_status,
                });
            }
            let (o, n) = (p.offset as usize, p.len as usize);
            if o + n > PAGE {
                return Err(self.fault(p.gref, "piece crosses the page", GENERAL_ERROR));
            }
            if at + n > len {
                return Err(self.fault(p.gref, "pieces run past the buffer", GENERAL_ERROR));
            }
            out.push((p.gref, o, at, n));
            at += n;
        }
        if self.strict {
            assert_eq!(at, len, "pieces do not cover the buffer");
        }
        Ok(out)
    }
}

impl GuestMemory for GrantPages {
    fn read(&mut self, pieces: &[Piece], buf: &mut [u8]) -> Result<(), GrantFault> {
        for (gref, o, at, n) in self.ranges(pieces, buf.len())? {
            buf[at..at + n].copy_from_slice(&self.pages[&gref][o..o + n]);
        }
        Ok(())
    }

    fn write(&mut self, pieces: &[Piece], buf: &[u8]) -> Result<(), GrantFault> {
        for (gref, o, at, n) in self.ranges(pieces, buf.len())? {
            self.pages.get_mut(&gref).expect("checked")[o..o + n].copy_from_slice(&buf[at..at + n]);
        }
        Ok(())
    }

    fn read_all(&mut self, jobs: &mut [(&[Piece], &mut [u8])]) -> Vec<Result<(), GrantFault>> {
        self.batches.reads += 1;
        jobs.iter_mut().map(|(p, b)| self.read(p, b)).collect()
    }

    fn write_all(&mut self, jobs: &[(&[Piece], &[u8])]) -> Vec<Result<(), GrantFault>> {
        self.batches.writes += 1;
        jobs.iter().map(|(p, b)| self.write(p, b)).collect()
    }

    fn read_new_and_write(
        &mut self,
        reads: &[&[Piece]],
        writes: &[(&[Piece], &[u8])],
    ) -> ReadsAndWrites {
        // One pass both ways (one hypercall in the kernel), not a read batch and a
        // write batch: the reads and writes it is made of leave those counts alone.
        let counted = self.batches;
        let done = (self.read_new(reads), self.write_all(writes));
        self.batches = Batches {
            both: counted.both + 1,
            ..counted
        };
        done
    }
}

/// Reached only by copies (no device reaches these pages by address).
impl bulkhead_blkback::io::DmaPages for GrantPages {}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(gref: u32, offset: u16, len: u16) -> Piece {
        Piece { gref, offset, len }
    }

    #[test]
    fn copies_pieces_and_fails_like_xen() {
        let mut g = GrantPages::numbered(2);
        g.write(&[piece(1, 4090, 6), piece(2, 0, 4)], b"abcdefghij")
            .unwrap();
        let mut back = [0u8; 10];
        g.read(&[piece(1, 4090, 6), piece(2, 0, 4)], &mut back)
            .unwrap();
        assert_eq!(&back, b"abcdefghij");
        assert_eq!(
            g.read(&[piece(3, 0, 1)], &mut [0]).unwrap_err().status,
            BAD_GNTREF
        );
        assert_eq!(
            g.read(&[piece(1, 4095, 2)], &mut [0, 0])
                .unwrap_err()
                .status,
            GENERAL_ERROR
        );
        g.revoke(2);
        assert!(g.read(&[piece(2, 0, 1)], &mut [0]).is_err());
    }

    #[test]
    fn counts_each_batch_once() {
        let mut g = GrantPages::numbered(2);
        let _ = g.read_new(&[&[piece(1, 0, 4)], &[piece(2, 0, 4)]]);
        let _ = g.write_all(&[(&[piece(1, 0, 2)], b"ab")]);
        let (r, w) = g.read_new_and_write(&[&[piece(1, 0, 2)]], &[(&[piece(2, 0, 1)], b"z")]);
        assert_eq!(r[0].as_deref(), Ok(&b"ab"[..]));
        assert!(w[0].is_ok());
        let want = Batches {
            reads: 1,
            writes: 1,
            both: 1,
        };
        assert_eq!(g.batches, want);
    }

    #[test]
    #[should_panic(expected = "piece crosses the page")]
    fn strict_pages_panic_on_a_bad_piece() {
        let mut g = GrantPages::numbered(1);
        g.strict = true;
        let _ = g.read(&[piece(1, 4095, 2)], &mut [0, 0]);
    }
}
