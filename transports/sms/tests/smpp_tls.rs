//! SMPP over TLS on loopback: `SmppTransport` with `SmppConfig::tls` against `SmscSimulator`
//! with `SmscConfig::tls`. The CA, server and client certificates are made here with rcgen at
//! test time (nothing is read from disk or downloaded).
//!
//! Covered: bind + one-SMS OTA command + PoR via MO over TLS (server name from the address);
//! a CA that did not issue the SMSC's certificate (unknown CA, retried with backoff, never
//! bound); a name mismatch; a plain ESME on the TLS port and a TLS ESME on a plain port (no
//! bind, no panic, the listener goes on); mutual TLS with and without a client certificate;
//! a silent connection dropped by the handshake timeout; unusable TLS settings refused at
//! start. Every wait is bounded (`LIMIT`) and every test stops what it started.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use otagw_sms::smpp::{
    PemSource, SmppConfig, SmppError, SmppTls, SmppTransport, TlsFailure, TlsIdentity,
};
use otagw_sms::smsc_sim::{
    HandsetNetwork, HandsetReply, PorReply, SmscConfig, SmscHandle, SmscSimulator, SmscTls,
};
use otagw_transport::{
    DeliveryEvent, Destination, EventSink, InboundAck, MessageId, OutboundMessage, Payload,
    SendOptions, Transport,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{timeout, Instant};

const LIMIT: Duration = Duration::from_secs(10);
const MSISDN: &str = "491700000001";

// ---------------------------------------------------------------------------------------------
// Certificates, made at test time.

/// A CA and what it issued, all PEM.
struct Pki {
    ca_pem: String,
    server_chain: String,
    server_key: String,
    client_chain: String,
    client_key: String,
}

fn issue(
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    ca: &rcgen::Certificate,
    ca_key: &KeyPair,
) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].to_string());
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, ca, ca_key).expect("sign");
    (cert.pem(), key.serialize_pem())
}

/// A self-signed CA, a server certificate for "localhost" and a client certificate for "esme".
fn make_pki(ca_name: &str) -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params
        .distinguished_name
        .push(DnType::CommonName, ca_name.to_string());
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = params.self_signed(&ca_key).expect("CA");
    let (server_chain, server_key) = issue(
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
        &ca,
        &ca_key,
    );
    let (client_chain, client_key) =
        issue(&["esme"], ExtendedKeyUsagePurpose::ClientAuth, &ca, &ca_key);
    Pki {
        ca_pem: ca.pem(),
        server_chain,
        server_key,
        client_chain,
        client_key,
    }
}

impl Pki {
    fn ca(&self) -> PemSource {
        PemSource::pem(self.ca_pem.clone())
    }

    fn server(&self) -> TlsIdentity {
        TlsIdentity::new(
            PemSource::pem(self.server_chain.clone()),
            PemSource::pem(self.server_key.clone()),
        )
    }

    fn client(&self) -> TlsIdentity {
        TlsIdentity::new(
            PemSource::pem(self.client_chain.clone()),
            PemSource::pem(self.client_key.clone()),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// A scripted handset network (as in smsc_sim_esme.rs): known cards answer with a fixed PoR.

#[derive(Default)]
struct Net {
    cards: HashMap<String, Option<PorReply>>,
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
            Some(por) => HandsetReply::Delivered { por: por.clone() },
        }
    }

    fn knows(&self, msisdn: &str) -> bool {
        self.cards.contains_key(msisdn)
    }
}

const POR_PACKET: &[u8] = &[
    0x00, 0x0E, 0x0A, 0xB0, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x90, 0x00,
];

fn network() -> Arc<Net> {
    let mut user_data = vec![0x02, 0x71, 0x00];
    user_data.extend_from_slice(POR_PACKET);
    let mut net = Net::default();
    net.cards.insert(
        MSISDN.to_string(),
        Some(PorReply {
            user_data,
            via_submit: true,
        }),
    );
    Arc::new(net)
}

async fn smsc(net: Arc<Net>, tls: Option<SmscTls>) -> SmscHandle {
    let mut config = SmscConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.message_id_base = Some(0x1000);
    config.enquire_link_interval = None;
    config.tls = tls;
    SmscSimulator::start(config, net).await.expect("listen")
}

// ---------------------------------------------------------------------------------------------
// The ESME side.

#[derive(Default)]
struct Sink {
    events: Mutex<Vec<DeliveryEvent>>,
    notify: Notify,
}

impl EventSink for Sink {
    fn deliver(&self, event: DeliveryEvent) {
        // Done with a PoR as soon as it is here: its deliver_sm_resp goes.
        let event = match event {
            DeliveryEvent::ResponsePacket {
                from,
                packet,
                sms_framing,
                ack: _,
            } => DeliveryEvent::ResponsePacket {
                from,
                packet,
                sms_framing,
                ack: InboundAck::none(),
            },
            other => other,
        };
        self.events.lock().unwrap().push(event);
        self.notify.notify_waiters();
    }
}

impl Sink {
    async fn wait(&self, what: &str, pred: impl Fn(&[DeliveryEvent]) -> bool) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let notified = self.notify.notified();
            if pred(&self.events.lock().unwrap()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "timed out waiting for {what}; events: {:?}",
                    self.events.lock().unwrap()
                );
            }
        }
    }
}

