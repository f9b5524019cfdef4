"""Principals from outside Sentinel: an external identity service and bearer JWTs.

``IdentityService`` resolves API keys that neither the TOML file nor the runtime store holds,
by asking ``[identity] url``; ``BearerTokens`` accepts JWTs signed by ``[identity.jwt]``'s
issuer. Both are ``PrincipalSource``s the lifespan hands to the ``Authenticator``.
"""

from sentinel.identity.bearer import BearerTokens
from sentinel.identity.service import IdentityService, IdentityUnavailable

__all__ = ["BearerTokens", "IdentityService", "IdentityUnavailable"]
