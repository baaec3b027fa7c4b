"""The error tree. Every failure a user can see is one of these, with a closed ``code``.

::

    AijobsError                      code, message, param; http_status
    ├── CallerError                  the request is at fault (4xx, never retried)
    │   ├── InvalidRequest           caller_invalid_request      422
    │   ├── Unauthorized             caller_unauthorized         401
    │   ├── NotFound                 caller_not_found            404
    │   ├── Conflict                 caller_conflict             409
    │   ├── PayloadTooLarge          caller_payload_too_large    413
    │   └── CallerRateLimited        caller_rate_limited         429
    ├── ProviderError                an upstream is at fault; carries provider, model, status,
    │   │                            retry_after_s, a scrubbed body excerpt, and the class flags
    │   │                            ``retry`` (same target again) and ``fallback`` (next target)
    │   ├── ProviderRateLimited      provider_rate_limited       retry, fallback
    │   ├── ProviderTimeout          provider_timeout            retry, fallback
    │   │   └── SubmitUnknown        provider_timeout            a task submit sent but unanswered, or
    │   │                            answered 2xx unreadably: it may exist upstream, so it is
    │   │                            resubmitted only on opt-in
    │   ├── ProviderUnavailable      provider_unavailable        retry, fallback
    │   ├── ProviderBadResponse      provider_bad_response       retry, fallback
    │   ├── ProviderAuth             provider_auth               fallback
    │   ├── ProviderModelNotFound    provider_model_not_found    fallback
    │   ├── ProviderContextWindow    provider_context_window     fallback
    │   ├── ProviderRejected         provider_rejected           (the input itself was refused)
    │   └── ProviderContentFiltered  provider_content_filtered   (a policy refusal)
    └── GatewayError                 aijobs itself could not finish the job
        ├── NoRoute                  gateway_no_route            503
        ├── BudgetExceeded           gateway_budget_exceeded     402
        ├── DeadlineExceeded         gateway_deadline_exceeded   504
        ├── Canceled                 gateway_canceled            409
        ├── StorageError             gateway_storage             503
        └── InternalError            gateway_internal            500

The Router reads ``retry`` and ``fallback`` off the class; it never ladders on ``isinstance``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

#: Everything that looks like a credential is replaced before an error body is stored or logged.
_SECRET_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|aj_[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|"
    r"(?i:bearer)\s+[A-Za-z0-9._\-]{8,}|(?i:api[_-]?key)[\"'=:\s]+[A-Za-z0-9._\-]{8,})"
)
BODY_EXCERPT_CHARS = 500


def scrub(text: str, limit: int = BODY_EXCERPT_CHARS) -> str:
    """Truncate ``text`` and replace anything shaped like a key, so it is safe to store and log."""
    return _SECRET_PATTERNS.sub("[redacted]", text[: limit * 2])[:limit]


class AijobsError(Exception):
    """Base of every error with a public code. ``param`` names the offending field, if any."""

    code: ClassVar[str] = "gateway_internal"
    http_status: ClassVar[int] = 500

    def __init__(
        self, message: str, *, param: str | None = None, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        #: Itemised problems (a batch file's bad lines), when one message cannot hold them.
        self.details = details

    def to_dict(self) -> dict[str, str | None]:
        """The public error shape: ``{"code", "message", "param"}``."""
        return {"code": self.code, "message": self.message, "param": self.param}


class CallerError(AijobsError):
    """The request is at fault; fixing the request is the only remedy."""

    http_status = 400


class InvalidRequest(CallerError):
    code = "caller_invalid_request"
    http_status = 422


class Unauthorized(CallerError):
    code = "caller_unauthorized"
    http_status = 401


class NotFound(CallerError):
    code = "caller_not_found"
    http_status = 404


class Conflict(CallerError):
    code = "caller_conflict"
    http_status = 409


class PayloadTooLarge(CallerError):
    code = "caller_payload_too_large"
    http_status = 413


class CallerRateLimited(CallerError):
    code = "caller_rate_limited"
    http_status = 429


class ProviderError(AijobsError):
    """An upstream call failed. Flags say whether the same target may be retried or the next tried."""

    code = "provider_unavailable"
    http_status = 502
    retry: ClassVar[bool] = False
    fallback: ClassVar[bool] = False
    #: The call may have taken effect upstream (see SubmitUnknown): repeating it could pay twice.
    outcome_unknown: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        model: str,
        status: int | None = None,
        retry_after_s: float | None = None,
        body: str = "",
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.model = model
        self.status = status
        self.retry_after_s = retry_after_s
        self.body_excerpt = scrub(body)


class ProviderRateLimited(ProviderError):
    code = "provider_rate_limited"
    retry = True
    fallback = True


class ProviderTimeout(ProviderError):
    code = "provider_timeout"
    retry = True
    fallback = True


class SubmitUnknown(ProviderTimeout):
    """A long-running task's submit may have created the task, and we cannot tell: it was sent and never
    answered, or answered with a 2xx whose body could not be read. The task may exist (and bill) upstream.

    The Router neither retries nor falls back over it unless the feature sets ``resubmit_unknown``.
    """

    outcome_unknown = True


class ProviderUnavailable(ProviderError):
    code = "provider_unavailable"
    retry = True
    fallback = True


class ProviderBadResponse(ProviderError):
    code = "provider_bad_response"
    retry = True
    fallback = True


class ProviderAuth(ProviderError):
    code = "provider_auth"
    fallback = True


class ProviderModelNotFound(ProviderError):
    code = "provider_model_not_found"
    fallback = True


class ProviderContextWindow(ProviderError):
    code = "provider_context_window"
    fallback = True


class ProviderRejected(ProviderError):
    code = "provider_rejected"


class ProviderContentFiltered(ProviderError):
    code = "provider_content_filtered"


class GatewayError(AijobsError):
    """aijobs itself could not finish the job."""


class NoRoute(GatewayError):
    code = "gateway_no_route"
    http_status = 503


class BudgetExceeded(GatewayError):
    code = "gateway_budget_exceeded"
    http_status = 402


class DeadlineExceeded(GatewayError):
    code = "gateway_deadline_exceeded"
    http_status = 504


class Canceled(GatewayError):
    code = "gateway_canceled"
    http_status = 409


class StorageError(GatewayError):
    code = "gateway_storage"
    http_status = 503


class InternalError(GatewayError):
    code = "gateway_internal"
    http_status = 500


class ConfigError(Exception):
    """The configuration is invalid; raised at startup with the offending key in the message."""


def error_class(code: str) -> type[AijobsError]:
    """The class behind a public ``code`` (the most general one, where a subclass shares it)."""
    classes: list[type[AijobsError]] = [AijobsError]
    for cls in classes:  # breadth first: parents before the subclasses that reuse their code
        if cls.__dict__.get("code") == code and cls is not AijobsError:  # its own code, not inherited
            return cls
        classes.extend(cls.__subclasses__())
    return InternalError
