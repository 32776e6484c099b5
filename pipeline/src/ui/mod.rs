//! The workbench (`[ui] listen`): server-rendered pages for the people who fix what the
//! pipeline cannot — Now, Exceptions, Blocked orders, Drift, Order trail — behind a login with
//! two roles. Viewers read everything; operators also replay and discard dead letters and run
//! reconciliation with `--fix`, each action with a required comment, recorded in the audit trail
//! with who did it and why. The contract is `pipeline/docs/workbench.md`.

pub mod auth;
pub mod html;
pub mod pages;
pub mod series;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::config::Config;
use crate::ops::http::Served;
use crate::runtime::Shared;
use crate::state::StateDb;
use auth::{Auth, Session};

/// What the pages read and act with.
pub struct Workbench {
    /// The whole config (actions build sinks from it, as `dlq replay` does).
    pub cfg: Config,
    /// The running pipeline's state.
    pub shared: Arc<Shared>,
    /// odoo-cdc's state database (and Odoo's tables, for the trail).
    pub state: Arc<StateDb>,
    /// Logins and sessions.
    pub auth: Auth,
    /// The Now page's last hour.
    pub series: Arc<series::Series>,
    /// The books, asked by the order trail for a move's journal entries (built on first use,
    /// one OAuth2 token for every page).
    pub books: tokio::sync::Mutex<Option<sinks::accounting::AccountingSink>>,
}

type W = Arc<Workbench>;
type Fields = HashMap<String, String>;

/// Serves the workbench on `[ui] listen` (nothing when there is no `[ui]`).
pub async fn serve(
    cfg: &Config,
    shared: Arc<Shared>,
    state: Arc<StateDb>,
) -> Result<Option<Served>> {
    let Some(ui) = &cfg.ui else {
        return Ok(None);
    };
    let series = Arc::new(series::Series::default());
    series.start(shared.clone());
    let w = Arc::new(Workbench {
        cfg: cfg.clone(),
        shared,
        state,
        auth: Auth::new(ui),
        series,
        books: tokio::sync::Mutex::new(None),
    });
    let served = Served::start(&ui.listen, router(w), "workbench")
        .await
        .with_context(|| format!("ui.listen: cannot listen on {}", ui.listen))?;
    tracing::info!(url = %served.url(), "workbench listening");
    Ok(Some(served))
}

/// The workbench's routes.
pub fn router(w: W) -> Router {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/", get(now))
        .route("/exceptions", get(exceptions))
        .route("/exceptions/replay-cause", post(replay_cause))
        .route("/exceptions/{id}", get(dead_letter))
        .route("/exceptions/{id}/replay", post(replay))
        .route("/exceptions/{id}/discard", post(discard))
        .route("/blocked", get(blocked))
        .route("/drift", get(drift))
        .route("/drift/reconcile", post(reconcile))
        .route("/trail", get(trail))
        .with_state(w)
}

fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

fn html_page(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            // Trail URLs carry order ids: never sent on to another site.
            (header::REFERRER_POLICY, "no-referrer"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'",
            ),
        ],
        Html(body),
    )
        .into_response()
}

fn render(s: &Session, title: &str, here: &str, q: &Fields, body: Result<String>) -> Response {
    match body {
        Ok(b) => html_page(
            StatusCode::OK,
            html::page(title, here, s, q.get("done").map(String::as_str), &b),
        ),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), page = here, "workbench page failed");
            html_page(
                StatusCode::SERVICE_UNAVAILABLE,
                html::page(
                    title,
                    here,
                    s,
                    None,
                    &format!(
                        "<div class=\"banner bad\" id=\"page-error\">This page cannot be shown right now: {}</div>",
                        html::esc(&format!("{e:#}"))
                    ),
                ),
            )
        }
    }
}

async fn login_page() -> Response {
    html_page(StatusCode::OK, html::login(None))
}

async fn login(State(w): State<W>, Form(f): Form<Fields>) -> Response {
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    match w
        .auth
        .login(get("user").trim(), get("password"), get("token").trim())
        .await
    {
        Some(id) => (
            StatusCode::SEE_OTHER,
            [
                (header::SET_COOKIE, w.auth.set_cookie(&id)),
                (header::LOCATION, "/".to_string()),
            ],
        )
            .into_response(),
        None => {
            tracing::warn!(user = get("user"), "workbench: a login failed");
            html_page(
                StatusCode::UNAUTHORIZED,
                html::login(Some("Wrong user, password or token.")),
            )
        }
    }
}

