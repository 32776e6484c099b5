//! The accounting API client: OAuth2 bearer tokens renewed with the rolling refresh token
//! (the newest one is handed to a [`TokenStore`] before it is used), journal entries with a
//! `requestid`, and the batch endpoint.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::config::AccountingConfig;
use crate::policy::{from_response, from_transport, Class, SinkError};

/// A boxed future, so token stores can be trait objects.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Where the newest refresh token is kept (PostgreSQL in production): a refresh token rolls on
/// every use, so losing the newest one locks odoo-cdc out.
pub trait TokenStore: Send + Sync {
    /// The refresh token to use.
    fn load(&self) -> BoxFuture<'_, Result<Option<String>, String>>;
    /// Persists a new refresh token; called before the old one is dropped.
    fn save<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<(), String>>;
}

/// A token store in memory (tests, the demo).
#[derive(Debug, Default)]
pub struct MemoryTokens(pub std::sync::Mutex<Option<String>>);

impl MemoryTokens {
    /// A store holding `token`.
    pub fn with(token: &str) -> Self {
        Self(std::sync::Mutex::new(Some(token.to_string())))
    }

    /// The token it holds.
    pub fn current(&self) -> Option<String> {
        self.0.lock().ok().and_then(|g| g.clone())
    }
}

impl TokenStore for MemoryTokens {
    fn load(&self) -> BoxFuture<'_, Result<Option<String>, String>> {
        let v = self.current();
        Box::pin(async move { Ok(v) })
    }

    fn save<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<(), String>> {
        let r = self
            .0
            .lock()
            .map(|mut g| *g = Some(token.to_string()))
            .map_err(|_| "token store poisoned".to_string());
        Box::pin(async move { r })
    }
}

/// The accounting client.
pub struct AccountingClient {
    cfg: AccountingConfig,
    http: reqwest::Client,
    tokens: Box<dyn TokenStore>,
    access: Option<(String, Instant)>,
    /// A rotated refresh token the store could not save yet (its database was down): the
    /// newest one, used for the next refresh and saved again before anything else. Losing
    /// it would lock odoo-cdc out (the old token is already invalid).
    unsaved: Option<String>,
}

