"""URLs of the console."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.page, name="page"),
    path("api/state", views.state),
    path("api/products", views.create),
    path("api/products/<int:pk>", views.update),
    path("api/products/<int:pk>/delete", views.delete),
    path("api/bulk", views.bulk),
    path("api/consumer", views.consumer),
    path("api/broker", views.broker),
    path("api/dead-letters", views.letters),
    path("api/dead-letters/<str:action>", views.letters_action),
]
