"""kombu's ``filesystem://`` transport, with messages written atomically.

kombu's own filesystem channel creates the message file and writes the body into it afterwards,
while a consumer in another process may already have listed the file, moved it away and read it
empty: the consumer then fails to decode it and the message is lost (reproduced under load, about
one message in ten with a producer and a consumer running flat out). This channel writes the body
to a hidden temporary name that consumers do not look at, then renames it to kombu's message name
(``<ms>_<uuid>.<queue>.msg``) in one step. Reading, listing, bindings and options are kombu's.

``KombuTransport`` uses it for every ``filesystem://`` URL.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):  # type: ignore[misc]
    # kombu names the parameter "message" in its base channel and "payload" here; we follow the
    # filesystem channel we replace.
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{int(round(time.monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # The leading dot keeps the name from matching "<anything>.<queue>.msg" in kombu's reader.
        partial = os.path.join(self.data_folder_out, f".{name}.partial")
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            try:
                os.unlink(partial)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):  # type: ignore[misc]
    Channel = Channel
