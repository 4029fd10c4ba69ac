"""Exponential backoff shared by the Analytics Table writer and the CloudWatch publisher.

botocore already retries throttled calls a few times; these helpers add the retries AWS asks
callers to do themselves (``UnprocessedItems`` of BatchWriteItem) and a longer, capped
backoff for throttling that outlasts botocore's own attempts.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

__all__ = ["Backoff", "RetriesExhausted", "error_code", "is_retryable"]

# Error codes that mean "slow down / try again" rather than "this request is wrong".
RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "LimitExceededException",
        "InternalServerError",
        "InternalFailure",
        "InternalServiceError",
        "InternalServiceFault",
        "ServiceUnavailable",
        "TransactionInProgressException",
    }
)


def error_code(exc: BaseException) -> str:
    """Return the AWS error code of a botocore ``ClientError`` (``""`` for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def is_retryable(exc: BaseException) -> bool:
    """Tell whether ``exc`` is throttling, a transient server error or a transaction conflict."""
    code = error_code(exc)
    if code in RETRYABLE_CODES:
        return True
    if code == "TransactionCanceledException":
        reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
        codes = {r.get("Code") for r in reasons if isinstance(r, dict)}
        # Conflicts and throttles clear up on retry; a failed condition or a validation error
        # does not.  Without reasons, assume a conflict (AWS omits them in some responses).
        return not codes or codes <= {"None", "TransactionConflict", "ThrottlingError", None}
    # Connection errors are not retried here: botocore already retries them, and multiplying
    # its attempts (each up to a connect timeout) by ours would stall for many minutes.
    return False


class RetriesExhausted(Exception):
    """An AWS call failed for good: ``error`` is its last error, after ``attempts`` attempts."""

    def __init__(self, error: Exception, attempts: int) -> None:
        super().__init__(f"{error} (after {attempts} attempt(s))")
        self.error = error
        self.attempts = attempts


@dataclass
class Backoff:
    """Capped exponential backoff with jitter.

    Parameters
    ----------
    max_attempts
        Attempts in total (the first one included) before giving up.
    base_delay, max_delay
        Seconds before the second attempt, doubling each time up to ``max_delay``.
    sleep
        Called with the delay; inject a no-op in tests.
    """

    max_attempts: int = 10
    base_delay: float = 0.05
    max_delay: float = 5.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            from bubbly_metrics.exceptions import InvalidArgumentError

            raise InvalidArgumentError(f"max_attempts must be >= 1, got {self.max_attempts}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        cap = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        # "Equal jitter": never less than half the cap, so retries do spread out.
        return cap / 2 + random.uniform(0, cap / 2)

    def wait(self, attempt: int) -> None:
        """Sleep before attempt ``attempt + 1``."""
        self.sleep(self.delay(attempt))

    def call(self, fn: Callable[[], T], *, on_attempt: Callable[[], object] | None = None, after: int = 0) -> T:
        """``fn()``, retried while it fails with a retryable AWS error and attempts are left.

        ``on_attempt`` is called before every attempt (to count requests).  ``after``: attempts
        already spent on the same work (a BatchWriteItem's ``UnprocessedItems`` are retried
        with the attempts its errors left), so the first call is attempt ``after + 1``.  A
        botocore error that is not retryable, or the last one, is raised as
        :class:`RetriesExhausted`; any other exception propagates as it is.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        attempt = after
        while True:
            attempt += 1
            if on_attempt is not None:
                on_attempt()
            try:
                return fn()
            except (ClientError, BotoCoreError) as exc:
                if is_retryable(exc) and attempt < self.max_attempts:
                    self.wait(attempt)
                    continue
                raise RetriesExhausted(exc, attempt) from exc
