//! odoo-cdc's own state in PostgreSQL, schema `odoo_cdc` (migrations at start): a key-value
//! table (the newest accounting refresh token, mappings) and the dead-letter table. Never in
//! memory only, never in local files.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cdc::SourceConfig;
use sinks::accounting::client::BoxFuture;
use sinks::accounting::TokenStore;
use tokio_postgres::Client;

/// A dead-lettered event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    /// Sink.
    pub sink: &'static str,
    /// Partition key.
    pub key: String,
    /// Why.
    pub reason: String,
    /// Source commit LSN.
    pub source_lsn: String,
    /// The event.
    pub event: transforms::RetailEvent,
}

/// How long one attempt to (re)connect to the state database may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// After a failed attempt, callers get the failure at once for this long instead of each
/// trying again (a dead server is not hammered by every worker).
const RETRY_GAP: Duration = Duration::from_millis(500);

/// An error with its causes, `a: b: c`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// Why the state database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// No connection (the server is down, restarting, or refused us).
    #[error("state database unavailable: {0}")]
    Unavailable(String),
    /// A statement failed.
    #[error("state database: {0}")]
    Pg(#[from] tokio_postgres::Error),
}

/// The connection to odoo-cdc's own state that heals: a closed connection (a PostgreSQL
/// restart, a terminated backend, a network cut) is replaced on the next use, one attempt at a
/// time. Every user takes [`StateDb::client`] per unit of work and retries with its own
/// backoff, so nothing loops on a dead connection.
pub struct StateDb {
    source: Option<SourceConfig>,
    current: tokio::sync::Mutex<Option<Arc<Client>>>,
    up: AtomicBool,
    last_failure: Mutex<Option<(Instant, String)>>,
    /// Connections made (the first one included).
    connects: AtomicU64,
}

impl StateDb {
    /// Connects (and keeps reconnecting) with `source`'s settings.
    pub async fn connect(source: &SourceConfig) -> Result<Arc<Self>, StateError> {
        let db = Arc::new(Self::new(Some(source.clone()), None));
        db.client().await?;
        Ok(db)
    }

    /// A state database on one given connection, never replaced (tests, tools).
    pub fn fixed(client: Client) -> Arc<Self> {
        Arc::new(Self::new(None, Some(Arc::new(client))))
    }

    fn new(source: Option<SourceConfig>, client: Option<Arc<Client>>) -> Self {
        Self {
            source,
            up: AtomicBool::new(client.is_some()),
            connects: AtomicU64::new(u64::from(client.is_some())),
            current: tokio::sync::Mutex::new(client),
            last_failure: Mutex::new(None),
        }
    }

    /// The source settings, for connections of their own (LISTEN).
    pub fn source(&self) -> Option<&SourceConfig> {
        self.source.as_ref()
    }

    /// Whether the last use found a working connection (false once reconnecting failed).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// Connections replaced after one was lost (every connection after the first).
    pub fn reconnects(&self) -> u64 {
        self.connects.load(Ordering::SeqCst).saturating_sub(1)
    }

    /// A live connection: the current one, or a new one when it was lost.
    pub async fn client(&self) -> Result<Arc<Client>, StateError> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        // Lost is not down yet: `up` turns false only when reconnecting fails.
        if current.take().is_some() {
            tracing::warn!("the connection to odoo-cdc's state was lost; reconnecting");
        }
        let Some(source) = &self.source else {
            return Err(self.fail("connection closed".to_string()));
        };
        if let Ok(g) = self.last_failure.lock() {
            if let Some((at, e)) = g.as_ref() {
                if at.elapsed() < RETRY_GAP {
                    return Err(StateError::Unavailable(e.clone()));
                }
            }
        }
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, source.sql_client()).await;
        match attempt {
            Ok(Ok(c)) => {
                let c = Arc::new(c);
                *current = Some(c.clone());
                self.up.store(true, Ordering::SeqCst);
                if self.connects.fetch_add(1, Ordering::SeqCst) > 0 {
                    tracing::info!("connection to odoo-cdc's state restored");
                }
                if let Ok(mut g) = self.last_failure.lock() {
                    *g = None;
                }
                Ok(c)
            }
            Ok(Err(e)) => Err(self.fail(chain(&e))),
            Err(_) => Err(self.fail(format!(
                "{}:{}: no answer within {CONNECT_TIMEOUT:?}",
                source.host, source.port
            ))),
        }
    }

    fn fail(&self, e: String) -> StateError {
        self.up.store(false, Ordering::SeqCst);
        if let Ok(mut g) = self.last_failure.lock() {
            *g = Some((Instant::now(), e.clone()));
        }
        StateError::Unavailable(e)
    }

    /// Checks the database answers (readiness): `SELECT 1` within two seconds.
    pub async fn ping(&self) -> Result<(), StateError> {
        let c = self.client().await?;
        match tokio::time::timeout(Duration::from_secs(2), c.simple_query("SELECT 1")).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.fail(e.to_string())),
            Err(_) => Err(self.fail("SELECT 1 took longer than 2 s".into())),
        }
    }
}

