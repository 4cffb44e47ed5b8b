//! Download tests (written next).
