"""Who may call what, over which channel, and how much: API keys and roles, TLS, admission
limits. The server applies them as interceptors; the services themselves never see a key."""

from services.security.keys import ApiKey, KeyRing, Role, hash_key, new_key

__all__ = ["ApiKey", "KeyRing", "Role", "hash_key", "new_key"]
