use otagw_https::admin::*;

const RESP_BODY: &[u8] = &[
    0xAF, 0x80, 0x23, 0x02, 0x90, 0x00, 0x23, 0x02, 0x90, 0x00, 0x00, 0x00,
];

fn head(extra: &str) -> String {
    format!(
        "POST /gp/admin?step=1 HTTP/1.1\r\nHost: ota.example\r\nX-Admin-Protocol: globalplatform-remote-admin/1.0\r\nX-Admin-From: //se-id/iccid/8944\r\n{extra}\r\n"
    )
}

fn chunked_request() -> Vec<u8> {
    let mut r = head(
        "X-Admin-Script-Status: ok\r\nContent-Type: application/vnd.globalplatform.card-content-mgt-response;version=1.0\r\nTransfer-Encoding: chunked\r\n",
    )
    .into_bytes();
    // Two chunks, one with an extension, then a trailer.
    r.extend_from_slice(b"5;x=y\r\n");
    r.extend_from_slice(&RESP_BODY[..5]);
    r.extend_from_slice(b"\r\n7\r\n");
    r.extend_from_slice(&RESP_BODY[5..]);
    r.extend_from_slice(b"\r\n0\r\nX-Trailer: 1\r\n\r\n");
    r
}

#[test]
fn first_post_without_body() {
    let mut p = RequestParser::default();
    let req = p
        .feed(head("Content-Length: 0\r\n").as_bytes())
        .unwrap()
        .unwrap();
    assert_eq!(req.target, "/gp/admin?step=1");
    assert_eq!(req.host.as_deref(), Some("ota.example"));
    assert_eq!(req.protocol, ADMIN_PROTOCOL);
    assert_eq!(req.from.as_deref(), Some("//se-id/iccid/8944"));
    assert_eq!(req.script_status, None);
    assert!(!req.resume);
    assert!(req.body.is_empty());
    assert!(p.is_idle());
}

#[test]
fn content_length_body_and_headers_any_case() {
    let raw = format!(
        "POST /x HTTP/1.1\r\nx-admin-protocol: globalplatform-remote-admin/1.0\r\nX-ADMIN-FROM: agent\r\nx-admin-script-status: security-error\r\nx-admin-resume: true\r\ncontent-type: application/vnd.globalplatform.card-content-mgt-response; version=1.0\r\ncontent-length: {}\r\n\r\n",
        RESP_BODY.len()
    );
    let mut bytes = raw.into_bytes();
    bytes.extend_from_slice(RESP_BODY);
    let mut p = RequestParser::default();
    let req = p.feed(&bytes).unwrap().unwrap();
    assert_eq!(req.body, RESP_BODY);
    assert_eq!(req.framing, BodyFraming::ContentLength);
    assert_eq!(req.script_status, Some(ScriptStatus::SecurityError));
    assert!(req.resume);
}

#[test]
fn script_status_values() {
    for (s, v) in [
        ("ok", ScriptStatus::Ok),
        ("unknown-application", ScriptStatus::UnknownApplication),
        ("not-a-security-domain", ScriptStatus::NotASecurityDomain),
        ("security-error", ScriptStatus::SecurityError),
        (
            "script-format-error",
            ScriptStatus::Other("script-format-error".into()),
        ),
    ] {
        assert_eq!(ScriptStatus::parse(s), v);
        assert_eq!(v.as_str(), s);
    }
}

#[test]
fn chunked_whole() {
    let mut p = RequestParser::default();
    let req = p.feed(&chunked_request()).unwrap().unwrap();
    assert_eq!(req.body, RESP_BODY);
    assert_eq!(req.framing, BodyFraming::Chunked);
    assert_eq!(req.script_status, Some(ScriptStatus::Ok));
    assert!(p.is_idle());
}

#[test]
fn chunked_split_at_every_boundary() {
    let raw = chunked_request();
    for cut in 0..=raw.len() {
        let mut p = RequestParser::default();
        let first = p.feed(&raw[..cut]).unwrap();
        let req = match first {
            Some(r) => {
                assert_eq!(cut, raw.len());
                r
            }
            None => p.feed(&raw[cut..]).unwrap().expect("complete"),
        };
        assert_eq!(req.body, RESP_BODY, "cut at {cut}");
        assert!(p.is_idle());
    }
}

