//! otagw: an over-the-air gateway for SIM cards.
pub mod api;
pub mod campaign;
pub mod command;
pub mod config;
pub mod correlation;
pub mod devkit;
pub mod dispatch;
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
