//! The console's pages: server-rendered HTML forms, no JavaScript. Every page checks the session,
//! the role and, for anything that shows data, that the warrant is active *now*; every login,
//! warrant action, view, key retrieval, media view and export is appended to the audit log
//! before the response is sent (an access that cannot be recorded is refused).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, DOCTYPE};
use mxstack_service_config::li_console::AUDIT_ANCHOR_KEY;
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio::sync::Mutex;

use crate::export::{self, Package};
use crate::media::{MediaRef, MediaStore};
use crate::replica::{Replica, TIMELINE_LIMIT};
use crate::store::{Account, NewWarrant, Role, Store, Warrant, WarrantStatus};
use crate::time::{format_ms, now_ms, parse_utc};
use crate::vault::VaultClient;
use crate::view::{self, Decryption, ViewEvent};

pub const COOKIE: &str = "mxstack_console";
const STYLE: &str = include_str!("style.css");
/// Media links handed out per process (oldest dropped past this).
const MAX_MEDIA_LINKS: usize = 10_000;

pub struct Console {
    pub store: Store,
    pub replica: Replica,
    pub vault: VaultClient,
    pub media: Option<MediaStore>,
    pub signing_key: ed25519_dalek::SigningKey,
    pub secure_cookies: bool,
    /// Media links of rendered timelines: token -> (account, warrant, media). Only media a page
    /// showed under a warrant can be fetched, by the account it was shown to.
    media_links: Mutex<HashMap<String, (i64, i64, MediaRef)>>,
    /// Audited actions by kind, and audit writes that failed (`/metrics`).
    actions: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    audit_write_failures: std::sync::atomic::AtomicU64,
}

impl Console {
    pub fn new(
        store: Store,
        replica: Replica,
        vault: VaultClient,
        media: Option<MediaStore>,
        signing_key: ed25519_dalek::SigningKey,
        secure_cookies: bool,
    ) -> Console {
        Console {
            store,
            replica,
            vault,
            media,
            signing_key,
            secure_cookies,
            media_links: Mutex::new(HashMap::new()),
            actions: Default::default(),
            audit_write_failures: Default::default(),
        }
    }

    /// Appends to the audit log and prints the entry's hash (Loki keeps a second copy of the
    /// chain's progress, which anchors its head).
    fn audit(
        &self,
        actor: Option<&str>,
        action: &str,
        subject: &str,
        details: Value,
    ) -> Result<(), Refusal> {
        match self.store.audit(actor, action, subject, &details, now_ms()) {
            Ok(entry) => {
                *self
                    .actions
                    .lock()
                    .expect("counters")
                    .entry(action.to_string())
                    .or_default() += 1;
                println!(
                    "{}",
                    json!({"audit_seq": entry.seq, AUDIT_ANCHOR_KEY: entry.hash, "action": action})
                );
                Ok(())
            }
            Err(e) => {
                self.audit_write_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                eprintln!("audit log write failed: {e}");
                Err(Refusal::page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The audit log cannot be written, so nothing is shown. Tell the operator.",
                ))
            }
        }
    }
}

type Shared = Arc<Console>;

/// The metrics listener's routes (`metrics_listen`): `/metrics` only, apart from the pages.
pub fn metrics_router(console: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(console)
}

/// Prometheus text: audited actions by kind (logins, refusals, views, key retrievals, exports,
/// ...) since start, audit write failures, the audit log's length and warrants by status.
async fn metrics(State(c): State<Shared>) -> Response {
    use std::fmt::Write;
    let mut t = String::new();
    t.push_str("# HELP mxstack_li_console_actions_total Audited actions since start, by kind.\n# TYPE mxstack_li_console_actions_total counter\n");
    let actions = c.actions.lock().expect("counters").clone();
    for (action, n) in &actions {
        let _ = writeln!(
            t,
            "mxstack_li_console_actions_total{{action=\"{action}\"}} {n}"
        );
    }
    let refused = actions.get("login.refused").copied().unwrap_or(0);
    let _ = write!(
        t,
        "# HELP mxstack_li_console_logins_refused_total Refused logins since start.\n# TYPE mxstack_li_console_logins_refused_total counter\nmxstack_li_console_logins_refused_total {refused}\n\
         # HELP mxstack_li_console_audit_write_failures_total Audit rows that could not be written (nothing was shown).\n# TYPE mxstack_li_console_audit_write_failures_total counter\nmxstack_li_console_audit_write_failures_total {}\n",
        c.audit_write_failures.load(std::sync::atomic::Ordering::Relaxed)
    );
    if let Ok((seq, _)) = c.store.audit_head() {
        let _ = write!(t, "# HELP mxstack_li_console_audit_entries Rows in the audit log.\n# TYPE mxstack_li_console_audit_entries gauge\nmxstack_li_console_audit_entries {seq}\n");
    }
    if let Ok(warrants) = c.store.warrants(now_ms()) {
        t.push_str("# HELP mxstack_li_console_warrants Warrants by status now.\n# TYPE mxstack_li_console_warrants gauge\n");
        for s in [
            WarrantStatus::Pending,
            WarrantStatus::Active,
            WarrantStatus::Expired,
            WarrantStatus::Revoked,
            WarrantStatus::Rejected,
        ] {
            let n = warrants.iter().filter(|w| w.status == s).count();
            let _ = writeln!(
                t,
                "mxstack_li_console_warrants{{status=\"{}\"}} {n}",
                s.as_str()
            );
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], t).into_response()
}

