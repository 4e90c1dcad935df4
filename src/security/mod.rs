//! SCP80 (ETSI TS 102 225) secured packets, sans-IO.
