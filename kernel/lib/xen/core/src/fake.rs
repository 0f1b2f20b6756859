//! A fake Xen for tests: event channels between this domain and peers, other domains'
//! grants backed by byte pages, and our grant table in memory.

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use crate::abi::{self, DomId, GrantEntryV1, GrantRef, Port};
use crate::grants::{GrantMapper, GrantTableMemory, Mapping};
use crate::{Errno, Hypervisor};

pub struct FakeXen {
    pub domid: DomId,
    next_port: Port,
    /// Ports allocated by peers for us: (peer, port) -> allowed remote.
    peer_unbound: BTreeMap<(DomId, Port), DomId>,
    pub sent: Vec<Port>,
    pub closed: Vec<Port>,
    /// (granting domain, ref) -> (page, read-only)
    grants: BTreeMap<(DomId, GrantRef), (Vec<u8>, bool)>,
    next_gref: GrantRef,
    /// host_addr -> (dom, gref, handle)
    maps: BTreeMap<u64, (DomId, GrantRef, u32)>,
    next_handle: u32,
    local_frames: BTreeMap<u64, Vec<u8>>,
    pub fail_next_hypercall: bool,
}

impl FakeXen {
    pub fn new(domid: DomId) -> Self {
        FakeXen {
            domid,
            next_port: 10,
            peer_unbound: BTreeMap::new(),
            sent: Vec::new(),
            closed: Vec::new(),
            grants: BTreeMap::new(),
            next_gref: 8,
            maps: BTreeMap::new(),
            next_handle: 1,
            local_frames: BTreeMap::new(),
            fail_next_hypercall: false,
        }
    }

    /// A peer allocates a port for `remote` to bind; returns the peer's port number.
    pub fn peer_alloc_unbound(&mut self, peer: DomId, remote: DomId) -> Port {
        self.next_port += 1;
        self.peer_unbound.insert((peer, self.next_port), remote);
        self.next_port
    }

    /// Another domain grants us a page with `content`.
    pub fn foreign_grant(&mut self, dom: DomId, content: &[u8], readonly: bool) -> GrantRef {
        let mut page = vec![0u8; 4096];
        page[..content.len()].copy_from_slice(content);
        self.next_gref += 1;
        self.grants.insert((dom, self.next_gref), (page, readonly));
        self.next_gref
    }

    /// The current content of a page another domain granted.
    pub fn foreign_page(&self, dom: DomId, gref: GrantRef) -> Option<&[u8]> {
        self.grants.get(&(dom, gref)).map(|(p, _)| p.as_slice())
    }

    /// The other domain ends its grant (later copies and maps fail).
    pub fn revoke_foreign(&mut self, dom: DomId, gref: GrantRef) {
        self.grants.remove(&(dom, gref));
    }

    /// The page mapped at `addr`, writable (it is the granting domain's page).
    pub fn mapped_page_mut(&mut self, addr: u64) -> Option<&mut [u8]> {
        let (dom, gref, _) = *self.maps.get(&addr)?;
        self.grants
            .get_mut(&(dom, gref))
            .map(|(p, _)| p.as_mut_slice())
    }

    /// Grants mapped right now.
    pub fn mapped_count(&self) -> usize {
        self.maps.len()
    }

    pub fn mapped_page(&self, addr: u64) -> Option<&[u8]> {
        let (dom, gref, _) = self.maps.get(&addr)?;
        self.grants.get(&(*dom, *gref)).map(|(p, _)| p.as_slice())
    }

    pub fn local_frame(&mut self, frame: u64, content: &[u8]) {
        let mut page = vec![0u8; 4096];
        page[..content.len()].copy_from_slice(content);
        self.local_frames.insert(frame, page);
    }

    pub fn local(&self, frame: u64) -> &[u8] {
        &self.local_frames[&frame]
    }

    fn check(&mut self) -> Result<(), Errno> {
        if core::mem::take(&mut self.fail_next_hypercall) {
            return Err(Errno(-14));
        }
        Ok(())
    }
}

