"""The demo users of the walkthrough (and of the browser test)."""

DEMO_USERS = [
    # username, password, staff
    ("alice", "alice-demo", False),
    ("bob", "bob-demo", False),
    ("staff", "staff-demo", True),
]


def create_demo_users(user_model: type) -> None:
    for username, password, is_staff in DEMO_USERS:
        user, _ = user_model.objects.get_or_create(username=username, defaults={"is_staff": is_staff})
        user.is_staff = is_staff
        user.set_password(password)
        user.save()
