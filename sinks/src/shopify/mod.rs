//! The Shopify inventory sink.

pub mod client;
pub mod config;
pub mod fulfillment;
pub mod guard;
pub mod sink;

pub use client::ShopifyClient;
pub use config::{ShopifyConfig, DEFAULT_URGENT_BELOW, DEFAULT_WRITE_INTERVAL};
pub use fulfillment::{Deliveries, FulfillmentSink, Shipped};
pub use guard::{GuardChannel, GuardNote, GuardedShopify};
pub use sink::{Guard, LevelCheck, LevelKey, Report, ShopifySink};