impl AccountingClient {
    /// A client; tokens come from `tokens`.
    pub fn new(cfg: AccountingConfig, tokens: Box<dyn TokenStore>) -> Result<Self, SinkError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| SinkError::permanent(format!("http client: {e}")))?;
        Ok(Self {
            cfg,
            http,
            tokens,
            access: None,
            unsaved: None,
        })
    }

    /// Saves a rotated refresh token the store could not take before.
    async fn persist_pending(&mut self) {
        if let Some(t) = self.unsaved.clone() {
            match self.tokens.save(&t).await {
                Ok(()) => {
                    self.unsaved = None;
                    tracing::info!("rotated accounting refresh token saved");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot save the rotated accounting refresh token yet; it is kept in memory")
                }
            }
        }
    }

    async fn refresh(&mut self) -> Result<String, SinkError> {
        self.persist_pending().await;
        let refresh = match &self.unsaved {
            Some(t) => t.clone(),
            None => self
                .tokens
                .load()
                .await
                .map_err(|e| SinkError::transient(format!("reading the refresh token: {e}")))?
                .ok_or_else(|| {
                    SinkError::permanent(
                        "no refresh token: authorize odoo-cdc with the accounting system",
                    )
                })?,
        };
        let mut refresh = refresh;
        let mut rotated_elsewhere = 0;
        let text = loop {
            let resp = self
                .http
                .post(format!("{}/oauth2/v1/tokens/bearer", self.cfg.base_url))
                .basic_auth(&self.cfg.client_id, Some(&self.cfg.client_secret))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("grant_type=refresh_token&refresh_token={refresh}"))
                .send()
                .await
                .map_err(|e| from_transport("token refresh", e))?;
            let status = resp.status().as_u16();
            let retry = crate::retry_after(&resp);
            let text = resp.text().await.unwrap_or_default();
            if status == 200 {
                break text;
            }
            // Every odoo-cdc process of a deployment (scaled-out workers, the workbench's
            // and reconciliation's lookups) refreshes from the one stored token: one that
            // loaded it just before another rotated it is refused. The store then holds the
            // newer one; refused with that too, the grant itself is gone.
            if status == 400
                && text.contains("invalid_grant")
                && self.unsaved.is_none()
                && rotated_elsewhere < 3
            {
                if let Ok(Some(latest)) = self.tokens.load().await {
                    if latest != refresh {
                        tracing::info!("the accounting refresh token was rotated by another odoo-cdc process; refreshing with the newest");
                        refresh = latest;
                        rotated_elsewhere += 1;
                        continue;
                    }
                }
            }
            return Err(from_response(
                "token refresh",
                status,
                retry.as_deref(),
                &text,
            ));
        };
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| SinkError::transient(format!("token refresh: bad answer: {e}")))?;
        let access = v["access_token"]
            .as_str()
            .ok_or_else(|| SinkError::transient("token refresh: no access_token"))?
            .to_string();
        if let Some(new_refresh) = v["refresh_token"].as_str() {
            // The old token is invalid from now on: never drop the new one.
            self.unsaved = Some(new_refresh.to_string());
            self.persist_pending().await;
        }
        let ttl = Duration::from_secs(v["expires_in"].as_u64().unwrap_or(3600));
        // Renew a minute early.
        self.access = Some((
            access.clone(),
            Instant::now() + ttl.saturating_sub(Duration::from_secs(60)),
        ));
        Ok(access)
    }

    async fn token(&mut self) -> Result<String, SinkError> {
        if self.unsaved.is_some() {
            self.persist_pending().await;
        }
        match &self.access {
            Some((t, until)) if Instant::now() < *until => Ok(t.clone()),
            _ => self.refresh().await,
        }
    }

    /// POSTs to the company API with a requestid; renews the token once on 401.
    pub async fn post(
        &mut self,
        path: &str,
        requestid: &str,
        body: &Value,
    ) -> Result<Value, SinkError> {
        let url = format!(
            "{}/v3/company/{}/{path}",
            self.cfg.base_url, self.cfg.realm_id
        );
        self.call(path, |http, token| {
            http.post(&url)
                .query(&[("requestid", requestid), ("minorversion", "75")])
                .bearer_auth(token)
                .json(body)
        })
        .await
    }

    /// Runs a QuickBooks query (`select * from JournalEntry ...`): the `QueryResponse`
    /// object; renews the token once on 401.
    pub async fn query(&mut self, query: &str) -> Result<Value, SinkError> {
        let url = format!(
            "{}/v3/company/{}/query",
            self.cfg.base_url, self.cfg.realm_id
        );
        let v = self
            .call("query", |http, token| {
                http.get(&url)
                    .query(&[("query", query), ("minorversion", "75")])
                    .bearer_auth(token)
            })
            .await?;
        Ok(v.get("QueryResponse").cloned().unwrap_or(Value::Null))
    }

    /// Sends the request `build` makes with the current access token: the answer's JSON, a
    /// Fault (inside a 200 too) as a permanent error; on a 401 the token is renewed and the
    /// request sent once more.
    async fn call(
        &mut self,
        what: &str,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<Value, SinkError> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let resp = build(&self.http, &token)
                .send()
                .await
                .map_err(|e| from_transport(what, e))?;
            let status = resp.status().as_u16();
            let retry = crate::retry_after(&resp);
            let text = resp.text().await.unwrap_or_default();
            if status == 401 && attempt == 0 {
                self.access = None;
                continue;
            }
            if status != 200 {
                return Err(from_response(what, status, retry.as_deref(), &text));
            }
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| SinkError::transient(format!("{what}: bad answer: {e}")))?;
            if let Some(f) = v.get("Fault") {
                // A Fault inside a 200 is still a fault.
                return Err(SinkError {
                    class: Class::Permanent,
                    message: format!("{what}: {f}"),
                    retry_after: None,
                    source: None,
                });
            }
            return Ok(v);
        }
        Err(SinkError::transient(format!(
            "{what}: unauthorized after a token refresh"
        )))
    }

    /// The entry JSON of the batch or single endpoint.
    pub fn batch_body(items: &[(String, Value)]) -> Value {
        json!({"BatchItemRequest": items.iter().map(|(bid, e)| json!({"bId": bid, "operation": "create", "JournalEntry": e})).collect::<Vec<_>>()})
    }
}

impl<T: TokenStore> TokenStore for std::sync::Arc<T> {
    fn load(&self) -> BoxFuture<'_, Result<Option<String>, String>> {
        (**self).load()
    }

    fn save<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<(), String>> {
        (**self).save(token)
    }
}
