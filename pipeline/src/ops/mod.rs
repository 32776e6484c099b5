//! What an operator watches: `/healthz`, `/readyz` and `/metrics`.

pub mod health;
pub mod http;
