//! xenbus from the backend side, as a driver domain sees it (`public/io/xenbus.h`, and
//! the behaviour of Linux's xenbus backend core).
//!
//! - [`State`]: the xenbus states and their xenstore spelling;
//! - [`DeviceId`]: `backend/<kind>/<frontend-domid>/<devid>` parsed from (untrusted)
//!   xenstore paths;
//! - [`Backend`]: the per-device state machine, turning frontend state changes into the
//!   actions a backend must take;
//! - [`Discovery`]: which devices appeared or vanished between two listings of our
//!   backend directory (the part of `xl devd` a driver domain needs).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod control;
pub mod keys;
pub mod pace;

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Unknown = 0,
    Initialising = 1,
    InitWait = 2,
    Initialised = 3,
    Connected = 4,
    Closing = 5,
    Closed = 6,
    Reconfiguring = 7,
    Reconfigured = 8,
}

impl State {
    /// Parse a state node's value. Anything that is not one of the numbers is `None`
    /// (a hostile or confused peer), which callers treat as Unknown.
    pub fn parse(s: &str) -> Option<State> {
        Some(match s.trim_end_matches('\0').trim() {
            "0" => State::Unknown,
            "1" => State::Initialising,
            "2" => State::InitWait,
            "3" => State::Initialised,
            "4" => State::Connected,
            "5" => State::Closing,
            "6" => State::Closed,
            "7" => State::Reconfiguring,
            "8" => State::Reconfigured,
            _ => return None,
        })
    }

    /// The value written to xenstore.
    pub fn as_str(self) -> &'static str {
        ["0", "1", "2", "3", "4", "5", "6", "7", "8"][self as usize]
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            State::Unknown => "Unknown",
            State::Initialising => "Initialising",
            State::InitWait => "InitWait",
            State::Initialised => "Initialised",
            State::Connected => "Connected",
            State::Closing => "Closing",
            State::Closed => "Closed",
            State::Reconfiguring => "Reconfiguring",
            State::Reconfigured => "Reconfigured",
        };
        f.write_str(name)
    }
}

/// The device classes Bulkhead serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Vbd,
    Vif,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Vbd, Kind::Vif];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Vbd => "vbd",
            Kind::Vif => "vif",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "vbd" => Some(Kind::Vbd),
            "vif" => Some(Kind::Vif),
            _ => None,
        }
    }
}

/// One backend device: `backend/<kind>/<frontend>/<devid>` under the driver domain's home.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId {
    pub kind: Kind,
    pub frontend: u16,
    pub devid: u32,
}

impl DeviceId {
    /// The device's backend directory relative to our home (`backend/vbd/5/51712`).
    pub fn rel_path(&self) -> String {
        alloc::format!(
            "backend/{}/{}/{}",
            self.kind.as_str(),
            self.frontend,
            self.devid
        )
    }

    /// The frontend directory the toolstack must have named for this device
    /// (`/local/domain/F/device/vbd/D`): a backend never follows another path.
    pub fn frontend_path(&self) -> String {
        alloc::format!(
            "/local/domain/{}/device/{}/{}",
            self.frontend,
            self.kind.as_str(),
            self.devid
        )
    }

    /// Check what the toolstack wrote in the backend directory (dom0's input, read as
    /// is; None: absent): `frontend` must be [`Self::frontend_path`] and `frontend-id`
    /// the frontend's domain, in its canonical spelling. The frontend path, or why the
    /// device is to be ignored.
    pub fn check_toolstack(
        &self,
        frontend: Option<&str>,
        frontend_id: Option<&str>,
    ) -> Result<String, String> {
        let want = self.frontend_path();
        match frontend {
            Some(f) if f == want => {}
            Some(f) => return Err(alloc::format!("frontend path {f:?} is not {want:?}")),
            None => return Err("no frontend node".into()),
        }
        if frontend_id != Some(alloc::format!("{}", self.frontend).as_str()) {
            return Err(alloc::format!(
                "frontend-id {frontend_id:?} does not match the directory"
            ));
        }
        Ok(want)
    }

