//! Remote APDU scripts (ETSI TS 102 226).
