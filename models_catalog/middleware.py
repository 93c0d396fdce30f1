"""Pages answer 503 with an explanation when Redis or the broker is down, not a bare 500.

The API has its own handler for the same errors (api_errors.py): DRF catches them before
this middleware would see them.
"""
from __future__ import annotations

from django.shortcuts import render

from models_catalog.api_errors import RETRY_AFTER_SECONDS, SERVICE_DOWN_ERRORS, service_down_warning


class ServiceUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, SERVICE_DOWN_ERRORS):
            return None
        service_down_warning(exception, f"page {request.path}")
        response = render(request, "503.html", status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