/// Migrations, in order; each runs once (idempotent DDL).
pub const MIGRATIONS: &[&str] = &[
    "CREATE SCHEMA IF NOT EXISTS odoo_cdc",
    "CREATE TABLE IF NOT EXISTS odoo_cdc.kv (key text PRIMARY KEY, value text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS odoo_cdc.dead_letters (id bigserial PRIMARY KEY, sink text NOT NULL, key text NOT NULL, \
     reason text NOT NULL, source_lsn text NOT NULL, event jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), \
     replayed_at timestamptz)",
    "CREATE TABLE IF NOT EXISTS odoo_cdc.outbox (id bigserial PRIMARY KEY, sink text NOT NULL, key text NOT NULL, \
     source_lsn bigint NOT NULL, event jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
    "CREATE INDEX IF NOT EXISTS outbox_sink ON odoo_cdc.outbox (sink, id)",
    // When the event's source transaction committed (Unix microseconds; 0 unknown): a drained
    // event's latency counts from Odoo's commit, not from leaving the outbox.
    "ALTER TABLE odoo_cdc.outbox ADD COLUMN IF NOT EXISTS committed_us bigint NOT NULL DEFAULT 0",
    // Shopify webhooks, committed before the 200; unique on the event id (a duplicate
    // delivery is a no-op). status: pending, done, dead (DLQ, with Odoo's error) or refused.
    "CREATE TABLE IF NOT EXISTS odoo_cdc.inbox (id bigserial PRIMARY KEY, event_id text NOT NULL UNIQUE, \
     webhook_id text, topic text NOT NULL, shop_domain text NOT NULL, order_key text NOT NULL, payload text NOT NULL, \
     triggered_at text, received_at timestamptz NOT NULL DEFAULT now(), status text NOT NULL DEFAULT 'pending', \
     attempts int NOT NULL DEFAULT 0, next_attempt_at timestamptz NOT NULL DEFAULT now(), last_error text, \
     odoo_id bigint, applied_at timestamptz, wal_fence text)",
    "CREATE INDEX IF NOT EXISTS inbox_pending ON odoo_cdc.inbox (order_key, id) WHERE status = 'pending'",
    "CREATE INDEX IF NOT EXISTS inbox_order ON odoo_cdc.inbox (order_key, id)",
    // Every webhook, RPC call and result, DLQ move and replay, by Shopify id.
    "CREATE TABLE IF NOT EXISTS odoo_cdc.audit (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), \
     shopify_id text NOT NULL, inbox_id bigint, kind text NOT NULL, detail text NOT NULL, odoo_id bigint)",
    "CREATE INDEX IF NOT EXISTS audit_shopify ON odoo_cdc.audit (shopify_id, id)",
    // Dead letters are one pending entry per sink, key and cause: a repeat (every restart
    // re-reads an unknown SKU) counts and refreshes the event instead of adding a row.
    // `generation` is the idempotency generation the next replay sends with: a replay after a
    // permanent refusal is a new attempt (a new QuickBooks requestid), a replay after a
    // transient failure keeps its key (`last_refused` false).
    "ALTER TABLE odoo_cdc.dead_letters ADD COLUMN IF NOT EXISTS count int NOT NULL DEFAULT 1, \
     ADD COLUMN IF NOT EXISTS last_seen timestamptz NOT NULL DEFAULT now(), \
     ADD COLUMN IF NOT EXISTS generation int NOT NULL DEFAULT 0, \
     ADD COLUMN IF NOT EXISTS last_refused boolean NOT NULL DEFAULT true",
    // Collapse the repeats an older version left (before the unique index can exist).
    "UPDATE odoo_cdc.dead_letters k SET count = s.n, last_seen = s.last FROM \
     (SELECT min(id) AS id, count(*)::int AS n, max(created_at) AS last FROM odoo_cdc.dead_letters \
      WHERE replayed_at IS NULL AND sink <> 'odoo' GROUP BY sink, key, md5(reason) HAVING count(*) > 1) s WHERE k.id = s.id",
    "DELETE FROM odoo_cdc.dead_letters d WHERE d.replayed_at IS NULL AND d.sink <> 'odoo' AND EXISTS \
     (SELECT 1 FROM odoo_cdc.dead_letters e WHERE e.replayed_at IS NULL AND e.sink = d.sink AND e.key = d.key \
      AND md5(e.reason) = md5(d.reason) AND e.id < d.id)",
    // Shipments and receipts the warehouse reported, by its id: the picking each one landed on
    // (recorded before validating, so a retry after a crash finds it), its tracking, and the
    // Shopify fulfillment made for it.
    "CREATE TABLE IF NOT EXISTS odoo_cdc.transfers (id text PRIMARY KEY, kind text NOT NULL, reference text NOT NULL, \
     picking text, sequence int NOT NULL DEFAULT 1, final boolean NOT NULL DEFAULT true, carrier text, tracking_number text, \
     tracking_url text, lines jsonb NOT NULL, inbox_id bigint, received_at timestamptz, status text NOT NULL DEFAULT 'applying', \
     backorder text, applied_at timestamptz, fulfillment text, fulfilled_at timestamptz)",
    "CREATE INDEX IF NOT EXISTS transfers_picking ON odoo_cdc.transfers (picking)",
    "CREATE INDEX IF NOT EXISTS transfers_reference ON odoo_cdc.transfers (reference, sequence)",
    // A warehouse parcel's place in its order (`sequence`): parcels apply in that order.
    "ALTER TABLE odoo_cdc.inbox ADD COLUMN IF NOT EXISTS seq int",
    "CREATE INDEX IF NOT EXISTS inbox_odoo_order ON odoo_cdc.inbox (odoo_id) WHERE topic = 'orders/create'",
    // Webhook dead letters are one per inbox row already (the inbox is unique on the event).
    "CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_pending ON odoo_cdc.dead_letters (sink, key, md5(reason)) \
     WHERE replayed_at IS NULL AND sink <> 'odoo'",
    // The workbench: a dead letter a person discarded (closed without delivering, with a
    // comment in the audit trail); who did what; and the indexes its pages page through.
    "ALTER TABLE odoo_cdc.dead_letters ADD COLUMN IF NOT EXISTS discarded_at timestamptz",
    "ALTER TABLE odoo_cdc.audit ADD COLUMN IF NOT EXISTS actor text",
    "CREATE INDEX IF NOT EXISTS dead_letters_open ON odoo_cdc.dead_letters (id) WHERE replayed_at IS NULL",
    "CREATE INDEX IF NOT EXISTS dead_letters_open_cause ON odoo_cdc.dead_letters (sink, md5(reason), id) WHERE replayed_at IS NULL",
    "CREATE INDEX IF NOT EXISTS dead_letters_key ON odoo_cdc.dead_letters (key)",
    "CREATE INDEX IF NOT EXISTS audit_odoo ON odoo_cdc.audit (odoo_id) WHERE odoo_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS audit_mismatch ON odoo_cdc.audit (id) WHERE kind = 'total-mismatch'",
    "CREATE INDEX IF NOT EXISTS audit_actor ON odoo_cdc.audit (id) WHERE actor IS NOT NULL",
];

