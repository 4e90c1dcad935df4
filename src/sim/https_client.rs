//! The virtual UICC's side of SCP81, at run time: a [`HandsetNetwork`] over a [`Fleet`] that,
//! when a card's ISD has received an administration session trigger, opens PSK-TLS (OpenSSL,
//! through [`otagw_https::client`]) to the host in the trigger, runs the POST loop and executes
//! each script on the card's applets (the ISD's registry, or the RFM applet the
//! `X-Admin-Targeted-Application` names).
//!
//! The rest of `sim` is sans-IO; this file is the runtime glue the tests and the demo use.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use otagw_https::admin::{aid_of_uri, default_application_aid, ScriptKind, ScriptStatus};
use otagw_https::client::{
    self, AgentReply, CardAgent, ClientConfig, ClientOutcome, ResumePoint, ScriptRequest,
};
use otagw_https::server::TlsVersion;
use otagw_https::trigger::{ConnectionParams, TriggerParams};
use otagw_sms::smsc_sim::{HandsetNetwork, HandsetReply};

use super::card::{TAR_RAM_ISD, TAR_RFM_GSM, TAR_RFM_USIM};
use super::Fleet;

/// How the virtual cards behave over HTTPS (tests change it between commands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardTls {
    /// OpenSSL cipher names the cards offer.
    pub ciphers: String,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// Chunked request bodies (else Content-Length).
    pub chunked: bool,
    /// The card drops the connection when the N-th script of a session arrives (before running
    /// it): the bearer is lost mid-script.
    pub drop_at_script: Option<u32>,
    /// Only this many sessions drop (then the cards behave again).
    pub drops_left: u32,
    /// The dropping card runs that script first and keeps its responses for the next
    /// session's first POST (`X-Admin-Resume: true`).
    pub drop_after_running: bool,
    /// Sessions the cards ignore (the trigger arrives, no connection is opened).
    pub ignore_triggers: u32,
    /// Longest wait for the server.
    pub io_timeout: Duration,
    /// AIDs of the cards' RFM applications by TAR, where they differ from
    /// [`default_application_aid`] (real cards' RFM applications have their issuer's AIDs).
    pub rfm_aids: Vec<([u8; 3], Vec<u8>)>,
}

impl Default for CardTls {
    fn default() -> Self {
        CardTls {
            ciphers: "PSK-AES128-GCM-SHA256:PSK-AES128-CBC-SHA256:PSK-AES128-CBC-SHA".into(),
            min_version: TlsVersion::Tls10,
            max_version: TlsVersion::Tls12,
            chunked: true,
            drop_at_script: None,
            drops_left: 0,
            drop_after_running: false,
            ignore_triggers: 0,
            io_timeout: Duration::from_secs(10),
            rfm_aids: Vec::new(),
        }
    }
}

/// What the cards' sessions did.
#[derive(Debug, Default)]
pub struct CardSessionStats {
    pub triggers: AtomicU64,
    pub sessions: AtomicU64,
    pub completed: AtomicU64,
    pub dropped: AtomicU64,
    pub failed: AtomicU64,
    pub scripts: AtomicU64,
}

/// A fleet whose cards answer SCP81 triggers.
pub struct HttpsHandsets {
    fleet: Arc<Fleet>,
    pub tls: Mutex<CardTls>,
    pub stats: Arc<CardSessionStats>,
    /// Outcomes of the sessions so far (negotiated version and cipher, or the error).
    pub outcomes: Mutex<Vec<Result<ClientOutcome, String>>>,
    /// Where a card resumes an interrupted session, by MSISDN.
    unsent: Mutex<std::collections::HashMap<String, ResumePoint>>,
}

impl HttpsHandsets {
    pub fn new(fleet: Arc<Fleet>) -> Arc<Self> {
        Arc::new(HttpsHandsets {
            fleet,
            tls: Mutex::new(CardTls::default()),
            stats: Arc::new(CardSessionStats::default()),
            outcomes: Mutex::new(Vec::new()),
            unsent: Mutex::new(Default::default()),
        })
    }

