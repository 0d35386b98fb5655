//! Criterion benches of the hot path per message: the SMTP codec (DATA decoding and
//! dot-stuffing for the relay) and the whole scan (features, checks, verdict, tagging).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use filterd::config::Config;
use filterd::message::Features;
use filterd::pipeline::Pipeline;
use filterd::smtp::codec::{Decoder, Event, Limits, dot_stuff};
use filterd::smtp::envelope::{Envelope, MailParams, RcptParams, Recipient, Xforward};
use std::hint::black_box;

/// A typical 5 KB ham message: a Received chain, the usual headers, a text body.
fn message() -> Vec<u8> {
    let mut m = String::from(
        "Received: from mail.example.org (mail.example.org [192.0.2.10])\r\n\
\tby mx.example.net (Postfix) with ESMTPS id 4Xyz1\r\n\
\tfor <bob@example.net>; Mon, 23 Nov 2026 10:00:05 +0000\r\n\
Received: from [10.0.0.5] (unknown [10.0.0.5])\r\n\
\tby mail.example.org (Postfix) with ESMTPSA id 4Abc2;\r\n\
\tMon, 23 Nov 2026 10:00:03 +0000\r\n\
From: Alice Example <alice@example.org>\r\nTo: Bob <bob@example.net>\r\n\
Cc: team@example.net\r\nSubject: Re: quarterly planning notes\r\n\
Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <20261123100000.1234@example.org>\r\n\
In-Reply-To: <abc@example.net>\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
    );
    let line = "The quarterly planning meeting moved to Thursday; please bring the figures.\r\n";
    while m.len() < 5000 {
        m.push_str(line);
    }
    m.into_bytes()
}

fn envelope() -> Envelope {
    Envelope {
        peer: "127.0.0.1:40000".parse().expect("addr"),
        helo: "mx.example.net".into(),
        xforward: Xforward::default(),
        sender: "alice@example.org".into(),
        mail_params: MailParams::default(),
        recipients: vec![Recipient {
            address: "bob@example.net".into(),
            params: RcptParams::default(),
        }],
    }
}

fn codec(c: &mut Criterion) {
    let msg = message();
    let mut wire = Vec::new();
    dot_stuff(&[&msg], &mut wire);
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(msg.len() as u64));
    g.bench_function("decode_data_5k", |b| {
        b.iter(|| {
            let mut d = Decoder::new(Limits::default());
            d.begin_data(None);
            d.extend(black_box(&wire));
            match d.next_event() {
                Some(Event::Message(Ok(m))) => black_box(m.len()),
                _ => panic!("message not decoded"),
            }
        })
    });
    g.throughput(Throughput::Elements(3));
    g.bench_function("decode_commands", |b| {
        let cmds = b"MAIL FROM:<alice@example.org> SIZE=5000 BODY=8BITMIME\r\nRCPT TO:<bob@example.net> NOTIFY=NEVER\r\nDATA\r\n";
        b.iter(|| {
            let mut d = Decoder::new(Limits::default());
            d.extend(black_box(cmds));
            let mut n = 0;
            while let Some(ev) = d.next_event() {
                black_box(ev);
                n += 1;
            }
            n
        })
    });
    g.throughput(Throughput::Bytes(msg.len() as u64));
    g.bench_function("dot_stuff_5k", |b| {
        let mut out = Vec::with_capacity(8192);
        b.iter(|| {
            out.clear();
            dot_stuff(&[b"X-Spam-Flag: NO\r\n", black_box(&msg)], &mut out);
            out.len()
        })
    });
    g.finish();
}

fn scan(c: &mut Criterion) {
    let msg = message();
    let env = envelope();
    let cfg = Config::parse("[bayes]\nenabled = false\n").expect("config");
    let pipeline = Pipeline::new(&cfg);
    let no_rules =
        Config::parse("[bayes]\nenabled = false\n[rules]\nshipped = false\n").expect("config");
    let no_rules = Pipeline::new(&no_rules);
    // An HTML newsletter of today (multipart/alternative, 23 links through a click tracker).
    let html = std::fs::read("tests/fixtures/mail/ham/05-newsletter-tech.eml").expect("fixture");
    let html = String::from_utf8_lossy(&html)
        .replace("\r\n", "\n")
        .replace('\n', "\r\n");
    let mut g = c.benchmark_group("scan");
    g.throughput(Throughput::Elements(1));
    g.bench_function("features_5k", |b| {
        b.iter(|| black_box(Features::extract(black_box(&msg), 1_795_442_400).parsed))
    });
    for (name, p, m) in [
        ("whole_scan_5k", &pipeline, msg.as_slice()),
        ("whole_scan_5k_without_rules", &no_rules, msg.as_slice()),
        ("whole_scan_newsletter", &pipeline, html.as_bytes()),
        (
            "whole_scan_newsletter_without_rules",
            &no_rules,
            html.as_bytes(),
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let d = p.scan_at(&env, black_box(m), "AbCdEf123456", 1_795_442_400);
                black_box((d.parts.len(), d.report.decisions[0].verdict.score))
            })
        });
    }
    // The rules alone on the 5 KB message: the view, then the compiled set.
    let features = Features::extract(&msg, 1_795_442_400);
    let scoring = cfg.rules.current();
    let none = filterd::checks::Hits::default();
    g.bench_function("rules_view_5k", |b| {
        b.iter(|| black_box(filterd::rules::View::new(&features, &none, None).uris.len()))
    });
    g.bench_function("rules_5k", |b| {
        b.iter(|| {
            let view = filterd::rules::View::new(&features, &none, None);
            let mut hits = filterd::checks::Hits::default();
            scoring.rules.run(&view, &mut hits);
            black_box(hits.names().len())
        })
    });
    g.finish();
}

