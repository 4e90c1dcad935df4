//! `otagw account create|tokens|revoke-token` and `otagw token create`: API tenants and their
//! bearer tokens, read and written straight in the configured store.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

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
        /// The account's name.
        #[arg(long)]
        account: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke one of an account's bearer tokens: every gateway refuses it from then on.
    RevokeToken {
        /// The account's name.
        #[arg(long)]
        account: String,
        /// The token's id (as `otagw account tokens` lists it).
        #[arg(long)]
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a bearer token for an account (printed once; only its hash is stored).
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

pub fn run_account(command: AccountCommand) -> anyhow::Result<ExitCode> {
    match command {
        AccountCommand::Create { name, store } => {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                bail!("--name: {name:?} must be letters, digits, '-' or '_'");
            }
            let account = with_store(&store, async |s| {
                Ok(s.create_account(&name, otagw::gateway::now_ms()).await?)
            })?;
            println!("account {} created (id {})", account.name, account.id);
            Ok(ExitCode::SUCCESS)
        }
        AccountCommand::Tokens { account, store } => {
            let tokens = with_store(&store, async |s| {
                let a = account_named(&*s, &account).await?;
                Ok(s.tokens(&a.id).await?)
            })?;
            if tokens.is_empty() {
                println!("account {account} has no tokens");
            }
            for t in tokens {
                println!("{}  created {}  {}", t.id, t.created_at, t.label);
            }
            Ok(ExitCode::SUCCESS)
        }
        AccountCommand::RevokeToken { account, id, store } => {
            with_store(&store, async |s| {
                let a = account_named(&*s, &account).await?;
                match s.revoke_token(&a.id, &id).await {
                    Err(otagw::store::StoreError::NotFound { .. }) => {
                        bail!("--id: account {account} has no token {id:?}")
                    }
                    other => Ok(other?),
                }
            })?;
            println!("token {id} revoked");
            Ok(ExitCode::SUCCESS)
        }
    }
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

pub fn run_token(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create {
            account,
            label,
            store,
        } => {
            let token = with_store(&store, async |s| {
                let a = account_named(&*s, &account).await?;
                Ok(s.create_token(&a.id, &label, otagw::gateway::now_ms())
                    .await?)
            })?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
