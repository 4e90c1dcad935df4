//! The CAT_TP [`Transport`]: a command for a card goes as one SDU on the card's link; a card
//! without a link is first asked to open one by a push (TS 102 226 clause 9) that the gateway
//! secures and sends over SMS ([`LinkPusher`]). PoRs coming back on the link are reported as
//! [`DeliveryEvent::ResponsePacket`] with the card's MSISDN, so the gateway's correlator matches
//! them (MSISDN + TAR + counter) as it does for SMS.
//!
//! Links are keyed by the ICCID the card sends in its SYN. Only cards the transport has a
//! message for (whose ICCID came from the store with the command) are kept; a SYN with an
//! unknown or missing identification is reset with reason 1 (illegal parameters).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use otagw_transport::{
    BoxFuture, DeliveryEvent, EventSink, InboundAck, MessageId, OutboundMessage, PacketFormat,
    Payload, Transport, TransportError,
};
use tokio::sync::oneshot;

use crate::conn::{Config, SendError};
use crate::driver::{Endpoint, EndpointStats, LinkEvent};
use crate::framing;
use crate::pdu::reason;
use crate::push::{Bearer, BipOpenRequest, CatTpLinkRequest, PushRequest};

/// What the card may still say about a push it was sent: resolves with the card's refusal
/// (its PoR on error names the status, TS 102 225 SPI "PoR on error"), or fails (sender
/// dropped) when nothing more will come. The transport drops it when it stops waiting, which
/// tells the pusher to stop listening.
pub type PushRefusal = oneshot::Receiver<String>;

/// Asks a card to open its BIP channel and CAT_TP link: secures `request` for the card of
/// `message` (its keys, a counter) and sends it over SMS. Implemented by the gateway, which
/// holds the keys; the transport knows none.
pub trait LinkPusher: Send + Sync {
    fn push<'a>(
        &'a self,
        message: &'a OutboundMessage,
        request: &'a PushRequest,
    ) -> BoxFuture<'a, Result<PushRefusal, TransportError>>;
}

/// A [`PushRefusal`] that never resolves to a refusal (for pushers that hear nothing back).
pub fn no_refusal() -> PushRefusal {
    oneshot::channel().1
}

/// Settings of the CAT_TP transport.
#[derive(Debug, Clone)]
pub struct CatpSettings {
    /// UDP address the endpoint binds.
    pub listen: SocketAddr,
    /// Address the cards are told to reach (the push's data destination address); the bound
    /// address when None (fine on loopback, wrong behind NAT).
    pub advertised: Option<SocketAddr>,
    /// CAT_TP port the cards are told to connect to (the PDU header's destination port).
    pub cattp_port: u16,
    /// Push: bearer, buffer size, network access name.
    pub bearer: Bearer,
    pub buffer_size: u16,
    pub network_access_name: Option<Vec<u8>>,
    /// Link parameters (window, retransmission, keep-alive, max PDU/SDU sizes).
    pub link: Config,
    /// Links held at most.
    pub max_links: usize,
    /// How long to wait for the link after a push.
    pub link_timeout: Duration,
    /// Pushes per message before it fails with TIMEOUT.
    pub push_attempts: u32,
    /// Largest command packet accepted.
    pub max_packet_len: usize,
}

impl CatpSettings {
    /// The push these settings ask cards for, with `destination` as the address to reach.
    pub fn push_request(&self, destination: SocketAddr) -> PushRequest {
        PushRequest {
            bip: BipOpenRequest {
                bearer: self.bearer.clone(),
                buffer_size: self.buffer_size,
                network_access_name: self.network_access_name.clone(),
                destination,
            },
            link: CatTpLinkRequest {
                destination_port: self.cattp_port,
                max_sdu_size: Some(self.link.max_sdu_size),
                // Per card: its ICCID ([`CatpTransport`] fills it in before each push).
                identification: Vec::new(),
            },
        }
    }
}

impl Default for CatpSettings {
    fn default() -> Self {
        CatpSettings {
            listen: SocketAddr::from(([0, 0, 0, 0], 4500)),
            advertised: None,
            cattp_port: 4500,
            bearer: Bearer::default_bearer(),
            buffer_size: 1400,
            network_access_name: None,
            link: Config::default(),
            max_links: 10_000,
            link_timeout: Duration::from_secs(30),
            push_attempts: 2,
            max_packet_len: 65_000,
        }
    }
}

/// Counters of the transport (the endpoint's are in [`CatpTransport::endpoint_stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatpStats {
    pub pushes: u64,
    pub links_accepted: u64,
    /// Links reset because the SYN's identification named no card we send to.
    pub links_refused: u64,
    pub packets_sent: u64,
    pub pors: u64,
    /// SDUs from cards that are not response packets.
    pub malformed_sdus: u64,
}

