"""The Jarvis lab: HTTP client, schema, physics, quirks, the reference server."""
