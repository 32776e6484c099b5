//! The seam's second implementation: a partitioned, durable log between one reader and sink
//! workers that may run in other processes (Fluvio in production, behind the `fluvio` feature;
//! [`super::memlog::MemoryLog`] in tests).
//!
//! - The reader ([`LogPublisher`]) writes each source transaction's events to one topic per
//!   sink, each event to the partition of the sink's ordering key, the last record of the
//!   transaction in each partition flagged; it resolves `publish` once the log acknowledged
//!   every record (the transaction boundary is the flush), so the slot is confirmed only for
//!   commits the log holds. Partitions a transaction did not touch get a [`LogRecord::Mark`]
//!   now and then, so a worker knows how far every partition it owns has come.
//! - A worker ([`LogSubscription`]) reads the partitions it owns, each from its consumer's
//!   committed offset, checks that offsets arrive without a hole (fluvio 0.50.1 can skip
//!   records when a fetch is cut at `max_bytes`: on a jump the stream is dropped and opened
//!   again at the first missing offset, or when the log's end is past what arrived), and
//!   commits (and flushes) a partition's offset only through records the sink has delivered
//!   or parked. What a restarted reader writes again (the slot's unconfirmed transactions)
//!   is delivered again, as a restarted single process does: every effect is idempotent.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdc::Lsn;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use transforms::Sourced;

use super::stats::SinkStats;
use super::transport::{Item, Publisher, Subscription};

/// A log operation that failed; every one is retried (the log is expected back).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct LogError(pub String);

/// What a log operation answers.
pub type LogResult<T> = Result<T, LogError>;

/// A record read: its offset and bytes.
pub type Read = (i64, Vec<u8>);

/// A partitioned, ordered, durable log: what the seam needs of Fluvio.
pub trait Log: Send + Sync + 'static {
    /// How many partitions `topic` has.
    fn partitions<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, LogResult<u32>>;

    /// Creates `topic` with `partitions` unless it exists; the partitions it has.
    fn ensure_topic<'a>(&'a self, topic: &'a str, partitions: u32)
        -> BoxFuture<'a, LogResult<u32>>;

    /// Appends each `(partition, record)` to `topic`, in order within a partition; resolves
    /// once the log has acknowledged every one of them.
    fn append<'a>(
        &'a self,
        topic: &'a str,
        records: Vec<(u32, Vec<u8>)>,
    ) -> BoxFuture<'a, LogResult<()>>;

    /// Reads one partition for the named consumer: from `from` when given, else from the
    /// consumer's committed offset + 1 (the beginning when it has none).
    fn open<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        consumer: &'a str,
        from: Option<i64>,
    ) -> BoxFuture<'a, LogResult<Box<dyn PartitionReader>>>;

    /// Stores `offset` as the consumer's committed offset in a partition (the last record
    /// processed) and flushes it: the position survives this process.
    fn commit_at<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        consumer: &'a str,
        offset: i64,
    ) -> BoxFuture<'a, LogResult<()>>;

    /// The consumer's committed offset in a partition (the last record processed).
    fn committed<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        consumer: &'a str,
    ) -> BoxFuture<'a, LogResult<Option<i64>>>;

    /// The offset the next record appended to a partition will get.
    fn end<'a>(&'a self, topic: &'a str, partition: u32) -> BoxFuture<'a, LogResult<i64>>;
}

/// One partition, read in offset order (Fluvio's consumer stream).
pub trait PartitionReader: Send {
    /// The next record and its offset; None when the stream ended (open it again).
    fn next(&mut self) -> BoxFuture<'_, Option<LogResult<Read>>>;
}

/// A record in a sink's topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogRecord {
    /// An event for the sink.
    Event {
        /// Commit LSN of the source transaction.
        lsn: u64,
        /// Position of the event in its transaction's events.
        seq: u32,
        /// The sink's key: it chose the partition (events of one key stay in order) and
        /// names the effect the sink keeps idempotent (a level's SKU and warehouse, a
        /// picking's WMS reference, a move's journal entry).
        key: String,
        /// Whether this is the transaction's last record in this partition.
        last: bool,
        /// The event.
        event: Box<Sourced>,
    },
    /// Every record of this partition from commits at or below `lsn` came before this one.
    Mark {
        /// A commit LSN the reader has published through.
        lsn: u64,
    },
}