    /// Parse a path at or below a device directory, absolute (`/local/domain/N/backend/...`
    /// with `home` = `/local/domain/N`) or relative (`backend/...`). Returns `None` for
    /// anything else, including paths that only reach the kind or frontend level.
    pub fn from_path(home: &str, path: &str) -> Option<DeviceId> {
        let rel = match path.strip_prefix(home) {
            Some(r) => r.strip_prefix('/')?,
            None if !path.starts_with('/') => path,
            None => return None,
        };
        let mut it = rel.split('/');
        if it.next()? != "backend" {
            return None;
        }
        let kind = Kind::parse(it.next()?)?;
        let frontend = parse_number(it.next()?)?;
        let devid = parse_number(it.next()?)?;
        let frontend = u16::try_from(frontend).ok().filter(|d| *d < 0x7ff0)?;
        Some(DeviceId {
            kind,
            frontend,
            devid,
        })
    }
}

/// Decimal without sign, leading '+', or leading zeros (a canonical xenstore number).
pub fn parse_number(s: &str) -> Option<u32> {
    if s.is_empty()
        || s.len() > 10
        || !s.bytes().all(|b| b.is_ascii_digit())
        || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.kind.as_str(), self.frontend, self.devid)
    }
}

/// What the device code must do in response to an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write our `state` node.
    SetState(State),
    /// Read the frontend's ring details and start serving; report back with
    /// [`Backend::connected`] or [`Backend::connect_failed`].
    Connect,
    /// Stop serving and release rings, grants and event channels.
    Disconnect,
    /// Forget the device: the toolstack removed it.
    Destroy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The backend directory appeared; the device code has written its feature keys.
    Created,
    /// The frontend's state node changed (None: missing or unparsable).
    Frontend(Option<State>),
    /// The toolstack removed the backend directory or set `online` to 0.
    Removed,
}

impl Event {
    /// What a look at the device's nodes after a watch fired means: `backend_state` is
    /// the backend directory's `state` node (None: gone, so the toolstack removed the
    /// directory), `online` its `online` node, `frontend` the frontend's parsed state.
    /// `xl block-detach` and `network-detach` set `online` to 0 and close the frontend:
    /// that is a removal once the frontend is Closed or gone; while it is still closing,
    /// its state change is passed on (the backend follows it to Closing first).
    pub fn after_look(
        backend_state: Option<&str>,
        online: Option<&str>,
        frontend: Option<State>,
    ) -> Event {
        let offline = online == Some("0");
        if backend_state.is_none() || (offline && matches!(frontend, Some(State::Closed) | None)) {
            Event::Removed
        } else {
            Event::Frontend(frontend)
        }
    }
}

/// The backend's half of the xenbus handshake, as Linux's xenbus backend drives it:
/// InitWait once set up; Connected after the frontend publishes its rings (Initialised or
/// Connected); Closing/Closed following the frontend; back to InitWait when a closed
/// frontend starts over (guest reboot without device removal); destroyed on removal.
#[derive(Clone, Debug)]
pub struct Backend {
    pub id: DeviceId,
    state: State,
    frontend: State,
    removed: bool,
    /// Every state written, for logs and tests.
    pub history: Vec<State>,
}

