//! The accounting (QuickBooks-style) sink.

pub mod client;
pub mod config;
pub mod sink;

pub use client::{AccountingClient, MemoryTokens, TokenStore};
pub use config::{AccountingConfig, Mode};
pub use sink::{
    debits_of, parse_private_note, private_note, request_id, request_id_of, AccountingSink, Booked,
    BATCHES_PER_MINUTE,
};
