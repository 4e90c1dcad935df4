//! resolve: the card and its keys from the store, and the counter reserved durably before
//! anything is built with it (a command resumed with its packet keeps its counter).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service, ServiceExt};

use super::{JobError, ResolvedJob, ValidJob};
use crate::command::ErrorCode;
use crate::security::{KeyConfig, Scp80Keys, SecurityError, Spi};
use crate::store::{KeySetRecord, Store};

/// The layer.
#[derive(Clone)]
pub struct ResolveLayer {
    store: Arc<dyn Store>,
}

impl ResolveLayer {
    /// Over a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

impl<S> Layer<S> for ResolveLayer {
    type Service = Resolve<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Resolve {
            inner,
            store: self.store.clone(),
        }
    }
}

/// The service.
#[derive(Clone)]
pub struct Resolve<S> {
    inner: S,
    store: Arc<dyn Store>,
}

fn fail(code: ErrorCode, message: impl Into<String>) -> JobError {
    JobError::Fail {
        code,
        message: message.into(),
    }
}

/// The SCP80 keys for KIc / KID octets from the card's key sets (KIc's set gives the ciphering
/// key, KID's the integrity key; their algorithms resolve implicit codings).
pub fn scp80_keys(
    spi: &Spi,
    kic: u8,
    kid: u8,
    kic_set: &KeySetRecord,
    kid_set: &KeySetRecord,
) -> Result<Scp80Keys, SecurityError> {
    let config = KeyConfig {
        kic_key: Some(&kic_set.keys.kic),
        kid_key: Some(&kid_set.keys.kid),
        kic_algorithm: kic_set.kic_algorithm,
        kid_algorithm: kid_set.kid_algorithm,
        cc_len: None,
    };
    Scp80Keys::resolve(spi, kic, kid, &config)
}

async fn resolve(store: &dyn Store, job: ValidJob) -> Result<ResolvedJob, JobError> {
    let sec = job.security;
    let record = &job.record;
    let card = store
        .card(&record.account_id, &record.iccid)
        .await?
        .ok_or_else(|| {
            fail(
                ErrorCode::InvalidState,
                format!("card {} not found", record.iccid),
            )
        })?;
    let req = &job.request;
    if let (Some(want), Some(have)) = (&req.target.imsi, &card.imsi) {
        if want != have {
            return Err(fail(
                ErrorCode::InvalidState,
                format!("target.imsi {want} is not the card's IMSI"),
            ));
        }
    }
    if let (Some(want), Some(have)) = (&req.target.msisdn, &card.msisdn) {
        if want.trim_start_matches('+') != have.trim_start_matches('+') {
            return Err(fail(
                ErrorCode::InvalidState,
                format!("target.msisdn {want} is not the card's MSISDN"),
            ));
        }
    }
    let key_set = |version: u8| async move {
        store.key_set(&record.iccid, version).await?.ok_or_else(|| {
            fail(
                ErrorCode::SecurityError,
                format!("card {} has no key set version {version}", record.iccid),
            )
        })
    };
    let kic_set = key_set(sec.kic >> 4).await?;
    let kid_set = if sec.kid >> 4 == sec.kic >> 4 {
        kic_set.clone()
    } else {
        key_set(sec.kid >> 4).await?
    };
    let keys = scp80_keys(&sec.spi, sec.kic, sec.kid, &kic_set, &kid_set)
        .map_err(|e| fail(ErrorCode::SecurityError, e.to_string()))?;
    let counter_version = sec.counter_version();
    let counter_set = if counter_version == kid_set.version {
        kid_set
    } else {
        kic_set
    };
    let counter = match &record.secured {
        Some(s) => s.counter,
        None => {
            store
                .reserve_counter(&record.iccid, counter_version)
                .await?
        }
    };
    Ok(ResolvedJob {
        valid: job,
        card,
        key_set: counter_set,
        keys,
        counter,
    })
}

impl<S> Service<ValidJob> for Resolve<S>
where
    S: Service<ResolvedJob, Error = JobError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = JobError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, JobError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, job: ValidJob) -> Self::Future {
        let store = self.store.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            let job = resolve(store.as_ref(), job).await?;
            inner.oneshot(job).await
        })
    }
}
