//! `otagw serve` settings: a TOML file, every setting also from an environment variable
//! (which wins), and defaults that run with no file at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why the configuration is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong (toml names the key and the line).
        #[source]
        source: toml::de::Error,
    },
    /// A setting is not valid.
    #[error("{name}: {problem}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// An environment variable is not valid.
    #[error("environment variable {name}: {problem}")]
    Env {
        /// The variable.
        name: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the SQLite database and the generated master key live.
    pub data_dir: PathBuf,
    /// This gateway's id in a shared store (stable across restarts; unique per gateway).
    pub gateway_id: Option<String>,
    /// Northbound API.
    pub api: ApiSettings,
    /// The store.
    pub store: StoreSettings,
    /// The SMSC (SMS-PP transport). Absent: no SMS transport.
    pub smpp: Option<SmppSettings>,
    /// Pipeline settings.
    pub pipeline: PipelineSettings,
    /// HTTPS OTA (SCP81): the PSK-TLS admin server and the triggers. Absent: no HTTPS.
    pub https: Option<HttpsSettings>,
    /// Campaign runner settings.
    pub campaigns: CampaignsSettings,
    /// The Secure Router (subscription management).
    pub subscriptions: SubscriptionsSettings,
    /// CAT_TP over UDP (the BIP transport; needs `[smpp]` for its push). Absent: none.
    pub catp: Option<CatpConfig>,
    /// Log lines: format and level.
    pub log: crate::logging::LogSettings,
}

/// `[campaigns]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CampaignsSettings {
    /// Cards of one campaign held in memory (sent, waiting for the PoR) at most.
    pub max_in_flight: usize,
    /// Cards claimed (counters reserved) per transaction.
    pub claim_batch: u32,
    /// Seconds a card's PoR (a text's delivery report) is waited for.
    pub por_timeout_secs: u64,
    /// After a restart, seconds to wait for the PoR of a packet sent before resending it.
    pub resume_wait_secs: u64,
}

impl Default for CampaignsSettings {
    fn default() -> Self {
        Self {
            max_in_flight: 20_000,
            claim_batch: 500,
            por_timeout_secs: 120,
            resume_wait_secs: 5,
        }
    }
}

/// `[subscriptions]`: the Secure Router.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriptionsSettings {
    /// Seconds a card's switch notification is waited for after its ENABLE was accepted
    /// (longer than the card's attach timeouts together); none by then: the card is DIRTY.
    pub notification_wait_secs: u64,
    /// Seconds before the first automatic audit retry; doubles each time.
    pub audit_backoff_secs: u64,
    /// Longest wait between automatic audits, seconds.
    pub audit_backoff_max_secs: u64,
}

impl Default for SubscriptionsSettings {
    fn default() -> Self {
        let d = crate::subscription::RouterConfig::default();
        Self {
            notification_wait_secs: d.notification_wait.as_secs(),
            audit_backoff_secs: d.audit_backoff.as_secs(),
            audit_backoff_max_secs: d.audit_backoff_max.as_secs(),
        }
    }
}

/// `[catp]`: the CAT_TP endpoint and the push that asks cards to connect to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatpConfig {
    /// UDP listen address.
    pub listen: SocketAddr,
    /// Address the push tells cards to reach (default: the listen address; set it behind NAT).
    pub advertised: Option<SocketAddr>,
    /// CAT_TP destination port in the push (the PDU header's port).
    pub cattp_port: u16,
    /// Bearer type of the push's bearer description (TS 102 223 8.52; 3: default bearer,
    /// 2: GPRS/UTRAN packet service, 11: E-UTRAN).
    pub bearer_type: u8,
    /// Bearer parameters, hex.
    pub bearer_parameters: String,
    /// Buffer size the card asks the terminal for.
    pub buffer_size: u16,
    /// Network access name (APN) in dotted form, e.g. `iot.example`.
    pub apn: Option<String>,
    /// TAR the push goes to, 6 hex digits (the ISD, 000000, by default).
    pub push_tar: String,
    /// Seconds to wait for a card's link after a push.
    pub link_timeout_secs: u64,
    /// Pushes per command before it fails with TIMEOUT.
    pub push_attempts: u32,
    /// Links held at most.
    pub max_links: usize,
    /// Receive window in PDUs.
    pub window: u16,
    /// Largest PDU we accept (header included).
    pub max_pdu_size: u16,
    /// First retransmission timeout, ms (doubles per retry up to 8x).
    pub rto_ms: u64,
    /// Retransmissions of one PDU before the link is reset.
    pub max_retries: u32,
    /// Seconds without traffic before a NUL keep-alive (0: none).
    pub keepalive_secs: u64,
    /// Commands in flight over CAT_TP at most.
    pub concurrency: usize,
    /// A command whose card opens no link after every push goes over SMS (secured anew with a
    /// new counter) instead of failing with TIMEOUT.
    pub fallback_to_sms: bool,
}

