//! `postsub tokens`: make, list and revoke API tokens. These commands work on the database
//! itself (like `migrate`), not through a proxy: the first token has to exist before any
//! call can be made, and a proxy need not be running. Every proxy on the database follows
//! the change within a second.

use anyhow::{Context as _, bail};
use chrono::SecondsFormat;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::{
    auth::{IssuedToken, Scope, check_name},
    backend::{Database, SERVER_DATABASE},
    client::print_json,
    settings::DatabaseSettings,
    store::{NewAuditEntry, NewToken, Store},
};

/// `postsub tokens …`
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make a token and print it (on stdout, alone: shown this once, stored only as a hash).
    Create {
        #[allow(missing_docs)]
        #[command(flatten)]
        database: DatabaseSettings,
        /// Its name, unique: who holds it (`shop-backend`, `ci`, `alice`).
        #[arg(long)]
        name: String,
        /// What it may do: `submit` (Process only: for form backends), `read` (list and get
        /// bindings, runs, kinds, queues), `admin` (everything).
        #[arg(long, value_enum)]
        scope: Scope,
    },
    /// List the tokens: names, scopes, when made and last used; never the tokens.
    List {
        #[allow(missing_docs)]
        #[command(flatten)]
        database: DatabaseSettings,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: every proxy refuses it within a second.
    Revoke {
        #[allow(missing_docs)]
        #[command(flatten)]
        database: DatabaseSettings,
        /// The token's name.
        name: String,
    },
}

/// Runs a `postsub tokens` command.
pub async fn tokens(command: TokensCommand) -> anyhow::Result<()> {
    let database = match &command {
        TokensCommand::Create { database, .. }
        | TokensCommand::List { database, .. }
        | TokensCommand::Revoke { database, .. } => database,
    };
    let store = Database::from_settings(database, SERVER_DATABASE)?
        .open_store()
        .await?;
    let result = run(&*store, command).await;
    store.close().await;
    result
}

async fn run(store: &dyn Store, command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Create { name, scope, .. } => {
            check_name(&name).map_err(anyhow::Error::msg)?;
            let issued = IssuedToken::generate();
            let token = NewToken {
                name: name.clone(),
                scope,
                hash: issued.hash,
            };
            match store.create_token(&token).await {
                Err(err) if err.is_unique_violation() => {
                    bail!(
                        "a token named {name:?} exists already (`postsub tokens revoke {name}` first)"
                    )
                }
                created => created.context("storing the token")?,
            };
            let after = json!({"name": name, "scope": scope.as_str()});
            audit(store, "token.create", &name, Some(after)).await?;
            eprintln!(
                "created token {name:?} with scope `{scope}`; it is shown only this once, keep it \
                 somewhere safe:"
            );
            println!("{}", issued.secret);
        }
        TokensCommand::List { json, .. } => {
            let tokens = store.tokens().await.context("reading the tokens")?;
            let time =
                |at: chrono::DateTime<chrono::Utc>| at.to_rfc3339_opts(SecondsFormat::Secs, true);
            if json {
                let rows: Vec<Value> = tokens
                    .iter()
                    .map(|t| {
                        json!({"name": t.name, "scope": t.scope.as_str(),
                               "created_at": time(t.created_at),
                               "last_used_at": t.last_used_at.map(time)})
                    })
                    .collect();
                print_json(&Value::from(rows));
                return Ok(());
            }
            println!(
                "{:<24}  {:<6}  {:<20}  LAST_USED",
                "NAME", "SCOPE", "CREATED"
            );
            for t in &tokens {
                println!(
                    "{:<24}  {:<6}  {:<20}  {}",
                    t.name,
                    t.scope.as_str(),
                    time(t.created_at),
                    t.last_used_at.map_or_else(|| "never".to_owned(), time)
                );
            }
        }
        TokensCommand::Revoke { name, .. } => {
            if !store
                .revoke_token(&name)
                .await
                .context("revoking the token")?
            {
                bail!("no token is named {name:?} (`postsub tokens list` shows them)");
            }
            audit(store, "token.revoke", &name, None).await?;
            eprintln!("revoked token {name:?}");
        }
    }
    Ok(())
}

/// Records a token change in the audit log, as the user at the terminal (`$USER`): this
/// command works on the database itself, with no token to name.
async fn audit(
    store: &dyn Store,
    action: &str,
    name: &str,
    after: Option<Value>,
) -> anyhow::Result<()> {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown user".to_owned());
    let entry = NewAuditEntry {
        actor: format!("postsub tokens ({user})"),
        action: action.to_owned(),
        target: name.to_owned(),
        before: None,
        after,
    };
    store
        .record_audit(&entry)
        .await
        .context("the change is made, but the audit log could not record it")
}
