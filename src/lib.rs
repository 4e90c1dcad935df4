//! otagw: an over-the-air gateway for SIM cards.
pub mod command;
pub mod correlation;
pub mod dispatch;
pub mod script;
pub mod security;
pub mod sim;
pub mod store;
