//! `command::build` end to end: an `OtaCommandRequest` is built into a script, the script runs
//! on a virtual UICC (directly on the applet behind the TAR, or in full SCP80 packets for
//! KEY_UPDATE), and the card's state shows the effect. Then one test per class of
//! `BuildError`, each naming its field.

use std::io::{Cursor, Write};

use otagw::command::build::{build_script, BuildContext, BuildError, BuiltScript, GpProfile};
use otagw::command::OtaCommandRequest;
use otagw::script::gp::{KcvFill, PutKeyResponse};
use otagw::script::{
    parse_command_script, parse_compact_response, parse_expanded_response, CardClass, FileAccess,
    GpVersion, ScriptFormat,
};
use otagw::security::command::encode_command_packet;
use otagw::security::{
    CcScope, CipherAlgorithm, CommandHeader, Counter, IntegrityAlgorithm, KeyConfig, KeyIdentifier,
    PorStatus, ResponsePacketView, Scp80Keys, Spi, Tar,
};
use otagw::sim::{CardPolicy, KeySet, VirtualCard, TAR_RAM_ISD, TAR_RFM_GSM, TAR_RFM_USIM};
use otagw::store::{KeyMaterial, KeySetRecord};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};

const KIC: &str = "F09C43EE1A0391665CC9F05AF4E0BD10";
const KID: &str = "01981F4A20999F62AF99988107BAF6CA";
const KIK: &str = "404142434445464748494A4B4C4D4E4F";

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.split_whitespace().collect::<String>()).unwrap()
}

fn request(command_type: &str, kic: &str, data: Value) -> OtaCommandRequest {
    serde_json::from_value(json!({
        "type": command_type,
        "target": {"iccid": "8949000000000000001"},
        "security": {"spi": "1621", "kic": kic, "kid": kic, "tar": "B00010"},
        "data": data,
    }))
    .unwrap()
}

fn record(version: u8, kic: &str, kid: &str, kik: Option<&str>) -> KeySetRecord {
    KeySetRecord {
        version,
        kic_algorithm: None,
        kid_algorithm: None,
        keys: KeyMaterial {
            kic: h(kic),
            kid: h(kid),
            kik: kik.map(h),
        },
        counter: 5,
        rotated_at: None,
    }
}

fn card() -> VirtualCard {
    VirtualCard::new("8949000000000000001", "262011234567890", "491700000001")
        .unwrap()
        .with_key_set(
            KeySet::new(1, &h(KIC), &h(KID))
                .unwrap()
                .with_kik(&h(KIK))
                .unwrap()
                .with_counter(Counter::new(5).unwrap()),
        )
}

struct Ctx {
    key_set: KeySetRecord,
    class: CardClass,
    applet: Option<Vec<u8>>,
    max: usize,
    gp: GpProfile,
}

impl Ctx {
    fn new() -> Self {
        Ctx {
            key_set: record(1, KIC, KID, Some(KIK)),
            class: CardClass::Uicc,
            applet: None,
            max: 2000,
            gp: GpProfile::default(),
        }
    }

    fn build(&self, req: &OtaCommandRequest) -> Result<BuiltScript, BuildError> {
        let ctx = BuildContext {
            card_class: self.class,
            key_set: &self.key_set,
            applet: self.applet.as_deref(),
            max_script_len: self.max,
            gp: self.gp,
        };
        build_script(req, &ctx, &mut StdRng::seed_from_u64(7))
    }
}

/// Last status word of a compact or expanded script response.
fn last_sw(response: &[u8]) -> u16 {
    let parsed = match response.first() {
        Some(0xAB | 0xAF) => parse_expanded_response(response),
        _ => parse_compact_response(response),
    };
    parsed.unwrap().last().unwrap().sw
}

#[test]
fn rfm_apdus_compact_and_expanded() {
    for format in ["compact", "expanded", "expanded-indefinite"] {
        let req = request(
            "RFM",
            "15",
            json!({
                "apdus": ["A0A40000023F00", "A0 A4 00 00 02 7F20", "A0A40000026F46", "A0D6000006 004F54414757"],
                "format": format,
            }),
        );
        let built = Ctx::new().build(&req).unwrap();
        assert_eq!(built.command_count, 4);
        assert_eq!(built.new_keys, None);
        assert_eq!(built.format == ScriptFormat::Compact, format == "compact");
        let mut card = card();
        let response = card.run_script(TAR_RFM_GSM, &built.script).unwrap();
        assert_eq!(last_sw(&response), 0x9000, "{format}");
        assert_eq!(
            &card.read_file(&[0x7F20, 0x6F46]).unwrap()[..6],
            b"\x00OTAGW"
        );
    }
}

#[test]
fn ram_apdus() {
    // GET STATUS of the applications on an empty registry: 6A88, in both formats.
    for format in ["compact", "expanded"] {
        let req = request(
            "RAM",
            "15",
            json!({"apdus": ["80F24002024F0000"], "format": format}),
        );
        let built = Ctx::new().build(&req).unwrap();
        let response = card().run_script(TAR_RAM_ISD, &built.script).unwrap();
        assert_eq!(last_sw(&response), 0x6A88);
    }
}

