//! filterd: a lossless, fast content filter for Postfix, in the `content_filter` slot that
//! amavisd-new has held for twenty years.
//!
//! ```text
//! Postfix smtp client --SMTP/LMTP--> filterd :10024
//!    session (ESMTP + XFORWARD; envelope relayed as it arrives) -> parse (mail-parser)
//!    -> features (once) -> checks (headers, ...) -> verdict (score, hits)
//!    -> policy per recipient -> action: tag | quarantine | discard | reject
//!       (recipients with different outcomes become separate next-hop transactions)
//!    -> relay (SMTP client) --> Postfix :10025 (reinjection)
//!    -> the reply to Postfix mirrors what really happened downstream
//! ```
//!
//! # Layout
//!
//! - [`config`]: TOML structs and the validating build step (`--check-config`).
//! - [`server`]: accept loops, allow-list, connection cap, graceful shutdown.
//! - [`smtp`]: sans-IO codec, replies, envelope, session state machine, relay client.
//! - [`message`]: byte-level header block and one-time feature extraction.
//! - [`auth`]: SPF/DKIM/DMARC/ARC verification under one DNS budget, DKIM signing.
//! - [`checks`]: one check per file behind one trait; the registry fixes their order.
//! - [`verdict`]: hits x scores -> score, category and the X-Spam-* headers.
//! - [`policy`]: policy banks, destinies, allow/block lists, the outbound guard.
//! - [`action`]: what is done to the message: tagging, the quarantine store.
//! - [`pipeline`]: the order of the steps for one message.
//! - [`logline`]: the amavis-compatible per-message log line.
//! - [`model`]: trained models (Bayes, ONNX) shared by the daemon and the CLIs.
//!
//! Invariants: 250 to the end of DATA only after the next hop's 250, a durable (fsynced)
//! quarantine write, or a deliberate discard by policy; any doubt is 451;
//! headers are added at the byte level and the MIME tree is never re-serialised; filterd
//! relays only to its configured next hop.

pub mod action;
pub mod auth;
pub mod checks;
pub mod config;
pub mod corpus;
pub mod fnv;
pub mod logline;
pub mod message;
pub mod model;
pub mod pipeline;
pub mod policy;
pub mod server;
pub mod smtp;
pub mod verdict;
