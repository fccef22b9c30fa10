"""Agent-assisted payments: a representative takes a payment on a live call through Twilio's
Payments API, and never hears or sees a digit (docs/agent-payments.md). No Flask here: the
console's routes (ivr.ops.views_agent) and the Twilio callback route stay thin over it."""
