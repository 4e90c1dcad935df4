//! What a PoR means for a command: the state it ends in, the card's response as the API shows
//! it, and the error when it failed. Pure: the gateway applies the result to the store.

use crate::command::{
    CardResponse, CommandError, CommandStatus, CommandType, ErrorCode, OtaCommandRequest,
    StatusWordData,
};
use crate::script::response::parse_script_response;
use crate::script::ScriptFormat;
use crate::security::{DecodedResponse, PorProtection, PorRequirement, PorStatus};
use crate::store::{Millis, Transition};

pub use crate::script::response::sw_is_success;

/// The script format a request asked for.
pub fn request_format(req: Option<&OtaCommandRequest>) -> ScriptFormat {
    match req.and_then(|r| r.data.format.as_deref()) {
        Some("expanded") => ScriptFormat::ExpandedDefinite,
        _ => ScriptFormat::Compact,
    }
}

/// The transition a verified PoR brings about.
pub fn por_transition(
    command_type: CommandType,
    request: Option<&OtaCommandRequest>,
    por: &DecodedResponse,
    attempts: u32,
    at: Millis,
) -> Transition {
    let mut response = CardResponse {
        por_status: format!("{:02X}", por.status.to_byte()),
        por_status_name: por.status.name().to_string(),
        status_code: None,
        data: None,
        executed: None,
        status_words: Vec::new(),
    };
    let from = vec![CommandStatus::Sent, CommandStatus::Delivered];
    let failed = |code: ErrorCode, message: String, response: CardResponse| Transition {
        from: from.clone(),
        to: CommandStatus::Failed,
        event: "FAILED".into(),
        detail: message.clone(),
        response: Some(response),
        error: Some(CommandError { code, message }),
        at,
        new_keys: None,
        events: Vec::new(),
    };
    if por.protection == PorProtection::UnprotectedError || por.status.is_security_error() {
        let mut message = format!(
            "card refused the packet: PoR status {:02X} {}",
            por.status.to_byte(),
            por.status.name()
        );
        if por.protection == PorProtection::UnprotectedError {
            message.push_str(" (unprotected PoR)");
        }
        if attempts > 1 && por.status == PorStatus::CounterLow {
            message.push_str(
                "; this was a resend: the card may have run an earlier send whose PoR was lost",
            );
        }
        return failed(ErrorCode::SecurityError, message, response);
    }
    if por.status != PorStatus::Ok {
        let message = format!(
            "card answered PoR status {:02X} {}",
            por.status.to_byte(),
            por.status.name()
        );
        return failed(ErrorCode::CommandFailed, message, response);
    }
    let format = request_format(request);
    if !por.data.is_empty() {
        match parse_script_response(&por.data, format) {
            Ok(parsed) => {
                response.executed = Some(parsed.executed as u32);
                response.status_words = parsed
                    .responses
                    .iter()
                    .map(|r| StatusWordData {
                        sw: format!("{:04X}", r.sw),
                        data: hex::encode_upper(&r.data),
                    })
                    .collect();
                if let Some(last) = parsed.last() {
                    response.status_code = Some(last.sw);
                    response.data = Some(hex::encode_upper(&last.data));
                }
                if let Err(mut message) = parsed.judge(None) {
                    let hint = parsed
                        .last()
                        .and_then(|last| get_status_hint(request, parsed.executed, last.sw));
                    if let Some(hint) = hint {
                        message.push_str(": ");
                        message.push_str(&hint);
                    }
                    return failed(ErrorCode::CommandFailed, message, response);
                }
            }
            Err(e) => {
                let message = format!("PoR data is not a script response: {e}");
                response.data = Some(hex::encode_upper(&por.data));
                return failed(ErrorCode::CommandFailed, message, response);
            }
        }
    }
    let detail = match response.status_code {
        Some(sw) => format!("PoR OK, last SW {sw:04X}"),
        None => "PoR OK".to_string(),
    };
    let _ = command_type;
    Transition {
        from,
        to: CommandStatus::Success,
        event: "SUCCESS".into(),
        detail,
        response: Some(response),
        error: None,
        at,
        new_keys: None,
        events: Vec::new(),
    }
}

