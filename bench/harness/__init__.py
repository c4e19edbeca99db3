"""The forwarding benchmark's harness (``bench/forwarding.py`` is its command):
:mod:`.common` constants and output, :mod:`.clients` publisher and subscribers,
:mod:`.workers` their processes, :mod:`.processes` the orchestrator's side of them,
:mod:`.measure` one step, :mod:`.sweep` fan-outs and saturation, :mod:`.profile`,
:mod:`.calibrate`, :mod:`.report`."""
