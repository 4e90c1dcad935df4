//! Bulk campaigns: one set of commands (or one text) sent to every card of a group, with the
//! operators' procedure: create, start, stop, retry the failed cards in a new iteration.
//!
//! This module holds the campaign model and the compiled plan (what each card gets); the
//! runtime that streams cards from the store and sends is [`runner`].

pub mod ops;
pub mod runner;

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pipeline::validate::{hex_octets, FieldError};
use crate::script::{
    self, pack_scripts, Aid, CApdu, CommandScript, ScriptFormat, ScriptItem, ToolkitParameters,
};
use crate::security::{CommandHeader, Counter, KeyIdentifier, PorRequirement, Spi};

/// Campaign statuses.
pub mod status {
    /// Created, not started.
    pub const CREATED: &str = "CREATED";
    /// Sending.
    pub const RUNNING: &str = "RUNNING";
    /// Every card of the iteration reached a final state.
    pub const COMPLETED: &str = "COMPLETED";
    /// Stopped by the operator (or its validity ran out).
    pub const TERMINATED: &str = "TERMINATED";
}

/// Per-card states (of one iteration), with their rank in `progress`.
pub mod card_state {
    /// Not sent yet.
    pub const PENDING: &str = "pending";
    /// Counter reserved, packet being handed to the network.
    pub const SENDING: &str = "sending";
    /// The network took it.
    pub const SENT: &str = "sent";
    /// The network reports it reached the handset.
    pub const DELIVERED: &str = "delivered";
    /// The card's PoR says OK (and the last status word is the expected one).
    pub const POR_OK: &str = "por_ok";
    /// The card's PoR reports an error (named in the detail).
    pub const POR_ERROR: &str = "por_error";
    /// Failed (reason in the detail).
    pub const FAILED: &str = "failed";
    /// Validity period over before it was sent.
    pub const EXPIRED: &str = "expired";
    /// Every state, in display order.
    pub const ALL: [&str; 8] = [
        PENDING, SENDING, SENT, DELIVERED, POR_OK, POR_ERROR, FAILED, EXPIRED,
    ];

    /// `progress` of a state at a step: later steps and later states are larger.
    pub fn progress(step: i64, state: &str, done: bool) -> i64 {
        let rank = if done {
            8
        } else {
            match state {
                SENDING => 1,
                SENT => 2,
                DELIVERED => 3,
                _ => 0,
            }
        };
        step * 16 + rank
    }
}

/// Campaign types (the procedure's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CampaignType {
    /// Remote file management by SMS.
    Rfm,
    /// Remote applet management by SMS.
    Ram,
    /// A text message.
    Sms,
    /// A flash (class 0) text message.
    Flash,
    /// RFM over HTTPS (SCP81), triggered by SMS.
    TlsTriggerRfm,
    /// RAM over HTTPS (SCP81), triggered by SMS.
    TlsTriggerRam,
}

impl CampaignType {
    /// Every type.
    pub const ALL: [CampaignType; 6] = [
        Self::Rfm,
        Self::Ram,
        Self::Sms,
        Self::Flash,
        Self::TlsTriggerRfm,
        Self::TlsTriggerRam,
    ];

    /// The name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rfm => "RFM",
            Self::Ram => "RAM",
            Self::Sms => "SMS",
            Self::Flash => "FLASH",
            Self::TlsTriggerRfm => "TLS_TRIGGER_RFM",
            Self::TlsTriggerRam => "TLS_TRIGGER_RAM",
        }
    }

    /// Sends a text, not secured commands.
    pub fn is_text(self) -> bool {
        matches!(self, Self::Sms | Self::Flash)
    }

    /// Runs over HTTPS.
    pub fn is_tls(self) -> bool {
        matches!(self, Self::TlsTriggerRfm | Self::TlsTriggerRam)
    }

    /// Remote applet management.
    pub fn is_ram(self) -> bool {
        matches!(self, Self::Ram | Self::TlsTriggerRam)
    }
}

impl std::fmt::Display for CampaignType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CampaignType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a campaign type (one of {})",
                    Self::ALL.map(|t| t.as_str()).join(", ")
                )
            })
    }
}

/// How the segments of a concatenated message go out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TransmissionMode {
    /// The next segment only after the previous one's delivery receipt.
    Seq,
    /// All segments together.
    #[default]
    Conc,
}

