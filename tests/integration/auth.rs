//! Sender authentication through the real resolver path: filterd's verifier (mail-auth over
//! hickory's resolver) asks a real DNS server on loopback serving the test zones. Keys and
//! signed fixtures are made here. Then end to end through the filterd binary: the
//! Authentication-Results header and hits, temperror when DNS is gone, a banner that never
//! waits for DNS, outbound signing checked by mail-auth and by dkimpy.

use crate::util::dns::{BlackHole, DnsServer, Rec, nothing_listens};
use crate::util::sink::{Behaviour, Sink};
use crate::util::{Client, Filterd};
use filterd::auth::origin::Origin;
use filterd::auth::sign::{GeneratedKey, KeyAlgorithm, KeySpec, Signer};
use filterd::auth::{AuthResult, AuthSettings, AuthVerdict, DmarcPolicy, DmarcVerdict, Verifier};
use mail_auth::common::crypto::{DkimKey, Ed25519Key};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const GOOD_IP: &str = "192.0.2.1";
const BAD_IP: &str = "198.51.100.9";

/// Keys for the test zones, written as PEM files.
struct Keys {
    dir: tempfile::TempDir,
    ed: GeneratedKey,
    rsa: GeneratedKey,
    arc: GeneratedKey,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let k = Keys {
            ed: GeneratedKey::generate(KeyAlgorithm::Ed25519, 0).unwrap(),
            rsa: GeneratedKey::generate(KeyAlgorithm::Rsa, 2048).unwrap(),
            arc: GeneratedKey::generate(KeyAlgorithm::Ed25519, 0).unwrap(),
            dir,
        };
        std::fs::write(k.path("ed"), &k.ed.private_pem).unwrap();
        std::fs::write(k.path("rsa"), &k.rsa.private_pem).unwrap();
        std::fs::write(k.path("arc"), &k.arc.private_pem).unwrap();
        k
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.pem"))
    }

    /// The test namespace: SPF, DKIM, DMARC and ARC records.
    fn records(&self) -> Vec<(String, String)> {
        let mut r: Vec<(String, String)> = vec![
            ("example.com".into(), format!("v=spf1 ip4:{GOOD_IP} -all")),
            (
                "mail.example.com".into(),
                format!("v=spf1 ip4:{GOOD_IP} -all"),
            ),
            ("soft.example".into(), format!("v=spf1 ip4:{GOOD_IP} ~all")),
            ("neutral.example".into(), "v=spf1 ?all".into()),
            (
                "broken.example".into(),
                "v=spf1 redirect=nospf.example".into(),
            ),
            ("_dmarc.example.com".into(), "v=DMARC1; p=reject".into()),
            (
                "_dmarc.quar.example".into(),
                "v=DMARC1; p=quarantine".into(),
            ),
            ("_dmarc.mon.example".into(), "v=DMARC1; p=none".into()),
            (
                "_dmarc.relaxed.example".into(),
                "v=DMARC1; p=reject; adkim=r".into(),
            ),
            (
                "_dmarc.strict.example".into(),
                "v=DMARC1; p=reject; adkim=s".into(),
            ),
            ("arc._domainkey.example.net".into(), self.arc.txt_value()),
        ];
        for d in [
            "example.com",
            "quar.example",
            "mon.example",
            "relaxed.example",
            "strict.example",
        ] {
            r.push((format!("ed._domainkey.{d}"), self.ed.txt_value()));
            r.push((format!("rsa._domainkey.{d}"), self.rsa.txt_value()));
        }
        r
    }

    async fn serve(&self) -> DnsServer {
        let records = self.records();
        let recs: Vec<Rec<'_>> = records
            .iter()
            .map(|(n, v)| Rec::Txt(n.as_str(), v.as_str()))
            .chain([Rec::A("mail.example.com", [192, 0, 2, 1])])
            .collect();
        DnsServer::start(&recs).await
    }

    fn ed_key(&self) -> DkimKey {
        let pem = std::fs::read(self.path("ed")).unwrap();
        ed_from_pem(&pem)
    }

    /// filterd's own signer for `domain` with selector `ed` or `rsa`.
    fn signer(&self, domain: &str, selector: &str) -> Signer {
        let algorithm = if selector == "rsa" {
            KeyAlgorithm::Rsa
        } else {
            KeyAlgorithm::Ed25519
        };
        Signer::load(
            &[KeySpec {
                domain: domain.into(),
                selector: selector.into(),
                algorithm,
                key_file: self.path(selector),
            }],
            &["From".into(), "To".into(), "Subject".into(), "Date".into()],
        )
        .unwrap()
    }
}