async fn logout(State(w): State<W>, headers: HeaderMap) -> Response {
    w.auth.logout(&headers);
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, w.auth.set_cookie("")),
            (header::LOCATION, "/login".to_string()),
        ],
    )
        .into_response()
}

macro_rules! page_handler {
    ($name:ident, $page:path, $title:expr, $here:expr) => {
        async fn $name(
            State(w): State<W>,
            headers: HeaderMap,
            Query(q): Query<Fields>,
        ) -> Response {
            let Some(s) = w.auth.session(&headers) else {
                return to_login();
            };
            let body = $page(&w, &s, &q).await;
            render(&s, $title, $here, &q, body)
        }
    };
}

page_handler!(now, pages::now, "Now", "/");
page_handler!(exceptions, pages::exceptions, "Exceptions", "/exceptions");
page_handler!(blocked, pages::blocked, "Blocked orders", "/blocked");
page_handler!(drift, pages::drift, "Drift", "/drift");
page_handler!(trail, pages::trail, "Order trail", "/trail");

async fn dead_letter(
    State(w): State<W>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<Fields>,
) -> Response {
    let Some(s) = w.auth.session(&headers) else {
        return to_login();
    };
    let title = format!("Dead letter {id}");
    match pages::dead_letter(&w, &s, id).await {
        Ok(Some(body)) => render(&s, &title, "/exceptions", &q, Ok(body)),
        Ok(None) => html_page(
            StatusCode::NOT_FOUND,
            html::page(
                &title,
                "/exceptions",
                &s,
                None,
                "<p>No such dead letter.</p>",
            ),
        ),
        Err(e) => render(&s, &title, "/exceptions", &q, Err(e)),
    }
}

/// An operator's action: the session, its form token and a comment, or the answer refusing it.
fn authorize(
    w: &Workbench,
    headers: &HeaderMap,
    f: &Fields,
) -> Result<(Session, String), Box<Response>> {
    let Some(s) = w.auth.session(headers) else {
        return Err(Box::new(to_login()));
    };
    let refuse = |status: StatusCode, why: &str| {
        html_page(
            status,
            html::page(
                "Not done",
                "",
                &s,
                None,
                &format!(
                    "<div class=\"banner bad\" id=\"refused\">{}</div>",
                    html::esc(why)
                ),
            ),
        )
    };
    if f.get("csrf") != Some(&s.csrf) {
        return Err(Box::new(refuse(
            StatusCode::FORBIDDEN,
            "This form is from another session: reload the page and try again.",
        )));
    }
    if !s.operator() {
        return Err(Box::new(refuse(
            StatusCode::FORBIDDEN,
            "Viewers can read every page but not act: ask an operator.",
        )));
    }
    let comment = f.get("comment").map(|c| c.trim()).unwrap_or("");
    if comment.is_empty() {
        return Err(Box::new(refuse(
            StatusCode::BAD_REQUEST,
            "Say why: every action needs a comment for the audit trail.",
        )));
    }
    Ok((s.clone(), comment.to_string()))
}

fn done(to: &str, message: &str) -> Response {
    let sep = if to.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{to}{sep}done={}", html::url_enc(message))).into_response()
}

fn failed(s: &Session, e: &anyhow::Error) -> Response {
    html_page(
        StatusCode::SERVICE_UNAVAILABLE,
        html::page(
            "Not done",
            "",
            s,
            None,
            &format!(
                "<div class=\"banner bad\" id=\"refused\">Not done: {}</div>",
                html::esc(&format!("{e:#}"))
            ),
        ),
    )
}

async fn replay(
    State(w): State<W>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<Fields>,
) -> Response {
    let (s, comment) = match authorize(&w, &headers, &f) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let selection = crate::cli::dlq::Selection::One(id);
    match replay_and_record(&w, &s, &comment, &selection).await {
        Ok(message) => done(&format!("/exceptions/{id}"), &message),
        Err(e) => failed(&s, &e),
    }
}

async fn replay_cause(State(w): State<W>, headers: HeaderMap, Form(f): Form<Fields>) -> Response {
    let (s, comment) = match authorize(&w, &headers, &f) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let (sink, reason) = (
        f.get("sink").cloned().unwrap_or_default(),
        f.get("reason").cloned().unwrap_or_default(),
    );
    let back = format!("/exceptions?sink={}&state=all", html::url_enc(&sink));
    let selection = crate::cli::dlq::Selection::Cause { sink, reason };
    match replay_and_record(&w, &s, &comment, &selection).await {
        Ok(message) => done(&back, &message),
        Err(e) => failed(&s, &e),
    }
}

