"""The call flow: named states, transitions and the steps they produce (no Flask, no TwiML)."""
