"""The models the examples of docs/events.md use (``Order``, ``Payment``, ``LedgerEntry``,
``Challenge``), so that ``tests/unit/test_docs_pages.py`` can run those examples as they are."""
