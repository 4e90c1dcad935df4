//! The SMSC simulator driven by an SMPP client we did not write: the `smpp34` crate's async
//! ESME. It binds, submits OTA messages and decodes the simulator's deliver_sm with its own
//! codec.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use otagw_sms::smsc_sim::{
    Credentials, HandsetNetwork, HandsetReply, PorReply, SmscConfig, SmscHandle, SmscSimulator,
};
use otagw_sms::{split_packet, ConcatReference, PacketKind};
use smpp34::client::{SmppClient, SmppClientListener, BIND_TYPE, SMSC};
use smpp34::{deliver_sm, deliver_sm_resp, SmppConnectionInformation};
use tokio::sync::mpsc;

const STEP: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Net {
    cards: HashMap<String, PorReply>,
    seen: Mutex<Vec<(String, Vec<u8>)>>,
}

impl HandsetNetwork for Net {
    fn command_packet(&self, msisdn: &str, packet: &[u8]) -> HandsetReply {
        self.seen
            .lock()
            .unwrap()
            .push((msisdn.to_string(), packet.to_vec()));
        match self.cards.get(msisdn) {
            None => HandsetReply::UnknownSubscriber,
            Some(p) => HandsetReply::Delivered {
                por: Some(p.clone()),
            },
        }
    }

    fn knows(&self, msisdn: &str) -> bool {
        self.cards.contains_key(msisdn)
    }
}

const POR: &[u8] = &[
    0x02, 0x71, 0x00, 0x00, 0x0E, 0x0A, 0xB0, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
    0x01, 0x90, 0x00,
];

/// The smpp34 listener, written out the way `#[async_trait]` expands it (no async-trait
/// dependency here): it hands the bound SMSC and every deliver_sm to the test.
struct Listener {
    bound: mpsc::UnboundedSender<SMSC>,
    delivered: mpsc::UnboundedSender<deliver_sm>,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl SmppClientListener for Listener {
    fn on_deliver_sm<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        deliver_sm: deliver_sm,
        _connection_information: &'life1 SmppConnectionInformation,
        _session_id: &'life2 String,
    ) -> BoxFuture<'async_trait, deliver_sm_resp>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let _ = self.delivered.send(deliver_sm.clone());
            deliver_sm.accept()
        })
    }

    fn on_smsc_bound<'life0, 'life1, 'async_trait>(
        &'life0 self,
        smsc: SMSC,
        _session_id: &'life1 String,
    ) -> BoxFuture<'async_trait, ()>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let _ = self.bound.send(smsc);
        })
    }
}

struct Client {
    client: SmppClient,
    smsc: Option<SMSC>,
    delivered: mpsc::UnboundedReceiver<deliver_sm>,
}

async fn connect(addr: SocketAddr, password: &str) -> Client {
    let (bound_tx, mut bound_rx) = mpsc::unbounded_channel();
    let (del_tx, delivered) = mpsc::unbounded_channel();
    let listener = Arc::new(Listener {
        bound: bound_tx,
        delivered: del_tx,
    });
    let mut client = SmppClient::new(
        addr.ip().to_string(),
        addr.port(),
        false,
        BIND_TYPE::TRX,
        "esme1".to_string(),
        password.to_string(),
        "OTA".to_string(),
        0,
        0,
        String::new(),
        listener,
        10,
    );
    client.start().await;
    let smsc = tokio::time::timeout(Duration::from_secs(1), bound_rx.recv())
        .await
        .ok()
        .flatten();
    Client {
        client,
        smsc,
        delivered,
    }
}

impl Client {
    async fn next(&mut self) -> deliver_sm {
        tokio::time::timeout(STEP, self.delivered.recv())
            .await
            .expect("a deliver_sm in time")
            .expect("session alive")
    }

    async fn submit_ota(&self, dest: &str, user_data: &[u8], registered_delivery: u8) -> String {
        let resp = self
            .smsc
            .as_ref()
            .expect("bound")
            .submit_sm()
            .source_addr_ton(5)
            .source_addr("OTAGW")
            .dest_addr_ton(1)
            .dest_addr_npi(1)
            .destination_addr(dest)
            .esm_class(0x40)
            .protocol_id(0x7F)
            .data_coding(0xF6)
            .registered_delivery(registered_delivery)
            .short_message(user_data.to_vec())
            .send()
            .await
            .expect("submit_sm_resp");
        assert!(resp.is_success(), "status {:#x}", resp.command_status());
        resp.message_id.expect("message_id")
    }

    async fn close(mut self) {
        if let Some(smsc) = &self.smsc {
            let _ = smsc.send_unbind().await;
        }
        self.client.stop().await;
    }
}

