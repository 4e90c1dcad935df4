//! A virtual UICC: identity, SCP80 key sets with their counters, the file system overlay and the
//! GlobalPlatform registry, and the card side of a secured command packet.

use std::fmt;

use otagw_sms::smsc_sim::PorReply;

use crate::security::command::encode_command_packet;
use crate::security::response::{encode_response_packet, SMS_RESPONSE_UDH};
use crate::security::{
    check_counter, CcScope, CipherAlgorithm, CommandHeader, CommandPacketView, Counter, Integrity,
    IntegrityAlgorithm, KeyConfig, KeyIdentifier, PacketFraming, PorRequirement, PorStatus,
    ResponseHeader, Scp80Keys, SecurityError, Spi, Tar,
};

use crate::script::{GpVersion, KcvFill};

use super::exec::{run_script, ScriptRun};
use super::fs::{FileSystem, NodeKind, Template};
use super::isd::Isd;
use super::ram::{Ram, Registry};
use super::rfm::{Rfm, RfmView};
use super::subscriptions::{Network, Notification, SubscriptionApp, TAR_SUBSCRIPTIONS};
use super::CardError;
use crate::digits::imsi_ef;
use crate::digits::Digits;

/// TAR of the RFM applet with the SIM / GSM file system view (MF selected at start).
pub const TAR_RFM_GSM: Tar = [0xB0, 0x00, 0x10];
/// TAR of the RFM applet with the USIM view (ADF USIM selected at start).
pub const TAR_RFM_USIM: Tar = [0xB0, 0x00, 0x11];
/// TAR of the Issuer Security Domain, which runs RAM commands.
pub const TAR_RAM_ISD: Tar = [0x00, 0x00, 0x00];

/// A key value of up to 32 octets, stored inline.
#[derive(Clone, Copy, PartialEq, Eq)]
struct KeyValue {
    len: u8,
    bytes: [u8; 32],
}

impl KeyValue {
    fn new(field: &'static str, key: &[u8]) -> Result<Self, CardError> {
        if !matches!(key.len(), 0 | 8 | 16 | 24 | 32) {
            return Err(CardError::KeyLength {
                field,
                len: key.len(),
            });
        }
        let mut bytes = [0u8; 32];
        if let Some(dst) = bytes.get_mut(..key.len()) {
            dst.copy_from_slice(key);
        }
        Ok(KeyValue {
            len: key.len() as u8,
            bytes,
        })
    }

    fn as_slice(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

/// One key set of a card: the KIc, KID and (optionally) KIK of one key version, the algorithms
/// for implicit KIc/KID codings, and the card's counter for this key set.
///
/// The KIK (key identifier 3, the DEK of TS 102 226 clause 8.2.1) deciphers the new keys of a
/// PUT KEY sent in a packet secured with this key set.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySet {
    version: u8,
    kic: KeyValue,
    kid: KeyValue,
    kik: KeyValue,
    kic_algorithm: Option<CipherAlgorithm>,
    kid_algorithm: Option<IntegrityAlgorithm>,
    counter: Counter,
}

impl fmt::Debug for KeySet {
    // Key values are never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("version", &self.version)
            .field("kic_len", &self.kic.len)
            .field("kid_len", &self.kid.len)
            .field("kik_len", &self.kik.len)
            .field("kic_algorithm", &self.kic_algorithm)
            .field("kid_algorithm", &self.kid_algorithm)
            .field("counter", &self.counter.value())
            .finish()
    }
}

impl KeySet {
    /// A key set for key version `version` (the high nibble of KIc/KID, 0..=15). Keys are 8,
    /// 16, 24 or 32 octets, or empty when the card has no such key.
    pub fn new(version: u8, kic: &[u8], kid: &[u8]) -> Result<Self, CardError> {
        if version > 15 {
            return Err(CardError::KeyVersion(version));
        }
        Ok(KeySet {
            version,
            kic: KeyValue::new("KIc", kic)?,
            kid: KeyValue::new("KID", kid)?,
            kik: KeyValue::new("KIK", &[])?,
            kic_algorithm: None,
            kid_algorithm: None,
            counter: Counter::default(),
        })
    }

    /// Sets the algorithms used where the KIc/KID coding is implicit (and which an explicit
    /// coding must agree with); checks the key lengths against them.
    pub fn with_algorithms(
        mut self,
        kic: Option<CipherAlgorithm>,
        kid: Option<IntegrityAlgorithm>,
    ) -> Result<Self, CardError> {
        if let Some(a) = kic.filter(|a| {
            !self.kic.as_slice().is_empty() && !a.accepts_key_len(self.kic.as_slice().len())
        }) {
            return Err(CardError::KeyAlgorithm {
                field: "KIc",
                len: self.kic.as_slice().len(),
                algorithm: a.name(),
                expected: a.key_lengths(),
            });
        }
        if let Some(a) = kid.filter(|a| {
            !self.kid.as_slice().is_empty() && !a.accepts_key_len(self.kid.as_slice().len())
        }) {
            return Err(CardError::KeyAlgorithm {
                field: "KID",
                len: self.kid.as_slice().len(),
                algorithm: a.name(),
                expected: a.key_lengths(),
            });
        }
        self.kic_algorithm = kic;
        self.kid_algorithm = kid;
        Ok(self)
    }

    /// Sets the card's stored counter for this key set.
    pub fn with_counter(mut self, counter: Counter) -> Self {
        self.counter = counter;
        self
    }

    /// Sets the key-encryption key (KIK, 8, 16, 24 or 32 octets; empty for none).
    pub fn with_kik(mut self, kik: &[u8]) -> Result<Self, CardError> {
        self.kik = KeyValue::new("KIK", kik)?;
        Ok(self)
    }

