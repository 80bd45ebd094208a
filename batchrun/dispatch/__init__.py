"""Sending a plan's rows: the runner (the only module that knows every part), rate limiting
(``ratelimit``), retries (``retrying``), the circuit breaker, the byte budget
(``membudget``), the row channel, the event loop set-up (``eventloop``), progress counters and
pricing a prepared request on its way out (``prepare``). It reports what happened
(``RunOutcome``); it does not decide how it is shown. May import every layer below it."""