impl Default for CatpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 4500)),
            advertised: None,
            cattp_port: 4500,
            bearer_type: 3,
            bearer_parameters: String::new(),
            buffer_size: 1400,
            apn: None,
            push_tar: "000000".into(),
            link_timeout_secs: 30,
            push_attempts: 2,
            max_links: 10_000,
            window: 16,
            max_pdu_size: 1400,
            rto_ms: 1000,
            max_retries: 5,
            keepalive_secs: 30,
            concurrency: 10_000,
            fallback_to_sms: false,
        }
    }
}

impl CatpConfig {
    /// The transport's settings and the push TAR.
    pub fn settings(&self) -> Result<(otagw_catp::CatpSettings, [u8; 3]), ConfigError> {
        let bad = |name: &'static str, problem: String| ConfigError::Invalid { name, problem };
        let bearer_parameters = hex::decode(&self.bearer_parameters)
            .map_err(|e| bad("catp.bearer_parameters", e.to_string()))?;
        let tar: [u8; 3] = hex::decode(&self.push_tar)
            .ok()
            .and_then(|t| t.try_into().ok())
            .ok_or_else(|| {
                bad(
                    "catp.push_tar",
                    format!("{:?} is not 6 hex digits", self.push_tar),
                )
            })?;
        let apn = match &self.apn {
            Some(a) => Some(
                otagw_catp::push::apn_labels(a)
                    .map_err(|e| bad("catp.apn", format!("{a:?}: {e}")))?,
            ),
            None => None,
        };
        let rto = Duration::from_millis(self.rto_ms.max(1));
        let link = otagw_catp::Config {
            max_pdu_size: self.max_pdu_size.max(64),
            max_sdu_size: u16::MAX,
            window: self.window.max(1),
            rto,
            max_rto: rto * 8,
            max_retries: self.max_retries,
            keepalive: (self.keepalive_secs > 0).then(|| Duration::from_secs(self.keepalive_secs)),
            identification: Vec::new(),
        };
        Ok((
            otagw_catp::CatpSettings {
                listen: self.listen,
                advertised: self.advertised,
                cattp_port: self.cattp_port,
                bearer: otagw_catp::push::Bearer {
                    bearer_type: self.bearer_type,
                    parameters: bearer_parameters,
                },
                buffer_size: self.buffer_size,
                network_access_name: apn,
                link,
                max_links: self.max_links.max(1),
                link_timeout: Duration::from_secs(self.link_timeout_secs.max(1)),
                push_attempts: self.push_attempts.max(1),
                max_packet_len: 65_000,
            },
            tar,
        ))
    }
}

/// `[api]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Listen address.
    pub listen: SocketAddr,
    /// PEM certificate chain: serve HTTPS (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// Seconds a client has to send a request's header: from the connection's start (the TLS
    /// handshake included) for its first request, from its first byte for later ones.
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may wait for its next request after a response (keep-alive).
    pub idle_timeout_secs: u64,
    /// Connections open at once at most. At the limit a new connection takes the place of the
    /// oldest one with no request in flight, so held connections cannot lock clients out.
    pub max_connections: usize,
}