    /// Changes the cards' behaviour.
    pub fn set_tls(&self, tls: CardTls) {
        if let Ok(mut t) = self.tls.lock() {
            *t = tls;
        }
    }

    fn spawn_session(self: &Arc<Self>, msisdn: String, trigger: Vec<u8>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no runtime to open the SCP81 session on");
            return;
        };
        let me = self.clone();
        rt.spawn(async move {
            let result = me.session(&msisdn, &trigger).await;
            match &result {
                Ok(o) if o.completed => {
                    me.stats.completed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(o) if o.dropped => {
                    me.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    me.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%msisdn, "virtual card's SCP81 session failed: {e}");
                }
            }
            if let Ok(mut o) = me.outcomes.lock() {
                o.push(result);
            }
        });
    }

    async fn session(&self, msisdn: &str, trigger: &[u8]) -> Result<ClientOutcome, String> {
        let params = TriggerParams::decode(trigger).map_err(|e| format!("trigger: {e}"))?;
        let security = params.security.ok_or("trigger without tag 85")?;
        let (identity, key) = self
            .fleet
            .with_card(msisdn, |c| c.psk(security.key_version))
            .flatten()
            .ok_or_else(|| format!("no PSK of key version {:#04x}", security.key_version))?;
        if identity != security.psk_identity {
            return Err("the trigger names another PSK identity".into());
        }
        let conn = ConnectionParams::decode(params.connection.as_deref().unwrap_or_default())
            .map_err(|e| format!("connection parameters: {e}"))?;
        let addr = SocketAddr::from((conn.ipv4, conn.port));
        let http = params.http.unwrap_or_default();
        let (tls, drop_at) = {
            let mut t = self.tls.lock().map_err(|_| "lock")?;
            let drop_at = if t.drops_left > 0 {
                t.drops_left -= 1;
                t.drop_at_script
            } else {
                None
            };
            (t.clone(), drop_at)
        };
        let config = ClientConfig {
            identity,
            key,
            ciphers: tls.ciphers.clone(),
            min_version: tls.min_version,
            max_version: tls.max_version,
            host: http.host.unwrap_or_default(),
            agent_id: http.agent_id.unwrap_or_default(),
            uri: http.uri.unwrap_or_else(|| "/".into()),
            chunked: tls.chunked,
            io_timeout: tls.io_timeout,
        };
        let connector = client::connector(&config).map_err(|e| e.to_string())?;
        // Tag 86: the card retries opening the session itself.
        let retry = params.retry.as_ref();
        let tries = 1 + u32::from(retry.map_or(0, |r| r.retry_counter));
        let delay = Duration::from_secs(u64::from(
            retry.map_or(0, |r| r.retry_waiting_delay.as_secs()),
        ));
        let mut last = String::new();
        for attempt in 0..tries {
            if attempt > 0 {
                tokio::time::sleep(delay).await;
            }
            self.stats.sessions.fetch_add(1, Ordering::Relaxed);
            let stream = match client::connect(addr, &connector, config.io_timeout).await {
                Ok(s) => s,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let mut agent = FleetAgent {
                rfm_aids: &tls.rfm_aids,
                fleet: &self.fleet,
                msisdn,
                drop_at,
                drop_after_running: tls.drop_after_running,
                scripts: 0,
                stats: &self.stats,
            };
            let resume = self.unsent.lock().ok().and_then(|mut u| u.remove(msisdn));
            let mut outcome = client::run_session(stream, &config, &mut agent, resume)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(unsent) = outcome.unsent.take() {
                if let Ok(mut u) = self.unsent.lock() {
                    u.insert(msisdn.to_string(), unsent);
                }
            }
            return Ok(outcome);
        }
        Err(last)
    }
}

struct FleetAgent<'a> {
    fleet: &'a Fleet,
    msisdn: &'a str,
    drop_at: Option<u32>,
    drop_after_running: bool,
    scripts: u32,
    stats: &'a CardSessionStats,
    rfm_aids: &'a [([u8; 3], Vec<u8>)],
}

