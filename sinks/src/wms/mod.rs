//! The warehouse system sink.

pub mod client;
pub mod config;
pub mod sink;

pub use client::WmsClient;
pub use config::WmsConfig;
pub use sink::WmsSink;
