//! `odoo-cdc.toml`: one typed configuration, `deny_unknown_fields`, named defaults, secrets
//! from the environment (they override the file, and never print), and a pure `validate()`
//! that names the exact field. I/O happens only after validation.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// Default replication slot.
pub const DEFAULT_SLOT: &str = "odoo_cdc";
/// Default publication.
pub const DEFAULT_PUBLICATION: &str = "odoo_cdc";
/// Default `max_hold`: how long a sink that cannot deliver may hold the slot.
pub const DEFAULT_MAX_HOLD_SECS: u64 = 60;
/// Default capacity of each sink queue.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;
/// Default accounting batch size.
pub const DEFAULT_BATCH_SIZE: usize = 30;
/// Default accounting batch flush interval.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 5_000;

/// A secret: `Debug` and `Display` print `***`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Secret {
    /// The value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Odoo database.
    pub source: Source,
    /// Runtime settings.
    #[serde(default)]
    pub runtime: Runtime,
    /// Sinks; each is optional.
    #[serde(default)]
    pub sinks: Sinks,
    /// Odoo's external API, for writing Shopify orders back (needed by `webhooks`).
    #[serde(default)]
    pub odoo: Option<Odoo>,
    /// The Shopify webhook receiver.
    #[serde(default)]
    pub webhooks: Option<Webhooks>,
    /// The warehouse's webhooks (`POST /webhooks/wms` on `webhooks.listen`): shipments,
    /// receipts and stock counts written back into Odoo.
    #[serde(default)]
    pub wms: Option<WmsWebhooks>,
    /// Reconciliation scheduled inside `odoo-cdc run` (off by default).
    #[serde(default)]
    pub reconcile: Reconcile,
    /// The web workbench served by `odoo-cdc run` (off unless `[ui] listen` is set).
    #[serde(default)]
    pub ui: Option<Ui>,
    /// `[fluvio]`: the cluster `odoo-cdc run --role reader|worker` scales out on.
    #[serde(default)]
    pub fluvio: Option<FluvioCfg>,
}

/// `[ui]`: the workbench (Now, Exceptions, Blocked orders, Drift, Order trail) behind a login.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ui {
    /// `host:port` to serve on (put TLS in front: see `pipeline/deploy/README.md`).
    pub listen: String,
    /// People who may log in: name, role and an Argon2 password hash
    /// (`odoo-cdc ui hash-password` makes one).
    #[serde(default)]
    pub users: Vec<UiUser>,
    /// A token that logs in as operator (`ODOO_CDC_UI_TOKEN`; for automation and break-glass).
    #[serde(default)]
    pub token: Secret,
    /// A token that logs in as viewer (`ODOO_CDC_UI_VIEWER_TOKEN`).
    #[serde(default)]
    pub viewer_token: Secret,
    /// Hours a login lasts.
    #[serde(default = "default_session_hours")]
    pub session_hours: u64,
    /// Mark the session cookie `Secure` (set it when the workbench is reached over TLS).
    #[serde(default)]
    pub secure_cookie: bool,
}

fn default_session_hours() -> u64 {
    12
}

/// `[fluvio]`: topics one per sink, `{topic_prefix}-{sink}`, each with `partitions`
/// partitions (created by the reader when missing); workers consume as `{consumer_prefix}-{sink}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FluvioCfg {
    /// The cluster's public endpoint, `host:port` (the SC, 9003 by default).
    pub endpoint: String,
    /// Prefix of the topics.
    #[serde(default = "default_fluvio_prefix")]
    pub topic_prefix: String,
    /// Partitions of a new topic (the sink's ordering key picks one).
    #[serde(default = "default_fluvio_partitions")]
    pub partitions: u32,
    /// Prefix of the consumers' names (their committed offsets are kept under it).
    #[serde(default = "default_fluvio_prefix")]
    pub consumer_prefix: String,
    /// `[fluvio.tls]`: mutual TLS to the cluster (an odoo-cdc built with `--features
    /// fluvio-tls`); plaintext without it.
    #[serde(default)]
    pub tls: Option<FluvioTls>,
}

