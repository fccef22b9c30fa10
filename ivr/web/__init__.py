"""The Flask app: its factory, the Twilio webhook routes, health and metrics, gunicorn."""
