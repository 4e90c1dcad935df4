//! SCP81 (GlobalPlatform Amendment B, remote application management over HTTP) for otagw:
//! the card-facing HTTP exchange (sans-IO), the administration session triggering parameters,
//! and a PSK-TLS server on OpenSSL (rustls has no TLS-PSK).
//!
//! Not yet wired into the gateway: the server drives [`server::AdminSessions`], which the
//! gateway will implement over its store.

pub mod admin;
pub mod server;
pub mod trigger;