impl ApiSettings {
    /// The listener's connection limits.
    pub fn limits(&self) -> crate::api::serve::ConnLimits {
        crate::api::serve::ConnLimits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs.max(1)),
            max_connections: self.max_connections.max(1),
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// `sqlite://FILE` or `postgres://...`; default a SQLite file in the data directory.
    pub url: Option<String>,
    /// File holding the master key (64 hex digits) that seals key values at rest.
    pub master_key_file: Option<PathBuf>,
    /// SQLite durability: `full` (default: every commit synced, survives power loss) or
    /// `normal` (survives a crash of the process, not of the machine; about 2x faster).
    pub sqlite_synchronous: Option<String>,
}

/// `[smpp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmppSettings {
    /// SMSC `host:port`.
    pub address: String,
    /// system_id.
    pub system_id: String,
    /// password.
    pub password: String,
    /// Transceiver binds.
    pub binds: usize,
    /// submit_sm window per bind.
    pub window: usize,
    /// submit_sm per second per bind.
    pub rate: Option<f64>,
    /// PEM CA to run SMPP over TLS.
    pub tls_ca: Option<PathBuf>,
    /// Answer a PoR's deliver_sm only once the PoR is stored (default true): a restart then
    /// loses no PoR, but each unanswered PoR holds a place in the SMSC's window meanwhile.
    pub answer_pors_after_store: bool,
}

impl Default for SmppSettings {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:2775".into(),
            system_id: "otagw".into(),
            password: "otagw".into(),
            binds: 1,
            window: 50,
            rate: None,
            tls_ca: None,
            answer_pors_after_store: true,
        }
    }
}

/// `[pipeline]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineSettings {
    /// Seconds to wait for a PoR after each send.
    pub por_timeout_secs: u64,
    /// Sends per command in all.
    pub attempts: u32,
    /// First resend delay, ms (doubles).
    pub backoff_ms: u64,
    /// Commands in flight per transport.
    pub concurrency: usize,
    /// Sends per second per transport.
    pub rate: Option<f64>,
    /// Commands held in memory at most. 0: this gateway sends nothing (it takes commands in
    /// through its API; other gateways on the same database send them).
    pub max_in_flight: usize,
    /// Claim lease, seconds.
    pub lease_secs: u64,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            por_timeout_secs: 60,
            attempts: 3,
            backoff_ms: 2000,
            concurrency: 10_000,
            rate: None,
            max_in_flight: 20_000,
            lease_secs: 30,
        }
    }
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert: None,
            tls_key: None,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 10_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("otagw-data"),
            gateway_id: None,
            api: ApiSettings::default(),
            store: StoreSettings::default(),
            smpp: None,
            pipeline: PipelineSettings::default(),
            campaigns: CampaignsSettings::default(),
            subscriptions: SubscriptionsSettings::default(),
            https: None,
            catp: None,
            log: crate::logging::LogSettings::default(),
        }
    }
}