/// Replays, records each result with who and why, and says what it came to.
async fn replay_and_record(
    w: &Workbench,
    s: &Session,
    comment: &str,
    selection: &crate::cli::dlq::Selection,
) -> Result<String> {
    let results = crate::cli::dlq::replay_selected(w.cfg.clone(), selection).await?;
    let client = w.state.client().await?;
    let actor = s.actor();
    let mut delivered = 0;
    let mut last_failure = None;
    for r in &results {
        let what = match &r.outcome {
            Ok(()) => {
                delivered += 1;
                format!("dead letter {} ({}): replayed and delivered", r.id, r.sink)
            }
            Err(e) => {
                last_failure = Some(e.clone());
                format!(
                    "dead letter {} ({}): replayed, still failing: {e}",
                    r.id, r.sink
                )
            }
        };
        crate::state::audit_action(
            &client,
            &r.key,
            "workbench-replay",
            &format!("{what} — {comment}"),
            &actor,
        )
        .await?;
    }
    tracing::info!(
        actor,
        delivered,
        of = results.len(),
        comment,
        "workbench: replay"
    );
    Ok(match (results.len(), last_failure) {
        (0, _) => "Nothing to replay: it is no longer open.".to_string(),
        (n, None) => format!("Replayed {n}: delivered."),
        (n, Some(e)) => format!("Replayed {n}: {delivered} delivered; still failing: {e}"),
    })
}

async fn discard(
    State(w): State<W>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<Fields>,
) -> Response {
    let (s, comment) = match authorize(&w, &headers, &f) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let result: Result<String> = async {
        let client = w.state.client().await?;
        let row = client
            .query_opt(
                "UPDATE odoo_cdc.dead_letters SET replayed_at = now(), discarded_at = now() \
                 WHERE id = $1 AND replayed_at IS NULL RETURNING key, sink",
                &[&id],
            )
            .await?;
        let Some(row) = row else {
            return Ok("Nothing discarded: it is no longer open.".to_string());
        };
        let (key, sink): (String, String) = (row.get(0), row.get(1));
        crate::state::audit_action(
            &client,
            &key,
            "workbench-discard",
            &format!("dead letter {id} ({sink}): discarded, not delivered — {comment}"),
            &s.actor(),
        )
        .await?;
        tracing::info!(actor = s.actor(), id, comment, "workbench: discard");
        Ok("Discarded: it will not be delivered.".to_string())
    }
    .await;
    match result {
        Ok(m) => done(&format!("/exceptions/{id}"), &m),
        Err(e) => failed(&s, &e),
    }
}

async fn reconcile(State(w): State<W>, headers: HeaderMap, Form(f): Form<Fields>) -> Response {
    let (s, comment) = match authorize(&w, &headers, &f) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let sink = f.get("sink").filter(|x| !x.is_empty()).cloned();
    if let Some(x) = &sink {
        if !crate::ops::reconcile::SINKS.contains(&x.as_str()) {
            return failed(&s, &anyhow!("no system called {x}"));
        }
    }
    let fix = f.get("fix").is_some_and(|v| v == "1");
    let opts = crate::ops::reconcile::Options {
        sink: sink.clone(),
        fix,
        settle: Duration::from_secs(w.cfg.reconcile.settle_secs),
    };
    let result: Result<String> = async {
        let report =
            crate::ops::reconcile::reconcile_in_process(w.cfg.clone(), &opts, &w.shared).await?;
        let fixed = report.drifts.len() - report.open();
        let mut what = format!(
            "reconcile {}{}: {} drift(s), {fixed} fixed, {} open",
            sink.as_deref().unwrap_or("all"),
            if fix { " --fix" } else { "" },
            report.drifts.len(),
            report.open()
        );
        if !report.unexplained_cleared.is_empty() {
            let units: i64 = report.unexplained_cleared.iter().map(|c| c.units).sum();
            what.push_str(&format!(
                "; {units} unexplained units no longer held back by the oversell guard"
            ));
        }
        let client = w.state.client().await?;
        crate::state::audit_action(
            &client,
            "reconcile",
            "workbench-reconcile",
            &format!("{what} — {comment}"),
            &s.actor(),
        )
        .await?;
        Ok(what)
    }
    .await;
    match result {
        Ok(m) => done("/drift", &m),
        Err(e) => failed(&s, &e),
    }
}
