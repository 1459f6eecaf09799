"""agentd's D-Bus API: interface definitions (shared with clients) and the thin
service objects that check the caller and call the engine."""
