#![doc = include_str!("../README.md")]

pub mod alert;
pub mod chain;
pub mod codec;
pub mod columnar;
pub mod config;
pub mod event;
pub mod key;
pub mod labels;
pub mod llm;
pub mod pipeline;
pub mod replay;
pub mod shard;
pub mod time;

pub use config::{Config, ConfigError, Plan};
pub use pipeline::{Outputs, Pipeline, Report};
