"""One handler for every domain event name (``#``), imported by ``ItEventsConfig.ready()``.

The widest pattern there is: whatever a consumer with handlers mistook for a domain event (a
model event of another package's master, say) would reach it. Each run is recorded by dj_cqrs's
inbox (``dj_cqrs_inbox``, handler ``it_events.everything``) and logged.
"""

import logging

from dj_cqrs.events import handler

logger = logging.getLogger("it_events")


@handler("#", name="it_events.everything")
def everything(event):
    logger.warning("it_events handled name=%s key=%s seq=%s", event.name, event.key, event.seq)
