//! `otagw serve --config otagw.toml`: the gateway until SIGINT / SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use otagw::config::Config;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration (every setting also from OTAGW_* environment variables).
    #[arg(long, env = "OTAGW_CONFIG")]
    config: Option<PathBuf>,
    /// Store URL (`sqlite://FILE` or `postgres://...`); overrides the file.
    #[arg(long)]
    database_url: Option<String>,
    /// API listen address; overrides the file.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
}

/// The configuration the arguments name, with flags over environment over file.
pub(crate) fn load(config: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Ok(Config::load(config)?)
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = load(args.config.as_deref())?;
    if let Some(url) = args.database_url {
        config.store.url = Some(url);
    }
    if let Some(listen) = args.listen {
        config.api.listen = listen;
    }
    config.log.install().context("logging")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async move {
        let server = otagw::server::start(&config).await?;
        tracing::info!(
            api = %server.base_url(),
            gateway = %server.gateway.id(),
            store = %otagw::server::redact(&config.store_url()),
            backend = server.store.backend(),
            data_dir = %config.data_dir.display(),
            smsc = %config.smpp.as_ref().map_or("-".to_string(), |s| s.address.clone()),
            https = %server.https_addr.map_or("-".to_string(), |a| a.to_string()),
            catp = %server.catp.as_ref().map_or("-".to_string(), |c| c.local_addr().to_string()),
            "otagw serve started"
        );
        println!(
            "otagw serve: API {} gateway {} store {}",
            server.base_url(),
            server.gateway.id(),
            server.store.backend()
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        println!("otagw serve: stopping");
        server.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}
