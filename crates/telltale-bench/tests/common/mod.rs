//! What the NAB corpus tests share.

use std::path::PathBuf;

/// The NAB corpus: `$TELLTALE_NAB_DIR`, or `../shared/datasets/nab` beside the repository
/// (where CI has it).
pub(crate) fn nab_dir() -> PathBuf {
    std::env::var_os("TELLTALE_NAB_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets/nab"),
        PathBuf::from,
    )
}
