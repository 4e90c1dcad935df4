//! A command's `transport`: a name (`sms`, `catp`, `https`), or the API reference's transport
//! object `{"type": "SMS" | "CAT_TP" | "BIP", "security": {...}, "parameters": {...}}`.
//!
//! The object's `type` maps onto this gateway's transports: `SMS` is `sms` (SCP80 over SMS-PP),
//! `CAT_TP` is `catp` (SCP80 over CAT_TP, which the handset carries over a BIP UDP channel) and
//! `BIP` is `https` (SCP81: the card opens a BIP TCP channel to the gateway's admin server
//! after an SMS trigger). CAT_TP has its own type, so BIP names the other transport that runs
//! over BIP, the TCP one.
//!
//! `security` states what the caller expects of the command's SPI; a flag that disagrees with
//! the SPI is refused (the SPI decides how the packet is secured, the flags only check it).
//! `parameters` override the gateway's settings for this command: `timeout` (seconds waited
//! for the PoR after each send, or for the card's HTTPS session after each trigger),
//! `retries` (resends after the first send) and `priority` (0 BULK, 1 NORMAL, 2 URGENT).

use std::fmt;
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::FieldError;
use super::Priority;
use crate::security::spi::{CounterMode, Integrity, Spi};

/// The transports a command (or a profile's default) may name.
pub const TRANSPORTS: [&str; 3] = ["sms", "catp", "https"];

/// Shortest per-command timeout, seconds.
pub const MIN_TIMEOUT_SECS: f64 = 1.0;
/// Longest per-command timeout, seconds (an hour: a PoR later than that is not waited for).
pub const MAX_TIMEOUT_SECS: f64 = 3600.0;
/// Most resends a command may ask for (as a batch's `maxRetries`).
pub const MAX_RETRIES: u32 = 20;

/// The `transport` of a command.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TransportChoice {
    /// `sms`, `catp` or `https`.
    Name(String),
    /// The API reference's object.
    Spec(TransportSpec),
}

// By hand rather than `untagged`: an untagged enum reports "did not match any variant" at
// `transport`, where this keeps the path of the field at fault (`transport.parameters.timeout`).
impl<'de> Deserialize<'de> for TransportChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ChoiceVisitor;
        impl<'de> Visitor<'de> for ChoiceVisitor {
            type Value = TransportChoice;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a transport name (sms, catp, https) or a transport object")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TransportChoice::Name(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                TransportSpec::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(TransportChoice::Spec)
            }
        }
        d.deserialize_any(ChoiceVisitor)
    }
}

impl From<String> for TransportChoice {
    fn from(name: String) -> Self {
        Self::Name(name)
    }
}

/// The API reference's transport object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransportSpec {
    /// `SMS` (SCP80 over SMS-PP: transport `sms`), `CAT_TP` (SCP80 over CAT_TP, carried by a
    /// BIP UDP channel: `catp`) or `BIP` (SCP81, HTTPS over a BIP TCP channel the card opens
    /// after an SMS trigger: `https`). CAT_TP and BIP need `[catp]` / `[https]` on the
    /// gateway.
    #[serde(rename = "type")]
    #[schema(value_type = TransportType)]
    pub kind: String,
    /// What the command's SPI must do; a flag that disagrees with the SPI is refused (422).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<TransportSecurity>,
    /// This command's timeout, retries and priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<TransportParameters>,
}

/// The transport object's types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransportType {
    /// SCP80 over SMS-PP (`sms`).
    Sms,
    /// SCP80 over CAT_TP, on a BIP UDP channel (`catp`).
    CatTp,
    /// SCP81 (HTTPS) on a BIP TCP channel (`https`).
    Bip,
}

impl TransportType {
    /// The transport of this gateway it names.
    pub fn transport(self) -> &'static str {
        match self {
            Self::Sms => "sms",
            Self::CatTp => "catp",
            Self::Bip => "https",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "SMS" => Some(Self::Sms),
            "CAT_TP" => Some(Self::CatTp),
            "BIP" => Some(Self::Bip),
            _ => None,
        }
    }
}

/// What the caller expects of the SPI. An absent flag is not checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransportSecurity {
    /// The command packet is ciphered (SPI first octet, b3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<bool>,
    /// The command packet carries a cryptographic checksum or a digital signature (SPI first
    /// octet b2b1 = 10 or 11; a redundancy check, 01, is not signing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<bool>,
    /// The card checks the counter against replay (SPI first octet b5b4 = 10 or 11; 01 carries
    /// a counter the card does not check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter: Option<bool>,
}

