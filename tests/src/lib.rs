//! Shared helpers of odoo-cdc's end-to-end tests: the `odoo-cdc` binary, throwaway clusters with
//! a publication and slot, and a reader of PostgreSQL's `test_decoding` output.

pub mod test_decoding;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use fixtures::TempCluster;

/// Path of the `odoo-cdc` binary, built once per test process with the same cargo.
pub fn odoo_cdc_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>/odoo-cdc
        let profile_dir = exe
            .parent()
            .and_then(|p| p.parent())
            .expect("target profile directory")
            .to_path_buf();
        let bin = profile_dir.join("odoo-cdc");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "pipeline", "--bin", "odoo-cdc"]);
        if cfg!(feature = "fluvio-tls") {
            cmd.args(["--features", "fluvio-tls"]);
        } else if cfg!(feature = "fluvio") {
            cmd.args(["--features", "fluvio"]);
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .expect("run cargo build for the odoo-cdc binary");
        assert!(status.success(), "building odoo-cdc failed");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}

/// The Fluvio cluster of the gated tests (`ODOO_CDC_FLUVIO_ENDPOINT`), None (and said) when
/// none is set; set without the tests built with `--features fluvio`, a failure, so that a run
/// meant to use the cluster never passes without it.
pub fn fluvio_endpoint() -> Option<String> {
    let Ok(endpoint) = std::env::var("ODOO_CDC_FLUVIO_ENDPOINT") else {
        eprintln!("skipped: set ODOO_CDC_FLUVIO_ENDPOINT to a Fluvio cluster (and build the tests with --features fluvio)");
        return None;
    };
    if !cfg!(feature = "fluvio") {
        panic!("ODOO_CDC_FLUVIO_ENDPOINT is set: run with `cargo test -p odoo-cdc-tests --features fluvio`");
    }
    Some(endpoint)
}

/// Runs `odoo-cdc` with arguments to completion.
pub fn odoo_cdc(args: &[&str]) -> Output {
    odoo_cdc_env(args, &[])
}

/// Runs `odoo-cdc` with arguments and extra environment variables to completion.
pub fn odoo_cdc_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(odoo_cdc_bin())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run odoo-cdc")
}

/// A cluster plus the superuser's psql, with a helper to run SQL.
pub struct Db {
    /// The cluster.
    pub cluster: TempCluster,
}

impl Db {
    /// Starts a throwaway cluster.
    pub fn start() -> Self {
        Self {
            cluster: TempCluster::start().expect("start throwaway postgres"),
        }
    }

    /// Starts a throwaway cluster with options.
    pub fn start_with(opts: fixtures::ClusterOptions) -> Self {
        Self {
            cluster: TempCluster::start_with(opts).expect("start throwaway postgres"),
        }
    }

    /// Runs SQL as the superuser in the Odoo database; returns psql's unaligned output.
    pub fn sql(&self, sql: &str) -> String {
        self.cluster
            .psql(fixtures::pg::DEFAULT_DATABASE, sql)
            .unwrap_or_else(|e| panic!("sql failed: {e}\n{sql}"))
    }

    /// Current WAL insert position.
    pub fn current_lsn(&self) -> String {
        self.sql("SELECT pg_current_wal_lsn()").trim().to_string()
    }

    /// The slot's confirmed_flush_lsn.
    pub fn confirmed_flush(&self, slot: &str) -> cdc::Lsn {
        self.sql(&format!(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ))
        .trim()
        .parse()
        .expect("confirmed_flush_lsn")
    }

    /// The role's URL.
    pub fn url(&self) -> String {
        self.cluster.url()
    }
}

/// Parses `tail` output into JSON values, one per line.
pub fn parse_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad json line {l:?}: {e}")))
        .collect()
}

/// A background insert load: `rows_per_txn` rows into `table (v int)` per transaction, in a
/// loop until stopped; remembers the ids of every transaction that committed. Survives server
/// restarts by reconnecting.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<i64>>>,
}

