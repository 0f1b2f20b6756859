//! The domain's own `control/shutdown` node: dom0's toolstack writes what it wants
//! (`xl shutdown`, `xl reboot`, `xl destroy` after a grace), the domain acknowledges by
//! emptying the node and acts. As Linux reads it: `poweroff` and `halt` stop the
//! domain, `reboot` restarts it; Bulkhead has no suspend.

/// A request this domain does not know (acknowledge it and carry on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unknown;

/// What dom0 asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    Poweroff,
    Reboot,
}

impl Shutdown {
    /// The node's value (trailing NULs allowed): `Ok(None)` when it is empty (nothing
    /// asked, or our own acknowledgement), [`Unknown`] for anything else.
    pub fn parse(value: &str) -> Result<Option<Shutdown>, Unknown> {
        match value.trim_end_matches('\0') {
            "" => Ok(None),
            "poweroff" | "halt" => Ok(Some(Shutdown::Poweroff)),
            "reboot" => Ok(Some(Shutdown::Reboot)),
            _ => Err(Unknown),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Shutdown::Poweroff => "poweroff",
            Shutdown::Reboot => "reboot",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_as_linux_reads_them() {
        assert_eq!(Shutdown::parse(""), Ok(None));
        assert_eq!(Shutdown::parse("\0"), Ok(None));
        assert_eq!(Shutdown::parse("poweroff"), Ok(Some(Shutdown::Poweroff)));
        assert_eq!(Shutdown::parse("halt\0"), Ok(Some(Shutdown::Poweroff)));
        assert_eq!(Shutdown::parse("reboot"), Ok(Some(Shutdown::Reboot)));
        for other in ["suspend", "crash", "Reboot", " reboot", "poweroff now"] {
            assert_eq!(Shutdown::parse(other), Err(Unknown), "{other}");
        }
    }
}
