//! Caches of what the write-back reads from Odoo far more often than it changes: products by
//! SKU or barcode, sale taxes by rate, customers by email, countries, states, currencies,
//! pricelists, warehouses, the company's currency.
//!
//! Each entry remembers the change epoch of the Odoo table it came from; the reader bumps a
//! table's epoch whenever the stream carries a change to it (`product_product`,
//! `res_partner`, ...), and an entry from an older epoch is a miss. Tables that are not
//! published (`account_tax`, `product_pricelist`, `res_company`) rely on the TTL, and a tax
//! map that lacks a rate an order needs is read again before the order is refused. Only found
//! records are cached (a miss always asks Odoo), nothing is cached that makes an effect
//! idempotent (the searches for an order, a credit note or a receipt an earlier attempt left),
//! and Odoo stays the only copy: an entry is at most a shortcut to an id.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use transforms::shopify::TaxKey;

use crate::runtime::shared::TableEpochs;

/// Entries per cache at most.
pub const CAPACITY: u64 = 50_000;

/// The Odoo models whose searches are cached, with the table whose changes invalidate them
/// (None: the TTL only).
const CACHED: &[(&str, Option<&str>)] = &[
    ("product.product", Some("product_product")),
    ("res.partner", Some("res_partner")),
    ("res.country", Some("res_country")),
    ("res.country.state", Some("res_country_state")),
    ("res.currency", Some("res_currency")),
    ("stock.warehouse", Some("stock_warehouse")),
    ("product.pricelist", None),
];

/// The caches.
pub struct Lookups {
    ids: Cache<(&'static str, String), (i64, u64)>,
    taxes: Cache<(), Arc<BTreeMap<TaxKey, i64>>>,
    company_currency: Cache<(), String>,
    epochs: Arc<TableEpochs>,
    enabled: bool,
    hits: AtomicU64,
}

impl Lookups {
    /// Empty caches whose entries live `ttl` at most (zero: nothing is cached), invalidated
    /// by `epochs`.
    pub fn new(epochs: Arc<TableEpochs>, ttl: Duration) -> Self {
        let ttl = ttl.max(Duration::from_millis(1));
        Self {
            ids: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(ttl)
                .build(),
            taxes: Cache::builder().max_capacity(1).time_to_live(ttl).build(),
            company_currency: Cache::builder().max_capacity(1).time_to_live(ttl).build(),
            epochs,
            enabled: ttl > Duration::from_millis(1),
            hits: AtomicU64::new(0),
        }
    }

    /// Lookups answered without asking Odoo.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    fn table(model: &str) -> Option<Option<&'static str>> {
        CACHED.iter().find(|(m, _)| *m == model).map(|(_, t)| *t)
    }

    fn epoch(&self, table: Option<&str>) -> u64 {
        table.map_or(0, |t| self.epochs.get(t))
    }

    /// Whether searches of `model` are cached.
    pub fn caches(model: &str) -> bool {
        Self::table(model).is_some()
    }

    /// The id a search of `model` for `key` found, unless its table changed since.
    pub async fn id(&self, model: &'static str, key: &str) -> Option<i64> {
        let table = Self::table(model)?;
        let (id, epoch) = self.ids.get(&(model, key.to_string())).await?;
        if epoch != self.epoch(table) {
            self.ids.invalidate(&(model, key.to_string())).await;
            return None;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(id)
    }

    /// Remembers what a search found, with the table's epoch taken (by [`Lookups::epoch_of`])
    /// before the search: a change that raced the search makes the entry a miss at once.
    pub async fn put_id(&self, model: &'static str, key: &str, id: i64, epoch: u64) {
        if self.enabled && Self::table(model).is_some() {
            self.ids.insert((model, key.to_string()), (id, epoch)).await;
        }
    }

    /// The epoch of `model`'s table now: take it before asking Odoo, give it to
    /// [`Lookups::put_id`].
    pub fn epoch_of(&self, model: &str) -> u64 {
        Self::table(model).map_or(0, |t| self.epoch(t))
    }

    /// The cached sale taxes.
    pub async fn taxes(&self) -> Option<Arc<BTreeMap<TaxKey, i64>>> {
        let t = self.taxes.get(&()).await?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(t)
    }

    /// Remembers the sale taxes.
    pub async fn put_taxes(&self, taxes: Arc<BTreeMap<TaxKey, i64>>) {
        if !self.enabled {
            return;
        }
        self.taxes.insert((), taxes).await;
    }

    /// Forgets the sale taxes (one an order needs is not in them).
    pub async fn forget_taxes(&self) {
        self.taxes.invalidate(&()).await;
    }

    /// The cached company currency.
    pub async fn company_currency(&self) -> Option<String> {
        let c = self.company_currency.get(&()).await?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(c)
    }

    /// Remembers the company currency.
    pub async fn put_company_currency(&self, currency: String) {
        if !self.enabled {
            return;
        }
        self.company_currency.insert((), currency).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_to_the_table_makes_an_entry_a_miss() {
        let epochs = Arc::new(TableEpochs::default());
        let l = Lookups::new(epochs.clone(), Duration::from_secs(60));
        let e = l.epoch_of("product.product");
        l.put_id("product.product", "SKU-1", 7, e).await;
        assert_eq!(l.id("product.product", "SKU-1").await, Some(7));
        assert_eq!(l.hits(), 1);
        epochs.bump("res_partner");
        assert_eq!(l.id("product.product", "SKU-1").await, Some(7));
        epochs.bump("product_product");
        assert_eq!(l.id("product.product", "SKU-1").await, None);
        // Models outside the list are never cached.
        l.put_id("sale.order", "x", 1, 0).await;
        assert_eq!(l.id("sale.order", "x").await, None);
        assert!(!Lookups::caches("account.move"));
        // A TTL of zero caches nothing.
        let off = Lookups::new(epochs, Duration::ZERO);
        off.put_id("product.product", "SKU-1", 7, 0).await;
        assert_eq!(off.id("product.product", "SKU-1").await, None);
    }
}