/// This command's own settings, over the gateway's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransportParameters {
    /// Seconds the gateway waits for the PoR after each send (HTTPS: for the card's session
    /// after each trigger), 1 to 3600; default the gateway's `por_timeout_secs`. A command
    /// that ends on its delivery report waits this long for the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 3600, example = 30)]
    pub timeout: Option<f64>,
    /// Resends after the first send when no PoR comes or the network fails transiently, 0
    /// to 20 (0: sent once); default the gateway's policy (a batch's `maxRetries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 20, example = 2)]
    pub retries: Option<f64>,
    /// 0 = BULK, 1 = NORMAL, 2 = URGENT: higher goes first, as the `priority` classes. Given
    /// with a top-level `priority` too, this one applies (the more specific setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 2, example = 1)]
    pub priority: Option<f64>,
}

/// What a command's `transport` asks for, checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TransportRequest {
    /// The transport named (`sms`, `catp`, `https`), if any.
    pub name: Option<String>,
    /// The field that named it (`transport` or `transport.type`), for errors.
    pub field: &'static str,
    /// Wait for the PoR after each send.
    pub timeout: Option<Duration>,
    /// Resends allowed.
    pub retries: Option<u32>,
    /// Priority class.
    pub priority: Option<Priority>,
}

/// A whole number in `0..=max`, or an error naming `field` (`2.0` is 2: JSON does not tell
/// integers from other numbers).
fn whole(field: &str, v: f64, max: u32) -> Result<u32, FieldError> {
    if v.fract() != 0.0 || !(0.0..=f64::from(max)).contains(&v) {
        return Err(FieldError::new(
            field,
            format!("{v} must be a whole number from 0 to {max}"),
        ));
    }
    Ok(v as u32)
}

impl TransportChoice {
    /// The request this is, with its values in range (the name of the string form is checked
    /// against the gateway's transports by the API).
    pub fn check(&self) -> Result<TransportRequest, FieldError> {
        let spec = match self {
            Self::Name(name) => {
                return Ok(TransportRequest {
                    name: Some(name.clone()),
                    field: "transport",
                    ..Default::default()
                })
            }
            Self::Spec(spec) => spec,
        };
        let kind = TransportType::parse(&spec.kind).ok_or_else(|| {
            FieldError::new(
                "transport.type",
                format!(
                    "{:?} is not a transport type: one of SMS, CAT_TP, BIP",
                    spec.kind
                ),
            )
        })?;
        let mut out = TransportRequest {
            name: Some(kind.transport().to_string()),
            field: "transport.type",
            ..Default::default()
        };
        if let Some(p) = &spec.parameters {
            if let Some(t) = p.timeout {
                if !(MIN_TIMEOUT_SECS..=MAX_TIMEOUT_SECS).contains(&t) {
                    return Err(FieldError::new(
                        "transport.parameters.timeout",
                        format!(
                            "{t} s: the timeout is {MIN_TIMEOUT_SECS} to {MAX_TIMEOUT_SECS} seconds"
                        ),
                    ));
                }
                out.timeout = Some(Duration::from_secs_f64(t));
            }
            if let Some(r) = p.retries {
                out.retries = Some(whole("transport.parameters.retries", r, MAX_RETRIES)?);
            }
            if let Some(p) = p.priority {
                let rank = whole("transport.parameters.priority", p, 2)?;
                out.priority = Some(Priority::from_rank(i64::from(rank)));
            }
        }
        Ok(out)
    }

    /// Refuses `security` flags the SPI does not honour, naming the flag.
    pub fn check_security(&self, spi: &Spi) -> Result<(), FieldError> {
        let Self::Spec(TransportSpec {
            security: Some(s), ..
        }) = self
        else {
            return Ok(());
        };
        let spi_hex = hex::encode_upper(spi.to_bytes());
        let signs = matches!(spi.integrity, Integrity::Cc | Integrity::Ds);
        let checks_counter = matches!(
            spi.counter,
            CounterMode::MustBeHigher | CounterMode::MustBeOneHigher
        );
        let flags = [
            (
                "encryption",
                s.encryption,
                spi.ciphered,
                "ciphering (first octet b3)",
            ),
            (
                "signing",
                s.signing,
                signs,
                "a cryptographic checksum or signature (first octet b2b1 = 10 or 11)",
            ),
            (
                "counter",
                s.counter,
                checks_counter,
                "counter checking (first octet b5b4 = 10 or 11)",
            ),
        ];
        for (name, wanted, has, what) in flags {
            let Some(wanted) = wanted else { continue };
            if wanted != has {
                let field = format!("transport.security.{name}");
                return Err(FieldError::new(
                    &field,
                    format!(
                        "{name} is {wanted}, but SPI {spi_hex} asks for {}{what}",
                        if has { "" } else { "no " }
                    ),
                )
                .with_detail("requested", wanted)
                .with_detail("spi", spi_hex.clone())
                .with_detail("spiHas", has));
            }
        }
        Ok(())
    }
}

