//! The campaign runtime: leases `RUNNING` campaigns, streams their cards from the store a batch
//! at a time (each batch's counters reserved and rows marked `sending` in one transaction),
//! sends through the gateway's SMS route and records what comes back in batches.
//!
//! Bounded memory: at most `max_in_flight` cards are held (sent, waiting for their PoR), the
//! rest stay in the store. Restart: rows left `sending`/`sent`/`delivered` are taken back first;
//! for each the runner waits for the PoR of the packet already sent, and resends the same
//! packet (same counter, rebuilt byte for byte) only if none comes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use otagw_transport::{
    Destination, InboundAck, MessageId, OutboundMessage, Payload, SendOptions, TransportError,
};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::{card_state, status, CampaignPlan, CampaignSettings, CampaignType};
use crate::clock::now_ms;
use crate::correlation::PendingCommand;
use crate::dispatch::{DispatchNote, OtaOutcome};
use crate::events::{Event, OutboxEvent};
use crate::gateway::Gateway;
use crate::pipeline::resolve::scp80_keys;
use crate::pipeline::route::Route;
use crate::security::{CcScope, DecodedResponse, PorEnding, PorStatus, ResponsePacketView};
use crate::store::campaign::{CampaignRecord, CardUpdate, ClaimedCard};
use crate::store::{Millis, Store};

/// Settings of the runner.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Lease owner (the gateway's id).
    pub owner: String,
    /// Cards claimed per transaction.
    pub claim_batch: u32,
    /// Cards held in memory (sent, waiting for the PoR) at most, per campaign.
    pub max_in_flight: usize,
    /// How long a card's PoR (or a text's delivery report) is waited for.
    pub por_timeout: Duration,
    /// After a restart, how long the PoR of a packet sent before is waited for before the
    /// same packet is sent again.
    pub resume_wait: Duration,
    /// Lease of a campaign without renewal.
    pub lease: Duration,
    /// How often to look for campaigns to run.
    pub poll: Duration,
    /// How often progress goes to webhooks.
    pub progress_every: Duration,
    /// Transient send failures (throttled, not connected) retried per packet.
    pub send_retries: u32,
    /// Cards of a CAT_TP campaign that open no link get their packets over SMS.
    pub catp_fallback_to_sms: bool,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            owner: "otagw".into(),
            claim_batch: 500,
            max_in_flight: 20_000,
            por_timeout: Duration::from_secs(120),
            resume_wait: Duration::from_secs(5),
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(300),
            progress_every: Duration::from_secs(2),
            send_retries: 50,
            catp_fallback_to_sms: false,
        }
    }
}

/// What happened to a campaign's cards in this process (for progress and benchmarks).
#[derive(Debug, Default)]
pub struct Tally {
    /// Cards claimed (counter reserved).
    pub claimed: AtomicU64,
    /// Packets handed to the network.
    pub sent: AtomicU64,
    /// Delivery reports.
    pub delivered: AtomicU64,
    /// Cards ending por_ok (or delivered, for texts).
    pub succeeded: AtomicU64,
    /// Cards ending otherwise.
    pub unsuccessful: AtomicU64,
}

impl Tally {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "claimed": self.claimed.load(Ordering::Relaxed),
            "sent": self.sent.load(Ordering::Relaxed),
            "delivered": self.delivered.load(Ordering::Relaxed),
            "succeeded": self.succeeded.load(Ordering::Relaxed),
            "unsuccessful": self.unsuccessful.load(Ordering::Relaxed),
        })
    }
}

struct Flight {
    campaign_id: i64,
    iteration: i64,
    iccid: String,
    step: i64,
    tally: Arc<Tally>,
    // Texts and packets without PoR end on their delivery report.
    on_delivery: Option<oneshot::Sender<()>>,
}

/// PoRs that matched nothing, kept a while: after a restart the SMSC hands over PoRs of
/// packets sent before it, often before the runner has taken those cards back.
#[derive(Default)]
struct Orphans {
    by_msisdn: HashMap<String, Vec<(Vec<u8>, CcScope)>>,
    order: std::collections::VecDeque<(Millis, String)>,
}

impl Orphans {
    const MAX: usize = 100_000;
    const MAX_AGE_MS: Millis = 600_000;

    fn add(&mut self, msisdn: String, packet: Vec<u8>, scope: CcScope, now: Millis) {
        while self.order.len() >= Self::MAX
            || self
                .order
                .front()
                .is_some_and(|(at, _)| now - at > Self::MAX_AGE_MS)
        {
            let Some((_, m)) = self.order.pop_front() else {
                break;
            };
            if let Some(list) = self.by_msisdn.get_mut(&m) {
                if !list.is_empty() {
                    list.remove(0);
                }
                if list.is_empty() {
                    self.by_msisdn.remove(&m);
                }
            }
        }
        self.order.push_back((now, msisdn.clone()));
        self.by_msisdn
            .entry(msisdn)
            .or_default()
            .push((packet, scope));
    }

