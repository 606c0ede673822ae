"""``manage.py cqrs_event_sources``: run every instance through its model's event sources.

For events that depend on time as well as on the data ("the challenge ends in 2 days"): run it
periodically (cron, a scheduler). Each ``(name, key)`` is emitted once whatever the number of runs
(see :mod:`dj_cqrs.events.sources`). Exit code 0; 1 when it cannot run (unknown model, a model
without sources); 3 when some instances failed (each reported on stderr, the others processed).
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import CommandError, CommandParser

from dj_cqrs.events.sources import run_instance, source_models, sources_of
from dj_cqrs.management.base import CqrsCommand


class Command(CqrsCommand):
    help = "Run every instance of the models with event sources through them (each event key is emitted once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", "-m", action="append", dest="models", help="app_label.ModelName (repeatable; default: every model with sources)")
        parser.add_argument("--batch", "-b", type=int, default=500, help="Instances read per query (default 500); each instance runs in its own transaction")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        batch = options["batch"]
        if batch < 1:
            raise CommandError(f"--batch must be >= 1, got {batch}")
        models = [self._model(label) for label in options["models"] or []] or source_models()
        if not models:
            raise CommandError("No model has event sources (dj_cqrs.events.register_source).")
        instances = emitted = before = failed = 0
        for model in models:
            qs = model._default_manager.order_by("pk")
            with self.progress(not options["no_progress"], total=qs.count(), unit=model._meta.label) as update:
                last: Any = None
                while True:
                    page = list((qs.filter(pk__gt=last) if last is not None else qs)[:batch])
                    if not page:
                        break
                    last = page[-1].pk
                    for instance in page:
                        try:
                            new, old = run_instance(instance, qs.db)
                        except Exception as exc:  # noqa: BLE001 - reported, the others go on
                            failed += 1
                            self.report_row_error(instance.pk, f"{model._meta.label}: {type(exc).__name__}: {exc}")
                            continue
                        emitted += new
                        before += old
                    instances += len(page)
                    if update is not None:
                        update(len(page))
        self.stdout.write(f"{instances} instance(s), {emitted} event(s) emitted, {before} emitted before, {failed} failed.")
        if failed:
            raise self.partial(f"{failed} instance(s) failed.")

    @staticmethod
    def _model(label: str) -> Any:
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError) as exc:
            raise CommandError(f"Unknown model {label!r}: {exc}") from exc
        if not sources_of(model):
            raise CommandError(f"{label} has no event sources (dj_cqrs.events.register_source).")
        return model