/// Maps other domains' grants through a shared [`FakeXen`] into a fixed pool of
/// made-up addresses, as the kernel maps them into its ballooned slots: a grant Xen
/// refuses, or one that finds the pool used up, maps to None. The pages it reaches are
/// the granting domain's own ([`FakeXen::mapped_page`]), so a test sees every write.
pub struct FakeMapper {
    pub xen: Rc<RefCell<FakeXen>>,
    free: Vec<u64>,
}

impl FakeMapper {
    /// Where the pool's slots start (above any frame the tests use).
    pub const BASE: u64 = 0x8000_0000;

    pub fn new(xen: Rc<RefCell<FakeXen>>, slots: usize) -> FakeMapper {
        let free = (0..slots as u64)
            .rev()
            .map(|i| Self::BASE + i * 4096)
            .collect();
        FakeMapper { xen, free }
    }
}

impl GrantMapper for FakeMapper {
    fn map(&mut self, dom: DomId, grefs: &[GrantRef]) -> Vec<Option<Mapping>> {
        grefs
            .iter()
            .map(|&gref| {
                let addr = self.free.pop()?;
                let mut op = [abi::MapGrantRef {
                    host_addr: addr,
                    flags: abi::GNTMAP_HOST_MAP,
                    gref,
                    dom,
                    ..Default::default()
                }];
                self.xen.borrow_mut().grant_map(&mut op).expect("hypercall");
                if op[0].status != 0 {
                    self.free.push(addr);
                    return None;
                }
                Some(Mapping {
                    addr,
                    handle: op[0].handle,
                    dom,
                    gref,
                    readonly: false,
                })
            })
            .collect()
    }

    /// Panics where Xen would refuse: a mapping unmapped twice or never made.
    fn unmap(&mut self, maps: &[Mapping]) {
        for m in maps {
            let mut op = [abi::UnmapGrantRef {
                host_addr: m.addr,
                handle: m.handle,
                ..Default::default()
            }];
            self.xen
                .borrow_mut()
                .grant_unmap(&mut op)
                .expect("hypercall");
            assert_eq!(
                op[0].status, 0,
                "unmap of a grant not mapped at {:#x}",
                m.addr
            );
            self.free.push(m.addr);
        }
    }

    fn copy_from(&mut self, m: &Mapping, offset: usize, dst: &mut [u8]) {
        let xen = self.xen.borrow();
        let page = xen.mapped_page(m.addr).expect("mapped");
        dst.copy_from_slice(&page[offset..offset + dst.len()]);
    }

    fn copy_to(&mut self, m: &Mapping, offset: usize, src: &[u8]) {
        let mut xen = self.xen.borrow_mut();
        let page = xen.mapped_page_mut(m.addr).expect("mapped");
        page[offset..offset + src.len()].copy_from_slice(src);
    }
}

impl Hypervisor for FakeXen {
    fn evtchn_alloc_unbound(&mut self, _remote: DomId) -> Result<Port, Errno> {
        self.check()?;
        self.next_port += 1;
        Ok(self.next_port)
    }

    fn evtchn_bind_interdomain(&mut self, remote: DomId, remote_port: Port) -> Result<Port, Errno> {
        self.check()?;
        match self.peer_unbound.remove(&(remote, remote_port)) {
            Some(allowed) if allowed == self.domid => {
                self.next_port += 1;
                Ok(self.next_port)
            }
            _ => Err(Errno(-22)),
        }
    }

    fn evtchn_send(&mut self, port: Port) -> Result<(), Errno> {
        self.check()?;
        self.sent.push(port);
        Ok(())
    }

    fn evtchn_close(&mut self, port: Port) -> Result<(), Errno> {
        self.check()?;
        self.closed.push(port);
        Ok(())
    }

    fn evtchn_unmask(&mut self, _port: Port) -> Result<(), Errno> {
        self.check()
    }

