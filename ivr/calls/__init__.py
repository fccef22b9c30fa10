"""The call itself, without Flask: states, the machine, TwiML, abuse guards."""
