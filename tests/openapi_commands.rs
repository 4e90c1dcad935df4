//! The OpenAPI document describes each command type's `data` as the builder reads it: the
//! parameter names per type are the builder's, and requests are judged by an independent JSON
//! Schema validator (the `jsonschema` crate) as the builder judges them, for the examples the
//! builder's documentation gives and for requests it refuses.

use std::collections::BTreeSet;

use otagw::command::build::{parameter_names, toolkit_parameter_names};
use otagw::command::CommandType;
use serde_json::{json, Value};
use utoipa::OpenApi;

fn document() -> Value {
    serde_json::to_value(otagw::api::openapi::ApiDoc::openapi()).expect("document")
}

fn names(schema: &Value) -> BTreeSet<String> {
    schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn every_types_parameters_are_the_builders() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    let variants = schemas["OtaCommandRequest"]["allOf"][1]["oneOf"]
        .as_array()
        .expect("OtaCommandRequest is allOf [fields, oneOf per type]");
    assert_eq!(variants.len(), CommandType::ALL.len());
    for t in CommandType::ALL {
        let variant = variants
            .iter()
            .find(|v| v["properties"]["type"]["enum"] == json!([t.as_str()]))
            .unwrap_or_else(|| panic!("no variant for {t}"));
        let expected: BTreeSet<String> = parameter_names(t).iter().map(|s| s.to_string()).collect();
        let documented =
            match variant["properties"]["data"]["properties"]["parameters"]["$ref"].as_str() {
                Some(r) => names(&schemas[r.rsplit('/').next().expect("name")]),
                None => BTreeSet::new(),
            };
        assert_eq!(documented, expected, "{t}: documented vs built parameters");
    }
    let toolkit: BTreeSet<String> = toolkit_parameter_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names(&schemas["ToolkitInstallParameters"]), toolkit);
}

fn request(t: &str, data: Value) -> Value {
    json!({
        "type": t,
        "target": {"iccid": "8949000000000000001"},
        "security": {"spi": "1621", "kic": "12", "kid": "12", "tar": "B00010"},
        "data": data,
    })
}

#[test]
fn requests_are_judged_as_the_builder_judges_them() {
    let doc = document();
    let schema = json!({
        "$ref": "#/components/schemas/OtaCommandRequest",
        "components": doc["components"],
    });
    let validator = jsonschema::validator_for(&schema).expect("the document's schema compiles");
    // The builder documentation's examples (src/command/build.rs).
    let valid = [
        request(
            "RFM",
            json!({"apdus": ["00A40004023F00", "00A40004027F20", "00B0000009"], "format": "expanded"}),
        ),
        request("RAM", json!({"apdus": ["80F21000024F00"]})),
        request(
            "FILE_UPDATE",
            json!({"parameters": {"path": "3F00/7F20/6F46", "data": "014F54414757FFFFFFFFFFFFFFFFFFFFFF", "cardClass": "gsm"}}),
        ),
        request(
            "PROFILE_UPDATE",
            json!({"parameters": {"serviceProviderName": "OTAGW", "spnDisplayCondition": 1, "plmns": ["26201", "310410"]}}),
        ),
        request("KEY_UPDATE", json!({"parameters": {"keyVersion": 1}})),
        json!({"type": "KEY_UPDATE", "target": {"iccid": "8949000000000000001"},
            "security": {"spi": "1621", "kic": "12", "kid": "12", "tar": "000000"}}),
        request(
            "APP_INSTALL",
            json!({"parameters": {"appletId": "a1b2", "instanceAid": "F0010203040502", "toolkit": {"tarValues": ["C00001"], "fileAccess": [{"accessDomain": "00"}]}}}),
        ),
        request(
            "APP_DELETE",
            json!({"parameters": {"aid": "F00102030405", "related": true}}),
        ),
    ];
    for r in &valid {
        let errors: Vec<String> = validator.iter_errors(r).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{r}\nrefused: {errors:?}");
    }
    // What the builder refuses (each one's BuildError is tested in tests/command_build.rs).
    let invalid = [
        ("RAM without C-APDUs", request("RAM", json!({}))),
        (
            "RFM with parameters",
            request(
                "RFM",
                json!({"apdus": ["00B0000009"], "parameters": {"path": "6F46"}}),
            ),
        ),
        (
            "FILE_UPDATE without a path",
            request("FILE_UPDATE", json!({"parameters": {"data": "00"}})),
        ),
        (
            "FILE_UPDATE with a 3-digit FID",
            request(
                "FILE_UPDATE",
                json!({"parameters": {"path": "3F00/7F2", "data": "00"}}),
            ),
        ),
        (
            "FILE_UPDATE with C-APDUs",
            request(
                "FILE_UPDATE",
                json!({"apdus": ["00B0000009"], "parameters": {"path": "6F46", "data": "00"}}),
            ),
        ),
        (
            "KEY_UPDATE of version 16",
            request("KEY_UPDATE", json!({"parameters": {"keyVersion": 16}})),
        ),
        (
            "APP_DELETE of a 4-octet AID",
            request("APP_DELETE", json!({"parameters": {"aid": "F0010203"}})),
        ),
        (
            "APP_DELETE with an unknown parameter",
            request(
                "APP_DELETE",
                json!({"parameters": {"aid": "F00102030405", "force": true}}),
            ),
        ),
        (
            "APP_INSTALL without an applet",
            request(
                "APP_INSTALL",
                json!({"parameters": {"instanceAid": "F0010203040502"}}),
            ),
        ),
        (
            "PROFILE_UPDATE with a 4-digit PLMN",
            request("PROFILE_UPDATE", json!({"parameters": {"plmns": ["2620"]}})),
        ),
        (
            "a toolkit TAR of 2 octets",
            request(
                "APP_INSTALL",
                json!({"parameters": {"appletId": "a", "toolkit": {"tarValues": ["C000"]}}}),
            ),
        ),
    ];
    for (what, r) in &invalid {
        assert!(!validator.is_valid(r), "{what}: the document accepts {r}");
    }
}

/// A key set's algorithm fields list the algorithms' own names (and null).
#[test]
fn key_set_algorithm_names_are_the_algorithms() {
    use otagw::security::{CipherAlgorithm, IntegrityAlgorithm};
    let doc = document();
    let props = &doc["components"]["schemas"]["KeySetInput"]["properties"];
    let names = |field: &str| -> Vec<Value> {
        props[field]["enum"].as_array().cloned().unwrap_or_default()
    };
    let mut cipher: Vec<Value> = CipherAlgorithm::ALL
        .iter()
        .map(|a| json!(a.name()))
        .collect();
    cipher.push(Value::Null);
    let mut integrity: Vec<Value> = IntegrityAlgorithm::ALL
        .iter()
        .map(|a| json!(a.name()))
        .collect();
    integrity.push(Value::Null);
    assert_eq!(names("kicAlgorithm"), cipher);
    assert_eq!(names("kidAlgorithm"), integrity);
}