impl Backend {
    pub fn new(id: DeviceId) -> Self {
        Backend {
            id,
            state: State::Initialising,
            frontend: State::Unknown,
            removed: false,
            history: Vec::new(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn frontend_state(&self) -> State {
        self.frontend
    }

    fn set(&mut self, s: State, out: &mut Vec<Action>) {
        if self.state != s {
            self.state = s;
            self.history.push(s);
            out.push(Action::SetState(s));
        }
    }

    pub fn on(&mut self, ev: Event) -> Vec<Action> {
        let mut out = Vec::new();
        if self.removed {
            return out;
        }
        match ev {
            Event::Created => {
                if self.state == State::Initialising {
                    self.set(State::InitWait, &mut out);
                }
            }
            Event::Removed => {
                if self.state == State::Connected {
                    out.push(Action::Disconnect);
                }
                self.set(State::Closed, &mut out);
                self.removed = true;
                out.push(Action::Destroy);
            }
            Event::Frontend(fs) => {
                let fs = fs.unwrap_or(State::Unknown);
                self.frontend = fs;
                match fs {
                    State::Initialising => {
                        // A frontend starting over after we closed: offer the device again.
                        if self.state == State::Closed {
                            self.set(State::InitWait, &mut out);
                        }
                    }
                    State::Initialised | State::Connected => {
                        if self.state == State::InitWait {
                            out.push(Action::Connect);
                        }
                    }
                    State::Closing => {
                        if self.state == State::Connected {
                            out.push(Action::Disconnect);
                        }
                        if self.state != State::Closed {
                            self.set(State::Closing, &mut out);
                        }
                    }
                    State::Closed => {
                        if self.state == State::Connected {
                            out.push(Action::Disconnect);
                        }
                        self.set(State::Closed, &mut out);
                    }
                    State::Unknown => {
                        // The frontend vanished (guest destroyed): close; removal follows.
                        if self.state == State::Connected {
                            out.push(Action::Disconnect);
                        }
                        if self.state != State::Initialising && self.state != State::InitWait {
                            self.set(State::Closed, &mut out);
                        }
                    }
                    State::InitWait | State::Reconfiguring | State::Reconfigured => {}
                }
            }
        }
        out
    }

    /// The device code finished connecting.
    pub fn connected(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state == State::InitWait && !self.removed {
            self.set(State::Connected, &mut out);
        }
        out
    }

    /// Connecting failed (bad ring reference, unsupported protocol...): the frontend is
    /// told by our state going to Closing, as Linux does with xenbus_dev_fatal.
    pub fn connect_failed(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.removed {
            self.set(State::Closing, &mut out);
        }
        out
    }
}

/// Tracks the devices under our backend directories and which of them have a task.
///
/// A listing alone cannot tell a device from its successor: `xl block-detach` then
/// `block-attach` of the same vdev removes and re-creates the same directory, and both
/// may happen between two listings. So a device is "added" again only once the task
/// that served the previous one has ended ([`Discovery::ended`]).
#[derive(Default)]
pub struct Discovery {
    known: BTreeMap<DeviceId, Entry>,
}

#[derive(Clone, Copy)]
struct Entry {
    /// A task serves (or is tearing down) this device.
    live: bool,
    /// In the last listing.
    listed: bool,
}

/// Result of comparing a fresh listing with what was known.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// New devices: start a task for each.
    pub added: Vec<DeviceId>,
    /// Directories gone since the last listing (their tasks notice by themselves).
    pub removed: Vec<DeviceId>,
}

impl Discovery {
    /// `listing`: for each kind, each frontend directory name with its device directory
    /// names, exactly as xenstore returned them. Names that are not canonical numbers are
    /// skipped (and counted by the caller if it wishes).
    pub fn update(&mut self, listing: &[(Kind, &str, &[&str])]) -> Changes {
        let mut now = BTreeSet::new();
        for &(kind, fe, devs) in listing {
            let Some(frontend) = parse_number(fe)
                .and_then(|f| u16::try_from(f).ok())
                .filter(|d| *d < 0x7ff0)
            else {
                continue;
            };
            for d in devs {
                if let Some(devid) = parse_number(d) {
                    now.insert(DeviceId {
                        kind,
                        frontend,
                        devid,
                    });
                }
            }
        }
        let mut changes = Changes::default();
        for id in &now {
            match self.known.get_mut(id) {
                Some(e) => e.listed = true,
                None => {
                    self.known.insert(
                        *id,
                        Entry {
                            live: true,
                            listed: true,
                        },
                    );
                    changes.added.push(*id);
                }
            }
        }
        self.known.retain(|id, e| {
            if now.contains(id) {
                return true;
            }
            if e.listed {
                changes.removed.push(*id);
                e.listed = false;
            }
            e.live
        });
        changes
    }

    /// The task of `id` ended. After `served` (it ran the handshake and released the
    /// device, removing its directory) a directory listed from now on is a new device.
    /// Otherwise (it refused the device) the device stays known, so an unchanged bad
    /// directory is not taken up again at every listing, until it disappears.
    pub fn ended(&mut self, id: DeviceId, served: bool) {
        let Some(e) = self.known.get_mut(&id) else {
            return;
        };
        if served || !e.listed {
            self.known.remove(&id);
        } else {
            e.live = false;
        }
    }

    /// Devices with a task (live), in order.
    pub fn known(&self) -> impl Iterator<Item = &DeviceId> {
        self.known.iter().filter(|(_, e)| e.live).map(|(id, _)| id)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn removal_is_a_gone_directory_or_offline_with_the_frontend_closed() {
        use Event::*;
        let c = Some(State::Closed);
        let closing = Some(State::Closing);
        let conn = Some(State::Connected);
        // Directory gone: removed, whatever else is there.
        assert_eq!(Event::after_look(None, None, conn), Removed);
        assert_eq!(Event::after_look(None, Some("1"), None), Removed);
        // xl block-detach: online 0; removed once the frontend is Closed or gone.
        assert_eq!(Event::after_look(Some("4"), Some("0"), c), Removed);
        assert_eq!(Event::after_look(Some("4"), Some("0"), None), Removed);
        assert_eq!(
            Event::after_look(Some("5"), Some("0"), closing),
            Frontend(closing)
        );
        assert_eq!(
            Event::after_look(Some("4"), Some("0"), conn),
            Frontend(conn)
        );
        // Online (any value but "0"): the frontend's change.
        assert_eq!(Event::after_look(Some("4"), Some("1"), c), Frontend(c));
        assert_eq!(Event::after_look(Some("4"), None, None), Frontend(None));
        assert_eq!(Event::after_look(Some("4"), Some("00"), c), Frontend(c));
    }

    use super::*;
    use alloc::vec;

    fn vbd(fe: u16, devid: u32) -> DeviceId {
        DeviceId {
            kind: Kind::Vbd,
            frontend: fe,
            devid,
        }
    }

    #[test]
    fn the_toolstacks_nodes_must_name_this_device() {
        let id = vbd(5, 51712);
        let path = "/local/domain/5/device/vbd/51712";
        assert_eq!(id.check_toolstack(Some(path), Some("5")), Ok(path.into()));
        // Another domain's or another device's frontend, a relative path, none.
        for bad in [
            "/local/domain/6/device/vbd/51712",
            "/local/domain/5/device/vbd/51728",
            "/local/domain/5/device/vif/51712",
            "device/vbd/51712",
            "",
        ] {
            assert!(id.check_toolstack(Some(bad), Some("5")).is_err(), "{bad}");
        }
        assert!(id.check_toolstack(None, Some("5")).is_err());
        // frontend-id: the same domain, spelled canonically, and present.
        for bad in [Some("6"), Some("05"), Some("5\0"), Some(" 5"), None] {
            assert!(id.check_toolstack(Some(path), bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn states_round_trip() {
        for v in 0..=8u32 {
            let s = State::parse(&alloc::format!("{v}")).unwrap();
            assert_eq!(s.as_str(), alloc::format!("{v}"));
        }
        assert_eq!(State::parse("4\0"), Some(State::Connected));
        for bad in ["", "9", "-1", "x", "44", "connected"] {
            assert_eq!(State::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn device_paths() {
        let home = "/local/domain/3";
        assert_eq!(
            DeviceId::from_path(home, "/local/domain/3/backend/vbd/5/51712"),
            Some(vbd(5, 51712))
        );
        assert_eq!(
            DeviceId::from_path(home, "/local/domain/3/backend/vbd/5/51712/state"),
            Some(vbd(5, 51712))
        );
        assert_eq!(
            DeviceId::from_path(home, "backend/vif/7/0"),
            Some(DeviceId {
                kind: Kind::Vif,
                frontend: 7,
                devid: 0
            })
        );
        for bad in [
            "/local/domain/3/backend/vbd",
            "/local/domain/3/backend/vbd/5",
            "/local/domain/4/backend/vbd/5/51712",
            "/local/domain/3/backend/console/5/0",
            "/local/domain/3/backend/vbd/-5/1",
            "/local/domain/3/backend/vbd/05/1",
            "/local/domain/3/backend/vbd/99999/1",
            "/local/domain/3/backend/vbd/32752/1",
            "/local/domain/3/backend/vbd/5/4294967296",
            "/local/domain/3/backend/vbd/5/1x",
            "/local/domain/33/backend/vbd/5/1",
            "/local/domain/3backend/vbd/5/1",
        ] {
            assert_eq!(DeviceId::from_path(home, bad), None, "{bad}");
        }
        assert_eq!(vbd(5, 51712).rel_path(), "backend/vbd/5/51712");
        assert_eq!(alloc::format!("{}", vbd(5, 51712)), "vbd-5-51712");
    }

    #[test]
    fn normal_lifecycle() {
        let mut b = Backend::new(vbd(5, 51712));
        assert_eq!(
            b.on(Event::Created),
            vec![Action::SetState(State::InitWait)]
        );
        assert_eq!(b.on(Event::Frontend(Some(State::Initialising))), vec![]);
        assert_eq!(
            b.on(Event::Frontend(Some(State::Initialised))),
            vec![Action::Connect]
        );
        assert_eq!(b.connected(), vec![Action::SetState(State::Connected)]);
        assert_eq!(
            b.on(Event::Frontend(Some(State::Connected))),
            vec![],
            "already connected"
        );
        assert_eq!(
            b.on(Event::Frontend(Some(State::Closing))),
            vec![Action::Disconnect, Action::SetState(State::Closing)]
        );
        assert_eq!(
            b.on(Event::Frontend(Some(State::Closed))),
            vec![Action::SetState(State::Closed)]
        );
        assert_eq!(b.on(Event::Removed), vec![Action::Destroy]);
        assert_eq!(
            b.history,
            vec![
                State::InitWait,
                State::Connected,
                State::Closing,
                State::Closed
            ]
        );
        assert_eq!(
            b.on(Event::Frontend(Some(State::Initialising))),
            vec![],
            "dead after removal"
        );
    }

    #[test]
    fn frontend_restart_reoffers_the_device() {
        let mut b = Backend::new(vbd(5, 1));
        b.on(Event::Created);
        b.on(Event::Frontend(Some(State::Connected)));
        b.connected();
        b.on(Event::Frontend(Some(State::Closed)));
        assert_eq!(b.state(), State::Closed);
        assert_eq!(
            b.on(Event::Frontend(Some(State::Initialising))),
            vec![Action::SetState(State::InitWait)]
        );
        assert_eq!(
            b.on(Event::Frontend(Some(State::Initialised))),
            vec![Action::Connect]
        );
    }

    #[test]
    fn garbage_frontend_state_is_unknown() {
        let mut b = Backend::new(vbd(5, 1));
        b.on(Event::Created);
        assert_eq!(b.on(Event::Frontend(None)), vec![]);
        assert_eq!(b.state(), State::InitWait);
        assert_eq!(b.frontend_state(), State::Unknown);
    }

    #[test]
    fn frontend_vanishing_while_connected_disconnects() {
        let mut b = Backend::new(vbd(5, 1));
        b.on(Event::Created);
        b.on(Event::Frontend(Some(State::Initialised)));
        b.connected();
        assert_eq!(
            b.on(Event::Frontend(None)),
            vec![Action::Disconnect, Action::SetState(State::Closed)]
        );
    }

    #[test]
    fn removal_while_connected() {
        let mut b = Backend::new(vbd(5, 1));
        b.on(Event::Created);
        b.on(Event::Frontend(Some(State::Initialised)));
        b.connected();
        assert_eq!(
            b.on(Event::Removed),
            vec![
                Action::Disconnect,
                Action::SetState(State::Closed),
                Action::Destroy
            ]
        );
        assert_eq!(b.connected(), vec![]);
    }

    #[test]
    fn failed_connect_closes() {
        let mut b = Backend::new(vbd(5, 1));
        b.on(Event::Created);
        assert_eq!(
            b.on(Event::Frontend(Some(State::Initialised))),
            vec![Action::Connect]
        );
        assert_eq!(b.connect_failed(), vec![Action::SetState(State::Closing)]);
        assert_eq!(
            b.on(Event::Frontend(Some(State::Closed))),
            vec![Action::SetState(State::Closed)]
        );
    }

    #[test]
    fn discovery_diffs_listings() {
        let mut d = Discovery::default();
        let c = d.update(&[
            (Kind::Vbd, "5", &["51712", "51728"]),
            (Kind::Vif, "5", &["0"]),
        ]);
        assert_eq!(c.added.len(), 3);
        assert!(c.removed.is_empty());
        let c = d.update(&[
            (Kind::Vbd, "5", &["51712"]),
            (Kind::Vif, "5", &["0"]),
            (Kind::Vbd, "6", &["51712"]),
        ]);
        assert_eq!(c.added, vec![vbd(6, 51712)]);
        assert_eq!(c.removed, vec![vbd(5, 51728)]);
        // Hostile names are ignored, not parsed loosely.
        let c = d.update(&[
            (Kind::Vbd, "5", &["51712", "x", "-1", "007"]),
            (Kind::Vbd, "junk", &["1"]),
        ]);
        assert_eq!(c.removed.len(), 2);
        assert!(c.added.is_empty());
    }

    /// Detach then attach of the same vdev between two listings: the new device is
    /// taken up once the old one's task has ended, not lost.
    #[test]
    fn a_device_recreated_between_listings_is_added_after_its_predecessor_ends() {
        let mut d = Discovery::default();
        let dev: &[(Kind, &str, &[&str])] = &[(Kind::Vbd, "5", &["51728"])];
        assert_eq!(d.update(dev).added, vec![vbd(5, 51728)]);
        // Removed and re-created before the next listing: nothing to see yet.
        assert_eq!(d.update(dev), Changes::default());
        d.ended(vbd(5, 51728), true);
        assert_eq!(d.update(dev).added, vec![vbd(5, 51728)]);
        // Gone for good after its task ended: nothing is left behind.
        assert_eq!(d.update(&[]).removed, vec![vbd(5, 51728)]);
        d.ended(vbd(5, 51728), true);
        assert_eq!(d.known().count(), 0);
        assert_eq!(d.update(&[]), Changes::default());
    }

    /// A task that refused a device (bad frontend path) is not restarted while the
    /// same directory stays; once it goes and comes back, it is a new device.
    #[test]
    fn a_refused_device_is_not_retried_until_its_directory_comes_back() {
        let mut d = Discovery::default();
        let dev: &[(Kind, &str, &[&str])] = &[(Kind::Vif, "7", &["0"])];
        let vif = DeviceId {
            kind: Kind::Vif,
            frontend: 7,
            devid: 0,
        };
        assert_eq!(d.update(dev).added, vec![vif]);
        d.ended(vif, false);
        assert_eq!(d.known().count(), 0);
        assert_eq!(d.update(dev), Changes::default());
        assert_eq!(d.update(&[]).removed, vec![vif]);
        assert_eq!(d.update(dev).added, vec![vif]);
    }
}

#[cfg(test)]
mod robustness {
    //! Bounded randomized tests: hostile xenstore paths and state values never panic and
    //! never parse to something they do not spell.
    use super::*;

    use bulkhead_testsupport::XorShift;

    const PIECES: [&str; 14] = [
        "/local",
        "/domain",
        "/3",
        "/backend",
        "/vbd",
        "/vif",
        "/5",
        "/51712",
        "/",
        "//",
        "/0",
        "/-1",
        "/x",
        "/4294967296",
    ];

    #[test]
    fn random_paths() {
        let mut r = XorShift::new(77);
        for _ in 0..20_000 {
            let mut p = alloc::string::String::new();
            for _ in 0..(r.next_u64() % 9) {
                p.push_str(PIECES[(r.next_u64() % PIECES.len() as u64) as usize]);
            }
            if let Some(id) = DeviceId::from_path("/local/domain/3", &p) {
                // Whatever parsed must round-trip to a prefix of the input.
                let canon = alloc::format!("/local/domain/3/{}", id.rel_path());
                assert!(p.starts_with(&canon), "{p} parsed as {canon}");
            }
            let _ = State::parse(&p);
        }
    }

    #[test]
    fn random_state_sequences_keep_invariants() {
        let mut r = XorShift::new(99);
        for _ in 0..2000 {
            let mut b = Backend::new(DeviceId {
                kind: Kind::Vbd,
                frontend: 1,
                devid: 1,
            });
            let mut removed = false;
            for _ in 0..30 {
                let acts = match r.next_u64() % 6 {
                    0 => b.on(Event::Created),
                    1 => b.on(Event::Removed),
                    2 => b.connected(),
                    3 => b.connect_failed(),
                    _ => b.on(Event::Frontend(State::parse(&alloc::format!(
                        "{}",
                        r.next_u64() % 10
                    )))),
                };
                if removed {
                    assert!(acts.is_empty(), "actions after removal: {acts:?}");
                }
                removed |= acts.contains(&Action::Destroy);
                // Connected is only ever reached through `connected()` from InitWait.
                for w in b.history.windows(2) {
                    if w[1] == State::Connected {
                        assert_eq!(w[0], State::InitWait);
                    }
                }
            }
        }
    }
}
