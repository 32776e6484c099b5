//! Accounting sink settings.

use std::collections::BTreeMap;
use std::time::Duration;

/// Most items per batch request (QuickBooks' limit).
pub const MAX_BATCH: usize = 30;
/// Default batch flush interval.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// Real-time (one request per entry) or batched (up to 30 per request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One `journalentry` call per entry.
    RealTime,
    /// The batch endpoint, flushed by size or age.
    Batch {
        /// Items per request (at most 30).
        size: usize,
        /// Longest wait before a partial batch goes out.
        interval: Duration,
        /// Least time between two batch requests (QuickBooks: 40 a minute per company, 1.5 s).
        spacing: Duration,
    },
}

/// Where and how to book entries.
#[derive(Clone)]
pub struct AccountingConfig {
    /// Base URL of the API.
    pub base_url: String,
    /// Company (realm) id.
    pub realm_id: String,
    /// OAuth2 client id.
    pub client_id: String,
    /// OAuth2 client secret (never logged).
    pub client_secret: String,
    /// Odoo account code -> accounting account id.
    pub account_map: BTreeMap<String, String>,
    /// Real-time or batched.
    pub mode: Mode,
    /// Request timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for AccountingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountingConfig")
            .field("base_url", &self.base_url)
            .field("realm_id", &self.realm_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .field("account_map", &self.account_map)
            .field("mode", &self.mode)
            .finish()
    }
}
