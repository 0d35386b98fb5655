//! The pipeline on its own (no sockets): what it relays, how a bank's skipped checks count,
//! and that mangled messages never panic it and keep their bytes.

use filterd::config::Config;
use filterd::message::HeaderBlock;
use filterd::pipeline::Pipeline;
use filterd::report::Report;
use filterd::smtp::envelope::{Envelope, MailParams, RcptParams, Recipient, Xforward};
use filterd::smtp::filter::{Delivery, Disposition, Part};
use filterd::smtp::rewrite::Rewrite;
use filterd::verdict::Verdict;

fn envelope() -> Envelope {
    Envelope {
        peer: "127.0.0.1:40000".parse().unwrap(),
        helo: "mx.example.net".into(),
        xforward: Xforward::default(),
        sender: "a@example.org".into(),
        mail_params: MailParams::default(),
        recipients: vec![Recipient {
            address: "b@example.net".into(),
            params: RcptParams::default(),
        }],
    }
}

fn config() -> Config {
    Config::parse(
        "[bayes]\nenabled = false\n[model]\nenabled = false\n[auth]\nenabled = false\n[actions]\nspam_destiny = \"pass\"\nspam_quarantine = false\n",
    )
    .unwrap()
}

fn relayed(d: &Disposition<Report>) -> (&Rewrite, &Verdict) {
    match (&d.parts[..], &d.report.decisions[..]) {
        (
            [
                Part {
                    delivery: Delivery::Relay(r),
                    ..
                },
            ],
            [j],
        ) => (r, &j.verdict),
        _ => panic!("not one relayed part: {d:?}"),
    }
}

const SEEDS: &[&[u8]] = &[
    b"From: A <a@example.org>\r\nTo: b@example.net\r\nSubject: hi\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\nplain body\r\n",
    b"From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\nContent-Type: text/plain\r\n\r\ntext\r\n--XX\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<p>h=C3=A9llo=\r\n</p>\r\n--XX--\r\n",
    b"Subject: =?utf-8?b?w6nDqQ==?=\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: text/html\r\n\r\n<b>x</b>\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC!!!=\r\n--b1--\r\n",
    b"X-Spam-Flag: YES\r\nReceived: from x by y; Mon, 23 Nov 2026 10:00:00 +0000\r\nFrom: \"service@paypal.com\" <x@evil.test>\r\nReply-To: z@other.test\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n",
];

#[test]
fn relays_the_original_bytes_after_the_added_headers() {
    let p = Pipeline::new(&config());
    let msg = SEEDS[3];
    let d = p.scan_at(&envelope(), msg, "AbCdEf123456", 1_795_442_400);
    let (rewrite, verdict) = relayed(&d);
    let out = rewrite.parts(msg).concat();
    assert!(out.ends_with(&msg[b"X-Spam-Flag: YES\r\n".len()..]));
    assert!(
        out.starts_with(b"X-Spam-Flag: YES\r\n"),
        "GTUBE makes it spam"
    );
    let names: Vec<_> = verdict.hits.iter().map(|h| h.0).collect();
    for n in [
        "GTUBE",
        "FROM_DISPLAY_SPOOF",
        "REPLYTO_DIFF_DOMAIN",
        "MISSING_DATE",
        "MISSING_MID",
        "MISSING_SUBJECT",
        "MISSING_HEADERS",
    ] {
        assert!(names.contains(&n), "{n} not in {names:?}");
    }
    let text = String::from_utf8_lossy(&rewrite.prefix);
    assert!(
        text.contains("Received: from mx.example.net ([127.0.0.1])\r\n\tby "),
        "{text}"
    );
    assert!(
        text.contains("id AbCdEf123456 for <b@example.net>; Mon, 23 Nov 2026 14:00:00 +0000\r\n"),
        "{text}"
    );
}

#[test]
fn a_bank_skipping_a_check_scores_without_it_and_unwanted_checks_do_not_run() {
    let cfg = Config::parse(
        "[bayes]\nenabled = false\n[model]\nenabled = false\n[auth]\nenabled = false\n\
[actions]\nspam_destiny = \"pass\"\nspam_quarantine = false\n\
[[policy]]\nname = \"nogtube\"\nrecipient_domains = [\"a.test\"]\nskip_checks = [\"gtube\"]\n",
    )
    .unwrap();
    let p = Pipeline::new(&cfg);
    let mut env = envelope();
    env.recipients = ["x@a.test", "y@b.test"]
        .iter()
        .map(|a| Recipient {
            address: a.to_string(),
            params: RcptParams::default(),
        })
        .collect();
    let d = p.scan_at(&env, SEEDS[3], "AbCdEf123456", 1_795_442_400);
    assert_eq!(d.parts.len(), 2);
    assert_eq!(d.parts[0].recipients, [0]);
    assert_eq!(d.report.decisions[0].policy, "nogtube");
    let names = |i: usize| -> Vec<&str> {
        d.report.decisions[i]
            .verdict
            .hits
            .iter()
            .map(|h| h.0)
            .collect()
    };
    assert!(!names(0).contains(&"GTUBE"), "{:?}", names(0));
    assert!(names(1).contains(&"GTUBE"));
    let score = |i: usize| d.report.decisions[i].verdict.score;
    assert!(
        (score(1) - score(0) - 1000.0).abs() < 1e-9,
        "GTUBE counts only in b.test"
    );
    // Only the skipping bank's recipient: GTUBE does not run at all.
    env.recipients.truncate(1);
    let d = p.scan_at(&env, SEEDS[3], "AbCdEf123456", 1_795_442_400);
    assert_eq!(d.parts.len(), 1);
    assert!(
        !d.report.decisions[0]
            .verdict
            .hits
            .iter()
            .any(|h| h.0 == "GTUBE")
    );
}

