//! Delivery of retail events to the systems retailers run: the WMS, accounting and Shopify.
//!
//! Contract of every sink: delivery is at-least-once from the source (after a crash the
//! runtime sends again what was not acknowledged), so each sink makes its effects idempotent —
//! the WMS by the picking reference, accounting by a `requestid` derived from the Odoo move,
//! Shopify by compare-and-swap and an idempotency key. Failures are classified by
//! [`policy`]: transient ones are retried, permanent ones go to the dead-letter queue.

pub mod accounting;
pub mod odoo;
pub mod policy;
pub mod shopify;
pub mod sink;
pub mod wms;

pub use policy::{Class, SinkError};
pub use sink::{Batching, Outcome, Settling, Sink, Turn, Wants};

/// Reads `Retry-After` from a response.
pub(crate) fn retry_after(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
