//! A whole gateway in one call: store, SMPP transport, webhooks, the engine and the REST API.
//! `otagw serve`, `otagw demo` and the API tests all start it this way.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use otagw_sms::smpp::{SmppConfig, SmppTls, SmppTransport};
use tokio::sync::watch;

use crate::api::{self, AppState, HealthProbe, TransportHealth};
use crate::config::Config;
use crate::console::{self, ConsoleSettings, ConsoleState};
use crate::delivery::outbox::{OutboxConfig, OutboxWorker};
use crate::delivery::webhook::{RetryPolicy as WebhookRetry, Webhooks};
use crate::gateway::{Gateway, TransportSetup};
use crate::store::{MasterKey, SqlStore, Store};

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory or a file in it.
    #[error("{0}")]
    Io(String),
    /// The master key.
    #[error("master key: {0}")]
    MasterKey(String),
    /// The store.
    #[error("store {url}: {message}")]
    Store {
        /// Its URL (without password).
        url: String,
        /// Why.
        message: String,
    },
    /// The SMPP transport.
    #[error("smpp: {0}")]
    Smpp(String),
    /// The API listener or TLS.
    #[error("api: {0}")]
    Api(String),
    /// The CAT_TP transport.
    #[error("catp: {0}")]
    Catp(String),
}

/// A running server.
pub struct ServerHandle {
    /// Where the API listens.
    pub api_addr: SocketAddr,
    /// Whether the API speaks HTTPS.
    pub tls: bool,
    /// The engine.
    pub gateway: Arc<Gateway>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The campaign runner (with an SMS transport).
    pub campaigns: Option<Arc<crate::campaign::runner::CampaignRunner>>,
    /// The CAT_TP transport, when configured.
    pub catp: Option<Arc<otagw_catp::CatpTransport>>,
    smpp: Option<Arc<SmppTransport>>,
    /// Where the SCP81 admin server listens (when `[https]` is configured).
    pub https_addr: Option<SocketAddr>,
    /// The admin server's counters.
    pub https_stats: Option<Arc<otagw_https::server::ServerStats>>,
    https_task: Option<tokio::task::JoinHandle<()>>,
    stop: watch::Sender<bool>,
    api_task: tokio::task::JoinHandle<()>,
    api_connections: Arc<api::serve::Connections>,
    outbox: OutboxWorker,
    router_task: Option<tokio::task::JoinHandle<()>>,
}

impl ServerHandle {
    /// The API's base URL.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.api_addr)
    }

    /// The API's connections: how many are open, evicted, timed out.
    pub fn api_connections(&self) -> &api::serve::Connections {
        &self.api_connections
    }

    /// Stops the API, the engine and the SMPP binds (unbind).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.api_task.await;
        if let Some(t) = &self.https_task {
            t.abort();
        }
        if let Some(t) = &self.router_task {
            t.abort();
        }
        if let Some(c) = &self.campaigns {
            c.shutdown().await;
        }
        self.gateway.shutdown().await;
        // Events not delivered yet stay in the outbox for the next start.
        self.outbox.shutdown().await;
        if let Some(s) = &self.smpp {
            s.shutdown().await;
        }
        if let Some(c) = &self.catp {
            c.shutdown();
        }
    }
}

/// A store URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match url.split_once('@') {
        Some((head, tail)) if head.contains("://") => {
            let scheme = head.split("://").next().unwrap_or("");
            format!("{scheme}://***@{tail}")
        }
        _ => url.to_string(),
    }
}

/// Where the master key came from, for messages (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySource {
    /// `OTAGW_MASTER_KEY`, a file's path, ...
    pub description: String,
    /// The file made just now because there was none (removed again if the store refuses
    /// the key: it guards nothing).
    pub generated: Option<PathBuf>,
}

/// The master key and where it came from: `OTAGW_MASTER_KEY` / `OTAGW_MASTER_KEY_FILE`, else
/// the configured file, else `master.key` in the data directory, made on first start (mode
/// 0600).
pub fn master_key(config: &Config) -> Result<(MasterKey, KeySource), ServerError> {
    let from = |description: String| KeySource {
        description,
        generated: None,
    };
    if std::env::var_os("OTAGW_MASTER_KEY").is_some() {
        let key = MasterKey::from_env().map_err(|e| ServerError::MasterKey(e.to_string()))?;
        return Ok((key, from("OTAGW_MASTER_KEY".into())));
    }
    if let Some(p) = std::env::var_os("OTAGW_MASTER_KEY_FILE") {
        let key = MasterKey::from_env().map_err(|e| ServerError::MasterKey(e.to_string()))?;
        return Ok((
            key,
            from(format!("OTAGW_MASTER_KEY_FILE {}", Path::new(&p).display())),
        ));
    }
    if let Some(p) = &config.store.master_key_file {
        let key = MasterKey::from_file(p).map_err(|e| ServerError::MasterKey(e.to_string()))?;
        return Ok((key, from(format!("master_key_file {}", p.display()))));
    }
    let path = config.data_dir.join("master.key");
    if path.exists() {
        let key = MasterKey::from_file(&path).map_err(|e| ServerError::MasterKey(e.to_string()))?;
        return Ok((key, from(path.display().to_string())));
    }
    let hex_key = {
        use rand::RngCore;
        let mut b = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut b);
        hex::encode(b)
    };
    write_secret(&path, &hex_key)?;
    let key = MasterKey::from_hex(&hex_key).map_err(|e| ServerError::MasterKey(e.to_string()))?;
    tracing::warn!(
        "made a new master key in {} (back it up: key values in the store cannot be read without it)",
        path.display()
    );
    Ok((
        key,
        KeySource {
            description: format!("{} (made just now)", path.display()),
            generated: Some(path),
        },
    ))
}

