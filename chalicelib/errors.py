"""Domain errors shared by every service.

Services raise these and never build HTTP responses.  Each blueprint turns them into
its own wire format in exactly one place (``api/vrli.py`` for the Log Insight bodies,
``api/lac.py`` for the License Activation Center bodies), so a message text lives here
once and every caller (API, CLI, operator Lambda, provisioning) reports it the same way.
"""

from __future__ import annotations

from enum import StrEnum


class Code(StrEnum):
    """Stable error codes, shared by errors, logs and the CLI's exit messages."""

    # request shape (both APIs)
    BAD_JSON = "bad_json"
    BAD_FIELD = "bad_field"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    INTERNAL = "internal"
    # sessions (vRLI)
    BAD_CREDENTIALS = "bad_credentials"
    INVALID_SESSION = "invalid_session"
    SESSION_EXPIRED = "session_expired"
    # license keys (vRLI)
    INVALID_SERIAL = "invalid_serial"
    LICENSE_EXISTS = "license_exists"
    LICENSE_NOT_FOUND = "license_not_found"
    # activation (LAC)
    INVALID_ACTIVATION_KEY = "invalid_activation_key"
    ORDER_DISABLED = "order_disabled"
    BULK_EXCEEDED = "bulk_exceeded"
    HOSTID_FORMAT = "hostid_format"
    HOSTID_TYPE_UNSUPPORTED = "hostid_type_unsupported"
    HOSTID_MISSING = "hostid_missing"
    HOSTID_TOO_MANY = "hostid_too_many"
    ACTIVATION_NOT_REQUESTED = "activation_not_requested"
    LICENSE_DOES_NOT_EXIST = "license_does_not_exist"
    CANNOT_DEACTIVATE = "cannot_deactivate"
    UNSUPPORTED_STATE = "unsupported_state"
    NO_LICENSES_FOR_STATE = "no_licenses_for_state"
    NO_ERRORS = "no_errors"
    # plans (operators)
    INVALID_PLAN = "invalid_plan"
    UNKNOWN_PLAN = "unknown_plan"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    # operators and provisioning
    INVALID_ORDER = "invalid_order"


class KeyturnError(Exception):
    """Base of every domain error: a stable ``code`` and a human ``message``.

    ``message`` is the text clients see where the wire contract fixes one; ``detail``
    carries extra context (a field name, a reason) that is safe to show.
    """

    code: Code = Code.INTERNAL
    message: str = "The operation failed due to an internal error."

    def __init__(self, message: str | None = None, *, detail: dict[str, str] | None = None):
        if message is not None:
            self.message = message
        self.detail = detail or {}
        super().__init__(self.message)


def _error(name: str, code: Code, message: str) -> type[KeyturnError]:
    return type(name, (KeyturnError,), {"code": code, "message": message, "__doc__": message})


# Request shape.
class BadJson(KeyturnError):
    """The body is not JSON, not an object, empty or too large; ``detail['reason']`` says which."""

    code = Code.BAD_JSON
    message = "Invalid request body."


class BadField(KeyturnError):
    """A field is missing or has the wrong type; ``detail`` names the field and reason."""

    code = Code.BAD_FIELD
    message = "Invalid request body."


UnsupportedMediaType = _error("UnsupportedMediaType", Code.UNSUPPORTED_MEDIA_TYPE, "Unsupported media type.")
MethodNotAllowed = _error("MethodNotAllowed", Code.METHOD_NOT_ALLOWED, "Method not allowed.")
Internal = _error("Internal", Code.INTERNAL, "The operation failed due to an internal error.")

# Sessions.
BadCredentials = _error("BadCredentials", Code.BAD_CREDENTIALS, "Invalid username or password.")
InvalidSession = _error("InvalidSession", Code.INVALID_SESSION, "Invalid session ID")
SessionExpired = _error("SessionExpired", Code.SESSION_EXPIRED, "Login Timeout")

# License keys.
InvalidSerial = _error("InvalidSerial", Code.INVALID_SERIAL, "Invalid serial number")
LicenseExists = _error("LicenseExists", Code.LICENSE_EXISTS, "License already exists.")
LicenseNotFound = _error("LicenseNotFound", Code.LICENSE_NOT_FOUND, "License not found.")

# Activation.
InvalidActivationKey = _error("InvalidActivationKey", Code.INVALID_ACTIVATION_KEY, "Invalid activation key specified.")
OrderDisabled = _error("OrderDisabled", Code.ORDER_DISABLED, "License order has been disabled.")
BulkExceeded = _error("BulkExceeded", Code.BULK_EXCEEDED, "Bulk license count has been exceeded.")
HostIdFormat = _error("HostIdFormat", Code.HOSTID_FORMAT, "Invalid HostID format provided.")
HostIdTypeUnsupported = _error("HostIdTypeUnsupported", Code.HOSTID_TYPE_UNSUPPORTED, "HostID type is not supported.")
HostIdMissing = _error("HostIdMissing", Code.HOSTID_MISSING, "The required HostID is missing.")
HostIdTooMany = _error("HostIdTooMany", Code.HOSTID_TOO_MANY, "Too many HostIDs of one type.")
ActivationNotRequested = _error("ActivationNotRequested", Code.ACTIVATION_NOT_REQUESTED, "License activation was not requested.")
LicenseDoesNotExist = _error("LicenseDoesNotExist", Code.LICENSE_DOES_NOT_EXIST, "License does not exist.")
CannotDeactivate = _error("CannotDeactivate", Code.CANNOT_DEACTIVATE, "Cannot deactivate license.")
UnsupportedState = _error("UnsupportedState", Code.UNSUPPORTED_STATE, "Unsupported license state.")
NoLicensesForState = _error("NoLicensesForState", Code.NO_LICENSES_FOR_STATE, "No licenses were found for a given state.")
NoErrors = _error("NoErrors", Code.NO_ERRORS, "License has no errors.")


class TooManyAttempts(KeyturnError):
    """Over a rate limit; ``retry_after`` is the number of seconds until the window ends."""

    code = Code.TOO_MANY_ATTEMPTS
    message = "Too many activation attempts."

    def __init__(self, retry_after: int) -> None:
        super().__init__(detail={"retryAfter": str(retry_after)})
        self.retry_after = retry_after

# Operators and provisioning.
InvalidOrder = _error("InvalidOrder", Code.INVALID_ORDER, "Invalid order.")