#[test]
fn chunked_byte_by_byte_and_two_cuts() {
    let raw = chunked_request();
    let mut p = RequestParser::default();
    let mut got = None;
    for (i, b) in raw.iter().enumerate() {
        if let Some(r) = p.feed(std::slice::from_ref(b)).unwrap() {
            assert_eq!(i, raw.len() - 1);
            got = Some(r);
        }
    }
    assert_eq!(got.unwrap().body, RESP_BODY);
    for a in 0..raw.len() {
        for b in a..raw.len() {
            let mut p = RequestParser::default();
            assert!(p.feed(&raw[..a]).unwrap().is_none());
            assert!(p.feed(&raw[a..b]).unwrap().is_none());
            assert_eq!(p.feed(&raw[b..]).unwrap().unwrap().body, RESP_BODY);
        }
    }
}

#[test]
fn pipelined_requests() {
    let mut raw = head("Content-Length: 0\r\n").into_bytes();
    raw.extend_from_slice(&chunked_request());
    let mut p = RequestParser::default();
    let a = p.feed(&raw).unwrap().unwrap();
    assert!(a.body.is_empty());
    let b = p.next_request().unwrap().unwrap();
    assert_eq!(b.body, RESP_BODY);
    assert!(p.next_request().unwrap().is_none());
}

#[test]
fn content_length_split_at_every_boundary() {
    let mut raw = head(&format!(
        "Content-Type: {CONTENT_TYPE_RESPONSE}\r\nContent-Length: {}\r\n",
        RESP_BODY.len()
    ))
    .into_bytes();
    raw.extend_from_slice(RESP_BODY);
    for cut in 0..raw.len() {
        let mut p = RequestParser::default();
        assert!(p.feed(&raw[..cut]).unwrap().is_none(), "cut {cut}");
        assert_eq!(p.feed(&raw[cut..]).unwrap().unwrap().body, RESP_BODY);
    }
}

fn err(raw: &[u8]) -> ParseError {
    let mut p = RequestParser::default();
    let e = p.feed(raw).expect_err("should fail");
    // The parser stays failed.
    assert_eq!(p.feed(b"x").unwrap_err(), ParseError::Failed);
    e
}

