//! Runtime glue: the process's log output (`[log]` in the configuration). Human-readable lines
//! by default, one JSON object per line with `format = "json"`; the level from `[log] level`,
//! overridden by `RUST_LOG` (a `tracing_subscriber` filter such as `info,otagw=debug`).
//!
//! Key values never reach a log line: the types that hold them (`Scp80Keys`, `PskRecord`,
//! `KeyMaterial`, `MasterKey`) print themselves redacted, and no event logs their bytes.

use std::str::FromStr;

use serde::Deserialize;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// How lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2026-12-07T03:50:31Z  INFO otagw::server: ...`
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields).
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?}: expected text or json")),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A filter: a level (`info`) or per-module directives (`info,otagw::gateway=debug`).
    /// `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log level {level:?}: {problem}")]
    Filter { level: String, problem: String },
    #[error("a log subscriber is already installed")]
    AlreadySet,
}

impl LogSettings {
    /// The filter: `RUST_LOG` if set, else `level`.
    fn filter(&self) -> Result<EnvFilter, LogError> {
        let level = std::env::var("RUST_LOG")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| self.level.clone());
        EnvFilter::try_new(&level).map_err(|e| LogError::Filter {
            level,
            problem: e.to_string(),
        })
    }

    /// A subscriber writing to `writer` (tests capture lines with their own writer).
    pub fn subscriber<W>(
        &self,
        writer: W,
    ) -> Result<Box<dyn tracing::Subscriber + Send + Sync>, LogError>
    where
        W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        let filter = self.filter()?;
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer);
        Ok(match self.format {
            LogFormat::Text => Box::new(builder.with_ansi(false).finish()),
            LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
        })
    }

    /// Installs the subscriber for the whole process, writing to standard error.
    pub fn install(&self) -> Result<(), LogError> {
        let subscriber = self.subscriber(std::io::stderr)?;
        tracing::subscriber::set_global_default(subscriber).map_err(|_| LogError::AlreadySet)
    }
}
