//! The gateway's side of the CAT_TP push: secure the TS 102 226 push commands for a card with
//! its keys from the store and send them over the SMS transport.
//!
//! The push takes the command's SPI, KIc and KID, and a counter of its own reserved from the
//! store (a counter value is never used twice), with two changes: the counter is "present, not
//! checked" (the card does not move its counter on it, TS 102 225 clause 5.1.1, so the command
//! that follows on the link, secured earlier with a lower counter, is still accepted) and the
//! PoR is asked for on error only (SPI octet 2 b2b1 = 10): the link coming up is the answer to
//! a push taken, and a card that refuses it (a PUSH it cannot read, 6A80; a security error)
//! says so. With the SMS dispatcher attached ([`SmsPusher::attach`]) the push waits there for
//! that PoR like a command, and an error PoR fails the commands waiting for the card's link,
//! naming the card's status, instead of leaving them to time out. It goes to the TAR
//! configured as `push_tar` (the ISD's RAM application, 000000, by default): TS 102 226
//! clause 9 adds PUSH to the RFM and RAM command sets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use otagw_catp::push::{apn_labels, PushRequest};
use otagw_catp::{LinkPusher, PushRefusal};
use otagw_transport::{
    BoxFuture, MessageId, OutboundMessage, Payload, SendOptions, Transport, TransportError,
};

use crate::correlation::PendingCommand;
use crate::dispatch::{OtaOutcome, SecuredCommand};
use crate::gateway::outcome::sw_is_success;
use crate::pipeline::resolve::scp80_keys;
use crate::pipeline::SharedDispatcher;
use crate::script::parse_compact_response;
use crate::security::command::{cattp_command_to_two_octet_form, encode_command_packet};
use crate::security::{
    CommandHeader, CommandPacketView, Counter, CounterMode, DecodedResponse, PorRequirement,
    PorStatus, Spi, Tar,
};
use crate::store::Store;

/// The push fields a profile may set for its cards (`defaults.catp`, a JSON object); each
/// replaces the `[catp]` setting of the same meaning.
pub const PROFILE_CATP_FIELDS: &[&str] = &[
    "bearerType",
    "bearerParameters",
    "bufferSize",
    "apn",
    "address",
    "cattpPort",
    "pushTar",
];

/// The push for a card of a profile with `defaults.catp` = `catp`, and its TAR: `base` and
/// `tar` with the profile's fields in their place. The error names the field
/// (`catp.bufferSize`) and the problem.
pub fn push_for_profile(
    base: &PushRequest,
    tar: Tar,
    catp: &serde_json::Value,
) -> Result<(PushRequest, Tar), (String, String)> {
    let obj = catp
        .as_object()
        .ok_or_else(|| ("catp".to_string(), "must be a JSON object".to_string()))?;
    let mut push = base.clone();
    let mut tar = tar;
    let err = |k: &str, p: &str| (format!("catp.{k}"), p.to_string());
    for (k, v) in obj {
        let text = || v.as_str().ok_or_else(|| err(k, "must be a string"));
        let number = |max: u64| {
            v.as_u64()
                .filter(|n| *n <= max)
                .ok_or_else(|| err(k, &format!("must be a whole number up to {max}")))
        };
        match k.as_str() {
            "bearerType" => push.bip.bearer.bearer_type = number(0xFF)? as u8,
            "bearerParameters" => {
                push.bip.bearer.parameters =
                    hex::decode(text()?).map_err(|_| err(k, "must be hex"))?;
            }
            "bufferSize" => {
                let n = number(u64::from(u16::MAX))? as u16;
                if n == 0 {
                    return Err(err(k, "must be at least 1"));
                }
                push.bip.buffer_size = n;
            }
            "apn" => {
                push.bip.network_access_name =
                    Some(apn_labels(text()?).map_err(|e| err(k, &e.to_string()))?);
            }
            "address" => {
                push.bip.destination = text()?.parse().map_err(|_| {
                    err(
                        k,
                        "must be an IP address and UDP port, e.g. 203.0.113.10:4500",
                    )
                })?;
            }
            "cattpPort" => push.link.destination_port = number(u64::from(u16::MAX))? as u16,
            "pushTar" => {
                let b = hex::decode(text()?).map_err(|_| err(k, "must be 6 hex digits"))?;
                tar = <[u8; 3]>::try_from(b.as_slice())
                    .map_err(|_| err(k, "must be 6 hex digits"))?;
            }
            other => {
                return Err(err(
                    other,
                    &format!("unknown; the fields are {}", PROFILE_CATP_FIELDS.join(", ")),
                ))
            }
        }
    }
    // What the card is sent must encode (lengths fit the PUSH APDUs).
    push.encode()
        .map_err(|e| ("catp".to_string(), e.to_string()))?;
    Ok((push, tar))
}

