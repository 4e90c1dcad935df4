//! Matching PoRs to the commands they answer (TS 31.115: by MSISDN + TAR + counter), sans-IO.
//!
//! TAR travels in clear; the counter is inside the ciphered part, so a PoR is opened with the
//! keys of a command pending for that MSISDN and TAR, and its counter then names the command.
//! A PoR that fails verification is reported against the command but does not resolve it: a
//! forged or corrupted PoR must never pass for the card's answer, and the real one may follow.

use std::collections::HashMap;

use crate::security::{
    CcScope, Counter, DecodedResponse, ResponsePacketView, Scp80Keys, SecurityError, Spi, Tar,
};

/// A command waiting for its PoR.
#[derive(Debug, Clone)]
pub struct PendingCommand<Id> {
    /// The gateway's command id.
    pub id: Id,
    /// The card's MSISDN (digits; a leading '+' is ignored).
    pub msisdn: String,
    /// TAR the command went to.
    pub tar: Tar,
    /// Counter the command carried.
    pub counter: Counter,
    /// The command's SPI (it says how the PoR is protected).
    pub spi: Spi,
    /// The card's keys for this exchange.
    pub keys: Scp80Keys,
}

/// Why a PoR could not be matched.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CorrelationError<Id: std::fmt::Debug> {
    /// No command is pending for that card and TAR.
    #[error("PoR from {msisdn} for TAR {tar} matches no pending command")]
    UnknownCommand { msisdn: String, tar: String },
    /// The PoR did not verify with the pending command's keys.
    #[error("PoR for command {id:?} failed verification: {error}")]
    Security { id: Id, error: SecurityError },
    /// It verified, but its counter is not one of a pending command.
    #[error("PoR from {msisdn} carries counter {counter:010x}, pending: {pending:?}")]
    CounterMismatch {
        msisdn: String,
        counter: u64,
        pending: Vec<u64>,
    },
    /// The bytes are not a response packet.
    #[error("not a response packet: {0}")]
    Malformed(SecurityError),
}

/// Pending commands by card and TAR.
#[derive(Debug)]
pub struct PorCorrelator<Id> {
    pending: HashMap<(String, Tar), Vec<PendingCommand<Id>>>,
    // Where each command waits, so that removing one is not a scan of everything pending.
    index: HashMap<Id, (String, Tar)>,
    len: usize,
}

impl<Id> Default for PorCorrelator<Id> {
    fn default() -> Self {
        Self {
            pending: HashMap::new(),
            index: HashMap::new(),
            len: 0,
        }
    }
}

fn normalize(msisdn: &str) -> String {
    msisdn.trim_start_matches('+').to_string()
}

impl<Id: Clone + Eq + std::hash::Hash + std::fmt::Debug> PorCorrelator<Id> {
    /// An empty correlator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Commands waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Starts waiting for a command's PoR.
    pub fn register(&mut self, mut command: PendingCommand<Id>) {
        command.msisdn = normalize(&command.msisdn);
        let key = (command.msisdn.clone(), command.tar);
        // Registering an id again replaces its earlier entry.
        self.remove(&command.id);
        self.index.insert(command.id.clone(), key.clone());
        self.pending.entry(key).or_default().push(command);
        self.len += 1;
    }

    /// Stops waiting for a command (answered otherwise, cancelled, timed out).
    pub fn remove(&mut self, id: &Id) -> Option<PendingCommand<Id>> {
        let key = self.index.remove(id)?;
        let list = self.pending.get_mut(&key)?;
        let at = list.iter().position(|c| &c.id == id)?;
        let command = list.swap_remove(at);
        if list.is_empty() {
            self.pending.remove(&key);
        }
        self.len -= 1;
        Some(command)
    }

