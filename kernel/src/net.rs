//! Networking: NIC bring-up (virtio-net, e1000e), the L2 switch with the NIC as its uplink, and
//! Bulkhead's own management interface on the switch (smoltcp: DHCP or a static address,
//! ARP, ICMP echo, and a read-only status page on TCP port 80).

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, Ordering};

use bulkhead_config::Mgmt;
use bulkhead_e1000e::E1000e;
use bulkhead_event::quoted;
use bulkhead_executor::{first, yield_now, Handle, Signal};
use bulkhead_hw::Clock as _;
use bulkhead_net::{Checksum, Counters, Link, MacAddr, Nic, Offloads, TxError};
use bulkhead_netback::packet::Packet;
use bulkhead_pci::Function;
use bulkhead_virtio::net::{Vectors, VirtioNet};
use bulkhead_virtio::transport::Transport;
use log::{error, warn};
use smoltcp::iface::{Config as IfConfig, Interface, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::{dhcpv4, tcp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address, Ipv4Cidr};

use crate::hw::{BarMaps, BarMmio, KernelDma, SpinClock};
use crate::pci;
use bulkhead_fabric::uplink::{deliver_local, Uplink};
use bulkhead_fabric::{Fabric, FabricRef};

/// Every driver behind one type, so the switch and the stack hold a list of them.
// Not boxed: one value per NIC, made once at start.
#[allow(clippy::large_enum_variant)]
pub enum AnyNic {
    Virtio(VirtioNet<BarMmio, KernelDma>),
    E1000e(E1000e<BarMmio, KernelDma>),
}

macro_rules! each {
    ($self:ident, $n:ident => $e:expr) => {
        match $self {
            AnyNic::Virtio($n) => $e,
            AnyNic::E1000e($n) => $e,
        }
    };
}

impl Nic for AnyNic {
    fn mac(&self) -> MacAddr {
        each!(self, n => n.mac())
    }
    fn link(&self) -> Link {
        each!(self, n => n.link())
    }
    fn offloads(&self) -> Offloads {
        each!(self, n => n.offloads())
    }
    fn send(&mut self, parts: &[&[u8]], csum: Checksum) -> Result<(), TxError> {
        each!(self, n => n.send(parts, csum))
    }
    fn send_frames(&mut self, frames: &[&[u8]]) -> usize {
        each!(self, n => n.send_frames(frames))
    }
    fn receive(&mut self, f: &mut dyn FnMut(&[u8])) -> usize {
        each!(self, n => n.receive(f))
    }
    fn set_promiscuous(&mut self, on: bool) {
        each!(self, n => n.set_promiscuous(on))
    }
    fn counters(&self) -> Counters {
        each!(self, n => n.counters())
    }
}

impl AnyNic {
    /// Reset the device (no more DMA or interrupts) and give its memory back.
    fn shutdown(self) {
        match self {
            AnyNic::Virtio(n) => n.shutdown(),
            AnyNic::E1000e(n) => n.shutdown(&mut SpinClock),
        }
    }
}

/// Shutdown's request to the network task: reset every NIC, so a driver domain that
/// leaves has no device writing into its memory. `NICS_DOWN` says it is done.
static QUIESCE: Signal = Signal::new();
static QUIESCE_REQUESTED: AtomicBool = AtomicBool::new(false);
static NICS_DOWN: AtomicBool = AtomicBool::new(false);
static RUNNING: AtomicBool = AtomicBool::new(false);

/// Reset every NIC the network task drives (domain shutdown); waits up to `bound_ns`.
/// Returns how the NICs ended: true when reset (or there were none).
pub async fn shut_down(h: &Handle, bound_ns: u64) -> bool {
    if !RUNNING.load(Ordering::Acquire) {
        return true;
    }
    QUIESCE_REQUESTED.store(true, Ordering::Release);
    QUIESCE.raise();
    let t0 = h.now();
    while !NICS_DOWN.load(Ordering::Acquire) && h.now() - t0 < bound_ns {
        h.sleep(1_000_000).await;
    }
    NICS_DOWN.load(Ordering::Acquire)
}

/// A NIC and how its interrupts reach us.
pub struct Port {
    pub name: String,
    pub kind: &'static str,
    pub nic: AnyNic,
    signal: Option<&'static Signal>,
    /// INTx: the I/O APIC pin to unmask after servicing.
    gsi: Option<u8>,
}

impl Port {
    fn ack(&self) {
        match &self.nic {
            AnyNic::Virtio(v) => {
                v.ack_interrupt();
            }
            AnyNic::E1000e(n) => {
                n.ack_interrupt();
            }
        }
    }

    /// After an interrupt: acknowledge the device and let the pin fire again.
    fn serviced(&mut self) {
        if let Some(g) = self.gsi {
            self.ack();
            crate::arch::ioapic::unmask(g);
        } else if let AnyNic::E1000e(n) = &self.nic {
            // MSI: the cause register still wants reading (it is read-to-clear).
            n.ack_interrupt();
        }
    }
}

/// Find and bring up every NIC we drive. Failures are logged per device.
pub fn probe(h: &Handle) -> Vec<Port> {
    let funcs = pci::functions();
    let mut out = Vec::new();
    for f in &funcs {
        let name = format!("net{}", out.len());
        if bulkhead_virtio::pci::is_net(f.vendor, f.device) {
            match virtio_up(h, f, &name) {
                Ok(p) => out.push(p),
                Err(e) => error!("{name} ({}): virtio-net not usable: {e}", f.bdf),
            }
        } else if bulkhead_e1000e::is_e1000e(f.vendor, f.device) {
            match e1000e_up(h, f, &name) {
                Ok(p) => out.push(p),
                Err(e) => error!("{name} ({}): e1000e not usable: {e}", f.bdf),
            }
        }
    }
    out
}

fn virtio_up(h: &Handle, f: &Function, name: &str) -> Result<Port, String> {
    let bdf = f.bdf;
    let mut maps = BarMaps::of(bdf)?;
    let caps = pci::with(|cs| bulkhead_virtio::pci::caps(cs, bdf, maps.bars()))
        .ok_or("no PCI access")??;
    let region = |r: bulkhead_virtio::pci::Region, bar: BarMmio| bar.at(r.offset as u64);
    let common = region(caps.common, maps.map(caps.common.bar)?);
    let notify = region(caps.notify, maps.map(caps.notify.bar)?);
    let isr = region(caps.isr, maps.map(caps.isr.bar)?);
    let device = match caps.device {
        Some(d) => region(d, maps.map(d.bar)?),
        None => return Err("no device configuration capability".into()),
    };
    let t = Transport {
        common,
        notify,
        notify_multiplier: caps.notify_multiplier,
        isr,
        device,
    };
    // MSI-X when the device has it (one CPU vector for configuration, receive and
    // transmit), else INTx.
    let (v, signal) = crate::arch::interrupts::alloc_vector().ok_or("out of interrupt vectors")?;
    h.watch(signal);
    let use_msix =
        crate::hw::msix_setup(bdf, &mut maps, &[(0, Some(v)), (1, Some(v)), (2, Some(v))]).is_ok();
    let mut gsi = None;
    if !use_msix {
        if f.interrupt_pin == 0 || f.interrupt_line == 0 || f.interrupt_line == 0xff {
            return Err("neither MSI-X nor an INTx line".into());
        }
        crate::arch::ioapic::route_intx(f.interrupt_line, v, crate::arch::apic::id() as u8)?;
        gsi = Some(f.interrupt_line);
    }
    pci::with(|cs| bulkhead_pci::enable(cs, bdf, !use_msix));
    let vectors = use_msix.then_some(Vectors {
        config: 0,
        rx: 1,
        tx: 2,
    });
    let nic = VirtioNet::new(t, KernelDma, &mut SpinClock, vectors).map_err(|e| format!("{e}"))?;
    crate::event!(
        "nic-up",
        "dev={name} bdf={bdf} driver=virtio-net mac={} link_mbps={} features={:#x} irq={} pin={} vector={v:#x}",
        nic.mac(),
        nic.link().mbps(),
        nic.features,
        if use_msix { "msix" } else { "intx" },
        if use_msix { 0 } else { f.interrupt_line },
    );
    Ok(Port {
        name: name.into(),
        kind: "virtio-net",
        nic: AnyNic::Virtio(nic),
        signal: Some(signal),
        gsi,
    })
}

fn e1000e_up(h: &Handle, f: &Function, name: &str) -> Result<Port, String> {
    let bdf = f.bdf;
    let mut maps = BarMaps::of(bdf)?;
    let regs = maps.map(0)?;
    // A previous instance of this domain, destroyed or crashed, may have left the NIC
    // receiving and signalling; silence it before the interrupt mode changes below.
    pci::with(|cs| bulkhead_pci::enable_memory(cs, bdf));
    bulkhead_e1000e::quiesce(&regs);
    SpinClock.pause(bulkhead_e1000e::QUIET_AFTER_MASK_US);
    let (v, signal) = crate::arch::interrupts::alloc_vector().ok_or("out of interrupt vectors")?;
    h.watch(signal);
    // MSI-X (one entry for every cause), else MSI, else INTx. MSI-X first: the 82574's
    // MSI cannot be masked per vector, and Xen then defers the CPU's end-of-interrupt
    // until this domain acknowledges, holding off every lower-priority interrupt on that
    // CPU (dom0's disk included) meanwhile, and for good once this domain stops
    // answering (crashed or paused) while the device keeps signalling.
    let use_msix = crate::hw::msix_setup(bdf, &mut maps, &[(0, Some(v))]).is_ok();
    let msi = !use_msix
        && pci::with(|cs| bulkhead_pci::msi_enable(cs, bdf, crate::arch::apic::id() as u8, v))
            .is_some_and(|r| r.is_ok());
    let mut gsi = None;
    if !use_msix && !msi {
        if f.interrupt_pin == 0 || f.interrupt_line == 0 || f.interrupt_line == 0xff {
            return Err("neither MSI-X, MSI nor an INTx line".into());
        }
        crate::arch::ioapic::route_intx(f.interrupt_line, v, crate::arch::apic::id() as u8)?;
        gsi = Some(f.interrupt_line);
    }
    pci::with(|cs| bulkhead_pci::enable(cs, bdf, gsi.is_some()));
    let mut nic = E1000e::new(regs, KernelDma, &mut SpinClock).map_err(|e| format!("{e}"))?;
    if use_msix {
        nic.use_msix();
    }
    crate::hw::silence_on_crash(
        regs,
        bulkhead_e1000e::quiesce,
        bulkhead_e1000e::QUIET_AFTER_MASK_US,
    );
    crate::event!(
        "nic-up",
        "dev={name} bdf={bdf} driver=e1000e model=82574L mac={} mac_from={} link_mbps={} irq={} pin={} vector={v:#x}",
        nic.mac(),
        quoted(nic.mac_source),
        nic.link().mbps(),
        if use_msix {
            "msix"
        } else if msi {
            "msi"
        } else {
            "intx"
        },
        gsi.unwrap_or(0),
    );
    Ok(Port {
        name: name.into(),
        kind: "e1000e",
        nic: AnyNic::E1000e(nic),
        signal: Some(signal),
        gsi,
    })
}

/// The management interface's side of the switch, as smoltcp sees a device: frames the
/// switch delivered to it, and frames it wants sent (switched after each poll).
struct MgmtDev {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}

impl Device for MgmtDev {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _t: Instant) -> Option<(Rx, Tx<'_>)> {
        let f = self.rx.pop_front()?;
        Some((Rx(f), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _t: Instant) -> Option<Tx<'_>> {
        (self.tx.len() < 64).then_some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}

const MGMT_RX_QUEUE: usize = 256;
const HTTP_PORT: u16 = 80;

/// The `net` task: the NIC as the switch's uplink, and the management stack as another
/// switch port. Guests' vifs are ports too (netback); the [`Fabric`] carries frames
/// between all of them.
pub async fn run(
    h: Handle,
    mut ports: Vec<Port>,
    fabric: FabricRef,
    mgmt: Mgmt,
    gw: Option<[u8; 4]>,
) {
    if ports.is_empty() {
        return;
    }
    h.watch(&QUIESCE);
    RUNNING.store(true, Ordering::Release);
    ports[0].nic.set_promiscuous(true);
    let mut uplink = Uplink::attach(&fabric, format!("uplink {}", ports[0].name));
    let host_in = fabric.borrow().inbox();
    let host = (mgmt != Mgmt::Off).then(|| {
        fabric
            .borrow_mut()
            .attach(String::from("mgmt"), vec![host_in.clone()], None)
    });
    let mac = ports[0].nic.mac();
    let mut dev = MgmtDev {
        rx: VecDeque::new(),
        tx: Vec::new(),
    };
    let now = || Instant::from_micros((crate::time::now_ns() / 1000) as i64);
    let mut cfg = IfConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac.0)));
    cfg.random_seed = crate::time::now_ns();
    let mut iface = Interface::new(cfg, &mut dev, now());
    let mut sockets = SocketSet::new(vec![]);
    let dhcp = match mgmt {
        Mgmt::Off => None,
        Mgmt::Dhcp => Some(sockets.add(dhcpv4::Socket::new())),
        Mgmt::Static { addr, prefix } => {
            let a = Ipv4Address::new(addr[0], addr[1], addr[2], addr[3]);
            iface.update_ip_addrs(|ips| {
                let _ = ips.push(IpCidr::Ipv4(Ipv4Cidr::new(a, prefix)));
            });
            if let Some(g) = gw {
                let _ = iface
                    .routes_mut()
                    .add_default_ipv4_route(Ipv4Address::new(g[0], g[1], g[2], g[3]));
            }
            crate::event!(
                "mgmt-address",
                "addr={a}/{prefix} source=static dev={} mac={mac}",
                ports[0].name
            );
            crate::status::set("mgmt", format!("{a}/{prefix} static, MAC {mac}"));
            None
        }
    };
    let http = (mgmt != Mgmt::Off).then(|| {
        sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 2048]),
            tcp::SocketBuffer::new(vec![0; 16384]),
        ))
    });
    let mut request = bulkhead_mgmt::Request::new();
    let mut coalesced_shown = 0u64;
    loop {
        if QUIESCE_REQUESTED.load(Ordering::Acquire) {
            for p in ports.drain(..) {
                crate::event!("nic-down", "dev={} why=shutdown", p.name);
                p.nic.shutdown();
            }
            NICS_DOWN.store(true, Ordering::Release);
            return;
        }
        let t = crate::time::now_ns();
        // Wire → switch.
        for p in ports.iter_mut() {
            p.serviced();
        }
        if uplink.receive(&fabric, &mut ports[0].nic, t) > 0
            && t.saturating_sub(coalesced_shown) >= 1_000_000_000
        {
            coalesced_shown = t;
            let c = uplink.coalesced;
            crate::status::set(
                "coalesce",
                format!(
                    "{}: {} frames received in {} batches; {} packets merged of {} segments",
                    ports[0].name, c.frames, c.batches, c.merged, c.merged_segments
                ),
            );
        }
        // Switch → management stack.
        if let Some(host) = host {
            // Finished frames (smoltcp checks checksums: what a guest left to offload
            // is completed), only while the stack has room.
            deliver_local(&host_in, &mut dev.rx, MGMT_RX_QUEUE);
            iface.poll(now(), &mut dev, &mut sockets);
            if let Some(d) = dhcp {
                dhcp_event(
                    &mut iface,
                    sockets.get_mut::<dhcpv4::Socket>(d),
                    &ports[0],
                    mac,
                );
            }
            if let Some(s) = http {
                serve_http(
                    sockets.get_mut::<tcp::Socket>(s),
                    &mut request,
                    &ports,
                    &fabric,
                );
            }
            iface.poll(now(), &mut dev, &mut sockets);
            // Management stack → switch.
            for f in core::mem::take(&mut dev.tx) {
                fabric.borrow_mut().forward(t, host, Packet::plain(f));
            }
        }
        // Switch → wire: a bounded turn of finished frames (bulkhead_fabric::uplink).
        let sent = uplink.transmit(&mut ports[0].nic);
        let before = uplink.oversized - sent.oversized.len() as u64;
        for (i, len) in sent.oversized.iter().enumerate() {
            if before + i as u64 >= 8 {
                break;
            }
            warn!("{}: dropped a {len}-byte frame for the wire", ports[0].name);
        }
        let delay = if host.is_some() {
            iface
                .poll_delay(now(), &sockets)
                .map_or(1_000_000_000, |d| d.total_micros() * 1000)
                .clamp(0, 1_000_000_000)
        } else {
            1_000_000_000
        };
        if delay > 0 && uplink.inbox.is_empty() && host_in.is_empty() {
            let mut waits: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> = vec![
                Box::pin(uplink.inbox.notify.wait()),
                Box::pin(host_in.notify.wait()),
                Box::pin(h.sleep(delay)),
            ];
            if let Some(s) = ports[0].signal {
                waits.push(Box::pin(s.wait()));
            }
            waits.push(Box::pin(QUIESCE.wait()));
            first(waits).await;
        } else {
            // More to do at once: still let the other tasks (vifs, disks) run first.
            yield_now().await;
        }
    }
}