/// Checks a profile's `defaults.catp` when the profile is created (the error names the field).
pub fn check_profile_catp(catp: &serde_json::Value) -> Result<(), (String, String)> {
    let base = otagw_catp::CatpSettings::default()
        .push_request(std::net::SocketAddr::from(([127, 0, 0, 1], 4500)));
    push_for_profile(&base, [0; 3], catp).map(|_| ())
}

/// What a PoR for a push says against it, if anything: an error status (a security error, TAR
/// unknown, ...) or, with PoR OK, a PUSH answered with an error status word (6A80: data the
/// card could not read). The compact response (TS 102 226 clause 5.1.2) names the PUSH.
pub fn push_refusal(por: &DecodedResponse) -> Option<String> {
    if por.status != PorStatus::Ok {
        return Some(format!(
            "PoR status {:02X} {}",
            por.status.to_byte(),
            por.status.name()
        ));
    }
    let response = parse_compact_response(&por.data).ok()?;
    let sw = response.last()?.sw;
    (!sw_is_success(sw)).then(|| format!("PUSH command {} answered SW {sw:04X}", response.executed))
}

/// Secures pushes with the store's keys and sends them through an SMS transport.
pub struct SmsPusher {
    store: Arc<dyn Store>,
    sms: Arc<dyn Transport>,
    /// The SMS transport's dispatcher, once the gateway runs: pushes go through it so that
    /// their error PoRs are matched.
    dispatcher: OnceLock<SharedDispatcher>,
    push_tar: Tar,
    next_id: AtomicU64,
}

impl SmsPusher {
    /// Over a store and the transport pushes go out on.
    pub fn new(store: Arc<dyn Store>, sms: Arc<dyn Transport>, push_tar: Tar) -> Self {
        Self {
            store,
            sms,
            dispatcher: OnceLock::new(),
            push_tar,
            // Apart from the gateway's command ids (clock << 16): nothing maps these to commands.
            next_id: AtomicU64::new(1 << 63),
        }
    }

    /// Sends pushes through `dispatcher` (the SMS transport's, which owns that transport's
    /// events) from now on, so that the card's error PoR for a push is heard.
    pub fn attach(&self, dispatcher: SharedDispatcher) {
        let _ = self.dispatcher.set(dispatcher);
    }

