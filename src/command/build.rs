//! From an [`OtaCommandRequest`]'s `data` to the script the card runs: sans-IO and
//! deterministic, except for the keys KEY_UPDATE generates (from the caller's random source).
//!
//! [`build_script`] checks every field it reads and refuses what it cannot build with a
//! [`BuildError`] naming the JSON field (`data.parameters.path`, `data.apdus[2]`, ...) and the
//! problem; unknown parameter names are refused too. The script must fit
//! [`BuildContext::max_script_len`] octets.
//!
//! # `data` by command type
//!
//! Every type takes `data.format`: `"compact"` (default; TS 102 226 clause 5.1), `"expanded"`
//! (Command Scripting template `AA` with a definite length, clause 5.2) or
//! `"expanded-indefinite"` (`AE 80 .. 00 00`, as SCP81 carries it).
//!
//! ## RFM, RAM
//!
//! `data.apdus`: the C-APDUs, each a hex string (spaces allowed), in order; at least one. Each is
//! parsed as a short ISO/IEC 7816-4 C-APDU (case 1 to 4). In the compact format the card splits
//! commands by their P3, so a command the card would read differently (for example a case 2
//! command whose INS the card takes as carrying data) is refused: use `"expanded"` for it.
//! No `data.parameters`.
//!
//! ```json
//! {"apdus": ["00A40004023F00", "00A40004027F20", "00B0000009"], "format": "expanded"}
//! ```
//!
//! RAM for a card whose profile says GlobalPlatform 2.1.1: a GET STATUS with P2 `02`/`03` (the
//! TLV format, which such a card answers with 6A86) is refused naming the APDU; use P2 `00`/`01`.
//!
//! ## FILE_UPDATE
//!
//! `data.parameters`:
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `path` | string, required | FIDs separated by `/`: `"3F00/7F20/6F46"` from the MF, or `"6F46"` relative to the card class's default DF (ADF USIM `7FFF` for `uicc`, DF GSM `7F20` for `gsm`) |
//! | `data` | hex string, required | the octets to write |
//! | `offset` | integer, optional | transparent EF: where to write (0..=32767, default 0); data longer than 255 octets is written in several UPDATE BINARY |
//! | `record` | integer, optional | linear fixed EF: the record number to write (1..=254, absolute mode); `data` is the whole record (at most 255 octets) |
//! | `cardClass` | `"uicc"` or `"gsm"`, optional | command class `00` (TS 102 221) or `A0` (TS 51.011); default: the card's class |
//!
//! Builds SELECT of each level of the path (from the MF) and UPDATE BINARY or UPDATE RECORD.
//!
//! ```json
//! {"parameters": {"path": "3F00/7F20/6F46", "data": "014F54414757FFFFFFFFFFFFFFFFFFFFFF", "cardClass": "gsm"}}
//! ```
//!
//! ## PROFILE_UPDATE
//!
//! `data.parameters`, at least one of the first four:
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `serviceProviderName` | string | EF SPN `6F46` octets 2..17 (TS 31.102 4.2.12): the name in the GSM 7-bit default alphabet, one character per octet (extension characters take two), padded with `FF` to 16 octets; a name with other characters is written in UCS2 (`80` and 2 octets per character, at most 7 characters) |
//! | `spnDisplayCondition` | integer 0..=255 | EF SPN octet 1 (b1: display the registered PLMN; b2: do not display the SPN when roaming) |
//! | `plmns` | array of strings | EF PLMNwAcT `6F60` (TS 31.102 4.2.5): "MCCMNC" of 5 or 6 digits, in priority order, each coded as TS 24.008 BCD (`26201` gives `62F210`) followed by the access technology octets; unused entries are `FFFFFF0000` up to `plmnEntries` entries |
//! | `hplmnSearchPeriod` | integer 0..=255 | EF HPPLMN `6F31` (TS 31.102 4.2.6): the search period octet (n x 6 minutes; 0: no search) |
//! | `accessTechnology` | hex string, 4 digits | access technology octets of every `plmns` entry; default `C080` (UTRAN, E-UTRAN, GSM) |
//! | `plmnEntries` | integer 1..=51 | how many entries EF PLMNwAcT holds on the card, default 8 (the TS 31.102 minimum, 40 octets) |
//! | `cardClass` | `"uicc"` or `"gsm"` | as for FILE_UPDATE; the files are written in the ADF USIM (`uicc`) or DF GSM `7F20` (`gsm`) |
//!
//! Only what is given is written: a name alone leaves the display condition octet as it is.
//!
//! ```json
//! {"parameters": {"serviceProviderName": "OTAGW", "spnDisplayCondition": 1, "plmns": ["26201", "310410"]}}
//! ```
//!
//! ## KEY_UPDATE
//!
//! GlobalPlatform PUT KEY replacing the KIc (key identifier 1) and KID (2) of a key version,
//! enciphered under the KIK of the key set the command is secured with (see
//! [`crate::script::gp`]). `data.parameters`, all optional:
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `keyVersion` | integer 1..=15 | the key version whose keys are replaced (P1 and the new version); default the version of the key set securing the command |
//! | `kic`, `kid` | hex string | the new keys; each one absent is generated at random, as long as the securing key set's current one |
//! | `keyType` | `"des"` or `"aes"` | the keys' family; default from the key set's stored algorithms, else from the KIc/KID codings in `security`, else from the key length (8: DES, 32: AES) |
//!
//! AES key check values encipher `01` octets, or `00` where the card profile's
//! `defaults.gp.kcvFill` is `"00"`.
//!
//! [`BuiltScript::new_keys`] carries the new keys (and the unchanged KIK) for the gateway to store
//! once the PoR confirms.
//!
//! ```json
//! {"parameters": {"keyVersion": 1}}
//! ```
//!
//! ## APP_INSTALL
//!
//! INSTALL [for load], LOAD blocks, INSTALL [for install and make selectable] (GP Card
//! Specification 2.3 clause 11.5 and 11.6, TS 102 226 clause 8.2.1.3). `data.parameters`:
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `appletId` | string, required | the uploaded applet (a CAP zip or an IJC load file); its content comes with the build context |
//! | `packageAid` | hex, 5..16 octets | load file AID; default the CAP file's package AID (which a loaded CAP must match) |
//! | `moduleAid` | hex | executable module (applet class) AID; default the CAP file's first applet |
//! | `instanceAid` | hex | application instance AID; default the module AID |
//! | `privileges` | hex, 1 or 3 octets | GP privileges; default `00` |
//! | `applicationParameters` | hex | value of the `C9` install parameter handed to the applet; default empty |
//! | `toolkit` | object | toolkit application parameters (TS 102 226 8.2.1.3.2), see below |
//! | `load` | boolean | send INSTALL [for load] and LOAD; default true |
//! | `install` | boolean | send INSTALL [for install and make selectable]; default true |
//!
//! `toolkit`: `format` (`"uicc"`: tag `EA { 80 }`, the default for UICC class cards; `"sim"`:
//! tag `CA` in `EF`, the default for GSM class), `priority` (default 1), `maxTimers` (0),
//! `maxMenuTextLength` (16), `menuEntries` (array of `{"position": n, "identifier": n}`, default
//! none), `maxChannels` (0), `minimumSecurityLevel` (hex, default empty), `tarValues` (array of
//! 6-hex-digit TARs, default none), `maxServices` (UICC format, 0), `accessDomain` (SIM format,
//! hex, default `FF`: no file access; `00` grants full access), `fileAccess` (UICC format: the
//! UICC Access Application specific parameters, tag `81` in `EA`, TS 102 226 8.2.1.3.2.2; an
//! array of `{"adf": AID hex, "accessDomain": hex, "dap": hex}`, one per file system: no `adf`
//! is the UICC shared file system, `accessDomain` defaults to `00` full access; default none,
//! which leaves `81` out: no file access), `adminFileAccess` (UICC format, the same for the
//! administrative access, tag `82`).
//!
//! The install parameters are `C9 .. [EF ..] [EA ..]`: `EA` is a sibling of `C9` and `EF`
//! (TS 102 226 8.2.1.3.2.2). Their length is BER (`81 xx` from 128 octets) for GP 2.3.1 cards
//! and one octet for older ones: the card profile's `defaults.gp.version`, see [`GpProfile`].
//!
//! ```json
//! {"parameters": {"appletId": "a1b2", "instanceAid": "F0010203040502", "toolkit": {"tarValues": ["C00001"], "fileAccess": [{"accessDomain": "00"}]}}}
//! ```
//!
//! ## APP_DELETE
//!
//! DELETE [card content] (GP Card Specification 2.3 clause 11.2). `data.parameters`: `aid` (hex,
//! 5..16 octets, required), `related` (boolean, default false: P2 `80` also deletes the related
//! objects, for example a load file's instances).
//!
//! ```json
//! {"parameters": {"aid": "F00102030405", "related": true}}
//! ```

