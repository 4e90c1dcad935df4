//! The OpenAPI description of `data.parameters`, one schema per command type, for generated
//! clients. These types only describe: [`super::build`] reads the parameters (and says the same
//! in its module documentation); a test holds the names here to the names it accepts.

#![allow(dead_code)] // Read by the OpenAPI derive only.

use serde::Deserialize;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use super::CommandType;

// The hex patterns are written out in each field: utoipa takes only string literals there.
// Hex fields allow whitespace between digits, as the builder's `parse_hex` does.

/// `uicc` (command class `00`, TS 102 221) or `gsm` (`A0`, TS 51.011).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CardClassName {
    /// UICC.
    Uicc,
    /// GSM SIM.
    Gsm,
}

/// FILE_UPDATE: SELECT down the path, then UPDATE BINARY or UPDATE RECORD.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileUpdateParameters {
    /// FIDs separated by `/`: `3F00/7F20/6F46` from the MF, or `6F46` relative to the card
    /// class's default DF (ADF USIM `7FFF` for uicc, DF GSM `7F20` for gsm); names an EF.
    #[schema(pattern = r"^\s*/?\s*[0-9A-Fa-f]{4}(\s*/\s*[0-9A-Fa-f]{4})*\s*/?\s*$")]
    pub path: String,
    /// The octets to write, hex (at least one).
    #[schema(pattern = r"^\s*([0-9A-Fa-f]\s*[0-9A-Fa-f]\s*)+$")]
    pub data: String,
    /// Transparent EF: where to write (default 0). Not with `record`.
    #[schema(minimum = 0, maximum = 32767)]
    pub offset: Option<u16>,
    /// Linear fixed EF: the record written (absolute mode); `data` is the whole record, at most
    /// 255 octets. Not with `offset`.
    #[schema(minimum = 1, maximum = 254)]
    pub record: Option<u8>,
    /// Default: the card's class.
    pub card_class: Option<CardClassName>,
}

/// PROFILE_UPDATE: EF SPN, EF PLMNwAcT and EF HPPLMN; at least one of
/// `serviceProviderName`, `spnDisplayCondition`, `plmns`, `hplmnSearchPeriod`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileUpdateParameters {
    /// EF SPN's name, GSM 7-bit default alphabet, at most 16 octets.
    pub service_provider_name: Option<String>,
    /// EF SPN octet 1.
    pub spn_display_condition: Option<u8>,
    /// EF PLMNwAcT: MCC+MNC of 5 or 6 digits, in priority order.
    #[schema(inline)]
    pub plmns: Option<Vec<Plmn>>,
    /// EF HPPLMN: search period, n x 6 minutes (0: no search).
    pub hplmn_search_period: Option<u8>,
    /// Access technology octets of every `plmns` entry (default `C080`); only with `plmns`.
    #[schema(pattern = r"^\s*([0-9A-Fa-f]\s*[0-9A-Fa-f]\s*){2}$")]
    pub access_technology: Option<String>,
    /// Entries EF PLMNwAcT holds on the card (default 8); only with `plmns`.
    #[schema(minimum = 1, maximum = 51)]
    pub plmn_entries: Option<u8>,
    /// Default: the card's class.
    pub card_class: Option<CardClassName>,
}

/// MCC and MNC, 5 or 6 digits.
#[derive(Deserialize, ToSchema)]
#[schema(pattern = r"^[0-9]{5,6}$")]
pub struct Plmn(String);

/// `des` or `aes`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyFamily {
    /// Triple DES keys.
    Des,
    /// AES keys.
    Aes,
}

/// KEY_UPDATE: PUT KEY of a key version's KIc and KID under the KIK; all optional.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyUpdateParameters {
    /// The key version replaced (default: the version securing the command).
    #[schema(minimum = 1, maximum = 15)]
    pub key_version: Option<u8>,
    /// The new KIc, hex (generated when absent).
    #[schema(pattern = r"^\s*([0-9A-Fa-f]\s*[0-9A-Fa-f]\s*)+$")]
    pub kic: Option<String>,
    /// The new KID, hex (generated when absent).
    #[schema(pattern = r"^\s*([0-9A-Fa-f]\s*[0-9A-Fa-f]\s*)+$")]
    pub kid: Option<String>,
    /// The keys' family (default from the key set).
    pub key_type: Option<KeyFamily>,
}