/// Records an audit line (best effort: a failure is logged, never fatal).
pub async fn audit(
    client: &Client,
    shopify_id: &str,
    inbox_id: Option<i64>,
    kind: &str,
    detail: &str,
    odoo_id: Option<i64>,
) {
    if let Err(e) = client
        .execute(
            "INSERT INTO odoo_cdc.audit (shopify_id, inbox_id, kind, detail, odoo_id) VALUES ($1, $2, $3, $4, $5)",
            &[&shopify_id, &inbox_id, &kind, &detail, &odoo_id],
        )
        .await
    {
        tracing::warn!(error = %e, shopify_id, kind, "cannot write the audit trail");
    }
}

/// Records what a person did (a workbench action), with who and why, under `subject` (the
/// dead letter's key, a Shopify order id, or `reconcile`). Unlike [`audit`], a failure is
/// returned: an action that cannot be recorded is not taken as done.
pub async fn audit_action(
    client: &Client,
    subject: &str,
    kind: &str,
    detail: &str,
    actor: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO odoo_cdc.audit (shopify_id, kind, detail, actor) VALUES ($1, $2, $3, $4)",
            &[&subject, &kind, &detail, &actor],
        )
        .await
        .map(drop)
}

/// Runs the migrations.
pub async fn migrate(client: &Client) -> Result<(), tokio_postgres::Error> {
    // Processes of one deployment (a reader and its workers) start together: one migrates
    // at a time (IF NOT EXISTS is not safe against a concurrent CREATE).
    client
        .batch_execute("SELECT pg_advisory_lock(hashtext('odoo_cdc migrate'))")
        .await?;
    let mut result = Ok(());
    for m in MIGRATIONS {
        if let Err(e) = client.batch_execute(m).await {
            result = Err(e);
            break;
        }
    }
    client
        .batch_execute("SELECT pg_advisory_unlock(hashtext('odoo_cdc migrate'))")
        .await?;
    result
}