#[test]
fn file_update_binary_and_record() {
    // Relative path in the UICC class: under the ADF USIM.
    let req = request(
        "FILE_UPDATE",
        "15",
        json!({"parameters": {"path": "6F46", "data": "02414243", "offset": 0}}),
    );
    let built = Ctx::new().build(&req).unwrap();
    let script = parse_command_script(&built.script, ScriptFormat::Compact).unwrap();
    let hexes: Vec<String> = script.commands().map(|c| c.to_string()).collect();
    assert_eq!(
        hexes,
        [
            "00A40004023F00",
            "00A40004027FFF",
            "00A40004026F46",
            "00D600000402414243"
        ]
    );
    let mut card = card();
    let response = card.run_script(TAR_RFM_USIM, &built.script).unwrap();
    assert_eq!(last_sw(&response), 0x9000);
    assert_eq!(&card.read_file(&[0x7FFF, 0x6F46]).unwrap()[..4], b"\x02ABC");

    // An offset, in the GSM class, absolute path.
    let req = request(
        "FILE_UPDATE",
        "15",
        json!({"parameters": {"path": "3F00/7F20/6F46", "data": "5A5A", "offset": 3, "cardClass": "gsm"}}),
    );
    let built = Ctx::new().build(&req).unwrap();
    let response = card.run_script(TAR_RFM_GSM, &built.script).unwrap();
    assert_eq!(last_sw(&response), 0x9000);
    assert_eq!(
        &card.read_file(&[0x7F20, 0x6F46]).unwrap()[..6],
        b"\x02ABZZu"
    );

    // A record of EF ADN (linear fixed, 28 octets), expanded format.
    let rec: String = "41".repeat(28);
    let req = request(
        "FILE_UPDATE",
        "15",
        json!({"parameters": {"path": "3F00/7F10/6F3A", "data": rec, "record": 2}, "format": "expanded"}),
    );
    let built = Ctx::new().build(&req).unwrap();
    let response = card.run_script(TAR_RFM_GSM, &built.script).unwrap();
    assert_eq!(last_sw(&response), 0x9000);
    let adn = card.read_file(&[0x7F10, 0x6F3A]).unwrap();
    assert_eq!(&adn[28..56], &[0x41; 28][..]);
    assert_eq!(&adn[..28], &[0xFF; 28][..]);

    // More than 255 octets: several UPDATE BINARY (the card refuses past the file's end).
    let req = request(
        "FILE_UPDATE",
        "15",
        json!({"parameters": {"path": "6F46", "data": "00".repeat(300)}}),
    );
    let built = Ctx::new().build(&req).unwrap();
    assert_eq!(built.command_count, 5);
    let script = parse_command_script(&built.script, ScriptFormat::Compact).unwrap();
    let last: Vec<_> = script
        .commands()
        .skip(3)
        .map(|c| (c.p1(), c.p2(), c.data().len()))
        .collect();
    assert_eq!(last, [(0x00, 0x00, 255), (0x00, 0xFF, 45)]);
}

/// TS 24.008 BCD PLMN back to "MCCMNC".
fn plmn_text(b: &[u8]) -> String {
    let d = [
        b[0] & 0x0F,
        b[0] >> 4,
        b[1] & 0x0F,
        b[2] & 0x0F,
        b[2] >> 4,
        b[1] >> 4,
    ];
    d.iter()
        .filter(|&&x| x != 0x0F)
        .map(|x| char::from(b'0' + x))
        .collect()
}

#[test]
fn profile_update_spn_plmns_hpplmn() {
    for (class, tar, df) in [("uicc", TAR_RFM_USIM, 0x7FFF), ("gsm", TAR_RFM_GSM, 0x7F20)] {
        let req = request(
            "PROFILE_UPDATE",
            "15",
            json!({"parameters": {
                "serviceProviderName": "OTA Gateway",
                "spnDisplayCondition": 2,
                "plmns": ["26201", "310410"],
                "hplmnSearchPeriod": 10,
                "cardClass": class,
            }}),
        );
        let built = Ctx::new().build(&req).unwrap();
        let mut card = card();
        let response = card.run_script(tar, &built.script).unwrap();
        assert_eq!(last_sw(&response), 0x9000, "{class}");
        // EF SPN: display condition, then the name in the GSM default alphabet, FF-padded.
        let spn = card.read_file(&[df, 0x6F46]).unwrap();
        assert_eq!(spn.len(), 17);
        assert_eq!(spn[0], 2);
        let name: Vec<u8> = spn[1..]
            .iter()
            .copied()
            .take_while(|&b| b != 0xFF)
            .collect();
        assert_eq!(String::from_utf8(name).unwrap(), "OTA Gateway");
        // EF PLMNwAcT: the two PLMNs with access technologies C080, then unused entries.
        let plmn = card.read_file(&[df, 0x6F60]).unwrap();
        assert_eq!(plmn.len(), 40);
        let entries: Vec<(String, String)> = plmn
            .chunks(5)
            .filter(|e| e[..3] != [0xFF; 3])
            .map(|e| (plmn_text(&e[..3]), hex::encode_upper(&e[3..])))
            .collect();
        assert_eq!(
            entries,
            [
                ("26201".to_string(), "C080".to_string()),
                ("310410".to_string(), "C080".to_string())
            ]
        );
        assert_eq!(hex::encode_upper(&plmn[10..15]), "FFFFFF0000");
        assert_eq!(card.read_file(&[df, 0x6F31]).unwrap(), [10]);
        // DF GSM and ADF USIM share these files.
        let other = if df == 0x7FFF { 0x7F20 } else { 0x7FFF };
        assert_eq!(card.read_file(&[other, 0x6F46]).unwrap(), spn);
    }

    // A name alone keeps the display condition; UCS2 for non-GSM characters.
    let mut card = card();
    let req = request(
        "PROFILE_UPDATE",
        "15",
        json!({"parameters": {"serviceProviderName": "Мир"}}),
    );
    let built = Ctx::new().build(&req).unwrap();
    card.run_script(TAR_RFM_USIM, &built.script).unwrap();
    let spn = card.read_file(&[0x7FFF, 0x6F46]).unwrap();
    assert_eq!(hex::encode_upper(&spn[..8]), "0180041C04380440");
    assert_eq!(spn[8..], [0xFF; 9]);
}

