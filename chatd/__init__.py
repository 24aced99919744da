"""chatd: the chat server daemon."""