fn dhcp_event(iface: &mut Interface, s: &mut dhcpv4::Socket, port: &Port, mac: MacAddr) {
    match s.poll() {
        None => {}
        Some(dhcpv4::Event::Configured(c)) => {
            iface.update_ip_addrs(|ips| {
                ips.clear();
                let _ = ips.push(IpCidr::Ipv4(c.address));
            });
            match c.router {
                Some(r) => {
                    let _ = iface.routes_mut().add_default_ipv4_route(r);
                }
                None => iface
                    .routes_mut()
                    .remove_default_ipv4_route()
                    .map_or((), |_| ()),
            }
            crate::event!(
                "mgmt-address",
                "addr={} source=dhcp dev={} mac={mac} router={}",
                c.address,
                port.name,
                c.router.map_or(String::from("none"), |r| format!("{r}"))
            );
            crate::status::set("mgmt", format!("{} dhcp, MAC {mac}", c.address));
        }
        Some(dhcpv4::Event::Deconfigured) => {
            // Also the socket's first event, before any lease: only a lost lease is news.
            let had = !iface.ip_addrs().is_empty();
            iface.update_ip_addrs(|ips| ips.clear());
            iface.routes_mut().remove_default_ipv4_route();
            if had {
                warn!("mgmt: DHCP lease lost on {}", port.name);
            }
            crate::status::set("mgmt", format!("no address yet (DHCP), MAC {mac}"));
        }
    }
}

