//! The virtual card's subscription management application (issue 15, the card side): a
//! registry of installed subscriptions, the commands that change it, the switch with its
//! attach timer and rollback, and the notifications the card sends after every switch.
//! Sans-IO: time comes in as a value ([`SubscriptionApp::tick`]) and whether a network accepts
//! a subscription is asked of a [`Network`] the simulator supplies.
//!
//! There is no standard for this application (the brief's platforms each have their own); the
//! coding below is otagw's, defined here and nowhere else.
//!
//! # Reaching it
//!
//! TAR [`TAR_SUBSCRIPTIONS`] `53 4D 41` ("SMA"), through SCP80 like RFM and RAM: a script of
//! the C-APDUs below (compact or expanded). otagw's choice, outside the values used for RFM
//! (`B0 00 1x`) and the ISD (`00 00 00`); a deployment replaces it with its applet's TAR.
//!
//! # Commands (CLA `80`, P1 = P2 = `00`; data: single-octet-tag BER-TLVs)
//!
//! | INS | command | data | answer |
//! |---|---|---|---|
//! | `E2` | DOWNLOAD | `80` id (1 octet, 1..=255), `81` IMSI (6..=15 ASCII digits), optional `82` SPN (0..=16 octets), `83` PLMNs (3 octets each, TS 24.008 BCD), `84` Ki and `85` OPc (16 octets each, enciphered under the KIK: kept as received), `86` flags (b1 enable now, b2 set as fallback, b3 bootstrap) | `9000`; `6A84` no free slot; `6985` id in use; `6A80` bad data |
//! | `E4` | ENABLE | `80` id | `9000` (the switch starts); `6A88` unknown id |
//! | `E6` | DELETE | `80` id | `9000`; `6985` enabled or fallback; `6A88` unknown id |
//! | `E8` | SET FALLBACK | `80` id | `9000` (the attribute moves to it); `6A88` unknown id |
//! | `EA` | AUDIT | none | `9000` with the audit below |
//! | `EC` | TIMERS | optional `8D` attach timeout and `8E` return-to-primary time, seconds, 2 octets each (0: never) | `9000` |
//! | `EE` | CONFIRM | `8C` sequence number (2 octets) | `9000`: notifications up to it stop |
//!
//! Any other INS: `6D00`; another CLA: `6E00`; P1/P2 not `00`: `6A86`. A refused command
//! changes nothing.
//!
//! # Audit (answer to `EA`)
//!
//! One `A0` per installed subscription (`80` id, `81` IMSI, `87` state `00` disabled / `01`
//! enabled, `86` flags b2 fallback, b3 bootstrap), then `88` the enabled id, `89` free slots,
//! `8A` application version (2 octets), `8B` last switch reason (`00` none, `01` switched,
//! `02` rolled back, `03` on fallback), `8C` last notification's sequence number (2 octets).
//!
//! # Switching
//!
//! ENABLE (or DOWNLOAD with "enable now") enables the subscription at once (EF IMSI takes its
//! IMSI) and waits for the attach. At each [`SubscriptionApp::tick`] the card asks the
//! [`Network`]: attached: the switch is done. No attach by the attach timeout: the card goes
//! back to the subscription enabled before; if that one does not attach in its turn either, to
//! the fallback one, where it stays. After every switch the card queues a notification
//! (`E0`: `8C` sequence number, `8F` outcome as `8B`, `88` enabled id, `81` its IMSI), sent at
//! once and again every [`NOTIFY_EVERY_MS`] until a CONFIRM covers it.

use super::exec::Applet;
use crate::script::subscription::{Audit, AuditEntry, Fields};
use crate::script::{CApdu, RApdu};

pub use crate::script::subscription::{Notification, SwitchOutcome, SLOTS, TAR_SUBSCRIPTIONS};
/// The application's version, as the audit reports it.
pub const VERSION: u16 = 0x0100;
/// Default attach timeout.
pub const DEFAULT_ATTACH_TIMEOUT_MS: i64 = 60_000;
/// A notification not confirmed goes again after this long.
pub const NOTIFY_EVERY_MS: i64 = 30_000;

