"""What the replicator's domain refuses; the gRPC layer maps each to a status code.

The peer definition's own errors (`PeerError`, `PeerNotFoundError`, `PeerExistsError`) live
beside the peer in `replicator.peers`.
"""


class ReplicationError(Exception):
    """Base of the replicator's domain errors; the message is shown to the caller."""


class FailureNotFound(ReplicationError):
    """No failure record with that id for that peer."""


class InvalidRequest(ReplicationError):
    """A request the API cannot take as it is (an unknown field to update, a bad page token)."""