/// `uicc` (tag `EA`) or `sim` (tag `CA` in `EF`).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ToolkitFormat {
    /// UICC toolkit parameters.
    Uicc,
    /// SIM toolkit parameters.
    Sim,
}

/// A menu entry of a toolkit application.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MenuEntryParameters {
    /// Position in the menu.
    pub position: u8,
    /// Item identifier (default 0).
    pub identifier: Option<u8>,
}

/// File access of a toolkit application (UICC format; TS 102 226 8.2.1.3.2.2).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileAccessParameters {
    /// The ADF's AID; absent: the UICC shared file system.
    #[schema(pattern = r"^\s*([0-9A-Fa-f]\s*[0-9A-Fa-f]\s*){5,16}$")]
    pub adf: Option<String>,
    /// Access domain, hex (default `00`, full access).
    #[schema(pattern = r"^\s*([0-9A-Fa-f]\s*[0-9A-Fa-f]\s*)*$")]
    pub access_domain: Option<String>,
    /// Access domain DAP, hex.
    #[schema(pattern = r"^\s*([0-9A-Fa-f]\s*[0-9A-Fa-f]\s*)*$")]
    pub dap: Option<String>,
}

/// Toolkit application parameters (TS 102 226 8.2.1.3.2).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolkitInstallParameters {
    /// Default `uicc` for UICC class cards, `sim` for GSM class.
    pub format: Option<ToolkitFormat>,
    /// Priority (default 1).
    pub priority: Option<u8>,
    /// Timers (default 0).
    pub max_timers: Option<u8>,
    /// Menu text length (default 16).
    pub max_menu_text_length: Option<u8>,
    /// Menu entries.
    pub menu_entries: Option<Vec<MenuEntryParameters>>,
    /// Channels (default 0).
    pub max_channels: Option<u8>,
    /// Minimum security level, hex.
    #[schema(pattern = r"^\s*([0-9A-Fa-f]\s*[0-9A-Fa-f]\s*)*$")]
    pub minimum_security_level: Option<String>,
    /// TARs, 6 hex digits each.
    #[schema(inline)]
    pub tar_values: Option<Vec<TarValue>>,
    /// Services (UICC format only).
    pub max_services: Option<u8>,
    /// Access domain (SIM format only), hex; default `FF`, no file access.
    #[schema(pattern = r"^\s*([0-9A-Fa-f]\s*[0-9A-Fa-f]\s*)*$")]
    pub access_domain: Option<String>,
    /// File access (UICC format only), tag `81`.
    pub file_access: Option<Vec<FileAccessParameters>>,
    /// Administrative file access (UICC format only), tag `82`.
    pub admin_file_access: Option<Vec<FileAccessParameters>>,
}

/// A TAR, 3 octets in hex.
#[derive(Deserialize, ToSchema)]
#[schema(pattern = r"^\s*([0-9A-Fa-f]\s*[0-9A-Fa-f]\s*){3}$")]
pub struct TarValue(String);

/// APP_INSTALL: INSTALL [for load], LOAD, INSTALL [for install and make selectable].
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppInstallParameters {
    /// The uploaded applet (`POST /api/v1/applets`).
    #[schema(min_length = 1)]
    pub applet_id: String,
    /// Load file AID (default the CAP file's package AID).
    #[schema(pattern = r"^\s*([0-9A-Fa-f]\s*[0-9A-Fa-f]\s*){5,16}$")]
    pub package_aid: Option<String>,
    /// Executable module AID (default the CAP file's first applet).
    #[schema(pattern = r"^\s*([0-9A-Fa-f]\s*[0-9A-Fa-f]\s*){5,16}$")]
    pub module_aid: Option<String>,
    /// Instance AID (default the module AID).
    #[schema(pattern = r"^\s*([0-9A-Fa-f]\s*[0-9A-Fa-f]\s*){5,16}$")]
    pub instance_aid: Option<String>,
    /// GP privileges, 1 or 3 octets in hex (default `00`).
    #[schema(
        pattern = r"^\s*([0-9A-Fa-f]\s*[0-9A-Fa-f]\s*){1}$|^\s*([0-9A-Fa-f]\s*[0-9A-Fa-f]\s*){3}$"
    )]
    pub privileges: Option<String>,
    /// The `C9` install parameter, hex.
    #[schema(pattern = r"^\s*([0-9A-Fa-f]\s*[0-9A-Fa-f]\s*)*$")]
    pub application_parameters: Option<String>,
    /// Toolkit application parameters.
    pub toolkit: Option<ToolkitInstallParameters>,
    /// Send INSTALL [for load] and LOAD (default true).
    pub load: Option<bool>,
    /// Send INSTALL [for install and make selectable] (default true).
    pub install: Option<bool>,
}

