//! # vast-state
//!
//! The run store: the only code in vast that touches sled and bincode.
