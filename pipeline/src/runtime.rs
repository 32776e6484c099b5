//! The runtime: the replication stream through the transforms into one bounded queue per sink,
//! and the checkpoint that ties them together.
//!
//! # Checkpoint
//! The reader puts each transaction's events on the queues of the sinks that want them,
//! followed by a commit marker carrying the transaction's end LSN. A sink worker delivers in
//! queue order and publishes the marker once everything before it is delivered (or
//! dead-lettered with its reason). The position confirmed to PostgreSQL is the smallest
//! delivered marker among sinks that still have work queued, or the reader's position when
//! none has: never past an undelivered event. Queues are bounded: a slow sink slows the reader,
//! and the reader simply reads the slot more slowly.
//!
//! Transient failures are retried with capped backoff (honouring `Retry-After`); permanent ones
//! go to the dead-letter list with the reason and the source LSN.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cdc::backoff::Backoff;
use cdc::conn::{quote_ident, ReplicationConnection};
use cdc::decoder::Decoder;
use cdc::stream::ReplicationStream;
use cdc::{Lsn, ReplError, SourceConfig};
use serde::Serialize;
use sinks::SinkError;
use tokio::sync::mpsc;
use transforms::{RetailEvent, Sourced, Transformer};

use crate::capture::TxnCollector;

/// A message on a sink queue.
enum Item {
    Event(Box<Sourced>, Instant),
    Commit(Lsn),
}

/// A dead-lettered event.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Sink.
    pub sink: &'static str,
    /// Partition key.
    pub key: String,
    /// Why.
    pub reason: String,
    /// Source commit LSN.
    pub source_lsn: String,
    /// The event.
    pub event: RetailEvent,
}

/// Counters of one sink.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Events delivered.
    pub delivered: AtomicU64,
    /// Transient failures retried.
    pub retries: AtomicU64,
    /// Events dead-lettered.
    pub dead: AtomicU64,
    /// Events parked in the outbox.
    pub parked: AtomicU64,
    /// Delivery latency from Odoo's commit (the server's commit time) to the sink's acknowledgement.
    pub latency: crate::histogram::Histogram,
    /// Events put on the queue.
    pub enqueued: AtomicU64,
    /// Newest commit marker fully delivered.
    pub delivered_marker: AtomicU64,
    /// Newest commit marker enqueued.
    pub enqueued_marker: AtomicU64,
    /// Levels wait to be written again (a storefront order's hold was released) and have
    /// not been yet.
    pub rewrite_pending: std::sync::atomic::AtomicBool,
    /// Storefront orders written to Odoo whose units are still held back until the stream
    /// passes their fence.
    pub fenced: AtomicU64,
    /// Deliveries by what sent them, in the order of [`DELIVERY_CAUSES`].
    pub deliveries: [AtomicU64; 4],
    /// Since when (Unix seconds) the sink has been failing: retrying, or parked with an outbox
    /// it cannot drain; 0 while it delivers.
    pub failing_since: AtomicU64,
    /// The newest failure while failing.
    pub last_error: Mutex<Option<String>>,
}

impl SinkStats {
    /// Marks the sink failing (from now, unless it already is).
    pub fn failing(&self, e: &SinkError) {
        let now = unix_us() as u64 / 1_000_000;
        let _ =
            self.failing_since
                .compare_exchange(0, now.max(1), Ordering::SeqCst, Ordering::SeqCst);
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(e.message.clone());
        }
    }

    /// Marks the sink delivering again.
    pub fn healthy(&self) {
        if self.failing_since.swap(0, Ordering::SeqCst) != 0 {
            if let Ok(mut g) = self.last_error.lock() {
                *g = None;
            }
        }
    }

    /// For how long the sink has been failing.
    pub fn failing_for(&self) -> Option<Duration> {
        match self.failing_since.load(Ordering::SeqCst) {
            0 => None,
            t => Some(Duration::from_secs(
                (unix_us() as u64 / 1_000_000).saturating_sub(t),
            )),
        }
    }
}

/// Why a sink delivered: a change that could not wait (near sell-out), the write interval of
/// the oldest change ran out, the changes were there already (a backlog, or a sink without a
/// write interval), or levels released from a storefront order's hold were written again.
pub const DELIVERY_CAUSES: [&str; 4] = ["urgent", "interval", "queued", "released"];

pub use sinks::shopify::guard::{GuardChannel, GuardNote};
pub use sinks::sink::{Outcome, Sink};

