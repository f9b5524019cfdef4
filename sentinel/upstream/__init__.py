"""Upstream providers: targets, routing, the outbound client and its error mapping."""
