//! Shopify inventory sink settings.

use std::collections::BTreeMap;
use std::time::Duration;

/// Most quantities in one `inventorySetQuantities` call.
pub const MAX_QUANTITIES: usize = 250;

/// Where and how to reach Shopify, and how Odoo maps onto it.
#[derive(Clone)]
pub struct ShopifyConfig {
    /// Admin GraphQL endpoint (`https://<shop>.myshopify.com/admin/api/2026-10/graphql.json`).
    pub graphql_url: String,
    /// Admin API access token (never logged).
    pub access_token: String,
    /// Odoo warehouse code -> Shopify location gid.
    pub location_map: BTreeMap<String, String>,
    /// SKU -> inventory item gid; SKUs not listed are resolved once through the API.
    pub sku_map: BTreeMap<String, String>,
    /// Units held back from Shopify for every SKU.
    pub safety_stock: i64,
    /// Per-SKU safety stock overrides.
    pub safety_stock_by_sku: BTreeMap<String, i64>,
    /// Request timeout.
    pub timeout: Duration,
    /// Longest a stock change waits (from Odoo's commit) for later changes to share its
    /// inventory write: the changes read within the interval go together in one write (newest
    /// quantity per level), so writes are about an interval apart under steady load. Zero
    /// writes every change as it comes.
    pub write_interval: Duration,
    /// A change that lowers a level to at most this many units goes out at once, whatever the
    /// write interval: near sell-out, every moment Shopify shows units Odoo no longer has is a
    /// chance to oversell; higher up, a short wait cannot.
    pub urgent_below: i64,
}

/// Default [`ShopifyConfig::urgent_below`].
pub const DEFAULT_URGENT_BELOW: i64 = 10;

/// Default [`ShopifyConfig::write_interval`].
pub const DEFAULT_WRITE_INTERVAL: Duration = Duration::from_millis(250);

impl std::fmt::Debug for ShopifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShopifyConfig")
            .field("graphql_url", &self.graphql_url)
            .field("access_token", &"***")
            .field("location_map", &self.location_map)
            .field("safety_stock", &self.safety_stock)
            .field("write_interval", &self.write_interval)
            .field("urgent_below", &self.urgent_below)
            .finish()
    }
}
