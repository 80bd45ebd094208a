"""The wire: the one HTTP client (``client``) and its reading of streamed bodies
(``stream_reader``), the SSE decoder (``sse``), parsing answers into a ``Completion`` (one JSON
body in ``response``, stream chunks in ``stream``, thought blocks and fields in ``thoughts``),
reading ``Retry-After`` and ``x-ratelimit-*`` headers (``retry_after``) and the plain-HTTP
warning (``endpoint_check``). It knows nothing of manifests, jobs, money or run directories: a
body goes in, an answer or a typed error comes out. May import ``core``, ``media``, ``cost``,
``manifest`` and ``request`` (it uses only ``core``)."""
