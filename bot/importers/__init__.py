"""Importers: turn real market data files into recordings."""