fn env(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn env_parse<T: std::str::FromStr>(name: &'static str) -> Result<Option<T>, ConfigError>
where
    T::Err: std::fmt::Display,
{
    env(name)
        .map(|v| {
            v.parse::<T>().map_err(|e| ConfigError::Env {
                name,
                problem: format!("{v:?}: {e}"),
            })
        })
        .transpose()
}

impl Config {
    /// Reads `path` (if given) and applies the environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Self::parse(&text).map_err(|source| ConfigError::Parse {
                    path: p.to_path_buf(),
                    source,
                })?
            }
            None => Config::default(),
        };
        config.apply_env()?;
        Ok(config)
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Environment variables override the file: `OTAGW_DATA_DIR`, `OTAGW_GATEWAY_ID`,
    /// `OTAGW_API_LISTEN`, `OTAGW_API_TLS_CERT`, `OTAGW_API_TLS_KEY`,
    /// `OTAGW_API_HEADER_READ_TIMEOUT_SECS`, `OTAGW_API_IDLE_TIMEOUT_SECS`,
    /// `OTAGW_API_MAX_CONNECTIONS`, `OTAGW_DATABASE_URL`,
    /// `OTAGW_MASTER_KEY_FILE` (or `OTAGW_MASTER_KEY` itself), `OTAGW_SQLITE_SYNCHRONOUS`,
    /// `OTAGW_SMPP_ADDRESS`,
    /// `OTAGW_SMPP_SYSTEM_ID`, `OTAGW_SMPP_PASSWORD`, `OTAGW_SMPP_BINDS`, `OTAGW_SMPP_WINDOW`,
    /// `OTAGW_POR_TIMEOUT_SECS`, `OTAGW_RETRY_ATTEMPTS`, `OTAGW_CAMPAIGN_POR_TIMEOUT_SECS`,
    /// `OTAGW_LOG_FORMAT`, `OTAGW_LOG_LEVEL`
    /// (`RUST_LOG` overrides the level).
    pub fn apply_env(&mut self) -> Result<(), ConfigError> {
        if let Some(v) = env("OTAGW_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = env("OTAGW_GATEWAY_ID") {
            self.gateway_id = Some(v);
        }
        if let Some(v) = env_parse("OTAGW_API_LISTEN")? {
            self.api.listen = v;
        }
        if let Some(v) = env("OTAGW_API_TLS_CERT") {
            self.api.tls_cert = Some(v.into());
        }
        if let Some(v) = env("OTAGW_API_TLS_KEY") {
            self.api.tls_key = Some(v.into());
        }
        if let Some(v) = env_parse("OTAGW_API_HEADER_READ_TIMEOUT_SECS")? {
            self.api.header_read_timeout_secs = v;
        }
        if let Some(v) = env_parse("OTAGW_API_IDLE_TIMEOUT_SECS")? {
            self.api.idle_timeout_secs = v;
        }
        if let Some(v) = env_parse("OTAGW_API_MAX_CONNECTIONS")? {
            self.api.max_connections = v;
        }
        if let Some(v) = env("OTAGW_DATABASE_URL") {
            self.store.url = Some(v);
        }
        if let Some(v) = env("OTAGW_MASTER_KEY_FILE") {
            self.store.master_key_file = Some(v.into());
        }
        if let Some(v) = env("OTAGW_SQLITE_SYNCHRONOUS") {
            self.store.sqlite_synchronous = Some(v);
        }
        if let Some(v) = env("OTAGW_SMPP_ADDRESS") {
            self.smpp.get_or_insert_with(Default::default).address = v;
        }
        if let Some(v) = env("OTAGW_SMPP_SYSTEM_ID") {
            self.smpp.get_or_insert_with(Default::default).system_id = v;
        }
        if let Some(v) = env("OTAGW_SMPP_PASSWORD") {
            self.smpp.get_or_insert_with(Default::default).password = v;
        }
        if let Some(v) = env_parse("OTAGW_SMPP_BINDS")? {
            self.smpp.get_or_insert_with(Default::default).binds = v;
        }
        if let Some(v) = env_parse("OTAGW_SMPP_WINDOW")? {
            self.smpp.get_or_insert_with(Default::default).window = v;
        }
        if let Some(v) = env_parse("OTAGW_POR_TIMEOUT_SECS")? {
            self.pipeline.por_timeout_secs = v;
        }
        if let Some(v) = env_parse("OTAGW_RETRY_ATTEMPTS")? {
            self.pipeline.attempts = v;
        }
        if let Some(v) = env_parse("OTAGW_CAMPAIGN_POR_TIMEOUT_SECS")? {
            self.campaigns.por_timeout_secs = v;
        }
        if let Some(v) = env_parse("OTAGW_LOG_FORMAT")? {
            self.log.format = v;
        }
        if let Some(v) = env("OTAGW_LOG_LEVEL") {
            self.log.level = v;
        }
        Ok(())
    }

    /// The store URL (default: `otagw.db` in the data directory).
    pub fn store_url(&self) -> String {
        self.store
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("otagw.db").display()))
    }

    /// The store's backend settings.
    pub fn sql_options(&self) -> Result<crate::store::SqlOptions, ConfigError> {
        let normal = match self.store.sqlite_synchronous.as_deref() {
            None | Some("full") => false,
            Some("normal") => true,
            Some(other) => {
                return Err(ConfigError::Env {
                    name: "store.sqlite_synchronous / OTAGW_SQLITE_SYNCHRONOUS",
                    problem: format!("{other:?}: full or normal"),
                })
            }
        };
        Ok(crate::store::SqlOptions {
            sqlite_synchronous_normal: normal,
        })
    }

    /// The gateway's settings.
    pub fn gateway(&self) -> crate::gateway::GatewayConfig {
        let p = &self.pipeline;
        crate::gateway::GatewayConfig {
            id: self.gateway_id.clone().unwrap_or_else(default_gateway_id),
            max_in_flight: p.max_in_flight,
            lease: Duration::from_secs(p.lease_secs.max(1)),
            pipeline: crate::pipeline::PipelineConfig {
                por_timeout: Duration::from_secs(p.por_timeout_secs.max(1)),
                retry: crate::pipeline::RetryPolicy {
                    attempts: p.attempts.max(1),
                    backoff: Duration::from_millis(p.backoff_ms),
                    max_backoff: Duration::from_secs(60),
                },
            },
            catp_fallback_to_sms: self.catp.as_ref().is_some_and(|c| c.fallback_to_sms),
            ..Default::default()
        }
    }

    /// The Secure Router's settings.
    pub fn router(&self) -> crate::subscription::RouterConfig {
        let s = &self.subscriptions;
        crate::subscription::RouterConfig {
            notification_wait: Duration::from_secs(s.notification_wait_secs.max(1)),
            audit_backoff: Duration::from_secs(s.audit_backoff_secs.max(1)),
            audit_backoff_max: Duration::from_secs(s.audit_backoff_max_secs.max(1)),
            ..Default::default()
        }
    }

    /// The campaign runner's settings.
    pub fn campaign_runner(&self) -> crate::campaign::runner::RunnerConfig {
        let c = &self.campaigns;
        crate::campaign::runner::RunnerConfig {
            owner: self.gateway_id.clone().unwrap_or_else(default_gateway_id),
            claim_batch: c.claim_batch.max(1),
            max_in_flight: c.max_in_flight.max(1),
            por_timeout: Duration::from_secs(c.por_timeout_secs.max(1)),
            resume_wait: Duration::from_secs(c.resume_wait_secs),
            catp_fallback_to_sms: self.catp.as_ref().is_some_and(|c| c.fallback_to_sms),
            ..Default::default()
        }
    }
}

