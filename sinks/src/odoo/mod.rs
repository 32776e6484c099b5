//! Odoo's external API, the write-back target of reverse ingestion: JSON-RPC `execute_kw`
//! (default), XML-RPC and Odoo 19's JSON-2, with Odoo's faults classified once (access denied
//! and validation are permanent; connection errors, 5xx and serialization failures transient).

pub mod client;
pub mod config;
pub mod error;
pub mod xmlrpc;

pub use client::{Call, OdooRpc};
pub use config::{OdooRpcConfig, Protocol};
pub use error::classify_fault;