use rand::{CryptoRng, RngCore};
use serde_json::{Map, Value};

use super::keys::{KeyMaterial, KeySetRecord};
use super::{CommandType, OtaCommandRequest};
use crate::script::gp::{put_key, KcvFill, KeyType, NewKey, PutKeyError, KEY_ID_KIC};
use crate::script::ram::{
    delete, install_for_install, install_for_load, load_blocks, max_load_block_size, FileAccess,
    GpVersion, StatusFormat, ACCESS_FULL, ACCESS_NONE, INS_GET_STATUS,
};
use crate::script::rfm::{select_fid, select_path, update_binary, update_record, FID_MF};
use crate::script::{
    parse_command_script, Aid, CApdu, CapFile, CardClass, CommandScript, InstallParameters,
    LoadFile, MenuEntry, Privileges, RecordMode, ScriptError, ScriptFormat, ToolkitParameters,
};
use crate::security::{CipherAlgorithm, IntegrityAlgorithm};

/// What a build needs besides the request.
#[derive(Debug, Clone, Copy)]
pub struct BuildContext<'a> {
    /// The card's command class (the default of `cardClass`).
    pub card_class: CardClass,
    /// The key set the packet is secured with; its KIK enciphers KEY_UPDATE's new keys.
    pub key_set: &'a KeySetRecord,
    /// The uploaded applet of APP_INSTALL (CAP zip or IJC).
    pub applet: Option<&'a [u8]>,
    /// Octets of script the transport's packet carries.
    pub max_script_len: usize,
    /// The card's GlobalPlatform implementation, from its profile's `defaults.gp`.
    pub gp: GpProfile,
}

/// Fields of a profile's `defaults.gp`.
pub const PROFILE_GP_FIELDS: &[&str] = &["version", "kcvFill"];

/// What a card's profile says of its GlobalPlatform implementation (`defaults.gp`, for
/// example `{"version": "2.2.1", "kcvFill": "00"}`); the default is GP 2.3.1 with AES check
/// values over `01` octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GpProfile {
    /// `version`: the install parameters' length coding (BER from 2.3.1 on) and the GET STATUS
    /// format (P2 `00` only for 2.1.1).
    pub version: GpVersion,
    /// `kcvFill`: `"01"` or `"00"`, the octets AES key check values encipher (KEY_UPDATE).
    pub kcv_fill: KcvFill,
}

impl GpProfile {
    /// Reads a profile's `defaults.gp`; the error names the field (`gp.version`) and the
    /// problem.
    pub fn from_json(gp: &Value) -> Result<Self, (String, String)> {
        let obj = gp
            .as_object()
            .ok_or_else(|| ("gp".to_string(), "must be a JSON object".to_string()))?;
        let mut out = GpProfile::default();
        for (k, v) in obj {
            let err = |p: String| (format!("gp.{k}"), p);
            let text = v
                .as_str()
                .ok_or_else(|| err(format!("must be a string, not {}", json_kind(v))))?;
            match k.as_str() {
                "version" => {
                    out.version = GpVersion::parse(text).ok_or_else(|| {
                        err(format!(
                        "{text:?} is not a GlobalPlatform version such as \"2.2.1\" or \"2.3.1\""
                    ))
                    })?
                }
                "kcvFill" => {
                    out.kcv_fill = match text {
                        "01" => KcvFill::Ones,
                        "00" => KcvFill::Zeros,
                        _ => return Err(err(format!("{text:?} is not \"01\" or \"00\""))),
                    }
                }
                _ => {
                    return Err(err(format!(
                        "unknown; the fields are {}",
                        PROFILE_GP_FIELDS.join(", ")
                    )))
                }
            }
        }
        Ok(out)
    }
}

/// A built script.
#[derive(Clone, PartialEq, Eq)]
pub struct BuiltScript {
    /// The encoded script, in `format`.
    pub script: Vec<u8>,
    /// Its format.
    pub format: ScriptFormat,
    /// Number of C-APDUs in it.
    pub command_count: usize,
    /// KEY_UPDATE: the key version replaced and its new keys (KIK unchanged: the securing key
    /// set's when it is that version, `None` otherwise), to store once the PoR confirms.
    pub new_keys: Option<(u8, KeyMaterial)>,
}

impl std::fmt::Debug for BuiltScript {
    // The script of a KEY_UPDATE holds keys only enciphered; `new_keys` is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltScript")
            .field("script", &hex::encode_upper(&self.script))
            .field("format", &self.format)
            .field("command_count", &self.command_count)
            .field("new_keys", &self.new_keys.as_ref().map(|(v, k)| (v, k)))
            .finish()
    }
}

