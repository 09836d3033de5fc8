//! Model prices: USD per million input, output and cached-input tokens.
//!
//! Cost is derived from the usage a provider reports, never estimated by the provider
//! client, so one table prices every provider. An unknown model costs nothing and the
//! caller is told (`None`), so it can warn instead of failing a step over accounting.

use std::collections::HashMap;

use serde::Deserialize;

use crate::llm::Usage;

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct ModelPrice {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    /// Price of cached prompt tokens; defaults to the input price when a provider has no discount.
    #[serde(default)]
    pub cached_per_mtok: Option<f64>,
}

impl ModelPrice {
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let uncached = usage.prompt_tokens - cached;
        let cached_price = self.cached_per_mtok.unwrap_or(self.input_per_mtok);
        (uncached as f64 * self.input_per_mtok
            + cached as f64 * cached_price
            + usage.completion_tokens as f64 * self.output_per_mtok)
            / 1_000_000.0
    }
}

#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    prices: HashMap<String, ModelPrice>,
}

impl PriceTable {
    /// The built-in table. The offline model is free.
    pub fn builtin() -> Self {
        let mut table = Self::default();
        table.set(
            crate::llm::OfflineModel::MODEL,
            ModelPrice { input_per_mtok: 0.0, output_per_mtok: 0.0, cached_per_mtok: None },
        );
        table
    }

    pub fn set(&mut self, model: impl Into<String>, price: ModelPrice) {
        self.prices.insert(model.into(), price);
    }

    /// The cost of one call, or `None` when the model has no price.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        self.prices.get(model).map(|p| p.cost(usage))
    }
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
}
