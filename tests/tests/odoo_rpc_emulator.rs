//! The Odoo RPC emulator answers `execute_kw` from a real Python client (`xmlrpc.client` from
//! the standard library) exactly as Odoo does, including faults; JSON-RPC and JSON-2 too.

use fixtures::emulator::odoo_rpc::{OdooRpcConfig, OdooRpcEmulator};
use fixtures::odoo::{self, SeedConfig};
use odoo_cdc_tests::Db;
use serde_json::{json, Value};

const PY: &str = r#"
import json, sys, xmlrpc.client
url, db, login, key = sys.argv[1:5]
common = xmlrpc.client.ServerProxy(f"{url}/xmlrpc/2/common", allow_none=True)
out = {"version": common.version()["server_version"]}
uid = common.authenticate(db, login, key, {})
out["uid"] = uid
out["bad_login"] = common.authenticate(db, login, "wrong", {})
models = xmlrpc.client.ServerProxy(f"{url}/xmlrpc/2/object", allow_none=True)
p = models.execute_kw(db, uid, key, "product.product", "search_read",
                      [[["default_code", "=", "SKU-00001"]]], {"fields": ["id", "default_code", "display_name"], "limit": 1})
out["product"] = p
partner = models.execute_kw(db, uid, key, "res.partner", "create", [{"name": "Ada Lovelace", "email": "ada@example.com"}])
out["found"] = models.execute_kw(db, uid, key, "res.partner", "search", [[["email", "=ilike", "ADA@example.com"]]])
out["partner"] = partner
order = models.execute_kw(db, uid, key, "sale.order", "create", [{
    "partner_id": partner, "client_order_ref": "shopify:9007199254740993",
    "order_line": [[0, 0, {"product_id": p[0]["id"], "product_uom_qty": 2, "price_unit": 19.99, "discount": 10}]]}])
out["confirm"] = models.execute_kw(db, uid, key, "sale.order", "action_confirm", [[order]])
out["order"] = models.execute_kw(db, uid, key, "sale.order", "read", [[order]],
                                 {"fields": ["name", "state", "partner_id", "client_order_ref", "amount_untaxed", "note"]})
out["by_ref"] = models.execute_kw(db, uid, key, "sale.order", "search_count", [[["client_order_ref", "=", "shopify:9007199254740993"]]])
def fault(f):
    try:
        f()
    except xmlrpc.client.Fault as e:
        return [e.faultCode, e.faultString]
out["confirm_again"] = fault(lambda: models.execute_kw(db, uid, key, "sale.order", "action_confirm", [[order]]))
out["missing"] = fault(lambda: models.execute_kw(db, uid, key, "sale.order", "no_such_method", [[order]]))
out["denied"] = fault(lambda: models.execute_kw(db, uid, "wrong", "sale.order", "search", [[]]))
out["bad_product"] = fault(lambda: models.execute_kw(db, uid, key, "sale.order", "create", [{
    "partner_id": partner, "order_line": [[0, 0, {"product_id": 999999, "product_uom_qty": 1}]]}]))
print(json.dumps(out))
"#;