    /// This key set under another version (PUT KEY with a new key version).
    pub(crate) fn with_version(mut self, version: u8) -> Result<Self, CardError> {
        if version > 15 {
            return Err(CardError::KeyVersion(version));
        }
        self.version = version;
        Ok(self)
    }

    /// Replaces the key with this PUT KEY identifier (1 KIc, 2 KID, 3 KIK), checking it against
    /// the configured algorithm of KIc / KID.
    pub(crate) fn with_key(mut self, id: u8, key: &[u8]) -> Result<Self, CardError> {
        match id {
            1 => self.kic = KeyValue::new("KIc", key)?,
            2 => self.kid = KeyValue::new("KID", key)?,
            3 => self.kik = KeyValue::new("KIK", key)?,
            // The ISD refuses other identifiers before it gets here.
            _ => {}
        }
        let (kic, kid) = (self.kic_algorithm, self.kid_algorithm);
        self.with_algorithms(kic, kid)
    }

    /// Key version (0..=15).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// KIc value (empty if none).
    pub fn kic(&self) -> &[u8] {
        self.kic.as_slice()
    }

    /// KID value (empty if none).
    pub fn kid(&self) -> &[u8] {
        self.kid.as_slice()
    }

    /// KIK value (the key-encryption key of PUT KEY), if the key set has one.
    pub fn kik(&self) -> Option<&[u8]> {
        Some(self.kik.as_slice()).filter(|k| !k.is_empty())
    }

    /// Algorithm for implicit KIc codings.
    pub fn kic_algorithm(&self) -> Option<CipherAlgorithm> {
        self.kic_algorithm
    }

    /// Algorithm for implicit KID codings.
    pub fn kid_algorithm(&self) -> Option<IntegrityAlgorithm> {
        self.kid_algorithm
    }

    /// The card's stored counter for this key set.
    pub fn counter(&self) -> Counter {
        self.counter
    }
}

/// What the card did with one command packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardOutcome {
    /// The PoR status the card reached; `None` when the packet was discarded unread (its
    /// CPL/CHL framing is broken, so not even the TAR or SPI can be trusted to answer).
    pub status: Option<PorStatus>,
    /// Commands executed.
    pub executed: usize,
    /// Status word of the last command executed.
    pub last_sw: Option<u16>,
    /// The PoR the card sends, if the SPI asks for one.
    pub por: Option<PorReply>,
    /// Whether that PoR is protected (ciphered / RC / CC) as the SPI asks, rather than sent in
    /// clear as an error report.
    pub por_protected: bool,
    /// Why the card refused or discarded the packet.
    pub detail: Option<String>,
    /// The packet was a push (TS 102 226 clause 9) to the ISD asking the card to open a BIP
    /// channel and a CAT_TP link; whoever plays the terminal opens it.
    pub push: Option<otagw_catp::push::PushRequest>,
}

impl CardOutcome {
    /// A packet taken in and handed on without running a script (a trigger, a push): PoR OK,
    /// nothing executed.
    fn received(por: Option<PorReply>) -> Self {
        CardOutcome {
            status: Some(PorStatus::Ok),
            executed: 0,
            last_sw: None,
            por_protected: por.is_some(),
            por,
            detail: None,
            push: None,
        }
    }
}

/// Card behaviours that differ between real cards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CardPolicy {
    /// Protect PoRs reporting counter errors (02 low, 03 high, 04 blocked) as the SPI asks; the
    /// packet itself was authentic. Off (the default): they go in clear like the other security
    /// errors, as PROTOCOL-NOTES reports of real cards on a replayed counter.
    pub protect_counter_errors: bool,
    /// The GlobalPlatform version the ISD implements: how it reads the install parameters'
    /// length and which GET STATUS formats it answers (GP 2.1.1: P2 `02` gets 6A86).
    pub gp_version: GpVersion,
    /// The octets its AES key check values encipher.
    pub kcv_fill: KcvFill,
}

/// A virtual UICC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualCard {
    iccid: Digits,
    imsi: Digits,
    msisdn: Digits,
    keys: Vec<KeySet>,
    fs: FileSystem,
    ram: Option<Box<Registry>>,
    policy: CardPolicy,
    /// SCP81: PSK keys and triggers received (boxed: most cards of a fleet have none).
    scp81: Option<Box<Scp81Card>>,
    /// The subscription management application, once used (until then the card is as it left
    /// the factory: its IMSI the one subscription).
    subscriptions: Option<Box<SubscriptionApp>>,
}

/// A card's SCP81 state: PSK-TLS keys (key versions 0x40-0x4F) and the administration session
/// triggers its ISD received and the runtime has not yet acted on.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Scp81Card {
    /// (key version, PSK identity, key).
    psk: Vec<(u8, Vec<u8>, Vec<u8>)>,
    /// Tag 81 TLVs, as received.
    triggers: Vec<Vec<u8>>,
}

impl fmt::Debug for Scp81Card {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scp81Card")
            .field(
                "psk_versions",
                &self.psk.iter().map(|p| p.0).collect::<Vec<_>>(),
            )
            .field("triggers", &self.triggers.len())
            .finish()
    }
}

static EMPTY_REGISTRY: Registry = Registry::EMPTY;

/// Which applet a TAR reaches.
#[derive(Debug, Clone, Copy)]
enum Target {
    Rfm(RfmView),
    Ram,
    Subscriptions,
}

/// A refusal: the status and why.
type Refusal = (PorStatus, String);

