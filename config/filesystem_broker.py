"""kombu's filesystem transport with messages that appear whole.

kombu writes a message file in place (open, lock, write) while a consumer may
already list the folder and move the file away: the consumer then reads an
empty file, fails to parse it, and the whole worker stops ("Expecting value:
line 1 column 1"); under honcho (`make run`) every process stops with it.
Found by bench/identify.py on the embedded default. Here a message is written
under a name no consumer picks up and renamed into place, which is atomic on
one filesystem: a consumer sees the whole message or nothing.
"""
from __future__ import annotations

import os
import uuid

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

ALIAS = "modelxref-filesystem"


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(filesystem.monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # A leading dot and a different suffix: _get only takes "<stamp>.<queue>.msg" names.
        partial = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            try:
                os.unlink(partial)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel


TRANSPORT_ALIASES[ALIAS] = "config.filesystem_broker:Transport"