/// Why a request's data cannot be built. The message starts with the JSON field concerned
/// (`data.parameters.path: ...`), except [`BuildError::TooLong`] which concerns the whole
/// script.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A required field is absent.
    #[error("{field}: {problem}")]
    Missing {
        /// The JSON field.
        field: String,
        /// What it is needed for.
        problem: String,
    },
    /// Parameter names the command type does not take.
    #[error("{field}: unknown parameter{} {} ({command} takes {})", if names.len() == 1 { "" } else { "s" }, quoted(names), if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    UnknownParameters {
        /// The object holding them (`data.parameters`, `data.parameters.toolkit`).
        field: String,
        /// The unknown names, in order.
        names: Vec<String>,
        /// What the object is for (a command type, "toolkit").
        command: String,
        /// The names it takes.
        known: Vec<&'static str>,
    },
    /// A field with a value that cannot be used.
    #[error("{field}: {problem}")]
    Invalid {
        /// The JSON field.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// The script does not fit the transport's packet.
    #[error("script of {len} octets does not fit the {max} octets the transport carries")]
    TooLong {
        /// The script's length.
        len: usize,
        /// What the packet carries.
        max: usize,
    },
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl BuildError {
    /// The JSON field the error concerns (`data` for a script too long).
    pub fn field(&self) -> &str {
        match self {
            BuildError::Missing { field, .. }
            | BuildError::UnknownParameters { field, .. }
            | BuildError::Invalid { field, .. } => field,
            BuildError::TooLong { .. } => "data",
        }
    }

    /// The message without the field.
    pub fn problem(&self) -> String {
        let text = self.to_string();
        match self {
            BuildError::TooLong { .. } => text,
            _ => text
                .strip_prefix(self.field())
                .and_then(|t| t.strip_prefix(": "))
                .map_or_else(|| text.clone(), str::to_string),
        }
    }
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> BuildError {
    BuildError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

fn missing(field: impl Into<String>, problem: impl Into<String>) -> BuildError {
    BuildError::Missing {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Builds the script of `req` for the card described by `ctx` (see the module documentation
/// for the `data` of each command type). `rng` is used only by KEY_UPDATE, for keys not given.
pub fn build_script<R: RngCore + CryptoRng + ?Sized>(
    req: &OtaCommandRequest,
    ctx: &BuildContext<'_>,
    rng: &mut R,
) -> Result<BuiltScript, BuildError> {
    let format = script_format(req.data.format.as_deref())?;
    let t = req.command_type;
    if !matches!(
        t,
        CommandType::Rfm | CommandType::Ram | CommandType::Subscription
    ) && !req.data.apdus.is_empty()
    {
        return Err(invalid(
            "data.apdus",
            format!("{t} builds its C-APDUs from data.parameters; leave data.apdus empty"),
        ));
    }
    let mut new_keys = None;
    let commands = match t {
        CommandType::Rfm | CommandType::Ram | CommandType::Subscription => {
            Params::new(req, &[])?;
            let apdus = raw_apdus(req, format)?;
            if t == CommandType::Ram {
                check_get_status(&apdus, ctx.gp.version)?;
            }
            apdus
        }
        CommandType::FileUpdate => file_update(&Params::new(req, FILE_UPDATE)?, ctx)?,
        CommandType::ProfileUpdate => profile_update(&Params::new(req, PROFILE_UPDATE)?, ctx)?,
        CommandType::KeyUpdate => {
            let (cmd, keys) = key_update(&Params::new(req, KEY_UPDATE)?, req, ctx, rng)?;
            new_keys = Some(keys);
            vec![cmd]
        }
        CommandType::AppInstall => app_install(&Params::new(req, APP_INSTALL)?, ctx, format)?,
        CommandType::AppDelete => app_delete(&Params::new(req, APP_DELETE)?)?,
    };
    let script = CommandScript::from_commands(commands);
    let bytes = script
        .encode(format)
        .map_err(|e| invalid("data", format!("cannot encode the script: {e}")))?;
    if bytes.len() > ctx.max_script_len {
        return Err(BuildError::TooLong {
            len: bytes.len(),
            max: ctx.max_script_len,
        });
    }
    Ok(BuiltScript {
        command_count: script.command_count(),
        script: bytes,
        format,
        new_keys,
    })
}

fn script_format(value: Option<&str>) -> Result<ScriptFormat, BuildError> {
    match value {
        None | Some("compact") => Ok(ScriptFormat::Compact),
        Some("expanded") => Ok(ScriptFormat::ExpandedDefinite),
        Some("expanded-indefinite") => Ok(ScriptFormat::ExpandedIndefinite),
        Some(other) => Err(invalid(
            "data.format",
            format!("{other:?} is not \"compact\", \"expanded\" or \"expanded-indefinite\""),
        )),
    }
}

/// Hex digits (spaces allowed) to octets, with the problem named for `field`.
fn parse_hex(field: &str, text: &str) -> Result<Vec<u8>, BuildError> {
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if let Some((i, c)) = clean.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(invalid(
            field,
            format!("{c:?} at position {i} is not a hex digit"),
        ));
    }
    if !clean.len().is_multiple_of(2) {
        return Err(invalid(
            field,
            format!("odd number of hex digits ({})", clean.len()),
        ));
    }
    hex::decode(&clean).map_err(|e| invalid(field, format!("not hex: {e}")))
}

/// The `data.parameters` names a command type accepts (none for RFM and RAM).
pub fn parameter_names(t: CommandType) -> &'static [&'static str] {
    match t {
        CommandType::Rfm | CommandType::Ram | CommandType::Subscription => &[],
        CommandType::FileUpdate => FILE_UPDATE,
        CommandType::ProfileUpdate => PROFILE_UPDATE,
        CommandType::KeyUpdate => KEY_UPDATE,
        CommandType::AppInstall => APP_INSTALL,
        CommandType::AppDelete => APP_DELETE,
    }
}

/// The names of APP_INSTALL's `toolkit` object.
pub fn toolkit_parameter_names() -> &'static [&'static str] {
    TOOLKIT
}

const FILE_UPDATE: &[&str] = &["path", "data", "offset", "record", "cardClass"];
const PROFILE_UPDATE: &[&str] = &[
    "serviceProviderName",
    "spnDisplayCondition",
    "plmns",
    "hplmnSearchPeriod",
    "accessTechnology",
    "plmnEntries",
    "cardClass",
];
const KEY_UPDATE: &[&str] = &["keyVersion", "kic", "kid", "keyType"];
const APP_INSTALL: &[&str] = &[
    "appletId",
    "packageAid",
    "moduleAid",
    "instanceAid",
    "privileges",
    "applicationParameters",
    "toolkit",
    "load",
    "install",
];
const APP_DELETE: &[&str] = &["aid", "related"];
const TOOLKIT: &[&str] = &[
    "format",
    "priority",
    "maxTimers",
    "maxMenuTextLength",
    "menuEntries",
    "maxChannels",
    "minimumSecurityLevel",
    "tarValues",
    "maxServices",
    "accessDomain",
    "fileAccess",
    "adminFileAccess",
];

static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();

/// A JSON object of parameters whose names were checked, with typed getters that name the
/// field in their errors.
struct Params<'a> {
    /// JSON path of the object (`data.parameters`).
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Params<'a> {
    fn new(req: &'a OtaCommandRequest, known: &[&'static str]) -> Result<Self, BuildError> {
        let empty = EMPTY.get_or_init(Map::new);
        let map = match &req.data.parameters {
            None | Some(Value::Null) => empty,
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(invalid(
                    "data.parameters",
                    format!("must be a JSON object, not {}", json_kind(other)),
                ))
            }
        };
        Self::object(
            "data.parameters".into(),
            map,
            known,
            req.command_type.as_str(),
        )
    }

    fn object(
        path: String,
        map: &'a Map<String, Value>,
        known: &[&'static str],
        command: &str,
    ) -> Result<Self, BuildError> {
        let unknown: Vec<String> = map
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(BuildError::UnknownParameters {
                field: path,
                names: unknown,
                command: command.to_string(),
                known: known.to_vec(),
            });
        }
        Ok(Params { path, map })
    }

    fn field(&self, name: &str) -> String {
        format!("{}.{name}", self.path)
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn str(&self, name: &str) -> Result<Option<&'a str>, BuildError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(invalid(
                self.field(name),
                format!("must be a string, not {}", json_kind(other)),
            )),
        }
    }

    fn hex(&self, name: &str) -> Result<Option<Vec<u8>>, BuildError> {
        self.str(name)?
            .map(|s| parse_hex(&self.field(name), s))
            .transpose()
    }

    fn uint(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Option<u64>, BuildError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let n = v
            .as_u64()
            .ok_or_else(|| invalid(self.field(name), format!("must be a whole number, not {v}")))?;
        if !range.contains(&n) {
            return Err(invalid(
                self.field(name),
                format!("{n} is out of {}..={}", range.start(), range.end()),
            ));
        }
        Ok(Some(n))
    }

    fn u8(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<u8>,
    ) -> Result<Option<u8>, BuildError> {
        let wide = u64::from(*range.start())..=u64::from(*range.end());
        Ok(self.uint(name, wide)?.and_then(|n| u8::try_from(n).ok()))
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, BuildError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(invalid(
                self.field(name),
                format!("must be true or false, not {other}"),
            )),
        }
    }

    fn array(&self, name: &str) -> Result<Option<&'a Vec<Value>>, BuildError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(other) => Err(invalid(
                self.field(name),
                format!("must be an array, not {}", json_kind(other)),
            )),
        }
    }

    fn aid(&self, name: &str) -> Result<Option<Aid>, BuildError> {
        self.hex(name)?
            .map(|b| {
                Aid::new(&b).map_err(|_| {
                    invalid(
                        self.field(name),
                        format!("an AID is 5 to 16 octets, not {}", b.len()),
                    )
                })
            })
            .transpose()
    }

    fn card_class(&self, default: CardClass) -> Result<CardClass, BuildError> {
        match self.str("cardClass")? {
            None => Ok(default),
            Some("uicc") => Ok(CardClass::Uicc),
            Some("gsm") => Ok(CardClass::Gsm),
            Some(other) => Err(invalid(
                self.field("cardClass"),
                format!("{other:?} is not \"uicc\" or \"gsm\""),
            )),
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// RFM / RAM: the caller's C-APDUs.
/// GP 2.1.1 cards answer GET STATUS P2 `02`/`03` (TLV format) with 6A86 (GP 2.3 table
/// 11-34): refused here for a card whose profile says 2.1.1, naming the P2 to use instead.
fn check_get_status(apdus: &[CApdu], version: GpVersion) -> Result<(), BuildError> {
    if version.status_format() != StatusFormat::Legacy {
        return Ok(());
    }
    match apdus
        .iter()
        .position(|c| c.cla() & 0xF0 == 0x80 && c.ins() == INS_GET_STATUS && c.p2() & 0x02 != 0)
    {
        Some(i) => Err(invalid(
            format!("data.apdus[{i}]"),
            format!(
                "GET STATUS P2 {:02X} asks for the TLV format, which a GlobalPlatform {version} \
                 card (the profile's gp.version) answers with 6A86: use P2 {:02X}",
                apdus.get(i).map_or(0x02, CApdu::p2),
                apdus.get(i).map_or(0x00, |c| c.p2() & 0x01)
            ),
        )),
        None => Ok(()),
    }
}

fn raw_apdus(req: &OtaCommandRequest, format: ScriptFormat) -> Result<Vec<CApdu>, BuildError> {
    if req.data.apdus.is_empty() {
        return Err(missing(
            "data.apdus",
            format!("{} needs at least one C-APDU", req.command_type),
        ));
    }
    let mut out = Vec::with_capacity(req.data.apdus.len());
    for (i, text) in req.data.apdus.iter().enumerate() {
        let field = format!("data.apdus[{i}]");
        let bytes = parse_hex(&field, text)?;
        let apdu = CApdu::parse(&bytes).map_err(|e| invalid(&field, e.to_string()))?;
        out.push(apdu);
    }
    if format == ScriptFormat::Compact {
        check_compact_reading(&out)?;
    }
    Ok(out)
}

/// In the compact format the card splits commands by reading P3 as Lc or Le from the INS
/// (TS 102 226 clause 5.1): refuses a list the card would read as other commands.
fn check_compact_reading(commands: &[CApdu]) -> Result<(), BuildError> {
    let bytes = CommandScript::from_commands(commands.iter().cloned())
        .encode(ScriptFormat::Compact)
        .map_err(|e| invalid("data.apdus", e.to_string()))?;
    let read: Vec<CApdu> = match parse_command_script(&bytes, ScriptFormat::Compact) {
        Ok(s) => s.commands().cloned().collect(),
        Err(_) => Vec::new(),
    };
    for (i, sent) in commands.iter().enumerate() {
        let same = read.get(i).is_some_and(|r| {
            (r.cla(), r.ins(), r.p1(), r.p2(), r.data())
                == (sent.cla(), sent.ins(), sent.p1(), sent.p2(), sent.data())
        });
        if !same {
            return Err(invalid(
                format!("data.apdus[{i}]"),
                "in the compact format the card would read this command differently (its P3 \
                 is taken as Lc or Le from the INS); use data.format \"expanded\"",
            ));
        }
    }
    Ok(())
}

/// A path parameter: FIDs from the MF (with `3F00` first) or relative to `default_df`.
fn parse_path(field: &str, text: &str, default_df: &[u16]) -> Result<Vec<u16>, BuildError> {
    let parts: Vec<&str> = text.trim().trim_matches('/').split('/').collect();
    let mut fids = Vec::with_capacity(parts.len());
    for p in parts {
        let p = p.trim();
        if p.len() != 4 || !p.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(invalid(
                field,
                format!("{p:?} is not a file id (4 hex digits)"),
            ));
        }
        fids.push(u16::from_str_radix(p, 16).map_err(|e| invalid(field, e.to_string()))?);
    }
    if fids.first() == Some(&FID_MF) {
        Ok(fids)
    } else {
        let mut full = vec![FID_MF];
        full.extend_from_slice(default_df);
        full.extend_from_slice(&fids);
        Ok(full)
    }
}

/// The DF relative paths start from, and PROFILE_UPDATE writes in.
fn default_df(class: CardClass) -> [u16; 1] {
    match class {
        CardClass::Uicc => [0x7FFF],
        CardClass::Gsm => [0x7F20],
    }
}

fn script_err(field: &str) -> impl Fn(ScriptError) -> BuildError + '_ {
    move |e| invalid(field, e.to_string())
}

