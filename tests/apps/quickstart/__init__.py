"""The models of the README's Quick start and of docs/getting-started.md, in one app: the master
``Product`` and its replica ``ProductRef`` (``CQRS_ID`` ``product``). The documentation's examples
(docs/testing.md, docs/concepts.md, docs/coming-from.md) run against them."""
