"""Kits shared by the test modules (no test module imports another): ``kit`` writes manifests
and job files and runs ``batchrun`` in-process or as a process; ``media`` makes sample media
files; ``error_table`` is the gateway's error table row by row."""
