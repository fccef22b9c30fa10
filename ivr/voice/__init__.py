"""The Twilio-facing side: webhook routes and the TwiML they answer with."""
