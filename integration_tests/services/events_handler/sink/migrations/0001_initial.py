from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Handled",
            fields=[
                (
                    "id",
                    models.AutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("handler", models.CharField(max_length=50)),
                ("event_id", models.CharField(max_length=64)),
                ("name", models.CharField(max_length=100)),
                ("key", models.CharField(max_length=50)),
                ("seq", models.BigIntegerField()),
                ("retries", models.IntegerField()),
                ("pid", models.IntegerField()),
            ],
            options={
                "indexes": [models.Index(fields=["handler", "event_id"], name="sink_handled_pair")]
            },
        ),
        migrations.CreateModel(
            name="Attempt",
            fields=[
                (
                    "id",
                    models.AutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("handler", models.CharField(max_length=50)),
                ("event_id", models.CharField(max_length=64)),
                ("retries", models.IntegerField()),
                ("pid", models.IntegerField()),
            ],
        ),
        migrations.CreateModel(
            name="Switch",
            fields=[
                ("name", models.CharField(max_length=50, primary_key=True, serialize=False)),
                ("on", models.BooleanField(default=False)),
            ],
        ),
    ]
