"""Reading a run directory for people: ``status`` (totals, what is left), ``export`` (Parquet,
JSONL, OpenAI batch lines), ``report`` (the HTML report: ``run_facts`` and ``estimated`` read
its header, ``report_data`` folds the journal, ``report_html``, ``report_charts``, ``svg`` and
``axes`` draw it). May import every layer below it, up to ``plan`` (status and the report
estimate the manifest with the preflight's rules)."""
