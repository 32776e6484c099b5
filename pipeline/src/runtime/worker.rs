//! A sink worker: delivers its subscription in order, retries, dead-letters, and after
//! `max_hold` of failing parks events in the outbox (so the slot moves on), draining it in
//! order once the sink recovers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdc::backoff::Backoff;
use cdc::Lsn;
use sinks::{Outcome, Sink, SinkError};
use transforms::Sourced;

use super::shared::Shared;
use super::stats::{unix_us, SinkStats};
use super::transport::{Channel, Item, Subscription};
use crate::state::DeadLetter;

/// Waits before retrying a transient failure (`Retry-After` when the server gave one).
async fn wait_before_retry(stats: &SinkStats, e: &SinkError, backoff: &mut Backoff) {
    stats.retries.fetch_add(1, Ordering::Relaxed);
    let wait = e.retry_after.unwrap_or_else(|| backoff.next_delay());
    tracing::warn!(error = %e, ?wait, "delivery failed; retrying");
    tokio::time::sleep(wait).await;
}

/// Counts a delivery; its latency runs from Odoo's commit (by the server's clock; from
/// reading it when the commit time is not known, as for snapshot rows).
fn record(stats: &SinkStats, s: &Sourced, read: Instant) {
    stats.delivered.fetch_add(1, Ordering::Relaxed);
    let latency = if s.committed_us > 0 {
        unix_us().saturating_sub(s.committed_us).max(0) as f64 / 1e6
    } else {
        read.elapsed().as_secs_f64()
    };
    stats.latency.observe(latency);
}

