"""What the user asks: the job spec (``job``: every knob, loaded from TOML with flag
overrides; its own price: ``job_price``; what of it shapes a request: ``request_shape``) and
the manifest's rows, read as a stream from JSONL, Parquet or CSV (``reader`` and the modules it
uses; ``hints`` when no row can be sent). May import ``core``, ``media`` and ``cost``."""