impl LogRecord {
    /// The JSON form written to the log.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a record back; a clear error for anything else.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not an odoo-cdc log record: {e}"))
    }
}

/// The partition of an ordering key among `n`: FNV-1a, the same in every process and release.
pub fn partition_of(key: &str, n: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(n.max(1))) as u32
}

/// The topic of a sink's events.
pub fn topic_of(prefix: &str, sink: &str) -> String {
    format!("{prefix}-{}", sink.replace('_', "-"))
}

/// What [`Contiguity::check`] makes of the next offset read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The offset expected: take it.
    Take,
    /// An offset already read (a stream opened again overlaps): skip it.
    Again,
    /// Records were skipped: read again from `from`.
    Hole {
        /// The first offset missing.
        from: i64,
    },
}

/// Offsets in a partition are contiguous: anything else is a record lost by the client.
#[derive(Debug, Clone, Copy)]
pub struct Contiguity {
    expected: Option<i64>,
}

impl Contiguity {
    /// Expecting `from` next, or whatever comes first when the start is not known.
    pub fn new(from: Option<i64>) -> Self {
        Self { expected: from }
    }

    /// Checks the offset of the record just read.
    pub fn check(&mut self, offset: i64) -> Next {
        match self.expected {
            Some(e) if offset > e => Next::Hole { from: e },
            Some(e) if offset < e => Next::Again,
            _ => {
                self.expected = Some(offset + 1);
                Next::Take
            }
        }
    }

    /// The offset expected next.
    pub fn expected(&self) -> Option<i64> {
        self.expected
    }
}

/// A sink's topic as the reader writes it.
pub struct Route {
    /// The sink (built, never started: its `wants` and `key` choose topic and partition).
    pub sink: Box<dyn sinks::Sink>,
    /// Its topic.
    pub topic: String,
    /// The topic's partitions.
    pub partitions: u32,
    /// The last position written to each partition (record or mark).
    marked: Vec<u64>,
}

impl Route {
    /// A route for `sink` to a topic of `partitions`.
    pub fn new(sink: Box<dyn sinks::Sink>, topic: String, partitions: u32) -> Self {
        Self {
            sink,
            topic,
            partitions: partitions.max(1),
            marked: vec![0; partitions.max(1) as usize],
        }
    }
}

/// Marks go to idle partitions at most this often.
const MARK_EVERY: Duration = Duration::from_millis(200);

/// The reader's half over a log.
pub struct LogPublisher {
    log: Arc<dyn Log>,
    routes: Vec<Route>,
    /// The newest commit whose records the log acknowledged.
    acked: Lsn,
    /// When marks last went to idle partitions.
    last_marks: Instant,
    /// Where a log that refuses records is said (readiness turns red).
    shared: Option<Arc<super::Shared>>,
}

impl LogPublisher {
    /// Writes to `routes` on `log`.
    pub fn new(log: Arc<dyn Log>, routes: Vec<Route>) -> Self {
        Self {
            log,
            routes,
            acked: Lsn::ZERO,
            last_marks: Instant::now(),
            shared: None,
        }
    }

