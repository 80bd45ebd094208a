"""The gateway's error table (https://api.aivideoapi.ai), row by row: (HTTP status, code, type,
the exception it maps to).

Shared by the tests that walk the table (error mapping, client over HTTP)."""

from __future__ import annotations

from batchrun.core import errors

ERROR_TABLE = [
    (400, "invalid_request", "invalid_request_error", errors.InvalidRequestError),
    (401, "invalid_api_key", "authentication_error", errors.AuthenticationError),
    (402, "insufficient_credits", "billing_error", errors.InsufficientCreditsError),
    (403, "ip_not_allowed", "permission_error", errors.PermissionDeniedError),
    (404, "model_not_found", "invalid_request_error", errors.ModelNotFoundError),
    (404, "task_not_found", "invalid_request_error", errors.InvalidRequestError),
    (429, "rate_limit_exceeded", "rate_limit_error", errors.RateLimitedError),
    (429, "spend_limit_exceeded", "billing_error", errors.SpendLimitError),
    (500, "internal_error", "api_error", errors.ServerError),
    (503, "upstream_error", "upstream_error", errors.UpstreamError),
]