/// Maps a failure to open a packet onto a PoR status (TS 102 225 table 5.5): 01 for an RC/CC
/// mismatch, 05 where ciphering is the trouble, 06 for everything else.
fn classify(e: &SecurityError, spi: &Spi) -> PorStatus {
    use SecurityError as E;
    match e {
        E::IntegrityMismatch { .. } => PorStatus::RcCcDsFailed,
        E::NotBlockMultiple { .. } => PorStatus::CipheringError,
        E::InvalidPadding { .. } | E::Crypto(_) if spi.ciphered => PorStatus::CipheringError,
        E::KeyLength { field: "KIc", .. }
        | E::UnknownAlgorithm { field: "KIc", .. }
        | E::ImplicitAlgorithm { field: "KIc", .. }
        | E::AlgorithmConflict { field: "KIc", .. }
        | E::MissingKey { field: "KIc", .. } => PorStatus::CipheringError,
        _ => PorStatus::UndefinedSecurityError,
    }
}

/// The PoR as it leaves the card: over SMS the user data (UDH `02 71 00` and the packet);
/// over CAT_TP the SDU (RPI `02`, BER RPL, the rest of the packet).
fn por_reply(packet: Vec<u8>, spi: &Spi, framing: PacketFraming) -> Option<PorReply> {
    let user_data = match framing {
        PacketFraming::Sms => {
            let mut user_data = Vec::with_capacity(3 + packet.len());
            user_data.extend_from_slice(&SMS_RESPONSE_UDH);
            user_data.extend_from_slice(&packet);
            user_data
        }
        PacketFraming::CatTp => {
            otagw_catp::framing::to_cattp(otagw_catp::framing::RPI, &packet).ok()?
        }
    };
    Some(PorReply {
        user_data,
        via_submit: spi.por_via_submit,
    })
}

/// The RC/CC scope of PoRs sent over a framing.
fn por_scope(framing: PacketFraming) -> CcScope {
    match framing {
        PacketFraming::Sms => CcScope::SmsUdh,
        PacketFraming::CatTp => CcScope::CatTp,
    }
}

/// Whether the SPI asks for a PoR given whether something went wrong.
fn por_wanted(spi: &Spi, error: bool) -> bool {
    match spi.por {
        PorRequirement::Always => true,
        PorRequirement::OnError => error,
        PorRequirement::None | PorRequirement::Reserved => false,
    }
}

/// A PoR in clear: no ciphering, no RC/CC, no data.
fn unprotected_por(
    spi: &Spi,
    tar: Tar,
    counter: Counter,
    status: PorStatus,
    framing: PacketFraming,
) -> Option<PorReply> {
    let clear = Spi {
        por_integrity: Integrity::None,
        por_ciphered: false,
        ..*spi
    };
    encode_response_packet(
        &ResponseHeader {
            tar,
            counter,
            status,
        },
        &clear,
        &Scp80Keys::default(),
        &[],
        por_scope(framing),
    )
    .ok()
    .and_then(|p| por_reply(p, spi, framing))
}

/// The command's counter as far as the card can read it: in clear, or from the first
/// deciphered block if the KIc key is usable; zero otherwise.
fn recover_counter(packet: &[u8], spi: &Spi, keys: Option<&Scp80Keys>) -> Counter {
    let region = packet.get(10..).unwrap_or_default();
    let bytes: Option<[u8; 5]> = if spi.ciphered {
        keys.and_then(Scp80Keys::cipher).and_then(|key| {
            let mut block = region.get(..key.block_len())?.to_vec();
            key.decrypt(&mut block).ok()?;
            block.get(..5)?.try_into().ok()
        })
    } else {
        region.get(..5).and_then(|b| b.try_into().ok())
    };
    bytes.map(Counter::from_bytes).unwrap_or_default()
}

/// Whether the PoR can be protected as the SPI asks with these keys.
fn por_protectable(spi: &Spi, keys: &Scp80Keys) -> Result<(), String> {
    if spi.por_ciphered && keys.cipher().is_none() {
        return Err("the SPI asks for a ciphered PoR but the card has no KIc key for it".into());
    }
    match spi.por_integrity {
        Integrity::None => Ok(()),
        Integrity::Ds => Err("the SPI asks for a digital signature on the PoR".into()),
        kind => match keys.por_integrity() {
            Some(k) if k.algorithm().is_rc() == (kind == Integrity::Rc) => Ok(()),
            _ => Err("the SPI asks for an RC/CC on the PoR that the card's KID cannot give".into()),
        },
    }
}

pub(crate) fn parse_identity(field: &'static str, value: &str) -> Result<Digits, CardError> {
    let bad = |reason: &'static str| CardError::Identity {
        field,
        value: value.to_string(),
        reason,
    };
    let (digits, range, what) = match field {
        "ICCID" => {
            let v = if value.len() == 20 {
                value.strip_suffix(['F', 'f']).unwrap_or(value)
            } else {
                value
            };
            (v, 19..=20, "19 or 20 digits (20 characters when F-padded)")
        }
        "IMSI" => (value, 6..=15, "6 to 15 digits"),
        _ => (
            value.strip_prefix('+').unwrap_or(value),
            1..=15,
            "1 to 15 digits, optionally after '+'",
        ),
    };
    if !range.contains(&digits.len()) {
        return Err(bad(what));
    }
    Digits::parse(digits).ok_or_else(|| bad(what))
}

