//! Grant tables (v1): granting our frames to other domains, and mapping/copying frames
//! other domains granted to us.
//!
//! Granting: an entry is written (domid, frame) before its flags make it valid, and is
//! revoked only when the other side no longer has it mapped (GTF_reading/GTF_writing
//! clear), checked with a compare-and-swap so a mapping racing with the revoke is seen.
//!
//! Mapping: an HVM/PVH guest maps a foreign frame at a guest-physical address. Those
//! addresses come from a pool of frames the kernel handed back to Xen (ballooned out), so
//! a mapping never replaces RAM we use. Every failure carries Xen's per-op status.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::abi::{self, DomId, GrantRef, GNTTAB_NR_RESERVED_ENTRIES};
use crate::{Errno, Hypervisor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantError {
    /// No free entry in our table.
    Exhausted,
    /// The other domain still has the grant mapped; try again later.
    InUse,
    /// Not an entry we granted.
    BadRef(GrantRef),
    /// No free guest-physical slot to map into.
    NoSlots,
    /// Xen refused this one operation (GNTST_*).
    Status(i16),
    /// The hypercall itself failed.
    Hypercall(Errno),
}

impl core::fmt::Display for GrantError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GrantError::Exhausted => write!(f, "grant table full"),
            GrantError::InUse => write!(f, "grant still mapped by the other domain"),
            GrantError::BadRef(r) => write!(f, "grant reference {r} is not ours"),
            GrantError::NoSlots => write!(f, "no free slot to map a grant into"),
            GrantError::Status(s) => write!(
                f,
                "Xen refused the grant operation: {} ({s})",
                abi::gntst_name(*s)
            ),
            GrantError::Hypercall(e) => write!(f, "grant hypercall failed ({})", e.0),
        }
    }
}

/// Our grant table's entries, in the frames Xen mapped for us.
pub trait GrantTableMemory {
    fn capacity(&self) -> u32;
    /// Write domid and frame; the flags are written separately, after a barrier.
    fn write_entry(&mut self, gref: GrantRef, domid: DomId, frame: u32);
    /// Publish flags after the entry body (release ordering).
    fn set_flags(&mut self, gref: GrantRef, flags: u16);
    fn flags(&self, gref: GrantRef) -> u16;
    /// Atomic compare-and-swap on the flags; returns the value found.
    fn cmpxchg_flags(&mut self, gref: GrantRef, old: u16, new: u16) -> u16;
}

pub struct GrantTable<M: GrantTableMemory> {
    mem: M,
    free: Vec<GrantRef>,
    granted: u32,
}

impl<M: GrantTableMemory> GrantTable<M> {
    pub fn new(mem: M) -> Self {
        // Hand out low references first (they are popped from the end).
        let free = (GNTTAB_NR_RESERVED_ENTRIES..mem.capacity()).rev().collect();
        GrantTable {
            mem,
            free,
            granted: 0,
        }
    }

    pub fn granted(&self) -> u32 {
        self.granted
    }

    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Let `domid` map `frame` (a guest frame number of ours).
    pub fn grant_access(
        &mut self,
        domid: DomId,
        frame: u64,
        readonly: bool,
    ) -> Result<GrantRef, GrantError> {
        let frame = u32::try_from(frame).map_err(|_| GrantError::Status(-11))?;
        let r = self.free.pop().ok_or(GrantError::Exhausted)?;
        self.mem.write_entry(r, domid, frame);
        let ro = if readonly { abi::GTF_READONLY } else { 0 };
        self.mem.set_flags(r, abi::GTF_PERMIT_ACCESS | ro);
        self.granted += 1;
        Ok(r)
    }

    /// Revoke a grant; refused while the other side has it mapped.
    pub fn end_access(&mut self, gref: GrantRef) -> Result<(), GrantError> {
        if gref < GNTTAB_NR_RESERVED_ENTRIES
            || gref >= self.mem.capacity()
            || self.free.contains(&gref)
        {
            return Err(GrantError::BadRef(gref));
        }
        let mut flags = self.mem.flags(gref);
        loop {
            if flags & (abi::GTF_READING | abi::GTF_WRITING) != 0 {
                return Err(GrantError::InUse);
            }
            let seen = self.mem.cmpxchg_flags(gref, flags, 0);
            if seen == flags {
                break;
            }
            flags = seen;
        }
        self.free.push(gref);
        self.granted -= 1;
        Ok(())
    }

    pub fn memory(&mut self) -> &mut M {
        &mut self.mem
    }
}

