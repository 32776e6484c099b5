//! The contract between the runtime and a sink.
//!
//! # Delivery contract
//! - **At-least-once in.** The runtime hands a sink every event it [wants](Sink::wants), in
//!   source order per [key](Sink::key), and hands an event again after a crash, a restart or a
//!   transient failure until the sink says it is done or dead. A sink never sees an event of a
//!   key before the earlier ones of that key are done or dead.
//! - **Idempotent effects out.** Because an event can arrive twice (once before a crash, once
//!   after), a sink makes each effect idempotent in the system it writes to: a reference the
//!   system deduplicates, a `requestid`, a compare-and-swap with an idempotency key. An effect is
//!   done when the sink has read it back or the system's answer proves it is there.
//! - **Outcomes.** [`Sink::deliver`] answers one [`Outcome`] per event, in the order given:
//!   `Done` (the effect is there), `Dead` (refused for good, with a reason a person can act on:
//!   the runtime records a dead letter and moves on), or `Retry` (not this time: the runtime
//!   backs off, honouring `Retry-After`, and after `max_hold` parks the events in the outbox so
//!   the slot moves on). After a `Retry` for an event, the later events of its key must be
//!   `Retry` too.
//! - **Batching.** The runtime cuts a sink's queue into deliveries of at most
//!   [`Batching::slice`] events. With a non-zero [`Batching::write_interval`] the first change
//!   waits up to that long (from its source commit) for later ones to share its delivery, unless
//!   one is [urgent](Sink::is_urgent).
//! - **Start-up.** [`Sink::start`] runs once, before the first delivery (a sink resumes what it
//!   owes from earlier runs there). Between deliveries a sink may ask for a turn of its own
//!   ([`Sink::wake`], [`Sink::turn`]): the Shopify oversell guard releases held units there.

use std::time::Duration;

use cdc::Lsn;
use futures_util::future::BoxFuture;
use transforms::{RetailEvent, Sourced};

use crate::SinkError;

/// A sink's filter of the events it takes.
pub type Wants = std::sync::Arc<dyn Fn(&RetailEvent) -> bool + Send + Sync>;

/// What became of one event in a delivery.
#[derive(Debug)]
pub enum Outcome {
    /// The effect is there.
    Done,
    /// Refused for good: dead-letter it with this reason.
    Dead(String),
    /// Not delivered this time (a transient failure on this event, with its error, or on an
    /// earlier one of its key, without): try again, in order.
    Retry(Option<SinkError>),
}

/// How a sink's queue is cut into deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Most events in one delivery: a few seconds of work, so a sink that falls behind is
    /// noticed between slices.
    pub slice: usize,
    /// How long a change may wait for later ones to share its delivery (zero: at once).
    pub write_interval: Duration,
}

impl Batching {
    /// Each event goes at once, a few per partition in one delivery (sinks whose calls are one
    /// event each: the WMS, Shopify's fulfillments).
    pub fn at_once(partitions: usize) -> Self {
        Batching {
            slice: partitions.max(1) * 4,
            write_interval: Duration::ZERO,
        }
    }
}

/// What a sink's own turn did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Nothing the runtime counts.
    Idle,
    /// It wrote to its system outside a delivery (counted as a `released` delivery).
    Wrote,
}

/// What a sink still owes outside its queue (watchers wait for both to be clear before they
/// call the system settled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settling {
    /// A write is due that no queued event will carry.
    pub write_pending: bool,
    /// Things held back until the stream passes a position (Shopify: orders whose units are
    /// held until Odoo's reservation is read).
    pub fenced: u64,
}

/// A destination of retail events. See the module documentation for the contract.
pub trait Sink: Send {
    /// The sink's name: in metrics, dead letters, the outbox and config (`shopify`, `wms`,
    /// `accounting`, ...). Unique within a process.
    fn name(&self) -> &'static str;

