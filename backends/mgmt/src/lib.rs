//! The management interface's HTTP: a client on the uplink's network asks for the status
//! page (`GET /status` or `/`), anything else is 404. This is the request side only,
//! as pure logic: the kernel's network task owns the TCP socket (smoltcp), feeds the
//! bytes it receives into a [`Request`] and sends what [`Request::answer`] says. Not a
//! web server: one request per connection, HTTP/1.0, plain text, nothing that changes
//! state. The client is untrusted: a request is bounded in bytes and parsed without a
//! panic whatever it holds.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Bytes of a request kept (the request line and headers of any real client fit); what
/// comes after is read and dropped, and the request is answered as it stands.
pub const MAX_REQUEST: usize = 2048;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Status,
    NotFound,
}

/// One connection's request as it arrives.
#[derive(Clone, Debug, Default)]
pub struct Request {
    bytes: Vec<u8>,
    answered: bool,
}

impl Request {
    pub fn new() -> Request {
        Request::default()
    }

    /// Take received bytes; returns how many were consumed (all of them: beyond
    /// [`MAX_REQUEST`] they are dropped).
    pub fn feed(&mut self, data: &[u8]) -> usize {
        if !self.answered {
            let room = MAX_REQUEST.saturating_sub(self.bytes.len());
            self.bytes.extend_from_slice(&data[..data.len().min(room)]);
        }
        data.len()
    }

    /// The headers are complete (a blank line), or the request is as long as it may be.
    pub fn complete(&self) -> bool {
        !self.answered
            && !self.bytes.is_empty()
            && (self.bytes.windows(4).any(|w| w == b"\r\n\r\n") || self.bytes.len() >= MAX_REQUEST)
    }

    /// The path of the request line (`GET /status HTTP/1.0`), if it is text.
    fn path(&self) -> &str {
        let first = self.bytes.split(|&b| b == b'\n').next().unwrap_or(&[]);
        core::str::from_utf8(first)
            .ok()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("")
    }

    pub fn route(&self) -> Route {
        match self.path() {
            "/" | "/status" => Route::Status,
            _ => Route::NotFound,
        }
    }

    /// The whole response, `status` being the status page's text (asked for only when
    /// the route needs it); the request is answered from then on (nothing more is
    /// parsed on this connection).
    pub fn answer(&mut self, status: impl FnOnce() -> String) -> String {
        let (code, body) = match self.route() {
            Route::Status => ("200 OK", status()),
            Route::NotFound => ("404 Not Found", String::from("not found; try /status\n")),
        };
        self.answered = true;
        self.bytes.clear();
        format!(
            "HTTP/1.0 {code}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    /// A new connection: forget the last one.
    pub fn reset(&mut self) {
        self.bytes.clear();
        self.answered = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn a_status_request_in_pieces_is_answered_once() {
        let mut r = Request::new();
        assert!(!r.complete());
        r.feed(b"GET /sta");
        assert!(!r.complete());
        r.feed(b"tus HTTP/1.0\r\nHost: x\r\n\r\n");
        assert!(r.complete());
        assert_eq!(r.route(), Route::Status);
        let resp = r.answer(|| String::from("up\n"));
        assert!(resp.starts_with("HTTP/1.0 200 OK\r\n"));
        assert!(resp.contains("Content-Length: 3\r\n"));
        assert!(resp.ends_with("\r\n\r\nup\n"));
        // Answered: more bytes on this connection are not a second request.
        r.feed(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!r.complete());
        r.reset();
        r.feed(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(r.route(), Route::Status);
    }

    #[test]
    fn anything_else_is_404_and_the_page_is_not_built() {
        for req in [
            &b"GET /etc/passwd HTTP/1.0\r\n\r\n"[..],
            b"POST /status/../x HTTP/1.0\r\n\r\n",
            b"\xff\xfe /status\r\n\r\n",
            b"\r\n\r\n",
            b"GET\r\n\r\n",
        ] {
            let mut r = Request::new();
            r.feed(req);
            assert!(r.complete(), "{req:?}");
            let resp = r.answer(|| panic!("the status page was built for {req:?}"));
            assert!(resp.starts_with("HTTP/1.0 404 Not Found"), "{req:?}");
        }
    }

    #[test]
    fn a_request_is_bounded_and_answered_when_full() {
        let mut r = Request::new();
        let junk = vec![b'a'; 10 * MAX_REQUEST];
        assert_eq!(r.feed(&junk), junk.len());
        assert_eq!(r.bytes.len(), MAX_REQUEST);
        assert!(r.complete());
        assert_eq!(r.route(), Route::NotFound);
        // Any bytes at all, in any pieces: never a panic.
        let mut rng = bulkhead_testsupport::XorShift::new(0x9e37_79b9);
        for _ in 0..2000 {
            let mut r = Request::new();
            for _ in 0..4 {
                let seed = rng.next_u64();
                let n = (seed % 700) as usize;
                let piece: Vec<u8> = (0..n).map(|i| (seed >> (i % 24)) as u8).collect();
                r.feed(&piece);
            }
            if r.complete() {
                let _ = r.answer(String::new);
            }
        }
    }
}
