"""The run directory on disk: lock and ``run.json`` (``rundir``), the append-only journal
(``journal``), its binary index (``records`` for the record layout, ``index`` for what it
says), request keys and the ``--reuse`` answer cache (``keys``, ``cache``), compaction into
``results.parquet`` (``compact``), a run's totals (``summary``), the job versions kept in
``run.json`` (``job_versions``) and retries by cause from the journal (``retries``). May import
every layer below it: ``core``, ``media``, ``cost``, ``manifest``, ``request``, ``api``."""
