//! `filterq`: will list, show and release quarantined mail. Not built yet (see the actions
//! issue); it says so and exits with EX_UNAVAILABLE instead of pretending.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("filterq: not available yet: the quarantine is not part of this build");
    ExitCode::from(69)
}