/// The test package of the sim and script tests, as a CAP zip and as an IJC load file.
const COMPONENTS: [(&str, &str); 9] = [
    ("Header", "01 0010 DECAFFED 01 02 04 00 01 06 F00102030405"),
    ("Directory", "02 0003 AABBCC"),
    ("Import", "04 0001 00"),
    ("Applet", "03 000B 01 07 F0010203040501 002A"),
    ("Class", "06 0002 1111"),
    ("Method", "07 0003 222222"),
    ("StaticField", "08 0001 33"),
    ("ConstantPool", "05 0002 4444"),
    ("RefLocation", "09 0001 55"),
];

fn cap_zip() -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    for (name, bytes) in COMPONENTS {
        w.start_file(format!("com/example/hello/javacard/{name}.cap"), opts)
            .unwrap();
        w.write_all(&h(bytes)).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn ijc() -> Vec<u8> {
    COMPONENTS.iter().flat_map(|(_, b)| h(b)).collect()
}

#[test]
fn app_install_then_delete() {
    for (applet, format) in [(cap_zip(), "compact"), (ijc(), "expanded")] {
        let mut ctx = Ctx::new();
        ctx.applet = Some(applet);
        ctx.max = 200;
        let req = request(
            "APP_INSTALL",
            "15",
            json!({
                "parameters": {
                    "appletId": "hello-1",
                    "instanceAid": "F001020304050102",
                    "privileges": "00",
                    "applicationParameters": "AB",
                    "toolkit": {"tarValues": ["C00001"], "menuEntries": [{"position": 1}], "maxServices": 1},
                },
                "format": format,
            }),
        );
        let built = ctx.build(&req).unwrap();
        assert!(built.script.len() <= 200, "{}", built.script.len());
        let mut card = card();
        let response = card.run_script(TAR_RAM_ISD, &built.script).unwrap();
        assert_eq!(last_sw(&response), 0x9000, "{format}");
        let reg = card.registry();
        assert_eq!(reg.load_files().len(), 1);
        assert_eq!(reg.load_files()[0].aid.to_string(), "F00102030405");
        let app = reg.applet(&h("F001020304050102")).unwrap();
        assert_eq!(app.module.to_string(), "F0010203040501");
        assert_eq!(app.parameters.application_specific, [0xAB]);
        let toolkit = app.parameters.uicc_toolkit.as_ref().unwrap();
        assert_eq!(toolkit.tar_values, [[0xC0, 0x00, 0x01]]);
        assert_eq!((toolkit.priority, toolkit.max_services), (1, 1));
        assert_eq!(toolkit.menu_entries.len(), 1);

        // A second instance, install only (the package is there).
        let req = request(
            "APP_INSTALL",
            "15",
            json!({"parameters": {"appletId": "hello-1", "load": false, "instanceAid": "F001020304050103"}}),
        );
        let built = ctx.build(&req).unwrap();
        assert_eq!(built.command_count, 1);
        let response = card.run_script(TAR_RAM_ISD, &built.script).unwrap();
        assert_eq!(last_sw(&response), 0x9000);
        assert_eq!(card.registry().applets().len(), 2);

        // Delete one instance, then the package with its remaining instance.
        let del = |aid: &str, related: bool| {
            request(
                "APP_DELETE",
                "15",
                json!({"parameters": {"aid": aid, "related": related}}),
            )
        };
        let built = ctx.build(&del("F001020304050103", false)).unwrap();
        let response = card.run_script(TAR_RAM_ISD, &built.script).unwrap();
        assert_eq!(last_sw(&response), 0x9000);
        assert!(card.registry().applet(&h("F001020304050103")).is_none());
        assert_eq!(card.registry().applets().len(), 1);
        let built = ctx.build(&del("F00102030405", true)).unwrap();
        let response = card.run_script(TAR_RAM_ISD, &built.script).unwrap();
        assert_eq!(last_sw(&response), 0x9000);
        assert!(card.registry().applets().is_empty());
        assert!(card.registry().load_files().is_empty());
    }
}

/// SPI 16 21: CC, ciphered, counter higher; PoR always by SMS-SUBMIT, unprotected.
const SPI: [u8; 2] = [0x16, 0x21];

fn packet(
    kic: u8,
    kic_key: &[u8],
    kid_key: &[u8],
    counter: u64,
    tar: Tar,
    script: &[u8],
) -> Vec<u8> {
    let spi = Spi::from_bytes(SPI);
    let cfg = KeyConfig {
        kic_key: Some(kic_key),
        kid_key: Some(kid_key),
        ..KeyConfig::default()
    };
    let keys = Scp80Keys::resolve(&spi, kic, kic, &cfg).unwrap();
    let header = CommandHeader {
        spi,
        kic: KeyIdentifier(kic),
        kid: KeyIdentifier(kic),
        tar,
        counter: Counter::new(counter).unwrap(),
    };
    encode_command_packet(&header, &keys, script).unwrap()
}

#[test]
fn key_update_over_scp80_3des_and_aes() {
    let aes_kic = "000102030405060708090A0B0C0D0E0F";
    let aes_kid = "101112131415161718191A1B1C1D1E1F";
    let aes_kik = "202122232425262728292A2B2C2D2E2F";
    for (coding, kic, kid, kik, algorithms) in [
        (0x15u8, KIC, KID, KIK, None),
        (
            0x12,
            aes_kic,
            aes_kid,
            aes_kik,
            Some((CipherAlgorithm::AesCbc, IntegrityAlgorithm::AesCmac)),
        ),
    ] {
        let mut set = KeySet::new(1, &h(kic), &h(kid))
            .unwrap()
            .with_kik(&h(kik))
            .unwrap()
            .with_counter(Counter::new(5).unwrap());
        let mut rec = record(1, kic, kid, Some(kik));
        if let Some((c, i)) = algorithms {
            set = set.with_algorithms(Some(c), Some(i)).unwrap();
            rec.kic_algorithm = Some(c);
            rec.kid_algorithm = Some(i);
        }
        let mut card = VirtualCard::new("8949000000000000001", "262011234567890", "1")
            .unwrap()
            .with_key_set(set);
        let mut ctx = Ctx::new();
        ctx.key_set = rec;
        let req = request("KEY_UPDATE", &format!("{coding:02X}"), json!({}));
        let built = ctx.build(&req).unwrap();
        let (version, new) = built.new_keys.clone().unwrap();
        assert_eq!(version, 1);
        assert_eq!((new.kic.len(), new.kid.len()), (16, 16));
        assert_ne!(new.kic, h(kic));
        assert_eq!(new.kik, Some(h(kik)), "the KIK stays");
        // Generation is from the caller's random source: same seed, same keys.
        assert_eq!(ctx.build(&req).unwrap().new_keys, built.new_keys);

        // The PUT KEY goes in a packet secured with the old keys (counter 6 > 5).
        let pkt = packet(coding, &h(kic), &h(kid), 6, TAR_RAM_ISD, &built.script);
        let outcome = card.process(&pkt);
        assert_eq!(outcome.status, Some(PorStatus::Ok), "{:?}", outcome.detail);
        assert_eq!(outcome.last_sw, Some(0x9000));
        let por = ResponsePacketView::parse_sms(&outcome.por.unwrap().user_data)
            .unwrap()
            .open(
                &Spi::from_bytes(SPI),
                &Scp80Keys::default(),
                CcScope::SmsUdh,
            )
            .unwrap();
        let r = parse_compact_response(&por.data).unwrap();
        let answer = PutKeyResponse::parse(&r.last().unwrap().data).unwrap();
        let family = if algorithms.is_some() {
            otagw::script::gp::NewKey::aes
        } else {
            otagw::script::gp::NewKey::des
        };
        assert!(answer.confirms(1, &[family(&new.kic), family(&new.kid)], KcvFill::Ones));

        // The card holds the new keys, its KIK and its counter (6, from this packet).
        let ks = card.key_set(1).unwrap();
        assert_eq!((ks.kic(), ks.kid()), (&new.kic[..], &new.kid[..]));
        assert_eq!(ks.kik(), Some(&h(kik)[..]));
        assert_eq!(ks.counter().value(), 6);
        assert_eq!(ks.kic_algorithm(), algorithms.map(|a| a.0));

        // The old keys no longer verify; the new ones do.
        let read = h("00A40004023F00");
        let old = card.process(&packet(coding, &h(kic), &h(kid), 7, TAR_RFM_USIM, &read));
        assert_ne!(old.status, Some(PorStatus::Ok));
        assert_eq!(old.executed, 0);
        let fresh = card.process(&packet(coding, &new.kic, &new.kid, 7, TAR_RFM_USIM, &read));
        assert_eq!(fresh.status, Some(PorStatus::Ok), "{:?}", fresh.detail);
        assert_eq!(card.key_set(1).unwrap().counter().value(), 7);
    }
}

#[test]
fn key_update_given_keys_other_version_and_wrong_kik() {
    let mut card = card().with_key_set(
        KeySet::new(2, &[0x22; 16], &[0x23; 16])
            .unwrap()
            .with_counter(Counter::new(9).unwrap()),
    );
    let kic2 = "00112233445566778899AABBCCDDEEFF";
    let kid2 = "FFEEDDCCBBAA99887766554433221100";
    let req = request(
        "KEY_UPDATE",
        "15",
        json!({"parameters": {"keyVersion": 2, "kic": kic2, "kid": kid2}}),
    );
    let built = Ctx::new().build(&req).unwrap();
    let (version, new) = built.new_keys.clone().unwrap();
    assert_eq!(
        (version, new.kic.clone(), new.kid.clone()),
        (2, h(kic2), h(kid2))
    );
    assert_eq!(new.kik, None, "key set 2's KIK is not known to the build");
    // Replacing version 2 with the KIK of version 1, which secures the packet.
    let response = card
        .run_secured_script(TAR_RAM_ISD, 1, &built.script)
        .unwrap();
    assert_eq!(last_sw(&response), 0x9000);
    let ks2 = card.key_set(2).unwrap();
    assert_eq!(
        (ks2.kic(), ks2.kid(), ks2.counter().value()),
        (&h(kic2)[..], &h(kid2)[..], 9)
    );
    assert_eq!(
        card.key_set(1).unwrap().kic(),
        &h(KIC)[..],
        "version 1 untouched"
    );

    // Without SCP80 there is no securing key set: 6982. A card whose KIK differs from the
    // gateway's: 6982 (KCV mismatch), keys unchanged.
    assert_eq!(
        last_sw(&card.run_script(TAR_RAM_ISD, &built.script).unwrap()),
        0x6982
    );
    let mut other = VirtualCard::new("8949000000000000001", "262011234567890", "1")
        .unwrap()
        .with_key_set(
            KeySet::new(1, &h(KIC), &h(KID))
                .unwrap()
                .with_kik(&[0x99; 16])
                .unwrap(),
        )
        .with_key_set(KeySet::new(2, &[0x22; 16], &[0x23; 16]).unwrap());
    let response = other
        .run_secured_script(TAR_RAM_ISD, 1, &built.script)
        .unwrap();
    assert_eq!(last_sw(&response), 0x6982);
    assert_eq!(other.key_set(2).unwrap().kic(), &[0x22; 16]);
    // No KIK in the securing key set on the card: 6A88; version 3 does not exist: 6A88.
    let mut no_kik = VirtualCard::new("8949000000000000001", "262011234567890", "1")
        .unwrap()
        .with_key_set(KeySet::new(1, &h(KIC), &h(KID)).unwrap())
        .with_key_set(KeySet::new(2, &[0x22; 16], &[0x23; 16]).unwrap());
    let response = no_kik
        .run_secured_script(TAR_RAM_ISD, 1, &built.script)
        .unwrap();
    assert_eq!(last_sw(&response), 0x6A88);
    let req = request("KEY_UPDATE", "15", json!({"parameters": {"keyVersion": 3}}));
    let built = Ctx::new().build(&req).unwrap();
    let response = card
        .run_secured_script(TAR_RAM_ISD, 1, &built.script)
        .unwrap();
    assert_eq!(last_sw(&response), 0x6A88);
}

fn err(ctx: &Ctx, command_type: &str, data: Value) -> BuildError {
    ctx.build(&request(command_type, "15", data)).unwrap_err()
}

fn msg(ctx: &Ctx, command_type: &str, data: Value) -> String {
    err(ctx, command_type, data).to_string()
}

#[test]
fn missing_fields() {
    let ctx = Ctx::new();
    let e = err(&ctx, "FILE_UPDATE", json!({"parameters": {"data": "00"}}));
    assert!(matches!(e, BuildError::Missing { .. }));
    assert_eq!(e.field(), "data.parameters.path");
    assert_eq!(
        msg(&ctx, "FILE_UPDATE", json!({"parameters": {"path": "6F46"}})),
        "data.parameters.data: FILE_UPDATE needs the octets to write (hex)"
    );
    assert_eq!(
        msg(
            &ctx,
            "APP_INSTALL",
            json!({"parameters": {"appletId": "x"}})
        ),
        "data.parameters.appletId: APP_INSTALL needs an uploaded applet"
    );
    assert_eq!(
        msg(&ctx, "APP_DELETE", json!({})),
        "data.parameters.aid: APP_DELETE needs the AID to delete"
    );
    assert_eq!(
        msg(&ctx, "RFM", json!({})),
        "data.apdus: RFM needs at least one C-APDU"
    );
    assert_eq!(
        msg(
            &ctx,
            "PROFILE_UPDATE",
            json!({"parameters": {"cardClass": "gsm"}})
        ),
        "data.parameters: PROFILE_UPDATE needs at least one of serviceProviderName, \
         spnDisplayCondition, plmns, hplmnSearchPeriod"
    );
}

#[test]
fn unknown_parameters() {
    let ctx = Ctx::new();
    let e = err(
        &ctx,
        "APP_DELETE",
        json!({"parameters": {"aid": "F00102030405", "recursive": true, "force": 1}}),
    );
    assert!(matches!(e, BuildError::UnknownParameters { .. }));
    assert_eq!(
        e.to_string(),
        "data.parameters: unknown parameters \"force\", \"recursive\" (APP_DELETE takes aid, related)"
    );
    assert_eq!(
        msg(
            &ctx,
            "RAM",
            json!({"apdus": ["80F24002024F0000"], "parameters": {"x": 1}})
        ),
        "data.parameters: unknown parameter \"x\" (RAM takes none)"
    );
    let mut ctx = Ctx::new();
    ctx.applet = Some(ijc());
    assert_eq!(
        msg(
            &ctx,
            "APP_INSTALL",
            json!({"parameters": {"appletId": "a", "toolkit": {"tars": []}}})
        ),
        "data.parameters.toolkit: unknown parameter \"tars\" (toolkit takes format, priority, \
         maxTimers, maxMenuTextLength, menuEntries, maxChannels, minimumSecurityLevel, \
         tarValues, maxServices, accessDomain, fileAccess, adminFileAccess)"
    );
}

#[test]
fn invalid_values() {
    let mut ctx = Ctx::new();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "FILE_UPDATE",
            json!({"parameters": {"path": "3F00/3F0G", "data": "00"}}),
            "data.parameters.path: \"3F0G\" is not a file id (4 hex digits)",
        ),
        (
            "FILE_UPDATE",
            json!({"parameters": {"path": "6F46", "data": "00", "offset": 1, "record": 1}}),
            "data.parameters.record: give either offset (transparent EF) or record (linear fixed EF), not both",
        ),
        (
            "FILE_UPDATE",
            json!({"parameters": {"path": "6F46", "data": "00", "offset": "1"}}),
            "data.parameters.offset: must be a whole number, not \"1\"",
        ),
        (
            "FILE_UPDATE",
            json!({"parameters": {"path": "6F46", "data": "00", "cardClass": "usim"}}),
            "data.parameters.cardClass: \"usim\" is not \"uicc\" or \"gsm\"",
        ),
        (
            "RFM",
            json!({"apdus": ["00A40004023F00", "00B0000009", "00A4000"]}),
            "data.apdus[2]: odd number of hex digits (7)",
        ),
        (
            "RFM",
            json!({"apdus": ["00A40004023F"]}),
            "data.apdus[0]: C-APDU Lc 2 but 1 data octets follow",
        ),
        (
            "RFM",
            json!({"apdus": ["00A40004023F00"], "format": "tlv"}),
            "data.format: \"tlv\" is not \"compact\", \"expanded\" or \"expanded-indefinite\"",
        ),
        (
            // Case 2 with an INS the card reads P3 of as Lc: the compact format cannot carry it.
            "RAM",
            json!({"apdus": ["80E2000010", "80F24002024F0000"]}),
            "data.apdus[0]: in the compact format the card would read this command differently \
             (its P3 is taken as Lc or Le from the INS); use data.format \"expanded\"",
        ),
        (
            "FILE_UPDATE",
            json!({"parameters": {"path": "6F46", "data": "00"}, "apdus": ["00A40004023F00"]}),
            "data.apdus: FILE_UPDATE builds its C-APDUs from data.parameters; leave data.apdus empty",
        ),
        (
            "PROFILE_UPDATE",
            json!({"parameters": {"plmns": ["26201", "2620"]}}),
            "data.parameters.plmns[1]: \"2620\" is not MCC and MNC (5 or 6 digits)",
        ),
        (
            "PROFILE_UPDATE",
            json!({"parameters": {"spnDisplayCondition": 256}}),
            "data.parameters.spnDisplayCondition: 256 is out of 0..=255",
        ),
        (
            "PROFILE_UPDATE",
            json!({"parameters": {"serviceProviderName": "A name far too long"}}),
            "data.parameters.serviceProviderName: \"A name far too long\" takes 19 octets in the \
             GSM default alphabet; EF SPN holds 16",
        ),
        (
            "PROFILE_UPDATE",
            json!({"parameters": {"plmns": ["26201"], "accessTechnology": "80"}}),
            "data.parameters.accessTechnology: is 2 octets (4 hex digits), not 1",
        ),
        (
            "KEY_UPDATE",
            json!({"parameters": {"keyVersion": 16}}),
            "data.parameters.keyVersion: 16 is out of 1..=15",
        ),
        (
            "KEY_UPDATE",
            json!({"parameters": {"kic": "0011"}}),
            "data.parameters.kic: 2 octets is not a DES key length (8, 16 or 24 octets)",
        ),
        (
            "APP_DELETE",
            json!({"parameters": {"aid": "A0000001"}}),
            "data.parameters.aid: an AID is 5 to 16 octets, not 4",
        ),
        (
            "APP_DELETE",
            json!({"parameters": {"aid": "F00102030405", "related": "yes"}}),
            "data.parameters.related: must be true or false, not \"yes\"",
        ),
    ];
    for (t, data, expected) in cases {
        let e = err(&ctx, t, data);
        assert!(matches!(e, BuildError::Invalid { .. }), "{e:?}");
        assert_eq!(e.to_string(), expected);
        assert_eq!(format!("{}: {}", e.field(), e.problem()), expected);
    }

    // KEY_UPDATE needs a KIK in the securing key set, and a key family it can tell.
    ctx.key_set.keys.kik = None;
    assert_eq!(
        msg(&ctx, "KEY_UPDATE", json!({})),
        "security: key set 1 securing the command has no KIK (key-encryption key) to encipher \
         the new keys"
    );
    ctx.key_set.keys.kik = Some(h(KIK));
    let implicit = ctx
        .build(&request("KEY_UPDATE", "10", json!({})))
        .unwrap_err();
    assert_eq!(implicit.field(), "data.parameters.keyType");
    assert!(ctx
        .build(&request(
            "KEY_UPDATE",
            "10",
            json!({"parameters": {"keyType": "des"}})
        ))
        .is_ok());

    // APP_INSTALL: an upload that is no applet; a package AID other than the CAP's.
    ctx.applet = Some(b"not a cap".to_vec());
    assert_eq!(
        err(
            &ctx,
            "APP_INSTALL",
            json!({"parameters": {"appletId": "a"}})
        )
        .field(),
        "data.parameters.appletId"
    );
    ctx.applet = Some(cap_zip());
    assert_eq!(
        msg(
            &ctx,
            "APP_INSTALL",
            json!({"parameters": {"appletId": "a", "packageAid": "A00000000101"}})
        ),
        "data.parameters.packageAid: A00000000101 differs from the package AID F00102030405 of \
         the uploaded applet, which the card checks when it loads it"
    );
}

