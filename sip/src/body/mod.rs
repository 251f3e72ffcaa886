//! Pure parsers and builders of SIP presence bodies. No I/O, no actix.
