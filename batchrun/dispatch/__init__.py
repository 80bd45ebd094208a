"""Sending a plan's rows: the runner (the only module that knows every part), a row on its way
out (``flight``), journaling finished rows (``recording``), the interrupt watcher and fsync
timer (``background``), rate limiting (``ratelimit``), retries (``retrying``), the circuit
breaker, the byte budget (``membudget``), the row channel, the event loop set-up
(``eventloop``) and progress counters. It takes a plan (``plan.RunPlan``) and reports what
happened (``plan.RunOutcome``); how that is shown, progress and notices included, is the
caller's, through the callables the plan carries. May import every layer below it."""