#[test]
fn too_long_for_the_transport() {
    let mut ctx = Ctx::new();
    ctx.max = 20;
    let e = err(
        &ctx,
        "FILE_UPDATE",
        json!({"parameters": {"path": "3F00/7F20/6F46", "data": "00".repeat(17)}}),
    );
    assert_eq!(e, BuildError::TooLong { len: 43, max: 20 });
    assert_eq!(
        e.to_string(),
        "script of 43 octets does not fit the 20 octets the transport carries"
    );
    assert_eq!(e.field(), "data");
    // An applet too big for one packet says so too.
    ctx.applet = Some(cap_zip());
    ctx.max = 60;
    assert!(matches!(
        err(
            &ctx,
            "APP_INSTALL",
            json!({"parameters": {"appletId": "a"}})
        ),
        BuildError::TooLong { max: 60, .. }
    ));
}

fn card_with(policy: CardPolicy) -> VirtualCard {
    card().with_policy(policy)
}

/// The INSTALL [for install] a built APP_INSTALL ends with.
fn last_command_data(built: &BuiltScript) -> Vec<u8> {
    parse_command_script(&built.script, built.format)
        .unwrap()
        .commands()
        .last()
        .unwrap()
        .data()
        .to_vec()
}

/// Issue 19 points 10 and 12: the UICC toolkit parameters go in `EA` beside `C9` (not inside
/// `EF`), with the UICC file access the caller grants as tag `81` in the coding of
/// kaoh/globalplatform's installDataTest.c (`81 18 00 01 00 00 10 A0..0100 01 00 00`: full
/// access to the UICC shared file system and to one ADF). Without `fileAccess` no `81` goes
/// out: no access.
#[test]
fn app_install_uicc_toolkit_with_file_access() {
    let mut ctx = Ctx::new();
    ctx.applet = Some(cap_zip());
    let adf = "A0000000871002FFFFFFFF8900000100";
    let req = request(
        "APP_INSTALL",
        "15",
        json!({"parameters": {
            "appletId": "hello-1",
            "toolkit": {
                "tarValues": ["C00001"],
                "fileAccess": [{}, {"adf": adf, "accessDomain": "00"}],
            },
        }}),
    );
    let built = ctx.build(&req).unwrap();
    let data = last_command_data(&built);
    let field = h(&format!(
        "2B C900 EA27 800B 01 00 10 00 00 00 03C00001 00 8118 00 0100 00 10{adf} 0100 00 00"
    ));
    assert_eq!(&data[data.len() - field.len()..], &field[..]);
    let mut card = card();
    let response = card.run_script(TAR_RAM_ISD, &built.script).unwrap();
    assert_eq!(last_sw(&response), 0x9000);
    let app = card.registry().applet(&h("F0010203040501")).unwrap();
    assert_eq!(
        app.parameters.uicc_access,
        [
            FileAccess::full(None),
            FileAccess::full(Some(otagw::script::Aid::from_hex(adf).unwrap()))
        ]
    );
    assert_eq!(
        app.parameters
            .uicc_toolkit
            .as_ref()
            .unwrap()
            .tar_values
            .len(),
        1
    );

    // No fileAccess: EA holds the toolkit parameters alone.
    let req = request(
        "APP_INSTALL",
        "15",
        json!({"parameters": {"appletId": "hello-1", "toolkit": {}}}),
    );
    let data = last_command_data(&ctx.build(&req).unwrap());
    // Length, C9 00, EA { 80 08 toolkit }, empty install token.
    let field = h("0E C900 EA0A 8008 01 00 10 00 00 00 00 00  00");
    assert_eq!(&data[data.len() - field.len()..], &field[..]);

    // Errors name the field.
    let t = |toolkit: Value| {
        msg(
            &ctx,
            "APP_INSTALL",
            json!({"parameters": {"appletId": "hello-1", "toolkit": toolkit}}),
        )
    };
    assert!(t(json!({"fileAccess": [{"adf": "A000"}]}))
        .starts_with("data.parameters.toolkit.fileAccess[0].adf: "));
    assert!(t(json!({"fileAccess": [{"accessDomain": ""}]}))
        .starts_with("data.parameters.toolkit.fileAccess[0].accessDomain: "));
    assert!(t(json!({"fileAccess": [{"readOnly": true}]}))
        .starts_with("data.parameters.toolkit.fileAccess[0]: unknown parameter"));
    assert!(t(json!({"format": "sim", "fileAccess": [{}]}))
        .starts_with("data.parameters.toolkit.fileAccess: only exists in the \"uicc\" format"));
    assert!(t(json!({"accessDomain": "00"}))
        .starts_with("data.parameters.toolkit.accessDomain: only exists in the \"sim\" format"));
}

