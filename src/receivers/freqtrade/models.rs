//! The parts of Freqtrade's REST responses the receiver reads (API 2.x, Freqtrade 2026.9).
//!
//! Unknown fields are ignored (newer bots add fields), and every number is optional:
//! Freqtrade serializes inf/NaN as `null` (`profit_factor` with no losing trade), and a
//! missing or null value must give no point rather than a zero.

use serde::Deserialize;

/// `GET /show_config` (only what the metrics and attributes need).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ShowConfig {
    pub version: Option<String>,
    /// `running`, `paused`, `stopped`; empty in `freqtrade webserver` mode.
    pub state: Option<String>,
    pub runmode: Option<String>,
    pub strategy: Option<String>,
    pub exchange: Option<String>,
    pub trading_mode: Option<String>,
    pub max_open_trades: Option<f64>,
    pub stake_currency: Option<String>,
    pub bot_name: Option<String>,
}

/// `GET /profit`. `*_ratio` fields are ratios (0..1); drawdowns come from closed trades only.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Profit {
    pub profit_closed_coin: Option<f64>,
    pub profit_closed_ratio: Option<f64>,
    pub profit_all_coin: Option<f64>,
    pub profit_all_ratio: Option<f64>,
    pub trade_count: Option<u64>,
    pub closed_trade_count: Option<u64>,
    pub winning_trades: Option<u64>,
    pub losing_trades: Option<u64>,
    pub profit_factor: Option<f64>,
    pub winrate: Option<f64>,
    pub expectancy: Option<f64>,
    pub max_drawdown: Option<f64>,
    pub max_drawdown_abs: Option<f64>,
    pub current_drawdown: Option<f64>,
    pub current_drawdown_abs: Option<f64>,
    /// Milliseconds since the epoch: the start time of the cumulative trade counters.
    pub bot_start_timestamp: Option<u64>,
}

/// One open trade of `GET /status`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Trade {
    pub trade_id: u64,
    pub pair: String,
    pub is_short: bool,
    pub amount: Option<f64>,
    /// Margin: notional / leverage.
    pub stake_amount: Option<f64>,
    pub open_rate: Option<f64>,
    pub current_rate: Option<f64>,
    pub leverage: Option<f64>,
    pub liquidation_price: Option<f64>,
    pub profit_ratio: Option<f64>,
    pub profit_abs: Option<f64>,
}

/// `GET /balance` (the totals; `currencies` only for the stake currency's free amount).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Balance {
    pub total: Option<f64>,
    pub stake: Option<String>,
    pub currencies: Vec<Currency>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Currency {
    pub currency: String,
    pub free: Option<f64>,
    pub balance: Option<f64>,
    pub is_position: bool,
}

impl Balance {
    /// What is free to trade: the stake currency's own row (positions are rows too).
    pub fn free(&self) -> Option<f64> {
        let stake = self.stake.as_deref()?;
        self.currencies
            .iter()
            .find(|c| c.currency == stake && !c.is_position)
            .and_then(|c| c.free)
    }
}

/// `GET /count`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Count {
    pub current: Option<u64>,
    pub max: Option<f64>,
    /// Notional of the open trades (Σ open_rate × amount), not their margin.
    pub total_stake: Option<f64>,
}

/// `POST /token/login` and `POST /token/refresh` (which returns no refresh token).
#[derive(Debug, Clone, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// Everything one poll read.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub config: ShowConfig,
    pub profit: Profit,
    pub trades: Vec<Trade>,
    pub balance: Balance,
    /// Absent while the bot is stopped: `/count` then answers 502.
    pub count: Option<Count>,
}
