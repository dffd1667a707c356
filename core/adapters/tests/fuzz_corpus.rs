//! The fuzz targets' committed corpora (`fuzz/corpus/<target>/`) replayed as ordinary tests: every
//! file through the same function its fuzz target runs (`albra_adapters::fuzzing`), so `make test`
//! checks on the stable toolchain what `make fuzz` found and the seeds it starts from.

use albra_adapters::fuzzing::TARGETS;
use std::path::{Path, PathBuf};

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

/// The files of one target's corpus, sorted (a failure names the same file on every run).
fn files(target: &str) -> Vec<PathBuf> {
    let dir = corpus_root().join(target);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn every_target_has_a_seed_corpus_and_every_corpus_a_target() {
    for (name, _) in TARGETS {
        assert!(
            !files(name).is_empty(),
            "fuzz/corpus/{name} is missing or empty"
        );
        // The fuzz target runs this very function.
        let target = corpus_root().join(format!("../fuzz_targets/{name}.rs"));
        let source = std::fs::read_to_string(&target)
            .unwrap_or_else(|e| panic!("no fuzz target {}: {e}", target.display()));
        assert!(
            source.contains(&format!("albra_adapters::fuzzing::{name}(")),
            "{} does not call albra_adapters::fuzzing::{name}",
            target.display()
        );
    }
    for dir in std::fs::read_dir(corpus_root()).expect("fuzz/corpus") {
        let name = dir.expect("corpus folder").file_name();
        let name = name.to_string_lossy();
        assert!(
            TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz/corpus/{name} belongs to no target in albra_adapters::fuzzing::TARGETS"
        );
    }
}

#[test]
fn every_corpus_file_passes_its_target() {
    let mut replayed = 0;
    let mut failed = Vec::new();
    for (name, run) in TARGETS {
        for file in files(name) {
            let data = std::fs::read(&file).expect("corpus file");
            // Each failure is printed by the panic hook; all of them are listed at the end.
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                let file = file
                    .file_name()
                    .expect("file name")
                    .to_string_lossy()
                    .into_owned();
                failed.push(format!("fuzz/corpus/{name}/{file}"));
            }
            replayed += 1;
        }
    }
    assert!(failed.is_empty(), "failed: {failed:#?}");
    assert!(replayed >= TARGETS.len());
}
