//! The operators' console: server-rendered pages under `/ui` on the proxy's HTTP port.
//!
//! Pages are askama templates compiled into the binary, with one small script and one
//! stylesheet embedded beside them; every page works without JavaScript, which only adds
//! the Overview's live refresh. Reads go to the store and the queue; every change goes
//! through the same code as the `TaskAdmin` API ([`crate::admin`], [`crate::requeue`]),
//! so checks and the audit log are the same for both.
//!
//! - `session`: logging in with an API token, the session cookie, CSRF tokens.
//! - `pages`: the pages (Overview, Forms, Runs and its CSV, Run, Submission, Dead letters,
//!   Bindings, Audit).
//! - `actions`: what `admin` sessions may do: retry a run, retry a group of dead runs,
//!   enable or disable a binding.
//! - `view`: formatting shared by the pages (times, JSON, the causes of dead runs).

mod actions;
mod pages;
mod session;
mod view;

use std::sync::Arc;

use askama::Template;
use axum::{
    Router,
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use postsub_tasks::Registry;

use crate::{admin::Admin, auth::Authenticator, queue::JobQueue, store::Store};

use self::session::Sessions;
pub use self::session::Viewer;

/// What the console pages read and act on; cheap to clone.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    admin: Admin,
    store: Arc<dyn Store>,
    queue: Arc<dyn JobQueue>,
    registry: Registry,
    /// `None`: the proxy asks for no token (`dev` on loopback, `--no-auth`), and neither
    /// does the console.
    authenticator: Option<Arc<Authenticator>>,
    sessions: Sessions,
}

impl Console {
    /// The console over the proxy's parts; logins are checked by `authenticator`, or not
    /// asked for when it is `None`.
    pub fn new(
        admin: Admin,
        store: Arc<dyn Store>,
        queue: Arc<dyn JobQueue>,
        registry: Registry,
        authenticator: Option<Arc<Authenticator>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                admin,
                store,
                queue,
                registry,
                authenticator,
                sessions: Sessions::default(),
            }),
        }
    }

    /// The routes, to nest under `/ui`.
    pub fn routes(self) -> Router {
        Router::new()
            .route("/", get(pages::overview))
            .route("/live", get(pages::overview_live))
            .route("/login", get(session::login_page).post(session::login))
            .route("/logout", post(session::logout))
            .route("/forms", get(pages::forms))
            .route("/runs", get(pages::runs))
            .route("/runs.csv", get(pages::runs_csv))
            .route("/runs/{id}", get(pages::run))
            .route("/runs/{id}/retry", post(actions::retry_run))
            .route("/submissions/{id}", get(pages::submission))
            .route("/dead", get(pages::dead_letters))
            .route(
                "/dead/retry",
                get(actions::confirm_retry_group).post(actions::retry_group),
            )
            .route("/bindings", get(pages::bindings))
            .route("/bindings/{id}/enabled", post(actions::set_enabled))
            .route("/audit", get(pages::audit))
            .route("/assets/console.css", get(stylesheet))
            .route("/assets/console.js", get(script))
            .fallback(|| async { PageError::not_found("no such page") })
            .with_state(self)
    }
}

async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../templates/console/console.css"),
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../templates/console/console.js"),
    )
}

/// A page, rendered; a template that fails to render is a 500 with the reason logged.
fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "a console page did not render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// Why a page could not be shown, as a page saying so.
#[derive(Debug)]
pub(crate) struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
        }
    }

    /// The store or queue did not answer; the details go to the log.
    pub(crate) fn unavailable(what: &str, err: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %err, "console: {what} failed");
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("{what} failed; the proxy's log says why"),
        }
    }

    /// A refusal of the admin API, as a page.
    pub(crate) fn from_status(status: tonic::Status) -> Self {
        let code = match status.code() {
            tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => {
                StatusCode::BAD_REQUEST
            }
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => StatusCode::FORBIDDEN,
            tonic::Code::AlreadyExists | tonic::Code::Aborted => StatusCode::CONFLICT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self {
            status: code,
            message: status.message().to_owned(),
        }
    }
}

/// Why a form post did nothing: a stale CSRF token (back to the login page) or a page
/// saying why.
pub(crate) enum Refusal {
    /// The form's CSRF token is not the session's.
    Stale {
        /// Where the login leads back to.
        back_to: String,
    },
    /// Refused or failed, as a page.
    Page(PageError),
}

impl From<PageError> for Refusal {
    fn from(error: PageError) -> Self {
        Refusal::Page(error)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Stale { back_to } => session::login_redirect(
                &back_to,
                Some(
                    "The form had expired (its CSRF token is not this session's); nothing was \
                     done.",
                ),
            ),
            Refusal::Page(error) => error.into_response(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            status: self.status.as_u16(),
            reason: self.status.canonical_reason().unwrap_or(""),
            message: &self.message,
        };
        (self.status, render(&page)).into_response()
    }
}
