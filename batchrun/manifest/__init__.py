"""What the user asks: the job spec (``job``: every knob, loaded from TOML with flag
overrides) and the manifest's rows, read as a stream from JSONL, Parquet or CSV (``reader`` and
the modules it uses). May import ``core``, ``media`` and ``cost``."""
