//! Delivering events: the outbox worker that leases the store's outbox rows and hands them to
//! the webhooks, at least once and in order per command or campaign. The events themselves
//! ([`crate::events`]) sit below the store, which writes them with the changes they report;
//! this module sits above it.

pub mod outbox;
pub mod webhook;
