"""Delimited files: layouts, readers and writers, PGP, SFTP transport."""
