"""Flask-free adapters that turn biller data (account files, phone numbers) into plain values."""
