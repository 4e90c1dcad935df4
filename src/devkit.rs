//! A gateway with its far side, in one process, on loopback: the SMSC simulator with a fleet
//! of virtual UICCs, the gateway (store, engine, REST API) bound to it, an account with a
//! token, and the fleet's cards added through the API. The demo and the API tests use it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use otagw_sms::smsc_sim::{SmscConfig, SmscHandle, SmscSimulator};

use crate::config::{Config, SmppSettings};
use crate::security::{CipherAlgorithm, IntegrityAlgorithm};
use crate::server::{self, ServerHandle};
use crate::sim::{Fleet, FleetDefaults};
use crate::store::{MasterKey, SqlStore, Store};

/// Why the environment did not come up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DevkitError(pub String);

fn err(e: impl std::fmt::Display) -> DevkitError {
    DevkitError(e.to_string())
}

/// What to start.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Virtual cards (AES-128 keys, key version 1, with a KIK).
    pub cards: usize,
    /// Store URL; default a SQLite file in a fresh temporary directory.
    pub store_url: Option<String>,
    /// PoR timeout.
    pub por_timeout: Duration,
    /// Campaigns' PoR wait (`[campaigns] por_timeout_secs`); `None` keeps its default.
    pub campaign_por_timeout: Option<Duration>,
    /// Sends per command.
    pub attempts: u32,
    /// First resend delay.
    pub backoff: Duration,
    /// SMPP window.
    pub window: usize,
    /// Gateway id.
    pub gateway_id: String,
    /// Seed of the fleet.
    pub seed: u64,
    /// The gateway takes commands in but sends nothing (they stay PENDING).
    pub paused: bool,
    /// SQLite `synchronous = NORMAL` (see [`crate::store::SqlOptions`]).
    pub sqlite_synchronous_normal: bool,
    /// Provision the cards from the fleet's vendor file into a profile `fleet` with a card
    /// group `fleet` (for campaigns), instead of adding them through the API.
    pub provision: bool,
    /// HTTPS OTA: the admin server on loopback, every card with an SCP81 PSK (key version
    /// 0x40) in the store and on the card, and the cards answering triggers. With
    /// [`DevOptions::provision`], the `fleet` profile's default transport is `https`.
    pub https: Option<crate::config::HttpsSettings>,
    /// Run CAT_TP too (its listen address is replaced by an ephemeral loopback port), with
    /// terminals in front of the fleet that open the links pushes ask for. With
    /// [`DevOptions::provision`] (and no HTTPS), the `fleet` profile's default transport is
    /// `catp`.
    pub catp: Option<crate::config::CatpConfig>,
    /// With [`DevOptions::provision`]: the `fleet` profile's CAT_TP push parameters
    /// (`defaults.catp`).
    pub profile_catp: Option<serde_json::Value>,
    /// With [`DevOptions::provision`] and HTTPS: the `fleet` profile's HTTP parameters
    /// (`defaults.http`; `{"agentId": "otagw-devkit"}` when not set).
    pub profile_http: Option<serde_json::Value>,
    /// How those terminals behave (faults, silent cards).
    pub terminals: crate::sim::catp_client::TerminalSettings,
    /// The API's connection limits (`[api]`); the listen address stays an ephemeral loopback
    /// port.
    pub api_limits: Option<crate::config::ApiSettings>,
    /// The simulated SMSC's fault injection (messages throttled, lost, delayed); none by
    /// default.
    pub smsc_faults: Option<otagw_sms::smsc_sim::FaultConfig>,
    /// The engine's clock (default the system's).
    pub clock: Option<Arc<dyn crate::clock::Clock>>,
    /// The Secure Router's settings (`[subscriptions]`); `None` keeps the defaults.
    pub subscriptions: Option<crate::config::SubscriptionsSettings>,
    /// Subscriptions each card has from the factory besides its IMSI's (see
    /// [`FleetDefaults::factory_subscriptions`]); the server learns them from the vendor file
    /// with [`DevOptions::provision`].
    pub factory_subscriptions: u8,
}

