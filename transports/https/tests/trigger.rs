use otagw_https::trigger::*;

fn sample() -> TriggerParams {
    TriggerParams {
        connection: Some(
            ConnectionParams {
                buffer_size: 1024,
                apn: Some("internet.example".into()),
                port: 8443,
                ipv4: [192, 0, 2, 10],
            }
            .encode(),
        ),
        security: Some(SecurityParams {
            psk_identity: b"8944501234567890123".to_vec(),
            key_version: 0x40,
            key_id: 0x01,
            extra: None,
        }),
        retry: Some(RetryPolicy {
            retry_counter: 3,
            retry_waiting_delay: TimerValue::from_secs(90).unwrap(),
            report_failure: None,
        }),
        http: Some(HttpParams {
            host: Some("ota.example.net".into()),
            agent_id: Some("//se-id/iccid/8944501234567890123".into()),
            uri: Some("/gp/admin?card=8944501234567890123".into()),
        }),
        dns: None,
    }
}

#[test]
fn round_trip_full() {
    let p = sample();
    let bytes = p.encode().unwrap();
    assert_eq!(bytes[0], 0x81);
    assert_eq!(TriggerParams::decode(&bytes).unwrap(), p);
}

#[test]
fn known_bytes() {
    let p = TriggerParams {
        connection: None,
        security: Some(SecurityParams {
            psk_identity: vec![0xDE, 0xAD, 0xBE, 0xEF],
            key_version: 0x40,
            key_id: 0x01,
            extra: None,
        }),
        retry: Some(RetryPolicy {
            retry_counter: 2,
            retry_waiting_delay: TimerValue {
                hours: 0,
                minutes: 1,
                seconds: 30,
            },
            report_failure: None,
        }),
        http: Some(HttpParams {
            host: Some("admin.host".into()),
            agent_id: None,
            uri: Some("https://admin.host/uri".into()),
        }),
        dns: None,
    };
    let hex = hex::encode(p.encode().unwrap());
    // 85: len(4) id 02 kvn kid; 86: counter 0002, timer 25 03 00 10 03 (swapped BCD 00:01:30);
    // 8A and 8C as in pySim's test vectors.
    let sec = "850804deadbeef024001";
    let retry = "860700022503001003";
    let http =
        "8a0a61646d696e2e686f7374".to_string() + "8c1668747470733a2f2f61646d696e2e686f73742f757269";
    let http_tlv = format!("89{:02x}{http}", http.len() / 2);
    let session = format!("{sec}{retry}{http_tlv}");
    let s83 = format!("83{:02x}{session}", session.len() / 2);
    assert_eq!(hex, format!("81{:02x}{s83}", s83.len() / 2));
    assert_eq!(TriggerParams::decode(&p.encode().unwrap()).unwrap(), p);
}

#[test]
fn round_trip_variants() {
    let mut p = sample();
    p.dns = Some(vec![0xD6, 0x03, b'a', b'b', b'c']);
    p.security.as_mut().unwrap().extra = Some(0x02);
    p.retry.as_mut().unwrap().report_failure = Some(vec![0x01]);
    assert_eq!(TriggerParams::decode(&p.encode().unwrap()).unwrap(), p);

    // Long values take 81/82 length forms.
    p.http.as_mut().unwrap().uri = Some(format!("/{}", "u".repeat(300)));
    let bytes = p.encode().unwrap();
    assert_eq!(bytes[1], 0x82);
    assert_eq!(TriggerParams::decode(&bytes).unwrap(), p);

    let minimal = TriggerParams {
        connection: None,
        security: None,
        retry: None,
        http: None,
        dns: None,
    };
    assert_eq!(minimal.encode().unwrap(), vec![0x81, 0x02, 0x83, 0x00]);
    assert_eq!(
        TriggerParams::decode(&[0x81, 0x02, 0x83, 0x00]).unwrap(),
        minimal
    );
}

#[test]
fn connection_params_bytes() {
    let c = ConnectionParams {
        buffer_size: 0x0400,
        apn: None,
        port: 443,
        ipv4: [10, 0, 0, 1],
    };
    assert_eq!(
        hex::encode(c.encode()),
        "350103390204003c030201bb3e05210a000001"
    );
}

#[test]
fn decode_errors_never_panic() {
    assert_eq!(TriggerParams::decode(&[]), Err(TriggerError::Truncated));
    assert_eq!(
        TriggerParams::decode(&[0x82, 0x00]),
        Err(TriggerError::UnexpectedTag(0x82, 0x81))
    );
    assert_eq!(
        TriggerParams::decode(&[0x81, 0x00]),
        Err(TriggerError::Missing("tag 83"))
    );
    assert_eq!(
        TriggerParams::decode(&[0x81, 0x05, 0x83]),
        Err(TriggerError::Truncated)
    );
    assert_eq!(
        TriggerParams::decode(&[0x81, 0x81, 0x02, 0x83, 0x00]),
        Err(TriggerError::Length)
    );
    let bytes = sample().encode().unwrap();
    for cut in 0..bytes.len() {
        assert!(TriggerParams::decode(&bytes[..cut]).is_err());
    }
    for i in 0..bytes.len() {
        for v in [0x00, 0x7F, 0x80, 0x81, 0x82, 0xFF] {
            let mut m = bytes.clone();
            m[i] = v;
            let _ = TriggerParams::decode(&m);
        }
    }
}