/// Reads a value.
pub async fn get(db: &StateDb, key: &str) -> Result<Option<String>, StateError> {
    Ok(db
        .client()
        .await?
        .query_opt("SELECT value FROM odoo_cdc.kv WHERE key = $1", &[&key])
        .await?
        .map(|r| r.get(0)))
}

/// Writes a value.
pub async fn put(db: &StateDb, key: &str, value: &str) -> Result<(), StateError> {
    db.client()
        .await?
        .execute(
            "INSERT INTO odoo_cdc.kv (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            &[&key, &value],
        )
        .await?;
    Ok(())
}

/// Key of the accounting refresh token.
pub const REFRESH_TOKEN_KEY: &str = "accounting.refresh_token";

/// The accounting refresh token, kept in `odoo_cdc.kv`.
pub struct PgTokens(pub Arc<StateDb>);

impl TokenStore for PgTokens {
    fn load(&self) -> BoxFuture<'_, Result<Option<String>, String>> {
        Box::pin(async move {
            get(&self.0, REFRESH_TOKEN_KEY)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn save<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            put(&self.0, REFRESH_TOKEN_KEY, token)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Records a dead letter: a new pending entry, or one more sighting of the pending entry of
/// the same sink, key and cause (its event becomes the newest one). Returns whether it was new.
pub async fn dead_letter(db: &StateDb, d: &DeadLetter) -> Result<bool, StateError> {
    let event = serde_json::to_value(&d.event).unwrap_or(serde_json::Value::Null);
    let row = db
        .client()
        .await?
        .query_one(
            "INSERT INTO odoo_cdc.dead_letters (sink, key, reason, source_lsn, event) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (sink, key, md5(reason)) WHERE replayed_at IS NULL AND sink <> 'odoo' \
             DO UPDATE SET count = dead_letters.count + 1, last_seen = now(), event = EXCLUDED.event, \
             source_lsn = EXCLUDED.source_lsn RETURNING count",
            &[&d.sink, &d.key, &d.reason, &d.source_lsn, &event],
        )
        .await?;
    Ok(row.get::<_, i32>(0) == 1)
}

/// Parks an event in the outbox under its sink's ordering key.
pub async fn park(
    db: &StateDb,
    sink: &str,
    key: &str,
    s: &transforms::Sourced,
) -> Result<(), StateError> {
    let event = serde_json::to_value(&s.event).unwrap_or(serde_json::Value::Null);
    let lsn = i64::try_from(s.source_commit_lsn).unwrap_or(i64::MAX);
    db.client()
        .await?
        .execute(
            "INSERT INTO odoo_cdc.outbox (sink, key, source_lsn, event, committed_us) VALUES ($1, $2, $3, $4, $5)",
            &[&sink, &key, &lsn, &event, &s.committed_us],
        )
        .await?;
    Ok(())
}

/// The oldest parked events of a sink, in order.
pub async fn parked(
    db: &StateDb,
    sink: &str,
    limit: i64,
) -> Result<Vec<(i64, transforms::Sourced)>, StateError> {
    let rows = db
        .client()
        .await?
        .query(
            "SELECT id, source_lsn, event, committed_us FROM odoo_cdc.outbox WHERE sink = $1 ORDER BY id LIMIT $2",
            &[&sink, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let event: serde_json::Value = r.get(2);
            let event = serde_json::from_value(event).ok()?;
            Some((
                r.get::<_, i64>(0),
                transforms::Sourced {
                    event,
                    source_commit_lsn: r.get::<_, i64>(1) as u64,
                    committed_us: r.get(3),
                },
            ))
        })
        .collect())
}

/// Removes a delivered event from the outbox.
pub async fn unpark(db: &StateDb, id: i64) -> Result<(), StateError> {
    db.client()
        .await?
        .execute("DELETE FROM odoo_cdc.outbox WHERE id = $1", &[&id])
        .await?;
    Ok(())
}
