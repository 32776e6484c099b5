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
use sinks::accounting::AccountingSink;
use sinks::shopify::ShopifySink;
use sinks::wms::WmsSink;
use sinks::SinkError;
use tokio::sync::mpsc;
use transforms::{RetailEvent, Sourced, Transaction, Transformer};

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
    /// Delivery latencies from commit to acknowledgement, in microseconds.
    pub latencies_us: Mutex<Vec<u64>>,
    /// Newest commit marker fully delivered.
    pub delivered_marker: AtomicU64,
    /// Newest commit marker enqueued.
    pub enqueued_marker: AtomicU64,
}

/// The three sinks, each optional.
pub struct Sinks {
    /// Shopify inventory.
    pub shopify: Option<ShopifySink>,
    /// The WMS.
    pub wms: Option<WmsSink>,
    /// Accounting.
    pub accounting: Option<AccountingSink>,
}

/// Everything shared between the reader, the workers and whoever watches.
#[derive(Default)]
pub struct Shared {
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
    /// Set to stop: the reader stops reading, waits for the sinks, confirms and returns.
    pub stopping: std::sync::atomic::AtomicBool,
    /// The state database, where dead letters are kept (in memory only when absent).
    pub state: Option<Arc<tokio_postgres::Client>>,
}

impl Shared {
    /// Whether every sink has delivered everything enqueued.
    pub fn quiet(&self) -> bool {
        self.stats
            .lock()
            .map(|v| {
                v.iter().all(|(_, s)| {
                    s.delivered_marker.load(Ordering::SeqCst)
                        >= s.enqueued_marker.load(Ordering::SeqCst)
                })
            })
            .unwrap_or(false)
    }
}

/// Waits before retrying a transient failure (`Retry-After` when the server gave one).
async fn wait_before_retry(stats: &SinkStats, e: &SinkError, backoff: &mut Backoff) {
    stats.retries.fetch_add(1, Ordering::Relaxed);
    let wait = e.retry_after.unwrap_or_else(|| backoff.next_delay());
    tracing::warn!(error = %e, ?wait, "delivery failed; retrying");
    tokio::time::sleep(wait).await;
}

/// Retries `$call` while it fails transiently; evaluates to its final result.
macro_rules! retrying {
    ($stats:expr, $call:expr) => {{
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        loop {
            match $call.await {
                Err(e) if e.is_transient() => wait_before_retry($stats, &e, &mut backoff).await,
                other => break other,
            }
        }
    }};
}

fn record(stats: &SinkStats, started: Instant) {
    stats.delivered.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut l) = stats.latencies_us.lock() {
        l.push(started.elapsed().as_micros() as u64);
    }
}

