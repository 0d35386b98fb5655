//! Three filterd hosts behind one private Postfix, one shared Redis and PostgreSQL: a host
//! killed mid-burst loses nothing, Postfix carries on through the others.
//!
//! Postfix (3.5 and later) takes a list of next hops for an SMTP transport and tries them
//! in order: `content_filter = filterd:[127.0.0.2]:P, [127.0.0.3]:P, [127.0.0.4]:P` sends
//! everything to the first host while it answers, and to the next when it does not. That is
//! failover, not load spreading; spreading needs one name with several addresses (DNS or
//! /etc/hosts; `smtp_randomize_addresses` shuffles them), which a test cannot set up
//! without touching the machine's resolver.

use crate::postfix::{inject_at, marker};
use crate::util::Filterd;
use crate::util::pg::Postgres;
use crate::util::postfix::{Postfix, free_port, unavailable};
use crate::util::redis::Redis;
use crate::util::sink::{Behaviour, Sink};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn three_hosts_behind_one_postfix_lose_nothing_when_one_is_killed_mid_burst() {
    if unavailable().is_some() {
        return;
    }
    let (Some(redis), Some(pg)) = (Redis::start(), Postgres::start()) else {
        return;
    };
    let sink = Sink::start(Behaviour::default()).await;
    let (port, reinject) = (free_port(), free_port());
    let mut hosts: Vec<Filterd> = (2..=4)
        .map(|n| {
            Filterd::start_with(&format!(
                "[server]\nlisten = [\"127.0.0.{n}:{port}\"]\nhostname = \"filter{n}.test\"\n\
                 [next_hop]\naddress = \"127.0.0.1:{reinject}\"\n[model]\nenabled = false\n\
                 [local_domains]\npostconf = false\ndomains = [\"sink.test\"]\n\
                 [shared]\nredis_url = \"{}\"\nstate = \"redis\"\nbayes = \"redis\"\n\
                 quarantine = \"postgresql\"\npostgresql_url = \"{}\"\n",
                redis.url(),
                pg.url()
            ))
        })
        .collect();
    let list = (2..=4)
        .map(|n| format!("[127.0.0.{n}]:{port}"))
        .collect::<Vec<_>>()
        .join(", ");
    let pf = Postfix::start_with(
        port,
        reinject,
        sink.addr,
        &format!("content_filter = filterd:{list}\n"),
    );
    let n = 200;
    let burst = {
        let smtpd = pf.smtpd;
        tokio::spawn(async move { inject_at(smtpd, 0..n).await })
    };
    // Mid-burst: the first host dies without a word.
    let first = sink.wait_for(30, Duration::from_secs(60)).await;
    assert!(first >= 30, "{}", pf.maillog());
    let _ = hosts[0].child.kill();
    let _ = hosts[0].child.wait();
    burst.await.expect("injection");
    sink.wait_for(n, Duration::from_secs(120)).await;
    assert!(
        pf.wait_queue_empty(Duration::from_secs(60)),
        "{}",
        pf.queue_listing()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen = vec![0usize; n];
    for m in sink.received() {
        if let Some(i) = marker(&m.data) {
            seen[i] += 1;
        }
    }
    let lost: Vec<usize> = (0..n).filter(|&i| seen[i] == 0).collect();
    assert!(lost.is_empty(), "lost {lost:?}\n{}", pf.maillog());
    // A message whose content reached the next hop just before the kill, but whose 250
    // never reached Postfix, comes again: at most one per connection in flight (the
    // filterd transport's process limit, 4). SMTP is at-least-once; this is the bound.
    let twice = seen.iter().filter(|&&c| c > 1).count();
    assert!(twice <= 4, "{twice} duplicates: {seen:?}");
    let by = |h: &Filterd| h.log_text().matches("Passed CLEAN").count();
    let (a, b, c) = (by(&hosts[0]), by(&hosts[1]), by(&hosts[2]));
    assert!(
        a >= 30 && b > 0,
        "first host {a}, then the second {b}, third {c}"
    );
    eprintln!("delivered by host: {a} / {b} / {c}; {twice} duplicates");
}