/// `[fluvio.tls]`: the cluster's TLS, verified both ways (Fluvio's `verified` policy): the
/// cluster's certificate must be signed by `ca_cert` for `domain`, and odoo-cdc shows `cert`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FluvioTls {
    /// The name the cluster's certificate is for.
    pub domain: String,
    /// The CA certificate (PEM) the cluster's certificate is checked against.
    pub ca_cert: std::path::PathBuf,
    /// odoo-cdc's client certificate (PEM).
    pub cert: std::path::PathBuf,
    /// Its private key (PEM).
    pub key: std::path::PathBuf,
}

fn default_fluvio_prefix() -> String {
    "odoo-cdc".into()
}

fn default_fluvio_partitions() -> u32 {
    8
}

/// A workbench user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiUser {
    /// Login name (shown in the audit trail).
    pub name: String,
    /// `viewer` (reads everything) or `operator` (also replays, discards, reconciles).
    pub role: Role,
    /// PHC string of an Argon2 hash (`$argon2id$...`).
    pub password_hash: Secret,
}

/// What a workbench user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads every page.
    Viewer,
    /// Reads, and acts: replay, discard, reconcile and fix.
    Operator,
}

/// `[reconcile]`: `odoo-cdc reconcile` run by `odoo-cdc run` every `interval_secs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconcile {
    /// Seconds between runs (0: never; the first runs one interval after the start).
    #[serde(default)]
    pub interval_secs: u64,
    /// Heal what delivering Odoo's state again heals (`--fix`); otherwise report only.
    #[serde(default)]
    pub fix: bool,
    /// Longest wait for the stream to pass the first snapshot (`--settle-secs`).
    #[serde(default = "default_settle")]
    pub settle_secs: u64,
    /// Units Shopify lost that no webhook explained for this long stop being held back by the
    /// oversell guard (default 14400: Shopify retries a webhook 8 times over 4 hours).
    #[serde(default = "default_unexplained_after")]
    pub unexplained_after_secs: u64,
}

fn default_unexplained_after() -> u64 {
    4 * 3600
}

fn default_settle() -> u64 {
    10
}

impl Default for Reconcile {
    fn default() -> Self {
        Self {
            interval_secs: 0,
            fix: false,
            settle_secs: default_settle(),
            unexplained_after_secs: default_unexplained_after(),
        }
    }
}

/// What becomes of what a shipment or receipt did not cover when the warehouse closes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backorder {
    /// A backorder for the rest, as Odoo's wizard's "Create Backorder" (the default).
    #[default]
    Create,
    /// The rest is cancelled, as the wizard's "No Backorder".
    Cancel,
}

/// The warehouse webhook receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WmsWebhooks {
    /// The signing secret of `X-WMS-Hmac-Sha256` (or `ODOO_CDC_WMS_WEBHOOK_SECRET`).
    #[serde(default)]
    pub secret: Secret,
    /// The previous secret while it is being rotated (or `ODOO_CDC_WMS_WEBHOOK_PREVIOUS_SECRET`).
    #[serde(default)]
    pub previous_secret: Secret,
    /// What the warehouse closed without shipping (or receiving): `create` a backorder, or
    /// `cancel` it. A shipment that says more is coming always leaves a backorder.
    #[serde(default)]
    pub backorder: Backorder,
    /// Carrier name -> tracking URL template (`{number}` is replaced), for shipments that
    /// carry no URL of their own.
    #[serde(default)]
    pub tracking_urls: BTreeMap<String, String>,
}

/// Default most bytes of a webhook body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default SKU of the delivery product shipping charges are sold as.
pub const DEFAULT_SHIPPING_SKU: &str = "SHIP";

