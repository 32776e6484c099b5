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

pub mod capture;
#[cfg(feature = "fluvio")]
pub mod fluvio_log;
pub mod histogram;
pub mod log;
pub mod memlog;
pub mod reader;
pub mod shared;
pub mod stats;
pub mod transport;
pub mod worker;

pub use reader::{run, run_on, RunOptions};
pub use shared::Shared;
pub use sinks::shopify::guard::{GuardChannel, GuardNote};
pub use sinks::sink::{Outcome, Sink};
pub use stats::{SinkStats, DELIVERY_CAUSES};
