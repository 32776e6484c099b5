//! `odoo-cdc fixtures serve <shopify|wms|accounting|odoo>`: run one emulator standalone so a person
//! can poke it with curl. Prints `service <name> <url>` and serves until interrupted.

use std::io::Write;
use std::time::Duration;

use fixtures::emulator::accounting::{AccountingConfig, AccountingEmulator};
use fixtures::emulator::odoo_rpc::{OdooRpcConfig, OdooRpcEmulator};
use fixtures::emulator::shopify::{ShopifyConfig, ShopifyEmulator};
use fixtures::emulator::wms::{WmsConfig, WmsEmulator};

/// Which emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Emulator {
    /// Shopify Admin GraphQL (inventory) and the storefront.
    Shopify,
    /// The warehouse system.
    Wms,
    /// QuickBooks-style accounting.
    Accounting,
    /// Odoo's external API (XML-RPC, JSON-RPC, JSON-2) over a fixture database (`--db`).
    Odoo,
}

/// Serves one emulator on 127.0.0.1:`port` until Ctrl-C.
pub async fn serve(
    which: Emulator,
    port: u16,
    time_scale: f64,
    webhook_url: Option<String>,
    db: Option<String>,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    // Keep the emulator alive in this scope; each has its own handle type.
    let (_guard, url): (Box<dyn std::any::Any>, String) = match which {
        Emulator::Shopify => {
            let e = ShopifyEmulator::start(
                ShopifyConfig {
                    time_scale,
                    webhook_url,
                    ..ShopifyConfig::default()
                },
                port,
            )
            .await?;
            let url = e.url();
            writeln!(
                out,
                "graphql {}  (header X-Shopify-Access-Token: shpat_emulator)",
                e.graphql_url()
            )?;
            (Box::new(e), url)
        }
        Emulator::Wms => {
            let e = WmsEmulator::start(
                WmsConfig {
                    time_scale,
                    webhook_url,
                    ..WmsConfig::default()
                },
                port,
            )
            .await?;
            let url = e.url();
            writeln!(
                out,
                "api {url}/v1/fulfillment_orders  (header Authorization: Bearer wms-key)"
            )?;
            (Box::new(e), url)
        }
        Emulator::Accounting => {
            let cfg = AccountingConfig {
                time_scale,
                ..AccountingConfig::default()
            };
            let e = AccountingEmulator::start(cfg.clone(), port).await?;
            let url = e.url();
            writeln!(
                out,
                "api {url}/v3/company/{}/journalentry  (token: POST {url}/oauth2/v1/tokens/bearer, refresh token {})",
                cfg.realm_id, cfg.refresh_token
            )?;
            (Box::new(e), url)
        }
        Emulator::Odoo => {
            let db = db.ok_or_else(|| {
                anyhow::anyhow!("the odoo emulator needs the fixture database: --db <postgres URL>")
            })?;
            let cfg = OdooRpcConfig {
                time_scale,
                ..OdooRpcConfig::new(&db)
            };
            let e = OdooRpcEmulator::start(cfg.clone(), port).await?;
            let url = e.url();
            writeln!(
                out,
                "xmlrpc {url}/xmlrpc/2/object  jsonrpc {url}/jsonrpc  (db {}, login {}, api key {})",
                cfg.db_name, cfg.login, cfg.api_key
            )?;
            (Box::new(e), url)
        }
    };
    let name = format!("{which:?}").to_lowercase();
    // The `service` line comes last: a reader may stop reading once it has it, and a closed
    // stdout must not stop the emulator.
    let _ = writeln!(
        out,
        "inspect {url}/_emulator/requests  {url}/_emulator/state  {url}/_emulator/faults"
    );
    let _ = writeln!(out, "service {name} {url}");
    let _ = out.flush();
    drop(out);
    tokio::signal::ctrl_c().await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}
