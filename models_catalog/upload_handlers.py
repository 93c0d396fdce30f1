"""Refuse an over-limit upload while it streams, not after it filled the disk; hash it as it streams."""
from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler


class LimitedTemporaryFileUploadHandler(TemporaryFileUploadHandler):
    """The finished file carries `streamed_sha256`: the SHA-256 of exactly the bytes written to the
    temp file, computed from the chunks as they pass, so recognising a re-upload costs no second read."""

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        self.received = 0
        self.over_limit = content_length is not None and content_length > settings.MAX_UPLOAD_BYTES + 64 * 1024
        if self.over_limit:
            raise StopUpload(connection_reset=True)
        return None

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.sha256 = hashlib.sha256()  # one per file: a request may carry several

    def receive_data_chunk(self, raw_data, start):
        self.received = start + len(raw_data)
        if self.received > settings.MAX_UPLOAD_BYTES:
            self.over_limit = True
            raise StopUpload(connection_reset=True)
        self.sha256.update(raw_data)
        return super().receive_data_chunk(raw_data, start)

    def file_complete(self, file_size):
        uploaded = super().file_complete(file_size)
        uploaded.streamed_sha256 = self.sha256.hexdigest()
        return uploaded