pub fn router(console: Shared) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/style.css", get(style))
        .route("/health", get(health))
        .route("/warrants/new", get(new_warrant_page))
        .route("/warrants", post(create_warrant))
        .route("/warrants/{id}", get(warrant_page))
        .route("/warrants/{id}/decide", post(decide_warrant))
        .route("/warrants/{id}/room", get(room_page))
        .route("/warrants/{id}/media/{token}", get(media))
        .route("/warrants/{id}/export", post(export_warrant))
        .route("/audit", get(audit_page))
        .fallback(|| async { page_error(StatusCode::NOT_FOUND, "No such page.") })
        .layer(axum::middleware::map_response(security_headers))
        .with_state(console)
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css")], STYLE).into_response()
}

async fn health(State(c): State<Shared>) -> Response {
    match c.replica.ping().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

// ---- sessions -------------------------------------------------------------------------------

struct Me {
    account: Account,
    csrf: String,
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The logged-in account, or a redirect to the login page.
fn me(c: &Console, headers: &HeaderMap) -> Result<Me, Refusal> {
    let token = cookie_token(headers).ok_or(Refusal::Login)?;
    match c.store.session(&token, now_ms()) {
        Ok(Some((account, session))) => Ok(Me {
            account,
            csrf: session.csrf_token,
        }),
        _ => Err(Refusal::Login),
    }
}

fn check_csrf(me: &Me, sent: &str) -> Result<(), Refusal> {
    if bool::from(me.csrf.as_bytes().ct_eq(sent.as_bytes())) {
        Ok(())
    } else {
        Err(Refusal::page(
            StatusCode::FORBIDDEN,
            "The form expired; reload the page and try again.",
        ))
    }
}

fn require(me: &Me, role: Role) -> Result<(), Refusal> {
    if me.account.role == role {
        Ok(())
    } else {
        Err(Refusal::page(
            StatusCode::FORBIDDEN,
            &format!("This page is for the {} role.", role.as_str()),
        ))
    }
}

// ---- layout ---------------------------------------------------------------------------------

fn layout(title: &str, me: Option<&Me>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · mxstack LI console" }
                link rel="stylesheet" href="/style.css";
            }
            body {
                header {
                    strong { "mxstack LI console" }
                    @if let Some(me) = me {
                        nav {
                            a href="/" { "Warrants" }
                            @if me.account.role == Role::Investigator { a href="/warrants/new" { "New warrant" } }
                            @if me.account.role == Role::Auditor { a href="/audit" { "Audit log" } }
                            span.who { (me.account.username) " (" (me.account.role.as_str()) ")" }
                            form method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(me.csrf);
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { h1 { (title) } (body) }
                footer { "Every page you open is recorded in the audit log." }
            }
        }
    }
}

fn html_response(status: StatusCode, m: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        m.into_string(),
    )
        .into_response()
}

/// Why a request gets no page: small, so helpers can return it by value.
pub enum Refusal {
    /// Not logged in (or the session ended): to the login page.
    Login,
    /// An error page with this status and message.
    Page(StatusCode, String),
}

impl Refusal {
    fn page(status: StatusCode, message: &str) -> Refusal {
        Refusal::Page(status, message.to_string())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Login => Redirect::to("/login").into_response(),
            Refusal::Page(status, message) => page_error(status, &message),
        }
    }
}

fn page_error(status: StatusCode, message: &str) -> Response {
    html_response(
        status,
        layout(
            "Not shown",
            None,
            html! { p.error id="error" { (message) } p { a href="/" { "Back" } } },
        ),
    )
}

