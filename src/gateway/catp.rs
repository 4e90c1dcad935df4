//! The gateway's side of the CAT_TP push: secure the TS 102 226 push commands for a card with
//! its keys from the store and send them over the SMS transport.
//!
//! The push takes the command's SPI, KIc and KID, and a counter of its own reserved from the
//! store (a counter value is never used twice), with two changes: the counter is "present, not
//! checked" (the card does not move its counter on it, TS 102 225 clause 5.1.1, so the command
//! that follows on the link, secured earlier with a lower counter, is still accepted) and no
//! PoR is asked for (the link coming up is the answer). It goes to the TAR configured as
//! `push_tar` (the ISD's RAM application, 000000, by default): TS 102 226 clause 9 adds PUSH
//! to the RFM and RAM command sets.

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
    CommandHeader, CommandPacketView, Counter, CounterMode, Integrity, PorRequirement, Spi, Tar,
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
            por: PorRequirement::None,
            ..view.spi
        };
        let keys = scp80_keys(&spi, view.kic.0, view.kid.0, &kic_set, &kid_set)
            .map_err(|e| rejected(e.to_string()))?;
        // The counter belongs to the key set securing the packet: the KID's with integrity.
        let version = if spi.integrity == Integrity::None {
            view.kic.version()
        } else {
            view.kid.version()
        };
        let counter = self
            .store
            .reserve_counter(iccid, version)
            .await
            .map_err(|e| TransportError::NotConnected(format!("store: {e}")))?;
        let counter = Counter::new(counter).map_err(|e| rejected(e.to_string()))?;
        let header = CommandHeader {
            spi,
            kic: view.kic,
            kid: view.kid,
            tar: self.push_tar,
            counter,
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
                counter: counter.to_bytes(),
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
