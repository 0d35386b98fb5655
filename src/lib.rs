//! filterd: a lossless, fast content filter for Postfix, in the `content_filter` slot that
//! amavisd-new has held for twenty years.
//!
//! ```text
//! Postfix smtp client --SMTP/LMTP--> filterd :10024
//!    server (accept, allow-list, cap) -> smtp::session (ESMTP + XFORWARD; the envelope is
//!    relayed as it arrives) -> pipeline: prepare (origin, policies, guard, sender auth)
//!    -> features (once) -> checks (hits) -> verdict per policy -> decision per policy
//!    -> disposition (parts: relay the tagged copy | discard | reject, + quarantine copy)
//!    -> session: quarantine copies, each part carried out, the reply, the log line
//!    -> relay (SMTP client) --> Postfix :10025 (reinjection)
//! ```
//!
//! # Glossary
//!
//! One word per concept, in the order a message meets them:
//!
//! - **message**: the envelope ([`smtp::envelope::Envelope`]) and the bytes as received;
//!   its **features** ([`message::Features`]) are extracted once.
//! - **hits** ([`checks::Hits`]): the named findings of the checks (`SUBJ_ALL_CAPS`, ...).
//! - **verdict** ([`verdict::Verdict`]): the hits scored under one policy's levels; its
//!   category is CLEAN, SPAMMY or SPAM.
//! - **decision** ([`policy::decision::Decision`]): what that policy does with the verdict
//!   and the signals beside it (rate limit, DMARC): a **destiny** (pass, discard, reject), a
//!   quarantine copy or not, and a typed **hold** reason for mail not delivered as scored.
//! - **disposition** ([`smtp::filter::Disposition`]): the whole message's plan, the
//!   recipients in **parts**, each with its **delivery** (relay this copy, discard, reject),
//!   and the pipeline's **report** ([`report::Report`]) for the log and the quarantine.
//! - **outcome** ([`smtp::filter::Outcome`]): what happened downstream to each part
//!   (relayed, discarded, rejected, tempfailed); the reply to the client follows from it.
//!
//! # Layout
//!
//! - [`config`]: the TOML data and the validating build step (`--check-config`).
//! - [`server`]: every listener (SMTP/LMTP today) and the maintenance loops.
//! - [`smtp`]: codec, replies, envelope, the session by phase, the session/filter
//!   contract, the relay client.
//! - [`message`]: byte-level header block, features extracted once, the one tokenizer.
//! - [`auth`]: SPF/DKIM/DMARC/ARC verification under one DNS budget, DKIM signing.
//! - [`checks`]: one check per file behind one trait; the registry fixes their order.
//! - [`verdict`]: hits x scores -> score, category, the X-Spam-* headers.
//! - [`policy`]: policy banks, the decide step, allow/block lists, the outbound guard.
//! - [`action`]: what is done to the message: tagging and signing, the quarantine,
//!   autolearning.
//! - [`report`]: the pipeline's report and the amavis-compatible log line.
//! - [`pipeline`]: the order of the steps for one message.
//! - [`model`]: trained models (Bayes, ONNX) shared by the daemon and the CLIs.
//! - [`corpus`]: reading corpora, the deterministic split, evaluation metrics.
//! - [`clock`], [`domain`], [`fnv`], [`exit`]: the shared primitives (Unix time, domain
//!   matching, hashing, the binaries' exit codes).
//!
//! Invariants: 250 to the end of DATA only after the next hop's 250, a durable (fsynced)
//! quarantine write, or a deliberate discard by policy; any doubt is 451;
//! headers are added at the byte level and the MIME tree is never re-serialised; filterd
//! relays only to its configured next hop.

#![warn(missing_docs)]

pub mod action;
pub mod auth;
pub mod checks;
pub mod clock;
pub mod config;
pub mod content;
pub mod corpus;
pub mod dns;
pub mod docs;
pub mod domain;
pub mod exit;
pub mod fnv;
pub mod message;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod policy;
pub mod policyd;
pub mod report;
pub mod rules;
pub mod server;
pub mod smtp;
pub mod state;
pub mod verdict;
