"""`arbbot backtest`: recordings through the whole chain on a simulated clock, and the report of what happened."""
