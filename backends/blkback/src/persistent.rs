//! Persistent grants (`feature-persistent`): a frontend that reuses a fixed set of pages
//! lets the backend keep them mapped, so a request costs a memory copy instead of a grant
//! hypercall per page. The set kept per ring is bounded; when it is full the least
//! recently used grants not needed by the current request are unmapped, and pieces that
//! still find no room go through grant copies (never an error).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use bulkhead_xen::abi::{DomId, GrantRef};
use bulkhead_xen::grants::{GrantMapper, Mapping};

use bulkhead_block::Span;

use crate::io::{DmaPages, GrantFault, GuestMemory, Piece, Transfer};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistentStats {
    pub hits: u64,
    pub mapped: u64,
    pub evicted: u64,
    /// Pieces served by grant copy because the cache had no room or the map failed.
    pub copied: u64,
    /// Pieces the device moved itself, to or from the mapped page (of the hits).
    pub direct: u64,
}

pub struct Persistent<M: GrantMapper, C: GuestMemory> {
    dom: DomId,
    mapper: M,
    fallback: C,
    capacity: usize,
    /// gref -> (mapping, stamp of the request that last used it)
    cache: BTreeMap<GrantRef, (Mapping, u64)>,
    /// Grants handed to the device ([`DmaPages::dma_pages`]), with how many runs hold
    /// each (a ring's batches at the device at once may share a page): never unmapped
    /// until every one released it, whatever else needs room.
    pinned: BTreeMap<GrantRef, u32>,
    stamp: u64,
    pub stats: PersistentStats,
}

