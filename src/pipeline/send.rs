//! send: the innermost service. Counts the send in the store (refusing to send a command that
//! ended meanwhile), hands the packet to the route's transport and waits for the PoR or the
//! transport's failure. Dropping the wait (timeout) stops the in-memory wait.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use otagw_transport::{Destination, MessageId, SendOptions};
use tower::Service;

use super::{Done, JobError, RoutedJob, SharedDispatcher};
use crate::command::ErrorCode;
use crate::dispatch::{OtaOutcome, SecuredCommand};
use crate::security::{CommandHeader, Counter, KeyIdentifier, PorEnding, Spi};
use crate::store::Store;

/// Which command each send attempt (transport message id) belongs to, for delivery reports.
pub struct MessageLog {
    first: u64,
    next: AtomicU64,
    by_id: Mutex<LogMap>,
}

/// Ids kept after their command's PoR: delivery reports often come after it. The oldest go
/// first once there are more than [`LOG_CAPACITY`].
#[derive(Default)]
struct LogMap {
    map: HashMap<MessageId, (String, String)>,
    order: std::collections::VecDeque<MessageId>,
}

/// Send attempts remembered for their delivery reports.
pub const LOG_CAPACITY: usize = 200_000;

impl MessageLog {
    /// Ids start at `first` (derive it from the clock so they differ across restarts).
    pub fn new(first: u64) -> Self {
        Self {
            first,
            next: AtomicU64::new(first),
            by_id: Mutex::new(LogMap::default()),
        }
    }

    /// A fresh id for a send of command (`account_id`, `command_id`).
    pub fn allocate(&self, account_id: &str, command_id: &str) -> MessageId {
        let id = MessageId(self.next.fetch_add(1, Ordering::Relaxed));
        if let Ok(mut m) = self.by_id.lock() {
            m.map
                .insert(id, (account_id.to_string(), command_id.to_string()));
            m.order.push_back(id);
            while m.order.len() > LOG_CAPACITY {
                if let Some(old) = m.order.pop_front() {
                    m.map.remove(&old);
                }
            }
        }
        id
    }

    /// The command a message id belongs to.
    pub fn command_of(&self, id: MessageId) -> Option<(String, String)> {
        self.by_id.lock().ok().and_then(|m| m.map.get(&id).cloned())
    }

    /// Send attempts so far (ids handed out).
    pub fn allocated(&self) -> u64 {
        self.next.load(Ordering::Relaxed) - self.first
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.by_id.lock().map(|m| m.map.len()).unwrap_or(0)
    }

    /// Whether none are remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The service.
#[derive(Clone)]
pub struct SendService {
    store: Arc<dyn Store>,
    log: Arc<MessageLog>,
    por_timeout: std::time::Duration,
    ended: Arc<super::ended::EndedWatch>,
}

impl SendService {
    /// Over a store, logging message ids in `log`. `por_timeout`: for commands that end on
    /// their delivery (see [`PorEnding`]), how long to wait for the delivery report, and for
    /// PoR-on-error ones how long after it to listen for an error PoR.
    /// `ended` tells a waiting command that it ended elsewhere.
    pub fn new(
        store: Arc<dyn Store>,
        log: Arc<MessageLog>,
        por_timeout: std::time::Duration,
        ended: Arc<super::ended::EndedWatch>,
    ) -> Self {
        Self {
            store,
            log,
            por_timeout,
            ended,
        }
    }
}

/// Stops the in-memory wait when the send future is dropped (timeout) or done.
struct WaitGuard {
    dispatcher: SharedDispatcher,
    id: MessageId,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.dispatcher.forget(self.id);
    }
}