/// Issue 19 point 12: a SIM toolkit install grants no file access (`FF`) unless the caller
/// gives accessDomain (other tools default to none too).
#[test]
fn sim_toolkit_file_access_defaults_to_none() {
    let mut ctx = Ctx::new();
    ctx.applet = Some(cap_zip());
    for (toolkit, expected) in [
        (json!({"format": "sim"}), 0xFF),
        (json!({"format": "sim", "accessDomain": "00"}), 0x00),
    ] {
        let req = request(
            "APP_INSTALL",
            "15",
            json!({"parameters": {"appletId": "hello-1", "toolkit": toolkit}}),
        );
        let built = ctx.build(&req).unwrap();
        let mut card = card();
        let response = card.run_script(TAR_RAM_ISD, &built.script).unwrap();
        assert_eq!(last_sw(&response), 0x9000);
        let app = card.registry().applet(&h("F0010203040501")).unwrap();
        let sim = app.parameters.sim_toolkit.as_ref().unwrap();
        assert_eq!(sim.access_domain, [expected]);
    }
}

/// Issue 19 point 11: 148 octets of install parameters go as `81 94` to a GP 2.3.1 card (the
/// default) and as `94` to a card whose profile says 2.2.1; each card takes its own form and
/// refuses the other with 6A80.
#[test]
fn install_parameters_length_follows_the_profile() {
    let mut ctx = Ctx::new();
    ctx.applet = Some(cap_zip());
    let req = request(
        "APP_INSTALL",
        "15",
        json!({"parameters": {"appletId": "hello-1", "applicationParameters": "AB".repeat(0x91)}}),
    );
    let new = ctx.build(&req).unwrap();
    let old_version = GpVersion::parse("2.2.1").unwrap();
    ctx.gp.version = old_version;
    let old = ctx.build(&req).unwrap();
    let new_data = last_command_data(&new);
    let old_data = last_command_data(&old);
    assert_eq!(&new_data[25..30], &h("8194 C98191")[..]);
    assert_eq!(&old_data[25..29], &h("94 C98191")[..]);
    let old_card = CardPolicy {
        gp_version: old_version,
        ..CardPolicy::default()
    };
    for (policy, built, sw) in [
        (CardPolicy::default(), &new, 0x9000),
        (CardPolicy::default(), &old, 0x6A80),
        (old_card, &old, 0x9000),
        (old_card, &new, 0x6A80),
    ] {
        let mut card = card_with(policy);
        let response = card.run_script(TAR_RAM_ISD, &built.script).unwrap();
        assert_eq!(last_sw(&response), sw, "{policy:?}");
    }
}