/// A foreign grant mapped into our physical address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Guest-physical (and, identity-mapped, virtual) address of the page.
    pub addr: u64,
    pub handle: u32,
    pub dom: DomId,
    pub gref: GrantRef,
    pub readonly: bool,
}

/// Mapping other domains' grants into our address space and copying through the
/// mappings: the persistent grants of blkback keep pages mapped this way. The kernel's
/// mapper uses the ballooned slots below; tests use [`crate::fake::FakeMapper`].
pub trait GrantMapper {
    /// Map `dom`'s grants read-write; one result per reference (None: refused or no
    /// slot).
    fn map(&mut self, dom: DomId, grefs: &[GrantRef]) -> Vec<Option<Mapping>>;
    fn unmap(&mut self, maps: &[Mapping]);
    fn copy_from(&mut self, m: &Mapping, offset: usize, dst: &mut [u8]);
    fn copy_to(&mut self, m: &Mapping, offset: usize, src: &[u8]);
}

/// Guest-physical page addresses with nothing behind them, to map grants into.
/// Slots kept free for rings beyond what registered devices reserve: a device being
/// added finds room even while every other is busy.
pub const RING_HEADROOM: usize = 64;
/// Ring slots one device may map: a 4-queue blkif with 4-page rings (a 4-queue netif
/// with its control ring needs 9).
pub const RING_SLOTS_PER_DEVICE: usize = 16;

/// The pool of guest-physical slots foreign grants are mapped into, shared by every
/// guest. Two kinds of mappings use it: rings, which a device cannot work without, and
/// cached mappings (blkback's persistent grants), which only save copies. Cached ones
/// are bounded per domain and may never take the slots reserved for rings: one busy or
/// hostile guest cannot keep another's device from connecting.
pub struct MapSlots {
    free: Vec<u64>,
    total: usize,
    /// Slots lost because Xen refused to unmap them (never reused).
    pub leaked: usize,
    /// Devices whose rings are reserved for ([`MapSlots::add_device`]).
    devices: usize,
    /// Cached mappings held per domain.
    cached: BTreeMap<DomId, usize>,
    /// Most cached mappings one domain may hold (all its devices and queues together).
    pub cache_per_domain: usize,
}

impl MapSlots {
    pub fn new(addrs: Vec<u64>) -> Self {
        let total = addrs.len();
        MapSlots {
            free: addrs,
            total,
            leaked: 0,
            devices: 0,
            cached: BTreeMap::new(),
            cache_per_domain: total / 4,
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// A device was added: keep room for its rings from now on.
    pub fn add_device(&mut self) {
        self.devices += 1;
    }

    pub fn remove_device(&mut self) {
        self.devices = self.devices.saturating_sub(1);
    }

    /// Slots cached mappings must leave free.
    pub fn ring_reserve(&self) -> usize {
        RING_HEADROOM + RING_SLOTS_PER_DEVICE * self.devices
    }

    /// Cached mappings `dom` holds.
    pub fn cached(&self, dom: DomId) -> usize {
        self.cached.get(&dom).copied().unwrap_or(0)
    }

    /// Cached mappings all domains hold together.
    pub fn cached_total(&self) -> usize {
        self.cached.values().sum()
    }

    /// How many more cached mappings `dom` may make now.
    pub fn cache_room(&self, dom: DomId) -> usize {
        let pool = self.free.len().saturating_sub(self.ring_reserve());
        pool.min(self.cache_per_domain.saturating_sub(self.cached(dom)))
    }

    /// Map grants of `dom` to keep (a cache): as many as [`MapSlots::cache_room`]
    /// allows, `NoSlots` for the rest (the caller copies those instead).
    pub fn map_cached(
        &mut self,
        hv: &mut impl Hypervisor,
        dom: DomId,
        grefs: &[GrantRef],
    ) -> Vec<Result<Mapping, GrantError>> {
        let take = grefs.len().min(self.cache_room(dom));
        let reqs: Vec<(DomId, GrantRef, bool)> =
            grefs[..take].iter().map(|&g| (dom, g, false)).collect();
        let mut out = self.map(hv, &reqs);
        let mapped = out.iter().filter(|r| r.is_ok()).count();
        if mapped > 0 {
            *self.cached.entry(dom).or_default() += mapped;
        }
        out.resize(grefs.len(), Err(GrantError::NoSlots));
        out
    }

    /// Unmap cached mappings (made by [`MapSlots::map_cached`]).
    pub fn unmap_cached(
        &mut self,
        hv: &mut impl Hypervisor,
        maps: &[Mapping],
    ) -> Vec<Result<(), GrantError>> {
        for m in maps {
            if let Some(n) = self.cached.get_mut(&m.dom) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.cached.remove(&m.dom);
                }
            }
        }
        self.unmap(hv, maps)
    }