const SW_OK: u16 = 0x9000;
const SW_WRONG_DATA: u16 = 0x6A80;
const SW_NO_SLOT: u16 = 0x6A84;
const SW_NOT_FOUND: u16 = 0x6A88;
const SW_CONDITIONS: u16 = 0x6985;
const SW_P1P2: u16 = 0x6A86;
const SW_INS: u16 = 0x6D00;
const SW_CLA: u16 = 0x6E00;

/// Whether a network lets a subscription attach (the simulator decides, seeded).
pub trait Network {
    /// Whether `imsi` attaches now.
    fn attaches(&self, imsi: &str) -> bool;
}

/// Every network accepts every subscription.
#[derive(Debug, Clone, Copy, Default)]
pub struct EveryNetwork;

impl Network for EveryNetwork {
    fn attaches(&self, _imsi: &str) -> bool {
        true
    }
}

/// The simulator's networks: each IMSI is refused by its network with probability
/// `refuse_share`, decided once per IMSI from the seed (the same IMSI gets the same answer on
/// every card and every tick), plus the IMSIs named in `refused`.
#[derive(Debug, Clone, Default)]
pub struct SeededNetwork {
    /// Seed of the per-IMSI draw.
    pub seed: u64,
    /// Share of IMSIs refused, 0.0 to 1.0.
    pub refuse_share: f64,
    /// IMSIs always refused.
    pub refused: std::collections::BTreeSet<String>,
}

impl Network for SeededNetwork {
    fn attaches(&self, imsi: &str) -> bool {
        if self.refused.contains(imsi) {
            return false;
        }
        if self.refuse_share <= 0.0 {
            return true;
        }
        // FNV-1a of the IMSI mixed with the seed, then splitmix64: stable across runs.
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ self.seed;
        for b in imsi.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        let draw = (h >> 11) as f64 / (1u64 << 53) as f64;
        draw >= self.refuse_share
    }
}

/// One installed subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Its id (the server's).
    pub id: u8,
    /// IMSI digits.
    pub imsi: String,
    /// Service provider name.
    pub spn: Vec<u8>,
    /// PLMN list (3 octets each).
    pub plmns: Vec<u8>,
    /// Ki and OPc, enciphered as delivered.
    pub keys: Vec<u8>,
    /// Enabled (exactly one is).
    pub enabled: bool,
    /// Holds the fallback attribute (exactly one does).
    pub fallback: bool,
    /// Factory bootstrap subscription.
    pub bootstrap: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The asked subscription.
    Asked,
    /// Back on the one enabled before.
    Previous,
    /// On the fallback.
    Fallback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Switching {
    /// The subscription the command asked for.
    asked: u8,
    /// Enabled now, waiting to attach.
    target: u8,
    /// Enabled before the switch.
    previous: u8,
    stage: Stage,
    /// No attach by then: the next stage.
    deadline: Option<i64>,
}

/// The application's state on one card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionApp {
    subscriptions: Vec<Subscription>,
    attach_timeout_ms: i64,
    return_to_primary_ms: i64,
    switching: Option<Switching>,
    /// After a rollback or a fall back: the asked subscription, tried again at this time
    /// (the return-to-primary timer).
    return_to: Option<(u8, i64)>,
    last_outcome: SwitchOutcome,
    seq: u16,
    /// Notifications not confirmed, with when each goes next.
    unconfirmed: Vec<(Notification, i64)>,
    /// The clock of the last command or tick (commands carry no time of their own).
    now: i64,
}

impl SubscriptionApp {
    /// A card as it leaves the factory: one subscription (id 1, the card's IMSI), enabled,
    /// fallback and bootstrap.
    pub fn factory(imsi: &str) -> Self {
        Self::factory_with(imsi, &[])
    }

