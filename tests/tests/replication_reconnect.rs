//! A replication reconnect while posted invoices are not yet confirmed (the accounting API is
//! failing): the server sends their transactions again, and odoo-cdc must not apply
//! them twice (the invoice back to draft, then posted "again") and book a second entry.

use std::process::{Command, Stdio};
use std::time::Duration;

use fixtures::emulator::accounting::{AccountingConfig as AcctCfg, AccountingEmulator};
use fixtures::emulator::Faults;
use fixtures::odoo::actions::account;
use odoo_cdc_tests::{
    accounting_section, odoo_cdc_bin, scratch_dir, seeded_and_published, sell_one, stop_term,
    wait_until, Db, Running,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_does_not_book_an_unconfirmed_invoice_twice() {
    let db = Db::start();
    let (mut c, info) = seeded_and_published(&db, 3).await;
    let acct_cfg = AcctCfg::default();
    let acct = AccountingEmulator::start(acct_cfg.clone(), 0)
        .await
        .unwrap();
    let dir = scratch_dir();
    let config = dir.join("odoo-cdc.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{}\"\n\n{}",
            db.url(),
            accounting_section(&acct.url(), &acct_cfg, "79")
        ),
    )
    .unwrap();
    let log = dir.join("run.log");
    let mut child = Running(
        Command::new(odoo_cdc_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("ODOO_CDC_ACCOUNTING_CLIENT_SECRET", "emulator-secret")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    assert!(odoo_cdc_tests::wait_bootstrapped(&db).await);
    // The accounting API fails: the invoice's transactions are read but not confirmed.
    acct.core().set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    // Two invoices: the second one's whole life (created as draft, then posted) lies after
    // the position confirmed while the first one waits.
    let mut invoices = Vec::new();
    for i in 0..2 {
        let (order, _, _) = sell_one(&mut c, &info, i).await;
        let inv = account::create_invoice(&mut c, &info, order).await.unwrap();
        account::post(&mut c, inv).await.unwrap();
        invoices.push(inv);
    }
    assert!(wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("delivery failed; retrying")
    }));
    // The replication connection drops (a network cut, a walsender terminated by the DBA).
    let pid = |db: &Db| {
        db.sql(
            "SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = 'odoo_cdc'",
        )
        .trim()
        .to_string()
    };
    let before = pid(&db);
    db.sql("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'odoo_cdc'");
    assert!(wait_until(Duration::from_secs(30), || {
        let now = pid(&db);
        now != "0" && now != before
    }));
    tokio::time::sleep(Duration::from_secs(1)).await;
    acct.core().set_faults(Faults::default());
    let booked = wait_until(Duration::from_secs(30), || acct.entries().len() >= 2);
    // Time for a second booking to show, if there were one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(booked, "{text}");
    let ids: Vec<String> = acct
        .core()
        .requests()
        .iter()
        .filter(|r| r.path.contains("journalentry"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(acct.entries().len(), 2, "{ids:?}\n{text}");
    assert!(
        ids.iter().all(|p| invoices
            .iter()
            .any(|inv| p.contains(&format!("odoo-move-{inv}-p1&")))),
        "{ids:?}"
    );
    assert!(stop_term(&mut child), "{text}");
}