fn ed_from_pem(pem: &[u8]) -> DkimKey {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem).unwrap();
    DkimKey::Ed25519(Ed25519Key::from_pkcs8_maybe_unchecked_der(der.secret_pkcs8_der()).unwrap())
}

fn message(from: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Alice <{from}>\r\nTo: bob@example.net\r\nSubject: quarterly figures\r\n\
Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@{}>\r\n\r\n{body}\r\n",
        from.rsplit_once('@').map_or("x", |(_, d)| d)
    )
    .into_bytes()
}

fn signed(signer: &Signer, domain: &str, msg: &[u8]) -> Vec<u8> {
    let header = signer.sign(domain, &[msg]).unwrap().unwrap();
    [header.as_bytes(), msg].concat()
}

fn verifier(dns: SocketAddr, budget_ms: u64) -> Verifier {
    Verifier::new(AuthSettings {
        authserv_id: "mx.filterd.test".into(),
        budget: Duration::from_millis(budget_ms),
        nameservers: vec![dns],
        dns_timeout: Duration::from_millis(400),
        dns_attempts: 1,
        cache_size: 1000,
    })
    .unwrap()
}

fn origin(ip: &str, helo: &str) -> Origin {
    Origin {
        ip: Some(ip.parse::<IpAddr>().unwrap()),
        helo: helo.into(),
        ..Origin::default()
    }
}

async fn verify(v: &Verifier, msg: &[u8], ip: &str, sender: &str) -> AuthVerdict {
    v.verify(msg, &origin(ip, "mail.example.com"), sender).await
}