/// UPDATE BINARY of `data` from `offset`, in pieces of at most 255 octets.
fn update_binary_all(
    class: CardClass,
    offset: u16,
    data: &[u8],
    field: &str,
) -> Result<Vec<CApdu>, BuildError> {
    let mut out = Vec::new();
    for (i, chunk) in data.chunks(255).enumerate() {
        let at = usize::from(offset) + i * 255;
        let at = u16::try_from(at)
            .ok()
            .filter(|&a| a <= 0x7FFF)
            .ok_or_else(|| invalid(field, format!("writing past offset 32767 (at {at})")))?;
        out.push(update_binary(class, at, chunk).map_err(script_err(field))?);
    }
    Ok(out)
}

fn file_update(p: &Params<'_>, ctx: &BuildContext<'_>) -> Result<Vec<CApdu>, BuildError> {
    let class = p.card_class(ctx.card_class)?;
    let path_field = p.field("path");
    let path_text = p.str("path")?.ok_or_else(|| {
        missing(
            &path_field,
            "FILE_UPDATE needs the file's path, e.g. \"3F00/7F20/6F46\"",
        )
    })?;
    let path = parse_path(&path_field, path_text, &default_df(class))?;
    if path.len() < 2 {
        return Err(invalid(&path_field, "names the MF, not an EF"));
    }
    if class == CardClass::Gsm && path.contains(&0x7FFF) {
        return Err(invalid(
            &path_field,
            "7FFF (the current ADF) cannot be selected in the GSM class A0; use cardClass \"uicc\"",
        ));
    }
    let data_field = p.field("data");
    let data = p
        .hex("data")?
        .ok_or_else(|| missing(&data_field, "FILE_UPDATE needs the octets to write (hex)"))?;
    if data.is_empty() {
        return Err(invalid(&data_field, "is empty"));
    }
    let offset = p.uint("offset", 0..=0x7FFF)?;
    let record = p.u8("record", 1..=254)?;
    let mut cmds = select_path(class, &path);
    match (offset, record) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                p.field("record"),
                "give either offset (transparent EF) or record (linear fixed EF), not both",
            ))
        }
        (_, Some(n)) => {
            if data.len() > 255 {
                return Err(invalid(
                    &data_field,
                    format!("a record holds at most 255 octets, not {}", data.len()),
                ));
            }
            cmds.push(
                update_record(class, RecordMode::Absolute(n), &data)
                    .map_err(script_err(&data_field))?,
            );
        }
        (offset, None) => {
            let offset = offset.and_then(|o| u16::try_from(o).ok()).unwrap_or(0);
            cmds.extend(update_binary_all(class, offset, &data, &data_field)?);
        }
    }
    Ok(cmds)
}

