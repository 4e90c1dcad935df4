//! Counters of the simulator.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident, )*) => {
        /// A snapshot of the simulator's counters (see [`super::SmscHandle::stats`]).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct SmscStats {
            $( $(#[$doc])* pub $name: u64, )*
        }

        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $( pub(crate) $name: AtomicU64, )*
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> SmscStats {
                SmscStats {
                    $( $name: self.$name.load(Ordering::Relaxed), )*
                }
            }
        }
    };
}

counters! {
    /// submit_sm PDUs decoded (in any bind state).
    submits_received,
    /// submit_sm answered with status 0 and a message_id.
    submits_accepted,
    /// submit_sm answered ESME_RTHROTTLED by fault injection.
    submits_throttled,
    /// Accepted submit_sm then lost by fault injection.
    submits_dropped,
    /// Accepted submit_sm delivered late by fault injection.
    submits_delayed,
    /// PoRs lost by fault injection (the card ran the command).
    pors_dropped,
    /// submit_sm refused for another reason (not bound to transmit, empty destination).
    submits_rejected,
    /// Complete OTA command packets handed to the network.
    command_packets,
    /// Messages (or segments) found undeliverable (unknown subscriber, bad OTA framing).
    undeliverable,
    /// Delivery receipts produced (with or without a PoR).
    dlrs_sent,
    /// Delivery receipts that carried a PoR in message_payload.
    por_receipts_sent,
    /// MO deliver_sm PDUs produced (one per segment of a PoR sent via SMS-SUBMIT).
    mo_sent,
    /// deliver_sm_resp received with status 0.
    deliver_acked,
    /// deliver_sm answered with a non-zero status or generic_nack (not retried).
    deliver_rejected,
    /// Unacknowledged deliver_sm sent again after their session ended.
    deliver_redelivered,
    /// deliver_sm discarded because the backlog of their system_id was full.
    backlog_discarded,
    /// Successful binds.
    binds,
    /// Refused binds.
    bind_failures,
    /// Sessions currently connected.
    sessions_open,
    /// generic_nack PDUs sent.
    generic_nacks,
    /// enquire_link received (and answered).
    enquire_links,
    /// Concatenated messages abandoned after the reassembly timeout.
    reassembly_expired,
    /// Segments refused by reassembly (inconsistent total, conflicting duplicate, bad UDH).
    reassembly_errors,
    /// Connections dropped because their TLS handshake failed or timed out (TLS listener).
    tls_handshake_failures,
}

impl Counters {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
