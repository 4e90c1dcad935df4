//! Runtime glue: send secured commands over a [`Transport`] and resolve each with the card's
//! PoR (matched by [`PorCorrelator`]) or with the transport's failure.
//!
//! A PoR that fails verification is counted as rejected and the command keeps waiting (the real
//! PoR may follow); a PoR that matches nothing is counted as unmatched. Neither is ever taken
//! for the card's answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use otagw_transport::{
    DeliveryEvent, EventSink, InboundAck, MessageId, OutboundMessage, Transport, TransportError,
};
use tokio::sync::oneshot;

use crate::correlation::{CorrelationError, PendingCommand, PorCorrelator};
use crate::security::{CcScope, DecodedResponse};

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OtaOutcome {
    /// The card's PoR, verified, with the network's acknowledgement of it: whoever records
    /// the PoR drops the acknowledgement after the record is durable.
    Por(DecodedResponse, InboundAck),
    /// The transport gave up on it.
    Failed(TransportError),
}

/// Counts of what came back that resolved nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchStats {
    /// PoRs that failed verification against a pending command (bad CC, wrong keys, ...).
    pub rejected_pors: u64,
    /// PoRs matching no pending command.
    pub unmatched_pors: u64,
    /// Delivery reports seen.
    pub delivered: u64,
}

/// What the dispatcher passes on besides resolving commands: network acknowledgements and
/// PoRs it could not match itself (the gateway looks those up in its store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchNote {
    /// The network took a message.
    Accepted {
        /// The message.
        id: MessageId,
        /// Its network references.
        network_refs: Vec<String>,
    },
    /// The network reports a message reached the handset.
    Delivered {
        /// The message.
        id: MessageId,
    },
    /// A PoR that matched no command waiting here (or failed to verify with their keys).
    UnmatchedPor {
        /// The card's MSISDN.
        from: String,
        /// The PoR from RPL on.
        packet: Vec<u8>,
        /// What its CC covers.
        scope: CcScope,
        /// Why it did not match here.
        reason: String,
        /// The network's acknowledgement, held until the PoR is recorded or given up.
        ack: InboundAck,
    },
    /// A command packet a card sent on its own (a subscription notification).
    CardPacket {
        /// The card's MSISDN.
        from: String,
        /// The packet from CPL on (SMS framing).
        packet: Vec<u8>,
        /// The network's acknowledgement, held until the packet is taken.
        ack: InboundAck,
    },
}

#[derive(Default)]
struct Inner {
    observer: Mutex<Option<tokio::sync::mpsc::UnboundedSender<DispatchNote>>>,
    correlator: Mutex<PorCorrelator<MessageId>>,
    waiters: Mutex<HashMap<MessageId, oneshot::Sender<OtaOutcome>>>,
    /// Commands that end on their delivery report (SPI: no PoR, or PoR on error only).
    delivery_waiters: Mutex<HashMap<MessageId, oneshot::Sender<()>>>,
    rejected: AtomicU64,
    unmatched: AtomicU64,
    delivered: AtomicU64,
    last_rejection: Mutex<Option<String>>,
    /// The transport frames PoRs for CAT_TP (their RC/CC covers RPI and the BER RPL).
    cattp: bool,
}

impl Inner {
    fn note(&self, note: DispatchNote) {
        if let Ok(o) = self.observer.lock() {
            if let Some(tx) = o.as_ref() {
                let _ = tx.send(note);
            }
        }
    }

    fn resolve(&self, id: MessageId, outcome: OtaOutcome) {
        let waiter = self.waiters.lock().ok().and_then(|mut w| w.remove(&id));
        if let Some(w) = waiter {
            let _ = w.send(outcome);
        }
    }
}

