"""A run before and around dispatch: the session that ``run`` and ``estimate --calibrate``
both open (``session``: key, endpoint, lock, scan, confirm, begin, plan, release), ``run`` and
``estimate`` as functions that return what happened (``running``, ``estimating``,
``calibrating``), what a command is given before any session (``inputs``: key, job spec,
manifest path, endpoint), the preflight scan of the manifest (``preflight``; plain prompt rows
column-wise in ``fast_estimate``), opening a run directory to resume (``resume``), the
calibration sample (``calibration``), the disk-space check, compacting the results and
totalling the run after dispatch (``finish``), and the options of a run with the resume
command built from them (``options``). It asks and tells through a ``Console`` the caller
gives it; it never prints nor exits. May import every layer below it, up to ``dispatch``."""