impl Default for DevOptions {
    fn default() -> Self {
        Self {
            cards: 5,
            store_url: None,
            por_timeout: Duration::from_secs(10),
            campaign_por_timeout: None,
            attempts: 3,
            backoff: Duration::from_millis(500),
            window: 50,
            gateway_id: "otagw-dev".into(),
            seed: 7,
            paused: false,
            sqlite_synchronous_normal: false,
            provision: false,
            https: None,
            catp: None,
            profile_catp: None,
            profile_http: None,
            terminals: Default::default(),
            api_limits: None,
            smsc_faults: None,
            clock: None,
            subscriptions: None,
            factory_subscriptions: 0,
        }
    }
}

/// An IJC load file with a Method component of `method_len` octets (a small package otherwise),
/// for applet uploads in tests and demos: large ones need several SMS.
pub fn sample_load_file(method_len: usize) -> Vec<u8> {
    let mut out = hex::decode(
        "010010DECAFFED010204000106F00102030405020003AABBCC0400010003000B0107F0010203040501002A\
         0600021111",
    )
    .unwrap_or_default();
    out.push(0x07);
    out.extend_from_slice(&(method_len as u16).to_be_bytes());
    out.extend((0..method_len).map(|i| (i % 251) as u8));
    out.extend(hex::decode("08000133050002444409000155").unwrap_or_default());
    out
}

/// The running environment.
pub struct DevEnv {
    /// The gateway.
    pub server: ServerHandle,
    /// The SMSC simulator.
    pub smsc: SmscHandle,
    /// The cards behind it.
    pub fleet: Arc<Fleet>,
    /// Bearer token of the `demo` account.
    pub token: String,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The configuration the gateway runs with (peers start from it).
    pub config: Config,
    /// With [`DevOptions::provision`]: the profile and the card group holding every card.
    pub fleet_group: Option<(i64, i64)>,
    /// The `demo` account's id.
    pub account_id: String,
    /// The cards' SCP81 side (with [`DevOptions::https`]).
    pub https: Option<Arc<crate::sim::https_client::HttpsHandsets>>,
    /// The CAT_TP terminals in front of the fleet (with [`DevOptions::catp`]).
    pub terminals: Option<Arc<crate::sim::catp_client::CatpTerminals>>,
    master_key: [u8; 32],
}

impl DevEnv {
    /// The master key sealing this environment's store (tests look for it where it must not be).
    pub fn master_key_bytes(&self) -> [u8; 32] {
        self.master_key
    }
}

/// Moves `fleet`'s subscription applications on every `every` with the wall clock and sends
/// the notifications due as MO SMS through `smsc` to the binds of `system_id`, until the
/// returned ticker is dropped (see [`DevEnv::tick_subscriptions`]).
pub fn tick_fleet_subscriptions(
    fleet: Arc<Fleet>,
    smsc: otagw_sms::smsc_sim::MoSender,
    system_id: String,
    network: Arc<dyn crate::sim::subscriptions::Network + Send + Sync>,
    every: Duration,
    faults: NotificationFaults,
) -> SubscriptionTicker {
    let counts = Arc::new(TickerCounts::default());
    let c = counts.clone();
    let task = tokio::spawn(async move {
        use std::sync::atomic::Ordering::Relaxed;
        let mut rng = otagw_sms::smsc_sim::XorShift64::new(faults.seed);
        // Delayed notifications: (when they go, MSISDN, user data).
        let mut held: Vec<(i64, String, Vec<u8>)> = Vec::new();
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = crate::clock::now_ms();
            let (ready, later) = std::mem::take(&mut held)
                .into_iter()
                .partition(|(at, _, _)| *at <= now);
            held = later;
            let mut due: Vec<(String, Vec<u8>)> = ready
                .into_iter()
                .map(|(_, msisdn, ud)| (msisdn, ud))
                .collect();
            for (msisdn, ud) in fleet.tick_notifications(now, &*network) {
                if c.drop_next.load(Relaxed) > 0 {
                    c.drop_next.fetch_sub(1, Relaxed);
                    c.dropped.fetch_add(1, Relaxed);
                    continue;
                }
                match faults.decide(&mut rng) {
                    NotificationFault::Drop => {
                        c.dropped.fetch_add(1, Relaxed);
                    }
                    NotificationFault::Delay(ms) => {
                        c.delayed.fetch_add(1, Relaxed);
                        held.push((now + ms, msisdn, ud));
                    }
                    NotificationFault::None => due.push((msisdn, ud)),
                }
            }
            for (msisdn, ud) in due {
                if smsc.send_mo(&system_id, &msisdn, "otagw", &ud) {
                    c.sent.fetch_add(1, Relaxed);
                }
            }
        }
    });
    SubscriptionTicker { task, counts }
}