/// EF SPN octets 2..17: the name coded and padded with FF to 16 octets.
fn spn_name(field: &str, name: &str) -> Result<Vec<u8>, BuildError> {
    const ROOM: usize = 16;
    let (mut coded, how) = match otagw_sms::gsm7::encode_text(name).ok() {
        Some(c) => (c, "the GSM default alphabet"),
        None => {
            // UCS2, TS 31.102 annex A option 1: 80 then big-endian UCS2 characters.
            let mut c = vec![0x80];
            for ch in name.chars() {
                let mut units = [0u16; 2];
                let encoded = ch.encode_utf16(&mut units);
                if encoded.len() != 1 {
                    return Err(invalid(
                        field,
                        format!("{ch:?} is outside UCS2 (the Basic Multilingual Plane)"),
                    ));
                }
                c.extend_from_slice(&units[0].to_be_bytes());
            }
            (c, "UCS2")
        }
    };
    if coded.len() > ROOM {
        return Err(invalid(
            field,
            format!(
                "{name:?} takes {} octets in {how}; EF SPN holds {ROOM}",
                coded.len()
            ),
        ));
    }
    coded.resize(ROOM, 0xFF);
    Ok(coded)
}

/// A PLMN "MCCMNC" (5 or 6 digits) in TS 24.008 BCD: MCC2 MCC1, MNC3 MCC3, MNC2 MNC1.
pub fn plmn_bcd(field: &str, text: &str) -> Result<[u8; 3], BuildError> {
    let d: Vec<u8> = text.bytes().map(|b| b.wrapping_sub(b'0')).collect();
    if !matches!(d.len(), 5 | 6) || d.iter().any(|&x| x > 9) {
        return Err(invalid(
            field,
            format!("{text:?} is not MCC and MNC (5 or 6 digits)"),
        ));
    }
    let g = |i: usize| d.get(i).copied().unwrap_or(0x0F);
    let mnc3 = if d.len() == 6 { g(5) } else { 0x0F };
    Ok([g(1) << 4 | g(0), mnc3 << 4 | g(2), g(4) << 4 | g(3)])
}

