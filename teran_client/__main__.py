"""`python -m teran_client`: see `teran_client.cli`."""

from teran_client.cli import app

app(prog_name="python -m teran_client")