/// The status page over HTTP (bulkhead_mgmt): one request per connection, answered once
/// its headers are in and the socket can take the whole answer.
fn serve_http(
    s: &mut tcp::Socket,
    request: &mut bulkhead_mgmt::Request,
    ports: &[Port],
    fabric: &FabricRef,
) {
    if !s.is_open() {
        request.reset();
        let _ = s.listen(HTTP_PORT);
        return;
    }
    if s.can_recv() {
        let _ = s.recv(|b| (request.feed(b), ()));
    }
    if request.complete() && s.can_send() && s.send_queue() == 0 {
        let resp = request.answer(|| status_page(ports, &fabric.borrow()));
        let _ = s.send_slice(resp.as_bytes());
        s.close();
    }
}

fn status_page(ports: &[Port], fabric: &Fabric) -> String {
    use core::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "bulkhead {} up {} s",
        env!("CARGO_PKG_VERSION"),
        crate::time::now_ns() / 1_000_000_000
    );
    for p in ports {
        let c = p.nic.counters();
        let _ = writeln!(
            o,
            "nic {}: {} MAC {} link {:?}; rx {} frames {} bytes, {} errors, {} dropped; tx {} frames {} bytes, {} errors, {} dropped",
            p.name,
            p.kind,
            p.nic.mac(),
            p.nic.link(),
            c.rx_frames,
            c.rx_bytes,
            c.rx_errors,
            c.rx_dropped,
            c.tx_frames,
            c.tx_bytes,
            c.tx_errors,
            c.tx_dropped
        );
    }
    fabric.render(&mut o);
    crate::status::render(&mut o);
    o
}
