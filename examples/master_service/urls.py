"""URLs of the master service: the JSON API ``make demo-web``'s console calls."""

from django.urls import path
from inventory import web

urlpatterns = [
    path("demo/state", web.state),
    path("demo/products", web.create),
    path("demo/products/<int:pk>", web.update),
    path("demo/products/<int:pk>/delete", web.delete),
    path("demo/bulk", web.bulk),
]