/// What to do about a RAM script whose `executed`-th command, a GET STATUS asking for the TLV
/// format (P2 `02`/`03`), got 6A86: GP 2.1.1 cards know only P2 `00`/`01` (GP 2.3 table
/// 11-34), so the script has to be sent again with it, as GlobalPlatformPro falls back.
fn get_status_hint(req: Option<&OtaCommandRequest>, executed: usize, sw: u16) -> Option<String> {
    let req = req.filter(|r| r.command_type == CommandType::Ram && sw == 0x6A86)?;
    let text = req.data.apdus.get(executed.checked_sub(1)?)?;
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let apdu = hex::decode(clean).ok()?;
    match apdu.get(..4)? {
        [cla, 0xF2, _, p2] if cla & 0xF0 == 0x80 && p2 & 0x02 != 0 => Some(format!(
            "GET STATUS P2 {p2:02X} asks for the TLV format, which a GlobalPlatform 2.1.1 card \
             refuses: send it again with P2 {:02X} and set the card profile's gp.version to \
             \"2.1.1\"",
            p2 & 0x01
        )),
        _ => None,
    }
}

/// `porStatus` of a command that ended without a PoR.
pub const NO_POR_STATUS: &str = "none";

/// The transition of a command that ended without a PoR, as its SPI asked (TS 102 225 clause
/// 5.1.1): delivered with no PoR asked for, or with a PoR asked on error only and none come
/// within the wait. Its response says so instead of a PoR status.
pub fn no_por_transition(por: PorRequirement, wait_secs: u64, at: Millis) -> Transition {
    let (name, detail) = match por {
        PorRequirement::OnError => (
            "no error PoR",
            format!(
                "delivered; the SPI asks for a PoR on error only, and none came within {wait_secs} s"
            ),
        ),
        _ => (
            "no PoR requested",
            "delivered; the SPI asks for no PoR".to_string(),
        ),
    };
    Transition {
        from: vec![CommandStatus::Sent, CommandStatus::Delivered],
        to: CommandStatus::Success,
        event: "SUCCESS".into(),
        detail,
        response: Some(CardResponse {
            por_status: NO_POR_STATUS.into(),
            por_status_name: name.into(),
            status_code: None,
            data: None,
            executed: None,
            status_words: Vec::new(),
        }),
        error: None,
        at,
        new_keys: None,
        events: Vec::new(),
    }
}

/// The transition of a command failing for `code`.
pub fn failure(code: ErrorCode, message: String, at: Millis) -> Transition {
    Transition {
        from: vec![
            CommandStatus::Pending,
            CommandStatus::Sent,
            CommandStatus::Delivered,
        ],
        to: CommandStatus::Failed,
        event: "FAILED".into(),
        detail: message.clone(),
        response: None,
        error: Some(CommandError { code, message }),
        at,
        new_keys: None,
        events: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_status_words() {
        for sw in [0x9000, 0x6110, 0x9112, 0x9F0F] {
            assert!(sw_is_success(sw), "{sw:04X}");
        }
        for sw in [0x6A82, 0x6982, 0x6F00, 0x9400] {
            assert!(!sw_is_success(sw), "{sw:04X}");
        }
    }

    #[test]
    fn get_status_6a86_hint() {
        let req: OtaCommandRequest = serde_json::from_value(serde_json::json!({
            "type": "RAM",
            "target": {"iccid": "8949000000000000001"},
            "security": {"spi": "1621", "kic": "15", "kid": "15", "tar": "000000"},
            "data": {"apdus": ["80E60C0000", "80F2 4002 02 4F00 00", "80F24000024F0000"]},
        }))
        .unwrap();
        let hint = get_status_hint(Some(&req), 2, 0x6A86).unwrap();
        assert!(hint.contains("send it again with P2 00"), "{hint}");
        assert_eq!(get_status_hint(Some(&req), 2, 0x6A88), None);
        assert_eq!(get_status_hint(Some(&req), 3, 0x6A86), None);
        assert_eq!(get_status_hint(Some(&req), 1, 0x6A86), None);
        assert_eq!(get_status_hint(Some(&req), 0, 0x6A86), None);
        assert_eq!(get_status_hint(None, 2, 0x6A86), None);
    }
}
