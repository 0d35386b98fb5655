//! The loops that keep a running filterd's state fresh: the Bayes store reloaded when
//! `filtertrain` replaced it (every second, at once on SIGHUP), autolearned messages
//! written every 30 s, quarantine retention every hour, and the guard's and greylist's
//! state saved every 5 s when it changed.

use crate::model::bayes_live::BayesLive;
use std::sync::Arc;
use std::time::Duration;

/// Quarantine retention: at start and every hour, entries past their age go, then the
/// oldest while the store is over its size, and leftovers of interrupted writes.
pub(super) async fn retention_loop(q: crate::config::QuarantineSettings) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let q = q.clone();
        let done = tokio::task::spawn_blocking(move || {
            q.store
                .enforce(std::time::SystemTime::now(), q.max_age, q.max_bytes)
        })
        .await;
        match done {
            Ok(Ok(r)) if r.entries > 0 => tracing::info!(
                entries = r.entries,
                bytes = r.bytes,
                "quarantine retention removed old entries"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "quarantine retention failed"),
            Err(e) => tracing::error!(error = %e, "quarantine retention panicked"),
        }
    }
}

/// Save the state store every 5 seconds when it changed.
pub(super) async fn state_loop(state: Arc<crate::state::EmbeddedState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        save_state(&state).await;
    }
}

/// Save the state store now (off the async workers); a failure is logged once per
/// kind of error, and the next save tries again.
pub(super) async fn save_state(state: &Arc<crate::state::EmbeddedState>) {
    use std::sync::Mutex;
    static LAST: Mutex<String> = Mutex::new(String::new());
    let s = state.clone();
    let now = crate::clock::tokio_unix();
    let result = tokio::task::spawn_blocking(move || s.save(now)).await;
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    match result {
        Ok(Ok(())) => last.clear(),
        Ok(Err(e)) if *last != e.to_string() => {
            tracing::error!(error = %e, "cannot save the guard and greylist state; retrying");
            *last = e.to_string();
        }
        Ok(Err(_)) => {}
        Err(e) => tracing::error!(error = %e, "saving the state panicked"),
    }
}

/// Write autolearned messages to the store (off the async workers).
pub(super) async fn flush_learned(live: Arc<BayesLive>, max_tokens: usize) {
    if live.pending() == 0 {
        return;
    }
    let l = live.clone();
    match tokio::task::spawn_blocking(move || l.flush_learned(max_tokens)).await {
        Ok(Ok(n)) => {
            tracing::info!("autolearned {n} message(s) into the Bayes store");
            bayes_metrics(&live);
        }
        Ok(Err(e)) => tracing::error!("autolearned messages not written: {e}"),
        Err(e) => tracing::error!("autolearn task failed: {e}"),
    }
}

/// The Bayes gauges from the current snapshot.
pub(super) fn bayes_metrics(live: &BayesLive) {
    let s = live.snapshot();
    crate::metrics::METRICS.bayes(s.nham, s.nspam, live.ready());
}

/// Pick up a store that `filtertrain` replaced: checked every second, and at once on SIGHUP.
/// Autolearned messages are written every 30 s (and on SIGHUP and at shutdown).
pub(super) async fn reload_loop(
    live: Arc<BayesLive>,
    max_tokens: usize,
    mut hup: tokio::sync::watch::Receiver<u64>,
) {
    let mut ticks: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut hup_open = true;
    loop {
        let hupped = tokio::select! {
            _ = tick.tick() => false,
            r = hup.changed(), if hup_open => {
                hup_open = r.is_ok();
                if hup_open {
                    tracing::info!("SIGHUP: writing autolearned messages and reloading the Bayes store");
                }
                hup_open
            }
        };
        ticks += 1;
        if hupped || ticks.is_multiple_of(30) {
            flush_learned(live.clone(), max_tokens).await;
        }
        let l = live.clone();
        match tokio::task::spawn_blocking(move || l.reload_if_changed().map(|r| (r, l.snapshot())))
            .await
        {
            Ok(Ok((true, s))) => {
                tracing::info!(
                    nspam = s.nspam,
                    nham = s.nham,
                    ntokens = s.ntokens(),
                    "Bayes store reloaded"
                );
                bayes_metrics(&live);
            }
            Ok(Ok((false, _))) => {}
            Ok(Err(e)) => {
                tracing::error!("Bayes store not reloaded, keeping the previous one: {e}")
            }
            Err(e) => tracing::error!("Bayes reload task failed: {e}"),
        }
    }
}

/// Turn each SIGHUP into a change of `tx` (every reloader watches it).
pub(super) async fn hup_loop(
    mut hup: tokio::signal::unix::Signal,
    tx: tokio::sync::watch::Sender<u64>,
) {
    while hup.recv().await.is_some() {
        tx.send_modify(|n| *n += 1);
    }
}

/// Read and compile the rule files again on SIGHUP; a set with mistakes is logged with
/// each one, and the previous set stays in use.
pub(super) async fn rules_loop(
    rules: Arc<crate::rules::live::LiveRules>,
    mut hup: tokio::sync::watch::Receiver<u64>,
) {
    while hup.changed().await.is_ok() {
        let r = rules.clone();
        match tokio::task::spawn_blocking(move || r.reload()).await {
            Ok(Ok(n)) => tracing::info!("SIGHUP: rules reloaded, {n} rules"),
            Ok(Err(problems)) => {
                for p in &problems {
                    tracing::error!("{p}");
                }
                tracing::error!(
                    "SIGHUP: rules not reloaded ({} problem(s)), keeping the previous set",
                    problems.len()
                );
            }
            Err(e) => tracing::error!("rules reload task failed: {e}"),
        }
    }
}

/// Autolearned messages into the Bayes store in Redis: every 5 s and on SIGHUP. While Redis
/// is down they stay queued (bounded), with one error line when writing starts to fail and
/// one when it works again.
pub(super) async fn redis_learn_loop(
    redis: Arc<crate::model::bayes_redis::RedisBayes>,
    mut hup: tokio::sync::watch::Receiver<u64>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut hup_open = true;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = hup.changed(), if hup_open => hup_open = r.is_ok(),
        }
        failing = redis_flush(&redis, failing).await;
    }
}

/// One write of the queue; returns whether it failed (`failing`: the last one did).
pub(super) async fn redis_flush(
    redis: &crate::model::bayes_redis::RedisBayes,
    failing: bool,
) -> bool {
    match redis.flush_learned().await {
        Ok(0) => {}
        Ok(n) => tracing::info!("autolearned {n} message(s) into the Bayes store in Redis"),
        Err(e) => {
            if !failing {
                tracing::error!(
                    queued = redis.queue().len(),
                    "autolearned messages not written to Redis, kept queued: {}",
                    e.0
                );
            }
            return true;
        }
    }
    if failing {
        tracing::info!("autolearned messages written to Redis again");
    }
    false
}
