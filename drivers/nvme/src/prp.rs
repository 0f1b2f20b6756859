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
    if len == 0 || offset >= PAGE_SIZE || offset % 4 != 0 {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
