//! Many virtual cards, keyed by MSISDN and ICCID, behind sharded locks; built from a SIM
//! vendor output file (`VAR_OUT:` CSV) or generated; the SMSC simulator's handsets.
//!
//! Vendor file format: any lines before the header are ignored (vendors put a description
//! block there); the header is `VAR_OUT:` followed by comma-separated column names; each later
//! non-blank line is one card with as many comma-separated fields. (Files whose header
//! separates names with `/` or spaces, and whose rows separate fields with spaces, as some
//! vendors write them, are read too.)
//!
//! | column | meaning |
//! |---|---|
//! | `ICCID` | 19 or 20 digits, possibly F-padded to 20 characters (required) |
//! | `IMSI` | 6 to 15 digits (required) |
//! | `MSISDN` | up to 15 digits, optional leading `+` (required) |
//! | `KIC`, `KID` | hex keys (8, 16, 24 or 32 octets) for key version [`FleetDefaults::key_version`] |
//! | `KIC1`..`KIC15`, `KID1`..`KID15` | hex keys for that key version |
//! | `KIK`, `KIK1`..`KIK15` | optional key-encryption key (PUT KEY's DEK) of the `KIC`/`KID` key version / of that version |
//! | `CNTR` / `COUNTER`, `CNTR1`..`CNTR15` | the card's counter (hex, up to 10 digits) for all key sets / one |
//! | `IMSI2`..`IMSI8` | optional: a subscription installed at the factory in that slot, disabled (6 to 15 digits; empty: none). `IMSI` is slot 1: enabled, the fallback and the bootstrap subscription |
//!
//! Other columns (DEK, KVN, PIN, PUK, ACC, ...) are ignored. `KVN` in particular is not
//! read as the SCP80 key version: vendors use it for the GlobalPlatform SCP02/SCP03 key
//! version. An empty `KIK` field means the card has no KIK for that key set.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

use otagw_sms::smsc_sim::{HandsetNetwork, HandsetReply};

use crate::provision::vendor::{
    check_columns, header_columns, parse_counter, parse_key, split_fields, Column, HeaderError,
};
use crate::script::subscription::SLOTS;
use crate::security::{CipherAlgorithm, Counter, IntegrityAlgorithm};

use super::card::{parse_identity, CardOutcome, CardPolicy, KeySet, VirtualCard};
use super::CardError;
use crate::digits::{luhn_digit_of, Digits};

/// Number of locks the cards are spread over.
const SHARDS: usize = 64;

/// What a vendor file does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetDefaults {
    /// Algorithm for implicit KIc codings (KIc low nibble b2b1 = 00 or 11).
    pub kic_algorithm: Option<CipherAlgorithm>,
    /// Algorithm for implicit KID codings.
    pub kid_algorithm: Option<IntegrityAlgorithm>,
    /// Key version (1..=15) the `KIC` / `KID` columns load into.
    pub key_version: u8,
    /// The cards' counter where the file gives none.
    pub initial_counter: Counter,
    /// Behaviours of every card.
    pub policy: CardPolicy,
    /// Generated cards: subscriptions installed at the factory besides the IMSI's, in slots
    /// 2, 3, ... (0 to 7; IMSI `2620` + (slot + 1) + the card's index on 10 digits).
    pub factory_subscriptions: u8,
}

impl Default for FleetDefaults {
    fn default() -> Self {
        FleetDefaults {
            kic_algorithm: None,
            kid_algorithm: None,
            key_version: 1,
            initial_counter: Counter::default(),
            policy: CardPolicy::default(),
            factory_subscriptions: 0,
        }
    }
}

/// Errors building a fleet. Vendor file errors name the line (from 1) and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// No `VAR_OUT:` line.
    #[error("no VAR_OUT: header line found")]
    MissingHeader,
    /// The header cannot be used (a column missing or repeated).
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// A row with the wrong number of fields.
    #[error("line {line}: {found} fields, but the VAR_OUT header names {expected}")]
    FieldCount {
        /// The line.
        line: usize,
        /// Fields found.
        found: usize,
        /// Columns in the header.
        expected: usize,
    },
    /// A field that cannot be read.
    #[error("line {line}, field {field}: {reason}")]
    Field {
        /// The line.
        line: usize,
        /// The column name.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A card already in the file (vendor files must not repeat cards).
    #[error("line {line}: {field} {value} already on line {first}")]
    DuplicateLine {
        /// The line.
        line: usize,
        /// MSISDN or ICCID.
        field: &'static str,
        /// The value.
        value: String,
        /// The line it first appeared on.
        first: usize,
    },
    /// A card already in the fleet.
    #[error("{field} {value} is already in the fleet")]
    Duplicate {
        /// MSISDN or ICCID.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// A fleet of more cards than it can index.
    #[error("{0} cards is more than a fleet holds (u32 index)")]
    TooMany(usize),
    /// A card that cannot be built.
    #[error(transparent)]
    Card(#[from] CardError),
}

/// Many cards; `&self` methods lock only the shard holding the card concerned.
pub struct Fleet {
    shards: Box<[Mutex<Vec<VirtualCard>>]>,
    by_msisdn: HashMap<Digits, u32>,
    by_iccid: HashMap<Digits, u32>,
    len: usize,
    key_version: u8,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("cards", &self.len)
            .field("key_version", &self.key_version)
            .finish_non_exhaustive()
    }
}

impl Default for Fleet {
    fn default() -> Self {
        Self::new()
    }
}

/// MSISDN as handed over by the SMSC: digits with an optional '+'.
fn msisdn_key(msisdn: &str) -> Option<Digits> {
    Digits::parse(msisdn.strip_prefix('+').unwrap_or(msisdn))
}

/// ICCID digits, with an F pad removed.
fn iccid_key(iccid: &str) -> Option<Digits> {
    Digits::parse(iccid.trim_end_matches(['F', 'f']))
}

/// SplitMix64: deterministic key material for generated fleets (not for real keys).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn random_key(state: &mut u64) -> [u8; 16] {
    let a = splitmix64(state).to_be_bytes();
    let b = splitmix64(state).to_be_bytes();
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&a);
    k[8..].copy_from_slice(&b);
    k
}

