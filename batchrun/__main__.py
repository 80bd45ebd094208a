"""``python -m batchrun``: the ``batchrun`` command, for when the console script is not on PATH
(a venv not activated, or ``pip install --user`` without ~/.local/bin on PATH)."""

from batchrun.cli import main

if __name__ == "__main__":
    main()
