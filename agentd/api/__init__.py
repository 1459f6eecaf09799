"""agentd's D-Bus API: interface definitions (shared with clients) and the thin
objects that declare each method's policy action and call the engine."""