    fn grant_map(&mut self, ops: &mut [abi::MapGrantRef]) -> Result<(), Errno> {
        self.check()?;
        for op in ops {
            op.status = match self.grants.get(&(op.dom, op.gref)) {
                None => -3,
                Some((_, ro)) if *ro && op.flags & abi::GNTMAP_READONLY == 0 => -8,
                Some(_) if self.maps.contains_key(&op.host_addr) => -5,
                Some(_) => {
                    self.next_handle += 1;
                    op.handle = self.next_handle;
                    self.maps.insert(op.host_addr, (op.dom, op.gref, op.handle));
                    0
                }
            };
        }
        Ok(())
    }

    fn grant_unmap(&mut self, ops: &mut [abi::UnmapGrantRef]) -> Result<(), Errno> {
        self.check()?;
        for op in ops {
            op.status = match self.maps.get(&op.host_addr) {
                Some((_, _, h)) if *h == op.handle => {
                    self.maps.remove(&op.host_addr);
                    0
                }
                _ => -4,
            };
        }
        Ok(())
    }

    fn grant_copy(&mut self, ops: &mut [abi::GrantCopy]) -> Result<(), Errno> {
        self.check()?;
        for op in ops {
            let len = op.len as usize;
            let (so, doff) = (op.source.offset as usize, op.dest.offset as usize);
            if so + len > 4096 || doff + len > 4096 {
                op.status = -10;
                continue;
            }
            let src: Option<Vec<u8>> = if op.flags & abi::GNTCOPY_SOURCE_GREF != 0 {
                self.grants
                    .get(&(op.source.domid, op.source.u as GrantRef))
                    .map(|(p, _)| p[so..so + len].to_vec())
            } else {
                self.local_frames
                    .get(&op.source.u)
                    .map(|p| p[so..so + len].to_vec())
            };
            let Some(src) = src else {
                op.status = -3;
                continue;
            };
            let dst = if op.flags & abi::GNTCOPY_DEST_GREF != 0 {
                match self.grants.get_mut(&(op.dest.domid, op.dest.u as GrantRef)) {
                    Some((_, true)) => {
                        op.status = -8;
                        continue;
                    }
                    Some((p, false)) => Some(p),
                    None => None,
                }
            } else {
                self.local_frames.get_mut(&op.dest.u)
            };
            match dst {
                Some(p) => {
                    p[doff..doff + len].copy_from_slice(&src);
                    op.status = 0;
                }
                None => op.status = -3,
            }
        }
        Ok(())
    }
}

/// Our grant table in plain memory; can simulate the other side mapping an entry in the
/// middle of a compare-and-swap.
pub struct FakeTable {
    pub entries: Vec<GrantEntryV1>,
    pub race_set_on_cmpxchg: Option<u16>,
}

impl FakeTable {
    pub fn new(n: usize) -> Self {
        FakeTable {
            entries: vec![GrantEntryV1::default(); n],
            race_set_on_cmpxchg: None,
        }
    }
}

impl GrantTableMemory for FakeTable {
    fn capacity(&self) -> u32 {
        self.entries.len() as u32
    }
    fn write_entry(&mut self, r: GrantRef, domid: DomId, frame: u32) {
        self.entries[r as usize].domid = domid;
        self.entries[r as usize].frame = frame;
    }
    fn set_flags(&mut self, r: GrantRef, flags: u16) {
        self.entries[r as usize].flags = flags;
    }
    fn flags(&self, r: GrantRef) -> u16 {
        self.entries[r as usize].flags
    }
    fn cmpxchg_flags(&mut self, r: GrantRef, old: u16, new: u16) -> u16 {
        if let Some(bits) = self.race_set_on_cmpxchg.take() {
            self.entries[r as usize].flags |= bits;
        }
        let cur = self.entries[r as usize].flags;
        if cur == old {
            self.entries[r as usize].flags = new;
        }
        cur
    }
}