/// A campaign to create (REST body; the CLI fills the same).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CampaignRequest {
    /// Profile id.
    pub profile: i64,
    /// Name, unique within the profile, no spaces.
    pub name: String,
    /// Type (`RFM`, `RAM`, `SMS`, `FLASH`, `TLS_TRIGGER_RFM`, `TLS_TRIGGER_RAM`); taken from
    /// the template when one is given.
    #[serde(default, rename = "type")]
    pub campaign_type: Option<CampaignType>,
    /// Id of a campaign whose settings this one copies (the procedure's template).
    #[serde(default)]
    pub template: Option<i64>,
    /// RAM: id of an uploaded applet (CAP or IJC) to generate the commands from.
    #[serde(default)]
    pub applet: Option<String>,
    /// RAM: UICC toolkit application specific parameters (tag `CA`/`EA` value, hex) for the
    /// install command (the procedure's toolkit parameter).
    #[serde(default)]
    pub tkp: Option<String>,
    /// SPI, 4 hex digits (default: the profile's, else `1621`).
    #[serde(default)]
    pub spi: Option<String>,
    /// TAR, 6 hex digits (default `B00010` for RFM, `000000` for RAM).
    #[serde(default)]
    pub tar: Option<String>,
    /// KIc octet (default: the profile's, else `15`).
    #[serde(default)]
    pub kic_byte: Option<String>,
    /// KID octet (default: the profile's, else `15`).
    #[serde(default)]
    pub kid_byte: Option<String>,
    /// `seq` or `conc` (default).
    #[serde(default)]
    pub transmission_mode: Option<TransmissionMode>,
    /// RFM / RAM: the commands, one C-APDU in hex each, RFM ones with `[Name]` placeholders.
    #[serde(default)]
    pub commands: Vec<String>,
    /// SMS / FLASH: the text.
    #[serde(default)]
    pub message: Option<String>,
    /// Minutes the campaign's messages stay valid (0: unspecified).
    #[serde(default)]
    pub validity_period: Option<u32>,
    /// RFM: end with a REFRESH so the handset rereads the files.
    #[serde(default)]
    pub include_sim_refresh: Option<bool>,
    /// RFM / RAM: the last status word a card's PoR must carry (4 hex digits).
    #[serde(default)]
    pub expected_last_sw: Option<String>,
    /// RAM with an applet: load it.
    #[serde(default)]
    pub load: Option<bool>,
    /// RAM with an applet: install (and make selectable) it.
    #[serde(default)]
    pub install: Option<bool>,
    /// RAM with an applet: delete it (with its package).
    #[serde(default)]
    pub delete: Option<bool>,
}

/// A campaign's settings as stored (everything a run needs besides the cards).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CampaignSettings {
    /// SPI.
    pub spi: String,
    /// TAR.
    pub tar: String,
    /// KIc octet.
    pub kic_byte: String,
    /// KID octet.
    pub kid_byte: String,
    /// Segment transmission.
    pub transmission_mode: TransmissionMode,
    /// The commands as given (hex, placeholders in brackets).
    pub commands: Vec<String>,
    /// Text of SMS / FLASH campaigns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Validity, minutes (0: unspecified).
    pub validity_period: u32,
    /// End with a REFRESH.
    pub include_sim_refresh: bool,
    /// Last status word expected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_last_sw: Option<String>,
    /// Applet generating RAM commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applet: Option<String>,
    /// Toolkit parameters for its install.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tkp: Option<String>,
    /// Load the applet.
    pub load: bool,
    /// Install it.
    pub install: bool,
    /// Delete it.
    pub delete: bool,
    /// Placeholder names used by the commands, in order of first use.
    pub placeholders: Vec<String>,
}

/// Messages above which a campaign is larger than the procedure recommends.
pub const MESSAGES_WARN: u64 = 1_000_000;

/// REFRESH (TS 102 223 6.6.13), qualifier 04 "UICC reset", from the UICC to the terminal:
/// the proactive command the procedure's sample APDU file ends with.
pub const REFRESH_UICC_RESET: &str = "D009810301010482028102";

/// Default RFM applet TAR (TS 101 220).
pub const RFM_TAR: &str = "B00010";
/// Default RAM TAR: the issuer security domain.
pub const RAM_TAR: &str = "000000";

fn field_err(field: &str, problem: impl Into<String>) -> FieldError {
    FieldError::new(field, problem)
}

/// One part of a command line: bytes, or a placeholder filled per card.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Hex(String),
    Placeholder(String),
}

