#![doc = include_str!("../README.md")]

pub mod corpus;
pub mod html;
pub mod labels;
pub mod llm;
pub mod report;
pub mod run;
pub mod scorer;
pub mod throughput;

/// Errors reading a corpus, labels or results.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file's content is not what the layout promises.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}
