"""``python -m batchrun.cli``: the console entry point."""

from batchrun.cli import main

main()
