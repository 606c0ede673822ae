def cqrs_meta(obj=None, **kwargs):
    """``master.meta_function``: sent as ``meta`` with every payload (non-ASCII and '/' on purpose)."""
    return {"origin": "it-master ☕/", "model": type(obj).__name__ if obj is not None else None}
