//! What the NAB corpus tests share.

use std::io::Write;
use std::path::PathBuf;

/// The NAB corpus, if `$TELLTALE_NAB_DIR` points at it. The corpus is not part of the
/// repository: without it a test prints one line saying it was skipped and how to get the
/// corpus, and passes, unless `TELLTALE_REQUIRE_NAB=1`, where a missing corpus fails the test.
/// `needs` is a path inside the corpus the test reads (`data`, `reference-scores`).
pub(crate) fn nab_dir(test: &str, needs: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("TELLTALE_NAB_DIR").map(PathBuf::from);
    if let Some(dir) = dir.as_ref().filter(|d| d.join(needs).is_dir()) {
        return Some(dir.clone());
    }
    let at = dir.map_or_else(
        || "TELLTALE_NAB_DIR is not set".to_owned(),
        |d| format!("{} has no `{needs}` folder", d.display()),
    );
    let required = std::env::var("TELLTALE_REQUIRE_NAB").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "TELLTALE_REQUIRE_NAB=1 but the NAB corpus is missing ({at}); set TELLTALE_NAB_DIR to a \
         checkout of the public numenta/NAB repository"
    );
    // Written to stderr directly, not with `eprintln!`, which the test harness captures and
    // shows only for failing tests: a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "skipped {test}: the NAB corpus is missing ({at}); set TELLTALE_NAB_DIR to a checkout of \
         the public numenta/NAB repository to run it"
    );
    None
}
