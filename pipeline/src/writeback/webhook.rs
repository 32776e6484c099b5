//! The Shopify webhook receiver (`POST /webhooks/shopify`): the HMAC over the raw body is
//! checked in constant time against the current and the previous secret, the shop domain and
//! the body size are checked, and the webhook is committed to `odoo_cdc.inbox` (unique on
//! `X-Shopify-Event-Id`, falling back to the webhook id, then to the body's digest) before the
//! 200. Answers: 401 bad or missing signature or another shop, 413 too large, 503 when the
//! inbox cannot be written (Shopify retries), 200 otherwise, a duplicate included. A correctly
//! signed webhook is never refused for its content: one the inbox worker cannot apply (not
//! JSON, not the topic's shape, no order id) is dead-lettered there with the reason.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::Notify;
use transforms::shopify::{self, Topic};

pub use crate::runtime::stats::ReceiverStats;

/// Receiver settings.
#[derive(Clone)]
pub struct ReceiverConfig {
    /// Secrets tried in turn (current first, then the previous one while rotating).
    pub secrets: Vec<String>,
    /// The shop.
    pub shop_domain: String,
    /// Largest body.
    pub max_body_bytes: usize,
}

/// The receiver's state.
pub struct Receiver {
    cfg: ReceiverConfig,
    db: Arc<crate::state::StateDb>,
    wake: Arc<Notify>,
    /// Counters.
    pub stats: Arc<ReceiverStats>,
    guard: Option<Arc<sinks::shopify::GuardChannel>>,
}

impl Receiver {
    /// A receiver writing to the inbox through `db`, waking the inbox worker on `wake`.
    pub fn new(
        cfg: ReceiverConfig,
        db: Arc<crate::state::StateDb>,
        wake: Arc<Notify>,
        stats: Arc<ReceiverStats>,
    ) -> Self {
        Self {
            cfg,
            db,
            wake,
            stats,
            guard: None,
        }
    }

    /// Tells the runtime's oversell guard about every order received.
    pub fn with_guard(mut self, guard: Arc<sinks::shopify::GuardChannel>) -> Self {
        self.guard = Some(guard);
        self
    }
}

/// Whether `signature` (base64) is the HMAC-SHA256 of `body` under one of `secrets`, compared
/// in constant time.
pub fn verify(secrets: &[String], body: &[u8], signature: &str) -> bool {
    let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    secrets.iter().filter(|s| !s.is_empty()).any(|secret| {
        Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .map(|mut mac| {
                mac.update(body);
                mac.verify_slice(&sig).is_ok()
            })
            .unwrap_or(false)
    })
}

/// The routes (`POST /webhooks/shopify`).
pub fn router(receiver: Arc<Receiver>) -> Router {
    let limit = receiver.cfg.max_body_bytes;
    let stats = receiver.stats.clone();
    Router::new()
        .route("/webhooks/shopify", post(receive))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::map_response(
            move |res: axum::response::Response| {
                let stats = stats.clone();
                async move {
                    count_answer(&stats, res.status(), limit);
                    res
                }
            },
        ))
        .with_state(receiver)
}

/// Counts an answer by status; the body limit's 413 is logged here (it never reaches the handler).
fn count_answer(stats: &ReceiverStats, status: StatusCode, limit: usize) {
    if let Ok(mut m) = stats.answers.lock() {
        *m.entry(status.as_u16()).or_default() += 1;
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        tracing::warn!(%status, max_body_bytes = limit, "webhook refused: body larger than webhooks.max_body_bytes");
    }
}

pub(crate) fn hex_digest(body: &[u8]) -> String {
    use sha2::Digest;
    Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// A webhook to commit to the inbox.
pub(crate) struct Entry<'a> {
    /// The event's id (unique in the inbox).
    pub event_id: &'a str,
    /// The delivery's id.
    pub webhook_id: Option<&'a str>,
    /// Topic.
    pub topic: &'a str,
    /// Who sent it (the shop's domain, `wms`).
    pub source: &'a str,
    /// The ordering key (rows of one key are applied in order).
    pub key: &'a str,
    /// Raw body.
    pub payload: &'a str,
    /// When the sender says the event happened.
    pub triggered_at: Option<&'a str>,
    /// The event's place among its key's (a warehouse parcel's `sequence`).
    pub seq: Option<i32>,
}