impl Load {
    /// Starts the load against the cluster's Odoo database.
    pub fn start(db: &Db, table: &str, rows_per_txn: usize) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let url = db.cluster.superuser_url(fixtures::pg::DEFAULT_DATABASE);
        let sql = format!(
            "INSERT INTO {table} (v) SELECT g FROM generate_series(1, {rows_per_txn}) g RETURNING id"
        );
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut ids = Vec::new();
                let mut client: Option<tokio_postgres::Client> = None;
                while !flag.load(Ordering::Relaxed) {
                    if client.as_ref().is_none_or(|c| c.is_closed()) {
                        match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                            Ok((c, conn)) => {
                                tokio::spawn(conn);
                                client = Some(c);
                            }
                            Err(_) => {
                                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                                continue;
                            }
                        }
                    }
                    let Some(c) = &client else { continue };
                    match c.query(sql.as_str(), &[]).await {
                        Ok(rows) => ids.extend(rows.iter().map(|r| i64::from(r.get::<_, i32>(0)))),
                        Err(_) => {
                            client = None;
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                ids
            })
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the load and returns the ids of every committed row.
    pub fn finish(mut self) -> Vec<i64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .take()
            .map(|h| h.join().expect("load thread"))
            .unwrap_or_default()
    }
}

/// Polls `f` every 100 ms until it returns true or `timeout` passes; returns the last result.
pub fn wait_until(timeout: std::time::Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Spawns `odoo-cdc` with stdout to a file.
pub fn spawn_odoo_cdc(args: &[&str], stdout: &std::path::Path) -> std::process::Child {
    let file = std::fs::File::create(stdout).expect("stdout file");
    Command::new(odoo_cdc_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn odoo-cdc")
}

/// Reads the complete JSON lines of a file (a last line cut by a kill is ignored).
pub fn read_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A fresh scratch directory for one test's output files.
pub fn scratch_dir() -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("odoo-cdc-test-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A running `odoo-cdc tail` on the cluster's default slot, confirming every 200 ms, with its
/// stdout in a file.
pub struct TailProcess {
    child: std::process::Child,
    out: std::path::PathBuf,
}

impl TailProcess {
    /// Starts `odoo-cdc tail --source <db> --status-interval-ms 200 <extra...>`.
    pub fn spawn(db: &Db, extra: &[&str]) -> Self {
        let out = scratch_dir().join("out.jsonl");
        let url = db.url();
        let mut args = vec!["tail", "--source", &url, "--status-interval-ms", "200"];
        args.extend_from_slice(extra);
        Self {
            child: spawn_odoo_cdc(&args, &out),
            out,
        }
    }

    /// Kills it (SIGKILL) and returns the complete lines it wrote and its stderr.
    pub fn kill(mut self) -> (Vec<serde_json::Value>, String) {
        self.child.kill().ok();
        let output = self.child.wait_with_output().expect("tail output");
        (
            read_lines(&self.out),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// A child process killed (and reaped) when the test ends, passing or failing.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `odoo-cdc run` has migrated its state schema and recorded the initial
/// synchronisation as delivered; false after 30 s.
pub async fn wait_bootstrapped(db: &Db) -> bool {
    for _ in 0..300 {
        if db
            .sql(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'odoo_cdc' AND tablename = 'kv'",
            )
            .trim()
            == "1"
            && db
                .sql("SELECT count(*) FROM odoo_cdc.kv WHERE key LIKE 'bootstrap.%'")
                .trim()
                == "1"
        {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

/// A fixture Odoo database with `products` products (up to 50 units each in stock) and 3
/// customers, its tables published as `odoo_cdc`; a client to write to it.
pub async fn seeded_and_published(
    db: &Db,
    products: usize,
) -> (fixtures::odoo::OdooClient, fixtures::odoo::SeedInfo) {
    let c = fixtures::odoo::OdooClient::new(
        db.cluster.superuser_client("odoo").await.expect("connect"),
    );
    let info = fixtures::odoo::create(
        &c,
        &fixtures::odoo::SeedConfig {
            products,
            customers: 3,
            max_opening_qty: 50,
            ..fixtures::odoo::SeedConfig::default()
        },
    )
    .await
    .expect("seed");
    c.batch_execute(&format!(
        "CREATE PUBLICATION odoo_cdc FOR TABLE {}",
        cdc::slot::ODOO_TABLES.join(", ")
    ))
    .await
    .expect("publication");
    (c, info)
}

/// Sells one unit of product `i` from the first warehouse and confirms the order: the order
/// id, its delivery's name, and whether the delivery is ready (`assigned`).
pub async fn sell_one(
    c: &mut fixtures::odoo::OdooClient,
    info: &fixtures::odoo::SeedInfo,
    i: usize,
) -> (i32, String, bool) {
    sell_one_as(c, info, i, None).await
}

/// [`sell_one`] with the customer's reference (`client_order_ref`, e.g. `shopify:<id>`).
pub async fn sell_one_as(
    c: &mut fixtures::odoo::OdooClient,
    info: &fixtures::odoo::SeedInfo,
    i: usize,
    reference: Option<&str>,
) -> (i32, String, bool) {
    use fixtures::odoo::actions::sales;
    let p = &info.products[i];
    let q = sales::Quotation {
        partner_id: info.customers[i % info.customers.len()],
        warehouse_id: info.warehouses[0].id,
        lines: vec![sales::LineInput {
            product_id: p.id,
            name: p.sku.clone(),
            qty: rust_decimal::Decimal::ONE,
            price_unit: p.list_price,
            discount: rust_decimal::Decimal::ZERO,
            taxed: true,
            taxes: Vec::new(),
        }],
        client_order_ref: reference.map(str::to_string),
    };
    let o = sales::create_quotation(c, info, &q)
        .await
        .expect("quotation");
    let picking = sales::confirm(c, info, o).await.expect("confirm");
    let row = c
        .query_one(
            "SELECT name, state FROM stock_picking WHERE id = $1",
            &[&picking],
        )
        .await
        .expect("picking");
    (o, row.get(0), row.get::<_, String>(1) == "assigned")
}

/// A running odoo-cdc's `/metrics` on `127.0.0.1:port`.
pub async fn metrics(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("/metrics body")
}

/// The value of one series (`name{labels}`) in a `/metrics` text; panics with the text when
/// the series is missing.
pub fn series(metrics: &str, name_and_labels: &str) -> f64 {
    let prefix = format!("{name_and_labels} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name_and_labels} in\n{metrics}"))
}

/// A new client to the fixture Odoo database (after a PostgreSQL restart), retried for 30 s.
pub async fn reconnect(db: &Db) -> fixtures::odoo::OdooClient {
    for _ in 0..300 {
        if let Ok(c) = db.cluster.superuser_client("odoo").await {
            return fixtures::odoo::OdooClient::new(c);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("cannot reconnect to the fixture database");
}

/// The `[sinks.accounting]` section for the accounting emulator at `url` (the fixture chart:
/// receivable 121000, income 400000 mapped to `income`, tax 251000, bank 101401).
pub fn accounting_section(
    url: &str,
    cfg: &fixtures::emulator::accounting::AccountingConfig,
    income: &str,
) -> String {
    format!(
        "[sinks.accounting]\nbase_url = \"{url}\"\nrealm_id = \"{}\"\nclient_id = \"{}\"\nrefresh_token = \"{}\"\n\
         account_map = {{ \"121000\" = \"84\", \"400000\" = \"{income}\", \"251000\" = \"89\", \"101401\" = \"35\" }}\n",
        cfg.realm_id, cfg.client_id, cfg.refresh_token
    )
}

/// SIGTERM, then whether the process exited 0.
pub fn stop_term(child: &mut Running) -> bool {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    child.0.wait().map(|s| s.success()).unwrap_or(false)
}

/// A free TCP port on 127.0.0.1 (for a listener the test's odoo-cdc opens).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port on 127.0.0.1")
        .local_addr()
        .expect("its address")
        .port()
}

/// Logs in to the workbench at `base` with a login form's fields (`user` and `password`, or
/// `token`): the session cookie (`name=value`) its 303 sets.
pub async fn workbench_login(base: &str, form: &[(&str, &str)]) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");
    let r = http
        .post(format!("{base}/login"))
        .form(form)
        .send()
        .await
        .expect("the workbench answers");
    assert_eq!(r.status(), 303, "logged in");
    r.headers()["set-cookie"]
        .to_str()
        .expect("a cookie")
        .split(';')
        .next()
        .expect("name=value")
        .to_string()
}
