"""Money and tokens, all pure: the one model catalog (``catalog``: price, context window,
output-token limit and media token rules per model, one lookup rule), token estimates of
messages (``tokens``), run estimates (``estimate``), what a built request may cost
(``request_cost``), the context-window check (``limits``), the spending cap (``budget``; what
a small one does to concurrency: ``cap_advice``) and calibration maths (``calibrate``). May
import ``core`` and ``media``."""
