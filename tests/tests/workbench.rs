//! The workbench in a real headless Chromium (Debian's `chromium` and `chromium-driver`, which
//! `.ci/run` installs), driven over WebDriver, against `odoo-cdc run` on a real PostgreSQL and
//! the Shopify emulator:
//! - a viewer sees every page and no action; a forged action from a viewer's session is refused;
//! - an operator sees a dead letter from a failing sink (a SKU Shopify does not have), fixes the
//!   cause (the item is created in Shopify), replays it with a comment, sees it delivered, and
//!   the audit line carries the comment and who wrote it;
//! - a level edited in Shopify's admin is found and healed from the Drift page.
//!
//! Screenshots of each page are written under `target/workbench-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use fixtures::emulator::shopify::{ShopifyConfig as ShopCfg, ShopifyEmulator};
use odoo_cdc_tests::{odoo_cdc_bin, scratch_dir, seeded_and_published, wait_until, Db, Running};

const VIEWER: (&str, &str) = ("vera", "viewer password 1");
const OPERATOR: (&str, &str) = ("olga", "operator password 1");

fn shots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/workbench-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// ChromeDriver on a free port, stopped when dropped.
struct Driver {
    _process: Running,
    port: u16,
}

fn chromedriver() -> Driver {
    let bin = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect(
            "chromedriver is missing: install Debian's chromium and chromium-driver (.ci/run does)",
        );
    let port = odoo_cdc_tests::free_port();
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    assert!(
        wait_until(Duration::from_secs(20), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "chromedriver did not listen"
    );
    Driver {
        _process: Running(child),
        port,
    }
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    // The WebDriver client's TLS (unused on loopback) needs one crypto provider chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1280,1100",
                     format!("--user-data-dir={}", profile.display())]
        }),
    );
    ClientBuilder::rustls()
        .unwrap()
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

