//! The config file (being written).
