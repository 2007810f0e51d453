//! What the NAB corpus tests share.

use std::path::PathBuf;

/// The NAB corpus, if it is here: `$TELLTALE_NAB_DIR`, else `../shared/datasets/nab` beside the
/// repository. The corpus is not part of the repository (its licence allows it, but it is
/// 60 MB of data): without it a test prints one line saying it was skipped and how to get the
/// corpus, and passes, unless `TELLTALE_REQUIRE_NAB=1`, where a missing corpus fails the test.
/// `needs` is a path inside the corpus the test reads (`data`, `reference-scores`).
pub(crate) fn nab_dir(test: &str, needs: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("TELLTALE_NAB_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets/nab"),
        PathBuf::from,
    );
    if dir.join(needs).is_dir() {
        return Some(dir);
    }
    let required = std::env::var("TELLTALE_REQUIRE_NAB").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "TELLTALE_REQUIRE_NAB=1 but the NAB corpus is not at {} (no `{needs}` folder); set \
         TELLTALE_NAB_DIR to a checkout of the public numenta/NAB repository",
        dir.display()
    );
    eprintln!(
        "skipped {test}: the NAB corpus is not at {} (set TELLTALE_NAB_DIR to a checkout of the \
         public numenta/NAB repository to run it)",
        dir.display()
    );
    None
}
