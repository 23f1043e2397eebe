"""The `scheduler` command: its subcommands, the API client, and the local development server."""
