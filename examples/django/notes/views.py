"""Plain sync views: the page, and the staff form that publishes."""

from django import forms
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

import ssehub.django

from .models import Notification


@login_required
def home(request: HttpRequest) -> HttpResponse:
    mine = Notification.objects.filter(recipient=request.user)
    news = Notification.objects.filter(recipient__isnull=True)
    topics = [f"user/{request.user.pk}/notifications", "news"]  # one connection carries both
    return render(request, "notes/home.html", {"mine": mine, "news": news, "topics": topics})


class SendForm(forms.Form):
    recipient = forms.ModelChoiceField(
        queryset=get_user_model().objects.filter(is_staff=False).order_by("username"),
        required=False,
        empty_label="everyone (public feed)",
        to_field_name="username",
    )
    text = forms.CharField(max_length=200)
    roll_back = forms.BooleanField(required=False, help_text="publish inside a transaction that is rolled back")


class RolledBack(Exception):
    pass


@staff_member_required(login_url="login")
def staff(request: HttpRequest) -> HttpResponse:
    form = SendForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():
                note = Notification.objects.create(recipient=form.cleaned_data["recipient"], text=form.cleaned_data["text"])
                # Sent after the commit; dropped if the transaction rolls back.
                event = "news" if note.recipient is None else "notification"
                ssehub.django.publish(note.topic(), note.as_event(), event=event)
                if form.cleaned_data["roll_back"]:
                    raise RolledBack
            messages.success(request, f"sent: {note.text}")
        except RolledBack:
            messages.warning(request, f"rolled back, not sent: {note.text}")
        return redirect("staff")
    recent = Notification.objects.select_related("recipient").order_by("-id")[:10]
    return render(request, "notes/staff.html", {"form": form, "recent": recent})
