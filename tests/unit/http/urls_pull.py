from django.urls import include, path

urlpatterns = [path("cqrs/", include("dj_cqrs.urls"))]