impl VirtualCard {
    /// A card with this identity, the template file system, an empty GlobalPlatform registry
    /// and no keys. ICCID: 19 or 20 digits, possibly F-padded to 20; IMSI 6 to 15 digits;
    /// MSISDN up to 15 digits with an optional '+'.
    pub fn new(iccid: &str, imsi: &str, msisdn: &str) -> Result<Self, CardError> {
        Ok(VirtualCard {
            iccid: parse_identity("ICCID", iccid)?,
            imsi: parse_identity("IMSI", imsi)?,
            msisdn: parse_identity("MSISDN", msisdn)?,
            keys: Vec::new(),
            fs: FileSystem::default(),
            ram: None,
            policy: CardPolicy::default(),
            scp81: None,
            subscriptions: None,
        })
    }

    pub(crate) fn from_parts(
        iccid: Digits,
        imsi: Digits,
        msisdn: Digits,
        keys: Vec<KeySet>,
    ) -> Self {
        VirtualCard {
            iccid,
            imsi,
            msisdn,
            keys,
            fs: FileSystem::default(),
            ram: None,
            policy: CardPolicy::default(),
            scp81: None,
            subscriptions: None,
        }
    }

    /// Adds a key set, replacing any of the same version.
    pub fn with_key_set(mut self, keys: KeySet) -> Self {
        self.set_key_set(keys);
        self
    }

    /// Adds a key set, replacing any of the same version.
    pub fn set_key_set(&mut self, keys: KeySet) {
        match self.keys.iter_mut().find(|k| k.version == keys.version) {
            Some(slot) => *slot = keys,
            None => {
                self.keys.push(keys);
                self.keys.sort_by_key(|k| k.version);
            }
        }
    }

