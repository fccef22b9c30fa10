"""Payment arrangements: who may have one, the terms on offer, and what becomes of them."""
