//! Who may call the proxy: API tokens with scopes.
//!
//! A token is `pst_` and 43 characters of random base64url (256 bits); the store keeps only
//! its SHA-256 (a token has the entropy of a key, so a slow password hash would add nothing
//! but cost per call). Every gRPC call carries `authorization: Bearer <token>`;
//! [`RequireTokenLayer`] looks it up in the [`TokenCache`] and lets the call through when
//! the token's scope covers the method ([`access`]).
//!
//! - `tokens`: the in-memory token set, kept fresh by the store's change feed, and the
//!   last-used times written back in batches.
//! - `layer`: the tower layer in front of every gRPC service.

mod layer;
mod tokens;

use std::{fmt, str::FromStr};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

pub use self::{
    layer::{Authenticator, RequireToken, RequireTokenLayer},
    tokens::{Caller, TokenCache, TokenCacheTask},
};

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Scope {
    /// `Process` only: what a form backend holds.
    Submit,
    /// Read bindings, runs, task kinds and queues.
    Read,
    /// Everything.
    Admin,
}

impl Scope {
    /// The scope's name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Submit => "submit",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    /// Whether this scope may call a method that needs `needed`: `admin` may call
    /// anything, the others only their own methods.
    pub fn covers(self, needed: Scope) -> bool {
        self == Scope::Admin || self == needed
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "submit" => Ok(Scope::Submit),
            "read" => Ok(Scope::Read),
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown scope {other:?} (one of submit, read, admin)"
            )),
        }
    }
}

/// What a gRPC method asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: health checks (load balancers hold no token).
    Open,
    /// Any valid token: reflection, which only describes the API.
    AnyToken,
    /// A token whose scope covers this one.
    Scope(Scope),
}

/// What the method at `path` (`/package.Service/Method`) asks: `Process` needs `submit`,
/// TaskAdmin's reads `read`, everything else (every change, and any method this table does
/// not know) `admin`.
pub fn access(path: &str) -> Access {
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return Access::Scope(Scope::Admin);
    };
    match (service, method) {
        ("grpc.health.v1.Health", _) => Access::Open,
        ("grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection", _) => {
            Access::AnyToken
        }
        ("postsub.v1.PostSubmission", "Process") => Access::Scope(Scope::Submit),
        (
            "postsub.v1.TaskAdmin",
            "GetBinding" | "ListBindings" | "ListTaskKinds" | "ListRuns" | "RunStats" | "GetRun"
            | "ListQueues",
        ) => Access::Scope(Scope::Read),
        _ => Access::Scope(Scope::Admin),
    }
}

/// A new token: the secret to show once, and what the store keeps.
pub struct IssuedToken {
    /// The token, for its holder only.
    pub secret: String,
    /// Its SHA-256.
    pub hash: [u8; 32],
}

impl IssuedToken {
    /// A fresh random token.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        let secret = format!(
            "pst_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        let hash = hash(&secret);
        Self { secret, hash }
    }
}

/// The SHA-256 of a token, as stored.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Token names: what `tokens revoke` and the audit name them by.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "token name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_ask_for_the_scope_of_what_they_do() {
        assert_eq!(access("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(
            access("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Access::AnyToken
        );
        assert_eq!(
            access("/postsub.v1.PostSubmission/Process"),
            Access::Scope(Scope::Submit)
        );
        assert_eq!(
            access("/postsub.v1.TaskAdmin/ListRuns"),
            Access::Scope(Scope::Read)
        );
        assert_eq!(
            access("/postsub.v1.TaskAdmin/DeleteBinding"),
            Access::Scope(Scope::Admin)
        );
        assert_eq!(
            access("/postsub.v1.TaskAdmin/Unknown"),
            Access::Scope(Scope::Admin)
        );
        assert_eq!(access("garbage"), Access::Scope(Scope::Admin));
    }

    #[test]
    fn admin_covers_everything_and_the_others_only_themselves() {
        assert!(Scope::Admin.covers(Scope::Submit) && Scope::Admin.covers(Scope::Read));
        assert!(!Scope::Read.covers(Scope::Submit) && !Scope::Submit.covers(Scope::Read));
        assert!(!Scope::Read.covers(Scope::Admin));
    }

    #[test]
    fn tokens_are_random_and_stored_as_their_hash() {
        let (a, b) = (IssuedToken::generate(), IssuedToken::generate());
        assert_ne!(a.secret, b.secret);
        assert!(
            a.secret.starts_with("pst_") && a.secret.len() == 47,
            "{}",
            a.secret
        );
        assert_eq!(a.hash, hash(&a.secret));
    }
}