impl Links {
    /// Drops what we keep about a card with no link and nothing waiting for one (so the map
    /// does not grow with every card ever reached; its next message adds it again).
    fn forget_card_if_idle(&mut self, iccid: &str) {
        let waiting = self
            .waiting
            .get_mut(iccid)
            .map(|w| {
                w.retain(|t| !t.is_closed());
                !w.is_empty()
            })
            .unwrap_or(false);
        if !waiting {
            self.waiting.remove(iccid);
            if !self.by_iccid.contains_key(iccid) {
                self.msisdn.remove(iccid);
            }
        }
    }
}

#[derive(Default)]
struct Links {
    by_iccid: HashMap<String, SocketAddr>,
    by_addr: HashMap<SocketAddr, String>,
    /// Cards we have (had) messages for: ICCID -> MSISDN.
    msisdn: HashMap<String, String>,
    /// Messages waiting for a card's link (or for the card's refusal of the push).
    waiting: HashMap<String, Vec<oneshot::Sender<Result<SocketAddr, TransportError>>>>,
    /// Packets on a link not yet acknowledged by the card: endpoint SDU number -> (link, message).
    unacked: HashMap<u64, (SocketAddr, MessageId)>,
    /// SDUs acknowledged before their sender recorded them (the ACK raced the send's reply).
    acked_early: HashSet<u64>,
}

struct Inner {
    endpoint: Endpoint,
    pusher: Arc<dyn LinkPusher>,
    sink: Mutex<Option<Arc<dyn EventSink>>>,
    links: Mutex<Links>,
    settings: CatpSettings,
    push_request: PushRequest,
    pushes: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    sent: AtomicU64,
    pors: AtomicU64,
    malformed: AtomicU64,
}

impl Inner {
    fn emit(&self, e: DeliveryEvent) {
        let sink = self.sink.lock().ok().and_then(|s| s.clone());
        if let Some(s) = sink {
            s.deliver(e);
        }
    }