/// Commits a webhook to the inbox in one transaction with its audit line and the worker's
/// notification: `Some(id)` when new, `None` for an event already there. A connection lost
/// since the last webhook (a PostgreSQL restart) is replaced and the insert tried once more.
pub(crate) async fn commit(
    state: &crate::state::StateDb,
    e: &Entry<'_>,
) -> (
    Result<Option<tokio_postgres::Row>, crate::state::StateError>,
    Option<std::sync::Arc<tokio_postgres::Client>>,
) {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
        &e.event_id,
        &e.webhook_id,
        &e.topic,
        &e.source,
        &e.key,
        &e.payload,
        &e.triggered_at,
        &e.seq,
    ];
    let mut inserted = Err(crate::state::StateError::Unavailable("not tried".into()));
    let mut db = None;
    for _ in 0..2 {
        let c = match state.client().await {
            Ok(c) => c,
            Err(err) => {
                inserted = Err(err);
                break;
            }
        };
        inserted = c
            .query_opt(
                // One commit: the inbox row, its audit line and the notification.
                "WITH ins AS (INSERT INTO odoo_cdc.inbox (event_id, webhook_id, topic, shop_domain, order_key, payload, triggered_at, seq) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_id) DO NOTHING RETURNING id), \
                 aud AS (INSERT INTO odoo_cdc.audit (shopify_id, inbox_id, kind, detail) \
                 SELECT $5, id, 'webhook', $3 || ' event ' || $1 || ' accepted' FROM ins) \
                 SELECT id, pg_notify('odoo_cdc_inbox', id::text) FROM ins",
                &params,
            )
            .await
            .map_err(crate::state::StateError::from);
        let closed = c.is_closed();
        db = Some(c);
        if inserted.is_ok() || !closed {
            break;
        }
    }
    (inserted, db)
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let started = Instant::now();
    let refuse = |status: StatusCode, why: &'static str| {
        let counter = if status == StatusCode::UNAUTHORIZED {
            &r.stats.unauthorized
        } else {
            &r.stats.malformed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%status, why, "webhook refused");
        (status, why)
    };
    let Some(signature) = header(&headers, "x-shopify-hmac-sha256") else {
        return refuse(StatusCode::UNAUTHORIZED, "missing X-Shopify-Hmac-Sha256");
    };
    if !verify(&r.cfg.secrets, &body, signature) {
        return refuse(StatusCode::UNAUTHORIZED, "bad signature");
    }
    let shop = header(&headers, "x-shopify-shop-domain").unwrap_or("");
    if !shop.eq_ignore_ascii_case(&r.cfg.shop_domain) {
        return refuse(StatusCode::UNAUTHORIZED, "webhook from another shop");
    }
    // From here on the webhook is Shopify's word: whatever its content, it is committed and
    // then applied or dead-lettered with the reason by the inbox worker, never refused (a
    // refused webhook is retried a few times and then dropped by Shopify).
    let topic_name = header(&headers, "x-shopify-topic").unwrap_or("(missing)");
    let topic = Topic::parse(topic_name);
    if topic.is_none() && topic_name != "(missing)" {
        // A topic odoo-cdc does not apply: acknowledged, so Shopify keeps the subscription.
        tracing::info!(
            topic = topic_name,
            "webhook topic not applied; acknowledged"
        );
        return (StatusCode::OK, "ignored topic");
    }
    let webhook_id = header(&headers, "x-shopify-webhook-id");
    // Without either id, the body's digest: a repeat of the same body is still one event.
    let digest;
    let event_id = match header(&headers, "x-shopify-event-id").or(webhook_id) {
        Some(e) => e,
        None => {
            digest = format!("sha256:{}", hex_digest(&body));
            &digest
        }
    };
    let text = String::from_utf8_lossy(&body);
    let payload = serde_json::from_str::<Value>(&text).unwrap_or(Value::Null);
    let order_key = topic
        .and_then(|t| shopify::order_key(t, &payload))
        .unwrap_or_else(|| format!("unknown:{event_id}"));
    let topic_stored: String =
        topic.map_or_else(|| topic_name.to_string(), |t| t.as_str().to_string());
    let (inserted, db) = commit(
        &r.db,
        &Entry {
            event_id,
            webhook_id,
            topic: &topic_stored,
            source: shop,
            key: &order_key,
            payload: text.as_ref(),
            triggered_at: header(&headers, "x-shopify-triggered-at"),
            seq: None,
        },
    )
    .await;
    match inserted {
        Ok(Some(row)) => {
            let id: i64 = row.get(0);
            if let (Some(guard), Some(Topic::OrderCreate)) = (&r.guard, topic) {
                guard.send(sinks::shopify::GuardNote::Received {
                    order: order_key.clone(),
                    lines: crate::writeback::inbox::sold(&payload),
                });
            }
            r.wake.notify_one();
            r.stats.accepted.fetch_add(1, Ordering::Relaxed);
            r.stats.latency.observe(started.elapsed().as_secs_f64());
            tracing::debug!(inbox = id, %order_key, "webhook committed to the inbox");
            (StatusCode::OK, "accepted")
        }
        Ok(None) => {
            r.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            let Some(db) = db else {
                return (StatusCode::OK, "duplicate");
            };
            crate::state::audit(
                &db,
                &order_key,
                None,
                "webhook-duplicate",
                &format!("{topic_stored} event {event_id} delivered again; ignored"),
                None,
            )
            .await;
            (StatusCode::OK, "duplicate")
        }
        Err(e) => {
            tracing::error!(error = %e, status = 503, "cannot commit a webhook to the inbox; Shopify retries it");
            (StatusCode::SERVICE_UNAVAILABLE, "inbox unavailable")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shopify_hmac_vectors_verify_and_others_do_not() {
        let s = |v: &str| vec![v.to_string()];
        assert!(verify(
            &s("hush"),
            b"{\"foo\":\"bar\"}",
            "kxsFTgDOlihbs91PqCBFjROWdTQGkFF0NzCvVuvOLsU="
        ));
        assert!(verify(
            &s("Jefe"),
            b"what do ya want for nothing?",
            "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM="
        ));
        assert!(verify(
            &s("secret"),
            b"",
            "+eZuF5tnR65UEI+C+K3os8Jddv0wr95sOVgixTAZYWk="
        ));
        assert!(!verify(
            &s("hush"),
            b"{\"foo\":\"baz\"}",
            "kxsFTgDOlihbs91PqCBFjROWdTQGkFF0NzCvVuvOLsU="
        ));
        assert!(!verify(&s("hush"), b"{\"foo\":\"bar\"}", "not base64!"));
        // Rotation: the previous secret still verifies.
        assert!(verify(
            &["new".to_string(), "hush".to_string()],
            b"{\"foo\":\"bar\"}",
            "kxsFTgDOlihbs91PqCBFjROWdTQGkFF0NzCvVuvOLsU="
        ));
        assert!(!verify(
            &[String::new()],
            b"",
            "+eZuF5tnR65UEI+C+K3os8Jddv0wr95sOVgixTAZYWk="
        ));
    }
}