/// Splits a command line into hex runs and `[Name]` placeholders (letters, digits, `_`).
fn parse_line(field: &str, line: &str) -> Result<Vec<Part>, FieldError> {
    let mut parts = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        match rest.find('[') {
            Some(open) => {
                let (hex, tail) = rest.split_at(open);
                if !hex.is_empty() {
                    parts.push(Part::Hex(hex.to_string()));
                }
                let close = tail
                    .find(']')
                    .ok_or_else(|| field_err(field, format!("{line:?}: a '[' without its ']'")))?;
                let name = tail.get(1..close).unwrap_or_default();
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(field_err(
                        field,
                        format!("{line:?}: placeholder [{name}] must be letters, digits and '_'"),
                    ));
                }
                parts.push(Part::Placeholder(name.to_string()));
                rest = tail.get(close + 1..).unwrap_or_default();
            }
            None => {
                parts.push(Part::Hex(rest.to_string()));
                rest = "";
            }
        }
    }
    for p in &parts {
        if let Part::Hex(h) = p {
            if !h.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(field_err(
                    field,
                    format!("{line:?} holds {h:?}, which is not hex"),
                ));
            }
        }
    }
    Ok(parts)
}

/// What a campaign sends each card, compiled once per run.
#[derive(Debug, Clone)]
pub struct CampaignPlan {
    /// The type.
    pub campaign_type: CampaignType,
    /// Header fields (the counter is each packet's own).
    pub spi: Spi,
    /// KIc octet.
    pub kic: u8,
    /// KID octet.
    pub kid: u8,
    /// TAR.
    pub tar: [u8; 3],
    /// Script format.
    pub format: ScriptFormat,
    /// Last status word required.
    pub expected_last_sw: Option<u16>,
    /// Segments one after the other.
    pub sequential: bool,
    /// Validity, minutes (0: unspecified).
    pub validity_minutes: u32,
    /// Text of SMS / FLASH.
    pub message: Option<String>,
    lines: Vec<Vec<Part>>,
    refresh: bool,
    budget: usize,
    // The scripts when no command has a placeholder (the same for every card).
    fixed: Option<Vec<Vec<u8>>>,
}

/// A campaign's settings, checked, and the number of messages each card gets.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Settings to store.
    pub settings: CampaignSettings,
    /// Messages per card.
    pub messages_per_card: u64,
    /// The type.
    pub campaign_type: CampaignType,
}

