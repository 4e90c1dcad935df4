//! `otagw user create`: the console's users, written straight in the configured store. The
//! password comes from a file or standard input, never from the command line.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use otagw::console::password;
use otagw::store::users::{NewUser, Role};
use otagw::store::StoreError;

use super::account::{with_store, StoreArgs};
use super::backend::Ctx;
use super::output::date;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a console user (signs in at /console/login). The password is read from
    /// --password-file, else from standard input (its first line).
    Create(CreateArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The account the user works in.
    #[arg(long)]
    account: String,
    /// User name, unique in the gateway (letters, digits, '.', '-', '_', '@').
    #[arg(long)]
    name: String,
    /// admin (everything in its account), operator (commands, campaigns), viewer (read only).
    #[arg(long)]
    role: String,
    /// A file whose first line is the password (at least 12 characters).
    #[arg(long, value_name = "PATH")]
    password_file: Option<PathBuf>,
    /// Refused: a password on the command line shows in `ps` and shell histories.
    #[arg(long, hide = true, value_name = "PASSWORD")]
    password: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

/// The first line of `text`, without its line end.
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

fn read_password(file: Option<&Path>) -> anyhow::Result<(String, &'static str)> {
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--password-file: cannot read {}", path.display()))?;
            Ok((first_line(&text).to_string(), "--password-file"))
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprint!("password for the new user (then Enter): ");
            }
            let mut text = String::new();
            stdin
                .lock()
                .take(64 << 10)
                .read_to_string(&mut text)
                .context("standard input: cannot read the password")?;
            Ok((first_line(&text).to_string(), "standard input"))
        }
    }
}

/// A user as the CLI shows it (never the hash).
#[derive(Debug, serde::Serialize)]
struct UserView {
    id: String,
    account: String,
    name: String,
    role: String,
    #[serde(with = "otagw::rfc3339")]
    created: i64,
}

pub(crate) fn run(ctx: &Ctx, command: UserCommand) -> anyhow::Result<ExitCode> {
    let UserCommand::Create(args) = command;
    ctx.local_only(
        "user create",
        "console users are made on the store, as accounts and tokens are",
    )?;
    if args.password.is_some() {
        bail!(
            "--password: a password is never taken on the command line (it would show in `ps` \
             and the shell's history): use --password-file PATH or standard input"
        );
    }
    let role = Role::parse(args.role.trim()).with_context(|| {
        format!(
            "--role: {:?} is not a role (admin, operator or viewer)",
            args.role
        )
    })?;
    password::check_name(&args.name).map_err(|e| anyhow::anyhow!("--name: {}", e.problem))?;
    let (pw, source) = read_password(args.password_file.as_deref())?;
    password::check_password(&pw)
        .map_err(|e| anyhow::anyhow!("{source}: password: {}", e.problem))?;
    let hash = password::hash(&pw).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
    let user = with_store(&args.store, async |s| {
        let account = s
            .account_by_name(&args.account)
            .await?
            .with_context(|| format!("--account: no account named {:?}", args.account))?;
        let users = s.users().context("this store keeps no console users")?;
        match users
            .create_user(
                &NewUser {
                    account_id: account.id.clone(),
                    name: args.name.clone(),
                    role,
                    password_hash: hash,
                },
                otagw::clock::now_ms(),
            )
            .await
        {
            Err(StoreError::Duplicate { .. }) => bail!(
                "--name: a user named {:?} already exists (user names are unique in the gateway)",
                args.name
            ),
            other => Ok(other?),
        }
    })?;
    let view = UserView {
        id: user.id.clone(),
        account: user.account_name.clone(),
        name: user.name.clone(),
        role: user.role.as_str().to_string(),
        created: user.created_at,
    };
    ctx.out.instance(
        "User instance",
        &[
            ("id", user.id),
            ("account", user.account_name),
            ("name", user.name),
            ("role", user.role.as_str().to_string()),
            ("created", date(user.created_at)),
        ],
        &view,
    )?;
    Ok(ExitCode::SUCCESS)
}
