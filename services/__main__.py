from services.main import app_cli

app_cli()
