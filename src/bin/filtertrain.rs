//! `filtertrain`: will learn corpora into the Bayes store, mirroring sa-learn. Not built yet
//! (see the Bayes issue); it says so and exits with EX_UNAVAILABLE instead of pretending.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("filtertrain: not available yet: the Bayes store is not part of this build");
    ExitCode::from(69)
}
