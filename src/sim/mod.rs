//! The virtual UICC: the card side of SCP80, a file system, RFM and RAM applets, fleets.
