"""The dead letters of this replica service in the admin: browse them by reason and CQRS_ID with
their reason headers, replay the selected ones or all that match, purge.

A dead letter is a message in the broker's dead-letter queue, not a database row, so the page is
a view of its own, at ``<admin>/dj_cqrs/tombstone/dead-letters/`` (linked from the tombstones'
list: both are the replica's memory of what did not apply). It works through the transport's
dead-letter store, as ``cqrs_dead_letters`` does (RabbitMQ, kombu and the memory transport):
browsing reads letters and gives them all back; replay re-publishes a letter to this replica's
queue and removes it once the broker confirmed; purge deletes.

Letters have no id: each is named by a digest of its headers and body, so "replay selected" and
"purge selected" act on the letters with those digests (identical letters share one).

Permissions (the page lives with the tombstones): ``dj_cqrs.view_tombstone`` to browse,
``dj_cqrs.change_tombstone`` to replay, ``dj_cqrs.delete_tombstone`` to purge. Every replay and
purge is recorded in the admin log.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template import engines
from django.template.response import TemplateResponse

from dj_cqrs.core.dead_letter_store import DeadLetter
from dj_cqrs.core.names import HEADER_PREFIX
from dj_cqrs.exceptions import CqrsError
from dj_cqrs.ops import admin_log
from dj_cqrs.replica import dead_letters
from dj_cqrs.transport import get_transport

#: Letters read at most to draw the page (its summary and its list).
SCAN_LIMIT = 1000
#: Letters listed at most.
PAGE_SIZE = 100


def digest(letter: DeadLetter) -> str:
    """A stable name for a letter: its headers and body, hashed."""
    plain = json.loads(letter.as_json())
    text = json.dumps([plain["routing_key"], plain["headers"], plain["body"]], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()[:20]


def _s(count: int) -> str:
    """The plural ending: "1 dead letter", "2 dead letters"."""
    return "" if count == 1 else "s"


@dataclasses.dataclass
class Row:
    digest: str
    cqrs_id: str
    reason: str
    pk: str
    revision: str
    headers: dict[str, Any]
    body: str


def _row(letter: DeadLetter) -> Row:
    data = letter.data or {}
    found = data.get("instance_data")
    instance: dict[str, Any] = found if isinstance(found, dict) else {}
    pk = data.get("instance_pk", instance.get("id", instance.get("pk", "")))
    plain = json.loads(letter.as_json())["headers"]
    headers = {
        k: v for k, v in sorted(plain.items()) if k.startswith(HEADER_PREFIX) or k == "x-death"
    }
    body = letter.text()
    return Row(
        digest(letter),
        letter.cqrs_id or "?",
        letter.reason,
        "" if pk is None else str(pk),
        str(instance.get("cqrs_revision", data.get("seq", ""))),
        headers,
        body if len(body) <= 2000 else body[:2000] + "...",
    )


def _filter(cqrs_id: str, reason: str) -> Callable[[DeadLetter], bool]:
    def where(letter: DeadLetter) -> bool:
        return (not cqrs_id or (letter.cqrs_id or "?") == cqrs_id) and (
            not reason or letter.reason == reason
        )

    return where


def _selected(
    digests: set[str], base: Callable[[DeadLetter], bool]
) -> Callable[[DeadLetter], bool]:
    return lambda letter: base(letter) and digest(letter) in digests


_PAGE = """{% extends "admin/base_site.html" %}
{% block title %}Dead letters | {{ site_title|default:"Django site admin" }}{% endblock %}
{% block breadcrumbs %}<div class="breadcrumbs"><a href="{% url 'admin:index' %}">Home</a>
&rsaquo; <a href="{{ tombstones_url }}">CQRS tombstones</a> &rsaquo; Dead letters</div>{% endblock %}
{% block content %}<div id="content-main">
{% if error %}<p class="errornote">{{ error }}</p>{% else %}
<p>{{ total }} letters in <code>{{ queue }}</code>{% if scanned_all %}{% else %} (the first {{ scanned }} read){% endif %}.</p>
<table><thead><tr><th>CQRS_ID</th><th>reason</th><th>letters</th></tr></thead><tbody>
{% for item in summary %}<tr><td><a href="?cqrs_id={{ item.0|urlencode }}">{{ item.0 }}</a></td>
<td><a href="?cqrs_id={{ item.0|urlencode }}&amp;reason={{ item.1|urlencode }}">{{ item.1 }}</a></td><td>{{ item.2 }}</td></tr>
{% empty %}<tr><td colspan="3">No dead letters.</td></tr>{% endfor %}</tbody></table>
<form method="get" style="margin:1em 0">CQRS_ID <input name="cqrs_id" value="{{ cqrs_id }}">
reason <input name="reason" value="{{ reason }}"> <input type="submit" value="Filter">
{% if cqrs_id or reason %}<a href="?">all</a>{% endif %}</form>
<form method="post">{% csrf_token %}
<input type="hidden" name="cqrs_id" value="{{ cqrs_id }}"><input type="hidden" name="reason" value="{{ reason }}">
<div class="actions">
{% if can_replay %}<button type="submit" name="action" value="replay_selected">Replay selected</button>
<button type="submit" name="action" value="replay_all">Replay all {{ matching }} matching</button>{% endif %}
{% if can_purge %}<button type="submit" name="action" value="purge_selected">Purge selected</button>
<button type="submit" name="action" value="purge_all">Purge all {{ matching }} matching</button>{% endif %}
</div>
<table id="result_list"><thead><tr><th></th><th>CQRS_ID</th><th>pk</th><th>revision</th><th>reason</th><th>headers</th><th>body</th></tr></thead>
<tbody>{% for row in rows %}<tr><td><input type="checkbox" name="letter" value="{{ row.digest }}"></td>
<td>{{ row.cqrs_id }}</td><td>{{ row.pk }}</td><td>{{ row.revision }}</td><td>{{ row.reason }}</td>
<td>{% for key, value in row.headers.items %}<div><code>{{ key }}</code>: {{ value }}</div>{% endfor %}</td>
<td><code style="white-space:pre-wrap;word-break:break-all">{{ row.body }}</code></td></tr>
{% empty %}<tr><td colspan="7">No matching letter.</td></tr>{% endfor %}</tbody></table>
{% if matching > rows|length %}<p>{{ rows|length }} of {{ matching }} matching letters shown.</p>{% endif %}
</form>{% endif %}</div>{% endblock %}
"""

_CONFIRM = """{% extends "admin/base_site.html" %}
{% block title %}Purge dead letters | {{ site_title|default:"Django site admin" }}{% endblock %}
{% block content %}<div id="content-main">
<h1>Are you sure?</h1>
<p>Purge {{ what }} from <code>{{ queue }}</code>? Purged letters are deleted for good.</p>
<form method="post">{% csrf_token %}
<input type="hidden" name="cqrs_id" value="{{ cqrs_id }}"><input type="hidden" name="reason" value="{{ reason }}">
<input type="hidden" name="action" value="{{ action }}">
{% for value in letters %}<input type="hidden" name="letter" value="{{ value }}">{% endfor %}
<input type="hidden" name="confirm" value="yes">
<input type="submit" value="Yes, I'm sure"> <a href="?cqrs_id={{ cqrs_id|urlencode }}&amp;reason={{ reason|urlencode }}" class="button cancel-link">No, take me back</a>
</form></div>{% endblock %}
"""


def _template(source: str) -> Any:
    return engines["django"].from_string(source)


class DeadLetterViews:
    """The views, bound to the ``ModelAdmin`` whose URLs carry them (the tombstones')."""

    def __init__(self, model_admin: Any) -> None:
        self.model_admin = model_admin
        self.model = model_admin.model

    def _allowed(self, request: Any, action: str) -> bool:
        opts = self.model._meta
        return bool(request.user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}"))

    def page(self, request: Any) -> Any:
        if not self._allowed(request, "view"):
            raise PermissionDenied
        if request.method == "POST":
            return self._post(request)
        cqrs_id = request.GET.get("cqrs_id", "")
        reason = request.GET.get("reason", "")
        context = {
            **self.model_admin.admin_site.each_context(request),
            "title": "Dead letters",
            "cqrs_id": cqrs_id,
            "reason": reason,
            "can_replay": self._allowed(request, "change"),
            "can_purge": self._allowed(request, "delete"),
            "tombstones_url": "../",
        }
        try:
            store = dead_letters.store_for(get_transport())
            context["queue"] = _queue_name()
            context["total"] = store.count()
            where = _filter(cqrs_id, reason)
            counts: dict[tuple[str, str], int] = {}
            rows: list[Row] = []
            matching = scanned = 0
            for letter in dead_letters.browse(store, limit=SCAN_LIMIT):
                scanned += 1
                key = (letter.cqrs_id or "?", letter.reason)
                counts[key] = counts.get(key, 0) + 1
                if where(letter):
                    matching += 1
                    if len(rows) < PAGE_SIZE:
                        rows.append(_row(letter))
        except CqrsError as exc:
            context["error"] = f"The dead letters cannot be read: {exc}"
        else:
            context.update(
                summary=[(k[0], k[1], n) for k, n in sorted(counts.items())],
                rows=rows,
                matching=matching,
                scanned=scanned,
                scanned_all=scanned >= context["total"],
            )
        request.current_app = self.model_admin.admin_site.name
        return TemplateResponse(request, _template(_PAGE), context)

    def _post(self, request: Any) -> Any:
        action = request.POST.get("action", "")
        cqrs_id = request.POST.get("cqrs_id", "")
        reason = request.POST.get("reason", "")
        letters = set(request.POST.getlist("letter"))
        query = urlencode({"cqrs_id": cqrs_id, "reason": reason}) if cqrs_id or reason else ""
        back = HttpResponseRedirect(f"{request.path}?{query}" if query else request.path)
        if action not in ("replay_selected", "replay_all", "purge_selected", "purge_all"):
            return back
        if not self._allowed(request, "change" if action.startswith("replay") else "delete"):
            raise PermissionDenied
        if action.endswith("_selected") and not letters:
            self.model_admin.message_user(request, "Select the letters first.", messages.WARNING)
            return back
        where = _filter(cqrs_id, reason)
        if action.endswith("_selected"):
            where = _selected(letters, where)
        scope = _describe(action, letters, cqrs_id, reason)
        if action.startswith("purge") and request.POST.get("confirm") != "yes":
            context = {
                **self.model_admin.admin_site.each_context(request),
                "title": "Purge dead letters",
                "what": scope,
                "queue": _queue_name(),
                "cqrs_id": cqrs_id,
                "reason": reason,
                "action": action,
                "letters": sorted(letters),
            }
            request.current_app = self.model_admin.admin_site.name
            return TemplateResponse(request, _template(_CONFIRM), context)
        try:
            store = dead_letters.store_for(get_transport())
            if action.startswith("replay"):
                report = dead_letters.retry(store, where=where)
                text = (
                    f"Replayed {report.done} dead letter{_s(report.done)} ({scope}); not replayed: {report.malformed} malformed,"
                    f" {report.unknown} for unknown CQRS_IDs, {report.unroutable} unroutable;"
                    f" {report.expired} expired dropped"
                )
            else:
                unfiltered = action == "purge_all" and not cqrs_id and not reason
                report = dead_letters.purge(store, where=None if unfiltered else where)
                text = f"Purged {report.done} dead letter{_s(report.done)} ({scope})"
        except CqrsError as exc:
            self.model_admin.message_user(request, f"Failed: {exc}", messages.ERROR)
            admin_log.record(request, self.model, f"Dead letters: {action} ({scope}) failed: {exc}")
            return back
        admin_log.record(request, self.model, f"Dead letters: {text}")
        self.model_admin.message_user(request, text, messages.SUCCESS)
        return back


def _describe(action: str, letters: set[str], cqrs_id: str, reason: str) -> str:
    if action.endswith("_selected"):
        return f"{len(letters)} selected"
    parts = [f"CQRS_ID {cqrs_id}" if cqrs_id else "", f"reason {reason}" if reason else ""]
    return "all" + (" with " + " and ".join(p for p in parts if p) if cqrs_id or reason else "")


def _queue_name() -> str:
    from dj_cqrs.conf import cqrs_settings

    return str(cqrs_settings.dead_letter_queue)


__all__ = ["DeadLetterViews", "digest"]