/// Odoo's external API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Odoo {
    /// Base URL (`https://erp.example.com`).
    pub url: String,
    /// Database name.
    pub database: String,
    /// Login of the integration user.
    pub login: String,
    /// API key (or `ODOO_CDC_ODOO_API_KEY`).
    #[serde(default)]
    pub api_key: Secret,
    /// `jsonrpc` (default), `xmlrpc` or `json2` (Odoo 19).
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// SKU (`default_code`) of the delivery product shipping lines become.
    #[serde(default = "default_shipping_sku")]
    pub shipping_sku: String,
    /// Warehouse code Shopify orders ship from (Odoo's default when absent).
    #[serde(default)]
    pub warehouse: Option<String>,
    /// SKU of the service product a rounding line uses when Odoo's 2-decimal prices and
    /// discounts cannot carry Shopify's total to the cent (default: `shipping_sku`).
    #[serde(default)]
    pub rounding_sku: Option<String>,
    /// The customer (an exact `res.partner` name) that orders without one go to: draft
    /// orders, POS sales, app imports. Created once when Odoo has no partner of that name.
    /// Without it such orders are dead-lettered saying so.
    #[serde(default)]
    pub default_customer: Option<String>,
    /// Shopify variant id -> Odoo SKU (`default_code`) or barcode, for lines without a SKU.
    #[serde(default)]
    pub variant_map: std::collections::BTreeMap<String, String>,
    /// How long looked-up products, taxes, customers, countries, currencies, pricelists and
    /// warehouses are remembered at most (0: always ask Odoo). Changes the stream carries
    /// (products, customers, countries, currencies, warehouses) end them at once.
    #[serde(default = "default_cache_ttl_secs")]
    pub cache_ttl_secs: u64,
}

fn default_protocol() -> String {
    "jsonrpc".into()
}
/// Default `odoo.cache_ttl_secs`.
pub const DEFAULT_CACHE_TTL_SECS: u64 = 600;

fn default_cache_ttl_secs() -> u64 {
    DEFAULT_CACHE_TTL_SECS
}

fn default_shipping_sku() -> String {
    DEFAULT_SHIPPING_SKU.into()
}

/// The Shopify webhook receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhooks {
    /// Listen address (`0.0.0.0:8080`).
    pub listen: String,
    /// The shop (`example.myshopify.com`); other shops' webhooks are refused.
    pub shop_domain: String,
    /// The app's client secret (or `ODOO_CDC_SHOPIFY_WEBHOOK_SECRET`).
    #[serde(default)]
    pub secret: Secret,
    /// The previous secret while it is being rotated (or
    /// `ODOO_CDC_SHOPIFY_WEBHOOK_PREVIOUS_SECRET`).
    #[serde(default)]
    pub previous_secret: Secret,
    /// Largest body accepted (413 above).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Orders applied to Odoo at the same time (different Shopify orders).
    #[serde(default = "default_inbox_workers")]
    pub workers: usize,
}

fn default_max_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}
fn default_inbox_workers() -> usize {
    4
}

/// The Odoo database and the slot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// PostgreSQL URL (without the password, preferably).
    pub url: String,
    /// Password of the replication role (or `ODOO_CDC_SOURCE_PASSWORD`).
    #[serde(default)]
    pub password: Secret,
    /// Replication slot.
    #[serde(default = "default_slot")]
    pub slot: String,
    /// Publication.
    #[serde(default = "default_publication")]
    pub publication: String,
    /// Never create or drop the slot or publication.
    #[serde(default)]
    pub managed: bool,
    /// Odoo major version (17, 18 or 19).
    #[serde(default = "default_odoo_version")]
    pub odoo_version: u32,
}

fn default_slot() -> String {
    DEFAULT_SLOT.into()
}
fn default_publication() -> String {
    DEFAULT_PUBLICATION.into()
}
fn default_odoo_version() -> u32 {
    18
}

/// Runtime settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// Seconds a sink that cannot deliver may hold the slot before pending events are parked.
    #[serde(default = "default_max_hold")]
    pub max_hold_secs: u64,
    /// Capacity of each sink queue (a full queue slows the reader).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Keys a sink delivers concurrently: ordered per key (SKU, picking, move), parallel across
    /// keys.
    #[serde(default = "default_partitions")]
    pub partitions: usize,
    /// Metrics and health listen address.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// `/readyz` turns red when a sink has been failing (retrying or parked) this long, or the
    /// inbox has a webhook due and not picked up this long.
    #[serde(default = "default_unready_after")]
    pub unready_after_secs: u64,
}