/// This command's own timeout, retries and priority as its stored request gives them (none
/// when it gives none, or gives them in a form the API would have refused).
pub fn stored_overrides(request: &serde_json::Value) -> TransportRequest {
    request
        .get("transport")
        .and_then(|t| TransportChoice::deserialize(t).ok())
        .and_then(|t| t.check().ok())
        .unwrap_or_default()
}

// The OpenAPI schema of `transport`: one of the names, or the object.
impl utoipa::PartialSchema for TransportChoice {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, SchemaType, Type};
        use utoipa::openapi::Ref;
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::Type(Type::String))
                    .enum_values(Some(TRANSPORTS))
                    .description(Some(
                        "A transport by name: sms (SCP80 over SMS-PP), catp (SCP80 over \
                         CAT_TP), https (SCP81).",
                    )),
            )
            .item(Ref::from_schema_name("TransportSpec"))
            .description(Some(
                "Preferred transport: a name, or the transport object (type SMS, CAT_TP or BIP \
                 with security expectations and this command's timeout, retries and \
                 priority). Default: the card's profile's transport when offered, else sms.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for TransportChoice {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            "TransportSpec".into(),
            <TransportSpec as utoipa::PartialSchema>::schema(),
        ));
        <TransportSpec as utoipa::ToSchema>::schemas(schemas);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<TransportChoice, String> {
        let text = v.to_string();
        let mut de = serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| e.path().to_string())
    }

    #[test]
    fn names_and_objects_parse_and_map() {
        assert_eq!(
            parse(json!("catp")),
            Ok(TransportChoice::Name("catp".into()))
        );
        let t = parse(
            json!({"type": "BIP", "parameters": {"timeout": 5, "retries": 0.0, "priority": 2}}),
        );
        let checked = t.map(|t| t.check());
        let Ok(Ok(c)) = checked else {
            panic!("{checked:?}");
        };
        assert_eq!(c.name.as_deref(), Some("https"));
        assert_eq!(c.field, "transport.type");
        assert_eq!(c.timeout, Some(Duration::from_secs(5)));
        assert_eq!(c.retries, Some(0));
        assert_eq!(c.priority, Some(Priority::Urgent));
    }

    #[test]
    fn a_wrong_type_inside_the_object_is_named_by_its_path() {
        assert_eq!(
            parse(json!({"type": "SMS", "parameters": {"timeout": "soon"}})),
            Err("parameters.timeout".into())
        );
        assert_eq!(
            parse(json!({"type": "SMS", "speed": 1})),
            Err("speed".into())
        );
    }

    #[test]
    fn values_out_of_range_name_their_field() {
        let field =
            |v: serde_json::Value| parse(v).ok().and_then(|t| t.check().err()).map(|e| e.field);
        assert_eq!(
            field(json!({"type": "sms"})).as_deref(),
            Some("transport.type")
        );
        for (p, name) in [
            (json!({"timeout": 0.5}), "timeout"),
            (json!({"timeout": 3601}), "timeout"),
            (json!({"retries": 21}), "retries"),
            (json!({"retries": 1.5}), "retries"),
            (json!({"retries": -1}), "retries"),
            (json!({"priority": 3}), "priority"),
        ] {
            assert_eq!(
                field(json!({"type": "SMS", "parameters": p})),
                Some(format!("transport.parameters.{name}"))
            );
        }
    }

    #[test]
    fn security_flags_must_agree_with_the_spi() {
        // 16 21: CC, ciphered, counter must be higher; PoR required.
        let spi = Spi::from_bytes([0x16, 0x21]);
        let with = |s: serde_json::Value| {
            parse(json!({"type": "SMS", "security": s}))
                .ok()
                .map(|t| t.check_security(&spi).map_err(|e| e.field))
        };
        assert_eq!(
            with(json!({"encryption": true, "signing": true, "counter": true})),
            Some(Ok(()))
        );
        assert_eq!(
            with(json!({"encryption": false})),
            Some(Err("transport.security.encryption".into()))
        );
        // 01 00: a redundancy check only, no counter.
        let rc = Spi::from_bytes([0x01, 0x00]);
        let t = parse(json!({"type": "SMS", "security": {"signing": true}}));
        let err = t.ok().and_then(|t| t.check_security(&rc).err());
        assert_eq!(
            err.as_ref().map(|e| e.field.as_str()),
            Some("transport.security.signing")
        );
        assert_eq!(
            err.map(|e| e.details.get("spi").cloned()),
            Some(Some(json!("0100")))
        );
    }
}
