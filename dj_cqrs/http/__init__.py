"""HTTP pull: the master's view that serves a model's rows and then its changes page by page
(:mod:`.views`, :mod:`.pages`, :mod:`.cursor`, :mod:`.auth`), and the replica's ``cqrs_pull``
that applies them (:mod:`.client`, :mod:`.pull`). ``docs/http.md`` describes both."""
