//! `filterq`: inspect and release the quarantine (amavisd-release and more). Reads the
//! store filterd writes; safe to run while filterd runs (entries appear and go atomically).

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use filterd::action::quarantine::{Entry, Quarantine, Release, id_header};
use filterd::clock::unix_secs;
use filterd::config::{RawConfig, load_raw, next_hop_of, quarantine_dir, quarantine_store};
use filterd::exit::{self, Failure};
use filterd::smtp::envelope::{MailParams, RcptParams, Recipient, Xforward};
use filterd::smtp::relay::{NextHop, RelayConn, RelayError};
use filterd::smtp::reply::Reply;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Inspect and release mail filterd quarantined.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// filterd's configuration file (for the quarantine directory and the next hop);
    /// without it the embedded defaults are used.
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// The quarantine directory, overriding the configuration.
    #[arg(long, value_name = "DIR", global = true)]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List quarantined messages, oldest first.
    List {
        /// Only those quarantined in the last DURATION (`2h`, `7d`) or since a time
        /// (`2026-11-23T10:00:00Z`).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Only this reason (`spam`, `ratelimit`).
        #[arg(long)]
        reason: Option<String>,
        /// Only senders containing this text (case-insensitive).
        #[arg(long)]
        sender: Option<String>,
        /// Only messages with a recipient containing this text (case-insensitive).
        #[arg(long)]
        rcpt: Option<String>,
        /// Only scores at or above.
        #[arg(long, value_name = "SCORE", allow_negative_numbers = true)]
        min_score: Option<f64>,
        /// JSON (an array of entries) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One entry: summary, hits and the message's headers.
    Show {
        /// The quarantine id.
        id: String,
        /// The entry's metadata as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The message, byte for byte as received, to stdout.
    Cat {
        /// The quarantine id.
        id: String,
    },
    /// Deliver a message through the configured next hop, with an X-Quarantine-ID header,
    /// to its original recipients or the given ones.
    Release {
        /// The quarantine id.
        id: String,
        /// Deliver to these addresses instead of the original recipients.
        #[arg(long = "to", value_name = "ADDR")]
        to: Vec<String>,
        /// Release again although it was released before.
        #[arg(long)]
        force: bool,
    },
    /// Delete entries.
    Delete {
        /// Quarantine ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Delete entries older than a duration.
    Purge {
        /// `30d`, `12h`, ...
        #[arg(long, value_name = "DURATION")]
        older_than: String,
    },
    /// Counts and sizes by reason and policy.
    Stats {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn invalid(e: impl std::fmt::Display) -> Failure {
    fail(
        exit::CONFIG,
        anyhow::anyhow!("configuration is invalid:\n{e}"),
    )
}

fn fail(code: u8, e: impl Into<anyhow::Error>) -> Failure {
    Failure::new(code, e)
}

fn main() -> ExitCode {
    if let Some(code) =
        filterd::docs::handle(<Args as clap::CommandFactory>::command().name("filterq"))
    {
        return code;
    }
    let args = Args::parse();
    exit::run("filterq", || run(args))
}

fn run(args: Args) -> Result<u8, Failure> {
    let raw = match &args.config {
        Some(path) => load_raw(path).map_err(invalid)?,
        None => RawConfig::default(),
    };
    let store = open_store(&args, &raw)?;
    let out = &mut std::io::stdout().lock();
    match args.command {
        Cmd::List {
            since,
            reason,
            sender,
            rcpt,
            min_score,
            json,
        } => {
            let since = since.as_deref().map(parse_since).transpose()?;
            let mut corrupt = 0;
            let mut shown = vec![];
            for e in store.list()? {
                match e {
                    Ok(e) => {
                        let keep = since.is_none_or(|t| e.time >= t)
                            && reason.as_ref().is_none_or(|r| &e.reason == r)
                            && sender.as_ref().is_none_or(|s| contains(&e.sender, s))
                            && rcpt
                                .as_ref()
                                .is_none_or(|r| e.recipients.iter().any(|x| contains(x, r)))
                            && min_score.is_none_or(|m| e.score.is_some_and(|s| s >= m));
                        if keep {
                            shown.push(e);
                        }
                    }
                    Err(e) => {
                        corrupt += 1;
                        eprintln!("filterq: {e}");
                    }
                }
            }
            if json {
                serde_json::to_writer_pretty(&mut *out, &shown)?;
                writeln!(out)?;
            } else {
                print_table(out, &shown, std::io::stdout().is_terminal())?;
            }
            Ok(if corrupt > 0 { exit::DATAERR } else { 0 })
        }
        Cmd::Show { id, json } => {
            let e = store.get(&id)?;
            if json {
                serde_json::to_writer_pretty(&mut *out, &e)?;
                writeln!(out)?;
            } else {
                let msg = store.message(&id)?;
                print_entry(out, &e, &msg)?;
            }
            Ok(0)
        }
        Cmd::Cat { id } => {
            let msg = store.message(&id)?;
            out.write_all(&msg)?;
            Ok(0)
        }
        Cmd::Release { id, to, force } => release(&store, &raw, &id, to, force, out),
        Cmd::Delete { ids } => {
            for id in &ids {
                store.delete(id)?;
                writeln!(out, "deleted {id}")?;
            }
            Ok(0)
        }
        Cmd::Purge { older_than } => {
            let age = humantime::parse_duration(&older_than).map_err(|e| {
                fail(
                    exit::USAGE,
                    anyhow::anyhow!("--older-than `{older_than}`: {e}"),
                )
            })?;
            let cutoff = SystemTime::now().checked_sub(age).unwrap_or(UNIX_EPOCH);
            let r = store.purge(cutoff)?;
            writeln!(
                out,
                "purged {} entr{} ({} bytes) older than {older_than}",
                r.entries,
                if r.entries == 1 { "y" } else { "ies" },
                r.bytes
            )?;
            Ok(0)
        }
        Cmd::Stats { json } => stats(&store, json, out),
    }
}

fn contains(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

/// `2h`, `7d` (that long ago) or an RFC 3339 time, as Unix seconds.
fn parse_since(s: &str) -> Result<u64, Failure> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(unix_secs(
            SystemTime::now().checked_sub(d).unwrap_or(UNIX_EPOCH),
        ));
    }
    humantime::parse_rfc3339_weak(s)
        .map(unix_secs)
        .map_err(|_| {
            fail(
                exit::USAGE,
                anyhow::anyhow!(
                    "--since `{s}`: neither a duration (2h, 7d) nor a time (2026-11-23T10:00:00Z)"
                ),
            )
        })
}

fn time(t: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t)).to_string()
}

fn score(s: Option<f64>) -> String {
    s.map_or("-".into(), filterd::verdict::format_score)
}

/// Cut to `n` characters (with an ellipsis) when `cut`, for a terminal.
fn fit(s: &str, n: usize, cut: bool) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if cut && s.chars().count() > n {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    } else {
        s
    }
}

