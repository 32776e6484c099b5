//! The reader: the slot through the transforms into the seam, and the checkpoint.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdc::backoff::Backoff;
use cdc::conn::{quote_ident, ReplicationConnection};
use cdc::decoder::Decoder;
use cdc::stream::ReplicationStream;
use cdc::{Lsn, ReplError, SourceConfig};
use sinks::Sink;
use transforms::{RetailEvent, Transformer};

use super::capture::TxnCollector;
use super::shared::Shared;
use super::stats::unix_us;
use super::transport::Publisher;

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

/// What the runtime needs to start.
pub struct RunOptions {
    /// Source database.
    pub source: SourceConfig,
    /// Slot.
    pub slot: String,
    /// Publication.
    pub publication: String,
    /// The initial snapshot (already taken with the slot's creation, at its consistent point).
    pub snapshot: Option<crate::runtime::capture::Loaded>,
    /// After a restart: a snapshot of the tables, to rebuild the state.
    pub restore: Option<crate::runtime::capture::Loaded>,
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

/// Runs until `stop` resolves: reads the slot, transforms, delivers (a worker per sink on the
/// in-process transport), confirms.
pub async fn run(
    opts: RunOptions,
    sinks: Vec<Box<dyn Sink>>,
    shared: Arc<Shared>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ReplError> {
    let channel = super::worker::spawn_workers(
        sinks,
        &shared,
        opts.queue_capacity.max(16),
        opts.max_hold,
        opts.partitions,
    );
    run_on(opts, Box::new(channel), shared, stop).await
}

/// The reader alone: reads the slot, transforms, publishes to `workers`, and confirms what
/// they call durable, until `stop` resolves.
pub async fn run_on(
    opts: RunOptions,
    mut workers: Box<dyn Publisher>,
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
    {
        // Histogram observations are buffered until folded in: every few seconds.
        let shared = shared.clone();
        tokio::spawn(async move {
            while !shared.stopping.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(5)).await;
                shared.metrics.upkeep();
            }
        });
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
        workers.publish(events, loaded.lsn).await;
        start = loaded.lsn;
    }
    if let Some(loaded) = opts.restore {
        transformer = loaded.transformer;
        if opts.restore_is_initial {
            let events = transformer.finish_initial(loaded.lsn.0, Some(loaded.lsn.0));
            workers.publish(events, loaded.lsn).await;
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
                    let mut last: Option<&str> = None;
                    for c in &txn.changes {
                        if last != Some(c.table.as_str()) {
                            shared.epochs.bump(&c.table);
                            last = Some(c.table.as_str());
                        }
                    }
                    let events = transformer.apply(&txn);
                    workers.publish(events, end).await;
                    shared.read.store(end.0, Ordering::SeqCst);
                    unconfirmed.push_back((end, committed_us(&txn).max(1) as u64));
                    shared.transactions.fetch_add(1, Ordering::Relaxed);
                }
                if !stream.in_transaction() {
                    // Caught up with the server past a restore snapshot: end the replay window.
                    let pos = stream.keepalive_end();
                    let resync = transformer.end_replay(pos.0);
                    if !resync.is_empty() {
                        workers.publish(resync, pos).await;
                    }
                    workers
                        .idle(pos.max(Lsn(shared.read.load(Ordering::SeqCst))))
                        .await;
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
                let confirm = workers.durable(read);
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
