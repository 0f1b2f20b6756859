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