impl EventSink for Inner {
    fn deliver(&self, event: DeliveryEvent) {
        match event {
            DeliveryEvent::ResponsePacket {
                from,
                packet,
                sms_framing,
                ack,
            } => {
                let scope = if sms_framing {
                    CcScope::SmsUdh
                } else if self.cattp {
                    CcScope::CatTp
                } else {
                    CcScope::FromRpl
                };
                let matched = match self.correlator.lock() {
                    Ok(mut c) => c.on_response(&from, &packet, scope),
                    Err(_) => return,
                };
                match matched {
                    Ok((command, decoded)) => {
                        self.resolve(command.id, OtaOutcome::Por(decoded, ack))
                    }
                    Err(e @ CorrelationError::Security { .. }) => {
                        self.rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("PoR rejected: {e}");
                        if let Ok(mut l) = self.last_rejection.lock() {
                            *l = Some(e.to_string());
                        }
                        self.note(DispatchNote::UnmatchedPor {
                            from,
                            packet,
                            scope,
                            reason: e.to_string(),
                            ack,
                        });
                    }
                    Err(e) => {
                        self.unmatched.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("PoR unmatched here: {e}");
                        self.note(DispatchNote::UnmatchedPor {
                            from,
                            packet,
                            scope,
                            reason: e.to_string(),
                            ack,
                        });
                    }
                }
            }
            DeliveryEvent::Failed { id, error } => {
                if let Ok(mut c) = self.correlator.lock() {
                    c.remove(&id);
                }
                self.resolve(id, OtaOutcome::Failed(error));
            }
            DeliveryEvent::Delivered { id } => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                let waiter = self
                    .delivery_waiters
                    .lock()
                    .ok()
                    .and_then(|mut w| w.remove(&id));
                if let Some(w) = waiter {
                    let _ = w.send(());
                }
                self.note(DispatchNote::Delivered { id });
            }
            DeliveryEvent::Accepted { id, network_refs } => {
                self.note(DispatchNote::Accepted { id, network_refs });
            }
            DeliveryEvent::CommandPacket { from, packet, ack } => {
                self.note(DispatchNote::CardPacket { from, packet, ack });
            }
        }
    }
}

/// Sends commands and waits for their PoRs.
pub struct OtaDispatcher {
    transport: Arc<dyn Transport>,
    inner: Arc<Inner>,
}

impl OtaDispatcher {
    /// Takes over the transport's event sink.
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        let inner = Arc::new(Inner {
            cattp: transport.packet_format() == otagw_transport::PacketFormat::CatTp,
            ..Inner::default()
        });
        transport.set_event_sink(inner.clone());
        Self { transport, inner }
    }

    /// Passes delivery notes and unmatched PoRs to `observer` from now on.
    pub fn set_observer(&self, observer: tokio::sync::mpsc::UnboundedSender<DispatchNote>) {
        if let Ok(mut o) = self.inner.observer.lock() {
            *o = Some(observer);
        }
    }

    /// The transport this dispatcher sends over.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// Sends `message` (whose payload is the secured packet of `pending`) and returns a receiver
    /// for its outcome. The command waits for its PoR from the moment it is handed over.
    pub async fn send(
        &self,
        message: OutboundMessage,
        pending: PendingCommand<MessageId>,
    ) -> Result<oneshot::Receiver<OtaOutcome>, TransportError> {
        let id = message.id;
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.inner.waiters.lock() {
            w.insert(id, tx);
        }
        if let Ok(mut c) = self.inner.correlator.lock() {
            c.register(pending);
        }
        if let Err(e) = self.transport.send(message).await {
            if let Ok(mut c) = self.inner.correlator.lock() {
                c.remove(&id);
            }
            if let Ok(mut w) = self.inner.waiters.lock() {
                w.remove(&id);
            }
            return Err(e);
        }
        Ok(rx)
    }

    /// Waits for the PoR of a packet sent before (by an earlier run or another gateway)
    /// without sending anything.
    pub fn expect(&self, pending: PendingCommand<MessageId>) -> oneshot::Receiver<OtaOutcome> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.inner.waiters.lock() {
            w.insert(pending.id, tx);
        }
        if let Ok(mut c) = self.inner.correlator.lock() {
            c.register(pending);
        }
        rx
    }

    /// A receiver resolved when the network reports `id` delivered to the handset. Register
    /// it before sending: the report may come at once.
    pub fn on_delivered(&self, id: MessageId) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.inner.delivery_waiters.lock() {
            w.insert(id, tx);
        }
        rx
    }

    /// Stops waiting for a command (timed out at the caller).
    pub fn forget(&self, id: MessageId) {
        if let Ok(mut c) = self.inner.correlator.lock() {
            c.remove(&id);
        }
        if let Ok(mut w) = self.inner.waiters.lock() {
            w.remove(&id);
        }
        if let Ok(mut w) = self.inner.delivery_waiters.lock() {
            w.remove(&id);
        }
    }

    /// Commands still waiting.
    pub fn pending(&self) -> usize {
        self.inner.correlator.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// What came back unresolved.
    pub fn stats(&self) -> DispatchStats {
        DispatchStats {
            rejected_pors: self.inner.rejected.load(Ordering::Relaxed),
            unmatched_pors: self.inner.unmatched.load(Ordering::Relaxed),
            delivered: self.inner.delivered.load(Ordering::Relaxed),
        }
    }

    /// The last rejected PoR's reason, for reports.
    pub fn last_rejection(&self) -> Option<String> {
        self.inner
            .last_rejection
            .lock()
            .ok()
            .and_then(|l| l.clone())
    }
}