/// Seeded faults on the notifications a [`SubscriptionTicker`] sends, as a network loses
/// or holds MO SMS: the card repeats an unconfirmed notification, so a lost one comes again
/// later, and a held one may arrive after its repetition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NotificationFaults {
    /// Seed of the decisions.
    pub seed: u64,
    /// Share of notifications lost (0..=1).
    pub drop_share: f64,
    /// Share held back (0..=1, after the dropped ones).
    pub delay_share: f64,
    /// Longest hold, ms (each hold is drawn up to it).
    pub max_delay_ms: i64,
}

impl Default for NotificationFaults {
    fn default() -> Self {
        NotificationFaults {
            seed: 1,
            drop_share: 0.0,
            delay_share: 0.0,
            max_delay_ms: 2_000,
        }
    }
}

/// What [`NotificationFaults`] decided for one notification.
enum NotificationFault {
    None,
    Drop,
    Delay(i64),
}

impl NotificationFaults {
    fn decide(&self, rng: &mut otagw_sms::smsc_sim::XorShift64) -> NotificationFault {
        if self.drop_share <= 0.0 && self.delay_share <= 0.0 {
            return NotificationFault::None;
        }
        let u = rng.next_f64();
        if u < self.drop_share {
            NotificationFault::Drop
        } else if u < self.drop_share + self.delay_share {
            NotificationFault::Delay((rng.next_f64() * self.max_delay_ms.max(0) as f64) as i64)
        } else {
            NotificationFault::None
        }
    }
}

/// See [`DevEnv::tick_subscriptions`]; stops when dropped.
pub struct SubscriptionTicker {
    task: tokio::task::JoinHandle<()>,
    /// What it did.
    pub counts: Arc<TickerCounts>,
}

impl Drop for SubscriptionTicker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A [`SubscriptionTicker`]'s counters.
#[derive(Debug, Default)]
pub struct TickerCounts {
    /// Notifications sent as MO SMS.
    pub sent: std::sync::atomic::AtomicU64,
    /// Notifications lost on purpose.
    pub dropped: std::sync::atomic::AtomicU64,
    /// Notifications held back on purpose (sent later).
    pub delayed: std::sync::atomic::AtomicU64,
    /// Lose this many of the next notifications (the card repeats them later).
    pub drop_next: std::sync::atomic::AtomicU64,
}

/// The fleet's defaults: AES-128 CBC and CMAC, key version 1.
pub fn fleet_defaults() -> FleetDefaults {
    FleetDefaults {
        kic_algorithm: Some(CipherAlgorithm::AesCbc),
        kid_algorithm: Some(IntegrityAlgorithm::AesCmac),
        ..FleetDefaults::default()
    }
}

