"""django-cqrs import path (``dj_cqrs.controller.producer`` / ``.consumer``)."""