    /// A card as it leaves the factory with more subscriptions installed (disabled) in
    /// the slots `others` names (the vendor file's `IMSI2`..`IMSI8`).
    pub fn factory_with(imsi: &str, others: &[(u8, String)]) -> Self {
        let installed = |id: u8, imsi: &str, first: bool| Subscription {
            id,
            imsi: imsi.to_string(),
            spn: Vec::new(),
            plmns: Vec::new(),
            keys: Vec::new(),
            enabled: first,
            fallback: first,
            bootstrap: first,
        };
        Self {
            subscriptions: std::iter::once(installed(1, imsi, true))
                .chain(others.iter().map(|(id, imsi)| installed(*id, imsi, false)))
                .collect(),
            attach_timeout_ms: DEFAULT_ATTACH_TIMEOUT_MS,
            return_to_primary_ms: 0,
            switching: None,
            return_to: None,
            last_outcome: SwitchOutcome::None,
            seq: 0,
            unconfirmed: Vec::new(),
            now: 0,
        }
    }

    /// The installed subscriptions.
    pub fn subscriptions(&self) -> &[Subscription] {
        &self.subscriptions
    }

    /// The enabled subscription's IMSI (what EF IMSI holds).
    pub fn active_imsi(&self) -> Option<&str> {
        self.subscriptions
            .iter()
            .find(|s| s.enabled)
            .map(|s| s.imsi.as_str())
    }

    /// Notifications sent and not confirmed yet.
    pub fn unconfirmed(&self) -> usize {
        self.unconfirmed.len()
    }

    /// Whether a switch waits for its attach.
    pub fn switching(&self) -> bool {
        self.switching.is_some()
    }

    /// Sets the clock for the commands that follow (the card runs them at `now`).
    pub fn set_now(&mut self, now: i64) {
        self.now = now;
    }

    /// Moves the switch on at `now`: attached, or past its deadline to the next stage.
    pub fn tick(&mut self, now: i64, network: &dyn Network) {
        self.now = now;
        if let Some((id, at)) = self.return_to {
            if self.switching.is_none() && now >= at {
                self.return_to = None;
                if self.subscriptions.iter().any(|s| s.id == id) {
                    self.start_switch(id);
                }
            }
        }
        // At most three stages (asked, previous, fallback) per tick.
        for _ in 0..3 {
            let Some(sw) = self.switching else {
                return;
            };
            let imsi = self.imsi_of(sw.target).unwrap_or_default();
            if network.attaches(&imsi) {
                let outcome = match sw.stage {
                    Stage::Asked => SwitchOutcome::Switched,
                    Stage::Previous => SwitchOutcome::RolledBack,
                    Stage::Fallback => SwitchOutcome::OnFallback,
                };
                self.finish(outcome);
                return;
            }
            match sw.deadline {
                Some(d) if now >= d => {}
                _ => return,
            }
            let fallback = self.subscriptions.iter().find(|s| s.fallback).map(|s| s.id);
            let next = match sw.stage {
                Stage::Asked if sw.previous != sw.target => Some((sw.previous, Stage::Previous)),
                Stage::Asked | Stage::Previous => fallback
                    .filter(|f| *f != sw.target)
                    .map(|f| (f, Stage::Fallback)),
                Stage::Fallback => None,
            };
            match next {
                Some((id, stage)) => {
                    self.enable_now(id);
                    self.switching = Some(Switching {
                        asked: sw.asked,
                        target: id,
                        previous: sw.previous,
                        stage,
                        deadline: (stage != Stage::Fallback)
                            .then(|| now.saturating_add(self.attach_timeout_ms)),
                    });
                }
                None => {
                    // Nothing else to try: stay here, on the fallback or the last one tried.
                    let outcome = if sw.stage == Stage::Asked {
                        SwitchOutcome::Switched
                    } else {
                        SwitchOutcome::OnFallback
                    };
                    self.finish(outcome);
                    return;
                }
            }
        }
    }

    /// The card reports on the subscription it runs on (at its first attach): a notification
    /// with outcome "none" (no switch), repeated until confirmed like the others.
    pub fn report(&mut self) {
        self.seq = self.seq.wrapping_add(1);
        let enabled = self.enabled_id().unwrap_or(0);
        let n = Notification {
            seq: self.seq,
            outcome: SwitchOutcome::None,
            enabled,
            imsi: self.imsi_of(enabled).unwrap_or_default(),
        };
        self.unconfirmed.push((n, self.now));
    }

