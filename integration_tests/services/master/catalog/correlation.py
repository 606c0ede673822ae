import os


def correlation_id(signal_type, cqrs_id, instance_pk, queue):
    return os.environ.get("IT_CORRELATION_ID") or f"it-{cqrs_id}-{instance_pk}"