fn profile_update(p: &Params<'_>, ctx: &BuildContext<'_>) -> Result<Vec<CApdu>, BuildError> {
    let class = p.card_class(ctx.card_class)?;
    if ![
        "serviceProviderName",
        "spnDisplayCondition",
        "plmns",
        "hplmnSearchPeriod",
    ]
    .iter()
    .any(|n| p.has(n))
    {
        return Err(missing(
            "data.parameters",
            "PROFILE_UPDATE needs at least one of serviceProviderName, spnDisplayCondition, \
             plmns, hplmnSearchPeriod",
        ));
    }
    if (p.has("accessTechnology") || p.has("plmnEntries")) && !p.has("plmns") {
        let name = if p.has("accessTechnology") {
            "accessTechnology"
        } else {
            "plmnEntries"
        };
        return Err(invalid(p.field(name), "only applies with plmns"));
    }
    let df = default_df(class);
    // (EF, offset, content) in write order.
    let mut writes: Vec<(u16, u16, Vec<u8>)> = Vec::new();
    let name = p
        .str("serviceProviderName")?
        .map(|n| spn_name(&p.field("serviceProviderName"), n))
        .transpose()?;
    let condition = p.u8("spnDisplayCondition", 0..=255)?;
    match (condition, name) {
        (Some(c), Some(n)) => writes.push((0x6F46, 0, [vec![c], n].concat())),
        (Some(c), None) => writes.push((0x6F46, 0, vec![c])),
        (None, Some(n)) => writes.push((0x6F46, 1, n)),
        (None, None) => {}
    }
    if let Some(list) = p.array("plmns")? {
        let act_field = p.field("accessTechnology");
        let act = match p.hex("accessTechnology")? {
            None => vec![0xC0, 0x80],
            Some(a) if a.len() == 2 => a,
            Some(a) => {
                return Err(invalid(
                    act_field,
                    format!("is 2 octets (4 hex digits), not {}", a.len()),
                ))
            }
        };
        let entries = usize::from(p.u8("plmnEntries", 1..=51)?.unwrap_or(8));
        if list.len() > entries {
            return Err(invalid(
                p.field("plmns"),
                format!(
                    "{} PLMNs do not fit the {entries} entries of EF PLMNwAcT (see plmnEntries)",
                    list.len()
                ),
            ));
        }
        let mut content = Vec::with_capacity(entries * 5);
        for (i, v) in list.iter().enumerate() {
            let field = format!("{}[{i}]", p.field("plmns"));
            let Value::String(s) = v else {
                return Err(invalid(
                    field,
                    format!("must be a string \"MCCMNC\", not {}", json_kind(v)),
                ));
            };
            content.extend_from_slice(&plmn_bcd(&field, s)?);
            content.extend_from_slice(&act);
        }
        while content.len() < entries * 5 {
            content.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0x00, 0x00]);
        }
        writes.push((0x6F60, 0, content));
    }
    if let Some(period) = p.u8("hplmnSearchPeriod", 0..=255)? {
        writes.push((0x6F31, 0, vec![period]));
    }
    let mut cmds = Vec::new();
    for (i, (fid, offset, content)) in writes.iter().enumerate() {
        if i == 0 {
            let mut path = vec![FID_MF];
            path.extend_from_slice(&df);
            path.push(*fid);
            cmds.extend(select_path(class, &path));
        } else {
            // The DF stays selected: its other EFs are selected by FID.
            cmds.push(select_fid(class, *fid));
        }
        cmds.extend(update_binary_all(
            class,
            *offset,
            content,
            "data.parameters",
        )?);
    }
    Ok(cmds)
}

/// The family of a key: from the parameter, the stored algorithm, the KIc/KID coding of the
/// request, or the length.
fn key_family(
    given: Option<KeyType>,
    stored: Option<bool>,
    coded: Option<u8>,
    len: usize,
) -> Option<KeyType> {
    let aes = |b: bool| if b { KeyType::Aes } else { KeyType::Des };
    given
        .or(stored.map(aes))
        .or(match coded.map(|c| c & 0x03) {
            Some(0x01) => Some(KeyType::Des),
            Some(0x02) => Some(KeyType::Aes),
            _ => None,
        })
        .or(match len {
            8 => Some(KeyType::Des),
            32 => Some(KeyType::Aes),
            _ => None,
        })
}

fn key_update<R: RngCore + CryptoRng + ?Sized>(
    p: &Params<'_>,
    req: &OtaCommandRequest,
    ctx: &BuildContext<'_>,
    rng: &mut R,
) -> Result<(CApdu, (u8, KeyMaterial)), BuildError> {
    let ks = ctx.key_set;
    let version = p.u8("keyVersion", 1..=15)?.unwrap_or(ks.version);
    let given_type = match p.str("keyType")? {
        None => None,
        Some("des") => Some(KeyType::Des),
        Some("aes") => Some(KeyType::Aes),
        Some(other) => {
            return Err(invalid(
                p.field("keyType"),
                format!("{other:?} is not \"des\" or \"aes\""),
            ))
        }
    };
    let kik = ks.keys.kik.as_deref().ok_or_else(|| {
        invalid(
            "security",
            format!(
                "key set {} securing the command has no KIK (key-encryption key) to encipher \
                 the new keys",
                ks.version
            ),
        )
    })?;
    let coded = |s: &str| u8::from_str_radix(s, 16).ok();
    let specs = [
        (
            "kic",
            ks.keys.kic.len(),
            ks.kic_algorithm.map(|a| a == CipherAlgorithm::AesCbc),
            coded(&req.security.kic),
        ),
        (
            "kid",
            ks.keys.kid.len(),
            ks.kid_algorithm
                .filter(|a| !a.is_rc())
                .map(|a| a == IntegrityAlgorithm::AesCmac),
            coded(&req.security.kid),
        ),
    ];
    let mut keys = Vec::with_capacity(2);
    for (name, current_len, stored, coding) in specs {
        let field = p.field(name);
        let given = p.hex(name)?;
        let len = given.as_ref().map_or(current_len, Vec::len);
        if given.is_none() && current_len == 0 {
            return Err(missing(
                &field,
                format!(
                    "key set {} has no {} to take the length of a generated key from; give {name}",
                    ks.version,
                    name.to_uppercase()
                ),
            ));
        }
        let family = key_family(given_type, stored, coding, len).ok_or_else(|| {
            invalid(
                p.field("keyType"),
                format!(
                    "cannot tell whether the {}-octet {} is a DES or an AES key (no algorithm \
                     stored, the {} coding in security is implicit); give keyType",
                    len,
                    name.to_uppercase(),
                    name.to_uppercase()
                ),
            )
        })?;
        if !family.accepts_key_len(len) {
            return Err(invalid(
                &field,
                format!(
                    "{len} octets is not a {family} key length ({} octets)",
                    family.key_lengths()
                ),
            ));
        }
        if version == ks.version {
            let fits = match name {
                "kic" => ks.kic_algorithm.is_none_or(|a| a.accepts_key_len(len)),
                _ => ks.kid_algorithm.is_none_or(|a| a.accepts_key_len(len)),
            };
            if !fits {
                let (alg, lens) = match name {
                    "kic" => ks
                        .kic_algorithm
                        .map_or(("", ""), |a| (a.name(), a.key_lengths())),
                    _ => ks
                        .kid_algorithm
                        .map_or(("", ""), |a| (a.name(), a.key_lengths())),
                };
                return Err(invalid(
                    &field,
                    format!("{len} octets do not fit the key set's {alg} ({lens} octets)"),
                ));
            }
        }
        let value = match given {
            Some(v) => v,
            None => {
                let mut v = vec![0u8; len];
                rng.fill_bytes(&mut v);
                v
            }
        };
        keys.push(NewKey {
            key_type: family,
            value,
        });
    }
    let cmd = put_key(
        Some(version),
        version,
        KEY_ID_KIC,
        &keys,
        kik,
        ctx.gp.kcv_fill,
    )
    .map_err(|e| match e {
        PutKeyError::KikLength { .. } => invalid(
            "security",
            format!("the KIK of key set {}: {e}", ks.version),
        ),
        other => invalid("data.parameters", other.to_string()),
    })?;
    let mut values = keys.into_iter().map(|k| k.value);
    let material = KeyMaterial {
        kic: values.next().unwrap_or_default(),
        kid: values.next().unwrap_or_default(),
        kik: (version == ks.version).then(|| kik.to_vec()),
    };
    Ok((cmd, (version, material)))
}

