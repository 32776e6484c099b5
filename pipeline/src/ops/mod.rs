//! What an operator watches: `/healthz`, `/readyz` and `/metrics`; reconciliation.

pub mod health;
pub mod http;
pub mod reconcile;