fn write_secret(path: &Path, text: &str) -> Result<(), ServerError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .map_err(|e| ServerError::Io(format!("{}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(|e| ServerError::Io(format!("{}: {e}", path.display())))
}

/// Opens the configured store (creating the data directory for SQLite).
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, ServerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        ServerError::Io(format!("data directory {}: {e}", config.data_dir.display()))
    })?;
    let (key, source) = master_key(config)?;
    let url = config.store_url();
    let options = config
        .sql_options()
        .map_err(|e| ServerError::Io(e.to_string()))?;
    let store = match SqlStore::connect_with(&url, key, options).await {
        Ok(s) => s,
        Err(e @ crate::store::StoreError::WrongMasterKey(_)) => {
            if let Some(made) = &source.generated {
                let _ = std::fs::remove_file(made);
            }
            return Err(ServerError::MasterKey(format!(
                "the key from {} does not belong to the database {}: {e}",
                source.description,
                redact(&url)
            )));
        }
        Err(e) => {
            return Err(ServerError::Store {
                url: redact(&url),
                message: e.to_string(),
            })
        }
    };
    Ok(Arc::new(store))
}

/// Starts everything the configuration asks for.
pub async fn start(config: &Config) -> Result<ServerHandle, ServerError> {
    let store = open_store(config).await?;
    start_with_store(config, store).await
}

/// Starts over an opened store.
pub async fn start_with_store(
    config: &Config,
    store: Arc<dyn Store>,
) -> Result<ServerHandle, ServerError> {
    start_with_clock(config, store, crate::clock::system()).await
}

