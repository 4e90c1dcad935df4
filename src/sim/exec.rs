//! Running a remote command script (TS 102 226 clause 5) against an applet and encoding its
//! response in the same format.

use crate::script::ber::Reader;
use crate::script::{
    parse_command_script, BadFormat, CApdu, RApdu, ScriptError, ScriptFormat, ScriptItem,
    ScriptResponse,
};

/// Something on the card that executes C-APDUs.
pub(crate) trait Applet {
    /// Executes one command; never fails, errors are status words.
    fn execute(&mut self, apdu: &CApdu) -> RApdu;
}

/// What a script run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScriptRun {
    /// The response data for the PoR (compact or expanded, as the command came).
    pub response: Vec<u8>,
    /// Commands executed (the failing one included).
    pub executed: usize,
    /// Status word of the last command executed.
    pub last_sw: Option<u16>,
    /// Whether execution stopped on an error status word, or the script was malformed.
    pub failed: bool,
}

/// Status word given to a compact command the card cannot split off (its P3 runs past the end).
const SW_WRONG_LENGTH: u16 = 0x6700;

/// Runs `data` as a script: expanded if it starts with `AA`/`AE` ([`ScriptFormat::detect`]),
/// compact otherwise. Execution stops at the first command whose status word is an error
/// ([`RApdu::is_success`] false).
pub(crate) fn run_script(applet: &mut dyn Applet, data: &[u8]) -> ScriptRun {
    match ScriptFormat::detect(data) {
        ScriptFormat::Compact => run_compact(applet, data),
        format => run_expanded(applet, data, format),
    }
}

/// Compact format (clause 5.1): commands are split off one by one, as a card reads them, so the
/// commands before a malformed one still run. A command that cannot be split off counts as
/// executed with 6700 (wrong length). The response is the executed count, the last status word
/// and the last response data; an empty script gets an empty response.
fn run_compact(applet: &mut dyn Applet, data: &[u8]) -> ScriptRun {
    let mut r = Reader::new(data);
    let mut executed = 0usize;
    let mut last: Option<RApdu> = None;
    let mut failed = false;
    while !r.is_empty() {
        executed += 1;
        let answer = match CApdu::read_compact(&mut r) {
            Ok(c) => applet.execute(&c),
            Err(_) => {
                failed = true;
                last = Some(RApdu::new(Vec::new(), SW_WRONG_LENGTH));
                break;
            }
        };
        let ok = answer.is_success();
        last = Some(answer);
        if !ok {
            failed = true;
            break;
        }
    }
    let mut response = Vec::new();
    if let Some(last) = &last {
        response.reserve(3 + last.data.len());
        response.push(u8::try_from(executed).unwrap_or(u8::MAX));
        response.extend_from_slice(&last.sw.to_be_bytes());
        response.extend_from_slice(&last.data);
    }
    ScriptRun {
        response,
        executed,
        last_sw: last.map(|r| r.sw),
        failed,
    }
}

fn bad_format(e: &ScriptError) -> BadFormat {
    match e {
        ScriptError::UnexpectedTag { .. } | ScriptError::MultiOctetTag { .. } => {
            BadFormat::UnknownTag
        }
        ScriptError::IndefiniteLength(_)
        | ScriptError::MissingEndOfContents(_)
        | ScriptError::BerLengthUnsupported(_) => BadFormat::LengthMissing,
        _ => BadFormat::WrongLength,
    }
}

