//! The card side, sans-IO: the POST writer against our own request parser, the response parser
//! against our own response writer (both framings, split anywhere), hostile bytes, and the
//! trigger's connection parameters read back.

use otagw_https::admin::{
    self, BodyFraming, RequestParser, ScriptKind, ScriptStatus, CONTENT_TYPE_RESPONSE,
    CONTENT_TYPE_RFM_RESPONSE, CONTENT_TYPE_SCRIPT,
};
use otagw_https::client::{write_post, Post, ResponseParser};
use otagw_https::trigger::ConnectionParams;

const RESPONSES: [u8; 16] = [
    0xAF, 0x80, 0x23, 0x03, 0x01, 0x90, 0x00, 0x23, 0x02, 0x90, 0x00, 0x80, 0x01, 0x02, 0x00, 0x00,
];

#[test]
fn posts_parse_back_in_both_framings_split_anywhere() {
    for (chunked, kind) in [
        (false, ScriptKind::CardContent),
        (true, ScriptKind::CardContent),
        (true, ScriptKind::RemoteFile),
    ] {
        let post = write_post(&Post {
            target: "/gp/admin?step=1",
            host: "otagw",
            agent_id: "8949000000000000018",
            body: &RESPONSES,
            kind,
            script_status: Some(&ScriptStatus::Ok),
            resume: true,
            chunked,
        });
        let text = String::from_utf8_lossy(&post);
        // Header names exactly as Amendment B writes them.
        for h in [
            "X-Admin-Protocol: globalplatform-remote-admin/1.0\r\n",
            "X-Admin-From: 8949000000000000018\r\n",
            "X-Admin-Script-Status: ok\r\n",
            "X-Admin-Resume: true\r\n",
        ] {
            assert!(text.contains(h), "{h:?} missing from {text}");
        }
        let content_type = match kind {
            ScriptKind::CardContent => CONTENT_TYPE_RESPONSE,
            ScriptKind::RemoteFile => CONTENT_TYPE_RFM_RESPONSE,
        };
        assert!(text.contains(&format!("Content-Type: {content_type}\r\n")));
        for split in [1, 7, post.len() / 2, post.len() - 1] {
            let mut p = RequestParser::new(admin::Limits::default());
            p.push(&post[..split]);
            assert_eq!(
                p.next_request().unwrap(),
                None,
                "complete after {split} octets?"
            );
            p.push(&post[split..]);
            let r = p.next_request().unwrap().expect("a request");
            assert_eq!(r.body, RESPONSES);
            assert_eq!(r.target, "/gp/admin?step=1");
            assert_eq!(r.from.as_deref(), Some("8949000000000000018"));
            assert_eq!(r.response_kind(), Some(kind));
            assert!(r.resume);
            assert_eq!(r.script_status, Some(ScriptStatus::Ok));
            let framing = if chunked {
                BodyFraming::Chunked
            } else {
                BodyFraming::ContentLength
            };
            assert_eq!(r.framing, framing);
        }
    }
    // The session's first POST: no body, no Content-Type.
    let first = write_post(&Post {
        target: "/gp/admin",
        host: "h",
        agent_id: "a",
        body: &[],
        kind: ScriptKind::CardContent,
        script_status: None,
        resume: false,
        chunked: true,
    });
    let text = String::from_utf8_lossy(&first);
    assert!(
        !text.contains("Content-Type") && !text.contains("Transfer-Encoding"),
        "{text}"
    );
}

#[test]
fn responses_parse_back_and_pipeline() {
    let script = [
        0xAE, 0x80, 0x22, 0x05, 0x00, 0xB0, 0x00, 0x00, 0x0A, 0x00, 0x00,
    ];
    let mut wire = admin::write_script_response(
        "/gp/admin?step=1",
        Some("//aid/A000000009/0001FFFFFFFF89B00010"),
        ScriptKind::CardContent,
        &script,
    )
    .unwrap();
    wire.extend(admin::write_no_content(None).unwrap());
    for split in [0, 5, 60, wire.len() - 3] {
        let mut p = ResponseParser::new(1024);
        p.push(&wire[..split]);
        let first = match p.next_response().unwrap() {
            Some(r) => r,
            None => {
                p.push(&wire[split..]);
                p.next_response().unwrap().expect("the 200")
            }
        };
        assert_eq!(first.status, 200);
        assert_eq!(first.body, script);
        assert_eq!(first.next_uri.as_deref(), Some("/gp/admin?step=1"));
        assert_eq!(first.content_type.as_deref(), Some(CONTENT_TYPE_SCRIPT));
        assert_eq!(
            first.targeted_application.as_deref(),
            Some("//aid/A000000009/0001FFFFFFFF89B00010")
        );
        if split < wire.len() - 3 {
            let end = p.next_response().unwrap().expect("the 204");
            assert_eq!((end.status, end.next_uri, end.body.len()), (204, None, 0));
        }
    }
    // A chunked answer (not ours, but a server may send one).
    let mut p = ResponseParser::new(1024);
    p.push(b"HTTP/1.1 200 OK\r\nX-Admin-Next-URI: /n\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nAE8\r\n");
    assert_eq!(p.next_response().unwrap(), None);
    p.push(b"0\r\n\r\n");
    assert_eq!(p.next_response().unwrap().expect("complete").body, b"AE8");
}

#[test]
fn hostile_responses_are_errors_not_panics() {
    let cases: [&[u8]; 5] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
        b"\x00\x01\x02garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Admin-Next-URI: \xff\xfe\r\n\r\n",
    ];
    for c in cases {
        let mut p = ResponseParser::new(4096);
        p.push(c);
        assert!(
            p.next_response().is_err(),
            "{:?}",
            String::from_utf8_lossy(c)
        );
    }
    // Pseudo-random bytes: never a panic.
    let mut x: u32 = 0x1234_5678;
    for _ in 0..2000 {
        let mut bytes = b"HTTP/1.1 ".to_vec();
        for _ in 0..(x % 200) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            bytes.push(x as u8);
        }
        let mut p = ResponseParser::new(512);
        p.push(&bytes);
        let _ = p.next_response();
    }
}

#[test]
fn connection_parameters_read_back() {
    let c = ConnectionParams {
        buffer_size: 1400,
        apn: Some("ota.operator.example".into()),
        port: 8443,
        ipv4: [192, 0, 2, 10],
    };
    assert_eq!(ConnectionParams::decode(&c.encode()).unwrap(), c);
    let no_apn = ConnectionParams { apn: None, ..c };
    assert_eq!(ConnectionParams::decode(&no_apn.encode()).unwrap(), no_apn);
    // No port or address: refused, not guessed.
    assert!(ConnectionParams::decode(&[0x35, 0x01, 0x03]).is_err());
    assert!(ConnectionParams::decode(&[0x3C, 0x03]).is_err());
}
