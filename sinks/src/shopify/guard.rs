//! The oversell guard around the Shopify inventory sink.
//!
//! Shopify takes a storefront order's units out of `available` the moment it sells them; Odoo
//! reserves them only once the order's webhook has been written back, and the stream shows that
//! reservation later still. In between, writing Odoo's sellable quantity would give the sold
//! units back to Shopify (an oversell). So the webhook side tells the guard, through a
//! [`GuardChannel`], that an order was received ([`GuardNote::Received`]: its units are held
//! back from every level it touches) and later that Odoo has its effect
//! ([`GuardNote::Settled`], with a WAL fence). Once the stream has passed the fence, Odoo's
//! sellable quantity includes the reservation: the units stop being held and the levels are
//! written again.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cdc::backoff::Backoff;
use cdc::Lsn;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use transforms::{RetailEvent, Sourced};

use super::sink::{LevelKey, ShopifySink};
use crate::sink::{retry_all, Batching, Outcome, Settling, Sink, Turn};

/// What the webhook side tells the guard.
#[derive(Debug, Clone)]
pub enum GuardNote {
    /// A Shopify order's webhook was committed: Shopify sold these units (sku, Shopify
    /// location id, units); Odoo has not reserved them yet.
    Received {
        /// Shopify order id.
        order: String,
        /// (sku, location id, units).
        lines: Vec<(String, Option<String>, i64)>,
    },
    /// Reconciliation: units Shopify lost that no webhook explained within `older_than`
    /// (Shopify's retry window) stop being held back; what was cleared is reported through
    /// [`GuardChannel::take_expired`].
    Expire {
        /// Shopify's webhook retry window.
        older_than: Duration,
    },
    /// Odoo now has the order's effect (confirmed with its reservation, cancelled, or refused):
    /// once the stream passes `fence`, its units stop being held.
    Settled {
        /// Shopify order id.
        order: String,
        /// `pg_current_wal_lsn()` after Odoo's write.
        fence: Lsn,
    },
}

/// The guard's feed: the webhook side sends, the guard receives.
pub struct GuardChannel {
    tx: mpsc::UnboundedSender<GuardNote>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<GuardNote>>>,
    active: AtomicBool,
    /// Notes sent and not yet taken into the guard (and published).
    in_flight: AtomicU64,
    /// Unexplained units cleared by [`GuardNote::Expire`], not yet reported.
    expired: Mutex<Vec<Expired>>,
}

/// Units the guard stopped holding back because no webhook explained them in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// SKU (or the inventory item id, when the SKU is no longer known).
    pub sku: String,
    /// Odoo warehouse (or the Shopify location id).
    pub warehouse: String,
    /// Units given back to the level.
    pub units: i64,
    /// How long ago the oldest of them was noticed.
    pub age: Duration,
}

impl Default for GuardChannel {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            active: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            expired: Mutex::new(Vec::new()),
        }
    }
}

