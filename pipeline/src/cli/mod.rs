//! The commands of the `odoo-cdc` binary (its `main` is `cli/main.rs`), one file each.

#[cfg(feature = "emulators")]
pub mod demo;
pub mod dlq;
#[cfg(feature = "emulators")]
pub mod fixtures;
pub mod run;
pub mod scale;
pub mod slot;
pub mod status;
pub mod tail;