/// The uploaded applet: a CAP zip (starts with `PK`) or an IJC load file.
pub(crate) fn load_file(field: &str, bytes: &[u8]) -> Result<LoadFile, BuildError> {
    let parsed = if bytes.starts_with(b"PK\x03\x04") {
        CapFile::from_zip(bytes).and_then(|cap| cap.load_file())
    } else {
        LoadFile::from_ijc(bytes)
    };
    parsed.map_err(|e| {
        invalid(
            field,
            format!("the uploaded applet is neither a CAP file nor an IJC load file: {e}"),
        )
    })
}

/// A `fileAccess` / `adminFileAccess` array: `{"adf": AID hex (absent: the UICC shared file
/// system), "accessDomain": hex (default "00", full access), "dap": hex}` per file system.
fn file_access(t: &Params<'_>, name: &str) -> Result<Vec<FileAccess>, BuildError> {
    let mut out = Vec::new();
    for (i, v) in t.array(name)?.into_iter().flatten().enumerate() {
        let field = format!("{}[{i}]", t.field(name));
        let Value::Object(m) = v else {
            return Err(invalid(
                field,
                format!(
                    "must be {{\"adf\": AID, \"accessDomain\": hex}}, not {}",
                    json_kind(v)
                ),
            ));
        };
        let e = Params::object(
            field.clone(),
            m,
            &["adf", "accessDomain", "dap"],
            "a file access entry",
        )?;
        let access_domain = e.hex("accessDomain")?.unwrap_or_else(|| vec![ACCESS_FULL]);
        if access_domain.is_empty() {
            return Err(invalid(e.field("accessDomain"), "is empty"));
        }
        out.push(FileAccess {
            file_system: e.aid("adf")?,
            access_domain,
            dap: e.hex("dap")?.unwrap_or_default(),
        });
    }
    Ok(out)
}

/// The `toolkit` object of APP_INSTALL.
struct Toolkit {
    /// UICC format (`EA`) rather than SIM (`CA`).
    uicc: bool,
    params: ToolkitParameters,
    /// `EA { 81 }` entries.
    access: Vec<FileAccess>,
    /// `EA { 82 }` entries.
    admin_access: Vec<FileAccess>,
}

fn toolkit_parameters(value: &Value, class: CardClass) -> Result<Toolkit, BuildError> {
    let path = "data.parameters.toolkit".to_string();
    let Value::Object(map) = value else {
        return Err(invalid(
            path,
            format!("must be an object, not {}", json_kind(value)),
        ));
    };
    let t = Params::object(path, map, TOOLKIT, "toolkit")?;
    let uicc = match t.str("format")? {
        None => class == CardClass::Uicc,
        Some("uicc") => true,
        Some("sim") => false,
        Some(other) => {
            return Err(invalid(
                t.field("format"),
                format!("{other:?} is not \"uicc\" or \"sim\""),
            ))
        }
    };
    let mut menu_entries = Vec::new();
    for (i, v) in t.array("menuEntries")?.into_iter().flatten().enumerate() {
        let field = format!("{}[{i}]", t.field("menuEntries"));
        let Value::Object(m) = v else {
            return Err(invalid(
                field,
                format!(
                    "must be {{\"position\": n, \"identifier\": n}}, not {}",
                    json_kind(v)
                ),
            ));
        };
        let e = Params::object(
            field.clone(),
            m,
            &["position", "identifier"],
            "a menu entry",
        )?;
        menu_entries.push(MenuEntry {
            position: e
                .u8("position", 0..=255)?
                .ok_or_else(|| missing(e.field("position"), "a menu entry needs its position"))?,
            identifier: e.u8("identifier", 0..=255)?.unwrap_or(0),
        });
    }
    let mut tar_values = Vec::new();
    for (i, v) in t.array("tarValues")?.into_iter().flatten().enumerate() {
        let field = format!("{}[{i}]", t.field("tarValues"));
        let Value::String(s) = v else {
            return Err(invalid(
                field,
                format!("must be a string, not {}", json_kind(v)),
            ));
        };
        let b = parse_hex(&field, s)?;
        let tar: [u8; 3] = b
            .as_slice()
            .try_into()
            .map_err(|_| invalid(&field, format!("a TAR is 3 octets, not {}", b.len())))?;
        tar_values.push(tar);
    }
    if !uicc && t.has("maxServices") {
        return Err(invalid(
            t.field("maxServices"),
            "only exists in the \"uicc\" format",
        ));
    }
    if uicc && t.has("accessDomain") {
        return Err(invalid(
            t.field("accessDomain"),
            "only exists in the \"sim\" format; the \"uicc\" format grants file access with \
             fileAccess",
        ));
    }
    for name in ["fileAccess", "adminFileAccess"] {
        if !uicc && t.has(name) {
            return Err(invalid(
                t.field(name),
                "only exists in the \"uicc\" format; the \"sim\" format grants file access \
                 with accessDomain",
            ));
        }
    }
    let access = file_access(&t, "fileAccess")?;
    let admin_access = file_access(&t, "adminFileAccess")?;
    Ok(Toolkit {
        uicc,
        access,
        admin_access,
        params: ToolkitParameters {
            // No file access unless the caller grants it (TS 102 226 8.2.1.3.2.3: `FF`).
            access_domain: if uicc {
                Vec::new()
            } else {
                t.hex("accessDomain")?.unwrap_or_else(|| vec![ACCESS_NONE])
            },
            priority: t.u8("priority", 0..=255)?.unwrap_or(1),
            max_timers: t.u8("maxTimers", 0..=255)?.unwrap_or(0),
            max_menu_text_length: t.u8("maxMenuTextLength", 0..=255)?.unwrap_or(16),
            menu_entries,
            max_channels: t.u8("maxChannels", 0..=255)?.unwrap_or(0),
            minimum_security_level: t.hex("minimumSecurityLevel")?.unwrap_or_default(),
            tar_values,
            max_services: t.u8("maxServices", 0..=255)?.unwrap_or(0),
        },
    })
}

