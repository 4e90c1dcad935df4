//! The terminal side of CAT_TP for the virtual cards: a [`HandsetNetwork`] in front of a
//! [`Fleet`] that, when a card accepts a push (TS 102 226 clause 9), opens the BIP channel and
//! the CAT_TP link the push asks for (the client side of a [`otagw_catp::Connection`] on its own
//! UDP socket, identified by the card's ICCID), hands every SDU that arrives to the card and
//! sends its PoRs back on the link.
//!
//! Faults for tests: [`Impairment`] (loss, duplication, reordering) on the card's side of the
//! socket, and silent cards that accept the push but never connect.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use otagw_catp::pdu::iccid_to_identification;
use otagw_catp::push::PushRequest;
use otagw_catp::{ClientLink, Event, Impairment};
use otagw_sms::smsc_sim::{HandsetNetwork, HandsetReply};

use super::Fleet;

/// How the terminals behave.
#[derive(Debug, Clone)]
pub struct TerminalSettings {
    /// Faults on the card's side of each link's socket.
    pub impairment: Impairment,
    /// Link parameters (the identification is set per card).
    pub link: otagw_catp::Config,
    /// CAT_TP source port the cards use.
    pub local_port: u16,
    /// MSISDNs whose card takes the push but never opens a link.
    pub silent: HashSet<String>,
}

impl Default for TerminalSettings {
    fn default() -> Self {
        TerminalSettings {
            impairment: Impairment::none(),
            link: otagw_catp::Config {
                rto: std::time::Duration::from_millis(200),
                max_rto: std::time::Duration::from_secs(2),
                max_retries: 8,
                window: 16,
                ..otagw_catp::Config::default()
            },
            local_port: 0x4000,
            silent: HashSet::new(),
        }
    }
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TerminalStats {
    /// Pushes the cards accepted.
    pub pushes: u64,
    /// Links opened.
    pub links: u64,
    /// SDUs handed to cards.
    pub sdus: u64,
    /// PoRs sent back.
    pub pors: u64,
    /// On the cards' side of all links: PDUs retransmitted, sequenced PDUs received twice,
    /// and received out of sequence (what the faults cost).
    pub retransmits: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
}

/// Terminals for a fleet, answering the SMSC simulator as the fleet does and opening CAT_TP
/// links on pushes.
pub struct CatpTerminals {
    fleet: Arc<Fleet>,
    settings: TerminalSettings,
    /// MSISDNs with a link task running.
    open: Arc<Mutex<HashSet<String>>>,
    stats: Arc<Mutex<TerminalStats>>,
    /// Per MSISDN: the packets (SDUs) the card received over CAT_TP.
    received: Arc<Mutex<HashMap<String, usize>>>,
    /// Per MSISDN: the link counters last seen.
    links: Arc<Mutex<HashMap<String, otagw_catp::conn::Stats>>>,
    /// Per MSISDN: the last push the card accepted.
    last_push: Arc<Mutex<HashMap<String, PushRequest>>>,
}

impl CatpTerminals {
    /// In front of `fleet`.
    pub fn new(fleet: Arc<Fleet>, settings: TerminalSettings) -> Self {
        Self {
            fleet,
            settings,
            open: Arc::default(),
            stats: Arc::default(),
            received: Arc::default(),
            links: Arc::default(),
            last_push: Arc::default(),
        }
    }

    /// The last push the card at `msisdn` accepted, as it read it.
    pub fn last_push(&self, msisdn: &str) -> Option<PushRequest> {
        self.last_push.lock().ok()?.get(msisdn).cloned()
    }

    /// Counters so far.
    pub fn stats(&self) -> TerminalStats {
        let mut t = self.stats.lock().map(|s| s.clone()).unwrap_or_default();
        if let Ok(links) = self.links.lock() {
            for s in links.values() {
                t.retransmits += s.retransmits;
                t.duplicates += s.duplicates;
                t.out_of_order += s.out_of_order;
            }
        }
        t
    }

    /// SDUs the card at `msisdn` received over CAT_TP.
    pub fn sdus_received(&self, msisdn: &str) -> usize {
        self.received
            .lock()
            .ok()
            .and_then(|r| r.get(msisdn).copied())
            .unwrap_or(0)
    }

