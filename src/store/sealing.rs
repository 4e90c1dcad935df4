//! Placeholder: replaced by the store work (AES-256-GCM sealing of key values).
/// Master key.
pub struct MasterKey;
/// Sealing errors.
#[derive(Debug, thiserror::Error)]
#[error("sealing")]
pub struct SealingError;
