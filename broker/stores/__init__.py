"""Shared state: admission (replay + rate limits: memory or Redis) and the consent log."""