    fn open_link(&self, msisdn: &str, push: PushRequest) {
        if let Ok(mut last) = self.last_push.lock() {
            last.insert(msisdn.to_string(), push.clone());
        }
        if self.settings.silent.contains(msisdn) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("virtual terminal: no runtime to open a CAT_TP link on");
            return;
        };
        match self.open.lock() {
            Ok(mut open) => {
                if !open.insert(msisdn.to_string()) {
                    return; // the card has its channel already
                }
            }
            Err(_) => return,
        }
        let Some(iccid) = self.fleet.with_card(msisdn, |c| c.iccid()) else {
            return;
        };
        let mut config = self.settings.link.clone();
        config.identification = syn_identification(&push, &iccid);
        let ports = (self.settings.local_port, push.link.destination_port);
        let impairment = Impairment {
            seed: self.settings.impairment.seed ^ iccid_seed(&iccid),
            ..self.settings.impairment
        };
        let fleet = self.fleet.clone();
        let open = self.open.clone();
        let stats = self.stats.clone();
        let received = self.received.clone();
        let link_stats = self.links.clone();
        let msisdn = msisdn.to_string();
        runtime.spawn(async move {
            let link = ClientLink::connect(push.bip.destination, config, ports, impairment).await;
            match link {
                Ok(mut link) => {
                    if let Ok(mut s) = stats.lock() {
                        s.links += 1;
                    }
                    while let Some(e) = link.next_event().await {
                        if let Ok(mut l) = link_stats.lock() {
                            l.insert(msisdn.clone(), link.stats().conn);
                        }
                        match e {
                            Event::Connected(_) | Event::SduAcked(_) => {}
                            Event::Sdu(sdu) => {
                                if let Ok(mut r) = received.lock() {
                                    *r.entry(msisdn.clone()).or_default() += 1;
                                }
                                if let Ok(mut s) = stats.lock() {
                                    s.sdus += 1;
                                }
                                let por = fleet
                                    .with_card(&msisdn, |c| c.process_cattp(&sdu))
                                    .and_then(|o| o.por);
                                if let Some(p) = por {
                                    if link.send(p.user_data).await.is_ok() {
                                        if let Ok(mut s) = stats.lock() {
                                            s.pors += 1;
                                        }
                                    }
                                }
                            }
                            Event::Closed(_) => break,
                        }
                    }
                }
                Err(e) => tracing::warn!("virtual terminal {msisdn}: CAT_TP socket: {e}"),
            }
            if let Ok(mut o) = open.lock() {
                o.remove(&msisdn);
            }
        });
    }
}

/// The identification the card sends in its SYN: the push's `36` object when there is one
/// (TS 102 226 clause 9.2.2), else the card's default, its ICCID.
fn syn_identification(push: &PushRequest, iccid: &str) -> Vec<u8> {
    if push.link.identification.is_empty() {
        iccid_to_identification(iccid).unwrap_or_default()
    } else {
        push.link.identification.clone()
    }
}

fn iccid_seed(iccid: &str) -> u64 {
    iccid.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Handsets that do both: CAT_TP links on pushes (the terminals run the cards) and HTTPS
/// sessions on SCP81 triggers.
pub struct BipAndHttpsNetwork {
    pub terminals: Arc<CatpTerminals>,
    pub https: Arc<crate::sim::https_client::HttpsHandsets>,
}

impl HandsetNetwork for BipAndHttpsNetwork {
    fn command_packet(&self, msisdn: &str, packet: &[u8]) -> HandsetReply {
        let reply = self.terminals.command_packet(msisdn, packet);
        self.https.answer_triggers(msisdn);
        reply
    }

    fn knows(&self, msisdn: &str) -> bool {
        self.terminals.knows(msisdn)
    }
}

impl HandsetNetwork for CatpTerminals {
    fn command_packet(&self, msisdn: &str, packet: &[u8]) -> HandsetReply {
        match self.fleet.with_card(msisdn, |card| card.process(packet)) {
            Some(outcome) => {
                if let Some(push) = outcome.push {
                    if let Ok(mut s) = self.stats.lock() {
                        s.pushes += 1;
                    }
                    self.open_link(msisdn, push);
                }
                HandsetReply::Delivered { por: outcome.por }
            }
            None => HandsetReply::UnknownSubscriber,
        }
    }

    fn knows(&self, msisdn: &str) -> bool {
        self.fleet.knows(msisdn)
    }
}