/// Issue 19 point 12: with the profile's kcvFill "00", AES check values are computed over
/// zeros; a card computing them that way takes the PUT KEY, one using `01` refuses it (6982).
#[test]
fn key_update_aes_check_values_follow_the_profile() {
    let (kic, kid, kik) = (
        "000102030405060708090A0B0C0D0E0F",
        "101112131415161718191A1B1C1D1E1F",
        "202122232425262728292A2B2C2D2E2F",
    );
    let (c, i) = (CipherAlgorithm::AesCbc, IntegrityAlgorithm::AesCmac);
    let mut rec = record(1, kic, kid, Some(kik));
    rec.kic_algorithm = Some(c);
    rec.kid_algorithm = Some(i);
    let mut ctx = Ctx::new();
    ctx.key_set = rec;
    ctx.gp.kcv_fill = KcvFill::Zeros;
    let req = request(
        "KEY_UPDATE",
        "12",
        json!({"parameters": {"kic": "00".repeat(16)}}),
    );
    let built = ctx.build(&req).unwrap();
    // The KIc's check value is AES(zero key, zero block) = 66E94B.. (FIPS-197 style known
    // answer, checked with OpenSSL).
    let data = last_command_data(&built);
    assert_eq!(
        &data[1 + 1 + 1 + 17..1 + 1 + 1 + 17 + 4],
        &h("03 66E94B")[..]
    );
    for (fill, sw) in [(KcvFill::Zeros, 0x9000), (KcvFill::Ones, 0x6982)] {
        let set = KeySet::new(1, &h(kic), &h(kid))
            .unwrap()
            .with_kik(&h(kik))
            .unwrap()
            .with_counter(Counter::new(5).unwrap())
            .with_algorithms(Some(c), Some(i))
            .unwrap();
        let mut card = VirtualCard::new("8949000000000000001", "262011234567890", "1")
            .unwrap()
            .with_key_set(set)
            .with_policy(CardPolicy {
                kcv_fill: fill,
                ..CardPolicy::default()
            });
        let outcome = card.process(&packet(
            0x12,
            &h(kic),
            &h(kid),
            6,
            TAR_RAM_ISD,
            &built.script,
        ));
        assert_eq!(outcome.last_sw, Some(sw), "{fill:?}");
    }
}

