//! Odoo RPC settings.

use std::time::Duration;

/// Default request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which of Odoo's external APIs to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `POST /jsonrpc`, `object.execute_kw` (Odoo 8 to 19).
    JsonRpc,
    /// `POST /xmlrpc/2/object`, `execute_kw`.
    XmlRpc,
    /// Odoo 19: `POST /json/2/<model>/<method>` with a bearer API key.
    Json2,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "jsonrpc" => Ok(Self::JsonRpc),
            "xmlrpc" => Ok(Self::XmlRpc),
            "json2" => Ok(Self::Json2),
            other => Err(format!(
                "unknown protocol {other:?} (expected jsonrpc, xmlrpc or json2)"
            )),
        }
    }
}

/// Where and how to reach Odoo.
#[derive(Clone)]
pub struct OdooRpcConfig {
    /// Base URL (`https://erp.example.com`).
    pub url: String,
    /// Database name.
    pub database: String,
    /// Login of the integration user.
    pub login: String,
    /// API key (never logged).
    pub api_key: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Request timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for OdooRpcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OdooRpcConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("login", &self.login)
            .field("api_key", &"***")
            .field("protocol", &self.protocol)
            .finish()
    }
}
