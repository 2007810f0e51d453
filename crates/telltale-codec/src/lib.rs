#![doc = include_str!("../README.md")]

pub mod columnar;
pub mod csv;
pub mod decode;
pub mod influx;
pub mod json;
pub mod llm;
pub mod otlp;
pub mod remote_write;