/// APP_DELETE: DELETE [card content].
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppDeleteParameters {
    /// The AID deleted.
    #[schema(pattern = r"^\s*([0-9A-Fa-f]\s*[0-9A-Fa-f]\s*){5,16}$")]
    pub aid: String,
    /// Also delete related objects (P2 `80`; default false).
    pub related: Option<bool>,
}

/// The schema of a type's `data.parameters` and whether `data.parameters` is required;
/// `None` for RFM and RAM, which take `data.apdus` instead.
pub fn parameters_schema(t: CommandType) -> Option<(String, bool)> {
    let named =
        |name: std::borrow::Cow<'static, str>, required| Some((name.into_owned(), required));
    match t {
        CommandType::Rfm | CommandType::Ram | CommandType::Subscription => None,
        CommandType::FileUpdate => named(FileUpdateParameters::name(), true),
        CommandType::ProfileUpdate => named(ProfileUpdateParameters::name(), true),
        CommandType::KeyUpdate => named(KeyUpdateParameters::name(), false),
        CommandType::AppInstall => named(AppInstallParameters::name(), true),
        CommandType::AppDelete => named(AppDeleteParameters::name(), true),
    }
}

/// Every parameter schema with the ones it refers to, for the document's components.
pub fn components() -> Vec<(String, RefOr<Schema>)> {
    let mut out = Vec::new();
    fn add<T: ToSchema>(out: &mut Vec<(String, RefOr<Schema>)>) {
        out.push((T::name().into_owned(), T::schema()));
        T::schemas(out);
    }
    add::<FileUpdateParameters>(&mut out);
    add::<ProfileUpdateParameters>(&mut out);
    add::<KeyUpdateParameters>(&mut out);
    add::<AppInstallParameters>(&mut out);
    add::<AppDeleteParameters>(&mut out);
    out
}

/// The request's rules per type, as the `oneOf` the document adds to `OtaCommandRequest`:
/// RFM and RAM need `data.apdus` (at least one) and no parameters; the others take their
/// parameters (required where the type needs them) and no `data.apdus`.
pub fn request_variants() -> Schema {
    use utoipa::openapi::schema::{
        ArrayBuilder, ObjectBuilder, OneOfBuilder, Ref, SchemaType, Type,
    };
    // A C-APDU: at least its 4 header octets, in hex.
    let strings = |min: Option<usize>, max: Option<usize>| {
        ArrayBuilder::new()
            .items(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^\s*([0-9A-Fa-f]\s*[0-9A-Fa-f]\s*){4,}$")),
            )
            .min_items(min)
            .max_items(max)
    };
    let mut variants = OneOfBuilder::new();
    for t in CommandType::ALL {
        let of_type = ObjectBuilder::new().schema_type(Type::Object).property(
            "type",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([t.as_str()])),
        );
        let variant = match parameters_schema(t) {
            None => {
                let none = ObjectBuilder::new()
                    .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
                    .max_properties(Some(0));
                let data = ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .property("apdus", strings(Some(1), None))
                    .property("parameters", none)
                    .required("apdus");
                of_type.property("data", data).required("data")
            }
            Some((name, required)) => {
                let mut data = ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .property("parameters", Ref::from_schema_name(name))
                    .property("apdus", strings(None, Some(0)));
                if required {
                    data = data.required("parameters");
                }
                let variant = of_type.property("data", data);
                if required {
                    variant.required("data")
                } else {
                    variant
                }
            }
        };
        variants = variants.item(variant);
    }
    Schema::OneOf(variants.build())
}
