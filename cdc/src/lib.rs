//! odoo-cdc's change-data-capture layer: a PostgreSQL logical replication client for the pgoutput
//! plugin, with exact checkpointing, slot management and a consistent initial snapshot.

pub mod lsn;
pub mod pgoutput;

pub use lsn::Lsn;
pub mod conn;
pub mod error;
pub mod source;
pub mod tls;

pub use error::ReplError;
pub use source::SourceConfig;
pub mod backoff;
pub mod decoder;
pub mod pgtime;
pub mod slot;
pub mod snapshot;
pub mod spool;
pub mod stream;
pub mod value;
