"""Replica models whose failures a test controls through the message data.

``FaultRef`` (CQRS_ID ``it_fault``) reads ``mode`` from the incoming data:

* ``ok``: applied;
* ``fail:N``: the first N attempts for this (pk, revision) raise, then it applies;
* ``broken``: raises until the ``repaired`` switch is on;
* ``create_raises``: ``cqrs_create`` raises.

``name`` is a varchar(50): a longer one is a database error (PostgreSQL DataError). Every attempt
and every retry-hook call is written to ``Journal`` through the autocommit "journal" connection,
and every real application (create or update) to ``Applied`` inside the apply transaction.
"""

import os

from django.db import models, transaction

from dj_cqrs.metas import ReplicaMeta
from dj_cqrs.mixins import RawReplicaMixin, ReplicaMixin


class Journal(models.Model):
    kind = models.CharField(max_length=20)
    object_id = models.BigIntegerField(null=True)
    revision = models.IntegerField(null=True)
    retries = models.IntegerField(null=True)
    delay = models.FloatField(null=True)
    note = models.TextField(default="")
    pid = models.IntegerField()
    at = models.DateTimeField(auto_now_add=True)


class Switch(models.Model):
    name = models.CharField(max_length=50, primary_key=True)
    on = models.BooleanField(default=False)


class Applied(models.Model):
    object_id = models.BigIntegerField()
    revision = models.IntegerField()
    pid = models.IntegerField()
    at = models.DateTimeField(auto_now_add=True)


def _int(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**62 else None


def record(kind, object_id=None, revision=None, retries=None, delay=None, note=""):
    Journal.objects.using("journal").create(
        kind=kind,
        object_id=_int(object_id),
        revision=_int(revision),
        retries=retries,
        delay=delay,
        note=note[:2000],
        pid=os.getpid(),
    )


class FaultRef(ReplicaMixin):
    CQRS_ID = "it_fault"

    id = models.BigIntegerField(primary_key=True)
    name = models.CharField(max_length=50)
    mode = models.CharField(max_length=200, default="ok")

    @classmethod
    def cqrs_save(cls, master_data, previous_data=None, sync=False, meta=None):
        pk, revision = master_data.get("id"), master_data.get("cqrs_revision")
        mode = str(master_data.get("mode") or "ok")
        record("attempt", pk, revision, note=mode)
        if mode.startswith("fail:"):
            planned = int(mode[5:])
            attempts = (
                Journal.objects.using("journal")
                .filter(kind="attempt", object_id=_int(pk), revision=_int(revision))
                .count()
            )
            if attempts <= planned:
                raise RuntimeError(f"planned failure {attempts} of {planned} for pk={pk}")
        elif mode == "broken" and not Switch.objects.using("journal").filter(name="repaired", on=True).exists():
            raise RuntimeError(f"broken until repaired, pk={pk}")
        return super().cqrs_save(master_data, previous_data=previous_data, sync=sync, meta=meta)

    @classmethod
    def cqrs_create(cls, sync, mapped_data, previous_data=None, meta=None):
        if mapped_data.get("mode") == "create_raises":
            raise ValueError(f"cqrs_create refuses pk={mapped_data.get('id')}")
        instance = super().cqrs_create(sync, mapped_data, previous_data=previous_data, meta=meta)
        Applied.objects.create(object_id=instance.pk, revision=instance.cqrs_revision, pid=os.getpid())
        return instance

    def cqrs_update(self, sync, mapped_data, previous_data=None, meta=None):
        instance = super().cqrs_update(sync, mapped_data, previous_data=previous_data, meta=meta)
        Applied.objects.create(object_id=self.pk, revision=self.cqrs_revision, pid=os.getpid())
        return instance

    @classmethod
    def should_retry_cqrs(cls, current_retry, exception=None):
        answer = super().should_retry_cqrs(current_retry, exception)
        record("should_retry", retries=current_retry, note=f"{answer} {exception}")
        return answer

    @classmethod
    def get_cqrs_retry_delay(cls, current_retry):
        delay = super().get_cqrs_retry_delay(current_retry)
        record("delay", retries=current_retry, delay=delay)
        return delay


# -- the partition tests' recorder (integration_tests/test_partitions.py) ------------------------
#
# ``SeqRecorder`` (CQRS_ID ``it_seq``, a RawReplicaMixin handler) keeps, per key, the last revision
# applied (``SeqState``) and writes every revision it applies to ``SeqApplied`` in the apply
# transaction, with the revision it followed. A redelivery of a revision already applied (a worker
# killed between its commit and its acknowledgement) is skipped, as the revision guard of a
# replica model would; anything else is recorded as it comes, so a revision applied out of order
# shows as a gap. ``fail: N`` in the data fails the first N attempts of that (key, revision).


class SeqState(models.Model):
    key = models.BigIntegerField(primary_key=True)
    revision = models.IntegerField()
    value = models.TextField(default="")


class SeqApplied(models.Model):
    key = models.BigIntegerField()
    revision = models.IntegerField()
    previous = models.IntegerField(null=True)
    pid = models.IntegerField()


class SeqRecorder(RawReplicaMixin):
    CQRS_ID = "it_seq"

    @classmethod
    def cqrs_save(cls, master_data, previous_data=None, sync=False, meta=None, **kwargs):
        key, revision = int(master_data["id"]), int(master_data["cqrs_revision"])
        fail = int(master_data.get("fail") or 0)
        if fail:
            record("seq_attempt", key, revision)
            attempts = Journal.objects.using("journal").filter(kind="seq_attempt", object_id=key, revision=revision).count()
            if attempts <= fail:
                raise RuntimeError(f"planned failure {attempts} of {fail} for key={key}")
        with transaction.atomic():
            state = SeqState.objects.select_for_update().filter(key=key).first()
            if state is not None and revision <= state.revision:
                return True  # a redelivery of what is applied already
            SeqApplied.objects.create(
                key=key, revision=revision, previous=state.revision if state else None, pid=os.getpid()
            )
            SeqState.objects.update_or_create(key=key, defaults={"revision": revision, "value": str(master_data.get("value", ""))})
        return True

    @classmethod
    def cqrs_delete(cls, master_data, meta=None, **kwargs):
        SeqState.objects.filter(key=int(master_data["id"])).delete()
        return True


ReplicaMeta.register(SeqRecorder)
