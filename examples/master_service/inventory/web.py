"""The master's side of ``make demo-web``: a small JSON API over its products and its outbox.

Only ``examples/demo_web.py``'s console calls it (over 127.0.0.1); the page the browser shows is
the console's. Every change goes through the ORM as an application's would, so every committed
change is recorded in the outbox and published by dj_cqrs.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

from django.apps import apps
from django.db import transaction
from django.db.models import F, Max
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from dj_cqrs.ops import status

from .models import Product

#: Outbox rows returned with each state (the newest first).
EVENTS = 40
#: "Add 1,000 products" adds this many.
BULK = 1000
MAX_PRICE = Decimal("99999999.99")


class Invalid(Exception):
    """A value the form sent cannot be stored; the message says which and why."""


def _ms(value: Any) -> float | None:
    return None if value is None else round(value.timestamp() * 1000, 1)


def _body(request: HttpRequest) -> dict[str, Any]:
    try:
        data = json.loads(request.body or b"{}")
    except ValueError as exc:
        raise Invalid("the request body is not JSON") from exc
    if not isinstance(data, dict):
        raise Invalid("the request body is not a JSON object")
    return data


def _name(data: dict[str, Any]) -> str:
    name = str(data.get("name", "")).strip()
    if not name:
        raise Invalid("Name: enter a name.")
    if len(name) > 200:
        raise Invalid("Name: at most 200 characters.")
    return name


def _price(data: dict[str, Any]) -> Decimal:
    try:
        price = Decimal(str(data.get("price", "")).strip())
    except InvalidOperation as exc:
        raise Invalid("Price: enter a number such as 19.90.") from exc
    if not price.is_finite() or price < 0 or price > MAX_PRICE:
        raise Invalid(f"Price: between 0 and {MAX_PRICE}.")
    return price.quantize(Decimal("0.01"))


def _error(text: str, code: int = 400) -> JsonResponse:
    return JsonResponse({"error": text}, status=code)


@require_GET
def state(request: HttpRequest) -> JsonResponse:
    """Every product (``[id, sku, name, price, in_stock, revision, updated ms]``), the newest
    outbox events of products, and the outbox figures of :func:`dj_cqrs.ops.status.collect`."""
    rows = [
        [pk, sku, name, str(price), in_stock, revision, _ms(updated)]
        for pk, sku, name, price, in_stock, revision, updated in Product.objects.order_by(
            "id"
        ).values_list("id", "sku", "name", "price", "in_stock", "cqrs_revision", "cqrs_updated")
    ]
    outbox = apps.get_model("dj_cqrs", "OutboxEvent")
    events = [
        {
            "id": row.id,
            "cqrs_id": row.cqrs_id,
            "signal": row.signal_type,
            "pk": row.object_pk,
            "revision": row.revision,
            "committed": _ms(row.created_at),
            "published": _ms(row.published_at),
            "attempts": row.attempts,
            "last_error": row.last_error[:300],
        }
        for row in outbox.objects.filter(cqrs_id=Product.CQRS_ID).order_by("-id")[:EVENTS]
    ]
    report = status.collect(master=True, replica=False)
    return JsonResponse(
        {"rows": rows, "events": events, "status": report.as_dict()},
        json_dumps_params={"default": str},
    )


@require_POST
def create(request: HttpRequest) -> JsonResponse:
    try:
        data = _body(request)
        name, price = _name(data), _price(data)
    except Invalid as exc:
        return _error(str(exc))
    with transaction.atomic():
        number = (Product.objects.aggregate(top=Max("id"))["top"] or 0) + 1
        product = Product.objects.create(
            sku=f"SKU-{number:05d}",
            name=name,
            price=price,
            in_stock=bool(data.get("in_stock", True)),
        )
    return JsonResponse({"id": product.pk, "revision": product.cqrs_revision})


@require_POST
def update(request: HttpRequest, pk: int) -> JsonResponse:
    try:
        data = _body(request)
        name, price = _name(data), _price(data)
    except Invalid as exc:
        return _error(str(exc))
    with transaction.atomic():
        product = Product.objects.select_for_update().filter(pk=pk).first()
        if product is None:
            return _error(f"Product {pk} does not exist (deleted?).", 404)
        product.name, product.price = name, price
        product.in_stock = bool(data.get("in_stock", product.in_stock))
        product.save()
    return JsonResponse({"id": product.pk, "revision": product.cqrs_revision})


@require_POST
def delete(request: HttpRequest, pk: int) -> JsonResponse:
    product = Product.objects.filter(pk=pk).first()
    if product is None:
        return _error(f"Product {pk} does not exist (deleted already?).", 404)
    product.delete()
    return JsonResponse({"id": pk})


@require_POST
def bulk(request: HttpRequest) -> JsonResponse:
    """``{"action": "create"}``: add 1,000 products in one ``Product.cqrs.bulk_create``;
    ``{"action": "reprice"}``: raise every price by 1.00 in one ``Product.cqrs.bulk_update``.
    Either writes one outbox event per row, in the same transaction."""
    try:
        action = _body(request).get("action")
    except Invalid as exc:
        return _error(str(exc))
    if action == "create":
        with transaction.atomic():
            start = (Product.objects.aggregate(top=Max("id"))["top"] or 0) + 1
            objs = [
                Product(
                    id=number,
                    sku=f"SKU-{number:05d}",
                    name=f"Bulk item {number}",
                    price=Decimal(5 + number % 95) + Decimal("0.99"),
                    in_stock=number % 7 != 0,
                )
                for number in range(start, start + BULK)
            ]
            created = Product.cqrs.bulk_create(objs)
        return JsonResponse({"changed": len(created)})
    if action == "reprice":
        changed = Product.cqrs.bulk_update(
            Product.objects.filter(price__lte=MAX_PRICE - 1), price=F("price") + Decimal("1.00")
        )
        return JsonResponse({"changed": changed})
    return _error("action: 'create' or 'reprice'")
