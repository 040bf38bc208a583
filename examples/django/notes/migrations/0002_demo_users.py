from django.contrib.auth.hashers import make_password
from django.db import migrations

from notes.demo import DEMO_USERS


def create(apps, schema_editor):
    User = apps.get_model("auth", "User")
    for username, password, is_staff in DEMO_USERS:
        User.objects.update_or_create(
            username=username, defaults={"is_staff": is_staff, "password": make_password(password)}
        )


class Migration(migrations.Migration):
    dependencies = [("notes", "0001_initial"), ("auth", "0012_alter_user_first_name_max_length")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
