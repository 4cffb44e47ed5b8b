//! Sim configuration (nodes, durations, data dir, faults).