fn app_install(
    p: &Params<'_>,
    ctx: &BuildContext<'_>,
    format: ScriptFormat,
) -> Result<Vec<CApdu>, BuildError> {
    let id_field = p.field("appletId");
    match p.str("appletId")? {
        Some(id) if !id.trim().is_empty() => {}
        Some(_) => return Err(invalid(&id_field, "is empty")),
        None => {
            return Err(missing(
                &id_field,
                "APP_INSTALL needs the id of an uploaded applet",
            ))
        }
    }
    let bytes = ctx
        .applet
        .ok_or_else(|| missing(&id_field, "APP_INSTALL needs an uploaded applet"))?;
    let lf = load_file(&id_field, bytes)?;
    let load = p.bool("load")?.unwrap_or(true);
    let install = p.bool("install")?.unwrap_or(true);
    if !load && !install {
        return Err(invalid(
            p.field("install"),
            "load and install are both false: nothing to do",
        ));
    }
    let package = p
        .aid("packageAid")?
        .unwrap_or_else(|| lf.package_aid().clone());
    if load && &package != lf.package_aid() {
        return Err(invalid(
            p.field("packageAid"),
            format!(
                "{package} differs from the package AID {} of the uploaded applet, which the \
                 card checks when it loads it",
                lf.package_aid()
            ),
        ));
    }
    let mut cmds = Vec::new();
    if load {
        cmds.push(
            install_for_load(&package, None, &[], &[])
                .map_err(script_err("data.parameters.packageAid"))?,
        );
        let block = max_load_block_size(ctx.max_script_len, format).unwrap_or(255);
        cmds.extend(load_blocks(lf.bytes(), block).map_err(script_err(&id_field))?);
    }
    if install {
        let module = match p.aid("moduleAid")? {
            Some(m) => m,
            None => lf.applet_aids().first().cloned().ok_or_else(|| {
                missing(
                    p.field("moduleAid"),
                    "the uploaded applet declares no applet (a library package); give moduleAid",
                )
            })?,
        };
        let instance = p.aid("instanceAid")?.unwrap_or_else(|| module.clone());
        let privileges = match p.hex("privileges")? {
            None => Privileges::NONE,
            Some(b) => match b.as_slice() {
                [one] => Privileges::Short(*one),
                [a, b2, c] => Privileges::Full([*a, *b2, *c]),
                _ => {
                    return Err(invalid(
                        p.field("privileges"),
                        format!("privileges are 1 or 3 octets, not {}", b.len()),
                    ))
                }
            },
        };
        let mut params = InstallParameters {
            application_specific: p.hex("applicationParameters")?.unwrap_or_default(),
            ..InstallParameters::default()
        };
        if let Some(v) = p.get("toolkit") {
            let t = toolkit_parameters(v, ctx.card_class)?;
            if t.uicc {
                params.uicc_toolkit = Some(t.params);
                params.uicc_access = t.access;
                params.uicc_admin_access = t.admin_access;
            } else {
                params.sim_toolkit = Some(t.params);
            }
        }
        cmds.push(
            install_for_install(
                ctx.gp.version,
                &package,
                &module,
                &instance,
                privileges,
                &params,
                true,
            )
            .map_err(script_err("data.parameters"))?,
        );
    }
    Ok(cmds)
}

fn app_delete(p: &Params<'_>) -> Result<Vec<CApdu>, BuildError> {
    let aid = p
        .aid("aid")?
        .ok_or_else(|| missing(p.field("aid"), "APP_DELETE needs the AID to delete"))?;
    let related = p.bool("related")?.unwrap_or(false);
    Ok(vec![
        delete(&aid, related).map_err(script_err("data.parameters.aid"))?
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plmn_coding() {
        assert_eq!(plmn_bcd("f", "26201").unwrap(), [0x62, 0xF2, 0x10]);
        assert_eq!(plmn_bcd("f", "310410").unwrap(), [0x13, 0x00, 0x14]);
        assert_eq!(
            plmn_bcd("p", "2620").unwrap_err().to_string(),
            "p: \"2620\" is not MCC and MNC (5 or 6 digits)"
        );
        assert!(plmn_bcd("p", "2620A").is_err());
    }

    #[test]
    fn spn_coding() {
        assert_eq!(
            hex::encode_upper(spn_name("f", "OTAGW").unwrap()),
            "4F54414757FFFFFFFFFFFFFFFFFFFFFF"
        );
        // '@' is code 00, '€' escapes to 1B 65.
        assert_eq!(&spn_name("f", "@€").unwrap()[..3], &[0x00, 0x1B, 0x65]);
        // Cyrillic goes to UCS2.
        assert_eq!(
            &spn_name("f", "Мир").unwrap()[..7],
            &[0x80, 0x04, 0x1C, 0x04, 0x38, 0x04, 0x40]
        );
        assert_eq!(
            spn_name("f", "Seventeen chars!!").unwrap_err().to_string(),
            "f: \"Seventeen chars!!\" takes 17 octets in the GSM default alphabet; EF SPN holds 16"
        );
        assert!(spn_name("f", "😀").is_err());
    }

    #[test]
    fn paths() {
        let f = |s: &str, c| parse_path("p", s, &default_df(c));
        assert_eq!(
            f("3F00/7F20/6F46", CardClass::Gsm).unwrap(),
            [0x3F00, 0x7F20, 0x6F46]
        );
        assert_eq!(
            f("6F46", CardClass::Uicc).unwrap(),
            [0x3F00, 0x7FFF, 0x6F46]
        );
        assert_eq!(
            f("/6f46/", CardClass::Gsm).unwrap(),
            [0x3F00, 0x7F20, 0x6F46]
        );
        assert_eq!(
            f("3F00/7F2/6F46", CardClass::Gsm).unwrap_err().to_string(),
            "p: \"7F2\" is not a file id (4 hex digits)"
        );
        assert!(f("", CardClass::Gsm).is_err());
    }

    #[test]
    fn hex_errors() {
        assert_eq!(
            parse_hex("x", "00A").unwrap_err().to_string(),
            "x: odd number of hex digits (3)"
        );
        assert_eq!(
            parse_hex("x", "00 G0").unwrap_err().to_string(),
            "x: 'G' at position 2 is not a hex digit"
        );
        assert_eq!(parse_hex("x", "00 a0").unwrap(), [0x00, 0xA0]);
    }
}