    /// The notifications due at `now` (each again every [`NOTIFY_EVERY_MS`] until confirmed).
    pub fn due_notifications(&mut self, now: i64) -> Vec<Notification> {
        let mut due = Vec::new();
        for (n, next) in &mut self.unconfirmed {
            if *next <= now {
                due.push(n.clone());
                *next = now + NOTIFY_EVERY_MS;
            }
        }
        due
    }

    /// The audit's TLVs (the answer to `EA`).
    pub fn audit(&self) -> Vec<u8> {
        Audit {
            subscriptions: self
                .subscriptions
                .iter()
                .map(|s| AuditEntry {
                    id: s.id,
                    imsi: s.imsi.clone(),
                    enabled: s.enabled,
                    fallback: s.fallback,
                    bootstrap: s.bootstrap,
                })
                .collect(),
            enabled: self.enabled_id().unwrap_or(0),
            free_slots: (SLOTS - self.subscriptions.len().min(SLOTS)) as u8,
            version: VERSION,
            last_outcome: self.last_outcome,
            seq: self.seq,
        }
        .encode()
    }

    fn imsi_of(&self, id: u8) -> Option<String> {
        self.subscriptions
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.imsi.clone())
    }

    fn enabled_id(&self) -> Option<u8> {
        self.subscriptions.iter().find(|s| s.enabled).map(|s| s.id)
    }

    fn enable_now(&mut self, id: u8) {
        for s in &mut self.subscriptions {
            s.enabled = s.id == id;
        }
    }

    fn finish(&mut self, outcome: SwitchOutcome) {
        let asked = self.switching.map(|sw| sw.asked);
        self.switching = None;
        self.return_to = match (outcome, asked) {
            (SwitchOutcome::RolledBack | SwitchOutcome::OnFallback, Some(id))
                if self.return_to_primary_ms > 0 =>
            {
                Some((id, self.now.saturating_add(self.return_to_primary_ms)))
            }
            _ => None,
        };
        self.last_outcome = outcome;
        self.seq = self.seq.wrapping_add(1);
        let enabled = self.enabled_id().unwrap_or(0);
        let n = Notification {
            seq: self.seq,
            outcome,
            enabled,
            imsi: self.imsi_of(enabled).unwrap_or_default(),
        };
        self.unconfirmed.push((n, self.now));
    }

    /// Starts a switch to `id` (already installed).
    fn start_switch(&mut self, id: u8) {
        let previous = match self.switching {
            // A switch during a switch starts from where the card was before the first.
            Some(sw) => sw.previous,
            None => self.enabled_id().unwrap_or(id),
        };
        self.enable_now(id);
        self.return_to = None;
        self.switching = Some(Switching {
            asked: id,
            target: id,
            previous,
            stage: Stage::Asked,
            deadline: Some(self.now.saturating_add(self.attach_timeout_ms)),
        });
    }

    fn download(&mut self, data: &[u8]) -> u16 {
        let Some(fields) = parse(data) else {
            return SW_WRONG_DATA;
        };
        let Some(id) = fields.octet(0x80) else {
            return SW_WRONG_DATA;
        };
        let Some(imsi) = fields
            .one(0x81)
            .and_then(|v| std::str::from_utf8(v).ok())
            .filter(|s| (6..=15).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
        else {
            return SW_WRONG_DATA;
        };
        let spn = fields.one(0x82).unwrap_or_default();
        let plmns = fields.one(0x83).unwrap_or_default();
        let ki = fields.one(0x84);
        let opc = fields.one(0x85);
        let flag = match fields.one(0x86) {
            None => 0,
            Some(&[flag]) => flag,
            Some(_) => return SW_WRONG_DATA,
        };
        let bad_key = |k: Option<&[u8]>| k.is_some_and(|k| k.len() != 16);
        if id == 0
            || spn.len() > 16
            || !plmns.len().is_multiple_of(3)
            || bad_key(ki)
            || bad_key(opc)
        {
            return SW_WRONG_DATA;
        }
        if self.subscriptions.iter().any(|s| s.id == id) {
            return SW_CONDITIONS;
        }
        if self.subscriptions.len() >= SLOTS {
            return SW_NO_SLOT;
        }
        self.subscriptions.push(Subscription {
            id,
            imsi: imsi.to_string(),
            spn: spn.to_vec(),
            plmns: plmns.to_vec(),
            keys: [ki.unwrap_or_default(), opc.unwrap_or_default()].concat(),
            enabled: false,
            fallback: false,
            bootstrap: flag & 0x04 != 0,
        });
        if flag & 0x02 != 0 {
            self.set_fallback(id);
        }
        if flag & 0x01 != 0 {
            self.start_switch(id);
        }
        SW_OK
    }

    fn set_fallback(&mut self, id: u8) {
        for s in &mut self.subscriptions {
            s.fallback = s.id == id;
        }
    }

    /// The slot of the subscription a command's `80` names: `6A80` if the data does not
    /// name one, `6A88` if none such is installed.
    fn named(&self, data: &[u8]) -> Result<usize, u16> {
        let id = parse(data)
            .and_then(|f| f.octet(0x80))
            .ok_or(SW_WRONG_DATA)?;
        self.subscriptions
            .iter()
            .position(|s| s.id == id)
            .ok_or(SW_NOT_FOUND)
    }

    fn timers(&mut self, data: &[u8]) -> u16 {
        let Some(fields) = parse(data) else {
            return SW_WRONG_DATA;
        };
        let secs = |tag| match fields.one(tag) {
            None => Ok(None),
            Some(_) => fields.u16(tag).map(|s| Some(i64::from(s) * 1000)).ok_or(()),
        };
        match (secs(0x8D), secs(0x8E)) {
            (Ok(attach), Ok(back)) => {
                if let Some(a) = attach {
                    self.attach_timeout_ms = a;
                }
                if let Some(b) = back {
                    self.return_to_primary_ms = b;
                }
                SW_OK
            }
            _ => SW_WRONG_DATA,
        }
    }

    fn confirm(&mut self, data: &[u8]) -> u16 {
        let Some(seq) = parse(data).and_then(|f| f.u16(0x8C)) else {
            return SW_WRONG_DATA;
        };
        self.unconfirmed.retain(|(n, _)| n.seq > seq);
        SW_OK
    }
}