    pub fn available(&self) -> usize {
        self.free.len()
    }

    pub fn in_use(&self) -> usize {
        self.total - self.free.len() - self.leaked
    }

    /// Map a batch of (domain, reference, read-only) grants with one hypercall. Each
    /// result stands alone: one bad reference does not fail the others.
    pub fn map(
        &mut self,
        hv: &mut impl Hypervisor,
        reqs: &[(DomId, GrantRef, bool)],
    ) -> Vec<Result<Mapping, GrantError>> {
        let mut ops = Vec::with_capacity(reqs.len());
        let mut slot_of = Vec::with_capacity(reqs.len());
        for &(dom, gref, ro) in reqs {
            let slot = self.free.pop();
            slot_of.push(slot);
            if let Some(addr) = slot {
                let flags = abi::GNTMAP_HOST_MAP | if ro { abi::GNTMAP_READONLY } else { 0 };
                ops.push(abi::MapGrantRef {
                    host_addr: addr,
                    flags,
                    gref,
                    dom,
                    ..Default::default()
                });
            }
        }
        let call = if ops.is_empty() {
            Ok(())
        } else {
            hv.grant_map(&mut ops)
        };
        let mut ops = ops.into_iter();
        let mut out = Vec::with_capacity(reqs.len());
        for (i, slot) in slot_of.into_iter().enumerate() {
            let Some(addr) = slot else {
                out.push(Err(GrantError::NoSlots));
                continue;
            };
            let op = ops.next().expect("one op per slot");
            let r = match call {
                Err(e) => Err(GrantError::Hypercall(e)),
                Ok(()) if op.status != 0 => Err(GrantError::Status(op.status)),
                Ok(()) => Ok(Mapping {
                    addr,
                    handle: op.handle,
                    dom: reqs[i].0,
                    gref: reqs[i].1,
                    readonly: reqs[i].2,
                }),
            };
            if r.is_err() {
                self.free.push(addr);
            }
            out.push(r);
        }
        out
    }

    /// Unmap a batch; slots go back to the pool unless Xen refused, in which case the
    /// slot is never reused (it may still show the foreign page).
    pub fn unmap(
        &mut self,
        hv: &mut impl Hypervisor,
        maps: &[Mapping],
    ) -> Vec<Result<(), GrantError>> {
        if maps.is_empty() {
            return Vec::new();
        }
        let mut ops: Vec<abi::UnmapGrantRef> = maps
            .iter()
            .map(|m| abi::UnmapGrantRef {
                host_addr: m.addr,
                handle: m.handle,
                ..Default::default()
            })
            .collect();
        let call = hv.grant_unmap(&mut ops);
        maps.iter()
            .zip(ops)
            .map(|(m, op)| match call {
                Err(e) => {
                    self.leaked += 1;
                    Err(GrantError::Hypercall(e))
                }
                Ok(()) if op.status != 0 => {
                    self.leaked += 1;
                    Err(GrantError::Status(op.status))
                }
                Ok(()) => {
                    self.free.push(m.addr);
                    Ok(())
                }
            })
            .collect()
    }
}

/// One side of a grant copy.
#[derive(Clone, Copy, Debug)]
pub enum CopyPtr {
    /// A frame of ours (guest frame number) and offset.
    Local { frame: u64, offset: u16 },
    /// Another domain's grant and offset.
    Grant {
        dom: DomId,
        gref: GrantRef,
        offset: u16,
    },
}

