from django.urls import path

from . import aviews

urlpatterns = [
    path("events", aviews.events),
    path("publish", aviews.publish),
]
