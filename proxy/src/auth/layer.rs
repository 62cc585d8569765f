//! [`RequireTokenLayer`]: the tower layer in front of every gRPC service of the proxy, which
//! answers a call without the token its method needs before any service sees it.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::{Either, Ready, ready};
use http::{Request, Response};
use tonic::{Status, body::Body};
use tower::{Layer, Service};

use super::{Access, Caller, Scope, TokenCache, access, hash};

/// Refuses gRPC calls without a token of the right scope: `UNAUTHENTICATED` when the
/// `authorization: Bearer` header is missing or names no known token, `PERMISSION_DENIED`
/// (naming the scope needed) when the token's scope does not cover the method.
#[derive(Clone)]
pub struct RequireTokenLayer {
    /// `None`: let every call through (see [`RequireTokenLayer::disabled`]).
    check: Option<Arc<Authenticator>>,
}

/// Who holds a token: the stored tokens, and `POSTSUB_ADMIN_TOKEN`. Shared by the gRPC
/// layer and the console's login.
pub struct Authenticator {
    tokens: TokenCache,
    /// The hash of `POSTSUB_ADMIN_TOKEN`, an admin token that is not stored.
    bootstrap: Option<[u8; 32]>,
}

impl Authenticator {
    /// Checks tokens against `tokens`, and against `bootstrap`, an admin token from the
    /// environment.
    pub fn new(tokens: TokenCache, bootstrap: Option<&str>) -> Self {
        Self {
            tokens,
            bootstrap: bootstrap.map(hash),
        }
    }

    /// The holder of `secret`, when it is a known token.
    pub fn caller(&self, secret: &str) -> Option<Caller> {
        let presented = hash(secret);
        match self.tokens.check(&presented) {
            Some(caller) => Some(caller),
            None if self.bootstrap.is_some_and(|bootstrap| {
                subtle::ConstantTimeEq::ct_eq(&bootstrap[..], &presented[..]).into()
            }) =>
            {
                Some(Caller {
                    name: "POSTSUB_ADMIN_TOKEN".to_owned(),
                    scope: Scope::Admin,
                })
            }
            None => None,
        }
    }
}

impl RequireTokenLayer {
    /// Checks calls against `tokens`, and against `bootstrap`, an admin token from the
    /// environment.
    pub fn new(tokens: TokenCache, bootstrap: Option<&str>) -> Self {
        Self {
            check: Some(Arc::new(Authenticator::new(tokens, bootstrap))),
        }
    }

    /// What this layer checks tokens with; `None` when it lets every call through.
    pub fn authenticator(&self) -> Option<Arc<Authenticator>> {
        self.check.clone()
    }

    /// Lets every call through: for a proxy started without authentication, which keeps
    /// one service type either way.
    pub fn disabled() -> Self {
        Self { check: None }
    }
}

impl<S> Layer<S> for RequireTokenLayer {
    type Service = RequireToken<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireToken {
            inner,
            check: self.check.clone(),
        }
    }
}

/// The service [`RequireTokenLayer`] makes.
#[derive(Clone)]
pub struct RequireToken<S> {
    inner: S,
    check: Option<Arc<Authenticator>>,
}

impl<S, B> Service<Request<B>> for RequireToken<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response<Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let checked = match &self.check {
            Some(check) => check.authorize(&request),
            None => Ok(None),
        };
        match checked {
            Ok(caller) => {
                // The services read who called (the audit log) from the request.
                if let Some(caller) = caller {
                    request.extensions_mut().insert(caller);
                }
                Either::Left(self.inner.call(request))
            }
            Err(status) => Either::Right(ready(Ok(status.into_http()))),
        }
    }
}

impl Authenticator {
    /// Who is calling, when the method needs a token and the token covers it.
    fn authorize<B>(&self, request: &Request<B>) -> Result<Option<Caller>, Status> {
        let needed = match access(request.uri().path()) {
            Access::Open => return Ok(None),
            Access::AnyToken => None,
            Access::Scope(scope) => Some(scope),
        };
        let Caller { name, scope } = self
            .caller(bearer(request)?)
            .ok_or_else(|| Status::unauthenticated("unknown or revoked token"))?;
        match needed {
            Some(needed) if !scope.covers(needed) => {
                let or_admin = if needed == Scope::Admin {
                    ""
                } else {
                    " (or `admin`)"
                };
                Err(Status::permission_denied(format!(
                    "{} needs a token with the `{needed}` scope{or_admin}; token {name:?} has `{scope}`",
                    request.uri().path()
                )))
            }
            _ => Ok(Some(Caller { name, scope })),
        }
    }
}

/// The token of `authorization: Bearer <token>`.
fn bearer<B>(request: &Request<B>) -> Result<&str, Status> {
    let header = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| {
            Status::unauthenticated(
                "this call needs a token: send `authorization: Bearer <token>` (postsub tokens create)",
            )
        })?;
    header
        .to_str()
        .ok()
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|token| !token.is_empty())
        .ok_or_else(|| Status::unauthenticated("the authorization header is not `Bearer <token>`"))
}
