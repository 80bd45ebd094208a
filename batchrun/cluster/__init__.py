"""The Ray engine (``run --engine ray``): the same run spread over a cluster.

One governor keeps the global rate, the spending cap and the shared pauses and leases them
out in chunks (``governor``, ``leases``); dispatch workers run the local engine's runner over
shards of manifest lines they read themselves (``worker``, ``shards``); the driver is the only
writer of the run directory and journals answers as they arrive (``driver``). Only
``ray_runtime`` imports Ray, and only when a run asks for this engine: the core install does
not have it (``pip install 'batchrun[ray]'``).
"""