impl GuardChannel {
    /// Tells the guard (a no-op while no guard listens).
    pub fn send(&self, note: GuardNote) {
        if self.active.load(Ordering::SeqCst) {
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            if self.tx.send(note).is_err() {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Notes sent that the guard has not taken in yet.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Whether a guard listens (a Shopify sink runs in this process).
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    /// What [`GuardNote::Expire`] cleared since the last call.
    pub fn take_expired(&self) -> Vec<Expired> {
        self.expired
            .lock()
            .map(|mut g| std::mem::take(&mut *g))
            .unwrap_or_default()
    }

    fn taken(&self, n: u64) {
        self.in_flight.fetch_sub(n, Ordering::SeqCst);
    }

    fn take(&self) -> Option<mpsc::UnboundedReceiver<GuardNote>> {
        let rx = self.rx.lock().ok()?.take();
        if rx.is_some() {
            self.active.store(true, Ordering::SeqCst);
        }
        rx
    }
}

/// Notes to resume with at start (orders received by an earlier run and not settled yet).
pub type Resume = Box<dyn FnOnce() -> BoxFuture<'static, Vec<GuardNote>> + Send>;

/// An order whose units the guard holds back.
struct Held {
    levels: Vec<(String, LevelKey, i64)>,
    /// Lines not held yet (Shopify could not be asked for the item): tried again.
    unresolved: Vec<(String, Option<String>, i64)>,
    fence: Option<Lsn>,
}

/// The Shopify inventory sink with its oversell guard: the [`Sink`] the runtime runs.
pub struct GuardedShopify {
    sink: ShopifySink,
    channel: Arc<GuardChannel>,
    resume: Option<Resume>,
    rx: Option<mpsc::UnboundedReceiver<GuardNote>>,
    /// A note received while waiting for a turn.
    note: Option<GuardNote>,
    /// Notes taken in since the runtime last published what the guard holds.
    untaken: u64,
    held: HashMap<String, Held>,
    /// Orders recently released (a late repeat of their Received note is ignored).
    released: VecDeque<String>,
    /// When the sink last wrote (the write interval counts from it).
    last_delivery: Option<Instant>,
    /// After a failed write of released levels: not again before this (backing off).
    recheck_not_before: Option<Instant>,
    recheck_backoff: Backoff,
}

impl GuardedShopify {
    /// The sink, fed by `channel`; `resume` gives the notes of orders an earlier run received
    /// and did not settle.
    pub fn new(sink: ShopifySink, channel: Arc<GuardChannel>, resume: Option<Resume>) -> Self {
        Self {
            sink,
            channel,
            resume,
            rx: None,
            note: None,
            untaken: 0,
            held: HashMap::new(),
            released: VecDeque::new(),
            last_delivery: None,
            recheck_not_before: None,
            recheck_backoff: Backoff::default(),
        }
    }

    /// Applies a note.
    async fn apply(&mut self, note: GuardNote) {
        match note {
            GuardNote::Received { order, lines } => {
                if self.held.contains_key(&order) || self.released.contains(&order) {
                    return;
                }
                let mut held = Held {
                    levels: Vec::new(),
                    unresolved: lines,
                    fence: None,
                };
                hold(&mut self.sink, &order, &mut held).await;
                tracing::debug!(%order, levels = held.levels.len(), "holding back a Shopify order's units until Odoo reserves them");
                self.held.insert(order, held);
            }
            GuardNote::Expire { older_than } => {
                let cleared = self.sink.expire_unexplained(older_than);
                for (sku, warehouse, units, age) in &cleared {
                    tracing::warn!(%sku, %warehouse, units, age_secs = age.as_secs(), "oversell guard: Shopify lost units no webhook explained within the retry window; no longer held back");
                }
                if let Ok(mut g) = self.channel.expired.lock() {
                    g.extend(
                        cleared
                            .into_iter()
                            .map(|(sku, warehouse, units, age)| Expired {
                                sku,
                                warehouse,
                                units,
                                age,
                            }),
                    );
                }
            }
            GuardNote::Settled { order, fence } => {
                self.held
                    .entry(order)
                    .or_insert_with(|| Held {
                        levels: Vec::new(),
                        unresolved: Vec::new(),
                        fence: None,
                    })
                    .fence = Some(fence);
            }
        }
    }

    /// Releases orders whose fence the stream has passed and writes the levels they held
    /// again when that is due; whether it wrote.
    async fn release(&mut self, pos: Lsn) -> bool {
        for (order, held) in self.held.iter_mut() {
            if !held.unresolved.is_empty() {
                hold(&mut self.sink, order, held).await;
            }
        }
        if !self.release_through(pos) {
            return false;
        }
        if self.recheck_wait() == Some(Duration::ZERO) {
            self.write_rechecks().await;
            return true;
        }
        false
    }

    /// How long until levels waiting to be written again may go (the write interval counts
    /// from the last delivery); None when none wait.
    fn recheck_wait(&self) -> Option<Duration> {
        if !self.sink.has_recheck() {
            return None;
        }
        let interval = self.last_delivery.map_or(Duration::ZERO, |last| {
            self.sink.write_interval().saturating_sub(last.elapsed())
        });
        let backoff = self.recheck_not_before.map_or(Duration::ZERO, |t| {
            t.saturating_duration_since(Instant::now())
        });
        Some(interval.max(backoff))
    }

    /// Writes the levels whose hold changed.
    async fn write_rechecks(&mut self) {
        match self.sink.deliver(&[]).await {
            Ok(_) => {
                self.recheck_not_before = None;
                self.recheck_backoff.reset();
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot write released levels yet; they go with the next delivery");
                self.recheck_not_before = Some(Instant::now() + self.recheck_backoff.next_delay());
            }
        }
        self.last_delivery = Some(Instant::now());
    }

    /// Stops holding the orders whose fence is at or below `pos` (their levels are written
    /// again with the next delivery); whether any was released.
    fn release_through(&mut self, pos: Lsn) -> bool {
        let due: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.fence.is_some_and(|f| f <= pos))
            .map(|(o, _)| o.clone())
            .collect();
        for o in &due {
            if let Some(h) = self.held.remove(o) {
                for (sku, key, units) in &h.levels {
                    self.sink.reservation_visible(sku, key, *units);
                }
            }
            if self.released.len() >= 10_000 {
                self.released.pop_front();
            }
            self.released.push_back(o.clone());
        }
        !due.is_empty()
    }
}

/// Holds an order's unresolved lines back in the sink; lines Shopify cannot be asked about now
/// stay unresolved (tried again on the next turn).
async fn hold(sink: &mut ShopifySink, order: &str, held: &mut Held) {
    for (sku, location, units) in std::mem::take(&mut held.unresolved) {
        match sink.order_received(&sku, location.as_deref(), units).await {
            Ok(Some(key)) => held.levels.push((sku, key, units)),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%order, %sku, error = %e, "cannot hold back an order's units yet; trying again");
                held.unresolved.push((sku, location, units));
            }
        }
    }
}