    fn on_event(&self, e: LinkEvent) {
        match e {
            LinkEvent::Connected { peer, params } => {
                let iccid = params.iccid();
                let waiters = {
                    let Ok(mut l) = self.links.lock() else { return };
                    match iccid {
                        Some(iccid) if l.msisdn.contains_key(&iccid) => {
                            if let Some(old) = l.by_iccid.insert(iccid.clone(), peer) {
                                if old != peer {
                                    l.by_addr.remove(&old);
                                }
                            }
                            l.by_addr.insert(peer, iccid.clone());
                            Some(l.waiting.remove(&iccid).unwrap_or_default())
                        }
                        _ => None,
                    }
                };
                match waiters {
                    Some(w) => {
                        self.accepted.fetch_add(1, Ordering::Relaxed);
                        for tx in w {
                            let _ = tx.send(Ok(peer));
                        }
                    }
                    None => {
                        self.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("CAT_TP link from {peer}: identification names no card we send to; reset");
                        self.endpoint.close(peer, reason::ILLEGAL_PARAMETERS);
                    }
                }
            }
            LinkEvent::Sdu { peer, data } => {
                let msisdn = self.links.lock().ok().and_then(|l| {
                    let iccid = l.by_addr.get(&peer)?;
                    l.msisdn.get(iccid).cloned()
                });
                let Some(from) = msisdn else {
                    self.malformed.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                match framing::from_cattp(framing::RPI, &data) {
                    Ok(packet) => {
                        self.pors.fetch_add(1, Ordering::Relaxed);
                        self.emit(DeliveryEvent::ResponsePacket {
                            from,
                            packet,
                            sms_framing: false,
                            // CAT_TP acknowledges at its own layer, on receipt.
                            ack: InboundAck::none(),
                        });
                    }
                    Err(e) => {
                        self.malformed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("CAT_TP SDU from {peer} is not a response packet: {e}");
                    }
                }
            }
            LinkEvent::Acked { peer, sdu } => {
                let id = self.links.lock().ok().and_then(|mut l| {
                    let id = l.unacked.remove(&sdu).map(|(_, id)| id);
                    if id.is_none() {
                        l.acked_early.insert(sdu);
                    }
                    id
                });
                if let Some(id) = id {
                    tracing::debug!("CAT_TP link {peer}: message {id} acknowledged");
                    self.emit(DeliveryEvent::Delivered { id });
                }
            }
            LinkEvent::Closed { peer, reason } => {
                tracing::debug!("CAT_TP link {peer} closed: {reason:?}");
                if let Ok(mut l) = self.links.lock() {
                    // Never acknowledged: no Delivered (the message times out or is resent).
                    l.unacked.retain(|_, (addr, _)| *addr != peer);
                    if let Some(iccid) = l.by_addr.remove(&peer) {
                        if l.by_iccid.get(&iccid) == Some(&peer) {
                            l.by_iccid.remove(&iccid);
                        }
                        l.forget_card_if_idle(&iccid);
                    }
                }
            }
        }
    }

    fn link_of(&self, iccid: &str) -> Option<SocketAddr> {
        self.links.lock().ok()?.by_iccid.get(iccid).copied()
    }

    fn forget_link(&self, iccid: &str, addr: SocketAddr) {
        if let Ok(mut l) = self.links.lock() {
            if l.by_iccid.get(iccid) == Some(&addr) {
                l.by_iccid.remove(iccid);
            }
            l.by_addr.remove(&addr);
        }
    }

    /// Fails every message waiting for the card's link with `error` (the card refused the
    /// push: no link will come of it).
    fn refuse_waiters(&self, iccid: &str, error: &TransportError) {
        let waiters = self
            .links
            .lock()
            .ok()
            .and_then(|mut l| l.waiting.remove(iccid))
            .unwrap_or_default();
        for tx in waiters {
            let _ = tx.send(Err(error.clone()));
        }
    }

    /// Registers a wait for the card's link; true if a push is already out for it.
    #[allow(clippy::type_complexity)]
    fn wait_for_link(
        &self,
        iccid: &str,
    ) -> Option<(oneshot::Receiver<Result<SocketAddr, TransportError>>, bool)> {
        let mut l = self.links.lock().ok()?;
        let (tx, rx) = oneshot::channel();
        let list = l.waiting.entry(iccid.to_string()).or_default();
        list.retain(|t| !t.is_closed());
        let pushed = !list.is_empty();
        list.push(tx);
        Some((rx, pushed))
    }

    async fn deliver(self: Arc<Self>, message: OutboundMessage, iccid: String, packet: Vec<u8>) {
        let id = message.id;
        let fail = |error: TransportError| DeliveryEvent::Failed { id, error };
        for attempt in 0..=self.settings.push_attempts {
            if let Some(addr) = self.link_of(&iccid) {
                match self.endpoint.send(addr, packet.clone()).await {
                    Ok(sdu) => {
                        self.sent.fetch_add(1, Ordering::Relaxed);
                        self.emit(DeliveryEvent::Accepted {
                            id,
                            network_refs: vec![format!("catp:{addr}")],
                        });
                        // The card's CAT_TP ACK covering the SDU is the delivery report
                        // (TS 102 127: the card has the whole packet).
                        let acked = self.links.lock().is_ok_and(|mut l| {
                            let early = l.acked_early.remove(&sdu);
                            // A link closed meanwhile will acknowledge nothing more.
                            if !early && l.by_addr.contains_key(&addr) {
                                l.unacked.insert(sdu, (addr, id));
                            }
                            early
                        });
                        if acked {
                            self.emit(DeliveryEvent::Delivered { id });
                        }
                        return;
                    }
                    Err(SendError::NotOpen(_)) => self.forget_link(&iccid, addr),
                    Err(e) => {
                        self.emit(fail(TransportError::PayloadTooLarge(e.to_string())));
                        return;
                    }
                }
            }
            if attempt == self.settings.push_attempts {
                break;
            }
            let Some((rx, already_pushed)) = self.wait_for_link(&iccid) else {
                break;
            };
            let mut refusal = None;
            if !already_pushed {
                self.pushes.fetch_add(1, Ordering::Relaxed);
                // The card's ICCID as the SYN identification (the `36` object), so that the
                // link names the card whatever identification the card would use by default.
                let mut request = self.push_request.clone();
                request.link.identification =
                    crate::pdu::iccid_to_identification(&iccid).unwrap_or_default();
                match self.pusher.push(&message, &request).await {
                    Ok(r) => refusal = Some(r),
                    Err(e) if !e.is_transient() => {
                        self.emit(fail(e));
                        return;
                    }
                    Err(e) => tracing::warn!("CAT_TP push to {iccid}: {e}"),
                }
            }
            let link = tokio::time::timeout(self.settings.link_timeout, rx);
            let waited = match refusal {
                Some(mut refusal) => tokio::select! {
                    w = link => w,
                    // An error PoR for the push: no link comes of it, for this message or
                    // any other waiting for the card.
                    Ok(why) = &mut refusal => {
                        let e = TransportError::Rejected(format!(
                            "card {iccid} refused the CAT_TP push: {why}"
                        ));
                        self.refuse_waiters(&iccid, &e);
                        if let Ok(mut l) = self.links.lock() {
                            l.forget_card_if_idle(&iccid);
                        }
                        self.emit(fail(e));
                        return;
                    }
                },
                None => link.await,
            };
            if let Ok(Ok(Err(e))) = waited {
                // Another message's push was refused.
                self.emit(fail(e));
                return;
            }
        }
        if let Ok(mut l) = self.links.lock() {
            l.forget_card_if_idle(&iccid);
        }
        self.emit(fail(TransportError::Timeout(format!(
            "no CAT_TP link from card {iccid} after {} push(es)",
            self.settings.push_attempts
        ))));
    }
}

/// The CAT_TP transport.
pub struct CatpTransport {
    inner: Arc<Inner>,
    events_task: tokio::task::JoinHandle<()>,
}

impl CatpTransport {
    /// Binds the endpoint and starts.
    pub async fn start(
        settings: CatpSettings,
        pusher: Arc<dyn LinkPusher>,
    ) -> std::io::Result<CatpTransport> {
        let (endpoint, mut events) =
            Endpoint::bind(settings.listen, settings.link.clone(), settings.max_links).await?;
        let mut destination = settings.advertised.unwrap_or(endpoint.local_addr());
        if destination.ip().is_unspecified() {
            destination.set_ip(std::net::IpAddr::from([127, 0, 0, 1]));
        }
        let push_request = settings.push_request(destination);
        let inner = Arc::new(Inner {
            endpoint,
            pusher,
            sink: Mutex::new(None),
            links: Mutex::new(Links::default()),
            settings,
            push_request,
            pushes: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            pors: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&inner);
        let events_task = tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                inner.on_event(e);
            }
        });
        Ok(CatpTransport { inner, events_task })
    }

    /// The endpoint's UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.endpoint.local_addr()
    }

    /// The push the cards get.
    pub fn push_request(&self) -> &PushRequest {
        &self.inner.push_request
    }

    /// Whether the card with this ICCID has a link now.
    pub fn has_link(&self, iccid: &str) -> bool {
        self.inner.link_of(iccid).is_some()
    }

    pub fn stats(&self) -> CatpStats {
        let i = &self.inner;
        CatpStats {
            pushes: i.pushes.load(Ordering::Relaxed),
            links_accepted: i.accepted.load(Ordering::Relaxed),
            links_refused: i.refused.load(Ordering::Relaxed),
            packets_sent: i.sent.load(Ordering::Relaxed),
            pors: i.pors.load(Ordering::Relaxed),
            malformed_sdus: i.malformed.load(Ordering::Relaxed),
        }
    }

    pub fn endpoint_stats(&self) -> EndpointStats {
        self.inner.endpoint.stats()
    }

    /// Stops the endpoint.
    pub fn shutdown(&self) {
        self.inner.endpoint.shutdown();
        self.events_task.abort();
    }
}

