from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="MirrorItem",
            fields=[
                ("cqrs_revision", models.IntegerField()),
                ("cqrs_updated", models.DateTimeField()),
                ("id", models.IntegerField(primary_key=True, serialize=False)),
                ("name", models.CharField(default="", max_length=100)),
            ],
            options={"abstract": False},
        ),
    ]
