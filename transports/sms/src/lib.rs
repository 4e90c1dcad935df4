//! SMS-PP framing (TS 23.040, TS 31.115, TS 102 223): sans-IO.