/// Tokenizing and classifying one message with a store trained on the development corpus
/// (`../shared/corpus`, or `FILTERD_CORPUS`); skipped with a message when it is absent.
fn bayes(c: &mut Criterion) {
    use filterd::corpus::{message_files, strip_from_line};
    use filterd::message::tokenize::Tokens;
    use filterd::model::bayes::{BayesParams, classify};
    use filterd::model::bayes_store::{Class, Store, message_id};
    let root = std::env::var_os("FILTERD_CORPUS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/corpus/spamassassin")
        });
    if !root.exists() {
        eprintln!(
            "skipped: corpus not found at {} (set FILTERD_CORPUS)",
            root.display()
        );
        return;
    }
    let mut store = Store::default();
    for (dir, class) in [("spam_2", Class::Spam), ("easy_ham", Class::Ham)] {
        for f in message_files(&root.join(dir)).expect("corpus folder") {
            let raw = std::fs::read(&f).expect("read");
            let raw = strip_from_line(&raw);
            store.learn(message_id(raw), &Tokens::of_raw(raw), class, 0);
        }
    }
    // A real message the store has not seen (easy_ham_2 is not learned above), about 5 KB.
    let msg = message_files(&root.join("easy_ham_2"))
        .expect("corpus folder")
        .into_iter()
        .filter_map(|f| std::fs::read(f).ok())
        .find(|m| (4000..8000).contains(&m.len()))
        .expect("a 4-8 KB message");
    let msg = strip_from_line(&msg).to_vec();
    let tokens = Tokens::of_raw(&msg);
    let p = BayesParams::default();
    let mut g = c.benchmark_group("bayes");
    g.throughput(Throughput::Elements(1));
    g.bench_function("tokenize_5k", |b| {
        b.iter(|| black_box(Tokens::of_raw(black_box(&msg)).len()))
    });
    g.bench_function("classify_5k", |b| {
        b.iter(|| black_box(classify(&store, black_box(&tokens), &p)))
    });
    g.finish();
}

/// Featurising and running the shipped ONNX model for one message.
fn model(c: &mut Criterion) {
    use filterd::message::tokenize::Tokens;
    use filterd::model::onnx::{OnnxModel, featurise};
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/spam-lr");
    let model = OnnxModel::load(&dir).expect("shipped model");
    let msg = message();
    let tokens = Tokens::of_raw(&msg);
    let input = featurise(&msg, &tokens);
    let mut g = c.benchmark_group("model");
    g.throughput(Throughput::Elements(1));
    g.bench_function("featurise_5k", |b| {
        b.iter(|| black_box(featurise(black_box(&msg), &tokens).ids.len()))
    });
    g.bench_function("inference", |b| {
        b.iter(|| black_box(model.predict(black_box(&input)).expect("inference")))
    });
    g.finish();
}

/// The attachment walk on mail without attachments: a plain message and an HTML-and-text
/// one (both decided by a line scan, goal under 5 us), and on a message with a 100 KB zip.
fn content(c: &mut Criterion) {
    use filterd::content::Content;
    use filterd::message::HeaderBlock;
    let mut g = c.benchmark_group("content");
    let content = Content {
        walk: true,
        ..Content::default()
    };
    let plain = message();
    let alternative = format!(
        "From: a@example.org\r\nTo: b@example.net\r\nSubject: news\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/alternative; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n{}\r\n\
         --b\r\nContent-Type: text/html\r\n\r\n<p>{}</p>\r\n--b--\r\n",
        "word ".repeat(500),
        "word ".repeat(500)
    )
    .into_bytes();
    for (name, m) in [
        ("walk_no_attachment_5k", &plain),
        ("walk_html_and_text_5k", &alternative),
    ] {
        let headers = HeaderBlock::parse(m);
        g.bench_function(name, |b| {
            b.iter(|| content.walk(std::hint::black_box(m), &headers))
        });
    }
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..10 {
        zip.start_file(
            format!("doc{i}.txt"),
            zip::write::SimpleFileOptions::default(),
        )
        .expect("zip");
        std::io::Write::write_all(&mut zip, format!("line {i}\n").repeat(2000).as_bytes())
            .expect("zip");
    }
    let zip = zip.finish().expect("zip").into_inner();
    let b64 = <base64ct::Base64 as base64ct::Encoding>::encode_string(&zip);
    let with_zip = format!(
        "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nsee\r\n--b\r\nContent-Type: application/zip; name=\"d.zip\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b--\r\n"
    )
    .into_bytes();
    let headers = HeaderBlock::parse(&with_zip);
    g.bench_function("walk_zip_attachment", |b| {
        b.iter(|| content.walk(std::hint::black_box(&with_zip), &headers))
    });
    g.finish();
}

criterion_group!(benches, codec, scan, bayes, model, content);
criterion_main!(benches);
