from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="OrderState",
            fields=[
                ("key", models.IntegerField(primary_key=True, serialize=False)),
                ("revision", models.IntegerField()),
                ("name", models.CharField(max_length=200)),
            ],
        ),
        migrations.CreateModel(
            name="OrderApplied",
            fields=[
                (
                    "id",
                    models.AutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("key", models.IntegerField()),
                ("revision", models.IntegerField()),
                ("previous", models.IntegerField(null=True)),
                ("pid", models.IntegerField()),
            ],
        ),
    ]
