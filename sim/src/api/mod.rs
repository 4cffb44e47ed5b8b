//! owned by the API-server work
