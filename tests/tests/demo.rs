//! `odoo-cdc demo` runs the whole product on the embedded default and reports its invariants.

use odoo_cdc_tests::odoo_cdc;

#[test]
fn demo_runs_a_retail_day_and_everything_matches() {
    let out = odoo_cdc(&["demo", "--duration", "20s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .contains("result: Shopify matches Odoo, every posted move booked once, nothing lost"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| shopify |")
            && stdout.contains("| wms |")
            && stdout.contains("| accounting |")
    );
    assert!(
        stdout.contains("LOCAL-ONLY@WH") && stdout.contains("is not in Shopify"),
        "the DLQ shows its reason: {stdout}"
    );
    // Every ready or shipped delivery is at the WMS: its own order, or a backorder under its
    // parent's.
    let line = stdout
        .lines()
        .find(|l| l.starts_with("warehouse: "))
        .unwrap();
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(nums[0], nums[1], "{line}");
}

/// `demo --scale-out` says what it needs before it starts anything: an odoo-cdc built with
/// Fluvio, and a cluster that answers.
#[test]
fn demo_scale_out_says_what_it_needs_before_starting_anything() {
    let out = odoo_cdc(&[
        "demo",
        "--duration",
        "5s",
        "--scale-out",
        "--fluvio-endpoint",
        "127.0.0.1:1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    if cfg!(feature = "fluvio") {
        assert!(
            stderr.contains("127.0.0.1:1") && stderr.contains("scale-out.md"),
            "{stderr}"
        );
    } else {
        assert!(
            stderr.contains("built without Fluvio") && stderr.contains("--features fluvio"),
            "{stderr}"
        );
    }
    assert!(!stderr.contains("throwaway PostgreSQL"), "{stderr}");
}

/// The same scripted day with one reader and two workers on a Fluvio cluster
/// (`ODOO_CDC_FLUVIO_ENDPOINT`, the tests built with `--features fluvio`); skipped, and said,
/// without one. Its topics are deleted afterwards.
#[test]
fn demo_scaled_out_on_fluvio_runs_the_same_day_and_everything_matches() {
    let Some(endpoint) = odoo_cdc_tests::fluvio_endpoint() else {
        return;
    };
    let out = odoo_cdc(&[
        "demo",
        "--duration",
        "20s",
        "--scale-out",
        "--fluvio-endpoint",
        &endpoint,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    eprintln!("{stdout}");
    assert!(
        stdout
            .contains("result: Shopify matches Odoo, every posted move booked once, nothing lost"),
        "{stdout}"
    );
    assert!(
        stderr.contains("scaled out on Fluvio at")
            && stderr.contains("shopify + shopify_fulfillment")
            && stderr.contains("wms + accounting"),
        "{stderr}"
    );
    // Every sink delivered in its worker, and the books' and the WMS's counts are there.
    for sink in ["shopify", "wms", "accounting", "shopify_fulfillment"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {sink} |")))
            .unwrap_or_else(|| panic!("no row for {sink}: {stdout}"));
        let delivered: u64 = row.split('|').nth(2).unwrap().trim().parse().unwrap();
        assert!(delivered > 0, "{row}");
    }
    assert!(!stderr.contains("could not delete topic"), "{stderr}");
    // The run's topics are gone from the cluster.
    let prefix = stderr
        .split("a reader into topics ")
        .nth(1)
        .and_then(|r| r.split("-*").next())
        .expect("the demo names its topics");
    let dir = odoo_cdc_tests::scratch_dir();
    let cfg = dir.join("status.toml");
    std::fs::write(
        &cfg,
        format!("[source]\nurl = \"postgres://odoo_cdc@127.0.0.1:1/odoo\"\n\n[fluvio]\nendpoint = \"{endpoint}\"\ntopic_prefix = \"{prefix}\"\n"),
    )
    .unwrap();
    let status = odoo_cdc(&["fluvio", "status", "--config", cfg.to_str().unwrap()]);
    let listed = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{listed}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        !listed.contains(prefix),
        "the demo's topics are still there:\n{listed}"
    );
}

/// A newcomer without npm or the registry: the schema cannot be fetched, the emulator says so in
/// one line and validates against its embedded subset, and the day runs and matches.
#[test]
fn demo_without_npm_or_the_registry_runs_on_the_embedded_schema_subset() {
    let dir = std::env::temp_dir().join(format!("odoo-cdc-no-npm-{}", std::process::id()));
    let schema_dir = dir.join("schema");
    let npm_cache = dir.join("npm-cache");
    let out = odoo_cdc_tests::odoo_cdc_env(
        &["demo", "--duration", "10s"],
        &[
            ("ODOO_CDC_SHOPIFY_SCHEMA_DIR", schema_dir.to_str().unwrap()),
            // npm finds nothing in an empty cache and may not ask the registry.
            ("npm_config_offline", "true"),
            ("npm_config_cache", npm_cache.to_str().unwrap()),
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(
        stdout
            .contains("result: Shopify matches Odoo, every posted move booked once, nothing lost"),
        "{stdout}"
    );
    let said: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| l.contains("embedded subset"))
        .collect();
    assert_eq!(
        said.len(),
        1,
        "one line says validation is reduced: {said:?}\n{stderr}"
    );
    assert!(said[0].contains("npm"), "{}", said[0]);
}

#[test]
fn sigterm_on_a_kept_running_demo_removes_its_postgresql() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(odoo_cdc_tests::odoo_cdc_bin())
        .args(["demo", "--duration", "5s", "--keep-running"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut pg = None;
    let mut workbench = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(url) = line.strip_prefix("service postgres ") {
            pg = Some(url.to_string());
        }
        if let Some(rest) = line.strip_prefix("service workbench ") {
            workbench = rest
                .split_once(" token ")
                .map(|(u, t)| (u.to_string(), t.to_string()));
            break;
        }
    }
    // The workbench serves the demo's pipeline to an operator with the token it printed.
    let (base, token) = workbench.expect("a service workbench line");
    let page = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let cookie = odoo_cdc_tests::workbench_login(&base, &[("token", token.as_str())]).await;
        let cookie = cookie.as_str();
        http.get(format!("{base}/"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    for sink in ["shopify", "wms", "accounting"] {
        assert!(page.contains(&format!("<td>{sink}</td>")), "{sink}: {page}");
    }
    assert!(page.contains("token (operator)"), "{page}");
    let url: tokio_postgres::Config = pg.expect("a service postgres line").parse().unwrap();
    let port = url.get_ports()[0];
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(
        status.code().is_some(),
        "ended by the signal itself: {status:?}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the demo's PostgreSQL still listens on {port}"
    );
}
