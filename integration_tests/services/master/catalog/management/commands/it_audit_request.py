"""Make requests to the master's audit view with the Django test client, as a logged-in user
(IT_AUDIT=1, dj_cqrs only). Prints ``{"user_id", "responses": [{"status", "request_id"}]}``."""

import json

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand
from django.test import Client


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("--username", default="auditor")
        parser.add_argument("--request-id", default="")
        parser.add_argument("notes", nargs="+", help="id=text")

    def handle(self, *args, **options):
        user, _ = User.objects.get_or_create(username=options["username"])
        client = Client(REMOTE_ADDR="192.0.2.10")
        client.force_login(user)
        responses = []
        for item in options["notes"]:
            note_id, text = item.split("=", 1)
            headers = {"HTTP_X_REQUEST_ID": options["request_id"]} if options["request_id"] else {}
            response = client.post("/audit/note/", {"id": note_id, "text": text}, **headers)
            responses.append(
                {"status": response.status_code, "request_id": response["X-Request-ID"]}
            )
        self.stdout.write(json.dumps({"user_id": user.pk, "responses": responses}))
