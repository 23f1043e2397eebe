"""The web console at /ui: server-rendered pages over the same store and rules as the API."""
