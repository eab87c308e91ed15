"""What the notifier's domain refuses; the gRPC layer maps each to a status code."""


class NotifierError(Exception):
    """Base of the notifier's domain errors; the message is shown to the caller."""


class NotFound(NotifierError):
    pass


class InvalidArgument(NotifierError):
    pass


class Unavailable(NotifierError):
    """NATS cannot be reached right now; the caller may retry."""
