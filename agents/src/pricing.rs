//! Model prices: USD per million input, output and cached-input tokens.
//!
//! Cost is derived from the usage a provider reports, never estimated by the provider
//! client, so one table prices every provider. The built-in table holds the list prices of
//! common OpenAI and Anthropic models; a TOML file can override and extend it.
//!
//! Invariants: a model id is priced by its exact entry, else by the longest entry that is a
//! prefix of it ending at a `-` (so dated ids such as `gpt-4o-2024-08-06` or
//! `claude-3-5-sonnet-20241022` find their family, and `gpt-4o-mini` never takes the price
//! of `gpt-4o`); every price in a table is finite and non-negative; an unknown model costs
//! nothing and the caller is told (`None`), so it can warn instead of failing a step over
//! accounting.

use std::{collections::HashMap, path::Path};

use serde::Deserialize;

use crate::llm::Usage;

/// The price of one model.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// USD per million uncached prompt tokens.
    pub input_per_mtok: f64,
    /// USD per million completion tokens.
    pub output_per_mtok: f64,
    /// Price of cached prompt tokens; defaults to the input price when a provider has no discount.
    #[serde(default)]
    pub cached_per_mtok: Option<f64>,
}

impl ModelPrice {
    const fn new(input_per_mtok: f64, output_per_mtok: f64, cached_per_mtok: f64) -> Self {
        Self { input_per_mtok, output_per_mtok, cached_per_mtok: Some(cached_per_mtok) }
    }

    /// USD cost of `usage` at this price.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let uncached = usage.prompt_tokens - cached;
        let cached_price = self.cached_per_mtok.unwrap_or(self.input_per_mtok);
        (uncached as f64 * self.input_per_mtok
            + cached as f64 * cached_price
            + usage.completion_tokens as f64 * self.output_per_mtok)
            / 1_000_000.0
    }

    /// The first field that is negative or not a number.
    fn invalid_field(&self) -> Option<&'static str> {
        let bad = |v: f64| !v.is_finite() || v < 0.0;
        if bad(self.input_per_mtok) {
            Some("input_per_mtok")
        } else if bad(self.output_per_mtok) {
            Some("output_per_mtok")
        } else if self.cached_per_mtok.is_some_and(bad) {
            Some("cached_per_mtok")
        } else {
            None
        }
    }
}

/// List prices (USD per million tokens: input, output, cached input) of common models.
/// Families are keyed by their undated id; dated ids find them by prefix.
const BUILTIN_PRICES: &[(&str, ModelPrice)] = &[
    ("gpt-4o", ModelPrice::new(2.50, 10.00, 1.25)),
    ("gpt-4o-mini", ModelPrice::new(0.15, 0.60, 0.075)),
    ("gpt-4.1", ModelPrice::new(2.00, 8.00, 0.50)),
    ("gpt-4.1-mini", ModelPrice::new(0.40, 1.60, 0.10)),
    ("gpt-4.1-nano", ModelPrice::new(0.10, 0.40, 0.025)),
    ("o3", ModelPrice::new(2.00, 8.00, 0.50)),
    ("o3-mini", ModelPrice::new(1.10, 4.40, 0.55)),
    ("o4-mini", ModelPrice::new(1.10, 4.40, 0.275)),
    // Anthropic: cached = cache reads (a tenth of the input price).
    ("claude-3-5-haiku", ModelPrice::new(0.80, 4.00, 0.08)),
    ("claude-3-5-sonnet", ModelPrice::new(3.00, 15.00, 0.30)),
    ("claude-3-7-sonnet", ModelPrice::new(3.00, 15.00, 0.30)),
    ("claude-sonnet-4", ModelPrice::new(3.00, 15.00, 0.30)),
    ("claude-opus-4", ModelPrice::new(15.00, 75.00, 1.50)),
    // Opus 4.5 is priced below its family prefix `claude-opus-4`, so it needs its own entry.
    ("claude-opus-4-5", ModelPrice::new(5.00, 25.00, 0.50)),
    ("claude-haiku-4-5", ModelPrice::new(1.00, 5.00, 0.10)),
];

/// A price file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    /// The file could not be read.
    #[error("cannot read the price file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid price file {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Where and why.
        #[source]
        source: toml::de::Error,
    },
    /// A price is negative or not a number.
    #[error("invalid price for model `{model}`: {field} must be a non-negative number")]
    InvalidPrice {
        /// The model.
        model: String,
        /// The offending field.
        field: &'static str,
    },
}

/// The shape of a price file: `[models."<id>"]` tables of [`ModelPrice`] fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    #[serde(default)]
    models: HashMap<String, ModelPrice>,
}

/// Prices by model id; see the module docs for how ids are matched.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    prices: HashMap<String, ModelPrice>,
}