/// `[https]`: the SCP81 admin server cards connect to, and what their triggers say.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpsSettings {
    /// Where the PSK-TLS admin server listens.
    pub listen: SocketAddr,
    /// The IPv4 address and port the triggers send cards to (default: `listen`, with the
    /// port actually bound).
    pub advertise: Option<SocketAddr>,
    /// Trigger tag 8A, the HTTP `Host`.
    pub host: String,
    /// Trigger tag 8C, the first POST's URI (the Next-URIs are built on it).
    pub uri: String,
    /// Trigger tag 8B; default the card's ICCID.
    pub agent_id: Option<String>,
    /// Network access name in trigger tag 84.
    pub apn: Option<String>,
    /// OpenSSL PSK cipher names, in preference order.
    pub ciphers: Vec<String>,
    /// Lowest and highest TLS version: `1.0`, `1.1` or `1.2`.
    pub min_version: String,
    pub max_version: String,
    /// OpenSSL security level (default: the library's).
    pub security_level: Option<u32>,
    /// Seconds from TCP accept to a finished handshake.
    pub handshake_timeout_secs: u64,
    /// Seconds the server waits for a card's next bytes.
    pub idle_timeout_secs: u64,
    /// TAR of the security domain the trigger goes to, 6 hex digits (ISD `000000`).
    pub trigger_tar: String,
    /// SCP81 key version (0x40-0x4F) named in the trigger.
    pub psk_key_version: u8,
    /// Seconds to wait for the card's session after each trigger (triggers are resent up to
    /// `pipeline.attempts` times).
    pub window_secs: u64,
    /// Tag 86: the card's own retries and their delay.
    pub card_retries: u16,
    pub card_retry_delay_secs: u64,
    /// Largest script chunk per HTTP response.
    pub chunk_bytes: usize,
    /// Send over SMS when no session comes.
    pub fallback_to_sms: bool,
}

