//! otagw: an over-the-air gateway for SIM cards.
//!
//! # Module map
//!
//! Layers, lowest first; a module uses its own layer and the ones below, and no two modules use
//! each other (both checked by `tests/layers.rs`):
//!
//! 0. [`clock`], [`rfc3339`], `digits` (ICCID, IMSI, MSISDN and their EF codings, Luhn),
//!    [`security`] (SCP80, sans-IO), [`logging`];
//! 1. [`script`] (remote APDU formats and builders), [`correlation`];
//! 2. [`dispatch`] (a secured command and how its PoR is matched);
//! 3. [`command`]: the command model (requests, results, transport objects, script building),
//!    and [`events`], the typed events it reports;
//! 4. [`store`]: SQLite and PostgreSQL (it writes events to the outbox with their changes);
//! 5. [`delivery`]: the outbox worker and webhooks;
//! 6. the engine: [`pipeline`] (one tower layer per file), [`gateway`] (claims, results,
//!    inbound PoRs, housekeeping, SCP81 and CAT_TP drivers), [`campaign`], [`provision`]
//!    (vendor files: their format in `provision::vendor`, read by the simulator's fleets too),
//!    [`subscription`] (the Secure Router: subscription operations, notifications, audits,
//!    bootstrap plans);
//! 7. [`api`], the REST API, and [`console`], the operators' web console (HTML, sessions);
//! 8. the edge: [`config`], [`server`], the CLI (`src/cli`), and the far-side tools used by
//!    tests, demos and load commands: [`sim`] (virtual cards), [`devkit`].
pub mod api;
pub mod campaign;
pub mod clock;
pub mod command;
pub mod config;
pub mod console;
pub mod correlation;
pub mod delivery;
pub mod devkit;
pub(crate) mod digits;
pub mod dispatch;
pub mod events;
pub mod gateway;
pub mod logging;
pub mod pipeline;
pub mod provision;
pub mod rfc3339;
pub mod script;
pub mod security;
pub mod server;
pub mod sim;
pub mod store;
pub mod subscription;
