from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Order",
            fields=[
                ("key", models.CharField(max_length=50, primary_key=True, serialize=False)),
                ("updates", models.IntegerField(default=0)),
            ],
        ),
        migrations.CreateModel(
            name="Emitted",
            fields=[
                (
                    "id",
                    models.AutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("event_id", models.CharField(max_length=64, unique=True)),
                ("name", models.CharField(max_length=100)),
                ("key", models.CharField(max_length=50)),
                ("tx", models.IntegerField()),
            ],
        ),
        migrations.CreateModel(
            name="RolledBack",
            fields=[
                (
                    "id",
                    models.AutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("event_id", models.CharField(max_length=64, unique=True)),
                ("name", models.CharField(max_length=100)),
                ("key", models.CharField(max_length=50)),
                ("tx", models.IntegerField()),
            ],
        ),
        migrations.CreateModel(
            name="Challenge",
            fields=[
                ("id", models.IntegerField(primary_key=True, serialize=False)),
                ("title", models.CharField(max_length=100)),
                ("ends_at", models.DateTimeField()),
            ],
        ),
    ]
