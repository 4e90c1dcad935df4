//! SCP81 (GlobalPlatform Amendment B, remote application management over HTTP) for otagw:
//! the card-facing HTTP exchange (sans-IO), the administration session triggering parameters,
//! and a PSK-TLS server on OpenSSL (rustls has no TLS-PSK).
//!
//! The server drives [`server::AdminSessions`] and [`server::PskDirectory`], which the gateway
//! implements over its store; [`client`] plays the card (virtual UICC, tests, benchmark).

pub mod admin;
pub mod client;
pub mod server;
pub mod trigger;