/// Starts over an opened store, the engine reading the time from `clock` (tests move a
/// [`crate::clock::ManualClock`]).
pub async fn start_with_clock(
    config: &Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn crate::clock::Clock>,
) -> Result<ServerHandle, ServerError> {
    let mut transports = Vec::new();
    let mut health: Vec<HealthProbe> = Vec::new();
    let mut smpp = None;
    if let Some(s) = &config.smpp {
        let mut c = SmppConfig::new(s.address.clone(), s.system_id.clone(), s.password.clone());
        c.binds = s.binds.max(1);
        c.window = s.window.max(1);
        c.rate_limit = s.rate;
        c.answer_pors_after_store = s.answer_pors_after_store;
        c.reconnect.initial = Duration::from_millis(200);
        if let Some(ca) = &s.tls_ca {
            c.tls = Some(SmppTls::new(otagw_sms::smpp::PemSource::file(ca.clone())));
        }
        let t = Arc::new(SmppTransport::start(c).map_err(|e| ServerError::Smpp(e.to_string()))?);
        let probe = t.clone();
        health.push(Arc::new(move || {
            let binds = probe.bind_status();
            let up = binds.iter().filter(|b| b.bound).count();
            TransportHealth {
                name: "sms".into(),
                ready: up > 0,
                detail: format!("{up}/{} SMPP sessions bound", binds.len()),
            }
        }));
        transports.push(TransportSetup {
            name: "sms".into(),
            transport: t.clone(),
            concurrency: config.pipeline.concurrency.max(1),
            rate: config.pipeline.rate,
        });
        smpp = Some(t);
    }
    let mut sms_pusher = None;
    let catp = match (&config.catp, &smpp) {
        (Some(c), Some(sms)) => {
            let (settings, push_tar) =
                c.settings().map_err(|e| ServerError::Catp(e.to_string()))?;
            let sms: Arc<dyn otagw_transport::Transport> = sms.clone();
            let pusher = Arc::new(crate::gateway::catp::SmsPusher::new(
                store.clone(),
                sms,
                push_tar,
            ));
            sms_pusher = Some(pusher.clone());
            let t = Arc::new(
                otagw_catp::CatpTransport::start(settings, pusher)
                    .await
                    .map_err(|e| ServerError::Catp(format!("listen on {}: {e}", c.listen)))?,
            );
            tracing::info!("otagw: CAT_TP on udp {}", t.local_addr());
            let probe = t.clone();
            health.push(Arc::new(move || TransportHealth {
                name: "catp".into(),
                ready: true,
                detail: format!("{} CAT_TP links", probe.endpoint_stats().links),
            }));
            transports.push(TransportSetup {
                name: "catp".into(),
                transport: t.clone(),
                concurrency: c.concurrency.max(1),
                rate: None,
            });
            Some(t)
        }
        (Some(_), None) => {
            return Err(ServerError::Catp(
                "CAT_TP needs [smpp]: the push that opens the link goes by SMS".into(),
            ))
        }
        (None, _) => None,
    };
    let webhooks = Webhooks::new(store.clone(), WebhookRetry::default());
    let mut gateway_config = config.gateway();
    gateway_config.clock = clock;
    let mut https_listener = None;
    if let Some(h) = &config.https {
        let listener = tokio::net::TcpListener::bind(h.listen)
            .await
            .map_err(|e| ServerError::Api(format!("https: listen on {}: {e}", h.listen)))?;
        let bound = listener
            .local_addr()
            .map_err(|e| ServerError::Api(e.to_string()))?;
        gateway_config.https = Some(
            h.options(bound)
                .map_err(|e| ServerError::Api(e.to_string()))?,
        );
        https_listener = Some((
            listener,
            h.server_config()
                .map_err(|e| ServerError::Api(e.to_string()))?,
        ));
    }
    let gateway = Gateway::start(
        store.clone(),
        transports,
        Some(webhooks.clone()),
        gateway_config,
    )
    .await
    .map_err(|e| ServerError::Store {
        url: redact(&config.store_url()),
        message: e.to_string(),
    })?;
    webhooks.attach_metrics(gateway.metrics().webhook_outcomes());
    let outbox = OutboxWorker::start_with_gauge(
        store.clone(),
        webhooks,
        OutboxConfig {
            owner: gateway.id().to_string(),
            ..OutboxConfig::default()
        },
        Some(gateway.metrics().outbox_gauge()),
    );
    // Pushes go through the SMS dispatcher, which hears their error PoRs.
    if let (Some(pusher), Some(sms)) = (&sms_pusher, gateway.transports().route("sms")) {
        pusher.attach(sms.dispatcher.clone());
    }
    let campaigns =
        crate::campaign::runner::CampaignRunner::start(&gateway, config.campaign_runner());
    let mut https_addr = None;
    let mut https_stats = None;
    let mut https_task = None;
    if let (Some((listener, server_config)), Some(sessions)) =
        (https_listener, gateway.https_sessions())
    {
        let admin =
            otagw_https::server::AdminServer::new(server_config, sessions.clone(), sessions)
                .map_err(|e| ServerError::Api(format!("https: TLS setup: {e}")))?;
        https_addr = listener.local_addr().ok();
        https_stats = Some(admin.stats());
        let admin = Arc::new(admin);
        https_task = Some(tokio::spawn(async move {
            if let Err(e) = admin.serve(listener).await {
                tracing::error!("SCP81 admin server: {e}");
            }
        }));
        tracing::info!("otagw: SCP81 admin server on {https_addr:?}");
    }
    let listener = api::serve::bind(config.api.listen)
        .map_err(|e| ServerError::Api(format!("listen on {}: {e}", config.api.listen)))?;
    let api_addr = listener
        .local_addr()
        .map_err(|e| ServerError::Api(e.to_string()))?;
    let (stop, mut stopped) = watch::channel(false);
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let tls = match (&config.api.tls_cert, &config.api.tls_key) {
        (Some(cert), Some(key)) => {
            Some(api::tls::server_config(cert, key).map_err(|e| ServerError::Api(e.to_string()))?)
        }
        (None, None) => None,
        _ => {
            return Err(ServerError::Api(
                "api.tls_cert and api.tls_key go together".into(),
            ))
        }
    };
    let is_tls = tls.is_some();
    // The console is served with the API, on its address; its cookies are Secure over TLS.
    let mut app_state = AppState::new(gateway.clone(), health);
    let mut router_task = None;
    if let Ok(router) = crate::subscription::SecureRouter::new(gateway.clone(), config.router()) {
        router_task = Some(crate::subscription::spawn(router.clone()));
        app_state = app_state.with_router(router);
    }
    let router = api::router(app_state.clone()).merge(console::router(ConsoleState::new(
        app_state,
        ConsoleSettings::new(is_tls),
    )));
    let api_connections = api::serve::Connections::new();
    let limits = config.api.limits();
    let connections = api_connections.clone();
    let api_task = tokio::spawn(async move {
        if let Err(e) =
            api::serve::serve(listener, tls, router, limits, connections, shutdown).await
        {
            tracing::error!("API server: {e}");
        }
    });
    tracing::info!(
        "otagw: API on {}://{api_addr}, store {}, gateway {}",
        if is_tls { "https" } else { "http" },
        store.backend(),
        gateway.id()
    );
    Ok(ServerHandle {
        api_addr,
        tls: is_tls,
        gateway,
        store,
        campaigns,
        catp,
        smpp,
        https_addr,
        https_stats,
        https_task,
        stop,
        api_task,
        api_connections,
        outbox,
        router_task,
    })
}
