"""Telegram: customer handlers, staff commands, the bot's lifecycle and webhook."""
