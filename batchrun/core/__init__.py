"""The vocabulary every layer shares: the typed error tree (``errors``), what one finished row
holds and the results schema (``result``), and what a server said about its rate limits
(``ratelimit_info``). The bottom layer: it imports nothing from batchrun but ``__version__``,
only the standard library and third-party packages."""
