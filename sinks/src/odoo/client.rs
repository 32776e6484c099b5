//! The Odoo RPC client: one call shape ([`Call`]) over JSON-RPC, XML-RPC or JSON-2. Every call
//! is its own transaction in Odoo; Odoo has no idempotency key, so callers search before they
//! create.

use serde_json::{json, Map, Value};
use tokio::sync::OnceCell;

use super::config::{OdooRpcConfig, Protocol};
use super::error::fault;
use super::xmlrpc;
use crate::policy::{from_response, from_transport, SinkError};

/// One ORM call.
#[derive(Debug, Clone)]
pub enum Call {
    /// `model.search(domain, limit=)`: ids.
    Search {
        /// Model (`sale.order`).
        model: &'static str,
        /// Odoo domain.
        domain: Value,
        /// Most ids.
        limit: Option<u64>,
    },
    /// `model.search_read(domain, fields=, limit=)`: records.
    SearchRead {
        /// Model.
        model: &'static str,
        /// Odoo domain.
        domain: Value,
        /// Fields to read.
        fields: Vec<&'static str>,
        /// Most records.
        limit: Option<u64>,
    },
    /// `model.create(vals)`: the new id.
    Create {
        /// Model.
        model: &'static str,
        /// Values.
        vals: Value,
    },
    /// `model.with_context(context).create(vals)`: the new id (a wizard that reads its
    /// defaults from the context, such as `stock.return.picking`).
    CreateWith {
        /// Model.
        model: &'static str,
        /// Values.
        vals: Value,
        /// Context (`active_id`, `active_model`).
        context: Value,
    },
    /// `model.browse(ids).write(vals)`: true.
    Write {
        /// Model.
        model: &'static str,
        /// Records.
        ids: Vec<i64>,
        /// Values.
        vals: Value,
    },
    /// `model.browse(ids).method(**kwargs)` (a `context` kwarg is the call's context).
    Method {
        /// Model.
        model: &'static str,
        /// Method (`action_confirm`).
        method: &'static str,
        /// Records.
        ids: Vec<i64>,
        /// Named arguments.
        kwargs: Map<String, Value>,
    },
}

impl Call {
    fn model(&self) -> &'static str {
        match self {
            Call::Search { model, .. }
            | Call::SearchRead { model, .. }
            | Call::Create { model, .. }
            | Call::CreateWith { model, .. }
            | Call::Write { model, .. }
            | Call::Method { model, .. } => model,
        }
    }

    fn method(&self) -> &'static str {
        match self {
            Call::Search { .. } => "search",
            Call::SearchRead { .. } => "search_read",
            Call::Create { .. } | Call::CreateWith { .. } => "create",
            Call::Write { .. } => "write",
            Call::Method { method, .. } => method,
        }
    }

    /// What it is, for logs and the audit trail (`sale.order.create`).
    pub fn describe(&self) -> String {
        format!("{}.{}", self.model(), self.method())
    }

    /// Positional arguments and keyword arguments, as `execute_kw` takes them.
    fn execute_kw_args(&self) -> (Value, Value) {
        let limit = |l: &Option<u64>, m: &mut Map<String, Value>| {
            if let Some(l) = l {
                m.insert("limit".into(), json!(l));
            }
        };
        match self {
            Call::Search {
                domain, limit: l, ..
            } => {
                let mut kw = Map::new();
                limit(l, &mut kw);
                (json!([domain]), Value::Object(kw))
            }
            Call::SearchRead {
                domain,
                fields,
                limit: l,
                ..
            } => {
                let mut kw = Map::new();
                kw.insert("fields".into(), json!(fields));
                limit(l, &mut kw);
                (json!([domain]), Value::Object(kw))
            }
            Call::Create { vals, .. } => (json!([vals]), json!({})),
            Call::CreateWith { vals, context, .. } => {
                (json!([vals]), json!({ "context": context }))
            }
            Call::Write { ids, vals, .. } => (json!([ids, vals]), json!({})),
            Call::Method { ids, kwargs, .. } => (json!([ids]), Value::Object(kwargs.clone())),
        }
    }

    /// The named-argument body of JSON-2.
    fn json2_body(&self) -> Value {
        match self {
            Call::Search { domain, limit, .. } => {
                let mut b = json!({ "domain": domain });
                if let Some(l) = limit {
                    b["limit"] = json!(l);
                }
                b
            }
            Call::SearchRead {
                domain,
                fields,
                limit,
                ..
            } => {
                let mut b = json!({ "domain": domain, "fields": fields });
                if let Some(l) = limit {
                    b["limit"] = json!(l);
                }
                b
            }
            Call::Create { vals, .. } => json!({ "vals_list": [vals] }),
            Call::CreateWith { vals, context, .. } => {
                json!({ "vals_list": [vals], "context": context })
            }
            Call::Write { ids, vals, .. } => json!({ "ids": ids, "vals": vals }),
            Call::Method { ids, kwargs, .. } => {
                let mut b = kwargs.clone();
                b.insert("ids".into(), json!(ids));
                Value::Object(b)
            }
        }
    }
}

