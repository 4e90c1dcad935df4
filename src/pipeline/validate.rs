//! validate: the request parses and its fields are well formed (the API runs the same checks
//! before it stores a command, so a failure here means the stored request went bad).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::{Job, JobError, ValidJob};
use crate::command::{CommandType, ErrorCode, HexOrNumber, OtaCommandRequest};
use crate::security::{PorRequirement, Spi, Tar};

pub use crate::command::FieldError;

/// The security settings, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidSecurity {
    /// SPI.
    pub spi: Spi,
    /// KIc octet.
    pub kic: u8,
    /// KID octet.
    pub kid: u8,
    /// TAR.
    pub tar: Tar,
}

impl ValidSecurity {
    /// The key version whose counter the card checks: KID's when there is integrity, else KIc's
    /// (as the card side does).
    pub fn counter_version(&self) -> u8 {
        self.spi.counter_version(self.kic, self.kid)
    }
}

/// Exactly `N` octets of hex, or an error naming `field`.
pub fn hex_octets<const N: usize>(field: &str, s: &str) -> Result<[u8; N], FieldError> {
    let v = hex::decode(s.trim())
        .map_err(|e| FieldError::new(field, format!("{s:?} is not hex: {e}")))?;
    let len = v.len();
    v.try_into().map_err(|_| {
        FieldError::new(
            field,
            format!("must be {N} octet(s) ({} hex digits), got {len}", 2 * N),
        )
    })
}

/// Checks that `s` is `min` to `max` digits (a leading '+' allowed) and returns the digits.
pub fn digits(field: &str, s: &str, min: usize, max: usize) -> Result<String, FieldError> {
    let body = s.trim_start_matches('+');
    if body.len() < min || body.len() > max || !body.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldError::new(
            field,
            format!("{s:?} must be {min} to {max} digits"),
        ));
    }
    Ok(body.to_string())
}

/// Checks a request's fields; returns the parsed security settings.
pub fn validate_request(req: &OtaCommandRequest) -> Result<ValidSecurity, FieldError> {
    if let Some(id) = &req.command_id {
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(FieldError::new(
                "commandId",
                "must be 1 to 64 characters of letters, digits, '-', '_', '.', ':'",
            ));
        }
    }
    let iccid = req.target.iccid.trim_end_matches(['F', 'f']);
    digits("target.iccid", iccid, 18, 20)?;
    if let Some(imsi) = &req.target.imsi {
        digits("target.imsi", imsi, 6, 15)?;
    }
    if let Some(msisdn) = &req.target.msisdn {
        digits("target.msisdn", msisdn, 3, 15)?;
    }
    let spi = match &req.security.spi {
        HexOrNumber::Number(n) => u16::try_from(*n)
            .map_err(|_| FieldError::new("security.spi", format!("{n} does not fit 2 octets")))?
            .to_be_bytes(),
        HexOrNumber::Hex(s) => hex_octets::<2>("security.spi", s)?,
    };
    let [kic] = hex_octets::<1>("security.kic", &req.security.kic)?;
    let [kid] = hex_octets::<1>("security.kid", &req.security.kid)?;
    let tar = hex_octets::<3>("security.tar", &req.security.tar)?;
    let spi = Spi::from_bytes(spi);
    match spi.por {
        // TS 102 225 5.1.1: b2b1 = 11 of the second octet is reserved.
        PorRequirement::Reserved => {
            return Err(FieldError::new(
                "security.spi",
                "the PoR coding 11 (second octet, b2b1) is reserved; use 00 (no PoR), 01 (PoR \
                 always) or 10 (PoR on error only)",
            ))
        }
        // The new keys are stored once the card's PoR confirms them.
        PorRequirement::None | PorRequirement::OnError
            if req.command_type == CommandType::KeyUpdate =>
        {
            return Err(FieldError::new(
                "security.spi",
                "KEY_UPDATE needs a PoR always (second octet b2b1 = 01): only the card's PoR \
                 confirms the new keys",
            ))
        }
        _ => {}
    }
    if let Some(transport) = &req.transport {
        transport.check()?;
        transport.check_security(&spi)?;
    }
    if kic >> 4 == 0 && spi.ciphered {
        return Err(FieldError::new(
            "security.kic",
            "key version 0 in KIc, but the SPI asks for ciphering",
        ));
    }
    if let Some(0) = req.validity_period {
        return Err(FieldError::new(
            "validityPeriod",
            "must be at least 1 second",
        ));
    }
    match req.command_type {
        CommandType::Rfm | CommandType::Ram | CommandType::Subscription
            if req.data.apdus.is_empty() =>
        {
            return Err(FieldError::new(
                "data.apdus",
                format!("{} needs at least one C-APDU", req.command_type),
            ))
        }
        CommandType::FileUpdate | CommandType::AppInstall | CommandType::AppDelete
            if req.data.parameters.is_none() =>
        {
            return Err(FieldError::new(
                "data.parameters",
                format!("{} needs parameters", req.command_type),
            ))
        }
        _ => {}
    }
    Ok(ValidSecurity { spi, kic, kid, tar })
}

/// The layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidateLayer;

impl<S> Layer<S> for ValidateLayer {
    type Service = Validate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Validate { inner }
    }
}

/// The service.
#[derive(Debug, Clone)]
pub struct Validate<S> {
    inner: S,
}

impl<S> Service<Job> for Validate<S>
where
    S: Service<ValidJob, Error = JobError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = JobError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, JobError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, job: Job) -> Self::Future {
        let checked = serde_json::from_value::<OtaCommandRequest>(job.record.request.clone())
            .map_err(|e| FieldError::new("request", e.to_string()))
            .and_then(|req| validate_request(&req).map(|sec| (req, sec)));
        match checked {
            Ok((request, security)) => {
                let por_timeout = request
                    .transport
                    .as_ref()
                    .and_then(|t| t.check().ok())
                    .and_then(|t| t.timeout);
                Box::pin(self.inner.call(ValidJob {
                    job,
                    request,
                    security,
                    por_timeout,
                }))
            }
            Err(e) => Box::pin(async move {
                Err(JobError::Fail {
                    code: ErrorCode::InvalidState,
                    message: format!("stored request is not valid: {e}"),
                })
            }),
        }
    }
}
