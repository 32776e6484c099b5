//! The seam between reading and delivering.
//!
//! The reader turns the slot into keyed, sourced events and hands each source transaction's
//! events to a [`Publisher`]; it confirms to the slot only what the publisher calls
//! [durable](Publisher::durable). Each worker takes its sink's events, in source order, from a
//! [`Subscription`] and reports there what its sink has delivered (or dead-lettered, or
//! parked). The in-process [`Channel`] is one implementation: bounded queues, durable once
//! every worker has delivered. A transport that persists events (a log such as Fluvio) is
//! another: its `durable` is what the log has acknowledged, and its subscriptions commit
//! their offsets in `delivered`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use cdc::Lsn;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, Notify};
use transforms::Sourced;

use super::stats::SinkStats;

/// A message on a sink queue.
pub enum Item {
    /// An event, and when the reader read it.
    Event(Box<Sourced>, Instant),
    /// The end of a source transaction: everything before it belongs to commits at or below.
    Commit(Lsn),
}

/// The reader's half of the seam.
pub trait Publisher: Send {
    /// Hands one source transaction's events (or a snapshot's), ending with the commit at
    /// `end`, to the workers' side; resolves once the transport has them. A full transport
    /// waits here: backpressure all the way to the slot.
    fn publish<'a>(&'a mut self, events: Vec<Sourced>, end: Lsn) -> BoxFuture<'a, ()>;

    /// The position the slot may be confirmed to, the reader having read through `read`:
    /// nothing at or below it exists only in memory any more.
    fn durable(&self, read: Lsn) -> Lsn;

    /// The reader has read everything through `through` and no transaction is open: a
    /// transport whose workers cannot see the reader's position (a log) tells them here.
    fn idle<'a>(&'a mut self, _through: Lsn) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// A worker's half of the seam: its sink's events in source order.
pub trait Subscription: Send {
    /// The next item; None when the reader is gone.
    fn next(&mut self) -> BoxFuture<'_, Option<Item>>;

    /// The next item if one is waiting.
    fn try_next(&mut self) -> Option<Item>;

    /// Whether nothing is waiting.
    fn is_empty(&self) -> bool;

    /// Everything up to and including the commit at `through` is delivered, dead-lettered
    /// or parked.
    fn delivered(&mut self, through: Lsn);
}

/// A worker's queue, as the reader sees it.
struct Route {
    wants: sinks::Wants,
    tx: mpsc::Sender<Item>,
    stats: Arc<SinkStats>,
}

/// The in-process transport: one bounded queue per sink.
pub struct Channel {
    routes: Vec<Route>,
}

/// A worker's queue in the in-process transport.
pub struct Queue {
    rx: mpsc::Receiver<Item>,
    stats: Arc<SinkStats>,
    progress: Arc<Notify>,
}

impl Channel {
    /// No queues yet.
    pub fn new() -> Self {
        Self { routes: Vec::new() }
    }

    /// Adds a queue of `capacity` for a sink that takes what `wants` accepts; `progress` is
    /// notified whenever the worker reports a delivered commit.
    pub fn queue(
        &mut self,
        wants: sinks::Wants,
        capacity: usize,
        stats: Arc<SinkStats>,
        progress: Arc<Notify>,
    ) -> Queue {
        let (tx, rx) = mpsc::channel::<Item>(capacity);
        self.routes.push(Route {
            wants,
            tx,
            stats: stats.clone(),
        });
        Queue {
            rx,
            stats,
            progress,
        }
    }
}

impl Default for Channel {
    fn default() -> Self {
        Self::new()
    }
}

impl Publisher for Channel {
    fn publish<'a>(&'a mut self, events: Vec<Sourced>, end: Lsn) -> BoxFuture<'a, ()> {
        Box::pin(dispatch(&self.routes, events, end))
    }

    fn durable(&self, read: Lsn) -> Lsn {
        checkpoint(&self.routes, read)
    }
}

impl Subscription for Queue {
    fn next(&mut self) -> BoxFuture<'_, Option<Item>> {
        Box::pin(self.rx.recv())
    }

    fn try_next(&mut self) -> Option<Item> {
        self.rx.try_recv().ok()
    }

    fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    fn delivered(&mut self, through: Lsn) {
        self.stats
            .delivered_marker
            .fetch_max(through.0, Ordering::SeqCst);
        self.progress.notify_one();
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