/// A client of one Odoo database.
pub struct OdooRpc {
    cfg: OdooRpcConfig,
    http: reqwest::Client,
    uid: OnceCell<i64>,
}

impl OdooRpc {
    /// A client (no request is made until the first call).
    pub fn new(cfg: OdooRpcConfig) -> Result<Self, SinkError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| SinkError::permanent(format!("http client: {e}")))?;
        Ok(Self {
            cfg,
            http,
            uid: OnceCell::new(),
        })
    }

    /// The protocol in use.
    pub fn protocol(&self) -> Protocol {
        self.cfg.protocol
    }

    /// Runs a call; `create` answers the new id whatever the protocol.
    pub async fn call(&self, call: &Call) -> Result<Value, SinkError> {
        let what = call.describe();
        let v = match self.cfg.protocol {
            Protocol::Json2 => self.json2(call, &what).await?,
            Protocol::JsonRpc | Protocol::XmlRpc => {
                let uid = self.uid().await?;
                let (args, kwargs) = call.execute_kw_args();
                let params = vec![
                    json!(self.cfg.database),
                    json!(uid),
                    json!(self.cfg.api_key),
                    json!(call.model()),
                    json!(call.method()),
                    args,
                    kwargs,
                ];
                self.service("object", "execute_kw", params, &what).await?
            }
        };
        // JSON-2 creates from a list and answers a list of ids.
        Ok(match (call, v) {
            (Call::Create { .. } | Call::CreateWith { .. }, Value::Array(ids))
                if ids.len() == 1 =>
            {
                ids[0].clone()
            }
            (_, v) => v,
        })
    }

    /// Searches; the ids found.
    pub async fn search(&self, call: &Call) -> Result<Vec<i64>, SinkError> {
        let v = self.call(call).await?;
        v.as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .ok_or_else(|| {
                SinkError::permanent(format!("{}: not a list of ids: {v}", call.describe()))
            })
    }

    async fn uid(&self) -> Result<i64, SinkError> {
        self.uid
            .get_or_try_init(|| async {
                let v = self
                    .service(
                        "common",
                        "authenticate",
                        vec![
                            json!(self.cfg.database),
                            json!(self.cfg.login),
                            json!(self.cfg.api_key),
                            json!({}),
                        ],
                        "authenticate",
                    )
                    .await?;
                v.as_i64().ok_or_else(|| {
                    SinkError::permanent(format!(
                        "authenticate: Odoo refused login {:?} on database {:?} (check the API key)",
                        self.cfg.login, self.cfg.database
                    ))
                })
            })
            .await
            .copied()
    }

    async fn service(
        &self,
        service: &str,
        method: &str,
        params: Vec<Value>,
        what: &str,
    ) -> Result<Value, SinkError> {
        let base = self.cfg.url.trim_end_matches('/');
        if self.cfg.protocol == Protocol::XmlRpc {
            let body = xmlrpc::encode_call(method, &params);
            let resp = self
                .http
                .post(format!("{base}/xmlrpc/2/{service}"))
                .header("content-type", "text/xml")
                .body(body)
                .send()
                .await
                .map_err(|e| from_transport(what, e))?;
            let status = resp.status().as_u16();
            let retry = crate::retry_after(&resp);
            let text = resp.text().await.map_err(|e| from_transport(what, e))?;
            if status != 200 {
                return Err(from_response(what, status, retry.as_deref(), &text));
            }
            return match xmlrpc::decode_response(&text)
                .map_err(|e| SinkError::transient(format!("{what}: unreadable answer: {e}")))?
            {
                xmlrpc::Response::Value(v) => Ok(v),
                // Odoo ran the method, which returned None, and its marshaller (allow_none off)
                // could not say so: the call succeeded with no value.
                xmlrpc::Response::Fault(1, text)
                    if text.contains("cannot marshal None unless allow_none is enabled") =>
                {
                    Ok(Value::Null)
                }
                xmlrpc::Response::Fault(code, text) => {
                    let name = match code {
                        2 => "odoo.exceptions.UserError",
                        3 => "odoo.exceptions.AccessDenied",
                        4 => "odoo.exceptions.AccessError",
                        _ => "builtins.Exception",
                    };
                    Err(fault(what, name, &text))
                }
            };
        }
        let body = json!({
            "jsonrpc": "2.0",
            "method": "call",
            "id": 1,
            "params": {"service": service, "method": method, "args": params},
        });
        let resp = self
            .http
            .post(format!("{base}/jsonrpc"))
            .json(&body)
            .send()
            .await
            .map_err(|e| from_transport(what, e))?;
        let status = resp.status().as_u16();
        let retry = crate::retry_after(&resp);
        let text = resp.text().await.map_err(|e| from_transport(what, e))?;
        if status != 200 {
            return Err(from_response(what, status, retry.as_deref(), &text));
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| {
            SinkError::transient(format!(
                "{what}: unreadable answer ({e}): {}",
                text.chars().take(200).collect::<String>()
            ))
        })?;
        if let Some(err) = v.get("error") {
            let name = err["data"]["name"].as_str().unwrap_or("builtins.Exception");
            let message = err["data"]["message"]
                .as_str()
                .or_else(|| err["message"].as_str())
                .unwrap_or("");
            return Err(fault(what, name, message));
        }
        Ok(v.get("result").cloned().unwrap_or(Value::Null))
    }

    async fn json2(&self, call: &Call, what: &str) -> Result<Value, SinkError> {
        let base = self.cfg.url.trim_end_matches('/');
        let resp = self
            .http
            .post(format!("{base}/json/2/{}/{}", call.model(), call.method()))
            .header("authorization", format!("bearer {}", self.cfg.api_key))
            .header("x-odoo-database", &self.cfg.database)
            .json(&call.json2_body())
            .send()
            .await
            .map_err(|e| from_transport(what, e))?;
        let status = resp.status().as_u16();
        let retry = crate::retry_after(&resp);
        let text = resp.text().await.map_err(|e| from_transport(what, e))?;
        if status == 200 {
            return serde_json::from_str(&text)
                .map_err(|e| SinkError::transient(format!("{what}: unreadable answer: {e}")));
        }
        match serde_json::from_str::<Value>(&text) {
            Ok(err) if err["name"].is_string() && status < 500 => Err(fault(
                what,
                err["name"].as_str().unwrap_or(""),
                err["message"].as_str().unwrap_or(""),
            )),
            _ => Err(from_response(what, status, retry.as_deref(), &text)),
        }
    }
}