/// Issue 19 point 12: GP 2.1.1 cards answer GET STATUS P2 02 with 6A86. For a card whose
/// profile says 2.1.1 a RAM script asking P2 02 is refused at build time naming the APDU and
/// the P2 to use; P2 00 builds and the card answers in the GP 2.1.1 format.
#[test]
fn get_status_p2_for_gp_2_1_1_cards() {
    let mut ctx = Ctx::new();
    let tlv = json!({"apdus": ["00A40004023F00", "80F28002024F0000"]});
    assert!(ctx.build(&request("RAM", "15", tlv.clone())).is_ok());
    ctx.gp.version = GpVersion::V2_1_1;
    let e = err(&ctx, "RAM", tlv);
    assert_eq!(e.field(), "data.apdus[1]");
    assert!(e.problem().contains("6A86: use P2 00"), "{e}");
    let next = msg(&ctx, "RAM", json!({"apdus": ["80F2400303 4F0000"]}));
    assert!(next.contains("use P2 01"), "{next}");
    let built = ctx
        .build(&request(
            "RAM",
            "15",
            json!({"apdus": ["80F28000024F0000"], "format": "expanded"}),
        ))
        .unwrap();
    let old_card = CardPolicy {
        gp_version: GpVersion::V2_1_1,
        ..CardPolicy::default()
    };
    let response = card_with(old_card)
        .run_script(TAR_RAM_ISD, &built.script)
        .unwrap();
    let r = parse_expanded_response(&response).unwrap();
    assert_eq!(r.last().unwrap().sw, 0x9000);
    assert_eq!(r.last().unwrap().data, h("08 A000000151000000 0F 9E"));
    // The same card answers P2 02 with 6A86 (what a script built without the profile meets).
    let built = Ctx::new()
        .build(&request(
            "RAM",
            "15",
            json!({"apdus": ["80F28002024F0000"], "format": "expanded"}),
        ))
        .unwrap();
    let response = card_with(old_card)
        .run_script(TAR_RAM_ISD, &built.script)
        .unwrap();
    assert_eq!(last_sw(&response), 0x6A86);
}
