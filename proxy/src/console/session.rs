//! Who is looking at the console: a login takes an API token (`read` or `admin`; the
//! gRPC API's scopes) and gives a session cookie; every form carries the session's CSRF
//! token.
//!
//! Sessions live in the proxy's memory and hold the token itself, so each request checks
//! it again: a revoked token ends its sessions at once, and a restart logs everyone out.
//! (Behind a load balancer, route a browser to one proxy.) The cookie is `HttpOnly`,
//! `SameSite=Strict` and `Secure` when the request came over HTTPS (`X-Forwarded-Proto`).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use askama::Template;
use axum::{
    Form,
    extract::{FromRequestParts, Query, State},
    http::{HeaderMap, HeaderValue, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use base64::Engine as _;
use serde::Deserialize;

use super::{Console, Refusal, render};
use crate::auth::{Caller, Scope};

/// How long a session lasts after its login.
const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);
/// Sessions kept at most; past it the oldest go first.
const MAX_SESSIONS: usize = 10_000;
const SESSION_COOKIE: &str = "postsub_session";
/// The login form's own CSRF token (double submit: cookie and field must match).
const LOGIN_COOKIE: &str = "postsub_login";

/// The sessions of one proxy.
pub(super) struct Sessions {
    live: Mutex<HashMap<String, Session>>,
    /// The CSRF token of a console that asks for no login.
    open_csrf: String,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            live: Mutex::default(),
            open_csrf: random_token(),
        }
    }
}

struct Session {
    /// The API token logged in with, checked again on every request.
    secret: String,
    csrf: String,
    expires: Instant,
}

impl Sessions {
    fn start(&self, secret: String) -> (String, String) {
        let (id, csrf) = (random_token(), random_token());
        let mut live = self.live.lock().expect("sessions lock");
        let now = Instant::now();
        live.retain(|_, session| session.expires > now);
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live
                .iter()
                .min_by_key(|(_, session)| session.expires)
                .map(|(id, _)| id.clone())
        {
            live.remove(&oldest);
        }
        live.insert(
            id.clone(),
            Session {
                secret,
                csrf: csrf.clone(),
                expires: now + SESSION_LIFETIME,
            },
        );
        (id, csrf)
    }

    /// The token and CSRF token of a live session.
    fn get(&self, id: &str) -> Option<(String, String)> {
        let live = self.live.lock().expect("sessions lock");
        live.get(id)
            .filter(|session| session.expires > Instant::now())
            .map(|session| (session.secret.clone(), session.csrf.clone()))
    }

    fn end(&self, id: &str) {
        self.live.lock().expect("sessions lock").remove(id);
    }
}

/// 256 random bits, base64url.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The value of cookie `name` in a request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value for the console's path.
fn set_cookie(headers: &HeaderMap, name: &str, value: &str, max_age: Duration) -> HeaderValue {
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
    let cookie = format!(
        "{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&cookie).expect("cookie values are base64url")
}

/// The person looking at a page: who, what their token lets them do, and the CSRF token
/// their forms carry. A request without a live session is sent to the login page.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The token's name (`anonymous` when the console asks for no login).
    pub name: String,
    /// `read` or `admin`.
    pub scope: Scope,
    /// Goes in every form.
    pub csrf: String,
    /// Whether there is a session to log out of.
    pub logged_in: bool,
}

impl Viewer {
    /// Whether this viewer may change anything (only `admin` tokens).
    pub fn can_act(&self) -> bool {
        self.scope.covers(Scope::Admin)
    }

    /// Who to name in the audit log and the admin API.
    pub(super) fn caller(&self) -> Caller {
        Caller {
            name: self.name.clone(),
            scope: self.scope,
        }
    }
}

impl FromRequestParts<Console> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Response> {
        let inner = &console.inner;
        let Some(authenticator) = &inner.authenticator else {
            return Ok(Viewer {
                name: "anonymous".to_owned(),
                scope: Scope::Admin,
                csrf: inner.sessions.open_csrf.clone(),
                logged_in: false,
            });
        };
        let to_login = || {
            // The router is nested under `/ui`, which the path here no longer has.
            let next = match parts.uri.path_and_query().map(|pq| pq.as_str()) {
                None | Some("/") => "/ui".to_owned(),
                Some(pq) => format!("/ui{pq}"),
            };
            login_redirect(&next, None)
        };
        let Some((secret, csrf)) =
            cookie(&parts.headers, SESSION_COOKIE).and_then(|id| inner.sessions.get(id))
        else {
            return Err(to_login());
        };
        match authenticator.caller(&secret) {
            Some(caller) if caller.scope != Scope::Submit => Ok(Viewer {
                name: caller.name,
                scope: caller.scope,
                csrf,
                logged_in: true,
            }),
            // Revoked since the login.
            _ => Err(to_login()),
        }
    }
}

