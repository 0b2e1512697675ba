from django.urls import path

from . import views

urlpatterns = [
    path("", views.landing),
    path("signup", views.signup),
]
