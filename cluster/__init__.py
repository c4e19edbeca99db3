"""Scale-out: workers on one host, rooms across workers and nodes, Redis (docs/scaling.md).

Sits above ``signaling`` and ``sfu`` (neither imports it), beside ``parley``."""
