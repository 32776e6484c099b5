//! The odoo-cdc runtime and the commands of the `odoo-cdc` binary.

pub mod capture;
pub mod config;
pub mod demo;
pub mod dlq_cmd;
pub mod fixtures_cmd;
pub mod health;
pub mod histogram;
pub mod inbox;
pub mod run_cmd;
pub mod runtime;
pub mod slot_cmd;
pub mod state;
pub mod status_cmd;
pub mod tail;
pub mod webhook;
pub mod writeback;