impl Drop for CatpTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Transport for CatpTransport {
    fn name(&self) -> &'static str {
        "catp"
    }

    fn max_packet_len(&self) -> usize {
        self.inner.settings.max_packet_len
    }

    fn packet_format(&self) -> PacketFormat {
        PacketFormat::CatTp
    }

    fn send(&self, message: OutboundMessage) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            let Payload::SecuredPacket { packet, .. } = &message.payload else {
                return Err(TransportError::Rejected(
                    "CAT_TP carries secured packets only".into(),
                ));
            };
            if packet.first() != Some(&framing::CPI) {
                return Err(TransportError::Rejected(
                    "the packet is not framed for CAT_TP (CPI 01)".into(),
                ));
            }
            if packet.len() > self.inner.settings.max_packet_len {
                return Err(TransportError::PayloadTooLarge(format!(
                    "{} octets, at most {}",
                    packet.len(),
                    self.inner.settings.max_packet_len
                )));
            }
            let Some(iccid) = message.destination.iccid.clone() else {
                return Err(TransportError::Rejected(
                    "CAT_TP needs the card's ICCID (it identifies the link)".into(),
                ));
            };
            let iccid = iccid.trim_end_matches(['F', 'f']).to_string();
            if let Ok(mut l) = self.inner.links.lock() {
                l.msisdn
                    .insert(iccid.clone(), message.destination.msisdn.clone());
            }
            let packet = packet.clone();
            tokio::spawn(self.inner.clone().deliver(message, iccid, packet));
            Ok(())
        })
    }

    fn set_event_sink(&self, sink: Arc<dyn EventSink>) {
        if let Ok(mut s) = self.inner.sink.lock() {
            *s = Some(sink);
        }
    }
}
