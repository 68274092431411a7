"""Channels: each one translates between a provider and the one inbound path."""
