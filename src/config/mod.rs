//! Configuration in two stages: the plain data of the TOML file ([`raw`], every key
//! optional with its documented default), then the build step, which turns it into runtime
//! settings (listeners, the next hop, policies, models, sender authentication) and reports
//! every problem at once, so `filterd --check-config` lists them all.
//!
//! - [`raw`]: the serde structs;
//! - `load`: reading a file section by section (a bad section does not hide the others);
//! - `build`: [`Config`] from the plain data (server, next hop, scores, Bayes, model);
//! - `policy` and `auth`: the policies and the quarantine, sender authentication and
//!   DKIM signing;
//! - `rules`: the rule files and the DNS block lists;
//! - `check`: the shared validators and [`ConfigError`].

mod auth;
mod build;
mod check;
mod content;
mod load;
mod policy;
mod postfix;
pub mod raw;
mod raw_content;
mod raw_policyd;
mod raw_shared;
mod rules;
mod service;

pub use build::{Config, Journald, ServerSettings, next_hop_of};
pub use check::ConfigError;
pub use load::load_raw;
pub use policy::{QuarantineSettings, quarantine_dir, quarantine_store};
pub use raw::*;
pub use raw_content::*;
pub use raw_policyd::*;
pub use service::LocalSettings;
