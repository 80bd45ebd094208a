"""Reading a run directory for people: ``status`` (totals, what is left), ``export`` (Parquet,
JSONL, OpenAI batch lines), ``report`` and ``svg`` (the HTML report and its charts). May
import every layer below it, up to ``plan`` (status estimates what is left with the preflight
scan)."""
