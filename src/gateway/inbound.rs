//! Inbound notes from the network: delivery reports, PoRs matched in memory or, after a
//! restart or for another gateway's command, in the store.

use std::sync::Arc;

use otagw_transport::InboundAck;
use tokio::sync::mpsc;

use crate::dispatch::DispatchNote;
use crate::pipeline::Done;
use crate::security::{CcScope, ResponsePacketView, Scp80Keys, Spi};
use crate::store::Store;

use super::{finish_with_por, Shared};

pub(super) async fn notes(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<DispatchNote>) {
    let mut batch = Vec::with_capacity(NOTES_PER_BATCH);
    // A note and those that came meanwhile: their store writes go out together, so they
    // share a group commit instead of one commit (an fsync on SQLite) each. They are queued
    // in arrival order, so a command's ACCEPTED is written before its delivery.
    while rx.recv_many(&mut batch, NOTES_PER_BATCH).await > 0 {
        let writes: Vec<NoteWrite> = batch
            .drain(..)
            .filter_map(|note| note_write(&shared, note))
            .collect();
        futures::future::join_all(writes).await;
    }
}

/// Notes taken at once at most.
const NOTES_PER_BATCH: usize = 512;

type NoteWrite = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Handles a note; the store write it needs, if any, to be awaited with its batch's.
fn note_write(shared: &Arc<Shared>, note: DispatchNote) -> Option<NoteWrite> {
    match note {
        DispatchNote::Accepted { id, network_refs } => {
            let Some((account, command)) = shared.log.command_of(id) else {
                tap(shared, DispatchNote::Accepted { id, network_refs });
                return None;
            };
            let shared = shared.clone();
            Some(Box::pin(async move {
                let _ = shared
                    .store
                    .add_event(
                        &account,
                        &command,
                        "ACCEPTED",
                        &network_refs.join(","),
                        shared.now(),
                    )
                    .await;
            }))
        }
        DispatchNote::Delivered { id } => {
            let Some((account, command)) = shared.log.command_of(id) else {
                tap(shared, DispatchNote::Delivered { id });
                return None;
            };
            let shared = shared.clone();
            Some(Box::pin(async move {
                let at = shared.now();
                if let Ok(true) = shared.store.record_delivery(&account, &command, at).await {
                    shared.metrics.delivered();
                }
            }))
        }
        DispatchNote::CardPacket { from, packet, ack } => {
            card_packet(shared, super::CardPacket { from, packet, ack });
            None
        }
        DispatchNote::UnmatchedPor {
            from,
            packet,
            scope,
            reason,
            ack,
        } => {
            let shared = shared.clone();
            tokio::spawn(async move {
                // Matched, the PoR is recorded before its acknowledgement goes.
                let Some(ack) = match_in_store(&shared, &from, &packet, scope, ack).await else {
                    return;
                };
                shared.metrics.unmatched_por();
                tracing::debug!("PoR from {from} matches no command: {reason}");
                // Acknowledged now: no command waits for it. Campaign cards resumed after
                // a restart look for theirs among these (kept in memory a while, see
                // `campaign::runner::Orphans`); the network must not wait that long.
                drop(ack);
                tap(
                    &shared,
                    DispatchNote::UnmatchedPor {
                        from,
                        packet,
                        scope,
                        reason,
                        ack: InboundAck::none(),
                    },
                );
            });
            None
        }
    }
}

/// Passes a card's own packet to the Secure Router, or keeps it until one is attached
/// (the card sends it again anyway until it is confirmed).
fn card_packet(shared: &Shared, packet: super::CardPacket) {
    const EARLY_MAX: usize = 10_000;
    if let Ok(mut t) = shared.card_packets.lock() {
        match &t.tap {
            Some(tap) => {
                let _ = tap.send(packet);
            }
            None if t.early.len() < EARLY_MAX => t.early.push(packet),
            None => {}
        }
    }
}

pub(super) fn tap(shared: &Shared, note: DispatchNote) {
    const EARLY_MAX: usize = 100_000;
    if let Ok(mut t) = shared.note_tap.lock() {
        match &t.tap {
            Some(tap) => {
                let _ = tap.send(note);
            }
            None if t.early.len() < EARLY_MAX => t.early.push(note),
            None => {}
        }
    }
}

/// A PoR nobody here waited for: look for the command in the store (sent before a restart, by
/// another gateway, or timed out in memory while still SENT). Gives the acknowledgement back
/// when no command matched.
pub(super) async fn match_in_store(
    shared: &Arc<Shared>,
    from: &str,
    packet: &[u8],
    scope: CcScope,
    ack: InboundAck,
) -> Option<InboundAck> {
    let Ok(view) = ResponsePacketView::parse(packet) else {
        return Some(ack);
    };
    let msisdn = from.trim_start_matches('+');
    let candidates = match shared.store.awaiting_por(msisdn, view.tar).await {
        Ok(c) => c,
        Err(e) => {
            // Not looked up: the SMSC delivers it again later.
            tracing::warn!("PoR from {from} not matched, the store failed: {e}");
            ack.retry_later();
            return Some(ack);
        }
    };
    for record in candidates {
        let Some(secured) = record.secured.clone() else {
            continue;
        };
        let spi = Spi::from_bytes(secured.spi);
        let Some(keys) = keys_for(shared.store.as_ref(), &record.iccid, &secured).await else {
            continue;
        };
        let Ok(por) = view.open(&spi, &keys, scope) else {
            continue;
        };
        if por.counter.value() != secured.counter {
            continue;
        }
        let done = Done {
            record,
            secured,
            por: Some(por),
            ack,
        };
        finish_with_por(shared, &done).await;
        return None;
    }
    Some(ack)
}

pub(super) async fn keys_for(
    store: &dyn Store,
    iccid: &str,
    secured: &crate::store::SecuredPacket,
) -> Option<Scp80Keys> {
    let kic_set = store.key_set(iccid, secured.kic >> 4).await.ok()??;
    let kid_set = store.key_set(iccid, secured.kid >> 4).await.ok()??;
    crate::pipeline::resolve::scp80_keys(
        &Spi::from_bytes(secured.spi),
        secured.kic,
        secured.kid,
        &kic_set,
        &kid_set,
    )
    .ok()
}