/// The login page, coming back to `next` afterwards, saying `why` when set.
pub(super) fn login_redirect(next: &str, why: Option<&str>) -> Response {
    let query = super::view::query_string([("next", next), ("why", why.unwrap_or_default())]);
    Redirect::to(&format!("/ui/login?{query}")).into_response()
}

/// Where a login may lead: a console page, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next) if next.starts_with("/ui") && !next.starts_with("//") => next.to_owned(),
        _ => "/ui".to_owned(),
    }
}

#[derive(Deserialize)]
pub(super) struct LoginQuery {
    next: Option<String>,
    why: Option<String>,
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    next: String,
    csrf: String,
    message: Option<String>,
}

fn login_form(headers: &HeaderMap, next: String, message: Option<String>) -> Response {
    let csrf = random_token();
    let mut response = render(&LoginPage {
        next,
        csrf: csrf.clone(),
        message,
    });
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(headers, LOGIN_COOKIE, &csrf, Duration::from_secs(3600)),
    );
    response
}

pub(super) async fn login_page(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Response {
    let next = safe_next(query.next.as_deref());
    if console.inner.authenticator.is_none() {
        return Redirect::to(&next).into_response();
    }
    login_form(&headers, next, query.why)
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
    csrf: String,
    next: Option<String>,
}

pub(super) async fn login(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let Some(authenticator) = &console.inner.authenticator else {
        return Redirect::to(&next).into_response();
    };
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same(expected, &form.csrf) {
        return login_form(
            &headers,
            next,
            Some("The login form had expired; log in again.".to_owned()),
        );
    }
    let secret = form.token.trim().to_owned();
    let refused = |message: &str| {
        let mut response = login_form(&headers, next.clone(), Some(message.to_owned()));
        *response.status_mut() = axum::http::StatusCode::UNAUTHORIZED;
        response
    };
    match authenticator.caller(&secret) {
        None => refused("Unknown or revoked token."),
        Some(caller) if caller.scope == Scope::Submit => refused(
            "A `submit` token can only call Process; the console takes a `read` or `admin` token.",
        ),
        Some(caller) => {
            let (id, _) = console.inner.sessions.start(secret);
            tracing::info!(token = %caller.name, scope = %caller.scope, "console login");
            let mut response = Redirect::to(&next).into_response();
            let headers_out = response.headers_mut();
            headers_out.append(
                header::SET_COOKIE,
                set_cookie(&headers, SESSION_COOKIE, &id, SESSION_LIFETIME),
            );
            headers_out.append(
                header::SET_COOKIE,
                set_cookie(&headers, LOGIN_COOKIE, "", Duration::ZERO),
            );
            response
        }
    }
}

/// A form's CSRF field, checked by [`Viewer::check_csrf`].
#[derive(Deserialize)]
pub(super) struct CsrfForm {
    pub(super) csrf: String,
}

impl Viewer {
    /// Refuses a form whose CSRF token is not this session's: back to the login page,
    /// nothing done.
    pub(super) fn check_csrf(&self, presented: &str, back_to: &str) -> Result<(), Refusal> {
        if same(&self.csrf, presented) {
            Ok(())
        } else {
            Err(Refusal::Stale {
                back_to: back_to.to_owned(),
            })
        }
    }
}

fn same(a: &str, b: &str) -> bool {
    subtle::ConstantTimeEq::ct_eq(a.as_bytes(), b.as_bytes()).into()
}

pub(super) async fn logout(
    State(console): State<Console>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(refused) = viewer.check_csrf(&form.csrf, "/ui") {
        return refused.into_response();
    }
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        console.inner.sessions.end(id);
    }
    let mut response = Redirect::to("/ui/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&headers, SESSION_COOKIE, "", Duration::ZERO),
    );
    response
}
