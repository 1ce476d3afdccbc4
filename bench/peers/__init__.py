"""One driver module per system compared by ``python -m bench.compare`` (``<name>_peer.py``), and the
task modules their workers import (``tasks.py`` for the plain-function systems, ``<name>_tasks.py``
for the ones that need decorated tasks and an app object). Drivers run inside the peers' own
virtual environments (created by the benchmark under ``bench/.venvs/``)."""
