//! The WMS REST client: create a fulfillment order keyed by reference, cancel by reference.

use serde_json::{json, Value};
use transforms::events::{PickLine, ShipTo};

use super::config::WmsConfig;
use crate::policy::{from_response, from_transport, SinkError};

/// What the WMS answered to a create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new order.
    New,
    /// The reference existed (a retry): success.
    AlreadyThere,
}

/// A WMS client.
pub struct WmsClient {
    cfg: WmsConfig,
    http: reqwest::Client,
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl WmsClient {
    /// A client.
    pub fn new(cfg: WmsConfig) -> Result<Self, SinkError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| SinkError::permanent(format!("http client: {e}")))?;
        Ok(Self { cfg, http })
    }

    /// Creates a fulfillment order; a duplicate reference (409) is success.
    pub async fn create(
        &self,
        reference: &str,
        lines: &[PickLine],
        ship_to: &ShipTo,
        carrier: Option<&str>,
    ) -> Result<Created, SinkError> {
        let mut qty_lines = Vec::new();
        for l in lines {
            let q: u64 = l.quantity.trunc().to_string().parse().map_err(|_| {
                SinkError::permanent(format!(
                    "{reference}: quantity {} of {} is not a whole number of units",
                    l.quantity, l.sku
                ))
            })?;
            if !l.quantity.fract().is_zero() {
                return Err(SinkError::permanent(format!(
                    "{reference}: quantity {} of {} is not a whole number of units",
                    l.quantity, l.sku
                )));
            }
            qty_lines.push(json!({"sku": l.sku, "quantity": q}));
        }
        let body = json!({
            "reference": reference,
            "lines": qty_lines,
            "ship_to": {"name": ship_to.name, "street": ship_to.street, "city": ship_to.city, "zip": ship_to.zip},
            "carrier": carrier,
        });
        let resp = self
            .http
            .post(format!("{}/v1/fulfillment_orders", self.cfg.base_url))
            .bearer_auth(&self.cfg.api_key)
            .json(&body)
            .send()
            .await
            .map_err(|e| from_transport("wms create", e))?;
        let status = resp.status().as_u16();
        let retry = crate::retry_after(&resp);
        match status {
            200 | 201 => Ok(Created::New),
            409 => Ok(Created::AlreadyThere),
            _ => {
                let text = resp.text().await.unwrap_or_default();
                Err(from_response(
                    &format!("wms create {reference}"),
                    status,
                    retry.as_deref(),
                    &text,
                ))
            }
        }
    }

    /// Cancels by reference; an unknown reference is success (nothing to cancel), a shipped one
    /// is permanent.
    pub async fn cancel(&self, reference: &str) -> Result<(), SinkError> {
        let resp = self
            .http
            .post(format!(
                "{}/v1/fulfillment_orders/{}/cancel",
                self.cfg.base_url,
                percent_encode(reference)
            ))
            .bearer_auth(&self.cfg.api_key)
            .send()
            .await
            .map_err(|e| from_transport("wms cancel", e))?;
        let status = resp.status().as_u16();
        let retry = crate::retry_after(&resp);
        match status {
            200 | 404 => Ok(()),
            _ => {
                let text = resp.text().await.unwrap_or_default();
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                Err(from_response(
                    &format!("wms cancel {reference}"),
                    status,
                    retry.as_deref(),
                    &v.to_string(),
                ))
            }
        }
    }
}