#[tokio::test]
async fn python_xmlrpc_client_sees_odoo() {
    let db = Db::start();
    let client = db.cluster.superuser_client("odoo").await.unwrap();
    odoo::create(
        &client,
        &SeedConfig {
            products: 20,
            customers: 5,
            ..SeedConfig::default()
        },
    )
    .await
    .unwrap();
    let emu = OdooRpcEmulator::start(OdooRpcConfig::new(&db.cluster.superuser_url("odoo")), 0)
        .await
        .unwrap();
    let (dbname, login, key, _) = emu.credentials();
    let url = emu.url();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", PY, &url, &dbname, &login, &key])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["version"], "18.0");
    assert_eq!(r["uid"], 2);
    assert_eq!(r["bad_login"], false);
    assert_eq!(r["product"][0]["default_code"], "SKU-00001");
    assert!(r["product"][0]["display_name"]
        .as_str()
        .unwrap()
        .starts_with("[SKU-00001] "));
    assert_eq!(r["found"], json!([r["partner"]]));
    assert_eq!(r["confirm"], true);
    let order = &r["order"][0];
    assert_eq!(order["state"], "sale");
    assert_eq!(
        order["partner_id"],
        json!([r["partner"], "Ada Lovelace"]),
        "many2one reads as [id, name]"
    );
    assert_eq!(order["client_order_ref"], "shopify:9007199254740993");
    assert_eq!(order["amount_untaxed"], 35.98, "2 x 19.99 less 10%");
    assert_eq!(order["note"], false, "empty fields read as False");
    assert_eq!(r["by_ref"], 1);
    assert_eq!(r["confirm_again"][0], 2, "UserError is fault 2");
    assert!(r["confirm_again"][1]
        .as_str()
        .unwrap()
        .contains("not allowed to confirm"));
    assert_eq!(
        r["missing"][0], 1,
        "a missing method is fault 1 with a traceback"
    );
    assert!(r["missing"][1].as_str().unwrap().contains(
        "AttributeError: The method 'no_such_method' does not exist on the model 'sale.order'"
    ));
    assert_eq!(r["denied"][0], 3);
    assert_eq!(
        r["bad_product"][0], 2,
        "MissingError is a UserError: fault 2"
    );

    // The write-back went through the business actions: a reserved delivery exists.
    let picking: String = client
        .query_one("SELECT p.state FROM stock_picking p JOIN sale_order so ON so.id = p.sale_id WHERE so.client_order_ref = 'shopify:9007199254740993'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(picking == "assigned" || picking == "confirmed", "{picking}");
}

#[tokio::test]
async fn jsonrpc_and_json2_error_shapes() {
    let db = Db::start();
    let client = db.cluster.superuser_client("odoo").await.unwrap();
    odoo::create(
        &client,
        &SeedConfig {
            products: 5,
            customers: 2,
            ..SeedConfig::default()
        },
    )
    .await
    .unwrap();
    let emu = OdooRpcEmulator::start(OdooRpcConfig::new(&db.cluster.superuser_url("odoo")), 0)
        .await
        .unwrap();
    let (dbname, _, key, uid) = emu.credentials();
    let http = reqwest::Client::new();
    let call = |model: &str, method: &str, args: Value, kwargs: Value| {
        json!({"jsonrpc": "2.0", "method": "call", "id": 7, "params": {"service": "object", "method": "execute_kw",
               "args": [dbname, uid, key, model, method, args, kwargs]}})
    };
    let r: Value = http
        .post(format!("{}/jsonrpc", emu.url()))
        .json(&call(
            "res.partner",
            "search_read",
            json!([[["customer_rank", ">", 0]]]),
            json!({"fields": ["name"], "limit": 1}),
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["id"], 7);
    assert!(r["result"][0]["name"].is_string(), "{r}");
    let resp = http
        .post(format!("{}/jsonrpc", emu.url()))
        .json(&call(
            "sale.order",
            "write_everything",
            json!([[1]]),
            json!({}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "JSON-RPC errors come with HTTP 200");
    let r: Value = resp.json().await.unwrap();
    assert_eq!(r["error"]["code"], 200);
    assert_eq!(r["error"]["message"], "Odoo Server Error");
    assert_eq!(r["error"]["data"]["name"], "builtins.AttributeError");
    let r: Value = http
        .post(format!("{}/jsonrpc", emu.url()))
        .json(&call(
            "sale.order",
            "search",
            json!([[["nonexistent", "=", 1]]]),
            json!({}),
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["error"]["data"]["name"], "builtins.ValueError", "{r}");

    // JSON-2: bearer key, named arguments, real status codes.
    let url = format!("{}/json/2/res.partner/search_read", emu.url());
    let resp = http
        .post(&url)
        .json(&json!({"domain": [], "fields": ["name"], "limit": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .post(&url)
        .header("authorization", format!("bearer {key}"))
        .header("x-odoo-database", "odoo")
        .json(&json!({"domain": [], "fields": ["name"], "limit": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>()
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let resp = http
        .post(format!("{}/json/2/sale.order/action_confirm", emu.url()))
        .header("authorization", format!("bearer {key}"))
        .json(&json!({"ids": [424242]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["name"],
        "odoo.exceptions.MissingError"
    );
}