/// Dead-letters an event: kept in the state database before the commit marker behind it is
/// published, so the slot never moves past an event that is neither delivered nor parked.
async fn dead(
    shared: &Shared,
    stats: &SinkStats,
    sink: &'static str,
    key: String,
    s: &Sourced,
    reason: String,
) {
    stats.dead.fetch_add(1, Ordering::Relaxed);
    let d = DeadLetter {
        sink,
        key,
        reason,
        source_lsn: Lsn(s.source_commit_lsn).to_string(),
        event: s.event.clone(),
    };
    let mut new = true;
    if let Some(state) = &shared.state {
        let mut backoff = Backoff::default();
        loop {
            match crate::state::dead_letter(state, &d).await {
                Ok(n) => {
                    new = n;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot record a dead letter; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }
    if new {
        tracing::error!(sink, key = %d.key, reason = %d.reason, "dead-lettered");
        if let Ok(mut v) = shared.dead_letters.lock() {
            v.push(d);
        }
    } else {
        // The same sink, key and cause is pending already (a restart read it again).
        tracing::debug!(sink, key = %d.key, reason = %d.reason, "dead letter seen again; counted");
    }
}

/// One sink's worker.
struct Worker {
    sink: Box<dyn Sink>,
    name: &'static str,
    stats: Arc<SinkStats>,
    shared: Arc<Shared>,
    max_hold: Duration,
    partitions: usize,
    parked: bool,
    stuck_since: Option<Instant>,
}

impl Worker {
    fn can_park(&self) -> bool {
        self.shared.state.is_some()
    }

    async fn park(&mut self, events: &[Sourced]) {
        let Some(state) = self.shared.state.clone() else {
            return;
        };
        for s in events {
            let mut backoff = Backoff::default();
            while let Err(e) =
                crate::state::park(&state, self.name, &self.sink.key(&s.event), s).await
            {
                tracing::warn!(error = %e, "cannot park an event; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            self.stats.parked.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Delivers events (in order), retrying transient failures until `max_hold`, then parking.
    async fn handle(&mut self, events: Vec<(Sourced, Instant)>) {
        if events.is_empty() {
            return;
        }
        if self.parked {
            let plain: Vec<Sourced> = events.into_iter().map(|(s, _)| s).collect();
            self.park(&plain).await;
            return;
        }
        let mut rest = events;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        while !rest.is_empty() {
            let batch: Vec<Sourced> = rest.iter().map(|(s, _)| s.clone()).collect();
            let outcomes = self.sink.deliver(&batch, self.partitions).await;
            let mut again = Vec::new();
            let mut error = None;
            let mut progressed = false;
            for (o, (s, t)) in outcomes.into_iter().zip(rest) {
                match o {
                    Outcome::Done => {
                        progressed = true;
                        record(&self.stats, &s, t);
                    }
                    Outcome::Dead(reason) => {
                        progressed = true;
                        let key = self.sink.key(&s.event);
                        dead(&self.shared, &self.stats, self.name, key, &s, reason).await;
                    }
                    Outcome::Retry(e) => {
                        if error.is_none() {
                            error = e;
                        }
                        again.push((s, t));
                    }
                }
            }
            rest = again;
            if rest.is_empty() {
                self.stuck_since = None;
                if !self.parked {
                    self.stats.healthy();
                }
                break;
            }
            if progressed {
                self.stuck_since = None;
            }
            let e = error.unwrap_or_else(|| SinkError::transient("delivery interrupted"));
            self.stats.failing(&e);
            let since = *self.stuck_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.max_hold && self.can_park() {
                tracing::warn!(sink = self.name, error = %e, "sink down for longer than max_hold; parking events in the outbox");
                self.parked = true;
                let plain: Vec<Sourced> = rest.iter().map(|(s, _)| s.clone()).collect();
                self.park(&plain).await;
                return;
            }
            wait_before_retry(&self.stats, &e, &mut backoff).await;
        }
    }

    /// Tries to deliver the outbox, oldest first; leaves parking mode when it is empty.
    async fn drain(&mut self) {
        let Some(state) = self.shared.state.clone() else {
            self.parked = false;
            return;
        };
        // A bounded turn: live events keep being parked between turns.
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(500) {
            let parked = match crate::state::parked(&state, self.name, 100).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the outbox");
                    return;
                }
            };
            if parked.is_empty() {
                self.parked = false;
                self.stuck_since = None;
                self.stats.healthy();
                tracing::info!(sink = self.name, "outbox drained; delivering live again");
                return;
            }
            let events: Vec<Sourced> = parked.iter().map(|(_, s)| s.clone()).collect();
            let outcomes = self.sink.deliver(&events, self.partitions).await;
            // Outbox rows leave in order: stop at the first one still failing, so a key's
            // later events never overtake it.
            for (o, (id, s)) in outcomes.into_iter().zip(parked.iter()) {
                match o {
                    Outcome::Done => record(&self.stats, s, Instant::now()),
                    Outcome::Dead(reason) => {
                        let key = self.sink.key(&s.event);
                        dead(&self.shared, &self.stats, self.name, key, s, reason).await
                    }
                    Outcome::Retry(e) => {
                        self.stats.failing(
                            &e.unwrap_or_else(|| SinkError::transient("outbox delivery failed")),
                        );
                        return;
                    }
                }
                if let Err(e) = crate::state::unpark(&state, *id).await {
                    tracing::warn!(error = %e, "cannot clear an outbox row");
                    return;
                }
            }
        }
    }

    /// Tells watchers what this sink still owes outside its queue.
    fn publish_settling(&mut self) {
        let settling = self.sink.settling();
        self.stats
            .rewrite_pending
            .store(settling.write_pending, Ordering::SeqCst);
        self.stats.fenced.store(settling.fenced, Ordering::SeqCst);
        self.sink.published();
    }

    /// The position up to which this worker has seen everything read.
    fn seen(&self, rx: &dyn Subscription) -> Lsn {
        let delivered = self.stats.delivered_marker.load(Ordering::SeqCst);
        if rx.is_empty() {
            let read = self.shared.read.load(Ordering::SeqCst);
            let through = self.shared.read_through.load(Ordering::SeqCst);
            Lsn(delivered.max(read).max(through))
        } else {
            Lsn(delivered)
        }
    }

    async fn run(mut self, mut rx: Box<dyn Subscription>) {
        let mut last_drain = Instant::now();
        self.sink.start().await;
        // Parked events from an earlier run come first.
        if let Some(state) = &self.shared.state {
            if crate::state::parked(state, self.name, 1)
                .await
                .is_ok_and(|p| !p.is_empty())
            {
                self.parked = true;
            }
        }
        loop {
            self.publish_settling();
            if self.parked && last_drain.elapsed() >= Duration::from_secs(1) {
                // Parked but busy: the outbox still gets its turns.
                self.drain().await;
                last_drain = Instant::now();
            }
            let first = if self.parked {
                tokio::select! {
                    item = rx.next() => item,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {
                        self.drain().await;
                        last_drain = Instant::now();
                        continue;
                    }
                }
            } else {
                tokio::select! {
                    item = rx.next() => item,
                    () = self.sink.wake() => {
                        let pos = self.seen(&*rx);
                        if self.sink.turn(pos).await == sinks::Turn::Wrote {
                            self.stats.deliveries[3].fetch_add(1, Ordering::Relaxed);
                        }
                        continue;
                    }
                }
            };
            let Some(first) = first else { return };
            // A sink with a write interval lets changes gather: the oldest change taken waits
            // at most one interval from Odoo's commit for the ones after it, so their newest
            // quantity per level goes out in one call instead of one call per change, unless
            // one of them is urgent. Calls are then about an interval apart under steady load
            // (the least writes that keep every change within the interval), and a backlog
            // (committed long ago, or waiting in the queue) goes at once.
            let batching = self.sink.batching(self.partitions);
            let interval = batching.write_interval;
            let deadline = match (&first, self.parked) {
                (Item::Event(s, read), false) if !interval.is_zero() => {
                    let since_commit = u64::try_from(unix_us().saturating_sub(s.committed_us))
                        .ok()
                        .filter(|_| s.committed_us > 0)
                        .map_or(Duration::ZERO, Duration::from_micros);
                    let waited = since_commit.max(read.elapsed());
                    Some(tokio::time::Instant::now() + interval.saturating_sub(waited))
                }
                _ => None,
            };
            let mut urgent = false;
            let mut timed_out = false;
            let mut items = Vec::new();
            let mut next = Some(first);
            while let Some(item) = next.take() {
                urgent |= matches!(&item, Item::Event(s, _) if self.sink.is_urgent(&s.event));
                items.push(item);
                if items.len() >= 1000 {
                    break;
                }
                next = match (rx.try_next(), deadline) {
                    (Some(more), _) => Some(more),
                    (None, Some(deadline)) if !urgent => tokio::select! {
                        more = rx.next() => more,
                        () = tokio::time::sleep_until(deadline) => {
                            timed_out = true;
                            None
                        }
                    },
                    (None, _) => None,
                };
            }
            let cause = match (urgent, timed_out) {
                (true, _) => 0,
                (false, true) => 1,
                (false, false) => 2,
            };
            self.stats.deliveries[cause].fetch_add(1, Ordering::Relaxed);
            // Everything taken goes out together (parallel across keys, even across
            // transactions); the newest marker among them is published once all of it is
            // delivered, dead-lettered or parked.
            let mut events = Vec::new();
            let mut marker = None;
            for item in items {
                match item {
                    Item::Event(s, t) => events.push(((*s).clone(), t)),
                    Item::Commit(lsn) => marker = Some(lsn),
                }
            }
            // Orders whose fence falls inside this batch stop being held before its targets
            // are computed: their reservation is in the batch's sellable quantities.
            if let Some(lsn) = marker {
                self.sink.before_delivery(lsn);
            }
            // Delivered a slice at a time. A sink that keeps up too slowly holds the slot like
            // one that is down: once the oldest waiting event is max_hold old, the backlog goes
            // to the outbox so the slot (and the other sinks, behind the shared reader) move on.
            let slice = batching.slice.max(1);
            while !events.is_empty() {
                let rest = events.split_off(slice.min(events.len()));
                if let (false, true, Some((_, t))) = (self.parked, self.can_park(), events.first())
                {
                    if t.elapsed() >= self.max_hold {
                        tracing::warn!(sink = self.name, behind = ?t.elapsed(), "sink is more than max_hold behind; parking its backlog in the outbox");
                        self.parked = true;
                    }
                }
                self.handle(std::mem::replace(&mut events, rest)).await;
            }
            if let Some(lsn) = marker {
                rx.delivered(lsn);
            }
        }
    }
}

/// Starts a worker per sink on the in-process transport; returns the reader's half. Each
/// sink's counters are registered in `shared` under its name.
pub fn spawn_workers(
    sinks: Vec<Box<dyn Sink>>,
    shared: &Arc<Shared>,
    capacity: usize,
    max_hold: Duration,
    partitions: usize,
) -> Channel {
    let mut channel = Channel::new();
    for sink in sinks {
        let name = sink.name();
        let stats = Arc::new(SinkStats::new(&shared.metrics, name));
        let queue = channel.queue(
            sink.wants(),
            capacity,
            stats.clone(),
            shared.progress.clone(),
        );
        spawn_worker(sink, shared, stats, max_hold, partitions, Box::new(queue));
    }
    channel
}

/// Starts a worker for `sink` taking its events from `from` (any transport's subscription);
/// its counters `stats` are registered in `shared` under its name.
pub fn spawn_worker(
    sink: Box<dyn Sink>,
    shared: &Arc<Shared>,
    stats: Arc<SinkStats>,
    max_hold: Duration,
    partitions: usize,
    from: Box<dyn Subscription>,
) -> tokio::task::JoinHandle<()> {
    let name = sink.name();
    if let Ok(mut v) = shared.stats.lock() {
        v.push((name, stats.clone()));
    }
    let worker = Worker {
        sink,
        name,
        stats,
        shared: shared.clone(),
        max_hold,
        partitions,
        parked: false,
        stuck_since: None,
    };
    tokio::spawn(worker.run(from))
}
