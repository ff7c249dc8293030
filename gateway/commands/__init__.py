"""One module per CLI command (group); registered in ``gateway/cli.py`` COMMANDS."""