fn default_unready_after() -> u64 {
    DEFAULT_UNREADY_AFTER_SECS
}

/// Default of `runtime.unready_after_secs`.
pub const DEFAULT_UNREADY_AFTER_SECS: u64 = 60;

fn default_max_hold() -> u64 {
    DEFAULT_MAX_HOLD_SECS
}
fn default_queue_capacity() -> usize {
    DEFAULT_QUEUE_CAPACITY
}
fn default_partitions() -> usize {
    8
}

impl Default for Runtime {
    fn default() -> Self {
        Self {
            max_hold_secs: DEFAULT_MAX_HOLD_SECS,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            partitions: default_partitions(),
            metrics_listen: None,
            unready_after_secs: DEFAULT_UNREADY_AFTER_SECS,
        }
    }
}

/// The sinks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sinks {
    /// Shopify inventory.
    pub shopify: Option<Shopify>,
    /// The WMS.
    pub wms: Option<Wms>,
    /// Accounting.
    pub accounting: Option<Accounting>,
}

/// Shopify inventory sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shopify {
    /// Admin GraphQL endpoint.
    pub graphql_url: String,
    /// Access token (or `ODOO_CDC_SHOPIFY_ACCESS_TOKEN`).
    #[serde(default)]
    pub access_token: Secret,
    /// Odoo warehouse code -> Shopify location gid.
    pub location_map: BTreeMap<String, String>,
    /// SKU -> inventory item gid (others are resolved through the API).
    #[serde(default)]
    pub sku_map: BTreeMap<String, String>,
    /// Units held back for every SKU.
    #[serde(default)]
    pub safety_stock: i64,
    /// Per-SKU safety stock.
    #[serde(default)]
    pub safety_stock_by_sku: BTreeMap<String, i64>,
    /// Longest a stock change waits after Odoo's commit for later ones to share its inventory write, in
    /// milliseconds (the changes read within it go together in one write; 0 writes each change
    /// as it comes).
    #[serde(default = "default_write_interval")]
    pub write_interval_ms: u64,
    /// A change lowering a level to at most this many units goes out at once, whatever the
    /// write interval (near sell-out a wait could oversell).
    #[serde(default = "default_urgent_below")]
    pub urgent_below: i64,
    /// Validated Odoo deliveries of Shopify orders become Shopify fulfillments (with the
    /// warehouse's tracking), once per picking.
    #[serde(default)]
    pub fulfillments: bool,
    /// Whether Shopify emails the customer about each fulfillment.
    #[serde(default = "default_true")]
    pub notify_customer: bool,
}

fn default_true() -> bool {
    true
}

fn default_urgent_below() -> i64 {
    sinks::shopify::DEFAULT_URGENT_BELOW
}

fn default_write_interval() -> u64 {
    sinks::shopify::DEFAULT_WRITE_INTERVAL.as_millis() as u64
}

/// WMS sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wms {
    /// Base URL.
    pub base_url: String,
    /// API key (or `ODOO_CDC_WMS_API_KEY`).
    #[serde(default)]
    pub api_key: Secret,
}

/// Accounting sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accounting {
    /// Base URL.
    pub base_url: String,
    /// Company (realm) id.
    pub realm_id: String,
    /// OAuth2 client id.
    pub client_id: String,
    /// OAuth2 client secret (or `ODOO_CDC_ACCOUNTING_CLIENT_SECRET`).
    #[serde(default)]
    pub client_secret: Secret,
    /// The first refresh token (or `ODOO_CDC_ACCOUNTING_REFRESH_TOKEN`); newer ones are kept in
    /// the state database.
    #[serde(default)]
    pub refresh_token: Secret,
    /// `realtime` or `batch`.
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Entries per batch call (at most 30).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest wait for a partial batch.
    #[serde(default = "default_flush_interval")]
    pub flush_interval_ms: u64,
    /// Batch requests a minute the service allows (QuickBooks: 40 per company); batches are
    /// spaced to stay under it.
    #[serde(default = "default_batches_per_minute")]
    pub batches_per_minute: u32,
    /// Odoo account code -> accounting account id.
    pub account_map: BTreeMap<String, String>,
}

