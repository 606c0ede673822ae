from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("dj_cqrs", "0003_http_webhooks"),
    ]

    operations = [
        migrations.AddField(
            model_name="webhookdelivery",
            name="trace",
            field=models.JSONField(blank=True, null=True),
        ),
    ]
