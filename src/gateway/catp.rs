//! The gateway's side of the CAT_TP push: secure the TS 102 226 push commands for a card with
//! its keys from the store and send them over the SMS transport.
//!
//! The push reuses the command's security (SPI, KIc, KID and counter value) with two changes:
//! the counter is "present, not checked" (so the push does not move the card's counter past the
//! command that follows it on the link, which was secured with that counter) and no PoR is
//! asked for (the link coming up is the answer). It goes to the TAR configured as `push_tar`
//! (the ISD, 000000, by default).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use otagw_catp::push::PushRequest;
use otagw_catp::LinkPusher;
use otagw_transport::{
    BoxFuture, MessageId, OutboundMessage, Payload, SendOptions, Transport, TransportError,
};

use crate::pipeline::resolve::scp80_keys;
use crate::security::command::{cattp_command_to_two_octet_form, encode_command_packet};
use crate::security::{
    CommandHeader, CommandPacketView, Counter, CounterMode, PorRequirement, Spi, Tar,
};
use crate::store::Store;

/// Secures pushes with the store's keys and sends them through an SMS transport.
pub struct SmsPusher {
    store: Arc<dyn Store>,
    sms: Arc<dyn Transport>,
    push_tar: Tar,
    next_id: AtomicU64,
}

impl SmsPusher {
    /// Over a store and the transport pushes go out on.
    pub fn new(store: Arc<dyn Store>, sms: Arc<dyn Transport>, push_tar: Tar) -> Self {
        Self {
            store,
            sms,
            push_tar,
            // Apart from the gateway's command ids (clock << 16): nothing maps these to commands.
            next_id: AtomicU64::new(1 << 63),
        }
    }

    /// The push SMS for `message` (a CAT_TP-framed command packet).
    pub async fn build(
        &self,
        message: &OutboundMessage,
        request: &PushRequest,
    ) -> Result<OutboundMessage, TransportError> {
        let rejected = |what: String| TransportError::Rejected(format!("push: {what}"));
        let Payload::SecuredPacket {
            packet, counter, ..
        } = &message.payload
        else {
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
            por: PorRequirement::None,
            ..view.spi
        };
        let keys = scp80_keys(&spi, view.kic.0, view.kid.0, &kic_set, &kid_set)
            .map_err(|e| rejected(e.to_string()))?;
        let header = CommandHeader {
            spi,
            kic: view.kic,
            kid: view.kid,
            tar: self.push_tar,
            counter: Counter::from_bytes(*counter),
        };
        let data = request.encode().map_err(|e| rejected(e.to_string()))?;
        let packet =
            encode_command_packet(&header, &keys, &data).map_err(|e| rejected(e.to_string()))?;
        Ok(OutboundMessage {
            id: MessageId(self.next_id.fetch_add(1, Ordering::Relaxed)),
            destination: message.destination.clone(),
            payload: Payload::SecuredPacket {
                packet,
                tar: self.push_tar,
                counter: *counter,
            },
            options: SendOptions {
                validity_minutes: message.options.validity_minutes,
                delivery_report: false,
                sequential_segments: false,
            },
        })
    }
}

impl LinkPusher for SmsPusher {
    fn push<'a>(
        &'a self,
        message: &'a OutboundMessage,
        request: &'a PushRequest,
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            let push = self.build(message, request).await?;
            self.sms.send(push).await
        })
    }
}