    /// Sets the card's policy.
    pub fn with_policy(mut self, policy: CardPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The card's policy.
    pub fn policy(&self) -> CardPolicy {
        self.policy
    }

    /// ICCID digits (no F padding).
    pub fn iccid(&self) -> String {
        self.iccid.to_string()
    }

    /// IMSI digits.
    pub fn imsi(&self) -> String {
        self.imsi.to_string()
    }

    /// MSISDN digits (no '+').
    pub fn msisdn(&self) -> String {
        self.msisdn.to_string()
    }

    pub(crate) fn msisdn_digits(&self) -> Digits {
        self.msisdn
    }

    pub(crate) fn iccid_digits(&self) -> Digits {
        self.iccid
    }

    /// Key sets, by version.
    pub fn key_sets(&self) -> &[KeySet] {
        &self.keys
    }

    /// The key set of a version.
    pub fn key_set(&self, version: u8) -> Option<&KeySet> {
        self.keys.iter().find(|k| k.version == version)
    }

    /// Sets the stored counter of a key set; false if the card has no such version.
    pub fn set_counter(&mut self, version: u8, counter: Counter) -> bool {
        match self.keys.iter_mut().find(|k| k.version == version) {
            Some(k) => {
                k.counter = counter;
                true
            }
            None => false,
        }
    }

    /// The content of the EF at `path` (FIDs from the MF, `7FFF` for the ADF USIM), e.g.
    /// `[0x7F20, 0x6F46]`; `None` if there is no such EF.
    pub fn read_file(&self, path: &[u16]) -> Option<Vec<u8>> {
        let t = Template::get();
        let id = t.resolve_path(path)?;
        matches!(t.node(id)?.kind, NodeKind::Ef(_))
            .then(|| self.fs.content(id, self.iccid, self.imsi).into_owned())
    }

    /// Number of EFs this card changed from the template.
    pub fn changed_files(&self) -> usize {
        self.fs.changed_files()
    }

    /// The GlobalPlatform registry (load files and applet instances).
    pub fn registry(&self) -> &Registry {
        self.ram.as_deref().unwrap_or(&EMPTY_REGISTRY)
    }

    /// Heap octets this card holds beyond its own struct (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.keys.capacity() * std::mem::size_of::<KeySet>()
            + self.fs.heap_bytes()
            + self
                .ram
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<Registry>())
            + self
                .subscriptions
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<SubscriptionApp>())
    }

    /// Sets the SCP81 PSK of a key version (0x40-0x4F), replacing any of that version.
    pub fn set_psk(&mut self, version: u8, identity: &[u8], key: &[u8]) {
        let s = self.scp81.get_or_insert_with(Default::default);
        s.psk.retain(|p| p.0 != version);
        s.psk.push((version, identity.to_vec(), key.to_vec()));
    }

    /// The SCP81 PSK of a key version: (identity, key).
    pub fn psk(&self, version: u8) -> Option<(Vec<u8>, Vec<u8>)> {
        self.scp81
            .as_ref()?
            .psk
            .iter()
            .find(|p| p.0 == version)
            .map(|p| (p.1.clone(), p.2.clone()))
    }

    /// Takes the administration session triggers (tag 81 TLVs) the ISD received.
    pub fn take_triggers(&mut self) -> Vec<Vec<u8>> {
        self.scp81
            .as_mut()
            .map(|s| std::mem::take(&mut s.triggers))
            .unwrap_or_default()
    }

    /// The card receives a command packet (from CPL on, reassembled); the PoR it sends, if any.
    pub fn process_command_packet(&mut self, packet: &[u8]) -> Option<PorReply> {
        self.process(packet).por
    }

    /// Runs `script` (compact or expanded) on the applet behind `tar` without SCP80, as if it
    /// had arrived in an authentic packet; returns the script response. `None` for an unknown
    /// TAR.
    ///
    /// No key set secures such a run, so a PUT KEY in it is refused (6982); see
    /// [`VirtualCard::run_secured_script`].
    pub fn run_script(&mut self, tar: Tar, script: &[u8]) -> Option<Vec<u8>> {
        let target = Self::target(tar)?;
        Some(self.execute(target, script, None).response)
    }

    /// Like [`VirtualCard::run_script`], as if the packet had been secured with the key set of
    /// `key_version`: a PUT KEY deciphers its keys with that key set's KIK.
    pub fn run_secured_script(
        &mut self,
        tar: Tar,
        key_version: u8,
        script: &[u8],
    ) -> Option<Vec<u8>> {
        let target = Self::target(tar)?;
        Some(self.execute(target, script, Some(key_version)).response)
    }

    fn target(tar: Tar) -> Option<Target> {
        match tar {
            TAR_RFM_GSM => Some(Target::Rfm(RfmView::Gsm)),
            TAR_RFM_USIM => Some(Target::Rfm(RfmView::Usim)),
            TAR_RAM_ISD => Some(Target::Ram),
            TAR_SUBSCRIPTIONS => Some(Target::Subscriptions),
            _ => None,
        }
    }

    /// Runs a script on an applet; `key_version` is the key set that secured the packet (the
    /// ISD's PUT KEY takes that key set's KIK).
    fn execute(&mut self, target: Target, script: &[u8], key_version: Option<u8>) -> ScriptRun {
        match target {
            Target::Rfm(view) => {
                let mut rfm = Rfm::new(&mut self.fs, self.iccid, self.imsi, view);
                run_script(&mut rfm, script)
            }
            Target::Ram => {
                let reg = self.ram.get_or_insert_with(Default::default);
                let mut isd = Isd::new(
                    Ram::new(reg, self.policy.gp_version),
                    &mut self.keys,
                    key_version,
                    self.policy.kcv_fill,
                );
                let run = run_script(&mut isd, script);
                if **reg == Registry::EMPTY {
                    self.ram = None;
                }
                run
            }
            Target::Subscriptions => {
                let run = run_script(self.subscription_app(), script);
                self.follow_enabled_subscription();
                run
            }
        }
    }

    fn subscription_app(&mut self) -> &mut SubscriptionApp {
        let imsi = self.imsi.to_string();
        self.subscriptions
            .get_or_insert_with(|| Box::new(SubscriptionApp::factory(&imsi)))
    }

    /// EF IMSI (both views) takes the enabled subscription's IMSI.
    fn follow_enabled_subscription(&mut self) {
        let Some(active) = self
            .subscriptions
            .as_ref()
            .and_then(|a| a.active_imsi())
            .and_then(Digits::parse)
        else {
            return;
        };
        if active == self.imsi {
            return;
        }
        self.imsi = active;
        let t = Template::get();
        for path in [[0x7F20, 0x6F07], [0x7FFF, 0x6F07]] {
            if let Some(id) = t.resolve_path(&path) {
                self.fs
                    .write(id, 0, &imsi_ef(active), self.iccid, self.imsi);
            }
        }
    }

    /// Installs subscriptions besides the IMSI's, disabled, as the factory leaves them
    /// (slot id, IMSI digits; the vendor file's `IMSI2`..`IMSI8`).
    pub fn with_factory_subscriptions(mut self, others: &[(u8, String)]) -> Self {
        if !others.is_empty() {
            let app = SubscriptionApp::factory_with(&self.imsi.to_string(), others);
            self.subscriptions = Some(Box::new(app));
        }
        self
    }

    /// The subscriptions installed besides slot 1 (slot id, IMSI), as a vendor file lists
    /// them.
    pub fn factory_subscriptions(&self) -> Vec<(u8, String)> {
        self.subscriptions
            .as_ref()
            .map(|a| {
                a.subscriptions()
                    .iter()
                    .filter(|s| s.id != 1)
                    .map(|s| (s.id, s.imsi.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The subscription management application's state (`None`: never used, the factory
    /// state).
    pub fn subscriptions(&self) -> Option<&SubscriptionApp> {
        self.subscriptions.as_deref()
    }

    /// The card reports on the subscription it runs on (its first attach, fresh from the
    /// factory: the bootstrap one); the notification goes at the next tick.
    pub fn report_subscriptions(&mut self, now: i64) {
        let app = self.subscription_app();
        app.set_now(now);
        app.report();
    }

    /// Moves the subscription management application on at `now` (attach, rollback,
    /// return to primary; EF IMSI follows) and returns the notifications due.
    pub fn tick_subscriptions(&mut self, now: i64, network: &dyn Network) -> Vec<Notification> {
        let Some(app) = self.subscriptions.as_mut() else {
            return Vec::new();
        };
        app.tick(now, network);
        let due = app.due_notifications(now);
        self.follow_enabled_subscription();
        due
    }

    /// A notification as the card sends it: a command packet (TS 102 225 clause 5.1, sent by
    /// the card) to the Secure Router's TAR, ciphered and with a CC under the card's first key
    /// set, its counter the notification's sequence number; SPI `0E 00`: counter present but
    /// not checked by the receiver (the sequence number orders notifications), no PoR.
    /// Framed for SMS-PP: UDH `02 70 00` then the packet from CPL on. `None` if the card has no
    /// key set with both keys.
    pub fn notification_user_data(&self, n: &Notification) -> Option<Vec<u8>> {
        let set = self
            .keys
            .iter()
            .find(|k| !k.kic().is_empty() && !k.kid().is_empty())?;
        // Explicit algorithm nibbles: the key set's own, else AES for a 16/24/32-octet key.
        let kic_nibble = set
            .kic_algorithm()
            .map_or(CipherAlgorithm::AesCbc.kic_nibble(), |a| a.kic_nibble());
        let kid_nibble = set
            .kid_algorithm()
            .map_or(IntegrityAlgorithm::AesCmac.kid_nibble(), |a| a.kid_nibble());
        let header = CommandHeader {
            spi: Spi::from_bytes([0x0E, 0x00]),
            kic: KeyIdentifier::new(set.version(), kic_nibble),
            kid: KeyIdentifier::new(set.version(), kid_nibble),
            tar: TAR_SUBSCRIPTIONS,
            counter: Counter::new(u64::from(n.seq)).ok()?,
        };
        let cfg = KeyConfig {
            kic_key: Some(set.kic()),
            kid_key: Some(set.kid()),
            kic_algorithm: set.kic_algorithm(),
            kid_algorithm: set.kid_algorithm(),
            cc_len: None,
        };
        let keys = Scp80Keys::resolve(&header.spi, header.kic.0, header.kid.0, &cfg).ok()?;
        let packet = encode_command_packet(&header, &keys, &n.encode()).ok()?;
        let mut ud = vec![0x02, 0x70, 0x00];
        ud.extend_from_slice(&packet);
        Some(ud)
    }

    /// Picks the key sets named by the KIc/KID key versions and expands the keys.
    fn resolve_keys(&self, view: &CommandPacketView<'_>) -> Result<Scp80Keys, Refusal> {
        let spi = &view.spi;
        let kic_set = self.key_set(view.kic.version());
        let kid_set = self.key_set(view.kid.version());
        if spi.ciphered && kic_set.is_none_or(|k| k.kic().is_empty()) {
            return Err((
                PorStatus::UndefinedSecurityError,
                format!("no KIc key of version {}", view.kic.version()),
            ));
        }
        if spi.integrity == Integrity::Cc && kid_set.is_none_or(|k| k.kid().is_empty()) {
            return Err((
                PorStatus::UndefinedSecurityError,
                format!("no KID key of version {}", view.kid.version()),
            ));
        }
        let nonempty = |k: &[u8]| -> Option<Vec<u8>> { (!k.is_empty()).then(|| k.to_vec()) };
        let kic_key = kic_set.and_then(|k| nonempty(k.kic()));
        let kid_key = kid_set.and_then(|k| nonempty(k.kid()));
        let cfg = KeyConfig {
            kic_key: kic_key.as_deref(),
            kid_key: kid_key.as_deref(),
            kic_algorithm: kic_set.and_then(|k| k.kic_algorithm),
            kid_algorithm: kid_set.and_then(|k| k.kid_algorithm),
            cc_len: None,
        };
        Scp80Keys::resolve(spi, view.kic.0, view.kid.0, &cfg)
            .map_err(|e| (classify(&e, spi), e.to_string()))
    }

    /// The key set whose counter the packet is checked against: the KID's with integrity, else
    /// the KIc's.
    fn counter_slot(&self, view: &CommandPacketView<'_>) -> Option<usize> {
        let version = view.spi.counter_version(view.kic.0, view.kid.0);
        self.keys.iter().position(|k| k.version == version)
    }

    fn refuse(
        &self,
        view: &CommandPacketView<'_>,
        packet: &[u8],
        keys: Option<&Scp80Keys>,
        (status, detail): Refusal,
    ) -> CardOutcome {
        let spi = &view.spi;
        let por = por_wanted(spi, true)
            .then(|| {
                unprotected_por(
                    spi,
                    view.tar,
                    recover_counter(packet, spi, keys),
                    status,
                    view.framing(),
                )
            })
            .flatten();
        CardOutcome {
            status: Some(status),
            executed: 0,
            last_sw: None,
            por,
            por_protected: false,
            detail: Some(detail),
            push: None,
        }
    }

    /// The card receives a command packet: the full account of what it did.
    ///
    /// 1. CPL/CHL framing broken: discarded, no PoR.
    /// 2. TAR unknown: 09. Keys missing for the KIc/KID versions, unusable, or refused by the
    ///    coding: 05 (KIc side) or 06. RC/CC mismatch: 01; deciphering trouble: 05. These PoRs
    ///    go in clear (no ciphering, no RC/CC), with the command's counter where readable.
    /// 3. Counter check per the SPI against the key set's stored counter: 02 / 03 / 04 (in
    ///    clear unless [`CardPolicy::protect_counter_errors`]).
    /// 4. The new counter is stored, the script runs, and the PoR (status 00, the script
    ///    response as additional data) is protected as the SPI asks; with "PoR on error" only
    ///    if the last command failed.
    pub fn process(&mut self, packet: &[u8]) -> CardOutcome {
        self.process_framed(packet, PacketFraming::Sms)
    }

    /// The card receives a command packet over CAT_TP (one SDU: CPI `01`, BER CPL, ...);
    /// PoRs go back framed for CAT_TP (RPI `02`) with their RC/CC over that framing.
    pub fn process_cattp(&mut self, sdu: &[u8]) -> CardOutcome {
        match crate::security::command::cattp_command_to_two_octet_form(sdu) {
            Ok(packet) => self.process_framed(&packet, PacketFraming::CatTp),
            Err(e) => Self::discarded(e),
        }
    }

    fn discarded(e: SecurityError) -> CardOutcome {
        CardOutcome {
            status: None,
            executed: 0,
            last_sw: None,
            por: None,
            por_protected: false,
            detail: Some(format!("discarded: {e}")),
            push: None,
        }
    }

    /// [`VirtualCard::process`] for a packet (two-octet CPL form) that travelled as `framing`.
    pub fn process_framed(&mut self, packet: &[u8], framing: PacketFraming) -> CardOutcome {
        let view = match CommandPacketView::parse_framed(packet, framing) {
            Ok(v) => v,
            Err(e) => return Self::discarded(e),
        };
        let spi = view.spi;
        let Some(target) = Self::target(view.tar) else {
            let refusal = (
                PorStatus::TarUnknown,
                format!("TAR {} unknown", hex::encode_upper(view.tar)),
            );
            let keys = self.resolve_keys(&view).ok();
            return self.refuse(&view, packet, keys.as_ref(), refusal);
        };
        let keys = match self.resolve_keys(&view) {
            Ok(k) => k,
            Err(refusal) => return self.refuse(&view, packet, None, refusal),
        };
        let opened = match view.open(&keys) {
            Ok(o) => o,
            Err(e) => {
                let refusal = (classify(&e, &spi), e.to_string());
                return self.refuse(&view, packet, Some(&keys), refusal);
            }
        };
        let counter = opened.header.counter;
        if por_wanted(&spi, true) {
            if let Err(detail) = por_protectable(&spi, &keys) {
                let refusal = (PorStatus::UndefinedSecurityError, detail);
                return self.refuse(&view, packet, Some(&keys), refusal);
            }
        }
        let slot = self.counter_slot(&view);
        let stored = slot
            .and_then(|i| self.keys.get(i))
            .map_or(Counter::default(), |k| k.counter);
        match check_counter(spi.counter, counter, stored) {
            Ok(Some(new)) => {
                if let Some(k) = slot.and_then(|i| self.keys.get_mut(i)) {
                    k.counter = new;
                }
            }
            Ok(None) => {}
            Err(status) => {
                let detail = format!(
                    "counter {:010x} against the card's {:010x}",
                    counter.value(),
                    stored.value()
                );
                if !self.policy.protect_counter_errors {
                    return self.refuse(&view, packet, Some(&keys), (status, detail));
                }
                let por = por_wanted(&spi, true)
                    .then(|| {
                        self.protected_por(&spi, &keys, view.tar, counter, status, &[], framing)
                    })
                    .flatten();
                return CardOutcome {
                    status: Some(status),
                    executed: 0,
                    last_sw: None,
                    por_protected: por.is_some(),
                    por,
                    detail: Some(detail),
                    push: None,
                };
            }
        }

        // GP Amendment B: secured data that is an administration session triggering parameters
        // TLV (tag 81) asks the security domain to open an SCP81 session; the runtime (see
        // `sim::https_client`) acts on it. The PoR confirms receipt only.
        if matches!(target, Target::Ram)
            && opened.data.first() == Some(&0x81)
            && otagw_https::trigger::TriggerParams::decode(&opened.data).is_ok()
        {
            self.scp81
                .get_or_insert_with(Default::default)
                .triggers
                .push(opened.data.to_vec());
            let por = por_wanted(&spi, false)
                .then(|| {
                    self.protected_por(&spi, &keys, view.tar, counter, PorStatus::Ok, &[], framing)
                })
                .flatten();
            return CardOutcome {
                detail: Some("SCP81 administration session trigger".into()),
                ..CardOutcome::received(por)
            };
        }

        // The key set securing the packet: the KID's with integrity, else the KIc's.
        let key_version = spi.counter_version(view.kic.0, view.kid.0);
        // PUSH APDUs to the ISD (TS 102 226 clause 9): read strictly, as COMPREHENSION-TLVs;
        // nothing to execute here, the terminal opens the channel and the link. A PUSH the card
        // cannot read is refused with its status word, and a PoR if the SPI asks for one on error.
        if matches!(target, Target::Ram) && opened.data.starts_with(&PUSH_HEADER) {
            let (push, run) = run_push(&opened.data);
            let por = por_wanted(&spi, run.failed)
                .then(|| {
                    let status = PorStatus::Ok;
                    self.protected_por(
                        &spi,
                        &keys,
                        view.tar,
                        counter,
                        status,
                        &run.response,
                        framing,
                    )
                })
                .flatten();
            if run.failed {
                return CardOutcome {
                    status: Some(PorStatus::Ok),
                    executed: run.executed,
                    last_sw: run.last_sw,
                    por_protected: por.is_some(),
                    por,
                    detail: Some("PUSH refused".into()),
                    push: None,
                };
            }
            return CardOutcome {
                push,
                ..CardOutcome::received(por)
            };
        }
        let run = self.execute(target, &opened.data, Some(key_version));
        let por = por_wanted(&spi, run.failed)
            .then(|| {
                self.protected_por(
                    &spi,
                    &keys,
                    view.tar,
                    counter,
                    PorStatus::Ok,
                    &run.response,
                    framing,
                )
            })
            .flatten();
        CardOutcome {
            status: Some(PorStatus::Ok),
            executed: run.executed,
            last_sw: run.last_sw,
            por_protected: por.is_some(),
            por,
            detail: None,
            push: None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn protected_por(
        &self,
        spi: &Spi,
        keys: &Scp80Keys,
        tar: Tar,
        counter: Counter,
        status: PorStatus,
        data: &[u8],
        framing: PacketFraming,
    ) -> Option<PorReply> {
        let header = ResponseHeader {
            tar,
            counter,
            status,
        };
        encode_response_packet(&header, spi, keys, data, por_scope(framing))
            .ok()
            .and_then(|p| por_reply(p, spi, framing))
    }
}

/// CLA INS P1 of the TS 102 226 clause 9 PUSH command.
const PUSH_HEADER: [u8; 3] = [
    otagw_catp::push::PUSH_CLA,
    otagw_catp::push::PUSH_INS,
    otagw_catp::push::PUSH_P1,
];

/// Runs a compact script of PUSH APDUs as a card does: each in turn, stopping at the first
/// refused one (its status word, `6A 80` for data that are not the COMPREHENSION-TLVs it
/// expects). The response is the compact one: commands executed, the last status word.
fn run_push(data: &[u8]) -> (Option<otagw_catp::push::PushRequest>, ScriptRun) {
    use otagw_catp::push::{read_commands, PushRequest};
    let (done, error) = read_commands(data);
    let read = match error {
        Some(e) => Err((done.len() + 1, e)),
        // Every APDU read: each request once, both there (else the last is wrong data).
        None => PushRequest::decode(data).map_err(|e| (done.len(), e)),
    };
    let (executed, sw, push) = match read {
        Ok(push) => (done.len(), 0x9000, Some(push)),
        Err((executed, e)) => (executed, e.status_word(), None),
    };
    let mut response = vec![u8::try_from(executed).unwrap_or(u8::MAX)];
    response.extend_from_slice(&sw.to_be_bytes());
    let run = ScriptRun {
        response,
        executed,
        last_sw: Some(sw),
        failed: push.is_none(),
    };
    (push, run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_checks() {
        let c =
            VirtualCard::new("8949000000000000001F", "262011234567890", "+491700000001").unwrap();
        assert_eq!(
            (c.iccid(), c.imsi(), c.msisdn()),
            (
                "8949000000000000001".to_string(),
                "262011234567890".to_string(),
                "491700000001".to_string()
            )
        );
        let e = VirtualCard::new("894900000000000000", "262011234567890", "1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "ICCID \"894900000000000000\" is not valid: expected 19 or 20 digits (20 characters when F-padded)"
        );
        assert!(VirtualCard::new("8949000000000000001", "26201", "1").is_err());
        assert!(VirtualCard::new("8949000000000000001", "2620112345678901", "1").is_err());
        assert!(VirtualCard::new("8949000000000000001", "262011234567890", "").is_err());
        assert!(
            VirtualCard::new("8949000000000000001", "262011234567890", "1234567890123456").is_err()
        );
        assert!(VirtualCard::new("894900000000000000FF", "262011234567890", "1").is_err());
    }

    #[test]
    fn key_sets() {
        assert_eq!(
            KeySet::new(16, &[], &[]).unwrap_err(),
            CardError::KeyVersion(16)
        );
        assert_eq!(
            KeySet::new(1, &[0; 15], &[]).unwrap_err().to_string(),
            "KIc key of 15 octets: SCP80 keys are 8, 16, 24 or 32 octets"
        );
        assert_eq!(
            KeySet::new(1, &[0; 16], &[0; 32])
                .unwrap()
                .with_algorithms(None, Some(IntegrityAlgorithm::TripleDes2KeyCbcMac))
                .unwrap_err()
                .to_string(),
            "KID key of 32 octets does not fit 3des-2key (16 octets)"
        );
        let ks = KeySet::new(2, &[1; 16], &[2; 16])
            .unwrap()
            .with_counter(Counter::new(7).unwrap());
        assert!(!format!("{ks:?}").contains("0101"), "keys never printed");
        let mut card = VirtualCard::new("8949000000000000001", "262011234567890", "1")
            .unwrap()
            .with_key_set(ks)
            .with_key_set(KeySet::new(1, &[3; 8], &[]).unwrap());
        assert_eq!(
            card.key_sets()
                .iter()
                .map(KeySet::version)
                .collect::<Vec<_>>(),
            [1, 2]
        );
        card.set_key_set(KeySet::new(2, &[4; 16], &[]).unwrap());
        assert_eq!(card.key_set(2).unwrap().kic(), &[4; 16]);
        assert_eq!(card.key_set(2).unwrap().counter().value(), 0);
        assert!(card.set_counter(2, Counter::new(9).unwrap()));
        assert!(!card.set_counter(3, Counter::new(9).unwrap()));
    }

    #[test]
    fn scripts_without_scp80() {
        let mut card = VirtualCard::new("8949000000000000001", "262011234567890", "1").unwrap();
        assert_eq!(card.run_script([1, 2, 3], &[]), None);
        // A read-only RAM script leaves no registry behind.
        let r = card
            .run_script(TAR_RAM_ISD, &hex::decode("80F24002024F00").unwrap())
            .unwrap();
        assert_eq!(r, vec![1, 0x6A, 0x88]);
        assert!(card.ram.is_none());
        assert!(card.registry().applets().is_empty());
        let r = card
            .run_script(
                TAR_RFM_USIM,
                &hex::decode("00A4000C026F0700B0000009").unwrap(),
            )
            .unwrap();
        assert_eq!(hex::encode(r), "029000082926102143658709");
        assert_eq!(card.read_file(&[0x7F20]), None);
        assert_eq!(card.read_file(&[0x2FE2]).unwrap().len(), 10);
    }

    #[test]
    fn classification() {
        let spi = Spi::from_bytes([0x16, 0x39]);
        let clear = Spi::from_bytes([0x12, 0x29]);
        let mismatch = SecurityError::IntegrityMismatch {
            kind: "CC",
            received: String::new(),
            computed: String::new(),
        };
        assert_eq!(classify(&mismatch, &spi), PorStatus::RcCcDsFailed);
        let padding = SecurityError::InvalidPadding {
            pcntr: 9,
            available: 1,
        };
        assert_eq!(classify(&padding, &spi), PorStatus::CipheringError);
        assert_eq!(
            classify(&padding, &clear),
            PorStatus::UndefinedSecurityError
        );
        let kic = SecurityError::ImplicitAlgorithm {
            field: "KIc",
            value: 0x10,
        };
        assert_eq!(classify(&kic, &spi), PorStatus::CipheringError);
        let kid = SecurityError::ImplicitAlgorithm {
            field: "KID",
            value: 0x10,
        };
        assert_eq!(classify(&kid, &spi), PorStatus::UndefinedSecurityError);
    }
}
