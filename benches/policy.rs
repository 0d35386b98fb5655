//! The policy bench: filterd's Postfix policy delegation server (greylisting, 300 s) against
//! postgrey answering the same requests in the same run, over persistent connections that
//! each send one request and wait for its reply before the next, as Postfix's smtpd does;
//! about half the requests repeat an earlier one's triplet (client /24, sender, recipient).
//! Prints requests/s, p50/p99 latency per request, the answers each server gave, and the
//! ratio filterd/postgrey beside the goal (>= 20x, and filterd's p99 < 2 ms).
//!
//! `cargo bench --bench policy` (defaults: 20000 requests, 8 connections, 300 warm-up
//! requests); `POLICY_COUNT`, `POLICY_CONNS`, `POLICY_WARM` change them. Both servers run
//! without allow lists (postgrey gets empty whitelist files, filterd has none by default).
//! Without `/usr/sbin/postgrey` (apt-get install postgrey), filterd is measured alone.

use std::collections::BTreeMap;
use std::io::Result as IoResult;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::unix::fs::chown;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const POSTGREY: &str = "/usr/sbin/postgrey";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A server process, killed and reaped when dropped (also when the bench panics).
struct Guard(Child);

impl Guard {
    /// `running`, or how it exited.
    fn state(&mut self) -> String {
        let status = self.0.try_wait().ok().flatten();
        status.map_or("running".to_string(), |s| s.to_string())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A 64-bit LCG (Knuth's MMIX constants): the same sequence in every run.
struct Lcg(u64);

impl Lcg {
    const MUL: u64 = 6_364_136_223_846_793_005;
    const INC: u64 = 1_442_695_040_888_963_407;

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(Self::MUL).wrapping_add(Self::INC);
        self.0 >> 33
    }
}

/// A new triplet (the client's /24, sender, recipient) as the request lines a repeat sends
/// again: client address and name (`unknown` for a quarter), HELO name, sender, recipient.
fn new_triplet(rng: &mut Lcg) -> String {
    let net = rng.next() % 65_536;
    let (a, b, host) = (net >> 8, net & 255, 1 + rng.next() % 254);
    let client = format!("10.{a}.{b}.{host}");
    let named = format!("mail-{a}-{b}-{host}.isp{}.example.net", rng.next() % 500);
    let (name, helo) = match rng.next() % 4 {
        0 => ("unknown".to_string(), format!("[{client}]")),
        _ => (named.clone(), named),
    };
    let domain = ["example.org", "example.net", "lists.example.org"][(rng.next() % 3) as usize];
    let (user, rcpt) = (rng.next() % 100_000, rng.next() % 1000);
    format!(
        "client_address={client}\nclient_name={name}\nreverse_client_name={name}\n\
helo_name={helo}\nsender=user{user}@{domain}\nrecipient=user{rcpt}@example.com\n"
    )
}

/// Request number `i` for `triplet`, with the other attributes Postfix 3.x sends at RCPT.
fn request(i: usize, triplet: &str) -> Vec<u8> {
    let port = 1024 + i % 60_000;
    format!(
        "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n{triplet}\
client_port={port}\nserver_address=127.0.0.1\nserver_port=25\nrecipient_count=0\nqueue_id=\n\
instance={i:x}.674c2a1b.5d3e7.0\nsize=0\netrn_domain=\nstress=\nsasl_method=\nsasl_username=\n\
sasl_sender=\nccert_subject=\nccert_issuer=\nccert_fingerprint=\nccert_pubkey_fingerprint=\n\
encryption_protocol=\nencryption_cipher=\nencryption_keysize=0\npolicy_context=\n\
compatibility_level=3.6\nmail_version=3.7.11\n\n"
    )
    .into_bytes()
}

/// `n` requests, each repeating a uniformly drawn earlier request's triplet with
/// probability 1/2, else a new one. Returns them and how many from `from` on are repeats.
fn workload(n: usize, from: usize) -> (Vec<Vec<u8>>, usize) {
    let mut rng = Lcg(0x5eed_0f90_11c7);
    let mut seen: Vec<String> = Vec::with_capacity(n);
    let mut reqs = Vec::with_capacity(n);
    let mut repeats = 0;
    for i in 0..n {
        let j = if !seen.is_empty() && rng.next().is_multiple_of(2) {
            repeats += usize::from(i >= from);
            (rng.next() as usize) % seen.len()
        } else {
            seen.push(new_triplet(&mut rng));
            seen.len() - 1
        };
        reqs.push(request(i, &seen[j]));
    }
    (reqs, repeats)
}

type Conn = BufReader<TcpStream>;
type Requests = Arc<Vec<Vec<u8>>>;
/// A request's index, latency and action.
type Outcome = (usize, Duration, String);

/// The reply's action (up to the empty line that ends it); an error without one.
async fn read_action(c: &mut Conn, line: &mut String) -> IoResult<String> {
    let mut action = None;
    loop {
        line.clear();
        if c.read_line(line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        if let Some(a) = l.strip_prefix("action=") {
            action = Some(a.to_string());
        }
    }
    let no_action = || std::io::Error::other("reply without an action (or an empty one)");
    action
        .filter(|a| !a.trim().is_empty())
        .ok_or_else(no_action)
}

/// The requests `idx`, one at a time over `c` (as Postfix's smtpd does).
async fn drive(mut c: Conn, reqs: Requests, idx: Vec<usize>) -> IoResult<(Conn, Vec<Outcome>)> {
    let mut line = String::new();
    let mut out = Vec::with_capacity(idx.len());
    for i in idx {
        let t = Instant::now();
        c.get_mut().write_all(&reqs[i]).await?;
        let action = read_action(&mut c, &mut line).await?;
        out.push((i, t.elapsed(), action));
    }
    Ok((c, out))
}

/// The requests in `range` over the connections (the k-th takes every n-th from the k-th),
/// in parallel. Returns the connections and the results in request order.
async fn phase(
    label: &str,
    pool: Vec<Conn>,
    reqs: &Requests,
    range: Range<usize>,
) -> (Vec<Conn>, Vec<Outcome>) {
    let n = pool.len();
    let tasks: Vec<_> = pool
        .into_iter()
        .enumerate()
        .map(|(k, c)| {
            let idx: Vec<usize> = range.clone().skip(k).step_by(n).collect();
            tokio::spawn(drive(c, reqs.clone(), idx))
        })
        .collect();
    let mut pool = Vec::with_capacity(n);
    let mut all = Vec::with_capacity(range.len());
    for t in tasks {
        match t.await {
            Ok(Ok((c, r))) => {
                pool.push(c);
                all.extend(r);
            }
            Ok(Err(e)) => panic!("{label}: policy connection failed: {e}"),
            Err(e) => panic!("{label}: policy task panicked: {e}"),
        }
    }
    all.sort_by_key(|r| r.0);
    (pool, all)
}

struct Run {
    rate: f64,
    p50: Duration,
    p99: Duration,
    /// The action of each measured request, in request order.
    actions: Vec<String>,
}

/// Opens `conns` connections, sends the first `warm` requests untimed, then times the rest.
async fn run(label: &str, addr: SocketAddr, conns: usize, reqs: &Requests, warm: usize) -> Run {
    let mut pool = Vec::with_capacity(conns);
    for _ in 0..conns {
        let s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        pool.push(BufReader::new(s));
    }
    let (pool, _) = phase(label, pool, reqs, 0..warm).await;
    let start = Instant::now();
    let (_pool, results) = phase(label, pool, reqs, warm..reqs.len()).await;
    let elapsed = start.elapsed().as_secs_f64();
    let mut lat: Vec<Duration> = results.iter().map(|r| r.1).collect();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Run {
        rate: results.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        actions: results.into_iter().map(|r| r.2).collect(),
    }
}

/// A free port, never 10023-10025 (where postgrey and policy services listen by convention).
fn free_port() -> u16 {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
    let mut ports = std::iter::repeat_with(|| bind().expect("port").port());
    ports.find(|p| !(10023..=10025).contains(p)).expect("port")
}

/// Waits up to 20 s for `addr` to accept connections; else panics with `log()`.
async fn wait_port(label: &str, addr: SocketAddr, guard: &mut Guard, log: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).await.is_err() {
        let state = guard.state();
        assert!(
            state == "running" && Instant::now() < deadline,
            "{label} not listening on {addr} within 20 s ({state}); its log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first address of `policy_listen=ADDR[,ADDR]` in a log line.
fn policy_listen(line: &str) -> Option<SocketAddr> {
    let at = line.find("policy_listen=")? + "policy_listen=".len();
    let value = line[at..].split([' ', '\t']).next()?.trim_matches('"');
    value.split(',').next()?.parse().ok()
}

/// This build's filterd with the policy service on, greylisting 300 s (SPF at RCPT off:
/// postgrey has none). Returns the process and the policy service's address, from its
/// `ready` log line in its log file.
async fn spawn_filterd(dir: &Path) -> (Guard, SocketAddr) {
    let cfg = dir.join("filterd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[next_hop]\naddress = \"127.0.0.1:9\"\n\
[bayes]\nstate_dir = \"{}\"\n[auth]\nenabled = false\n\
[local_domains]\npostconf = false\ndomains = [\"example.com\"]\n\
[policy_service]\nenabled = true\nlisten = [\"127.0.0.1:0\"]\n\
[policy_service.greylist]\ndelay_secs = 300\n[policy_service.spf]\nenabled = false\n",
            dir.join("state").display()
        ),
    )
    .expect("config");
    // Its log goes to a file, as postgrey's does: no reader competes for the two cores.
    let log_path = dir.join("filterd.log");
    let log_file = std::fs::File::create(&log_path).expect("filterd log");
    let child = Command::new(env!("CARGO_BIN_EXE_filterd"))
        .arg("--config")
        .arg(&cfg)
        .env(
            "RUST_LOG",
            std::env::var("POLICY_RUST_LOG").unwrap_or_else(|_| "warn,filterd=info".into()),
        )
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("spawn filterd");
    let mut guard = Guard(child);
    let show = move || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let addr = loop {
        let text = show();
        let ready = text
            .lines()
            .filter(|l| l.contains("ready"))
            .find_map(policy_listen);
        if let Some(a) = ready {
            break a;
        }
        let state = guard.state();
        if std::time::Instant::now() > deadline || !state.contains("running") {
            panic!("filterd logged no policy_listen= within 20 s ({state}); its log:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    wait_port("filterd", addr, &mut guard, &show).await;
    (guard, addr)
}

/// The effective uid is 0 (from /proc: no libc crate here).
fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = |l: &str| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0");
    status.lines().any(uid)
}

/// The uid and gid of `user` in /etc/passwd.
fn passwd_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.split(':').next() == Some(user))?;
    let mut f = line.split(':').skip(2);
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

/// postgrey in the foreground on a free port, greylisting 300 s, its database in `db`. Not
/// daemonized it logs a line per request to stderr (here `log_dir/postgrey.log`; `--pidfile`
/// needs `-d`). As root it drops to user postgrey, who must own `db` (no such user: root).
async fn spawn_postgrey(db: &Path, log_dir: &Path) -> (Guard, SocketAddr) {
    let port = free_port();
    let empty = log_dir.join("whitelist-empty");
    std::fs::write(&empty, "").expect("empty whitelist");
    let mut args = vec![
        format!("--inet=127.0.0.1:{port}"),
        format!("--dbdir={}", db.display()),
        "--delay=300".to_string(),
        format!("--whitelist-clients={}", empty.display()),
        format!("--whitelist-recipients={}", empty.display()),
    ];
    if is_root() {
        match passwd_ids("postgrey") {
            Some((uid, gid)) => chown(db, Some(uid), Some(gid)).expect("chown postgrey's dbdir"),
            None => args.extend(["--user=root".to_string(), "--group=root".to_string()]),
        }
    }
    let log_path = log_dir.join("postgrey.log");
    let log = std::fs::File::create(&log_path).expect("postgrey log");
    let child = Command::new(POSTGREY)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("postgrey log"))
        .stderr(log)
        .spawn()
        .expect("spawn postgrey");
    let mut guard = Guard(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let show = || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        format!("{POSTGREY} {}\n{text}", args.join(" "))
    };
    wait_port("postgrey", addr, &mut guard, &show).await;
    (guard, addr)
}

/// An action's first word (`DEFER_IF_PERMIT`, `DUNNO`, `PREPEND`...).
fn word(action: &str) -> &str {
    action.split(' ').next().unwrap_or("")
}

/// "WORD count" per first word of the actions, with one full answer per word.
fn action_summary(actions: &[String]) -> String {
    let mut by: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for a in actions {
        by.entry(word(a)).or_insert((0, a.as_str())).0 += 1;
    }
    by.iter()
        .map(|(w, (n, sample))| format!("{w} {n} (e.g. \"action={sample}\")"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn print_results(filterd: &Run, postgrey: Option<&Run>) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!("server          req/s    p50 ms    p99 ms");
    let pg = postgrey.map(|p| ("postgrey", p));
    let runs = [Some(("filterd", filterd)), pg];
    for (label, r) in runs.into_iter().flatten() {
        let (rate, p50, p99) = (r.rate, ms(r.p50), ms(r.p99));
        println!("{label:<10} {rate:>10.0} {p50:>9.3} {p99:>9.3}");
    }
    for (label, r) in runs.into_iter().flatten() {
        println!("{label} answers: {}", action_summary(&r.actions));
    }
    let p99 = ms(filterd.p99);
    match postgrey {
        Some(p) => {
            let pairs = filterd.actions.iter().zip(&p.actions);
            let same = pairs.filter(|(a, b)| word(a) == word(b)).count();
            let n = p.actions.len();
            println!("same action word from both on {same} of {n} requests");
            let ratio = filterd.rate / p.rate;
            println!(
                "ratio filterd/postgrey {ratio:.1}x (goal >= 20x: {}); \
filterd p99 {p99:.3} ms (goal < 2 ms: {})",
                met(ratio >= 20.0),
                met(p99 < 2.0)
            );
        }
        None => println!(
            "ratio filterd/postgrey: no postgrey; filterd p99 {p99:.3} ms (goal < 2 ms: {})",
            met(p99 < 2.0)
        ),
    }
}

fn main() {
    // `cargo test --benches` runs benches without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let count = (env_or("POLICY_COUNT", 20_000) as usize).max(1);
    let conns = (env_or("POLICY_CONNS", 8) as usize).max(1);
    let warm = env_or("POLICY_WARM", 300) as usize;
    let (reqs, repeats) = workload(warm + count, warm);
    let reqs = Arc::new(reqs);
    let installed = Path::new(POSTGREY).exists();
    println!(
        "policy: {count} requests ({repeats} repeat an earlier triplet) over {conns} persistent \
connections, one at a time each, after {warm} warm-up requests; greylisting 300 s, no allow lists"
    );
    if installed {
        let out = Command::new(POSTGREY).arg("--version").output();
        let version = out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        let version = version.unwrap_or_default();
        println!("postgrey: {version} (foreground, BerkeleyDB in a temp dir, logging to a file)");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (filterd_proc, addr) = spawn_filterd(dir.path()).await;
        let filterd = run("filterd", addr, conns, &reqs, warm).await;
        drop(filterd_proc);
        let postgrey = if installed {
            // Its own directory, which user postgrey may have to own (see spawn_postgrey).
            let db = tempfile::tempdir().expect("postgrey tempdir");
            let (server, addr) = spawn_postgrey(db.path(), dir.path()).await;
            let r = run("postgrey", addr, conns, &reqs, warm).await;
            drop(server);
            Some(r)
        } else {
            println!("skipped: postgrey not installed (apt-get install postgrey)");
            None
        };
        print_results(&filterd, postgrey.as_ref());
    });
}