impl Sink for GuardedShopify {
    fn name(&self) -> &'static str {
        "shopify"
    }

    fn wants(&self) -> crate::sink::Wants {
        std::sync::Arc::new(ShopifySink::wants)
    }

    fn batching(&self, _partitions: usize) -> Batching {
        Batching {
            // One call carries up to 250 quantities (and coalesces per level).
            slice: 1000,
            write_interval: self.sink.write_interval(),
        }
    }

    fn is_urgent(&self, event: &RetailEvent) -> bool {
        self.sink.is_urgent(event)
    }

    fn deliver<'a>(
        &'a mut self,
        batch: &'a [Sourced],
        _partitions: usize,
    ) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            // One call carries up to 250 keys already: parallel across keys by batching.
            let events: Vec<RetailEvent> = batch.iter().map(|s| s.event.clone()).collect();
            let result = self.sink.deliver(&events).await;
            self.last_delivery = Some(Instant::now());
            match result {
                Ok(report) => batch
                    .iter()
                    .map(
                        |s| match report.failed.iter().find(|(k, _)| *k == s.event.key()) {
                            Some((_, e)) => Outcome::Dead(e.message.clone()),
                            None => Outcome::Done,
                        },
                    )
                    .collect(),
                Err(e) => retry_all(batch.len(), e),
            }
        })
    }

    fn start(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Listen first: an order committed from now on is either sent or resumed.
            self.rx = self.channel.take();
            if let Some(resume) = self.resume.take() {
                for note in resume().await {
                    self.apply(note).await;
                }
            }
        })
    }

    fn wake(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.note.is_some() {
                return;
            }
            let recheck = self.recheck_wait();
            let waiting_fence = self
                .held
                .values()
                .any(|h| h.fence.is_some() || !h.unresolved.is_empty());
            let rx = &mut self.rx;
            tokio::select! {
                () = tokio::time::sleep(recheck.unwrap_or_default()), if recheck.is_some() => {}
                Some(note) = async { rx.as_mut()?.recv().await } => self.note = Some(note),
                () = tokio::time::sleep(Duration::from_millis(100)), if waiting_fence => {}
                else => std::future::pending::<()>().await,
            }
        })
    }

    fn turn(&mut self, seen: Lsn) -> BoxFuture<'_, Turn> {
        Box::pin(async move {
            if let Some(note) = self.note.take() {
                self.apply(note).await;
                self.untaken += 1;
            } else if self.recheck_wait() == Some(Duration::ZERO) {
                self.write_rechecks().await;
                return Turn::Wrote;
            }
            if self.release(seen).await {
                Turn::Wrote
            } else {
                Turn::Idle
            }
        })
    }

    fn before_delivery(&mut self, through: Lsn) {
        // Orders whose fence falls inside this batch stop being held before its targets are
        // computed: their reservation is in the batch's sellable quantities.
        self.release_through(through);
    }

    fn settling(&self) -> Settling {
        Settling {
            write_pending: self.recheck_wait().is_some(),
            fenced: self.held.values().filter(|h| h.fence.is_some()).count() as u64,
        }
    }

    fn published(&mut self) {
        // What the notes changed is visible now: they are no longer in flight.
        self.channel.taken(std::mem::take(&mut self.untaken));
    }
}
