//! odoo-cdc's own state in PostgreSQL, schema `odoo_cdc` (migrations at start): a key-value
//! table (the newest accounting refresh token, mappings) and the dead-letter table. Never in
//! memory only, never in local files.

use std::sync::Arc;

use sinks::accounting::client::BoxFuture;
use sinks::accounting::TokenStore;
use tokio_postgres::Client;

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

/// Runs the migrations.
pub async fn migrate(client: &Client) -> Result<(), tokio_postgres::Error> {
    for m in MIGRATIONS {
        client.batch_execute(m).await?;
    }
    Ok(())
}

/// Reads a value.
pub async fn get(client: &Client, key: &str) -> Result<Option<String>, tokio_postgres::Error> {
    Ok(client
        .query_opt("SELECT value FROM odoo_cdc.kv WHERE key = $1", &[&key])
        .await?
        .map(|r| r.get(0)))
}

/// Writes a value.
pub async fn put(client: &Client, key: &str, value: &str) -> Result<(), tokio_postgres::Error> {
    client
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
pub struct PgTokens(pub Arc<Client>);

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

/// Records a dead letter.
pub async fn dead_letter(
    client: &Client,
    d: &crate::runtime::DeadLetter,
) -> Result<(), tokio_postgres::Error> {
    let event = serde_json::to_value(&d.event).unwrap_or(serde_json::Value::Null);
    client
        .execute(
            "INSERT INTO odoo_cdc.dead_letters (sink, key, reason, source_lsn, event) VALUES ($1, $2, $3, $4, $5)",
            &[&d.sink, &d.key, &d.reason, &d.source_lsn, &event],
        )
        .await?;
    Ok(())
}

/// Parks an event in the outbox.
pub async fn park(
    client: &Client,
    sink: &str,
    s: &transforms::Sourced,
) -> Result<(), tokio_postgres::Error> {
    let event = serde_json::to_value(&s.event).unwrap_or(serde_json::Value::Null);
    let lsn = i64::try_from(s.source_commit_lsn).unwrap_or(i64::MAX);
    client
        .execute(
            "INSERT INTO odoo_cdc.outbox (sink, key, source_lsn, event, committed_us) VALUES ($1, $2, $3, $4, $5)",
            &[&sink, &s.event.key(), &lsn, &event, &s.committed_us],
        )
        .await?;
    Ok(())
}

/// The oldest parked events of a sink, in order.
pub async fn parked(
    client: &Client,
    sink: &str,
    limit: i64,
) -> Result<Vec<(i64, transforms::Sourced)>, tokio_postgres::Error> {
    let rows = client
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
pub async fn unpark(client: &Client, id: i64) -> Result<(), tokio_postgres::Error> {
    client
        .execute("DELETE FROM odoo_cdc.outbox WHERE id = $1", &[&id])
        .await?;
    Ok(())
}