// ---- login ----------------------------------------------------------------------------------

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    code: String,
}

fn login_form(message: Option<&str>) -> Markup {
    layout(
        "Log in",
        None,
        html! {
            @if let Some(m) = message { p.error id="error" { (m) } }
            form method="post" action="/login" {
                label { "User name" input name="username" autocomplete="username" required; }
                label { "Password" input name="password" type="password" autocomplete="current-password" required; }
                label { "One-time code" input name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" required; }
                button type="submit" { "Log in" }
            }
        },
    )
}

async fn login_page() -> Response {
    html_response(StatusCode::OK, login_form(None))
}

async fn login(State(c): State<Shared>, Form(f): Form<LoginForm>) -> Response {
    let user = f.username.trim().to_string();
    let result = {
        let c = c.clone();
        let (u, p, code) = (user.clone(), f.password, f.code);
        // Argon2 takes tens of milliseconds: off the async workers.
        tokio::task::spawn_blocking(move || c.store.login(&u, &p, code.trim(), now_ms()))
            .await
            .expect("login task")
    };
    match result {
        Ok(account) => {
            let session = match c.store.create_session(account.id, now_ms()) {
                Ok(s) => s,
                Err(e) => return page_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}")),
            };
            if let Err(r) = c.audit(
                Some(&account.username),
                "login",
                &account.username,
                json!({"role": account.role.as_str()}),
            ) {
                return r.into_response();
            }
            let cookie = format!(
                "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/{}",
                session.token,
                if c.secure_cookies { "; Secure" } else { "" }
            );
            let mut r = Redirect::to("/").into_response();
            r.headers_mut().insert(
                header::SET_COOKIE,
                HeaderValue::from_str(&cookie).expect("cookie"),
            );
            r
        }
        Err(e) => {
            if let Err(r) = c.audit(
                None,
                "login.refused",
                &user,
                json!({"reason": e.to_string()}),
            ) {
                return r.into_response();
            }
            html_response(StatusCode::UNAUTHORIZED, login_form(Some(&e.to_string())))
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    /// Missing: refused by `check_csrf` with a message, not by the form parser.
    #[serde(default)]
    csrf: String,
}

async fn logout(State(c): State<Shared>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    let me = match me(&c, &headers) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = check_csrf(&me, &f.csrf) {
        return r.into_response();
    }
    if let Some(t) = cookie_token(&headers) {
        let _ = c.store.end_session(&t);
    }
    if let Err(r) = c.audit(
        Some(&me.account.username),
        "logout",
        &me.account.username,
        json!({}),
    ) {
        return r.into_response();
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
        ))
        .expect("cookie"),
    );
    r
}

// ---- warrants -------------------------------------------------------------------------------

fn status_badge(s: WarrantStatus) -> Markup {
    let name = s.as_str();
    html! { span class={ "status " (name) } { (name) } }
}

fn targets(w: &Warrant) -> Markup {
    html! {
        @for u in &w.terms.target_users { code { (u) } " " }
        @for r in &w.terms.target_rooms { code { (r) } " " }
    }
}