/// A command secured for one card: the message to hand to a transport, and the record the
/// dispatcher matches its PoR against. Every path that sends a secured packet (commands and
/// their resends, campaigns, SCP81 triggers, CAT_TP pushes) builds one here, so the packet,
/// its TAR and counter, and the PoR's keys always agree.
#[derive(Debug)]
pub struct SecuredCommand {
    /// What the transport carries.
    pub message: OutboundMessage,
    /// What the PoR is matched against.
    pub pending: PendingCommand<MessageId>,
}

impl SecuredCommand {
    /// A packet secured under `header` and `keys` (a resend passes the packet as recorded:
    /// never secured again, so never under another counter).
    pub fn of_packet(
        id: MessageId,
        destination: otagw_transport::Destination,
        packet: Vec<u8>,
        header: &crate::security::CommandHeader,
        keys: &crate::security::Scp80Keys,
        options: otagw_transport::SendOptions,
    ) -> Self {
        SecuredCommand {
            pending: PendingCommand {
                id,
                msisdn: destination.msisdn.clone(),
                tar: header.tar,
                counter: header.counter,
                spi: header.spi,
                keys: keys.clone(),
            },
            message: OutboundMessage {
                id,
                destination,
                payload: otagw_transport::Payload::SecuredPacket {
                    packet,
                    tar: header.tar,
                    counter: header.counter.to_bytes(),
                },
                options,
            },
        }
    }

    /// What ends it, as its SPI asks (TS 102 225 5.1.1, b2b1 of the second octet): a PoR,
    /// delivery, or delivery then a quiet wait. `None`: the reserved coding 11.
    pub fn ending(&self) -> Option<crate::security::PorEnding> {
        self.pending.spi.por.ending()
    }
}

/// Secures `data` (a remote APDU script) with `header` and `keys`, framed for the transport
/// (SMS-PP or CAT_TP), for `destination`.
pub fn secure_command(
    id: MessageId,
    destination: otagw_transport::Destination,
    header: &crate::security::CommandHeader,
    keys: &crate::security::Scp80Keys,
    data: &[u8],
    framing: crate::security::command::PacketFraming,
    options: otagw_transport::SendOptions,
) -> Result<SecuredCommand, crate::security::SecurityError> {
    let packet =
        crate::security::command::encode_command_packet_framed(header, keys, data, framing)?;
    Ok(SecuredCommand::of_packet(
        id,
        destination,
        packet,
        header,
        keys,
        options,
    ))
}
