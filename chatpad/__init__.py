"""chatpad: the desktop client."""
