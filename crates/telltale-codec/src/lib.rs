#![doc = include_str!("../README.md")]

pub mod columnar;
pub mod csv;
pub mod decode;
pub mod json;
pub mod llm;
