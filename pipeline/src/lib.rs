//! The odoo-cdc runtime and the commands of the `odoo-cdc` binary, one folder per
//! responsibility (each depends only on the ones listed before it):
//!
//! - [`config`]: the TOML configuration;
//! - [`state`]: odoo-cdc's own tables (schema, migrations, dead letters, the outbox, the audit
//!   trail, tokens) and the healing connection to them;
//! - [`runtime`]: the reader (slot -> transforms -> keyed, sourced events), the seam to the
//!   workers (the in-process channel), the workers that drive each [`sinks::Sink`], and the
//!   checkpoint;
//! - [`ops`]: health, readiness and metrics (and the HTTP server handle);
//! - [`writeback`]: webhooks in (receiver, durable inbox) and their write-back into Odoo;
//! - [`ui`]: the web workbench served by `odoo-cdc run` (`[ui] listen`);
//! - [`cli`]: the commands of the `odoo-cdc` binary, the demo included.

pub mod cli;
pub mod config;
pub mod ops;
pub mod runtime;
pub mod state;
pub mod ui;
pub mod writeback;
