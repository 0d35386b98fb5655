//! How the three binaries end: sysexits(3) codes, so scripts and systemd can tell failures
//! apart, and one way of printing a failure with its whole error chain (`program: what:
//! why: why`), as ripgrep does in one place.

use std::process::ExitCode;

/// Success.
pub const OK: u8 = 0;
/// A failure without a more specific code.
pub const FAILURE: u8 = 1;
/// Bad usage: flags that do not fit, a second release without --force.
pub const USAGE: u8 = 64;
/// Bad input data: a corrupt entry or store.
pub const DATAERR: u8 = 65;
/// An input that does not exist: no such entry.
pub const NOINPUT: u8 = 66;
/// A service refused for good (the next hop said 5xx).
pub const UNAVAILABLE: u8 = 69;
/// An OS-level failure: cannot bind, no runtime.
pub const OSERR: u8 = 71;
/// A file that cannot be created (it exists, or the directory is not writable).
pub const CANTCREAT: u8 = 73;
/// An I/O error on a file or directory.
pub(crate) const IOERR: u8 = 74;
/// Try again later: the next hop is down or said 4xx.
pub const TEMPFAIL: u8 = 75;
/// The configuration is invalid.
pub const CONFIG: u8 = 78;

/// A failure a binary ends with: its exit code and the error to print.
#[derive(Debug)]
pub struct Failure {
    /// The sysexits code.
    pub code: u8,
    /// What went wrong, with its causes.
    pub error: anyhow::Error,
}

impl Failure {
    /// A failure with an explicit code.
    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code,
            error: error.into(),
        }
    }

    /// A failure with a message of its own.
    pub fn msg(code: u8, message: impl std::fmt::Display) -> Self {
        Failure::new(code, anyhow::anyhow!("{message}"))
    }
}

/// Any error becomes a failure with the code its type implies: an invalid configuration is
/// [`CONFIG`], quarantine errors say whether the entry is missing, corrupt or unreadable;
/// anything else is [`FAILURE`].
impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        let error = e.into();
        Failure {
            code: code_of(&error),
            error,
        }
    }
}

fn code_of(e: &anyhow::Error) -> u8 {
    use crate::action::quarantine::QuarantineError;
    if e.downcast_ref::<crate::config::ConfigError>().is_some() {
        return CONFIG;
    }
    match e.downcast_ref::<QuarantineError>() {
        Some(QuarantineError::Unknown(_) | QuarantineError::BadId(_)) => NOINPUT,
        Some(QuarantineError::Corrupt { .. }) => DATAERR,
        Some(QuarantineError::Io { .. }) => IOERR,
        Some(QuarantineError::Database(_) | QuarantineError::Busy(_)) => TEMPFAIL,
        None => FAILURE,
    }
}

/// Run a binary's body and turn its result into the process exit code, printing a failure
/// as `program: error: cause: cause` on standard error.
pub fn run(program: &str, body: impl FnOnce() -> Result<u8, Failure>) -> ExitCode {
    match body() {
        Ok(code) => ExitCode::from(code),
        Err(Failure { code, error }) => {
            eprintln!("{program}: {error:#}");
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::quarantine::QuarantineError;

    #[test]
    fn codes_follow_the_error_type() {
        let f: Failure = QuarantineError::Unknown("x".into()).into();
        assert_eq!(f.code, NOINPUT);
        let f: Failure = crate::config::ConfigError {
            problems: vec!["a".into()],
        }
        .into();
        assert_eq!(f.code, CONFIG);
        let f: Failure = anyhow::anyhow!("plain").into();
        assert_eq!(f.code, FAILURE);
        assert_eq!(Failure::msg(USAGE, "bad").code, USAGE);
    }
}