fn default_mode() -> String {
    "realtime".into()
}
fn default_batch_size() -> usize {
    DEFAULT_BATCH_SIZE
}
fn default_flush_interval() -> u64 {
    DEFAULT_FLUSH_INTERVAL_MS
}
fn default_batches_per_minute() -> u32 {
    sinks::accounting::BATCHES_PER_MINUTE
}

/// A configuration error naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// Dotted path of the field (`sinks.shopify.location_map`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

impl FromStr for Config {
    type Err = ConfigError;

    /// Parses TOML (unknown fields are errors, with their location).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        toml::from_str(s).map_err(|e| {
            let field = e
                .span()
                .and_then(|sp| s.get(..sp.start))
                .map(|before| format!("line {}", before.lines().count().max(1)))
                .unwrap_or_else(|| "config".into());
            err(&field, e.message().to_string())
        })
    }
}

fn check_url(field: &str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(err(field, format!("{url:?} is not an http(s) URL")))
    }
}

impl Config {
    /// Applies secrets from the environment (they override the file).
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        if let Some(s) = self.sinks.shopify.as_mut() {
            if let Some(v) = env("ODOO_CDC_SHOPIFY_ACCESS_TOKEN") {
                s.access_token = Secret(v);
            }
        }
        if let Some(w) = self.sinks.wms.as_mut() {
            if let Some(v) = env("ODOO_CDC_WMS_API_KEY") {
                w.api_key = Secret(v);
            }
        }
        if let Some(a) = self.sinks.accounting.as_mut() {
            if let Some(v) = env("ODOO_CDC_ACCOUNTING_CLIENT_SECRET") {
                a.client_secret = Secret(v);
            }
            if let Some(v) = env("ODOO_CDC_ACCOUNTING_REFRESH_TOKEN") {
                a.refresh_token = Secret(v);
            }
        }
        if let Some(o) = self.odoo.as_mut() {
            if let Some(v) = env("ODOO_CDC_ODOO_API_KEY") {
                o.api_key = Secret(v);
            }
        }
        if let Some(w) = self.wms.as_mut() {
            if let Some(v) = env("ODOO_CDC_WMS_WEBHOOK_SECRET") {
                w.secret = Secret(v);
            }
            if let Some(v) = env("ODOO_CDC_WMS_WEBHOOK_PREVIOUS_SECRET") {
                w.previous_secret = Secret(v);
            }
        }
        if let Some(w) = self.webhooks.as_mut() {
            if let Some(v) = env("ODOO_CDC_SHOPIFY_WEBHOOK_SECRET") {
                w.secret = Secret(v);
            }
            if let Some(v) = env("ODOO_CDC_SHOPIFY_WEBHOOK_PREVIOUS_SECRET") {
                w.previous_secret = Secret(v);
            }
        }
        if let Some(u) = self.ui.as_mut() {
            if let Some(v) = env("ODOO_CDC_UI_TOKEN") {
                u.token = Secret(v);
            }
            if let Some(v) = env("ODOO_CDC_UI_VIEWER_TOKEN") {
                u.viewer_token = Secret(v);
            }
        }
        if let Some(pw) = env("ODOO_CDC_SOURCE_PASSWORD") {
            self.source.password = Secret(pw);
        }
    }

    /// Checks every field; the first problem names its field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_source()?;
        self.validate_rest()
    }

    /// Checks only what reading odoo-cdc's state needs (the source connection): the read-only
    /// commands (`status`, `dlq list`, `audit`) run without any sink's secret.
    pub fn validate_source(&self) -> Result<(), ConfigError> {
        tokio_postgres::Config::from_str(&self.source.url)
            .map_err(|e| err("source.url", e.to_string()))?;
        if self.source.slot.is_empty()
            || !self
                .source
                .slot
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(err(
                "source.slot",
                "a slot name is lower-case letters, digits and underscores",
            ));
        }
        if self.source.publication.is_empty() {
            return Err(err("source.publication", "must not be empty"));
        }
        if !matches!(self.source.odoo_version, 17..=19) {
            return Err(err(
                "source.odoo_version",
                "odoo-cdc supports Odoo 17, 18 and 19",
            ));
        }
        Ok(())
    }

    fn validate_rest(&self) -> Result<(), ConfigError> {
        if self.runtime.max_hold_secs == 0 {
            return Err(err("runtime.max_hold_secs", "must be at least 1"));
        }
        if let Some(o) = &self.odoo {
            check_url("odoo.url", &o.url)?;
            if o.database.is_empty() {
                return Err(err("odoo.database", "must not be empty"));
            }
            if o.login.is_empty() {
                return Err(err("odoo.login", "must not be empty"));
            }
            if o.api_key.expose().is_empty() {
                return Err(err("odoo.api_key", "missing (set ODOO_CDC_ODOO_API_KEY)"));
            }
            o.protocol
                .parse::<sinks::odoo::Protocol>()
                .map_err(|e| err("odoo.protocol", e))?;
        }
        if let Some(w) = &self.webhooks {
            w.listen
                .parse::<std::net::SocketAddr>()
                .map_err(|e| err("webhooks.listen", format!("{:?}: {e}", w.listen)))?;
            if !w.shop_domain.contains('.') {
                return Err(err(
                    "webhooks.shop_domain",
                    "expected the shop's domain, like example.myshopify.com",
                ));
            }
            if w.secret.expose().is_empty() {
                return Err(err(
                    "webhooks.secret",
                    "missing (set ODOO_CDC_SHOPIFY_WEBHOOK_SECRET)",
                ));
            }
            if w.max_body_bytes < 1024 {
                return Err(err("webhooks.max_body_bytes", "must be at least 1024"));
            }
            if w.workers == 0 || w.workers > 64 {
                return Err(err("webhooks.workers", "must be between 1 and 64"));
            }
            if self.odoo.is_none() {
                return Err(err(
                    "odoo",
                    "webhooks are written back to Odoo: an [odoo] section is required",
                ));
            }
        }
        if let Some(w) = &self.wms {
            if w.secret.expose().is_empty() {
                return Err(err(
                    "wms.secret",
                    "missing (set ODOO_CDC_WMS_WEBHOOK_SECRET)",
                ));
            }
            if self.webhooks.is_none() {
                return Err(err(
                    "wms",
                    "warehouse webhooks are received on webhooks.listen: a [webhooks] section is required",
                ));
            }
            for (carrier, url) in &w.tracking_urls {
                if !url.contains("{number}") {
                    return Err(err(
                        &format!("wms.tracking_urls.{carrier}"),
                        "must contain {number}",
                    ));
                }
            }
        }
        if let Some(f) = &self.fluvio {
            if f.endpoint.trim().is_empty() || !f.endpoint.contains(':') {
                return Err(err(
                    "fluvio.endpoint",
                    format!(
                        "{:?}: expected host:port (the SC's public endpoint)",
                        f.endpoint
                    ),
                ));
            }
            if f.partitions == 0 || f.partitions > 1024 {
                return Err(err("fluvio.partitions", "between 1 and 1024".to_string()));
            }
            let ok = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            };
            if !ok(&f.topic_prefix) {
                return Err(err(
                    "fluvio.topic_prefix",
                    format!(
                        "{:?}: lowercase letters, digits and '-' (a Fluvio topic name)",
                        f.topic_prefix
                    ),
                ));
            }
            if let Some(t) = &f.tls {
                if t.domain.trim().is_empty() {
                    return Err(err(
                        "fluvio.tls.domain",
                        "the name on the cluster's certificate".to_string(),
                    ));
                }
                for (field, path) in [("ca_cert", &t.ca_cert), ("cert", &t.cert), ("key", &t.key)] {
                    if let Err(e) = std::fs::File::open(path) {
                        return Err(err(
                            &format!("fluvio.tls.{field}"),
                            format!("{}: {e}", path.display()),
                        ));
                    }
                }
            }
        }
        if let Some(u) = &self.ui {
            u.listen
                .parse::<std::net::SocketAddr>()
                .map_err(|e| err("ui.listen", format!("{:?}: {e}", u.listen)))?;
            if u.users.is_empty()
                && u.token.expose().is_empty()
                && u.viewer_token.expose().is_empty()
            {
                return Err(err(
                    "ui.users",
                    "nobody could log in: add [[ui.users]] or set ODOO_CDC_UI_TOKEN",
                ));
            }
            let mut names = std::collections::BTreeSet::new();
            for (i, user) in u.users.iter().enumerate() {
                if user.name.trim().is_empty() || !names.insert(user.name.as_str()) {
                    return Err(err(
                        &format!("ui.users[{i}].name"),
                        "must be non-empty and unique",
                    ));
                }
                argon2::PasswordHash::new(user.password_hash.expose()).map_err(|e| {
                    err(
                        &format!("ui.users[{i}].password_hash"),
                        format!("not a PHC hash string ({e}): make one with `odoo-cdc ui hash-password`"),
                    )
                })?;
            }
            for (field, t) in [("ui.token", &u.token), ("ui.viewer_token", &u.viewer_token)] {
                if !t.expose().is_empty() && t.expose().len() < 16 {
                    return Err(err(field, "must be at least 16 characters"));
                }
            }
            if u.session_hours == 0 {
                return Err(err("ui.session_hours", "must be at least 1"));
            }
        }
        if self.runtime.partitions == 0 || self.runtime.partitions > 256 {
            return Err(err("runtime.partitions", "must be between 1 and 256"));
        }
        if self.runtime.queue_capacity == 0 {
            return Err(err("runtime.queue_capacity", "must be at least 1"));
        }
        if let Some(s) = &self.sinks.shopify {
            check_url("sinks.shopify.graphql_url", &s.graphql_url)?;
            if s.access_token.expose().is_empty() {
                return Err(err(
                    "sinks.shopify.access_token",
                    "missing: set ODOO_CDC_SHOPIFY_ACCESS_TOKEN",
                ));
            }
            if s.location_map.is_empty() {
                return Err(err(
                    "sinks.shopify.location_map",
                    "must map at least one Odoo warehouse code to a Shopify location",
                ));
            }
            for (wh, loc) in &s.location_map {
                if !loc.starts_with("gid://shopify/Location/") {
                    return Err(err(
                        &format!("sinks.shopify.location_map.{wh}"),
                        format!("{loc:?} is not a Shopify location gid"),
                    ));
                }
            }
            if s.safety_stock < 0 {
                return Err(err("sinks.shopify.safety_stock", "must not be negative"));
            }
            if s.write_interval_ms > 10_000 {
                return Err(err(
                    "sinks.shopify.write_interval_ms",
                    "must be at most 10000 (inventory would lag Odoo by that much)",
                ));
            }
        }
        if let Some(w) = &self.sinks.wms {
            check_url("sinks.wms.base_url", &w.base_url)?;
            if w.api_key.expose().is_empty() {
                return Err(err(
                    "sinks.wms.api_key",
                    "missing: set ODOO_CDC_WMS_API_KEY",
                ));
            }
        }
        if let Some(a) = &self.sinks.accounting {
            check_url("sinks.accounting.base_url", &a.base_url)?;
            if a.client_secret.expose().is_empty() {
                return Err(err(
                    "sinks.accounting.client_secret",
                    "missing: set ODOO_CDC_ACCOUNTING_CLIENT_SECRET",
                ));
            }
            if !matches!(a.mode.as_str(), "realtime" | "batch") {
                return Err(err("sinks.accounting.mode", "realtime or batch"));
            }
            if !(1..=30).contains(&a.batch_size) {
                return Err(err(
                    "sinks.accounting.batch_size",
                    "1 to 30 (the batch endpoint's limit)",
                ));
            }
            if a.batches_per_minute == 0 {
                return Err(err(
                    "sinks.accounting.batches_per_minute",
                    "must be at least 1",
                ));
            }
            if a.account_map.is_empty() {
                return Err(err(
                    "sinks.accounting.account_map",
                    "must map Odoo account codes to accounting account ids",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
