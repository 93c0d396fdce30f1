"""One error format for the whole REST API: {"error": {"code", "message", "detail"}}.

Installed as REST_FRAMEWORK["EXCEPTION_HANDLER"]. Scripts branch on `code`
(stable, snake_case), people read `message`; `detail` keeps DRF's per-field
validation errors so a form can put each message next to its field.
"""
from __future__ import annotations

import logging

import kombu.exceptions
import redis.exceptions
from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)

# DRF's own exception codes, renamed where DRF's name says less than it could.
_CODE_NAMES = {
    "invalid": "invalid_input",
    "parse_error": "malformed_request",
    "authentication_failed": "authentication_failed",
    "not_authenticated": "not_authenticated",
    "permission_denied": "permission_denied",
    "not_found": "not_found",
    "method_not_allowed": "method_not_allowed",
    "not_acceptable": "not_acceptable",
    "unsupported_media_type": "unsupported_media_type",
    "throttled": "throttled",
}


# Redis (broker, cache) or the broker in general cannot be reached: a service is down, not a bug.
# kombu raises OperationalError once publishing a task has used up its retries.
from models_catalog.services.enqueue import QueueUnavailable  # noqa: E402  (rows kept, sent when it is back)

SERVICE_DOWN_ERRORS = (kombu.exceptions.OperationalError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                       QueueUnavailable)
RETRY_AFTER_SECONDS = 30
SERVICE_DOWN_MESSAGE = ("the task queue is unreachable: what you sent is kept and its work starts by itself when the "
                        "queue is back (the server's log says more)")


def service_down_warning(exc: Exception, where: str) -> None:
    # No traceback: it is the operator's Redis, not our bug; the class and text say which.
    logger.warning("%s: the broker or Redis is unreachable (%s: %s)", where, type(exc).__name__, exc)


class ApiError(exceptions.APIException):
    """A refusal a view explains itself: a service said no (bad query, path refused, too large...)."""

    def __init__(self, message: str, *, code: str, status_code: int = status.HTTP_400_BAD_REQUEST, detail=None):
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.extra_detail = detail


def error_body(*, code: str, message: str, detail=None) -> dict:
    return {"error": {"code": code, "message": message, "detail": detail}}


def _first_messages(detail, prefix: str = "") -> list[str]:
    """Flatten DRF's nested validation detail into "field: message" lines."""
    if isinstance(detail, dict):
        lines = []
        for key, value in detail.items():
            name = "" if key == "non_field_errors" else (f"{prefix}.{key}" if prefix else str(key))
            lines += _first_messages(value, name)
        return lines
    if isinstance(detail, list):
        lines = []
        for index, value in enumerate(detail):
            nested = isinstance(value, (dict, list))
            lines += _first_messages(value, f"{prefix}[{index}]" if nested else prefix)
        return lines
    return [f"{prefix}: {detail}" if prefix else str(detail)]


def _code_of(exc: exceptions.APIException) -> str:
    codes = exc.get_codes()
    code = codes if isinstance(codes, str) else getattr(exc, "default_code", "error")
    return _CODE_NAMES.get(code, code)


def api_exception_handler(exc, context):
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("no such object (or it is not yours)")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    if isinstance(exc, ApiError):
        body = error_body(code=_code_of(exc), message=str(exc.detail), detail=exc.extra_detail)
    elif isinstance(exc, exceptions.ValidationError):
        lines = _first_messages(exc.detail)
        message = "; ".join(lines[:5]) if lines else "the request is not valid"
        body = error_body(code="invalid_input", message=message, detail=exc.detail)
    elif isinstance(exc, exceptions.APIException):
        detail = {"wait_seconds": exc.wait} if isinstance(exc, exceptions.Throttled) and exc.wait is not None else None
        body = error_body(code=_code_of(exc), message=str(exc.detail), detail=detail)
    elif isinstance(exc, SERVICE_DOWN_ERRORS):
        service_down_warning(exc, f"API view {context.get('view').__class__.__name__}")
        return Response(error_body(code="service_unavailable", message=SERVICE_DOWN_MESSAGE,
                                   detail={"retry_after_seconds": RETRY_AFTER_SECONDS}),
                        status=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    else:
        # Let DRF try (it knows a few Django exceptions); otherwise this is our bug:
        # log it with the traceback and still answer in the one format.
        response = drf_exception_handler(exc, context)
        if response is not None:
            return response
        logger.exception("unhandled error in API view %s", context.get("view").__class__.__name__, exc_info=exc)
        return Response(error_body(code="server_error", message="the server failed to handle this request"),
                        status=status.HTTP_500_INTERNAL_SERVER_ERROR)

    response = drf_exception_handler(exc, context)  # keeps WWW-Authenticate, Retry-After and Allow headers
    if response is None:  # pragma: no cover - every APIException gets a response from DRF
        response = Response(status=exc.status_code)
    response.data = body
    return response


@csrf_exempt  # it changes nothing, and a CSRF page would break the one format for DELETE/POST
def api_not_found(request, *args, **kwargs):
    """Unknown URLs under /api/ answer in the API's format, not with the HTML 404 page."""
    return JsonResponse(error_body(code="not_found", message=f"no API endpoint at {request.path}"), status=404)