impl FleetAgent<'_> {
    /// The TAR of the RFM application with this AID, if the card has one.
    fn rfm_tar(&self, aid: &[u8]) -> Option<[u8; 3]> {
        [TAR_RFM_GSM, TAR_RFM_USIM].into_iter().find(|tar| {
            let own = self
                .rfm_aids
                .iter()
                .find(|(t, _)| t == tar)
                .map_or_else(|| default_application_aid(*tar), |(_, a)| a.clone());
            own == aid
        })
    }

    /// Where a script goes, as an Amendment B agent decides: GP scripts to the security domain
    /// (the ISD here: the card has no other), RFM scripts (TS 102 226 Annex B media types) to
    /// the RFM application the targeted AID names.
    fn route(&self, request: &ScriptRequest<'_>) -> Result<[u8; 3], ScriptStatus> {
        let aid = request.targeted_application.map(aid_of_uri);
        match (request.kind, aid) {
            (Some(ScriptKind::CardContent), None) => Ok(TAR_RAM_ISD),
            // An RFM application is not a security domain; anything else is unknown.
            (Some(ScriptKind::CardContent), Some(Some(aid))) => match self.rfm_tar(&aid) {
                Some(_) => Err(ScriptStatus::NotASecurityDomain),
                None => Err(ScriptStatus::UnknownApplication),
            },
            (Some(ScriptKind::RemoteFile), Some(Some(aid))) => {
                self.rfm_tar(&aid).ok_or(ScriptStatus::UnknownApplication)
            }
            _ => Err(ScriptStatus::UnknownApplication),
        }
    }
}

impl CardAgent for FleetAgent<'_> {
    fn execute(&mut self, request: ScriptRequest<'_>) -> AgentReply {
        self.scripts += 1;
        let dropping = self.drop_at == Some(self.scripts);
        if dropping && !self.drop_after_running {
            return AgentReply::Drop;
        }
        self.stats.scripts.fetch_add(1, Ordering::Relaxed);
        let tar = match self.route(&request) {
            Ok(tar) => tar,
            Err(status) => return AgentReply::Respond(Vec::new(), status),
        };
        let (response, status) = match self
            .fleet
            .with_card(self.msisdn, |c| c.run_script(tar, request.script))
            .flatten()
        {
            Some(response) => (response, ScriptStatus::Ok),
            None => (Vec::new(), ScriptStatus::UnknownApplication),
        };
        if dropping {
            AgentReply::DropAfter(response, status)
        } else {
            AgentReply::Respond(response, status)
        }
    }
}

impl HttpsHandsets {
    /// Starts the sessions the triggers the card at `msisdn` took ask for (after a packet
    /// reached it).
    pub fn answer_triggers(self: &Arc<Self>, msisdn: &str) {
        let triggers = self
            .fleet
            .with_card(msisdn, |c| c.take_triggers())
            .unwrap_or_default();
        for t in triggers {
            self.stats.triggers.fetch_add(1, Ordering::Relaxed);
            let ignore = self.tls.lock().is_ok_and(|mut tls| {
                if tls.ignore_triggers > 0 {
                    tls.ignore_triggers -= 1;
                    true
                } else {
                    false
                }
            });
            if !ignore {
                self.spawn_session(msisdn.to_string(), t);
            }
        }
    }
}

/// Wraps the fleet for the SMSC simulator: packets go to the cards, and a trigger a card
/// took starts its session.
pub struct TriggeringNetwork(pub Arc<HttpsHandsets>);

impl HandsetNetwork for TriggeringNetwork {
    fn command_packet(&self, msisdn: &str, packet: &[u8]) -> HandsetReply {
        let reply = self.0.fleet.command_packet(msisdn, packet);
        self.0.answer_triggers(msisdn);
        reply
    }

    fn knows(&self, msisdn: &str) -> bool {
        self.0.fleet.knows(msisdn)
    }
}
