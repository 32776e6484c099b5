//! The Shopify inventory sink.

pub mod client;
pub mod config;
pub mod sink;

pub use client::ShopifyClient;
pub use config::ShopifyConfig;
pub use sink::{Guard, LevelKey, Report, ShopifySink};
