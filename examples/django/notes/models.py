from django.conf import settings
from django.db import models


class Notification(models.Model):
    """A notification for one user, or (no recipient) for the public feed."""

    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE)
    text = models.CharField(max_length=200)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created", "id"]

    def topic(self) -> str:
        return "news" if self.recipient_id is None else f"user/{self.recipient_id}/notifications"

    def as_event(self) -> dict[str, object]:
        return {"id": self.pk, "text": self.text, "created": self.created}
