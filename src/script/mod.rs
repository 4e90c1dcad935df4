//! Remote APDU scripts (ETSI TS 102 226).
//!
//! Sans-IO building and parsing of what travels inside a secured packet's data:
//!
//! - [`CApdu`] / [`RApdu`]: short APDUs (ISO/IEC 7816-4).
//! - [`CommandScript`] in a [`ScriptFormat`]: compact (clause 5.1) or expanded with the
//!   Command Scripting template `AA` / `AE` (clause 5.2); [`pack_scripts`] fills byte budgets.
//! - [`ScriptResponse`]: compact and expanded (`AB` / `AF`) responses.
//! - [`rfm`]: SELECT, READ/UPDATE BINARY and RECORD for GSM (A0) and UICC (00) classes.
//! - [`ram`] and [`cap`]: GlobalPlatform INSTALL, LOAD, DELETE, GET STATUS and CAP files.
//! - [`gp`]: GlobalPlatform PUT KEY for the OTA key sets (KIc, KID, KIK), both sides.

pub mod apdu;
pub mod ber;
pub mod cap;
pub mod command;
pub mod error;
pub mod gp;
pub mod ram;
pub mod response;
pub mod rfm;
pub mod status_word;
pub mod subscription;

pub use apdu::{parse_c_apdu, parse_r_apdu, ApduCase, CApdu, RApdu};
pub use ber::{encode_ber_length, parse_ber_length};
pub use cap::{CapFile, Component, HeaderInfo, LoadFile};
pub use command::{
    pack_scripts, parse_command_script, CommandScript, PackedScript, ScriptFormat, ScriptItem,
};
pub use error::ScriptError;
pub use gp::KcvFill;
pub use ram::{
    Aid, FileAccess, GpVersion, InstallParameters, MenuEntry, Privileges, StatusFormat,
    StatusSubset, ToolkitParameters,
};
pub use response::{
    parse_compact_response, parse_expanded_response, parse_script_response, parse_status_words,
    BadFormat, ScriptResponse,
};
pub use rfm::{CardClass, RecordMode};
