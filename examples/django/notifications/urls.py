from django.contrib.auth import views as auth_views
from django.urls import path

import ssehub.django.views
from notes import views

urlpatterns = [
    path("", views.home, name="home"),
    path("staff/", views.staff, name="staff"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # {url, token, expires} for the logged-in user, from notes.sse.grants.
    path("sse/token", ssehub.django.views.token, name="sse-token"),
]