/// GNTTABOP_copy for a batch; per-op results.
pub fn copy(
    hv: &mut impl Hypervisor,
    reqs: &[(CopyPtr, CopyPtr, u16)],
) -> Vec<Result<(), GrantError>> {
    if reqs.is_empty() {
        return Vec::new();
    }
    let side = |p: CopyPtr, gref_flag: u16| match p {
        CopyPtr::Local { frame, offset } => (
            abi::GrantCopyPtr {
                u: frame,
                domid: abi::DOMID_SELF,
                offset,
            },
            0,
        ),
        CopyPtr::Grant { dom, gref, offset } => (
            abi::GrantCopyPtr {
                u: gref as u64,
                domid: dom,
                offset,
            },
            gref_flag,
        ),
    };
    let mut ops: Vec<abi::GrantCopy> = reqs
        .iter()
        .map(|&(src, dst, len)| {
            let (source, f1) = side(src, abi::GNTCOPY_SOURCE_GREF);
            let (dest, f2) = side(dst, abi::GNTCOPY_DEST_GREF);
            abi::GrantCopy {
                source,
                dest,
                len,
                flags: f1 | f2,
                status: 0,
            }
        })
        .collect();
    let call = hv.grant_copy(&mut ops);
    ops.iter()
        .map(|op| match call {
            Err(e) => Err(GrantError::Hypercall(e)),
            Ok(()) if op.status != 0 => Err(GrantError::Status(op.status)),
            Ok(()) => Ok(()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeTable, FakeXen};
    use alloc::vec;

    #[test]
    fn grant_and_revoke() {
        let mut t = GrantTable::new(FakeTable::new(16));
        let r = t.grant_access(0, 0x1234, false).unwrap();
        assert!(r >= GNTTAB_NR_RESERVED_ENTRIES);
        assert_eq!(t.memory().entries[r as usize].domid, 0);
        assert_eq!(t.memory().entries[r as usize].frame, 0x1234);
        assert_eq!(t.memory().entries[r as usize].flags, abi::GTF_PERMIT_ACCESS);
        let ro = t.grant_access(3, 0x55, true).unwrap();
        assert_eq!(
            t.memory().entries[ro as usize].flags,
            abi::GTF_PERMIT_ACCESS | abi::GTF_READONLY
        );
        assert_eq!(t.granted(), 2);
        t.end_access(r).unwrap();
        assert_eq!(t.memory().entries[r as usize].flags, 0);
        assert_eq!(t.end_access(r), Err(GrantError::BadRef(r)), "double revoke");
        assert_eq!(
            t.end_access(2),
            Err(GrantError::BadRef(2)),
            "reserved entry"
        );
        assert_eq!(t.granted(), 1);
    }

    #[test]
    fn revoke_refused_while_mapped() {
        let mut t = GrantTable::new(FakeTable::new(16));
        let r = t.grant_access(0, 7, false).unwrap();
        t.memory().entries[r as usize].flags |= abi::GTF_READING;
        assert_eq!(t.end_access(r), Err(GrantError::InUse));
        t.memory().entries[r as usize].flags &= !abi::GTF_READING;
        // The other side maps it between our read and our swap: the swap must notice.
        t.memory().race_set_on_cmpxchg = Some(abi::GTF_WRITING);
        assert_eq!(t.end_access(r), Err(GrantError::InUse));
        t.memory().entries[r as usize].flags &= !abi::GTF_WRITING;
        t.end_access(r).unwrap();
    }

    #[test]
    fn table_exhaustion() {
        let mut t = GrantTable::new(FakeTable::new(10));
        assert!(t.grant_access(0, 1, false).is_ok());
        assert!(t.grant_access(0, 2, false).is_ok());
        assert_eq!(t.grant_access(0, 3, false), Err(GrantError::Exhausted));
        assert_eq!(
            t.grant_access(0, 1 << 40, false),
            Err(GrantError::Status(-11))
        );
    }

    #[test]
    fn map_unmap_round_trip_and_slot_accounting() {
        let mut hv = FakeXen::new(5);
        let g1 = hv.foreign_grant(0, b"hello from dom0", false);
        let g2 = hv.foreign_grant(0, b"read only", true);
        let mut slots = MapSlots::new(vec![0x10_0000, 0x10_1000, 0x10_2000]);
        let r = slots.map(&mut hv, &[(0, g1, false), (0, g2, true), (0, 999, false)]);
        let m1 = r[0].unwrap();
        let m2 = r[1].unwrap();
        assert_eq!(r[2], Err(GrantError::Status(-3)), "unknown reference");
        assert_eq!(slots.in_use(), 2);
        assert_eq!(&hv.mapped_page(m1.addr).unwrap()[..15], b"hello from dom0");
        assert!(m2.readonly);
        // Writable request for a read-only grant is refused by Xen.
        let denied = slots.map(&mut hv, &[(0, g2, false)]);
        assert_eq!(denied[0], Err(GrantError::Status(-8)));
        assert_eq!(slots.unmap(&mut hv, &[m1, m2]), vec![Ok(()), Ok(())]);
        assert_eq!(slots.in_use(), 0);
        assert_eq!(slots.available(), 3);
        assert!(hv.mapped_page(m1.addr).is_none());
        // Unmapping again: Xen says bad handle; the slot is not reused.
        assert_eq!(
            slots.unmap(&mut hv, &[m1]),
            vec![Err(GrantError::Status(-4))]
        );
        assert_eq!(slots.leaked, 1);
    }

    /// Finding 4 of the hostile-guest review: one guest's cached (persistent) mappings
    /// are capped, and never take the slots kept for rings, so a guest that maps all it
    /// can does not keep a new device of another guest from connecting.
    #[test]
    fn cached_mappings_are_capped_per_domain_and_leave_rings_room() {
        let mut hv = FakeXen::new(5);
        let grefs = |hv: &mut FakeXen, dom: DomId, n: usize| -> Vec<GrantRef> {
            (0..n)
                .map(|_| hv.foreign_grant(dom, b"page", false))
                .collect()
        };
        let mut slots = MapSlots::new((0..400u64).map(|i| 0x10_0000 + i * 4096).collect());
        assert_eq!(slots.cache_per_domain, 100);
        slots.add_device(); // the hostile guest's disk
        let g = grefs(&mut hv, 7, 300);
        let r = slots.map_cached(&mut hv, 7, &g);
        assert_eq!(r.iter().filter(|r| r.is_ok()).count(), 100, "the cap");
        assert!(r[100..].iter().all(|r| *r == Err(GrantError::NoSlots)));
        assert_eq!((slots.cached(7), slots.cache_room(7)), (100, 0));
        // Two more busy guests: their caches take what the reserve leaves.
        slots.add_device();
        slots.add_device();
        for dom in [8, 9] {
            let g = grefs(&mut hv, dom, 300);
            slots.map_cached(&mut hv, dom, &g);
        }
        assert_eq!(slots.available(), slots.ring_reserve());
        // A fourth guest's device is added: its 4 queues of 4-page rings map.
        slots.add_device();
        let g = grefs(&mut hv, 10, RING_SLOTS_PER_DEVICE);
        let reqs: Vec<_> = g.iter().map(|&r| (10, r, false)).collect();
        assert!(slots.map(&mut hv, &reqs).iter().all(|r| r.is_ok()));
        // The first guest goes away: its cache is released and the count follows.
        let maps: Vec<Mapping> = r.into_iter().flatten().collect();
        assert!(slots.unmap_cached(&mut hv, &maps).iter().all(|r| r.is_ok()));
        assert_eq!(slots.cached(7), 0);
        slots.remove_device();
        let g = grefs(&mut hv, 11, 10);
        let r = slots.map_cached(&mut hv, 11, &g);
        assert_eq!(r.iter().filter(|r| r.is_ok()).count(), 10);
        assert_eq!(slots.cached(11), 10);
    }

    #[test]
    fn map_without_slots() {
        let mut hv = FakeXen::new(5);
        let g = hv.foreign_grant(0, b"x", false);
        let mut slots = MapSlots::new(vec![0x10_0000]);
        let r = slots.map(&mut hv, &[(0, g, false), (0, g, false)]);
        assert!(r[0].is_ok());
        assert_eq!(r[1], Err(GrantError::NoSlots));
    }

    #[test]
    fn failed_hypercall_returns_slots() {
        let mut hv = FakeXen::new(5);
        hv.fail_next_hypercall = true;
        let g = hv.foreign_grant(0, b"x", false);
        let mut slots = MapSlots::new(vec![0x10_0000]);
        assert_eq!(
            slots.map(&mut hv, &[(0, g, false)])[0],
            Err(GrantError::Hypercall(Errno(-14)))
        );
        assert_eq!(slots.available(), 1);
    }

    #[test]
    fn copy_in_and_out() {
        let mut hv = FakeXen::new(5);
        let g = hv.foreign_grant(0, b"0123456789", false);
        hv.local_frame(0x500, b"");
        let r = copy(
            &mut hv,
            &[(
                CopyPtr::Grant {
                    dom: 0,
                    gref: g,
                    offset: 2,
                },
                CopyPtr::Local {
                    frame: 0x500,
                    offset: 100,
                },
                5,
            )],
        );
        assert_eq!(r, vec![Ok(())]);
        assert_eq!(&hv.local(0x500)[100..105], b"23456");
        let bad = copy(
            &mut hv,
            &[(
                CopyPtr::Grant {
                    dom: 0,
                    gref: 77,
                    offset: 0,
                },
                CopyPtr::Local {
                    frame: 0x500,
                    offset: 0,
                },
                1,
            )],
        );
        assert_eq!(bad, vec![Err(GrantError::Status(-3))]);
        let oob = copy(
            &mut hv,
            &[(
                CopyPtr::Grant {
                    dom: 0,
                    gref: g,
                    offset: 4090,
                },
                CopyPtr::Local {
                    frame: 0x500,
                    offset: 0,
                },
                10,
            )],
        );
        assert_eq!(oob, vec![Err(GrantError::Status(-10))]);
    }
}