/// Everything shared between the reader, the workers and whoever watches.
#[derive(Default)]
pub struct Shared {
    /// The oversell guard's feed from the webhook side.
    pub guard: Arc<GuardChannel>,
    /// Per-sink counters, by name.
    pub stats: Mutex<Vec<(&'static str, Arc<SinkStats>)>>,
    /// Dead letters.
    pub dead_letters: Mutex<Vec<DeadLetter>>,
    /// Position confirmed to the server.
    pub confirmed: AtomicU64,
    /// Commit end of the newest transaction read.
    pub read: AtomicU64,
    /// Transactions read.
    pub transactions: AtomicU64,
    /// Notified when a sink delivered a commit marker: the reader acknowledges it at once.
    pub progress: Arc<tokio::sync::Notify>,
    /// Set to stop: the reader stops reading, waits for the sinks, confirms and returns.
    pub stopping: std::sync::atomic::AtomicBool,
    /// Highest WAL position the server reported.
    pub server_wal: AtomicU64,
    /// A position below which every published change has been read and dispatched (the
    /// newest keepalive `wal_end` between transactions): fences past the last commit are
    /// passed by it.
    pub read_through: AtomicU64,
    /// When (Unix microseconds, by the server's clock) the oldest transaction read but not yet
    /// confirmed committed; 0 when everything read is confirmed.
    pub behind_since_us: AtomicU64,
    /// When (Unix microseconds) the newest confirmed transaction committed: after a lost slot,
    /// the gap starts here.
    pub confirmed_commit_us: AtomicU64,
    /// The state database, where dead letters are kept (in memory only when absent).
    pub state: Option<Arc<crate::state::StateDb>>,
    /// Whether the replication stream is up, and why not when it is not (None before the
    /// first session: "starting").
    pub replication: Mutex<Option<Result<(), String>>>,
    /// Seconds of failing after which a sink makes `/readyz` red (0: the default).
    pub unready_after_secs: AtomicU64,
    /// Webhook receiver and inbox counters, when webhooks are received.
    pub writeback: Mutex<
        Option<(
            Arc<crate::webhook::ReceiverStats>,
            Arc<crate::inbox::InboxStats>,
        )>,
    >,
}

impl Shared {
    /// Records that replication streams (`None`) or why it does not.
    pub fn set_replication(&self, error: Option<String>) {
        if let Ok(mut g) = self.replication.lock() {
            *g = Some(match error {
                None => Ok(()),
                Some(e) => Err(e),
            });
        }
    }

    /// Seconds of failing that make a component not ready.
    pub fn unready_after(&self) -> Duration {
        match self.unready_after_secs.load(Ordering::Relaxed) {
            0 => Duration::from_secs(crate::config::DEFAULT_UNREADY_AFTER_SECS),
            n => Duration::from_secs(n),
        }
    }

    /// Whether some sink is failing right now.
    pub fn any_failing(&self) -> bool {
        self.stats
            .lock()
            .is_ok_and(|v| v.iter().any(|(_, s)| s.failing_for().is_some()))
    }

    /// Whether every sink has delivered everything enqueued (levels released from a hold
    /// and waiting to be written again count as not delivered yet).
    pub fn quiet(&self) -> bool {
        self.stats.lock().is_ok_and(|v| {
            v.iter().all(|(_, s)| {
                s.delivered_marker.load(Ordering::SeqCst)
                    >= s.enqueued_marker.load(Ordering::SeqCst)
                    && !s.rewrite_pending.load(Ordering::SeqCst)
            })
        })
    }