    /// The PoR of this packet (same TAR, verifies with its keys, same counter), taken out.
    fn take(&mut self, pending: &PendingCommand<MessageId>) -> Option<DecodedResponse> {
        let list = self
            .by_msisdn
            .get_mut(pending.msisdn.trim_start_matches('+'))?;
        let at = list.iter().position(|(packet, scope)| {
            ResponsePacketView::parse(packet)
                .ok()
                .filter(|v| v.tar == pending.tar)
                .and_then(|v| v.open(&pending.spi, &pending.keys, *scope).ok())
                .is_some_and(|d| d.counter == pending.counter)
        })?;
        let (packet, scope) = list.remove(at);
        let view = ResponsePacketView::parse(&packet).ok()?;
        view.open(&pending.spi, &pending.keys, scope).ok()
    }
}

enum WriterMsg {
    /// A card's row, with the acknowledgement of the PoR it records (if any), which goes
    /// once the row is written.
    Update(CardUpdate, InboundAck),
    Flush(oneshot::Sender<()>),
}

struct Shared {
    store: Arc<dyn Store>,
    transports: Arc<crate::pipeline::route::Transports>,
    /// The gateway runs HTTPS (TLS_TRIGGER campaigns need it).
    https: bool,
    config: RunnerConfig,
    writer: mpsc::Sender<WriterMsg>,
    flights: Mutex<HashMap<MessageId, Flight>>,
    next_id: AtomicU64,
    running: Mutex<HashSet<i64>>,
    tallies: Mutex<HashMap<i64, Arc<Tally>>>,
    orphans: Mutex<Orphans>,
    stopping: AtomicBool,
}

/// The running campaign runner.
pub struct CampaignRunner {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl CampaignRunner {
    /// Starts over the gateway's SMS route; `None` without one.
    pub fn start(gateway: &Gateway, config: RunnerConfig) -> Option<Arc<CampaignRunner>> {
        gateway.transports().route("sms")?;
        let (notes_tx, notes_rx) = mpsc::unbounded_channel();
        gateway.set_note_tap(notes_tx);
        let (writer_tx, writer_rx) = mpsc::channel(100_000);
        let shared = Arc::new(Shared {
            store: gateway.store().clone(),
            transports: gateway.transports().clone(),
            https: gateway.offers("https"),
            config,
            writer: writer_tx,
            flights: Mutex::new(HashMap::new()),
            // Disjoint from the engine's message ids: the top bit set, then the clock.
            next_id: AtomicU64::new((1 << 63) | ((now_ms() as u64) << 16)),
            running: Mutex::new(HashSet::new()),
            tallies: Mutex::new(HashMap::new()),
            orphans: Mutex::new(Orphans::default()),
            stopping: AtomicBool::new(false),
        });
        let tasks = vec![
            tokio::spawn(writer(shared.store.clone(), writer_rx)),
            tokio::spawn(notes(shared.clone(), notes_rx)),
            tokio::spawn(supervise(shared.clone())),
        ];
        Some(Arc::new(CampaignRunner {
            shared,
            tasks: Mutex::new(tasks),
        }))
    }

    /// This process's tally of a campaign it runs or ran.
    pub fn tally(&self, campaign_id: i64) -> Option<Arc<Tally>> {
        self.shared
            .tallies
            .lock()
            .ok()
            .and_then(|t| t.get(&campaign_id).cloned())
    }

    /// Cards held in memory now.
    pub fn in_flight(&self) -> usize {
        self.shared.flights.lock().map(|f| f.len()).unwrap_or(0)
    }