    /// Matches a PoR (from RPL on) from `from`: on success the command stops waiting and is
    /// returned with the decoded, verified PoR.
    pub fn on_response(
        &mut self,
        from: &str,
        packet: &[u8],
        scope: CcScope,
    ) -> Result<(PendingCommand<Id>, DecodedResponse), CorrelationError<Id>> {
        let msisdn = normalize(from);
        let view = ResponsePacketView::parse(packet).map_err(CorrelationError::Malformed)?;
        let key = (msisdn.clone(), view.tar);
        let Some(candidates) = self.pending.get(&key) else {
            return Err(CorrelationError::UnknownCommand {
                msisdn,
                tar: hex::encode(view.tar),
            });
        };
        // Try each candidate's keys; the first that verifies gives the counter.
        let mut first_error = None;
        let mut decoded = None;
        for c in candidates {
            match view.open(&c.spi, &c.keys, scope) {
                Ok(d) => {
                    decoded = Some(d);
                    break;
                }
                Err(error) => {
                    first_error.get_or_insert((c.id.clone(), error));
                }
            }
        }
        let Some(decoded) = decoded else {
            let Some((id, error)) = first_error else {
                return Err(CorrelationError::UnknownCommand {
                    msisdn,
                    tar: hex::encode(view.tar),
                });
            };
            return Err(CorrelationError::Security { id, error });
        };
        let Some(at) = candidates.iter().position(|c| c.counter == decoded.counter) else {
            return Err(CorrelationError::CounterMismatch {
                msisdn,
                counter: decoded.counter.value(),
                pending: candidates.iter().map(|c| c.counter.value()).collect(),
            });
        };
        let list = self
            .pending
            .get_mut(&key)
            .ok_or(CorrelationError::UnknownCommand {
                msisdn: key.0.clone(),
                tar: hex::encode(key.1),
            })?;
        let command = list.swap_remove(at);
        if list.is_empty() {
            self.pending.remove(&key);
        }
        self.index.remove(&command.id);
        self.len -= 1;
        Ok((command, decoded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::response::encode_response_packet;
    use crate::security::{KeyConfig, PorProtection, PorStatus, ResponseHeader};

    fn keys(spi: &Spi) -> Scp80Keys {
        let k = [0x11u8; 16];
        let cfg = KeyConfig {
            kic_key: Some(&k),
            kid_key: Some(&k),
            ..Default::default()
        };
        Scp80Keys::resolve(spi, 0x15, 0x15, &cfg).unwrap_or_default()
    }

    fn por(spi: &Spi, counter: u64, status: PorStatus) -> Vec<u8> {
        let header = ResponseHeader {
            tar: [0xB0, 0, 0x10],
            counter: Counter::new(counter).unwrap_or_default(),
            status,
        };
        encode_response_packet(&header, spi, &keys(spi), &[1, 0x90, 0], CcScope::SmsUdh)
            .unwrap_or_default()
    }

    fn pending(id: u32, counter: u64, spi: Spi) -> PendingCommand<u32> {
        PendingCommand {
            id,
            msisdn: "+491700000001".into(),
            tar: [0xB0, 0, 0x10],
            counter: Counter::new(counter).unwrap_or_default(),
            spi,
            keys: keys(&spi),
        }
    }

    #[test]
    fn matches_by_msisdn_tar_and_counter() {
        let spi = Spi::from_bytes([0x16, 0x39]);
        let mut c = PorCorrelator::new();
        c.register(pending(1, 7, spi));
        c.register(pending(2, 8, spi));
        let (cmd, d) = c
            .on_response(
                "491700000001",
                &por(&spi, 8, PorStatus::Ok),
                CcScope::SmsUdh,
            )
            .expect("match");
        assert_eq!(
            (cmd.id, d.status, d.protection),
            (2, PorStatus::Ok, PorProtection::AsRequested)
        );
        assert_eq!(c.len(), 1);
        // The same PoR again: its command is no longer pending.
        let again = c.on_response(
            "491700000001",
            &por(&spi, 8, PorStatus::Ok),
            CcScope::SmsUdh,
        );
        assert!(matches!(
            again,
            Err(CorrelationError::CounterMismatch { counter: 8, .. })
        ));
    }

    #[test]
    fn unknown_card_or_tar_is_reported() {
        let spi = Spi::from_bytes([0x16, 0x39]);
        let mut c = PorCorrelator::new();
        c.register(pending(1, 7, spi));
        let r = c.on_response("4900", &por(&spi, 7, PorStatus::Ok), CcScope::SmsUdh);
        assert!(matches!(r, Err(CorrelationError::UnknownCommand { .. })));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn bad_cc_is_reported_and_the_command_keeps_waiting() {
        let spi = Spi::from_bytes([0x16, 0x39]);
        let mut c = PorCorrelator::new();
        c.register(pending(1, 7, spi));
        let mut bad = por(&spi, 7, PorStatus::Ok);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let r = c.on_response("491700000001", &bad, CcScope::SmsUdh);
        assert!(
            matches!(r, Err(CorrelationError::Security { id: 1, .. })),
            "{r:?}"
        );
        assert_eq!(c.len(), 1);
        let ok = c.on_response(
            "491700000001",
            &por(&spi, 7, PorStatus::Ok),
            CcScope::SmsUdh,
        );
        assert!(ok.is_ok());
        assert!(c.is_empty());
        assert!(c.remove(&1).is_none());
    }
}
