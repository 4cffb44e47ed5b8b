//! Adapter between the engine's journal and the `vast-state` crate (sled + bincode live there).
