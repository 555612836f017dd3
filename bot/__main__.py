"""`python -m bot` runs the `arbbot` command line."""

from bot.cli import main

main()
