//! The transport handle: starts the binds, takes messages, shuts down.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use otagw_transport::{BoxFuture, EventSink, OutboundMessage, Transport, TransportError};
use rusmpp::pdus::SubmitSm;
use rusmpp::types::{COctetString, EmptyOrFullCOctetString, OctetString};
use rusmpp::values::{DataCoding, EsmClass, Npi, RegisteredDelivery, Ton};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::encode::{destination, relative_validity, segments};
use super::session::{run_bind, StatusSlot};
use super::state::{Msg, Shared};
use super::tls::ClientTls;
use super::{BindMode, ConcatWidth, SmppConfig, SmppError};
use crate::udh::ConcatReference;

/// What one SMPP session does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindRole {
    /// `bind_transceiver`: submits and receives.
    Transceiver,
    /// `bind_transmitter`: submits.
    Transmitter,
    /// `bind_receiver`: receives.
    Receiver,
}

impl BindRole {
    /// Whether this session submits messages.
    pub fn transmits(self) -> bool {
        matches!(self, BindRole::Transceiver | BindRole::Transmitter)
    }
}

/// A snapshot of one session's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindStatus {
    /// What the session does.
    pub role: BindRole,
    /// Currently bound.
    pub bound: bool,
    /// Successful binds so far (1 + reconnections).
    pub binds: u64,
    /// Why the last connect, bind or session failed (cleared by a successful bind).
    pub last_error: Option<SmppError>,
}

/// The ESME side of SMPP 3.4 as an otagw [`Transport`]. See the [module docs](super).
pub struct SmppTransport {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    statuses: Vec<StatusSlot>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    reference_width: ConcatWidth,
}

impl std::fmt::Debug for SmppTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmppTransport")
            .field("address", &self.shared.config.address)
            .field("binds", &self.bind_status())
            .finish()
    }
}

fn validate(config: &SmppConfig) -> Result<(), SmppError> {
    let invalid = |what: String| Err(SmppError::InvalidConfig(what));
    let ascii_max =
        |value: &str, max: usize| value.is_ascii() && !value.contains('\0') && value.len() <= max;
    if !ascii_max(&config.system_id, 15) {
        return invalid("system_id: at most 15 ASCII characters".into());
    }
    if !ascii_max(&config.password, 8) {
        return invalid("password: at most 8 ASCII characters".into());
    }
    if !ascii_max(&config.system_type, 12) {
        return invalid("system_type: at most 12 ASCII characters".into());
    }
    if !ascii_max(&config.source.address, 20) {
        return invalid("source address: at most 20 ASCII characters".into());
    }
    if config.binds == 0
        || config.window == 0
        || config.max_attempts == 0
        || config.queue_capacity == 0
    {
        return invalid("binds, window, max_attempts and queue_capacity must be at least 1".into());
    }
    if config
        .rate_limit
        .is_some_and(|r| !(r.is_finite() && r > 0.0))
    {
        return invalid("rate_limit must be a positive number of messages per second".into());
    }
    if config.response_timeout.is_zero() || config.enquire_link_interval.is_zero() {
        return invalid("response_timeout and enquire_link_interval must not be zero".into());
    }
    if !(0.0..=1.0).contains(&config.reconnect.jitter) {
        return invalid("reconnect jitter must be between 0 and 1".into());
    }
    Ok(())
}

impl SmppTransport {
    /// Checks the configuration and starts the binds (they connect in the background and keep
    /// reconnecting). Must be called inside a tokio runtime.
    pub fn start(config: SmppConfig) -> Result<Self, SmppError> {
        validate(&config)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| SmppError::NoRuntime)?;
        let roles: Vec<BindRole> = (0..config.binds)
            .flat_map(|_| match config.bind_mode {
                BindMode::Transceiver => vec![BindRole::Transceiver],
                BindMode::TransmitterReceiver => vec![BindRole::Transmitter, BindRole::Receiver],
            })
            .collect();
        let reference_width = config.concat_width;
        let housekeeping_every = (config.reassembly_timeout / 4)
            .min(config.sequential_receipt_timeout / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let tls = config
            .tls
            .as_ref()
            .map(|tls| ClientTls::new(tls, &config.address))
            .transpose()
            .map_err(SmppError::InvalidConfig)?;
        let mut shared = Shared::new(config);
        shared.tls = tls;
        let shared = Arc::new(shared);
        let (shutdown, _) = watch::channel(false);
        let mut statuses = Vec::new();
        let mut tasks = Vec::new();
        for (index, role) in roles.into_iter().enumerate() {
            let slot = Arc::new(Mutex::new(BindStatus {
                role,
                bound: false,
                binds: 0,
                last_error: None,
            }));
            statuses.push(slot.clone());
            tasks.push(runtime.spawn(run_bind(
                shared.clone(),
                role,
                slot,
                shutdown.subscribe(),
                index as u64 + 1,
            )));
        }
        let house = shared.clone();
        let mut stop = shutdown.subscribe();
        tasks.push(runtime.spawn(async move {
            let mut tick = tokio::time::interval(housekeeping_every);
            loop {
                tokio::select! {
                    _ = tick.tick() => house.core().sweep(Instant::now(), &house.config),
                    _ = stop.changed() => break,
                }
            }
        }));
        Ok(Self {
            shared,
            shutdown,
            statuses,
            tasks: Mutex::new(tasks),
            reference_width,
        })
    }