    /// Says on `shared`'s replication check while the log refuses records (`/readyz` red).
    pub fn reporting(mut self, shared: Arc<super::Shared>) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Appends to one topic until the log has it: a log that is down holds the reader (and
    /// the slot), it never drops a record.
    async fn append_all(
        log: &dyn Log,
        shared: Option<&super::Shared>,
        topic: &str,
        records: Vec<(u32, Vec<u8>)>,
    ) {
        let mut backoff = cdc::backoff::Backoff::default();
        let mut failed = false;
        loop {
            match log.append(topic, records.clone()).await {
                Ok(()) => {
                    if let (true, Some(shared)) = (failed, shared) {
                        shared.set_replication(None);
                    }
                    return;
                }
                Err(e) => {
                    failed = true;
                    if let Some(shared) = shared {
                        shared.set_replication(Some(format!(
                            "waiting for the log to take {topic}'s records: {e}"
                        )));
                    }
                    let d = backoff.next_delay();
                    tracing::warn!(%topic, error = %e, ?d, "the log did not take the records; writing them again");
                    tokio::time::sleep(d).await;
                }
            }
        }
    }

    async fn write(&mut self, events: Vec<Sourced>, end: Lsn) {
        let marks_due = self.last_marks.elapsed() >= MARK_EVERY;
        for route in &mut self.routes {
            let wants = route.sink.wants();
            let mut by_partition: BTreeMap<u32, Vec<LogRecord>> = BTreeMap::new();
            for (seq, s) in events.iter().enumerate() {
                if !wants(&s.event) {
                    continue;
                }
                let key = route.sink.key(&s.event);
                let p = partition_of(&key, route.partitions);
                by_partition.entry(p).or_default().push(LogRecord::Event {
                    lsn: end.0,
                    seq: u32::try_from(seq).unwrap_or(u32::MAX),
                    key,
                    last: false,
                    event: Box::new(s.clone()),
                });
            }
            let mut records = Vec::new();
            for p in 0..route.partitions {
                match by_partition.remove(&p) {
                    Some(mut recs) => {
                        if let Some(LogRecord::Event { last, .. }) = recs.last_mut() {
                            *last = true;
                        }
                        records.extend(recs.into_iter().map(|r| (p, r.encode())));
                        route.marked[p as usize] = end.0;
                    }
                    None if marks_due && route.marked[p as usize] < end.0 => {
                        records.push((p, LogRecord::Mark { lsn: end.0 }.encode()));
                        route.marked[p as usize] = end.0;
                    }
                    None => {}
                }
            }
            if records.is_empty() {
                continue;
            }
            Self::append_all(&*self.log, self.shared.as_deref(), &route.topic, records).await;
        }
        if marks_due {
            self.last_marks = Instant::now();
        }
        self.acked = self.acked.max(end);
    }
}

impl Publisher for LogPublisher {
    fn publish<'a>(&'a mut self, events: Vec<Sourced>, end: Lsn) -> BoxFuture<'a, ()> {
        Box::pin(self.write(events, end))
    }

    fn durable(&self, read: Lsn) -> Lsn {
        read.min(self.acked)
    }

    fn idle<'a>(&'a mut self, through: Lsn) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if self.last_marks.elapsed() >= MARK_EVERY {
                self.write(Vec::new(), through).await;
            }
        })
    }
}

/// A record taken from a partition, on its way to the worker.
struct Taken {
    partition: u32,
    offset: i64,
    record: LogRecord,
}

/// One owned partition's state in the subscription.
struct Owned {
    /// Everything of this partition at or below this commit has been handed over.
    through: u64,
    /// (offset, commit LSN) of records handed to the worker and not yet committed.
    uncommitted: VecDeque<(i64, u64)>,
    /// Ask the partition's task to commit through this offset.
    commit: watch::Sender<i64>,
}

/// A worker's half over a log: the partitions it owns of its sink's topic.
pub struct LogSubscription {
    rx: mpsc::Receiver<Taken>,
    owned: BTreeMap<u32, Owned>,
    /// Items ready for the worker (an event, then the commit it completes).
    ready: VecDeque<Item>,
    /// The commit position last handed over (the smallest among the owned partitions).
    passed: u64,
    stats: Arc<SinkStats>,
    progress: Arc<tokio::sync::Notify>,
    /// Records taken, holes mended (a stream opened again), records dropped as seen before.
    pub counters: Arc<Counters>,
}

/// What a subscription has seen, for metrics and tests.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records taken.
    pub records: std::sync::atomic::AtomicU64,
    /// Holes in the offsets, each mended by reading again from the first missing one.
    pub holes: std::sync::atomic::AtomicU64,
    /// Events from commits already passed (written again by a reader that restarted),
    /// delivered again.
    pub again: std::sync::atomic::AtomicU64,
    /// Offsets committed and flushed.
    pub commits: std::sync::atomic::AtomicU64,
}