async fn send(
    store: Arc<dyn Store>,
    log: Arc<MessageLog>,
    por_timeout: std::time::Duration,
    ended: Arc<super::ended::EndedWatch>,
    job: RoutedJob,
) -> Result<Done, JobError> {
    let route = &job.route;
    let secured = job.packet.clone();
    let keys = job.keys.clone();
    let record = &job.record;
    let id = log.allocate(&record.account_id, &record.id);
    let guard = WaitGuard {
        dispatcher: route.dispatcher.clone(),
        id,
    };
    let counter = Counter::new(secured.counter).map_err(|e| JobError::Fail {
        code: ErrorCode::SecurityError,
        message: e.to_string(),
    })?;
    let header = CommandHeader {
        spi: Spi::from_bytes(secured.spi),
        kic: KeyIdentifier(secured.kic),
        kid: KeyIdentifier(secured.kid),
        tar: secured.tar,
        counter,
    };
    let now = job.clock.now_ms();
    let validity_minutes = job
        .record
        .expires_at
        .map(|e| ((e - now).max(60_000) / 60_000) as u32);
    // The packet as recorded: a resend never secures it again.
    let command = SecuredCommand::of_packet(
        id,
        Destination {
            msisdn: secured.msisdn.clone(),
            iccid: Some(job.record.iccid.clone()),
        },
        secured.packet.clone(),
        &header,
        &keys,
        SendOptions {
            validity_minutes,
            delivery_report: true,
            sequential_segments: false,
            urgency: job.record.priority.urgency(),
        },
    );
    let ending = command.ending().ok_or_else(|| JobError::Fail {
        code: ErrorCode::InvalidState,
        message: "SPI PoR coding 11 is reserved".into(),
    })?;
    // The record as sent: its send time is what PoR latency is measured from.
    let mut sent = job.record.clone();
    let no_por = |sent: &crate::store::CommandRecord| Done {
        record: sent.clone(),
        secured: secured.clone(),
        por: None,
        ack: otagw_transport::InboundAck::none(),
    };
    // Registered before the packet goes: the report may come at once. A resumed command has
    // its delivery in the store instead.
    let delivered =
        (ending != PorEnding::Por && !job.resume_wait).then(|| route.dispatcher.on_delivered(id));
    let rx = if job.resume_wait {
        if ending != PorEnding::Por {
            // A restart forgot the message ids; the store says whether delivery was seen.
            if job.record.delivered_at.is_none() {
                // Not confirmed: the same packet may go again.
                return Err(JobError::Timeout(std::time::Duration::ZERO));
            }
            if ending == PorEnding::Delivery {
                return Ok(no_por(&sent));
            }
        }
        route.dispatcher.expect(command.pending)
    } else {
        sent.sent_at = Some(now);
        if !store
            .record_send(&record.account_id, &record.id, &job.owner, now)
            .await?
        {
            return Err(JobError::Skipped(
                "ended or taken over before this send".into(),
            ));
        }
        // This send counts: the result (a PoR refusing a resend) says which send it was.
        sent.attempts = record.attempts + 1;
        route
            .dispatcher
            .send(command.message, command.pending)
            .await
            .map_err(JobError::Transport)?
    };
    // The PoR may reach another gateway sharing the store (the SMSC picks the bind), which
    // then ends the command there: the watch's sweep finds it (see `ended`).
    let ended_elsewhere = async {
        match ended.wait(&record.account_id, &record.id).await {
            Ok(status) => status,
            Err(_) => std::future::pending().await,
        }
    };
    // What ends the wait besides the PoR: for commands that end on their delivery, the report
    // (and for PoR-on-error ones the quiet period after it).
    let delivery_end = async {
        if ending == PorEnding::Por {
            return std::future::pending::<Result<(), JobError>>().await;
        }
        if let Some(rx) = delivered {
            if !matches!(tokio::time::timeout(por_timeout, rx).await, Ok(Ok(()))) {
                // No report in time (or no report at all from this transport): the packet may
                // go again, as it was never confirmed delivered.
                return Err(JobError::Timeout(por_timeout));
            }
        }
        if ending == PorEnding::DeliveryThenSilence {
            tokio::time::sleep(por_timeout).await;
        }
        Ok(())
    };
    let outcome = tokio::select! {
        outcome = rx => outcome,
        status = ended_elsewhere => {
            return Err(JobError::Skipped(format!("ended elsewhere as {status}")));
        }
        end = delivery_end => {
            drop(guard);
            return end.map(|()| no_por(&sent));
        }
    };
    drop(guard);
    match outcome {
        Ok(OtaOutcome::Por(por, ack)) => Ok(Done {
            record: sent,
            secured,
            por: Some(por),
            ack,
        }),
        Ok(OtaOutcome::Failed(e)) => Err(JobError::Transport(e)),
        Err(_) => Err(JobError::Skipped("the wait was dropped".into())),
    }
}

impl Service<RoutedJob> for SendService {
    type Response = Done;
    type Error = JobError;
    type Future = Pin<Box<dyn Future<Output = Result<Done, JobError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, job: RoutedJob) -> Self::Future {
        let por_timeout = job.por_timeout.unwrap_or(self.por_timeout);
        Box::pin(send(
            self.store.clone(),
            self.log.clone(),
            por_timeout,
            self.ended.clone(),
            job,
        ))
    }
}
