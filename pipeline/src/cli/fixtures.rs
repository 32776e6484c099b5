//! `odoo-cdc fixtures seed --db URL`: the Odoo 18-shaped schema and data, in one transaction,
//! into an empty database of one's own PostgreSQL.
//!
//! `odoo-cdc fixtures serve <shopify|wms|accounting|odoo>`: run one emulator standalone so a person
//! can poke it with curl. Prints `service <name> <url>` and serves until interrupted. The
//! Shopify emulator can be given a catalogue (`--catalogue FILE|URL`), so a real Odoo's products
//! can be pointed at it.

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
    catalogue: Option<String>,
) -> anyhow::Result<()> {
    let items = match (&catalogue, which) {
        (Some(c), Emulator::Shopify) => {
            let items = read_catalogue(c).await?;
            let known = ShopifyConfig::default().locations;
            if let Some(i) = items.iter().find(|i| !known.contains_key(&i.location_id)) {
                anyhow::bail!(
                    "catalogue {c}: {} is at location {}, the emulator has locations {:?}",
                    i.sku,
                    i.location_id,
                    known.keys().collect::<Vec<_>>()
                );
            }
            Some(items)
        }
        (Some(_), _) => anyhow::bail!("--catalogue is for the shopify emulator"),
        (None, _) => None,
    };
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
            if let Some(items) = items {
                let mut by_sku: std::collections::BTreeMap<String, Vec<(u64, i64)>> =
                    std::collections::BTreeMap::new();
                for i in &items {
                    by_sku
                        .entry(i.sku.clone())
                        .or_default()
                        .push((i.location_id, i.available));
                }
                for (sku, levels) in &by_sku {
                    e.add_item(sku, levels);
                }
                writeln!(out, "catalogue {} SKUs", by_sku.len())?;
            }
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

/// One catalogue entry: a SKU stocked at a location.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueItem {
    /// SKU.
    pub sku: String,
    /// Units available.
    pub available: i64,
    /// Shopify location id (default 1).
    #[serde(default = "first_location")]
    pub location_id: u64,
}

fn first_location() -> u64 {
    1
}

/// Reads a catalogue from a file or an http(s) URL.
pub async fn read_catalogue(source: &str) -> anyhow::Result<Vec<CatalogueItem>> {
    let text = if source.starts_with("http://") || source.starts_with("https://") {
        let resp = reqwest::get(source).await?;
        if !resp.status().is_success() {
            anyhow::bail!("catalogue {source}: HTTP {}", resp.status());
        }
        resp.text().await?
    } else {
        std::fs::read_to_string(source).map_err(|e| anyhow::anyhow!("catalogue {source}: {e}"))?
    };
    parse_catalogue(&text).map_err(|e| anyhow::anyhow!("catalogue {source}: {e}"))
}

/// Parses a catalogue: a JSON list of items, or CSV lines `sku,available[,location_id]`
/// (`#` comments, blank lines and a `sku,...` header are skipped).
pub fn parse_catalogue(text: &str) -> Result<Vec<CatalogueItem>, String> {
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(text).map_err(|e| format!("not a JSON list of items: {e}"));
    }
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.to_lowercase().starts_with("sku,") {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let (sku, available, location) = match fields.as_slice() {
            [sku, available] => (*sku, *available, "1"),
            [sku, available, location] => (*sku, *available, *location),
            _ => {
                return Err(format!(
                    "line {}: expected sku,available[,location_id]: {line:?}",
                    n + 1
                ))
            }
        };
        if sku.is_empty() {
            return Err(format!("line {}: empty SKU", n + 1));
        }
        out.push(CatalogueItem {
            sku: sku.to_string(),
            available: available.parse().map_err(|_| {
                format!(
                    "line {}: available {available:?} is not a whole number",
                    n + 1
                )
            })?,
            location_id: location
                .parse()
                .map_err(|_| format!("line {}: location_id {location:?} is not a number", n + 1))?,
        });
    }
    if out.is_empty() {
        return Err("no items".into());
    }
    Ok(out)
}

/// Loads the fixture schema and data into the database at `url` in one transaction; refuses a
/// database that already has an Odoo schema (nothing is written then, or on any failure).
pub async fn seed(
    url: &str,
    cfg: &fixtures::odoo::SeedConfig,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let source: cdc::SourceConfig = url.parse()?;
    let client = source.sql_client().await?;
    let taken: bool = client
        .query_one("SELECT to_regclass('public.sale_order') IS NOT NULL", &[])
        .await?
        .get(0);
    if taken {
        anyhow::bail!(
            "{}:{}/{} already has a sale_order table: seed an empty database (nothing was written)",
            source.host,
            source.port,
            source.dbname
        );
    }
    client.batch_execute("BEGIN").await?;
    match fixtures::odoo::create_schema_and_data(&client, cfg).await {
        Ok(info) => {
            client.batch_execute("COMMIT").await?;
            writeln!(
                out,
                "seeded {}:{}/{}: {} products, {} customers, {} warehouses",
                source.host,
                source.port,
                source.dbname,
                info.products.len(),
                info.customers.len(),
                info.warehouses.len()
            )?;
            writeln!(
                out,
                "next: create odoo-cdc's role and grants (README, \"Grants\"), then `odoo-cdc slot create --source URL`"
            )?;
            Ok(())
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(anyhow::anyhow!("seeding failed, nothing was written: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogues_read_as_csv_or_json_and_bad_lines_are_named() {
        let csv = "# from Odoo\nsku,available,location_id\nDESK0005, 65\nE-COM07,350,2\n";
        assert_eq!(
            parse_catalogue(csv).unwrap(),
            vec![
                CatalogueItem {
                    sku: "DESK0005".into(),
                    available: 65,
                    location_id: 1
                },
                CatalogueItem {
                    sku: "E-COM07".into(),
                    available: 350,
                    location_id: 2
                },
            ]
        );
        let json = r#"[{"sku": "A", "available": 3}]"#;
        assert_eq!(parse_catalogue(json).unwrap()[0].location_id, 1);
        assert!(parse_catalogue("A,ten").unwrap_err().contains("line 1"));
        assert!(parse_catalogue("A").unwrap_err().contains("sku,available"));
        assert!(parse_catalogue("").unwrap_err().contains("no items"));
        assert!(parse_catalogue(r#"[{"sku": "A"}]"#).is_err());
    }
}
