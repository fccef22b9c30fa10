"""Money after the caller pays: payment results, posting, reconciliation."""