async fn start(net: Net) -> (SmscHandle, Arc<Net>) {
    let net = Arc::new(net);
    let mut config = SmscConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.credentials = Some(vec![Credentials::new("esme1", "secret")]);
    config.enquire_link_interval = None;
    let sim = SmscSimulator::start(config, net.clone()).await.unwrap();
    (sim, net)
}

fn tlv(d: &deliver_sm, tag: u16) -> Option<Vec<u8>> {
    d.tlvs
        .iter()
        .find(|t| t.tag == tag)
        .map(|t| t.value.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smpp34_bind_submit_receipt_and_mo_por() {
    let msisdn = "491700000001";
    let mut net = Net::default();
    net.cards.insert(
        msisdn.to_string(),
        PorReply {
            user_data: POR.to_vec(),
            via_submit: true,
        },
    );
    let (sim, net) = start(net).await;
    let mut client = connect(sim.local_addr(), "secret").await;
    assert!(client.smsc.is_some(), "bound");

    let mut ud = vec![0x02, 0x70, 0x00];
    let packet: Vec<u8> = (0..50u8).collect();
    ud.extend_from_slice(&packet);
    let id = client.submit_ota(msisdn, &ud, 1).await;

    // smpp34 hands deliver_sm to the listener concurrently: order them here.
    let mut two = [client.next().await, client.next().await];
    two.sort_by_key(|d| d.esm_class);
    let [receipt, mo] = two;
    assert_eq!(receipt.esm_class, 0x04);
    assert_eq!(
        tlv(&receipt, 0x001E),
        Some(format!("{id}\0").into_bytes()),
        "receipted_message_id"
    );
    assert_eq!(
        tlv(&receipt, 0x0427),
        Some(vec![2]),
        "message_state DELIVERED"
    );
    let text = String::from_utf8(receipt.short_message.clone()).unwrap();
    assert!(text.starts_with(&format!("id:{id} sub:001 dlvrd:001 submit date:")));
    assert!(text.ends_with(" stat:DELIVRD err:000 text:"), "{text}");

    assert_eq!(
        (mo.esm_class, mo.protocol_id, mo.data_coding),
        (0x40, 0x7F, 0xF6)
    );
    assert_eq!(
        (
            mo.source_addr_ton,
            mo.source_addr_npi,
            mo.source_addr.as_str()
        ),
        (1, 1, msisdn)
    );
    assert_eq!(
        (mo.dest_addr_ton, mo.destination_addr.as_str()),
        (5, "OTAGW")
    );
    assert_eq!(mo.short_message, POR);
    assert_eq!(
        net.seen.lock().unwrap().clone(),
        vec![(msisdn.to_string(), packet)]
    );

    client.close().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smpp34_concatenated_command_por_in_receipt() {
    let msisdn = "491700000002";
    let mut net = Net::default();
    net.cards.insert(
        msisdn.to_string(),
        PorReply {
            user_data: POR.to_vec(),
            via_submit: false,
        },
    );
    let (sim, net) = start(net).await;
    let mut client = connect(sim.local_addr(), "secret").await;

    let packet: Vec<u8> = (0..320u32).map(|i| (i * 13) as u8).collect();
    let segments = split_packet(
        PacketKind::Command,
        &packet,
        ConcatReference::SixteenBit(0xBEEF),
    )
    .unwrap();
    assert_eq!(segments.len(), 3);
    let mut ids = Vec::new();
    for s in &segments {
        ids.push(client.submit_ota(msisdn, s, 0).await);
    }
    // registered_delivery 0: only the receipt carrying the PoR comes back.
    let receipt = client.next().await;
    assert_eq!(receipt.esm_class, 0x44);
    assert_eq!(
        tlv(&receipt, 0x001E),
        Some(format!("{}\0", ids[2]).into_bytes())
    );
    assert_eq!(tlv(&receipt, 0x0424), Some(POR.to_vec()), "message_payload");
    assert!(receipt.short_message.is_empty());
    assert_eq!(
        net.seen.lock().unwrap().clone(),
        vec![(msisdn.to_string(), packet)]
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), client.delivered.recv())
            .await
            .is_err(),
        "nothing else"
    );

    client.close().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smpp34_bad_password_never_binds() {
    let (sim, _) = start(Net::default()).await;
    let client = connect(sim.local_addr(), "wrong").await;
    assert!(client.smsc.is_none());
    assert_eq!(sim.stats().bind_failures, 1);
    assert_eq!(sim.stats().binds, 0);
    client.close().await;
    sim.shutdown().await;
}
