//! The Admin GraphQL client: one POST per operation, GraphQL errors classified (THROTTLED is
//! transient, with the wait the bucket needs), the throttle status remembered for pacing.

use std::time::Duration;

use serde_json::{json, Value};

use super::config::ShopifyConfig;
use crate::policy::{from_response, from_transport, Class, SinkError};

/// The leaky bucket as Shopify last reported it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throttle {
    /// Bucket size.
    pub maximum: f64,
    /// Points available.
    pub available: f64,
    /// Points restored per second.
    pub restore_rate: f64,
}

/// A GraphQL client for the Admin API.
pub struct ShopifyClient {
    cfg: ShopifyConfig,
    http: reqwest::Client,
    /// The last throttle status seen.
    pub throttle: Option<Throttle>,
    /// Cost points spent so far.
    pub points_spent: u64,
    /// Calls made so far.
    pub calls: u64,
}

impl ShopifyClient {
    /// A client.
    pub fn new(cfg: ShopifyConfig) -> Result<Self, SinkError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| SinkError::permanent(format!("http client: {e}")))?;
        Ok(Self {
            cfg,
            http,
            throttle: None,
            points_spent: 0,
            calls: 0,
        })
    }

    /// How many items of `per_item` points (plus `base`) one query may carry: up to `most`, at
    /// most half the bucket as last reported (20 before the first answer).
    pub fn items_per_query(&self, base: f64, per_item: f64, most: usize) -> usize {
        let Some(t) = self.throttle else {
            return most.min(20);
        };
        let fit = ((t.maximum / 2.0 - base) / per_item).floor();
        (fit.max(1.0) as usize).min(most)
    }

    /// Waits until the bucket holds `cost` points (by the last reported status), so steady
    /// traffic never hits THROTTLED.
    pub async fn pace(&self, cost: f64) {
        if let Some(t) = self.throttle {
            if t.available < cost && t.restore_rate > 0.0 {
                let wait =
                    Duration::from_secs_f64(((cost - t.available) / t.restore_rate).min(60.0));
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Runs one operation; returns `data`. A THROTTLED answer (the pacing estimate was short)
    /// waits for the bucket and tries again, a few times, before it is reported as transient.
    pub async fn graphql(&mut self, query: &str, variables: Value) -> Result<Value, SinkError> {
        let mut attempts = 0;
        loop {
            match self.graphql_once(query, variables.clone()).await {
                Err(e) if e.message == "shopify: THROTTLED" && attempts < 5 => {
                    attempts += 1;
                    tokio::time::sleep(e.retry_after.unwrap_or(Duration::from_millis(500))).await;
                }
                other => return other,
            }
        }
    }

    async fn graphql_once(&mut self, query: &str, variables: Value) -> Result<Value, SinkError> {
        self.calls += 1;
        let resp = self
            .http
            .post(&self.cfg.graphql_url)
            .header("x-shopify-access-token", &self.cfg.access_token)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .map_err(|e| from_transport("shopify graphql", e))?;
        let status = resp.status().as_u16();
        let retry = crate::retry_after(&resp);
        let text = resp.text().await.unwrap_or_default();
        if status != 200 {
            return Err(from_response(
                "shopify graphql",
                status,
                retry.as_deref(),
                &text,
            ));
        }
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| SinkError::transient(format!("shopify graphql: bad answer: {e}")))?;
        let cost = &body["extensions"]["cost"];
        if let Some(ts) = cost.get("throttleStatus") {
            self.throttle = Some(Throttle {
                maximum: ts["maximumAvailable"].as_f64().unwrap_or(0.0),
                available: ts["currentlyAvailable"].as_f64().unwrap_or(0.0),
                restore_rate: ts["restoreRate"].as_f64().unwrap_or(0.0),
            });
        }
        if let Some(actual) = cost["actualQueryCost"].as_u64() {
            self.points_spent += actual;
        }
        if let Some(errors) = body
            .get("errors")
            .and_then(Value::as_array)
            .filter(|e| !e.is_empty())
        {
            let throttled = errors
                .iter()
                .any(|e| e["extensions"]["code"] == "THROTTLED");
            if throttled {
                let requested = cost["requestedQueryCost"].as_f64().unwrap_or(10.0);
                let wait = self.throttle.filter(|t| t.restore_rate > 0.0).map(|t| {
                    Duration::from_secs_f64(
                        ((requested - t.available).max(0.0) / t.restore_rate).max(0.1),
                    )
                });
                return Err(SinkError {
                    class: Class::Transient,
                    message: "shopify: THROTTLED".into(),
                    retry_after: wait,
                    source: None,
                });
            }
            return Err(SinkError::permanent(format!(
                "shopify graphql errors: {}",
                Value::Array(errors.clone())
            )));
        }
        Ok(body.get("data").cloned().unwrap_or(Value::Null))
    }
}
