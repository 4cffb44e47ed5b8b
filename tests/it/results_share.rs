//! upload-to-share tests (written next).