impl Default for HttpsSettings {
    fn default() -> Self {
        let d = crate::gateway::https::HttpsOptions::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            advertise: None,
            host: d.host,
            uri: d.uri,
            agent_id: None,
            apn: None,
            ciphers: otagw_https::server::TlsConfig::default().ciphers,
            min_version: "1.0".into(),
            max_version: "1.2".into(),
            security_level: None,
            handshake_timeout_secs: 30,
            idle_timeout_secs: 60,
            trigger_tar: "000000".into(),
            psk_key_version: d.psk_key_version,
            window_secs: d.window.as_secs(),
            card_retries: d.card_retries,
            card_retry_delay_secs: d.card_retry_delay.as_secs(),
            chunk_bytes: d.chunk_bytes,
            fallback_to_sms: false,
        }
    }
}

fn tls_version(
    field: &'static str,
    v: &str,
) -> Result<otagw_https::server::TlsVersion, ConfigError> {
    use otagw_https::server::TlsVersion;
    match v {
        "1.0" => Ok(TlsVersion::Tls10),
        "1.1" => Ok(TlsVersion::Tls11),
        "1.2" => Ok(TlsVersion::Tls12),
        other => Err(ConfigError::Env {
            name: field,
            problem: format!("{other:?}: 1.0, 1.1 or 1.2"),
        }),
    }
}

impl HttpsSettings {
    /// The admin server's settings.
    pub fn server_config(&self) -> Result<otagw_https::server::ServerConfig, ConfigError> {
        let mut c = otagw_https::server::ServerConfig::default();
        c.tls.ciphers = self.ciphers.clone();
        c.tls.min_version = tls_version("https.min_version", &self.min_version)?;
        c.tls.max_version = tls_version("https.max_version", &self.max_version)?;
        c.tls.security_level = self.security_level;
        c.handshake_timeout = Duration::from_secs(self.handshake_timeout_secs.max(1));
        c.idle_timeout = Duration::from_secs(self.idle_timeout_secs.max(1));
        c.next_uri_path = self.uri.clone();
        Ok(c)
    }

    /// The gateway's HTTPS options, cards sent to `bound` unless `advertise` says otherwise.
    pub fn options(
        &self,
        bound: SocketAddr,
    ) -> Result<crate::gateway::https::HttpsOptions, ConfigError> {
        let tar = hex::decode(&self.trigger_tar)
            .ok()
            .and_then(|t| <[u8; 3]>::try_from(t).ok())
            .ok_or_else(|| ConfigError::Env {
                name: "https.trigger_tar",
                problem: format!("{:?}: 6 hex digits", self.trigger_tar),
            })?;
        if !crate::store::scp81::PSK_KEY_VERSIONS.contains(&self.psk_key_version) {
            return Err(ConfigError::Env {
                name: "https.psk_key_version",
                problem: format!("{:#04x}: 0x40 to 0x4F", self.psk_key_version),
            });
        }
        let o = crate::gateway::https::HttpsOptions {
            admin_addr: self.advertise.unwrap_or(bound),
            host: self.host.clone(),
            uri: self.uri.clone(),
            agent_id: self.agent_id.clone(),
            apn: self.apn.clone(),
            trigger_tar: tar,
            psk_key_version: self.psk_key_version,
            window: Duration::from_secs(self.window_secs.max(1)),
            card_retries: self.card_retries,
            card_retry_delay: Duration::from_secs(self.card_retry_delay_secs),
            chunk_bytes: self.chunk_bytes.max(16),
            fallback_to_sms: self.fallback_to_sms,
            ..Default::default()
        };
        o.check().map_err(|e| ConfigError::Env {
            name: "https.advertise",
            problem: e.to_string(),
        })?;
        Ok(o)
    }
}