#[test]
fn malformed() {
    assert!(matches!(
        err(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n"),
        ParseError::Http(_)
    ));
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nX-Admin-Protocol: globalplatform-remote-admin/1.0\r\nX-Admin-From: a\r\n\r\n"),
        ParseError::MethodNotAllowed("GET".into())
    );
    assert_eq!(
        err(b"POST / HTTP/1.1\r\nX-Admin-From: a\r\n\r\n"),
        ParseError::MissingHeader(header::PROTOCOL)
    );
    assert_eq!(
        err(b"POST / HTTP/1.1\r\nX-Admin-Protocol: other/2.0\r\nX-Admin-From: a\r\n\r\n"),
        ParseError::Protocol("other/2.0".into())
    );
    assert!(matches!(
        err(head("Content-Length: 12x\r\n").as_bytes()),
        ParseError::ContentLength(_)
    ));
    assert!(matches!(
        err(head("Content-Length: 1\r\nContent-Length: 2\r\n").as_bytes()),
        ParseError::ContentLength(_)
    ));
    assert_eq!(
        err(head("Content-Length: 1\r\nTransfer-Encoding: chunked\r\n").as_bytes()),
        ParseError::LengthAndChunked
    );
    assert!(matches!(
        err(head("Transfer-Encoding: gzip, chunked\r\n").as_bytes()),
        ParseError::TransferEncoding(_)
    ));
    assert!(matches!(
        err(head("X-Admin-Resume: maybe\r\n").as_bytes()),
        ParseError::Resume(_)
    ));
    assert!(matches!(
        err(head("Content-Type: text/plain\r\nContent-Length: 2\r\n").as_bytes()),
        ParseError::ContentType(_)
    ));
    assert_eq!(
        err(head("Content-Length: 2\r\n").as_bytes()),
        ParseError::MissingHeader(header::CONTENT_TYPE)
    );
    let chunked = |body: &[u8]| {
        let mut r = head(&format!(
            "Content-Type: {CONTENT_TYPE_RESPONSE}\r\nTransfer-Encoding: chunked\r\n"
        ))
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    for bad in [
        &b"zz\r\n"[..],
        b"\r\n",
        b"2\nab\r\n0\r\n\r\n",
        b"2\r\nabc\r\n0\r\n\r\n",
        b"2\r\nab\r\n0\r\n\n",
        b"11111111111111111\r\n",
    ] {
        assert!(
            matches!(err(&chunked(bad)), ParseError::Chunked(_)),
            "{bad:?}"
        );
    }
    // Chunked without a content type is refused once it carries data.
    let mut r = head("Transfer-Encoding: chunked\r\n").into_bytes();
    r.extend_from_slice(b"1\r\na\r\n0\r\n\r\n");
    assert_eq!(err(&r), ParseError::MissingHeader(header::CONTENT_TYPE));
}

#[test]
fn oversized() {
    let limits = Limits {
        max_head_bytes: 256,
        max_headers: 8,
        max_body_bytes: 16,
        max_chunk_line: 32,
    };
    let mut p = RequestParser::new(limits);
    let big = format!("POST / HTTP/1.1\r\nX-Pad: {}\r\n", "a".repeat(300));
    assert_eq!(
        p.feed(big.as_bytes()).unwrap_err(),
        ParseError::HeadTooLarge(256)
    );

    let mut p = RequestParser::new(limits);
    let many: String = (0..9).map(|i| format!("X-H{i}: v\r\n")).collect();
    let raw = format!("POST / HTTP/1.1\r\n{many}\r\n");
    assert_eq!(
        p.feed(raw.as_bytes()).unwrap_err(),
        ParseError::TooManyHeaders(8)
    );

    let mut p = RequestParser::new(limits);
    let raw = head(&format!(
        "Content-Type: {CONTENT_TYPE_RESPONSE}\r\nContent-Length: 17\r\n"
    ));
    assert_eq!(
        p.feed(raw.as_bytes()).unwrap_err(),
        ParseError::BodyTooLarge(16)
    );

    // Chunked: refused as soon as a chunk size would exceed the limit, before its data.
    let mut p = RequestParser::new(limits);
    let raw = head(&format!(
        "Content-Type: {CONTENT_TYPE_RESPONSE}\r\nTransfer-Encoding: chunked\r\n"
    ));
    assert!(p.feed(raw.as_bytes()).unwrap().is_none());
    assert!(p.feed(b"8\r\n12345678\r\n").unwrap().is_none());
    assert_eq!(p.feed(b"9\r\n").unwrap_err(), ParseError::BodyTooLarge(16));

    // Long chunk extension.
    let mut p = RequestParser::new(limits);
    assert!(p.feed(raw.as_bytes()).unwrap().is_none());
    let ext = format!("1;{}\r\n", "e".repeat(40));
    assert!(matches!(
        p.feed(ext.as_bytes()).unwrap_err(),
        ParseError::Chunked(_)
    ));
}

#[test]
fn never_panics_on_noise() {
    // A cheap deterministic fuzz: xorshift noise and mutations of a valid request.
    let base = chunked_request();
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for _ in 0..5000 {
        let mut m = base.clone();
        for _ in 0..(next() % 4 + 1) {
            let i = (next() as usize) % m.len();
            m[i] = next() as u8;
        }
        let cut = (next() as usize) % m.len();
        let mut p = RequestParser::default();
        let _ = p.feed(&m[..cut]);
        let _ = p.feed(&m[cut..]);
        let noise: Vec<u8> = (0..(next() % 200)).map(|_| next() as u8).collect();
        let _ = RequestParser::default().feed(&noise);
    }
}

#[test]
fn script_response_exact_bytes() {
    let script = [
        0xAE, 0x80, 0x22, 0x05, 0x00, 0xA4, 0x00, 0x04, 0x00, 0x00, 0x00,
    ];
    let out = write_script_response(
        "/gp/admin?session=7&step=2",
        Some("//aid/A000000151/000000"),
        ScriptKind::CardContent,
        &script,
    )
    .unwrap();
    let mut expected = b"HTTP/1.1 200 OK\r\n\
X-Admin-Protocol: globalplatform-remote-admin/1.0\r\n\
X-Admin-Next-URI: /gp/admin?session=7&step=2\r\n\
X-Admin-Targeted-Application: //aid/A000000151/000000\r\n\
Content-Type: application/vnd.globalplatform.card-content-mgt;version=1.0\r\n\
Content-Length: 11\r\n\r\n"
        .to_vec();
    expected.extend_from_slice(&script);
    assert_eq!(out, expected);

    let out = write_script_response("/n", None, ScriptKind::CardContent, &script).unwrap();
    assert!(!String::from_utf8_lossy(&out).contains("Targeted"));
    assert_eq!(
        write_script_response("/a\r\nX-Evil: 1", None, ScriptKind::CardContent, &script),
        Err(WriteError(header::NEXT_URI))
    );
}

#[test]
fn no_content_exact_bytes() {
    assert_eq!(
        write_no_content(None).unwrap(),
        b"HTTP/1.1 204 No Content\r\nX-Admin-Protocol: globalplatform-remote-admin/1.0\r\n\r\n"
    );
    assert_eq!(
        write_no_content(Some("/next")).unwrap(),
        b"HTTP/1.1 204 No Content\r\nX-Admin-Protocol: globalplatform-remote-admin/1.0\r\nX-Admin-Next-URI: /next\r\n\r\n"
    );
}

#[test]
fn response_parses_back_with_httparse() {
    let out = write_script_response(
        "/n?x=1",
        None,
        ScriptKind::CardContent,
        &[0xAE, 0x80, 0x00, 0x00],
    )
    .unwrap();
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(n) = resp.parse(&out).unwrap() else {
        panic!("partial")
    };
    assert_eq!(resp.code, Some(200));
    let names: Vec<&str> = resp.headers.iter().map(|h| h.name).collect();
    assert_eq!(
        names,
        [
            "X-Admin-Protocol",
            "X-Admin-Next-URI",
            "Content-Type",
            "Content-Length"
        ]
    );
    assert_eq!(&out[n..], &[0xAE, 0x80, 0x00, 0x00]);
}

/// TS 102 226 Annex B: a script for an RFM application goes out as ETSI command data, naming
/// the application; the card's answer comes back as ETSI response data and is accepted.
#[test]
fn rfm_scripts_use_the_etsi_media_types() {
    let script = [0xAE, 0x80, 0x22, 0x02, 0x00, 0xB0, 0x00, 0x00];
    let out = write_script_response(
        "/gp/admin?cmd=c&chunk=0",
        Some("//aid/A000000087/1002FFFFFFFF8907090000"),
        ScriptKind::RemoteFile,
        &script,
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("\r\nContent-Type: application/vnd.etsi.scp.command-data;version=1.0\r\n"),
        "{text}"
    );
    assert!(text
        .contains("\r\nX-Admin-Targeted-Application: //aid/A000000087/1002FFFFFFFF8907090000\r\n"));
    let mut r = head(&format!(
        "Content-Type: application/vnd.etsi.scp.response-data;version=1.0\r\nContent-Length: {}\r\n",
        RESP_BODY.len()
    ))
    .into_bytes();
    r.extend_from_slice(RESP_BODY);
    let req = RequestParser::default()
        .feed(&r)
        .expect("ETSI response data accepted")
        .expect("complete");
    assert_eq!(req.response_kind(), Some(ScriptKind::RemoteFile));
    assert_eq!(req.body, RESP_BODY);
    assert_eq!(
        ScriptKind::of_command("application/vnd.etsi.scp.command-data; version=1.0"),
        Some(ScriptKind::RemoteFile)
    );
    assert_eq!(ScriptKind::of_command("text/plain"), None);
}

/// Some agents leave `X-Admin-From` out; other servers accept that, and so do we.
#[test]
fn a_post_without_x_admin_from_is_accepted() {
    let req = RequestParser::default()
        .feed(
            b"POST /gp/admin HTTP/1.1\r\nX-Admin-Protocol: globalplatform-remote-admin/1.0\r\n\r\n",
        )
        .expect("accepted")
        .expect("complete");
    assert_eq!(req.from, None);
    assert_eq!(req.target, "/gp/admin");
}

/// AIDs in `X-Admin-Targeted-Application`: RID of five octets, then the PIX.
#[test]
fn aid_uris() {
    let aid = hex::decode("A0000000871002FFFFFFFF8907090000").unwrap();
    assert_eq!(aid_uri(&aid), "//aid/A000000087/1002FFFFFFFF8907090000");
    assert_eq!(
        aid_of_uri("//aid/A000000087/1002FFFFFFFF8907090000"),
        Some(aid)
    );
    assert_eq!(
        aid_uri(&default_application_aid([0xB0, 0x00, 0x10])),
        "//aid/A000000009/0001FFFFFFFF89B00010"
    );
    assert_eq!(aid_of_uri("//aid/A0000000/01"), None, "RID of four octets");
    assert_eq!(aid_of_uri("/aid/A000000087/10"), None);
}
