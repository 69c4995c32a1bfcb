"""Text to token ids, exact and fast."""
