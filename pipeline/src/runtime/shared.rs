//! What the reader, the workers and whoever watches share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sinks::shopify::guard::GuardChannel;

use super::stats::{InboxStats, ReceiverStats, SinkStats};
use crate::state::DeadLetter;

/// Per published Odoo table, how many streamed transactions changed it: caches of Odoo
/// lookups compare it with the epoch their entry was filled in.
pub struct TableEpochs {
    tables: std::collections::HashMap<&'static str, AtomicU64>,
}

impl Default for TableEpochs {
    fn default() -> Self {
        Self {
            tables: cdc::slot::ODOO_TABLES
                .iter()
                .map(|t| (*t, AtomicU64::new(0)))
                .collect(),
        }
    }
}

impl TableEpochs {
    /// The stream carried a change to `table`.
    pub fn bump(&self, table: &str) {
        if let Some(e) = self.tables.get(table) {
            e.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// `table`'s epoch (0 for a table that is not published).
    pub fn get(&self, table: &str) -> u64 {
        self.tables
            .get(table)
            .map_or(0, |e| e.load(Ordering::SeqCst))
    }
}

/// Everything shared between the reader, the workers and whoever watches.
#[derive(Default)]
pub struct Shared {
    /// The oversell guard's feed from the webhook side.
    pub guard: Arc<GuardChannel>,
    /// The metrics registry `/metrics` renders.
    pub metrics: Arc<super::stats::Metrics>,
    /// Change epochs of the published tables (the write-back's caches follow them).
    pub epochs: Arc<TableEpochs>,
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
    pub writeback: Mutex<Option<(Arc<ReceiverStats>, Arc<InboxStats>)>>,
    /// The warehouse webhook receiver's counters, when it runs.
    pub wms_receiver: Mutex<Option<Arc<ReceiverStats>>>,
    /// The Shopify fulfillment sink's counters, when it runs.
    pub fulfillments: Mutex<Option<Arc<crate::runtime::stats::FulfillmentStats>>>,
    /// Scheduled reconciliation's results.
    pub reconcile: crate::ops::reconcile::Scheduled,
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