/// Pieces the mutations splice in: line ends, MIME syntax, header names, odd bytes.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"--",
    b"XX",
    b"b1",
    b"boundary=",
    b"Content-Type: multipart/mixed;",
    b"=?utf-8?q?",
    b"?=",
    b"=",
    b":",
    b" ",
    b"\t",
    b"\xff\xfe",
    b"<",
    b">",
    b"@",
    b"\r\n\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Date: ",
    b"Received: ",
    b"Subject: ",
    b"***SPAM*** ",
    b";",
    b"\r\n.\r\n",
    b"\n.\n",
];

/// A deterministic xorshift generator.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// One to eight random edits: splice a token, flip a byte, truncate, cut a run.
fn mutate(seed: &[u8], next: &mut impl FnMut() -> u64) -> Vec<u8> {
    let mut m = seed.to_vec();
    for _ in 0..(next() % 8 + 1) {
        let at = (next() as usize) % (m.len() + 1);
        match next() % 4 {
            0 => {
                let t = TOKENS[(next() as usize) % TOKENS.len()];
                m.splice(at..at, t.iter().copied());
            }
            1 if at < m.len() => m[at] = next() as u8,
            2 => m.truncate(at),
            _ => {
                let end = (at + (next() as usize) % 16).min(m.len());
                m.drain(at..end);
            }
        }
    }
    m
}

/// What a lenient next hop (Postfix) makes of dot-stuffed content: every line (a bare LF
/// ends one too) loses a leading dot, up to the `.` line.
fn unstuff_leniently(wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(wire.len());
    for line in wire.split_inclusive(|&b| b == b'\n') {
        if line == b".\r\n" {
            return out;
        }
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    panic!("no end of data");
}

/// Scan `m`, check the relayed copy ends with the original body unchanged, and that the copy
/// survives the relay's dot-stuffing in random chunks byte for byte, read as a next hop that
/// takes a bare LF for a line end reads it.
fn check_relayed(p: &Pipeline, m: &[u8], next: &mut impl FnMut() -> u64) {
    let d = p.scan_at(&envelope(), m, "AbCdEf123456", 1_795_442_400);
    let (rewrite, _) = relayed(&d);
    let out = rewrite.parts(m).concat();
    let end = HeaderBlock::parse(m).end;
    assert!(
        out.ends_with(&m[end..]),
        "body changed for {:?}",
        String::from_utf8_lossy(m)
    );
    assert_eq!(out.len(), rewrite.len());
    // Through the relay's chunked dot-stuffing and back through the codec.
    let mut stuffer = filterd::smtp::codec::DotStuffer::default();
    let mut wire = vec![];
    let mut rest = &out[..];
    while !rest.is_empty() {
        let n = ((next() as usize) % 4096 + 1).min(rest.len());
        stuffer.push(&rest[..n], &mut wire);
        rest = &rest[n..];
    }
    stuffer.finish(&mut wire);
    let back = unstuff_leniently(&wire);
    let mut want = out.clone();
    if !want.is_empty() && !want.ends_with(b"\r\n") {
        if want.ends_with(b"\n") {
            want.pop();
        }
        want.extend_from_slice(b"\r\n");
    }
    assert_eq!(
        back,
        want,
        "relayed bytes changed for {:?}",
        String::from_utf8_lossy(m)
    );
}

#[test]
fn mangled_messages_never_panic_and_keep_their_bytes() {
    let p = Pipeline::new(&config());
    let mut next = rng(0x2545F4914F6CDD1D);
    for seed in SEEDS {
        for _ in 0..2000 {
            let m = mutate(seed, &mut next);
            check_relayed(&p, &m, &mut next);
        }
    }
}

/// The same with real mail: every 20th message of the shared corpus, twenty mutations each.
#[test]
fn mangled_corpus_messages_never_panic_and_keep_their_bytes() {
    let Some(corpus) = crate::util::corpus() else {
        return;
    };
    let p = Pipeline::new(&config());
    let mut next = rng(0x9E3779B97F4A7C15);
    let mut files: Vec<_> = ["easy_ham", "hard_ham", "spam", "spam_2"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(corpus.join(d))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .collect();
    files.sort();
    let mut scanned = 0;
    for f in files.iter().step_by(20) {
        let Ok(seed) = std::fs::read(f) else { continue };
        for _ in 0..20 {
            let m = mutate(&seed, &mut next);
            check_relayed(&p, &m, &mut next);
            scanned += 1;
        }
    }
    assert!(scanned > 1000, "only {scanned} mutated corpus messages");
}