async fn login(c: &Client, base: &str, (user, password): (&str, &str)) {
    c.goto(&format!("{base}/login")).await.unwrap();
    c.find(Locator::Id("user"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    press(c, "login").await;
    let who = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id("who"))
        .await
        .unwrap();
    assert!(who.text().await.unwrap().starts_with(user));
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::write(shots().join(format!("{name}.png")), png).unwrap();
}

/// The text of the element with this id, found again when the page reloaded under it (the Now
/// page refreshes itself).
async fn text_of(c: &Client, id: &str) -> String {
    for _ in 0..20 {
        let e = c
            .wait()
            .at_most(Duration::from_secs(60))
            .for_element(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("#{id}: {e}"));
        match e.text().await {
            Ok(t) => return t,
            Err(e) if e.is_stale_element_reference() => {}
            Err(e) => panic!("#{id}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("#{id}: the page kept reloading under it")
}

async fn act(c: &Client, button: &str, comment: &str) {
    c.find(Locator::Id(&format!("{button}-comment")))
        .await
        .unwrap()
        .send_keys(comment)
        .await
        .unwrap();
    press(c, button).await;
}

/// Clicks the button (or link) with this id and waits for the page it leads to.
async fn press(c: &Client, id: &str) {
    let b = c.find(Locator::Id(id)).await.unwrap();
    clicked(b).await;
}

/// Clicks, then waits until the element is gone with its page, so that what is read next is
/// the answer, not the page it was on.
async fn clicked(b: fantoccini::elements::Element) {
    b.clone().click().await.unwrap();
    for _ in 0..600 {
        if b.is_displayed().await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("clicked, and the page did not change in 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_read_operators_replay_and_heal_drift_in_a_real_browser() {
    let db = Db::start();
    let (_c, info) = seeded_and_published(&db, 3).await;
    let wh = info.warehouses[0].code.clone();
    let shopify = ShopifyEmulator::start(ShopCfg::default(), 0).await.unwrap();
    // Shopify sells the first two products; the third is not created there yet.
    let items: Vec<u64> = info.products[..2]
        .iter()
        .map(|p| shopify.add_item(&p.sku, &[(1, 0)]))
        .collect();
    let missing = info.products[2].sku.clone();
    let port = odoo_cdc_tests::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let dir = scratch_dir();
    let config = dir.join("odoo-cdc.toml");
    let hash = |p: &str| pipeline::ui::auth::hash_password(p).unwrap();
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{}\"\n\n[sinks.shopify]\ngraphql_url = \"{}\"\nlocation_map = {{ {wh} = \"gid://shopify/Location/1\" }}\n\n\
             [reconcile]\nsettle_secs = 5\n\n[ui]\nlisten = \"127.0.0.1:{port}\"\n\
             [[ui.users]]\nname = \"{}\"\nrole = \"viewer\"\npassword_hash = \"{}\"\n\
             [[ui.users]]\nname = \"{}\"\nrole = \"operator\"\npassword_hash = \"{}\"\n",
            db.url(),
            shopify.graphql_url(),
            VIEWER.0,
            hash(VIEWER.1),
            OPERATOR.0,
            hash(OPERATOR.1),
        ),
    )
    .unwrap();
    let log = dir.join("run.log");
    let _run = Running(
        Command::new(odoo_cdc_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("ODOO_CDC_SHOPIFY_ACCESS_TOKEN", "shpat_emulator")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let runlog = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(odoo_cdc_tests::wait_bootstrapped(&db).await, "{}", runlog());
    // The initial synchronisation dead-letters the SKU Shopify does not have.
    let key = format!("{missing}@{wh}");
    assert!(
        wait_until(Duration::from_secs(30), || {
            db
            .sql(&format!(
                "SELECT count(*) FROM odoo_cdc.dead_letters WHERE key = '{key}' AND replayed_at IS NULL"
            ))
            .trim()
            == "1"
        }),
        "{}",
        runlog()
    );
    let dead_id = db
        .sql(&format!(
            "SELECT id FROM odoo_cdc.dead_letters WHERE key = '{key}'"
        ))
        .trim()
        .to_string();
    let qty: i64 = db
        .sql(&format!(
            "SELECT (event->'SellableChanged'->>'qty')::numeric::bigint FROM odoo_cdc.dead_letters WHERE id = {dead_id}"
        ))
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "{}",
        runlog()
    );

    let driver = chromedriver();
    let c = browser(&driver, &dir.join("chromium-viewer")).await;
    // Pages need a login.
    c.goto(&format!("{base}/exceptions")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/login"));
    // A wrong password is refused.
    c.find(Locator::Id("user"))
        .await
        .unwrap()
        .send_keys(VIEWER.0)
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys("not it")
        .await
        .unwrap();
    press(&c, "login").await;
    assert!(text_of(&c, "login-error").await.contains("Wrong user"));

    // The viewer: reads everything, no action anywhere.
    login(&c, &base, VIEWER).await;
    assert!(text_of(&c, "ready").await.starts_with("Ready"));
    c.goto(&format!("{base}/exceptions/{dead_id}"))
        .await
        .unwrap();
    assert_eq!(
        text_of(&c, "reason").await,
        format!("SKU {missing} is not in Shopify")
    );
    assert!(c.find(Locator::Id("replay")).await.is_err());
    assert!(c.find(Locator::Id("discard")).await.is_err());
    c.goto(&format!("{base}/drift")).await.unwrap();
    assert!(c.find(Locator::Id("reconcile")).await.is_err());
    shot(&c, "viewer-dead-letter").await;
    // Even a forged form from the viewer's own session is refused.
    let viewer_post = forged_replay(&base, VIEWER, &dead_id).await;
    assert_eq!(viewer_post, 403);
    press(&c, "logout").await;
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id("login"))
        .await
        .unwrap();
    c.close().await.unwrap();

    // The operator.
    let c = browser(&driver, &dir.join("chromium-operator")).await;
    login(&c, &base, OPERATOR).await;
    assert_eq!(
        text_of(&c, "dead-open").await,
        "4",
        "{}",
        db.sql("SELECT sink, key, reason FROM odoo_cdc.dead_letters")
    );
    assert!(text_of(&c, "checks").await.contains("sink shopify"));
    shot(&c, "now").await;
    c.goto(&format!("{base}/exceptions")).await.unwrap();
    let causes = text_of(&c, "causes").await;
    // Two causes: the SKU, and a second warehouse not mapped to Shopify (three levels).
    assert!(
        causes.contains(&format!("SKU {missing} is not in Shopify"))
            && causes.contains("warehouse WH2 has no Shopify location mapping 3 "),
        "{causes}"
    );
    shot(&c, "exceptions").await;
    // Filtering by reason finds the one.
    c.find(Locator::Id("f-reason"))
        .await
        .unwrap()
        .send_keys("is not in shopify")
        .await
        .unwrap();
    press(&c, "f-apply").await;
    for _ in 0..100 {
        if c.current_url()
            .await
            .unwrap()
            .query()
            .is_some_and(|q| q.contains("reason=is+not+in+shopify"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = c
        .find_all(Locator::Css("#dead-letters a.dl"))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    clicked(listed[0].clone()).await;
    assert_eq!(text_of(&c, "state").await, "open");
    // Replaying while the cause lasts: still failing, and still open.
    act(&c, "replay", "trying before the fix").await;
    assert!(text_of(&c, "flash")
        .await
        .contains(&format!("still failing: SKU {missing} is not in Shopify")),);
    assert_eq!(text_of(&c, "state").await, "open");
    // The cause is fixed: the item is created in Shopify. Replay, with a comment.
    let item = shopify.add_item(&missing, &[(1, 0)]);
    act(&c, "replay", "created the SKU in Shopify admin").await;
    assert_eq!(text_of(&c, "flash").await, "Replayed 1: delivered.");
    assert!(text_of(&c, "state").await.starts_with("replayed "));
    // Delivered: Shopify has Odoo's level.
    assert_eq!(shopify.level(item, 1).map(|l| l.available), Some(qty));
    let trail = text_of(&c, "audit").await;
    assert!(
        trail.contains("olga (operator)")
            && trail.contains("replayed and delivered — created the SKU in Shopify admin")
            && trail.contains("still failing")
            && trail.contains("trying before the fix"),
        "{trail}"
    );
    shot(&c, "dead-letter-replayed").await;
    // The same, in the audit trail's own command.
    let audit = Command::new(odoo_cdc_bin())
        .args([
            "audit",
            "--config",
            config.to_str().unwrap(),
            "--order",
            &key,
        ])
        .output()
        .unwrap();
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.contains("workbench-replay") && audit.contains("created the SKU in Shopify admin"),
        "{audit}"
    );

    // Drift: a merchant adds 5 in Shopify's admin. Found and healed from the Drift page.
    let before = shopify.level(items[0], 1).unwrap().available;
    assert!(shopify.set_available(items[0], 1, before + 5));
    c.goto(&format!("{base}/drift")).await.unwrap();
    assert!(text_of(&c, "no-report").await.contains("No reconciliation"));
    c.find(Locator::Id("r-sink"))
        .await
        .unwrap()
        .select_by_value("shopify")
        .await
        .unwrap();
    c.find(Locator::Id("r-comment"))
        .await
        .unwrap()
        .send_keys("just looking")
        .await
        .unwrap();
    press(&c, "reconcile").await;
    let flash = text_of(&c, "flash").await;
    assert_eq!(
        flash,
        "reconcile shopify: 1 drift(s), 0 fixed, 1 open",
        "{}",
        runlog()
    );
    let drifts = text_of(&c, "drifts").await;
    assert!(
        drifts.contains(&format!("{}@{wh}", info.products[0].sku))
            && drifts.contains("oversell risk")
            && drifts.contains("open (fixable)"),
        "{drifts}"
    );
    shot(&c, "drift").await;
    // Reporting changed nothing; fixing heals it and reads it back.
    assert_eq!(
        shopify.level(items[0], 1).map(|l| l.available),
        Some(before + 5)
    );
    c.find(Locator::Id("r-sink"))
        .await
        .unwrap()
        .select_by_value("shopify")
        .await
        .unwrap();
    c.find(Locator::Id("r-fix"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Id("r-comment"))
        .await
        .unwrap()
        .send_keys("merchant edited the level by hand")
        .await
        .unwrap();
    press(&c, "reconcile").await;
    assert_eq!(
        text_of(&c, "flash").await,
        "reconcile shopify --fix: 1 drift(s), 1 fixed, 0 open"
    );
    assert!(text_of(&c, "drifts").await.contains("fixed"));
    assert_eq!(
        shopify.level(items[0], 1).map(|l| l.available),
        Some(before)
    );
    shot(&c, "drift-fixed").await;

    // The other pages render, and the trail of the replayed key has its whole story.
    c.goto(&format!("{base}/blocked")).await.unwrap();
    assert!(text_of(&c, "held").await.contains("none"));
    shot(&c, "blocked").await;
    c.goto(&format!("{base}/trail")).await.unwrap();
    c.find(Locator::Id("q"))
        .await
        .unwrap()
        .send_keys(&key)
        .await
        .unwrap();
    press(&c, "search").await;
    let dl = text_of(&c, "trail-dead-letters").await;
    assert!(dl.contains(&dead_id) && dl.contains("closed"), "{dl}");
    assert!(text_of(&c, "audit")
        .await
        .contains("created the SKU in Shopify admin"));
    shot(&c, "trail").await;
    c.close().await.unwrap();
    for name in [
        "now",
        "exceptions",
        "dead-letter-replayed",
        "drift",
        "blocked",
        "trail",
    ] {
        assert!(shots().join(format!("{name}.png")).exists());
    }
}

/// Logs in as `user` over plain HTTP, takes the session's form token from a page and posts a
/// replay with it: the status code.
async fn forged_replay(base: &str, (user, password): (&str, &str), id: &str) -> u16 {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie =
        odoo_cdc_tests::workbench_login(base, &[("user", user), ("password", password)]).await;
    let page = http
        .get(format!("{base}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    // A form without the session's token is refused too.
    let stale = http
        .post(format!("{base}/exceptions/{id}/replay"))
        .header("cookie", &cookie)
        .form(&[("csrf", "made-up"), ("comment", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 403);
    http.post(format!("{base}/exceptions/{id}/replay"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("comment", "I am only a viewer")])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}
