//! The order trail asks the books: a posted invoice's journal entry is shown as QuickBooks holds
//! it, and an entry a bookkeeper deleted is shown as not in the books (over plain HTTP, logged
//! in with the viewer token from the environment).

use std::process::{Command, Stdio};
use std::time::Duration;

use fixtures::emulator::accounting::{AccountingConfig as AcctCfg, AccountingEmulator};
use fixtures::odoo::actions::account;
use odoo_cdc_tests::{
    accounting_section, odoo_cdc_bin, scratch_dir, seeded_and_published, sell_one_as, wait_until,
    Db, Running,
};

const VIEWER_TOKEN: &str = "viewer-token-for-the-trail-test";

async fn trail(base: &str, q: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = odoo_cdc_tests::workbench_login(base, &[("token", VIEWER_TOKEN)]).await;
    let r = http
        .get(format!("{base}/trail"))
        .query(&[("q", q)])
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // What pipeline/deploy/README.md tells the proxy to keep.
    let h = r.headers();
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["cache-control"], "no-store");
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .starts_with("default-src 'none'"));
    r.text().await.unwrap()
}

/// The HTML of the table with this id.
fn table<'a>(page: &'a str, id: &str) -> &'a str {
    let start = page
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {page}"));
    let rest = &page[start..];
    &rest[..rest.find("</table>").unwrap_or(rest.len())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_shows_the_journal_entry_the_books_hold_and_one_they_lost() {
    let db = Db::start();
    let (mut c, info) = seeded_and_published(&db, 3).await;
    let acct_cfg = AcctCfg::default();
    let acct = AccountingEmulator::start(acct_cfg.clone(), 0)
        .await
        .unwrap();
    let port = odoo_cdc_tests::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let dir = scratch_dir();
    let config = dir.join("odoo-cdc.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{}\"\n\n[ui]\nlisten = \"127.0.0.1:{port}\"\n\n{}",
            db.url(),
            accounting_section(&acct.url(), &acct_cfg, "79")
        ),
    )
    .unwrap();
    let log = dir.join("run.log");
    let _run = Running(
        Command::new(odoo_cdc_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("ODOO_CDC_ACCOUNTING_CLIENT_SECRET", "emulator-secret")
            .env("ODOO_CDC_UI_VIEWER_TOKEN", VIEWER_TOKEN)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let runlog = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(odoo_cdc_tests::wait_bootstrapped(&db).await, "{}", runlog());
    // Sold on Shopify: Odoo 18 names the delivery's origin `S00001 - shopify:4242`.
    let (order, picking, _) = sell_one_as(&mut c, &info, 0, Some("shopify:4242")).await;
    assert_eq!(
        db.sql(&format!(
            "SELECT origin FROM stock_picking WHERE name = '{picking}'"
        ))
        .trim(),
        db.sql(&format!(
            "SELECT name || ' - shopify:4242' FROM sale_order WHERE id = {order}"
        ))
        .trim()
    );
    let order_name = db
        .sql(&format!("SELECT name FROM sale_order WHERE id = {order}"))
        .trim()
        .to_string();
    let inv = account::create_invoice(&mut c, &info, order).await.unwrap();
    account::post(&mut c, inv).await.unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || acct.entries().len() == 1),
        "{}",
        runlog()
    );
    let entry = acct.entries()[0]["Id"].as_str().unwrap().to_string();
    let inv_name = db
        .sql(&format!("SELECT name FROM account_move WHERE id = {inv}"))
        .trim()
        .to_string();

    // Found from the Shopify order, the sale order, its delivery and its invoice alike.
    for q in [
        "4242",
        order_name.as_str(),
        picking.as_str(),
        inv_name.as_str(),
    ] {
        let page = trail(&base, q).await;
        let odoo = table(&page, "odoo-records");
        assert!(
            odoo.contains(&format!("<td>{order_name}</td>"))
                && odoo.contains(&format!("<td>{picking}</td>"))
                && odoo.contains(&format!("<td>{inv_name}</td>")),
            "{q}: {odoo}"
        );
        let books = table(&page, "journal-entries");
        assert!(
            books.contains(&format!(
                "<td>{inv}</td><td>{inv_name}</td><td>{entry}</td>"
            )),
            "{q}: {books}"
        );
        assert!(!books.contains("not in the books"), "{books}");
    }

    // A bookkeeper deletes the entry: the trail says so.
    assert!(acct.delete_entry(&entry));
    let page = trail(&base, &inv_name).await;
    let books = table(&page, "journal-entries");
    assert!(
        books.contains("not in the books")
            && !books.contains(&format!("<td>{inv_name}</td><td>{entry}</td>")),
        "{books}"
    );
}
