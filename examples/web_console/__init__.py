"""The console of ``make demo-web``: the page that shows the master and the replica side by side.

A Django app served by ``examples/demo_web.py`` itself, which also runs the services' processes:
its views read both services' JSON APIs (``inventory/web.py``, ``storefront/web.py``) and drive
the demo's switches (the consumer, the broker) through :mod:`web_console.runtime`.
"""
