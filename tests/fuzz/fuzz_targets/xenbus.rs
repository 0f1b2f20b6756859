//! The xenbus backend state machine and device discovery, driven by event sequences and
//! xenstore listings from the input (a frontend writes any state, in any order; dom0's
//! listing has any names). No input may panic; the machine never connects twice without
//! a disconnect between, and never acts after it was destroyed.
#![no_main]

use bulkhead_xenbus::{Action, Backend, DeviceId, Discovery, Event, Kind, State};
use libfuzzer_sys::fuzz_target;

fn state(b: u8) -> Option<State> {
    State::parse(&(b % 10).to_string())
}

fuzz_target!(|data: &[u8]| {
    let id = DeviceId {
        kind: Kind::Vbd,
        frontend: 7,
        devid: 51712,
    };
    let mut b = Backend::new(id);
    let mut connected = false;
    let mut destroyed = false;
    for &x in data {
        let mut todo: std::collections::VecDeque<Action> = match x % 4 {
            0 => b.on(Event::Created),
            1 => b.on(Event::Removed),
            _ => b.on(Event::Frontend(state(x / 4))),
        }
        .into();
        while let Some(a) = todo.pop_front() {
            assert!(!destroyed, "an action after Destroy: {a:?}");
            match a {
                Action::Connect => {
                    assert!(!connected, "connect twice without a disconnect");
                    // The device code reports back at once, as the kernel's does.
                    if x & 0x80 != 0 {
                        connected = true;
                        todo.extend(b.connected());
                    } else {
                        todo.extend(b.connect_failed());
                    }
                }
                Action::Disconnect => connected = false,
                Action::Destroy => destroyed = true,
                Action::SetState(_) => {}
            }
        }
    }
    // Discovery over listings made of the input's bytes.
    let text = String::from_utf8_lossy(data);
    let words: Vec<&str> = text.split(|c: char| !c.is_ascii_alphanumeric()).collect();
    let mut d = Discovery::default();
    for chunk in words.chunks(3) {
        let devs: Vec<&str> = chunk.iter().skip(1).copied().collect();
        let listing = [(Kind::Vbd, chunk[0], devs.as_slice())];
        let changes = d.update(&listing);
        for id in changes.added {
            d.ended(id, true);
        }
    }
    let _ = DeviceId::from_path("/local/domain/1", &text);
});
