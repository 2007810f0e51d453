#![doc = include_str!("../README.md")]

pub mod alert;
pub mod chain;
pub mod config;
pub mod front;
pub mod pipeline;
pub mod replay;
pub mod shard;
pub mod snapshot;

pub use config::{Config, ConfigError, Plan};
pub use pipeline::{Outputs, Pipeline, Report};
