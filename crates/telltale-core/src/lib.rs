#![doc = include_str!("../README.md")]

pub mod event;
pub mod key;
pub mod reject;
pub mod time;
