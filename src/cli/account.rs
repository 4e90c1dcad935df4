//! `otagw account create|tokens|revoke-token` and `otagw token create`: API tenants and their
//! bearer tokens, read and written straight in the configured store.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use otagw::api::tokens::TokenView;

use super::backend::{Backend, Ctx};
use super::output::date;
use super::provision::AccountArg;

#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// TOML configuration (as for `serve`).
    #[arg(long, env = "OTAGW_CONFIG")]
    config: Option<PathBuf>,
    /// Store URL; overrides the file.
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an account.
    Create {
        /// Unique name (letters, digits, '-', '_').
        #[arg(long)]
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List an account's bearer tokens: id, creation time and label (never their values).
    Tokens {
        /// The account's name (default: the only account; remote mode: the token's).
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke one of an account's bearer tokens: every gateway refuses it from then on.
    RevokeToken {
        /// The account's name (default: the only account; remote mode: the token's).
        #[arg(long)]
        account: Option<String>,
        /// The token's id (as `otagw account tokens` lists it).
        #[arg(long)]
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a bearer token for an account: prints its value once (only its hash is stored);
    /// with --json, its id, name, account and creation time too.
    Create {
        /// The account's name.
        #[arg(long)]
        account: String,
        /// A label for the token.
        #[arg(long, default_value = "cli")]
        label: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

impl StoreArgs {
    /// Remote mode has no store: a database URL given with `--server` is a mistake.
    pub(crate) fn refuse_in_remote(&self) -> anyhow::Result<()> {
        if self.database_url.is_some() {
            bail!("--database-url names a local store; remote mode (--server) has none");
        }
        Ok(())
    }
}

pub(crate) fn with_store<T>(
    args: &StoreArgs,
    f: impl AsyncFnOnce(std::sync::Arc<dyn otagw::store::Store>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut config = super::serve::load(args.config.as_deref())?;
    if let Some(url) = &args.database_url {
        config.store.url = Some(url.clone());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async move {
        let store = otagw::server::open_store(&config).await?;
        f(store).await
    })
}

pub(crate) fn run_account(ctx: &Ctx, command: AccountCommand) -> anyhow::Result<ExitCode> {
    match command {
        AccountCommand::Create { name, store } => {
            ctx.local_only(
                "account create",
                "accounts are made on the store: a token belongs to one, so none can ask for it",
            )?;
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                bail!("--name: {name:?} must be letters, digits, '-' or '_'");
            }
            let account = with_store(&store, async |s| {
                Ok(s.create_account(&name, otagw::clock::now_ms()).await?)
            })?;
            let json = AccountView {
                id: account.id.clone(),
                name: account.name.clone(),
                created: account.created_at,
            };
            ctx.out.instance(
                "Account instance",
                &[
                    ("id", account.id),
                    ("name", account.name),
                    ("created", date(account.created_at)),
                ],
                &json,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        AccountCommand::Tokens { account, store } => {
            let arg = AccountArg { account, store };
            let tokens = ctx.run(&arg, async |b| match b {
                Backend::Local { store, account } => Ok(store
                    .tokens(&account.id)
                    .await?
                    .into_iter()
                    .map(TokenView::from)
                    .collect::<Vec<_>>()),
                Backend::Remote(c) => Ok(c.tokens().await?),
            })?;
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| vec![t.id.clone(), t.name.clone(), date(t.created_at)])
                .collect();
            ctx.out
                .list("Tokens", &["id", "name", "created"], &rows, None, &tokens)?;
            Ok(ExitCode::SUCCESS)
        }
        AccountCommand::RevokeToken { account, id, store } => {
            let arg = AccountArg { account, store };
            ctx.run(&arg, async |b| match b {
                Backend::Local { store, account } => {
                    match store.revoke_token(&account.id, &id).await {
                        Err(otagw::store::StoreError::NotFound { .. }) => {
                            bail!("--id: account {} has no token {id:?}", account.name)
                        }
                        other => Ok(other?),
                    }
                }
                Backend::Remote(c) => Ok(c.revoke_token(&id).await?),
            })?;
            ctx.out.instance(
                "Token revoked",
                &[("id", id.clone()), ("revoked", "yes".into())],
                &serde_json::json!({"id": id, "revoked": true}),
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// An account as the CLI shows it (no REST body exists: accounts are made on the store).
#[derive(Debug, serde::Serialize)]
struct AccountView {
    id: String,
    name: String,
    #[serde(with = "otagw::rfc3339")]
    created: i64,
}

/// A token just made: the listing's fields, its account and (this once) its value.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct NewToken {
    account: String,
    #[serde(flatten)]
    view: TokenView,
    token: String,
}

/// The account of that name, or an error naming `--account`.
async fn account_named(
    store: &dyn otagw::store::Store,
    name: &str,
) -> anyhow::Result<otagw::store::Account> {
    store
        .account_by_name(name)
        .await?
        .with_context(|| format!("--account: no account named {name:?}"))
}

pub(crate) fn run_token(ctx: &Ctx, command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create {
            account,
            label,
            store,
        } => {
            ctx.local_only(
                "token create",
                "a token is what remote mode signs in with, so it is made on the store",
            )?;
            let made = with_store(&store, async |s| {
                let a = account_named(&*s, &account).await?;
                let now = otagw::clock::now_ms();
                let token = s.create_token(&a.id, &label, now).await?;
                // Its id: the account's token of this label made at this millisecond.
                let info = s
                    .tokens(&a.id)
                    .await?
                    .into_iter()
                    .rev()
                    .find(|t| t.label == label && t.created_at == now)
                    .context("the new token is not listed")?;
                Ok(NewToken {
                    account: a.name,
                    view: info.into(),
                    token,
                })
            })?;
            // The value alone by default: it is a secret to put in a file (`> token` for
            // --token-file), as scripts take it; --json gives the token with its id.
            if ctx.out.json {
                println!("{}", serde_json::to_string(&made)?);
            } else {
                println!("{}", made.token);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
