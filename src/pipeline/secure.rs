//! secure: builds the script and the SCP80 command packet once, and records it in the store
//! before it is first sent; every later send (retry, restart, another gateway) reuses it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service, ServiceExt};

use super::{JobError, ResolvedJob, SecuredJob, Transports};
use crate::command::build::{build_script, BuildContext, GpProfile};
use crate::command::{CommandType, ErrorCode};
use crate::script::CardClass;
use crate::security::command::encode_command_packet_framed;
use crate::security::{CommandHeader, Counter, KeyIdentifier, PacketFraming};
use crate::store::{SecuredPacket, Store, StoreError};

/// Octets a command packet adds around its script, at most: CPL, CHL, SPI..PCNTR (13), a
/// 16-octet CC and 15 octets of padding.
pub const PACKET_OVERHEAD: usize = 2 + 1 + 13 + 16 + 15;

/// The layer.
#[derive(Clone)]
pub struct SecureLayer {
    store: Arc<dyn Store>,
    transports: Arc<Transports>,
}

impl SecureLayer {
    /// Over a store; the transports say how large a packet may be.
    pub fn new(store: Arc<dyn Store>, transports: Arc<Transports>) -> Self {
        Self { store, transports }
    }
}

impl<S> Layer<S> for SecureLayer {
    type Service = Secure<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Secure {
            inner,
            store: self.store.clone(),
            transports: self.transports.clone(),
        }
    }
}

/// The service.
#[derive(Clone)]
pub struct Secure<S> {
    inner: S,
    store: Arc<dyn Store>,
    transports: Arc<Transports>,
}

fn fail(code: ErrorCode, message: impl Into<String>) -> JobError {
    JobError::Fail {
        code,
        message: message.into(),
    }
}

/// The uploaded applet an APP_INSTALL names (`data.parameters.appletId`).
pub fn requested_applet(req: &crate::command::OtaCommandRequest) -> Option<&str> {
    if req.command_type != CommandType::AppInstall {
        return None;
    }
    req.data.parameters.as_ref()?.get("appletId")?.as_str()
}

/// The GlobalPlatform settings (`defaults.gp`) of the profile a card is linked to; the
/// default without a profile or without `gp`. The inner error names the profile and field of
/// a stored value that does not read (profiles are checked when created).
pub async fn card_gp(
    store: &dyn Store,
    account_id: &str,
    iccid: &str,
) -> Result<Result<GpProfile, String>, StoreError> {
    // One read: the card's profile itself (a profile only links cards of its own account).
    let profile = store
        .profile_of_card(iccid)
        .await?
        .filter(|p| p.account_id == account_id);
    Ok(match profile {
        Some(p) => match &p.defaults.gp {
            Some(gp) => GpProfile::from_json(gp)
                .map_err(|(field, problem)| format!("profile {}: {field}: {problem}", p.id)),
            None => Ok(GpProfile::default()),
        },
        None => Ok(GpProfile::default()),
    })
}

/// The card class a card's attributes ask for (`cardClass`: `gsm` or `uicc`, default UICC).
pub fn card_class(attributes: &std::collections::BTreeMap<String, String>) -> CardClass {
    match attributes
        .get("cardClass")
        .or_else(|| attributes.get("CARD_CLASS"))
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        Some("gsm") | Some("sim") | Some("a0") => CardClass::Gsm,
        _ => CardClass::Uicc,
    }
}

async fn secure(
    store: &dyn Store,
    transports: &Transports,
    mut job: ResolvedJob,
) -> Result<SecuredJob, JobError> {
    if let Some(packet) = job.record.secured.clone() {
        return Ok(SecuredJob {
            resolved: job,
            packet,
        });
    }
    let sec = job.security;
    let req = &job.request;
    let card = &job.card;
    let key_set = &job.key_set;
    let keys = &job.keys;
    let counter = job.counter;
    let msisdn = card.msisdn.clone().ok_or_else(|| {
        fail(
            ErrorCode::InvalidState,
            format!("card {} has no MSISDN to send to", card.iccid),
        )
    })?;
    let applet = match requested_applet(req) {
        Some(id) => Some(
            store
                .applet(&job.record.account_id, id)
                .await?
                .ok_or_else(|| {
                    fail(
                        ErrorCode::InvalidState,
                        format!("data.parameters.appletId: applet {id} not found"),
                    )
                })?
                .content,
        ),
        None => None,
    };
    let gp = card_gp(store, &job.record.account_id, &card.iccid)
        .await?
        .map_err(|e| fail(ErrorCode::InvalidState, e))?;
    let ctx = BuildContext {
        card_class: card_class(&card.attributes),
        key_set,
        applet: applet.as_deref(),
        max_script_len: transports.max_script_len(&job.record.transport),
        gp,
    };
    let built = build_script(req, &ctx, &mut rand::thread_rng()).map_err(|e| {
        fail(
            ErrorCode::InvalidState,
            format!("cannot build the script: {e}"),
        )
    })?;
    let header = CommandHeader {
        spi: sec.spi,
        kic: KeyIdentifier(sec.kic),
        kid: KeyIdentifier(sec.kid),
        tar: sec.tar,
        counter: Counter::new(counter)
            .map_err(|e| fail(ErrorCode::SecurityError, e.to_string()))?,
    };
    // Framed for the transport the route layer will pick (CAT_TP puts CPI and a BER CPL in
    // the RC/CC input).
    let framing = match transports.packet_format(&job.record.transport) {
        otagw_transport::PacketFormat::CatTp => PacketFraming::CatTp,
        otagw_transport::PacketFormat::Sms => PacketFraming::Sms,
    };
    let packet = encode_command_packet_framed(&header, keys, &built.script, framing)
        .map_err(|e| fail(ErrorCode::SecurityError, e.to_string()))?;
    let secured = SecuredPacket {
        packet,
        counter,
        key_version: key_set.version,
        msisdn,
        tar: sec.tar,
        spi: sec.spi.to_bytes(),
        kic: sec.kic,
        kid: sec.kid,
        pending_keys: built.new_keys.map(|(_, k)| k),
    };
    let now = job.clock.now_ms();
    let recorded = store
        .record_secured(
            &job.record.account_id,
            &job.record.id,
            &job.owner,
            &secured,
            now,
        )
        .await?;
    if !recorded {
        return Err(JobError::Skipped(
            "no longer pending (cancelled or taken over) before it was secured".into(),
        ));
    }
    job.record.secured = Some(secured.clone());
    Ok(SecuredJob {
        resolved: job,
        packet: secured,
    })
}

impl<S> Service<ResolvedJob> for Secure<S>
where
    S: Service<SecuredJob, Error = JobError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = JobError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, JobError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, job: ResolvedJob) -> Self::Future {
        let store = self.store.clone();
        let transports = self.transports.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            let job = secure(store.as_ref(), &transports, job).await?;
            inner.oneshot(job).await
        })
    }
}