async fn home(State(c): State<Shared>, headers: HeaderMap) -> Response {
    let me = match me(&c, &headers) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let now = now_ms();
    let warrants = match c.store.warrants(now) {
        Ok(w) => w,
        Err(e) => return page_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let body = html! {
        @if warrants.is_empty() { p { "No warrants yet." } }
        @else {
            table id="warrants" {
                thead { tr { th { "#" } th { "Case" } th { "Status" } th { "Targets" } th { "Window (UTC)" } th { "Expires" } th { "Created by" } th { "Approved by" } } }
                tbody {
                    @for w in &warrants {
                        tr {
                            td { a href={ "/warrants/" (w.id) } { (w.id) } }
                            td { (w.terms.case_ref) }
                            td { (status_badge(w.status)) }
                            td { (targets(w)) }
                            td { (format_ms(w.terms.window_start_ms)) " – " (format_ms(w.terms.window_end_ms)) }
                            td { (format_ms(w.terms.expires_ms)) }
                            td { (w.created_by) }
                            td { (w.approved_by.as_deref().unwrap_or("—")) }
                        }
                    }
                }
            }
        }
    };
    html_response(StatusCode::OK, layout("Warrants", Some(&me), body))
}

async fn new_warrant_page(State(c): State<Shared>, headers: HeaderMap) -> Response {
    let me = match me(&c, &headers) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = require(&me, Role::Investigator) {
        return r.into_response();
    }
    html_response(
        StatusCode::OK,
        layout("New warrant", Some(&me), warrant_form(&me, None)),
    )
}

fn warrant_form(me: &Me, error: Option<&str>) -> Markup {
    html! {
        @if let Some(e) = error { p.error id="error" { (e) } }
        p { "A warrant shows nothing until a supervisor other than you approves it. Times are UTC." }
        form method="post" action="/warrants" {
            input type="hidden" name="csrf" value=(me.csrf);
            label { "Case reference" input name="case_ref" required maxlength="200"; }
            label { "Target users (one per line, @user:server)" textarea name="target_users" rows="3" {} }
            label { "Target rooms (one per line, !room:server)" textarea name="target_rooms" rows="3" {} }
            label { "Window start (UTC)" input name="window_start" type="datetime-local" step="1" required; }
            label { "Window end (UTC)" input name="window_end" type="datetime-local" step="1" required; }
            label { "Warrant expires (UTC)" input name="expires" type="datetime-local" step="1" required; }
            label { "Justification" textarea name="justification" rows="3" required {} }
            button type="submit" { "Submit for approval" }
        }
    }
}

#[derive(Deserialize)]
struct WarrantForm {
    /// Missing: refused by `check_csrf` with a message, not by the form parser.
    #[serde(default)]
    csrf: String,
    case_ref: String,
    #[serde(default)]
    target_users: String,
    #[serde(default)]
    target_rooms: String,
    window_start: String,
    window_end: String,
    expires: String,
    justification: String,
}

fn lines(s: &str) -> Vec<String> {
    s.split(['\n', ',', ' '])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

async fn create_warrant(
    State(c): State<Shared>,
    headers: HeaderMap,
    Form(f): Form<WarrantForm>,
) -> Response {
    let me = match me(&c, &headers) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = check_csrf(&me, &f.csrf).and_then(|_| require(&me, Role::Investigator)) {
        return r.into_response();
    }
    let parsed = (|| -> Result<NewWarrant, String> {
        Ok(NewWarrant {
            case_ref: f.case_ref.trim().to_string(),
            target_users: lines(&f.target_users),
            target_rooms: lines(&f.target_rooms),
            window_start_ms: parse_utc(&f.window_start)
                .ok_or("window start: give a date and time")?,
            window_end_ms: parse_utc(&f.window_end).ok_or("window end: give a date and time")?,
            expires_ms: parse_utc(&f.expires).ok_or("expiry: give a date and time")?,
            justification: f.justification.trim().to_string(),
        })
    })();
    let result = parsed.and_then(|w| {
        let details = json!({"case_ref": w.case_ref, "target_users": w.target_users, "target_rooms": w.target_rooms,
            "window_start_ms": w.window_start_ms, "window_end_ms": w.window_end_ms, "expires_ms": w.expires_ms});
        c.store
            .create_warrant(&me.account, w, now_ms())
            .map(|id| (id, details))
            .map_err(|e| e.to_string())
    });
    match result {
        Ok((id, details)) => {
            if let Err(r) = c.audit(
                Some(&me.account.username),
                "warrant.create",
                &format!("warrant {id}"),
                details,
            ) {
                return r.into_response();
            }
            Redirect::to(&format!("/warrants/{id}")).into_response()
        }
        Err(e) => html_response(
            StatusCode::BAD_REQUEST,
            layout("New warrant", Some(&me), warrant_form(&me, Some(&e))),
        ),
    }
}

async fn warrant_page(
    State(c): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let me = match me(&c, &headers) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let now = now_ms();
    let w = match c.store.warrant(id, now) {
        Ok(Some(w)) => w,
        _ => return page_error(StatusCode::NOT_FOUND, "No such warrant."),
    };
    if let Err(r) = c.audit(
        Some(&me.account.username),
        "warrant.view",
        &format!("warrant {id}"),
        json!({"status": w.status.as_str()}),
    ) {
        return r.into_response();
    }
    let mut rooms_markup = html! {};
    if me.account.role == Role::Investigator && w.status == WarrantStatus::Active {
        match c
            .replica
            .rooms_for(&w.terms.target_users, &w.terms.target_rooms)
            .await
        {
            Ok(rooms) => {
                if let Err(r) = c.audit(
                    Some(&me.account.username),
                    "view.rooms",
                    &format!("warrant {id}"),
                    json!({"rooms": rooms.iter().map(|r| r.room_id.clone()).collect::<Vec<_>>()}),
                ) {
                    return r.into_response();
                }
                rooms_markup = html! {
                    h2 { "Rooms" }
                    @if rooms.is_empty() { p { "The replica has no room for these targets." } }
                    ul id="rooms" {
                        @for r in &rooms {
                            li {
                                a href={ "/warrants/" (id) "/room?room_id=" (urlencode(&r.room_id)) } {
                                    (r.name.as_deref().unwrap_or(&r.room_id))
                                }
                                " " code { (r.room_id) }
                                @if r.encrypted { " " span.badge { "encrypted" } }
                                " — " (r.reason)
                            }
                        }
                    }
                    form method="post" action={ "/warrants/" (id) "/export" } {
                        input type="hidden" name="csrf" value=(me.csrf);
                        button id="export" type="submit" { "Export evidence package" }
                    }
                    p { "Packages are signed by this console's key " code id="public-key" { (export::public_key_b64(&c.signing_key)) }
                        "; check one with " code { "mxstack li export verify FILE --public-key KEY" } "." }
                };
            }
            Err(e) => rooms_markup = html! { p.error { (e) } },
        }
    }
    let can_decide = me.account.role == Role::Supervisor;
    let body = html! {
        dl id="warrant" {
            dt { "Case" } dd { (w.terms.case_ref) }
            dt { "Status" } dd { (status_badge(w.status)) }
            dt { "Targets" } dd { (targets(&w)) }
            dt { "Window (UTC)" } dd { (format_ms(w.terms.window_start_ms)) " – " (format_ms(w.terms.window_end_ms)) }
            dt { "Expires" } dd { (format_ms(w.terms.expires_ms)) }
            dt { "Justification" } dd { (w.terms.justification) }
            dt { "Created by" } dd { (w.created_by) }
            dt { "Approved by" } dd { (w.approved_by.as_deref().unwrap_or("—")) }
        }
        @if w.status != WarrantStatus::Active && me.account.role == Role::Investigator {
            p id="not-active" { "This warrant is " (w.status.as_str()) ": nothing is shown under it." }
        }
        @if can_decide && w.status == WarrantStatus::Pending {
            @if w.created_by == me.account.username {
                p { "You created this warrant: another supervisor must approve it." }
            } @else {
                form method="post" action={ "/warrants/" (id) "/decide" } {
                    input type="hidden" name="csrf" value=(me.csrf);
                    label { "Reason (for rejection)" input name="reason"; }
                    button id="approve" type="submit" name="decision" value="approve" { "Approve" }
                    button id="reject" type="submit" name="decision" value="reject" { "Reject" }
                }
            }
        }
        @if can_decide && w.status == WarrantStatus::Active {
            form method="post" action={ "/warrants/" (id) "/decide" } {
                input type="hidden" name="csrf" value=(me.csrf);
                label { "Reason" input name="reason" required; }
                button id="revoke" type="submit" name="decision" value="revoke" { "Revoke" }
            }
        }
        (rooms_markup)
    };
    html_response(
        StatusCode::OK,
        layout(&format!("Warrant {id}"), Some(&me), body),
    )
}

#[derive(Deserialize)]
struct DecideForm {
    /// Missing: refused by `check_csrf` with a message, not by the form parser.
    #[serde(default)]
    csrf: String,
    decision: String,
    #[serde(default)]
    reason: String,
}

async fn decide_warrant(
    State(c): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<DecideForm>,
) -> Response {
    let me = match me(&c, &headers) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = check_csrf(&me, &f.csrf).and_then(|_| require(&me, Role::Supervisor)) {
        return r.into_response();
    }
    let now = now_ms();
    let reason = f.reason.trim();
    let result = match f.decision.as_str() {
        "approve" => c.store.approve_warrant(id, &me.account, now),
        "reject" => c.store.reject_warrant(id, &me.account, reason, now),
        "revoke" => c.store.revoke_warrant(id, &me.account, reason, now),
        _ => return page_error(StatusCode::BAD_REQUEST, "Unknown decision."),
    };
    let action = format!("warrant.{}", f.decision);
    match result {
        Ok(()) => {
            if let Err(r) = c.audit(
                Some(&me.account.username),
                &action,
                &format!("warrant {id}"),
                json!({"reason": reason}),
            ) {
                return r.into_response();
            }
            Redirect::to(&format!("/warrants/{id}")).into_response()
        }
        Err(e) => {
            if let Err(r) = c.audit(
                Some(&me.account.username),
                &format!("{action}.refused"),
                &format!("warrant {id}"),
                json!({"reason": e.to_string()}),
            ) {
                return r.into_response();
            }
            page_error(StatusCode::FORBIDDEN, &e.to_string())
        }
    }
}

/// The warrant if it is active now and the account may view under it; otherwise the refusal,
/// audited.
fn active_for_viewing(c: &Console, me: &Me, id: i64, what: &str) -> Result<Warrant, Refusal> {
    require(me, Role::Investigator)?;
    match c.store.active_warrant(id, now_ms()) {
        Ok(w) => Ok(w),
        Err(e) => {
            c.audit(
                Some(&me.account.username),
                "view.refused",
                &format!("warrant {id}"),
                json!({"what": what, "reason": e.to_string()}),
            )?;
            Err(Refusal::page(
                StatusCode::FORBIDDEN,
                &format!("Nothing is shown: {e}."),
            ))
        }
    }
}

// ---- timeline -------------------------------------------------------------------------------

#[derive(Deserialize)]
struct RoomQuery {
    room_id: String,
}

async fn room_page(
    State(c): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<RoomQuery>,
) -> Response {
    let me = match me(&c, &headers) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let w = match active_for_viewing(&c, &me, id, &q.room_id) {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    let rooms = match c
        .replica
        .rooms_for(&w.terms.target_users, &w.terms.target_rooms)
        .await
    {
        Ok(r) => r,
        Err(e) => return page_error(StatusCode::BAD_GATEWAY, &e),
    };
    if !rooms.iter().any(|r| r.room_id == q.room_id) {
        if let Err(r) = c.audit(
            Some(&me.account.username),
            "view.refused",
            &format!("warrant {id}"),
            json!({"room_id": q.room_id, "reason": "room not covered"}),
        ) {
            return r.into_response();
        }
        return page_error(
            StatusCode::FORBIDDEN,
            "Nothing is shown: this room is not covered by the warrant.",
        );
    }
    let (events, decryption) = match timeline_for(&c, &me, &w, &q.room_id).await {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let decrypted = events.iter().filter(|e| e.decrypted_with.is_some()).count();
    let in_window = c
        .replica
        .count_events(&q.room_id, w.terms.window_start_ms, w.terms.window_end_ms)
        .await
        .unwrap_or(0);
    if let Err(r) = c.audit(
        Some(&me.account.username),
        "view.timeline",
        &format!("warrant {id}"),
        json!({"room_id": q.room_id, "events": events.len(), "decrypted": decrypted}),
    ) {
        return r.into_response();
    }
    let mut links = Vec::new();
    let body = html! {
        p { "Room " code { (q.room_id) } ", events from " (format_ms(w.terms.window_start_ms)) " to " (format_ms(w.terms.window_end_ms)) " (UTC), as the LI replica holds them." }
        @for k in &decryption.retrievals {
            p.keys { "Escrowed keys of " code { (k.user_id) } ": " (k.versions) " version(s); " (k.outcome) }
        }
        @if in_window > TIMELINE_LIMIT {
            p.error id="truncated" { "The window holds " (in_window) " events; the first " (TIMELINE_LIMIT)
                " are shown (and every event main removed). Narrow the window to see the rest." }
        }
        @if events.is_empty() { p id="empty" { "No events in the window." } }
        ol id="timeline" {
            @for e in &events {
                li class=(event_classes(e)) id={ "ev-" (e.event_id) } {
                    div.meta { time { (format_ms(e.origin_server_ts)) } " " span.sender { (e.sender) } " " code.evid { (e.event_id) } }
                    div.body { (e.summary()) }
                    @if let Some(m) = e.media() {
                        @let token = remember(&mut links, m.clone());
                        div.media { a href={ "/warrants/" (id) "/media/" (token) } { "media: " (m.name.as_deref().unwrap_or(&m.mxc)) } }
                    }
                    @if e.encrypted {
                        @if let Some(how) = &e.decrypted_with { div.decrypted { "Decrypted with " (how) } }
                        @if let Some(why) = &e.undecryptable { div.undecryptable { "Not decrypted: " (why) } }
                    }
                    @if let Some(r) = &e.redacted_by {
                        div.redacted { "Redacted on main by " code { (r) } @if e.censored_on_main { "; main has censored it, the original above is from the replica's history" } }
                    }
                    @if let Some(how) = &e.removed_on_main { div.removed { "Removed from main: " (how) } }
                    @if let Some(why) = &e.rejected { div.rejected { "Rejected by the server (" (why) "): it never took effect in the room" } }
                    @if !e.edits.is_empty() {
                        div.edits { "Edit history:"
                            ol {
                                li.edit-original { "original: " (e.summary()) }
                                @for x in &e.edits {
                                    li.edit { time { (format_ms(x.origin_server_ts)) } " " (x.body.as_deref().unwrap_or("(no text)"))
                                        @if x.redacted_by.is_some() { " (edit redacted)" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    {
        let mut map = c.media_links.lock().await;
        if map.len() + links.len() > MAX_MEDIA_LINKS {
            map.clear();
        }
        for (t, m) in links {
            map.insert(t, (me.account.id, id, m));
        }
    }
    html_response(
        StatusCode::OK,
        layout(&format!("Warrant {id}: timeline"), Some(&me), body),
    )
}

fn event_classes(e: &ViewEvent) -> String {
    let mut c = vec!["event"];
    if e.encrypted {
        c.push(if e.decrypted_with.is_some() {
            "was-encrypted"
        } else {
            "still-encrypted"
        });
    }
    if e.redacted_by.is_some() {
        c.push("redacted");
    }
    if e.removed_on_main.is_some() {
        c.push("removed");
    }
    if !e.edits.is_empty() {
        c.push("edited");
    }
    c.join(" ")
}

/// Builds a room's view, auditing each key retrieval the decryption made.
async fn timeline_for(
    c: &Console,
    me: &Me,
    w: &Warrant,
    room_id: &str,
) -> Result<(Vec<ViewEvent>, Decryption), Refusal> {
    let mut decryption = match Decryption::for_warrant(w, &c.replica, &c.vault).await {
        Ok(d) => d,
        Err(e) => {
            c.audit(
                Some(&me.account.username),
                "key.retrieve.failed",
                &format!("warrant {}", w.id),
                json!({"error": e}),
            )?;
            Decryption::none()
        }
    };
    for k in &decryption.retrievals {
        c.audit(
            Some(&me.account.username),
            "key.retrieve",
            &format!("warrant {}", w.id),
            json!({"user_id": k.user_id, "versions": k.versions, "outcome": k.outcome}),
        )?;
    }
    let events = view::room_timeline(&c.replica, &mut decryption, w, room_id)
        .await
        .map_err(|e| Refusal::page(StatusCode::BAD_GATEWAY, &e))?;
    Ok((events, decryption))
}

/// A new media link token for `m`, kept in `links` until the page is sent.
fn remember(links: &mut Vec<(String, MediaRef)>, m: MediaRef) -> String {
    let token = new_token();
    links.push((token.clone(), m));
    token
}

fn new_token() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("random");
    hex::encode(b)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn media(
    State(c): State<Shared>,
    headers: HeaderMap,
    Path((id, token)): Path<(i64, String)>,
) -> Response {
    let me = match me(&c, &headers) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = active_for_viewing(&c, &me, id, "media") {
        return r.into_response();
    }
    let link = c.media_links.lock().await.get(&token).cloned();
    let Some((_, _, m)) = link.filter(|(a, w, _)| *a == me.account.id && *w == id) else {
        return page_error(
            StatusCode::NOT_FOUND,
            "Unknown media link: open it from a timeline.",
        );
    };
    let Some(store) = &c.media else {
        return page_error(
            StatusCode::NOT_FOUND,
            "This console has no media bucket configured.",
        );
    };
    let result = store.fetch(&c.replica, &m).await;
    let details = match &result {
        Ok(x) => json!({"mxc": m.mxc, "sha256": x.sha256}),
        Err(e) => json!({"mxc": m.mxc, "refused": e}),
    };
    if let Err(r) = c.audit(
        Some(&me.account.username),
        "view.media",
        &format!("warrant {id}"),
        details,
    ) {
        return r.into_response();
    }
    match result {
        Ok(x) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{}\"", x.sha256),
                ),
            ],
            x.bytes,
        )
            .into_response(),
        Err(e) => page_error(StatusCode::FORBIDDEN, &e),
    }
}

// ---- export ---------------------------------------------------------------------------------

async fn export_warrant(
    State(c): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let me = match me(&c, &headers) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = check_csrf(&me, &f.csrf) {
        return r.into_response();
    }
    let w = match active_for_viewing(&c, &me, id, "export") {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    let rooms = match c
        .replica
        .rooms_for(&w.terms.target_users, &w.terms.target_rooms)
        .await
    {
        Ok(r) => r,
        Err(e) => return page_error(StatusCode::BAD_GATEWAY, &e),
    };
    let mut package = Package::new();
    let mut out_rooms = Vec::new();
    let mut media_files: Vec<Value> = Vec::new();
    for r in &rooms {
        let (events, _) = match timeline_for(&c, &me, &w, &r.room_id).await {
            Ok(x) => x,
            Err(resp) => return resp.into_response(),
        };
        for e in &events {
            let Some(m) = e.media() else { continue };
            let entry = match &c.media {
                None => {
                    json!({"event_id": e.event_id, "mxc": m.mxc, "refused": "no media bucket configured"})
                }
                Some(store) => match store.fetch(&c.replica, &m).await {
                    Ok(x) => {
                        let path = format!("media/{}", x.sha256);
                        package.add(&path, x.bytes);
                        json!({"event_id": e.event_id, "mxc": m.mxc, "path": path, "sha256": x.sha256, "li_key": x.li_key})
                    }
                    Err(reason) => json!({"event_id": e.event_id, "mxc": m.mxc, "refused": reason}),
                },
            };
            media_files.push(entry);
        }
        let in_window = c
            .replica
            .count_events(&r.room_id, w.terms.window_start_ms, w.terms.window_end_ms)
            .await
            .unwrap_or(0);
        out_rooms.push(json!({"room_id": r.room_id, "name": r.name, "encrypted": r.encrypted, "reason": r.reason,
            "events_in_window_on_main": in_window, "truncated": in_window > TIMELINE_LIMIT, "events": events}));
    }
    let now = now_ms();
    let messages = json!({
        "warrant": {"id": w.id, "case_ref": w.terms.case_ref, "target_users": w.terms.target_users, "target_rooms": w.terms.target_rooms,
            "window_start_ms": w.terms.window_start_ms, "window_end_ms": w.terms.window_end_ms, "expires_ms": w.terms.expires_ms,
            "created_by": w.created_by, "approved_by": w.approved_by},
        "rooms": out_rooms,
        "media": media_files,
    });
    package.add(
        "messages.json",
        serde_json::to_vec_pretty(&messages).expect("json"),
    );
    let (bytes, manifest) = match package.seal(
        &c.signing_key,
        w.id,
        &w.terms.case_ref,
        &me.account.username,
        now,
    ) {
        Ok(x) => x,
        Err(e) => return page_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let manifest_sha = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(
            serde_json::to_vec_pretty(&manifest).expect("json"),
        ))
    };
    if let Err(r) = c.audit(Some(&me.account.username), "export", &format!("warrant {id}"),
        json!({"files": manifest.files.len(), "manifest_sha256": manifest_sha, "rooms": rooms.len()})) {
        return r.into_response();
    }
    let name = format!("evidence-warrant-{id}-{}.tar", now / 1000);
    (
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    )
        .into_response()
}

// ---- audit ----------------------------------------------------------------------------------

async fn audit_page(State(c): State<Shared>, headers: HeaderMap) -> Response {
    let me = match me(&c, &headers) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = require(&me, Role::Auditor) {
        return r.into_response();
    }
    if let Err(r) = c.audit(
        Some(&me.account.username),
        "audit.view",
        "audit log",
        json!({}),
    ) {
        return r.into_response();
    }
    let verdict = crate::audit::verify(c.store.path(), None);
    let after = c
        .store
        .audit_head()
        .map(|(seq, _)| seq - 500)
        .unwrap_or(0)
        .max(0);
    let entries = c.store.audit_entries(after, 500).unwrap_or_default();
    let body = html! {
        @match &verdict {
            Ok(v) => p.ok id="chain" { "Chain verified: " (v.rows) " entries, head " code { (v.head_hash) } },
            Err(e) => p.error id="chain" { "Chain broken: " (e) },
        }
        table id="audit" {
            thead { tr { th { "#" } th { "Time (UTC)" } th { "Who" } th { "Action" } th { "Subject" } th { "Details" } th { "Hash" } } }
            tbody {
                @for e in &entries {
                    tr { td { (e.seq) } td { (format_ms(e.at_ms)) } td { (e.actor.as_deref().unwrap_or("—")) } td { (e.action) } td { (e.subject) }
                         td { code { (e.details) } } td { code { (&e.hash[..16]) "…" } } }
                }
            }
        }
    };
    html_response(StatusCode::OK, layout("Audit log", Some(&me), body))
}
