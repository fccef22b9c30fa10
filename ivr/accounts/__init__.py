"""The account cache: look-ups, imports and file exchange."""
