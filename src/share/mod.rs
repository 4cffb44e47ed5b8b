//! Share providers (nextcloud, gdrive) and the external-provider protocol.
//!
//! Not built yet: see the results-data-path issue.
