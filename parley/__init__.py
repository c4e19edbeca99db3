"""``parley``: the command line above the libraries (``serve``, ``bot``, ``load``).

``signaling`` and ``sfu`` are the server library, ``loadgen`` the bots and the load tool;
this package sits above all of them, so none of them imports another's command line.
"""

__version__ = "0.1.0"