    /// Which events the sink takes at all. Asked once, when the runtime starts: the router
    /// (which may run apart from the sink) filters with it.
    fn wants(&self) -> Wants;

    /// The ordering key: events of one key are delivered in source order.
    fn key(&self, event: &RetailEvent) -> String {
        event.key()
    }

    /// How deliveries are cut, given the configured number of keys delivered at once.
    fn batching(&self, partitions: usize) -> Batching;

    /// Whether this event must go out without waiting for the write interval.
    fn is_urgent(&self, _event: &RetailEvent) -> bool {
        false
    }

    /// Delivers `batch`; one outcome per event, in the order given. `partitions` is how many
    /// keys may be in flight at once.
    fn deliver<'a>(
        &'a mut self,
        batch: &'a [Sourced],
        partitions: usize,
    ) -> BoxFuture<'a, Vec<Outcome>>;

    /// Runs once before the first delivery.
    fn start(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Resolves when the sink wants a turn of its own (never, by default). Must be cancel
    /// safe: the runtime drops it when an event arrives first.
    fn wake(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::pending())
    }

    /// The sink's own turn; `seen` is a position below which every event was delivered.
    fn turn(&mut self, _seen: Lsn) -> BoxFuture<'_, Turn> {
        Box::pin(async { Turn::Idle })
    }

    /// Called before a delivery of events that end with the commit at `through`.
    fn before_delivery(&mut self, _through: Lsn) {}

    /// What the sink still owes outside its queue.
    fn settling(&self) -> Settling {
        Settling::default()
    }

    /// Called once the runtime has published [`Sink::settling`] after a turn: what the turn
    /// took in is visible to watchers from here on.
    fn published(&mut self) {}
}

/// Delivers `events` ordered per key and concurrently across keys (at most `partitions` keys
/// at a time), one call of `send` per event. After a transient failure the rest of that key's
/// events are not attempted.
pub async fn per_key<'a, F, Fut>(
    events: &'a [Sourced],
    partitions: usize,
    key: impl Fn(&RetailEvent) -> String,
    send: F,
) -> Vec<Outcome>
where
    F: Fn(&'a Sourced) -> Fut,
    Fut: std::future::Future<Output = Result<(), SinkError>>,
{
    use futures_util::StreamExt;
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, s) in events.iter().enumerate() {
        let k = key(&s.event);
        match index.get(&k) {
            Some(&g) => groups[g].push(i),
            None => {
                index.insert(k, groups.len());
                groups.push(vec![i]);
            }
        }
    }
    let send = &send;
    let done: Vec<Vec<(usize, Outcome)>> = futures_util::stream::iter(groups)
        .map(|idxs| async move {
            let mut out = Vec::with_capacity(idxs.len());
            let mut blocked = false;
            for i in idxs {
                if blocked {
                    out.push((i, Outcome::Retry(None)));
                    continue;
                }
                let o = outcome(send(&events[i]).await);
                blocked = matches!(o, Outcome::Retry(_));
                out.push((i, o));
            }
            out
        })
        .buffer_unordered(partitions.max(1))
        .collect()
        .await;
    let mut slots: Vec<Option<Outcome>> = (0..events.len()).map(|_| None).collect();
    for (i, o) in done.into_iter().flatten() {
        slots[i] = Some(o);
    }
    slots
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::Retry(None)))
        .collect()
}

/// The outcome of one call: done, retry (transient) or dead (permanent).
pub fn outcome(result: Result<(), SinkError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Done,
        Err(e) if e.is_transient() => Outcome::Retry(Some(e)),
        Err(e) => Outcome::Dead(e.message),
    }
}

/// Every event of a failed call: the first carries the error, the rest wait behind it.
pub fn retry_all(n: usize, e: SinkError) -> Vec<Outcome> {
    let mut out: Vec<Outcome> = (0..n).map(|_| Outcome::Retry(None)).collect();
    if let Some(first) = out.first_mut() {
        *first = Outcome::Retry(Some(e));
    }
    out
}