    /// Stops: no more claims; what is in flight stays in the store for the next start.
    pub async fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let tasks = self
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Writes an event that reports no stored state change of its own (a campaign running again,
/// its progress) to the outbox.
async fn publish(shared: &Shared, account_id: &str, event: Event) {
    let e = OutboxEvent {
        account_id: account_id.to_string(),
        event,
        at: now_ms(),
    };
    if let Err(err) = shared.store.append_events(&[e]).await {
        tracing::warn!(error = %err, "campaign event not written to the outbox");
    }
}

fn ms(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Group commit: updates queue here and are written many per transaction.
async fn writer(store: Arc<dyn Store>, mut rx: mpsc::Receiver<WriterMsg>) {
    const MAX_BATCH: usize = 4000;
    let mut updates = Vec::with_capacity(MAX_BATCH);
    let mut acks = Vec::new();
    let mut por_acks = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                WriterMsg::Update(u, ack) => {
                    updates.push(u);
                    if !ack.is_none() {
                        por_acks.push(ack);
                    }
                }
                WriterMsg::Flush(a) => acks.push(a),
            }
            if updates.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let mut delay = Duration::from_millis(50);
        while !updates.is_empty() {
            match store.update_campaign_cards(&updates, now_ms()).await {
                Ok(_) => updates.clear(),
                Err(e) => {
                    // Keep them: a card's result is never dropped for a passing failure.
                    tracing::error!("campaign updates not written, retrying: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        // Written: the PoRs these rows record may be acknowledged to the network now.
        por_acks.clear();
        for a in acks.drain(..) {
            let _ = a.send(());
        }
    }
}

/// Waits until everything queued before is written.
async fn flush(shared: &Shared) {
    let (tx, rx) = oneshot::channel();
    if shared.writer.send(WriterMsg::Flush(tx)).await.is_ok() {
        let _ = rx.await;
    }
}

async fn record(shared: &Shared, update: CardUpdate) {
    record_por(shared, update, InboundAck::none()).await;
}

/// Records `update`, which holds a PoR's result: `ack` goes when the row is written.
async fn record_por(shared: &Shared, update: CardUpdate, ack: InboundAck) {
    let _ = shared.writer.send(WriterMsg::Update(update, ack)).await;
}

async fn notes(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<DispatchNote>) {
    while let Some(note) = rx.recv().await {
        let (id, state) = match note {
            DispatchNote::CardPacket { .. } => continue,
            DispatchNote::Accepted { id, .. } => (id, card_state::SENT),
            DispatchNote::Delivered { id } => (id, card_state::DELIVERED),
            DispatchNote::UnmatchedPor {
                from,
                packet,
                scope,
                ..
            } => {
                // Kept in memory only (the gateway acknowledged it): a card resumed after a
                // restart takes it within `resume_wait`. A second stop in between loses it;
                // the card then reads "PoR lost in a restart".
                if let Ok(mut o) = shared.orphans.lock() {
                    let msisdn = from.trim_start_matches('+').to_string();
                    o.add(msisdn, packet, scope, now_ms());
                }
                continue;
            }
        };
        let update = {
            let Ok(mut flights) = shared.flights.lock() else {
                continue;
            };
            let Some(f) = flights.get_mut(&id) else {
                continue;
            };
            if state == card_state::DELIVERED {
                f.tally.delivered.fetch_add(1, Ordering::Relaxed);
                if let Some(tx) = f.on_delivery.take() {
                    let _ = tx.send(());
                    continue;
                }
            }
            CardUpdate {
                campaign_id: f.campaign_id,
                iteration: f.iteration,
                iccid: f.iccid.clone(),
                state: state.into(),
                progress: card_state::progress(f.step, state, false),
                step: f.step,
                done: false,
                counter: None,
                detail: None,
            }
        };
        record(&shared, update).await;
    }
}

async fn supervise(shared: Arc<Shared>) {
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let now = now_ms();
        match shared
            .store
            .lease_campaigns(&shared.config.owner, now, now + ms(shared.config.lease))
            .await
        {
            Ok(campaigns) => {
                for c in campaigns {
                    let fresh = shared
                        .running
                        .lock()
                        .map(|mut r| r.insert(c.id))
                        .unwrap_or(false);
                    if fresh {
                        tokio::spawn(run_campaign(shared.clone(), c));
                    }
                }
            }
            Err(e) => tracing::warn!("campaign lease: {e}"),
        }
        tokio::time::sleep(shared.config.poll).await;
    }
}

/// Campaign and iteration a card task works for.
#[derive(Clone)]
struct Run {
    id: i64,
    account_id: String,
    route: Route,
    framing: crate::security::command::PacketFraming,
    iteration: i64,
    plan: Arc<CampaignPlan>,
    tally: Arc<Tally>,
    /// CAT_TP campaigns with `[catp] fallback_to_sms`: SMS, with the plan cut for SMS, for
    /// the cards that open no link.
    fallback: Option<Leg>,
}

/// A transport a card's packets go over, and the plan cut for its packet size.
#[derive(Clone)]
struct Leg {
    route: Route,
    framing: crate::security::command::PacketFraming,
    plan: Arc<CampaignPlan>,
}

struct Running(Arc<Shared>, i64);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut r) = self.0.running.lock() {
            r.remove(&self.1);
        }
    }
}

async fn run_campaign(shared: Arc<Shared>, campaign: CampaignRecord) {
    let _running = Running(shared.clone(), campaign.id);
    let id = campaign.id;
    let transport = campaign_transport(&shared, &campaign).await;
    let Some(route) = shared.transports.route(&transport).cloned() else {
        return;
    };
    let framing = match route.dispatcher.transport().packet_format() {
        otagw_transport::PacketFormat::CatTp => crate::security::command::PacketFraming::CatTp,
        otagw_transport::PacketFormat::Sms => crate::security::command::PacketFraming::Sms,
    };
    let budget = shared.transports.max_script_len(&transport);
    tracing::info!(campaign = id, iteration = campaign.iteration, %transport, "campaign running");
    let plan = match plan_of(&shared, &campaign, budget).await {
        Ok(p) => Arc::new(p),
        Err(reason) => {
            tracing::error!("campaign {id} cannot run: {reason}");
            let terminated = Event::CampaignTerminated {
                campaign_id: id,
                iteration: campaign.iteration,
                reason: Some(reason),
                cards: None,
            };
            let _ = shared
                .store
                .set_campaign_status(
                    id,
                    &[status::RUNNING],
                    status::TERMINATED,
                    now_ms(),
                    &[terminated],
                )
                .await;
            return;
        }
    };
    let fallback = match shared.transports.route("sms") {
        Some(sms) if transport == "catp" && shared.config.catp_fallback_to_sms => {
            match plan_of(&shared, &campaign, shared.transports.max_script_len("sms")).await {
                Ok(p) => Some(Leg {
                    route: sms.clone(),
                    framing: crate::security::command::PacketFraming::Sms,
                    plan: Arc::new(p),
                }),
                Err(reason) => {
                    tracing::warn!("campaign {id}: no SMS fallback: {reason}");
                    None
                }
            }
        }
        _ => None,
    };
    let tally = {
        let mut t = shared.tallies.lock().unwrap_or_else(|p| p.into_inner());
        t.entry(id).or_default().clone()
    };
    let run = Run {
        id,
        account_id: campaign.account_id.clone(),
        route,
        framing,
        iteration: campaign.iteration,
        plan: plan.clone(),
        tally: tally.clone(),
        fallback,
    };
    let keys = plan.claim_keys();
    // HTTPS cards each hold a session and are followed through the store: fewer at once.
    let limit = if plan.campaign_type.is_tls() {
        shared.config.max_in_flight.clamp(1, 500)
    } else {
        shared.config.max_in_flight.max(1)
    };
    let permits = Arc::new(Semaphore::new(limit));
    publish(
        &shared,
        &campaign.account_id,
        Event::CampaignRunning {
            campaign_id: id,
            iteration: campaign.iteration,
        },
    )
    .await;
    let mut last_progress = tokio::time::Instant::now();
    // Cards an earlier run left in flight.
    let mut after = String::new();
    loop {
        let rows = match shared
            .store
            .in_flight_campaign_cards(
                id,
                campaign.iteration,
                &after,
                shared.config.claim_batch,
                keys,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("campaign {id}: resume: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(last) = rows.last() else { break };
        after = last.iccid.clone();
        for card in rows {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            tokio::spawn(card_task(shared.clone(), run.clone(), card, true, permit));
        }
    }
    let deadline = (plan.validity_minutes > 0).then(|| {
        campaign.started_at.unwrap_or(campaign.created_at)
            + i64::from(plan.validity_minutes) * 60_000
    });
    let mut after = String::new();
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        match shared.store.campaign(&campaign.account_id, id).await {
            Ok(Some(c)) if c.status == status::RUNNING && c.iteration == campaign.iteration => {}
            Ok(_) => break,
            Err(e) => {
                tracing::warn!("campaign {id}: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        if deadline.is_some_and(|d| now_ms() > d) {
            let _ = shared
                .store
                .expire_campaign_cards(id, campaign.iteration, now_ms())
                .await;
            break;
        }
        let Ok(first) = permits.clone().acquire_owned().await else {
            return;
        };
        let room = (permits.available_permits() + 1).min(shared.config.claim_batch as usize);
        let rows = match shared
            .store
            .claim_campaign_cards(id, campaign.iteration, &after, room as u32, keys, now_ms())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("campaign {id}: claim: {e}");
                drop(first);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(last) = rows.last() else { break };
        after = last.iccid.clone();
        tally
            .claimed
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        let mut first = Some(first);
        for card in rows {
            let permit = match first.take() {
                Some(p) => p,
                None => match permits.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            tokio::spawn(card_task(shared.clone(), run.clone(), card, false, permit));
        }
        if last_progress.elapsed() >= shared.config.progress_every {
            last_progress = tokio::time::Instant::now();
            let totals = tally.json().as_object().cloned().unwrap_or_default();
            publish(
                &shared,
                &campaign.account_id,
                Event::CampaignProgress {
                    campaign_id: id,
                    iteration: campaign.iteration,
                    totals,
                },
            )
            .await;
        }
    }
    // Every card in flight ends (PoR, failure or timeout) before the campaign does.
    let Ok(_all) = permits.acquire_many(limit as u32).await else {
        return;
    };
    if shared.stopping.load(Ordering::SeqCst) {
        return;
    }
    flush(&shared).await;
    // Every card has ended: the totals are final, and go out with the status change.
    let totals = shared.store.campaign_totals(id).await.unwrap_or_default();
    let states: serde_json::Map<String, serde_json::Value> = totals
        .iter()
        .filter(|t| t.iteration == campaign.iteration)
        .map(|t| (t.state.clone(), t.cards.into()))
        .collect();
    let completed_event = Event::CampaignCompleted {
        campaign_id: id,
        iteration: campaign.iteration,
        cards: states.clone(),
    };
    let completed = shared
        .store
        .set_campaign_status(
            id,
            &[status::RUNNING],
            status::COMPLETED,
            now_ms(),
            &[completed_event],
        )
        .await
        .unwrap_or(false);
    if completed {
        tracing::info!(campaign = id, iteration = campaign.iteration, cards = %serde_json::Value::Object(states), "campaign completed");
    }
    // Not completed: stopped meanwhile (whoever stopped it wrote `campaign.terminated`).
}

/// The transport a campaign's RFM / RAM packets take: its profile's default when that is
/// CAT_TP and the gateway runs it, else SMS (texts and HTTPS triggers always go by SMS).
async fn campaign_transport(shared: &Shared, c: &CampaignRecord) -> String {
    let by_sms = matches!(c.campaign_type.as_str(), "RFM" | "RAM");
    if by_sms && shared.transports.knows("catp") {
        if let Ok(Some(p)) = shared.store.profile(&c.account_id, c.profile_id).await {
            if p.defaults.transport.as_deref() == Some("catp") {
                return "catp".into();
            }
        }
    }
    "sms".into()
}

async fn plan_of(
    shared: &Shared,
    c: &CampaignRecord,
    budget: usize,
) -> Result<CampaignPlan, String> {
    let settings: CampaignSettings =
        serde_json::from_str(&c.settings).map_err(|e| format!("settings: {e}"))?;
    let campaign_type: CampaignType = c.campaign_type.parse()?;
    let applet = match &settings.applet {
        Some(a) => Some(
            shared
                .store
                .applet(&c.account_id, a)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("applet {a} is gone"))?
                .content,
        ),
        None => None,
    };
    CampaignPlan::new(campaign_type, &settings, applet.as_deref(), budget)
        .map_err(|e| format!("{}: {}", e.field, e.problem))
}

/// How a card's work ended.
struct End {
    step: i64,
    state: &'static str,
    detail: String,
    /// The transport never reached the card (a CAT_TP card that opened no link).
    unreached: bool,
    /// The acknowledgement of the PoR this end records, sent once it is written.
    ack: InboundAck,
}

impl End {
    fn new(step: i64, state: &'static str, detail: impl Into<String>) -> Self {
        Self {
            step,
            state,
            detail: detail.into(),
            unreached: false,
            ack: InboundAck::none(),
        }
    }

    fn acknowledging(mut self, ack: InboundAck) -> Self {
        self.ack = ack;
        self
    }
}

async fn card_task(
    shared: Arc<Shared>,
    run: Run,
    card: ClaimedCard,
    resume: bool,
    _permit: OwnedSemaphorePermit,
) {
    let iccid = card.iccid.clone();
    let end = run_card(&shared, &run, card, resume).await;
    let succeeded = matches!(end.state, card_state::POR_OK | card_state::DELIVERED);
    if succeeded {
        run.tally.succeeded.fetch_add(1, Ordering::Relaxed);
    } else {
        run.tally.unsuccessful.fetch_add(1, Ordering::Relaxed);
    }
    record_por(
        &shared,
        CardUpdate {
            campaign_id: run.id,
            iteration: run.iteration,
            iccid,
            state: end.state.into(),
            progress: card_state::progress(end.step, end.state, true),
            step: end.step,
            done: true,
            counter: None,
            detail: Some(end.detail),
        },
        end.ack,
    )
    .await;
}

fn next_id(shared: &Shared) -> MessageId {
    MessageId(shared.next_id.fetch_add(1, Ordering::Relaxed))
}

/// Hands a message to the network, retrying transient refusals with the same bytes.
async fn hand_over(
    shared: &Shared,
    route: &Route,
    message: &OutboundMessage,
    pending: Option<&crate::correlation::PendingCommand<MessageId>>,
) -> Result<Option<oneshot::Receiver<OtaOutcome>>, TransportError> {
    let mut attempt = 0;
    let mut delay = Duration::from_millis(20);
    loop {
        route.rate.wait().await;
        let result = match pending {
            Some(p) => route
                .dispatcher
                .send(message.clone(), p.clone())
                .await
                .map(Some),
            None => route
                .dispatcher
                .transport()
                .send(message.clone())
                .await
                .map(|_| None),
        };
        match result {
            Err(e) if e.is_transient() && attempt < shared.config.send_retries => {
                attempt += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

fn flight(
    shared: &Shared,
    run: &Run,
    id: MessageId,
    iccid: &str,
    step: i64,
) -> oneshot::Receiver<()> {
    let (tx, rx) = oneshot::channel();
    if let Ok(mut f) = shared.flights.lock() {
        f.insert(
            id,
            Flight {
                campaign_id: run.id,
                iteration: run.iteration,
                iccid: iccid.to_string(),
                step,
                tally: run.tally.clone(),
                on_delivery: Some(tx),
            },
        );
    }
    rx
}

fn land(shared: &Shared, id: MessageId) {
    if let Ok(mut f) = shared.flights.lock() {
        f.remove(&id);
    }
}

async fn run_card(shared: &Shared, run: &Run, card: ClaimedCard, resume: bool) -> End {
    let plan = &run.plan;
    let step = card.step;
    let Some(msisdn) = card.msisdn.clone() else {
        return End::new(step, card_state::FAILED, "the card has no MSISDN");
    };
    let options = SendOptions {
        validity_minutes: (plan.validity_minutes > 0).then_some(plan.validity_minutes),
        delivery_report: true,
        sequential_segments: plan.sequential,
        // Campaign traffic yields to single commands queued on the same bind.
        urgency: otagw_transport::Urgency::Bulk,
    };
    if plan.campaign_type.is_tls() {
        return run_https(shared, run, &card).await;
    }
    if plan.campaign_type.is_text() {
        if resume && card.state == card_state::DELIVERED {
            return End::new(0, card_state::DELIVERED, "delivered");
        }
        let sent_before = resume && card.state != card_state::SENDING;
        return run_text(shared, run, &card.iccid, &msisdn, options, sent_before).await;
    }
    let (Some(kic_set), Some(kid_set)) = (&card.kic_set, &card.kid_set) else {
        return End::new(
            step,
            card_state::FAILED,
            format!(
                "the card lacks key set version {} or {}",
                plan.kic >> 4,
                plan.kid >> 4
            ),
        );
    };
    let keys = match scp80_keys(&plan.spi, plan.kic, plan.kid, kic_set, kid_set) {
        Ok(k) => k,
        Err(e) => return End::new(step, card_state::FAILED, format!("keys: {e}")),
    };
    let Some(counter) = card.counter else {
        return End::new(step, card_state::FAILED, "no counter reserved");
    };
    // A card resumed at SMS_FALLBACK_STEP or later had gone over to SMS: it stays there.
    let (step, counter, resume) = if step < SMS_FALLBACK_STEP {
        let primary = Leg {
            route: run.route.clone(),
            framing: run.framing,
            plan: run.plan.clone(),
        };
        let end = run_leg(
            shared, run, &primary, &card, &msisdn, &options, &keys, 0, step, counter, resume,
        )
        .await;
        // A card that opened no CAT_TP link for its first packet never got anything: it goes
        // over SMS, secured anew (a new counter, the plan cut for SMS). Its row's steps move
        // to SMS_FALLBACK_STEP on, so that a restart resumes it on SMS, never on CAT_TP again.
        if run.fallback.is_none() || !end.unreached || end.step != 0 {
            return end;
        }
        match next_counter(shared, run, &card.iccid, SMS_FALLBACK_STEP).await {
            Ok(c) => (SMS_FALLBACK_STEP, c, false),
            Err(e) => return End::new(step, card_state::FAILED, e),
        }
    } else {
        (step, counter, resume)
    };
    let Some(fallback) = run.fallback.as_ref() else {
        return End::new(
            step,
            card_state::FAILED,
            "the card was falling back to SMS, which is off now",
        );
    };
    let mut end = run_leg(
        shared,
        run,
        fallback,
        &card,
        &msisdn,
        &options,
        &keys,
        SMS_FALLBACK_STEP,
        step - SMS_FALLBACK_STEP,
        counter,
        resume,
    )
    .await;
    end.step += SMS_FALLBACK_STEP;
    end.detail = format!("over SMS (no CAT_TP link): {}", end.detail);
    end
}

/// Steps recorded from here on are those of the SMS fallback's plan (step - this).
pub const SMS_FALLBACK_STEP: i64 = 1_000_000;

/// Runs a card's packets from `step` on over one transport; `counter` is the one reserved for
/// the packet at `step`. The card's row records steps from `step_base` on.
#[allow(clippy::too_many_arguments)]
async fn run_leg(
    shared: &Shared,
    run: &Run,
    leg: &Leg,
    card: &ClaimedCard,
    msisdn: &str,
    options: &SendOptions,
    keys: &crate::security::Scp80Keys,
    step_base: i64,
    step: i64,
    counter: u64,
    resume: bool,
) -> End {
    let plan = &leg.plan;
    let mut counter = counter;
    let scripts = match plan.scripts_for(card.data.as_deref()) {
        Ok(s) => s,
        Err(e) => return End::new(step, card_state::FAILED, e),
    };
    let mut step = step;
    let mut resume = resume;
    loop {
        let Some(script) = usize::try_from(step).ok().and_then(|s| scripts.get(s)) else {
            return End::new(
                step,
                card_state::FAILED,
                format!("no message {step} in the plan"),
            );
        };
        let header = match plan.header(counter) {
            Ok(h) => h,
            Err(e) => return End::new(step, card_state::FAILED, e),
        };
        let id = next_id(shared);
        let destination = Destination {
            msisdn: msisdn.to_string(),
            iccid: Some(card.iccid.clone()),
        };
        let secured = match crate::dispatch::secure_command(
            id,
            destination,
            &header,
            keys,
            script,
            leg.framing,
            options.clone(),
        ) {
            Ok(s) => s,
            Err(e) => return End::new(step, card_state::FAILED, format!("securing: {e}")),
        };
        let delivered = flight(shared, run, id, &card.iccid, step_base + step);
        let outcome = if plan.expects_por() {
            let mut early = None;
            if resume {
                // The packet may have reached the card before the restart: its PoR first,
                // whether it came in already or comes now.
                let rx = leg.route.dispatcher.expect(secured.pending.clone());
                let orphan = |shared: &Shared| {
                    shared
                        .orphans
                        .lock()
                        .ok()
                        .and_then(|mut o| o.take(&secured.pending))
                };
                if let Some(d) = orphan(shared) {
                    leg.route.dispatcher.forget(id);
                    early = Some(OtaOutcome::Por(d, InboundAck::none()));
                } else {
                    match tokio::time::timeout(shared.config.resume_wait, rx).await {
                        Ok(Ok(o)) => early = Some(o),
                        _ => {
                            leg.route.dispatcher.forget(id);
                            early = orphan(shared).map(|d| OtaOutcome::Por(d, InboundAck::none()));
                        }
                    }
                }
            }
            match early {
                Some(o) => Wait::Outcome(o),
                None => {
                    match hand_over(shared, &leg.route, &secured.message, Some(&secured.pending))
                        .await
                    {
                        Ok(Some(rx)) => {
                            run.tally.sent.fetch_add(1, Ordering::Relaxed);
                            let wait = shared.config.por_timeout;
                            if plan.spi.por.ending() == Some(PorEnding::DeliveryThenSilence) {
                                // PoR on error only (TS 102 225 5.1.1): an error PoR ends the
                                // card; delivery and then the PoR wait in silence is success.
                                let silence = async {
                                    match tokio::time::timeout(wait, delivered).await {
                                        Ok(Ok(())) => {
                                            tokio::time::sleep(wait).await;
                                            Wait::Delivered(format!(
                                                "delivered; no error PoR within {} s (PoR on \
                                                 error only)",
                                                wait.as_secs()
                                            ))
                                        }
                                        _ => Wait::Fail(format!(
                                            "no delivery report within {} s",
                                            wait.as_secs()
                                        )),
                                    }
                                };
                                tokio::select! {
                                    o = rx => o.map_or_else(
                                        |_| Wait::Fail("the dispatcher stopped".to_string()),
                                        Wait::Outcome,
                                    ),
                                    quiet = silence => {
                                        leg.route.dispatcher.forget(id);
                                        quiet
                                    }
                                }
                            } else {
                                match tokio::time::timeout(wait, rx).await {
                                    Ok(Ok(o)) => Wait::Outcome(o),
                                    Ok(Err(_)) => Wait::Fail("the dispatcher stopped".to_string()),
                                    Err(_) => {
                                        leg.route.dispatcher.forget(id);
                                        Wait::Fail(format!("no PoR within {} s", wait.as_secs()))
                                    }
                                }
                            }
                        }
                        Ok(None) => Wait::Fail("no PoR receiver".to_string()),
                        Err(e) => Wait::Outcome(OtaOutcome::Failed(e)),
                    }
                }
            }
        } else {
            // No PoR asked: the delivery report ends the packet.
            match hand_over(shared, &leg.route, &secured.message, None).await {
                Ok(_) => {
                    run.tally.sent.fetch_add(1, Ordering::Relaxed);
                    match tokio::time::timeout(shared.config.por_timeout, delivered).await {
                        Ok(Ok(())) => Wait::Delivered("delivered (no PoR asked)".to_string()),
                        _ => Wait::Fail(format!(
                            "no delivery report within {} s",
                            shared.config.por_timeout.as_secs()
                        )),
                    }
                }
                Err(e) => Wait::Outcome(OtaOutcome::Failed(e)),
            }
        };
        land(shared, id);
        match outcome {
            // Nothing more is awaited from the card: the next step, or the card is done.
            Wait::Delivered(detail) => {
                if step + 1 < scripts.len() as i64 {
                    step += 1;
                    match next_counter(shared, run, &card.iccid, step_base + step).await {
                        Ok(c) => counter = c,
                        Err(e) => return End::new(step, card_state::FAILED, e),
                    }
                    resume = false;
                    continue;
                }
                return End::new(step, card_state::DELIVERED, detail);
            }
            Wait::Outcome(OtaOutcome::Por(resp, ack)) => {
                if resume && resp.status == PorStatus::CounterLow {
                    // The resend of a packet sent before the restart: the card had it
                    // already (its counter is never used for another packet), so it ran it;
                    // the PoR of that run was lost with the old process.
                    return End::new(
                        step,
                        card_state::FAILED,
                        "PoR lost in a restart: the card had already received this packet \
                         (it answered the resend with counter low); its result is unknown",
                    )
                    .acknowledging(ack);
                }
                if resp.status != PorStatus::Ok {
                    return End::new(
                        step,
                        card_state::POR_ERROR,
                        format!(
                            "PoR status {:02X} {}",
                            resp.status.to_byte(),
                            resp.status_name
                        ),
                    )
                    .acknowledging(ack);
                }
                match plan.check_response(&resp.data) {
                    Ok(detail) => {
                        if step + 1 < scripts.len() as i64 {
                            step += 1;
                            // The next step's row, written before the PoR is acknowledged,
                            // says this step is done.
                            match next_counter(shared, run, &card.iccid, step_base + step).await {
                                Ok(c) => counter = c,
                                Err(e) => {
                                    return End::new(step, card_state::FAILED, e).acknowledging(ack)
                                }
                            }
                            drop(ack);
                            resume = false;
                            continue;
                        }
                        return End::new(step, card_state::POR_OK, detail).acknowledging(ack);
                    }
                    Err(reason) => {
                        return End::new(step, card_state::POR_ERROR, reason).acknowledging(ack)
                    }
                }
            }
            Wait::Outcome(OtaOutcome::Failed(e)) => {
                let mut end = End::new(step, card_state::FAILED, e.to_string());
                end.unreached = leg.framing == crate::security::command::PacketFraming::CatTp
                    && matches!(e, otagw_transport::TransportError::Timeout(_));
                return end;
            }
            Wait::Fail(reason) => return End::new(step, card_state::FAILED, reason),
        }
    }
}

/// How a card's wait for its packet's answer ended.
enum Wait {
    /// The card's PoR, or the transport's failure.
    Outcome(OtaOutcome),
    /// Delivered, and nothing more is awaited (no PoR asked, or none came on error only).
    Delivered(String),
    /// No answer: why.
    Fail(String),
}

/// Reserves the next message's counter and records it (durably) before the message goes.
async fn next_counter(shared: &Shared, run: &Run, iccid: &str, step: i64) -> Result<u64, String> {
    let version = run.plan.claim_keys().counter_version;
    let counter = shared
        .store
        .reserve_counter(iccid, version)
        .await
        .map_err(|e| format!("counter: {e}"))?;
    record(
        shared,
        CardUpdate {
            campaign_id: run.id,
            iteration: run.iteration,
            iccid: iccid.to_string(),
            state: card_state::SENDING.into(),
            progress: card_state::progress(step, card_state::SENDING, false),
            step,
            done: false,
            counter: Some(counter),
            detail: None,
        },
    )
    .await;
    flush(shared).await;
    Ok(counter)
}

async fn run_text(
    shared: &Shared,
    run: &Run,
    iccid: &str,
    msisdn: &str,
    options: SendOptions,
    sent_before: bool,
) -> End {
    if sent_before {
        // Handed over before a restart: its delivery report went to the earlier run.
        return End::new(
            0,
            card_state::SENT,
            "sent before a restart; its delivery report is unknown",
        );
    }
    let id = next_id(shared);
    let message = OutboundMessage {
        id,
        destination: Destination {
            msisdn: msisdn.to_string(),
            iccid: Some(iccid.to_string()),
        },
        payload: Payload::Text {
            text: run.plan.message.clone().unwrap_or_default(),
            flash: run.plan.campaign_type == CampaignType::Flash,
        },
        options,
    };
    let delivered = flight(shared, run, id, iccid, 0);
    let end = match hand_over(shared, &run.route, &message, None).await {
        Ok(_) => {
            run.tally.sent.fetch_add(1, Ordering::Relaxed);
            match tokio::time::timeout(shared.config.por_timeout, delivered).await {
                Ok(Ok(())) => End::new(0, card_state::DELIVERED, "delivered"),
                _ => End::new(
                    0,
                    card_state::SENT,
                    format!(
                        "no delivery report within {} s",
                        shared.config.por_timeout.as_secs()
                    ),
                ),
            }
        }
        Err(e) => End::new(0, card_state::FAILED, e.to_string()),
    };
    land(shared, id);
    end
}

/// TLS_TRIGGER_RFM / TLS_TRIGGER_RAM: one command per card over the HTTPS transport (trigger
/// SMS, the card's PSK-TLS session, the script in chunks), followed in the store. Its id is
/// derived from the campaign, iteration and card, so a restart finds it instead of adding
/// another.
async fn run_https(shared: &Shared, run: &Run, card: &ClaimedCard) -> End {
    use crate::command::{CommandStatus, OtaCommandRequest};
    let plan = &run.plan;
    if !shared.https {
        // Not sent by SMS in its place while saying HTTPS: the card fails, saying why.
        return End::new(
            0,
            card_state::FAILED,
            "this gateway has no HTTPS transport ([https] not configured)".to_string(),
        );
    }
    let lines = match plan.command_lines(card.data.as_deref()) {
        Ok(l) => l,
        Err(e) => return End::new(0, card_state::FAILED, e),
    };
    let request = serde_json::json!({
        "type": if plan.campaign_type.is_ram() { "RAM" } else { "RFM" },
        "target": {"iccid": card.iccid},
        "security": {
            "spi": hex::encode_upper(plan.spi.to_bytes()),
            "kic": format!("{:02X}", plan.kic),
            "kid": format!("{:02X}", plan.kid),
            "tar": hex::encode_upper(plan.tar),
        },
        "data": {"apdus": lines},
        "transport": "https",
    });
    let req: OtaCommandRequest = match serde_json::from_value(request.clone()) {
        Ok(r) => r,
        Err(e) => return End::new(0, card_state::FAILED, format!("command: {e}")),
    };
    let id = format!("campaign-{}-{}-{}", run.id, run.iteration, card.iccid);
    let now = now_ms();
    let command = crate::store::NewCommand {
        id: id.clone(),
        account_id: run.account_id.clone(),
        batch_id: None,
        command_type: req.command_type,
        iccid: card.iccid.clone(),
        transport: "https".into(),
        priority: req.priority.unwrap_or_default(),
        request,
        expires_at: (plan.validity_minutes > 0)
            .then(|| now + i64::from(plan.validity_minutes) * 60_000),
        created_at: now,
    };
    match shared.store.insert_command(&command).await {
        Ok(()) => {}
        Err(crate::store::StoreError::Duplicate { .. }) => {}
        Err(e) => return End::new(0, card_state::FAILED, format!("storing the command: {e}")),
    }
    run.tally.sent.fetch_add(1, Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + shared.config.por_timeout * 4;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let record = match shared.store.command_by_id(&run.account_id, &id).await {
            Ok(Some(r)) => r,
            Ok(None) => return End::new(0, card_state::FAILED, format!("command {id} is gone")),
            Err(e) => {
                tracing::warn!("campaign {}: {e}", run.id);
                continue;
            }
        };
        if record.status.is_terminal() {
            return match record.status {
                CommandStatus::Success => {
                    let last = record
                        .response
                        .as_ref()
                        .and_then(|r| r.status_words.last())
                        .map(|s| s.sw.to_uppercase());
                    match (plan.expected_last_sw, last) {
                        (Some(want), Some(sw)) if sw != format!("{want:04X}") => End::new(
                            0,
                            card_state::POR_ERROR,
                            format!("last status word {sw}, expected {want:04X} (command {id})"),
                        ),
                        _ => End::new(
                            0,
                            card_state::POR_OK,
                            format!("HTTPS session, command {id}"),
                        ),
                    }
                }
                other => End::new(
                    0,
                    card_state::FAILED,
                    format!(
                        "command {id} {other}: {}",
                        record.error.map(|e| e.message).unwrap_or_default()
                    ),
                ),
            };
        }
        if tokio::time::Instant::now() > deadline {
            return End::new(
                0,
                card_state::FAILED,
                format!("command {id} did not end in time"),
            );
        }
    }
}
