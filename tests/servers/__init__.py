"""Real servers (separate processes) that the connector tests run against."""
