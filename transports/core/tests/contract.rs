//! The contract is usable as a trait object and events flow back through the sink.

use std::sync::{Arc, Mutex};

use otagw_transport::*;

/// A loopback transport: accepts packets up to a size, reports Accepted then Delivered.
struct Loopback {
    sink: Mutex<Option<Arc<dyn EventSink>>>,
}

impl Transport for Loopback {
    fn name(&self) -> &'static str {
        "loopback"
    }
    fn max_packet_len(&self) -> usize {
        137
    }
    fn send(&self, m: OutboundMessage) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            if let Payload::SecuredPacket { packet, .. } = &m.payload {
                if packet.len() > self.max_packet_len() {
                    return Err(TransportError::PayloadTooLarge(format!(
                        "{} octets",
                        packet.len()
                    )));
                }
            }
            let sink = self
                .sink
                .lock()
                .map_err(|e| TransportError::NotConnected(e.to_string()))?
                .clone();
            if let Some(sink) = sink {
                sink.deliver(DeliveryEvent::Accepted {
                    id: m.id,
                    network_refs: vec![format!("ref-{}", m.id)],
                });
                sink.deliver(DeliveryEvent::Delivered { id: m.id });
            }
            Ok(())
        })
    }
    fn set_event_sink(&self, sink: Arc<dyn EventSink>) {
        if let Ok(mut s) = self.sink.lock() {
            *s = Some(sink);
        }
    }
}

#[derive(Default)]
struct Collect(Mutex<Vec<DeliveryEvent>>);

impl EventSink for Collect {
    fn deliver(&self, e: DeliveryEvent) {
        if let Ok(mut v) = self.0.lock() {
            v.push(e);
        }
    }
}

/// Polls a future that never waits (the loopback completes at once).
fn run<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn msg(id: u64, len: usize) -> OutboundMessage {
    OutboundMessage {
        id: MessageId(id),
        destination: Destination {
            msisdn: "4912345".into(),
            iccid: None,
        },
        payload: Payload::SecuredPacket {
            packet: vec![0; len],
            tar: [0xB0, 0, 0x10],
            counter: [0; 5],
        },
        options: SendOptions::default(),
    }
}

#[test]
fn events_flow_through_a_dyn_transport() {
    let t: Box<dyn Transport> = Box::new(Loopback {
        sink: Mutex::new(None),
    });
    let sink = Arc::new(Collect::default());
    t.set_event_sink(sink.clone());
    assert_eq!(run(t.send(msg(7, 40))), Ok(()));
    let err = run(t.send(msg(8, 200)));
    assert!(matches!(err, Err(TransportError::PayloadTooLarge(_))));
    assert!(!TransportError::PayloadTooLarge(String::new()).is_transient());
    assert!(TransportError::Throttled("0x58".into()).is_transient());
    let events = sink.0.lock().map(|v| v.clone()).unwrap_or_default();
    assert_eq!(
        events,
        vec![
            DeliveryEvent::Accepted {
                id: MessageId(7),
                network_refs: vec!["ref-7".into()]
            },
            DeliveryEvent::Delivered { id: MessageId(7) },
        ]
    );
}
