//! The transport contract.