/// One row's key material of one version.
#[derive(Default)]
struct RowKeySet {
    kic: Option<Vec<u8>>,
    kid: Option<Vec<u8>>,
    kik: Option<Vec<u8>>,
    counter: Option<Counter>,
}

/// One row's key material per version.
type RowKeys = [RowKeySet; 16];

impl Fleet {
    /// An empty fleet whose `KIC`/`KID` vendor columns mean key version 1.
    pub fn new() -> Self {
        Fleet {
            shards: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
            by_msisdn: HashMap::new(),
            by_iccid: HashMap::new(),
            len: 0,
            key_version: 1,
        }
    }

    fn with_capacity(n: usize, key_version: u8) -> Self {
        let per_shard = n.div_ceil(SHARDS);
        Fleet {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Vec::with_capacity(per_shard)))
                .collect(),
            by_msisdn: HashMap::with_capacity(n),
            by_iccid: HashMap::with_capacity(n),
            len: 0,
            key_version,
        }
    }

    /// Number of cards.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the fleet has no card.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a card; its MSISDN and ICCID must be new to the fleet.
    pub fn insert(&mut self, card: VirtualCard) -> Result<(), FleetError> {
        let msisdn = card.msisdn_digits();
        let iccid = card.iccid_digits();
        if self.by_msisdn.contains_key(&msisdn) {
            return Err(FleetError::Duplicate {
                field: "MSISDN",
                value: msisdn.to_string(),
            });
        }
        if self.by_iccid.contains_key(&iccid) {
            return Err(FleetError::Duplicate {
                field: "ICCID",
                value: iccid.to_string(),
            });
        }
        let index = u32::try_from(self.len).map_err(|_| FleetError::TooMany(self.len))?;
        let shard = self.len % SHARDS;
        if let Some(m) = self.shards.get_mut(shard) {
            m.get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .push(card);
        }
        self.by_msisdn.insert(msisdn, index);
        self.by_iccid.insert(iccid, index);
        self.len += 1;
        Ok(())
    }

    fn locate(&self, index: u32) -> (usize, usize) {
        let i = index as usize;
        (i % SHARDS, i / SHARDS)
    }

    fn with_index<R>(&self, index: u32, f: impl FnOnce(&mut VirtualCard) -> R) -> Option<R> {
        let (shard, pos) = self.locate(index);
        let mut cards = self
            .shards
            .get(shard)?
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        cards.get_mut(pos).map(f)
    }

    /// Runs `f` on the card with this MSISDN (digits, optional '+'), holding only its shard.
    pub fn with_card<R>(&self, msisdn: &str, f: impl FnOnce(&mut VirtualCard) -> R) -> Option<R> {
        let index = *self.by_msisdn.get(&msisdn_key(msisdn)?)?;
        self.with_index(index, f)
    }

    /// Runs `f` on the card with this ICCID (F padding allowed).
    pub fn with_card_by_iccid<R>(
        &self,
        iccid: &str,
        f: impl FnOnce(&mut VirtualCard) -> R,
    ) -> Option<R> {
        let index = *self.by_iccid.get(&iccid_key(iccid)?)?;
        self.with_index(index, f)
    }

    /// The MSISDN of the `index`-th card (in insertion / file order).
    pub fn msisdn_at(&self, index: usize) -> Option<String> {
        let index = u32::try_from(index).ok().filter(|_| index < self.len)?;
        self.with_index(index, |c| c.msisdn())
    }

    /// The card with this MSISDN receives a command packet; `None` for an unknown MSISDN.
    pub fn process(&self, msisdn: &str, packet: &[u8]) -> Option<CardOutcome> {
        self.with_card(msisdn, |card| card.process(packet))
    }

    /// Calls `f` on every card, in insertion order, with all shards locked.
    pub fn for_each_card(&self, mut f: impl FnMut(&VirtualCard)) {
        let guards: Vec<_> = self
            .shards
            .iter()
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
            .collect();
        for i in 0..self.len {
            if let Some(card) = guards.get(i % SHARDS).and_then(|g| g.get(i / SHARDS)) {
                f(card);
            }
        }
    }

    /// Moves every card's subscription application on at `now` (see
    /// [`VirtualCard::tick_subscriptions`]); returns the notifications due, with the card's
    /// MSISDN.
    pub fn tick_subscriptions(
        &self,
        now: i64,
        network: &dyn crate::sim::subscriptions::Network,
    ) -> Vec<(String, crate::sim::subscriptions::Notification)> {
        let mut due = Vec::new();
        self.tick_each(now, network, |card, n| due.push((card.msisdn(), n)));
        due
    }

    /// [`Fleet::tick_subscriptions`] with each notification secured as its card sends it
    /// (see [`VirtualCard::notification_user_data`]): (MSISDN, SMS user data with its UDH).
    pub fn tick_notifications(
        &self,
        now: i64,
        network: &dyn crate::sim::subscriptions::Network,
    ) -> Vec<(String, Vec<u8>)> {
        let mut due = Vec::new();
        self.tick_each(now, network, |card, n| {
            if let Some(ud) = card.notification_user_data(&n) {
                due.push((card.msisdn(), ud));
            }
        });
        due
    }

    /// Ticks every card whose subscription application was used, calling `f` with each
    /// notification due.
    fn tick_each(
        &self,
        now: i64,
        network: &dyn crate::sim::subscriptions::Network,
        mut f: impl FnMut(&VirtualCard, crate::sim::subscriptions::Notification),
    ) {
        for shard in self.shards.iter() {
            let mut cards = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for card in cards.iter_mut() {
                if card.subscriptions().is_none() {
                    continue;
                }
                for n in card.tick_subscriptions(now, network) {
                    f(card, n);
                }
            }
        }
    }

    /// Approximate heap and struct octets the cards and indexes hold (for reports).
    pub fn approximate_bytes(&self) -> usize {
        let mut cards = 0usize;
        self.for_each_card(|c| cards += std::mem::size_of::<VirtualCard>() + c.heap_bytes());
        // hashbrown: one (key, value) slot plus one control octet per bucket, ~7/8 load.
        let slot = std::mem::size_of::<(Digits, u32)>() + 1;
        let maps = (self.by_msisdn.capacity() + self.by_iccid.capacity()) * slot * 8 / 7;
        cards + maps
    }

    /// `n` cards with deterministic identities and keys:
    ///
    /// - MSISDN `4915` followed by the index on 8 digits (`491500000000`, `491500000001`, ...),
    /// - ICCID `894900` + the index on 12 digits + a Luhn check digit (19 digits),
    /// - IMSI `26201` + the index on 10 digits,
    /// - one key set (version `defaults.key_version`) with 16-octet KIc and KID drawn from
    ///   `seed` and the index (fits both 3DES two-key and AES-128 codings).
    pub fn generate(n: usize, seed: u64, defaults: FleetDefaults) -> Result<Fleet, FleetError> {
        if n > 100_000_000 {
            return Err(FleetError::TooMany(n));
        }
        let mut fleet = Fleet::with_capacity(n, defaults.key_version);
        for i in 0..n {
            let card = Self::generated_card(i as u64, seed, &defaults)?;
            fleet.insert(card)?;
        }
        Ok(fleet)
    }

    fn generated_card(i: u64, seed: u64, d: &FleetDefaults) -> Result<VirtualCard, FleetError> {
        const ICCID_PREFIX: u64 = 894_900_000_000_000_000;
        let too_many = || FleetError::TooMany(usize::try_from(i).unwrap_or(usize::MAX));
        let msisdn = Digits::from_number(491_500_000_000 + i, 12).ok_or_else(too_many)?;
        let body = ICCID_PREFIX + i;
        let iccid = Digits::from_number(body * 10 + u64::from(luhn_digit_of(body)), 19)
            .ok_or_else(too_many)?;
        let imsi = Digits::from_number(262_010_000_000_000 + i, 15).ok_or_else(too_many)?;
        let mut state = seed ^ i.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        let kic = random_key(&mut state);
        let kid = random_key(&mut state);
        // A KIK as long as the KIc (16 octets), for PUT KEY.
        let kik = random_key(&mut state);
        let keys = KeySet::new(d.key_version, &kic, &kid)?
            .with_algorithms(d.kic_algorithm, d.kid_algorithm)?
            .with_kik(&kik)?
            .with_counter(d.initial_counter);
        let slots = 2..(2 + d.factory_subscriptions.min(SLOTS as u8 - 1));
        let others: Vec<(u8, String)> = slots
            .map(|slot| {
                let mnc = u64::from(slot) + 1;
                (slot, format!("2620{mnc}{i:010}"))
            })
            .collect();
        Ok(VirtualCard::from_parts(iccid, imsi, msisdn, vec![keys])
            .with_policy(d.policy)
            .with_factory_subscriptions(&others))
    }

    /// Reads a SIM vendor output file (see the module documentation).
    pub fn from_vendor_file(text: &str, defaults: FleetDefaults) -> Result<Fleet, FleetError> {
        if !(1..=15).contains(&defaults.key_version) {
            return Err(FleetError::Card(CardError::KeyVersion(
                defaults.key_version,
            )));
        }
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
        let (header_line, columns) = loop {
            let Some((n, line)) = lines.next() else {
                return Err(FleetError::MissingHeader);
            };
            if let Some(names) = header_columns(line) {
                break (n, names);
            }
        };
        let kinds = check_columns(header_line, &columns, defaults.key_version)?;

        let mut fleet = Fleet::with_capacity(0, defaults.key_version);
        // Line of each card, by index, to name the first line of a duplicate.
        let mut row_lines: Vec<usize> = Vec::new();
        for (n, line) in lines {
            if line.is_empty() {
                continue;
            }
            let fields = split_fields(line);
            if fields.len() != kinds.len() {
                return Err(FleetError::FieldCount {
                    line: n,
                    found: fields.len(),
                    expected: kinds.len(),
                });
            }
            let card = Self::vendor_row(n, &columns, &kinds, &fields, &defaults)?;
            let (msisdn, iccid) = (card.msisdn_digits(), card.iccid_digits());
            if let Err(e) = fleet.insert(card) {
                let first = match &e {
                    FleetError::Duplicate {
                        field: "MSISDN", ..
                    } => fleet.by_msisdn.get(&msisdn),
                    FleetError::Duplicate { .. } => fleet.by_iccid.get(&iccid),
                    _ => None,
                };
                return Err(match (e, first) {
                    (FleetError::Duplicate { field, value }, Some(&i)) => {
                        FleetError::DuplicateLine {
                            line: n,
                            field,
                            value,
                            first: row_lines.get(i as usize).copied().unwrap_or_default(),
                        }
                    }
                    (e, _) => e,
                });
            }
            row_lines.push(n);
        }
        Ok(fleet)
    }

    fn vendor_row(
        line: usize,
        names: &[String],
        kinds: &[Column],
        fields: &[&str],
        d: &FleetDefaults,
    ) -> Result<VirtualCard, FleetError> {
        let mut iccid = "";
        let mut imsi = "";
        let mut msisdn = "";
        let mut keys: RowKeys = Default::default();
        let mut all_counter = None;
        let mut factory: Vec<(u8, String)> = Vec::new();
        for ((kind, name), value) in kinds.iter().zip(names).zip(fields) {
            let err = |reason: String| FleetError::Field {
                line,
                field: name.clone(),
                reason,
            };
            let slot = |v: u8| usize::from(v).min(15);
            match *kind {
                Column::Iccid => iccid = value,
                Column::Imsi => imsi = value,
                Column::Msisdn => msisdn = value,
                Column::Kic(_) | Column::Kid(_) | Column::Kik(_) if value.is_empty() => {}
                Column::Kic(v) => {
                    let key = parse_key(value).map_err(err)?;
                    if let Some(a) = d.kic_algorithm.filter(|a| !a.accepts_key_len(key.len())) {
                        return Err(err(format!(
                            "{} octets do not fit {a} ({} octets)",
                            key.len(),
                            a.key_lengths()
                        )));
                    }
                    keys[slot(v)].kic = Some(key);
                }
                Column::Kid(v) => {
                    let key = parse_key(value).map_err(err)?;
                    if let Some(a) = d.kid_algorithm.filter(|a| !a.accepts_key_len(key.len())) {
                        return Err(err(format!(
                            "{} octets do not fit {a} ({} octets)",
                            key.len(),
                            a.key_lengths()
                        )));
                    }
                    keys[slot(v)].kid = Some(key);
                }
                Column::Kik(v) => keys[slot(v)].kik = Some(parse_key(value).map_err(err)?),
                Column::Counter(_) if value.is_empty() => {}
                Column::Counter(None) => all_counter = Some(parse_counter(value).map_err(err)?),
                Column::Counter(Some(v)) => {
                    keys[slot(v)].counter = Some(parse_counter(value).map_err(err)?)
                }
                Column::FactoryImsi(_) if value.is_empty() => {}
                Column::FactoryImsi(id) => {
                    parse_identity("IMSI", value).map_err(|e| err(e.to_string()))?;
                    factory.push((id, (*value).to_string()));
                }
                Column::Ignored => {}
            }
        }
        factory.sort_by_key(|(id, _)| *id);
        let identity = |field: &'static str, value: &str| {
            parse_identity(field, value).map_err(|e| FleetError::Field {
                line,
                field: field.to_string(),
                reason: match e {
                    CardError::Identity { reason, value, .. } => {
                        format!("{value:?} is not {reason}")
                    }
                    other => other.to_string(),
                },
            })
        };
        let mut card = VirtualCard::from_parts(
            identity("ICCID", iccid)?,
            identity("IMSI", imsi)?,
            identity("MSISDN", msisdn)?,
            Vec::new(),
        )
        .with_policy(d.policy)
        .with_factory_subscriptions(&factory);
        for (version, k) in keys.iter().enumerate() {
            if k.kic.is_none() && k.kid.is_none() && k.kik.is_none() {
                continue;
            }
            let ks = KeySet::new(
                version as u8,
                k.kic.as_deref().unwrap_or_default(),
                k.kid.as_deref().unwrap_or_default(),
            )?
            .with_algorithms(d.kic_algorithm, d.kid_algorithm)?
            .with_kik(k.kik.as_deref().unwrap_or_default())?
            .with_counter(k.counter.or(all_counter).unwrap_or(d.initial_counter));
            card.set_key_set(ks);
        }
        Ok(card)
    }

    /// Writes the fleet as a vendor output file that [`Fleet::from_vendor_file`] reads back
    /// (with the same key version for `KIC`/`KID`): `ICCID,IMSI,MSISDN,KIC,KID`, then
    /// `KICn,KIDn` for other key versions any card has, each followed by `KIK` / `KIKn` where
    /// a card has a KIK of that version, and `CNTR` / `CNTRn` where a counter is not zero.
    /// 19-digit ICCIDs are F-padded; keys in upper-case hex.
    pub fn to_vendor_file(&self) -> String {
        let main = self.key_version;
        let mut versions = [false; 16];
        let mut counters = [false; 16];
        let mut kiks = [false; 16];
        let mut factory_slots = [false; SLOTS + 1];
        self.for_each_card(|c| {
            for (id, _) in c.factory_subscriptions() {
                if let Some(used) = factory_slots.get_mut(usize::from(id)) {
                    *used = true;
                }
            }
            for k in c.key_sets() {
                let v = usize::from(k.version()).min(15);
                versions[v] = true;
                counters[v] |= k.counter().value() != 0;
                kiks[v] |= k.kik().is_some();
            }
        });
        let has_kik = |v: u8| kiks[usize::from(v).min(15)];
        let others: Vec<u8> = (0..16u8)
            .filter(|&v| v != main && v != 0 && versions[usize::from(v)])
            .collect();
        let mut out = String::from("VAR_OUT:ICCID,IMSI,MSISDN,KIC,KID");
        if has_kik(main) {
            out.push_str(",KIK");
        }
        for &v in &others {
            let _ = write!(out, ",KIC{v},KID{v}");
            if has_kik(v) {
                let _ = write!(out, ",KIK{v}");
            }
        }
        let counter_versions: Vec<u8> = std::iter::once(main)
            .chain(others.iter().copied())
            .filter(|&v| counters[usize::from(v)])
            .collect();
        for &v in &counter_versions {
            if v == main {
                out.push_str(",CNTR");
            } else {
                let _ = write!(out, ",CNTR{v}");
            }
        }
        let factory: Vec<u8> = (2..=SLOTS as u8)
            .filter(|&id| factory_slots[usize::from(id)])
            .collect();
        for &id in &factory {
            let _ = write!(out, ",IMSI{id}");
        }
        out.push('\n');
        self.for_each_card(|c| {
            let iccid = c.iccid();
            let pad = if iccid.len() == 19 { "F" } else { "" };
            let _ = write!(out, "{iccid}{pad},{},{}", c.imsi(), c.msisdn());
            for v in std::iter::once(main).chain(others.iter().copied()) {
                match c.key_set(v) {
                    Some(k) => {
                        let _ = write!(
                            out,
                            ",{},{}",
                            hex::encode_upper(k.kic()),
                            hex::encode_upper(k.kid())
                        );
                    }
                    None => out.push_str(",,"),
                }
                if has_kik(v) {
                    out.push(',');
                    if let Some(kik) = c.key_set(v).and_then(KeySet::kik) {
                        out.push_str(&hex::encode_upper(kik));
                    }
                }
            }
            for &v in &counter_versions {
                match c.key_set(v) {
                    Some(k) => {
                        let _ = write!(out, ",{:010X}", k.counter().value());
                    }
                    None => out.push(','),
                }
            }
            let installed = c.factory_subscriptions();
            for &id in &factory {
                out.push(',');
                if let Some((_, imsi)) = installed.iter().find(|(i, _)| *i == id) {
                    out.push_str(imsi);
                }
            }
            out.push('\n');
        });
        out
    }
}

