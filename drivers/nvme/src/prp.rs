//! Physical Region Page lists (spec 4.3): how a transfer's memory is described to the
//! controller with a 4 KiB memory page size.
//!
//! PRP1 addresses the first byte (any dword-aligned offset in a page); the remaining
//! pages are either PRP2 itself (exactly one more page) or listed, page-aligned, in a PRP
//! list that PRP2 points to. A list page holds 512 entries; when more are needed, the last
//! entry of a list page points to the next list page.

use alloc::vec::Vec;

use crate::{Error, PAGE_SIZE};

const ENTRIES_PER_LIST_PAGE: usize = PAGE_SIZE / 8;

/// A transfer's PRP fields and the list pages to write (each up to 512 entries), if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prp {
    pub prp1: u64,
    pub prp2: u64,
    /// List pages: (physical address the caller allocated, entries to write there).
    pub lists: Vec<(u64, Vec<u64>)>,
}

/// How many list pages a transfer over `pages` pages needs.
pub fn list_pages_needed(pages: usize) -> usize {
    if pages <= 2 {
        return 0;
    }
    let entries = pages - 1;
    // Each full list page but the last gives up one entry to the chain pointer.
    let mut n = 1;
    while entries > n * (ENTRIES_PER_LIST_PAGE - 1) + 1 {
        n += 1;
    }
    n
}

/// Describe `len` bytes that start at byte `offset` of `pages[0]` and continue through
/// the following page addresses. `list_pages` must hold `list_pages_needed(pages.len())`
/// page-aligned physical addresses for the lists.
pub fn build(pages: &[u64], offset: usize, len: usize, list_pages: &[u64]) -> Result<Prp, Error> {
    if len == 0 || offset >= PAGE_SIZE || !offset.is_multiple_of(4) {
        return Err(Error::Invalid("transfer offset or length"));
    }
    let needed = (offset + len).div_ceil(PAGE_SIZE);
    if pages.len() < needed {
        return Err(Error::Invalid("fewer pages than the transfer spans"));
    }
    if pages.iter().any(|p| p % PAGE_SIZE as u64 != 0) {
        return Err(Error::Invalid("page address not page-aligned"));
    }
    let pages = &pages[..needed];
    let prp1 = pages[0] + offset as u64;
    match needed {
        1 => Ok(Prp {
            prp1,
            prp2: 0,
            lists: Vec::new(),
        }),
        2 => Ok(Prp {
            prp1,
            prp2: pages[1],
            lists: Vec::new(),
        }),
        _ => {
            let want = list_pages_needed(needed);
            if list_pages.len() < want {
                return Err(Error::Invalid("not enough PRP list pages"));
            }
            let mut rest = &pages[1..];
            let mut lists = Vec::new();
            for (i, &lp) in list_pages[..want].iter().enumerate() {
                let last = i + 1 == want;
                let take = if last {
                    rest.len()
                } else {
                    ENTRIES_PER_LIST_PAGE - 1
                };
                let mut entries: Vec<u64> = rest[..take].to_vec();
                rest = &rest[take..];
                if !last {
                    entries.push(list_pages[i + 1]);
                }
                lists.push((lp, entries));
            }
            Ok(Prp {
                prp1,
                prp2: list_pages[0],
                lists,
            })
        }
    }
}

/// Memory for a transfer in PRP form: the offset of its first byte in the first page,
/// and the page-aligned address of every page it touches, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pages {
    pub offset: usize,
    pub pages: Vec<u64>,
}

impl Pages {
    /// `len` bytes of contiguous memory at physical `at`.
    pub fn contiguous(at: u64, len: usize) -> Pages {
        let offset = (at % PAGE_SIZE as u64) as usize;
        let first = at - offset as u64;
        let n = (offset + len).div_ceil(PAGE_SIZE) as u64;
        Pages {
            offset,
            pages: (0..n).map(|i| first + i * PAGE_SIZE as u64).collect(),
        }
    }