/// A subscription's settings.
pub struct Subscribe {
    /// The sink's topic.
    pub topic: String,
    /// The consumer's name (one per sink and deployment: the offsets are stored under it).
    pub consumer: String,
    /// The partitions this worker owns.
    pub partitions: Vec<u32>,
    /// Records read ahead per partition.
    pub read_ahead: usize,
}

impl LogSubscription {
    /// Starts reading `sub.partitions` of `sub.topic` on `log`, each from the consumer's
    /// committed offset.
    pub async fn start(
        log: Arc<dyn Log>,
        sub: Subscribe,
        stats: Arc<SinkStats>,
        progress: Arc<tokio::sync::Notify>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(sub.read_ahead.max(1) * sub.partitions.len().max(1));
        let counters = Arc::new(Counters::default());
        let mut owned = BTreeMap::new();
        for p in &sub.partitions {
            let (commit, commit_rx) = watch::channel(-1);
            owned.insert(
                *p,
                Owned {
                    through: 0,
                    uncommitted: VecDeque::new(),
                    commit,
                },
            );
            tokio::spawn(read_partition(
                log.clone(),
                sub.topic.clone(),
                *p,
                sub.consumer.clone(),
                tx.clone(),
                commit_rx,
                counters.clone(),
            ));
        }
        Self {
            rx,
            owned,
            ready: VecDeque::new(),
            passed: 0,
            stats,
            progress,
            counters,
        }
    }

    /// Takes one record from a partition's task into the items for the worker.
    fn take(&mut self, t: Taken) {
        let Some(o) = self.owned.get_mut(&t.partition) else {
            return;
        };
        o.uncommitted.push_back((t.offset, 0));
        match t.record {
            LogRecord::Event {
                lsn, last, event, ..
            } => {
                if let Some(u) = o.uncommitted.back_mut() {
                    u.1 = lsn;
                }
                // A reader that restarted writes again what the slot had not confirmed, as
                // its transforms see it now (inventory as one resync at the end): delivered
                // again, like a restarted process delivers again, and idempotent downstream.
                if lsn <= o.through {
                    self.counters.again.fetch_add(1, Ordering::Relaxed);
                } else {
                    o.through = if last { lsn } else { lsn.saturating_sub(1) };
                }
                // Taken: owed by the sink until delivered (what `quiet` and the graceful stop
                // wait for).
                self.stats.enqueued_marker.fetch_max(lsn, Ordering::SeqCst);
                self.ready.push_back(Item::Event(event, Instant::now()));
            }
            LogRecord::Mark { lsn } => {
                if let Some(u) = o.uncommitted.back_mut() {
                    u.1 = lsn;
                }
                o.through = o.through.max(lsn);
            }
        }
        let low = self.owned.values().map(|o| o.through).min().unwrap_or(0);
        if low > self.passed {
            self.passed = low;
            self.ready.push_back(Item::Commit(Lsn(low)));
        }
    }
}

impl Subscription for LogSubscription {
    fn next(&mut self) -> BoxFuture<'_, Option<Item>> {
        Box::pin(async move {
            loop {
                if let Some(item) = self.ready.pop_front() {
                    return Some(item);
                }
                let t = self.rx.recv().await?;
                self.take(t);
            }
        })
    }

    fn try_next(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            let t = self.rx.try_recv().ok()?;
            self.take(t);
        }
    }

    fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.rx.is_empty()
    }

    fn delivered(&mut self, through: Lsn) {
        for o in self.owned.values_mut() {
            let mut upto = None;
            while let Some((offset, lsn)) = o.uncommitted.front().copied() {
                if lsn > through.0 {
                    break;
                }
                upto = Some(offset);
                o.uncommitted.pop_front();
            }
            if let Some(offset) = upto {
                let _ = o.commit.send(offset);
            }
        }
        self.stats
            .delivered_marker
            .fetch_max(through.0, Ordering::SeqCst);
        self.progress.notify_one();
    }
}