/// Checks a create request against its profile and builds the settings. `applet` is the
/// uploaded applet the request names (looked up by the caller); `budget` the octets of script
/// one packet carries.
pub fn prepare(
    req: &CampaignRequest,
    template: Option<(&CampaignType, &CampaignSettings)>,
    profile_defaults: &crate::store::ProfileDefaults,
    applet: Option<&[u8]>,
    budget: usize,
) -> Result<Prepared, FieldError> {
    crate::provision::check_name(&req.name).map_err(|p| field_err("name", p))?;
    let campaign_type = match (req.campaign_type, template) {
        (Some(t), _) => t,
        (None, Some((t, _))) => *t,
        (None, None) => return Err(field_err("type", "is required (or give a template)")),
    };
    let base = template.map(|(_, s)| s);
    let pick = |given: &Option<String>,
                from_template: Option<&String>,
                profile: &Option<String>,
                default: &str| {
        given
            .clone()
            .or_else(|| from_template.cloned())
            .or_else(|| profile.clone())
            .unwrap_or_else(|| default.to_string())
    };
    let spi = pick(
        &req.spi,
        base.map(|b| &b.spi),
        &profile_defaults.spi,
        "1621",
    );
    let kic_byte = pick(
        &req.kic_byte,
        base.map(|b| &b.kic_byte),
        &profile_defaults.kic_byte,
        "15",
    );
    let kid_byte = pick(
        &req.kid_byte,
        base.map(|b| &b.kid_byte),
        &profile_defaults.kid_byte,
        "15",
    );
    let default_tar = if campaign_type.is_ram() {
        RAM_TAR
    } else {
        RFM_TAR
    };
    let tar = req
        .tar
        .clone()
        .or_else(|| base.map(|b| b.tar.clone()))
        .unwrap_or_else(|| default_tar.to_string());
    let commands = if req.commands.is_empty() {
        base.map(|b| b.commands.clone()).unwrap_or_default()
    } else {
        req.commands.clone()
    };
    let mut settings = CampaignSettings {
        spi: spi.to_uppercase(),
        tar: tar.to_uppercase(),
        kic_byte: kic_byte.to_uppercase(),
        kid_byte: kid_byte.to_uppercase(),
        transmission_mode: req
            .transmission_mode
            .or(base.map(|b| b.transmission_mode))
            .unwrap_or_default(),
        commands,
        message: req
            .message
            .clone()
            .or_else(|| base.and_then(|b| b.message.clone())),
        validity_period: req
            .validity_period
            .or(base.map(|b| b.validity_period))
            .or(profile_defaults.validity_period_minutes)
            .unwrap_or(0),
        include_sim_refresh: req
            .include_sim_refresh
            .or(base.map(|b| b.include_sim_refresh))
            .unwrap_or(false),
        expected_last_sw: req
            .expected_last_sw
            .clone()
            .or_else(|| base.and_then(|b| b.expected_last_sw.clone()))
            .map(|s| s.to_uppercase()),
        applet: req
            .applet
            .clone()
            .or_else(|| base.and_then(|b| b.applet.clone())),
        tkp: req.tkp.clone().or_else(|| base.and_then(|b| b.tkp.clone())),
        load: req.load.or(base.map(|b| b.load)).unwrap_or(false),
        install: req.install.or(base.map(|b| b.install)).unwrap_or(false),
        delete: req.delete.or(base.map(|b| b.delete)).unwrap_or(false),
        placeholders: Vec::new(),
    };
    match campaign_type {
        CampaignType::Sms | CampaignType::Flash => {
            let text = settings.message.as_deref().unwrap_or_default();
            if text.is_empty() {
                return Err(field_err(
                    "message",
                    format!("a {campaign_type} campaign needs the text to send"),
                ));
            }
            if !settings.commands.is_empty() {
                return Err(field_err(
                    "commands",
                    format!("a {campaign_type} campaign sends a text, not commands"),
                ));
            }
        }
        _ => {
            if settings.message.is_some() {
                return Err(field_err(
                    "message",
                    format!("a {campaign_type} campaign sends commands, not a text"),
                ));
            }
        }
    }
    if campaign_type.is_ram() {
        if settings.applet.is_some() != applet.is_some() {
            return Err(field_err("applet", "no uploaded applet has this id"));
        }
        match (&settings.applet, settings.commands.is_empty()) {
            (Some(_), false) => {
                return Err(field_err(
                    "commands",
                    "give either an applet (commands generated) or an APDU file, not both",
                ))
            }
            (None, true) => {
                return Err(field_err(
                    "commands",
                    "a RAM campaign needs an APDU file or an applet to generate them from",
                ))
            }
            (Some(_), true) if !(settings.load || settings.install || settings.delete) => {
                return Err(field_err(
                    "load",
                    "load, install and delete are all false: nothing to generate",
                ))
            }
            _ => {}
        }
    } else if settings.applet.is_some() || settings.tkp.is_some() {
        return Err(field_err(
            "applet",
            format!("only RAM campaigns take an applet, not {campaign_type}"),
        ));
    }
    if matches!(
        campaign_type,
        CampaignType::Rfm | CampaignType::TlsTriggerRfm
    ) && settings.commands.is_empty()
    {
        return Err(field_err(
            "commands",
            format!("a {campaign_type} campaign needs its commands (an APDU file)"),
        ));
    }
    if settings.include_sim_refresh && !matches!(campaign_type, CampaignType::Rfm) {
        return Err(field_err(
            "includeSimRefresh",
            "only RFM campaigns by SMS end with a REFRESH",
        ));
    }
    let mut names = Vec::new();
    for (i, line) in settings.commands.iter().enumerate() {
        for part in parse_line(&format!("commands[{i}]"), line)? {
            if let Part::Placeholder(n) = part {
                if campaign_type.is_ram() {
                    return Err(field_err(
                        &format!("commands[{i}]"),
                        "placeholders are for RFM campaigns only",
                    ));
                }
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
    }
    settings.placeholders = names;
    let plan = CampaignPlan::new(campaign_type, &settings, applet, budget)?;
    let messages_per_card = plan.estimated_messages() as u64;
    Ok(Prepared {
        settings,
        messages_per_card,
        campaign_type,
    })
}

impl CampaignPlan {
    /// Compiles settings (checked again: they may come from an older store).
    pub fn new(
        campaign_type: CampaignType,
        settings: &CampaignSettings,
        applet: Option<&[u8]>,
        budget: usize,
    ) -> Result<CampaignPlan, FieldError> {
        let spi_bytes = hex_octets::<2>("spi", &settings.spi)?;
        let spi = Spi::from_bytes(spi_bytes);
        let [kic] = hex_octets::<1>("kicByte", &settings.kic_byte)?;
        let [kid] = hex_octets::<1>("kidByte", &settings.kid_byte)?;
        let tar = hex_octets::<3>("tar", &settings.tar)?;
        let expected_last_sw = settings
            .expected_last_sw
            .as_deref()
            .map(|s| hex_octets::<2>("expectedLastSw", s).map(u16::from_be_bytes))
            .transpose()?;
        if !campaign_type.is_text() && spi.por == PorRequirement::None && expected_last_sw.is_some()
        {
            return Err(field_err(
                "expectedLastSw",
                format!(
                    "SPI {} asks for no PoR, so no status word comes back",
                    settings.spi
                ),
            ));
        }
        let mut lines = Vec::new();
        let mut refresh = settings.include_sim_refresh;
        for (i, line) in settings.commands.iter().enumerate() {
            let parts = parse_line(&format!("commands[{i}]"), line)?;
            // The procedure's sample file ends with the REFRESH proactive command itself.
            if matches!(parts.as_slice(), [Part::Hex(h)] if h.eq_ignore_ascii_case(REFRESH_UICC_RESET))
            {
                refresh = true;
                continue;
            }
            lines.push(parts);
        }
        if campaign_type.is_ram() {
            if let Some(bytes) = applet {
                lines = ram_commands(settings, bytes, budget)?
                    .iter()
                    .map(|c| vec![Part::Hex(hex::encode_upper(c.to_bytes()))])
                    .collect();
            }
        }
        // A REFRESH travels as the Immediate Action of an expanded script (TS 102 226
        // 5.2.1.2); otherwise the compact format, which every RFM applet takes.
        let format = if refresh {
            ScriptFormat::ExpandedDefinite
        } else {
            ScriptFormat::Compact
        };
        let mut plan = CampaignPlan {
            campaign_type,
            spi,
            kic,
            kid,
            tar,
            format,
            expected_last_sw,
            sequential: settings.transmission_mode == TransmissionMode::Seq,
            validity_minutes: settings.validity_period,
            message: settings.message.clone(),
            lines,
            refresh,
            budget,
            fixed: None,
        };
        if !campaign_type.is_text() {
            let has_placeholders = plan
                .lines
                .iter()
                .any(|l| l.iter().any(|p| matches!(p, Part::Placeholder(_))));
            if !has_placeholders {
                let scripts = plan
                    .build(&BTreeMap::new())
                    .map_err(|e| field_err("commands", e))?;
                plan.fixed = Some(scripts);
            } else {
                // Check the shape with every placeholder empty.
                let empty: BTreeMap<String, String> = settings
                    .placeholders
                    .iter()
                    .map(|n| (n.clone(), String::new()))
                    .collect();
                plan.build(&empty).map_err(|e| field_err("commands", e))?;
            }
        }
        Ok(plan)
    }

    /// Messages each card gets (with placeholders: counted with them empty).
    pub fn estimated_messages(&self) -> usize {
        if self.campaign_type.is_text() {
            return 1;
        }
        match &self.fixed {
            Some(s) => s.len(),
            None => {
                let empty = BTreeMap::new();
                self.build_lenient(&empty).map(|s| s.len()).unwrap_or(1)
            }
        }
    }

    /// The scripts (one per packet) for a card, its placeholder data a JSON object of strings.
    pub fn scripts_for(&self, data: Option<&str>) -> Result<Cow<'_, [Vec<u8>]>, String> {
        if let Some(fixed) = &self.fixed {
            return Ok(Cow::Borrowed(fixed.as_slice()));
        }
        let values: BTreeMap<String, String> = match data {
            Some(d) => serde_json::from_str(d)
                .map_err(|e| format!("the card's placeholder data is not a JSON object: {e}"))?,
            None => BTreeMap::new(),
        };
        self.build(&values).map(Cow::Owned)
    }

    /// The C-APDUs (hex) for a card, placeholders filled: what an HTTPS (SCP81) session
    /// carries, chunked by the admin server rather than packed into SCP80 packets.
    pub fn command_lines(&self, data: Option<&str>) -> Result<Vec<String>, String> {
        let values: BTreeMap<String, String> = match data {
            Some(d) => serde_json::from_str(d)
                .map_err(|e| format!("the card's placeholder data is not a JSON object: {e}"))?,
            None => BTreeMap::new(),
        };
        self.lines
            .iter()
            .map(|line| {
                let mut text = String::new();
                for part in line {
                    match part {
                        Part::Hex(h) => text.push_str(h),
                        Part::Placeholder(n) => text.push_str(
                            values
                                .get(n)
                                .ok_or_else(|| format!("no data for placeholder [{n}]"))?,
                        ),
                    }
                }
                Ok(text.to_uppercase())
            })
            .collect()
    }

    fn build_lenient(&self, values: &BTreeMap<String, String>) -> Result<Vec<Vec<u8>>, String> {
        let mut filled = values.clone();
        for l in &self.lines {
            for p in l {
                if let Part::Placeholder(n) = p {
                    filled.entry(n.clone()).or_default();
                }
            }
        }
        self.build(&filled)
    }

    fn build(&self, values: &BTreeMap<String, String>) -> Result<Vec<Vec<u8>>, String> {
        let mut commands = Vec::with_capacity(self.lines.len());
        for (i, line) in self.lines.iter().enumerate() {
            let mut text = String::new();
            for part in line {
                match part {
                    Part::Hex(h) => text.push_str(h),
                    Part::Placeholder(n) => {
                        let v = values
                            .get(n)
                            .ok_or_else(|| format!("no data for placeholder [{n}]"))?;
                        if !v.chars().all(|c| c.is_ascii_hexdigit()) {
                            return Err(format!("placeholder [{n}] value {v:?} is not hex"));
                        }
                        text.push_str(v);
                    }
                }
            }
            let bytes = hex::decode(&text)
                .map_err(|e| format!("commands[{i}] {text:?} is not whole octets of hex: {e}"))?;
            let apdu = script::parse_c_apdu(&bytes)
                .map_err(|e| format!("commands[{i}] {text} is not a C-APDU: {e}"))?;
            commands.push(apdu);
        }
        let refresh_item = self.refresh.then(|| {
            ScriptItem::ImmediateAction(hex::decode(REFRESH_UICC_RESET).unwrap_or_default())
        });
        // Room for the REFRESH in the last packet.
        let reserve = refresh_item
            .as_ref()
            .map_or(0, |_| 2 + REFRESH_UICC_RESET.len() / 2);
        let budget = self.budget.saturating_sub(reserve);
        let groups = if self.campaign_type.is_ram() {
            // A load sequence goes on across packets (the security domain keeps its state).
            pack_scripts(&commands, self.format, budget)
                .map_err(|e| format!("the commands do not fit the transport's packets: {e}"))?
                .into_iter()
                .map(|p| commands.get(p.commands).unwrap_or_default().to_vec())
                .collect()
        } else {
            pack_rfm(&commands, self.format, budget)?
        };
        let count = groups.len();
        let mut scripts: Vec<Vec<u8>> = Vec::with_capacity(count.max(1));
        for (i, group) in groups.into_iter().enumerate() {
            let mut s = CommandScript::from_commands(group);
            if let (Some(item), true) = (&refresh_item, i + 1 == count) {
                s.push_item(item.clone());
            }
            scripts.push(s.encode(self.format).map_err(|e| e.to_string())?);
        }
        if scripts.is_empty() {
            let Some(item) = refresh_item else {
                return Err("no commands".into());
            };
            let mut s = CommandScript::new();
            s.push_item(item);
            scripts.push(s.encode(self.format).map_err(|e| e.to_string())?);
        }
        Ok(scripts)
    }

    /// The command header of a packet with `counter`.
    pub fn header(&self, counter: u64) -> Result<CommandHeader, String> {
        Ok(CommandHeader {
            spi: self.spi,
            kic: KeyIdentifier(self.kic),
            kid: KeyIdentifier(self.kid),
            tar: self.tar,
            counter: Counter::new(counter).map_err(|e| e.to_string())?,
        })
    }

    /// Key versions: KIc's, KID's, and the one whose counter the card checks (KID's when
    /// there is integrity, else KIc's, as the card does).
    pub fn claim_keys(&self) -> crate::store::ClaimKeys {
        crate::store::ClaimKeys {
            kic_version: self.kic >> 4,
            kid_version: self.kid >> 4,
            counter_version: self.spi.counter_version(self.kic, self.kid),
            spends_counter: !self.campaign_type.is_text() && !self.campaign_type.is_tls(),
        }
    }

    /// Whether the SPI asks the card for a PoR.
    pub fn expects_por(&self) -> bool {
        !self.campaign_type.is_text() && self.spi.por != PorRequirement::None
    }

    /// Checks a PoR's response data against the expected last status word; the detail to
    /// store on success or the reason on failure.
    pub fn check_response(&self, data: &[u8]) -> Result<String, String> {
        if data.is_empty() {
            return match self.expected_last_sw {
                Some(e) => Err(format!("no status word in the response, expected {e:04X}")),
                None => Ok("PoR OK, no response data".into()),
            };
        }
        let parsed = script::parse_script_response(data, self.format)
            .map_err(|e| format!("response {} does not parse: {e}", hex::encode_upper(data)))?;
        // The same rule as single commands: the expected SW if given, else a success SW.
        parsed.judge(self.expected_last_sw)?;
        Ok(parsed.summary())
    }
}

/// Packs RFM commands into packets. Each packet is a script of its own, and the RFM applet
/// starts every script at the MF (TS 102 226 clause 6.2), so a packet after the first begins
/// with the SELECTs that were in force where the previous one stopped.
fn pack_rfm(
    commands: &[CApdu],
    format: ScriptFormat,
    budget: usize,
) -> Result<Vec<Vec<CApdu>>, String> {
    const SELECT: u8 = 0xA4;
    let fits = |content: usize| {
        content + format.template_overhead(content) <= budget
            && (format == ScriptFormat::Compact || content <= 0xFFFF)
    };
    let mut out = Vec::new();
    let mut selects: Vec<CApdu> = Vec::new();
    let mut i = 0;
    while i < commands.len() {
        let mut packet = selects.clone();
        let mut content: usize = packet.iter().map(|c| format.command_size(c)).sum();
        let start = i;
        while let Some(c) = commands.get(i) {
            let size = format.command_size(c);
            if !fits(content + size) {
                break;
            }
            content += size;
            if c.ins() == SELECT {
                // From the MF (its FID, or a path from the MF, P1 08) the earlier ones no
                // longer matter.
                if c.data() == [0x3F, 0x00] || c.p1() == 0x08 {
                    selects.clear();
                }
                selects.push(c.clone());
            }
            packet.push(c.clone());
            i += 1;
        }
        if i == start {
            return Err(format!(
                "commands[{start}] does not fit one packet of {budget} octets of script \
                 (with the SELECTs it needs)"
            ));
        }
        out.push(packet);
    }
    Ok(out)
}

/// RAM commands generated from an applet: INSTALL [for load] + LOAD blocks, INSTALL [for
/// install and make selectable] with the toolkit parameters, DELETE (GP Card Spec 11.5, 11.6,
/// 11.2).
fn ram_commands(
    settings: &CampaignSettings,
    applet: &[u8],
    budget: usize,
) -> Result<Vec<CApdu>, FieldError> {
    let lf = crate::command::build::load_file("applet", applet)
        .map_err(|e| field_err(e.field(), e.problem()))?;
    let package = lf.package_aid().clone();
    let module: Option<Aid> = lf.applet_aids().first().cloned();
    let err = |field: &'static str| move |e: script::ScriptError| field_err(field, e.to_string());
    let mut out = Vec::new();
    if settings.delete && !(settings.load || settings.install) {
        out.push(script::ram::delete(&package, true).map_err(err("applet"))?);
        return Ok(out);
    }
    if settings.delete {
        // Delete first: a campaign that reloads an applet replaces the old one.
        out.push(script::ram::delete(&package, true).map_err(err("applet"))?);
    }
    if settings.load {
        out.push(script::ram::install_for_load(&package, None, &[], &[]).map_err(err("applet"))?);
        let block = script::ram::max_load_block_size(budget, ScriptFormat::Compact).unwrap_or(255);
        out.extend(script::ram::load_blocks(lf.bytes(), block).map_err(err("applet"))?);
    }
    if settings.install {
        let module = module.ok_or_else(|| {
            field_err(
                "applet",
                "the applet declares no applet class (a library package)",
            )
        })?;
        let mut params = script::InstallParameters::default();
        if let Some(tkp) = &settings.tkp {
            let bytes = hex::decode(tkp).map_err(|e| field_err("tkp", format!("not hex: {e}")))?;
            let t = ToolkitParameters::parse_uicc(&bytes)
                .map_err(|e| field_err("tkp", format!("not UICC toolkit parameters: {e}")))?;
            params.uicc_toolkit = Some(t);
        }
        out.push(
            // A campaign spans cards: the current GP coding (BER lengths; identical to the
            // one-octet coding below 128 octets of parameters).
            script::ram::install_for_install(
                script::GpVersion::default(),
                &package,
                &module,
                &module,
                script::Privileges::NONE,
                &params,
                true,
            )
            .map_err(err("tkp"))?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfm(commands: &[&str]) -> CampaignRequest {
        CampaignRequest {
            profile: 1,
            name: "c1".into(),
            campaign_type: Some(CampaignType::Rfm),
            commands: commands.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn procedure_sample_commands_compile_with_the_refresh_as_immediate_action() {
        let req = rfm(&[
            "A0A40000027F20",
            "A0A40000026F46",
            "A0D60000110056697267696E204D6F62696C65FFFFFF",
            REFRESH_UICC_RESET,
        ]);
        let p = prepare(&req, None, &Default::default(), None, 120).unwrap();
        let plan = CampaignPlan::new(p.campaign_type, &p.settings, None, 120).unwrap();
        let scripts = plan.scripts_for(None).unwrap();
        assert_eq!(scripts.len(), 1);
        let hex = hex::encode_upper(&scripts[0]);
        assert!(hex.starts_with("AA"), "{hex}");
        assert!(hex.ends_with(&format!("810B{REFRESH_UICC_RESET}")), "{hex}");
    }

    #[test]
    fn placeholders_are_filled_per_card() {
        let req = rfm(&["A0A40000026F46", "A0D6000003[Name_1]"]);
        let p = prepare(&req, None, &Default::default(), None, 120).unwrap();
        assert_eq!(p.settings.placeholders, vec!["Name_1".to_string()]);
        let plan = CampaignPlan::new(p.campaign_type, &p.settings, None, 120).unwrap();
        let s = plan.scripts_for(Some(r#"{"Name_1":"414243"}"#)).unwrap();
        assert!(hex::encode_upper(&s[0]).ends_with("A0D6000003414243"));
        let e = plan.scripts_for(Some(r#"{"Other":"41"}"#)).unwrap_err();
        assert!(e.contains("[Name_1]"), "{e}");
        let e = plan.scripts_for(Some(r#"{"Name_1":"4G"}"#)).unwrap_err();
        assert!(e.contains("not hex"), "{e}");
    }

    #[test]
    fn bad_input_names_the_field() {
        let e = prepare(&rfm(&["A0A4ZZ"]), None, &Default::default(), None, 120).unwrap_err();
        assert_eq!(e.field, "commands[0]");
        let e = prepare(
            &rfm(&["A0D6[bad name]"]),
            None,
            &Default::default(),
            None,
            120,
        )
        .unwrap_err();
        assert_eq!(e.field, "commands[0]");
        let mut r = rfm(&["A0A40000027F20"]);
        r.spi = Some("16".into());
        assert_eq!(
            prepare(&r, None, &Default::default(), None, 120)
                .unwrap_err()
                .field,
            "spi"
        );
        let mut r = rfm(&[]);
        r.campaign_type = Some(CampaignType::Sms);
        assert_eq!(
            prepare(&r, None, &Default::default(), None, 120)
                .unwrap_err()
                .field,
            "message"
        );
        let mut r = rfm(&["A0A40000027F20"]);
        r.name = "has space".into();
        assert_eq!(
            prepare(&r, None, &Default::default(), None, 120)
                .unwrap_err()
                .field,
            "name"
        );
    }

    #[test]
    fn long_scripts_span_several_packets() {
        let line = format!("A0D6000064{}", "AB".repeat(100));
        let req = rfm(&[&line, &line, &line]);
        let p = prepare(&req, None, &Default::default(), None, 120).unwrap();
        assert_eq!(p.messages_per_card, 3);
    }

    #[test]
    fn expected_last_sw_is_checked() {
        let mut req = rfm(&["A0A40000027F20"]);
        req.expected_last_sw = Some("9000".into());
        let p = prepare(&req, None, &Default::default(), None, 120).unwrap();
        let plan = CampaignPlan::new(p.campaign_type, &p.settings, None, 120).unwrap();
        // Compact response: executed count, then the last R-APDU.
        assert!(plan.check_response(&[0x01, 0x90, 0x00]).is_ok());
        let e = plan.check_response(&[0x01, 0x6A, 0x82]).unwrap_err();
        assert!(e.contains("6A82"), "{e}");
    }
}
