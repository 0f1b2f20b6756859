//! Bulkhead's structured console lines: `event: name=NAME key=value ...` for what happened
//! (a device connected, a backend released, a partition found) and `result: name=NAME ...
//! pass=1|0` for what a test checked. The kernel writes them; the test tiers and an
//! operator's tools read them, so a reworded log sentence can neither break nor fake a test.
//!
//! The format: after the `event: ` or `result: ` tag, space-separated `key=value` fields,
//! `name` among them. A value is one word, or in double quotes when it is free text
//! ([`quoted`]: labels, reasons, the command line), where it may hold spaces but never a
//! double quote or a control character. The fields may follow a log prefix on the line.
//!
//! This crate is not the log: prose lines stay for people and may change at any time; the
//! names and keys here are an interface, listed in docs/operating.md.
#![no_std]
#![forbid(unsafe_code)]

use core::fmt::{self, Write};

/// The tag of a line saying what happened.
pub const EVENT: &str = "event: ";
/// The tag of a line saying what a test checked.
pub const RESULT: &str = "result: ";

/// Free text as a field value: in double quotes, any `"` written as `'` and any control
/// character (a newline above all, which would end the line) as a space.
pub fn quoted<T: fmt::Display>(text: T) -> Quoted<T> {
    Quoted(text)
}

pub struct Quoted<T>(T);

impl<T: fmt::Display> fmt::Display for Quoted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Clean<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl Write for Clean<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                for c in s.chars() {
                    self.0.write_char(match c {
                        '"' => '\'',
                        c if c.is_control() => ' ',
                        c => c,
                    })?;
                }
                Ok(())
            }
        }
        f.write_char('"')?;
        write!(Clean(f), "{}", self.0)?;
        f.write_char('"')
    }
}

/// Text as one unquoted field value: its first `max` characters, each one that is not
/// an ASCII letter, a digit or one of `.-_` written as `_` (a name dom0 wrote into
/// xenstore, a test's phase).
pub fn word(text: &str, max: usize) -> Word<'_> {
    Word(text, max)
}

pub struct Word<'a>(&'a str, usize);

impl fmt::Display for Word<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars().take(self.1) {
            f.write_char(if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            })?;
        }
        Ok(())
    }
}

/// The fields of a structured line with `tag` ([`EVENT`] or [`RESULT`]), wherever the tag
/// stands on the line; None if the line has no such tag, a field is not `key=value`, a
/// quote is not closed, or no field is `name`.
pub fn fields<'a>(line: &'a str, tag: &str) -> Option<Fields<'a>> {
    let rest = &line[line.find(tag)? + tag.len()..];
    let all = Fields { rest };
    let mut named = false;
    for f in all.clone() {
        let (key, _) = f?;
        named |= key == "name";
    }
    named.then_some(all)
}

/// The `key=value` fields of one line, in order (see [`fields`]).
#[derive(Clone)]
pub struct Fields<'a> {
    rest: &'a str,
}

impl<'a> Fields<'a> {
    /// The value of `key`, the first if it is there more than once.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.clone()
            .flatten()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}

impl<'a> Iterator for Fields<'a> {
    /// A field, or None for the rest of a line that is malformed from there on.
    type Item = Option<(&'a str, &'a str)>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self
            .rest
            .trim_start_matches(' ')
            .trim_end_matches(['\r', '\n']);
        if rest.is_empty() {
            return None;
        }
        let parsed = (|| {
            let (key, after) = rest.split_once('=')?;
            if key.is_empty() || key.contains(' ') {
                return None;
            }
            let (value, next) = match after.strip_prefix('"') {
                Some(quoted) => quoted.split_once('"')?,
                None => after.split_once(' ').unwrap_or((after, "")),
            };
            Some((key, value, next))
        })();
        match parsed {
            Some((key, value, next)) => {
                self.rest = next;
                Some(Some((key, value)))
            }
            None => {
                self.rest = "";
                Some(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    #[test]
    fn quoted_text_stays_one_field() {
        let line = format!(
            "[    1.0] event: name=partition label={} why={} n=3",
            quoted("my \"root\"\ndisk"),
            quoted("")
        );
        assert_eq!(
            line,
            "[    1.0] event: name=partition label=\"my 'root' disk\" why=\"\" n=3"
        );
        let f = fields(&line, EVENT).unwrap();
        assert_eq!(f.get("name"), Some("partition"));
        assert_eq!(f.get("label"), Some("my 'root' disk"));
        assert_eq!(f.get("why"), Some(""));
        assert_eq!(f.get("n"), Some("3"));
        assert_eq!(f.get("missing"), None);
    }

    #[test]
    fn a_word_is_one_field() {
        assert_eq!(format!("{}", word("net-gso 5", 64)), "net-gso_5");
        assert_eq!(format!("{}", word("a=b \"c\"\n", 64)), "a_b__c__");
        assert_eq!(format!("{}", word("abcdef", 3)), "abc");
        assert_eq!(format!("{}", word("", 3)), "");
    }

    #[test]
    fn lines_that_are_not_structured_are_refused() {
        assert!(fields("INFO vbd-1-51712: backend Connected", EVENT).is_none());
        // A result line is not an event line, nor the other way round.
        assert!(fields("result: name=x pass=1", EVENT).is_none());
        assert!(fields("event: name=x", RESULT).is_none());
        // No name, a field without '=', an unclosed quote.
        assert!(fields("event: dev=vbd-1-51712", EVENT).is_none());
        assert!(fields("event: name=x stray", EVENT).is_none());
        assert!(fields("event: name=x why=\"open", EVENT).is_none());
    }

    #[test]
    fn the_first_of_a_repeated_key_counts_and_crlf_is_no_part_of_a_value() {
        let f = fields("event: name=a k=1 k=2 last=v\r\n", EVENT).unwrap();
        assert_eq!(f.get("k"), Some("1"));
        assert_eq!(f.get("last"), Some("v"));
    }
}
