//! The WMS REST client: create (or amend) a fulfillment order keyed by reference, cancel by
//! reference.

use serde_json::{json, Value};
use transforms::events::{PickLine, ShipTo};

use super::config::WmsConfig;
use crate::policy::{from_response, from_transport, SinkError};

/// What the WMS answered to a create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new order.
    New,
    /// The reference existed with these lines (a retry): success.
    AlreadyThere,
    /// The reference existed with other lines (what Odoo reserved changed before it
    /// shipped): its lines were replaced, never a second order.
    Amended,
    /// The reference existed and has shipped already: nothing can change it.
    Shipped,
}

/// The lines of a WMS order as (sku, units), sorted.
fn lines_of(order: &Value) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = order["lines"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter_map(|l| Some((l["sku"].as_str()?.to_string(), l["quantity"].as_u64()?)))
        .collect();
    out.sort();
    out
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

    /// Creates a fulfillment order for `lines` (what Odoo reserved), or brings the existing
    /// one with this reference to them: a duplicate reference (409) with the same lines is
    /// success, with other lines it is amended (`PUT`), never created twice. What the WMS
    /// answers is read back: an order whose lines differ from the request is a failure.
    pub async fn create(
        &self,
        reference: &str,
        lines: &[PickLine],
        ship_to: &ShipTo,
        carrier: Option<&str>,
    ) -> Result<Created, SinkError> {
        let mut qty_lines = Vec::new();
        let mut wanted = Vec::new();
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
            wanted.push((l.sku.clone(), q));
        }
        wanted.sort();
        let ship_to = json!({"name": ship_to.name, "street": ship_to.street, "city": ship_to.city, "zip": ship_to.zip,
                             "state": ship_to.state, "country": ship_to.country});
        let body = json!({
            "reference": reference,
            "lines": qty_lines,
            "ship_to": ship_to,
            "carrier": carrier,
        });
        let (status, answer) = self
            .send(
                self.http
                    .post(format!("{}/v1/fulfillment_orders", self.cfg.base_url)),
                &body,
                "create",
                reference,
            )
            .await?;
        let existing = match status {
            200 | 201 => {
                return if lines_of(&answer) == wanted {
                    Ok(Created::New)
                } else {
                    Err(SinkError::transient(format!(
                        "wms create {reference}: the WMS answered lines {:?}, asked {wanted:?}",
                        lines_of(&answer)
                    )))
                };
            }
            _ => answer["order"].clone(),
        };
        if existing["status"] == "shipped" {
            return Ok(Created::Shipped);
        }
        if existing["status"] == "open" && lines_of(&existing) == wanted {
            return Ok(Created::AlreadyThere);
        }
        let (status, amended) = self
            .send(
                self.http.put(format!(
                    "{}/v1/fulfillment_orders/{}",
                    self.cfg.base_url,
                    percent_encode(reference)
                )),
                &json!({"lines": qty_lines, "ship_to": ship_to, "carrier": carrier}),
                "amend",
                reference,
            )
            .await?;
        match status {
            409 => Ok(Created::Shipped),
            _ if lines_of(&amended) == wanted => Ok(Created::Amended),
            _ => Err(SinkError::transient(format!(
                "wms amend {reference}: the WMS answered lines {:?}, asked {wanted:?}",
                lines_of(&amended)
            ))),
        }
    }

    /// Sends a request; 2xx and 409 answer (status, body), anything else is an error.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        body: &Value,
        what: &str,
        reference: &str,
    ) -> Result<(u16, Value), SinkError> {
        let resp = req
            .bearer_auth(&self.cfg.api_key)
            .json(body)
            .send()
            .await
            .map_err(|e| from_transport(&format!("wms {what}"), e))?;
        let status = resp.status().as_u16();
        let retry = crate::retry_after(&resp);
        let text = resp.text().await.unwrap_or_default();
        match status {
            200 | 201 | 409 => Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null))),
            _ => Err(from_response(
                &format!("wms {what} {reference}"),
                status,
                retry.as_deref(),
                &text,
            )),
        }
    }

    /// The order with this reference as the WMS has it (`None`: unknown).
    pub async fn order(&self, reference: &str) -> Result<Option<Value>, SinkError> {
        let resp = self
            .http
            .get(format!(
                "{}/v1/fulfillment_orders/{}",
                self.cfg.base_url,
                percent_encode(reference)
            ))
            .bearer_auth(&self.cfg.api_key)
            .send()
            .await
            .map_err(|e| from_transport("wms read", e))?;
        let status = resp.status().as_u16();
        let retry = crate::retry_after(&resp);
        let text = resp.text().await.unwrap_or_default();
        match status {
            404 => Ok(None),
            200 => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| SinkError::transient(format!("wms read {reference}: not JSON: {e}"))),
            _ => Err(from_response(
                &format!("wms read {reference}"),
                status,
                retry.as_deref(),
                &text,
            )),
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