/// How long a partition may yield nothing before its end offset is compared with what arrived.
const QUIET_CHECK: Duration = Duration::from_secs(1);

/// Offsets are committed at most this often (and once more when the partition goes quiet). A
/// commit opens a stream of its own on Fluvio (see `commit_at`), so under load every partition
/// pays one a period: once a second keeps that cost small, and what a crash makes a worker
/// deliver again (idempotently) is at most a second's records.
const COMMIT_EVERY: Duration = Duration::from_secs(1);

/// Reads one partition into `tx` until the subscription is gone: opened from the consumer's
/// committed offset, opened again at the first missing offset after a hole or an error, and
/// its offset committed through what the worker has delivered.
async fn read_partition(
    log: Arc<dyn Log>,
    topic: String,
    partition: u32,
    consumer: String,
    tx: mpsc::Sender<Taken>,
    mut commit: watch::Receiver<i64>,
    counters: Arc<Counters>,
) {
    let mut backoff = cdc::backoff::Backoff::default();
    let mut order = Contiguity::new(None);
    let mut committed: i64 = -1;
    let mut last_commit = Instant::now();
    'open: loop {
        if tx.is_closed() {
            return;
        }
        if order.expected().is_none() {
            // Where the consumer's committed position puts us.
            match log.committed(&topic, partition, &consumer).await {
                Ok(c) => {
                    committed = c.unwrap_or(-1);
                    order = Contiguity::new(Some(committed + 1));
                }
                Err(e) => {
                    let d = backoff.next_delay();
                    tracing::warn!(%topic, partition, error = %e, ?d, "cannot read the committed offset; asking again");
                    tokio::time::sleep(d).await;
                    continue;
                }
            }
        }
        let mut reader = match log
            .open(&topic, partition, &consumer, order.expected())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let d = backoff.next_delay();
                tracing::warn!(%topic, partition, error = %e, ?d, "cannot read the partition; opening it again");
                tokio::time::sleep(d).await;
                continue;
            }
        };
        loop {
            let want = *commit.borrow_and_update();
            if want > committed && last_commit.elapsed() >= COMMIT_EVERY {
                match log.commit_at(&topic, partition, &consumer, want).await {
                    Ok(()) => {
                        committed = want;
                        counters.commits.fetch_add(1, Ordering::Relaxed);
                    }
                    // Delivered anyway: a later commit covers it (or the next start delivers
                    // it again, idempotently).
                    Err(e) => {
                        tracing::warn!(%topic, partition, error = %e, "cannot commit the offset yet")
                    }
                }
                last_commit = Instant::now();
            }
            // A commit asked for and not yet due wakes the loop when it is.
            let commit_wait = if want > committed {
                COMMIT_EVERY.saturating_sub(last_commit.elapsed())
            } else {
                QUIET_CHECK * 3600
            };
            let next = tokio::select! {
                n = reader.next() => n,
                changed = commit.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
                () = tokio::time::sleep(commit_wait) => continue,
                () = tokio::time::sleep(QUIET_CHECK) => {
                    // Nothing for a while: a record skipped at the end of a backlog shows only
                    // as the log's end being past what arrived.
                    match (log.end(&topic, partition).await, order.expected()) {
                        (Ok(end), Some(expected)) if end > expected => {
                            counters.holes.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(%topic, partition, expected, end, "the log holds records the stream did not yield; reading again from the first missing one");
                            continue 'open;
                        }
                        _ => continue,
                    }
                }
            };
            let (offset, bytes) = match next {
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    let d = backoff.next_delay();
                    tracing::warn!(%topic, partition, error = %e, ?d, "reading the partition failed; opening it again");
                    tokio::time::sleep(d).await;
                    continue 'open;
                }
                None => {
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue 'open;
                }
            };
            backoff = cdc::backoff::Backoff::default();
            match order.check(offset) {
                Next::Again => continue,
                Next::Hole { from } => {
                    counters.holes.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%topic, partition, expected = from, got = offset, "records skipped by the log client; reading again from the first missing one");
                    continue 'open;
                }
                Next::Take => {}
            }
            let record = match LogRecord::decode(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    // Not ours: nothing a worker can deliver. Said, and passed.
                    tracing::error!(%topic, partition, offset, error = %e, "skipping a record odoo-cdc did not write");
                    LogRecord::Mark { lsn: 0 }
                }
            };
            counters.records.fetch_add(1, Ordering::Relaxed);
            if tx
                .send(Taken {
                    partition,
                    offset,
                    record,
                })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::memlog::{LogFaults, MemoryLog};
    use transforms::RetailEvent;

    fn level(sku: &str, qty: i64, lsn: u64) -> Sourced {
        Sourced {
            event: RetailEvent::SellableChanged {
                sku: sku.into(),
                warehouse: "WH".into(),
                qty: rust_decimal::Decimal::from(qty),
            },
            source_commit_lsn: lsn,
            committed_us: 0,
        }
    }

    #[test]
    fn offsets_must_be_contiguous_and_a_jump_is_a_hole_to_read_again() {
        let mut c = Contiguity::new(Some(10));
        assert_eq!(c.check(10), Next::Take);
        assert_eq!(c.check(11), Next::Take);
        assert_eq!(c.check(13), Next::Hole { from: 12 });
        // Read again from 12: the overlap is skipped, the rest taken.
        assert_eq!(c.check(11), Next::Again);
        assert_eq!(c.check(12), Next::Take);
        assert_eq!(c.expected(), Some(13));
        let mut any = Contiguity::new(None);
        assert_eq!(any.check(7), Next::Take);
        assert_eq!(any.check(9), Next::Hole { from: 8 });
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        // The same key goes to the same partition in every process and release.
        assert_eq!(
            partition_of("SKU-00001@WH", 8),
            partition_of("SKU-00001@WH", 8)
        );
        assert_eq!(partition_of("", 8), (0xcbf2_9ce4_8422_2325_u64 % 8) as u32);
        let mut used = std::collections::BTreeSet::new();
        for i in 0..200 {
            let p = partition_of(&format!("SKU-{i:05}@WH"), 8);
            assert!(p < 8);
            used.insert(p);
        }
        assert_eq!(used.len(), 8);
        assert_eq!(partition_of("x", 0), 0);
    }

    #[test]
    fn records_round_trip_and_foreign_bytes_are_refused_clearly() {
        let r = LogRecord::Event {
            lsn: 42,
            seq: 3,
            key: "SKU@WH".into(),
            last: true,
            event: Box::new(level("SKU", 5, 42)),
        };
        assert_eq!(LogRecord::decode(&r.encode()).unwrap(), r);
        let m = LogRecord::Mark { lsn: 7 };
        assert_eq!(LogRecord::decode(&m.encode()).unwrap(), m);
        let e = LogRecord::decode(b"hello").unwrap_err();
        assert!(e.contains("not an odoo-cdc log record"), "{e}");
    }

    /// A sink that routes every level, keyed by SKU (what the reader's routes need of a sink).
    struct Levels;

    impl sinks::Sink for Levels {
        fn name(&self) -> &'static str {
            "levels"
        }
        fn wants(&self) -> sinks::Wants {
            Arc::new(|e| matches!(e, RetailEvent::SellableChanged { .. }))
        }
        fn key(&self, e: &RetailEvent) -> String {
            match e {
                RetailEvent::SellableChanged { sku, .. } => sku.clone(),
                _ => String::new(),
            }
        }
        fn batching(&self, partitions: usize) -> sinks::Batching {
            sinks::Batching::at_once(partitions)
        }
        fn deliver<'a>(
            &'a mut self,
            events: &'a [Sourced],
            _partitions: usize,
        ) -> BoxFuture<'a, Vec<sinks::Outcome>> {
            Box::pin(async move { events.iter().map(|_| sinks::Outcome::Done).collect() })
        }
    }

    /// A log that refuses records holds the reader (nothing is dropped, nothing confirmed) and
    /// says so on the replication check until it takes them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_that_refuses_records_holds_the_reader_and_turns_readiness_red() {
        let log = MemoryLog::new();
        log.create_topic("t-levels", 2);
        let shared = Arc::new(crate::runtime::Shared::default());
        let mut publisher = LogPublisher::new(
            Arc::new(log.clone()),
            vec![Route::new(Box::new(Levels), "t-levels".into(), 2)],
        )
        .reporting(shared.clone());
        log.set_down(true);
        let mut publishing =
            Box::pin(publisher.write(vec![level("A", 1, 10), level("B", 2, 10)], Lsn(10)));
        assert!(
            tokio::time::timeout(Duration::from_millis(400), &mut publishing)
                .await
                .is_err()
        );
        let said = shared.replication.lock().unwrap().clone();
        assert!(
            matches!(&said, Some(Err(e)) if e.contains("waiting for the log")),
            "{said:?}"
        );
        log.set_down(false);
        tokio::time::timeout(Duration::from_secs(10), publishing)
            .await
            .expect("written once the log answers");
        assert_eq!(publisher.durable(Lsn(10)), Lsn(10));
        assert!(matches!(*shared.replication.lock().unwrap(), Some(Ok(()))));
        let written: usize = (0..2).map(|p| log.records("t-levels", p).len()).sum();
        assert_eq!(written, 2);
    }

    /// A backlog of more than 10 MB in one partition, read by a client that loses a record
    /// every time a 1 MiB fetch fills (fluvio 0.50.1): every event arrives, in order, once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backlog_of_more_than_10_mb_arrives_whole_through_lost_records() {
        let log = MemoryLog::new();
        log.create_topic("t", 1);
        let pad = "x".repeat(1000);
        let mut bytes = 0;
        let mut n = 0u64;
        while bytes < 11 * 1024 * 1024 {
            n += 1;
            let r = LogRecord::Event {
                lsn: n,
                seq: 0,
                key: pad.clone(),
                last: true,
                event: Box::new(level("SKU", n as i64, n)),
            }
            .encode();
            bytes += r.len();
            log.append("t", vec![(0, r)]).await.unwrap();
        }
        log.set_faults(LogFaults {
            skip_at_max_bytes: Some(1024 * 1024),
            ..LogFaults::default()
        });
        let stats = Arc::new(SinkStats::new(
            &super::super::stats::Metrics::default(),
            "t",
        ));
        let mut sub = LogSubscription::start(
            Arc::new(log.clone()),
            Subscribe {
                topic: "t".into(),
                consumer: "c".into(),
                partitions: vec![0],
                read_ahead: 256,
            },
            stats.clone(),
            Arc::new(tokio::sync::Notify::new()),
        )
        .await;
        let mut got = Vec::new();
        while (got.len() as u64) < n {
            let item = tokio::time::timeout(Duration::from_secs(20), sub.next())
                .await
                .expect("the backlog keeps coming")
                .expect("the subscription lives");
            match item {
                Item::Event(s, _) => got.push(s.source_commit_lsn),
                // As a worker does once its sink has delivered what came before.
                Item::Commit(lsn) => sub.delivered(lsn),
            }
        }
        assert!(
            log.skipped.load(Ordering::SeqCst) >= 10,
            "the client lost records"
        );
        assert!(sub.counters.holes.load(Ordering::SeqCst) >= 10);
        assert_eq!(got, (1..=n).collect::<Vec<_>>());
        // Taken and not yet delivered: owed (a worker is not quiet).
        assert_eq!(stats.enqueued_marker.load(Ordering::SeqCst), n);
        assert!(stats.delivered_marker.load(Ordering::SeqCst) < n);
        // Delivered through the last commit: the consumer's offset is the last record's.
        sub.delivered(Lsn(n));
        assert_eq!(stats.delivered_marker.load(Ordering::SeqCst), n);
        let committed = || {
            let log = log.clone();
            async move { log.committed("t", 0, "c").await.unwrap() }
        };
        for _ in 0..100 {
            if committed().await == Some(n as i64 - 1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(committed().await, Some(n as i64 - 1));
    }
}
