//! WMS sink settings.

use std::time::Duration;

/// Default request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to reach the WMS.
#[derive(Clone)]
pub struct WmsConfig {
    /// Base URL (`https://wms.example.com`).
    pub base_url: String,
    /// API key (never logged).
    pub api_key: String,
    /// Request timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for WmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WmsConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"***")
            .finish()
    }
}