impl HandsetNetwork for Fleet {
    fn command_packet(&self, msisdn: &str, packet: &[u8]) -> HandsetReply {
        match self.with_card(msisdn, |card| card.process_command_packet(packet)) {
            Some(por) => HandsetReply::Delivered { por },
            None => HandsetReply::UnknownSubscriber,
        }
    }

    fn knows(&self, msisdn: &str) -> bool {
        msisdn_key(msisdn).is_some_and(|k| self.by_msisdn.contains_key(&k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
VAR_OUT:ICCID,IMSI,MSISDN,KIC,KID
8991234567788901234F,421234567890123,961234567890,12122343423234234234234234234,56756785675678568678678678678
8991234567788901235F,421234567890124,961234567891,23434564756786846345235345645745,23454576679803454767897890890678
";

    #[test]
    fn brief_sample_is_refused_with_its_line() {
        let e = Fleet::from_vendor_file(SAMPLE, FleetDefaults::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2, field KIC: 29 hex digits, but a key is whole octets (16, 32, 48 or 64 hex digits)"
        );
        // Line 3 alone is fine.
        let ok = SAMPLE
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, l)| l)
            .collect::<Vec<_>>()
            .join("\n");
        let fleet = Fleet::from_vendor_file(&ok, FleetDefaults::default()).unwrap();
        assert_eq!(fleet.len(), 1);
        assert!(fleet.knows("+961234567891"));
        assert!(!fleet.knows("961234567890"));
        let (iccid, kic) = fleet
            .with_card("961234567891", |c| {
                (c.iccid(), hex::encode(c.key_set(1).unwrap().kic()))
            })
            .unwrap();
        assert_eq!(iccid, "8991234567788901235");
        assert_eq!(kic, "23434564756786846345235345645745");
        assert!(fleet
            .with_card_by_iccid("8991234567788901235F", |_| ())
            .is_some());
    }

    #[test]
    fn vendor_errors_name_line_and_field() {
        let d = FleetDefaults::default();
        let k = "00112233445566778899AABBCCDDEEFF";
        let file = |rows: &str| {
            format!("* header block\nQuantity: 2\nVAR_OUT: ICCID, IMSI, MSISDN, KIC, KID, PIN1, ACC\n{rows}")
        };
        let err = |rows: &str| {
            Fleet::from_vendor_file(&file(rows), d)
                .unwrap_err()
                .to_string()
        };
        let good = format!("89490000000000000017,262010000000001,491700000001,{k},{k},1234,0001\n");
        assert_eq!(Fleet::from_vendor_file(&file(&good), d).unwrap().len(), 1);
        assert_eq!(
            err(&format!(
                "{good}\n89490000000000000025,26201000000000X,491700000002,{k},{k},1,1"
            )),
            "line 6, field IMSI: \"26201000000000X\" is not 6 to 15 digits"
        );
        assert_eq!(
            err(&format!("8949000000000001,262010000000001,491700000001,{k},{k},1,1")),
            "line 4, field ICCID: \"8949000000000001\" is not 19 or 20 digits (20 characters when F-padded)"
        );
        assert_eq!(
            err(&format!(
                "89490000000000000017,262010000000001,4917x,{k},{k},1,1"
            )),
            "line 4, field MSISDN: \"4917x\" is not 1 to 15 digits, optionally after '+'"
        );
        assert_eq!(
            err(&format!(
                "89490000000000000017,262010000000001,491700000001,{k},ZZ{},1,1",
                &k[2..]
            )),
            "line 4, field KID: not hex: Invalid character 'Z' at position 0"
        );
        assert_eq!(
            err(&format!(
                "89490000000000000017,262010000000001,491700000001,{k},0011,1,1"
            )),
            "line 4, field KID: 2 octets, but SCP80 keys are 8, 16, 24 or 32 octets"
        );
        assert_eq!(
            err("89490000000000000017,262010000000001,491700000001"),
            "line 4: 3 fields, but the VAR_OUT header names 7"
        );
        assert_eq!(
            err(&format!(
                "{good}89490000000000000025,262010000000002,491700000001,{k},{k},1,1"
            )),
            "line 5: MSISDN 491700000001 already on line 4"
        );
        assert_eq!(
            Fleet::from_vendor_file("ICCID,IMSI\n", d).unwrap_err(),
            FleetError::MissingHeader
        );
        assert_eq!(
            Fleet::from_vendor_file("VAR_OUT:ICCID,IMSI,KIC,KID\n", d)
                .unwrap_err()
                .to_string(),
            "line 1: the VAR_OUT header has no MSISDN column"
        );
        assert_eq!(
            Fleet::from_vendor_file("VAR_OUT:ICCID,IMSI,MSISDN,KIC,KIC1\n", d)
                .unwrap_err()
                .to_string(),
            "line 1: column KIC1 repeats an earlier column (KIC/KID count as version 1)"
        );
        let aes = FleetDefaults {
            kic_algorithm: Some(CipherAlgorithm::TripleDes2KeyCbc),
            ..d
        };
        let eight = "0011223344556677";
        assert_eq!(
            Fleet::from_vendor_file(
                &file(&format!(
                    "89490000000000000017,262010000000001,491700000001,{eight},{k},1,1"
                )),
                aes
            )
            .unwrap_err()
            .to_string(),
            "line 4, field KIC: 8 octets do not fit 3des-2key (16 octets)"
        );
    }

    #[test]
    fn slash_and_space_separated_files() {
        let text = "\u{feff}var_out: ICCID/IMSI/MSISDN/PIN1/KIC/KID\r\n\
8949000000000000001F 262010000000001 491700000001 1234 00112233445566778899AABBCCDDEEFF FFEEDDCCBBAA99887766554433221100\r\n";
        let fleet = Fleet::from_vendor_file(text, FleetDefaults::default()).unwrap();
        assert_eq!(
            fleet.with_card("491700000001", |c| hex::encode(c.key_set(1).unwrap().kid())),
            Some("ffeeddccbbaa99887766554433221100".to_string())
        );
    }

    #[test]
    fn more_key_versions_and_counters_round_trip() {
        let text = "\
VAR_OUT:ICCID,IMSI,MSISDN,KIC,KID,KIC2,KID2,CNTR,KIK1,PIN1
8949000000000000001F,262010000000001,491700000001,00112233445566778899AABBCCDDEEFF,FFEEDDCCBBAA99887766554433221100,0011223344556677,8899AABBCCDDEEFF,000000002A,0F0E0D0C0B0A09080706050403020100,1234
89490000000000000027,262010000000002,491700000002,0123456789ABCDEF0123456789ABCDEF,0123456789ABCDEF0123456789ABCDEF,,,,,0000
";
        let fleet = Fleet::from_vendor_file(text, FleetDefaults::default()).unwrap();
        let kiks = |m: &str| {
            fleet
                .with_card(m, |c| c.key_set(1).unwrap().kik().map(hex::encode_upper))
                .unwrap()
        };
        assert_eq!(
            kiks("491700000001").as_deref(),
            Some("0F0E0D0C0B0A09080706050403020100")
        );
        assert_eq!(kiks("491700000002"), None);
        let (v, c1, c2) = fleet
            .with_card("491700000001", |c| {
                (
                    c.key_sets().iter().map(KeySet::version).collect::<Vec<_>>(),
                    c.key_set(1).unwrap().counter().value(),
                    c.key_set(2).unwrap().counter().value(),
                )
            })
            .unwrap();
        assert_eq!((v, c1, c2), (vec![1, 2], 0x2A, 0x2A));
        let out = fleet.to_vendor_file();
        assert_eq!(
            out,
            "\
VAR_OUT:ICCID,IMSI,MSISDN,KIC,KID,KIK,KIC2,KID2,CNTR,CNTR2
8949000000000000001F,262010000000001,491700000001,00112233445566778899AABBCCDDEEFF,FFEEDDCCBBAA99887766554433221100,0F0E0D0C0B0A09080706050403020100,0011223344556677,8899AABBCCDDEEFF,000000002A,000000002A
89490000000000000027,262010000000002,491700000002,0123456789ABCDEF0123456789ABCDEF,0123456789ABCDEF0123456789ABCDEF,,,,0000000000,
"
        );
        let again = Fleet::from_vendor_file(&out, FleetDefaults::default()).unwrap();
        assert_eq!(again.to_vendor_file(), out);
    }

    #[test]
    fn factory_subscriptions_round_trip() {
        let d = FleetDefaults {
            factory_subscriptions: 3,
            ..FleetDefaults::default()
        };
        let fleet = Fleet::generate(4, 9, d).unwrap();
        let out = fleet.to_vendor_file();
        assert!(
            out.lines().next().unwrap().ends_with(",IMSI2,IMSI3,IMSI4"),
            "{out}"
        );
        let back = Fleet::from_vendor_file(&out, d).unwrap();
        assert_eq!(back.to_vendor_file(), out);
        let msisdn = fleet.msisdn_at(1).unwrap();
        let subs = back
            .with_card(&msisdn, |c| {
                c.subscriptions()
                    .unwrap()
                    .subscriptions()
                    .iter()
                    .map(|s| (s.id, s.imsi.clone(), s.enabled, s.fallback, s.bootstrap))
                    .collect::<Vec<_>>()
            })
            .unwrap();
        assert_eq!(
            subs,
            [
                (1, "262010000000001".to_string(), true, true, true),
                (2, "262030000000001".to_string(), false, false, false),
                (3, "262040000000001".to_string(), false, false, false),
                (4, "262050000000001".to_string(), false, false, false),
            ]
        );
        // A fleet without them writes no IMSIn column.
        let plain = Fleet::generate(2, 9, FleetDefaults::default()).unwrap();
        assert!(!plain.to_vendor_file().contains("IMSI2"));
    }

    #[test]
    fn kik_columns() {
        let d = FleetDefaults::default();
        let k = "00112233445566778899AABBCCDDEEFF";
        // A KIK for another key version; a file without KIK columns writes none back.
        let text = format!(
            "VAR_OUT:ICCID,IMSI,MSISDN,KIC,KID,KIC3,KID3,KIK3\n\
             89490000000000000017,262010000000001,491700000001,{k},{k},{k},{k},0011223344556677\n"
        );
        let fleet = Fleet::from_vendor_file(&text, d).unwrap();
        let (k1, k3) = fleet
            .with_card("491700000001", |c| {
                (
                    c.key_set(1).unwrap().kik().is_some(),
                    c.key_set(3).unwrap().kik().map(<[u8]>::len),
                )
            })
            .unwrap();
        assert_eq!((k1, k3), (false, Some(8)));
        let out = fleet.to_vendor_file();
        assert!(out.starts_with("VAR_OUT:ICCID,IMSI,MSISDN,KIC,KID,KIC3,KID3,KIK3\n"));
        assert_eq!(
            Fleet::from_vendor_file(&out, d).unwrap().to_vendor_file(),
            out
        );
        let plain = format!(
            "VAR_OUT:ICCID,IMSI,MSISDN,KIC,KID\n89490000000000000017,262010000000001,491700000001,{k},{k}\n"
        );
        assert_eq!(
            Fleet::from_vendor_file(&plain, d).unwrap().to_vendor_file(),
            plain
        );
        // A bad KIK names its line and column.
        let bad = format!(
            "VAR_OUT:ICCID,IMSI,MSISDN,KIC,KID,KIK\n89490000000000000017,262010000000001,491700000001,{k},{k},AABB\n"
        );
        assert_eq!(
            Fleet::from_vendor_file(&bad, d).unwrap_err().to_string(),
            "line 2, field KIK: 2 octets, but SCP80 keys are 8, 16, 24 or 32 octets"
        );
    }

    #[test]
    fn generated_fleet() {
        let fleet = Fleet::generate(200, 7, FleetDefaults::default()).unwrap();
        assert_eq!(fleet.len(), 200);
        assert_eq!(fleet.msisdn_at(0).unwrap(), "491500000000");
        assert_eq!(fleet.msisdn_at(199).unwrap(), "491500000199");
        assert!(fleet.msisdn_at(200).is_none());
        let (iccid, imsi) = fleet
            .with_card("491500000123", |c| (c.iccid(), c.imsi()))
            .unwrap();
        assert_eq!(imsi, "262010000000123");
        assert_eq!(iccid.len(), 19);
        let digits: Vec<u8> = iccid.bytes().map(|b| b - b'0').collect();
        assert_eq!(crate::digits::luhn_digit(&digits[..18]), digits[18]);
        // Deterministic per seed, different across seeds and cards.
        let key = |f: &Fleet, m: &str| f.with_card(m, |c| c.key_set(1).unwrap().kic().to_vec());
        let again = Fleet::generate(2, 7, FleetDefaults::default()).unwrap();
        let other = Fleet::generate(2, 8, FleetDefaults::default()).unwrap();
        assert_eq!(key(&fleet, "491500000001"), key(&again, "491500000001"));
        assert_ne!(key(&fleet, "491500000001"), key(&other, "491500000001"));
        assert_ne!(key(&fleet, "491500000001"), key(&fleet, "491500000000"));
        let text = fleet.to_vendor_file();
        assert!(text.starts_with("VAR_OUT:ICCID,IMSI,MSISDN,KIC,KID,KIK\n"));
        let kik = |f: &Fleet, m: &str| {
            f.with_card(m, |c| c.key_set(1).unwrap().kik().map(<[u8]>::to_vec))
        };
        let first = kik(&fleet, "491500000001").flatten().unwrap();
        assert_eq!(first.len(), 16);
        assert_ne!(Some(first.clone()), key(&fleet, "491500000001"));
        assert_eq!(kik(&again, "491500000001").flatten(), Some(first));
        let back = Fleet::from_vendor_file(&text, FleetDefaults::default()).unwrap();
        assert_eq!(back.to_vendor_file(), text);
        assert!(matches!(
            Fleet::generate(
                1,
                0,
                FleetDefaults {
                    key_version: 16,
                    ..FleetDefaults::default()
                }
            ),
            Err(FleetError::Card(CardError::KeyVersion(16)))
        ));
    }

    #[test]
    fn duplicates_refused_on_insert() {
        let mut fleet = Fleet::new();
        fleet
            .insert(VirtualCard::new("8949000000000000001", "262010000000001", "+4917").unwrap())
            .unwrap();
        let e = fleet
            .insert(VirtualCard::new("8949000000000000002", "262010000000002", "4917").unwrap())
            .unwrap_err();
        assert_eq!(e.to_string(), "MSISDN 4917 is already in the fleet");
        let e = fleet
            .insert(VirtualCard::new("8949000000000000001F", "262010000000002", "4918").unwrap())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "ICCID 8949000000000000001 is already in the fleet"
        );
        assert!(matches!(
            fleet.command_packet("999", &[]),
            HandsetReply::UnknownSubscriber
        ));
        assert_eq!(
            fleet.command_packet("4917", &[0, 1]),
            HandsetReply::Delivered { por: None }
        );
    }
}
