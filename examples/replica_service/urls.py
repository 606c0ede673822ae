"""URLs of the replica service: the JSON API ``make demo-web``'s console calls."""

from django.urls import path
from storefront import web

urlpatterns = [
    path("demo/state", web.state),
    path("demo/dead-letters", web.letters),
    path("demo/dead-letters/send", web.send_malformed),
    path("demo/dead-letters/retry", web.retry),
    path("demo/dead-letters/purge", web.purge),
]