    /// The push SMS for `message` (a CAT_TP-framed command packet), and what its PoR is
    /// matched against.
    pub async fn build(
        &self,
        message: &OutboundMessage,
        request: &PushRequest,
    ) -> Result<(OutboundMessage, PendingCommand<MessageId>), TransportError> {
        let rejected = |what: String| TransportError::Rejected(format!("push: {what}"));
        let Payload::SecuredPacket { packet, .. } = &message.payload else {
            return Err(rejected("not a secured packet".into()));
        };
        let iccid = message
            .destination
            .iccid
            .as_deref()
            .ok_or_else(|| rejected("no ICCID".into()))?;
        let two = cattp_command_to_two_octet_form(packet).map_err(|e| rejected(e.to_string()))?;
        let view = CommandPacketView::parse(&two).map_err(|e| rejected(e.to_string()))?;
        let key_set = |v: u8| async move {
            self.store
                .key_set(iccid, v)
                .await
                .map_err(|e| TransportError::NotConnected(format!("store: {e}")))?
                .ok_or_else(|| rejected(format!("card {iccid} has no key set version {v}")))
        };
        let kic_set = key_set(view.kic.version()).await?;
        let kid_set = key_set(view.kid.version()).await?;
        let spi = Spi {
            counter: match view.spi.counter {
                CounterMode::NoCounter => CounterMode::NoCounter,
                _ => CounterMode::NotChecked,
            },
            // PoR on error (SPI octet 2 b2b1 = 10): a refusal is heard, a push taken is
            // answered by the link.
            por: PorRequirement::OnError,
            ..view.spi
        };
        let keys = scp80_keys(&spi, view.kic.0, view.kid.0, &kic_set, &kid_set)
            .map_err(|e| rejected(e.to_string()))?;
        let counter = self
            .store
            .reserve_counter(iccid, spi.counter_version(view.kic.0, view.kid.0))
            .await
            .map_err(|e| TransportError::NotConnected(format!("store: {e}")))?;
        let counter = Counter::new(counter).map_err(|e| rejected(e.to_string()))?;
        // The card's profile may set its own push parameters (`defaults.catp`).
        let profile = self
            .store
            .profile_of_card(iccid)
            .await
            .map_err(|e| TransportError::NotConnected(format!("store: {e}")))?;
        let (request, tar) = match profile
            .as_ref()
            .and_then(|p| Some((p.id, p.defaults.catp.as_ref()?)))
        {
            Some((id, catp)) => push_for_profile(request, self.push_tar, catp)
                .map_err(|(f, p)| rejected(format!("profile {id}: {f}: {p}")))?,
            None => (request.clone(), self.push_tar),
        };
        let header = CommandHeader {
            spi,
            kic: view.kic,
            kid: view.kid,
            tar,
            counter,
        };
        let data = request.encode().map_err(|e| rejected(e.to_string()))?;
        let packet =
            encode_command_packet(&header, &keys, &data).map_err(|e| rejected(e.to_string()))?;
        let id = MessageId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let push = SecuredCommand::of_packet(
            id,
            message.destination.clone(),
            packet,
            &header,
            &keys,
            SendOptions {
                validity_minutes: message.options.validity_minutes,
                delivery_report: false,
                sequential_segments: false,
                urgency: message.options.urgency,
            },
        );
        Ok((push.message, push.pending))
    }
}