/// Dead-letters an event: kept in the state database before the commit marker behind it is
/// published, so the slot never moves past an event that is neither delivered nor parked.
async fn dead(shared: &Shared, stats: &SinkStats, sink: &'static str, s: &Sourced, reason: String) {
    stats.dead.fetch_add(1, Ordering::Relaxed);
    tracing::error!(sink, key = %s.event.key(), %reason, "dead-lettered");
    let d = DeadLetter {
        sink,
        key: s.event.key(),
        reason,
        source_lsn: Lsn(s.source_commit_lsn).to_string(),
        event: s.event.clone(),
    };
    if let Some(state) = &shared.state {
        let mut backoff = Backoff::default();
        while let Err(e) = crate::state::dead_letter(state, &d).await {
            tracing::warn!(error = %e, "cannot record a dead letter; retrying");
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
    if let Ok(mut v) = shared.dead_letters.lock() {
        v.push(d);
    }
}

/// Starts a worker per configured sink; returns the queue senders.
fn spawn_workers(
    sinks: Sinks,
    shared: &Arc<Shared>,
    capacity: usize,
) -> Vec<(&'static str, mpsc::Sender<Item>, Arc<SinkStats>)> {
    let mut out = Vec::new();
    if let Some(mut sink) = sinks.shopify {
        let (tx, mut rx) = mpsc::channel::<Item>(capacity);
        let stats = Arc::new(SinkStats::default());
        let (st, sh) = (stats.clone(), shared.clone());
        tokio::spawn(async move {
            // Coalesce whatever is queued: only the newest quantity per key is written.
            while let Some(first) = rx.recv().await {
                let mut items = vec![first];
                while let Ok(more) = rx.try_recv() {
                    items.push(more);
                    if items.len() >= 1000 {
                        break;
                    }
                }
                let events: Vec<(Sourced, Instant)> = items
                    .iter()
                    .filter_map(|i| match i {
                        Item::Event(s, t) => Some(((**s).clone(), *t)),
                        Item::Commit(_) => None,
                    })
                    .collect();
                if !events.is_empty() {
                    let batch: Vec<RetailEvent> =
                        events.iter().map(|(s, _)| s.event.clone()).collect();
                    match retrying!(&st, sink.deliver(&batch)) {
                        Ok(report) => {
                            for (s, t) in &events {
                                match report.failed.iter().find(|(k, _)| *k == s.event.key()) {
                                    Some((_, e)) => {
                                        dead(&sh, &st, "shopify", s, e.message.clone()).await
                                    }
                                    None => record(&st, *t),
                                }
                            }
                        }
                        Err(e) => {
                            for (s, _) in &events {
                                dead(&sh, &st, "shopify", s, e.message.clone()).await;
                            }
                        }
                    }
                }
                if let Some(Item::Commit(lsn)) =
                    items.iter().rev().find(|i| matches!(i, Item::Commit(_)))
                {
                    st.delivered_marker.fetch_max(lsn.0, Ordering::SeqCst);
                }
            }
        });
        out.push(("shopify", tx, stats));
    }
    if let Some(sink) = sinks.wms {
        let (tx, mut rx) = mpsc::channel::<Item>(capacity);
        let stats = Arc::new(SinkStats::default());
        let (st, sh) = (stats.clone(), shared.clone());
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                match item {
                    Item::Event(s, t) => match retrying!(&st, sink.deliver(&s.event)) {
                        Ok(_) => record(&st, t),
                        Err(e) => dead(&sh, &st, "wms", &s, e.message).await,
                    },
                    Item::Commit(lsn) => {
                        st.delivered_marker.fetch_max(lsn.0, Ordering::SeqCst);
                    }
                }
            }
        });
        out.push(("wms", tx, stats));
    }
    if let Some(mut sink) = sinks.accounting {
        let (tx, mut rx) = mpsc::channel::<Item>(capacity);
        let stats = Arc::new(SinkStats::default());
        let (st, sh) = (stats.clone(), shared.clone());
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                match item {
                    Item::Event(s, t) => {
                        let RetailEvent::JournalEntry(entry) = &s.event else {
                            continue;
                        };
                        match retrying!(&st, sink.deliver(entry)) {
                            Ok(()) => record(&st, t),
                            Err(e) => dead(&sh, &st, "accounting", &s, e.message).await,
                        }
                    }
                    Item::Commit(lsn) => {
                        st.delivered_marker.fetch_max(lsn.0, Ordering::SeqCst);
                    }
                }
            }
        });
        out.push(("accounting", tx, stats));
    }
    out
}

fn wants(sink: &str, e: &RetailEvent) -> bool {
    match sink {
        "shopify" => ShopifySink::wants(e),
        "wms" => WmsSink::wants(e),
        "accounting" => AccountingSink::wants(e),
        _ => false,
    }
}

/// What the runtime needs to start.
pub struct RunOptions {
    /// Source database.
    pub source: SourceConfig,
    /// Slot.
    pub slot: String,
    /// Publication.
    pub publication: String,
    /// The initial snapshot (already taken with the slot's creation) and its consistent point.
    pub snapshot: Option<(Transaction, Lsn)>,
    /// After a restart: a snapshot of the tables and its position, to rebuild the state.
    pub restore: Option<(Transaction, Lsn)>,
    /// The restore snapshot must also redo the initial synchronisation (the previous run died
    /// before its snapshot was delivered).
    pub restore_is_initial: bool,
    /// Recorded in the state database once the initial synchronisation is delivered.
    pub bootstrap_key: Option<String>,
    /// Capacity of each sink queue.
    pub queue_capacity: usize,
    /// Odoo version.
    pub odoo_version: transforms::OdooVersion,
}

