"""The risk/timing service: slippage, execution windows, sizing and limits for each signal."""
