"""An emulator of the gateway's API, shipped with batchrun but not part of it: the server
(``server``) and its request handlers (``handlers``), its fake model, faults, media counting,
wire rendering and state, and the ``batchrun emulator`` command (``command``; also
``python -m batchrun.emulator``). The product never imports it; only ``cli`` does
(``--emulate`` and the ``emulator`` command). May import the layers below it (it uses
``media`` and ``dispatch.eventloop``)."""