impl LinkPusher for SmsPusher {
    fn push<'a>(
        &'a self,
        message: &'a OutboundMessage,
        request: &'a PushRequest,
    ) -> BoxFuture<'a, Result<PushRefusal, TransportError>> {
        Box::pin(async move {
            let (push, pending) = self.build(message, request).await?;
            let Some(dispatcher) = self.dispatcher.get().cloned() else {
                self.sms.send(push).await?;
                return Ok(otagw_catp::no_refusal());
            };
            let id = push.id;
            let por = dispatcher.send(push, pending).await?;
            let (tx, refusal) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let mut tx = tx;
                tokio::select! {
                    outcome = por => {
                        if let Ok(OtaOutcome::Por(por, ack)) = outcome {
                            if let Some(why) = push_refusal(&por) {
                                tracing::info!("CAT_TP push {id:?} refused: {why}");
                                let _ = tx.send(why);
                            }
                            // Nothing to record: the network may take it back now.
                            drop(ack);
                        }
                    }
                    // The transport stopped waiting (the link came up, or the wait ended):
                    // the push's PoR, if one still comes, is nobody's.
                    _ = tx.closed() => dispatcher.forget(id),
                }
            });
            Ok(refusal)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otagw_catp::push::{Bearer, BipOpenRequest, CatTpLinkRequest};
    use serde_json::json;

    fn base() -> PushRequest {
        PushRequest {
            bip: BipOpenRequest {
                bearer: Bearer::default_bearer(),
                buffer_size: 1400,
                network_access_name: None,
                destination: "192.0.2.1:4500".parse().expect("addr"),
            },
            link: CatTpLinkRequest {
                destination_port: 4500,
                max_sdu_size: Some(65535),
                identification: Vec::new(),
            },
        }
    }

    #[test]
    fn a_profile_sets_its_push_fields() {
        let (push, tar) = push_for_profile(
            &base(),
            [0, 0, 0],
            &json!({"bearerType": 2, "bearerParameters": "000003000002", "bufferSize": 900,
                    "apn": "fleet.example", "address": "198.51.100.7:4600", "cattpPort": 4601,
                    "pushTar": "B20100"}),
        )
        .expect("valid");
        assert_eq!(tar, [0xB2, 0x01, 0x00]);
        assert_eq!(push.bip.bearer.bearer_type, 2);
        assert_eq!(push.bip.bearer.parameters, vec![0, 0, 3, 0, 0, 2]);
        assert_eq!(push.bip.buffer_size, 900);
        assert_eq!(
            push.bip.network_access_name.as_deref(),
            Some(&b"\x05fleet\x07example"[..])
        );
        assert_eq!(
            push.bip.destination,
            "198.51.100.7:4600".parse().expect("addr")
        );
        assert_eq!(push.link.destination_port, 4601);
        // Nothing set: the gateway's push.
        assert_eq!(
            push_for_profile(&base(), [0, 0, 0], &json!({})).expect("valid"),
            (base(), [0, 0, 0])
        );
    }

    fn por(status: PorStatus, data: &[u8]) -> DecodedResponse {
        DecodedResponse {
            rpl: 0,
            rhl: 10,
            tar: [0, 0, 0],
            counter: Counter::new(7).expect("counter"),
            pcntr: 0,
            status,
            status_name: status.name(),
            rc_cc_ds: crate::security::MacValue::from_slice(&[]).expect("empty"),
            data: data.to_vec(),
            protection: crate::security::PorProtection::UnprotectedError,
            cc_scope: crate::security::CcScope::SmsUdh,
        }
    }

    #[test]
    fn what_a_pushs_por_says_against_it() {
        assert_eq!(
            push_refusal(&por(PorStatus::TarUnknown, &[])).as_deref(),
            Some("PoR status 09 tar_unknown")
        );
        // PoR OK, the second PUSH refused with 6A80 (data it could not read).
        assert_eq!(
            push_refusal(&por(PorStatus::Ok, &[0x02, 0x6A, 0x80])).as_deref(),
            Some("PUSH command 2 answered SW 6A80")
        );
        // A PoR that reports success, or nothing readable, is no refusal.
        assert_eq!(push_refusal(&por(PorStatus::Ok, &[0x02, 0x90, 0x00])), None);
        assert_eq!(push_refusal(&por(PorStatus::Ok, &[])), None);
    }

    #[test]
    fn bad_fields_are_named() {
        for (v, field) in [
            (json!([]), "catp"),
            (json!({"bufferSize": 0}), "catp.bufferSize"),
            (json!({"bufferSize": 70000}), "catp.bufferSize"),
            (json!({"bearerType": "2"}), "catp.bearerType"),
            (json!({"bearerParameters": "0g"}), "catp.bearerParameters"),
            (json!({"apn": "a..b"}), "catp.apn"),
            (json!({"address": "host:1"}), "catp.address"),
            (json!({"pushTar": "B201"}), "catp.pushTar"),
            (json!({"port": 1}), "catp.port"),
            (json!({"bearerParameters": "00".repeat(240)}), "catp"),
        ] {
            let e = push_for_profile(&base(), [0, 0, 0], &v).expect_err("refused");
            assert_eq!(e.0, field, "{v}: {e:?}");
        }
    }
}
