//! Where a verb runs: on the store the configuration names (local mode, the store's master key
//! at hand), or through a server's REST API (remote mode, `--server URL`). Each verb reads its
//! files and checks its options the same way in both, then asks one or the other, and prints
//! the API's own body for what it got, so both modes print the same.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;

use otagw::api::campaigns::Profile;
use otagw::store::{Account, Store};

use super::output::Out;
use super::provision::{resolve_account, AccountArg};
use super::remote::{self, Client};

/// Where the options every verb takes are listed in `--help`.
const HEADING: &str = "Remote mode and output";

/// Options every verb takes.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// Remote mode: run the verb through the REST API of this server (http:// or https://)
    /// instead of on a local store.
    #[arg(long, global = true, env = "OTAGW_SERVER", value_name = "URL", help_heading = HEADING)]
    server: Option<String>,
    /// Remote mode: a file holding the bearer token (else the OTAGW_TOKEN variable).
    #[arg(long, global = true, value_name = "PATH", help_heading = HEADING)]
    token_file: Option<PathBuf>,
    /// Remote mode over HTTPS: also trust this CA certificate (PEM).
    #[arg(long, global = true, value_name = "PATH", help_heading = HEADING)]
    ca_file: Option<PathBuf>,
    /// Print only the JSON (for scripts), not the instance table.
    #[arg(long, global = true, help_heading = HEADING)]
    json: bool,
    /// Refused: a token on the command line shows in `ps` and shell histories.
    #[arg(long, global = true, hide = true, value_name = "TOKEN")]
    token: Option<String>,
}

/// The mode and output of this run.
pub(crate) struct Ctx {
    /// How objects are printed.
    pub(crate) out: Out,
    remote: Option<RemoteArgs>,
}

struct RemoteArgs {
    server: String,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

impl Ctx {
    /// From the global options; refuses a token given on the command line.
    pub(crate) fn new(g: Global) -> anyhow::Result<Self> {
        if g.token.is_some() {
            bail!(
                "--token: a token is never taken on the command line (it would show in `ps` and \
                 the shell's history): put it in a file for --token-file PATH, or in OTAGW_TOKEN"
            );
        }
        let server = g.server.filter(|s| !s.trim().is_empty());
        if server.is_none() && (g.token_file.is_some() || g.ca_file.is_some()) {
            bail!("--token-file and --ca-file go with --server URL (or OTAGW_SERVER)");
        }
        Ok(Self {
            out: Out { json: g.json },
            remote: server.map(|server| RemoteArgs {
                server,
                token_file: g.token_file,
                ca_file: g.ca_file,
            }),
        })
    }

    /// Whether verbs go through a server.
    pub(crate) fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Fails in remote mode for a verb the REST API has no call for.
    pub(crate) fn local_only(&self, verb: &str, why: &str) -> anyhow::Result<()> {
        if let Some(r) = &self.remote {
            bail!(
                "`otagw {verb}` has no remote mode ({why}); run it without --server \
                 (server {} given{})",
                r.server,
                if std::env::var_os("OTAGW_SERVER").is_some() {
                    ", perhaps by OTAGW_SERVER"
                } else {
                    ""
                }
            );
        }
        Ok(())
    }

    /// Runs `f` on the account's store (local) or the server (remote).
    pub(crate) fn run<T>(
        &self,
        account: &AccountArg,
        f: impl AsyncFnOnce(&Backend) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        match &self.remote {
            None => super::account::with_store(&account.store, async |s| {
                let acc = resolve_account(s.as_ref(), account.account.as_deref()).await?;
                f(&Backend::Local {
                    store: s,
                    account: acc,
                })
                .await
            }),
            Some(r) => {
                if account.account.is_some() {
                    bail!("--account: in remote mode the token's account is used; leave it out");
                }
                account.store.refuse_in_remote()?;
                let client = self.client(r)?;
                runtime()?.block_on(async move { f(&Backend::Remote(client)).await })
            }
        }
    }

    /// Runs `f` through the server's REST API: for verbs that need a running gateway (its
    /// engine sends them), refused in local mode with what to do instead.
    pub(crate) fn remote_only<T>(
        &self,
        verb: &str,
        f: impl AsyncFnOnce(&Client) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let Some(r) = &self.remote else {
            bail!(
                "{verb} goes through a running gateway (its engine sends the card's commands and \
                 takes its notifications): give --server URL (or OTAGW_SERVER) and a token \
                 (--token-file PATH or OTAGW_TOKEN)"
            );
        };
        let client = self.client(r)?;
        runtime()?.block_on(async move { f(&client).await })
    }

    fn client(&self, r: &RemoteArgs) -> anyhow::Result<Client> {
        let token = remote::read_token(r.token_file.as_deref())?;
        Ok(Client::new(&r.server, token, r.ca_file.as_deref())?)
    }
}

/// A current-thread runtime for one verb.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

/// The store and account of local mode, or the server's client.
pub(crate) enum Backend {
    /// Straight on the store.
    Local {
        /// The store.
        store: Arc<dyn Store>,
        /// The account acted for.
        account: Account,
    },
    /// Through the REST API.
    Remote(Client),
}

impl Backend {
    /// A profile by id or name (`--profile`), as the API shows it.
    pub(crate) async fn profile(&self, id_or_name: &str) -> anyhow::Result<Profile> {
        match self {
            Backend::Local { store, account } => {
                Ok(
                    super::provision::resolve_profile(store.as_ref(), account, id_or_name)
                        .await?
                        .into(),
                )
            }
            Backend::Remote(c) => {
                if let Ok(id) = id_or_name.parse::<i64>() {
                    return match c.profile(id).await {
                        Err(e) if e.status() == Some(404) => {
                            bail!("--profile: the server has no profile {id_or_name:?} for this token's account")
                        }
                        other => Ok(other?),
                    };
                }
                c.profiles()
                    .await?
                    .into_iter()
                    .find(|p| p.name == id_or_name)
                    .with_context(|| {
                        format!(
                            "--profile: the server has no profile {id_or_name:?} for this \
                             token's account"
                        )
                    })
            }
        }
    }
}