fn esme_config(address: String, tls: Option<SmppTls>) -> SmppConfig {
    let mut c = SmppConfig::new(address, "otagw", "secret");
    c.tls = tls;
    c.response_timeout = Duration::from_secs(2);
    c.connect_timeout = Duration::from_secs(2);
    c.reconnect.initial = Duration::from_millis(20);
    c.reconnect.max = Duration::from_millis(100);
    c
}

fn esme(config: SmppConfig) -> (SmppTransport, Arc<Sink>) {
    let transport = SmppTransport::start(config).expect("start");
    let sink = Arc::new(Sink::default());
    transport.set_event_sink(sink.clone());
    (transport, sink)
}

/// The address with the host name the server certificate carries.
fn localhost(smsc: &SmscHandle) -> String {
    format!("localhost:{}", smsc.local_addr().port())
}

/// Waits until the (only) session's last error satisfies `pred`; returns it.
async fn wait_error(transport: &SmppTransport, pred: impl Fn(&SmppError) -> bool) -> SmppError {
    let deadline = Instant::now() + LIMIT;
    loop {
        let status = transport.bind_status();
        if let Some(error) = status[0].last_error.as_ref().filter(|e| pred(e)) {
            return error.clone();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the bind error; status {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_stats(
    smsc: &SmscHandle,
    what: &str,
    pred: impl Fn(&otagw_sms::smsc_sim::SmscStats) -> bool,
) {
    let deadline = Instant::now() + LIMIT;
    while !pred(&smsc.stats()) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; stats {:?}",
            smsc.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn never_bound(transport: &SmppTransport) {
    for status in transport.bind_status() {
        assert!(!status.bound, "{status:?}");
        assert_eq!(status.binds, 0, "{status:?}");
    }
}

async fn stop(transport: SmppTransport, smsc: SmscHandle) {
    timeout(LIMIT, transport.shutdown())
        .await
        .expect("ESME shutdown in time");
    timeout(LIMIT, smsc.shutdown())
        .await
        .expect("SMSC shutdown in time");
}

fn secured_packet(id: u64) -> OutboundMessage {
    // A command packet from CPL on (the simulator does not look inside).
    let mut packet: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(7) ^ 0x5A).collect();
    packet[..2].copy_from_slice(&38u16.to_be_bytes());
    OutboundMessage {
        id: MessageId(id),
        destination: Destination {
            msisdn: MSISDN.to_string(),
            iccid: None,
        },
        payload: Payload::SecuredPacket {
            packet,
            tar: [0xB0, 0x00, 0x10],
            counter: [0, 0, 0, 0, 1],
        },
        options: SendOptions::default(),
    }
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn binds_over_tls_sends_a_command_and_gets_the_por() {
    let pki = make_pki("otagw test CA");
    let net = network();
    let smsc = smsc(net.clone(), Some(SmscTls::new(pki.server()))).await;
    // No server_name: "localhost" comes from the address.
    let (transport, sink) = esme(esme_config(localhost(&smsc), Some(SmppTls::new(pki.ca()))));
    assert!(
        transport.wait_bound(LIMIT).await,
        "{:?}",
        transport.bind_status()
    );

    let message = secured_packet(1);
    let Payload::SecuredPacket { packet, .. } = &message.payload else {
        unreachable!()
    };
    let packet = packet.clone();
    transport.send(message).await.expect("send");
    sink.wait("Accepted and the PoR", |events| {
        events.iter().any(|e| {
            matches!(
                e,
                DeliveryEvent::Accepted {
                    id: MessageId(1),
                    ..
                }
            )
        }) && events.contains(&DeliveryEvent::ResponsePacket {
            from: MSISDN.into(),
            packet: POR_PACKET.to_vec(),
            sms_framing: true,
            ack: InboundAck::none(),
        })
    })
    .await;
    assert_eq!(
        net.seen.lock().unwrap().clone(),
        vec![(MSISDN.to_string(), packet)],
        "the card got the command packet as sent"
    );
    let stats = smsc.stats();
    assert_eq!(stats.binds, 1, "{stats:?}");
    assert_eq!(stats.tls_handshake_failures, 0, "{stats:?}");
    assert_eq!(stats.mo_sent, 1, "{stats:?}");
    assert_eq!(transport.bind_status()[0].last_error, None);
    stop(transport, smsc).await;
}

#[tokio::test]
async fn a_ca_that_did_not_issue_the_smsc_certificate_never_binds() {
    let pki = make_pki("otagw test CA");
    let stranger = make_pki("some other CA");
    let smsc = smsc(network(), Some(SmscTls::new(pki.server()))).await;
    let (transport, _sink) = esme(esme_config(
        localhost(&smsc),
        Some(SmppTls::new(stranger.ca())),
    ));
    let error = wait_error(&transport, |e| matches!(e, SmppError::Tls { .. })).await;
    assert_eq!(
        error,
        SmppError::Tls {
            address: localhost(&smsc),
            failure: TlsFailure::UnknownIssuer,
        }
    );
    assert!(error.to_string().contains("unknown CA"), "{error}");
    // Retried with the reconnect backoff (20 ms .. 100 ms here), never bound.
    wait_stats(&smsc, "a second handshake", |s| {
        s.tls_handshake_failures >= 2
    })
    .await;
    never_bound(&transport);
    assert_eq!(smsc.stats().binds, 0);
    stop(transport, smsc).await;
}

#[tokio::test]
async fn a_name_the_certificate_does_not_carry_is_a_name_mismatch() {
    let pki = make_pki("otagw test CA");
    let smsc = smsc(network(), Some(SmscTls::new(pki.server()))).await;
    // The certificate is for "localhost"; the address's host is 127.0.0.1.
    let (transport, _sink) = esme(esme_config(
        smsc.local_addr().to_string(),
        Some(SmppTls::new(pki.ca())),
    ));
    let error = wait_error(&transport, |e| matches!(e, SmppError::Tls { .. })).await;
    assert!(
        matches!(
            &error,
            SmppError::Tls {
                failure: TlsFailure::NameMismatch { server_name },
                ..
            } if server_name == "127.0.0.1"
        ),
        "{error:?}"
    );
    never_bound(&transport);
    timeout(LIMIT, transport.shutdown()).await.unwrap();

    // The same address with the certificate's name given explicitly binds.
    let (transport, _sink) = esme(esme_config(
        smsc.local_addr().to_string(),
        Some(SmppTls::new(pki.ca()).with_server_name("localhost")),
    ));
    assert!(
        transport.wait_bound(LIMIT).await,
        "{:?}",
        transport.bind_status()
    );
    stop(transport, smsc).await;
}

#[tokio::test]
async fn a_plain_esme_on_the_tls_port_does_not_bind() {
    let pki = make_pki("otagw test CA");
    let smsc = smsc(network(), Some(SmscTls::new(pki.server()))).await;
    let (plain, _sink) = esme(esme_config(localhost(&smsc), None));
    let error = wait_error(&plain, |_| true).await;
    assert!(
        matches!(
            error,
            SmppError::Protocol(_) | SmppError::Closed(_) | SmppError::Io(_)
        ),
        "{error:?}"
    );
    if let SmppError::Protocol(why) = &error {
        assert!(
            why.contains("TLS"),
            "the error says the SMSC speaks TLS: {why}"
        );
    }
    wait_stats(&smsc, "refused handshakes", |s| {
        s.tls_handshake_failures >= 2
    })
    .await;
    never_bound(&plain);
    assert_eq!(smsc.stats().binds, 0);
    timeout(LIMIT, plain.shutdown()).await.unwrap();

    // The listener is still there for TLS clients.
    let (transport, _sink) = esme(esme_config(localhost(&smsc), Some(SmppTls::new(pki.ca()))));
    assert!(
        transport.wait_bound(LIMIT).await,
        "{:?}",
        transport.bind_status()
    );
    stop(transport, smsc).await;
}

#[tokio::test]
async fn a_tls_esme_on_a_plain_port_reports_a_tls_failure() {
    let pki = make_pki("otagw test CA");
    let smsc = smsc(network(), None).await;
    let (transport, _sink) = esme(esme_config(localhost(&smsc), Some(SmppTls::new(pki.ca()))));
    let error = wait_error(&transport, |e| matches!(e, SmppError::Tls { .. })).await;
    assert!(
        matches!(
            &error,
            SmppError::Tls {
                failure: TlsFailure::Protocol(_) | TlsFailure::Io(_),
                ..
            }
        ),
        "{error:?}"
    );
    never_bound(&transport);
    assert_eq!(smsc.stats().binds, 0);
    stop(transport, smsc).await;
}

#[tokio::test]
async fn mutual_tls_wants_a_client_certificate_from_the_ca() {
    let pki = make_pki("otagw test CA");
    let stranger = make_pki("some other CA");
    let smsc = smsc(
        network(),
        Some(SmscTls::new(pki.server()).with_client_ca(pki.ca())),
    )
    .await;

    // With a certificate from the CA: bound.
    let (transport, _sink) = esme(esme_config(
        localhost(&smsc),
        Some(SmppTls::new(pki.ca()).with_client_identity(pki.client())),
    ));
    assert!(
        transport.wait_bound(LIMIT).await,
        "{:?}",
        transport.bind_status()
    );
    timeout(LIMIT, transport.shutdown()).await.unwrap();

    // Without one: the SMSC's alert ends the session before the bind.
    let (transport, _sink) = esme(esme_config(localhost(&smsc), Some(SmppTls::new(pki.ca()))));
    let error = wait_error(&transport, |e| matches!(e, SmppError::Tls { .. })).await;
    assert!(
        matches!(
            &error,
            SmppError::Tls {
                failure: TlsFailure::AlertReceived(alert),
                ..
            } if alert == "CertificateRequired"
        ),
        "{error:?}"
    );
    never_bound(&transport);
    timeout(LIMIT, transport.shutdown()).await.unwrap();

    // With one from another CA: refused too.
    let (transport, _sink) = esme(esme_config(
        localhost(&smsc),
        Some(SmppTls::new(pki.ca()).with_client_identity(stranger.client())),
    ));
    let error = wait_error(&transport, |e| matches!(e, SmppError::Tls { .. })).await;
    assert!(
        matches!(
            &error,
            SmppError::Tls {
                failure: TlsFailure::AlertReceived(_),
                ..
            }
        ),
        "{error:?}"
    );
    never_bound(&transport);
    assert_eq!(smsc.stats().binds, 1);
    stop(transport, smsc).await;
}

#[tokio::test]
async fn a_silent_connection_is_dropped_by_the_handshake_timeout() {
    let pki = make_pki("otagw test CA");
    let mut tls = SmscTls::new(pki.server());
    tls.handshake_timeout = Duration::from_millis(200);
    let smsc = smsc(network(), Some(tls)).await;
    let mut socket = TcpStream::connect(smsc.local_addr()).await.unwrap();
    let mut buf = [0u8; 64];
    let read = timeout(LIMIT, socket.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(smsc.stats().tls_handshake_failures, 1);
    assert_eq!(smsc.stats().sessions_open, 0);
    timeout(LIMIT, smsc.shutdown()).await.unwrap();
}

#[tokio::test]
async fn unusable_tls_settings_are_refused_at_start() {
    let pki = make_pki("otagw test CA");
    // ESME: no certificate in the CA text, unreadable file, key that is not a key.
    for tls in [
        SmppTls::new(PemSource::pem("nothing")),
        SmppTls::new(PemSource::file("/nonexistent/otagw-ca.pem")),
        SmppTls::new(pki.ca()).with_client_identity(TlsIdentity::new(
            PemSource::pem(pki.client_chain.clone()),
            PemSource::pem(pki.client_chain.clone()),
        )),
        SmppTls::new(pki.ca()).with_server_name("not a name!"),
    ] {
        let result = SmppTransport::start(esme_config("localhost:1".into(), Some(tls.clone())));
        assert!(
            matches!(&result, Err(SmppError::InvalidConfig(why)) if why.contains("tls")),
            "{tls:?}: {:?}",
            result.err()
        );
    }
    // Simulator: a key that does not match the certificate.
    let other = make_pki("some other CA");
    let mismatched = TlsIdentity::new(
        PemSource::pem(pki.server_chain.clone()),
        PemSource::pem(other.server_key.clone()),
    );
    let mut config = SmscConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.tls = Some(SmscTls::new(mismatched));
    let error = SmscSimulator::start(config, network()).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{error}");
}
