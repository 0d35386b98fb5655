//! The integration test binary: filterd processes on loopback against in-process sinks,
//! in-process sessions over duplex streams, the CLI, and a real Postfix end to end.

mod actions;
mod architecture;
mod auth;
mod checks;
mod cli;
mod content;
mod crash;
mod filterq;
mod hardening;
mod metrics;
mod model;
mod package;
mod pipeline;
mod policyd;
mod postfix;
mod relay;
mod rules;
mod scaleout;
mod service;
mod session;
mod shared;
mod shared_pg;
mod train;
mod util;
