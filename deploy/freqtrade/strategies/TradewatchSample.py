# The local stack's dry-run strategy (docker-compose.yml): a plain EMA crossover with an RSI
# filter, long and short, at 2x. It exists to make trades open and close so the dashboards
# have something to show; it is not a trading recommendation.
from pandas import DataFrame

from freqtrade.strategy import IStrategy


def _ema(series, span: int):
    return series.ewm(span=span, adjust=False).mean()


def _rsi(close, period: int = 14):
    delta = close.diff()
    gain = delta.clip(lower=0).ewm(alpha=1 / period, adjust=False).mean()
    loss = (-delta.clip(upper=0)).ewm(alpha=1 / period, adjust=False).mean()
    return 100 - 100 / (1 + gain / loss)


class TradewatchSample(IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "5m"
    can_short = True
    minimal_roi = {"0": 0.04, "60": 0.02, "180": 0.0}
    stoploss = -0.08
    startup_candle_count = 60
    process_only_new_candles = True

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["ema_fast"] = _ema(dataframe["close"], 9)
        dataframe["ema_slow"] = _ema(dataframe["close"], 21)
        dataframe["rsi"] = _rsi(dataframe["close"])
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        above = dataframe["ema_fast"] > dataframe["ema_slow"]
        crossed_up = above & ~above.shift(1, fill_value=False)
        crossed_down = ~above & above.shift(1, fill_value=False)
        dataframe.loc[crossed_up & (dataframe["rsi"] < 70), "enter_long"] = 1
        dataframe.loc[crossed_down & (dataframe["rsi"] > 30), "enter_short"] = 1
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe.loc[dataframe["rsi"] > 75, "exit_long"] = 1
        dataframe.loc[dataframe["rsi"] < 25, "exit_short"] = 1
        return dataframe

    def leverage(self, pair, current_time, current_rate, proposed_leverage, max_leverage,
                 entry_tag, side, **kwargs) -> float:
        return min(2.0, max_leverage)
