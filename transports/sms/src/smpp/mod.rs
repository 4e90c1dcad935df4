//! SMPP 3.4 ESME session (client side) on the rusmpp codec, implementing the Transport contract.
