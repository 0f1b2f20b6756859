//! Reading another domain's xenstore directory (untrusted): numbers must be canonical,
//! a missing required key is an error naming it.

use alloc::format;
use alloc::string::String;

/// Reads keys of the frontend's directory (relative names); `None` when absent.
pub trait Keys {
    fn get(&mut self, key: &str) -> impl core::future::Future<Output = Option<String>>;
}

fn number(v: &str) -> Option<u32> {
    crate::parse_number(v.trim_end_matches('\0').trim())
}

pub async fn optional(keys: &mut impl Keys, key: &str, default: u32) -> Result<u32, String> {
    match keys.get(key).await {
        None => Ok(default),
        Some(v) => number(&v).ok_or_else(|| format!("{key} is not a number: {v:?}")),
    }
}

pub async fn required(keys: &mut impl Keys, key: &str) -> Result<u32, String> {
    let v = keys
        .get(key)
        .await
        .ok_or_else(|| format!("frontend did not write {key}"))?;
    number(&v).ok_or_else(|| format!("{key} is not a number: {v:?}"))
}

/// A yes/no feature key: absent means `default`; anything but 0 or 1 is an error.
pub async fn flag(keys: &mut impl Keys, key: &str, default: bool) -> Result<bool, String> {
    match optional(keys, key, default as u32).await? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(format!("{key} is {v}, not 0 or 1")),
    }
}

/// Where queue `q` of `queues` keeps its keys, relative to the frontend's directory: the
/// directory itself for a single queue (blkfront and netfront write them flat then,
/// even beside `multi-queue-num-queues = 1`), else `queue-N/`.
pub fn queue_dir(queues: u32, q: u32) -> String {
    if queues == 1 {
        String::new()
    } else {
        format!("queue-{q}/")
    }
}

/// An in-memory directory for negotiation tests (feature `fake`).
#[cfg(any(test, feature = "fake"))]
pub mod fake {
    use alloc::collections::BTreeMap;
    use alloc::string::String;
    use core::future::Future;
    use core::pin::pin;
    use core::task::{Context, Poll, Waker};

    use super::Keys;

    /// A frontend's (or toolstack's) directory: relative key → value.
    pub struct Map(pub BTreeMap<String, String>);

    pub fn map(kv: &[(&str, &str)]) -> Map {
        Map(kv
            .iter()
            .map(|(k, v)| (String::from(*k), String::from(*v)))
            .collect())
    }

    impl Keys for Map {
        async fn get(&mut self, key: &str) -> Option<String> {
            self.0.get(key).cloned()
        }
    }

    /// Finish a future that never waits, as one over a [`Map`] or another in-memory fake
    /// does.
    pub fn run<T>(f: impl Future<Output = T>) -> T {
        let mut f = pin!(f);
        match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("waited, though every fake here is in memory"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_queue_is_flat_and_more_have_directories() {
        assert_eq!(queue_dir(1, 0), "");
        assert_eq!(queue_dir(4, 0), "queue-0/");
        assert_eq!(queue_dir(4, 3), "queue-3/");
    }
}
