"""Failures of the consent flow and the message each one shows.

Three kinds, because each surface answers differently:

- ``FlowRejected``: the flow itself cannot be used (missing, unknown, expired, submitted, or
  another browser's). Answered with a status and a JSON body (a plain page on GET pages).
- ``IdentityRejected``: the user's input was refused. Answered with a 302 back to the identity
  page carrying the message, so the user can try again.
- ``OAuthError``: an RFC 6749 token-endpoint error (``invalid_grant`` and friends).
"""

from __future__ import annotations

MSG_FLOW_ID_REQUIRED = "flow_id is required"
MSG_FLOW_INVALID = "Invalid or expired consent flow"
MSG_FLOW_FOREIGN = "This consent flow was started in another browser"
MSG_FLOW_SUBMITTED = "Consent flow has already been submitted"
MSG_FLOW_EXPIRED = "Consent flow has expired. Please start again from your app."
MSG_FLOW_DENIED = "This connection request was cancelled, so it can't be finished. Start again from your app."

MSG_VK_EMPTY = "Please enter a Virtual Key."
MSG_VK_INVALID = "Virtual Key not found or inactive. Please check and try again."
MSG_VK_FAILED = "Failed to validate Virtual Key. Please try again."
MSG_TOO_MANY = "Too many attempts. Please wait and try again."
MSG_USER_ID_EMPTY = "Please enter a User ID."
MSG_USER_ID_TOO_LONG = "User ID must be at most 255 characters."
MSG_USER_ID_CHARACTERS = "User ID must not contain control characters."
MSG_SKIP_NOT_ALLOWED = "Skipping is not allowed on this gateway. Please enter a Virtual Key or User ID."
MSG_CHOOSE_IDENTITY = "Please choose how to identify yourself first."

MSG_RESPONSE_TYPE = "response_type must be 'code'"
MSG_CLIENT_AND_REDIRECT_REQUIRED = "client_id and redirect_uri are required"
MSG_PKCE_REQUIRED = "PKCE is required: code_challenge and code_challenge_method=S256"
MSG_PKCE_CHALLENGE_FORMAT = "code_challenge must be the 43-character base64url SHA-256 of the code_verifier"
MSG_UNKNOWN_CLIENT = "Unknown client_id"
MSG_REDIRECT_NOT_REGISTERED = "redirect_uri not registered for this client"
MSG_STATE_TOO_LONG = "state must be at most 1024 characters"
MSG_STATE_CHARACTERS = "state must contain only printable ASCII characters"


class FlowRejected(Exception):
    """The request cannot act on this flow; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class IdentityRejected(Exception):
    """The submitted identity was refused; the message goes back to the identity page."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error: ``{"error": ..., "error_description": ...}``."""

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
