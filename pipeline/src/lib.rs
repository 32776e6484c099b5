//! The odoo-cdc runtime and the commands of the `odoo-cdc` binary.

pub mod slot_cmd;
pub mod tail;
