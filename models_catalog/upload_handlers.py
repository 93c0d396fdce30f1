"""Refuse an over-limit upload while it streams, not after it filled the disk."""
from __future__ import annotations

from django.conf import settings
from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler


class LimitedTemporaryFileUploadHandler(TemporaryFileUploadHandler):
    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        self.received = 0
        self.over_limit = content_length is not None and content_length > settings.MAX_UPLOAD_BYTES + 64 * 1024
        if self.over_limit:
            raise StopUpload(connection_reset=True)
        return None

    def receive_data_chunk(self, raw_data, start):
        self.received = start + len(raw_data)
        if self.received > settings.MAX_UPLOAD_BYTES:
            self.over_limit = True
            raise StopUpload(connection_reset=True)
        return super().receive_data_chunk(raw_data, start)
