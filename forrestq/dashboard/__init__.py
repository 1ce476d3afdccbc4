"""The web dashboard (issue 19): ``forrestq dashboard``.

* :mod:`.data` reads what the pages show (counters and sorted sets only, bounded reads per page),
* :mod:`.pictures` turns figures into SVG geometry (the throughput chart, a task's DAG),
* :mod:`.security` decides who may look (loopback, a token) and checks every action's CSRF token,
* :mod:`.actions` runs the actions (requeue, cancel, rerun, clean, stop a worker),
* :mod:`.app` is the Starlette application (pages, actions, ``/metrics``, static files),
* :mod:`.serve` runs it under uvicorn and keeps its URL in Redis (``forrestq show`` prints it).

Templates (``templates/``, Jinja2 with autoescape on) and the script and style sheet (``static/``)
ship in the package: nothing is fetched from elsewhere at run time. User text (metadata, names,
output, tracebacks) only ever reaches the page escaped, as text; a Content-Security-Policy allows
no inline script on top of that.
"""
