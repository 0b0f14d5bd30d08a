"""The Jarvis lab: its HTTP client, schema, physics, quirks and labtune's reference server."""