/// Runs until `stop` resolves: reads the slot, transforms, delivers, confirms.
pub async fn run(
    opts: RunOptions,
    sinks: Sinks,
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
    let workers = spawn_workers(sinks, &shared, opts.queue_capacity.max(16));
    if let Ok(mut v) = shared.stats.lock() {
        v.extend(workers.iter().map(|(n, _, s)| (*n, s.clone())));
    }
    let mut transformer = Transformer::new(opts.odoo_version);
    let mut start = Lsn::ZERO;
    if let Some((snap, point)) = &opts.snapshot {
        let events = transformer.initial(snap, None);
        dispatch(&workers, events, *point).await;
        start = *point;
    }
    if let Some((snap, point)) = &opts.restore {
        if opts.restore_is_initial {
            let events = transformer.initial(snap, Some(point.0));
            dispatch(&workers, events, *point).await;
        } else {
            transformer.restore(snap, point.0);
        }
    }
    let mut bootstrap_key = opts.bootstrap_key.clone();
    let mut decoder = Decoder::default();
    let mut backoff = Backoff::default();
    let mut acked = start;
    loop {
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
            decoder.reset_session();
            let mut collector = TxnCollector::default();
            loop {
                let batch = stream.next_batch().await?;
                for (lsn, data) in batch.iter() {
                    decoder.process(lsn, data, &mut collector)?;
                }
                for (txn, end) in collector.done.drain(..) {
                    if end <= acked && acked > Lsn::ZERO {
                        continue;
                    }
                    let events = transformer.apply(&txn);
                    dispatch(&workers, events, end).await;
                    shared.read.store(end.0, Ordering::SeqCst);
                    shared.transactions.fetch_add(1, Ordering::Relaxed);
                }
                if !stream.in_transaction() {
                    // Caught up with the server past a restore snapshot: end the replay window.
                    let pos = stream.keepalive_end();
                    let resync = transformer.end_replay(pos.0);
                    if !resync.is_empty() {
                        dispatch(&workers, resync, pos).await;
                    }
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
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while !shared.quiet() && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                let confirm = checkpoint(&workers, Lsn(shared.read.load(Ordering::SeqCst)));
                if confirm > acked {
                    acked = confirm;
                    stream.ack(confirm);
                    shared.confirmed.store(confirm.0, Ordering::SeqCst);
                }
                if stopping || stream.is_ended() {
                    stream.close().await?;
                    return Ok::<(), ReplError>(());
                }
            }
        };
        match session.await {
            Err(e) if e.is_transient() && !shared.stopping.load(Ordering::SeqCst) => {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, ?d, "replication interrupted; reconnecting");
                tokio::time::sleep(d).await;
            }
            Err(e) => return Err(e),
            Ok(()) => return Ok(()),
        }
    }
}

/// The position that may be confirmed: never past an event some sink has not delivered.
fn checkpoint(workers: &[(&'static str, mpsc::Sender<Item>, Arc<SinkStats>)], read: Lsn) -> Lsn {
    let mut pos = read;
    for (_, _, s) in workers {
        let delivered = s.delivered_marker.load(Ordering::SeqCst);
        if delivered < s.enqueued_marker.load(Ordering::SeqCst) {
            pos = pos.min(Lsn(delivered));
        }
    }
    pos
}

async fn dispatch(
    workers: &[(&'static str, mpsc::Sender<Item>, Arc<SinkStats>)],
    events: Vec<Sourced>,
    end: Lsn,
) {
    let now = Instant::now();
    for (name, tx, stats) in workers {
        let mine: Vec<&Sourced> = events.iter().filter(|s| wants(name, &s.event)).collect();
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