impl PriceTable {
    /// The built-in table: list prices of common OpenAI and Anthropic models; the offline
    /// model is free.
    pub fn builtin() -> Self {
        let mut table = Self::default();
        table.set(
            crate::llm::OfflineModel::MODEL,
            ModelPrice { input_per_mtok: 0.0, output_per_mtok: 0.0, cached_per_mtok: None },
        );
        for (model, price) in BUILTIN_PRICES {
            table.set(*model, *price);
        }
        table
    }

    /// The built-in table with the prices of the TOML file at `path` merged over it. Reads
    /// the file synchronously: call it at start-up, not on a busy runtime.
    ///
    /// ```toml
    /// [models."gpt-4o"]
    /// input_per_mtok = 2.5
    /// output_per_mtok = 10.0
    /// cached_per_mtok = 1.25
    /// ```
    pub fn load_file(path: impl AsRef<Path>) -> Result<Self, PricingError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| PricingError::Read { path: shown.clone(), source })?;
        let mut table = Self::builtin();
        table.merge_toml(&text).map_err(|err| match err {
            MergeError::Parse(source) => PricingError::Parse { path: shown, source },
            MergeError::Invalid(err) => err,
        })?;
        Ok(table)
    }

    /// Sets the price of `model`, replacing any earlier one.
    pub fn set(&mut self, model: impl Into<String>, price: ModelPrice) {
        self.prices.insert(model.into(), price);
    }

    /// The price of `model`: its own entry, else its longest priced prefix family.
    pub fn price(&self, model: &str) -> Option<&ModelPrice> {
        if let Some(price) = self.prices.get(model) {
            return Some(price);
        }
        self.prices
            .iter()
            .filter(|(family, _)| model.strip_prefix(family.as_str()).is_some_and(|rest| rest.starts_with('-')))
            .max_by_key(|(family, _)| family.len())
            .map(|(_, price)| price)
    }

    /// The cost of one call, or `None` when the model has no price.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        self.price(model).map(|p| p.cost(usage))
    }

    /// Merges the prices of a TOML document over this table; nothing changes on error.
    fn merge_toml(&mut self, text: &str) -> Result<(), MergeError> {
        let file: PriceFile = toml::from_str(text).map_err(MergeError::Parse)?;
        for (model, price) in &file.models {
            if let Some(field) = price.invalid_field() {
                return Err(MergeError::Invalid(PricingError::InvalidPrice { model: model.clone(), field }));
            }
        }
        self.prices.extend(file.models);
        Ok(())
    }
}

enum MergeError {
    Parse(toml::de::Error),
    Invalid(PricingError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_charges_cached_tokens_at_their_own_price() {
        let price = ModelPrice { input_per_mtok: 2.0, output_per_mtok: 8.0, cached_per_mtok: Some(0.5) };
        let usage = Usage { prompt_tokens: 1_000_000, completion_tokens: 500_000, cached_tokens: 400_000 };
        // 600k uncached * 2 + 400k cached * 0.5 + 500k out * 8, per million.
        assert!((price.cost(&usage) - (1.2 + 0.2 + 4.0)).abs() < 1e-9);
    }

    #[test]
    fn unknown_model_has_no_price() {
        assert_eq!(PriceTable::builtin().cost("gpt-unknown", &Usage::default()), None);
        assert_eq!(PriceTable::builtin().cost(crate::llm::OfflineModel::MODEL, &Usage::default()), Some(0.0));
    }

    #[test]
    fn prefixes_match_only_at_a_dash() {
        let table = PriceTable::builtin();
        assert_eq!(table.price("o3-2025-04-16"), table.price("o3"));
        assert_eq!(table.price("o3-mini-2025-01-31"), table.price("o3-mini"));
        assert_eq!(table.price("gpt-4o-mini-2024-07-18"), table.price("gpt-4o-mini"));
        assert_eq!(table.price("claude-opus-4-5-20251101"), table.price("claude-opus-4-5"));
        assert_eq!(table.price("claude-opus-4-1-20250805"), table.price("claude-opus-4"));
        assert_eq!(table.price("o3x"), None);
        assert_eq!(table.price("gpt-4oo"), None);
    }

    #[test]
    fn bad_files_change_nothing() {
        let mut table = PriceTable::builtin();
        let negative = "[models.\"gpt-4o\"]\ninput_per_mtok = -1.0\noutput_per_mtok = 1.0\n";
        assert!(matches!(table.merge_toml(negative), Err(MergeError::Invalid(PricingError::InvalidPrice { .. }))));
        let typo = "[models.\"gpt-4o\"]\ninput_per_mtoken = 1.0\noutput_per_mtok = 1.0\n";
        assert!(matches!(table.merge_toml(typo), Err(MergeError::Parse(_))));
        assert_eq!(table.price("gpt-4o"), Some(&ModelPrice::new(2.50, 10.00, 1.25)));
    }
}