impl Applet for SubscriptionApp {
    fn execute(&mut self, apdu: &CApdu) -> RApdu {
        if apdu.cla() != 0x80 {
            return RApdu::new(Vec::new(), SW_CLA);
        }
        if !matches!(apdu.ins(), 0xE2 | 0xE4 | 0xE6 | 0xE8 | 0xEA | 0xEC | 0xEE) {
            return RApdu::new(Vec::new(), SW_INS);
        }
        if apdu.p1() != 0 || apdu.p2() != 0 {
            return RApdu::new(Vec::new(), SW_P1P2);
        }
        let data = apdu.data();
        let sw = match apdu.ins() {
            0xE2 => self.download(data),
            0xE4 => match self.named(data) {
                Err(sw) => sw,
                Ok(i) => {
                    self.start_switch(self.subscriptions[i].id);
                    SW_OK
                }
            },
            0xE6 => match self.named(data) {
                Err(sw) => sw,
                Ok(i) if self.subscriptions[i].enabled || self.subscriptions[i].fallback => {
                    SW_CONDITIONS
                }
                Ok(i) => {
                    self.subscriptions.remove(i);
                    SW_OK
                }
            },
            0xE8 => match self.named(data) {
                Err(sw) => sw,
                Ok(i) => {
                    self.set_fallback(self.subscriptions[i].id);
                    SW_OK
                }
            },
            0xEA => return RApdu::new(self.audit(), SW_OK),
            0xEC => self.timers(data),
            _ => self.confirm(data),
        };
        RApdu::new(Vec::new(), sw)
    }
}

