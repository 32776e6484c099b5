//! The Odoo RPC client against the Odoo emulator over each protocol (JSON-RPC, XML-RPC,
//! JSON-2): the same calls give the same records, and Odoo's faults are classified the same
//! way (validation and access denied permanent, an outage transient).

use std::time::Duration;

use fixtures::emulator::odoo_rpc::{OdooRpcConfig as EmuCfg, OdooRpcEmulator};
use fixtures::emulator::{Faults, Outage};
use fixtures::odoo::{self, SeedConfig};
use odoo_cdc_tests::Db;
use serde_json::{json, Map};
use sinks::odoo::{Call, OdooRpc, OdooRpcConfig, Protocol};

fn client(url: &str, protocol: Protocol, key: &str) -> OdooRpc {
    OdooRpc::new(OdooRpcConfig {
        url: url.to_string(),
        database: "odoo".into(),
        login: "admin".into(),
        api_key: key.into(),
        protocol,
        timeout: Duration::from_secs(10),
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_reads_writes_and_classifies_faults_alike() {
    let db = Db::start();
    let c = db.cluster.superuser_client("odoo").await.unwrap();
    let info = odoo::create(
        &c,
        &SeedConfig {
            products: 3,
            customers: 1,
            ..SeedConfig::default()
        },
    )
    .await
    .unwrap();
    let emu = OdooRpcEmulator::start(EmuCfg::new(&db.cluster.superuser_url("odoo")), 0)
        .await
        .unwrap();
    for (n, protocol) in [Protocol::JsonRpc, Protocol::XmlRpc, Protocol::Json2]
        .into_iter()
        .enumerate()
    {
        let rpc = client(&emu.url(), protocol, "odoo-api-key");
        let email = format!("p{n}@example.com");
        let find = Call::Search {
            model: "res.partner",
            domain: json!([["email", "=ilike", email.to_uppercase()]]),
            limit: Some(1),
        };
        assert!(rpc.search(&find).await.unwrap().is_empty(), "{protocol:?}");
        let id = rpc
            .call(&Call::Create {
                model: "res.partner",
                vals: json!({"name": format!("Customer {n}"), "email": email}),
            })
            .await
            .unwrap();
        let id = id.as_i64().unwrap_or_else(|| panic!("{protocol:?}: {id}"));
        assert_eq!(rpc.search(&find).await.unwrap(), vec![id], "{protocol:?}");
        let rows = rpc
            .call(&Call::SearchRead {
                model: "product.product",
                domain: json!([["default_code", "=", info.products[1].sku]]),
                fields: vec!["id", "default_code"],
                limit: None,
            })
            .await
            .unwrap();
        assert_eq!(
            rows[0]["id"].as_i64(),
            Some(i64::from(info.products[1].id)),
            "{protocol:?}: {rows}"
        );

        // An order, confirmed through a method call.
        let order = rpc
            .call(&Call::Create {
                model: "sale.order",
                vals: json!({"partner_id": id, "client_order_ref": format!("rpc-{n}"),
                             "order_line": [[0, 0, {"product_id": info.products[1].id, "product_uom_qty": "1", "price_unit": "9.99"}]]}),
            })
            .await
            .unwrap()
            .as_i64()
            .unwrap();
        rpc.call(&Call::Method {
            model: "sale.order",
            method: "action_confirm",
            ids: vec![order],
            kwargs: Map::new(),
        })
        .await
        .unwrap();
        assert_eq!(
            db.sql(&format!("SELECT state FROM sale_order WHERE id = {order}"))
                .trim(),
            "sale",
            "{protocol:?}"
        );
        // Confirming twice is Odoo's UserError: permanent, with Odoo's text.
        let again = rpc
            .call(&Call::Method {
                model: "sale.order",
                method: "action_confirm",
                ids: vec![order],
                kwargs: Map::new(),
            })
            .await
            .unwrap_err();
        assert!(!again.is_transient(), "{protocol:?}: {again}");

        // Validation: permanent, with Odoo's message.
        let e = rpc
            .call(&Call::Create {
                model: "res.partner",
                vals: json!({"name": ""}),
            })
            .await
            .unwrap_err();
        assert!(!e.is_transient(), "{protocol:?}: {e}");
        assert!(
            e.message.contains("Contacts require a name"),
            "{protocol:?}: {e}"
        );

        // A wrong API key: permanent.
        let bad = client(&emu.url(), protocol, "wrong-key");
        let e = bad.search(&find).await.unwrap_err();
        assert!(!e.is_transient(), "{protocol:?}: {e}");

        // An outage: transient.
        emu.core().set_faults(Faults {
            outages: vec![Outage {
                start_secs: 0.0,
                end_secs: 1e12,
            }],
            ..Faults::default()
        });
        let fresh = client(&emu.url(), protocol, "odoo-api-key");
        let e = fresh.search(&find).await.unwrap_err();
        assert!(e.is_transient(), "{protocol:?}: {e}");
        emu.core().set_faults(Faults::default());
    }
    // Each protocol reached its own endpoint.
    let paths: Vec<String> = emu
        .core()
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    for p in ["/jsonrpc", "/xmlrpc/2/object", "/json/2/res.partner/search"] {
        assert!(paths.iter().any(|x| x == p), "{p} never called: {paths:?}");
    }
}
