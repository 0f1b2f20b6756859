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

/// Guest-physical page addresses with nothing behind them, to map grants into.
pub struct MapSlots {
    free: Vec<u64>,
    total: usize,
    /// Slots lost because Xen refused to unmap them (never reused).
    pub leaked: usize,
}

impl MapSlots {
    pub fn new(addrs: Vec<u64>) -> Self {
        let total = addrs.len();
        MapSlots {
            free: addrs,
            total,
            leaked: 0,
        }
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
