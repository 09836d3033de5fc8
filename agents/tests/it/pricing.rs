//! The price table: built-in list prices, prefix matching and TOML override files.

use std::path::PathBuf;

use agents::{
    PriceTable,
    llm::{OfflineModel, Usage},
    pricing::PricingError,
};

/// A file in the temp directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn with(name: &str, contents: &str) -> Self {
        let path = std::env::temp_dir().join(format!("agents-it-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).expect("write temp file");
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn usage() -> Usage {
    Usage { prompt_tokens: 10_000, completion_tokens: 2_000, cached_tokens: 4_000 }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn known_model_cost_is_the_tables_arithmetic() {
    let cost = PriceTable::builtin().cost("gpt-4o", &usage()).expect("gpt-4o is priced");
    // 6k uncached at $2.50, 4k cached at $1.25, 2k out at $10, per million tokens.
    assert!(close(cost, (6_000.0 * 2.50 + 4_000.0 * 1.25 + 2_000.0 * 10.0) / 1e6), "{cost}");
    let claude = PriceTable::builtin().cost("claude-3-5-haiku", &usage()).expect("haiku is priced");
    assert!(close(claude, (6_000.0 * 0.80 + 4_000.0 * 0.08 + 2_000.0 * 4.0) / 1e6), "{claude}");
    assert_eq!(PriceTable::builtin().cost(OfflineModel::MODEL, &usage()), Some(0.0));
}

#[test]
fn dated_model_ids_take_their_familys_price() {
    let table = PriceTable::builtin();
    for (dated, family) in [
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
    ] {
        assert_eq!(table.cost(dated, &usage()), table.cost(family, &usage()), "{dated}");
    }
    assert_ne!(table.cost("gpt-4o-mini", &usage()), table.cost("gpt-4o", &usage()));
}

#[test]
fn unknown_models_have_no_cost() {
    let table = PriceTable::builtin();
    assert_eq!(table.cost("llama3.1:8b", &usage()), None);
    assert_eq!(table.cost("gpt-4", &usage()), None, "gpt-4 is not a prefix family of gpt-4o");
}

#[test]
fn a_price_file_overrides_and_extends_the_builtin_table() {
    let file = TempFile::with(
        "prices.toml",
        r#"
[models."gpt-4o"]
input_per_mtok = 1.0
output_per_mtok = 4.0
cached_per_mtok = 0.5

[models."llama3.1:8b"]
input_per_mtok = 0.05
output_per_mtok = 0.08
"#,
    );

    let table = PriceTable::load_file(&file.0).expect("price file loads");

    let gpt = table.cost("gpt-4o-2024-08-06", &usage()).expect("overridden");
    assert!(close(gpt, (6_000.0 * 1.0 + 4_000.0 * 0.5 + 2_000.0 * 4.0) / 1e6), "{gpt}");
    // No cached price: cached tokens cost the input price.
    let llama = table.cost("llama3.1:8b", &usage()).expect("added");
    assert!(close(llama, (10_000.0 * 0.05 + 2_000.0 * 0.08) / 1e6), "{llama}");
    assert_eq!(table.cost("o3", &usage()), PriceTable::builtin().cost("o3", &usage()), "others unchanged");
}

#[test]
fn unusable_price_files_say_why() {
    let missing = std::env::temp_dir().join("agents-it-no-such-prices.toml");
    assert!(matches!(PriceTable::load_file(&missing), Err(PricingError::Read { .. })));

    let broken = TempFile::with("broken.toml", "[models.\"gpt-4o\"]\ninput_per_mtok = \"cheap\"\n");
    let err = PriceTable::load_file(&broken.0).expect_err("not a number");
    assert!(matches!(err, PricingError::Parse { .. }), "{err:?}");
    assert!(err.to_string().contains("broken.toml"), "{err}");

    let negative = TempFile::with("negative.toml", "[models.x]\ninput_per_mtok = 1.0\noutput_per_mtok = -2.0\n");
    let err = PriceTable::load_file(&negative.0).expect_err("negative price");
    assert_eq!(err.to_string(), "invalid price for model `x`: output_per_mtok must be a non-negative number");
}