fn parse(data: &[u8]) -> Option<Fields<'_>> {
    Fields::parse(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::subscription::tlv;
    use std::collections::HashSet;

    const FACTORY_IMSI: &str = "001010000000001";

    /// A network that refuses the IMSIs in its set.
    struct Refusing(HashSet<String>);

    impl Network for Refusing {
        fn attaches(&self, imsi: &str) -> bool {
            !self.0.contains(imsi)
        }
    }

    fn refusing(imsis: &[&str]) -> Refusing {
        Refusing(imsis.iter().map(|s| s.to_string()).collect())
    }

    fn run(app: &mut SubscriptionApp, ins: u8, data: &[u8]) -> RApdu {
        let apdu = CApdu::new(0x80, ins, 0, 0, data.to_vec(), None).expect("apdu");
        app.execute(&apdu)
    }

    fn download(id: u8, imsi: &str, flags: u8) -> Vec<u8> {
        let mut d = Vec::new();
        tlv(&mut d, 0x80, &[id]);
        tlv(&mut d, 0x81, imsi.as_bytes());
        tlv(&mut d, 0x82, b"OTAGW");
        tlv(&mut d, 0x83, &[0x62, 0xF2, 0x10]);
        tlv(&mut d, 0x84, &[0x11; 16]);
        tlv(&mut d, 0x85, &[0x22; 16]);
        tlv(&mut d, 0x86, &[flags]);
        d
    }

    fn id(id: u8) -> Vec<u8> {
        vec![0x80, 0x01, id]
    }

    fn states(app: &SubscriptionApp) -> Vec<(u8, bool, bool)> {
        app.subscriptions()
            .iter()
            .map(|s| (s.id, s.enabled, s.fallback))
            .collect()
    }

    #[test]
    fn factory_audit_is_coded_as_documented() {
        let mut app = SubscriptionApp::factory(FACTORY_IMSI);
        let r = run(&mut app, 0xEA, &[]);
        assert_eq!(r.sw, 0x9000);
        let expected = "A01A800101810F303031303130303030303030303031870101860106\
                        880101890107\
                        8A020100\
                        8B0100\
                        8C020000";
        assert_eq!(hex::encode_upper(&r.data), expected);
    }

    #[test]
    fn download_and_enable_now_switches_and_notifies() {
        let mut app = SubscriptionApp::factory(FACTORY_IMSI);
        app.set_now(1_000);
        let r = run(&mut app, 0xE2, &download(2, "26201123456789", 0x01));
        assert_eq!(r.sw, 0x9000);
        assert_eq!(app.active_imsi(), Some("26201123456789"));
        assert!(app.switching());
        app.tick(2_000, &EveryNetwork);
        assert!(!app.switching());
        assert_eq!(states(&app), vec![(1, false, true), (2, true, false)]);
        let due = app.due_notifications(2_000);
        assert_eq!(
            due,
            vec![Notification {
                seq: 1,
                outcome: SwitchOutcome::Switched,
                enabled: 2,
                imsi: "26201123456789".into(),
            }]
        );
        assert_eq!(
            hex::encode_upper(due[0].encode()),
            // 8C 02 0001, 8F 01 01, 88 01 02, 81 0E and the 14 IMSI digits: 26 octets.
            "E01A8C0200018F010188010281".to_owned() + "0E3236323031313233343536373839"
        );
        let s = &app.subscriptions()[1];
        assert_eq!((s.spn.as_slice(), s.keys.len()), (&b"OTAGW"[..], 32));
    }

    #[test]
    fn delete_refused_for_the_enabled_and_the_fallback_and_changes_nothing() {
        let mut app = SubscriptionApp::factory(FACTORY_IMSI);
        assert_eq!(
            run(&mut app, 0xE2, &download(2, "26201000000002", 0)).sw,
            0x9000
        );
        assert_eq!(
            run(&mut app, 0xE2, &download(3, "26201000000003", 0)).sw,
            0x9000
        );
        let before = app.clone();
        // 1 is enabled and the fallback.
        assert_eq!(run(&mut app, 0xE6, &id(1)).sw, 0x6985);
        assert_eq!(run(&mut app, 0xE8, &id(2)).sw, 0x9000);
        // 2 now holds the fallback: refused; 1 still enabled: refused.
        assert_eq!(run(&mut app, 0xE6, &id(2)).sw, 0x6985);
        assert_eq!(run(&mut app, 0xE6, &id(1)).sw, 0x6985);
        assert_eq!(run(&mut app, 0xE6, &id(9)).sw, 0x6A88);
        assert_eq!(
            states(&app),
            vec![(1, true, false), (2, false, true), (3, false, false)],
            "exactly one fallback, moved to 2"
        );
        assert_eq!(run(&mut app, 0xE6, &id(3)).sw, 0x9000);
        assert_eq!(states(&app), vec![(1, true, false), (2, false, true)]);
        assert_ne!(app, before);
        let audit = app.audit();
        assert!(hex::encode_upper(&audit).contains("890106"), "free slots 6");
    }

    #[test]
    fn slots_ids_and_bad_data_are_refused_without_change() {
        let mut app = SubscriptionApp::factory(FACTORY_IMSI);
        for i in 2..=8 {
            let imsi = format!("2620100000000{i:02}");
            assert_eq!(run(&mut app, 0xE2, &download(i, &imsi, 0)).sw, 0x9000);
        }
        let full = app.clone();
        assert_eq!(
            run(&mut app, 0xE2, &download(9, "262010000000009", 0)).sw,
            0x6A84
        );
        assert_eq!(
            run(&mut app, 0xE2, &download(2, "262010000000010", 0)).sw,
            0x6985
        );
        let mut bad_imsi = Vec::new();
        tlv(&mut bad_imsi, 0x80, &[10]);
        tlv(&mut bad_imsi, 0x81, b"26201ABC");
        assert_eq!(run(&mut app, 0xE2, &bad_imsi).sw, 0x6A80);
        let mut short_key = download(10, "262010000000010", 0);
        short_key.extend_from_slice(&[0x84, 0x0F]);
        short_key.extend_from_slice(&[0; 15]);
        assert_eq!(run(&mut app, 0xE2, &short_key).sw, 0x6A80, "tag 84 twice");
        assert_eq!(
            run(&mut app, 0xE2, &[0x80, 0x05, 0x01]).sw,
            0x6A80,
            "truncated"
        );
        assert_eq!(app, full);
        let wrong_cla = CApdu::new(0x00, 0xEA, 0, 0, Vec::new(), None).expect("apdu");
        assert_eq!(app.execute(&wrong_cla).sw, 0x6E00);
        assert_eq!(run(&mut app, 0x20, &[]).sw, 0x6D00);
        let p1 = CApdu::new(0x80, 0xEA, 1, 0, Vec::new(), None).expect("apdu");
        assert_eq!(app.execute(&p1).sw, 0x6A86);
    }

    #[test]
    fn no_attach_rolls_back_then_falls_back() {
        let mut app = SubscriptionApp::factory(FACTORY_IMSI);
        app.set_now(0);
        assert_eq!(
            run(&mut app, 0xE2, &download(2, "26201000000002", 0)).sw,
            0x9000
        );
        assert_eq!(
            run(&mut app, 0xE2, &download(3, "26201000000003", 0x02)).sw,
            0x9000
        );
        // The network refuses 2; 1 (enabled before) attaches: rolled back to 1.
        let net = refusing(&["26201000000002"]);
        assert_eq!(run(&mut app, 0xE4, &id(2)).sw, 0x9000);
        app.tick(30_000, &net);
        assert_eq!(app.active_imsi(), Some("26201000000002"), "still waiting");
        app.tick(DEFAULT_ATTACH_TIMEOUT_MS, &net);
        assert!(!app.switching());
        assert_eq!(app.active_imsi(), Some(FACTORY_IMSI));
        let n = app.due_notifications(DEFAULT_ATTACH_TIMEOUT_MS);
        assert_eq!(
            (n[0].seq, n[0].outcome, n[0].enabled),
            (1, SwitchOutcome::RolledBack, 1)
        );
        // Now 1 is refused too: from 2 back to 1, then to the fallback 3.
        let net = refusing(&["26201000000002", FACTORY_IMSI]);
        app.set_now(100_000);
        assert_eq!(run(&mut app, 0xE4, &id(2)).sw, 0x9000);
        app.tick(100_000 + DEFAULT_ATTACH_TIMEOUT_MS, &net);
        assert_eq!(
            app.active_imsi(),
            Some(FACTORY_IMSI),
            "trying the previous one"
        );
        app.tick(100_000 + 2 * DEFAULT_ATTACH_TIMEOUT_MS, &net);
        assert_eq!(app.active_imsi(), Some("26201000000003"));
        assert!(!app.switching());
        let n = app.due_notifications(100_000 + 2 * DEFAULT_ATTACH_TIMEOUT_MS);
        let last = n.last().expect("notification");
        assert_eq!(
            (last.seq, last.outcome, last.enabled),
            (2, SwitchOutcome::OnFallback, 3)
        );
        assert!(hex::encode_upper(app.audit()).ends_with("8B01038C020002"));
    }

    #[test]
    fn notifications_repeat_until_confirmed() {
        let mut app = SubscriptionApp::factory(FACTORY_IMSI);
        assert_eq!(
            run(&mut app, 0xE2, &download(2, "26201000000002", 0x01)).sw,
            0x9000
        );
        app.tick(10, &EveryNetwork);
        assert_eq!(app.due_notifications(10).len(), 1);
        assert!(app.due_notifications(10 + NOTIFY_EVERY_MS - 1).is_empty());
        assert_eq!(
            app.due_notifications(10 + NOTIFY_EVERY_MS).len(),
            1,
            "again"
        );
        assert_eq!(run(&mut app, 0xEE, &[0x8C, 0x02, 0x00, 0x00]).sw, 0x9000);
        assert_eq!(
            app.due_notifications(10 + 3 * NOTIFY_EVERY_MS).len(),
            1,
            "seq 0 covers none"
        );
        assert_eq!(run(&mut app, 0xEE, &[0x8C, 0x02, 0x00, 0x01]).sw, 0x9000);
        assert!(app.due_notifications(10 + 9 * NOTIFY_EVERY_MS).is_empty());
        assert_eq!(run(&mut app, 0xEE, &[0x8C, 0x01, 0x01]).sw, 0x6A80);
    }

    #[test]
    fn the_seeded_network_refuses_its_share_the_same_way_each_time() {
        let net = SeededNetwork {
            seed: 7,
            refuse_share: 0.25,
            refused: ["262010000000001".to_string()].into_iter().collect(),
        };
        let imsis: Vec<String> = (0..4000).map(|i| format!("2620100{i:08}")).collect();
        let refused = imsis.iter().filter(|i| !net.attaches(i)).count();
        assert!(
            (850..=1150).contains(&refused),
            "{refused} of 4000 refused at 25%"
        );
        for i in &imsis {
            assert_eq!(net.attaches(i), net.attaches(i), "stable for {i}");
        }
        let other = SeededNetwork {
            seed: 8,
            ..net.clone()
        };
        assert!(
            imsis.iter().any(|i| net.attaches(i) != other.attaches(i)),
            "the seed matters"
        );
        assert!(!net.attaches("262010000000001"), "named IMSIs are refused");
        assert!(SeededNetwork::default().attaches("262010000000001"));
    }

    #[test]
    fn return_to_primary_tries_the_asked_subscription_again() {
        let mut app = SubscriptionApp::factory(FACTORY_IMSI);
        // Attach timeout 10 s, return to primary after 300 s.
        assert_eq!(
            run(
                &mut app,
                0xEC,
                &[0x8D, 0x02, 0x00, 0x0A, 0x8E, 0x02, 0x01, 0x2C]
            )
            .sw,
            0x9000
        );
        assert_eq!(
            run(&mut app, 0xE2, &download(2, "26201000000002", 0x01)).sw,
            0x9000
        );
        app.tick(10_000, &refusing(&["26201000000002"]));
        assert_eq!(app.active_imsi(), Some(FACTORY_IMSI), "rolled back");
        app.tick(200_000, &EveryNetwork);
        assert_eq!(app.active_imsi(), Some(FACTORY_IMSI), "not yet");
        app.tick(310_000, &EveryNetwork);
        assert_eq!(
            app.active_imsi(),
            Some("26201000000002"),
            "the primary again"
        );
        let n = app.due_notifications(310_000);
        assert_eq!(n.last().map(|n| n.outcome), Some(SwitchOutcome::Switched));
    }
}