impl<M: GrantMapper, C: GuestMemory> Persistent<M, C> {
    pub fn new(dom: DomId, mapper: M, fallback: C, capacity: usize) -> Self {
        Persistent {
            dom,
            mapper,
            fallback,
            capacity,
            cache: BTreeMap::new(),
            pinned: BTreeMap::new(),
            stamp: 0,
            stats: PersistentStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// The mapping for each piece, mapping what is missing while there is room.
    fn resolve(&mut self, pieces: &[Piece]) -> Vec<Option<Mapping>> {
        self.stamp += 1;
        let now = self.stamp;
        let mut want: Vec<GrantRef> = Vec::new();
        for p in pieces {
            match self.cache.get_mut(&p.gref) {
                Some(e) => e.1 = now,
                None => {
                    if !want.contains(&p.gref) {
                        want.push(p.gref);
                    }
                }
            }
        }
        if !want.is_empty() {
            // Map first, then make room only for what mapped (a bad reference must not
            // cost a good cached grant).
            let in_use = self
                .cache
                .iter()
                .filter(|(g, (_, s))| *s == now || self.pinned.contains_key(g))
                .count();
            want.truncate(self.capacity.saturating_sub(in_use));
            let got: Vec<Mapping> = self
                .mapper
                .map(self.dom, &want)
                .into_iter()
                .flatten()
                .collect();
            let over = (self.cache.len() + got.len()).saturating_sub(self.capacity);
            if over > 0 {
                // Unmap the least recently used grants this request does not use.
                let mut old: Vec<(u64, GrantRef)> = self
                    .cache
                    .iter()
                    .filter(|(g, (_, s))| *s < now && !self.pinned.contains_key(g))
                    .map(|(g, (_, s))| (*s, *g))
                    .collect();
                old.sort_unstable();
                let evict: Vec<Mapping> = old
                    .iter()
                    .take(over)
                    .filter_map(|(_, g)| self.cache.remove(g).map(|e| e.0))
                    .collect();
                self.stats.evicted += evict.len() as u64;
                self.mapper.unmap(&evict);
            }
            for m in got {
                self.stats.mapped += 1;
                self.cache.insert(m.gref, (m, now));
            }
        }
        pieces
            .iter()
            .map(|p| self.cache.get(&p.gref).map(|e| e.0))
            .collect()
    }

    /// Count pieces served through a mapping (hits) and by the fallback (copied).
    fn tally(&mut self, maps: &[Option<Mapping>]) {
        let hits = maps.iter().filter(|m| m.is_some()).count() as u64;
        self.stats.hits += hits;
        self.stats.copied += maps.len() as u64 - hits;
    }

    /// Unmap everything (disconnect, with no transfer in flight); returns how many
    /// grants were mapped.
    pub fn release(&mut self) -> usize {
        self.pinned.clear();
        let all: Vec<Mapping> = core::mem::take(&mut self.cache)
            .into_values()
            .map(|e| e.0)
            .collect();
        self.mapper.unmap(&all);
        all.len()
    }
}

impl<M: GrantMapper, C: GuestMemory> GuestMemory for Persistent<M, C> {
    fn read(&mut self, pieces: &[Piece], buf: &mut [u8]) -> Result<(), GrantFault> {
        self.read_all(&mut [(pieces, buf)]).remove(0)
    }

    fn write(&mut self, pieces: &[Piece], buf: &[u8]) -> Result<(), GrantFault> {
        self.write_all(&[(pieces, buf)]).remove(0)
    }

    /// Mapped pieces are copied at once; the pieces of every job that found no room go
    /// to the fallback together, so a full cache costs one grant-copy batch, not one
    /// hypercall per page.
    fn read_all(&mut self, jobs: &mut [(&[Piece], &mut [u8])]) -> Vec<Result<(), GrantFault>> {
        let mut out = alloc::vec![Ok(()); jobs.len()];
        let mut slow: Vec<(&[Piece], &mut [u8])> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        for (j, (pieces, buf)) in jobs.iter_mut().enumerate() {
            let maps = self.resolve(pieces);
            self.tally(&maps);
            let mut rest: &mut [u8] = buf;
            for (p, m) in pieces.iter().zip(maps) {
                let (dst, tail) = core::mem::take(&mut rest).split_at_mut(p.len as usize);
                rest = tail;
                match m {
                    Some(m) => self.mapper.copy_from(&m, p.offset as usize, dst),
                    None => {
                        slow.push((core::slice::from_ref(p), dst));
                        owner.push(j);
                    }
                }
            }
        }
        if !slow.is_empty() {
            first_faults(&mut out, &owner, self.fallback.read_all(&mut slow));
        }
        out
    }

    fn write_all(&mut self, jobs: &[(&[Piece], &[u8])]) -> Vec<Result<(), GrantFault>> {
        let mut out = alloc::vec![Ok(()); jobs.len()];
        let mut slow: Vec<(&[Piece], &[u8])> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        for (j, (pieces, buf)) in jobs.iter().enumerate() {
            let maps = self.resolve(pieces);
            self.tally(&maps);
            let mut at = 0;
            for (p, m) in pieces.iter().zip(maps) {
                let src = &buf[at..at + p.len as usize];
                at += p.len as usize;
                match m {
                    Some(m) => self.mapper.copy_to(&m, p.offset as usize, src),
                    None => {
                        slow.push((core::slice::from_ref(p), src));
                        owner.push(j);
                    }
                }
            }
        }
        if !slow.is_empty() {
            first_faults(&mut out, &owner, self.fallback.write_all(&slow));
        }
        out
    }
}

/// The device reaches mapped grants where they are mapped (the addresses are the
/// domain's own physical ones, which its IOMMU context translates, mapped grants
/// included). A run is offered only if every one of its pieces is mapped; the runs'
/// pieces are resolved together, so making room for one never unmaps another's.
impl<M: GrantMapper, C: GuestMemory> DmaPages for Persistent<M, C> {
    fn dma_pages(
        &mut self,
        runs: &[Vec<&Transfer>],
        takes: &mut dyn FnMut(&[Span]) -> bool,
    ) -> Vec<Option<Vec<Span>>> {
        let all: Vec<Piece> = runs
            .iter()
            .flatten()
            .flat_map(|t| t.pieces.iter().copied())
            .collect();
        // Pieces not offered are counted when a copy moves them.
        let mut maps = self.resolve(&all).into_iter();
        let mut out = Vec::with_capacity(runs.len());
        for run in runs {
            let pieces = run.iter().flat_map(|t| t.pieces.iter());
            let mine: Vec<Option<Mapping>> = maps.by_ref().take(pieces.clone().count()).collect();
            if mine.iter().any(Option::is_none) {
                out.push(None);
                continue;
            }
            let spans: Vec<Span> = pieces
                .clone()
                .zip(mine.into_iter().flatten())
                .map(|(p, m)| Span {
                    addr: m.addr + u64::from(p.offset),
                    len: p.len as usize,
                })
                .collect();
            if !takes(&spans) {
                out.push(None);
                continue;
            }
            for p in pieces {
                *self.pinned.entry(p.gref).or_insert(0) += 1;
            }
            self.stats.hits += spans.len() as u64;
            self.stats.direct += spans.len() as u64;
            out.push(Some(spans));
        }
        out
    }

    fn release_dma(&mut self, pieces: &[Piece]) {
        for p in pieces {
            if let Some(n) = self.pinned.get_mut(&p.gref) {
                *n -= 1;
                if *n == 0 {
                    self.pinned.remove(&p.gref);
                }
            }
        }
    }
}

/// Each job keeps the first fault among the fallback copies of its pieces (`owner[i]` is
/// the job of fallback result `i`).
fn first_faults(
    out: &mut [Result<(), GrantFault>],
    owner: &[usize],
    results: Vec<Result<(), GrantFault>>,
) {
    for (&j, r) in owner.iter().zip(results) {
        if out[j].is_ok() {
            out[j] = r;
        }
    }
}