/// The `POST /api/v1/cards` body for a fleet's cards.
pub fn cards_body(fleet: &Fleet) -> serde_json::Value {
    let mut cards = Vec::new();
    fleet.for_each_card(|c| {
        let key_sets: Vec<serde_json::Value> = c
            .key_sets()
            .iter()
            .map(|k| {
                let mut v = serde_json::json!({
                    "version": k.version(),
                    "kic": hex::encode(k.kic()),
                    "kid": hex::encode(k.kid()),
                    "counter": k.counter().value(),
                });
                if let Some(a) = k.kic_algorithm() {
                    v["kicAlgorithm"] = a.name().into();
                }
                if let Some(a) = k.kid_algorithm() {
                    v["kidAlgorithm"] = a.name().into();
                }
                if let Some(kik) = k.kik() {
                    v["kik"] = hex::encode(kik).into();
                }
                v
            })
            .collect();
        cards.push(serde_json::json!({
            "iccid": c.iccid(),
            "imsi": c.imsi(),
            "msisdn": c.msisdn(),
            "keySets": key_sets,
        }));
    });
    serde_json::json!({ "cards": cards })
}

/// A fresh temporary directory.
pub fn temp_dir(prefix: &str) -> Result<PathBuf, DevkitError> {
    use rand::RngCore;
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{:08x}",
        std::process::id(),
        rand::thread_rng().next_u32()
    ));
    std::fs::create_dir_all(&dir).map_err(err)?;
    Ok(dir)
}