fn print_table(out: &mut impl std::io::Write, entries: &[Entry], tty: bool) -> std::io::Result<()> {
    let rows: Vec<[String; 7]> = entries
        .iter()
        .map(|e| {
            let rcpts = match e.recipients.as_slice() {
                [one] => one.clone(),
                [first, rest @ ..] => format!("{first} +{}", rest.len()),
                [] => String::new(),
            };
            [
                e.id.clone(),
                time(e.time),
                score(e.score),
                format!(
                    "{}{}",
                    e.reason,
                    if e.released.is_empty() { "" } else { "*" }
                ),
                fit(&format!("<{}>", e.sender), 32, tty),
                fit(&rcpts, 32, tty),
                fit(e.subject.as_deref().unwrap_or(""), 40, tty),
            ]
        })
        .collect();
    let head = [
        "ID",
        "TIME",
        "SCORE",
        "REASON",
        "SENDER",
        "RECIPIENTS",
        "SUBJECT",
    ];
    let mut width = head.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut dyn std::io::Write, cells: &[String]| -> std::io::Result<()> {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(out, &head.map(String::from))?;
    for r in &rows {
        line(out, r)?;
    }
    if tty {
        writeln!(out, "{} message(s); * = released before", rows.len())?;
    }
    Ok(())
}

fn print_entry(out: &mut impl std::io::Write, e: &Entry, msg: &[u8]) -> std::io::Result<()> {
    let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    writeln!(out, "ID:          {}", e.id)?;
    writeln!(out, "Time:        {}", time(e.time))?;
    writeln!(out, "Reason:      {}", e.reason)?;
    if let Some(f) = &e.finding {
        writeln!(out, "Finding:     {f}")?;
    }
    writeln!(out, "Policy:      {}", e.policy)?;
    writeln!(out, "Score:       {}", score(e.score))?;
    writeln!(out, "Client:      {} (HELO {})", opt(&e.client_ip), e.helo)?;
    writeln!(out, "Queue-ID:    {}", opt(&e.queue_id))?;
    writeln!(out, "Sender:      <{}>", e.sender)?;
    writeln!(
        out,
        "Recipients:  {}",
        e.recipients
            .iter()
            .map(|r| format!("<{r}>"))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    writeln!(out, "Message-ID:  {}", opt(&e.message_id))?;
    writeln!(
        out,
        "Subject:     {}",
        fit(&opt(&e.subject), usize::MAX, false)
    )?;
    writeln!(out, "Size:        {} bytes", e.size)?;
    for r in &e.released {
        writeln!(
            out,
            "Released:    {} to {}: {}",
            time(r.time),
            r.recipients.join(", "),
            r.reply
        )?;
    }
    writeln!(out, "Hits:")?;
    for h in &e.hits {
        writeln!(
            out,
            "  {:<28} {}",
            h.name,
            filterd::verdict::format_score(h.score)
        )?;
    }
    writeln!(out, "Headers:")?;
    let end = filterd::message::HeaderBlock::parse(msg).end.min(msg.len());
    out.write_all(&msg[..end])?;
    Ok(())
}

/// `--dir`, else the configuration's store: its directory, or the shared database.
fn open_store(args: &Args, raw: &RawConfig) -> Result<Quarantine, Failure> {
    let invalid = |e| invalid(e);
    Ok(match &args.dir {
        Some(dir) => Quarantine::open(dir)?,
        None if raw.shared.quarantine != "directory" => {
            quarantine_store(raw, "filterq").map_err(invalid)?
        }
        None => Quarantine::open(&quarantine_dir(raw))?,
    })
}

/// Reinject through the next hop: XFORWARD-less MAIL with the original sender and BODY,
/// the recipients, and the message with `X-Quarantine-ID: <ID>` on top.
fn release(
    store: &Quarantine,
    raw: &RawConfig,
    id: &str,
    to: Vec<String>,
    force: bool,
    out: &mut impl std::io::Write,
) -> Result<u8, Failure> {
    // The message first (it never changes); the entry is read again under the claim, so
    // two releases at once (from two hosts, with the database) cannot both send it.
    let msg = store.message(id)?;
    let hop = next_hop_of(raw).map_err(invalid)?;
    let done = store.with_claim(id, |entry| {
        if let (Some(last), false) = (entry.released.last(), force) {
            return Err(fail(
                exit::USAGE,
                anyhow::anyhow!(
                    "{id} was already released at {} to {}; add --force to release it again",
                    time(last.time),
                    last.recipients.join(", ")
                ),
            ));
        }
        let label = hop.label();
        let (params, rcpts) = envelope_of(entry, to);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the runtime")?;
        let header = id_header(id);
        let data = [header.as_bytes(), &msg[..]];
        let sent = runtime
            .block_on(deliver(hop, &entry.sender, &params, &rcpts, &data))
            .map_err(|e| {
                fail(
                    exit::TEMPFAIL,
                    anyhow::anyhow!(
                        "next hop {label} unavailable: {e}; {id} stays in the quarantine"
                    ),
                )
            })?;
        for (r, reply) in rcpts.iter().zip(&sent.replies) {
            writeln!(out, "<{}>: {}", r.address, reply.one_line())?;
        }
        if !sent.last.is_positive() || sent.accepted.is_empty() {
            let code = if sent.last.is_transient() {
                exit::TEMPFAIL
            } else {
                exit::UNAVAILABLE
            };
            return Err(fail(
                code,
                anyhow::anyhow!(
                    "next hop {label} refused: {}; {id} stays in the quarantine",
                    sent.last.one_line()
                ),
            ));
        }
        entry.released.push(Release {
            time: filterd::clock::now_unix(),
            recipients: sent.accepted.clone(),
            reply: sent.last.one_line(),
        });
        let code = if sent.accepted.len() < rcpts.len() {
            exit::UNAVAILABLE
        } else {
            exit::OK
        };
        let done = format!(
            "released {id} to {}: {}",
            sent.accepted.join(", "),
            sent.last.one_line()
        );
        Ok((code, done))
    })?;
    // Said once the release is recorded.
    writeln!(out, "{}", done.1)?;
    Ok(done.0)
}

/// The envelope of a release: the original one, DSN parameters included, or the given
/// recipients (alternates get no DSN parameters).
fn envelope_of(entry: &Entry, to: Vec<String>) -> (MailParams, Vec<Recipient>) {
    let original = to.is_empty();
    let recipients = if original {
        entry.recipients.clone()
    } else {
        to
    };
    let params = MailParams {
        body: entry.body,
        smtputf8: entry.smtputf8,
        ret: entry.dsn.ret.clone().filter(|_| original),
        envid: entry.dsn.envid.clone().filter(|_| original),
        ..MailParams::default()
    };
    let param =
        |list: &[Option<String>], i: usize| list.get(i).cloned().flatten().filter(|_| original);
    let rcpts = recipients
        .iter()
        .enumerate()
        .map(|(i, a)| Recipient {
            address: a.clone(),
            params: RcptParams {
                notify: param(&entry.dsn.notify, i),
                orcpt: param(&entry.dsn.orcpt, i),
            },
        })
        .collect();
    (params, rcpts)
}

/// What the next hop said to a release.
struct Sent {
    /// The reply to the content (or to MAIL, when it refused the transaction).
    last: Reply,
    /// The recipients it accepted.
    accepted: Vec<String>,
    /// Its reply to each RCPT.
    replies: Vec<Reply>,
}

/// One transaction at the next hop: MAIL, the RCPTs, the content to the accepted ones.
async fn deliver(
    hop: NextHop,
    sender: &str,
    params: &MailParams,
    rcpts: &[Recipient],
    data: &[&[u8]],
) -> Result<Sent, RelayError> {
    let mut conn = RelayConn::connect(Arc::new(hop)).await?;
    let (mail, replies) = conn
        .mail(&Xforward::default(), sender, params, rcpts)
        .await?;
    if !mail.is_positive() {
        return Ok(Sent {
            last: mail,
            accepted: vec![],
            replies,
        });
    }
    let accepted: Vec<String> = rcpts
        .iter()
        .zip(&replies)
        .filter(|(_, r)| r.is_positive())
        .map(|(r, _)| r.address.clone())
        .collect();
    if accepted.is_empty() {
        let _ = conn.rset().await;
        conn.quit().await;
        return Ok(Sent {
            last: mail,
            accepted,
            replies,
        });
    }
    let last = conn.data(data).await?;
    conn.quit().await;
    Ok(Sent {
        last,
        accepted,
        replies,
    })
}

#[derive(serde::Serialize, Default)]
struct Stats {
    entries: usize,
    bytes: u64,
    corrupt: usize,
    released: usize,
    oldest: Option<String>,
    newest: Option<String>,
    by_reason: std::collections::BTreeMap<String, usize>,
    by_policy: std::collections::BTreeMap<String, usize>,
}

fn stats(store: &Quarantine, json: bool, out: &mut impl std::io::Write) -> Result<u8, Failure> {
    let mut s = Stats::default();
    for e in store.list()? {
        let Ok(e) = e else {
            s.corrupt += 1;
            continue;
        };
        s.entries += 1;
        s.bytes += e.size;
        s.released += usize::from(!e.released.is_empty());
        s.oldest.get_or_insert_with(|| time(e.time));
        s.newest = Some(time(e.time));
        *s.by_reason.entry(e.reason).or_default() += 1;
        *s.by_policy.entry(e.policy).or_default() += 1;
    }
    if json {
        serde_json::to_writer_pretty(&mut *out, &s)?;
        writeln!(out)?;
    } else {
        writeln!(out, "entries:   {} ({} bytes)", s.entries, s.bytes)?;
        writeln!(out, "released:  {}", s.released)?;
        writeln!(out, "corrupt:   {}", s.corrupt)?;
        writeln!(out, "oldest:    {}", s.oldest.as_deref().unwrap_or("-"))?;
        writeln!(out, "newest:    {}", s.newest.as_deref().unwrap_or("-"))?;
        for (k, v) in &s.by_reason {
            writeln!(out, "reason {k}: {v}")?;
        }
        for (k, v) in &s.by_policy {
            writeln!(out, "policy {k}: {v}")?;
        }
    }
    Ok(if s.corrupt > 0 { exit::DATAERR } else { 0 })
}