/// Expanded format (clause 5.2): the whole Command Scripting template is parsed first; if it is
/// malformed nothing runs and the response carries the Bad Format TLV `90`. Otherwise one R-APDU
/// TLV per executed command, and the executed count `80`, in an `AB` (for `AA`) or `AF` (for
/// `AE`) template. Immediate Action, Error Action and Script Chaining TLVs are accepted and
/// ignored.
fn run_expanded(applet: &mut dyn Applet, data: &[u8], format: ScriptFormat) -> ScriptRun {
    let mut resp = ScriptResponse::default();
    let mut failed = false;
    match parse_command_script(data, format) {
        Err(e) => {
            resp.bad_format = Some(bad_format(&e));
            failed = true;
        }
        Ok(script) => {
            for item in &script.items {
                if let ScriptItem::Command(c) = item {
                    let answer = applet.execute(c);
                    let ok = answer.is_success();
                    resp.responses.push(answer);
                    if !ok {
                        failed = true;
                        break;
                    }
                }
            }
        }
    }
    resp.executed = resp.responses.len();
    let last_sw = resp.last().map(|r| r.sw);
    let executed = resp.executed;
    // R-APDUs are at most 255 + 2 octets each and a packet holds at most 65535 octets of
    // commands, so the template length stays within what the encoder takes; an empty template
    // is the fallback.
    let response = resp.encode(format).unwrap_or_default();
    ScriptRun {
        response,
        executed,
        last_sw,
        failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::{parse_compact_response, parse_expanded_response, CommandScript};

    /// Answers 9000 with INS as data, or the SW in P1P2 when INS is EE.
    struct Echo(usize);

    impl Applet for Echo {
        fn execute(&mut self, c: &CApdu) -> RApdu {
            self.0 += 1;
            if c.ins() == 0xEE {
                RApdu::new(Vec::new(), u16::from_be_bytes([c.p1(), c.p2()]))
            } else {
                RApdu::new(vec![c.ins()], 0x9000)
            }
        }
    }

    fn cmds(spec: &[(u8, u16)]) -> Vec<CApdu> {
        spec.iter()
            .map(|&(ins, p)| {
                let [p1, p2] = p.to_be_bytes();
                CApdu::new(0x00, ins, p1, p2, vec![1, 2, 3], None).unwrap()
            })
            .collect()
    }

    #[test]
    fn compact_stops_at_first_error() {
        let script = CommandScript::from_commands(cmds(&[(0x10, 0), (0xEE, 0x6A82), (0x11, 0)]))
            .encode(ScriptFormat::Compact)
            .unwrap();
        let mut a = Echo(0);
        let run = run_script(&mut a, &script);
        assert_eq!(a.0, 2);
        assert_eq!(
            (run.executed, run.last_sw, run.failed),
            (2, Some(0x6A82), true)
        );
        let r = parse_compact_response(&run.response).unwrap();
        assert_eq!((r.executed, r.last().unwrap().sw), (2, 0x6A82));

        let ok = CommandScript::from_commands(cmds(&[(0x10, 0), (0xEE, 0x9000), (0x11, 0)]))
            .encode(ScriptFormat::Compact)
            .unwrap();
        let run = run_script(&mut Echo(0), &ok);
        assert_eq!(run.response, vec![3, 0x90, 0x00, 0x11]);
        assert!(!run.failed);
    }

    #[test]
    fn compact_malformed_tail() {
        // One good command, then a header whose P3 runs past the end.
        let script = hex::decode("00100000010A00D60000050102").unwrap();
        let run = run_script(&mut Echo(0), &script);
        assert_eq!(
            (run.executed, run.last_sw, run.failed),
            (2, Some(0x6700), true)
        );
        assert_eq!(run.response, vec![2, 0x67, 0x00]);
        let empty = run_script(&mut Echo(0), &[]);
        assert_eq!((empty.executed, empty.response.len()), (0, 0));
    }

    #[test]
    fn expanded_both_forms() {
        for (format, tag) in [
            (ScriptFormat::ExpandedDefinite, 0xAB),
            (ScriptFormat::ExpandedIndefinite, 0xAF),
        ] {
            let script =
                CommandScript::from_commands(cmds(&[(0x10, 0), (0xEE, 0x6985), (0x11, 0)]))
                    .encode(format)
                    .unwrap();
            let run = run_script(&mut Echo(0), &script);
            assert_eq!(run.response[0], tag);
            let r = parse_expanded_response(&run.response).unwrap();
            assert_eq!(r.executed, 2);
            assert_eq!(
                r.status_words(),
                vec![(0x9000, vec![0x10]), (0x6985, vec![])]
            );
            assert!(run.failed);
        }
        let run = run_script(&mut Echo(0), &hex::decode("AA03990100").unwrap());
        let r = parse_expanded_response(&run.response).unwrap();
        assert_eq!((r.executed, r.bad_format), (0, Some(BadFormat::UnknownTag)));
        let run = run_script(&mut Echo(0), &hex::decode("AE80220400A4").unwrap());
        assert_eq!(
            parse_expanded_response(&run.response).unwrap().bad_format,
            Some(BadFormat::WrongLength)
        );
    }
}