/// `otagw-<hostname>`: stable across restarts of one machine's gateway.
pub fn default_gateway_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".into());
    format!("otagw-{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_https_section_parses_and_is_checked() {
        let c = Config::parse(
            "[https]\nlisten = \"127.0.0.1:9443\"\nmin_version = \"1.2\"\ntrigger_tar = \"B00000\"\nwindow_secs = 5\n",
        )
        .unwrap_or_default();
        let h = c.https.clone().unwrap_or_default();
        let server = h.server_config();
        assert!(server.is_ok());
        let options = h.options(SocketAddr::from(([127, 0, 0, 1], 9443)));
        assert!(options.is_ok(), "{options:?}");
        if let Ok(o) = options {
            assert_eq!(o.trigger_tar, [0xB0, 0, 0]);
            assert_eq!(o.window, Duration::from_secs(5));
            assert_eq!(o.psk_key_version, 0x40);
        }
        let bad = HttpsSettings {
            min_version: "1.3".into(),
            ..HttpsSettings::default()
        };
        assert!(bad.server_config().is_err());
        let bad = HttpsSettings {
            psk_key_version: 0x30,
            ..HttpsSettings::default()
        };
        assert!(bad.options(SocketAddr::from(([127, 0, 0, 1], 1))).is_err());
        // The trigger carries IPv4 only.
        let v6 = HttpsSettings::default().options(
            "[::1]:8443"
                .parse()
                .unwrap_or(SocketAddr::from(([0; 16], 1))),
        );
        assert!(v6.is_err());
        assert!(Config::parse("[https]\nlisen = 1\n").is_err());
    }

    #[test]
    fn api_connection_limits_parse_and_take_the_environment() {
        let d = Config::default().api.limits();
        assert_eq!(d.header_read_timeout, Duration::from_secs(10));
        assert_eq!(d.idle_timeout, Duration::from_secs(60));
        assert_eq!(d.max_connections, 10_000);
        let c = Config::parse(
            "[api]\nheader_read_timeout_secs = 2\nidle_timeout_secs = 3\nmax_connections = 50\n",
        )
        .unwrap_or_default();
        let l = c.api.limits();
        assert_eq!(l.header_read_timeout, Duration::from_secs(2));
        assert_eq!(l.idle_timeout, Duration::from_secs(3));
        assert_eq!(l.max_connections, 50);
        // Zero would close every connection at once: it means the least instead.
        let z = Config::parse("[api]\nheader_read_timeout_secs = 0\nmax_connections = 0\n")
            .unwrap_or_default()
            .api
            .limits();
        assert_eq!(z.header_read_timeout, Duration::from_secs(1));
        assert_eq!(z.max_connections, 1);

        // Only this test sets these variables.
        let mut c = Config::default();
        std::env::set_var("OTAGW_API_HEADER_READ_TIMEOUT_SECS", "4");
        std::env::set_var("OTAGW_API_IDLE_TIMEOUT_SECS", "5");
        std::env::set_var("OTAGW_API_MAX_CONNECTIONS", "600");
        let applied = c.apply_env();
        std::env::set_var("OTAGW_API_MAX_CONNECTIONS", "many");
        let bad = Config::default().apply_env();
        for v in [
            "OTAGW_API_HEADER_READ_TIMEOUT_SECS",
            "OTAGW_API_IDLE_TIMEOUT_SECS",
            "OTAGW_API_MAX_CONNECTIONS",
        ] {
            std::env::remove_var(v);
        }
        assert!(applied.is_ok(), "{applied:?}");
        assert_eq!(
            (
                c.api.header_read_timeout_secs,
                c.api.idle_timeout_secs,
                c.api.max_connections
            ),
            (4, 5, 600)
        );
        assert!(
            matches!(
                bad,
                Err(ConfigError::Env {
                    name: "OTAGW_API_MAX_CONNECTIONS",
                    ..
                })
            ),
            "{bad:?}"
        );
    }

    #[test]
    fn the_example_file_parses() {
        let text = include_str!("../otagw.example.toml");
        let c = Config::parse(text);
        assert!(c.is_ok(), "{c:?}");
        let c = c.unwrap_or_default();
        assert_eq!(c.smpp.as_ref().map(|s| s.window), Some(50));
        assert_eq!(c.pipeline.attempts, 3);
        assert!(c.sql_options().is_ok());
    }

    #[test]
    fn catp_section_gives_the_transport_settings() {
        let c = Config::parse(
            "[smpp]\n[catp]\nlisten = \"127.0.0.1:4600\"\nadvertised = \"198.51.100.7:4600\"\nbearer_type = 2\nbearer_parameters = \"000003000002\"\napn = \"iot.example\"\npush_tar = \"B20100\"\nrto_ms = 500\nkeepalive_secs = 0\n",
        );
        assert!(c.is_ok(), "{c:?}");
        let c = c.unwrap_or_default();
        let (s, tar) = c
            .catp
            .as_ref()
            .map(|c| c.settings())
            .transpose()
            .ok()
            .flatten()
            .unzip();
        let s = s.expect("settings");
        assert_eq!(tar, Some([0xB2, 0x01, 0x00]));
        assert_eq!(s.listen.port(), 4600);
        assert_eq!(s.advertised.map(|a| a.port()), Some(4600));
        assert_eq!(s.bearer.bearer_type, 2);
        assert_eq!(s.bearer.parameters, vec![0, 0, 3, 0, 0, 2]);
        assert_eq!(
            s.network_access_name.as_deref(),
            Some(&b"\x03iot\x07example"[..])
        );
        assert_eq!(s.link.rto, Duration::from_millis(500));
        assert_eq!(s.link.max_rto, Duration::from_millis(4000));
        assert_eq!(s.link.keepalive, None);
        let bad = Config::parse("[catp]\npush_tar = \"B201\"\n").unwrap_or_default();
        let e = bad.catp.as_ref().map(|c| c.settings().map(|_| ()));
        assert!(
            matches!(
                e,
                Some(Err(ConfigError::Invalid {
                    name: "catp.push_tar",
                    ..
                }))
            ),
            "{e:?}"
        );
        let bad = Config::parse("[catp]\napn = \"a..b\"\n").unwrap_or_default();
        assert!(bad.catp.as_ref().is_some_and(|c| c.settings().is_err()));
    }

    #[test]
    fn a_file_parses_and_unknown_keys_are_refused() {
        let c = Config::parse(
            "data_dir = \"/tmp/x\"\n[api]\nlisten = \"127.0.0.1:9000\"\n[smpp]\naddress = \"10.0.0.1:2775\"\nwindow = 7\n[pipeline]\nattempts = 5\n",
        )
        .unwrap_or_default();
        assert_eq!(c.api.listen.port(), 9000);
        assert_eq!(c.smpp.as_ref().map(|s| s.window), Some(7));
        assert_eq!(
            c.smpp.as_ref().map(|s| s.answer_pors_after_store),
            Some(true),
            "PoRs are answered after they are stored unless the operator says otherwise"
        );
        let off = Config::parse("[smpp]\nanswer_pors_after_store = false\n").unwrap_or_default();
        assert_eq!(
            off.smpp.as_ref().map(|s| s.answer_pors_after_store),
            Some(false)
        );
        assert_eq!(c.pipeline.attempts, 5);
        assert_eq!(c.store_url(), "sqlite:///tmp/x/otagw.db");
        let e = Config::parse("[api]\nlisen = \"x\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("lisen"), "{e}");
    }
}
