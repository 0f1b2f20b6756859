//! The Xen PV console ring (public/io/console.h): `struct xencons_interface { char in[1024];
//! char out[2048]; uint32 in_cons, in_prod, out_cons, out_prod; }` in a page whose frame
//! is HVM_PARAM_CONSOLE_PFN, with HVM_PARAM_CONSOLE_EVTCHN to kick xenconsoled. This is
//! what `xl console` shows and what xenconsoled writes to /var/log/xen/console/.

use core::sync::atomic::{fence, Ordering};

use bulkhead_xen::abi::HVM_PARAM_CONSOLE_EVTCHN;

use bulkhead_xen::Hypervisor;

use crate::machine::shared::{HvmPage, SharedPage};

const OUT_OFFSET: usize = 1024;
/// The output ring's size in bytes.
pub const OUT_SIZE: u32 = 2048;
const OUT_CONS: usize = 3080;
const OUT_PROD: usize = 3084;

pub struct XenConsole {
    page: SharedPage,
    evtchn: u32,
    /// Bytes written since the last notify.
    pending: bool,
    /// Bytes dropped because the ring stayed full (xenconsoled not draining).
    pub dropped: u64,
    /// The ring was full at the last attempt: drop without waiting until it drains.
    stalled: bool,
    /// Bytes dropped since the last marker written into the output.
    unreported: u64,
}

/// Written into the output once it flows again after bytes were dropped, so that a
/// reader of `xl console` or the log knows output is missing and how much.
const MARKER_MAX: usize = 64;

impl XenConsole {
    /// Find and map the console page. `None` with a reason when this domain has none.
    pub fn attach() -> Result<XenConsole, &'static str> {
        let evtchn = crate::machine::hv::hvm_get_param(HVM_PARAM_CONSOLE_EVTCHN)
            .map_err(|_| "HVM_PARAM_CONSOLE_EVTCHN unavailable")?;
        let page = SharedPage::from_hvm_param(HvmPage::Console)?;
        Ok(XenConsole {
            page,
            evtchn: evtchn as u32,
            pending: false,
            dropped: 0,
            stalled: false,
            unreported: 0,
        })
    }

    /// Free bytes in the output ring now (xenconsoled frees more as it reads).
    pub fn room(&self) -> u32 {
        let used = self
            .page
            .read_u32(OUT_PROD)
            .wrapping_sub(self.page.read_u32(OUT_CONS));
        OUT_SIZE.saturating_sub(used)
    }

    pub fn put(&mut self, b: u8) {
        // The index fields are u32s shared with xenconsoled (volatile, `SharedPage`); the
        // producer index is published after the byte (fence below).
        let prod = self.page.read_u32(OUT_PROD);
        let mut spins = 0u32;
        loop {
            let cons = self.page.read_u32(OUT_CONS);
            let used = prod.wrapping_sub(cons);
            if used < OUT_SIZE {
                self.stalled = false;
                if self.unreported > 0 {
                    if OUT_SIZE - used <= MARKER_MAX as u32 {
                        // Room for the byte but not the marker: keep dropping until
                        // the marker fits, so the gap is never silent.
                        self.unreported += 1;
                        self.dropped += 1;
                        return;
                    }
                    self.write_marker();
                    return self.put(b);
                }
                break;
            }
            // Full: give xenconsoled a short moment, once; while it stays behind,
            // drop output rather than spend the CPU (under load, the CPU a spinning
            // driver domain takes is the one xenconsoled needs).
            if self.stalled || spins > 20_000 {
                self.stalled = true;
                self.dropped += 1;
                self.unreported += 1;
                self.pending = true;
                return;
            }
            if spins == 0 {
                let _ = crate::machine::hv::Hv.evtchn_send(self.evtchn);
            }
            spins += 1;
            core::hint::spin_loop();
        }
        self.page
            .write_u8(OUT_OFFSET + (prod % OUT_SIZE) as usize, b);
        // The byte must be visible before the index that publishes it.
        fence(Ordering::Release);
        self.page.write_u32(OUT_PROD, prod.wrapping_add(1));
        self.pending = true;
    }

    /// "[console: N bytes lost]" on a line of its own; the caller checked there is room.
    fn write_marker(&mut self) {
        let mut line = [0u8; MARKER_MAX];
        let mut n = 0;
        let mut push = |bytes: &[u8]| {
            for &b in bytes {
                if n < MARKER_MAX {
                    line[n] = b;
                    n += 1;
                }
            }
        };
        push(b"\r\n[console: ");
        let mut digits = [0u8; 20];
        let mut d = 0;
        let mut v = self.unreported;
        loop {
            digits[d] = b'0' + (v % 10) as u8;
            d += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        digits[..d].reverse();
        push(&digits[..d]);
        push(b" bytes lost: xenconsoled fell behind]\r\n");
        self.unreported = 0;
        // The caller saw more than MARKER_MAX bytes free, and only this domain produces
        // into the ring.
        let mut prod = self.page.read_u32(OUT_PROD);
        for &b in &line[..n] {
            self.page
                .write_u8(OUT_OFFSET + (prod % OUT_SIZE) as usize, b);
            prod = prod.wrapping_add(1);
        }
        fence(Ordering::Release);
        self.page.write_u32(OUT_PROD, prod);
        self.pending = true;
    }

    pub fn notify(&mut self) {
        if self.pending {
            self.pending = false;
            let _ = crate::machine::hv::Hv.evtchn_send(self.evtchn);
        }
    }
}
