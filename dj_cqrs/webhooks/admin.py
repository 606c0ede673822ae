"""Admin pages of webhook subscriptions and parked deliveries (registered by ``dj_cqrs.admin``).

The secret is never listed nor shown (the form's field is write-only: left blank on a change, it
is kept); a subscription added here is validated like ``cqrs_subscriptions add`` and starts at the
head of the change feed. Django's model permissions decide who sees and
changes what; the actions need the change permission.
"""

from __future__ import annotations

from typing import Any


def register() -> None:
    """Register both pages on the default admin site (call once the app registry is ready)."""
    from django import forms
    from django.contrib import admin
    from django.db.models import QuerySet
    from django.utils import timezone
    from django.utils.translation import gettext_lazy

    from dj_cqrs.master import feed
    from dj_cqrs.models import WebhookDelivery, WebhookSubscription
    from dj_cqrs.webhooks import subscriptions

    def validated(check: Any, value: Any) -> Any:
        try:
            return check(value)
        except subscriptions.SubscriptionError as exc:
            raise forms.ValidationError(str(exc)) from None

    def as_list(value: Any, what: str) -> list[Any]:
        if not isinstance(value, list):
            raise forms.ValidationError(f"a JSON list of {what}")
        return value

    class SubscriptionForm(forms.ModelForm):  # type: ignore[type-arg]
        url = forms.CharField(max_length=2000, help_text="http:// or https://")
        # Write-only: the form never shows the stored secret (it signs every delivery).
        secret = forms.CharField(
            max_length=255,
            required=False,
            strip=False,
            widget=forms.PasswordInput(render_value=False),
            help_text="Never shown. Leave blank to keep the current secret.",
        )

        class Meta:
            model = WebhookSubscription
            fields = ("name", "url", "cqrs_ids", "event_patterns", "secret", "active")

        def clean_secret(self) -> Any:
            given = self.cleaned_data.get("secret") or ""
            if given:
                return given
            if self.instance.pk is None or not self.instance.secret:
                raise forms.ValidationError(
                    "a secret is required (cqrs_subscriptions add generates and prints one)"
                )
            return self.instance.secret

        def clean_url(self) -> Any:
            return validated(subscriptions.validate_url, self.cleaned_data["url"])

        def clean_cqrs_ids(self) -> Any:
            value = as_list(self.cleaned_data["cqrs_ids"] or [], "CQRS_IDs")
            return validated(subscriptions.validate_cqrs_ids, value)

        def clean_event_patterns(self) -> Any:
            value = as_list(self.cleaned_data["event_patterns"] or [], "event name patterns")
            return validated(subscriptions.validate_patterns, value)

    @admin.register(WebhookSubscription)
    class WebhookSubscriptionAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
        form = SubscriptionForm
        list_display = (
            "name",
            "url",
            "cqrs_ids",
            "event_patterns",
            "active",
            "position",
            "last_delivered_at",
            "last_error",
        )
        list_filter = ("active",)
        search_fields = ("name", "url")
        readonly_fields = (
            "position",
            "lease_owner",
            "lease_until",
            "created_at",
            "last_delivered_at",
            "last_error",
        )
        actions = ("pause", "resume")

        def get_fields(self, request: Any, obj: Any = None) -> Any:
            # A read-only view prints every field's value as text: users who may not change the
            # subscription do not get the secret's field at all.
            fields = list(super().get_fields(request, obj))
            if obj is not None and not self.has_change_permission(request, obj):
                fields = [name for name in fields if name != "secret"]
            return fields

        def save_model(self, request: Any, obj: Any, form: Any, change: bool) -> None:
            if not change:  # new: the changes committed from now on
                obj.created_at = timezone.now()
                obj.position = feed.head(obj._state.db or "default")
            super().save_model(request, obj, form, change)

        @admin.action(
            description=gettext_lazy("Pause selected subscriptions"), permissions=["change"]
        )
        def pause(self, request: Any, queryset: QuerySet[Any]) -> None:
            self.message_user(request, f"{queryset.update(active=False)} paused.")

        @admin.action(
            description=gettext_lazy("Resume selected subscriptions"), permissions=["change"]
        )
        def resume(self, request: Any, queryset: QuerySet[Any]) -> None:
            self.message_user(request, f"{queryset.update(active=True)} resumed.")

    @admin.register(WebhookDelivery)
    class WebhookDeliveryAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
        list_display = (
            "id",
            "subscription",
            "status",
            "cqrs_id",
            "object_key",
            "attempts",
            "last_status",
            "last_error",
            "updated_at",
        )
        list_filter = ("status", "subscription")
        search_fields = ("object_key", "event_id")
        readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
        actions = ("replay",)

        def has_add_permission(self, request: Any) -> bool:
            return False

        @admin.action(
            description=gettext_lazy("Replay selected failed deliveries"), permissions=["change"]
        )
        def replay(self, request: Any, queryset: QuerySet[Any]) -> None:
            self.message_user(
                request, f"{subscriptions.mark_for_replay(queryset)} queued for replay."
            )