    /// Bytes `from..from + len` of memory given as (physical address, length) pieces
    /// back to back; None when PRPs cannot describe them: the first byte is not
    /// dword-aligned, the pieces hold fewer bytes, or two pieces meet inside the range
    /// other than at a page boundary on both sides (every PRP entry after the first
    /// starts a page, every one before the last ends one) and are not contiguous.
    pub fn of_pieces(pieces: &[(u64, usize)], from: usize, len: usize) -> Option<Pages> {
        if len == 0 {
            return None;
        }
        // The range's own stretches, adjacent ones that are contiguous joined.
        let mut runs: Vec<(u64, usize)> = Vec::new();
        let mut skip = from;
        let mut want = len;
        for &(addr, l) in pieces {
            if want == 0 {
                break;
            }
            if skip >= l {
                skip -= l;
                continue;
            }
            let a = addr.checked_add(skip as u64)?;
            let take = (l - skip).min(want);
            skip = 0;
            want -= take;
            match runs.last_mut() {
                Some((ra, rl)) if *ra + *rl as u64 == a => *rl += take,
                _ => runs.push((a, take)),
            }
        }
        if want != 0 || !runs[0].0.is_multiple_of(4) {
            return None;
        }
        let page = PAGE_SIZE as u64;
        for w in runs.windows(2) {
            let end = w[0].0.checked_add(w[0].1 as u64)?;
            if end % page != 0 || w[1].0 % page != 0 {
                return None;
            }
        }
        let offset = (runs[0].0 % page) as usize;
        let mut pages = Vec::new();
        for &(a, l) in &runs {
            let first = a - a % page;
            let end = a.checked_add(l as u64)?;
            let mut p = first;
            while p < end {
                pages.push(p);
                p += page;
            }
        }
        Some(Pages { offset, pages })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn pages(n: usize) -> Vec<u64> {
        (0..n as u64).map(|i| 0x10_0000 + i * 0x3000).collect()
    }

    #[test]
    fn one_and_two_pages() {
        let p = build(&pages(4), 0, 4096, &[]).unwrap();
        assert_eq!((p.prp1, p.prp2), (0x10_0000, 0));
        let p = build(&pages(4), 512, 4096, &[]).unwrap();
        assert_eq!(
            (p.prp1, p.prp2),
            (0x10_0200, 0x10_3000),
            "crosses into the second page"
        );
        let p = build(&pages(4), 0, 8192, &[]).unwrap();
        assert_eq!(p.prp2, 0x10_3000);
        assert!(p.lists.is_empty());
    }

    #[test]
    fn list_for_larger_transfers() {
        let p = build(&pages(32), 0, 128 * 1024, &[0x90_0000]).unwrap();
        assert_eq!(p.prp1, 0x10_0000);
        assert_eq!(p.prp2, 0x90_0000);
        assert_eq!(p.lists.len(), 1);
        assert_eq!(p.lists[0].1, pages(32)[1..].to_vec());
    }

    #[test]
    fn chained_lists() {
        // 2 MiB at an offset spans 513 pages: 512 list entries, exactly one list page.
        assert_eq!(list_pages_needed(513), 1);
        let p = build(&pages(513), 8, 2 * 1024 * 1024, &[0xa0_0000]).unwrap();
        assert_eq!(p.lists.len(), 1);
        assert_eq!(p.lists[0].1.len(), 512);
        // One page more needs a second list page, chained from the first one's last entry.
        let n = 514;
        assert_eq!(list_pages_needed(n), 2);
        let p = build(
            &pages(n),
            8,
            2 * 1024 * 1024 + 4096,
            &[0xa0_0000, 0xa0_1000],
        )
        .unwrap();
        assert_eq!(p.lists[0].1.len(), 512);
        assert_eq!(*p.lists[0].1.last().unwrap(), 0xa0_1000, "chain pointer");
        assert_eq!(p.lists[1].1.len(), 2);
        let all: Vec<u64> = p.lists[0].1[..511]
            .iter()
            .chain(p.lists[1].1.iter())
            .copied()
            .collect();
        assert_eq!(all, pages(n)[1..].to_vec());
    }

    #[test]
    fn bad_requests() {
        assert!(build(&pages(1), 0, 0, &[]).is_err());
        assert!(build(&pages(1), 2, 512, &[]).is_err(), "not dword aligned");
        assert!(build(&pages(1), 0, 8192, &[]).is_err(), "too few pages");
        assert!(build(&[0x1234], 0, 512, &[]).is_err(), "unaligned page");
        assert!(
            build(&pages(8), 0, 8 * 4096, &[]).is_err(),
            "no list page given"
        );
    }

    #[test]
    fn pages_of_pieces() {
        let pg = PAGE_SIZE;
        // Whole guest pages anywhere in memory.
        let whole = [(0x5000u64, pg), (0x9000, pg), (0x2000, pg)];
        assert_eq!(
            Pages::of_pieces(&whole, 0, 3 * pg),
            Some(Pages {
                offset: 0,
                pages: vec![0x5000, 0x9000, 0x2000]
            })
        );
        // A sub-range starting and ending inside pages (a command of a split transfer).
        assert_eq!(
            Pages::of_pieces(&whole, 512, pg),
            Some(Pages {
                offset: 512,
                pages: vec![0x5000, 0x9000]
            })
        );
        assert_eq!(
            Pages::of_pieces(&whole, pg, pg),
            Some(Pages {
                offset: 0,
                pages: vec![0x9000]
            })
        );
        // First piece starting inside its page, last ending early: fine.
        let edges = [(0x5200u64, pg - 0x200), (0x9000, 0x400)];
        assert_eq!(
            Pages::of_pieces(&edges, 0, pg - 0x200 + 0x400),
            Some(Pages {
                offset: 0x200,
                pages: vec![0x5000, 0x9000]
            })
        );
        // A piece that ends inside a page followed by another piece: no PRP can say it.
        let gap = [(0x5000u64, 0x400), (0x9000, pg)];
        assert_eq!(Pages::of_pieces(&gap, 0, 0x400 + pg), None);
        // ...unless the next piece is the very next byte.
        let joined = [(0x5000u64, 0x400), (0x5400, pg - 0x400), (0x9000, pg)];
        assert_eq!(
            Pages::of_pieces(&joined, 0, 2 * pg),
            Some(Pages {
                offset: 0,
                pages: vec![0x5000, 0x9000]
            })
        );
        // A later piece that starts inside its page.
        let late = [(0x5000u64, pg), (0x9200, 0x200)];
        assert_eq!(Pages::of_pieces(&late, 0, pg + 0x200), None);
        // Not dword-aligned, too short, empty.
        assert_eq!(Pages::of_pieces(&[(0x5002u64, 512)], 0, 512), None);
        assert_eq!(Pages::of_pieces(&whole, 0, 3 * pg + 512), None);
        assert_eq!(Pages::of_pieces(&whole, 0, 0), None);
        // Contiguous memory.
        assert_eq!(
            Pages::contiguous(0x5200, pg),
            Pages {
                offset: 0x200,
                pages: vec![0x5000, 0x6000]
            }
        );
    }
}
