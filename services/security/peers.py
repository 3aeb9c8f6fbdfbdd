"""How this process reaches its peers: the service key it sends, and TLS when the peers'
CA is configured (presenting this server's own certificate, for mTLS)."""

from __future__ import annotations

from services.config import ServerCfg
from teran_client.channels import ChannelSecurity


def peer_security(cfg: ServerCfg) -> ChannelSecurity:
    key = None
    if cfg.auth.service_key_file is not None:
        key = cfg.auth.service_key_file.read_text().strip() or None
        if key is None:
            raise ValueError(f"server.auth.service_key_file {cfg.auth.service_key_file} is empty")
    tls = cfg.tls
    if tls.peer_ca_file is None:
        return ChannelSecurity(api_key=key)
    return ChannelSecurity(
        api_key=key, ca_file=tls.peer_ca_file, cert_file=tls.cert_file, key_file=tls.key_file
    )
