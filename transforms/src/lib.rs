//! Pure stages that turn Odoo row changes, grouped by source transaction, into retail events.
//! Synchronous, no I/O, no clock: state comes in as rows (the initial snapshot, then the
//! stream), events go out per transaction, each tagged with its source commit.

pub mod accounting;
pub mod change;
pub mod events;
pub mod fulfillment;
pub mod inventory;
pub mod mapping;
pub mod shopify;

pub use change::{reads_column, Op, Row, RowChange, Transaction, COLUMNS_READ};
pub use events::{RetailEvent, Sourced};
pub use mapping::{Mapping, OdooVersion};

/// All stages together.
///
/// # Restarts
/// The stages' state lives in memory and is rebuilt on start from a snapshot of the tables
/// ([`Transformer::restore`]), read after the slot's confirmed position. The stream then replays
/// the transactions between the confirmed position and the snapshot, whose effects the snapshot
/// already holds: in that window inventory events are held back (the state passes through
/// older values) and one full resync goes out at its end, ready pickings are requested again
/// and posted moves booked again — both idempotent downstream (WMS reference, requestid).
#[derive(Debug)]
pub struct Transformer {
    /// Sellable quantities.
    pub inventory: inventory::Inventory,
    /// Pickings to fulfil.
    pub fulfillment: fulfillment::Fulfillment,
    /// Journal entries.
    pub accounting: accounting::Accounting,
    replay_until: Option<u64>,
}

impl Transformer {
    /// Stages for an Odoo version.
    pub fn new(version: OdooVersion) -> Self {
        Self {
            inventory: inventory::Inventory::default(),
            fulfillment: fulfillment::Fulfillment::default(),
            accounting: accounting::Accounting::new(Mapping::new(version)),
            replay_until: None,
        }
    }

    /// The initial synchronisation from a snapshot: every sellable quantity and every ready
    /// picking; posted moves are history the books already hold and are not booked.
    /// `replay_until`: when the snapshot was taken after the slot's position (an initial sync
    /// redone after a crash), transactions before it are treated as a replay.
    pub fn initial(&mut self, snapshot: &Transaction, replay_until: Option<u64>) -> Vec<Sourced> {
        for c in &snapshot.changes {
            self.apply_snapshot_row(c);
        }
        self.finish_initial(snapshot.commit_lsn, replay_until)
    }

    /// Rebuilds the state from a snapshot taken at `snapshot_lsn` (after the slot's confirmed
    /// position), without emitting anything; transactions committed before `snapshot_lsn` are
    /// then treated as a replay.
    pub fn restore(&mut self, snapshot: &Transaction, snapshot_lsn: u64) {
        for c in &snapshot.changes {
            self.apply_snapshot_row(c);
        }
        self.finish_restore(snapshot_lsn);
    }

    /// Takes one row of a snapshot into the state as it is read (the snapshot is never held
    /// whole in memory); [`Self::finish_initial`] or [`Self::finish_restore`] ends it.
    pub fn apply_snapshot_row(&mut self, c: &RowChange) {
        self.inventory.apply(c);
        self.fulfillment.apply(c);
        self.accounting.apply(c);
    }

    /// Ends a snapshot read with [`Self::apply_snapshot_row`] as the initial synchronisation
    /// (see [`Self::initial`]); its events carry `commit_lsn`.
    pub fn finish_initial(&mut self, commit_lsn: u64, replay_until: Option<u64>) -> Vec<Sourced> {
        let mut events = self.inventory.finish();
        events.extend(self.fulfillment.finish());
        self.accounting.finish_quietly();
        self.replay_until = replay_until;
        events
            .into_iter()
            .map(|event| Sourced {
                event,
                source_commit_lsn: commit_lsn,
                committed_us: 0,
            })
            .collect()
    }

    /// Ends the snapshot of a slot recreated after it was lost (`odoo-cdc run --resync`):
    /// everything the gap may hold is sent again, idempotently: every level, every open
    /// delivery, and every posted move written since `since` (see [`accounting::Accounting::resync`]).
    pub fn finish_resync(&mut self, commit_lsn: u64, since: Option<&str>) -> Vec<Sourced> {
        let mut events = self.inventory.finish();
        events.extend(self.fulfillment.finish());
        self.accounting.finish_quietly();
        events.extend(self.accounting.resync(since));
        events
            .into_iter()
            .map(|event| Sourced {
                event,
                source_commit_lsn: commit_lsn,
                committed_us: 0,
            })
            .collect()
    }

    /// Ends a snapshot read with [`Self::apply_snapshot_row`] as a restore (see
    /// [`Self::restore`]).
    pub fn finish_restore(&mut self, snapshot_lsn: u64) {
        self.inventory.finish();
        self.fulfillment.finish_quietly();
        self.accounting.finish_quietly();
        self.replay_until = Some(snapshot_lsn);
    }

    /// Ends a replay window early (the stream has reached the snapshot position without a
    /// transaction after it): returns the full inventory resync.
    pub fn end_replay(&mut self, lsn: u64) -> Vec<Sourced> {
        match self.replay_until {
            Some(until) if lsn >= until => {
                self.replay_until = None;
                self.inventory
                    .all()
                    .into_iter()
                    .map(|event| Sourced {
                        event,
                        source_commit_lsn: lsn,
                        committed_us: 0,
                    })
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// Applies one committed transaction; returns its events, in stage order.
    pub fn apply(&mut self, txn: &Transaction) -> Vec<Sourced> {
        let replay = self
            .replay_until
            .is_some_and(|until| txn.commit_lsn < until);
        let mut out = if replay {
            Vec::new()
        } else {
            self.end_replay(txn.commit_lsn)
        };
        for c in &txn.changes {
            self.inventory.apply(c);
            self.fulfillment.apply(c);
            self.accounting.apply(c);
        }
        let inventory = self.inventory.finish();
        let mut events = if replay { Vec::new() } else { inventory };
        events.extend(self.fulfillment.finish());
        events.extend(self.accounting.finish(replay));
        out.extend(events.into_iter().map(|event| Sourced {
            event,
            source_commit_lsn: txn.commit_lsn,
            committed_us: txn.committed_us,
        }));
        out
    }
}

#[cfg(test)]
mod tests;