#[tokio::test(flavor = "multi_thread")]
async fn spf_results() {
    let keys = Keys::new();
    let dns = keys.serve().await;
    let v = verifier(dns.addr, 3000);
    let msg = message("alice@example.com", "hi");
    let cases = [
        (GOOD_IP, "alice@example.com", AuthResult::Pass),
        (BAD_IP, "alice@example.com", AuthResult::Fail),
        (BAD_IP, "a@soft.example", AuthResult::SoftFail),
        (BAD_IP, "a@neutral.example", AuthResult::Neutral),
        (BAD_IP, "a@nospf.example", AuthResult::None),
        (BAD_IP, "a@broken.example", AuthResult::PermError),
    ];
    for (ip, sender, want) in cases {
        let got = verify(&v, &msg, ip, sender).await;
        assert_eq!(got.spf, Some(want), "{sender} from {ip}: {got:?}");
        assert!(
            got.header.contains(&format!("spf={} ", want.as_str())),
            "{}",
            got.header
        );
    }
    // The HELO identity is checked too.
    let got = verify(&v, &msg, GOOD_IP, "").await;
    assert_eq!(got.spf_helo, Some(AuthResult::Pass));
    assert_eq!(
        got.spf,
        Some(AuthResult::Pass),
        "null sender: postmaster@HELO"
    );
    let got = verify(&v, &msg, BAD_IP, "alice@example.com").await;
    assert_eq!(got.spf_helo, Some(AuthResult::Fail));
    // No client IP: SPF is skipped, not guessed.
    let got = v
        .verify(&msg, &Origin::default(), "alice@example.com")
        .await;
    assert!(got.no_client_ip && got.spf.is_none() && got.spf_helo.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn spf_temperror_when_dns_is_down_or_silent() {
    let msg = message("alice@example.com", "hi");
    // Nothing listens: the resolver fails at once.
    let v = verifier(nothing_listens(), 3000);
    let got = verify(&v, &msg, GOOD_IP, "alice@example.com").await;
    assert_eq!(got.spf, Some(AuthResult::TempError), "{got:?}");
    assert_eq!(got.dmarc, DmarcVerdict::TempError, "{got:?}");
    // A server that never answers: the budget ends it, with temperror.
    let hole = BlackHole::start();
    let v = Verifier::new(AuthSettings {
        authserv_id: "mx.filterd.test".into(),
        budget: Duration::from_millis(700),
        nameservers: vec![hole.addr],
        dns_timeout: Duration::from_secs(10),
        dns_attempts: 3,
        cache_size: 10,
    })
    .unwrap();
    let signer = Keys::new().signer("example.com", "ed");
    let msg = signed(&signer, "example.com", &msg);
    let started = Instant::now();
    let got = verify(&v, &msg, GOOD_IP, "alice@example.com").await;
    let took = started.elapsed();
    assert_eq!(got.spf, Some(AuthResult::TempError), "{got:?}");
    assert_eq!(got.spf_helo, Some(AuthResult::TempError), "{got:?}");
    assert_eq!(got.dkim[0].result, AuthResult::TempError, "{got:?}");
    assert_eq!(got.dmarc, DmarcVerdict::TempError, "{got:?}");
    // Functional bound, not a speed figure: the budget (0.7 s) ends the wait, not the 10 s
    // query timeout.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dkim_results() {
    let keys = Keys::new();
    let dns = keys.serve().await;
    let v = verifier(dns.addr, 3000);
    let msg = message("alice@example.com", "The figures are attached.");
    for selector in ["ed", "rsa"] {
        let good = signed(&keys.signer("example.com", selector), "example.com", &msg);
        let got = verify(&v, &good, GOOD_IP, "alice@example.com").await;
        assert_eq!(got.dkim.len(), 1);
        assert_eq!(got.dkim[0].result, AuthResult::Pass, "{selector}: {got:?}");
        assert!(got.dkim[0].author);
        assert!(got.header.contains("dkim=pass"), "{}", got.header);

        let body_changed = String::from_utf8(good.clone())
            .unwrap()
            .replace("The figures", "The new figures");
        let got = verify(&v, body_changed.as_bytes(), GOOD_IP, "alice@example.com").await;
        // mail-auth calls a body hash mismatch neutral, a bad header signature fail.
        assert!(
            matches!(got.dkim[0].result, AuthResult::Fail | AuthResult::Neutral),
            "body: {got:?}"
        );

        let header_changed = String::from_utf8(good.clone())
            .unwrap()
            .replace("Subject: quarterly", "Subject: URGENT quarterly");
        let got = verify(&v, header_changed.as_bytes(), GOOD_IP, "alice@example.com").await;
        assert_eq!(got.dkim[0].result, AuthResult::Fail, "header: {got:?}");
    }
    // A selector with no key in DNS.
    let missing = signed(&keys.signer("example.com", "ed"), "example.com", &msg);
    let missing = String::from_utf8(missing)
        .unwrap()
        .replacen("s=ed;", "s=gone;", 1);
    assert!(missing.contains("s=gone;"));
    let got = verify(&v, missing.as_bytes(), GOOD_IP, "alice@example.com").await;
    assert_eq!(
        got.dkim[0].result,
        AuthResult::PermError,
        "missing key: {got:?}"
    );
    // An expired signature (x= one second after signing).
    let expiring = DkimSigner::from_key(keys.ed_key())
        .domain("example.com")
        .selector("ed")
        .headers(["From", "To", "Subject"])
        .expiration(1)
        .sign(&msg)
        .unwrap()
        .to_header();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = [expiring.as_bytes(), &msg].concat();
    let got = verify(&v, &expired, GOOD_IP, "alice@example.com").await;
    assert_ne!(got.dkim[0].result, AuthResult::Pass, "expired: {got:?}");
    assert_ne!(
        got.dkim[0].result,
        AuthResult::TempError,
        "expired: {got:?}"
    );
    // Unsigned.
    let got = verify(&v, &msg, GOOD_IP, "alice@example.com").await;
    assert!(got.dkim.is_empty());
    assert!(got.header.contains("dkim=none"), "{}", got.header);
}

#[tokio::test(flavor = "multi_thread")]
async fn dmarc_results() {
    let keys = Keys::new();
    let dns = keys.serve().await;
    let v = verifier(dns.addr, 3000);
    // Pass through SPF alignment, and through DKIM alone.
    let msg = message("alice@example.com", "hi");
    let got = verify(&v, &msg, GOOD_IP, "alice@example.com").await;
    assert_eq!(got.dmarc, DmarcVerdict::Pass, "{got:?}");
    let dkim_only = signed(&keys.signer("example.com", "ed"), "example.com", &msg);
    let got = verify(&v, &dkim_only, BAD_IP, "bounce@elsewhere.example").await;
    assert_eq!(got.dmarc, DmarcVerdict::Pass, "{got:?}");
    assert!(got.header.contains("dmarc=pass"), "{}", got.header);
    // Failures with each policy.
    for (domain, want) in [
        ("example.com", DmarcPolicy::Reject),
        ("quar.example", DmarcPolicy::Quarantine),
        ("mon.example", DmarcPolicy::None),
    ] {
        let msg = message(&format!("ceo@{domain}"), "wire the money");
        let got = verify(&v, &msg, BAD_IP, &format!("x@{domain}")).await;
        assert_eq!(got.dmarc, DmarcVerdict::Fail(want), "{domain}: {got:?}");
        assert!(got.header.contains("dmarc=fail"), "{}", got.header);
    }
    // No record.
    let msg = message("a@nodmarc.example", "hi");
    let got = verify(&v, &msg, BAD_IP, "a@nodmarc.example").await;
    assert_eq!(got.dmarc, DmarcVerdict::Missing, "{got:?}");
    // Alignment: a parent-domain signature aligns under adkim=r, not under adkim=s.
    let relaxed = message("news@news.relaxed.example", "hi");
    let relaxed = signed(
        &keys.signer("relaxed.example", "ed"),
        "relaxed.example",
        &relaxed,
    );
    let got = verify(&v, &relaxed, BAD_IP, "bounce@elsewhere.example").await;
    assert_eq!(got.dkim[0].result, AuthResult::Pass);
    assert_eq!(got.dmarc, DmarcVerdict::Pass, "relaxed: {got:?}");
    let strict = message("news@news.strict.example", "hi");
    let strict = signed(
        &keys.signer("strict.example", "ed"),
        "strict.example",
        &strict,
    );
    let got = verify(&v, &strict, BAD_IP, "bounce@elsewhere.example").await;
    assert_eq!(got.dkim[0].result, AuthResult::Pass);
    assert_eq!(
        got.dmarc,
        DmarcVerdict::Fail(DmarcPolicy::Reject),
        "strict: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn arc_chains() {
    use mail_auth::arc::ArcSealer;
    use mail_auth::{ArcOutput, AuthenticatedMessage, AuthenticationResults};
    let keys = Keys::new();
    let dns = keys.serve().await;
    let v = verifier(dns.addr, 3000);
    let msg = message("alice@example.com", "forwarded by a list");
    let msg = signed(&keys.signer("example.com", "ed"), "example.com", &msg);
    let parsed = AuthenticatedMessage::parse(&msg).unwrap();
    let results = AuthenticationResults::new("lists.example.net");
    let arc_key = ed_from_pem(&std::fs::read(keys.path("arc")).unwrap());
    let set = ArcSealer::from_key(arc_key)
        .domain("example.net")
        .selector("arc")
        .headers(["From", "To", "Subject", "DKIM-Signature"])
        .seal(&parsed, &results, &ArcOutput::default())
        .unwrap();
    let sealed = [set.to_header().as_bytes(), &msg].concat();
    let got = verify(&v, &sealed, GOOD_IP, "alice@example.com").await;
    assert_eq!(got.arc, AuthResult::Pass, "{got:?}");
    assert!(got.header.contains("arc=pass"), "{}", got.header);
    // The list rewrote the body after sealing: the chain breaks.
    let broken = String::from_utf8(sealed)
        .unwrap()
        .replace("forwarded by a list", "forwarded, then changed");
    let got = verify(&v, broken.as_bytes(), GOOD_IP, "alice@example.com").await;
    assert_eq!(got.arc, AuthResult::Fail, "{got:?}");
    // No ARC headers.
    let got = verify(&v, &msg, GOOD_IP, "alice@example.com").await;
    assert_eq!(got.arc, AuthResult::None);
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_are_cached() {
    let keys = Keys::new();
    let dns = keys.serve().await;
    let v = verifier(dns.addr, 3000);
    let msg = signed(
        &keys.signer("example.com", "ed"),
        "example.com",
        &message("alice@example.com", "hi"),
    );
    verify(&v, &msg, GOOD_IP, "alice@example.com").await;
    let first = dns.queries();
    assert!(first > 0);
    for _ in 0..5 {
        let got = verify(&v, &msg, GOOD_IP, "alice@example.com").await;
        assert_eq!(got.dkim[0].result, AuthResult::Pass);
    }
    assert_eq!(dns.queries(), first, "repeated lookups reached the server");
}

// ---------------------------------------------------------------------------------------
// End to end through the filterd binary.

fn auth_config(dns: SocketAddr, extra: &str) -> String {
    format!(
        "[auth]\nauthserv_id = \"mx.filterd.test\"\nnameservers = [\"{dns}\"]\nbudget_ms = 1500\ndns_timeout_ms = 500\ndns_attempts = 1\n{extra}\n[model]\nenabled = false\n"
    )
}

fn xforward(ip: &str) -> String {
    format!("XFORWARD ADDR={ip} HELO=mail.example.com NAME=mail.example.com")
}

fn added_headers(relayed: &[u8], first_original: &[u8]) -> String {
    let at = relayed
        .windows(first_original.len())
        .position(|w| w == first_original)
        .expect("original message in the relayed one");
    String::from_utf8_lossy(&relayed[..at]).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn end_to_end_results_header_and_hits() {
    let keys = Keys::new();
    let dns = keys.serve().await;
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start(sink.addr, &auth_config(dns.addr, ""));
    let msg = message("alice@example.com", "hi");
    let msg = signed(&keys.signer("example.com", "rsa"), "example.com", &msg);
    // A forged Authentication-Results claiming our authserv-id, and a foreign one kept.
    let forged = [
        b"Authentication-Results: mx.filterd.test; dkim=pass; spf=pass\r\n".as_slice(),
        b"Authentication-Results: other.example; spf=fail\r\n",
        &msg,
    ]
    .concat();
    let (mut c, _) = Client::connect(f.addr()).await;
    let r = c
        .send_message_after(
            &[&xforward(BAD_IP)],
            "ceo@example.com",
            &["bob@example.net"],
            &forged,
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    let got = &sink.received()[0].data;
    let added = added_headers(got, b"Authentication-Results: other.example");
    assert!(
        added.starts_with("Authentication-Results: mx.filterd.test;"),
        "{added}"
    );
    for want in [
        "dkim=pass",
        "spf=fail",
        "dmarc=pass",
        "arc=none smtp.remote-ip=198.51.100.9",
    ] {
        assert!(added.contains(want), "{want} missing in:\n{added}");
    }
    for hit in [
        "SPF_FAIL",
        "DKIM_VALID",
        "DKIM_VALID_AU",
        "DMARC_PASS",
        "ARC_NONE",
    ] {
        assert!(added.contains(hit), "{hit} missing in:\n{added}");
    }
    let text = String::from_utf8_lossy(got);
    assert_eq!(
        text.matches("mx.filterd.test; dkim=pass; spf=pass").count(),
        0,
        "forgery kept"
    );
    assert!(text.contains("Authentication-Results: other.example; spf=fail"));
    // Byte-level prepending: the original signature still verifies on the relayed copy.
    let v = verifier(dns.addr, 3000);
    let again = verify(&v, got, GOOD_IP, "alice@example.com").await;
    assert_eq!(again.dkim[0].result, AuthResult::Pass, "{again:?}");
    assert_ne!(
        dkimpy(got, dns.addr),
        Some(false),
        "dkimpy rejects the relayed copy"
    );
    // ... and the independent verifier can say no: a changed body fails.
    let tampered = String::from_utf8_lossy(got).replace("\r\nhi\r\n", "\r\nho\r\n");
    assert_ne!(
        dkimpy(tampered.as_bytes(), dns.addr),
        Some(true),
        "dkimpy accepts a changed body"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_can_hold_mail_failing_dmarc_where_the_domain_asks_for_reject() {
    let keys = Keys::new();
    let dns = keys.serve().await;
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start(
        sink.addr,
        &auth_config(
            dns.addr,
            "[actions]\ndmarc_reject = \"quarantine\"\n[lists]\nallow_senders = [\"boss@example.com\"]\n",
        ),
    );
    let send = |from: &'static str, sender: &'static str, ip: &'static str| {
        let addr = f.addr();
        async move {
            let (mut c, _) = Client::connect(addr).await;
            c.send_message_after(
                &[&xforward(ip)],
                sender,
                &["bob@example.net"],
                &message(from, "wire the money"),
            )
            .await
        }
    };
    // p=reject, SPF fails and nothing is signed: held.
    let r = send("ceo@example.com", "ceo@example.com", BAD_IP).await;
    assert!(r.starts_with("250 2.7.0 Ok, discarded"), "{r}");
    // p=quarantine with dmarc_quarantine = "score" (the default): delivered, scored.
    let r = send("ceo@quar.example", "x@quar.example", BAD_IP).await;
    assert!(r.starts_with("250 2.0.0 from MTA"), "{r}");
    // DMARC passes: delivered.
    let r = send("alice@example.com", "alice@example.com", GOOD_IP).await;
    assert!(r.starts_with("250 2.0.0 from MTA"), "{r}");
    // An allow-listed sender is not held.
    let r = send("boss@example.com", "boss@example.com", BAD_IP).await;
    assert!(r.starts_with("250 2.0.0 from MTA"), "{r}");
    let got = sink.received();
    assert_eq!(got.len(), 3);
    assert!(String::from_utf8_lossy(&got[0].data).contains("DMARC_QUARANTINE"));
    assert!(String::from_utf8_lossy(&got[2].data).contains("ALLOWLIST_SENDER"));
    let held = filterd::action::quarantine::Quarantine::open(&f.quarantine_dir())
        .unwrap()
        .list()
        .unwrap();
    assert_eq!(held.len(), 1);
    let e = held[0].as_ref().unwrap();
    assert_eq!(e.reason, "dmarc");
    assert_eq!(e.sender, "ceo@example.com");
    assert!(e.hits.iter().any(|h| h.name == "DMARC_REJECT"), "{e:?}");
    f.expect_log("Blocked DMARC {DiscardedInbound,Quarantined}");
}

#[tokio::test(flavor = "multi_thread")]
async fn end_to_end_temperror_when_dns_is_gone() {
    let keys = Keys::new();
    let mut dns = keys.serve().await;
    let addr = dns.addr;
    dns.stop().await;
    let hole = BlackHole::start();
    let sink = Sink::start(Behaviour::default()).await;
    for (label, server) in [("stopped", addr), ("silent", hole.addr)] {
        let f = Filterd::start(sink.addr, &auth_config(server, ""));
        let before = sink.count();
        let (mut c, _) = Client::connect(f.addr()).await;
        let r = c
            .send_message_after(
                &[&xforward(GOOD_IP)],
                "alice@example.com",
                &["bob@example.net"],
                &message("alice@example.com", "hi"),
            )
            .await;
        assert!(r.starts_with("250"), "{label}: {r}");
        let got = &sink.received()[before].data;
        let text = String::from_utf8_lossy(got);
        assert!(text.contains("SPF_TEMPERROR"), "{label}: {text}");
        assert!(text.contains("DMARC_TEMPERROR"), "{label}: {text}");
        assert!(text.contains("spf=temperror"), "{label}: {text}");
    }
    // A silent server and a query timeout longer than the budget: the budget ends SPF and
    // DMARC, and the metrics say so.
    let f = Filterd::start(
        sink.addr,
        &format!(
            "[auth]\nnameservers = [\"{}\"]\nbudget_ms = 700\ndns_timeout_ms = 10000\n\
             [model]\nenabled = false\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
            hole.addr
        ),
    );
    let (mut c, _) = Client::connect(f.addr()).await;
    let r = c
        .send_message_after(
            &[&xforward(GOOD_IP)],
            "alice@example.com",
            &["bob@example.net"],
            &message("alice@example.com", "hi"),
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    let metrics = f.metrics_addr().expect("metrics listener");
    let (_, text) = crate::metrics::get(metrics, "/metrics").await;
    for check in ["spf", "dmarc"] {
        let series = format!("filterd_dns_budget_exceeded_total{{check=\"{check}\"}} ");
        let n: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
            .unwrap_or(0.0);
        assert!(n >= 1.0, "{check} not counted as over budget:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn banner_never_waits_for_dns() {
    let hole = BlackHole::start();
    let sink = Sink::start(Behaviour::default()).await;
    let f = Filterd::start(
        sink.addr,
        &format!(
            "[auth]\nnameservers = [\"{}\"]\nbudget_ms = 3000\ndns_timeout_ms = 3000\n[model]\nenabled = false\n",
            hole.addr
        ),
    );
    // One session is stuck in DNS for its whole budget ...
    let addr = f.addr();
    let stuck = tokio::spawn(async move {
        let (mut c, _) = Client::connect(addr).await;
        c.send_message_after(
            &[&xforward(GOOD_IP)],
            "alice@example.com",
            &["bob@example.net"],
            &message("alice@example.com", "hi"),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ... while new connections get their banner and can talk.
    for _ in 0..3 {
        let (mut c, banner) = Client::connect(f.addr()).await;
        assert!(banner.starts_with("220 "), "{banner}");
        assert!(
            !stuck.is_finished(),
            "the stuck session should still wait for DNS"
        );
        assert!(c.cmd("EHLO x.test").await.starts_with("250"));
    }
    let r = stuck.await.unwrap();
    assert!(r.starts_with("250"), "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_mail_is_signed_and_verifies_independently() {
    let keys = Keys::new();
    let dns = keys.serve().await;
    let sink = Sink::start(Behaviour::default()).await;
    for (selector, algorithm) in [("rsa", "rsa"), ("ed", "ed25519")] {
        let extra = format!(
            "[origin]\nnetworks = [\"10.0.0.0/8\"]\n[dkim]\n[[dkim.keys]]\ndomain = \"example.com\"\nselector = \"{selector}\"\nalgorithm = \"{algorithm}\"\nkey_file = \"{}\"\n",
            keys.path(selector).display()
        );
        let f = Filterd::start(sink.addr, &auth_config(dns.addr, &extra));
        let before = sink.count();
        let msg = message("alice@sales.example.com", "Our offer, as promised.");
        let (mut c, _) = Client::connect(f.addr()).await;
        let r = c
            .send_message_after(
                &["XFORWARD ADDR=10.1.2.3 HELO=laptop.example.com"],
                "alice@sales.example.com",
                &["customer@example.org"],
                &msg,
            )
            .await;
        assert!(r.starts_with("250"), "{r}");
        let got = sink.received()[before].data.clone();
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("DKIM-Signature:"), "{text}");
        assert!(text.contains("d=example.com") && text.contains(&format!("s={selector}")));
        assert!(
            !text.contains("Authentication-Results"),
            "outbound is not verified"
        );
        let v = verifier(dns.addr, 3000);
        let got_v = verify(&v, &got, GOOD_IP, "alice@example.com").await;
        assert_eq!(
            got_v.dkim[0].result,
            AuthResult::Pass,
            "{selector}: {got_v:?}"
        );
        assert!(got_v.dkim[0].author);
        assert_ne!(
            dkimpy(&got, dns.addr),
            Some(false),
            "dkimpy rejects {selector}"
        );
        // Inbound mail from elsewhere is not signed.
        let (mut c, _) = Client::connect(f.addr()).await;
        c.send_message_after(
            &[&xforward(GOOD_IP)],
            "alice@example.com",
            &["bob@example.net"],
            &message("alice@example.com", "hi"),
        )
        .await;
        let inbound = &sink.received()[before + 1].data;
        assert!(inbound.starts_with(b"Authentication-Results:"));
    }
}

#[test]
fn bad_keys_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ed = GeneratedKey::generate(KeyAlgorithm::Ed25519, 0).unwrap();
    let ed_path = dir.path().join("ed.pem");
    std::fs::write(&ed_path, &ed.private_pem).unwrap();
    let cfg = dir.path().join("f.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[dkim.keys]]\ndomain = \"example.com\"\nselector = \"a\"\nalgorithm = \"rsa\"\nkey_file = \"{}\"\n\
[[dkim.keys]]\ndomain = \"example.com\"\nselector = \"b\"\nkey_file = \"{}\"\n\
[[dkim.keys]]\ndomain = \"example.com\"\nselector = \"c\"\nalgorithm = \"dsa\"\nkey_file = \"x\"\n\
[auth]\nnameservers = [\"not-an-ip\"]\n[model]\nenabled = false\n",
            ed_path.display(),
            dir.path().join("missing.pem").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_filterd"))
        .arg("--check-config")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("ed.pem") && err.contains("not an RSA"),
        "{err}"
    );
    assert!(
        err.contains("missing.pem") && err.contains("cannot read"),
        "{err}"
    );
    assert!(err.contains("dsa"), "{err}");
    assert!(err.contains("not-an-ip"), "{err}");
}

#[test]
fn dkim_keygen_writes_a_private_key_and_prints_the_record() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for (alg, marker) in [("ed25519", "k=ed25519"), ("rsa", "k=rsa")] {
        let out_path = dir.path().join(format!("{alg}.pem"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_filterd"))
            .args(["dkim-keygen", "--domain", "example.com", "--selector", "s1"])
            .args(["--algorithm", alg, "--out"])
            .arg(&out_path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("s1._domainkey.example.com. IN TXT"),
            "{stdout}"
        );
        assert!(stdout.contains(marker), "{stdout}");
        let mode = std::fs::metadata(&out_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // The key loads as configured.
        let algorithm = KeyAlgorithm::parse(alg).unwrap();
        Signer::load(
            &[KeySpec {
                domain: "example.com".into(),
                selector: "s1".into(),
                algorithm,
                key_file: out_path.clone(),
            }],
            &["From".into()],
        )
        .unwrap();
        // Never overwrite an existing key.
        let again = std::process::Command::new(env!("CARGO_BIN_EXE_filterd"))
            .args(["dkim-keygen", "--domain", "example.com", "--selector", "s1"])
            .args(["--algorithm", alg, "--out"])
            .arg(&out_path)
            .output()
            .unwrap();
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    }
}

/// dkimpy (PyPI), an independent DKIM implementation, verifies `msg` against our loopback
/// DNS server. `None` (skipped) when dkimpy is not installed, unless FILTERD_REQUIRE_DKIMPY
/// is set (CI sets it).
fn dkimpy(msg: &[u8], dns: SocketAddr) -> Option<bool> {
    use std::io::Write;
    let script = crate::util::repo().join("tests/fixtures/dkimpy_verify.py");
    let probe = std::process::Command::new("python3")
        .args(["-c", "import dkim, dns.resolver, nacl"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var("FILTERD_REQUIRE_DKIMPY").is_err(),
            "dkimpy/dnspython/pynacl missing but FILTERD_REQUIRE_DKIMPY is set"
        );
        eprintln!("SKIP dkimpy check: pip install dkimpy dnspython pynacl");
        return None;
    }
    let mut child = std::process::Command::new("python3")
        .arg(&script)
        .arg(dns.port().to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(msg).unwrap();
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "dkimpy: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out.status.success())
}