    /// The state of every session (transceivers, or transmitter then receiver per bind).
    pub fn bind_status(&self) -> Vec<BindStatus> {
        self.statuses
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }

    /// Waits until every session is bound; false if `within` passes first.
    pub async fn wait_bound(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.bind_status().iter().all(|s| s.bound) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Messages taken and not yet finished (accepted without receipts to wait for, delivered
    /// or failed).
    pub fn in_progress(&self) -> usize {
        self.shared.core().in_progress()
    }

    /// Stops taking messages, lets the outstanding `submit_sm`s be answered (at most one
    /// response timeout), unbinds every session and closes. Messages not accepted by then
    /// fail with `TransportError::NotConnected`. Idempotent.
    pub async fn shutdown(&self) {
        self.shared.permits.close();
        let _ = self.shutdown.send(true);
        let tasks: Vec<JoinHandle<()>> = {
            let mut guard = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            guard.drain(..).collect()
        };
        for task in tasks {
            let _ = task.await;
        }
        self.shared.core().close();
    }

    fn reference(&self) -> ConcatReference {
        let n = self.shared.next_reference.fetch_add(1, Ordering::Relaxed);
        match self.reference_width {
            ConcatWidth::EightBit => ConcatReference::EightBit(n as u8),
            ConcatWidth::SixteenBit => ConcatReference::SixteenBit(n as u16),
        }
    }

    fn build(&self, message: &OutboundMessage) -> Result<(Vec<SubmitSm>, bool), TransportError> {
        let config = &self.shared.config;
        let dest = destination(&message.destination.msisdn)?;
        let specs = segments(
            &message.payload,
            self.reference(),
            config.ota_data_coding.octet(),
        )?;
        let options = &message.options;
        // Sequential segments are paced by receipts, so they are always asked for.
        let wants_receipts =
            options.delivery_report || (options.sequential_segments && specs.len() > 1);
        let validity = options
            .validity_minutes
            .or(config.default_validity_minutes)
            .and_then(relative_validity);
        let internal = |what: &str| TransportError::Rejected(format!("cannot encode {what}"));
        let source: COctetString<1, 21> = COctetString::from_string(config.source.address.clone())
            .map_err(|_| internal("source address"))?;
        let destination_addr: COctetString<1, 21> =
            COctetString::from_string(dest).map_err(|_| internal("destination address"))?;
        let validity_period: EmptyOrFullCOctetString<17> = match validity {
            Some(v) => EmptyOrFullCOctetString::from_string(v).map_err(|_| internal("validity"))?,
            None => EmptyOrFullCOctetString::empty(),
        };
        let pdus = specs
            .into_iter()
            .map(|spec| {
                let short_message = OctetString::from_vec(spec.short_message)
                    .map_err(|_| internal("short_message"))?;
                Ok(SubmitSm::builder()
                    .source_addr_ton(Ton::from(config.source.ton))
                    .source_addr_npi(Npi::from(config.source.npi))
                    .source_addr(source.clone())
                    .dest_addr_ton(Ton::International)
                    .dest_addr_npi(Npi::Isdn)
                    .destination_addr(destination_addr.clone())
                    .esm_class(EsmClass::from(spec.esm_class))
                    .protocol_id(spec.protocol_id)
                    .validity_period(validity_period.clone())
                    .registered_delivery(RegisteredDelivery::from(u8::from(wants_receipts)))
                    .data_coding(DataCoding::from(spec.data_coding))
                    .short_message(short_message)
                    .build())
            })
            .collect::<Result<Vec<_>, TransportError>>()?;
        Ok((pdus, wants_receipts))
    }
}

impl Drop for SmppTransport {
    fn drop(&mut self) {
        // The sessions unbind and stop by themselves.
        self.shared.permits.close();
        let _ = self.shutdown.send(true);
    }
}

impl Transport for SmppTransport {
    fn name(&self) -> &'static str {
        "sms"
    }

    fn max_packet_len(&self) -> usize {
        crate::max_packet_len(match self.reference_width {
            ConcatWidth::EightBit => ConcatReference::EightBit(0),
            ConcatWidth::SixteenBit => ConcatReference::SixteenBit(0),
        })
    }

    fn send(&self, message: OutboundMessage) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            if self.shared.core().is_closed() || *self.shutdown.borrow() {
                return Err(TransportError::NotConnected(
                    "SMPP transport shut down".into(),
                ));
            }
            let (pdus, wants_receipts) = self.build(&message)?;
            let permit = self
                .shared
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| TransportError::NotConnected("SMPP transport shut down".into()))?;
            let sequential = message.options.sequential_segments && pdus.len() > 1;
            let msg = Msg::new(
                pdus,
                wants_receipts,
                sequential,
                message.options.urgency,
                permit,
            );
            self.shared.core().add(message.id, msg)?;
            self.shared.work.notify_waiters();
            Ok(())
        })
    }

    fn set_event_sink(&self, sink: Arc<dyn EventSink>) {
        self.shared.core().set_sink(sink);
    }
}