    /// Whether everything is where it will stay: every sink delivered everything enqueued,
    /// and no storefront order's units are still held back in Shopify (nor about to be).
    pub fn settled(&self) -> bool {
        self.quiet()
            && self.guard.in_flight() == 0
            && self
                .stats
                .lock()
                .is_ok_and(|v| v.iter().all(|(_, s)| s.fenced.load(Ordering::SeqCst) == 0))
    }
}

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

/// Now, in Unix microseconds.
fn unix_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// When a transaction committed, in Unix microseconds: never later than now (a server clock
/// ahead of ours), and now when unknown.
fn committed_us(txn: &transforms::Transaction) -> i64 {
    let now = unix_us();
    if txn.committed_us > 0 {
        txn.committed_us.min(now)
    } else {
        now
    }
}

/// Dead-letters an event: kept in the state database before the commit marker behind it is
/// published, so the slot never moves past an event that is neither delivered nor parked.
async fn dead(shared: &Shared, stats: &SinkStats, sink: &'static str, s: &Sourced, reason: String) {
    stats.dead.fetch_add(1, Ordering::Relaxed);
    let d = DeadLetter {
        sink,
        key: s.event.key(),
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

/// A sink worker: delivers its queue in order; after `max_hold` of failing it parks events in
/// the outbox (so the slot moves on) and drains the outbox, in order, once the sink recovers.
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
            while let Err(e) = crate::state::park(&state, self.name, s).await {
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
                        dead(&self.shared, &self.stats, self.name, &s, reason).await;
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
                        dead(&self.shared, &self.stats, self.name, s, reason).await
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
    fn seen(&self, rx: &mpsc::Receiver<Item>) -> Lsn {
        let delivered = self.stats.delivered_marker.load(Ordering::SeqCst);
        if rx.is_empty() {
            let read = self.shared.read.load(Ordering::SeqCst);
            let through = self.shared.read_through.load(Ordering::SeqCst);
            Lsn(delivered.max(read).max(through))
        } else {
            Lsn(delivered)
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Item>) {
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
                    item = rx.recv() => item,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {
                        self.drain().await;
                        last_drain = Instant::now();
                        continue;
                    }
                }
            } else {
                tokio::select! {
                    item = rx.recv() => item,
                    () = self.sink.wake() => {
                        let pos = self.seen(&rx);
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
                next = match (rx.try_recv(), deadline) {
                    (Ok(more), _) => Some(more),
                    (Err(_), Some(deadline)) if !urgent => tokio::select! {
                        more = rx.recv() => more,
                        () = tokio::time::sleep_until(deadline) => {
                            timed_out = true;
                            None
                        }
                    },
                    (Err(_), _) => None,
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
                self.stats
                    .delivered_marker
                    .fetch_max(lsn.0, Ordering::SeqCst);
                self.shared.progress.notify_one();
            }
        }
    }
}

/// A worker's queue, as the reader sees it.
struct Route {
    name: &'static str,
    wants: sinks::Wants,
    tx: mpsc::Sender<Item>,
    stats: Arc<SinkStats>,
}

/// Starts a worker per sink; returns their queues.
fn spawn_workers(
    sinks: Vec<Box<dyn Sink>>,
    shared: &Arc<Shared>,
    capacity: usize,
    max_hold: Duration,
    partitions: usize,
) -> Vec<Route> {
    sinks
        .into_iter()
        .map(|sink| {
            let (tx, rx) = mpsc::channel::<Item>(capacity);
            let stats = Arc::new(SinkStats::default());
            let name = sink.name();
            let wants = sink.wants();
            let worker = Worker {
                sink,
                name,
                stats: stats.clone(),
                shared: shared.clone(),
                max_hold,
                partitions,
                parked: false,
                stuck_since: None,
            };
            tokio::spawn(worker.run(rx));
            Route {
                name,
                wants,
                tx,
                stats,
            }
        })
        .collect()
}

/// What the runtime needs to start.
pub struct RunOptions {
    /// Source database.
    pub source: SourceConfig,
    /// Slot.
    pub slot: String,
    /// Publication.
    pub publication: String,
    /// The initial snapshot (already taken with the slot's creation, at its consistent point).
    pub snapshot: Option<crate::capture::Loaded>,
    /// After a restart: a snapshot of the tables, to rebuild the state.
    pub restore: Option<crate::capture::Loaded>,
    /// The restore snapshot must also redo the initial synchronisation (the previous run died
    /// before its snapshot was delivered).
    pub restore_is_initial: bool,
    /// Recorded in the state database once the initial synchronisation is delivered.
    pub bootstrap_key: Option<String>,
    /// Capacity of each sink queue.
    pub queue_capacity: usize,
    /// How long a sink that cannot deliver may hold the slot before its events are parked.
    pub max_hold: Duration,
    /// Odoo version.
    pub odoo_version: transforms::OdooVersion,
    /// Keys a sink delivers concurrently (ordered per key, parallel across keys).
    pub partitions: usize,
    /// The snapshot is of a slot recreated after it was lost (`run --resync`): besides levels
    /// and open deliveries, every posted move written since this time (UTC; all when None)
    /// is delivered again.
    pub resync_since: Option<Option<String>>,
}

/// Runs until `stop` resolves: reads the slot, transforms, delivers, confirms.
pub async fn run(
    opts: RunOptions,
    sinks: Vec<Box<dyn Sink>>,
    shared: Arc<Shared>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ReplError> {
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            stop.await;
            shared.stopping.store(true, Ordering::SeqCst);
        });
    }
    let workers = spawn_workers(
        sinks,
        &shared,
        opts.queue_capacity.max(16),
        opts.max_hold,
        opts.partitions,
    );
    if let Ok(mut v) = shared.stats.lock() {
        v.extend(workers.iter().map(|r| (r.name, r.stats.clone())));
    }
    let mut transformer = Transformer::new(opts.odoo_version);
    let mut start = Lsn::ZERO;
    if let Some(loaded) = opts.snapshot {
        transformer = loaded.transformer;
        let events = match &opts.resync_since {
            Some(since) => {
                let events = transformer.finish_resync(loaded.lsn.0, since.as_deref());
                let count =
                    |f: fn(&RetailEvent) -> bool| events.iter().filter(|s| f(&s.event)).count();
                let levels = count(|e| matches!(e, RetailEvent::SellableChanged { .. }));
                let deliveries = count(|e| matches!(e, RetailEvent::FulfillmentRequested { .. }));
                let entries = count(|e| matches!(e, RetailEvent::JournalEntry(_)));
                let covered = format!(
                    "{levels} levels, {deliveries} open deliveries, {entries} posted moves written since {}",
                    since.as_deref().unwrap_or("the beginning")
                );
                tracing::warn!(%covered, lsn = %loaded.lsn, "resync after a lost slot: delivering again everything the gap may hold");
                if let Some(state) = &shared.state {
                    let _ = crate::state::put(state, "resync.last", &covered).await;
                }
                events
            }
            None => transformer.finish_initial(loaded.lsn.0, None),
        };
        dispatch(&workers, events, loaded.lsn).await;
        start = loaded.lsn;
    }
    if let Some(loaded) = opts.restore {
        transformer = loaded.transformer;
        if opts.restore_is_initial {
            let events = transformer.finish_initial(loaded.lsn.0, Some(loaded.lsn.0));
            dispatch(&workers, events, loaded.lsn).await;
        } else {
            transformer.finish_restore(loaded.lsn.0);
        }
    }
    let mut bootstrap_key = opts.bootstrap_key.clone();
    let mut decoder = Decoder::default();
    let mut backoff = Backoff::default();
    let mut acked = start;
    loop {
        if let Some(state) = shared.state.as_ref().filter(|s| !s.is_up()) {
            // Streaming resumes once outcomes can be recorded again.
            if let Err(e) = state.ping().await {
                shared.set_replication(Some(format!("paused: {e}")));
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        }
        let session = async {
            let mut conn = ReplicationConnection::connect(&opts.source).await?;
            let status = cdc::slot::ensure(&mut conn, &opts.slot, &opts.publication, false).await?;
            let from = status.confirmed_flush_lsn.unwrap_or_default().max(acked);
            let options = [
                ("proto_version", "1".to_string()),
                ("publication_names", quote_ident(&opts.publication)),
                ("messages", "true".to_string()),
            ];
            let mut stream = ReplicationStream::start(
                conn,
                &opts.slot,
                from,
                &options,
                Duration::from_millis(500),
            )
            .await?;
            stream.wake_on(shared.progress.clone());
            // Lag is measured from here on: the slot's own position, never zero.
            shared.confirmed.fetch_max(from.0, Ordering::SeqCst);
            shared.set_replication(None);
            decoder.reset_session();
            let mut collector = TxnCollector::default();
            // (commit end, when it was read) of transactions not confirmed yet.
            let mut unconfirmed: std::collections::VecDeque<(Lsn, u64)> =
                std::collections::VecDeque::new();
            loop {
                if shared.state.as_ref().is_some_and(|s| !s.is_up()) {
                    // The state database is unreachable: a worker cannot record a dead letter
                    // or park, so nothing more gets confirmed. Holding the stream open would
                    // make a fast shutdown of PostgreSQL wait for this walsender forever
                    // (it waits for everything sent to be confirmed); let go, and resume from
                    // the slot once the state database answers.
                    let _ = tokio::time::timeout(Duration::from_secs(2), stream.close()).await;
                    return Err(ReplError::Io(std::io::Error::other(
                        "odoo-cdc's state database is unreachable: replication paused",
                    )));
                }
                let batch = stream.next_batch().await?;
                for (lsn, data) in batch.iter() {
                    decoder.process(lsn, data, &mut collector)?;
                }
                for (txn, end) in collector.done.drain(..) {
                    // After a reconnect the server sends again from the confirmed position:
                    // what this process already applied (and queued) is skipped. Applying it
                    // again would move the transformer's state backwards (an invoice back to
                    // draft) and count a second posting: a second journal entry.
                    let applied = Lsn(shared.read.load(Ordering::SeqCst)).max(acked);
                    if end <= applied && applied > Lsn::ZERO {
                        continue;
                    }
                    let events = transformer.apply(&txn);
                    dispatch(&workers, events, end).await;
                    shared.read.store(end.0, Ordering::SeqCst);
                    unconfirmed.push_back((end, committed_us(&txn).max(1) as u64));
                    shared.transactions.fetch_add(1, Ordering::Relaxed);
                }
                if !stream.in_transaction() {
                    // Caught up with the server past a restore snapshot: end the replay window.
                    let pos = stream.keepalive_end();
                    let resync = transformer.end_replay(pos.0);
                    if !resync.is_empty() {
                        dispatch(&workers, resync, pos).await;
                    }
                    shared.read_through.fetch_max(pos.0, Ordering::SeqCst);
                }
                if let (Some(key), Some(state)) = (&bootstrap_key, &shared.state) {
                    // The initial synchronisation is durable once every sink delivered it.
                    if shared.quiet() && crate::state::put(state, key, "done").await.is_ok() {
                        tracing::info!("initial synchronisation delivered");
                        bootstrap_key = None;
                    }
                }
                let stopping = shared.stopping.load(Ordering::SeqCst);
                if stopping {
                    // Graceful stop: let the sinks finish what is queued, then confirm.
                    // A sink that is failing will not finish: its events stay unconfirmed in the
                    // slot (or parked) and go out after the next start.
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while !shared.quiet() && Instant::now() < deadline && !shared.any_failing() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                let read = Lsn(shared.read.load(Ordering::SeqCst));
                let confirm = checkpoint(&workers, read);
                if confirm > acked {
                    acked = confirm;
                    stream.ack(confirm);
                    shared.confirmed.store(confirm.0, Ordering::SeqCst);
                }
                shared
                    .server_wal
                    .fetch_max(stream.progress().received.0, Ordering::SeqCst);
                // Lag in seconds: how long the oldest unconfirmed transaction has waited.
                while let Some((end, at)) = unconfirmed.front().copied() {
                    if end > confirm {
                        break;
                    }
                    shared.confirmed_commit_us.fetch_max(at, Ordering::SeqCst);
                    unconfirmed.pop_front();
                }
                shared.behind_since_us.store(
                    unconfirmed.front().map_or(0, |(_, at)| *at),
                    Ordering::SeqCst,
                );
                if stopping || stream.is_ended() {
                    stream.close().await?;
                    return Ok::<(), ReplError>(());
                }
            }
        };
        match session.await {
            Err(e) if e.is_transient() && !shared.stopping.load(Ordering::SeqCst) => {
                shared.set_replication(Some(e.to_string()));
                let d = backoff.next_delay();
                tracing::warn!(error = %e, ?d, "replication interrupted; reconnecting");
                tokio::time::sleep(d).await;
            }
            Err(e) => {
                shared.set_replication(Some(e.to_string()));
                return Err(e);
            }
            Ok(()) => {
                shared.set_replication(Some("stopped".into()));
                return Ok(());
            }
        }
    }
}

/// The position that may be confirmed: never past an event some sink has not delivered.
fn checkpoint(workers: &[Route], read: Lsn) -> Lsn {
    let mut pos = read;
    for Route { stats: s, .. } in workers {
        let delivered = s.delivered_marker.load(Ordering::SeqCst);
        if delivered < s.enqueued_marker.load(Ordering::SeqCst) {
            pos = pos.min(Lsn(delivered));
        }
    }
    pos
}

async fn dispatch(workers: &[Route], events: Vec<Sourced>, end: Lsn) {
    let now = Instant::now();
    for Route {
        wants, tx, stats, ..
    } in workers
    {
        let mine: Vec<&Sourced> = events.iter().filter(|s| wants(&s.event)).collect();
        if mine.is_empty() {
            continue;
        }
        for s in mine {
            // A full queue waits here: backpressure all the way to the slot.
            if tx
                .send(Item::Event(Box::new(s.clone()), now))
                .await
                .is_err()
            {
                return;
            }
        }
        stats.enqueued_marker.fetch_max(end.0, Ordering::SeqCst);
        let _ = tx.send(Item::Commit(end)).await;
    }
}