/// Starts the simulator, the gateway, an account and its token; adds the cards over REST.
pub async fn start(options: DevOptions) -> Result<DevEnv, DevkitError> {
    let defaults = FleetDefaults {
        factory_subscriptions: options.factory_subscriptions,
        ..fleet_defaults()
    };
    let fleet = Arc::new(Fleet::generate(options.cards, options.seed, defaults).map_err(err)?);
    let https = options
        .https
        .as_ref()
        .map(|_| crate::sim::https_client::HttpsHandsets::new(fleet.clone()));
    let terminals = options.catp.as_ref().map(|_| {
        Arc::new(crate::sim::catp_client::CatpTerminals::new(
            fleet.clone(),
            options.terminals.clone(),
        ))
    });
    // The handsets in front of the fleet: HTTPS triggers and/or CAT_TP pushes, else plain SMS.
    let network: Arc<dyn otagw_sms::smsc_sim::HandsetNetwork> = match (&https, &terminals) {
        (Some(h), Some(t)) => Arc::new(crate::sim::catp_client::BipAndHttpsNetwork {
            terminals: t.clone(),
            https: h.clone(),
        }),
        (Some(h), None) => Arc::new(crate::sim::https_client::TriggeringNetwork(h.clone())),
        (None, Some(t)) => t.clone(),
        (None, None) => fleet.clone(),
    };
    let mut smsc_config = SmscConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    if let Some(faults) = &options.smsc_faults {
        smsc_config.faults = faults.clone();
    }
    let smsc = SmscSimulator::start(smsc_config, network)
        .await
        .map_err(err)?;
    let data_dir = temp_dir("otagw-dev")?;
    let mut config = Config {
        data_dir: data_dir.clone(),
        gateway_id: Some(options.gateway_id.clone()),
        ..Config::default()
    };
    if let Some(api) = &options.api_limits {
        config.api.header_read_timeout_secs = api.header_read_timeout_secs;
        config.api.idle_timeout_secs = api.idle_timeout_secs;
        config.api.max_connections = api.max_connections;
    }
    config.api.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.store.url = options.store_url.clone();
    config.smpp = Some(SmppSettings {
        address: smsc.local_addr().to_string(),
        window: options.window,
        ..SmppSettings::default()
    });
    config.catp = options.catp.clone().map(|mut c| {
        c.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        c
    });
    config.pipeline.por_timeout_secs = options.por_timeout.as_secs().max(1);
    if let Some(t) = options.campaign_por_timeout {
        config.campaigns.por_timeout_secs = t.as_secs().max(1);
    }
    config.pipeline.attempts = options.attempts;
    config.pipeline.backoff_ms = options.backoff.as_millis() as u64;
    if options.paused {
        config.pipeline.max_in_flight = 0;
    }
    config.https = options.https.clone();
    if let Some(s) = &options.subscriptions {
        config.subscriptions = s.clone();
    }
    if options.sqlite_synchronous_normal {
        config.store.sqlite_synchronous = Some("normal".into());
    }
    let sql_options = config.sql_options().map_err(err)?;
    let master_key: [u8; 32] = {
        use rand::RngCore;
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        k
    };
    let store: Arc<dyn Store> = Arc::new(
        SqlStore::connect_with(
            &config.store_url(),
            MasterKey::from_bytes(master_key),
            sql_options,
        )
        .await
        .map_err(err)?,
    );
    let account = store
        .create_account(
            &format!("demo-{}", options.gateway_id),
            crate::clock::now_ms(),
        )
        .await
        .map_err(err)?;
    let token = store
        .create_token(&account.id, "devkit", crate::clock::now_ms())
        .await
        .map_err(err)?;
    let mut fleet_group = None;
    if options.provision {
        let now = crate::clock::now_ms();
        let profile = store
            .create_profile(
                &account.id,
                &crate::store::NewProfile {
                    name: "fleet".into(),
                    app_type: Some("rfm".into()),
                    applet_id: None,
                    tars: vec!["B00010".into()],
                    defaults: crate::store::ProfileDefaults {
                        spi: Some("1621".into()),
                        kic_byte: Some("12".into()),
                        kid_byte: Some("12".into()),
                        // With HTTPS on, the fleet's profile sends over HTTPS by default;
                        // else with CAT_TP on, over CAT_TP.
                        transport: options
                            .https
                            .as_ref()
                            .map(|_| "https".to_string())
                            .or_else(|| options.catp.as_ref().map(|_| "catp".to_string())),
                        // TLS_TRIGGER campaigns need a profile with HTTP parameters.
                        http: options.https.as_ref().map(|_| {
                            options
                                .profile_http
                                .clone()
                                .unwrap_or_else(|| serde_json::json!({"agentId": "otagw-devkit"}))
                        }),
                        catp: options.profile_catp.clone(),
                        ..Default::default()
                    },
                },
                now,
            )
            .await
            .map_err(err)?;
        let parsed = crate::provision::parse_vendor_text(&fleet.to_vendor_file()).map_err(err)?;
        let group = store
            .provision_cards(
                &account.id,
                profile.id,
                &parsed.cards,
                Some("fleet"),
                now,
                &|_| {},
            )
            .await
            .map_err(err)?
            .ok_or_else(|| DevkitError("provisioning made no group".into()))?;
        fleet_group = Some((profile.id, group.id));
    }
    let clock = options.clock.clone().unwrap_or_else(crate::clock::system);
    let server = server::start_with_clock(&config, store, clock)
        .await
        .map_err(err)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(err)?;
    let env = DevEnv {
        server,
        smsc,
        fleet,
        token,
        client,
        data_dir,
        config,
        fleet_group,
        account_id: account.id.clone(),
        https,
        terminals,
        master_key,
    };
    let response = if options.provision {
        (201, serde_json::Value::Null)
    } else {
        env.post("/api/v1/cards", &cards_body(&env.fleet)).await?
    };
    if response.0 != 201 {
        return Err(DevkitError(format!(
            "adding cards: {} {}",
            response.0, response.1
        )));
    }
    if env.https.is_some() {
        env.provision_psks().await?;
    }
    // The gateway is useful once its SMPP session is bound.
    for _ in 0..100 {
        let (code, _) = env.get_unauthenticated("/api/v1/ota/health").await?;
        if code == 200 {
            return Ok(env);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(DevkitError(
        "the gateway did not bind to the simulator within 5 s".into(),
    ))
}

/// The PSK identity and key of a virtual card (key version 0x40): the identity names the
/// ICCID, the key is random.
pub fn card_psk(iccid: &str) -> (Vec<u8>, Vec<u8>) {
    use rand::RngCore;
    let mut key = vec![0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut key);
    (format!("otagw-psk-{iccid}").into_bytes(), key)
}

impl DevEnv {
    /// Gives every card of the fleet an SCP81 PSK (key version 0x40): on the card, and in the
    /// gateway through `PUT /api/v1/cards/{iccid}/scp81-keys`.
    async fn provision_psks(&self) -> Result<(), DevkitError> {
        let mut keys = Vec::new();
        self.fleet.for_each_card(|c| {
            let iccid = c.iccid();
            let (identity, key) = card_psk(&iccid);
            keys.push((c.msisdn(), iccid, identity, key));
        });
        for (msisdn, iccid, identity, key) in keys {
            self.fleet
                .with_card(&msisdn, |c| c.set_psk(0x40, &identity, &key));
            let (code, body) = self
                .put(
                    &format!("/api/v1/cards/{iccid}/scp81-keys"),
                    &serde_json::json!({
                        "version": 0x40,
                        "identity": hex::encode(&identity),
                        "key": hex::encode(&key),
                    }),
                )
                .await?;
            if code != 204 {
                return Err(DevkitError(format!("SCP81 key of {iccid}: {code} {body}")));
            }
        }
        Ok(())
    }

    /// POST raw bytes (an applet upload) with the token: (status, body).
    pub async fn post_bytes(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(u16, serde_json::Value), DevkitError> {
        self.call(
            self.client
                .post(self.url(path))
                .bearer_auth(&self.token)
                .body(body),
        )
        .await
    }

    /// PUT JSON with the token: (status, body).
    pub async fn put(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(u16, serde_json::Value), DevkitError> {
        self.call(
            self.client
                .put(self.url(path))
                .bearer_auth(&self.token)
                .json(body),
        )
        .await
    }

    /// DELETE with the token.
    pub async fn delete(&self, path: &str) -> Result<(u16, serde_json::Value), DevkitError> {
        self.call(self.client.delete(self.url(path)).bearer_auth(&self.token))
            .await
    }

    /// Sends a request: (status, JSON body, Null when the body is not JSON).
    async fn call(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, serde_json::Value), DevkitError> {
        let r = request.send().await.map_err(err)?;
        let code = r.status().as_u16();
        Ok((code, r.json().await.unwrap_or(serde_json::Value::Null)))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url())
    }

    /// POST JSON with the token: (status, body).
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(u16, serde_json::Value), DevkitError> {
        self.call(
            self.client
                .post(self.url(path))
                .bearer_auth(&self.token)
                .json(body),
        )
        .await
    }

    /// GET with the token: (status, body).
    pub async fn get(&self, path: &str) -> Result<(u16, serde_json::Value), DevkitError> {
        self.call(self.client.get(self.url(path)).bearer_auth(&self.token))
            .await
    }

    /// GET without a token.
    pub async fn get_unauthenticated(
        &self,
        path: &str,
    ) -> Result<(u16, serde_json::Value), DevkitError> {
        self.call(self.client.get(self.url(path))).await
    }

    /// Polls a command until it ends (or `within` passes); returns its last result.
    pub async fn wait_done(
        &self,
        command_id: &str,
        within: Duration,
    ) -> Result<serde_json::Value, DevkitError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (code, body) = self
                .get(&format!("/api/v1/ota/commands/{command_id}"))
                .await?;
            if code != 200 {
                return Err(DevkitError(format!(
                    "GET command {command_id}: {code} {body}"
                )));
            }
            let status = body["status"].as_str().unwrap_or("");
            if matches!(status, "SUCCESS" | "FAILED" | "CANCELLED" | "EXPIRED") {
                return Ok(body);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(DevkitError(format!(
                    "command {command_id} still {status} after {within:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Another gateway on the same store and the same SMSC (its own id, its own API port):
    /// two gateways sharing one database.
    pub async fn start_peer(&self, gateway_id: &str) -> Result<ServerHandle, DevkitError> {
        let mut config = self.config.clone();
        config.gateway_id = Some(gateway_id.to_string());
        config.api.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let store: Arc<dyn Store> = Arc::new(
            SqlStore::connect_with(
                &config.store_url(),
                MasterKey::from_bytes(self.master_key),
                config.sql_options().map_err(err)?,
            )
            .await
            .map_err(err)?,
        );
        server::start_with_store(&config, store).await.map_err(err)
    }

    /// Moves the fleet's subscription applications on every `every` with the wall clock
    /// (attach, rollback) and sends the notifications due as MO SMS through the simulated
    /// SMSC, until the returned ticker is dropped.
    pub fn tick_subscriptions(
        &self,
        network: Arc<dyn crate::sim::subscriptions::Network + Send + Sync>,
        every: Duration,
    ) -> SubscriptionTicker {
        self.tick_subscriptions_with(network, every, NotificationFaults::default())
    }

    /// [`DevEnv::tick_subscriptions`] with notifications lost or held back as `faults` says.
    pub fn tick_subscriptions_with(
        &self,
        network: Arc<dyn crate::sim::subscriptions::Network + Send + Sync>,
        every: Duration,
        faults: NotificationFaults,
    ) -> SubscriptionTicker {
        let system_id = self
            .config
            .smpp
            .as_ref()
            .map_or_else(|| "otagw".to_string(), |s| s.system_id.clone());
        tick_fleet_subscriptions(
            self.fleet.clone(),
            self.smsc.mo_sender(),
            system_id,
            network,
            every,
            faults,
        )
    }

    /// The MSISDN of the fleet's card number `i`.
    pub fn msisdn(&self, i: usize) -> Option<String> {
        self.fleet.msisdn_at(i)
    }

    /// The ICCID of card `i`.
    pub fn iccid(&self, i: usize) -> Option<String> {
        let m = self.fleet.msisdn_at(i)?;
        self.fleet.with_card(&m, |c| c.iccid())
    }

    /// Stops everything and removes the data directory (and a scratch PostgreSQL schema).
    pub async fn shutdown(self) {
        self.server.shutdown().await;
        self.smsc.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.data_dir);
        if let Some(url) = &self.config.store.url {
            drop_postgres_scratch(url).await;
        }
    }
}

/// A fresh schema in a PostgreSQL database, as a store URL whose connections use it (for
/// tests and load runs that must not see each other's rows).
pub async fn postgres_scratch_url(base: &str) -> Result<String, DevkitError> {
    use rand::RngCore;
    let schema = format!("otagw_{:08x}", rand::thread_rng().next_u32());
    let pool = sqlx::PgPool::connect(base)
        .await
        .map_err(|e| DevkitError(format!("PostgreSQL at {base}: {e}")))?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&pool)
        .await
        .map_err(err)?;
    pool.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

/// Drops the schema a [`postgres_scratch_url`] URL names (nothing for other URLs).
pub async fn drop_postgres_scratch(url: &str) {
    let Some((base, schema)) = url.split_once("options=-c%20search_path%3D") else {
        return;
    };
    if !schema.starts_with("otagw_")
        || !schema
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return;
    }
    let base = base.trim_end_matches(['?', '&']);
    if let Ok(pool) = sqlx::PgPool::connect(base).await {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&pool)
            .await;
        pool.close().await;
    }
}

/// [`start`] on a store backend by name: `"postgres"`, a fresh schema of the
/// [`test_database_url`] database; anything else, `options` as given (SQLite in the data
/// directory unless `store_url` says otherwise). The end-to-end tests run each case on both.
pub async fn start_on(backend: &str, options: DevOptions) -> Result<DevEnv, DevkitError> {
    let store_url = match backend {
        "postgres" => Some(
            postgres_scratch_url(&test_database_url())
                .await
                .map_err(|e| {
                    DevkitError(format!("{e} (the tests need PostgreSQL, see .ci/run)"))
                })?,
        ),
        _ => options.store_url.clone(),
    };
    start(DevOptions {
        store_url,
        ..options
    })
    .await
}

/// The local test database: `OTAGW_TEST_DATABASE_URL`, default
/// `postgres://postgres@127.0.0.1:5432/test`.
pub fn test_database_url() -> String {
    std::env::var("OTAGW_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Peak resident memory of this process (VmHWM), in bytes, where /proc tells.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
